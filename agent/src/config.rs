//! The agent's configuration: command-line flags (clap), the optional TOML
//! file (`/etc/bai/agent.toml`), and the environment (`BAI_COORDINATOR`,
//! systemd's `STATE_DIRECTORY`), merged with flags first, then environment,
//! then file, then defaults. Resolving is pure: the caller reads the file and
//! the environment and passes them in.

use crate::gpu::{BackendChoice, FakeSpec, GpuConfig, MAX_FAKE_GPUS, Script};
use clap::{Parser, Subcommand, ValueEnum};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the agent looks for its configuration file when `--config` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/bai/agent.toml";
/// The coordinator address used when neither flag, environment nor file gives one.
pub const DEFAULT_COORDINATOR: &str = "http://127.0.0.1:7150";
/// The state directory used when neither flag, file nor `$STATE_DIRECTORY` gives one.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/bai-agent";
/// Exit status for a configuration error (systemd's unit does not restart on it).
pub const EXIT_BAD_CONFIG: i32 = 2;

const AFTER_HELP: &str = "\
Settings come from flags, then the environment (BAI_COORDINATOR), then the config file
(default /etc/bai/agent.toml, optional), then defaults.

Exit status:
  0  stopped cleanly (SIGTERM/SIGINT, or the coordinator sent Shutdown); jobs keep running
  1  runtime error (systemd restarts the agent; it adopts its running jobs)
  2  bad configuration: invalid flags, unreadable or invalid config file, missing
     workspace/cluster, a malformed [gpu] table (systemd does not restart on this)";

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl From<LogFormat> for bai_common::telemetry::LogFormat {
    fn from(f: LogFormat) -> Self {
        match f {
            LogFormat::Text => Self::Text,
            LogFormat::Json => Self::Json,
        }
    }
}

/// `bai-agent`'s command line.
#[derive(Debug, Parser)]
#[command(name = "bai-agent", version, about = "bai node agent: registers this node with the coordinator, runs its jobs and ships their output", after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// TOML configuration file [default: /etc/bai/agent.toml if it exists]
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Coordinator URL [env: BAI_COORDINATOR] [default: http://127.0.0.1:7150]
    #[arg(long, value_name = "URL")]
    pub coordinator: Option<String>,
    /// Workspace of the cluster this node belongs to
    #[arg(long, value_name = "W")]
    pub workspace: Option<String>,
    /// Cluster this node belongs to
    #[arg(long, value_name = "C")]
    pub cluster: Option<String>,
    /// Node id (1-64 of [-A-Za-z0-9_]) [default: generated once, kept in <state-dir>/node-id]
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,
    /// State directory: node id, job records and output spool [default: $STATE_DIRECTORY or /var/lib/bai-agent]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Log format on stderr
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// The SSH port to report for this node [default: sshd's own, else 22]
    #[arg(long, value_name = "PORT")]
    pub ssh_port: Option<u16>,
    /// Blob service URL, `{account}` for the account [default: https://{account}.blob.core.windows.net]
    #[arg(long, value_name = "URL")]
    pub blob_endpoint: Option<String>,
    /// host:port that replaces the host of every Azure Files URL (a private endpoint, a test server)
    #[arg(long, value_name = "HOST:PORT")]
    pub file_endpoint: Option<String>,
    /// Where the node's GPUs come from: auto (NVML if it loads, else none), nvml, fake, none [default: auto]
    #[arg(long, value_enum, value_name = "BACKEND")]
    pub gpu_backend: Option<GpuBackendArg>,
    /// Simulate N GPUs (1-64); implies --gpu-backend fake
    #[arg(long, value_name = "N")]
    pub fake_gpus: Option<i64>,
    /// A directory every node of the cluster has at the same path (an NFS share): each job's
    /// $AZ_BATCHAI_SHARED_JOB_TEMP is <DIR>/<job id> [default: a directory in the job's own temp]
    #[arg(long, value_name = "DIR")]
    pub shared_job_temp_root: Option<PathBuf>,
}

/// `--gpu-backend`'s values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GpuBackendArg {
    Auto,
    Nvml,
    Fake,
    None,
}

impl From<GpuBackendArg> for BackendChoice {
    fn from(a: GpuBackendArg) -> Self {
        match a {
            GpuBackendArg::Auto => Self::Auto,
            GpuBackendArg::Nvml => Self::Nvml,
            GpuBackendArg::Fake => Self::Fake,
            GpuBackendArg::None => Self::None,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Internal: supervise one job (started by the agent itself).
    #[command(hide = true)]
    Shim { job_dir: PathBuf },
}

/// The TOML file's contents; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub coordinator: Option<String>,
    pub workspace: Option<String>,
    pub cluster: Option<String>,
    pub node_id: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    /// Shell that runs job command lines as `<shell> -c <command line>`.
    pub job_shell: Option<PathBuf>,
    /// `$AZ_BATCHAI_MOUNT_ROOT` [default: <state-dir>/mounts].
    pub mount_root: Option<PathBuf>,
    /// `$AZ_BATCHAI_JOB_TEMP_DIR` [default: <state-dir>/work].
    pub job_temp_root: Option<PathBuf>,
    /// A directory every node of the cluster has at the same path (an NFS
    /// share): each job's `$AZ_BATCHAI_SHARED_JOB_TEMP` is `<dir>/<job id>`,
    /// seen by all its nodes [default: `<job temp>/shared`, this node's own].
    pub shared_job_temp_root: Option<PathBuf>,
    /// Grace period between SIGTERM and SIGKILL when the coordinator gives none
    /// and for the max wall clock time [default: 10].
    pub terminate_grace_secs: Option<u64>,
    /// Seconds between samples of running jobs and their GPUs (their
    /// summaries and GPU health) between heartbeats [default: 2].
    pub job_sample_secs: Option<u64>,
    /// The SSH port reported for this node [default: sshd's, else 22].
    pub ssh_port: Option<u16>,
    /// How the node reaches and mounts storage.
    #[serde(default)]
    pub storage: StorageFile,
    /// Job cgroups (`jobs/cgroup/`).
    #[serde(default)]
    pub cgroups: crate::jobs::cgroup::CgroupConfig,
    /// The container runtime (`jobs/container.rs`).
    #[serde(default)]
    pub containers: crate::jobs::container::ContainerConfig,
    /// The node's GPUs.
    #[serde(default)]
    pub gpu: GpuFile,
}

/// The `[gpu]` table. Numbers and scripts are read loosely and checked by
/// [`resolve_gpu`], so that every error names its key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuFile {
    /// "auto", "nvml", "fake" or "none" [default: auto].
    pub backend: Option<String>,
    /// Path of `libnvidia-ml.so.1` [default: the dynamic loader's search].
    pub nvml_library: Option<PathBuf>,
    /// Simulated GPUs, 1-64 [default: 1].
    pub fake_count: Option<i64>,
    pub fake_name: Option<String>,
    pub fake_memory_mib: Option<i64>,
    /// A number, a list cycled per sample, or one such list per GPU.
    pub fake_utilization: Option<toml::Value>,
    /// As `fake_utilization`, in MiB.
    pub fake_memory_used_mib: Option<toml::Value>,
    /// Where the fake takes injected faults from [default: <state-dir>/gpu/inject].
    pub fake_inject_file: Option<PathBuf>,
}

/// The `[storage]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageFile {
    /// Blob service URL with `{account}` [default: https://{account}.blob.core.windows.net].
    pub blob_endpoint: Option<String>,
    /// `host:port` replacing the host of every Azure Files URL.
    pub file_endpoint: Option<String>,
    /// "cifs" or "rclone" [default: cifs where the kernel has it, else rclone].
    pub file_share_driver: Option<String>,
    /// "blobfuse2" or "rclone" [default: blobfuse2 where installed, else rclone].
    pub blob_driver: Option<String>,
}

/// How the node reaches and mounts storage.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StorageConfig {
    pub blob_endpoint: Option<String>,
    pub file_endpoint: Option<String>,
    pub file_share_driver: Option<String>,
    pub blob_driver: Option<String>,
}

/// What the process environment contributes (read by `main`).
#[derive(Debug, Default, Clone)]
pub struct EnvSource {
    pub bai_coordinator: Option<String>,
    pub state_directory: Option<String>,
}

/// Output shipping limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShipConfig {
    /// Largest `OutputChunk` payload.
    pub chunk_bytes: usize,
    /// Bytes of one job sent but not yet acknowledged, at most.
    pub max_unacked_bytes: u64,
}

impl Default for ShipConfig {
    fn default() -> Self {
        Self {
            chunk_bytes: 1 << 20,
            max_unacked_bytes: 16 << 20,
        }
    }
}

/// The resolved configuration `run` works with.
#[derive(Clone, Debug)]
pub struct Config {
    pub coordinator: String,
    pub workspace: String,
    pub cluster: String,
    pub node_id: Option<String>,
    pub state_dir: PathBuf,
    pub log_format: LogFormat,
    pub job_shell: PathBuf,
    pub mount_root: PathBuf,
    pub job_temp_root: PathBuf,
    /// Where the jobs' shared temp directories go (`None`: in each job's temp).
    pub shared_job_temp_root: Option<PathBuf>,
    pub default_grace: Duration,
    /// How often running jobs are sampled (see `Sampling` in session.rs).
    pub job_sample_interval: Duration,
    /// The program started as `<shim_exe> shim <job-dir>` for each job
    /// (the agent binary itself).
    pub shim_exe: PathBuf,
    pub reconnect_initial: Duration,
    pub reconnect_max: Duration,
    pub ship: ShipConfig,
    /// The SSH port to report (else detected).
    pub ssh_port: Option<u16>,
    pub storage: StorageConfig,
    pub cgroups: crate::jobs::cgroup::CgroupConfig,
    pub containers: crate::jobs::container::ContainerConfig,
    /// Where the node's GPUs come from (see [`crate::gpu::open`]).
    pub gpu: GpuConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0} is required (flag --{0} or key `{0}` in the config file)")]
    Missing(&'static str),
    #[error("invalid {field} {value:?}: {reason}")]
    Invalid {
        field: &'static str,
        value: String,
        reason: String,
    },
}

/// Reads the config file named by `--config` (which must exist), or the
/// default file if it exists. Returns the path with its text.
pub fn read_config_file(cli: &Cli) -> Result<Option<(PathBuf, String)>, ConfigError> {
    let (path, required) = match &cli.config {
        Some(p) => (p.clone(), true),
        None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok(Some((path, text))),
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ConfigError::Read { path, source }),
    }
}

impl Config {
    /// Merges flags, environment and file into a validated configuration.
    pub fn resolve(
        cli: &Cli,
        file: Option<(&Path, &str)>,
        env: &EnvSource,
        shim_exe: PathBuf,
    ) -> Result<Self, ConfigError> {
        let f = match file {
            Some((path, text)) => {
                toml::from_str::<FileConfig>(text).map_err(|e| ConfigError::Parse {
                    path: path.to_owned(),
                    message: with_line(text, &e),
                })?
            }
            None => FileConfig::default(),
        };
        let coordinator = cli
            .coordinator
            .clone()
            .or_else(|| env.bai_coordinator.clone().filter(|s| !s.is_empty()))
            .or(f.coordinator)
            .unwrap_or_else(|| DEFAULT_COORDINATOR.to_owned());
        check_url(&coordinator)?;
        let workspace = cli
            .workspace
            .clone()
            .or(f.workspace)
            .ok_or(ConfigError::Missing("workspace"))?;
        check_name("workspace", &workspace)?;
        let cluster = cli
            .cluster
            .clone()
            .or(f.cluster)
            .ok_or(ConfigError::Missing("cluster"))?;
        check_name("cluster", &cluster)?;
        let node_id = cli.node_id.clone().or(f.node_id);
        if let Some(id) = &node_id {
            check_name("node-id", id)?;
        }
        let state_dir = cli
            .state_dir
            .clone()
            .or(f.state_dir)
            .or_else(|| {
                env.state_directory
                    .as_deref()
                    .and_then(|s| s.split(':').find(|p| !p.is_empty()))
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        let state_dir = absolute("state-dir", state_dir)?;
        let mount_root = absolute(
            "mount_root",
            f.mount_root.unwrap_or_else(|| state_dir.join("mounts")),
        )?;
        let job_temp_root = absolute(
            "job_temp_root",
            f.job_temp_root.unwrap_or_else(|| state_dir.join("work")),
        )?;
        let shared_job_temp_root = cli
            .shared_job_temp_root
            .clone()
            .or(f.shared_job_temp_root)
            .map(|p| absolute("shared_job_temp_root", p))
            .transpose()?;
        let gpu = resolve_gpu(cli, f.gpu, &state_dir)?;
        if let Err(why) = f.containers.image_cache_max_bytes() {
            return Err(ConfigError::Invalid {
                field: "containers.image_cache_max",
                value: f.containers.image_cache_max.clone(),
                reason: format!("{why}, or 0 for no cap"),
            });
        }
        let job_sample_secs = f.job_sample_secs.unwrap_or(2);
        if !(1..=3600).contains(&job_sample_secs) {
            return Err(ConfigError::Invalid {
                field: "job_sample_secs",
                value: job_sample_secs.to_string(),
                reason: "must be 1-3600".into(),
            });
        }
        Ok(Self {
            coordinator,
            workspace,
            cluster,
            node_id,
            log_format: cli.log_format.or(f.log_format).unwrap_or_default(),
            job_shell: f.job_shell.unwrap_or_else(|| PathBuf::from("bash")),
            mount_root,
            job_temp_root,
            shared_job_temp_root,
            default_grace: Duration::from_secs(f.terminate_grace_secs.unwrap_or(10)),
            job_sample_interval: Duration::from_secs(job_sample_secs),
            shim_exe,
            state_dir,
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(10),
            ship: ShipConfig::default(),
            ssh_port: cli.ssh_port.or(f.ssh_port),
            storage: StorageConfig {
                blob_endpoint: cli.blob_endpoint.clone().or(f.storage.blob_endpoint),
                file_endpoint: cli.file_endpoint.clone().or(f.storage.file_endpoint),
                file_share_driver: f.storage.file_share_driver,
                blob_driver: f.storage.blob_driver,
            },
            cgroups: f.cgroups,
            containers: f.containers,
            gpu,
        })
    }

    /// A configuration with defaults for everything but the essentials, for
    /// embedding the agent (tests, local tools).
    pub fn new(
        coordinator: &str,
        workspace: &str,
        cluster: &str,
        state_dir: &Path,
        shim_exe: &Path,
    ) -> Result<Self, ConfigError> {
        let cli = Cli {
            command: None,
            config: None,
            coordinator: Some(coordinator.to_owned()),
            workspace: Some(workspace.to_owned()),
            cluster: Some(cluster.to_owned()),
            node_id: None,
            state_dir: Some(state_dir.to_owned()),
            log_format: None,
            ssh_port: None,
            blob_endpoint: None,
            file_endpoint: None,
            gpu_backend: None,
            fake_gpus: None,
            shared_job_temp_root: None,
        };
        Self::resolve(&cli, None, &EnvSource::default(), shim_exe.to_owned())
    }
}

/// The `[gpu]` table under `--gpu-backend` and `--fake-gpus`.
fn resolve_gpu(cli: &Cli, f: GpuFile, state_dir: &Path) -> Result<GpuConfig, ConfigError> {
    let invalid =
        |field: &'static str, value: &dyn std::fmt::Display, reason: &str| ConfigError::Invalid {
            field,
            value: value.to_string(),
            reason: reason.to_owned(),
        };
    let file_backend = match f.backend.as_deref() {
        None => None,
        Some(b) => Some(BackendChoice::parse(b).ok_or_else(|| {
            invalid(
                "gpu.backend",
                &b,
                &format!("expected one of {}", BackendChoice::NAMES),
            )
        })?),
    };
    let backend = match (cli.gpu_backend, cli.fake_gpus) {
        (Some(b), Some(_)) if b != GpuBackendArg::Fake => {
            return Err(invalid(
                "fake-gpus",
                &cli.fake_gpus.unwrap_or_default(),
                "--fake-gpus simulates GPUs: it needs --gpu-backend fake (or none given)",
            ));
        }
        (Some(b), _) => b.into(),
        (None, Some(_)) => BackendChoice::Fake,
        (None, None) => file_backend.unwrap_or_default(),
    };
    let defaults = FakeSpec::default();
    let (count_field, count) = match (cli.fake_gpus, f.fake_count) {
        (Some(n), _) => ("fake-gpus", n),
        (None, Some(n)) => ("gpu.fake_count", n),
        (None, None) => ("gpu.fake_count", i64::from(defaults.count)),
    };
    let count = u32::try_from(count)
        .ok()
        .filter(|n| (1..=MAX_FAKE_GPUS).contains(n))
        .ok_or_else(|| invalid(count_field, &count, &format!("must be 1-{MAX_FAKE_GPUS}")))?;
    let name = f.fake_name.unwrap_or(defaults.name);
    if name.trim().is_empty() || name.len() > 95 {
        return Err(invalid(
            "gpu.fake_name",
            &format!("{name:?}"),
            "must be 1-95 characters",
        ));
    }
    // At most 16 TiB, so bytes fit a u64 with room to spare.
    let memory_mib = match f.fake_memory_mib {
        None => defaults.memory_mib,
        Some(m) => u64::try_from(m)
            .ok()
            .filter(|m| (1..=1 << 24).contains(m))
            .ok_or_else(|| invalid("gpu.fake_memory_mib", &m, "must be 1 to 16777216 (16 TiB)"))?,
    };
    let utilization = match f.fake_utilization {
        None => defaults.utilization,
        Some(v) => script("gpu.fake_utilization", &v, count, 100)?,
    };
    let memory_used_mib = match f.fake_memory_used_mib {
        None => defaults.memory_used_mib,
        Some(v) => script("gpu.fake_memory_used_mib", &v, count, memory_mib)?,
    };
    let inject = absolute(
        "gpu.fake_inject_file",
        f.fake_inject_file
            .unwrap_or_else(|| state_dir.join("gpu").join("inject")),
    )?;
    Ok(GpuConfig {
        backend,
        nvml_library: f.nvml_library,
        fake: FakeSpec {
            count,
            name,
            memory_mib,
            utilization,
            memory_used_mib,
            inject_path: Some(inject),
        },
    })
}

/// A fake figure's script: a number, a list cycled per sample, or exactly
/// `count` such lists (one per GPU), each value at most `max`.
fn script(
    field: &'static str,
    v: &toml::Value,
    count: u32,
    max: u64,
) -> Result<Script, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        field,
        value: v.to_string(),
        reason,
    };
    let shape = || {
        invalid(
            "expected a number, a non-empty list of numbers (cycled per sample) \
             or one such list per GPU"
                .into(),
        )
    };
    let number = |x: &toml::Value| -> Result<u64, ConfigError> {
        let n = x.as_integer().ok_or_else(shape)?;
        u64::try_from(n)
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| invalid(format!("{n} is not 0-{max}")))
    };
    let list = |x: &toml::Value| -> Result<Vec<u64>, ConfigError> {
        match x.as_array() {
            Some(a) if !a.is_empty() => a.iter().map(number).collect(),
            _ => Err(shape()),
        }
    };
    let per_gpu = match v {
        toml::Value::Integer(_) => vec![vec![number(v)?]],
        toml::Value::Array(a) if a.first().is_some_and(toml::Value::is_array) => {
            if a.len() != count as usize {
                return Err(invalid(format!(
                    "{} per-GPU lists for {count} GPUs",
                    a.len()
                )));
            }
            a.iter().map(list).collect::<Result<_, _>>()?
        }
        _ => vec![list(v)?],
    };
    Ok(Script { per_gpu })
}

/// toml's message with the line it is about, so that the key is named.
fn with_line(text: &str, e: &toml::de::Error) -> String {
    let Some(before) = e.span().and_then(|span| text.get(..span.start)) else {
        return e.message().to_owned();
    };
    let begin = before.rfind('\n').map_or(0, |i| i + 1);
    let line: String = text[begin..]
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .chars()
        .take(80)
        .collect();
    let line_no = before.matches('\n').count() + 1;
    format!("{} (line {line_no}: {line})", e.message())
}

fn check_name(field: &'static str, value: &str) -> Result<(), ConfigError> {
    bai_common::names::check_name(value).map_err(|reason| ConfigError::Invalid {
        field,
        value: value.to_owned(),
        reason: reason.into(),
    })
}

fn check_url(value: &str) -> Result<(), ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        field: "coordinator",
        value: value.to_owned(),
        reason,
    };
    let uri: tonic::transport::Uri = value.parse().map_err(|e| invalid(format!("{e}")))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(invalid(
                "https is not supported yet (this build has no TLS); use http://".into(),
            ));
        }
        _ => return Err(invalid("the URL must start with http://".into())),
    }
    if uri.host().is_none() {
        return Err(invalid("the URL names no host".into()));
    }
    Ok(())
}

fn absolute(field: &'static str, p: PathBuf) -> Result<PathBuf, ConfigError> {
    if p.is_absolute() {
        Ok(p)
    } else {
        std::path::absolute(&p).map_err(|e| ConfigError::Invalid {
            field,
            value: p.display().to_string(),
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("bai-agent").chain(args.iter().copied())).unwrap()
    }

    fn resolve(args: &[&str], file: Option<&str>, env: EnvSource) -> Result<Config, ConfigError> {
        let path = Path::new("/etc/bai/agent.toml");
        Config::resolve(&cli(args), file.map(|t| (path, t)), &env, "/x".into())
    }

    #[test]
    fn flags_override_env_and_file() {
        let file = "coordinator = \"http://file:1\"\nworkspace = \"fw\"\ncluster = \"fc\"\nstate_dir = \"/srv/f\"\n";
        let env = EnvSource {
            bai_coordinator: Some("http://env:2".into()),
            state_directory: Some("/var/lib/sd".into()),
        };
        let c = resolve(
            &["--workspace", "w1", "--state-dir", "/tmp/s"],
            Some(file),
            env.clone(),
        )
        .unwrap();
        assert_eq!(c.coordinator, "http://env:2");
        assert_eq!((c.workspace.as_str(), c.cluster.as_str()), ("w1", "fc"));
        assert_eq!(c.state_dir, PathBuf::from("/tmp/s"));
        assert_eq!(c.mount_root, PathBuf::from("/tmp/s/mounts"));
        let c = resolve(&["--coordinator", "http://flag:3"], Some(file), env).unwrap();
        assert_eq!(c.coordinator, "http://flag:3");
        assert_eq!(c.state_dir, PathBuf::from("/srv/f"));
    }

    #[test]
    fn defaults_and_systemd_state_directory() {
        let env = EnvSource {
            bai_coordinator: None,
            state_directory: Some("/var/lib/bai-agent:/var/lib/other".into()),
        };
        let c = resolve(&["--workspace", "w", "--cluster", "c"], None, env).unwrap();
        assert_eq!(c.coordinator, DEFAULT_COORDINATOR);
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/bai-agent"));
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.default_grace, Duration::from_secs(10));
        assert_eq!(c.job_sample_interval, Duration::from_secs(2));
        assert_eq!(c.job_shell, PathBuf::from("bash"));
    }

    #[test]
    fn bad_configuration_is_reported() {
        let e = resolve(&["--cluster", "c"], None, EnvSource::default()).unwrap_err();
        assert!(matches!(e, ConfigError::Missing("workspace")), "{e}");
        let e = resolve(
            &["--workspace", "w", "--cluster", "c/../x"],
            None,
            EnvSource::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("cluster"), "{e}");
        let e = resolve(
            &[
                "--workspace",
                "w",
                "--cluster",
                "c",
                "--coordinator",
                "ftp://x",
            ],
            None,
            EnvSource::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("http://"), "{e}");
        let e = resolve(
            &[
                "--workspace",
                "w",
                "--cluster",
                "c",
                "--coordinator",
                "https://x:1",
            ],
            None,
            EnvSource::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("TLS"), "{e}");
        let e = resolve(
            &["--workspace", "w", "--cluster", "c"],
            Some("bogus_key = 1"),
            EnvSource::default(),
        )
        .unwrap_err();
        assert!(matches!(e, ConfigError::Parse { .. }), "{e}");
        assert!(e.to_string().contains("bogus_key"), "{e}");
        let e = resolve(
            &["--workspace", "w", "--cluster", "c", "--node-id", "a b"],
            None,
            EnvSource::default(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("node-id"), "{e}");
        let ok = resolve(
            &["--workspace", "w", "--cluster", "c"],
            Some("job_sample_secs = 5"),
            EnvSource::default(),
        )
        .unwrap();
        assert_eq!(ok.job_sample_interval, Duration::from_secs(5));
        for bad in ["job_sample_secs = 0", "job_sample_secs = 3601"] {
            let e = resolve(
                &["--workspace", "w", "--cluster", "c"],
                Some(bad),
                EnvSource::default(),
            )
            .unwrap_err();
            assert!(
                e.to_string().contains("job_sample_secs") && e.to_string().contains("1-3600"),
                "{e}"
            );
        }
        let cap = |v: &str| {
            resolve(
                &["--workspace", "w", "--cluster", "c"],
                Some(&format!("[containers]\nimage_cache_max = \"{v}\"")),
                EnvSource::default(),
            )
        };
        assert_eq!(
            cap("20g").unwrap().containers.image_cache_max_bytes(),
            Ok(20 << 30)
        );
        assert_eq!(cap("0").unwrap().containers.image_cache_max_bytes(), Ok(0));
        let e = cap("lots").unwrap_err().to_string();
        assert!(e.contains("containers.image_cache_max"), "{e}");
    }

    fn gpu(args: &[&str], file: &str) -> Result<GpuConfig, ConfigError> {
        let mut a = vec!["--workspace", "w", "--cluster", "c", "--state-dir", "/s"];
        a.extend_from_slice(args);
        resolve(&a, Some(file), EnvSource::default()).map(|c| c.gpu)
    }

    #[test]
    fn gpu_defaults_flags_and_file() {
        let g = gpu(&[], "").unwrap();
        assert_eq!(g.backend, BackendChoice::Auto);
        assert_eq!(g.fake.count, 1);
        assert_eq!(g.fake.inject_path, Some(PathBuf::from("/s/gpu/inject")));
        let g = gpu(&["--fake-gpus", "4"], "").unwrap();
        assert_eq!((g.backend, g.fake.count), (BackendChoice::Fake, 4));
        let file = "[gpu]\nbackend = \"none\"\nnvml_library = \"/opt/nv/libnvidia-ml.so.1\"\n\
                    fake_count = 2\nfake_name = \"Sim\"\nfake_memory_mib = 1024\n\
                    fake_utilization = [[10], [0, 100]]\nfake_memory_used_mib = 512\n";
        let g = gpu(&[], file).unwrap();
        assert_eq!(g.backend, BackendChoice::None);
        assert_eq!(
            g.nvml_library,
            Some(PathBuf::from("/opt/nv/libnvidia-ml.so.1"))
        );
        assert_eq!((g.fake.count, g.fake.memory_mib), (2, 1024));
        assert_eq!(g.fake.name, "Sim");
        assert_eq!(g.fake.utilization.per_gpu, [vec![10], vec![0, 100]]);
        assert_eq!(g.fake.memory_used_mib, Script::constant(512));
        // Flags win over the file; --fake-gpus sets the count and the backend.
        let g = gpu(&["--fake-gpus", "2"], file).unwrap();
        assert_eq!(g.backend, BackendChoice::Fake);
        let g = gpu(&["--gpu-backend", "nvml"], file).unwrap();
        assert_eq!(g.backend, BackendChoice::Nvml);
        let g = gpu(&[], "[gpu]\nfake_utilization = [0, 50]\n").unwrap();
        assert_eq!(g.fake.utilization.per_gpu, [vec![0, 50]]);
    }

    #[test]
    fn malformed_gpu_configuration_names_the_key() {
        let bad = |args: &[&str], file: &str, key: &str| {
            let e = gpu(args, file).unwrap_err();
            let text = e.to_string();
            assert!(text.contains(key), "{key} not named in: {text}");
            text
        };
        bad(&[], "[gpu]\nfake_count = 0\n", "gpu.fake_count");
        bad(&[], "[gpu]\nfake_count = 65\n", "gpu.fake_count");
        bad(&["--fake-gpus", "0"], "", "fake-gpus");
        bad(&["--fake-gpus", "65"], "", "fake-gpus");
        bad(
            &["--fake-gpus", "2", "--gpu-backend", "nvml"],
            "",
            "fake-gpus",
        );
        bad(&[], "[gpu]\nfake_memory_mib = 0\n", "gpu.fake_memory_mib");
        let t = bad(&[], "[gpu]\nbackend = \"cuda\"\n", "gpu.backend");
        assert!(t.contains("auto, nvml, fake, none"), "{t}");
        bad(&[], "[gpu]\nfake_cont = 2\n", "fake_cont");
        bad(
            &[],
            "[gpu]\nfake_utilization = 101\n",
            "gpu.fake_utilization",
        );
        bad(
            &[],
            "[gpu]\nfake_utilization = []\n",
            "gpu.fake_utilization",
        );
        bad(
            &[],
            "[gpu]\nfake_utilization = \"high\"\n",
            "gpu.fake_utilization",
        );
        let t = bad(
            &[],
            "[gpu]\nfake_count = 3\nfake_utilization = [[1], [2]]\n",
            "gpu.fake_utilization",
        );
        assert!(t.contains("2 per-GPU lists for 3 GPUs"), "{t}");
        bad(
            &[],
            "[gpu]\nfake_memory_mib = 100\nfake_memory_used_mib = 101\n",
            "gpu.fake_memory_used_mib",
        );
        bad(&[], "[gpu]\nfake_name = \"\"\n", "gpu.fake_name");
        bad(&[], "[gpu]\nfake_count = \"four\"\n", "fake_count");
        assert!(Cli::try_parse_from(["bai-agent", "--gpu-backend", "cuda"]).is_err());
    }

    #[test]
    fn explicit_missing_config_file_is_an_error() {
        let c = cli(&["--config", "/nonexistent/bai/agent.toml"]);
        assert!(matches!(
            read_config_file(&c),
            Err(ConfigError::Read { .. })
        ));
    }

    #[test]
    fn shim_subcommand_parses() {
        let c = cli(&["shim", "/var/lib/bai-agent/jobs/j1"]);
        assert!(
            matches!(c.command, Some(Command::Shim { ref job_dir }) if job_dir == Path::new("/var/lib/bai-agent/jobs/j1"))
        );
    }
}
