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
//!
//! **Attempts never mix.** A file is written only by its *writer*, the node
//! of the job's current attempt: every chunk names the node it came from,
//! and [`OutputFile::append`] drops it, under the file's lock, unless that
//! node is the writer. The dispatcher's [`OutputStore::reset_each`] empties
//! a job's files and makes the node it is about to assign the writer, under
//! the same locks, BEFORE it commits the assignment: once a new attempt can
//! exist, no chunk of an older one can land. A file with no writer (new
//! since the coordinator started) is claimed by a session only after a
//! store read, made once the file exists, shows the job active on that
//! session's node ([`OutputFile::claim`]).

use crate::domain::Job;
use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// One of the output streams of a job: Batch AI's `stdouterr` files (the
/// first three also a setup task's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    Stdout,
    Stderr,
    ExecutionLog,
    /// The jobPreparation's output.
    JobPrepStdout,
    JobPrepStderr,
}

impl StreamKind {
    pub const ALL: [Self; 5] = [
        Self::Stdout,
        Self::Stderr,
        Self::ExecutionLog,
        Self::JobPrepStdout,
        Self::JobPrepStderr,
    ];
    /// A setup task's streams.
    pub const STDOUTERR: [Self; 3] = [Self::Stdout, Self::Stderr, Self::ExecutionLog];

    pub fn file_name(self) -> &'static str {
        match self {
            Self::Stdout => "stdout.txt",
            Self::Stderr => "stderr.txt",
            Self::ExecutionLog => "execution.log",
            Self::JobPrepStdout => "stdout-job_prep.txt",
            Self::JobPrepStderr => "stderr-job_prep.txt",
        }
    }

    pub fn from_file_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.file_name() == name)
    }
}

/// One output file of a job: a stream of one rank's. Rank 0's (a
/// single-node job's, a multi-node job's master's) have Batch AI's names;
/// rank r's have `-<r>` before the extension (`stdout-1.txt`,
/// `execution-2.log`, `stderr-job_prep-1.txt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileId {
    pub stream: StreamKind,
    pub rank: u32,
}

impl From<StreamKind> for FileId {
    fn from(stream: StreamKind) -> Self {
        Self { stream, rank: 0 }
    }
}

impl FileId {
    pub fn new(stream: StreamKind, rank: u32) -> Self {
        Self { stream, rank }
    }

    pub fn file_name(self) -> String {
        let name = self.stream.file_name();
        if self.rank == 0 {
            return name.to_string();
        }
        let (base, ext) = name.rsplit_once('.').unwrap_or((name, ""));
        format!("{base}-{}.{ext}", self.rank)
    }

    pub fn from_file_name(name: &str) -> Option<Self> {
        if let Some(stream) = StreamKind::from_file_name(name) {
            return Some(stream.into());
        }
        let (stem, ext) = name.rsplit_once('.')?;
        let (base, rank) = stem.rsplit_once('-')?;
        if rank.starts_with('0') || rank.starts_with('+') {
            return None;
        }
        let rank: u32 = rank.parse().ok()?;
        let stream = StreamKind::from_file_name(&format!("{base}.{ext}"))?;
        Some(Self { stream, rank })
    }

    /// Every file of a job of `ranks` ranks.
    pub fn all(ranks: u32) -> impl Iterator<Item = Self> {
        (0..ranks.max(1)).flat_map(|rank| {
            StreamKind::ALL
                .into_iter()
                .map(move |stream| Self { stream, rank })
        })
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
    /// The node whose chunks are written (the current attempt's), if known.
    writer: Option<Arc<str>>,
    /// No longer the job's file (its job ended or was deleted): nothing is
    /// written, nobody can claim it.
    retired: bool,
}

/// Whose chunks a file takes, as seen by one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// This node's chunks are written.
    Mine,
    /// No writer yet: claim it after confirming with the store.
    Free,
    /// Another node's (a newer attempt's), or the file was retired.
    NotMine,
}

/// One output file: its length and a watch of its durable length.
#[derive(Debug)]
pub struct OutputFile {
    pub job_id: String,
    pub stream: StreamKind,
    /// The rank whose output it is.
    pub rank: u32,
    path: PathBuf,
    state: Mutex<FileState>,
    durable: watch::Sender<u64>,
}

impl OutputFile {
    pub fn id(&self) -> FileId {
        FileId::new(self.stream, self.rank)
    }

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

    /// Whether `node`'s chunks are written to this file.
    pub fn lease(&self, node: &str) -> io::Result<Lease> {
        let st = self.lock()?;
        Ok(match &st.writer {
            _ if st.retired => Lease::NotMine,
            Some(w) if **w == *node => Lease::Mine,
            Some(_) => Lease::NotMine,
            None => Lease::Free,
        })
    }

    /// Makes `node` the writer if the file has none; true if `node` is the
    /// writer now. The caller must have confirmed, with a store read made
    /// after it got this file, that the job is active on `node`: a newer
    /// attempt's reset would have made its own node the writer first.
    pub fn claim(&self, node: &Arc<str>) -> io::Result<bool> {
        let mut st = self.lock()?;
        if st.retired {
            return Ok(false);
        }
        Ok(match &st.writer {
            Some(w) => **w == **node,
            None => {
                st.writer = Some(node.clone());
                true
            }
        })
    }

    /// Applies one chunk of `writer`'s (no fsync); false if `writer` is not
    /// the file's writer (the chunk is dropped).
    fn append(&self, writer: &str, offset: u64, data: &[u8]) -> io::Result<bool> {
        let mut st = self.lock()?;
        if st.retired || st.writer.as_deref() != Some(writer) {
            return Ok(false);
        }
        let Append::Write { skip } = plan_append(st.len, offset, data.len()) else {
            return Ok(true);
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
        Ok(true)
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

/// Moves a job's output files into `keep` (the ended attempt's own
/// directory; `None`: removes them), and empties the open ones' state.
fn reset_files(
    dir: &Path,
    keep: Option<&Path>,
    files: &[(FileId, Option<Arc<OutputFile>>)],
) -> io::Result<()> {
    let mut kept = false;
    for (id, f) in files {
        let guard = f.as_ref().map(|f| f.lock()).transpose()?;
        let path = dir.join(id.file_name());
        let gone = match keep {
            Some(keep) if path.exists() => {
                if !kept {
                    std::fs::create_dir_all(keep)?;
                    kept = true;
                }
                std::fs::rename(&path, keep.join(id.file_name()))
            }
            _ => std::fs::remove_file(&path),
        };
        match gone {
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
    if let Some(keep) = keep.filter(|_| kept) {
        // The moves are durable before the new attempt can write.
        bai_common::fs::sync_dir(keep)?;
        bai_common::fs::sync_dir(dir)?;
    }
    Ok(())
}

fn new_file(job_id: &str, id: FileId, path: PathBuf, len: u64) -> Arc<OutputFile> {
    Arc::new(OutputFile {
        job_id: job_id.to_string(),
        stream: id.stream,
        rank: id.rank,
        path,
        state: Mutex::new(FileState {
            file: None,
            len,
            dirty: false,
            created: 0,
            entry_synced: 0,
            writer: None,
            retired: false,
        }),
        durable: watch::channel(len).0,
    })
}

/// A chunk to append, from node `writer`.
#[derive(Debug)]
pub struct Chunk {
    pub file: Arc<OutputFile>,
    pub writer: Arc<str>,
    pub offset: u64,
    pub data: Vec<u8>,
}

type Key = (String, FileId);

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
    /// The output root (`<state>/output`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn stdouterr_dir(&self, job: &Job) -> PathBuf {
        self.root.join(job.output_path_segment()).join("stdouterr")
    }

    /// Where attempt `n`'s `stdouterr` files are kept once a later attempt
    /// of the job starts: `<job>/<uuid>/attempts/<n>/stdouterr`.
    pub fn attempt_dir(&self, job: &Job, n: u32) -> PathBuf {
        self.root
            .join(job.output_path_segment())
            .join("attempts")
            .join(n.to_string())
            .join("stdouterr")
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

    /// A job's file (a stream of rank 0's, or a [`FileId`]); `None` once the
    /// job was deleted.
    pub async fn file(
        &self,
        job: &Job,
        id: impl Into<FileId>,
    ) -> io::Result<Option<Arc<OutputFile>>> {
        let id = id.into();
        if self.is_deleted(&job.id) {
            return Ok(None);
        }
        let key = (job.id.clone(), id);
        if let Some(f) = self.files()?.get(&key) {
            return Ok(Some(f.clone()));
        }
        let path = self.stdouterr_dir(job).join(id.file_name());
        let p = path.clone();
        let len = blocking(move || durable_len_on_disk(&p)).await?;
        let mut files = self.files()?;
        let f = files
            .entry(key)
            .or_insert_with(|| new_file(&job.id, id, path, len));
        Ok(Some(f.clone()))
    }

    /// Appends a batch of chunks, fsyncs each file written once, publishes the
    /// durable lengths, and returns every file the batch touched (written,
    /// duplicate or gap), whose `durable_len` is what to acknowledge. A chunk
    /// whose node is not its file's writer is dropped and touches nothing.
    pub async fn write(&self, chunks: Vec<Chunk>) -> io::Result<Vec<Arc<OutputFile>>> {
        blocking(move || {
            let mut touched: Vec<Arc<OutputFile>> = Vec::new();
            for c in &chunks {
                if !c.file.append(&c.writer, c.offset, &c.data)? {
                    continue;
                }
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

    /// The job's attempt ended (`job` as it is now). An ended job's files
    /// are retired (nothing more is written; followers keep their handles).
    /// A requeued job's stay as they are until the reset before its next
    /// attempt, which its followers then see.
    pub fn close(&self, job: &Job) {
        if !job.execution_state.is_ended() {
            return;
        }
        if let Ok(mut files) = self.files() {
            files.retain(|(id, _), f| {
                if *id != job.id {
                    return true;
                }
                if let Ok(mut st) = f.state.lock() {
                    st.retired = true;
                }
                false
            });
        }
    }

    fn forget(&self, job_id: &str) {
        if let Ok(mut files) = self.files() {
            for (_, f) in files.iter().filter(|((id, _), _)| id == job_id) {
                if let Ok(mut st) = f.state.lock() {
                    st.retired = true;
                    st.file = None;
                    st.len = 0;
                }
                f.durable.send_replace(0);
            }
            files.retain(|(id, _), _| id != job_id);
        }
    }

    /// Empties the job's output for a new attempt on `node`, which becomes
    /// the files' only writer. Open handles stay valid and see the length go
    /// back to 0.
    pub async fn reset(&self, job: &Job, node: &str) -> io::Result<()> {
        let nodes = [node.to_string()];
        self.reset_each([(job, &nodes[..])])
            .await?
            .pop()
            .unwrap_or(Ok(()))
    }

    /// [`OutputStore::reset`] for many (job, nodes by rank) in one blocking
    /// call (a scheduler pass): one result per job, in order, so one job
    /// whose output cannot be emptied does not hold back the others. A job
    /// whose reset failed may have kept some of its old files: it must not
    /// start.
    ///
    /// First, under the map's lock, each job gets an entry for each rank's
    /// streams (so no file can be opened meanwhile with a length read off
    /// the old file) whose writer becomes that rank's node: from then on no
    /// chunk of an older attempt is written. Then the files are removed and
    /// the entries emptied, each under its lock (a stale chunk written in
    /// between is removed with them). A job whose files could not all be
    /// removed has its entries retired, so the next look measures what is
    /// on disk.
    pub async fn reset_each<'a>(
        &self,
        jobs: impl IntoIterator<Item = (&'a Job, &'a [String])>,
    ) -> io::Result<Vec<io::Result<()>>> {
        // Each job's directory and files, with the entry of each (none for
        // a deleted job: its files are only removed).
        type Work = (
            PathBuf,
            Option<PathBuf>,
            Vec<(FileId, Option<Arc<OutputFile>>)>,
        );
        let work: Vec<Work> = {
            let mut files = self.files()?;
            let mut work = Vec::new();
            for (job, nodes) in jobs {
                let dir = self.stdouterr_dir(job);
                let deleted = self.is_deleted(&job.id);
                // A requeued job's last attempt is kept apart, not emptied.
                let keep = job
                    .attempts
                    .last()
                    .filter(|_| !deleted)
                    .map(|a| self.attempt_dir(job, a.number));
                let mut entries = Vec::new();
                for id in FileId::all(nodes.len() as u32) {
                    let open = if deleted {
                        None
                    } else {
                        let writer: Arc<str> = Arc::from(nodes[id.rank as usize].as_str());
                        let f = files
                            .entry((job.id.clone(), id))
                            .or_insert_with(|| new_file(&job.id, id, dir.join(id.file_name()), 0))
                            .clone();
                        f.lock()?.writer = Some(writer);
                        Some(f)
                    };
                    entries.push((id, open));
                }
                work.push((dir, keep, entries));
            }
            work
        };
        let (work, results) = blocking(move || {
            let results: Vec<io::Result<()>> = work
                .iter()
                .map(|(dir, keep, entries)| reset_files(dir, keep.as_deref(), entries))
                .collect();
            Ok((work, results))
        })
        .await?;
        let failed: Vec<&Arc<OutputFile>> = work
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_err())
            .flat_map(|((_, _, entries), _)| entries.iter().filter_map(|(_, f)| f.as_ref()))
            .collect();
        if !failed.is_empty() {
            let mut files = self.files()?;
            files.retain(|_, f| !failed.iter().any(|g| Arc::ptr_eq(f, g)));
            for f in failed {
                f.lock()?.retired = true;
            }
        }
        Ok(results)
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

    fn chunk_of(node: &str, f: &Arc<OutputFile>, offset: u64, data: &[u8]) -> Chunk {
        Chunk {
            file: f.clone(),
            writer: Arc::from(node),
            offset,
            data: data.to_vec(),
        }
    }

    fn chunk(f: &Arc<OutputFile>, offset: u64, data: &[u8]) -> Chunk {
        chunk_of("n", f, offset, data)
    }

    #[tokio::test]
    async fn duplicates_overlaps_and_gaps() {
        let dir = tempfile::tempdir().unwrap();
        let store = OutputStore::new(dir.path().to_path_buf());
        let job = fixtures::job("w", "e", "j", "c");
        let f = store.file(&job, StreamKind::Stdout).await.unwrap().unwrap();
        assert_eq!(f.lease("n").unwrap(), Lease::Free);
        assert!(f.claim(&Arc::from("n")).unwrap());
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
        assert!(
            again
                .write(vec![chunk(&f2, 11, b"!")])
                .await
                .unwrap()
                .is_empty(),
            "a file nobody claimed takes no chunk"
        );
        assert!(f2.claim(&Arc::from("n")).unwrap());
        again.write(vec![chunk(&f2, 11, b"!")]).await.unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world!");
    }

    #[tokio::test]
    async fn reset_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = OutputStore::new(dir.path().to_path_buf());
        let job = fixtures::job("w", "e", "j", "c");
        let f = store.file(&job, StreamKind::Stderr).await.unwrap().unwrap();
        assert!(f.claim(&Arc::from("n")).unwrap());
        store.write(vec![chunk(&f, 0, b"abc")]).await.unwrap();
        store.reset(&job, "n").await.unwrap();
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

    #[tokio::test]
    async fn a_reset_for_a_new_attempt_shuts_out_the_old_attempts_node() {
        let dir = tempfile::tempdir().unwrap();
        let store = OutputStore::new(dir.path().to_path_buf());
        let job = fixtures::job("w", "e", "j", "c");
        let path = store.stdouterr_dir(&job).join("stdout.txt");
        // Attempt on "a": its chunk is staged (validated) before the reset
        // and written after it.
        store.reset(&job, "a").await.unwrap();
        let f = store.file(&job, StreamKind::Stdout).await.unwrap().unwrap();
        assert_eq!(f.lease("a").unwrap(), Lease::Mine);
        assert_eq!(f.lease("b").unwrap(), Lease::NotMine);
        store
            .write(vec![chunk_of("a", &f, 0, b"old")])
            .await
            .unwrap();
        let stale = chunk_of("a", &f, 3, b"-stale");
        store.reset(&job, "b").await.unwrap();
        assert_eq!(f.durable_len(), 0, "open handles see the reset");
        assert!(store.write(vec![stale]).await.unwrap().is_empty());
        assert!(!f.claim(&Arc::from("a")).unwrap(), "b is the writer");
        assert_eq!(f.lease("a").unwrap(), Lease::NotMine);
        let touched = store
            .write(vec![
                chunk_of("a", &f, 0, b"STALE"),
                chunk_of("b", &f, 0, b"new"),
                chunk_of("a", &f, 3, b"!!"),
            ])
            .await
            .unwrap();
        assert_eq!(touched.len(), 1);
        assert_eq!(std::fs::read(&path).unwrap(), b"new");

        // Ended: retired, so even b writes nothing more, and a new look at
        // the file has no writer (a session must confirm with the store).
        let mut ended = job.clone();
        ended.execution_state = crate::domain::ExecutionState::Succeeded;
        store.close(&ended);
        assert!(
            store
                .write(vec![chunk_of("b", &f, 3, b"late")])
                .await
                .unwrap()
                .is_empty()
        );
        let g = store.file(&job, StreamKind::Stdout).await.unwrap().unwrap();
        assert!(!Arc::ptr_eq(&f, &g));
        assert_eq!((g.durable_len(), g.lease("b").unwrap()), (3, Lease::Free));
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
    }

    #[tokio::test]
    async fn a_requeued_jobs_files_stay_open_until_the_reset() {
        let dir = tempfile::tempdir().unwrap();
        let store = OutputStore::new(dir.path().to_path_buf());
        let job = fixtures::job("w", "e", "j", "c");
        store.reset(&job, "a").await.unwrap();
        let f = store.file(&job, StreamKind::Stderr).await.unwrap().unwrap();
        store
            .write(vec![chunk_of("a", &f, 0, b"old")])
            .await
            .unwrap();
        // Requeued (not ended): a follower's handle is the one the reset empties.
        store.close(&job);
        let g = store.file(&job, StreamKind::Stderr).await.unwrap().unwrap();
        assert!(Arc::ptr_eq(&f, &g));
        let mut rx = f.watch();
        rx.borrow_and_update();
        store.reset(&job, "b").await.unwrap();
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 0);
    }
}
