//! JSON types Batch AI shares between clusters and jobs (environment variables,
//! secrets, Key Vault references, mount volumes, errors), the enum spellings,
//! and helpers: null stripping, pruning of empty output fields, and
//! deserialization that names the failing field.
//!
//! Write-only values (`value` of a secret, `accountKey`, passwords) are
//! `skip_serializing`: they are read from files but can never be rendered.

use bai_proto::v1 as pb;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::JsonError;

// ---------------------------------------------------------------- enums

pub const VM_PRIORITY: &[(&str, i32)] = &[
    ("dedicated", pb::VmPriority::Dedicated as i32),
    ("lowpriority", pb::VmPriority::Lowpriority as i32),
];
pub const DEALLOCATION: &[(&str, i32)] = &[
    ("requeue", pb::DeallocationOption::Requeue as i32),
    ("terminate", pb::DeallocationOption::Terminate as i32),
    (
        "waitforjobcompletion",
        pb::DeallocationOption::Waitforjobcompletion as i32,
    ),
];
pub const JOB_PRIORITY: &[(&str, i32)] = &[
    ("low", pb::JobPriority::Low as i32),
    ("normal", pb::JobPriority::Normal as i32),
    ("high", pb::JobPriority::High as i32),
];
pub const PROVISIONING: &[(&str, i32)] = &[
    ("creating", pb::ProvisioningState::Creating as i32),
    ("succeeded", pb::ProvisioningState::Succeeded as i32),
    ("failed", pb::ProvisioningState::Failed as i32),
    ("deleting", pb::ProvisioningState::Deleting as i32),
];
pub const ALLOCATION: &[(&str, i32)] = &[
    ("steady", pb::AllocationState::Steady as i32),
    ("resizing", pb::AllocationState::Resizing as i32),
];
pub const EXECUTION: &[(&str, i32)] = &[
    ("queued", pb::ExecutionState::Queued as i32),
    ("running", pb::ExecutionState::Running as i32),
    ("terminating", pb::ExecutionState::Terminating as i32),
    ("succeeded", pb::ExecutionState::Succeeded as i32),
    ("failed", pb::ExecutionState::Failed as i32),
];
pub const TOOL_TYPE: &[(&str, i32)] = &[
    ("cntk", pb::ToolType::Cntk as i32),
    ("tensorflow", pb::ToolType::Tensorflow as i32),
    ("caffe", pb::ToolType::Caffe as i32),
    ("caffe2", pb::ToolType::Caffe2 as i32),
    ("chainer", pb::ToolType::Chainer as i32),
    ("horovod", pb::ToolType::Horovod as i32),
    ("mpi", pb::ToolType::Mpi as i32),
    ("custom", pb::ToolType::Custom as i32),
    ("pytorch", pb::ToolType::Pytorch as i32),
];
pub const FILE_TYPE: &[(&str, i32)] = &[
    ("file", pb::FileType::File as i32),
    ("directory", pb::FileType::Directory as i32),
];
pub const NODE_STATE: &[(&str, i32)] = &[
    ("preparing", pb::NodeState::Preparing as i32),
    ("idle", pb::NodeState::Idle as i32),
    ("running", pb::NodeState::Running as i32),
    ("leaving", pb::NodeState::Leaving as i32),
    ("unusable", pb::NodeState::Unusable as i32),
];

/// Parses an enum value case-insensitively; an empty value is "unspecified" (0).
pub fn parse_enum(field: &str, value: &str, table: &[(&str, i32)]) -> Result<i32, JsonError> {
    if value.is_empty() {
        return Ok(0);
    }
    table
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(value))
        .map(|(_, v)| *v)
        .ok_or_else(|| {
            let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
            JsonError::field(
                field,
                format!("{value:?} is not one of {}", names.join(", ")),
            )
        })
}

/// The Batch AI spelling of an enum value; empty for unspecified or unknown.
pub fn enum_name(value: i32, table: &[(&str, i32)]) -> String {
    table
        .iter()
        .find(|(_, v)| *v == value)
        .map(|(n, _)| (*n).to_string())
        .unwrap_or_default()
}

pub fn ts(t: Option<&prost_types::Timestamp>) -> Option<String> {
    t.map(ToString::to_string)
}

// ---------------------------------------------------------------- value helpers

/// Removes `null` members everywhere (Batch AI and az print `null` for "absent").
pub fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|_, x| !x.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// Removes empty strings, arrays and objects and nulls from rendered output.
pub fn prune(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.values_mut().for_each(prune);
            map.retain(|_, x| !is_empty(x));
        }
        Value::Array(items) => items.iter_mut().for_each(prune),
        _ => {}
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// Deserializes an object; on failure, names the top-level member at fault.
pub fn from_object<T: DeserializeOwned>(obj: Map<String, Value>) -> Result<T, JsonError> {
    match serde_json::from_value::<T>(Value::Object(obj.clone())) {
        Ok(t) => Ok(t),
        Err(whole) => {
            for (k, v) in obj {
                let mut one = Map::new();
                one.insert(k.clone(), v);
                if let Err(e) = serde_json::from_value::<T>(Value::Object(one)) {
                    return Err(JsonError::field(&k, e.to_string()));
                }
            }
            Err(JsonError::field("properties", whole.to_string()))
        }
    }
}

/// Serializes output and prunes empty members.
pub fn to_pruned<T: Serialize>(t: &T) -> Map<String, Value> {
    let mut v = serde_json::to_value(t).unwrap_or(Value::Null);
    prune(&mut v);
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

// ---------------------------------------------------------------- ids

/// A cluster given by name or by an ARM-ish id (`.../workspaces/<ws>/clusters/<c>`;
/// the singular `workspace/` of the PutJob example is accepted too). An empty
/// workspace means "the job's own workspace".
pub fn parse_cluster_ref(field: &str, id: &str) -> Result<pb::ClusterRef, JsonError> {
    let id = id.trim();
    if !id.contains('/') {
        if id.is_empty() {
            return Err(JsonError::field(field, "empty cluster name"));
        }
        return Ok(pb::ClusterRef {
            workspace: String::new(),
            name: id.to_string(),
        });
    }
    // Empty segments are kept: `/workspaces//clusters/c` has an empty workspace.
    let segs: Vec<&str> = id.trim_end_matches('/').split('/').collect();
    let after = |key: &str| {
        segs.windows(2)
            .rev()
            .find(|w| w[0].eq_ignore_ascii_case(key))
            .map(|w| w[1].to_string())
    };
    let name = after("clusters")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| JsonError::field(field, format!("{id:?} has no clusters/<name> segment")))?;
    let workspace = after("workspaces")
        .or_else(|| after("workspace"))
        .unwrap_or_default();
    Ok(pb::ClusterRef { workspace, name })
}

/// The id bai prints for a cluster reference.
pub fn cluster_id(workspace: &str, name: &str) -> String {
    format!("/workspaces/{workspace}/clusters/{name}")
}

// ---------------------------------------------------------------- shared types

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct IdJson {
    pub id: String,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EnvVarJson {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct KeyVaultRefJson {
    pub source_vault: Option<IdJson>,
    pub secret_url: String,
}

/// A secret environment variable: the value is read, never written out.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SecretJson {
    pub name: String,
    #[serde(skip_serializing)]
    pub value: String,
    pub value_secret_reference: Option<KeyVaultRefJson>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CredentialsJson {
    #[serde(skip_serializing)]
    pub account_key: String,
    pub account_key_secret_reference: Option<KeyVaultRefJson>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AzureFileShareJson {
    pub account_name: String,
    pub azure_file_url: String,
    pub credentials: Option<CredentialsJson>,
    pub relative_mount_path: String,
    pub file_mode: String,
    pub directory_mode: String,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AzureBlobJson {
    pub account_name: String,
    pub container_name: String,
    pub credentials: Option<CredentialsJson>,
    pub relative_mount_path: String,
    pub mount_options: String,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FileServerRefJson {
    pub file_server: Option<IdJson>,
    pub source_directory: String,
    pub relative_mount_path: String,
    pub mount_options: String,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UnmanagedFsJson {
    pub mount_command: String,
    pub relative_mount_path: String,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MountVolumesJson {
    pub azure_file_shares: Vec<AzureFileShareJson>,
    pub azure_blob_file_systems: Vec<AzureBlobJson>,
    pub file_servers: Vec<FileServerRefJson>,
    pub unmanaged_file_systems: Vec<UnmanagedFsJson>,
    /// bai's extension (az's `--use-auto-storage` as a field): the
    /// coordinator's auto-storage share and container as well. Shown only
    /// when set, so Batch AI's shape is unchanged otherwise.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub use_auto_storage: bool,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NameValueJson {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct BatchAiErrorJson {
    pub code: String,
    pub message: String,
    pub details: Vec<NameValueJson>,
}

// ---------------------------------------------------------------- conversions

pub fn env_to_pb(v: Vec<EnvVarJson>) -> Vec<pb::EnvironmentVariable> {
    v.into_iter()
        .map(|e| pb::EnvironmentVariable {
            name: e.name,
            value: e.value,
        })
        .collect()
}

pub fn env_from_pb(v: &[pb::EnvironmentVariable]) -> Vec<EnvVarJson> {
    v.iter()
        .map(|e| EnvVarJson {
            name: e.name.clone(),
            value: e.value.clone(),
        })
        .collect()
}

fn kv_to_pb(r: Option<KeyVaultRefJson>) -> Option<pb::KeyVaultSecretReference> {
    r.map(|r| pb::KeyVaultSecretReference {
        source_vault_id: r.source_vault.map(|s| s.id).unwrap_or_default(),
        secret_url: r.secret_url,
    })
}

fn kv_from_pb(r: Option<&pb::KeyVaultSecretReference>) -> Option<KeyVaultRefJson> {
    r.map(|r| KeyVaultRefJson {
        source_vault: Some(IdJson {
            id: r.source_vault_id.clone(),
        }),
        secret_url: r.secret_url.clone(),
    })
}

pub fn secrets_to_pb(v: Vec<SecretJson>) -> Vec<pb::EnvironmentVariableWithSecretValue> {
    v.into_iter()
        .map(|s| pb::EnvironmentVariableWithSecretValue {
            name: s.name,
            value: s.value,
            value_secret_reference: kv_to_pb(s.value_secret_reference),
        })
        .collect()
}

/// Names and references only: secret values are never copied out of the proto.
pub fn secrets_from_pb(v: &[pb::EnvironmentVariableWithSecretValue]) -> Vec<SecretJson> {
    v.iter()
        .map(|s| SecretJson {
            name: s.name.clone(),
            value: String::new(),
            value_secret_reference: kv_from_pb(s.value_secret_reference.as_ref()),
        })
        .collect()
}

fn creds_to_pb(c: Option<CredentialsJson>) -> Option<pb::AzureStorageCredentialsInfo> {
    c.map(|c| pb::AzureStorageCredentialsInfo {
        account_key: c.account_key,
        account_key_secret_reference: kv_to_pb(c.account_key_secret_reference),
    })
}

fn creds_from_pb(c: Option<&pb::AzureStorageCredentialsInfo>) -> Option<CredentialsJson> {
    c.map(|c| CredentialsJson {
        account_key: String::new(),
        account_key_secret_reference: kv_from_pb(c.account_key_secret_reference.as_ref()),
    })
}

impl MountVolumesJson {
    pub fn into_pb(self) -> pb::MountVolumes {
        pb::MountVolumes {
            use_auto_storage: self.use_auto_storage,
            azure_file_shares: self
                .azure_file_shares
                .into_iter()
                .map(|a| pb::AzureFileShareReference {
                    account_name: a.account_name,
                    azure_file_url: a.azure_file_url,
                    credentials: creds_to_pb(a.credentials),
                    relative_mount_path: a.relative_mount_path,
                    file_mode: a.file_mode,
                    directory_mode: a.directory_mode,
                })
                .collect(),
            azure_blob_file_systems: self
                .azure_blob_file_systems
                .into_iter()
                .map(|b| pb::AzureBlobFileSystemReference {
                    account_name: b.account_name,
                    container_name: b.container_name,
                    credentials: creds_to_pb(b.credentials),
                    relative_mount_path: b.relative_mount_path,
                    mount_options: b.mount_options,
                })
                .collect(),
            file_servers: self
                .file_servers
                .into_iter()
                .map(|f| pb::FileServerReference {
                    file_server: f.file_server.map(|i| pb::ResourceId { id: i.id }),
                    source_directory: f.source_directory,
                    relative_mount_path: f.relative_mount_path,
                    mount_options: f.mount_options,
                })
                .collect(),
            unmanaged_file_systems: self
                .unmanaged_file_systems
                .into_iter()
                .map(|u| pb::UnmanagedFileSystemReference {
                    mount_command: u.mount_command,
                    relative_mount_path: u.relative_mount_path,
                })
                .collect(),
        }
    }

    pub fn from_pb(m: &pb::MountVolumes) -> Self {
        MountVolumesJson {
            use_auto_storage: m.use_auto_storage,
            azure_file_shares: m
                .azure_file_shares
                .iter()
                .map(|a| AzureFileShareJson {
                    account_name: a.account_name.clone(),
                    azure_file_url: a.azure_file_url.clone(),
                    credentials: creds_from_pb(a.credentials.as_ref()),
                    relative_mount_path: a.relative_mount_path.clone(),
                    file_mode: a.file_mode.clone(),
                    directory_mode: a.directory_mode.clone(),
                })
                .collect(),
            azure_blob_file_systems: m
                .azure_blob_file_systems
                .iter()
                .map(|b| AzureBlobJson {
                    account_name: b.account_name.clone(),
                    container_name: b.container_name.clone(),
                    credentials: creds_from_pb(b.credentials.as_ref()),
                    relative_mount_path: b.relative_mount_path.clone(),
                    mount_options: b.mount_options.clone(),
                })
                .collect(),
            file_servers: m
                .file_servers
                .iter()
                .map(|f| FileServerRefJson {
                    file_server: f.file_server.as_ref().map(|i| IdJson { id: i.id.clone() }),
                    source_directory: f.source_directory.clone(),
                    relative_mount_path: f.relative_mount_path.clone(),
                    mount_options: f.mount_options.clone(),
                })
                .collect(),
            unmanaged_file_systems: m
                .unmanaged_file_systems
                .iter()
                .map(|u| UnmanagedFsJson {
                    mount_command: u.mount_command.clone(),
                    relative_mount_path: u.relative_mount_path.clone(),
                })
                .collect(),
        }
    }
}

pub fn errors_from_pb(v: &[pb::BatchAiError]) -> Vec<BatchAiErrorJson> {
    v.iter()
        .map(|e| BatchAiErrorJson {
            code: e.code.clone(),
            message: e.message.clone(),
            details: e
                .details
                .iter()
                .map(|d| NameValueJson {
                    name: d.name.clone(),
                    value: d.value.clone(),
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_auto_storage_is_shown_only_when_set_and_read_from_files() {
        let plain =
            serde_json::to_value(MountVolumesJson::from_pb(&pb::MountVolumes::default())).unwrap();
        assert!(plain.get("useAutoStorage").is_none(), "{plain}");
        let auto = pb::MountVolumes {
            use_auto_storage: true,
            ..Default::default()
        };
        let shown = serde_json::to_value(MountVolumesJson::from_pb(&auto)).unwrap();
        assert_eq!(shown["useAutoStorage"], serde_json::json!(true));
        let back: MountVolumesJson = serde_json::from_value(shown).unwrap();
        assert_eq!(back.into_pb(), auto);
    }

    #[test]
    fn cluster_refs() {
        let r = parse_cluster_ref("cluster", "nc6").unwrap();
        assert_eq!((r.workspace.as_str(), r.name.as_str()), ("", "nc6"));
        let r = parse_cluster_ref(
            "cluster.id",
            "/subscriptions/0/resourceGroups/rg/providers/Microsoft.BatchAI/workspaces/ws/clusters/c1",
        )
        .unwrap();
        assert_eq!((r.workspace.as_str(), r.name.as_str()), ("ws", "c1"));
        let r = parse_cluster_ref(
            "c",
            "/subscriptions/0/x/workspace/demo_workspace/clusters/demo",
        )
        .unwrap();
        assert_eq!(
            (r.workspace.as_str(), r.name.as_str()),
            ("demo_workspace", "demo")
        );
        let r = parse_cluster_ref("c", "/providers/Microsoft.BatchAI/clusters/old").unwrap();
        assert_eq!((r.workspace.as_str(), r.name.as_str()), ("", "old"));
        let r = parse_cluster_ref("c", "/workspaces//clusters/c").unwrap();
        assert_eq!((r.workspace.as_str(), r.name.as_str()), ("", "c"));
        let e = parse_cluster_ref("cluster.id", "/workspaces/ws").unwrap_err();
        assert!(e.to_string().starts_with("cluster.id: "), "{e}");
    }

    #[test]
    fn enums_parse_case_insensitively_and_reject_unknown() {
        assert_eq!(
            parse_enum("vmPriority", "LowPriority", VM_PRIORITY).unwrap(),
            2
        );
        assert_eq!(parse_enum("vmPriority", "", VM_PRIORITY).unwrap(), 0);
        let e = parse_enum("vmPriority", "spot", VM_PRIORITY)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("vmPriority") && e.contains("dedicated, lowpriority"),
            "{e}"
        );
        assert_eq!(
            enum_name(pb::ExecutionState::Succeeded as i32, EXECUTION),
            "succeeded"
        );
        assert_eq!(enum_name(0, EXECUTION), "");
    }

    #[test]
    fn prune_keeps_zeros_and_drops_empties() {
        let mut v =
            serde_json::json!({"a": "", "b": 0, "c": [], "d": {"e": null}, "f": false, "g": "x"});
        prune(&mut v);
        assert_eq!(v, serde_json::json!({"b": 0, "f": false, "g": "x"}));
    }

    #[test]
    fn from_object_names_the_field() {
        let obj = serde_json::json!({"name": "x", "value": 5});
        let Value::Object(m) = obj else {
            unreachable!()
        };
        let e = from_object::<EnvVarJson>(m).unwrap_err().to_string();
        assert!(e.starts_with("value: "), "{e}");
    }

    #[test]
    fn secret_values_are_never_serialized() {
        let s = SecretJson {
            name: "TOKEN".into(),
            value: "hunter2".into(),
            value_secret_reference: None,
        };
        let c = CredentialsJson {
            account_key: "k3y".into(),
            account_key_secret_reference: None,
        };
        let out = format!(
            "{}{}",
            serde_json::to_string(&s).unwrap(),
            serde_json::to_string(&c).unwrap()
        );
        assert!(!out.contains("hunter2") && !out.contains("k3y"), "{out}");
        assert!(out.contains("TOKEN"));
    }
}
