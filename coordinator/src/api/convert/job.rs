//! Jobs and output files on the wire.

use super::common::*;
use super::{Secrets, count, duration, from_duration, set, ts, ts_opt};
use crate::domain::validate::Invalid;
use crate::domain::*;
use crate::scheduler::queue::QueueInfo;
use bai_proto::v1 as pb;
use bai_proto::v1::job::Toolkit as PbToolkit;

fn script(
    field: &str,
    python_script_file_path: String,
    python_interpreter_path: String,
    command_line_args: String,
    process_count: i32,
) -> Result<PythonScript, Invalid> {
    Ok(PythonScript {
        python_script_file_path,
        python_interpreter_path,
        command_line_args,
        process_count: count(&format!("{field}.process_count"), process_count)?,
    })
}

fn toolkit_from(t: Option<PbToolkit>) -> Result<Toolkit, Invalid> {
    Ok(match t {
        None => {
            return Err(Invalid::new(
                "job.toolkit",
                "exactly one toolkit settings is required (e.g. custom_toolkit_settings)",
            ));
        }
        Some(PbToolkit::CustomToolkitSettings(s)) => Toolkit::Custom {
            command_line: s.command_line,
        },
        Some(PbToolkit::CustomMpiSettings(s)) => Toolkit::CustomMpi {
            command_line: s.command_line,
            process_count: count("job.custom_mpi_settings.process_count", s.process_count)?,
        },
        Some(PbToolkit::PyTorchSettings(s)) => Toolkit::PyTorch {
            script: script(
                "job.py_torch_settings",
                s.python_script_file_path,
                s.python_interpreter_path,
                s.command_line_args,
                s.process_count,
            )?,
            communication_backend: s.communication_backend,
        },
        Some(PbToolkit::ChainerSettings(s)) => Toolkit::Chainer {
            script: script(
                "job.chainer_settings",
                s.python_script_file_path,
                s.python_interpreter_path,
                s.command_line_args,
                s.process_count,
            )?,
        },
        Some(PbToolkit::HorovodSettings(s)) => Toolkit::Horovod {
            script: script(
                "job.horovod_settings",
                s.python_script_file_path,
                s.python_interpreter_path,
                s.command_line_args,
                s.process_count,
            )?,
        },
        Some(PbToolkit::Caffe2Settings(s)) => Toolkit::Caffe2 {
            script: script(
                "job.caffe2_settings",
                s.python_script_file_path,
                s.python_interpreter_path,
                s.command_line_args,
                0,
            )?,
        },
        Some(PbToolkit::CaffeSettings(s)) => Toolkit::Caffe {
            config_file_path: s.config_file_path,
            script: script(
                "job.caffe_settings",
                s.python_script_file_path,
                s.python_interpreter_path,
                s.command_line_args,
                s.process_count,
            )?,
        },
        Some(PbToolkit::CntkSettings(s)) => Toolkit::Cntk {
            language_type: s.language_type,
            config_file_path: s.config_file_path,
            script: script(
                "job.cntk_settings",
                s.python_script_file_path,
                s.python_interpreter_path,
                s.command_line_args,
                s.process_count,
            )?,
        },
        Some(PbToolkit::TensorFlowSettings(s)) => Toolkit::TensorFlow {
            script: script(
                "job.tensor_flow_settings",
                s.python_script_file_path,
                s.python_interpreter_path,
                String::new(),
                0,
            )?,
            master_command_line_args: s.master_command_line_args,
            worker_command_line_args: s.worker_command_line_args,
            parameter_server_command_line_args: s.parameter_server_command_line_args,
            worker_count: count("job.tensor_flow_settings.worker_count", s.worker_count)?,
            parameter_server_count: count(
                "job.tensor_flow_settings.parameter_server_count",
                s.parameter_server_count,
            )?,
        },
    })
}

fn toolkit_to(t: &Toolkit) -> PbToolkit {
    let pc = |s: &PythonScript| s.process_count as i32;
    match t {
        Toolkit::Custom { command_line } => {
            PbToolkit::CustomToolkitSettings(pb::CustomToolkitSettings {
                command_line: command_line.clone(),
            })
        }
        Toolkit::CustomMpi {
            command_line,
            process_count,
        } => PbToolkit::CustomMpiSettings(pb::CustomMpiSettings {
            command_line: command_line.clone(),
            process_count: *process_count as i32,
        }),
        Toolkit::PyTorch {
            script: s,
            communication_backend,
        } => PbToolkit::PyTorchSettings(pb::PyTorchSettings {
            python_script_file_path: s.python_script_file_path.clone(),
            python_interpreter_path: s.python_interpreter_path.clone(),
            command_line_args: s.command_line_args.clone(),
            process_count: pc(s),
            communication_backend: communication_backend.clone(),
        }),
        Toolkit::Chainer { script: s } => PbToolkit::ChainerSettings(pb::ChainerSettings {
            python_script_file_path: s.python_script_file_path.clone(),
            python_interpreter_path: s.python_interpreter_path.clone(),
            command_line_args: s.command_line_args.clone(),
            process_count: pc(s),
        }),
        Toolkit::Horovod { script: s } => PbToolkit::HorovodSettings(pb::HorovodSettings {
            python_script_file_path: s.python_script_file_path.clone(),
            python_interpreter_path: s.python_interpreter_path.clone(),
            command_line_args: s.command_line_args.clone(),
            process_count: pc(s),
        }),
        Toolkit::Caffe2 { script: s } => PbToolkit::Caffe2Settings(pb::Caffe2Settings {
            python_script_file_path: s.python_script_file_path.clone(),
            python_interpreter_path: s.python_interpreter_path.clone(),
            command_line_args: s.command_line_args.clone(),
        }),
        Toolkit::Caffe {
            config_file_path,
            script: s,
        } => PbToolkit::CaffeSettings(pb::CaffeSettings {
            config_file_path: config_file_path.clone(),
            python_script_file_path: s.python_script_file_path.clone(),
            python_interpreter_path: s.python_interpreter_path.clone(),
            command_line_args: s.command_line_args.clone(),
            process_count: pc(s),
        }),
        Toolkit::Cntk {
            language_type,
            config_file_path,
            script: s,
        } => PbToolkit::CntkSettings(pb::CntkSettings {
            language_type: language_type.clone(),
            config_file_path: config_file_path.clone(),
            python_script_file_path: s.python_script_file_path.clone(),
            python_interpreter_path: s.python_interpreter_path.clone(),
            command_line_args: s.command_line_args.clone(),
            process_count: pc(s),
        }),
        Toolkit::TensorFlow {
            script: s,
            master_command_line_args,
            worker_command_line_args,
            parameter_server_command_line_args,
            worker_count,
            parameter_server_count,
        } => PbToolkit::TensorFlowSettings(pb::TensorFlowSettings {
            python_script_file_path: s.python_script_file_path.clone(),
            python_interpreter_path: s.python_interpreter_path.clone(),
            master_command_line_args: master_command_line_args.clone(),
            worker_command_line_args: worker_command_line_args.clone(),
            parameter_server_command_line_args: parameter_server_command_line_args.clone(),
            worker_count: *worker_count as i32,
            parameter_server_count: *parameter_server_count as i32,
        }),
    }
}

/// A job create request: a new queued job with a fresh id, created `now`.
pub fn job_from(j: pb::Job, now: Millis) -> Result<Job, Invalid> {
    let cluster = j.cluster.unwrap_or_default();
    let cluster = ClusterKey {
        workspace: if cluster.workspace.is_empty() {
            j.workspace.clone()
        } else {
            cluster.workspace
        },
        name: cluster.name,
    };
    let max_wall_clock_time_ms = match j.constraints.and_then(|c| c.max_wall_clock_time) {
        None => DEFAULT_MAX_WALL_CLOCK_MS,
        Some(d) => from_duration("job.constraints.max_wall_clock_time", &d)?,
    };
    let spec = JobSpec {
        cluster,
        scheduling_priority: priority_from("job.scheduling_priority", j.scheduling_priority)?,
        node_count: count("job.node_count", j.node_count)?,
        toolkit: toolkit_from(j.toolkit)?,
        mount_volumes: j
            .mount_volumes
            .map(|m| mounts_from("job.mount_volumes", m))
            .transpose()?
            .filter(|m| !m.is_empty()),
        container_settings: set(j.container_settings)
            .map(|c| container_from("job.container_settings", c))
            .transpose()?,
        job_preparation_command_line: set(j.job_preparation).map(|p| p.command_line),
        std_out_err_path_prefix: j.std_out_err_path_prefix,
        input_directories: j
            .input_directories
            .into_iter()
            .map(|d| InputDirectory {
                id: d.id,
                path: d.path,
            })
            .collect(),
        output_directories: j
            .output_directories
            .into_iter()
            .map(|d| OutputDirectory {
                id: d.id,
                path_prefix: d.path_prefix,
                path_suffix: d.path_suffix,
            })
            .collect(),
        environment_variables: env_from(j.environment_variables),
        secrets: secrets_from("job.secrets", j.secrets)?,
        max_wall_clock_time_ms,
        gpus_per_node: j.gpus_per_node,
    };
    Ok(Job {
        key: JobKey {
            workspace: j.workspace,
            experiment: j.experiment,
            name: j.name,
        },
        id: uuid::Uuid::new_v4().to_string(),
        spec,
        creation_time: now,
        execution_state: ExecutionState::Queued,
        execution_state_transition_time: now,
        start_time: None,
        end_time: None,
        exit_code: None,
        errors: Vec::new(),
        node_id: None,
        attempt_started: false,
        requeue_on_exit: false,
        gpu_uuids: Vec::new(),
        metrics: None,
        gang: None,
        attempts: Vec::new(),
    })
}

/// A job for an API read (secret values blanked).
pub fn job_to(j: &Job) -> pb::Job {
    let s = &j.spec;
    let mode = Secrets::Redact;
    pb::Job {
        workspace: j.key.workspace.clone(),
        experiment: j.key.experiment.clone(),
        name: j.key.name.clone(),
        scheduling_priority: priority_to(s.scheduling_priority) as i32,
        cluster: Some(pb::ClusterRef {
            workspace: s.cluster.workspace.clone(),
            name: s.cluster.name.clone(),
        }),
        mount_volumes: s.mount_volumes.as_ref().map(|m| mounts_to(m, mode)),
        node_count: s.node_count as i32,
        container_settings: s.container_settings.as_ref().map(|c| container_to(c, mode)),
        toolkit: Some(toolkit_to(&s.toolkit)),
        job_preparation: s
            .job_preparation_command_line
            .as_ref()
            .map(|c| pb::JobPreparation {
                command_line: c.clone(),
            }),
        std_out_err_path_prefix: s.std_out_err_path_prefix.clone(),
        input_directories: s
            .input_directories
            .iter()
            .map(|d| pb::InputDirectory {
                id: d.id.clone(),
                path: d.path.clone(),
            })
            .collect(),
        output_directories: s
            .output_directories
            .iter()
            .map(|d| pb::OutputDirectory {
                id: d.id.clone(),
                path_prefix: d.path_prefix.clone(),
                path_suffix: d.path_suffix.clone(),
            })
            .collect(),
        environment_variables: env_to(&s.environment_variables),
        secrets: secrets_to(&s.secrets, mode),
        constraints: Some(pb::JobBasePropertiesConstraints {
            max_wall_clock_time: Some(duration(s.max_wall_clock_time_ms)),
        }),
        id: j.id.clone(),
        tool_type: tool_type_to(s.toolkit.tool_type()) as i32,
        job_output_directory_path_segment: j.output_path_segment(),
        creation_time: Some(ts(j.creation_time)),
        provisioning_state: pb::ProvisioningState::Succeeded as i32,
        provisioning_state_transition_time: Some(ts(j.creation_time)),
        execution_state: execution_state_to(j.execution_state) as i32,
        execution_state_transition_time: Some(ts(j.execution_state_transition_time)),
        execution_info: Some(pb::JobExecutionInfo {
            start_time: ts_opt(j.start_time),
            end_time: ts_opt(j.end_time),
            exit_code: j.exit_code,
            errors: errors_to(&j.errors),
        }),
        node_ids: j.node_ids(),
        gpus_per_node: s.gpus_per_node,
        gpu_uuids: j.gpu_uuids.clone(),
        metrics: j.metrics.map(|m| pb::JobMetricsSummary {
            time: Some(ts(m.time)),
            samples: m.samples,
            gpu_utilization_mean: f64::from(m.gpu_utilization_mean_centi) / 100.0,
            gpu_utilization_max: f64::from(m.gpu_utilization_max_centi) / 100.0,
            gpu_memory_peak_bytes: m.gpu_memory_peak_bytes,
            cpu_seconds: m.cpu_millis as f64 / 1000.0,
            memory_peak_bytes: m.memory_peak_bytes,
        }),
        // Not the job's own: `job_read_to` adds it from the queue.
        queue_info: None,
        attempts: j.attempts.iter().map(attempt_to).collect(),
    }
}

fn attempt_to(a: &crate::domain::Attempt) -> pb::JobAttempt {
    use crate::domain::AttemptOutcome;
    pb::JobAttempt {
        number: a.number,
        node_ids: a.node_ids.clone(),
        assigned_time: Some(ts(a.assigned_time)),
        start_time: ts_opt(a.start_time),
        end_time: ts_opt(a.end_time),
        exit_code: a.exit_code,
        outcome: match a.outcome {
            None => "running",
            Some(AttemptOutcome::Succeeded) => "succeeded",
            Some(AttemptOutcome::Failed) => "failed",
            Some(AttemptOutcome::Requeued) => "requeued",
        }
        .to_owned(),
        requeue_reason: a.requeue_reason.clone(),
        errors: errors_to(&a.errors),
    }
}

/// A job for an API read with where it stands in its cluster's queue: set
/// only while it is queued.
pub fn job_read_to(j: &Job, queue: Option<&QueueInfo>) -> pb::Job {
    let mut out = job_to(j);
    out.queue_info = queue
        .filter(|_| j.execution_state == ExecutionState::Queued)
        .map(|q| pb::JobQueueInfo {
            position: q.position,
            reason: q.reason.clone(),
        });
    out
}

/// The job key of a request, checked.
pub fn job_key_from(k: Option<pb::JobKey>) -> Result<JobKey, Invalid> {
    let k = k.unwrap_or_default();
    validate::name("job.workspace", &k.workspace)?;
    validate::name("job.experiment", &k.experiment)?;
    validate::name("job.name", &k.name)?;
    Ok(JobKey {
        workspace: k.workspace,
        experiment: k.experiment,
        name: k.name,
    })
}

/// An output file entry for ListOutputFiles.
pub fn file_to(name: &str, len: u64, modified: Option<Millis>) -> pb::File {
    pb::File {
        name: name.to_string(),
        file_type: pb::FileType::File as i32,
        download_url: String::new(),
        last_modified: ts_opt(modified),
        content_length: len,
    }
}
