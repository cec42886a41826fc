//! Every scenario at a tiny size through the real `bai-bench` binary, which
//! starts the real `bai-coordinator` (and `bai-agent`s or simulated agents).
//! Checks the JSON line's shape and that the work really happened (jobs
//! succeeded, bytes verified, nodes registered) — never the speed — and that
//! nothing the run started is left running.
//!
//! The coordinator and agent binaries must sit next to `bai-bench`; the test
//! builds them (`cargo build -p bai-coordinator -p bai-agent`, same profile)
//! when they are missing.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// One scenario at a time: each starts its own coordinator, and a 2-core
/// machine running several at once makes the setup timeouts flaky.
static SERIAL: Mutex<()> = Mutex::new(());

fn bench_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_bai-bench"))
}

/// Builds bai-coordinator and bai-agent into bai-bench's directory if absent.
fn ensure_binaries() {
    let bin = bench_bin();
    let dir = bin.parent().expect("bai-bench has a directory");
    if dir.join("bai-coordinator").is_file() && dir.join("bai-agent").is_file() {
        return;
    }
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "-p", "bai-coordinator", "-p", "bai-agent"]);
    if dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build");
    assert!(
        status.success(),
        "cargo build -p bai-coordinator -p bai-agent failed"
    );
}

/// Runs `bai-bench ARGS --keep-dir`, checks the run left no process behind
/// and the traceability fields, deletes the kept directory, returns the JSON.
fn bench(args: &[&str]) -> Value {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    ensure_binaries();
    let out = Command::new(bench_bin())
        .args(args)
        .args(["--keep-dir", "--timeout-s", "300"])
        .output()
        .expect("run bai-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let kept = stderr
        .lines()
        .find_map(|l| l.strip_prefix("bai-bench: kept "))
        .map(PathBuf::from);
    if let Some(dir) = &kept {
        let left = processes_under(dir);
        let _ = std::fs::remove_dir_all(dir);
        assert!(
            left.is_empty(),
            "processes left running under {}: {left:?}",
            dir.display()
        );
    }
    assert!(
        out.status.success(),
        "bai-bench {args:?} failed: {}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    assert!(
        kept.is_some(),
        "bai-bench did not say which directory it kept: {stderr}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "want one JSON line, got: {stdout}");
    let v: Value = serde_json::from_str(lines[0]).expect("stdout is JSON");
    assert_eq!(v["scenario"], args[0], "{v}");
    assert_eq!(v["bai_version"], env!("CARGO_PKG_VERSION"), "{v}");
    assert!(v["git"].as_str().is_some_and(|g| !g.is_empty()), "{v}");
    assert!(v["params"].is_object(), "{v}");
    v
}

/// Pids whose command line names `dir` (what the bench must have stopped).
fn processes_under(dir: &Path) -> Vec<(i32, String)> {
    let needle = dir.to_string_lossy().to_string();
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            cmd.contains(&needle).then_some((pid, cmd))
        })
        .collect()
}

fn num(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

#[test]
fn latency_runs_every_job_and_orders_its_percentiles() {
    let v = bench(&["latency", "--jobs", "20"]);
    assert_eq!(v["params"]["jobs"], 20, "{v}");
    assert_eq!(v["jobs"], 20, "{v}");
    assert_eq!(v["jobs_succeeded"], 20, "{v}");
    for k in ["submit_to_start_ms", "submit_to_done_ms"] {
        let (p50, p99) = (num(&v, &format!("{k}_p50")), num(&v, &format!("{k}_p99")));
        assert!(p50 <= p99, "{k}: p50 {p50} > p99 {p99}: {v}");
    }
    assert!(num(&v, "submit_to_done_ms_p50") > 0.0, "{v}");
    assert!(
        num(&v, "submit_to_start_ms_p50") <= num(&v, "submit_to_done_ms_p50"),
        "{v}"
    );
}

#[test]
fn throughput_runs_every_job_on_real_agents() {
    let v = bench(&["throughput", "--jobs", "20", "--nodes", "2"]);
    assert_eq!(v["params"]["nodes"], 2, "{v}");
    assert_eq!(v["jobs_succeeded"], 20, "{v}");
    assert_eq!(v["jobs_failed"], 0, "{v}");
    assert!(num(&v, "jobs_per_s") > 0.0, "{v}");
    assert!(num(&v, "submit_per_s") >= num(&v, "jobs_per_s"), "{v}");
}

#[test]
fn throughput_sim_runs_every_job_on_simulated_agents() {
    let v = bench(&["throughput-sim", "--jobs", "20", "--nodes", "10"]);
    assert_eq!(v["jobs_succeeded"], 20, "{v}");
    assert_eq!(v["registered"], true, "{v}");
    // The simulated agents really received and finished each job, once.
    assert_eq!(v["sim_jobs_done"], 20, "{v}");
    assert_eq!(v["sim_sessions_lost"], 0, "{v}");
    assert!(num(&v, "jobs_per_s") > 0.0, "{v}");
    assert!(num(&v, "cpu_s") > 0.0, "{v}");
    assert!(num(&v, "rss_mb") > 0.0, "{v}");
}

#[test]
fn gang_runs_every_multi_node_job_once_on_simulated_agents() {
    let v = bench(&["gang", "--jobs", "30", "--nodes", "16"]);
    assert_eq!(v["params"]["nodes"], 16, "{v}");
    assert_eq!(v["jobs_succeeded"], 30, "{v}");
    // Each job was run once, by its master; its other ranks only held nodes.
    assert_eq!(v["sim_jobs_done"], 30, "{v}");
    assert_eq!(v["sim_sessions_lost"], 0, "{v}");
    // The jobs sleep 0.05–0.5 s, so the batch takes at least the longest.
    assert!(num(&v, "makespan_s") >= 0.05, "{v}");
    let u = num(&v, "utilization");
    assert!(u > 0.0 && u <= 1.0, "{v}");
    assert!(
        num(&v, "makespan_s") >= num(&v, "makespan_lower_bound_s"),
        "{v}"
    );
}

#[test]
fn stream_delivers_and_stores_every_byte() {
    let v = bench(&["stream", "--bytes", "1000000"]);
    assert_eq!(v["params"]["bytes"], 1_000_000, "{v}");
    assert_eq!(v["checksum_ok"], true, "{v}");
    assert_eq!(v["streamed_bytes"], 1_000_000, "{v}");
    assert_eq!(v["stored_bytes"], 1_000_000, "{v}");
    assert_eq!(v["checksum"], v["expected_checksum"], "{v}");
    assert_eq!(v["stored_checksum"], v["expected_checksum"], "{v}");
    assert!(num(&v, "mb_per_s") > 0.0, "{v}");
}

#[test]
fn scale_registers_every_simulated_node() {
    let v = bench(&["scale", "--nodes", "10", "--duration-s", "3"]);
    assert_eq!(v["registered"], true, "{v}");
    assert_eq!(v["nodes_connected"], 10, "{v}");
    assert_eq!(v["params"]["gpus_per_node"], 8, "{v}");
    assert!(num(&v, "cpu_pct") >= 0.0, "{v}");
    assert!(num(&v, "rss_mb") > 0.0, "{v}");
}

#[test]
fn agent_idle_measures_a_live_registered_agent() {
    let v = bench(&["agent-idle", "--duration-s", "2"]);
    assert_eq!(v["agent_pid_alive"], true, "{v}");
    assert_eq!(v["idle_nodes"], 1, "{v}");
    assert!(num(&v, "rss_mb") > 0.0, "{v}");
    assert!(num(&v, "cpu_pct") >= 0.0, "{v}");
}

#[test]
fn elasticity_grows_an_empty_autoscale_cluster_and_empties_it_again() {
    let v = bench(&["elasticity", "--nodes", "2", "--job-secs", "2"]);
    assert_eq!(v["params"]["nodes"], 2, "{v}");
    assert_eq!(v["jobs_succeeded"], 2, "{v}");
    // The autoscaler brought up one real agent per job and took them away.
    assert_eq!(v["max_nodes"], 2, "{v}");
    assert_eq!(v["agents_started"], 2, "{v}");
    assert_eq!(v["agents_left_at_zero"], 0, "{v}");
    assert_eq!(v["all_busy_at_once"], true, "{v}");
    assert!(
        num(&v, "submit_to_all_running_s") >= num(&v, "submit_to_first_running_s"),
        "{v}"
    );
    // No node goes before its idle grace (2 s by default).
    assert!(num(&v, "last_end_to_zero_nodes_s") >= 2.0, "{v}");
    assert!(num(&v, "idle_to_removing_beyond_grace_s_min") >= 0.0, "{v}");
}

#[test]
fn a_missing_coordinator_binary_fails_with_a_hint() {
    let out = Command::new(bench_bin())
        .args([
            "latency",
            "--coordinator-bin",
            "/nonexistent/bai-coordinator",
        ])
        .output()
        .expect("run bai-bench");
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no JSON line on failure");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/nonexistent/bai-coordinator is missing"),
        "{stderr}"
    );
}
