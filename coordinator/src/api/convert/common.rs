//! Conversions shared by clusters and jobs: environment variables, secrets,
//! mounts, container settings and errors.

use super::{Secrets, unknown_enum};
use crate::domain::validate::Invalid;
use crate::domain::*;
use bai_proto::v1 as pb;

fn secret_out(s: &Secret, mode: Secrets) -> String {
    match mode {
        Secrets::Reveal => s.expose().to_string(),
        Secrets::Redact => String::new(),
    }
}

fn no_key_vault(field: String, r: &Option<pb::KeyVaultSecretReference>) -> Result<(), Invalid> {
    if r.is_some() {
        return Err(Invalid::new(
            field,
            "key vault references are not supported; pass the value",
        ));
    }
    Ok(())
}

pub fn env_from(v: Vec<pb::EnvironmentVariable>) -> Vec<EnvVar> {
    v.into_iter()
        .map(|e| EnvVar {
            name: e.name,
            value: e.value,
        })
        .collect()
}

pub fn env_to(v: &[EnvVar]) -> Vec<pb::EnvironmentVariable> {
    v.iter()
        .map(|e| pb::EnvironmentVariable {
            name: e.name.clone(),
            value: e.value.clone(),
        })
        .collect()
}

pub fn secrets_from(
    field: &str,
    v: Vec<pb::EnvironmentVariableWithSecretValue>,
) -> Result<Vec<SecretEnvVar>, Invalid> {
    v.into_iter()
        .enumerate()
        .map(|(i, s)| {
            no_key_vault(
                format!("{field}[{i}].value_secret_reference"),
                &s.value_secret_reference,
            )?;
            Ok(SecretEnvVar {
                name: s.name,
                value: Secret::new(s.value),
            })
        })
        .collect()
}

/// Secret variables for the wire: names always, values only when revealed.
pub fn secrets_to(
    v: &[SecretEnvVar],
    mode: Secrets,
) -> Vec<pb::EnvironmentVariableWithSecretValue> {
    v.iter()
        .map(|s| pb::EnvironmentVariableWithSecretValue {
            name: s.name.clone(),
            value: secret_out(&s.value, mode),
            value_secret_reference: None,
        })
        .collect()
}

/// Secret variables as plain `name=value` pairs (the agent protocol).
pub fn secrets_as_env(v: &[SecretEnvVar]) -> Vec<pb::EnvironmentVariable> {
    v.iter()
        .map(|s| pb::EnvironmentVariable {
            name: s.name.clone(),
            value: s.value.expose().to_string(),
        })
        .collect()
}

pub fn error_from(e: pb::BatchAiError) -> BatchAiError {
    BatchAiError {
        code: e.code,
        message: e.message,
        details: e.details.into_iter().map(|d| (d.name, d.value)).collect(),
    }
}

pub fn errors_to(v: &[BatchAiError]) -> Vec<pb::BatchAiError> {
    v.iter()
        .map(|e| pb::BatchAiError {
            code: e.code.clone(),
            message: e.message.clone(),
            details: e
                .details
                .iter()
                .map(|(n, v)| pb::NameValuePair {
                    name: n.clone(),
                    value: v.clone(),
                })
                .collect(),
        })
        .collect()
}

fn credentials_from(
    field: String,
    c: Option<pb::AzureStorageCredentialsInfo>,
) -> Result<StorageCredentials, Invalid> {
    let c = c.unwrap_or_default();
    no_key_vault(
        format!("{field}.account_key_secret_reference"),
        &c.account_key_secret_reference,
    )?;
    Ok(StorageCredentials {
        account_key: Secret::new(c.account_key),
    })
}

fn credentials_to(
    c: &StorageCredentials,
    mode: Secrets,
) -> Option<pb::AzureStorageCredentialsInfo> {
    Some(pb::AzureStorageCredentialsInfo {
        account_key: secret_out(&c.account_key, mode),
        account_key_secret_reference: None,
    })
}

fn or_default(v: String, d: &str) -> String {
    if v.is_empty() { d.to_string() } else { v }
}

pub fn mounts_from(field: &str, m: pb::MountVolumes) -> Result<MountVolumes, Invalid> {
    let mut out = MountVolumes {
        use_auto_storage: m.use_auto_storage,
        ..MountVolumes::default()
    };
    for (i, a) in m.azure_file_shares.into_iter().enumerate() {
        out.azure_file_shares.push(AzureFileShare {
            credentials: credentials_from(
                format!("{field}.azure_file_shares[{i}].credentials"),
                a.credentials,
            )?,
            account_name: a.account_name,
            azure_file_url: a.azure_file_url,
            relative_mount_path: a.relative_mount_path,
            file_mode: or_default(a.file_mode, "0777"),
            directory_mode: or_default(a.directory_mode, "0777"),
        });
    }
    for (i, b) in m.azure_blob_file_systems.into_iter().enumerate() {
        out.azure_blob_file_systems.push(AzureBlobFileSystem {
            credentials: credentials_from(
                format!("{field}.azure_blob_file_systems[{i}].credentials"),
                b.credentials,
            )?,
            account_name: b.account_name,
            container_name: b.container_name,
            relative_mount_path: b.relative_mount_path,
            mount_options: b.mount_options,
        });
    }
    for s in m.file_servers {
        out.file_servers.push(FileServerMount {
            file_server_id: s.file_server.map(|r| r.id).unwrap_or_default(),
            source_directory: s.source_directory,
            relative_mount_path: s.relative_mount_path,
            mount_options: s.mount_options,
        });
    }
    for u in m.unmanaged_file_systems {
        out.unmanaged_file_systems.push(UnmanagedFileSystem {
            mount_command: u.mount_command,
            relative_mount_path: u.relative_mount_path,
        });
    }
    Ok(out)
}

/// The volumes as stored: a read shows `use_auto_storage` as asked, not the
/// volumes it adds (their key is the coordinator's); an agent is sent them
/// expanded, so there the flag is set only if expansion had no account.
pub fn mounts_to(m: &MountVolumes, mode: Secrets) -> pb::MountVolumes {
    pb::MountVolumes {
        use_auto_storage: m.use_auto_storage,
        azure_file_shares: m
            .azure_file_shares
            .iter()
            .map(|a| pb::AzureFileShareReference {
                account_name: a.account_name.clone(),
                azure_file_url: a.azure_file_url.clone(),
                credentials: credentials_to(&a.credentials, mode),
                relative_mount_path: a.relative_mount_path.clone(),
                file_mode: a.file_mode.clone(),
                directory_mode: a.directory_mode.clone(),
            })
            .collect(),
        azure_blob_file_systems: m
            .azure_blob_file_systems
            .iter()
            .map(|b| pb::AzureBlobFileSystemReference {
                account_name: b.account_name.clone(),
                container_name: b.container_name.clone(),
                credentials: credentials_to(&b.credentials, mode),
                relative_mount_path: b.relative_mount_path.clone(),
                mount_options: b.mount_options.clone(),
            })
            .collect(),
        file_servers: m
            .file_servers
            .iter()
            .map(|s| pb::FileServerReference {
                file_server: Some(pb::ResourceId {
                    id: s.file_server_id.clone(),
                }),
                source_directory: s.source_directory.clone(),
                relative_mount_path: s.relative_mount_path.clone(),
                mount_options: s.mount_options.clone(),
            })
            .collect(),
        unmanaged_file_systems: m
            .unmanaged_file_systems
            .iter()
            .map(|u| pb::UnmanagedFileSystemReference {
                mount_command: u.mount_command.clone(),
                relative_mount_path: u.relative_mount_path.clone(),
            })
            .collect(),
    }
}

pub fn container_from(field: &str, c: pb::ContainerSettings) -> Result<ContainerSettings, Invalid> {
    let reg = c.image_source_registry.unwrap_or_default();
    let credentials = match reg.credentials {
        None => None,
        Some(cred) => {
            no_key_vault(
                format!("{field}.image_source_registry.credentials.password_secret_reference"),
                &cred.password_secret_reference,
            )?;
            Some(PrivateRegistryCredentials {
                username: cred.username,
                password: Secret::new(cred.password),
            })
        }
    };
    Ok(ContainerSettings {
        server_url: reg.server_url,
        image: reg.image,
        credentials,
        shm_size: c.shm_size,
    })
}

pub fn container_to(c: &ContainerSettings, mode: Secrets) -> pb::ContainerSettings {
    pb::ContainerSettings {
        image_source_registry: Some(pb::ImageSourceRegistry {
            server_url: c.server_url.clone(),
            image: c.image.clone(),
            credentials: c
                .credentials
                .as_ref()
                .map(|cr| pb::PrivateRegistryCredentials {
                    username: cr.username.clone(),
                    password: secret_out(&cr.password, mode),
                    password_secret_reference: None,
                }),
        }),
        shm_size: c.shm_size.clone(),
    }
}

pub fn tool_type_to(t: ToolType) -> pb::ToolType {
    match t {
        ToolType::Cntk => pb::ToolType::Cntk,
        ToolType::TensorFlow => pb::ToolType::Tensorflow,
        ToolType::Caffe => pb::ToolType::Caffe,
        ToolType::Caffe2 => pb::ToolType::Caffe2,
        ToolType::Chainer => pb::ToolType::Chainer,
        ToolType::Horovod => pb::ToolType::Horovod,
        ToolType::Mpi => pb::ToolType::Mpi,
        ToolType::Custom => pb::ToolType::Custom,
        ToolType::PyTorch => pb::ToolType::Pytorch,
    }
}

pub fn execution_state_to(s: ExecutionState) -> pb::ExecutionState {
    match s {
        ExecutionState::Queued => pb::ExecutionState::Queued,
        ExecutionState::Running => pb::ExecutionState::Running,
        ExecutionState::Terminating => pb::ExecutionState::Terminating,
        ExecutionState::Succeeded => pb::ExecutionState::Succeeded,
        ExecutionState::Failed => pb::ExecutionState::Failed,
    }
}

pub fn priority_from(field: &str, v: i32) -> Result<JobPriority, Invalid> {
    match pb::JobPriority::try_from(v).map_err(|_| unknown_enum(field, v))? {
        pb::JobPriority::Unspecified | pb::JobPriority::Normal => Ok(JobPriority::Normal),
        pb::JobPriority::Low => Ok(JobPriority::Low),
        pb::JobPriority::High => Ok(JobPriority::High),
    }
}

pub fn priority_to(p: JobPriority) -> pb::JobPriority {
    match p {
        JobPriority::Low => pb::JobPriority::Low,
        JobPriority::Normal => pb::JobPriority::Normal,
        JobPriority::High => pb::JobPriority::High,
    }
}
