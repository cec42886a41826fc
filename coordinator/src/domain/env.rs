//! What the coordinator hands a node to run a job: the command line built from
//! the toolkit and the Batch AI environment variables it can compute itself.
//!
//! The coordinator sets `AZ_BATCHAI_INPUT_<id>` (the input path as given) and
//! `AZ_BATCHAI_OUTPUT_<id>` (`<path_prefix>/<job output segment>[/<path_suffix>]`).
//! These values may refer to `$AZ_BATCHAI_MOUNT_ROOT` or
//! `$AZ_BATCHAI_JOB_MOUNT_ROOT`, which only the node knows: the agent expands
//! them (`jobs::env::job_env`), creates the output directories,
//! and adds the node-local variables itself (`AZ_BATCHAI_MOUNT_ROOT`,
//! `AZ_BATCHAI_JOB_MOUNT_ROOT`, `AZ_BATCHAI_JOB_TEMP`, `AZ_BATCHAI_JOB_TEMP_DIR`,
//! `AZ_BATCHAI_SHARED_JOB_TEMP`, `AZ_BATCHAI_STDOUTERR_DIR`, `AZ_BATCHAI_NUM_GPUS`).

use super::auto_storage::{self, AutoStorageAccount};
use super::spec::{
    ContainerSettings, EnvVar, MountVolumes, PythonScript, SecretEnvVar, ToolType, Toolkit,
};
use super::types::Job;

/// Everything a node needs to run one job (the agent protocol's AssignJob).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub job_id: String,
    pub workspace: String,
    pub experiment: String,
    pub job_name: String,
    pub command_line: String,
    pub environment_variables: Vec<EnvVar>,
    pub secrets: Vec<SecretEnvVar>,
    pub system_environment_variables: Vec<EnvVar>,
    pub max_wall_clock_time_ms: u64,
    pub node_count: u32,
    pub node_rank: u32,
    pub node_ids: Vec<String>,
    /// The GPUs of the node the job may use.
    pub gpu_uuids: Vec<String>,
    pub mount_volumes: Option<MountVolumes>,
    pub container_settings: Option<ContainerSettings>,
    pub job_preparation_command_line: Option<String>,
    pub tool_type: ToolType,
    /// Slots per node of the job's OpenMPI hostfile; 0: no hostfile.
    pub mpi_slots: u32,
}

/// The assignment of `job` to `node_id` (its rank there: 0 for a
/// single-node job), its volumes with the auto-storage ones of `auto` added
/// if it asks for them.
pub fn assignment(job: &Job, node_id: &str, auto: Option<&AutoStorageAccount>) -> Assignment {
    let s = &job.spec;
    let rank = job.rank_of(node_id).unwrap_or(0);
    let gpu_uuids = match &job.gang {
        Some(g) => g
            .ranks
            .get(rank as usize)
            .map(|r| r.gpu_uuids.clone())
            .unwrap_or_default(),
        None => job.gpu_uuids.clone(),
    };
    let mut system_environment_variables = system_env(job);
    system_environment_variables.extend(rank_env(job, rank));
    let mut secrets = s.secrets.clone();
    if let Some((peers, token)) = super::mpi::rank_env(job) {
        system_environment_variables.push(peers);
        secrets.push(token);
    }
    let command_line = match super::tensorflow::rank_launch(job, rank) {
        Some((vars, line)) => {
            system_environment_variables.extend(vars);
            line
        }
        None if rank > 0 && super::mpi::serves(job) => super::mpi::SERVE_LINE.to_string(),
        None => super::mpi::mpirun_line(job).unwrap_or_else(|| command_line(&s.toolkit)),
    };
    Assignment {
        job_id: job.id.clone(),
        workspace: job.key.workspace.clone(),
        experiment: job.key.experiment.clone(),
        job_name: job.key.name.clone(),
        command_line,
        environment_variables: s.environment_variables.clone(),
        secrets,
        system_environment_variables,
        max_wall_clock_time_ms: s.max_wall_clock_time_ms,
        node_count: s.node_count,
        node_rank: rank,
        node_ids: match job.node_ids() {
            ids if ids.is_empty() => vec![node_id.to_string()],
            ids => ids,
        },
        gpu_uuids,
        mount_volumes: s
            .mount_volumes
            .as_ref()
            .map(|m| auto_storage::expand(m, auto)),
        container_settings: s.container_settings.clone(),
        job_preparation_command_line: s.job_preparation_command_line.clone(),
        tool_type: s.toolkit.tool_type(),
        mpi_slots: super::mpi::slots(job),
    }
}

/// Whether the job runs a process on `rank`: a custom toolkit's command
/// line and `mpirun` run on the master (Batch AI's rule), the other ranks
/// serving its MPI launches ([`super::mpi`]); PyTorch's and Caffe2's script
/// runs on every node (each rank told its own by `AZ_BATCHAI_TASK_INDEX`);
/// TensorFlow's tasks where [`super::tensorflow`] lays them out.
pub fn runs_on_rank(job: &Job, rank: u32) -> bool {
    match &job.spec.toolkit {
        Toolkit::PyTorch { .. } | Toolkit::Caffe2 { .. } => true,
        Toolkit::TensorFlow { .. } => super::tensorflow::runs_on_rank(job, rank),
        _ => rank == 0 || super::mpi::serves(job),
    }
}

/// The port rank 0 of a job listens on for its peers' rendezvous
/// (`MASTER_PORT`): 29500, PyTorch's default, plus a spread from the job id
/// over 1000 ports, so jobs sharing a host (local mode) rarely meet.
pub fn master_port(job: &Job) -> u16 {
    let spread = bai_common::hash::fnv1a64(job.id.as_bytes()) % 1000;
    29500 + spread as u16
}

/// The variables of one rank: `AZ_BATCHAI_TASK_INDEX` (the rank), and for
/// PyTorch the rendezvous torch.distributed reads from the environment
/// (`MASTER_ADDR`, `MASTER_PORT`, `WORLD_SIZE`, `RANK`, `LOCAL_RANK`, the
/// same as `AZ_BATCHAI_PYTORCH_INIT_METHOD`, and the backend if given).
fn rank_env(job: &Job, rank: u32) -> Vec<EnvVar> {
    let var = |name: &str, value: String| EnvVar {
        name: name.to_string(),
        value,
    };
    let mut vars = vec![var("AZ_BATCHAI_TASK_INDEX", rank.to_string())];
    if let Toolkit::PyTorch {
        communication_backend,
        ..
    } = &job.spec.toolkit
    {
        let master = job.rank_address(0);
        let port = master_port(job);
        vars.extend([
            var("MASTER_ADDR", master.clone()),
            var("MASTER_PORT", port.to_string()),
            var("WORLD_SIZE", job.spec.node_count.to_string()),
            var("RANK", rank.to_string()),
            var("LOCAL_RANK", "0".to_string()),
            var(
                "AZ_BATCHAI_PYTORCH_INIT_METHOD",
                format!("tcp://{master}:{port}"),
            ),
        ]);
        if !communication_backend.is_empty() {
            vars.push(var(
                "AZ_BATCHAI_PYTORCH_BACKEND",
                communication_backend.to_lowercase(),
            ));
        }
    }
    vars
}

/// The `AZ_BATCHAI_*` variables the coordinator computes for a job.
pub fn system_env(job: &Job) -> Vec<EnvVar> {
    let segment = job.output_path_segment();
    let mut vars = Vec::new();
    for d in &job.spec.input_directories {
        vars.push(EnvVar {
            name: format!("AZ_BATCHAI_INPUT_{}", d.id),
            value: d.path.clone(),
        });
    }
    for d in &job.spec.output_directories {
        let mut path = format!("{}/{}", d.path_prefix.trim_end_matches('/'), segment);
        let suffix = d.path_suffix.trim_matches('/');
        if !suffix.is_empty() {
            path.push('/');
            path.push_str(suffix);
        }
        vars.push(EnvVar {
            name: format!("AZ_BATCHAI_OUTPUT_{}", d.id),
            value: path,
        });
    }
    vars
}

fn join(parts: &[&str]) -> String {
    parts
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

pub(super) fn python(s: &PythonScript, args: &str) -> String {
    let interpreter = if s.python_interpreter_path.is_empty() {
        "python"
    } else {
        &s.python_interpreter_path
    };
    join(&[interpreter, &s.python_script_file_path, args])
}

/// The command line (run with `bash -c`) for a single-node job of this
/// toolkit: the custom command line as given; `python <script> <args>` for
/// the Python toolkits (TensorFlow: the master's args); `cntk configFile=…`
/// for BrainScript and `caffe train --solver=…` for a Caffe config file.
/// Paths are not quoted, so they may use environment variables.
pub fn command_line(t: &Toolkit) -> String {
    match t {
        Toolkit::Custom { command_line } | Toolkit::CustomMpi { command_line, .. } => {
            command_line.clone()
        }
        Toolkit::PyTorch { script, .. }
        | Toolkit::Chainer { script }
        | Toolkit::Caffe2 { script }
        | Toolkit::Horovod { script } => python(script, &script.command_line_args),
        Toolkit::TensorFlow {
            script,
            master_command_line_args,
            ..
        } => python(script, master_command_line_args),
        Toolkit::Cntk {
            config_file_path,
            script,
            ..
        } => {
            if script.python_script_file_path.is_empty() {
                join(&[
                    "cntk",
                    &format!("configFile={config_file_path}"),
                    &script.command_line_args,
                ])
            } else {
                python(script, &script.command_line_args)
            }
        }
        Toolkit::Caffe {
            config_file_path,
            script,
        } => {
            if config_file_path.is_empty() {
                python(script, &script.command_line_args)
            } else {
                join(&[
                    "caffe",
                    "train",
                    &format!("--solver={config_file_path}"),
                    &script.command_line_args,
                ])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures;
    use crate::domain::spec::{InputDirectory, OutputDirectory};

    #[test]
    fn input_and_output_variables() {
        let mut job = fixtures::job("w", "e", "j", "c");
        job.id = "u-1".into();
        job.spec.input_directories = vec![InputDirectory {
            id: "DATA".into(),
            path: "$AZ_BATCHAI_MOUNT_ROOT/afs/data".into(),
        }];
        job.spec.output_directories = vec![
            OutputDirectory {
                id: "MODEL".into(),
                path_prefix: "$AZ_BATCHAI_JOB_MOUNT_ROOT/afs/".into(),
                path_suffix: "models".into(),
            },
            OutputDirectory {
                id: "LOGS".into(),
                path_prefix: "/out".into(),
                path_suffix: String::new(),
            },
        ];
        let vars = system_env(&job);
        let get = |n: &str| vars.iter().find(|v| v.name == n).map(|v| v.value.clone());
        assert_eq!(
            get("AZ_BATCHAI_INPUT_DATA").as_deref(),
            Some("$AZ_BATCHAI_MOUNT_ROOT/afs/data")
        );
        assert_eq!(
            get("AZ_BATCHAI_OUTPUT_MODEL").as_deref(),
            Some("$AZ_BATCHAI_JOB_MOUNT_ROOT/afs/workspaces/w/experiments/e/jobs/j/u-1/models")
        );
        assert_eq!(
            get("AZ_BATCHAI_OUTPUT_LOGS").as_deref(),
            Some("/out/workspaces/w/experiments/e/jobs/j/u-1")
        );
        assert_eq!(vars.len(), 3);
    }

    #[test]
    fn command_lines() {
        let custom = Toolkit::Custom {
            command_line: "echo hi && exit 3".into(),
        };
        assert_eq!(command_line(&custom), "echo hi && exit 3");
        let script = PythonScript {
            python_script_file_path: "$AZ_BATCHAI_INPUT_S/train.py".into(),
            python_interpreter_path: String::new(),
            command_line_args: "--epochs 2".into(),
            process_count: 0,
        };
        let pt = Toolkit::PyTorch {
            script: script.clone(),
            communication_backend: String::new(),
        };
        assert_eq!(
            command_line(&pt),
            "python $AZ_BATCHAI_INPUT_S/train.py --epochs 2"
        );
        let mut s3 = script.clone();
        s3.python_interpreter_path = "/usr/bin/python3".into();
        s3.command_line_args = String::new();
        assert_eq!(
            command_line(&Toolkit::Chainer { script: s3 }),
            "/usr/bin/python3 $AZ_BATCHAI_INPUT_S/train.py"
        );
        let tf = Toolkit::TensorFlow {
            script: script.clone(),
            master_command_line_args: "--m".into(),
            worker_command_line_args: "--w".into(),
            parameter_server_command_line_args: String::new(),
            worker_count: 0,
            parameter_server_count: 0,
        };
        assert_eq!(command_line(&tf), "python $AZ_BATCHAI_INPUT_S/train.py --m");
        let cntk = Toolkit::Cntk {
            language_type: "BrainScript".into(),
            config_file_path: "a.cntk".into(),
            script: PythonScript {
                command_line_args: "x=1".into(),
                ..PythonScript::default()
            },
        };
        assert_eq!(command_line(&cntk), "cntk configFile=a.cntk x=1");
        let caffe = Toolkit::Caffe {
            config_file_path: "solver.prototxt".into(),
            script: PythonScript::default(),
        };
        assert_eq!(command_line(&caffe), "caffe train --solver=solver.prototxt");
        let py = "python $AZ_BATCHAI_INPUT_S/train.py --epochs 2";
        for t in [
            Toolkit::Caffe2 {
                script: script.clone(),
            },
            Toolkit::Caffe {
                config_file_path: String::new(),
                script: script.clone(),
            },
            Toolkit::Cntk {
                language_type: "Python".into(),
                config_file_path: String::new(),
                script: script.clone(),
            },
        ] {
            assert_eq!(command_line(&t), py, "{t:?}");
        }
    }

    #[test]
    fn assignment_carries_the_job() {
        let job = fixtures::job("w", "e", "j", "c");
        let a = assignment(&job, "node-1", None);
        assert_eq!(a.job_id, job.id);
        assert_eq!(a.node_ids, vec!["node-1".to_string()]);
        assert_eq!(a.node_rank, 0);
        assert_eq!(a.node_count, 1);
        assert_eq!(a.command_line, "echo hello");
        assert_eq!(a.tool_type, ToolType::Custom);
        assert_eq!(a.secrets, job.spec.secrets);
        assert_eq!(a.max_wall_clock_time_ms, 7 * 24 * 3600 * 1000);
    }

    #[test]
    fn assignment_adds_the_auto_storage_volumes() {
        let mut job = fixtures::job("w", "e", "j", "c");
        job.spec.mount_volumes = Some(MountVolumes {
            use_auto_storage: true,
            ..MountVolumes::default()
        });
        let account = AutoStorageAccount {
            account: "autoacct".into(),
            key: crate::domain::Secret::new("a2V5"),
        };
        let m = assignment(&job, "node-1", Some(&account))
            .mount_volumes
            .expect("volumes");
        assert!(!m.use_auto_storage);
        assert_eq!(m.azure_file_shares[0].relative_mount_path, "autoafs");
        assert_eq!(m.azure_blob_file_systems[0].relative_mount_path, "autobfs");
        let m = assignment(&job, "node-1", None)
            .mount_volumes
            .expect("volumes");
        assert!(m.use_auto_storage, "what is missing stays visible");
    }
}
