//! `stream`: a coordinator and one real agent (local mode); one job writes
//! `--bytes` bytes of a known pattern (`yes LINE | head -c N`) to stdout while a
//! client follows `stdouterr/stdout.txt` with StreamOutputFile(follow). The
//! clock runs from the create RPC returning until the follow stream has ended
//! with every byte — it ends only once the job has ended and every byte, each
//! sent as it became durable, was sent. `mb_per_s` is 10^6 bytes per second.
//!
//! Verification (`checksum_ok`): every streamed byte equals the pattern at its
//! offset, the length is exact, and the checksum of the streamed bytes, of the
//! file the coordinator stored under its state directory, and of the expected
//! pattern are all equal; the job succeeded.

use super::{CpuSplit, memory_figures, start};
use crate::api::{self, ms_between};
use crate::cli::Opts;
use crate::harness::Binaries;
use crate::report::Report;
use crate::stats::{Hasher, PatternCheck, pattern_command, pattern_hash, round3};
use anyhow::{Context, Result, bail};
use bai_proto::v1 as pb;
use pb::job_service_client::JobServiceClient;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

const JOB: &str = "stream";

pub async fn run(opts: &Opts, bins: &Binaries) -> Result<Report> {
    let bytes = opts.bytes();
    let mut report = Report::new("stream");
    report
        .param("bytes", bytes)
        .param("command", pattern_command(bytes));
    let (coord, api) = start(opts, bins, true, 1).await?;
    let expected = pattern_hash(bytes);
    let mut client = api.jobs(0);

    let split = CpuSplit::start(coord.pid()?, coord.local_agent_pids());
    let (created, returned) = api::create_job(&mut client, JOB, &pattern_command(bytes)).await?;
    let t0 = Instant::now();
    let mut check = PatternCheck::new();
    let (mut chunks, mut reopens, mut ended_seen) = (0u64, 0u32, false);
    loop {
        let mut stream = open_follow(&mut client, check.len).await?;
        let before = check.len;
        while let Some(c) = stream.message().await.context("StreamOutputFile stream")? {
            if c.offset != check.len {
                bail!("chunk at offset {} after {} bytes", c.offset, check.len);
            }
            check.update(&c.data);
            chunks += 1;
        }
        if check.len >= bytes {
            break;
        }
        // The stream ended short. Re-open while the job runs; once it has
        // ended, one more pass may pick up the last durable bytes.
        let job = client
            .get_job(pb::GetJobRequest {
                job: Some(api::key(JOB)),
            })
            .await
            .context("GetJob")?
            .into_inner();
        if api::is_ended(&job) {
            if ended_seen && check.len == before {
                break;
            }
            ended_seen = true;
        }
        reopens += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    split.report(&mut report);
    memory_figures(&mut report, "coordinator_", coord.pid()?);

    let (job, _) = api::watch_until_ended(&mut client, JOB).await?;
    let stored = stored_stdout(coord.dir(), &created.id)?;
    let stored_hash = hash_file(&stored)?;
    let listed = client
        .list_output_files(pb::ListOutputFilesRequest {
            job: Some(api::key(JOB)),
            output_directory_id: "stdouterr".into(),
            ..Default::default()
        })
        .await
        .context("ListOutputFiles")?
        .into_inner()
        .files
        .into_iter()
        .find(|f| f.name == "stdout.txt")
        .map(|f| f.content_length);

    let streamed_hash = check.hash.finish();
    let ok = api::succeeded(&job)
        && check.first_mismatch.is_none()
        && check.len == bytes
        && streamed_hash == expected
        && stored_hash == (bytes, expected);
    let info = job.execution_info.clone().unwrap_or_default();
    let times = info
        .start_time
        .and_then(|s| std::time::SystemTime::try_from(s).ok())
        .zip(
            info.end_time
                .and_then(|e| std::time::SystemTime::try_from(e).ok()),
        );
    report
        .figure("mb_per_s", round3(bytes as f64 / 1e6 / elapsed.max(1e-9)))
        .figure("elapsed_s", round3(elapsed))
        .figure("checksum_ok", ok)
        .figure("checksum", format!("{streamed_hash:016x}"))
        .figure("expected_checksum", format!("{expected:016x}"))
        .figure("stored_checksum", format!("{:016x}", stored_hash.1))
        .figure("streamed_bytes", check.len)
        .figure("stored_bytes", stored_hash.0)
        .figure("listed_bytes", listed)
        .figure("first_mismatch_offset", check.first_mismatch)
        .figure("chunks", chunks)
        .figure(
            "mean_chunk_bytes",
            check.len.checked_div(chunks).unwrap_or(0),
        )
        .figure("stream_reopens", reopens)
        .figure("job_succeeded", api::succeeded(&job))
        .figure(
            "job_run_s",
            times.map(|(s, e)| round3(ms_between(e, s) / 1e3)),
        )
        .figure(
            "submit_to_start_ms",
            times.map(|(s, _)| round3(ms_between(s, returned))),
        );
    Ok(report)
}

/// Opens StreamOutputFile(follow) from `offset`, waiting while the file does
/// not exist yet (the job is still queued).
async fn open_follow(
    client: &mut JobServiceClient<Channel>,
    offset: u64,
) -> Result<tonic::Streaming<pb::OutputFileChunk>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let req = pb::StreamOutputFileRequest {
            job: Some(api::key(JOB)),
            output_directory_id: "stdouterr".into(),
            path: "stdout.txt".into(),
            offset,
            follow: true,
            attempt: 0,
        };
        match client.stream_output_file(req).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::NotFound | tonic::Code::FailedPrecondition
                ) && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(s) => return Err(s).context("StreamOutputFile"),
        }
    }
}

/// The job's stored `stdouterr/stdout.txt` under the coordinator's state
/// directory (not the agents' spools under `local-nodes/`).
fn stored_stdout(state: &Path, job_id: &str) -> Result<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![state.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d)
            .with_context(|| format!("read {}", d.display()))?
            .flatten()
        {
            let p = e.path();
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() && e.file_name() != "local-nodes" {
                dirs.push(p);
            } else if ft.is_file()
                && e.file_name() == "stdout.txt"
                && p.parent()
                    .and_then(Path::file_name)
                    .is_some_and(|n| n == "stdouterr")
            {
                found.push(p);
            }
        }
    }
    let by_id: Vec<&PathBuf> = found
        .iter()
        .filter(|p| p.to_string_lossy().contains(job_id))
        .collect();
    match (by_id.as_slice(), found.as_slice()) {
        ([one], _) => Ok((*one).clone()),
        ([], [one]) => Ok(one.clone()),
        _ => bail!(
            "want one stored stdouterr/stdout.txt for job {job_id} under {}, found {found:?}",
            state.display()
        ),
    }
}

/// (length, checksum) of a file.
fn hash_file(path: &Path) -> Result<(u64, u64)> {
    let mut f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let (mut h, mut len, mut buf) = (Hasher::new(), 0u64, vec![0u8; 1 << 20]);
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("read {}", path.display()))?;
        if n == 0 {
            return Ok((len, h.finish()));
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
}
