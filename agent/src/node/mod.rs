//! Node preparation (agent.proto rule 6): before the node takes jobs it
//! creates the cluster's admin user, mounts the cluster's volumes and runs
//! the setup task, reporting each step.
//!
//! - [`prepare`]: the [`prepare::Preparer`] task: takes `PrepareNode`, runs
//!   the steps on the blocking pool in order, keeps what it finished in
//!   `<state>/node/status.json` (with the boot id: a reboot starts over, an
//!   agent restart does not), reports `NodeStatus`, and watches the mounts
//!   afterwards (a dead FUSE daemon makes the node unusable, with the reason).
//! - [`setup_task`]: runs the setup task as root under bash, its output
//!   piped into spool files and shipped as `SetupOutput` by (run, stream,
//!   offset), like job output; also written under the task's
//!   `stdOutErrPathPrefix` when that lies on a mount.
//! - [`mounts`]: the mount library (cifs, rclone, blobfuse2, NFS, unmanaged).
//! - [`admin_user`], [`sshd`]: the admin user, and the port sshd listens on.

pub mod admin_user;
pub mod mounts;
pub mod prepare;
pub mod setup_task;
pub mod sshd;
pub mod system;

use crate::model::{EnvVar, Stream};
use mounts::Volume;

/// The admin user to create (`userAccountSettings`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminUser {
    pub name: String,
    pub ssh_public_key: String,
    pub password: mounts::Secret,
}

/// The cluster's setup task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetupTask {
    pub command_line: String,
    pub environment_variables: Vec<EnvVar>,
    pub secrets: Vec<EnvVar>,
    /// May start with `$AZ_BATCHAI_MOUNT_ROOT`.
    pub std_out_err_path_prefix: String,
    pub std_out_err_path_suffix: String,
}

/// A `PrepareNode`: the cluster's node setup, and what the coordinator holds
/// of this node's setup output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSetup {
    pub generation: String,
    pub admin_user: Option<AdminUser>,
    pub volumes: Vec<Volume>,
    pub setup_task: Option<SetupTask>,
    pub held_run: String,
    pub held_lengths: [u64; 3],
}

/// Where preparation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Preparing,
    Ready,
    Unusable,
}

/// Why the node is unusable: a Batch AI error.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeError {
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub details: Vec<(String, String)>,
}

/// Error codes of a failed step.
pub const ADMIN_USER_FAILED: &str = "AdminUserFailed";
pub const MOUNT_FAILED: &str = "MountFailed";
pub const MOUNT_LOST: &str = "MountLost";
pub const SETUP_TASK_FAILED: &str = "SetupTaskFailed";

/// A `NodeStatus` report.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeStatus {
    pub generation: String,
    pub phase: Phase,
    /// The current step (preparing) or the failed one (unusable).
    pub step: String,
    pub error: Option<NodeError>,
    pub setup_run: String,
}

/// The step names the node reports.
pub fn mount_step(relative_mount_path: &str) -> String {
    format!("mount {relative_mount_path}")
}
pub const STEP_ADMIN_USER: &str = "admin-user";
pub const STEP_SETUP_TASK: &str = "setup-task";

/// A chunk of setup output to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetupChunk {
    pub run: String,
    pub stream: Stream,
    pub offset: u64,
    pub data: Vec<u8>,
}

/// The kernel's boot id: a new one means the node rebooted.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
