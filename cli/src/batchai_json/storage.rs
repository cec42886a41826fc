//! What az did to storage settings in config files: replace the placeholders
//! `<AZURE_BATCHAI_STORAGE_ACCOUNT>` and `<AZURE_BATCHAI_STORAGE_KEY>`, derive a
//! missing Azure Files account name from its URL, and fill in a missing account
//! key for the configured storage account.

use bai_proto::v1 as pb;
use serde_json::Value;

use super::JsonError;

pub const ACCOUNT_PLACEHOLDER: &str = "<AZURE_BATCHAI_STORAGE_ACCOUNT>";
pub const KEY_PLACEHOLDER: &str = "<AZURE_BATCHAI_STORAGE_KEY>";

/// The storage account the user named (`--storage-account-name` or
/// `AZURE_BATCHAI_STORAGE_ACCOUNT`) and its key (only ever from the environment,
/// `AZURE_BATCHAI_STORAGE_KEY`).
#[derive(Debug, Default, Clone)]
pub struct StorageAccount {
    pub name: Option<String>,
    pub key: Option<String>,
}

/// Replaces the placeholders in every string of `v`.
pub fn substitute(v: &mut Value, storage: &StorageAccount) -> Result<(), JsonError> {
    match v {
        Value::String(s) => {
            if s.contains(ACCOUNT_PLACEHOLDER) {
                let name = storage.name.as_deref().ok_or_else(|| {
                    JsonError::field(
                        "config file",
                        format!(
                            "uses {ACCOUNT_PLACEHOLDER}: give --storage-account-name or set AZURE_BATCHAI_STORAGE_ACCOUNT"
                        ),
                    )
                })?;
                *s = s.replace(ACCOUNT_PLACEHOLDER, name);
            }
            if s.contains(KEY_PLACEHOLDER) {
                let key = storage.key.as_deref().ok_or_else(|| {
                    JsonError::field(
                        "config file",
                        format!("uses {KEY_PLACEHOLDER}: set AZURE_BATCHAI_STORAGE_KEY in the environment"),
                    )
                })?;
                *s = s.replace(KEY_PLACEHOLDER, key);
            }
        }
        Value::Array(items) => {
            for x in items {
                substitute(x, storage)?;
            }
        }
        Value::Object(map) => {
            for x in map.values_mut() {
                substitute(x, storage)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// `https://acct.file.core.windows.net/share` → `acct`.
fn account_from_url(url: &str) -> Option<String> {
    let host = url.split("://").nth(1)?.split('/').next()?;
    let acct = host.split('.').next()?;
    (!acct.is_empty() && host.contains('.')).then(|| acct.to_string())
}

fn needs_key(c: Option<&pb::AzureStorageCredentialsInfo>) -> bool {
    c.is_none_or(|c| c.account_key.is_empty() && c.account_key_secret_reference.is_none())
}

/// Fills missing account names and keys in mount volumes.
pub fn complete_mounts(m: &mut pb::MountVolumes, storage: &StorageAccount) {
    let key_for = |account: &str| -> Option<String> {
        match (&storage.name, &storage.key) {
            (Some(n), Some(k)) if n == account => Some(k.clone()),
            _ => None,
        }
    };
    for a in &mut m.azure_file_shares {
        if a.account_name.is_empty()
            && let Some(acct) = account_from_url(&a.azure_file_url)
        {
            a.account_name = acct;
        }
        if needs_key(a.credentials.as_ref())
            && let Some(k) = key_for(&a.account_name)
        {
            a.credentials = Some(pb::AzureStorageCredentialsInfo {
                account_key: k,
                ..Default::default()
            });
        }
    }
    for b in &mut m.azure_blob_file_systems {
        if b.account_name.is_empty()
            && let Some(n) = &storage.name
        {
            b.account_name = n.clone();
        }
        if needs_key(b.credentials.as_ref())
            && let Some(k) = key_for(&b.account_name)
        {
            b.credentials = Some(pb::AzureStorageCredentialsInfo {
                account_key: k,
                ..Default::default()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_from_file_url() {
        assert_eq!(
            account_from_url("https://acct.file.core.windows.net/logs").as_deref(),
            Some("acct")
        );
        assert_eq!(account_from_url("not a url"), None);
    }

    #[test]
    fn missing_placeholder_values_are_named() {
        let mut v = serde_json::json!({"a": ["x <AZURE_BATCHAI_STORAGE_KEY>"]});
        let e = substitute(&mut v, &StorageAccount::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("AZURE_BATCHAI_STORAGE_KEY"), "{e}");
    }
}
