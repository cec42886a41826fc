//! The coordinator's use of Azure Storage: `--use-auto-storage` needs its blob
//! container created if missing. [`shared_key`] builds the SharedKey
//! string-to-sign (pure, unit-tested); the HTTP client is not written yet.

pub mod shared_key;
