//! The user-supplied specifications of clusters and jobs (what Batch AI takes on
//! create), as plain serde types. The store keeps them as JSON; secrets inside
//! them are [`Secret`]s, never returned by reads.

use super::secret::Secret;
use serde::{Deserialize, Serialize};

/// `name=value`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

/// A secret environment variable (the value is write-only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretEnvVar {
    pub name: String,
    pub value: Secret,
}

/// Batch AI's error shape: code, message, name/value details.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BatchAiError {
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub details: Vec<(String, String)>,
}

impl BatchAiError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_string(),
            message: message.into(),
            details: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------- mounts

/// An Azure storage account key (a Key Vault reference is not supported).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct StorageCredentials {
    pub account_key: Secret,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AzureFileShare {
    pub account_name: String,
    pub azure_file_url: String,
    pub credentials: StorageCredentials,
    pub relative_mount_path: String,
    pub file_mode: String,
    pub directory_mode: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AzureBlobFileSystem {
    pub account_name: String,
    pub container_name: String,
    pub credentials: StorageCredentials,
    pub relative_mount_path: String,
    pub mount_options: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileServerMount {
    pub file_server_id: String,
    pub source_directory: String,
    pub relative_mount_path: String,
    pub mount_options: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnmanagedFileSystem {
    pub mount_command: String,
    pub relative_mount_path: String,
}

/// Volumes mounted on a node (cluster level) or for a job (job level).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MountVolumes {
    pub azure_file_shares: Vec<AzureFileShare>,
    pub azure_blob_file_systems: Vec<AzureBlobFileSystem>,
    pub file_servers: Vec<FileServerMount>,
    pub unmanaged_file_systems: Vec<UnmanagedFileSystem>,
    /// az's `--use-auto-storage`: the coordinator's auto-storage share and
    /// container as well. Stored as the flag; `auto_storage::expand` adds the
    /// volumes when a node or job is sent them.
    #[serde(default)]
    pub use_auto_storage: bool,
}

impl MountVolumes {
    pub fn is_empty(&self) -> bool {
        !self.use_auto_storage
            && self.azure_file_shares.is_empty()
            && self.azure_blob_file_systems.is_empty()
            && self.file_servers.is_empty()
            && self.unmanaged_file_systems.is_empty()
    }
}

// ---------------------------------------------------------------- cluster

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmPriority {
    #[default]
    Dedicated,
    LowPriority,
}

/// What happens to running jobs when their node is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeallocationOption {
    /// Terminate the jobs and put them back in the queue (the default).
    #[default]
    Requeue,
    /// Terminate the jobs; they end failed.
    Terminate,
    /// Schedule nothing new on the node; remove it once its jobs end.
    WaitForJobCompletion,
}

impl DeallocationOption {
    /// Batch AI's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requeue => "requeue",
            Self::Terminate => "terminate",
            Self::WaitForJobCompletion => "waitforjobcompletion",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleSettings {
    Manual {
        target_node_count: u32,
        deallocation: DeallocationOption,
    },
    AutoScale {
        minimum_node_count: u32,
        maximum_node_count: u32,
        initial_node_count: u32,
    },
}

impl ScaleSettings {
    /// The node count a cluster created with these settings aims for.
    /// Auto-scale starts at the initial count, at least the minimum.
    pub fn initial_target(&self) -> u32 {
        match *self {
            Self::Manual {
                target_node_count, ..
            } => target_node_count,
            Self::AutoScale {
                minimum_node_count,
                initial_node_count,
                ..
            } => initial_node_count.max(minimum_node_count),
        }
    }

    /// The target after switching to these settings from `current_target`:
    /// manual takes its target; auto-scale keeps the current target clamped to
    /// [min, max] until the autoscaler's next look (`autoscaler.rs`).
    pub fn retarget(&self, current_target: u32) -> u32 {
        match *self {
            Self::Manual {
                target_node_count, ..
            } => target_node_count,
            Self::AutoScale {
                minimum_node_count,
                maximum_node_count,
                ..
            } => current_target.clamp(minimum_node_count, maximum_node_count),
        }
    }

    /// What happens to running jobs on removed nodes (auto-scale: requeue).
    pub fn deallocation(&self) -> DeallocationOption {
        match *self {
            Self::Manual { deallocation, .. } => deallocation,
            Self::AutoScale { .. } => DeallocationOption::Requeue,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ImageReference {
    pub publisher: String,
    pub offer: String,
    pub sku: String,
    pub version: String,
    pub virtual_machine_image_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetupTask {
    pub command_line: String,
    pub environment_variables: Vec<EnvVar>,
    pub secrets: Vec<SecretEnvVar>,
    pub std_out_err_path_prefix: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppInsightsReference {
    pub component_id: String,
    pub instrumentation_key: Secret,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeSetup {
    pub setup_task: Option<SetupTask>,
    pub mount_volumes: Option<MountVolumes>,
    pub app_insights: Option<AppInsightsReference>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UserAccountSettings {
    pub admin_user_name: String,
    pub admin_user_ssh_public_key: String,
    pub admin_user_password: Secret,
}

/// What a cluster is created with (everything but the scale settings is fixed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSpec {
    pub vm_size: String,
    pub vm_priority: VmPriority,
    pub scale: ScaleSettings,
    pub image: Option<ImageReference>,
    pub node_setup: Option<NodeSetup>,
    pub user_account: Option<UserAccountSettings>,
    pub subnet_id: String,
}

// ---------------------------------------------------------------- job

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobPriority {
    Low,
    #[default]
    Normal,
    High,
}

impl JobPriority {
    /// A number that sorts high before normal before low when ascending.
    pub fn rank(self) -> i64 {
        match self {
            Self::High => 0,
            Self::Normal => 1,
            Self::Low => 2,
        }
    }
}

/// Batch AI's `toolType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolType {
    Cntk,
    TensorFlow,
    Caffe,
    Caffe2,
    Chainer,
    Horovod,
    Mpi,
    Custom,
    PyTorch,
}

/// A Python entry point shared by most toolkits.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PythonScript {
    pub python_script_file_path: String,
    pub python_interpreter_path: String,
    pub command_line_args: String,
    pub process_count: u32,
}

/// The toolkit a job runs with (exactly one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Toolkit {
    Cntk {
        language_type: String,
        config_file_path: String,
        script: PythonScript,
    },
    PyTorch {
        script: PythonScript,
        communication_backend: String,
    },
    TensorFlow {
        script: PythonScript,
        master_command_line_args: String,
        worker_command_line_args: String,
        parameter_server_command_line_args: String,
        worker_count: u32,
        parameter_server_count: u32,
    },
    Caffe {
        config_file_path: String,
        script: PythonScript,
    },
    Caffe2 {
        script: PythonScript,
    },
    Chainer {
        script: PythonScript,
    },
    Horovod {
        script: PythonScript,
    },
    Custom {
        command_line: String,
    },
    CustomMpi {
        command_line: String,
        process_count: u32,
    },
}

impl Toolkit {
    pub fn tool_type(&self) -> ToolType {
        match self {
            Self::Cntk { .. } => ToolType::Cntk,
            Self::PyTorch { .. } => ToolType::PyTorch,
            Self::TensorFlow { .. } => ToolType::TensorFlow,
            Self::Caffe { .. } => ToolType::Caffe,
            Self::Caffe2 { .. } => ToolType::Caffe2,
            Self::Chainer { .. } => ToolType::Chainer,
            Self::Horovod { .. } => ToolType::Horovod,
            Self::Custom { .. } => ToolType::Custom,
            Self::CustomMpi { .. } => ToolType::Mpi,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivateRegistryCredentials {
    pub username: String,
    pub password: Secret,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSettings {
    pub server_url: String,
    pub image: String,
    pub credentials: Option<PrivateRegistryCredentials>,
    pub shm_size: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputDirectory {
    pub id: String,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputDirectory {
    pub id: String,
    pub path_prefix: String,
    pub path_suffix: String,
}

/// The cluster a job runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterKey {
    pub workspace: String,
    pub name: String,
}

impl std::fmt::Display for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.workspace, self.name)
    }
}

/// Default `constraints.max_wall_clock_time`: 7 days.
pub const DEFAULT_MAX_WALL_CLOCK_MS: u64 = 7 * 24 * 3600 * 1000;

/// What a job is created with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub cluster: ClusterKey,
    pub scheduling_priority: JobPriority,
    pub node_count: u32,
    pub toolkit: Toolkit,
    pub mount_volumes: Option<MountVolumes>,
    pub container_settings: Option<ContainerSettings>,
    pub job_preparation_command_line: Option<String>,
    pub std_out_err_path_prefix: String,
    pub input_directories: Vec<InputDirectory>,
    pub output_directories: Vec<OutputDirectory>,
    pub environment_variables: Vec<EnvVar>,
    pub secrets: Vec<SecretEnvVar>,
    pub max_wall_clock_time_ms: u64,
    /// GPUs per node (bai's extension); 0: the whole node.
    #[serde(default)]
    pub gpus_per_node: u32,
}
