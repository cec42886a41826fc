//! The Batch AI job JSON (`JobBaseProperties` on create, `JobProperties` on
//! read) and its conversion to and from `bai.v1.Job`.

use bai_proto::v1 as pb;
use pb::job::Toolkit;
use serde::{Deserialize, Serialize};

use super::JsonError;
use super::common::*;
use super::duration::{format_duration, parse_duration};

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CntkJson {
    pub language_type: String,
    pub config_file_path: String,
    pub python_script_file_path: String,
    pub python_interpreter_path: String,
    pub command_line_args: String,
    pub process_count: Option<i32>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PyTorchJson {
    pub python_script_file_path: String,
    pub python_interpreter_path: String,
    pub command_line_args: String,
    pub process_count: Option<i32>,
    pub communication_backend: String,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TensorFlowJson {
    pub python_script_file_path: String,
    pub python_interpreter_path: String,
    pub master_command_line_args: String,
    pub worker_command_line_args: String,
    pub parameter_server_command_line_args: String,
    pub worker_count: Option<i32>,
    pub parameter_server_count: Option<i32>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CaffeJson {
    pub config_file_path: String,
    pub python_script_file_path: String,
    pub python_interpreter_path: String,
    pub command_line_args: String,
    pub process_count: Option<i32>,
}

/// Caffe2, and (with `processCount`) Chainer and Horovod.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ScriptJson {
    pub python_script_file_path: String,
    pub python_interpreter_path: String,
    pub command_line_args: String,
    pub process_count: Option<i32>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CommandLineJson {
    pub command_line: String,
    pub process_count: Option<i32>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RegistryCredentialsJson {
    pub username: String,
    #[serde(skip_serializing)]
    pub password: String,
    pub password_secret_reference: Option<KeyVaultRefJson>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ImageSourceRegistryJson {
    pub server_url: String,
    pub image: String,
    pub credentials: Option<RegistryCredentialsJson>,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ContainerSettingsJson {
    pub image_source_registry: Option<ImageSourceRegistryJson>,
    pub shm_size: String,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct InputDirectoryJson {
    pub id: String,
    pub path: String,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OutputDirectoryJson {
    pub id: String,
    pub path_prefix: String,
    pub path_suffix: String,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ConstraintsJson {
    pub max_wall_clock_time: String,
}

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ExecutionInfoJson {
    pub start_time: Option<String>,
    pub end_time: Option<String>,
    pub exit_code: Option<i32>,
    pub errors: Vec<BatchAiErrorJson>,
}

/// Job properties; the read-only members are only ever written.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JobJson {
    pub scheduling_priority: String,
    pub cluster: Option<IdJson>,
    pub mount_volumes: Option<MountVolumesJson>,
    pub node_count: Option<i32>,
    /// bai's extension: GPUs per node (0 or absent: whole nodes).
    pub gpus_per_node: Option<u32>,
    pub container_settings: Option<ContainerSettingsJson>,
    pub cntk_settings: Option<CntkJson>,
    pub py_torch_settings: Option<PyTorchJson>,
    pub tensor_flow_settings: Option<TensorFlowJson>,
    pub caffe_settings: Option<CaffeJson>,
    pub caffe2_settings: Option<ScriptJson>,
    pub chainer_settings: Option<ScriptJson>,
    pub custom_toolkit_settings: Option<CommandLineJson>,
    pub custom_mpi_settings: Option<CommandLineJson>,
    pub horovod_settings: Option<ScriptJson>,
    pub job_preparation: Option<CommandLineJson>,
    pub std_out_err_path_prefix: String,
    pub input_directories: Vec<InputDirectoryJson>,
    pub output_directories: Vec<OutputDirectoryJson>,
    pub environment_variables: Vec<EnvVarJson>,
    pub secrets: Vec<SecretJson>,
    pub constraints: Option<ConstraintsJson>,
    // read-only
    pub tool_type: String,
    pub job_output_directory_path_segment: String,
    pub creation_time: Option<String>,
    pub provisioning_state: String,
    pub provisioning_state_transition_time: Option<String>,
    pub execution_state: String,
    pub execution_state_transition_time: Option<String>,
    pub execution_info: Option<ExecutionInfoJson>,
    pub node_ids: Vec<String>,
    /// The GPUs the job was given (bai's addition).
    pub gpu_uuids: Vec<String>,
    /// What the latest attempt used (bai's addition; read-only).
    pub metrics: Option<JobMetricsJson>,
    /// While queued: its place in its cluster's queue and why it waits
    /// (bai's addition; read-only).
    pub queue_info: Option<JobQueueInfoJson>,
}

/// A queued job's place in its cluster's queue (1-based) and why it waits.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JobQueueInfoJson {
    pub position: u32,
    pub reason: String,
}

/// A job attempt's use of its node, from its agent's samples.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct JobMetricsJson {
    pub time: Option<String>,
    pub samples: u64,
    pub gpu_utilization_mean: f64,
    pub gpu_utilization_max: f64,
    pub gpu_memory_peak_bytes: u64,
    pub cpu_seconds: f64,
    pub memory_peak_bytes: u64,
}

fn count(v: Option<i32>) -> i32 {
    v.unwrap_or(0)
}

fn opt_count(v: i32) -> Option<i32> {
    (v != 0).then_some(v)
}

impl JobJson {
    /// Converts create parameters. Read-only members are ignored; a job with
    /// no toolkit is allowed here (the command line may add one).
    pub fn into_pb(self) -> Result<pb::Job, JsonError> {
        let mut toolkits: Vec<(&str, Toolkit)> = Vec::new();
        if let Some(s) = self.cntk_settings {
            toolkits.push((
                "cntkSettings",
                Toolkit::CntkSettings(pb::CntkSettings {
                    language_type: s.language_type,
                    config_file_path: s.config_file_path,
                    python_script_file_path: s.python_script_file_path,
                    python_interpreter_path: s.python_interpreter_path,
                    command_line_args: s.command_line_args,
                    process_count: count(s.process_count),
                }),
            ));
        }
        if let Some(s) = self.py_torch_settings {
            toolkits.push((
                "pyTorchSettings",
                Toolkit::PyTorchSettings(pb::PyTorchSettings {
                    python_script_file_path: s.python_script_file_path,
                    python_interpreter_path: s.python_interpreter_path,
                    command_line_args: s.command_line_args,
                    process_count: count(s.process_count),
                    communication_backend: s.communication_backend,
                }),
            ));
        }
        if let Some(s) = self.tensor_flow_settings {
            toolkits.push((
                "tensorFlowSettings",
                Toolkit::TensorFlowSettings(pb::TensorFlowSettings {
                    python_script_file_path: s.python_script_file_path,
                    python_interpreter_path: s.python_interpreter_path,
                    master_command_line_args: s.master_command_line_args,
                    worker_command_line_args: s.worker_command_line_args,
                    parameter_server_command_line_args: s.parameter_server_command_line_args,
                    worker_count: count(s.worker_count),
                    parameter_server_count: count(s.parameter_server_count),
                }),
            ));
        }
        if let Some(s) = self.caffe_settings {
            toolkits.push((
                "caffeSettings",
                Toolkit::CaffeSettings(pb::CaffeSettings {
                    config_file_path: s.config_file_path,
                    python_script_file_path: s.python_script_file_path,
                    python_interpreter_path: s.python_interpreter_path,
                    command_line_args: s.command_line_args,
                    process_count: count(s.process_count),
                }),
            ));
        }
        if let Some(s) = self.caffe2_settings {
            toolkits.push((
                "caffe2Settings",
                Toolkit::Caffe2Settings(pb::Caffe2Settings {
                    python_script_file_path: s.python_script_file_path,
                    python_interpreter_path: s.python_interpreter_path,
                    command_line_args: s.command_line_args,
                }),
            ));
        }
        if let Some(s) = self.chainer_settings {
            toolkits.push((
                "chainerSettings",
                Toolkit::ChainerSettings(pb::ChainerSettings {
                    python_script_file_path: s.python_script_file_path,
                    python_interpreter_path: s.python_interpreter_path,
                    command_line_args: s.command_line_args,
                    process_count: count(s.process_count),
                }),
            ));
        }
        if let Some(s) = self.custom_toolkit_settings {
            toolkits.push((
                "customToolkitSettings",
                Toolkit::CustomToolkitSettings(pb::CustomToolkitSettings {
                    command_line: s.command_line,
                }),
            ));
        }
        if let Some(s) = self.custom_mpi_settings {
            toolkits.push((
                "customMpiSettings",
                Toolkit::CustomMpiSettings(pb::CustomMpiSettings {
                    command_line: s.command_line,
                    process_count: count(s.process_count),
                }),
            ));
        }
        if let Some(s) = self.horovod_settings {
            toolkits.push((
                "horovodSettings",
                Toolkit::HorovodSettings(pb::HorovodSettings {
                    python_script_file_path: s.python_script_file_path,
                    python_interpreter_path: s.python_interpreter_path,
                    command_line_args: s.command_line_args,
                    process_count: count(s.process_count),
                }),
            ));
        }
        if toolkits.len() > 1 {
            let names: Vec<&str> = toolkits.iter().map(|(n, _)| *n).collect();
            return Err(JsonError::field(
                "properties",
                format!(
                    "give exactly one toolkit settings object, found {}",
                    names.join(" and ")
                ),
            ));
        }
        let toolkit = toolkits.pop().map(|(_, t)| t);
        let cluster = match self.cluster {
            Some(c) if !c.id.is_empty() => Some(parse_cluster_ref("cluster.id", &c.id)?),
            _ => None,
        };
        let max_wall_clock_time = match self.constraints.map(|c| c.max_wall_clock_time) {
            Some(t) if !t.is_empty() => Some(
                parse_duration(&t)
                    .map_err(|e| JsonError::field("constraints.maxWallClockTime", e))?,
            ),
            _ => None,
        };
        let scheduling_priority = parse_enum(
            "schedulingPriority",
            &self.scheduling_priority,
            JOB_PRIORITY,
        )?;
        Ok(pb::Job {
            scheduling_priority,
            cluster,
            mount_volumes: self.mount_volumes.map(MountVolumesJson::into_pb),
            node_count: count(self.node_count),
            gpus_per_node: self.gpus_per_node.unwrap_or(0),
            container_settings: self.container_settings.map(|c| pb::ContainerSettings {
                image_source_registry: c.image_source_registry.map(|r| pb::ImageSourceRegistry {
                    server_url: r.server_url,
                    image: r.image,
                    credentials: r.credentials.map(|c| pb::PrivateRegistryCredentials {
                        username: c.username,
                        password: c.password,
                        password_secret_reference: c.password_secret_reference.map(|k| {
                            pb::KeyVaultSecretReference {
                                source_vault_id: k.source_vault.map(|s| s.id).unwrap_or_default(),
                                secret_url: k.secret_url,
                            }
                        }),
                    }),
                }),
                shm_size: c.shm_size,
            }),
            toolkit,
            job_preparation: self.job_preparation.map(|p| pb::JobPreparation {
                command_line: p.command_line,
            }),
            std_out_err_path_prefix: self.std_out_err_path_prefix,
            input_directories: self
                .input_directories
                .into_iter()
                .map(|d| pb::InputDirectory {
                    id: d.id,
                    path: d.path,
                })
                .collect(),
            output_directories: self
                .output_directories
                .into_iter()
                .map(|d| pb::OutputDirectory {
                    id: d.id,
                    path_prefix: d.path_prefix,
                    path_suffix: d.path_suffix,
                })
                .collect(),
            environment_variables: env_to_pb(self.environment_variables),
            secrets: secrets_to_pb(self.secrets),
            constraints: max_wall_clock_time.map(|d| pb::JobBasePropertiesConstraints {
                max_wall_clock_time: Some(d),
            }),
            ..Default::default()
        })
    }

    /// The properties of a job as Batch AI prints them; no secret value is copied.
    pub fn from_pb(j: &pb::Job) -> Self {
        let mut out = JobJson {
            scheduling_priority: enum_name(j.scheduling_priority, JOB_PRIORITY),
            cluster: j.cluster.as_ref().map(|c| {
                let ws = if c.workspace.is_empty() {
                    &j.workspace
                } else {
                    &c.workspace
                };
                IdJson {
                    id: cluster_id(ws, &c.name),
                }
            }),
            mount_volumes: j.mount_volumes.as_ref().map(MountVolumesJson::from_pb),
            node_count: Some(j.node_count),
            gpus_per_node: (j.gpus_per_node > 0).then_some(j.gpus_per_node),
            container_settings: j
                .container_settings
                .as_ref()
                .map(|c| ContainerSettingsJson {
                    image_source_registry: c.image_source_registry.as_ref().map(|r| {
                        ImageSourceRegistryJson {
                            server_url: r.server_url.clone(),
                            image: r.image.clone(),
                            credentials: r.credentials.as_ref().map(|c| RegistryCredentialsJson {
                                username: c.username.clone(),
                                password: String::new(),
                                password_secret_reference: c
                                    .password_secret_reference
                                    .as_ref()
                                    .map(|k| KeyVaultRefJson {
                                        source_vault: Some(IdJson {
                                            id: k.source_vault_id.clone(),
                                        }),
                                        secret_url: k.secret_url.clone(),
                                    }),
                            }),
                        }
                    }),
                    shm_size: c.shm_size.clone(),
                }),
            job_preparation: j.job_preparation.as_ref().map(|p| CommandLineJson {
                command_line: p.command_line.clone(),
                process_count: None,
            }),
            std_out_err_path_prefix: j.std_out_err_path_prefix.clone(),
            input_directories: j
                .input_directories
                .iter()
                .map(|d| InputDirectoryJson {
                    id: d.id.clone(),
                    path: d.path.clone(),
                })
                .collect(),
            output_directories: j
                .output_directories
                .iter()
                .map(|d| OutputDirectoryJson {
                    id: d.id.clone(),
                    path_prefix: d.path_prefix.clone(),
                    path_suffix: d.path_suffix.clone(),
                })
                .collect(),
            environment_variables: env_from_pb(&j.environment_variables),
            secrets: secrets_from_pb(&j.secrets),
            constraints: j
                .constraints
                .as_ref()
                .and_then(|c| c.max_wall_clock_time.as_ref())
                .map(|d| ConstraintsJson {
                    max_wall_clock_time: format_duration(d),
                }),
            tool_type: enum_name(j.tool_type, TOOL_TYPE),
            job_output_directory_path_segment: j.job_output_directory_path_segment.clone(),
            creation_time: ts(j.creation_time.as_ref()),
            provisioning_state: enum_name(j.provisioning_state, PROVISIONING),
            provisioning_state_transition_time: ts(j.provisioning_state_transition_time.as_ref()),
            execution_state: enum_name(j.execution_state, EXECUTION),
            execution_state_transition_time: ts(j.execution_state_transition_time.as_ref()),
            execution_info: j.execution_info.as_ref().map(|e| ExecutionInfoJson {
                start_time: ts(e.start_time.as_ref()),
                end_time: ts(e.end_time.as_ref()),
                exit_code: e.exit_code,
                errors: errors_from_pb(&e.errors),
            }),
            node_ids: j.node_ids.clone(),
            gpu_uuids: j.gpu_uuids.clone(),
            metrics: j.metrics.as_ref().map(|m| JobMetricsJson {
                time: ts(m.time.as_ref()),
                samples: m.samples,
                gpu_utilization_mean: m.gpu_utilization_mean,
                gpu_utilization_max: m.gpu_utilization_max,
                gpu_memory_peak_bytes: m.gpu_memory_peak_bytes,
                cpu_seconds: m.cpu_seconds,
                memory_peak_bytes: m.memory_peak_bytes,
            }),
            queue_info: j.queue_info.as_ref().map(|q| JobQueueInfoJson {
                position: q.position,
                reason: q.reason.clone(),
            }),
            ..Default::default()
        };
        match &j.toolkit {
            Some(Toolkit::CntkSettings(s)) => {
                out.cntk_settings = Some(CntkJson {
                    language_type: s.language_type.clone(),
                    config_file_path: s.config_file_path.clone(),
                    python_script_file_path: s.python_script_file_path.clone(),
                    python_interpreter_path: s.python_interpreter_path.clone(),
                    command_line_args: s.command_line_args.clone(),
                    process_count: opt_count(s.process_count),
                })
            }
            Some(Toolkit::PyTorchSettings(s)) => {
                out.py_torch_settings = Some(PyTorchJson {
                    python_script_file_path: s.python_script_file_path.clone(),
                    python_interpreter_path: s.python_interpreter_path.clone(),
                    command_line_args: s.command_line_args.clone(),
                    process_count: opt_count(s.process_count),
                    communication_backend: s.communication_backend.clone(),
                })
            }
            Some(Toolkit::TensorFlowSettings(s)) => {
                out.tensor_flow_settings = Some(TensorFlowJson {
                    python_script_file_path: s.python_script_file_path.clone(),
                    python_interpreter_path: s.python_interpreter_path.clone(),
                    master_command_line_args: s.master_command_line_args.clone(),
                    worker_command_line_args: s.worker_command_line_args.clone(),
                    parameter_server_command_line_args: s
                        .parameter_server_command_line_args
                        .clone(),
                    worker_count: opt_count(s.worker_count),
                    parameter_server_count: opt_count(s.parameter_server_count),
                })
            }
            Some(Toolkit::CaffeSettings(s)) => {
                out.caffe_settings = Some(CaffeJson {
                    config_file_path: s.config_file_path.clone(),
                    python_script_file_path: s.python_script_file_path.clone(),
                    python_interpreter_path: s.python_interpreter_path.clone(),
                    command_line_args: s.command_line_args.clone(),
                    process_count: opt_count(s.process_count),
                })
            }
            Some(Toolkit::Caffe2Settings(s)) => {
                out.caffe2_settings = Some(script(
                    &s.python_script_file_path,
                    &s.python_interpreter_path,
                    &s.command_line_args,
                    0,
                ))
            }
            Some(Toolkit::ChainerSettings(s)) => {
                out.chainer_settings = Some(script(
                    &s.python_script_file_path,
                    &s.python_interpreter_path,
                    &s.command_line_args,
                    s.process_count,
                ))
            }
            Some(Toolkit::HorovodSettings(s)) => {
                out.horovod_settings = Some(script(
                    &s.python_script_file_path,
                    &s.python_interpreter_path,
                    &s.command_line_args,
                    s.process_count,
                ))
            }
            Some(Toolkit::CustomToolkitSettings(s)) => {
                out.custom_toolkit_settings = Some(CommandLineJson {
                    command_line: s.command_line.clone(),
                    process_count: None,
                })
            }
            Some(Toolkit::CustomMpiSettings(s)) => {
                out.custom_mpi_settings = Some(CommandLineJson {
                    command_line: s.command_line.clone(),
                    process_count: opt_count(s.process_count),
                })
            }
            None => {}
        }
        out
    }
}

fn script(path: &str, interpreter: &str, args: &str, process_count: i32) -> ScriptJson {
    ScriptJson {
        python_script_file_path: path.to_string(),
        python_interpreter_path: interpreter.to_string(),
        command_line_args: args.to_string(),
        process_count: opt_count(process_count),
    }
}
