//! [`SystemOps`]: node preparation on the real system — the admin user
//! through `admin_user`, mounts through the `mounts` library.

use super::AdminUser;
use super::admin_user::{self, RunAs};
use super::mounts::{self, Health, MountContext, Mounted, Volume};
use super::prepare::NodeOps;

/// The real [`NodeOps`].
pub struct SystemOps {
    /// `$AZ_BATCHAI_MOUNT_ROOT`.
    pub mount_root: std::path::PathBuf,
    /// Drivers, endpoints and the private directory; the owner is set per mount.
    pub mounts: MountContext,
}

impl NodeOps for SystemOps {
    fn admin_user(&self, u: &AdminUser) -> Result<RunAs, String> {
        admin_user::ensure_admin_user(&admin_user::AdminUserSpec {
            name: u.name.clone(),
            ssh_public_key: (!u.ssh_public_key.is_empty()).then(|| u.ssh_public_key.clone()),
            password: (!u.password.is_empty())
                .then(|| admin_user::Secret::new(u.password.expose())),
        })
        .map_err(|e| e.to_string())
    }

    fn mount(&self, v: &Volume, owner: Option<(u32, u32)>) -> Result<Mounted, String> {
        let mut ctx = self.mounts.clone();
        ctx.owner = owner;
        mounts::mount(v, &self.mount_root, &ctx).map_err(|e| e.to_string())
    }

    fn check(&self, m: &Mounted) -> Option<String> {
        match mounts::check(m) {
            Health::Ok => None,
            Health::Lost(why) => Some(why),
        }
    }

    fn unmount(&self, m: &Mounted) -> Result<(), String> {
        mounts::unmount(m).map_err(|e| e.to_string())
    }
}
