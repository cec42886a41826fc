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
pub mod identity;
pub mod inventory;
pub mod jobs;
pub mod model;
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
    #[error("cannot scan the held jobs in {path}: {source}")]
    Adopt {
        path: PathBuf,
        source: std::io::Error,
    },
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
    run_with(config, Arc::new(SystemHost::new()), launcher, shutdown).await
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
        let (host, state_dir, job_temp_root, mount_root, node_id) = (
            host.clone(),
            config.state_dir.clone(),
            config.job_temp_root.clone(),
            config.mount_root.clone(),
            config.node_id.clone(),
        );
        let setup = tokio::task::spawn_blocking(move || -> Result<_, AgentError> {
            let layout = Layout::new(&state_dir, &job_temp_root, &mount_root);
            for (dir, mode) in [
                (&state_dir, 0o700),
                (&layout.jobs_root, 0o700),
                (&layout.job_temp_root, 0o755),
                (&layout.job_mounts_root, 0o755),
                (&layout.mount_root, 0o755),
            ] {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(mode)
                    .create(dir)
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
    let settings = JobSettings {
        layout: layout.clone(),
        shell: config.job_shell.clone(),
        base_env: jobs::env::BaseEnv::from_process(),
        default_grace: config.default_grace,
        ship: config.ship,
        node_id: node_id.clone(),
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
    let mut ctx = session::SessionCtx {
        config,
        node_id,
        host,
        shutdown: stop_rx,
    };
    let stopped = session::run(&mut ctx, &mut jobs).await;
    info!(
        ?stopped,
        running_jobs = jobs.len(),
        "bai-agent stopping; jobs keep running"
    );
    Ok(stopped)
}
