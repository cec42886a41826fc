//! bai's coordinator: the durable store, the public gRPC API, the scheduler,
//! the agent sessions and (with `--local-agents`) the local node provider.
//!
//! [`run`] serves everything on a listener until `shutdown` resolves.

pub mod agent;
pub mod api;
pub mod autoscaler;
pub mod config;
pub mod core;
pub mod dispatch;
pub mod domain;
pub mod error;
pub mod events;
pub mod local_provider;
pub mod metrics;
pub mod output;
pub mod provider;
pub mod scheduler;
pub mod setup_output;
pub mod static_provider;
pub mod storage;
pub mod store;
pub mod telemetry;

pub use config::Config;

use crate::agent::AgentApi;
use crate::api::{
    cluster::ClusterApi, experiment::ExperimentApi, job::JobApi, workspace::WorkspaceApi,
};
use crate::core::{Core, Settings};
use crate::output::OutputStore;
use crate::store::Store;
use crate::store::sqlite::SqliteStore;
use bai_proto::v1::agent_service_server::AgentServiceServer;
use bai_proto::v1::cluster_service_server::ClusterServiceServer;
use bai_proto::v1::experiment_service_server::ExperimentServiceServer;
use bai_proto::v1::job_service_server::JobServiceServer;
use bai_proto::v1::workspace_service_server::WorkspaceServiceServer;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Why the coordinator could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("state directory {path}: {source}")]
    StateDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("auto-storage: {0}")]
    AutoStorage(String),
    #[error("grpc reflection: {0}")]
    Reflection(String),
    #[error("grpc server: {0}")]
    Serve(String),
    #[error("metrics listener {at}: {source}")]
    Metrics {
        at: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// The database (secrets inside) is 0600 and the output directory 0700. In
/// local mode the state directory itself is traversable (0711), not listable:
/// its local agents' jobs run as the cluster's admin user and must reach
/// their directories and mounts under `local-nodes/`.
fn private_files(state: &Path, local_agents: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode =
        |p: &Path, m: u32| match std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r,
        };
    for f in ["bai.db", "bai.db-wal", "bai.db-shm"] {
        mode(&state.join(f), 0o600)?;
    }
    let output = state.join("output");
    std::fs::create_dir_all(&output)?;
    mode(&output, 0o700)?;
    if local_agents {
        let nodes = state.join("local-nodes");
        std::fs::create_dir_all(&nodes)?;
        mode(&nodes, 0o711)?;
        mode(state, 0o711)?;
    }
    Ok(())
}

/// Writes `<state>/coordinator.addr` atomically and durably.
fn write_addr_file(state_dir: &Path, addr: SocketAddr) -> std::io::Result<()> {
    bai_common::fs::write_atomic(
        &state_dir.join("coordinator.addr"),
        addr.to_string().as_bytes(),
    )
}

/// Runs the coordinator on `listener` until `shutdown` resolves, then stops
/// agent sessions and streams, stops local agents, and returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let state = config.state_dir.clone();
    std::fs::create_dir_all(&state).map_err(|source| RunError::StateDir {
        path: state.clone(),
        source,
    })?;
    let store = SqliteStore::open(&state.join("bai.db"))?;
    private_files(&state, config.local_agents)?;
    // No session survives a restart; agents reconnect and register again.
    store.disconnect_all_nodes().await?;
    let auto_storage = config
        .storage
        .auto_storage
        .as_ref()
        .map(|a| storage::AutoStorage::new(a.account.clone(), &a.blob_endpoint))
        .transpose()
        .map_err(RunError::AutoStorage)?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let core = Arc::new(
        Core::new(
            Arc::new(store),
            OutputStore::new(state.join("output")),
            Settings {
                heartbeat_interval: config.heartbeat_interval,
                terminate_grace: config.terminate_grace,
                node_lost_timeout: config.node_lost_timeout,
                autoscale_interval: config.autoscale_interval,
                autoscale_idle_grace: config.autoscale_idle_grace,
                preempt_lowpriority_after: config.preempt_lowpriority_after,
                static_nodes: !config.local_agents,
            },
            stop_rx.clone(),
        )
        .with_auto_storage(auto_storage),
    );
    let addr = listener.local_addr()?;

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<WorkspaceServiceServer<WorkspaceApi>>()
        .await;
    health
        .set_serving::<ExperimentServiceServer<ExperimentApi>>()
        .await;
    health
        .set_serving::<ClusterServiceServer<ClusterApi>>()
        .await;
    health.set_serving::<JobServiceServer<JobApi>>().await;
    health.set_serving::<AgentServiceServer<AgentApi>>().await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(bai_proto::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| RunError::Reflection(e.to_string()))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| RunError::Reflection(e.to_string()))?;

    let mut server_stop = stop_rx.clone();
    let server = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(WorkspaceServiceServer::new(WorkspaceApi::new(core.clone())))
        .add_service(ExperimentServiceServer::new(ExperimentApi::new(
            core.clone(),
        )))
        .add_service(ClusterServiceServer::new(ClusterApi::new(core.clone())))
        .add_service(JobServiceServer::new(JobApi::new(core.clone())))
        .add_service(
            AgentServiceServer::new(AgentApi::new(core.clone()))
                .max_decoding_message_size(16 << 20),
        )
        // Small RPC answers and agent messages must not wait for a delayed
        // ACK: tonic applies no TCP_NODELAY to a listener we hand it, so ask.
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                crate::core::stopped(&mut server_stop).await;
            },
        );
    let mut server = tokio::spawn(server);

    let scheduler = tokio::spawn(dispatch::run(core.clone()));
    let lost_nodes = tokio::spawn(dispatch::run_lost_nodes(core.clone()));
    let autoscaler = tokio::spawn(autoscaler::run(core.clone()));
    let provider = if config.local_agents {
        let agent_bin = local_provider::agent_bin(&config)?;
        // The local agents share this machine, so they share one directory
        // for the jobs' shared temp, as a cluster's nodes share an NFS one.
        let mut args = vec![
            "--shared-job-temp-root".to_string(),
            state.join("shared-job-temp").display().to_string(),
        ];
        args.extend(config.local_agent_args.iter().cloned());
        let p = local_provider::LocalProvider::new(
            core.clone(),
            addr,
            agent_bin,
            state.join("local-nodes"),
            args,
        );
        Box::new(p) as Box<dyn provider::NodeProvider>
    } else {
        Box::new(static_provider::StaticProvider::new(core.clone()))
    };
    tracing::info!(
        provider = provider.kind(),
        creates_nodes = provider.can_create(),
        "node provider"
    );
    let provider = tokio::spawn(provider.run());

    let metrics_server = match config.metrics_listen {
        Some(at) => {
            let l = TcpListener::bind(at)
                .await
                .map_err(|source| RunError::Metrics { at, source })?;
            let maddr = l.local_addr()?;
            bai_common::fs::write_atomic(
                &state.join("metrics.addr"),
                maddr.to_string().as_bytes(),
            )?;
            tracing::info!(addr = %maddr, "serving Prometheus metrics on http://{maddr}/metrics");
            Some(tokio::spawn(metrics::http::serve(core.clone(), l)))
        }
        None => None,
    };
    write_addr_file(&state, addr)?;
    tracing::info!(%addr, state_dir = %state.display(), local_agents = config.local_agents, "listening on {addr}");
    if let Some(a) = &core.auto_storage {
        tracing::info!(
            account = %a.account().account,
            blob_endpoint = %a.blob().endpoint(),
            "auto-storage account configured"
        );
    }
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::debug!(error = %e, "sd_notify failed");
    }

    let served = tokio::select! {
        _ = shutdown => None,
        r = &mut server => Some(r),
    };
    tracing::info!("shutting down");
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    let _ = stop_tx.send(true);
    core.sessions.stop_all();
    let _ = provider.await;
    let _ = scheduler.await;
    let _ = lost_nodes.await;
    let _ = autoscaler.await;
    if let Some(m) = metrics_server {
        let _ = m.await;
    }
    let result = match served {
        Some(r) => r,
        None => match tokio::time::timeout(Duration::from_secs(5), &mut server).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!("connections still open after 5s; closing them");
                server.abort();
                return Ok(());
            }
        },
    };
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(RunError::Serve(e.to_string())),
        Err(e) => Err(RunError::Serve(e.to_string())),
    }
}
