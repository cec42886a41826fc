//! Job output on the coordinator's disk, in Batch AI's layout:
//! `<state>/output/workspaces/<ws>/experiments/<exp>/jobs/<job>/<uuid>/stdouterr/
//! {stdout.txt,stderr.txt,execution.log}`.
//!
//! Agents ship output as (job, stream, offset) chunks. A chunk is appended only
//! at the file's current length: bytes already held are skipped, a chunk past
//! the end (a gap) is dropped, and the caller answers with the length it has.
//! [`OutputStore::write`] writes a batch of chunks, fsyncs each directory
//! that gained files once and each dirty file once, and only then publishes
//! the new durable lengths (a `watch` per file that followers wait on), so a
//! length anyone sees is on disk.

use crate::domain::Job;
use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// One of the three output streams of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    Stdout,
    Stderr,
    ExecutionLog,
}

impl StreamKind {
    pub const ALL: [Self; 3] = [Self::Stdout, Self::Stderr, Self::ExecutionLog];

    pub fn file_name(self) -> &'static str {
        match self {
            Self::Stdout => "stdout.txt",
            Self::Stderr => "stderr.txt",
            Self::ExecutionLog => "execution.log",
        }
    }

    pub fn from_file_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.file_name() == name)
    }
}

/// What to do with a chunk at `offset` of `data_len` bytes, given the file's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Append {
    /// Every byte is already held.
    Duplicate,
    /// Write the chunk's bytes from `skip` on, at the file's end.
    Write { skip: usize },
    /// The chunk starts past the end: drop it.
    Gap,
}

/// Decides how a chunk applies to a file of length `len`.
pub fn plan_append(len: u64, offset: u64, data_len: usize) -> Append {
    if offset > len {
        return Append::Gap;
    }
    let end = offset.saturating_add(data_len as u64);
    if end <= len {
        Append::Duplicate
    } else {
        Append::Write {
            skip: (len - offset) as usize,
        }
    }
}

#[derive(Debug)]
struct FileState {
    file: Option<File>,
    len: u64,
    dirty: bool,
    /// How many times the file was created, and the creation whose directory
    /// entry was last made durable (behind: fsync the directory).
    created: u64,
    entry_synced: u64,
    removed: bool,
}

/// One output file: its length and a watch of its durable length.
#[derive(Debug)]
pub struct OutputFile {
    pub job_id: String,
    pub stream: StreamKind,
    path: PathBuf,
    state: Mutex<FileState>,
    durable: watch::Sender<u64>,
}

impl OutputFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The length that is on disk.
    pub fn durable_len(&self) -> u64 {
        *self.durable.borrow()
    }

    /// Wakes on every change of the durable length.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.durable.subscribe()
    }

    fn lock(&self) -> io::Result<std::sync::MutexGuard<'_, FileState>> {
        self.state
            .lock()
            .map_err(|_| io::Error::other("output file lock poisoned"))
    }

    /// Applies one chunk (no fsync).
    fn append(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut st = self.lock()?;
        if st.removed {
            return Ok(());
        }
        let Append::Write { skip } = plan_append(st.len, offset, data.len()) else {
            return Ok(());
        };
        if st.file.is_none() {
            let (f, created) = open_for_append(&self.path)?;
            st.file = Some(f);
            st.created += u64::from(created);
        }
        let bytes = &data[skip..];
        if let Some(f) = &st.file {
            f.write_all_at(bytes, st.len)?;
        }
        st.len += bytes.len() as u64;
        st.dirty = true;
        Ok(())
    }

    /// The file's directory and current creation, if that entry is not
    /// durable yet.
    fn new_entry(&self) -> io::Result<Option<(PathBuf, u64)>> {
        let st = self.lock()?;
        Ok(if st.created > st.entry_synced {
            self.path.parent().map(|d| (d.to_path_buf(), st.created))
        } else {
            None
        })
    }

    /// Makes the file's directory entry durable: `synced` says up to which
    /// creation the caller's directory fsync covered; a later one (a
    /// concurrent writer) gets its own fsync.
    fn sync_entry(&self, synced: u64) -> io::Result<()> {
        let mut st = self.lock()?;
        st.entry_synced = st.entry_synced.max(synced);
        if st.created > st.entry_synced {
            if let Some(dir) = self.path.parent() {
                File::open(dir)?.sync_all()?;
            }
            st.entry_synced = st.created;
        }
        Ok(())
    }

    /// Makes written bytes durable and publishes the new length.
    fn sync(&self) -> io::Result<()> {
        let mut st = self.lock()?;
        if st.dirty {
            if let Some(f) = &st.file {
                f.sync_data()?;
            }
            st.dirty = false;
        }
        let len = st.len;
        self.durable.send_if_modified(|d| {
            let changed = *d != len;
            *d = len;
            changed
        });
        Ok(())
    }
}

/// Creates the missing directories of `dir`, fsyncing each parent that gained one.
fn create_dir_durable(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_durable(parent)?;
        match std::fs::create_dir(dir) {
            Ok(()) => File::open(parent)?.sync_all()?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Opens (creating if needed) an output file; true if it was created, whose
/// directory entry the caller must make durable (one directory fsync for all
/// the files a batch created there).
fn open_for_append(path: &Path) -> io::Result<(File, bool)> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("output path has no parent"))?;
    create_dir_durable(dir)?;
    let existed = path.exists();
    let f = OpenOptions::new()
        .create(true)
        .read(true)
        .write(true)
        .truncate(false)
        .open(path)?;
    Ok((f, !existed))
}

/// The length of an existing file, made durable first (bytes written before a
/// crash of this process may not have been synced); 0 if it does not exist.
fn durable_len_on_disk(path: &Path) -> io::Result<u64> {
    match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => {
            f.sync_all()?;
            Ok(f.metadata()?.len())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// Removes a job's output files, and empties the open ones' state.
fn reset_files(dir: &Path, open: &[Arc<OutputFile>]) -> io::Result<()> {
    for s in StreamKind::ALL {
        let f = open.iter().find(|f| f.stream == s);
        let guard = f.map(|f| f.lock()).transpose()?;
        match std::fs::remove_file(dir.join(s.file_name())) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if let (Some(f), Some(mut st)) = (f, guard) {
            st.file = None;
            st.len = 0;
            st.dirty = false;
            f.durable.send_if_modified(|d| std::mem::replace(d, 0) != 0);
        }
    }
    Ok(())
}

/// A chunk to append.
#[derive(Debug)]
pub struct Chunk {
    pub file: Arc<OutputFile>,
    pub offset: u64,
    pub data: Vec<u8>,
}

type Key = (String, StreamKind);

/// All job output files.
#[derive(Debug)]
pub struct OutputStore {
    root: PathBuf,
    files: Mutex<HashMap<Key, Arc<OutputFile>>>,
    deleted: Mutex<HashSet<String>>,
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("blocking task failed: {e}")))?
}

impl OutputStore {
    /// Output under `root` (`<state>/output`).
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            files: Mutex::new(HashMap::new()),
            deleted: Mutex::new(HashSet::new()),
        }
    }

    /// The job's `stdouterr` directory.
    pub fn stdouterr_dir(&self, job: &Job) -> PathBuf {
        self.root.join(job.output_path_segment()).join("stdouterr")
    }

    fn files(&self) -> io::Result<std::sync::MutexGuard<'_, HashMap<Key, Arc<OutputFile>>>> {
        self.files
            .lock()
            .map_err(|_| io::Error::other("output map lock poisoned"))
    }

    fn is_deleted(&self, job_id: &str) -> bool {
        self.deleted
            .lock()
            .map(|d| d.contains(job_id))
            .unwrap_or(true)
    }

    /// The file of a job's stream; `None` once the job was deleted.
    pub async fn file(&self, job: &Job, stream: StreamKind) -> io::Result<Option<Arc<OutputFile>>> {
        if self.is_deleted(&job.id) {
            return Ok(None);
        }
        let key = (job.id.clone(), stream);
        if let Some(f) = self.files()?.get(&key) {
            return Ok(Some(f.clone()));
        }
        let path = self.stdouterr_dir(job).join(stream.file_name());
        let p = path.clone();
        let len = blocking(move || durable_len_on_disk(&p)).await?;
        let mut files = self.files()?;
        let f = files.entry(key).or_insert_with(|| {
            Arc::new(OutputFile {
                job_id: job.id.clone(),
                stream,
                path,
                state: Mutex::new(FileState {
                    file: None,
                    len,
                    dirty: false,
                    created: 0,
                    entry_synced: 0,
                    removed: false,
                }),
                durable: watch::channel(len).0,
            })
        });
        Ok(Some(f.clone()))
    }

    /// Appends a batch of chunks, fsyncs each file written once, publishes the
    /// durable lengths, and returns every file the batch touched (written,
    /// duplicate or gap), whose `durable_len` is what to acknowledge.
    pub async fn write(&self, chunks: Vec<Chunk>) -> io::Result<Vec<Arc<OutputFile>>> {
        blocking(move || {
            let mut touched: Vec<Arc<OutputFile>> = Vec::new();
            for c in &chunks {
                c.file.append(c.offset, &c.data)?;
                if !touched.iter().any(|t| Arc::ptr_eq(t, &c.file)) {
                    touched.push(c.file.clone());
                }
            }
            // One fsync per directory that gained files, then each file.
            let mut entries = Vec::with_capacity(touched.len());
            let mut dirs: Vec<PathBuf> = Vec::new();
            for f in &touched {
                let mut synced = 0;
                if let Some((d, created)) = f.new_entry()? {
                    if !dirs.contains(&d) {
                        File::open(&d)?.sync_all()?;
                        dirs.push(d);
                    }
                    synced = created;
                }
                entries.push(synced);
            }
            for (f, synced) in touched.iter().zip(entries) {
                f.sync_entry(synced)?;
                f.sync()?;
            }
            Ok(touched)
        })
        .await
    }

    /// Closes the job's files (its attempt ended); followers keep their handles.
    pub fn close(&self, job_id: &str) {
        if let Ok(mut files) = self.files() {
            files.retain(|(id, _), _| id != job_id);
        }
    }

    fn forget(&self, job_id: &str) {
        if let Ok(mut files) = self.files() {
            for (_, f) in files.iter().filter(|((id, _), _)| id == job_id) {
                if let Ok(mut st) = f.state.lock() {
                    st.removed = true;
                    st.file = None;
                    st.len = 0;
                }
                f.durable.send_replace(0);
            }
            files.retain(|(id, _), _| id != job_id);
        }
    }

    /// Empties the job's output for a new attempt (a requeued job). Open
    /// handles stay valid and see the length go back to 0.
    pub async fn reset(&self, job: &Job) -> io::Result<()> {
        self.reset_each([job]).await?.pop().unwrap_or(Ok(()))
    }

    /// [`OutputStore::reset`] for many jobs in one blocking call (a
    /// scheduler pass): one result per job, in order, so one job whose
    /// output cannot be emptied does not hold back the others. A job whose
    /// reset failed may have kept some of its old files: it must not start.
    pub async fn reset_each<'a>(
        &self,
        jobs: impl IntoIterator<Item = &'a Job>,
    ) -> io::Result<Vec<io::Result<()>>> {
        let work: Vec<(PathBuf, Vec<Arc<OutputFile>>)> = {
            let files = self.files()?;
            jobs.into_iter()
                .map(|job| {
                    let open = files
                        .iter()
                        .filter(|((id, _), _)| id == &job.id)
                        .map(|(_, f)| f.clone())
                        .collect();
                    (self.stdouterr_dir(job), open)
                })
                .collect()
        };
        blocking(move || {
            Ok(work
                .iter()
                .map(|(dir, open)| reset_files(dir, open))
                .collect())
        })
        .await
    }

    /// Deletes the job's output for good; later chunks for it are ignored.
    pub async fn delete(&self, job: &Job) -> io::Result<()> {
        if let Ok(mut d) = self.deleted.lock() {
            d.insert(job.id.clone());
        }
        self.forget(&job.id);
        let dir = self.root.join(job.output_path_segment());
        blocking(move || match std::fs::remove_dir_all(&dir) {
            Ok(()) => {
                // Drop `jobs/<job>` too if no other job of that name is left.
                if let Some(parent) = dir.parent() {
                    let _ = std::fs::remove_dir(parent);
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures;

    #[test]
    fn append_plans() {
        assert_eq!(plan_append(0, 0, 5), Append::Write { skip: 0 });
        assert_eq!(plan_append(5, 0, 5), Append::Duplicate);
        assert_eq!(plan_append(5, 2, 3), Append::Duplicate);
        assert_eq!(plan_append(5, 3, 4), Append::Write { skip: 2 });
        assert_eq!(plan_append(5, 5, 1), Append::Write { skip: 0 });
        assert_eq!(plan_append(5, 6, 1), Append::Gap);
        assert_eq!(plan_append(5, 5, 0), Append::Duplicate);
    }

    fn chunk(f: &Arc<OutputFile>, offset: u64, data: &[u8]) -> Chunk {
        Chunk {
            file: f.clone(),
            offset,
            data: data.to_vec(),
        }
    }

    #[tokio::test]
    async fn duplicates_overlaps_and_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let store = OutputStore::new(dir.path().to_path_buf());
        let job = fixtures::job("w", "e", "j", "c");
        let f = store.file(&job, StreamKind::Stdout).await.unwrap().unwrap();
        let mut rx = f.watch();
        let touched = store
            .write(vec![
                chunk(&f, 0, b"hello "),
                chunk(&f, 0, b"hello "),   // duplicate
                chunk(&f, 3, b"lo world"), // overlap
                chunk(&f, 20, b"gap"),     // gap: dropped
            ])
            .await
            .unwrap();
        assert_eq!(touched.len(), 1);
        assert_eq!(f.durable_len(), 11);
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 11);
        let path = dir
            .path()
            .join(job.output_path_segment())
            .join("stdouterr/stdout.txt");
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world");

        // A fresh store (a restarted coordinator) sees the durable length.
        let again = OutputStore::new(dir.path().to_path_buf());
        let f2 = again.file(&job, StreamKind::Stdout).await.unwrap().unwrap();
        assert_eq!(f2.durable_len(), 11);
        again.write(vec![chunk(&f2, 11, b"!")]).await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world!");
    }

    #[tokio::test]
    async fn reset_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = OutputStore::new(dir.path().to_path_buf());
        let job = fixtures::job("w", "e", "j", "c");
        let f = store.file(&job, StreamKind::Stderr).await.unwrap().unwrap();
        store.write(vec![chunk(&f, 0, b"abc")]).await.unwrap();
        store.reset(&job).await.unwrap();
        let f = store.file(&job, StreamKind::Stderr).await.unwrap().unwrap();
        assert_eq!(f.durable_len(), 0);
        store.write(vec![chunk(&f, 0, b"xy")]).await.unwrap();
        assert_eq!(f.durable_len(), 2);
        store.delete(&job).await.unwrap();
        assert!(!dir.path().join(job.output_path_segment()).exists());
        assert!(
            store
                .file(&job, StreamKind::Stderr)
                .await
                .unwrap()
                .is_none()
        );
        // A late chunk to the old handle writes nothing.
        store.write(vec![chunk(&f, 2, b"z")]).await.unwrap();
        assert!(!dir.path().join(job.output_path_segment()).exists());
    }
}
