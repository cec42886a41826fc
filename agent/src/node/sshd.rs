//! Placeholder until the sshd module lands (same API).
pub fn detect_ssh_port(port: Option<u16>) -> u16 {
    port.unwrap_or(22)
}
