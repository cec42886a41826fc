//! What the node is: hostname, CPUs, memory and load, behind the [`HostInfo`]
//! trait (the GPU issue adds NVML devices beside it), plus the node's primary
//! IP address as seen on the route to the coordinator.

use crate::model::HostMetrics;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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
}

impl SystemHost {
    pub fn new() -> Self {
        let mut sys = System::new();
        sys.refresh_memory();
        sys.refresh_cpu_usage();
        Self {
            sys: Mutex::new(sys),
        }
    }
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
                HostMetrics {
                    cpu_percent: s.global_cpu_usage(),
                    memory_used_bytes: s.used_memory(),
                    memory_total_bytes: s.total_memory(),
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
        let h = SystemHost::new();
        let inv = h.inventory();
        assert!(!inv.hostname.is_empty());
        assert!(inv.cpu_count >= 1);
        assert!(inv.memory_bytes > 1 << 20);
        let m = h.metrics();
        assert!(m.memory_used_bytes > 0 && m.memory_used_bytes <= inv.memory_bytes);
        assert!((0.0..=100.0 * inv.cpu_count as f32).contains(&m.cpu_percent));
    }

    #[tokio::test]
    async fn primary_ip_toward_loopback_is_loopback() {
        let ip = primary_ip("http://127.0.0.1:7150").await;
        assert_eq!(ip, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(primary_ip("not a url").await, None);
    }
}
