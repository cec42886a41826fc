//! Starting and stopping what a scenario measures: the real `bai-coordinator`
//! on a temporary state directory and an ephemeral loopback port (optionally in
//! local mode, where it starts real `bai-agent` processes itself), and cleaning
//! up every process left under that directory afterwards.

use crate::procfs;
use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

/// Where the binaries under test are.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub coordinator: PathBuf,
    pub agent: PathBuf,
}

impl Binaries {
    /// The given paths, or `bai-coordinator`/`bai-agent` next to this executable
    /// (both are built into the same `target/<profile>/`).
    pub fn locate(coordinator: Option<PathBuf>, agent: Option<PathBuf>) -> Result<Self> {
        let exe = std::env::current_exe().context("current_exe")?;
        let dir = exe
            .parent()
            .ok_or_else(|| anyhow!("{} has no parent directory", exe.display()))?;
        let pick = |given: Option<PathBuf>, name: &str| -> Result<PathBuf> {
            let path = given.unwrap_or_else(|| dir.join(name));
            if !path.is_file() {
                bail!(
                    "{} is missing: build it with `cargo build --release -p bai-bench -p bai-coordinator -p bai-agent` \
                     (or pass its path)",
                    path.display()
                );
            }
            Ok(path)
        };
        Ok(Self {
            coordinator: pick(coordinator, "bai-coordinator")?,
            agent: pick(agent, "bai-agent")?,
        })
    }
}

/// How to start the coordinator.
#[derive(Clone, Debug, Default)]
pub struct CoordinatorOpts {
    /// `--local-agents`: the coordinator starts real agents for each cluster's target.
    pub local_agents: bool,
    /// Keep the temporary directory (state, logs) instead of deleting it.
    pub keep_dir: bool,
    /// More coordinator flags.
    pub extra_args: Vec<String>,
}

/// A running `bai-coordinator` with its own temporary state directory. Dropping
/// it stops the coordinator and everything under the directory.
pub struct Coordinator {
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
    keep_dir: bool,
    pub addr: SocketAddr,
}

impl Coordinator {
    /// Starts the coordinator and waits until it has written `coordinator.addr`.
    pub async fn start(bins: &Binaries, opts: &CoordinatorOpts) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("bai-bench-")
            .tempdir()
            .context("create temp dir")?;
        let path = dir.path().to_path_buf();
        let log = std::fs::File::create(path.join("coordinator.log"))
            .context("create coordinator.log")?;
        let mut cmd = Command::new(&bins.coordinator);
        cmd.args(["--listen", "127.0.0.1:0"])
            .arg("--state-dir")
            .arg(&path);
        if opts.local_agents {
            cmd.arg("--local-agents")
                .arg("--agent-bin")
                .arg(&bins.agent);
        }
        cmd.args(&opts.extra_args);
        let child = cmd
            .current_dir(&path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn {}", bins.coordinator.display()))?;
        let mut me = Self {
            child: Some(child),
            dir: Some(dir),
            path,
            keep_dir: opts.keep_dir,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        me.addr = me.wait_addr(Duration::from_secs(30)).await?;
        Ok(me)
    }

    async fn wait_addr(&mut self, within: Duration) -> Result<SocketAddr> {
        let addr_file = self.path.join("coordinator.addr");
        let deadline = Instant::now() + within;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "bai-coordinator exited early ({status}); log:\n{}",
                    self.log_tail(40)
                );
            }
            if let Ok(s) = std::fs::read_to_string(&addr_file)
                && let Ok(addr) = s.trim().parse::<SocketAddr>()
            {
                return Ok(addr);
            }
            if Instant::now() > deadline {
                bail!(
                    "bai-coordinator wrote no {} in {within:?}; log:\n{}",
                    addr_file.display(),
                    self.log_tail(40)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The coordinator's pid.
    pub fn pid(&self) -> Result<i32> {
        let child = self
            .child
            .as_ref()
            .ok_or_else(|| anyhow!("coordinator already stopped"))?;
        i32::try_from(child.id()).context("pid out of range")
    }

    /// The state directory (also holds coordinator.log and local-nodes/).
    pub fn dir(&self) -> &Path {
        &self.path
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A new HTTP/2 connection to the coordinator.
    pub async fn channel(&self) -> Result<Channel> {
        Endpoint::from_shared(self.url())?
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await
            .with_context(|| format!("connect to {}", self.url()))
    }

    /// The last `n` lines the coordinator logged.
    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(self.path.join("coordinator.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Pids of the local agents this coordinator started: from
    /// `local-nodes/*/agent.pid`, else any `bai-agent` process under the directory.
    pub fn local_agent_pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = std::fs::read_dir(self.path.join("local-nodes"))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| std::fs::read_to_string(e.path().join("agent.pid")).ok())
                    .filter_map(|s| s.trim().parse::<i32>().ok())
                    .filter(|&p| procfs::alive(p))
                    .collect()
            })
            .unwrap_or_default();
        if pids.is_empty() {
            pids = procfs::pids_of_program_under(&self.path, "bai-agent");
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Stops the coordinator (SIGTERM, SIGKILL after 10 s), then whatever is
    /// left under its directory, then deletes the directory unless kept.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let left = procfs::kill_under(&self.path, Duration::from_secs(2));
        if left > 0 {
            eprintln!(
                "bai-bench: stopped {left} leftover process(es) under {}",
                self.path.display()
            );
        }
        if let Some(dir) = self.dir.take() {
            if self.keep_dir {
                let kept = dir.keep();
                eprintln!("bai-bench: kept {}", kept.display());
            } else if let Err(e) = dir.close() {
                eprintln!("bai-bench: could not remove {}: {e}", self.path.display());
            }
        }
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.stop();
    }
}
