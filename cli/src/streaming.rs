//! Streaming an output file to a writer, shared by `bai job file stream`,
//! `bai cluster file stream` and `bai demo`: raw bytes as they arrive
//! (flushed per chunk), resumed from the last received offset when the
//! connection drops, done when the coordinator ends the stream. A file that
//! does not exist yet is waited for while its job runs (or its node prepares).

use std::io::Write;
use std::time::Duration;

use bai_proto::v1 as pb;

use crate::client::{Api, is_not_found, is_transient};
use crate::error::CliError;
use crate::job::is_ended;
use crate::retry::{Backoff, GIVE_UP_AFTER};

/// How often to look again for a file that does not exist yet.
const FILE_POLL: Duration = Duration::from_secs(1);

/// Which job output file to stream (always followed).
#[derive(Debug, Clone)]
pub struct StreamTarget {
    pub key: pb::JobKey,
    pub output_directory_id: String,
    pub path: String,
    /// 0: the current (or last) attempt's.
    pub attempt: u32,
}

/// Which setup output file of a cluster's node to stream.
#[derive(Debug, Clone)]
pub struct ClusterFileTarget {
    pub workspace: String,
    pub cluster: String,
    pub node_id: String,
    pub path: String,
    /// Follow the file until the node's setup task has ended.
    pub follow: bool,
}

#[derive(Clone, Copy)]
enum Source<'a> {
    Job(&'a StreamTarget),
    Cluster(&'a ClusterFileTarget),
}

impl Source<'_> {
    fn path(&self) -> &str {
        match self {
            Source::Job(t) => &t.path,
            Source::Cluster(t) => &t.path,
        }
    }

    async fn open(
        &self,
        api: &Api,
        offset: u64,
    ) -> Result<tonic::Streaming<pb::OutputFileChunk>, tonic::Status> {
        match self {
            Source::Job(t) => {
                api.log(format!("StreamOutputFile {} from byte {offset}", t.path));
                let req = pb::StreamOutputFileRequest {
                    job: Some(t.key.clone()),
                    output_directory_id: t.output_directory_id.clone(),
                    path: t.path.clone(),
                    offset,
                    follow: true,
                    attempt: t.attempt,
                };
                Ok(api.jobs.clone().stream_output_file(req).await?.into_inner())
            }
            Source::Cluster(t) => {
                api.log(format!(
                    "StreamClusterFile {}/{} node {} {} from byte {offset}",
                    t.workspace, t.cluster, t.node_id, t.path
                ));
                let req = pb::StreamClusterFileRequest {
                    workspace: t.workspace.clone(),
                    cluster: t.cluster.clone(),
                    node_id: t.node_id.clone(),
                    path: t.path.clone(),
                    offset,
                    follow: t.follow,
                };
                Ok(api
                    .clusters
                    .clone()
                    .stream_cluster_file(req)
                    .await?
                    .into_inner())
            }
        }
    }

    /// Whether a file that does not exist may still appear: the job has not
    /// ended, or the node is still preparing (and the file is followed).
    async fn may_appear(&self, api: &Api) -> Result<bool, CliError> {
        match self {
            Source::Job(t) => {
                let job = api
                    .jobs
                    .clone()
                    .get_job(pb::GetJobRequest {
                        job: Some(t.key.clone()),
                    })
                    .await
                    .map_err(|e| api.error(e))?
                    .into_inner();
                Ok(!is_ended(&job))
            }
            Source::Cluster(t) if t.follow => {
                let nodes = api
                    .clusters
                    .clone()
                    .list_cluster_nodes(pb::ListClusterNodesRequest {
                        workspace: t.workspace.clone(),
                        cluster: t.cluster.clone(),
                    })
                    .await
                    .map_err(|e| api.error(e))?
                    .into_inner()
                    .nodes;
                Ok(nodes
                    .iter()
                    .any(|n| n.node_id == t.node_id && n.state() == pb::NodeState::Preparing))
            }
            Source::Cluster(_) => Ok(false),
        }
    }
}

enum Step {
    Done,
    Retry { progressed: bool },
}

/// Streams the job's file with follow=true into `out` until the coordinator
/// ends the stream; returns the number of bytes written. A closed `out` ends
/// it early.
pub async fn stream_file(
    api: &Api,
    target: &StreamTarget,
    out: &mut dyn Write,
) -> Result<u64, CliError> {
    stream(api, Source::Job(target), out).await
}

/// Streams a node's setup output file into `out` (see `stream_file`).
pub async fn stream_cluster_file(
    api: &Api,
    target: &ClusterFileTarget,
    out: &mut dyn Write,
) -> Result<u64, CliError> {
    stream(api, Source::Cluster(target), out).await
}

async fn stream(api: &Api, target: Source<'_>, out: &mut dyn Write) -> Result<u64, CliError> {
    let mut offset: u64 = 0;
    let mut backoff = Backoff::new(GIVE_UP_AFTER);
    loop {
        match stream_once(api, target, &mut offset, out).await? {
            Step::Done => return Ok(offset),
            Step::Retry { progressed } => {
                if progressed {
                    backoff.progress();
                }
                if !backoff.wait().await {
                    return Err(CliError::Unreachable {
                        address: api.address.clone(),
                        detail: format!(
                            "lost the output stream at byte {offset} and could not reconnect"
                        ),
                    });
                }
            }
        }
    }
}

async fn stream_once(
    api: &Api,
    target: Source<'_>,
    offset: &mut u64,
    out: &mut dyn Write,
) -> Result<Step, CliError> {
    let start = *offset;
    let mut stream = match target.open(api, start).await {
        Ok(stream) => stream,
        Err(s) => return on_error(api, target, s, false).await,
    };
    loop {
        match stream.message().await {
            Ok(Some(chunk)) => {
                let data = &chunk.data;
                let end = chunk.offset + data.len() as u64;
                if chunk.offset > *offset {
                    api.log(format!(
                        "the coordinator skipped from byte {offset} to {}; resuming",
                        chunk.offset
                    ));
                    return Ok(Step::Retry {
                        progressed: *offset > start,
                    });
                }
                if end <= *offset {
                    continue;
                }
                let skip = usize::try_from(*offset - chunk.offset).unwrap_or(data.len());
                match out.write_all(&data[skip..]).and_then(|()| out.flush()) {
                    Ok(()) => *offset = end,
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(Step::Done),
                    Err(e) => return Err(e.into()),
                }
            }
            Ok(None) => return Ok(Step::Done),
            Err(s) => return on_error(api, target, s, *offset > start).await,
        }
    }
}

async fn on_error(
    api: &Api,
    target: Source<'_>,
    s: tonic::Status,
    progressed: bool,
) -> Result<Step, CliError> {
    if is_transient(&s) {
        api.log(format!(
            "the output stream dropped ({}); resuming",
            s.message()
        ));
        return Ok(Step::Retry { progressed });
    }
    if is_not_found(&s) && target.may_appear(api).await? {
        api.log(format!("{} does not exist yet; waiting", target.path()));
        tokio::time::sleep(FILE_POLL).await;
        return Ok(Step::Retry { progressed: true });
    }
    Err(api.error(s))
}
