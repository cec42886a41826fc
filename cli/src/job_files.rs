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
            ctx.refuse_query("bai job file stream")?;
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
