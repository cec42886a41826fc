//! What to mount: [`Volume`], the domain form of `MountVolumes`' entries (the lead's
//! `convert.rs` builds them), with the checks a mount makes before touching anything.

use super::MountError;
use super::secret::Secret;
use serde::{Deserialize, Serialize};
use std::path::{Component, Path, PathBuf};

/// One volume to mount under a mount root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Volume {
    /// An Azure Files share over SMB (`azureFileShares`).
    AzureFileShare {
        account_name: String,
        /// `https://<account>.file.core.windows.net/<share>[/<dir>]`.
        azure_file_url: String,
        account_key: Secret,
        relative_mount_path: String,
        /// Octal, default `0777`.
        file_mode: String,
        /// Octal, default `0777`.
        directory_mode: String,
    },
    /// An Azure Blob container over FUSE (`azureBlobFileSystems`).
    AzureBlob {
        account_name: String,
        container_name: String,
        account_key: Secret,
        relative_mount_path: String,
        /// Extra blobfuse options, appended to its command line (rclone ignores them).
        mount_options: String,
    },
    /// An NFS export (`fileServers`): `server` is the address, `source_directory` the export.
    Nfs {
        server: String,
        source_directory: String,
        relative_mount_path: String,
        /// Passed to `mount -o`.
        mount_options: String,
    },
    /// `unmanagedFileSystems`: `mount_command` with the mount point appended, run by bash.
    Unmanaged {
        mount_command: String,
        relative_mount_path: String,
    },
}

/// A volume's kind, as recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VolumeKind {
    AzureFileShare,
    AzureBlob,
    Nfs,
    Unmanaged,
}

impl VolumeKind {
    pub fn name(self) -> &'static str {
        match self {
            VolumeKind::AzureFileShare => "azure file share",
            VolumeKind::AzureBlob => "azure blob container",
            VolumeKind::Nfs => "nfs export",
            VolumeKind::Unmanaged => "unmanaged file system",
        }
    }
}

impl Volume {
    pub fn kind(&self) -> VolumeKind {
        match self {
            Volume::AzureFileShare { .. } => VolumeKind::AzureFileShare,
            Volume::AzureBlob { .. } => VolumeKind::AzureBlob,
            Volume::Nfs { .. } => VolumeKind::Nfs,
            Volume::Unmanaged { .. } => VolumeKind::Unmanaged,
        }
    }

    pub fn relative_mount_path(&self) -> &str {
        match self {
            Volume::AzureFileShare {
                relative_mount_path,
                ..
            }
            | Volume::AzureBlob {
                relative_mount_path,
                ..
            }
            | Volume::Nfs {
                relative_mount_path,
                ..
            }
            | Volume::Unmanaged {
                relative_mount_path,
                ..
            } => relative_mount_path,
        }
    }

    /// A stable digest of everything but the secrets: the same spec gives the same digest in
    /// every agent version, so a record can be compared with the wanted volume after a
    /// restart. A changed key alone does not change it.
    pub fn digest(&self) -> String {
        let fields: Vec<&str> = match self {
            Volume::AzureFileShare {
                account_name,
                azure_file_url,
                relative_mount_path,
                file_mode,
                directory_mode,
                ..
            } => vec![
                "azure_file_share",
                account_name,
                azure_file_url,
                relative_mount_path,
                file_mode,
                directory_mode,
            ],
            Volume::AzureBlob {
                account_name,
                container_name,
                relative_mount_path,
                mount_options,
                ..
            } => vec![
                "azure_blob",
                account_name,
                container_name,
                relative_mount_path,
                mount_options,
            ],
            Volume::Nfs {
                server,
                source_directory,
                relative_mount_path,
                mount_options,
            } => vec![
                "nfs",
                server,
                source_directory,
                relative_mount_path,
                mount_options,
            ],
            Volume::Unmanaged {
                mount_command,
                relative_mount_path,
            } => vec!["unmanaged", mount_command, relative_mount_path],
        };
        let mut bytes = Vec::new();
        for f in fields {
            bytes.extend_from_slice(&(f.len() as u64).to_le_bytes());
            bytes.extend_from_slice(f.as_bytes());
        }
        format!("fnv1a64:{:016x}", fnv1a64(&bytes))
    }
}

pub(crate) use bai_common::hash::fnv1a64;

/// `root/relative`, refusing a relative path that is empty, absolute or climbs out (`..`).
/// Lexical only; [`super::mount`] checks again after resolving symlinks.
pub fn mount_point(root: &Path, relative: &str) -> Result<PathBuf, MountError> {
    let invalid = |reason: &str| MountError::Invalid {
        field: "relative_mount_path",
        reason: format!("{relative:?} {reason}"),
    };
    if relative.is_empty() {
        return Err(invalid("is empty"));
    }
    let rel = Path::new(relative);
    let mut out = root.to_path_buf();
    for c in rel.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err(invalid("climbs out of the mount root")),
            Component::RootDir | Component::Prefix(_) => return Err(invalid("is absolute")),
        }
    }
    if out == root {
        return Err(invalid("names the mount root itself"));
    }
    Ok(out)
}

/// An octal permission such as `0777` (empty: `0777`, Batch AI's default).
pub(crate) fn parse_mode(field: &'static str, text: &str) -> Result<u32, MountError> {
    let text = if text.is_empty() { "0777" } else { text };
    u32::from_str_radix(text, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| MountError::Invalid {
            field,
            reason: format!("{text:?} is not an octal mode"),
        })
}

/// A storage account name as it goes into a URL and a config file: ASCII letters and digits.
pub(crate) fn check_account(name: &str) -> Result<(), MountError> {
    let ok =
        !name.is_empty() && name.len() <= 64 && name.bytes().all(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(MountError::Invalid {
            field: "account_name",
            reason: format!("{name:?} is not a storage account name"),
        })
    }
}

/// A blob container name: lower-case letters, digits and `-`, 3–63 long.
pub(crate) fn check_container(name: &str) -> Result<(), MountError> {
    let ok = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(MountError::Invalid {
            field: "container_name",
            reason: format!("{name:?} is not a blob container name"),
        })
    }
}

/// A key is present and has no control characters (it goes on one line of a config file).
pub(crate) fn check_key(key: &Secret) -> Result<(), MountError> {
    if key.is_empty() {
        return Err(MountError::Invalid {
            field: "account_key",
            reason: "is missing".into(),
        });
    }
    if key.expose().chars().any(char::is_control) {
        return Err(MountError::Invalid {
            field: "account_key",
            reason: "holds a control character".into(),
        });
    }
    Ok(())
}

/// `host[:port]` and the path of an Azure Files URL: `https://h[:p]/share[/dir]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FileUrl {
    pub host: String,
    pub port: Option<u16>,
    /// The share and any directory below it, without a leading `/`.
    pub path: String,
}

impl FileUrl {
    /// Parses `url`; `endpoint` (`host:port`), when set, replaces its host and port.
    pub fn parse(url: &str, endpoint: Option<&str>) -> Result<FileUrl, MountError> {
        let invalid = |reason: &str| MountError::Invalid {
            field: "azure_file_url",
            reason: format!("{url:?} {reason}"),
        };
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .or_else(|| url.strip_prefix("smb://"))
            .ok_or_else(|| invalid("is not an https:// URL"))?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let path = path.trim_matches('/').to_owned();
        if path.is_empty() {
            return Err(invalid("names no share"));
        }
        if path
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
            || path.contains(['?', '#', '\\'])
            || path.chars().any(char::is_control)
        {
            return Err(invalid("has an unusable path"));
        }
        let (host, port) =
            split_host_port(endpoint.unwrap_or(authority)).ok_or_else(|| match endpoint {
                Some(e) => MountError::Invalid {
                    field: "file_endpoint",
                    reason: format!("{e:?} is not host:port"),
                },
                None => invalid("has a bad host"),
            })?;
        Ok(FileUrl { host, port, path })
    }
}

fn split_host_port(text: &str) -> Option<(String, Option<u16>)> {
    let ok_host = |h: &str| {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
    };
    match text.rsplit_once(':') {
        Some((h, p)) => ok_host(h).then_some((h.to_owned(), Some(p.parse().ok()?))),
        None => ok_host(text).then_some((text.to_owned(), None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(key: &str) -> Volume {
        Volume::AzureFileShare {
            account_name: "acct".into(),
            azure_file_url: "https://acct.file.core.windows.net/data".into(),
            account_key: Secret::new(key),
            relative_mount_path: "afs".into(),
            file_mode: String::new(),
            directory_mode: String::new(),
        }
    }

    #[test]
    fn mount_point_refuses_escapes() {
        let root = Path::new("/state/mounts");
        assert_eq!(
            mount_point(root, "afs/x").unwrap(),
            Path::new("/state/mounts/afs/x")
        );
        for bad in ["", "..", "a/../../b", "/etc", ".", "./"] {
            let err = mount_point(root, bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    MountError::Invalid {
                        field: "relative_mount_path",
                        ..
                    }
                ),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn digest_ignores_the_key_and_sees_everything_else() {
        assert_eq!(share("k1").digest(), share("k2").digest());
        assert!(!share("k1").digest().contains("k1"));
        let mut other = share("k1");
        if let Volume::AzureFileShare { file_mode, .. } = &mut other {
            *file_mode = "0700".into();
        }
        assert_ne!(share("k1").digest(), other.digest());
        // The same in every build: a record written by an older agent still matches.
        assert_eq!(share("k").digest(), share("k").digest());
        assert_eq!(format!("{:016x}", fnv1a64(b"a")), "af63dc4c8601ec8c");
    }

    #[test]
    fn file_urls_and_endpoint_overrides() {
        let u = FileUrl::parse("https://acct.file.core.windows.net/data/sub", None).unwrap();
        assert_eq!(
            u,
            FileUrl {
                host: "acct.file.core.windows.net".into(),
                port: None,
                path: "data/sub".into()
            }
        );
        let u = FileUrl::parse(
            "https://acct.file.core.windows.net/data",
            Some("127.0.0.1:4450"),
        )
        .unwrap();
        assert_eq!((u.host.as_str(), u.port), ("127.0.0.1", Some(4450)));
        for bad in [
            "acct/data",
            "https://acct",
            "https://acct/",
            "https://a b/x",
            "https://h/a/../b",
        ] {
            assert!(FileUrl::parse(bad, None).is_err(), "{bad}");
        }
        assert!(matches!(
            FileUrl::parse("https://h/s", Some("127.0.0.1:x")),
            Err(MountError::Invalid {
                field: "file_endpoint",
                ..
            })
        ));
    }

    #[test]
    fn modes_names_and_keys() {
        assert_eq!(parse_mode("file_mode", "").unwrap(), 0o777);
        assert_eq!(parse_mode("file_mode", "0640").unwrap(), 0o640);
        assert!(parse_mode("file_mode", "0999").is_err());
        assert!(check_account("devstoreaccount1").is_ok());
        assert!(check_account("a/b").is_err());
        assert!(check_container("batchaicontainer").is_ok());
        assert!(check_container("Bad_Name").is_err());
        assert!(check_key(&Secret::new("")).is_err());
        assert!(check_key(&Secret::new("a\nb")).is_err());
    }
}
