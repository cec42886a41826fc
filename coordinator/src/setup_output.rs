//! The setup task's output on the coordinator's disk, one directory per node:
//! `<state>/output/workspaces/<ws>/clusters/<c>/nodes/<node>/setup/` with
//! `run` (the id of the run the files are from), `stdout.txt`, `stderr.txt`
//! and `execution.log`.
//!
//! Chunks are addressed by (run, stream, offset) (agent.proto rule 7). A chunk
//! of a new run first empties the files and records the run durably; a chunk
//! is appended only at the file's current length ([`plan_append`]) and fsynced
//! before the caller acknowledges it. Only the node's own session writes its
//! directory, so there is no writer to check. Setup output is small and
//! rare next to job output: each chunk is written and synced on its own, on
//! the blocking pool.

use crate::output::{Append, StreamKind, plan_append};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// What the coordinator holds of a node's setup output.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    pub run: String,
    pub lengths: [u64; 3],
}

impl Held {
    pub fn len(&self, s: StreamKind) -> u64 {
        index(s).map_or(0, |i| self.lengths[i])
    }
}

/// Where a setup task's stream is in `[_; 3]`; `None` for a job-only stream.
fn index(s: StreamKind) -> Option<usize> {
    match s {
        StreamKind::Stdout => Some(0),
        StreamKind::Stderr => Some(1),
        StreamKind::ExecutionLog => Some(2),
        StreamKind::JobPrepStdout | StreamKind::JobPrepStderr => None,
    }
}

/// One node's setup output directory.
#[derive(Debug)]
pub struct NodeFiles {
    dir: PathBuf,
    held: Mutex<Held>,
    /// Bumped on every durable change (followers wait on it).
    changes: watch::Sender<u64>,
}

impl NodeFiles {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn held(&self) -> Held {
        self.held.lock().map(|h| h.clone()).unwrap_or_default()
    }

    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    fn load(dir: PathBuf) -> io::Result<Self> {
        let run = match std::fs::read_to_string(dir.join("run")) {
            Ok(r) => r.trim().to_string(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let mut lengths = [0; 3];
        for s in StreamKind::STDOUTERR {
            let Some(i) = index(s) else { continue };
            lengths[i] = match std::fs::metadata(dir.join(s.file_name())) {
                Ok(m) => m.len(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
                Err(e) => return Err(e),
            };
        }
        Ok(Self {
            dir,
            held: Mutex::new(Held { run, lengths }),
            changes: watch::channel(0).0,
        })
    }

    /// Applies one chunk (blocking); returns the stream's durable length.
    fn write(&self, run: &str, stream: StreamKind, offset: u64, data: &[u8]) -> io::Result<u64> {
        let mut held = self
            .held
            .lock()
            .map_err(|_| io::Error::other("setup output lock poisoned"))?;
        if held.run != run {
            start_run(&self.dir, run)?;
            *held = Held {
                run: run.to_string(),
                lengths: [0; 3],
            };
        }
        let Some(i) = index(stream) else {
            return Err(io::Error::other(format!(
                "{} is not a setup task's output",
                stream.file_name()
            )));
        };
        if let Append::Write { skip } = plan_append(held.lengths[i], offset, data.len()) {
            let path = self.dir.join(stream.file_name());
            let existed = path.exists();
            let f = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(false)
                .open(&path)?;
            let bytes = &data[skip..];
            f.write_all_at(bytes, held.lengths[i])?;
            f.sync_data()?;
            if !existed {
                File::open(&self.dir)?.sync_all()?;
            }
            held.lengths[i] += bytes.len() as u64;
        }
        let len = held.lengths[i];
        drop(held);
        self.changes.send_modify(|v| *v += 1);
        Ok(len)
    }
}

/// Empties the directory and records `run` in it, durably.
fn start_run(dir: &Path, run: &str) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for s in StreamKind::STDOUTERR {
        match std::fs::remove_file(dir.join(s.file_name())) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    bai_common::fs::write_atomic(&dir.join("run"), run.as_bytes())?;
    if let Some(parent) = dir.parent() {
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Every node's setup output.
#[derive(Debug)]
pub struct SetupOutputs {
    root: PathBuf,
    nodes: Mutex<HashMap<PathBuf, Arc<NodeFiles>>>,
}

impl SetupOutputs {
    /// `root` is the coordinator's `<state>/output`.
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            nodes: Mutex::new(HashMap::new()),
        }
    }

    /// The directory of cluster `ws/cluster`'s nodes.
    pub fn cluster_dir(&self, ws: &str, cluster: &str) -> PathBuf {
        self.root
            .join("workspaces")
            .join(ws)
            .join("clusters")
            .join(cluster)
            .join("nodes")
    }

    /// The node's files (read from disk the first time).
    pub async fn node(&self, ws: &str, cluster: &str, node: &str) -> io::Result<Arc<NodeFiles>> {
        let dir = self.cluster_dir(ws, cluster).join(node).join("setup");
        if let Some(f) = self.lock()?.get(&dir) {
            return Ok(f.clone());
        }
        let key = dir.clone();
        let loaded = blocking(move || NodeFiles::load(dir)).await?;
        Ok(self
            .lock()?
            .entry(key)
            .or_insert_with(|| Arc::new(loaded))
            .clone())
    }

    /// Writes one chunk; returns the stream's durable length (the ack).
    pub async fn write(
        &self,
        files: Arc<NodeFiles>,
        run: String,
        stream: StreamKind,
        offset: u64,
        data: Vec<u8>,
    ) -> io::Result<u64> {
        blocking(move || files.write(&run, stream, offset, &data)).await
    }

    /// Forgets and removes a cluster's setup output (the cluster was deleted).
    pub async fn delete_cluster(&self, ws: &str, cluster: &str) -> io::Result<()> {
        let dir = self.cluster_dir(ws, cluster);
        self.lock()?.retain(|k, _| !k.starts_with(&dir));
        blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await
    }

    fn lock(&self) -> io::Result<std::sync::MutexGuard<'_, HashMap<PathBuf, Arc<NodeFiles>>>> {
        self.nodes
            .lock()
            .map_err(|_| io::Error::other("setup outputs lock poisoned"))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("blocking task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn chunks_append_at_length_and_a_new_run_starts_over() {
        let tmp = tempfile::tempdir().unwrap();
        let outs = SetupOutputs::new(tmp.path().to_path_buf());
        let f = outs.node("w", "c", "n1").await.unwrap();
        assert_eq!(f.held(), Held::default());
        let w = |run: &str, off: u64, data: &[u8]| {
            outs.write(
                f.clone(),
                run.into(),
                StreamKind::Stdout,
                off,
                data.to_vec(),
            )
        };
        assert_eq!(w("r1", 0, b"hello ").await.unwrap(), 6);
        assert_eq!(
            w("r1", 3, b"lo world").await.unwrap(),
            11,
            "overlap skipped"
        );
        assert_eq!(w("r1", 20, b"gap").await.unwrap(), 11, "a gap is dropped");
        let path = f.dir().join("stdout.txt");
        assert_eq!(std::fs::read(&path).unwrap(), b"hello world");

        // Reloaded from disk (a coordinator restart), the run and lengths stay.
        let again = SetupOutputs::new(tmp.path().to_path_buf());
        let g = again.node("w", "c", "n1").await.unwrap();
        assert_eq!(g.held().run, "r1");
        assert_eq!(g.held().len(StreamKind::Stdout), 11);

        assert_eq!(w("r2", 0, b"new").await.unwrap(), 3);
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(f.held().run, "r2");

        outs.delete_cluster("w", "c").await.unwrap();
        assert!(!outs.cluster_dir("w", "c").exists());
    }
}
