//! The bench as a client of the public gRPC API: setting up a workspace,
//! experiment and cluster, waiting for its nodes, submitting customToolkit jobs
//! and waiting on them with WatchJob, as a user's client would.

use anyhow::{Context, Result, anyhow, bail};
use bai_proto::v1 as pb;
use pb::cluster_service_client::ClusterServiceClient;
use pb::experiment_service_client::ExperimentServiceClient;
use pb::job_service_client::JobServiceClient;
use pb::workspace_service_client::WorkspaceServiceClient;
use std::time::{Duration, Instant, SystemTime};
use tonic::transport::Channel;

/// Names every scenario uses.
pub const WORKSPACE: &str = "bench";
pub const EXPERIMENT: &str = "bench";
pub const CLUSTER: &str = "bench";

/// Large enough for ListClusterNodes of 10,000 nodes.
const MAX_MESSAGE: usize = 256 << 20;

/// Clients of every public service over one or more HTTP/2 connections.
#[derive(Clone)]
pub struct Api {
    pub workspaces: WorkspaceServiceClient<Channel>,
    pub experiments: ExperimentServiceClient<Channel>,
    pub clusters: ClusterServiceClient<Channel>,
    /// One job client per connection; callers spread load with [`Api::jobs`].
    jobs: Vec<JobServiceClient<Channel>>,
}

impl Api {
    /// Clients over `channels` (at least one); job calls are spread over all of them.
    pub fn new(channels: Vec<Channel>) -> Result<Self> {
        let first = channels
            .first()
            .cloned()
            .ok_or_else(|| anyhow!("no channel"))?;
        Ok(Self {
            workspaces: WorkspaceServiceClient::new(first.clone()),
            experiments: ExperimentServiceClient::new(first.clone()),
            clusters: ClusterServiceClient::new(first)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            jobs: channels
                .into_iter()
                .map(|c| JobServiceClient::new(c).max_decoding_message_size(MAX_MESSAGE))
                .collect(),
        })
    }

    /// A job client; `i` picks the connection round-robin.
    pub fn jobs(&self, i: usize) -> JobServiceClient<Channel> {
        self.jobs[i % self.jobs.len()].clone()
    }

    /// Creates the bench workspace, experiment and a manual-scale cluster of `target` nodes.
    pub async fn setup(&mut self, target: usize) -> Result<()> {
        let target = i32::try_from(target).context("node count out of range")?;
        self.setup_with(pb::ScaleSettings {
            manual: Some(pb::ManualScaleSettings {
                target_node_count: target,
                ..Default::default()
            }),
            auto_scale: None,
        })
        .await
    }

    /// Creates the bench workspace, experiment and a cluster scaled by `scale`.
    pub async fn setup_with(&mut self, scale: pb::ScaleSettings) -> Result<()> {
        self.workspaces
            .create_workspace(pb::CreateWorkspaceRequest {
                workspace: Some(pb::Workspace {
                    name: WORKSPACE.into(),
                    location: "local".into(),
                    ..Default::default()
                }),
            })
            .await
            .context("CreateWorkspace")?;
        self.experiments
            .create_experiment(pb::CreateExperimentRequest {
                experiment: Some(pb::Experiment {
                    workspace: WORKSPACE.into(),
                    name: EXPERIMENT.into(),
                    ..Default::default()
                }),
            })
            .await
            .context("CreateExperiment")?;
        self.clusters
            .create_cluster(pb::CreateClusterRequest {
                cluster: Some(pb::Cluster {
                    workspace: WORKSPACE.into(),
                    name: CLUSTER.into(),
                    vm_size: "local".into(),
                    scale_settings: Some(scale),
                    ..Default::default()
                }),
            })
            .await
            .context("CreateCluster")?;
        Ok(())
    }

    /// The bench cluster as the coordinator reports it.
    pub async fn cluster(&mut self) -> Result<pb::Cluster> {
        Ok(self
            .clusters
            .get_cluster(pb::GetClusterRequest {
                workspace: WORKSPACE.into(),
                name: CLUSTER.into(),
            })
            .await
            .context("GetCluster")?
            .into_inner())
    }

    /// Idle nodes of the bench cluster.
    pub async fn idle_nodes(&mut self) -> Result<usize> {
        let c = self.cluster().await?;
        let idle = c.node_state_counts.map(|s| s.idle_node_count).unwrap_or(0);
        Ok(usize::try_from(idle).unwrap_or(0))
    }

    /// Waits until the bench cluster has `n` idle nodes.
    pub async fn wait_idle_nodes(&mut self, n: usize, within: Duration) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let idle = self.idle_nodes().await?;
            if idle >= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the cluster has {idle} idle nodes after {within:?}, want {n}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every node of the bench cluster.
    pub async fn nodes(&mut self) -> Result<Vec<pb::Node>> {
        Ok(self
            .clusters
            .list_cluster_nodes(pb::ListClusterNodesRequest {
                workspace: WORKSPACE.into(),
                cluster: CLUSTER.into(),
            })
            .await
            .context("ListClusterNodes")?
            .into_inner()
            .nodes)
    }
}

/// The key of bench job `name`.
pub fn key(name: &str) -> pb::JobKey {
    pb::JobKey {
        workspace: WORKSPACE.into(),
        experiment: EXPERIMENT.into(),
        name: name.into(),
    }
}

/// A one-node customToolkit job on the bench cluster running `command_line`.
pub fn job(name: &str, command_line: &str) -> pb::Job {
    pb::Job {
        workspace: WORKSPACE.into(),
        experiment: EXPERIMENT.into(),
        name: name.into(),
        cluster: Some(pb::ClusterRef {
            workspace: String::new(),
            name: CLUSTER.into(),
        }),
        node_count: 1,
        toolkit: Some(pb::job::Toolkit::CustomToolkitSettings(
            pb::CustomToolkitSettings {
                command_line: command_line.into(),
            },
        )),
        std_out_err_path_prefix: "$AZ_BATCHAI_JOB_TEMP".into(),
        ..Default::default()
    }
}

/// Creates job `name` and returns it with the wall-clock time its create RPC returned.
pub async fn create_job(
    client: &mut JobServiceClient<Channel>,
    name: &str,
    command_line: &str,
) -> Result<(pb::Job, SystemTime)> {
    create(client, job(name, command_line)).await
}

/// Creates `job` and returns it with the wall-clock time its create RPC returned.
pub async fn create(
    client: &mut JobServiceClient<Channel>,
    job: pb::Job,
) -> Result<(pb::Job, SystemTime)> {
    let name = job.name.clone();
    let created = client
        .create_job(pb::CreateJobRequest { job: Some(job) })
        .await
        .with_context(|| format!("CreateJob {name}"))?
        .into_inner();
    Ok((created, SystemTime::now()))
}

/// Whether the job has reached succeeded or failed.
pub fn is_ended(j: &pb::Job) -> bool {
    matches!(
        pb::ExecutionState::try_from(j.execution_state),
        Ok(pb::ExecutionState::Succeeded | pb::ExecutionState::Failed)
    )
}

/// Whether the job succeeded.
pub fn succeeded(j: &pb::Job) -> bool {
    pb::ExecutionState::try_from(j.execution_state) == Ok(pb::ExecutionState::Succeeded)
}

/// Watches job `name` until it has ended; returns the ended job and the
/// wall-clock time the client saw it end.
pub async fn watch_until_ended(
    client: &mut JobServiceClient<Channel>,
    name: &str,
) -> Result<(pb::Job, SystemTime)> {
    let mut stream = client
        .watch_job(pb::WatchJobRequest {
            job: Some(key(name)),
        })
        .await
        .with_context(|| format!("WatchJob {name}"))?
        .into_inner();
    let mut ended = None;
    while let Some(j) = stream
        .message()
        .await
        .with_context(|| format!("WatchJob {name} stream"))?
    {
        if is_ended(&j) && ended.is_none() {
            ended = Some((j, SystemTime::now()));
        }
    }
    // Read to the end of the stream, which the server closes right after the
    // final state: dropping it early resets the HTTP/2 stream, and too many
    // resets make the client library close the whole connection.
    ended.ok_or_else(|| anyhow!("WatchJob {name} ended before the job did"))
}

/// The job's start time as the agent stamped it when its process started.
pub fn start_time(j: &pb::Job) -> Option<SystemTime> {
    let ts = j.execution_info.as_ref()?.start_time.as_ref()?;
    SystemTime::try_from(*ts).ok()
}

/// `a - b` in milliseconds, negative when `a` is earlier.
pub fn ms_between(a: SystemTime, b: SystemTime) -> f64 {
    match a.duration_since(b) {
        Ok(d) => d.as_secs_f64() * 1e3,
        Err(e) => -e.duration().as_secs_f64() * 1e3,
    }
}
