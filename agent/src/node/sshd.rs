//! The SSH port this node reports (Batch AI's `RemoteLoginInformation.port`):
//! the agent's override, else the first `Port` of sshd's configuration
//! (`/etc/ssh/sshd_config` and the `sshd_config.d/*.conf` it includes), else
//! 22 where sshd is installed, else 0 (no sshd). Blocking.

use std::path::Path;

/// The port to report.
pub fn detect_ssh_port(port: Option<u16>) -> u16 {
    if let Some(p) = port {
        return p;
    }
    if !Path::new("/usr/sbin/sshd").exists() {
        return 0;
    }
    let mut texts = Vec::new();
    if let Ok(t) = std::fs::read_to_string("/etc/ssh/sshd_config") {
        texts.push(t);
    }
    let mut extra: Vec<_> = std::fs::read_dir("/etc/ssh/sshd_config.d")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    extra.sort();
    // Included files come first in Debian's sshd_config; the first value wins.
    let mut all: Vec<String> = extra
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect();
    all.append(&mut texts);
    first_port(&all).unwrap_or(22)
}

/// The first `Port` outside a `Match` block, as sshd takes it.
pub fn first_port(texts: &[String]) -> Option<u16> {
    for t in texts {
        for line in t.lines() {
            let line = line.trim();
            let mut words = line.split_whitespace();
            match words.next().map(str::to_ascii_lowercase).as_deref() {
                Some("match") => break,
                Some("port") => {
                    if let Some(p) = words.next().and_then(|p| p.parse().ok()) {
                        return Some(p);
                    }
                }
                _ => {}
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_port_outside_match_blocks_wins() {
        let t = |s: &str| vec![s.to_string()];
        assert_eq!(
            first_port(&t("#Port 22\nPort 2222\nPort 2223\n")),
            Some(2222)
        );
        assert_eq!(first_port(&t("  port   2200 \n")), Some(2200));
        assert_eq!(first_port(&t("Match User x\n  Port 9\n")), None);
        assert_eq!(first_port(&t("PasswordAuthentication no\n")), None);
        assert_eq!(
            first_port(&["Port 1022\n".into(), "Port 22\n".into()]),
            Some(1022)
        );
        assert_eq!(detect_ssh_port(Some(2022)), 2022);
    }
}
