//! What the node is: hostname, CPUs, memory and load (with the disk that
//! holds the agent's state and the network counters), behind the
//! [`HostInfo`] trait (GPUs are `crate::gpu`'s), plus the node's primary IP
//! address as seen on the route to the coordinator.

use crate::model::HostMetrics;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Mutex;
use sysinfo::System;

/// The node's static inventory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inventory {
    pub hostname: String,
    pub cpu_count: u32,
    pub memory_bytes: u64,
}

/// Hardware facts and metrics of this host.
pub trait HostInfo: Send + Sync {
    fn inventory(&self) -> Inventory;
    /// Current load; CPU usage is measured since the previous call.
    fn metrics(&self) -> HostMetrics;
}

/// [`HostInfo`] from the operating system (sysinfo).
pub struct SystemHost {
    sys: Mutex<System>,
    /// Whose file system the disk figures are (the agent's state directory:
    /// jobs' working and temporary directories and spools live there). Only
    /// this one is asked: a hung network or FUSE mount of a job must not
    /// stall the heartbeat.
    disk: Option<PathBuf>,
}

impl SystemHost {
    pub fn new() -> Self {
        let mut sys = System::new();
        sys.refresh_memory();
        sys.refresh_cpu_usage();
        Self {
            sys: Mutex::new(sys),
            disk: None,
        }
    }

    /// Also reports the disk that holds `dir`.
    pub fn with_disk(mut self, dir: PathBuf) -> Self {
        self.disk = Some(dir);
        self
    }
}

/// Bytes received and sent by every interface but loopback since boot, from
/// `/proc/net/dev`'s text.
pub fn network_totals(proc_net_dev: &str) -> (u64, u64) {
    proc_net_dev
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(name, _)| name.trim() != "lo")
        .filter_map(|(_, rest)| {
            let f: Vec<u64> = rest
                .split_whitespace()
                .map(|v| v.parse().ok())
                .collect::<Option<_>>()?;
            // receive: bytes packets errs drop fifo frame compressed multicast;
            // then transmit: bytes ...
            Some((*f.first()?, *f.get(8)?))
        })
        .fold((0, 0), |(rx, tx), (r, t)| (rx + r, tx + t))
}

/// Used and total bytes of the file system holding `dir`.
fn disk_figures(dir: &std::path::Path) -> Option<(u64, u64)> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    let frag = st.fragment_size() as u64;
    let total = st.blocks() as u64 * frag;
    let free = st.blocks_free() as u64 * frag;
    Some((total.saturating_sub(free), total))
}

impl Default for SystemHost {
    fn default() -> Self {
        Self::new()
    }
}

impl HostInfo for SystemHost {
    fn inventory(&self) -> Inventory {
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .or_else(System::host_name)
            .unwrap_or_else(|| "localhost".to_owned());
        let cpu_count = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let memory_bytes = match self.sys.lock() {
            Ok(mut s) => {
                s.refresh_memory();
                s.total_memory()
            }
            Err(_) => 0,
        };
        Inventory {
            hostname,
            cpu_count: u32::try_from(cpu_count).unwrap_or(u32::MAX),
            memory_bytes,
        }
    }

    fn metrics(&self) -> HostMetrics {
        match self.sys.lock() {
            Ok(mut s) => {
                s.refresh_cpu_usage();
                s.refresh_memory();
                let (disk_used_bytes, disk_total_bytes) = self
                    .disk
                    .as_deref()
                    .and_then(disk_figures)
                    .unwrap_or((0, 0));
                let (network_rx_bytes, network_tx_bytes) = std::fs::read_to_string("/proc/net/dev")
                    .map(|t| network_totals(&t))
                    .unwrap_or((0, 0));
                HostMetrics {
                    cpu_percent: s.global_cpu_usage(),
                    memory_used_bytes: s.used_memory(),
                    memory_total_bytes: s.total_memory(),
                    disk_used_bytes,
                    disk_total_bytes,
                    network_rx_bytes,
                    network_tx_bytes,
                }
            }
            Err(_) => HostMetrics::default(),
        }
    }
}

/// The local address the kernel would use to reach `coordinator`: a UDP
/// socket is "connected" (no packet is sent) and asked for its address.
pub async fn primary_ip(coordinator: &str) -> Option<IpAddr> {
    let uri: tonic::transport::Uri = coordinator.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    let target: SocketAddr = tokio::net::lookup_host((host, port)).await.ok()?.next()?;
    let bind: SocketAddr = if target.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = tokio::net::UdpSocket::bind(bind).await.ok()?;
    sock.connect(target).await.ok()?;
    Some(sock.local_addr().ok()?.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_inventory_is_plausible() {
        let h = SystemHost::new().with_disk(std::env::temp_dir());
        let inv = h.inventory();
        assert!(!inv.hostname.is_empty());
        assert!(inv.cpu_count >= 1);
        assert!(inv.memory_bytes > 1 << 20);
        let m = h.metrics();
        assert!(m.memory_used_bytes > 0 && m.memory_used_bytes <= inv.memory_bytes);
        assert!((0.0..=100.0 * inv.cpu_count as f32).contains(&m.cpu_percent));
        assert!(
            m.disk_total_bytes > 0 && m.disk_used_bytes <= m.disk_total_bytes,
            "{m:?}"
        );
        assert_eq!(SystemHost::new().metrics().disk_total_bytes, 0);
    }

    #[test]
    fn network_totals_skip_loopback() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 5000      50    0    0    0     0          0         0     5000      50    0    0    0     0       0          0
  eth0: 1200      10    0    0    0     0          0         0      300       3    0    0    0     0       0          0
  eth1:   34       1    0    0    0     0          0         0        6       1    0    0    0     0       0          0
";
        assert_eq!(network_totals(text), (1234, 306));
        assert_eq!(network_totals("garbage"), (0, 0));
    }

    #[tokio::test]
    async fn primary_ip_toward_loopback_is_loopback() {
        let ip = primary_ip("http://127.0.0.1:7150").await;
        assert_eq!(ip, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(primary_ip("not a url").await, None);
    }
}
