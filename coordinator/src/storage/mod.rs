//! The coordinator's own use of Azure Storage: `--use-auto-storage` needs its
//! blob container created if missing before a cluster or job that asks for
//! it is stored. [`shared_key`] signs (pure, unit-tested), [`blob`] is the
//! Blob service client.

pub mod blob;
pub mod shared_key;
