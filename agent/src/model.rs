//! The agent's domain types: job ids, output streams, the job an assignment
//! describes, how a job ended, and the messages the agent exchanges with the
//! coordinator in protocol-free form. Only `convert.rs` maps them to `bai_proto`.

use std::fmt;
use std::time::{Duration, SystemTime};

/// A validated job id: a Batch AI resource name ([`bai_common::names`]: 1 to
/// 64 ASCII letters, digits, `_` and `-`). It names a directory, so nothing
/// else is allowed in it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(String);

impl JobId {
    /// Checks `s` and wraps it; the error says what is wrong.
    pub fn parse(s: &str) -> Result<Self, String> {
        if bai_common::names::is_name(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "job id {s:?} must be 1 to 64 characters of letters, digits, '_' or '-'"
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How many output streams a job has.
pub const STREAMS: usize = 5;

/// One of a job's output streams: Batch AI's `stdouterr` files, the first
/// three also a setup task's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Stream {
    Stdout,
    Stderr,
    ExecutionLog,
    /// The job preparation's output (empty for a job without one).
    JobPrepStdout,
    JobPrepStderr,
}

impl Stream {
    pub const ALL: [Stream; STREAMS] = [
        Stream::Stdout,
        Stream::Stderr,
        Stream::ExecutionLog,
        Stream::JobPrepStdout,
        Stream::JobPrepStderr,
    ];
    /// The streams of a setup task (indices 0..3).
    pub const STDOUTERR: [Stream; 3] = [Stream::Stdout, Stream::Stderr, Stream::ExecutionLog];

    /// The spool file name, as in Batch AI's `stdouterr` directory.
    pub fn file_name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout.txt",
            Stream::Stderr => "stderr.txt",
            Stream::ExecutionLog => "execution.log",
            Stream::JobPrepStdout => "stdout-job_prep.txt",
            Stream::JobPrepStderr => "stderr-job_prep.txt",
        }
    }

    /// Position in `[_; STREAMS]` arrays indexed by stream (a setup task's
    /// `[_; 3]` arrays hold the first three).
    pub fn index(self) -> usize {
        match self {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
            Stream::ExecutionLog => 2,
            Stream::JobPrepStdout => 3,
            Stream::JobPrepStderr => 4,
        }
    }
}

/// A name/value pair for a process environment.
#[derive(Clone, PartialEq, Eq)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
}

impl EnvVar {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
        }
    }
}

impl fmt::Debug for EnvVar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={:?}", self.name, self.value)
    }
}

/// Everything an assignment says about the job to run on this node.
/// `Debug` prints secret names only, never their values.
#[derive(Clone)]
pub struct JobSpec {
    pub job_id: JobId,
    pub workspace: String,
    pub experiment: String,
    pub job_name: String,
    pub command_line: String,
    pub environment_variables: Vec<EnvVar>,
    pub secrets: Vec<EnvVar>,
    pub system_environment_variables: Vec<EnvVar>,
    pub max_wall_clock_time: Option<Duration>,
    /// The job's own mounts, under `$AZ_BATCHAI_JOB_MOUNT_ROOT`: made before
    /// it starts, removed once it ends. (Keys redacted in Debug.)
    pub volumes: Vec<crate::node::mounts::Volume>,
    /// The GPUs of this node the job may use (UUIDs).
    pub gpu_uuids: Vec<String>,
    /// Batch AI's jobPreparation: run with `bash -c` before the command line,
    /// with the same environment; its failure fails the job.
    pub preparation: Option<String>,
    /// The job's OpenMPI hosts, where it has them: every node of the job
    /// (by id, rank order) with this many slots each.
    pub mpi: Option<MpiHosts>,
    /// This node's rank in the job (0: the master, or a single-node job).
    pub rank: u32,
    /// How many nodes the job has (1: a single-node job).
    pub nodes: u32,
    /// The image the job runs in, if it runs in a container.
    pub container: Option<ContainerImage>,
}

/// Where a container job's image comes from.
#[derive(Clone, PartialEq, Eq)]
pub struct ContainerImage {
    pub image: String,
    /// The registry (`host[:port]` or an http(s) URL); empty: the image's own.
    pub server_url: String,
    /// As the runtime takes it (`2g`); empty: the runtime's default.
    pub shm_size: String,
    /// The registry's user and password, if it needs them (the password
    /// goes to the runtime's stdin only).
    pub credentials: Option<(String, String)>,
}

impl fmt::Debug for ContainerImage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContainerImage")
            .field("image", &self.image)
            .field("server_url", &self.server_url)
            .field("shm_size", &self.shm_size)
            .field(
                "credentials",
                &self
                    .credentials
                    .as_ref()
                    .map(|(user, _)| (user, "<redacted>")),
            )
            .finish()
    }
}

/// The nodes of a job's OpenMPI hostfile and the slots of each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MpiHosts {
    pub node_ids: Vec<String>,
    pub slots: u32,
}

impl MpiHosts {
    /// The hostfile: `<node id> slots=<n>` per line (`bai-mpi` reaches a
    /// node by its id).
    pub fn hostfile(&self) -> String {
        self.node_ids
            .iter()
            .map(|n| format!("{n} slots={}\n", self.slots))
            .collect()
    }
}

impl fmt::Debug for JobSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secret_names: Vec<&str> = self.secrets.iter().map(|s| s.name.as_str()).collect();
        f.debug_struct("JobSpec")
            .field("job_id", &self.job_id)
            .field("workspace", &self.workspace)
            .field("experiment", &self.experiment)
            .field("job_name", &self.job_name)
            .field("command_line", &self.command_line)
            .field("environment_variables", &self.environment_variables)
            .field("secrets", &secret_names)
            .field(
                "system_environment_variables",
                &self.system_environment_variables,
            )
            .field("max_wall_clock_time", &self.max_wall_clock_time)
            .field("volumes", &self.volumes)
            .field("gpu_uuids", &self.gpu_uuids)
            .field("preparation", &self.preparation)
            .field("mpi", &self.mpi)
            .field("rank", &self.rank)
            .field("nodes", &self.nodes)
            .field("container", &self.container)
            .finish()
    }
}

/// Why the agent could not start or finish a job (a Batch AI error).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct JobError {
    pub code: String,
    pub message: String,
}

impl JobError {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
        }
    }
}

/// How a job ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobExit {
    /// Exit code; 128+N when killed by signal N; -1 when it never ran.
    pub exit_code: i32,
    pub end_time: SystemTime,
    pub error: Option<JobError>,
    /// The coordinator asked for the job to be terminated.
    pub terminated: bool,
    /// Final length of each stream (indexed by [`Stream::index`]).
    pub lengths: [u64; STREAMS],
}

/// A job the agent holds, as listed in `Register`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldJob {
    pub job_id: JobId,
    pub start_time: Option<SystemTime>,
    pub exit: Option<JobExit>,
    pub lengths: [u64; STREAMS],
}

/// What the agent tells the coordinator about itself when it registers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    pub node_id: String,
    pub workspace: String,
    pub cluster: String,
    pub hostname: String,
    pub ip_address: String,
    pub cpu_count: u32,
    pub memory_bytes: u64,
    pub agent_version: String,
    pub jobs: Vec<HeldJob>,
    pub boot_id: String,
    pub ssh_port: u32,
    pub file_share_driver: String,
    pub blob_driver: String,
    /// `v1`, `v2` or `none`.
    pub job_cgroups: String,
    /// `devices-cgroup-v1`, `env-only`, or empty without GPUs.
    pub gpu_isolation: String,
    /// The container runtime's version line; empty: none.
    pub container_runtime: String,
    /// Where preparation stood (none before the first PrepareNode).
    pub status: Option<crate::node::NodeStatus>,
    /// The node's GPUs and where they come from.
    pub gpus: crate::gpu::Inventory,
}

/// Host metrics sent with each heartbeat.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct HostMetrics {
    pub cpu_percent: f32,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    /// The file system of the agent's state directory.
    pub disk_used_bytes: u64,
    pub disk_total_bytes: u64,
    /// Since boot, every interface but loopback.
    pub network_rx_bytes: u64,
    pub network_tx_bytes: u64,
}

/// What one heartbeat carries: the host, every GPU, every running job.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    pub host: HostMetrics,
    pub gpus: Vec<crate::gpu::health::GpuFigures>,
    pub jobs: Vec<crate::metrics::JobFigures>,
    /// Each distinct cause of a failed GPU query so far.
    pub gpu_problems: Vec<String>,
}

/// A message from the agent to the coordinator.
#[derive(Debug)]
pub enum Outbound {
    Register(Box<Registration>),
    Heartbeat {
        time: SystemTime,
        sample: Box<Sample>,
    },
    JobStarted {
        job_id: JobId,
        start_time: SystemTime,
        pid: i32,
    },
    JobExited {
        job_id: JobId,
        exit: JobExit,
        /// The job's summary at its end (filled by the session from the
        /// meter, so the stored summary has every sample, not only those
        /// up to the last heartbeat).
        metrics: Option<crate::metrics::JobFigures>,
    },
    Output {
        job_id: JobId,
        stream: Stream,
        offset: u64,
        data: Vec<u8>,
    },
    NodeStatus(crate::node::NodeStatus),
    GpuHealth(crate::gpu::health::Report),
    SetupOutput(crate::node::SetupChunk),
    /// An assignment refused before it became a job (its id is not valid):
    /// sent as `JobExited` with exit code -1 and the reason.
    Refused {
        raw_job_id: String,
        reason: String,
    },
}

/// A resume point or acknowledgement: every byte of `stream` before `offset`
/// is durable on the coordinator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    pub job_id: JobId,
    pub stream: Stream,
    pub offset: u64,
}

/// A message from the coordinator to the agent.
#[derive(Debug)]
pub enum Inbound {
    Registered {
        node_id: String,
        heartbeat_interval: Option<Duration>,
        resume: Vec<Ack>,
    },
    AssignJob(Box<JobSpec>),
    /// An assignment this agent cannot accept as given: an unsafe job id, or a
    /// field it does not implement yet (mounts, a container, ...), named in `reason`.
    BadAssignment {
        raw_job_id: String,
        reason: String,
    },
    TerminateJob {
        job_id: JobId,
        grace_period: Option<Duration>,
    },
    OutputAck(Ack),
    ReleaseJob(JobId),
    Shutdown {
        reason: String,
    },
    /// The cluster's node setup (agent.proto rule 6).
    PrepareNode(Box<crate::node::NodeSetup>),
    SetupAck {
        run: String,
        stream: Stream,
        offset: u64,
    },
    /// A message with no body or an id that is not valid; logged and skipped.
    Ignored(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_path_safe() {
        assert!(JobId::parse("0b5c-4e_9").is_ok());
        assert!(JobId::parse(&"a".repeat(64)).is_ok());
        for bad in ["", "../x", "a/b", ".", "..", "a b", "é", &"a".repeat(65)] {
            assert!(JobId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn spec_debug_hides_secret_values() {
        let spec = JobSpec {
            job_id: JobId::parse("j1").unwrap(),
            workspace: "w".into(),
            experiment: "e".into(),
            job_name: "n".into(),
            command_line: "true".into(),
            environment_variables: vec![EnvVar::new("A", "visible")],
            secrets: vec![EnvVar::new("TOKEN", "hunter2-secret")],
            system_environment_variables: vec![],
            max_wall_clock_time: None,
            volumes: Vec::new(),
            gpu_uuids: Vec::new(),
            preparation: None,
            mpi: None,
            rank: 0,
            nodes: 1,
            container: None,
        };
        let shown = format!("{spec:?}");
        assert!(shown.contains("TOKEN"));
        assert!(shown.contains("visible"));
        assert!(!shown.contains("hunter2-secret"), "{shown}");
    }
}
