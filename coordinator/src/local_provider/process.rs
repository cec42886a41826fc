//! Local agent processes: spawning `bai-agent` in its own process group with
//! its output in `agent.log` and its pid in `agent.pid`, recognising a live
//! agent from its pid after a restart, and signalling it. Everything here is
//! blocking file and `/proc` IO: callers run it with `spawn_blocking`.

use bai_common::{fs::write_atomic, procfs};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::fs::OpenOptions;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// `<node dir>/local-node.json`: which cluster a local node belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node_id: String,
    pub workspace: String,
    pub cluster: String,
}

pub const RECORD: &str = "local-node.json";
pub const PID: &str = "agent.pid";
pub const LOG: &str = "agent.log";

pub fn read_record(dir: &Path) -> io::Result<NodeRecord> {
    let text = std::fs::read_to_string(dir.join(RECORD))?;
    serde_json::from_str(&text).map_err(io::Error::other)
}

pub fn read_pid(dir: &Path) -> Option<i32> {
    std::fs::read_to_string(dir.join(PID))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The address agents dial: the bound one, or loopback if bound to any address.
pub fn dial_addr(bound: SocketAddr) -> SocketAddr {
    let mut a = bound;
    if a.ip().is_unspecified() {
        a.set_ip(if a.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    a
}

/// What it takes to start agents.
#[derive(Debug, Clone)]
pub struct Launcher {
    pub agent_bin: PathBuf,
    pub coordinator: SocketAddr,
    /// Extra flags for every agent (the config's `local_agent_*`).
    pub extra_args: Vec<String>,
}

impl Launcher {
    /// The URL agents are given.
    pub fn url(&self) -> String {
        format!("http://{}", dial_addr(self.coordinator))
    }

    /// Starts the agent of `rec` with state dir `dir`, in its own process group.
    /// Blocking (directory, durable record and pid files); must run inside the
    /// runtime's context (a `spawn_blocking` thread is).
    pub fn spawn(&self, rec: &NodeRecord, dir: &Path) -> io::Result<tokio::process::Child> {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_vec_pretty(rec).map_err(io::Error::other)?;
        write_atomic(&dir.join(RECORD), &json)?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(LOG))?;
        let child = tokio::process::Command::new(&self.agent_bin)
            .arg("--coordinator")
            .arg(self.url())
            .arg("--workspace")
            .arg(&rec.workspace)
            .arg("--cluster")
            .arg(&rec.cluster)
            .arg("--node-id")
            .arg(&rec.node_id)
            .arg("--state-dir")
            .arg(dir)
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Not the coordinator's systemd notifications.
            .env_remove("NOTIFY_SOCKET")
            .process_group(0)
            .kill_on_drop(false)
            .spawn()?;
        if let Some(pid) = child.id() {
            write_atomic(&dir.join(PID), pid.to_string().as_bytes())?;
        }
        Ok(child)
    }

    /// Whether `pid` is a live (not zombie) agent process of `node_id`.
    pub fn is_agent(&self, pid: i32, node_id: &str) -> bool {
        if pid <= 0 || !procfs::alive(pid) {
            return false;
        }
        let Some(args) = procfs::args(pid) else {
            return false;
        };
        let bin = self.agent_bin.as_os_str();
        let is_agent_bin = args.iter().any(|a| {
            a == bin
                || Path::new(a)
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().contains("bai-agent"))
        });
        is_agent_bin && args.iter().any(|a| a == node_id)
    }
}

/// The `--coordinator` argument of a running process, if it has one.
pub fn coordinator_arg(pid: i32) -> Option<String> {
    let args = procfs::args(pid)?;
    let mut args = args.iter();
    while let Some(a) = args.next() {
        if a == "--coordinator" {
            return args.next().map(|v| v.to_string_lossy().into_owned());
        }
    }
    None
}

/// Sends `sig` to `pid`; false if it is gone.
pub fn signal(pid: i32, sig: Signal) -> bool {
    pid > 0 && kill(Pid::from_raw(pid), sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_an_agent_only_with_the_agent_binary_and_its_node_id() {
        let launcher = Launcher {
            extra_args: Vec::new(),
            agent_bin: PathBuf::from("/bin/sh"),
            coordinator: "127.0.0.1:7".parse().expect("addr"),
        };
        let mut child = std::process::Command::new("/bin/sh")
            .args([
                "-c",
                "sleep 30; true",
                "sh",
                "--coordinator",
                "http://x",
                "n-1",
            ])
            .spawn()
            .expect("spawn");
        let pid = child.id() as i32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while coordinator_arg(pid).is_none() {
            assert!(std::time::Instant::now() < deadline, "no argv");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(launcher.is_agent(pid, "n-1"));
        assert!(!launcher.is_agent(pid, "n-2"));
        assert_eq!(coordinator_arg(pid).as_deref(), Some("http://x"));
        let other = Launcher {
            extra_args: Vec::new(),
            agent_bin: PathBuf::from("/opt/bai/bai-agent"),
            ..launcher.clone()
        };
        assert!(!other.is_agent(pid, "n-1"));
        assert!(signal(pid, Signal::SIGKILL));
        child.wait().expect("wait");
        assert!(!launcher.is_agent(pid, "n-1"));
        assert!(!signal(-1, Signal::SIGKILL) && !launcher.is_agent(0, "n-1"));
    }
}
