//! bai's node agent: registers this node with the coordinator, runs the jobs
//! it is assigned (each under a supervisor that outlives the agent), and ships
//! their output with exactly-once, in-order semantics (see `agent.proto`).
//!
//! Codemap: `config` (flags, file, environment), `identity` (node id),
//! `inventory` (the [`inventory::HostInfo`] trait), `session` (the stream to
//! the coordinator and reconnects), `jobs` (job manager, per-job worker tasks
//! and their phase machine, the supervisor `shim`, the
//! [`jobs::launcher::Launcher`] trait, file events, on-disk layout, job
//! environment), `output` (send/ack bookkeeping and spool reads), `convert`
//! (the only module that knows `bai_proto`), `model` (domain types). Atomic
//! file writes, `/proc`, pidfds, tracing setup and the name rule come from
//! `bai_common`, shared with the coordinator.

pub mod backoff;
pub mod config;
pub mod convert;
pub mod gpu;
pub mod identity;
pub mod inventory;
pub mod jobs;
pub mod metrics;
pub mod model;
pub mod mpi;
pub mod node;
pub mod output;
pub mod session;
pub mod timefmt;

use config::Config;
use inventory::{HostInfo, SystemHost};
use jobs::launcher::{Launcher, ShimLauncher};
use jobs::layout::Layout;
use jobs::{JobManager, JobSettings};
pub use session::Stopped;
use std::future::Future;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::Arc;
use tracing::info;

/// Why the agent could not run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot create directory {path}: {source}")]
    Directory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    #[error("bad configuration: {0}")]
    Config(String),
    #[error("cannot scan the held jobs in {path}: {source}")]
    Adopt {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Starts node preparation: finds the mount drivers and the SSH port (once,
/// on the blocking pool) and starts the [`node::prepare::Preparer`]. Also
/// returns how this node mounts, for the jobs' own mounts.
async fn start_preparer(
    config: &Config,
    node_id: &str,
) -> Result<
    (
        node::prepare::NodeHandle,
        session::NodeFacts,
        node::mounts::MountContext,
    ),
    AgentError,
> {
    let storage = config.storage.clone();
    let ssh_override = config.ssh_port;
    let (drivers, ssh_port, boot_id) = tokio::task::spawn_blocking(move || {
        let drivers = node::mounts::Drivers::detect().with_overrides(
            storage.file_share_driver.as_deref(),
            storage.blob_driver.as_deref(),
        );
        (
            drivers,
            node::sshd::detect_ssh_port(ssh_override),
            node::boot_id(),
        )
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    let drivers = drivers.map_err(|e| AgentError::Config(e.to_string()))?;
    let (file_share_driver, blob_driver) = drivers.names();
    let mut endpoints = node::mounts::Endpoints::default();
    if let Some(b) = &config.storage.blob_endpoint {
        endpoints.blob = b.clone();
    }
    endpoints.file = config.storage.file_endpoint.clone();
    let node_dir = config.state_dir.join("node");
    let mount_ctx =
        node::mounts::MountContext::new(drivers, endpoints, None, node_dir.join("mount-secrets"));
    let ops = node::system::SystemOps {
        mount_root: config.mount_root.clone(),
        mounts: mount_ctx.clone(),
    };
    let base = jobs::env::BaseEnv::from_process();
    let mut base_env = vec![
        (
            "PATH".to_string(),
            std::env::var("PATH").unwrap_or_else(|_| {
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
            }),
        ),
        ("HOME".to_string(), base.home.clone()),
        ("USER".to_string(), base.user.clone()),
        ("LOGNAME".to_string(), base.user.clone()),
    ];
    for (k, v) in [("LANG", &base.lang), ("TZ", &base.tz)] {
        if let Some(v) = v {
            base_env.push((k.to_string(), v.clone()));
        }
    }
    let settings = node::prepare::PrepareSettings {
        dir: node_dir,
        mount_root: config.mount_root.clone(),
        node_id: node_id.to_string(),
        base_env,
        check_every: node::prepare::CHECK_EVERY,
    };
    let handle = node::prepare::Preparer::start(Arc::new(ops), settings).await;
    let facts = session::NodeFacts {
        boot_id,
        ssh_port: u32::from(ssh_port),
        file_share_driver: file_share_driver.replace("none", ""),
        blob_driver: blob_driver.replace("none", ""),
        ..Default::default()
    };
    info!(ssh_port, file_share_driver, blob_driver, "node facts");
    Ok((handle, facts, mount_ctx))
}

/// Runs the agent until `shutdown` resolves or the coordinator sends
/// `Shutdown`. Running jobs are left running either way.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Stopped, AgentError> {
    let launcher = Arc::new(ShimLauncher {
        exe: config.shim_exe.clone(),
    });
    let host = SystemHost::new().with_disk(config.state_dir.clone());
    run_with(config, Arc::new(host), launcher, shutdown).await
}

/// [`run`] with the host facts and process launcher injected.
pub async fn run_with(
    config: Config,
    host: Arc<dyn HostInfo>,
    launcher: Arc<dyn Launcher>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Stopped, AgentError> {
    // Directories, the hostname and the node id are file and /proc work:
    // done on the blocking pool, like everything else the agent reads.
    let (layout, node_id) = {
        let (host, state_dir, job_temp_root, mount_root, node_id, shared) = (
            host.clone(),
            config.state_dir.clone(),
            config.job_temp_root.clone(),
            config.mount_root.clone(),
            config.node_id.clone(),
            config.shared_job_temp_root.clone(),
        );
        let setup = tokio::task::spawn_blocking(move || -> Result<_, AgentError> {
            let layout =
                Layout::new(&state_dir, &job_temp_root, &mount_root).with_shared_temp_root(shared);
            // The state directory is traversable (not listable) so the
            // admin user reaches its job's directories and the mounts;
            // what is private inside it is 0700 or 0600.
            for (dir, mode) in [
                (&state_dir, 0o711),
                (&layout.jobs_root, 0o700),
                (&layout.job_temp_root, 0o755),
                (&layout.job_mounts_root, 0o755),
                (&layout.mount_root, 0o755),
            ] {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(mode)
                    .create(dir)
                    .and_then(|()| {
                        use std::os::unix::fs::PermissionsExt;
                        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
                    })
                    .map_err(|source| AgentError::Directory {
                        path: dir.clone(),
                        source,
                    })?;
            }
            let inventory = host.inventory();
            let node_id =
                identity::load_or_create(&state_dir, node_id.as_deref(), &inventory.hostname)?;
            Ok((layout, node_id))
        });
        match setup.await {
            Ok(r) => r?,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    };
    info!(
        node = %node_id,
        workspace = %config.workspace,
        cluster = %config.cluster,
        coordinator = %config.coordinator,
        state_dir = %config.state_dir.display(),
        version = env!("CARGO_PKG_VERSION"),
        "bai-agent starting"
    );
    let (node, mut facts, mounts) = start_preparer(&config, &node_id).await?;
    let cgroups = {
        let cfg = config.cgroups.clone();
        tokio::task::spawn_blocking(move || jobs::cgroup::Cgroups::detect(&cfg))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    };
    let gpus = {
        let (cfg, id) = (config.gpu.clone(), node_id.clone());
        let backend = tokio::task::spawn_blocking(move || gpu::open(&cfg, &id))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        Arc::new(gpu::health::Watch::new(backend))
    };
    let inventory = gpus.backend().inventory();
    let gpu_minors = inventory.minors();
    let containers = {
        let cfg = config.containers.clone();
        let dev_dir = config.cgroups.dev_dir.clone();
        let nvml = config.gpu.nvml_library.clone();
        tokio::task::spawn_blocking(move || {
            let mut rt = jobs::container::detect(&cfg)?;
            if let Some(rt) = rt.as_mut() {
                let cdi: Vec<&std::path::Path> = jobs::container::CDI_DIRS
                    .iter()
                    .map(std::path::Path::new)
                    .collect();
                rt.gpus = jobs::container::GpuAccess::detect(&cdi, &dev_dir, nvml.as_deref());
            }
            Ok::<_, String>(rt)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    };
    let containers = match containers {
        Ok(rt) => rt.map(Arc::new),
        Err(e) => {
            tracing::warn!(problem = %e, "no container runtime: container jobs are not placed on this node");
            None
        }
    };
    if let Some(rt) = containers.as_ref().filter(|rt| !rt.init) {
        tracing::warn!(
            runtime = rt.kind.name(),
            "the container runtime has no init (podman: install catatonit): a terminated container job gets no SIGTERM, only SIGKILL after the grace period"
        );
    }
    facts.container_runtime = containers
        .as_ref()
        .map(|rt| format!("{}; {}", rt.version, rt.gpus.describe()))
        .unwrap_or_default();
    facts.job_cgroups = cgroups.kind().to_owned();
    facts.gpu_isolation = cgroups
        .gpu_isolation(inventory.gpus.len(), &gpu_minors)
        .to_owned();
    info!(
        job_cgroups = %facts.job_cgroups,
        gpu_isolation = %facts.gpu_isolation,
        container_runtime = %facts.container_runtime,
        "job isolation"
    );
    let settings = JobSettings {
        layout: layout.clone(),
        shell: config.job_shell.clone(),
        base_env: jobs::env::BaseEnv::from_process(),
        default_grace: config.default_grace,
        ship: config.ship,
        node_id: node_id.clone(),
        run_as: node.run_as(),
        mounts: Some(mounts),
        cgroups: Arc::new(cgroups),
        gpu_minors: Arc::new(gpu_minors),
        mpi_launcher: jobs::mpi_launcher(),
        image_cache: containers.as_ref().map(|_| {
            Arc::new(jobs::image_cache::ImageCache::new(
                &config.state_dir,
                // Checked when the configuration was read.
                config.containers.image_cache_max_bytes().unwrap_or(0),
            ))
        }),
        containers,
    };
    let mut jobs = JobManager::new(settings, launcher);
    let adopted = jobs
        .adopt_existing()
        .await
        .map_err(|source| AgentError::Adopt {
            path: layout.jobs_root.clone(),
            source,
        })?;
    if adopted > 0 {
        info!(adopted, "adopted jobs left by a previous agent");
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let meter = Arc::new(metrics::Meter::with_cgroup_root(
        config.cgroups.root.clone(),
    ));
    let mut ctx = session::SessionCtx {
        config,
        node_id,
        host,
        gpus,
        meter,
        shutdown: stop_rx,
        node,
        facts,
    };
    let stopped = session::run(&mut ctx, &mut jobs).await;
    if let Stopped::Coordinator(_) = &stopped {
        // The node left its cluster: its mounts go with it. (On a signal they
        // stay, and the next agent adopts them.)
        ctx.node.leave().await;
    }
    info!(
        ?stopped,
        running_jobs = jobs.len(),
        "bai-agent stopping; jobs keep running"
    );
    Ok(stopped)
}
