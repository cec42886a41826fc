//! The coordinator's own use of Azure Storage: `--use-auto-storage` needs its
//! blob container created if missing before a cluster or job that asks for
//! it is stored. [`shared_key`] signs (pure, unit-tested), [`blob`] is the
//! Blob service client, [`AutoStorage`] the configured account with its
//! client.

pub mod blob;
pub mod shared_key;

use crate::domain::auto_storage::{self, AutoStorageAccount};
use blob::{BlobError, BlobService, Created};

/// The auto-storage account of `[storage]` and its Blob service.
#[derive(Debug, Clone)]
pub struct AutoStorage {
    account: AutoStorageAccount,
    blob: BlobService,
}

impl AutoStorage {
    /// `account` reached at `blob_endpoint` (its URL, `{account}` substituted).
    pub fn new(account: AutoStorageAccount, blob_endpoint: &str) -> Result<AutoStorage, String> {
        let blob = BlobService::new(&account.account, account.key.expose(), blob_endpoint)?;
        Ok(AutoStorage { account, blob })
    }

    /// The account and key that expansion adds to volumes.
    pub fn account(&self) -> &AutoStorageAccount {
        &self.account
    }

    pub fn blob(&self) -> &BlobService {
        &self.blob
    }

    /// Creates the auto-storage container unless it exists.
    pub async fn ensure_container(&self) -> Result<Created, BlobError> {
        self.blob.create_container(auto_storage::CONTAINER).await
    }
}
