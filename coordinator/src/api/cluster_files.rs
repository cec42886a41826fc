//! ListClusterFiles and StreamClusterFile in domain form: the setup task's
//! output of a cluster's nodes (`setup_output.rs`), listed as Batch AI named
//! the files on a mount (`stdout-<node>.txt`, `stderr-<node>.txt`,
//! `execution-<node>.log`) and streamed from an offset, following while the
//! node is preparing.

use super::output_files::{CHUNK, Chunks, OutputChunk, read_at};
use crate::core::Core;
use crate::domain::{Millis, NodeState};
use crate::error::{Error, to_status};
use crate::output::StreamKind;
use crate::setup_output::NodeFiles;
use std::fs::File;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::Instrument;

/// How often a follower re-reads its node's state while no output arrives.
const NODE_POLL: Duration = Duration::from_secs(1);

/// One setup output file of a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterFile {
    pub node_id: String,
    /// `stdout-<node>.txt`, `stderr-<node>.txt` or `execution-<node>.log`.
    pub name: String,
    pub length: u64,
    pub modified: Millis,
}

/// The file's name with the node id, as Batch AI wrote it to a mount.
pub fn node_file_name(stream: StreamKind, node: &str) -> String {
    match stream {
        StreamKind::Stdout => format!("stdout-{node}.txt"),
        StreamKind::Stderr => format!("stderr-{node}.txt"),
        StreamKind::ExecutionLog => format!("execution-{node}.log"),
        // Not a setup task's; named as a job's would be on that node.
        StreamKind::JobPrepStdout => format!("stdout-job_prep-{node}.txt"),
        StreamKind::JobPrepStderr => format!("stderr-job_prep-{node}.txt"),
    }
}

/// The stream named by `path`: "stdout.txt" or "stdout-<node>.txt" (and so on).
fn stream_of(path: &str, node: &str) -> Option<StreamKind> {
    let path = path.trim_start_matches("./");
    StreamKind::STDOUTERR
        .into_iter()
        .find(|s| s.file_name() == path || node_file_name(*s, node) == path)
}

/// The setup output files of cluster `ws/cluster`'s nodes (one node's with
/// `node`), in node order; a node whose setup task has written nothing has none.
pub async fn list(
    core: &Core,
    ws: &str,
    cluster: &str,
    node: Option<&str>,
) -> Result<Vec<ClusterFile>, Error> {
    core.store.get_cluster(ws, cluster).await?;
    let nodes = core.store.list_nodes(ws, cluster).await?;
    if let Some(n) = node
        && !nodes.iter().any(|x| x.node_id == n)
    {
        return Err(Error::not_found("node", format!("{ws}/{cluster}/{n}")));
    }
    let mut out = Vec::new();
    for n in nodes
        .iter()
        .filter(|x| node.is_none_or(|id| id == x.node_id))
    {
        let files = core.setup_outputs.node(ws, cluster, &n.node_id).await?;
        let dir = files.dir().to_path_buf();
        let held = files.held();
        let modified = tokio::task::spawn_blocking(move || {
            StreamKind::STDOUTERR.map(|s| {
                std::fs::metadata(dir.join(s.file_name()))
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            })
        })
        .await?;
        for (s, m) in StreamKind::STDOUTERR.into_iter().zip(modified) {
            if let Some(modified) = m {
                out.push(ClusterFile {
                    node_id: n.node_id.clone(),
                    name: node_file_name(s, &n.node_id),
                    length: held.len(s),
                    modified,
                });
            }
        }
    }
    Ok(out)
}

/// A StreamClusterFile request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRequest {
    pub workspace: String,
    pub cluster: String,
    pub node_id: String,
    pub path: String,
    pub offset: u64,
    pub follow: bool,
}

/// Streams one node's setup output file from `offset`; with `follow`, until
/// the node is no longer preparing and every byte was sent.
pub async fn stream(core: Arc<Core>, r: StreamRequest) -> Result<Chunks, Error> {
    let node = core.store.get_node(&r.node_id).await?;
    if node.workspace != r.workspace || node.cluster != r.cluster {
        return Err(Error::not_found(
            "node",
            format!("{}/{}/{}", r.workspace, r.cluster, r.node_id),
        ));
    }
    let stream = stream_of(&r.path, &r.node_id)
        .ok_or_else(|| Error::not_found("file", format!("{}: {}", r.node_id, r.path)))?;
    let files = core
        .setup_outputs
        .node(&r.workspace, &r.cluster, &r.node_id)
        .await?;
    let (tx, rx) = mpsc::channel(4);
    let span =
        tracing::info_span!("stream_setup_output", node = %r.node_id, file = stream.file_name());
    let f = Follower {
        core,
        node_id: r.node_id,
        files,
        stream,
        run: None,
        offset: r.offset,
        follow: r.follow,
        tx,
    };
    tokio::spawn(f.run().instrument(span));
    Ok(rx)
}

struct Follower {
    core: Arc<Core>,
    node_id: String,
    files: Arc<NodeFiles>,
    stream: StreamKind,
    /// The run being streamed, and the file open for it.
    run: Option<(String, Arc<File>)>,
    offset: u64,
    follow: bool,
    tx: mpsc::Sender<Result<OutputChunk, tonic::Status>>,
}

impl Follower {
    async fn run(mut self) {
        if let Err(e) = self.pump().await {
            let _ = self.tx.send(Err(to_status(&e))).await;
        }
    }

    async fn pump(&mut self) -> Result<(), Error> {
        let mut changes = self.files.watch();
        let mut shutdown = self.core.shutdown();
        loop {
            changes.borrow_and_update();
            let held = self.files.held();
            if let Some((run, _)) = &self.run
                && *run != held.run
            {
                return Err(Error::Aborted(format!(
                    "{}: the node's setup task ran again; stream it again from offset 0",
                    self.stream.file_name()
                )));
            }
            let len = held.len(self.stream);
            if self.offset < len {
                self.send_up_to(&held.run, len).await?;
                continue;
            }
            if !self.follow {
                return Ok(());
            }
            let node = self.core.store.get_node(&self.node_id).await?;
            if node.state != NodeState::Preparing
                && self.files.held().len(self.stream) <= self.offset
            {
                return Ok(());
            }
            tokio::select! {
                _ = self.tx.closed() => return Ok(()),
                _ = crate::core::stopped(&mut shutdown) => {
                    return Err(Error::Unavailable("the coordinator is shutting down".into()));
                }
                _ = changes.changed() => {}
                _ = tokio::time::sleep(NODE_POLL) => {}
            }
        }
    }

    async fn send_up_to(&mut self, run: &str, len: u64) -> Result<(), Error> {
        let want = (len - self.offset).min(CHUNK) as usize;
        let handle = match &self.run {
            Some((r, h)) if r == run => h.clone(),
            _ => {
                let path = self.files.dir().join(self.stream.file_name());
                let f = tokio::task::spawn_blocking(move || File::open(path))
                    .await?
                    .map_err(|e| Error::internal("open setup output", e))?;
                let f = Arc::new(f);
                self.run = Some((run.to_string(), f.clone()));
                f
            }
        };
        let offset = self.offset;
        let data = tokio::task::spawn_blocking(move || read_at(&handle, offset, want))
            .await?
            .map_err(|e| Error::internal("read setup output", e))?;
        if data.is_empty() {
            // The run changed between the length and the read; the loop says so.
            return Ok(());
        }
        let n = data.len() as u64;
        if self
            .tx
            .send(Ok(OutputChunk { offset, data }))
            .await
            .is_err()
        {
            return Err(Error::Cancelled("the client went away".into()));
        }
        self.offset += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_named_after_the_node_and_found_by_either_name() {
        assert_eq!(node_file_name(StreamKind::Stdout, "n1"), "stdout-n1.txt");
        assert_eq!(
            node_file_name(StreamKind::ExecutionLog, "n1"),
            "execution-n1.log"
        );
        assert_eq!(stream_of("stderr.txt", "n1"), Some(StreamKind::Stderr));
        assert_eq!(stream_of("./stderr-n1.txt", "n1"), Some(StreamKind::Stderr));
        assert_eq!(stream_of("stderr-n2.txt", "n1"), None);
        assert_eq!(stream_of("other.txt", "n1"), None);
    }
}
