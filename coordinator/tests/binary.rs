//! The `bai-coordinator` binary: exit codes, the address file, health, JSON
//! logs, and adopting local agents after `kill -9`.
#![allow(clippy::unwrap_used)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_bai-coordinator");

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start(state: &Path, extra: &[&str]) -> (Child, String) {
    start_on(state, "127.0.0.1:0", extra)
}

fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn start_on(state: &Path, listen: &str, extra: &[&str]) -> (Child, String) {
    let _ = std::fs::remove_file(state.join("coordinator.addr"));
    let child = Command::new(BIN)
        .args(["--listen", listen, "--state-dir"])
        .arg(state)
        .args(["--config", "/dev/null"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr_file = state.join("coordinator.addr");
    wait_for("coordinator.addr", || addr_file.exists());
    let addr = std::fs::read_to_string(addr_file).unwrap();
    (child, addr)
}

fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).unwrap();
}

fn wait_exit(mut child: Child) -> (i32, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.code().unwrap_or(-1), err);
        }
        assert!(Instant::now() < deadline, "coordinator did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn bad_configuration_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    };
    let out = run(&["--listen", "not-an-address", "--config", "/dev/null"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen:"));
    let out = run(&["--config", "/nonexistent/coordinator.toml"]);
    assert_eq!(out.status.code(), Some(2));
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "no_such_key = 1\n").unwrap();
    let out = run(&["--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_key"));
    let out = run(&[
        "--local-agents",
        "--agent-bin",
        "/nonexistent/bai-agent",
        "--config",
        "/dev/null",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("agent_bin"));
    let out = run(&["--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(run(&["--help"]).status.code(), Some(0));
}

#[test]
fn serves_health_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (child, addr) = start(dir.path(), &["--log-format", "json"]);
    assert!(
        addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
        "{addr}"
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
        for service in [
            "",
            "bai.v1.JobService",
            "bai.v1.AgentService",
            "bai.v1.ClusterService",
        ] {
            let r = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(
                r.status,
                tonic_health::pb::health_check_response::ServingStatus::Serving as i32
            );
        }
    });
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    let (code, stderr) = wait_exit(child);
    assert_eq!(code, 0, "{stderr}");
    let listening = stderr
        .lines()
        .find(|l| l.contains("listening on"))
        .unwrap_or_else(|| panic!("no listening line in {stderr}"));
    let v: serde_json::Value = serde_json::from_str(listening).unwrap();
    // The shape both daemons share: the event's fields beside level and target.
    assert_eq!(v["message"], format!("listening on {addr}"));
    assert_eq!(v["level"], "INFO");
    assert!(v.get("fields").is_none(), "{listening}");
}

fn fake_agent(dir: &Path) -> PathBuf {
    let path = dir.join("bai-agent");
    std::fs::write(
        &path,
        "#!/bin/sh\ntrap 'exit 0' TERM\nwhile :; do sleep 0.05; done\n",
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn agent_pids(state: &Path) -> Vec<(String, i32)> {
    let mut v: Vec<(String, i32)> = std::fs::read_dir(state.join("local-nodes"))
        .map(|r| {
            r.flatten()
                .filter_map(|e| {
                    let pid = std::fs::read_to_string(e.path().join("agent.pid")).ok()?;
                    Some((
                        e.file_name().to_string_lossy().into_owned(),
                        pid.trim().parse().ok()?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn alive(pid: i32) -> bool {
    bai_common::procfs::alive(pid)
}

#[test]
fn adopts_local_agents_after_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let bin = fake_agent(dir.path());
    let extra = ["--local-agents", "--agent-bin", bin.to_str().unwrap()];
    let listen = free_port();
    let (child, addr) = start_on(&state, &listen, &extra);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let c = support::Seeder { channel };
        c.seed(2).await;
    });
    wait_for("two agents", || {
        let p = agent_pids(&state);
        p.len() == 2 && p.iter().all(|(_, pid)| alive(*pid))
    });
    let before = agent_pids(&state);
    signal(&child, nix::sys::signal::Signal::SIGKILL);
    let (code, _) = wait_exit(child);
    assert_eq!(code, -1);
    assert!(
        before.iter().all(|(_, p)| alive(*p)),
        "agents outlive a killed coordinator"
    );

    let (child, addr) = start_on(&state, &listen, &extra);
    // Grow the cluster to three: the pass that starts the third agent runs
    // after the first pass following adoption, so a wrong respawn of the two
    // adopted agents would have happened by the time the third one is up.
    rt.block_on(async {
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        bai_proto::v1::cluster_service_client::ClusterServiceClient::new(channel)
            .update_cluster(bai_proto::v1::UpdateClusterRequest {
                workspace: "w".into(),
                name: "c".into(),
                scale_settings: Some(bai_proto::v1::ScaleSettings {
                    manual: Some(bai_proto::v1::ManualScaleSettings {
                        target_node_count: 3,
                        ..Default::default()
                    }),
                    auto_scale: None,
                }),
            })
            .await
            .unwrap();
    });
    wait_for("a third agent", || {
        let p = agent_pids(&state);
        p.len() == 3 && p.iter().all(|(_, pid)| alive(*pid))
    });
    let grown = agent_pids(&state);
    assert!(
        before.iter().all(|b| grown.contains(b)),
        "the adopted agents were replaced: {before:?} -> {grown:?}"
    );
    let before = grown;
    signal(&child, nix::sys::signal::Signal::SIGKILL);
    wait_exit(child);

    // On another port, the agents (which dial the old one) are restarted
    // with the same node ids.
    let (child, _) = start(&state, &extra);
    wait_for("agents restarted", || {
        let now = agent_pids(&state);
        now.len() == 3
            && now
                .iter()
                .zip(&before)
                .all(|((id, pid), (old_id, old_pid))| id == old_id && pid != old_pid && alive(*pid))
    });
    assert!(before.iter().all(|(_, p)| !alive(*p)));
    let after = agent_pids(&state);
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    let (code, stderr) = wait_exit(child);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("dials an old coordinator address"),
        "{stderr}"
    );
    wait_for("agents stopped", || after.iter().all(|(_, p)| !alive(*p)));
}
