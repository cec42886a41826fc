//! `use_auto_storage` at create time: refused by name when this coordinator
//! has no auto-storage account; otherwise the account's container is created
//! if missing before the record is stored, so a failure stores nothing. The
//! flag itself is what is stored (`domain::auto_storage`).

use crate::core::Core;
use crate::domain::MountVolumes;
use crate::domain::auto_storage;
use crate::error::Error;
use crate::storage::blob::Created;

/// Checks and prepares the auto-storage of the volumes at `field`.
pub(super) async fn prepare(
    core: &Core,
    field: &str,
    mounts: Option<&MountVolumes>,
) -> Result<(), Error> {
    auto_storage::check_configured(field, mounts, core.auto_storage_account())?;
    let Some(storage) = core
        .auto_storage
        .as_ref()
        .filter(|_| auto_storage::wanted(mounts))
    else {
        return Ok(());
    };
    let account = &storage.account().account;
    match storage.ensure_container().await? {
        Created::New => tracing::info!(
            account = %account,
            container = auto_storage::CONTAINER,
            "auto-storage container created"
        ),
        Created::AlreadyThere => tracing::debug!(
            account = %account,
            container = auto_storage::CONTAINER,
            "auto-storage container exists"
        ),
    }
    Ok(())
}
