//! `bai job file list|stream`. Streaming (`streaming`) follows
//! StreamOutputFile: raw bytes to stdout as they arrive, resumed from the last
//! received offset when the connection drops, done when the stream ends.

use bai_proto::v1 as pb;

use crate::app::Ctx;
use crate::args::{JobFileCmd, JobRef};
use crate::batchai_json;
use crate::error::CliError;
use crate::render::Kind;
pub use crate::streaming::{StreamTarget, stream_file};

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
            attempt,
        } => {
            let api = ctx.api().await?;
            // Every page: a directory of checkpoints may hold thousands.
            let mut files = Vec::new();
            let mut page_token = String::new();
            loop {
                let r = api
                    .jobs
                    .clone()
                    .list_output_files(pb::ListOutputFilesRequest {
                        job: Some(key(&job)),
                        output_directory_id: output_directory_id.clone(),
                        directory: path.clone(),
                        max_results: 0,
                        page_token,
                        attempt,
                    })
                    .await
                    .map_err(|s| api.error(s))?
                    .into_inner();
                files.extend(r.files.iter().map(batchai_json::file));
                if r.next_page_token.is_empty() {
                    break;
                }
                page_token = r.next_page_token;
            }
            ctx.print_many(Kind::File, &files)
        }
        JobFileCmd::Stream {
            job,
            file_name,
            output_directory_id,
            path,
            attempt,
        } => {
            ctx.refuse_query("bai job file stream")?;
            let mut out = std::io::stdout().lock();
            let target = StreamTarget {
                key: key(&job),
                output_directory_id,
                path: file_path(&path, &file_name),
                attempt,
            };
            stream_file(ctx.api().await?, &target, &mut out)
                .await
                .map(|_| ())
        }
    }
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
