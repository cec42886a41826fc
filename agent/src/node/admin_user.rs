//! Placeholder until the admin-user module lands (same API).
use std::path::PathBuf;

pub use super::mounts::Secret;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

pub struct AdminUserSpec {
    pub name: String,
    pub ssh_public_key: Option<String>,
    pub password: Option<Secret>,
}

pub fn ensure_admin_user(spec: &AdminUserSpec) -> Result<RunAs, String> {
    Err(format!("cannot create {} yet", spec.name))
}
