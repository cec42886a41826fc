//! `bai demo`: the README's "run the main job" entry point. Starts a local
//! coordinator (`bai-coordinator --local-agents`, found next to this binary) on
//! a free port with a fresh state directory, creates workspace, experiment and
//! a local cluster, submits a job, streams its stdout live, waits for it,
//! prints a summary, stops the coordinator (which stops its agents) and exits
//! with the job's exit code. `--keep` leaves the coordinator running.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bai_proto::v1 as pb;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::args::{DemoArgs, JobCreateArgs};
use crate::batchai_json;
use crate::client::Api;
use crate::error::CliError;
use crate::job::{self, exit_code, log_state};
use crate::job_files::{StreamTarget, stream_file};

const WORKSPACE: &str = "demo";
const EXPERIMENT: &str = "demo";
const CLUSTER: &str = "local";
const START_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Exit code after Ctrl-C (128 + SIGINT).
const EXIT_INTERRUPTED: u8 = 130;

/// The default job: a few lines about the node, then a countdown, so that
/// streaming is visible.
pub const DEFAULT_COMMAND: &str = r#"echo "Hello from bai on $(hostname)"
echo "CPUs: $(nproc 2>/dev/null || echo unknown)"
if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi -L; fi
echo "GPUs given: ${AZ_BATCHAI_NUM_GPUS:-0} (CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES})"
echo "Batch AI environment:"
env | grep '^AZ_BATCHAI_' | sort | sed 's/^/  /'
for i in 5 4 3 2 1; do echo "countdown $i"; sleep 1; done
echo "done""#;

pub async fn run(args: DemoArgs, verbose: bool) -> Result<u8, CliError> {
    let bin = coordinator_bin(&args)?;
    let (state_dir, temp) = match &args.state_dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            (d.canonicalize()?, None)
        }
        None => {
            let t = tempfile::Builder::new().prefix("bai-demo-").tempdir()?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let addr_file = state_dir.join("coordinator.addr");
    // A stale address from an earlier run must not be mistaken for this one.
    let _ = std::fs::remove_file(&addr_file);
    let log_path = state_dir.join("coordinator.log");
    let mut child = spawn(&bin, &state_dir, &log_path, args.fake_gpus)?;
    eprintln!(
        "bai demo: starting {} (state dir {})",
        bin.display(),
        state_dir.display()
    );

    let result = tokio::select! {
        r = session(&mut child, &args, &state_dir, &addr_file, &log_path, verbose) => r,
        _ = tokio::signal::ctrl_c() => {
            eprintln!("\nbai demo: interrupted");
            Ok(Outcome { code: EXIT_INTERRUPTED, address: None })
        }
    };
    // The state dir holds the job's output: it stays for the user to look at.
    let was_temp = temp.map(tempfile::TempDir::keep).is_some();
    match &result {
        Ok(Outcome {
            address: Some(a), ..
        }) if args.keep => {
            print_keep_help(a, child.id().unwrap_or_default(), &state_dir);
        }
        _ => {
            stop(&mut child).await;
            if was_temp {
                eprintln!(
                    "bai demo: the state dir {} is kept; remove it when done",
                    state_dir.display()
                );
            }
        }
    }
    result.map(|o| o.code)
}

struct Outcome {
    code: u8,
    address: Option<String>,
}

fn coordinator_bin(args: &DemoArgs) -> Result<PathBuf, CliError> {
    let bin = match &args.coordinator_bin {
        Some(b) => b.clone(),
        None => sibling("bai-coordinator")?,
    };
    if !bin.is_file() {
        return Err(CliError::Io(format!(
            "cannot find the coordinator at {}: build it (cargo build -p bai-coordinator -p bai-agent) \
             or pass --coordinator-bin",
            bin.display()
        )));
    }
    Ok(bin)
}

fn sibling(name: &str) -> Result<PathBuf, CliError> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or_else(|| CliError::Io("cannot tell where bai is installed".into()))?;
    Ok(dir.join(name))
}

fn spawn(bin: &Path, state_dir: &Path, log_path: &Path, fake_gpus: u32) -> Result<Child, CliError> {
    let log = std::fs::File::create(log_path)?;
    let mut cmd = Command::new(bin);
    cmd.arg("--local-agents")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .arg("--state-dir")
        .arg(state_dir);
    if fake_gpus > 0 {
        // Simulated GPUs that look busy, sampled every 2 s, so that `bai job
        // metrics --follow` and `bai cluster node top` have something to show.
        let agent_toml = state_dir.join("local-agent.toml");
        std::fs::write(
            &agent_toml,
            "[gpu]\nfake_utilization = [35, 80, 95, 60]\nfake_memory_used_mib = [20480, 40960]\n",
        )?;
        cmd.arg("--local-agent-fake-gpus")
            .arg(fake_gpus.to_string())
            .arg("--local-agent-config")
            .arg(&agent_toml)
            .arg("--heartbeat-interval-secs")
            .arg("2");
    }
    if let Some(agent) = bin
        .parent()
        .map(|d| d.join("bai-agent"))
        .filter(|a| a.is_file())
    {
        cmd.arg("--agent-bin").arg(agent);
    }
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        // Its own process group: Ctrl-C reaches bai, which stops it in order.
        .process_group(0);
    cmd.spawn()
        .map_err(|e| CliError::Io(format!("cannot start {}: {e}", bin.display())))
}

async fn wait_for_address(
    child: &mut Child,
    addr_file: &Path,
    log_path: &Path,
) -> Result<String, CliError> {
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(text) = std::fs::read_to_string(addr_file) {
            let a = text.trim();
            if !a.is_empty() {
                return Ok(a.to_string());
            }
        }
        if let Some(status) = child.try_wait()? {
            return Err(CliError::Io(format!(
                "the coordinator exited ({status}) before it was ready; its log:\n{}",
                tail(log_path)
            )));
        }
        if tokio::time::Instant::now() > deadline {
            return Err(CliError::Io(format!(
                "the coordinator did not write {} within {}s; its log:\n{}",
                addr_file.display(),
                START_TIMEOUT.as_secs(),
                tail(log_path)
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

async fn session(
    child: &mut Child,
    args: &DemoArgs,
    state_dir: &Path,
    addr_file: &Path,
    log_path: &Path,
    verbose: bool,
) -> Result<Outcome, CliError> {
    let address = wait_for_address(child, addr_file, log_path).await?;
    let api = Api::connect(&address, verbose).await?;
    eprintln!("bai demo: coordinator listening on {address}");

    let ws = pb::Workspace {
        name: WORKSPACE.into(),
        location: "local".into(),
        ..Default::default()
    };
    api.ok_if_exists(
        api.workspaces
            .clone()
            .create_workspace(pb::CreateWorkspaceRequest {
                workspace: Some(ws),
            })
            .await,
    )?;
    let exp = pb::Experiment {
        workspace: WORKSPACE.into(),
        name: EXPERIMENT.into(),
        ..Default::default()
    };
    api.ok_if_exists(
        api.experiments
            .clone()
            .create_experiment(pb::CreateExperimentRequest {
                experiment: Some(exp),
            })
            .await,
    )?;
    let cluster = pb::Cluster {
        workspace: WORKSPACE.into(),
        name: CLUSTER.into(),
        vm_size: crate::cluster_params::DEFAULT_VM_SIZE.into(),
        scale_settings: Some(crate::cluster_params::scale_settings(
            Some(args.target),
            None,
            None,
            None,
        )?),
        ..Default::default()
    };
    api.ok_if_exists(
        api.clusters
            .clone()
            .create_cluster(pb::CreateClusterRequest {
                cluster: Some(cluster),
            })
            .await,
    )?;
    eprintln!(
        "bai demo: workspace '{WORKSPACE}', experiment '{EXPERIMENT}', cluster '{CLUSTER}' ({} node(s))",
        args.target
    );

    let name = job_name();
    let create = JobCreateArgs {
        workspace: WORKSPACE.into(),
        experiment: EXPERIMENT.into(),
        name: name.clone(),
        cluster: Some(CLUSTER.into()),
        command_line: Some(
            args.command_line
                .clone()
                .unwrap_or_else(|| DEFAULT_COMMAND.into()),
        ),
        node_count: Some(args.node_count),
        gpus_per_node: (args.gpus_per_node > 0).then_some(args.gpus_per_node),
        ..Default::default()
    };
    job::create(&api, &create).await?;
    eprintln!("bai demo: submitted job '{name}'; its stdout follows\n");

    let key = pb::JobKey {
        workspace: WORKSPACE.into(),
        experiment: EXPERIMENT.into(),
        name: name.clone(),
    };
    let stdout_target = StreamTarget {
        key: key.clone(),
        output_directory_id: "stdouterr".into(),
        path: "stdout.txt".into(),
        attempt: 0,
    };
    let (streamed, finished) = {
        let mut out = std::io::stdout().lock();
        tokio::join!(
            stream_file(&api, &stdout_target, &mut out),
            job::follow(&api, key.clone(), log_state)
        )
    };
    let job = finished?;
    streamed?;
    print_stderr(&api, &key).await;
    print_summary(&job, state_dir);
    Ok(Outcome {
        code: exit_code(&job),
        address: Some(address),
    })
}

fn job_name() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("demo-{secs}")
}

/// Shows the job's stderr, if it wrote any.
async fn print_stderr(api: &Api, key: &pb::JobKey) {
    let target = StreamTarget {
        key: key.clone(),
        output_directory_id: "stdouterr".into(),
        path: "stderr.txt".into(),
        attempt: 0,
    };
    let mut buf = Vec::new();
    if stream_file(api, &target, &mut buf).await.is_ok() && !buf.is_empty() {
        eprintln!(
            "\n--- stderr.txt ---\n{}",
            String::from_utf8_lossy(&buf).trim_end()
        );
    }
}

fn print_summary(job: &pb::Job, state_dir: &Path) {
    let state = batchai_json::execution_state_name(job.execution_state);
    let code = job
        .execution_info
        .as_ref()
        .and_then(|e| e.exit_code)
        .map_or("none".to_string(), |c| c.to_string());
    eprintln!("\nbai demo: job '{}' {state}, exit code {code}", job.name);
    if let Some(info) = &job.execution_info {
        for e in &info.errors {
            eprintln!("  {}: {}", e.code, e.message);
        }
    }
    match find_stdouterr(state_dir, &job.id, 0) {
        Some(dir) => eprintln!("bai demo: output in {}", dir.display()),
        None => eprintln!("bai demo: output under {}", state_dir.display()),
    }
}

/// The job's `stdouterr` directory under the state dir (its path holds the job's uuid).
fn find_stdouterr(dir: &Path, job_id: &str, depth: usize) -> Option<PathBuf> {
    if depth > 16 || job_id.is_empty() {
        return None;
    }
    let entries = std::fs::read_dir(dir).ok()?;
    for e in entries.flatten() {
        let p = e.path();
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        if p.file_name().is_some_and(|n| n == "stdouterr") && p.to_string_lossy().contains(job_id) {
            return Some(p);
        }
        if let Some(found) = find_stdouterr(&p, job_id, depth + 1) {
            return Some(found);
        }
    }
    None
}

fn print_keep_help(address: &str, pid: u32, dir: &Path) {
    eprintln!(
        "\nbai demo: the coordinator keeps running (pid {pid}, state dir {dir}, log {dir}/coordinator.log):\n  \
         export BAI_COORDINATOR=http://{address}\n  \
         bai job list -w {WORKSPACE} -e {EXPERIMENT} -o table\n  \
         bai cluster node list -w {WORKSPACE} -c {CLUSTER} -o table\n  \
         bai job create -w {WORKSPACE} -e {EXPERIMENT} -c {CLUSTER} -n hello --command-line 'echo hello'\n  \
         bai job metrics -w {WORKSPACE} -e {EXPERIMENT} -n hello --follow -o table\n  \
         bai cluster node top -w {WORKSPACE} -c {CLUSTER} -o table\n  \
         kill {pid}    # stops the coordinator and its local nodes",
        dir = dir.display()
    );
}

/// SIGTERM (the coordinator stops its local agents), then SIGKILL after a grace period.
async fn stop(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
        Ok(_) => {}
        Err(_) => {
            eprintln!(
                "bai demo: the coordinator did not stop within {}s; killing it",
                STOP_TIMEOUT.as_secs()
            );
            let _ = child.kill().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_jobs_output_directory() {
        let d = tempfile::tempdir().unwrap();
        let other = d.path().join("jobs/j0/aaaa/stdouterr");
        let mine = d
            .path()
            .join("out/ws/experiments/e/jobs/j1/1234-uuid/stdouterr");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::create_dir_all(&mine).unwrap();
        assert_eq!(find_stdouterr(d.path(), "1234-uuid", 0), Some(mine));
        assert_eq!(find_stdouterr(d.path(), "", 0), None);
    }

    #[tokio::test]
    async fn a_missing_coordinator_binary_is_reported() {
        let args = DemoArgs {
            coordinator_bin: Some("/nonexistent/bai-coordinator".into()),
            ..Default::default()
        };
        let e = run(args, false).await.err().unwrap();
        assert!(
            e.to_string().contains("/nonexistent/bai-coordinator"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_coordinator_that_dies_at_start_is_reported_with_its_log() {
        let d = tempfile::tempdir().unwrap();
        let fake = d.path().join("bai-coordinator");
        std::fs::write(&fake, "#!/bin/sh\necho \"bad flag: $1\" >&2\nexit 2\n").unwrap();
        let mut perms = std::fs::metadata(&fake).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&fake, perms).unwrap();
        let args = DemoArgs {
            coordinator_bin: Some(fake),
            state_dir: Some(d.path().join("state")),
            ..Default::default()
        };
        let e = run(args, false).await.err().unwrap().to_string();
        assert!(
            e.contains("exited") && e.contains("bad flag: --local-agents"),
            "{e}"
        );
    }
}
