//! The command line, shaped like `az batchai` (clap derive). Parsing has no
//! side effects; the command modules read these structs.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Where the CLI looks for the coordinator when neither `--coordinator` nor
/// `BAI_COORDINATOR` is given.
pub const DEFAULT_COORDINATOR: &str = "http://127.0.0.1:7150";

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the coordinator refused the request (the message names the field), or an I/O error
  2  usage error: bad flags, a bad config file, or a refused confirmation
  3  the coordinator is unreachable
  `bai job wait` and `bai demo` exit with the job's own exit code
  (1 if the job failed without one).

Environment:
  BAI_COORDINATOR  coordinator address (default http://127.0.0.1:7150; host:port works too)
  BAI_WORKSPACE    default for -w/--workspace
  BAI_EXPERIMENT   default for -e/--experiment
  AZURE_BATCHAI_STORAGE_ACCOUNT, AZURE_BATCHAI_STORAGE_KEY
                   defaults for --storage-account-name / --storage-account-key
  BAI_ADMIN_PASSWORD  the admin password of `bai cluster create` (instead of -p)";

#[derive(Parser, Debug)]
#[command(
    name = "bai",
    version,
    about = "bai: a self-hosted Azure Batch AI — workspaces, experiments, clusters and jobs",
    after_help = EXIT_CODES,
    propagate_version = true
)]
pub struct Cli {
    /// Coordinator address: http://host:port or host:port.
    #[arg(long, global = true, env = "BAI_COORDINATOR", default_value = DEFAULT_COORDINATOR)]
    pub coordinator: String,

    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = OutputFormat::Json)]
    pub output: OutputFormat,

    /// Log what the CLI does (connections, calls, retries) to stderr.
    #[arg(long, global = true)]
    pub verbose: bool,

    /// JMESPath query applied to the JSON answer before it is printed in the
    /// chosen output format (az's --query), e.g.
    /// "nodeSetup.mountVolumes.azureFileShares[0].{storageAccountName:accountName}".
    /// Commands that write raw bytes (file stream, node exec, demo) refuse it.
    #[arg(long, global = true, value_name = "JMESPATH")]
    pub query: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// Batch AI's JSON shape (camelCase, as az printed it).
    Json,
    /// A compact table of the key fields.
    Table,
    /// The table's fields, tab-separated, without a header.
    Tsv,
    /// Nothing.
    None,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Manage workspaces.
    #[command(subcommand)]
    Workspace(WorkspaceCmd),
    /// Manage experiments.
    #[command(subcommand)]
    Experiment(ExperimentCmd),
    /// Manage clusters.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Manage jobs.
    #[command(subcommand)]
    Job(JobCmd),
    /// Start a local coordinator with local nodes, run a job, stream its output.
    Demo(DemoArgs),
}

// ---------------------------------------------------------------- shared

#[derive(Args, Debug, Clone)]
pub struct WorkspaceArg {
    /// Workspace name.
    #[arg(short = 'w', long = "workspace", env = "BAI_WORKSPACE")]
    pub workspace: String,
}

#[derive(Args, Debug, Clone)]
pub struct ExperimentArg {
    #[command(flatten)]
    pub workspace: WorkspaceArg,
    /// Experiment name.
    #[arg(short = 'e', long = "experiment", env = "BAI_EXPERIMENT")]
    pub experiment: String,
}

#[derive(Args, Debug, Clone)]
pub struct Confirm {
    /// Do not ask for confirmation.
    #[arg(short = 'y', long = "yes")]
    pub yes: bool,
}

// ---------------------------------------------------------------- workspace

#[derive(Subcommand, Debug)]
pub enum WorkspaceCmd {
    /// Create a workspace.
    Create {
        /// Workspace name.
        #[arg(short = 'n', long = "name")]
        name: String,
        /// Location.
        #[arg(short = 'l', long = "location", default_value = "local")]
        location: String,
        /// Tags: key=value ...
        #[arg(long = "tags", num_args = 1.., value_parser = parse_key_value)]
        tags: Vec<(String, String)>,
    },
    /// Show a workspace.
    Show(WorkspaceName),
    /// List workspaces.
    List,
    /// Delete a workspace and everything in it (running jobs are terminated).
    Delete {
        #[command(flatten)]
        name: WorkspaceName,
        #[command(flatten)]
        confirm: Confirm,
    },
}

#[derive(Args, Debug, Clone)]
pub struct WorkspaceName {
    /// Workspace name.
    #[arg(
        short = 'n',
        long = "name",
        short_alias = 'w',
        alias = "workspace",
        env = "BAI_WORKSPACE"
    )]
    pub name: String,
}

// ---------------------------------------------------------------- experiment

#[derive(Subcommand, Debug)]
pub enum ExperimentCmd {
    /// Create an experiment.
    Create(ExperimentName),
    /// Show an experiment.
    Show(ExperimentName),
    /// List the experiments of a workspace.
    List(WorkspaceArg),
    /// Delete an experiment and its jobs (running jobs are terminated).
    Delete {
        #[command(flatten)]
        name: ExperimentName,
        #[command(flatten)]
        confirm: Confirm,
    },
}

#[derive(Args, Debug, Clone)]
pub struct ExperimentName {
    #[command(flatten)]
    pub workspace: WorkspaceArg,
    /// Experiment name.
    #[arg(short = 'n', long = "name")]
    pub name: String,
}

// ---------------------------------------------------------------- cluster

#[derive(Subcommand, Debug)]
pub enum ClusterCmd {
    /// Create a cluster.
    Create(Box<ClusterCreateArgs>),
    /// Show a cluster.
    Show(ClusterName),
    /// List the clusters of a workspace.
    List(WorkspaceArg),
    /// Delete a cluster.
    Delete {
        #[command(flatten)]
        name: ClusterName,
        #[command(flatten)]
        confirm: Confirm,
    },
    /// Resize a cluster to a fixed node count (manual scale).
    Resize {
        #[command(flatten)]
        name: ClusterName,
        /// Target node count.
        #[arg(short = 't', long = "target", value_parser = clap::value_parser!(i32).range(0..))]
        target: i32,
    },
    /// Let a cluster scale between --min and --max nodes with its queue:
    /// nodes are added for queued jobs and idle ones removed after a grace
    /// period (the coordinator's --autoscale-idle-grace-secs).
    AutoScale {
        #[command(flatten)]
        name: ClusterName,
        /// Minimum node count.
        #[arg(long = "min", value_parser = clap::value_parser!(i32).range(0..))]
        min: i32,
        /// Maximum node count.
        #[arg(long = "max", value_parser = clap::value_parser!(i32).range(0..))]
        max: i32,
    },
    /// The cluster's record of size changes and why, oldest first: the
    /// autoscaler's decisions, resizes, nodes joining, leaving, removed,
    /// lost or preempted.
    Events(ClusterName),
    /// Cluster nodes.
    #[command(subcommand)]
    Node(ClusterNodeCmd),
    /// The setup task's output files of the cluster's nodes.
    #[command(subcommand)]
    File(ClusterFileCmd),
}

#[derive(Subcommand, Debug)]
pub enum ClusterNodeCmd {
    /// List the nodes of a cluster: nodeId, ipAddress and port (for
    /// `ssh <admin>@<ip> -p <port>`), state, preparation step, errors, drivers.
    List {
        #[command(flatten)]
        workspace: WorkspaceArg,
        /// Cluster name.
        #[arg(short = 'c', long = "cluster", short_alias = 'n', alias = "name")]
        cluster: String,
    },
    /// Run a command on a node, or forward ports to it, with the system `ssh`
    /// as the cluster's admin user (as `az batchai cluster node exec`).
    Exec {
        #[command(flatten)]
        cluster: ClusterArg,
        /// Node id (default: the cluster's first node).
        #[arg(short = 'n', long = "node-id", alias = "node")]
        node: Option<String>,
        #[command(flatten)]
        ssh: SshArgs,
    },
    /// Live figures of the cluster's nodes (CPU, memory, each GPU, each job),
    /// one row per node sample as the agents send them.
    Top {
        #[command(flatten)]
        cluster: ClusterArg,
        /// Only this node's.
        #[arg(short = 'n', long = "node-id", alias = "node")]
        node: Option<String>,
        /// Stop after this many samples.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Preempt a node of a lowpriority cluster, as its cloud would: the node
    /// leaves, its jobs are terminated and requeued, and a provider that can
    /// create nodes (local mode) replaces it. Refused for a dedicated
    /// cluster's node.
    Preempt {
        #[command(flatten)]
        cluster: ClusterArg,
        /// Node id.
        #[arg(short = 'n', long = "node-id", alias = "node")]
        node: String,
    },
    /// A node's GPUs: their health history, and returning a faulted one to
    /// service.
    #[command(subcommand)]
    Gpu(NodeGpuCmd),
}

#[derive(Subcommand, Debug)]
pub enum NodeGpuCmd {
    /// Return a faulted GPU to service (after a reset or a repair): jobs may
    /// be given it again. Recorded in its history.
    Clear {
        #[command(flatten)]
        cluster: ClusterArg,
        /// Node id.
        #[arg(short = 'n', long = "node-id", alias = "node")]
        node: String,
        /// The GPU's index or UUID.
        #[arg(short = 'g', long = "gpu")]
        gpu: String,
    },
    /// The GPU health history (XIDs, ECC errors, recoveries, clears) of the
    /// cluster's nodes, oldest first.
    Events {
        #[command(flatten)]
        cluster: ClusterArg,
        /// Only this node's.
        #[arg(short = 'n', long = "node-id", alias = "node")]
        node: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ClusterFileCmd {
    /// List the setup task's output files (stdout-<node>.txt, stderr-<node>.txt,
    /// execution-<node>.log) of every node, or of one.
    List {
        #[command(flatten)]
        cluster: ClusterArg,
        /// Only this node's files.
        #[arg(short = 'n', long = "node-id", alias = "node")]
        node: Option<String>,
    },
    /// Stream one node's setup output file to stdout (raw bytes), following
    /// it until the node's setup task has ended.
    Stream {
        #[command(flatten)]
        cluster: ClusterArg,
        /// Node id.
        #[arg(short = 'n', long = "node-id", alias = "node")]
        node: String,
        /// File name: stdout.txt, stderr.txt, execution.log (or a listed name).
        #[arg(short = 'f', long = "file-name", default_value = "stdout.txt")]
        file_name: String,
        /// Print what there is now and stop, instead of following the file.
        #[arg(long = "no-follow")]
        no_follow: bool,
    },
}

/// A workspace and a cluster given with -c (for commands whose -n is a node).
#[derive(Args, Debug, Clone)]
pub struct ClusterArg {
    #[command(flatten)]
    pub workspace: WorkspaceArg,
    /// Cluster name.
    #[arg(short = 'c', long = "cluster")]
    pub cluster: String,
}

#[derive(Args, Debug, Clone)]
pub struct ClusterName {
    #[command(flatten)]
    pub workspace: WorkspaceArg,
    /// Cluster name.
    #[arg(short = 'n', long = "name")]
    pub name: String,
}

#[derive(Args, Debug, Clone, Default)]
pub struct ClusterCreateArgs {
    /// Workspace name.
    #[arg(short = 'w', long = "workspace", env = "BAI_WORKSPACE")]
    pub workspace: String,
    /// Cluster name.
    #[arg(short = 'n', long = "name")]
    pub name: String,
    /// Batch AI ClusterCreateParameters JSON; flags override it.
    #[arg(short = 'f', long = "config-file")]
    pub config_file: Option<PathBuf>,
    /// VM size (default "local").
    #[arg(short = 's', long = "vm-size")]
    pub vm_size: Option<String>,
    /// VM priority.
    #[arg(long = "vm-priority", value_parser = ["dedicated", "lowpriority"])]
    pub vm_priority: Option<String>,
    /// Target node count (manual scale), or the initial count with --min/--max.
    #[arg(short = 't', long = "target", value_parser = clap::value_parser!(i32).range(0..))]
    pub target: Option<i32>,
    /// Minimum node count (with --max; autoscale, refused until it lands).
    #[arg(long = "min", requires = "max", value_parser = clap::value_parser!(i32).range(0..))]
    pub min: Option<i32>,
    /// Maximum node count (with --min).
    #[arg(long = "max", requires = "min", value_parser = clap::value_parser!(i32).range(0..))]
    pub max: Option<i32>,
    /// OS image: UbuntuLTS, UbuntuDSVM or publisher:offer:sku[:version].
    #[arg(short = 'i', long = "image")]
    pub image: Option<String>,
    /// Custom image ARM id (needs -i for the base image).
    #[arg(long = "custom-image", requires = "image")]
    pub custom_image: Option<String>,
    /// Admin user created on every node (default: the current user).
    #[arg(short = 'u', long = "user-name")]
    pub user_name: Option<String>,
    /// Admin SSH public key, or a path to a .pub file (default:
    /// ~/.ssh/id_rsa.pub if it exists and no password is given).
    #[arg(short = 'k', long = "ssh-key")]
    pub ssh_key: Option<String>,
    /// Admin password. Visible to other users on the command line: prefer
    /// --password-stdin or the BAI_ADMIN_PASSWORD environment variable.
    #[arg(short = 'p', long = "password", conflicts_with = "password_stdin")]
    pub password: Option<Secret>,
    /// Read the admin password from the first line of stdin.
    #[arg(long = "password-stdin")]
    pub password_stdin: bool,
    /// Use ~/.ssh/id_rsa.pub, first creating ~/.ssh/id_rsa and id_rsa.pub with
    /// ssh-keygen if they do not exist.
    #[arg(long = "generate-ssh-keys", conflicts_with = "ssh_key")]
    pub generate_ssh_keys: bool,
    /// Setup task command line, run as root on every node before it takes jobs.
    #[arg(long = "setup-task", requires = "setup_task_output")]
    pub setup_task: Option<String>,
    /// Where the setup task's output goes (stdOutErrPathPrefix); required with --setup-task.
    #[arg(long = "setup-task-output", requires = "setup_task")]
    pub setup_task_output: Option<String>,
    /// Subnet ARM id.
    #[arg(long = "subnet")]
    pub subnet: Option<String>,
    #[command(flatten)]
    pub storage: StorageArgs,
}

// ---------------------------------------------------------------- job

#[derive(Subcommand, Debug)]
pub enum JobCmd {
    /// Create (submit) a job.
    Create(Box<JobCreateArgs>),
    /// Show a job.
    Show(JobName),
    /// List the jobs of an experiment.
    List(ExperimentArg),
    /// Delete a job and its output (a running job is terminated first).
    Delete {
        #[command(flatten)]
        name: JobName,
        #[command(flatten)]
        confirm: Confirm,
    },
    /// Terminate a job.
    Terminate {
        #[command(flatten)]
        name: JobName,
        #[command(flatten)]
        confirm: Confirm,
    },
    /// Wait for a job to end, logging state changes; exit with its exit code.
    Wait {
        #[command(flatten)]
        name: JobName,
        /// Accepted for az compatibility; bai follows a stream instead of polling.
        #[arg(long = "interval", hide = true)]
        interval: Option<u64>,
    },
    /// What a job uses: its summary (GPU utilization, peak GPU memory, CPU
    /// time, peak memory), or with --follow its node's live samples as they
    /// arrive, until it ends.
    Metrics {
        #[command(flatten)]
        name: JobName,
        /// Follow the live samples until the job ends.
        #[arg(long)]
        follow: bool,
        /// Stop after this many samples.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Job output files.
    #[command(subcommand)]
    File(JobFileCmd),
    /// The nodes a job runs or ran on.
    #[command(subcommand)]
    Node(JobNodeCmd),
}

#[derive(Subcommand, Debug)]
pub enum JobNodeCmd {
    /// List the job's nodes (as `bai cluster node list` shows them).
    List {
        #[command(flatten)]
        job: JobRef,
    },
    /// Run a command on one of the job's nodes, or forward ports to it, with
    /// the system `ssh` as the cluster's admin user.
    Exec {
        #[command(flatten)]
        job: JobRef,
        /// Node id (default: the job's first node).
        #[arg(short = 'n', long = "node-id", alias = "node")]
        node: Option<String>,
        #[command(flatten)]
        ssh: SshArgs,
    },
}

#[derive(Args, Debug, Clone)]
pub struct JobName {
    #[command(flatten)]
    pub experiment: ExperimentArg,
    /// Job name.
    #[arg(short = 'n', long = "name")]
    pub name: String,
}

#[derive(Args, Debug, Clone, Default)]
pub struct JobCreateArgs {
    /// Workspace name.
    #[arg(short = 'w', long = "workspace", env = "BAI_WORKSPACE")]
    pub workspace: String,
    /// Experiment name.
    #[arg(short = 'e', long = "experiment", env = "BAI_EXPERIMENT")]
    pub experiment: String,
    /// Job name.
    #[arg(short = 'n', long = "name")]
    pub name: String,
    /// Cluster: a name, or an id like .../workspaces/<ws>/clusters/<name>.
    #[arg(short = 'c', long = "cluster")]
    pub cluster: Option<String>,
    /// Batch AI job JSON; flags override it.
    #[arg(short = 'f', long = "config-file")]
    pub config_file: Option<PathBuf>,
    /// Run this command line as a custom toolkit job (replaces the file's toolkit).
    #[arg(long = "command-line")]
    pub command_line: Option<String>,
    /// Number of nodes (default 1).
    #[arg(long = "node-count", value_parser = clap::value_parser!(i32).range(1..))]
    pub node_count: Option<i32>,
    /// GPUs per node (bai's extension): jobs share nodes by free GPUs and
    /// each sees only its own. Default 0: the job takes whole nodes, all
    /// of their GPUs, as in Batch AI.
    #[arg(long = "gpus-per-node")]
    pub gpus_per_node: Option<u32>,
    /// Environment variable NAME=VALUE (repeatable).
    #[arg(long = "env", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    /// Secret environment variable NAME, its value read from this CLI's own
    /// environment variable NAME (repeatable). Values never go on a command line.
    #[arg(long = "secret-env", value_name = "NAME")]
    pub secret_env: Vec<String>,
    /// Wall-clock limit: ISO 8601 (P7D, PT2H) or d.hh:mm:ss (7.00:00:00).
    #[arg(long = "max-wall-clock-time")]
    pub max_wall_clock_time: Option<String>,
    /// Scheduling priority.
    #[arg(long = "priority", value_parser = ["low", "normal", "high"])]
    pub priority: Option<String>,
    #[command(flatten)]
    pub storage: StorageArgs,
}

#[derive(Subcommand, Debug)]
pub enum JobFileCmd {
    /// List a job's output files.
    List {
        #[command(flatten)]
        job: JobRef,
        /// Output directory id.
        #[arg(short = 'd', long = "output-directory-id", default_value = "stdouterr")]
        output_directory_id: String,
        /// Sub-directory.
        #[arg(short = 'p', long = "path", default_value = ".")]
        path: String,
        /// An earlier attempt's stdouterr files (its number, as `bai job
        /// show` lists them); default: the current or last attempt's.
        #[arg(long = "attempt", default_value_t = 0)]
        attempt: u32,
    },
    /// Stream a job's output file to stdout as it is written (raw bytes).
    Stream {
        #[command(flatten)]
        job: JobRef,
        /// File name.
        #[arg(short = 'f', long = "file-name", default_value = "stdout.txt")]
        file_name: String,
        /// Output directory id.
        #[arg(short = 'd', long = "output-directory-id", default_value = "stdouterr")]
        output_directory_id: String,
        /// Sub-directory the file is in.
        #[arg(short = 'p', long = "path", default_value = ".")]
        path: String,
        /// An earlier attempt's stdouterr file (its number, as `bai job
        /// show` lists them); default: the current or last attempt's.
        #[arg(long = "attempt", default_value_t = 0)]
        attempt: u32,
    },
}

#[derive(Args, Debug, Clone)]
pub struct JobRef {
    #[command(flatten)]
    pub experiment: ExperimentArg,
    /// Job name.
    #[arg(short = 'j', long = "job")]
    pub job: String,
}

// ---------------------------------------------------------------- demo

#[derive(Args, Debug, Clone, Default)]
pub struct DemoArgs {
    /// Coordinator state directory (default: a new temporary directory).
    #[arg(long = "state-dir")]
    pub state_dir: Option<PathBuf>,
    /// Leave the coordinator and its nodes running afterwards.
    #[arg(long = "keep")]
    pub keep: bool,
    /// The job's command line (default: a short script about the node).
    #[arg(long = "command-line")]
    pub command_line: Option<String>,
    /// Nodes in the local cluster.
    #[arg(short = 't', long = "target", default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
    pub target: i32,
    /// Nodes the job runs on.
    #[arg(long = "node-count", default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
    pub node_count: i32,
    /// The bai-coordinator binary (default: next to this bai binary).
    #[arg(long = "coordinator-bin")]
    pub coordinator_bin: Option<PathBuf>,
    /// Simulate this many GPUs on each local node (0: the machine's own).
    #[arg(long = "fake-gpus", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=64))]
    pub fake_gpus: u32,
    /// GPUs the job takes per node (0: whole nodes).
    #[arg(long = "gpus-per-node", default_value_t = 0)]
    pub gpus_per_node: u32,
}

/// `KEY=VALUE` → (KEY, VALUE); the value may contain '='.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected NAME=VALUE, got {s:?}")),
    }
}

mod shared;
pub use shared::{Secret, SshArgs, StorageArgs};

#[cfg(test)]
mod tests;
