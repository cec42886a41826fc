//! Local agent processes: spawning `bai-agent` in its own process group with
//! its output in `agent.log` and its pid in `agent.pid`, recognising a live
//! agent from its pid after a restart, and signalling it.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::fs::OpenOptions;
use std::io::{self, Write};
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

/// Writes a file atomically (temporary file, fsync, rename).
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

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
}

impl Launcher {
    /// The URL agents are given.
    pub fn url(&self) -> String {
        format!("http://{}", dial_addr(self.coordinator))
    }

    /// Starts the agent of `rec` with state dir `dir`, in its own process group.
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
        if pid <= 0 || kill(Pid::from_raw(pid), None).is_err() {
            return false;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // The state follows the parenthesised command name.
        if stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        {
            return false;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            return false;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let bin = self.agent_bin.as_os_str().as_encoded_bytes();
        let is_agent_bin = args.iter().any(|a| {
            *a == bin
                || Path::new(std::ffi::OsStr::from_bytes(a))
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().contains("bai-agent"))
        });
        is_agent_bin && args.contains(&node_id.as_bytes())
    }
}

use std::os::unix::ffi::OsStrExt;

/// The `--coordinator` argument of a running process, if it has one.
pub fn coordinator_arg(pid: i32) -> Option<String> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let mut args = cmdline.split(|b| *b == 0);
    while let Some(a) = args.next() {
        if a == b"--coordinator" {
            return args.next().map(|v| String::from_utf8_lossy(v).into_owned());
        }
    }
    None
}

/// Sends `sig` to `pid`; false if it is gone.
pub fn signal(pid: i32, sig: Signal) -> bool {
    pid > 0 && kill(Pid::from_raw(pid), sig).is_ok()
}
