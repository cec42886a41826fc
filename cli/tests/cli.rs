//! The `bai` binary against an in-process fake coordinator: the requests it
//! sends, the exit codes it returns, and the bytes it streams.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Output;
use std::time::Duration;

use bai_proto::v1 as pb;
use support::{Fake, Proxy, WatchScript};
use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tonic::Status;

const BAI: &str = env!("CARGO_BIN_EXE_bai");

fn bai(addr: impl std::fmt::Display, args: &[&str]) -> Command {
    let mut c = Command::new(BAI);
    c.arg("--coordinator").arg(addr.to_string()).args(args);
    c.env_remove("BAI_WORKSPACE")
        .env_remove("BAI_EXPERIMENT")
        .env_remove("BAI_COORDINATOR");
    c.stdin(std::process::Stdio::null());
    c.kill_on_drop(true);
    c
}

async fn run(mut c: Command) -> Output {
    tokio::time::timeout(Duration::from_secs(60), c.output())
        .await
        .expect("bai timed out")
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn job(state: pb::ExecutionState, exit_code: Option<i32>) -> pb::Job {
    pb::Job {
        workspace: "w".into(),
        experiment: "e".into(),
        name: "j".into(),
        execution_state: state as i32,
        execution_info: Some(pb::JobExecutionInfo {
            exit_code,
            ..Default::default()
        }),
        node_ids: vec!["node-1".into()],
        ..Default::default()
    }
}

#[tokio::test]
async fn job_create_with_command_line_sends_the_right_request() {
    let fake = Fake::default();
    let addr = fake.serve().await;
    let mut c = bai(
        addr,
        &[
            "job",
            "create",
            "-w",
            "w",
            "-e",
            "e",
            "-n",
            "j",
            "-c",
            "c1",
            "--command-line",
            "echo hi",
            "--env",
            "A=1",
            "--secret-env",
            "TOKEN",
        ],
    );
    c.env("TOKEN", "s3cret-value");
    let out = run(c).await;
    assert!(out.status.success(), "{}", stderr(&out));

    let sent = fake.with(|s| s.create_requests.clone());
    assert_eq!(sent.len(), 1);
    let j = &sent[0];
    assert_eq!(
        (j.workspace.as_str(), j.experiment.as_str(), j.name.as_str()),
        ("w", "e", "j")
    );
    assert_eq!(
        j.cluster,
        Some(pb::ClusterRef {
            workspace: "w".into(),
            name: "c1".into()
        })
    );
    assert_eq!(j.node_count, 1);
    assert_eq!(
        j.toolkit,
        Some(pb::job::Toolkit::CustomToolkitSettings(
            pb::CustomToolkitSettings {
                command_line: "echo hi".into()
            }
        ))
    );
    assert_eq!(
        j.environment_variables,
        vec![pb::EnvironmentVariable {
            name: "A".into(),
            value: "1".into()
        }]
    );
    assert_eq!(j.secrets.len(), 1);
    assert_eq!(
        (j.secrets[0].name.as_str(), j.secrets[0].value.as_str()),
        ("TOKEN", "s3cret-value")
    );

    let stdout = String::from_utf8(out.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["name"], "j");
    assert_eq!(v["executionState"], "queued");
    assert_eq!(v["customToolkitSettings"]["commandLine"], "echo hi");
    assert_eq!(v["nodeCount"], 1);
    assert_eq!(v["secrets"][0]["name"], "TOKEN");
    assert!(
        !stdout.contains("s3cret-value"),
        "a secret value was printed:\n{stdout}"
    );
}

#[tokio::test]
async fn job_wait_follows_reconnects_and_exits_with_the_jobs_code() {
    let fake = Fake::default();
    fake.with(|s| {
        s.watch_scripts.push_back(WatchScript {
            jobs: vec![
                job(pb::ExecutionState::Queued, None),
                job(pb::ExecutionState::Running, None),
            ],
            then_error: Some(Status::unavailable("connection reset")),
        });
        s.watch_scripts.push_back(WatchScript {
            jobs: vec![
                job(pb::ExecutionState::Running, None),
                job(pb::ExecutionState::Failed, Some(7)),
            ],
            then_error: None,
        });
    });
    let addr = fake.serve().await;
    let out = run(bai(addr, &["job", "wait", "-w", "w", "-e", "e", "-n", "j"])).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert_eq!(fake.with(|s| s.watch_calls), 2, "reconnected once");
    assert_eq!(
        err.matches("job 'j': running").count(),
        1,
        "each state is logged once:\n{err}"
    );
    assert!(err.contains("job 'j': queued"), "{err}");
    assert!(err.contains("job 'j': failed (exit code 7)"), "{err}");
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn job_wait_exit_codes_without_an_exit_code() {
    for (state, want) in [
        (pb::ExecutionState::Failed, 1),
        (pb::ExecutionState::Succeeded, 0),
    ] {
        let fake = Fake::default();
        fake.with(|s| {
            s.watch_scripts.push_back(WatchScript {
                jobs: vec![job(state, None)],
                then_error: None,
            })
        });
        let addr = fake.serve().await;
        let out = run(bai(addr, &["job", "wait", "-w", "w", "-e", "e", "-n", "j"])).await;
        assert_eq!(out.status.code(), Some(want), "{state:?}: {}", stderr(&out));
    }
}

/// Bytes that are not text: every byte value, invalid UTF-8, CR/LF, NULs.
fn binary_file() -> Vec<u8> {
    let mut v = Vec::new();
    for i in 0..600u32 {
        v.extend((0..=255u8).map(|b| b.wrapping_add(i as u8)));
        v.extend_from_slice(b"\xff\xfe\r\n\0\0");
    }
    v
}

#[tokio::test]
async fn job_file_stream_is_byte_exact_and_resumes_after_a_dropped_connection() {
    let fake = Fake::default();
    let file = binary_file();
    let cut_at = 40_000;
    fake.with(|s| {
        s.file = file.clone();
        s.first_call_stops_at = Some(cut_at);
    });
    let addr = fake.serve().await;
    let proxy = Proxy::start(addr).await;
    let mut cmd = bai(
        proxy.addr,
        &["job", "file", "stream", "-w", "w", "-e", "e", "-j", "j"],
    );
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();

    // Once the CLI has written the first part, cut the connection under it.
    let mut got = vec![0u8; cut_at];
    tokio::time::timeout(Duration::from_secs(30), stdout.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    proxy.cut();
    tokio::time::timeout(Duration::from_secs(60), stdout.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(got.len(), file.len(), "{}", stderr(&out));
    assert!(got == file, "streamed bytes differ from the file");
    let reqs = fake.with(|s| s.stream_requests.clone());
    assert_eq!(reqs.len(), 2, "one reconnect: {reqs:?}");
    assert_eq!(
        reqs[0],
        (0, "stdout.txt".to_string(), "stdouterr".to_string(), true)
    );
    assert_eq!(
        reqs[1].0, cut_at as u64,
        "resumed from the last received byte"
    );
}

#[tokio::test]
async fn invalid_argument_is_printed_with_its_field_and_exit_1() {
    let fake = Fake::default();
    fake.with(|s| {
        s.create_error = Some(Status::invalid_argument(
            "job.node_count: must be at least 1",
        ))
    });
    let addr = fake.serve().await;
    let out = run(bai(
        addr,
        &[
            "job",
            "create",
            "-w",
            "w",
            "-e",
            "e",
            "-n",
            "j",
            "-c",
            "c",
            "--command-line",
            "x",
        ],
    ))
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "error: job.node_count: must be at least 1\n");
    assert!(out.stdout.is_empty());
}

#[tokio::test]
async fn not_found_is_an_api_error() {
    let fake = Fake::default();
    let addr = fake.serve().await;
    let out = run(bai(
        addr,
        &["job", "show", "-w", "w", "-e", "e", "-n", "nope"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "error: job 'nope' not found\n");
}

#[tokio::test]
async fn unreachable_coordinator_exits_3() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = run(bai(
        format!("127.0.0.1:{port}"),
        &["job", "show", "-w", "w", "-e", "e", "-n", "j"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(3));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: cannot reach the coordinator at http://127.0.0.1:"),
        "{err}"
    );
}

#[tokio::test]
async fn usage_errors_exit_2_before_any_connection() {
    // Nothing listens here: local checks must fail first, with 2, not 3.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let nowhere = format!("127.0.0.1:{port}");
    let out = run(bai(&nowhere, &["job", "create", "-w", "w"])).await;
    assert_eq!(out.status.code(), Some(2), "clap: {}", stderr(&out));
    let out = run(bai(
        &nowhere,
        &[
            "job",
            "create",
            "-w",
            "w",
            "-e",
            "e",
            "-n",
            "j",
            "--command-line",
            "x",
        ],
    ))
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no cluster"), "{}", stderr(&out));
    let out = run(bai(
        &nowhere,
        &[
            "job",
            "create",
            "-w",
            "w",
            "-e",
            "e",
            "-n",
            "j",
            "-c",
            "c",
            "-f",
            "/nonexistent.json",
        ],
    ))
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("-f/--config-file: cannot read /nonexistent.json"),
        "{}",
        stderr(&out)
    );
    let out = run(bai(
        &nowhere,
        &[
            "cluster", "create", "-w", "w", "-n", "c", "--min", "3", "--max", "1",
        ],
    ))
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--min (3) must not be greater than --max (1)"),
        "{}",
        stderr(&out)
    );
    // A delete without -y and without a terminal is refused, and nothing is sent.
    let out = run(bai(
        &nowhere,
        &["job", "delete", "-w", "w", "-e", "e", "-n", "j"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("pass -y/--yes"), "{}", stderr(&out));

    let fake = Fake::default();
    let addr = fake.serve().await;
    let out = run(bai(
        addr,
        &["job", "delete", "-w", "w", "-e", "e", "-n", "j", "-y"],
    ))
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test]
async fn show_as_table_and_tsv() {
    let fake = Fake::default();
    let mut j = job(pb::ExecutionState::Succeeded, Some(0));
    j.cluster = Some(pb::ClusterRef {
        workspace: "w".into(),
        name: "c1".into(),
    });
    j.node_count = 1;
    j.tool_type = pb::ToolType::Custom as i32;
    fake.with(|s| s.get_job = Some(j));
    let addr = fake.serve().await;
    let out = run(bai(
        addr,
        &["job", "show", "-w", "w", "-e", "e", "-n", "j", "-o", "tsv"],
    ))
    .await;
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "j\te\tc1\t1\tcustom\tsucceeded\t0\t\t\t\n"
    );
    let out = run(bai(
        addr,
        &[
            "job", "show", "-w", "w", "-e", "e", "-n", "j", "-o", "table",
        ],
    ))
    .await;
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.lines().next().unwrap().contains("Name") && table.contains("succeeded"),
        "{table}"
    );
}
