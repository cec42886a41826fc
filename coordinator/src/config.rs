//! Configuration: command-line flags over an optional TOML file
//! (`/etc/bai/coordinator.toml` by default, `deny_unknown_fields`). Building a
//! [`Config`] reads the file and nothing else; a bad configuration is a
//! [`ConfigError`], which the binary turns into exit code 2.

use clap::{Parser, ValueEnum};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::domain::Secret;
use crate::domain::auto_storage::AutoStorageAccount;

/// Default config file, read if it exists and `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/bai/coordinator.toml";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7150";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/bai";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// bai's coordinator: durable store, public gRPC API, scheduler and agent sessions.
///
/// Exit codes: 0 after a clean shutdown, 1 on a runtime failure, 2 on a bad
/// configuration.
#[derive(Debug, Clone, Default, Parser)]
#[command(name = "bai-coordinator", version)]
pub struct Args {
    /// TOML config file [default: /etc/bai/coordinator.toml if it exists].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to serve gRPC on [default: 127.0.0.1:7150]; port 0 picks one.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Address to serve Prometheus metrics on (`GET /metrics`) [default:
    /// none]; port 0 picks one (written to <state>/metrics.addr).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    /// State directory [default: $STATE_DIRECTORY or /var/lib/bai].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Start and stop bai-agent processes on this machine to match each
    /// cluster's target node count.
    #[arg(long)]
    pub local_agents: bool,
    /// The agent binary for --local-agents [default: bai-agent next to this binary].
    #[arg(long, value_name = "PATH")]
    pub agent_bin: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Seconds a terminated job gets between SIGTERM and SIGKILL [default: 10].
    #[arg(long, value_name = "SECS")]
    pub terminate_grace_secs: Option<u64>,
    /// Seconds between agent heartbeats [default: 10].
    #[arg(long, value_name = "SECS")]
    pub heartbeat_interval_secs: Option<u64>,
    /// Seconds between the autoscaler's looks at autoScale clusters [default: 5].
    #[arg(long, value_name = "SECS")]
    pub autoscale_interval_secs: Option<u64>,
    /// Seconds an autoScale cluster's node stays idle before it is removed
    /// [default: 300].
    #[arg(long, value_name = "SECS")]
    pub autoscale_idle_grace_secs: Option<u64>,
    /// Seconds a node's agent may go without a heartbeat (disconnected, or
    /// connected and silent) before the node is lost: unusable, its jobs
    /// requeued or failed as its cluster's node deallocation option says
    /// [default: 600].
    #[arg(long, value_name = "SECS")]
    pub node_lost_timeout_secs: Option<u64>,
    /// Preempt a lowpriority cluster's node whose job has run this long (the
    /// seed's 24 h rule is 86400); the job is requeued [default: off].
    #[arg(long, value_name = "SECS")]
    pub preempt_lowpriority_after_secs: Option<u64>,
    /// Local agents report this SSH port (an sshd for the machine's nodes).
    #[arg(long, value_name = "PORT")]
    pub local_agent_ssh_port: Option<u16>,
    /// Local agents reach Blob storage here (`{account}` for the account),
    /// e.g. Azurite's http://127.0.0.1:10000/{account}.
    #[arg(long, value_name = "URL")]
    pub local_agent_blob_endpoint: Option<String>,
    /// Local agents reach Azure Files shares at this host:port (a Samba server).
    #[arg(long, value_name = "HOST:PORT")]
    pub local_agent_file_endpoint: Option<String>,
    /// Local agents simulate this many GPUs each (for trying GPU jobs on a
    /// machine without one; 0: they report the machine's real GPUs).
    #[arg(long, value_name = "N")]
    pub local_agent_fake_gpus: Option<u32>,
    /// Local agents read this agent.toml (its [gpu] table scripts the fake
    /// GPUs, for instance); flags the coordinator passes them win.
    #[arg(long, value_name = "PATH")]
    pub local_agent_config: Option<PathBuf>,
}

/// The config file's keys (all optional; flags override them).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub metrics_listen: Option<String>,
    pub state_dir: Option<PathBuf>,
    pub local_agents: Option<bool>,
    pub agent_bin: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    pub terminate_grace_secs: Option<u64>,
    pub heartbeat_interval_secs: Option<u64>,
    pub autoscale_interval_secs: Option<u64>,
    pub autoscale_idle_grace_secs: Option<u64>,
    pub node_lost_timeout_secs: Option<u64>,
    pub preempt_lowpriority_after_secs: Option<u64>,
    pub local_agent_ssh_port: Option<u16>,
    pub local_agent_blob_endpoint: Option<String>,
    pub local_agent_file_endpoint: Option<String>,
    pub local_agent_fake_gpus: Option<u32>,
    pub local_agent_config: Option<PathBuf>,
    /// `[storage]`: the account behind `--use-auto-storage`, and where this
    /// machine reaches storage.
    pub storage: Option<StorageFile>,
}

/// The `[storage]` table. The key is never inline: it lives in a 0600 file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageFile {
    pub auto_storage_account: Option<String>,
    pub auto_storage_key_file: Option<PathBuf>,
    pub blob_endpoint: Option<String>,
    pub file_endpoint: Option<String>,
}

/// Default Blob endpoint template; `{account}` is replaced by the account name.
pub const DEFAULT_BLOB_ENDPOINT: &str = "https://{account}.blob.core.windows.net";

/// The storage account `--use-auto-storage` refers to, with its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoStorage {
    pub account: AutoStorageAccount,
    /// The account's Blob endpoint, `{account}` already substituted (a URL
    /// `storage::blob::Endpoint::parse` takes).
    pub blob_endpoint: String,
}

/// The resolved `[storage]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageConfig {
    /// `None`: no auto-storage account configured.
    pub auto_storage: Option<AutoStorage>,
    /// The Blob endpoint template (default [`DEFAULT_BLOB_ENDPOINT`]).
    pub blob_endpoint: String,
    /// `host:port` replacing the host of every Azure Files URL.
    pub file_endpoint: Option<String>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            auto_storage: None,
            blob_endpoint: DEFAULT_BLOB_ENDPOINT.into(),
            file_endpoint: None,
        }
    }
}

/// The coordinator's resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// Where `/metrics` is served (none: not served).
    pub metrics_listen: Option<SocketAddr>,
    pub state_dir: PathBuf,
    pub local_agents: bool,
    /// `None`: `bai-agent` next to the coordinator's executable.
    pub agent_bin: Option<PathBuf>,
    pub log_format: LogFormat,
    pub terminate_grace: Duration,
    pub heartbeat_interval: Duration,
    pub autoscale_interval: Duration,
    pub autoscale_idle_grace: Duration,
    pub node_lost_timeout: Duration,
    /// A lowpriority node whose job ran this long is preempted (`None`: never).
    pub preempt_lowpriority_after: Option<Duration>,
    /// Extra flags for local agents (`--ssh-port`, `--blob-endpoint`,
    /// `--file-endpoint`; the endpoints default to `[storage]`'s).
    pub local_agent_args: Vec<String>,
    pub storage: StorageConfig,
}

impl Config {
    /// A config for tests and embedding: loopback, port 0, the given state dir.
    pub fn for_state_dir(state_dir: &Path) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_listen: None,
            state_dir: state_dir.to_path_buf(),
            local_agents: false,
            agent_bin: None,
            log_format: LogFormat::Text,
            terminate_grace: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(10),
            autoscale_interval: Duration::from_secs(5),
            autoscale_idle_grace: Duration::from_secs(300),
            node_lost_timeout: Duration::from_secs(600),
            preempt_lowpriority_after: None,
            local_agent_args: Vec::new(),
            storage: StorageConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bad config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{field}: {rule}")]
    Invalid { field: &'static str, rule: String },
}

/// Resolves flags over the config file. `state_directory` is
/// `$STATE_DIRECTORY` (passed in, so this reads no environment).
pub fn load(args: Args, state_directory: Option<PathBuf>) -> Result<Config, ConfigError> {
    let file = match &args.config {
        Some(p) => read_file(p)?,
        None if Path::new(DEFAULT_CONFIG).exists() => read_file(Path::new(DEFAULT_CONFIG))?,
        None => FileConfig::default(),
    };
    resolve(args, file, state_directory)
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn secs(field: &'static str, v: Option<u64>, default: u64) -> Result<Duration, ConfigError> {
    match v.unwrap_or(default) {
        0 => Err(ConfigError::Invalid {
            field,
            rule: "must be at least 1".into(),
        }),
        n => Ok(Duration::from_secs(n)),
    }
}

/// Merges flags over file values over defaults.
pub fn resolve(
    args: Args,
    file: FileConfig,
    state_directory: Option<PathBuf>,
) -> Result<Config, ConfigError> {
    let listen = args
        .listen
        .or(file.listen)
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let listen: SocketAddr = listen.parse().map_err(|_| ConfigError::Invalid {
        field: "listen",
        rule: format!("{listen:?} is not an address like 127.0.0.1:7150"),
    })?;
    let state_dir = args
        .state_dir
        .or(file.state_dir)
        .or(state_directory.filter(|p| !p.as_os_str().is_empty()))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
    let storage_file = file.storage.unwrap_or_default();
    // Local agents run on this machine, so they reach storage where the
    // coordinator does unless told otherwise.
    let mut local_agent_args = Vec::new();
    if let Some(p) = args.local_agent_ssh_port.or(file.local_agent_ssh_port) {
        local_agent_args.extend(["--ssh-port".to_string(), p.to_string()]);
    }
    if let Some(u) = args
        .local_agent_blob_endpoint
        .or(file.local_agent_blob_endpoint)
        .or_else(|| storage_file.blob_endpoint.clone())
    {
        local_agent_args.extend(["--blob-endpoint".to_string(), u]);
    }
    if let Some(h) = args
        .local_agent_file_endpoint
        .or(file.local_agent_file_endpoint)
        .or_else(|| storage_file.file_endpoint.clone())
    {
        local_agent_args.extend(["--file-endpoint".to_string(), h]);
    }
    match args.local_agent_fake_gpus.or(file.local_agent_fake_gpus) {
        None | Some(0) => {}
        Some(n) if n <= 64 => local_agent_args.extend(["--fake-gpus".to_string(), n.to_string()]),
        Some(n) => {
            return Err(ConfigError::Invalid {
                field: "local_agent_fake_gpus",
                rule: format!("{n} is more than 64"),
            });
        }
    }
    if let Some(p) = args.local_agent_config.or(file.local_agent_config) {
        if !p.is_absolute() {
            return Err(ConfigError::Invalid {
                field: "local_agent_config",
                rule: format!("{} is not an absolute path", p.display()),
            });
        }
        local_agent_args.extend(["--config".to_string(), p.display().to_string()]);
    }
    let metrics_listen = match args.metrics_listen.or(file.metrics_listen) {
        None => None,
        Some(m) => Some(m.parse().map_err(|_| ConfigError::Invalid {
            field: "metrics_listen",
            rule: format!("{m:?} is not an address like 0.0.0.0:9150"),
        })?),
    };
    let config = Config {
        local_agent_args,
        metrics_listen,
        listen,
        state_dir,
        local_agents: args.local_agents || file.local_agents.unwrap_or(false),
        agent_bin: args.agent_bin.or(file.agent_bin),
        log_format: args.log_format.or(file.log_format).unwrap_or_default(),
        terminate_grace: secs(
            "terminate_grace_secs",
            args.terminate_grace_secs.or(file.terminate_grace_secs),
            10,
        )?,
        heartbeat_interval: secs(
            "heartbeat_interval_secs",
            args.heartbeat_interval_secs
                .or(file.heartbeat_interval_secs),
            10,
        )?,
        autoscale_interval: secs(
            "autoscale_interval_secs",
            args.autoscale_interval_secs
                .or(file.autoscale_interval_secs),
            5,
        )?,
        autoscale_idle_grace: secs(
            "autoscale_idle_grace_secs",
            args.autoscale_idle_grace_secs
                .or(file.autoscale_idle_grace_secs),
            300,
        )?,
        node_lost_timeout: secs(
            "node_lost_timeout_secs",
            args.node_lost_timeout_secs.or(file.node_lost_timeout_secs),
            600,
        )?,
        preempt_lowpriority_after: match args
            .preempt_lowpriority_after_secs
            .or(file.preempt_lowpriority_after_secs)
        {
            None => None,
            Some(n) => Some(secs("preempt_lowpriority_after_secs", Some(n), n)?),
        },
        storage: storage(storage_file)?,
    };
    // A connected agent is lost a timeout after its last heartbeat: the
    // timeout must leave room for a late one.
    if config.node_lost_timeout < config.heartbeat_interval * 2 {
        return Err(invalid(
            "node_lost_timeout_secs",
            format!(
                "must be at least twice heartbeat_interval_secs ({} s)",
                config.heartbeat_interval.as_secs()
            ),
        ));
    }
    Ok(config)
}

fn invalid(field: &'static str, rule: String) -> ConfigError {
    ConfigError::Invalid { field, rule }
}

/// Validates `[storage]` and reads the key file (which must not be readable
/// by group or others).
fn storage(s: StorageFile) -> Result<StorageConfig, ConfigError> {
    let template = s
        .blob_endpoint
        .unwrap_or_else(|| DEFAULT_BLOB_ENDPOINT.to_string());
    // Checked with a sample account: the template's own braces are no URL.
    crate::storage::blob::Endpoint::parse(&template.replace("{account}", "account"))
        .map_err(|rule| invalid("storage.blob_endpoint", rule))?;
    if let Some(f) = &s.file_endpoint {
        let ok = f
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !ok {
            return Err(invalid(
                "storage.file_endpoint",
                format!("{f:?} is not host:port"),
            ));
        }
    }
    let auto_storage = match (s.auto_storage_account, s.auto_storage_key_file) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(invalid(
                "storage.auto_storage_key_file",
                "required with auto_storage_account".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                "storage.auto_storage_account",
                "required with auto_storage_key_file".into(),
            ));
        }
        (Some(account), Some(path)) => {
            let valid = (3..=24).contains(&account.len())
                && account
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
            if !valid {
                return Err(invalid(
                    "storage.auto_storage_account",
                    format!("{account:?} is not 3-24 lower-case letters and digits"),
                ));
            }
            let key = read_key_file(&path)?;
            Some(AutoStorage {
                blob_endpoint: template.replace("{account}", &account),
                account: AutoStorageAccount { account, key },
            })
        }
    };
    Ok(StorageConfig {
        auto_storage,
        blob_endpoint: template,
        file_endpoint: s.file_endpoint,
    })
}

/// The account key from `path`: a file readable and writable by its owner
/// only, holding the key as Azure shows it (base64). The mode is checked on
/// the opened file, so what is read is what was checked. No message quotes
/// the file's contents.
fn read_key_file(path: &Path) -> Result<Secret, ConfigError> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let field = "storage.auto_storage_key_file";
    let shown = path.display();
    let mut f = std::fs::File::open(path).map_err(|e| invalid(field, format!("{shown}: {e}")))?;
    let meta = f
        .metadata()
        .map_err(|e| invalid(field, format!("{shown}: {e}")))?;
    if !meta.is_file() {
        return Err(invalid(field, format!("{shown} is not a file")));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(invalid(
            field,
            format!(
                "{shown} has mode {mode:o}; a key file must be readable by its owner only (0600)"
            ),
        ));
    }
    let mut text = String::new();
    f.read_to_string(&mut text)
        .map_err(|e| invalid(field, format!("{shown}: {e}")))?;
    let key = text.trim();
    if key.is_empty() {
        return Err(invalid(field, format!("{shown} is empty")));
    }
    crate::storage::shared_key::decode_key(key)
        .map_err(|rule| invalid(field, format!("{shown}: {rule}")))?;
    Ok(Secret::new(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = resolve(Args::default(), FileConfig::default(), None).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7150");
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/bai"));
        assert!(!c.local_agents);
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.terminate_grace, Duration::from_secs(10));
        let c = resolve(
            Args::default(),
            FileConfig::default(),
            Some("/srv/bai".into()),
        )
        .unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/srv/bai"));
    }

    #[test]
    fn the_lost_node_timeout_leaves_room_for_a_late_heartbeat_and_preemption_is_off_by_default() {
        let c = resolve(Args::default(), FileConfig::default(), None).unwrap();
        assert_eq!(c.preempt_lowpriority_after, None);
        let args = |argv: &[&str]| {
            let mut all = vec!["bai-coordinator"];
            all.extend_from_slice(argv);
            Args::parse_from(all)
        };
        let e = resolve(
            args(&[
                "--heartbeat-interval-secs",
                "3",
                "--node-lost-timeout-secs",
                "5",
            ]),
            FileConfig::default(),
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("node_lost_timeout_secs"), "{e}");
        let c = resolve(
            args(&[
                "--heartbeat-interval-secs",
                "1",
                "--node-lost-timeout-secs",
                "4",
                "--preempt-lowpriority-after-secs",
                "86400",
            ]),
            FileConfig::default(),
            None,
        )
        .unwrap();
        assert_eq!(
            c.preempt_lowpriority_after,
            Some(Duration::from_secs(86_400))
        );
        let e = resolve(
            args(&["--preempt-lowpriority-after-secs", "0"]),
            FileConfig::default(),
            None,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("preempt_lowpriority_after_secs"),
            "{e}"
        );
    }

    #[test]
    fn flags_override_file() {
        let file: FileConfig = toml::from_str(
            "listen = \"0.0.0.0:9000\"\nstate_dir = \"/f\"\nlocal_agents = true\nlog_format = \"json\"\nterminate_grace_secs = 3\n",
        )
        .unwrap();
        let args = Args::parse_from([
            "bai-coordinator",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "text",
        ]);
        let c = resolve(args, file, Some("/env".into())).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:0");
        assert_eq!(c.state_dir, PathBuf::from("/f"));
        assert!(c.local_agents);
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.terminate_grace, Duration::from_secs(3));
    }

    #[test]
    fn bad_configs() {
        assert!(
            toml::from_str::<FileConfig>("nope = 1").is_err(),
            "unknown keys are refused"
        );
        let args = Args {
            listen: Some("localhost".into()),
            ..Args::default()
        };
        let e = resolve(args, FileConfig::default(), None).unwrap_err();
        assert!(e.to_string().starts_with("listen:"), "{e}");
        let args = Args {
            terminate_grace_secs: Some(0),
            ..Args::default()
        };
        assert!(resolve(args, FileConfig::default(), None).is_err());
        let missing = Args {
            config: Some("/nonexistent/bai.toml".into()),
            ..Args::default()
        };
        assert!(matches!(load(missing, None), Err(ConfigError::Read { .. })));
    }

    #[test]
    fn storage_section() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "c2VjcmV0a2V5\n").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let text = format!(
            "[storage]\nauto_storage_account = \"devstoreaccount1\"\nauto_storage_key_file = {:?}\nblob_endpoint = \"http://127.0.0.1:10000/{{account}}\"\nfile_endpoint = \"127.0.0.1:4450\"\n",
            key.display().to_string()
        );
        let file: FileConfig = toml::from_str(&text).unwrap();
        let c = resolve(Args::default(), file.clone(), None).unwrap();
        let a = c.storage.auto_storage.clone().unwrap();
        assert_eq!(a.account.account, "devstoreaccount1");
        assert_eq!(a.account.key.expose(), "c2VjcmV0a2V5");
        assert_eq!(a.blob_endpoint, "http://127.0.0.1:10000/devstoreaccount1");
        assert!(!format!("{c:?}").contains("c2VjcmV0a2V5"));
        assert_eq!(c.storage.file_endpoint.as_deref(), Some("127.0.0.1:4450"));
        // Local agents reach storage where the coordinator does …
        assert_eq!(
            c.local_agent_args,
            [
                "--blob-endpoint",
                "http://127.0.0.1:10000/{account}",
                "--file-endpoint",
                "127.0.0.1:4450"
            ]
        );
        // … unless their own flags say otherwise.
        let args = Args::parse_from([
            "bai-coordinator",
            "--local-agent-blob-endpoint",
            "http://127.0.0.1:1/{account}",
        ]);
        let c = resolve(args, file.clone(), None).unwrap();
        assert_eq!(
            c.local_agent_args,
            [
                "--blob-endpoint",
                "http://127.0.0.1:1/{account}",
                "--file-endpoint",
                "127.0.0.1:4450"
            ]
        );

        std::fs::write(&key, "not base64 at all\n").unwrap();
        let e = resolve(Args::default(), file.clone(), None).unwrap_err();
        assert!(e.to_string().contains("not base64"), "{e}");
        assert!(
            !e.to_string().contains("at all"),
            "the key is never quoted: {e}"
        );
        std::fs::write(&key, "c2VjcmV0a2V5\n").unwrap();

        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = resolve(Args::default(), file, None).unwrap_err();
        assert!(
            e.to_string().starts_with("storage.auto_storage_key_file:"),
            "{e}"
        );

        let d = resolve(Args::default(), FileConfig::default(), None).unwrap();
        assert_eq!(d.storage.blob_endpoint, DEFAULT_BLOB_ENDPOINT);
        assert!(d.storage.auto_storage.is_none());
        assert!(
            d.local_agent_args.is_empty(),
            "agents keep their own defaults"
        );
        for bad in [
            "[storage]\nauto_storage_account = \"a\"\n",
            "[storage]\nfile_endpoint = \"nohost\"\n",
            "[storage]\nblob_endpoint = \"ftp://x\"\n",
            "[storage]\nblob_endpoint = \"https://{account}.blob.core.windows.net/?sv=x\"\n",
            "[storage]\nauto_storage_key_file = \"/k\"\n",
            "[storage]\nauto_storage_account = \"Bad_Name\"\nauto_storage_key_file = \"/k\"\n",
            "[storage]\nauto_storage_account = \"acct\"\nauto_storage_key_file = \"/nonexistent/k\"\n",
            "[storage]\nauto_storage_key = \"inline\"\n",
        ] {
            let parsed = toml::from_str::<FileConfig>(bad);
            match parsed {
                Err(_) => {}
                Ok(f) => {
                    let e = resolve(Args::default(), f, None).unwrap_err();
                    assert!(e.to_string().starts_with("storage."), "{e}");
                }
            }
        }
    }
}
