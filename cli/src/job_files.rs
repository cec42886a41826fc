//! `bai job file list|stream`. Streaming follows StreamOutputFile: raw bytes
//! to stdout as they arrive (flushed per chunk), resumed from the last
//! received offset when the connection drops, done when the stream ends.

use std::io::Write;
use std::time::Duration;

use bai_proto::v1 as pb;

use crate::app::Ctx;
use crate::args::{JobFileCmd, JobRef};
use crate::batchai_json;
use crate::client::{Api, is_not_found, is_transient};
use crate::error::CliError;
use crate::job::is_ended;
use crate::render::Kind;
use crate::retry::{Backoff, GIVE_UP_AFTER};

/// How often to look again for a file that does not exist yet.
const FILE_POLL: Duration = Duration::from_secs(1);

fn key(j: &JobRef) -> pb::JobKey {
    pb::JobKey {
        workspace: j.experiment.workspace.workspace.clone(),
        experiment: j.experiment.experiment.clone(),
        name: j.job.clone(),
    }
}

/// The path of `file` inside the output directory's sub-directory `dir`.
pub fn file_path(dir: &str, file: &str) -> String {
    let dir = dir.trim_matches('/');
    if dir.is_empty() || dir == "." {
        file.to_string()
    } else {
        format!("{dir}/{file}")
    }
}

pub async fn run(ctx: &Ctx, cmd: JobFileCmd) -> Result<(), CliError> {
    match cmd {
        JobFileCmd::List {
            job,
            output_directory_id,
            path,
        } => {
            let api = ctx.api().await?;
            let r = api
                .jobs
                .clone()
                .list_output_files(pb::ListOutputFilesRequest {
                    job: Some(key(&job)),
                    output_directory_id,
                    directory: path,
                    max_results: 0,
                })
                .await
                .map_err(|s| api.error(s))?
                .into_inner();
            let files: Vec<_> = r.files.iter().map(batchai_json::file).collect();
            ctx.print_many(Kind::File, &files)
        }
        JobFileCmd::Stream {
            job,
            file_name,
            output_directory_id,
            path,
        } => {
            let mut out = std::io::stdout().lock();
            let target = StreamTarget {
                key: key(&job),
                output_directory_id,
                path: file_path(&path, &file_name),
            };
            stream_file(ctx.api().await?, &target, &mut out)
                .await
                .map(|_| ())
        }
    }
}

/// Which file to stream.
#[derive(Debug, Clone)]
pub struct StreamTarget {
    pub key: pb::JobKey,
    pub output_directory_id: String,
    pub path: String,
}

enum Step {
    Done,
    Retry { progressed: bool },
}

/// Streams the file with follow=true into `out` until the coordinator ends the
/// stream; returns the number of bytes written. A closed `out` ends it early.
pub async fn stream_file(
    api: &Api,
    target: &StreamTarget,
    out: &mut dyn Write,
) -> Result<u64, CliError> {
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
    target: &StreamTarget,
    offset: &mut u64,
    out: &mut dyn Write,
) -> Result<Step, CliError> {
    let start = *offset;
    api.log(format!(
        "StreamOutputFile {} from byte {start}",
        target.path
    ));
    let req = pb::StreamOutputFileRequest {
        job: Some(target.key.clone()),
        output_directory_id: target.output_directory_id.clone(),
        path: target.path.clone(),
        offset: start,
        follow: true,
    };
    let mut stream = match api.jobs.clone().stream_output_file(req).await {
        Ok(r) => r.into_inner(),
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
    target: &StreamTarget,
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
    if is_not_found(&s) {
        // The file may not exist yet: wait while the job has not ended.
        let job = api
            .jobs
            .clone()
            .get_job(pb::GetJobRequest {
                job: Some(target.key.clone()),
            })
            .await
            .map_err(|e| api.error(e))?
            .into_inner();
        if !is_ended(&job) {
            api.log(format!("{} does not exist yet; waiting", target.path));
            tokio::time::sleep(FILE_POLL).await;
            return Ok(Step::Retry { progressed: true });
        }
    }
    Err(api.error(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_paths() {
        assert_eq!(file_path(".", "stdout.txt"), "stdout.txt");
        assert_eq!(file_path("", "stdout.txt"), "stdout.txt");
        assert_eq!(file_path("logs/", "a.txt"), "logs/a.txt");
    }
}
