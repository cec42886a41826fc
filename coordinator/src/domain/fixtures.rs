//! Test fixtures: minimal valid resources.

use super::secret::Secret;
use super::spec::*;
use super::state::{ExecutionState, NodeState};
use super::types::*;

pub fn workspace(name: &str) -> Workspace {
    Workspace {
        name: name.into(),
        location: "local".into(),
        tags: [("team".to_string(), "ml".to_string())].into(),
        creation_time: 1_000,
    }
}

pub fn experiment(ws: &str, name: &str) -> Experiment {
    Experiment {
        workspace: ws.into(),
        name: name.into(),
        creation_time: 1_000,
    }
}

pub fn cluster(ws: &str, name: &str, target: u32) -> Cluster {
    Cluster {
        workspace: ws.into(),
        name: name.into(),
        spec: ClusterSpec {
            vm_size: "STANDARD_NC6".into(),
            vm_priority: VmPriority::Dedicated,
            scale: ScaleSettings::Manual {
                target_node_count: target,
                deallocation: DeallocationOption::Requeue,
            },
            image: None,
            node_setup: None,
            user_account: Some(UserAccountSettings {
                admin_user_name: "admin".into(),
                admin_user_ssh_public_key: String::new(),
                admin_user_password: Secret::new("p4ss"),
            }),
            subnet_id: String::new(),
        },
        target_node_count: target,
        creation_time: 1_000,
        allocation_state_transition_time: 1_000,
        errors: vec![],
    }
}

pub fn job(ws: &str, exp: &str, name: &str, cluster: &str) -> Job {
    Job {
        key: JobKey {
            workspace: ws.into(),
            experiment: exp.into(),
            name: name.into(),
        },
        id: uuid::Uuid::new_v4().to_string(),
        spec: JobSpec {
            cluster: ClusterKey {
                workspace: ws.into(),
                name: cluster.into(),
            },
            scheduling_priority: JobPriority::Normal,
            node_count: 1,
            toolkit: Toolkit::Custom {
                command_line: "echo hello".into(),
            },
            mount_volumes: None,
            container_settings: None,
            job_preparation_command_line: None,
            std_out_err_path_prefix: String::new(),
            input_directories: vec![],
            output_directories: vec![],
            environment_variables: vec![EnvVar {
                name: "A".into(),
                value: "1".into(),
            }],
            secrets: vec![SecretEnvVar {
                name: "TOKEN".into(),
                value: Secret::new("s3cret"),
            }],
            max_wall_clock_time_ms: DEFAULT_MAX_WALL_CLOCK_MS,
            gpus_per_node: 0,
        },
        creation_time: 2_000,
        execution_state: ExecutionState::Queued,
        execution_state_transition_time: 2_000,
        start_time: None,
        end_time: None,
        exit_code: None,
        errors: vec![],
        node_id: None,
        attempt_started: false,
        requeue_on_exit: false,
        gpu_uuids: vec![],
        metrics: None,
        gang: None,
        attempts: Vec::new(),
    }
}

/// A PyTorch toolkit of script `train.py` (every rank runs it).
pub fn pytorch() -> Toolkit {
    Toolkit::PyTorch {
        script: PythonScript {
            python_script_file_path: "train.py".into(),
            ..PythonScript::default()
        },
        communication_backend: String::new(),
    }
}

/// A TensorFlow toolkit of script `t.py` with `workers` workers and `ps`
/// parameter servers (no arguments).
pub fn tensorflow(workers: u32, ps: u32) -> Toolkit {
    Toolkit::TensorFlow {
        script: PythonScript {
            python_script_file_path: "t.py".into(),
            ..PythonScript::default()
        },
        master_command_line_args: String::new(),
        worker_command_line_args: String::new(),
        parameter_server_command_line_args: String::new(),
        worker_count: workers,
        parameter_server_count: ps,
    }
}

pub fn node(id: &str, ws: &str, cluster: &str, state: NodeState) -> Node {
    Node {
        node_id: id.into(),
        workspace: ws.into(),
        cluster: cluster.into(),
        state,
        state_transition_time: 0,
        info: NodeInfo::default(),
        connected: true,
        last_heartbeat_time: None,
        errors: vec![],
        preparation_step: String::new(),
        running_job_ids: vec![],
        holdings: vec![],
    }
}
