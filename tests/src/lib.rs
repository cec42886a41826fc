//! End-to-end test support: start the real `bai-coordinator` (which starts real
//! `bai-agent` processes in local mode), talk to it over gRPC on loopback, run
//! the real `bai` CLI, and clean up every process a test started.
//!
//! The binaries are found next to the test executable's `target/<profile>/`
//! directory, so build them first (`cargo build --workspace --bins`); the
//! README's test command does.

use anyhow::{Context, Result, anyhow, bail};
use bai_proto::v1 as pb;
use pb::cluster_service_client::ClusterServiceClient;
use pb::experiment_service_client::ExperimentServiceClient;
use pb::job_service_client::JobServiceClient;
use pb::workspace_service_client::WorkspaceServiceClient;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

pub mod procs;

/// Path of one of the workspace's binaries (`bai`, `bai-coordinator`, `bai-agent`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the end-to-end tests",
        path.display()
    );
    path
}

/// Options for starting a coordinator.
#[derive(Clone, Debug, Default)]
pub struct CoordinatorOpts {
    /// Listen on this address instead of an ephemeral loopback port.
    pub listen: Option<SocketAddr>,
    /// Extra command-line arguments.
    pub extra_args: Vec<String>,
    /// Extra environment (the local agents and their jobs' tools inherit it).
    pub env: Vec<(String, String)>,
}

/// A running `bai-coordinator --local-agents` with its own state directory.
pub struct Coordinator {
    child: Option<Child>,
    state: tempfile::TempDir,
    pub addr: SocketAddr,
    opts: CoordinatorOpts,
}

impl Coordinator {
    /// Starts a coordinator in local mode on a fresh state directory.
    pub fn start() -> Result<Self> {
        Self::start_with(CoordinatorOpts::default())
    }

    pub fn start_with(opts: CoordinatorOpts) -> Result<Self> {
        let state = tempfile::Builder::new().prefix("bai-e2e-").tempdir()?;
        let (child, addr) = spawn_coordinator(state.path(), &opts)?;
        Ok(Self {
            child: Some(child),
            state,
            addr,
            opts,
        })
    }

    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `kill -9` the coordinator process (its agents and jobs keep running).
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts the coordinator again on the same state directory and address.
    pub fn restart(&mut self) -> Result<()> {
        self.kill9()?;
        let mut opts = self.opts.clone();
        opts.listen = Some(self.addr);
        // The old address file must not be mistaken for the new server's.
        let _ = std::fs::remove_file(self.state.path().join("coordinator.addr"));
        let (child, addr) = spawn_coordinator(self.state.path(), &opts)?;
        self.child = Some(child);
        self.addr = addr;
        Ok(())
    }

    /// Everything the coordinator logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state.path().join("coordinator.log")).unwrap_or_default()
    }

    /// Everything every local agent logged so far.
    pub fn agent_logs(&self) -> String {
        let mut all = String::new();
        let nodes = self.state.path().join("local-nodes");
        if let Ok(rd) = std::fs::read_dir(nodes) {
            for e in rd.flatten() {
                all.push_str(
                    &std::fs::read_to_string(e.path().join("agent.log")).unwrap_or_default(),
                );
            }
        }
        all
    }

    pub async fn channel(&self) -> Result<Channel> {
        Ok(Channel::from_shared(self.url())?.connect().await?)
    }

    pub async fn clients(&self) -> Result<Clients> {
        let ch = self.channel().await?;
        Ok(Clients {
            workspaces: WorkspaceServiceClient::new(ch.clone()),
            experiments: ExperimentServiceClient::new(ch.clone()),
            clusters: ClusterServiceClient::new(ch.clone()),
            jobs: JobServiceClient::new(ch.clone()).max_decoding_message_size(64 << 20),
        })
    }

    /// A `bai` CLI command aimed at this coordinator.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(bin("bai"));
        c.env("BAI_COORDINATOR", self.url());
        c
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Graceful first: the coordinator stops its local agents.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // Whatever is left (agents, shims, job processes, FUSE daemons)
        // lives under the state dir.
        procs::kill_under(self.state.path());
        // Mounts the agents kept (they survive an agent's stop) are undone
        // before the directory is removed: removing it through a bind mount
        // would delete the mounted files.
        unmount_under(self.state.path());
    }
}

/// The mount points under `dir` (from /proc/self/mountinfo).
pub fn mounted_under(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// The pids of the local agents of a coordinator whose state directory is
/// `state` (from their pid files), sorted.
pub fn agent_pids(state: &Path) -> Vec<i32> {
    let mut pids: Vec<i32> = std::fs::read_dir(state.join("local-nodes"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("agent.pid")).ok())
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    pids.sort();
    pids
}

/// The public Batch AI recipes (`shared/reference/batchai-recipes`, beside
/// the checkout or a level above a worktree), `None` where they are absent:
/// outside CI that skips the caller's test (it says so); CI has them, so
/// there their absence fails it.
pub fn recipes_dir() -> Option<PathBuf> {
    let found = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|a| a.join("shared/reference/batchai-recipes"))
        .find(|p| p.is_dir());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "no shared/reference/batchai-recipes above the checkout: CI must run this test"
        );
        println!("skipped: no shared/reference/batchai-recipes above the checkout");
    }
    found
}

/// The recipes' job files (`recipes__*job*.json`), sorted.
pub fn recipe_job_files(dir: &Path) -> Vec<PathBuf> {
    let mut jobs: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap_or_default().to_string_lossy();
            n.starts_with("recipes__") && n.contains("job") && n.ends_with(".json")
        })
        .collect();
    jobs.sort();
    jobs
}

/// Every file under `dir`.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// Removes a Linux user (and its sudoers file) when dropped: the admin
/// users end-to-end tests make.
pub struct UserGone(pub String);

impl Drop for UserGone {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg("-rf").arg(&self.0).output();
        let _ = std::fs::remove_file(format!("/etc/sudoers.d/bai-{}", self.0));
    }
}

/// Lazily unmounts every mount point under `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    let mut points = mounted_under(dir);
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&p)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

fn spawn_coordinator(state: &Path, opts: &CoordinatorOpts) -> Result<(Child, SocketAddr)> {
    let listen = opts
        .listen
        .map(|a| a.to_string())
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state.join("coordinator.log"))?;
    let mut child = Command::new(bin("bai-coordinator"))
        .arg("--local-agents")
        .args(["--listen", &listen])
        .arg("--state-dir")
        .arg(state)
        .args(&opts.extra_args)
        .env("RUST_LOG", "info")
        .envs(opts.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("spawn bai-coordinator")?;
    let addr_file = state.join("coordinator.addr");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait()? {
            let log = std::fs::read_to_string(state.join("coordinator.log")).unwrap_or_default();
            bail!("bai-coordinator exited early ({status}):\n{log}");
        }
        if let Ok(s) = std::fs::read_to_string(&addr_file)
            && let Ok(addr) = s.trim().parse::<SocketAddr>()
        {
            return Ok((child, addr));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!(
                "bai-coordinator did not write {} in 30 s",
                addr_file.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Clients for each public service.
#[derive(Clone)]
pub struct Clients {
    pub workspaces: WorkspaceServiceClient<Channel>,
    pub experiments: ExperimentServiceClient<Channel>,
    pub clusters: ClusterServiceClient<Channel>,
    pub jobs: JobServiceClient<Channel>,
}

impl Clients {
    /// Creates workspace `ws`, experiment `ex` and a cluster `name` with `target` nodes,
    /// and waits until all of them are idle.
    pub async fn setup_cluster(
        &mut self,
        ws: &str,
        ex: &str,
        name: &str,
        target: i32,
    ) -> Result<()> {
        self.workspace_and_experiment(ws, ex).await?;
        self.clusters
            .create_cluster(pb::CreateClusterRequest {
                cluster: Some(cluster(ws, name, target)),
            })
            .await?;
        self.wait_idle_nodes(ws, name, target, Duration::from_secs(60))
            .await
    }

    /// Creates workspace `ws` and its experiment `ex`.
    pub async fn workspace_and_experiment(&mut self, ws: &str, ex: &str) -> Result<()> {
        self.workspaces
            .create_workspace(pb::CreateWorkspaceRequest {
                workspace: Some(pb::Workspace {
                    name: ws.into(),
                    location: "local".into(),
                    ..Default::default()
                }),
            })
            .await?;
        self.experiments
            .create_experiment(pb::CreateExperimentRequest {
                experiment: Some(pb::Experiment {
                    workspace: ws.into(),
                    name: ex.into(),
                    ..Default::default()
                }),
            })
            .await?;
        Ok(())
    }

    /// Waits until the cluster has `n` idle nodes.
    pub async fn wait_idle_nodes(
        &mut self,
        ws: &str,
        name: &str,
        n: i32,
        within: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let c = self
                .clusters
                .get_cluster(pb::GetClusterRequest {
                    workspace: ws.into(),
                    name: name.into(),
                })
                .await?
                .into_inner();
            let idle = c.node_state_counts.map(|s| s.idle_node_count).unwrap_or(0);
            if idle == n {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("cluster {ws}/{name} has {idle} idle nodes, want {n}: {c:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Submits a customToolkit job running `command_line` on `cluster`.
    pub async fn submit(
        &mut self,
        ws: &str,
        ex: &str,
        name: &str,
        cluster: &str,
        command_line: &str,
    ) -> Result<pb::Job> {
        let job = custom_job(ws, ex, name, cluster, command_line);
        Ok(self
            .jobs
            .create_job(pb::CreateJobRequest { job: Some(job) })
            .await?
            .into_inner())
    }

    /// The whole event record of cluster `ws/cluster`, oldest first.
    pub async fn cluster_events(
        &mut self,
        ws: &str,
        cluster: &str,
    ) -> Result<Vec<pb::ClusterEvent>> {
        Ok(self
            .clusters
            .list_cluster_events(pb::ListClusterEventsRequest {
                workspace: ws.into(),
                cluster: cluster.into(),
                max_results: 0,
                page_token: String::new(),
            })
            .await?
            .into_inner()
            .events)
    }

    /// The nodes of cluster `ws/cluster`.
    pub async fn nodes(&mut self, ws: &str, cluster: &str) -> Result<Vec<pb::Node>> {
        Ok(self
            .clusters
            .list_cluster_nodes(pb::ListClusterNodesRequest {
                workspace: ws.into(),
                cluster: cluster.into(),
            })
            .await?
            .into_inner()
            .nodes)
    }

    pub async fn job(&mut self, ws: &str, ex: &str, name: &str) -> Result<pb::Job> {
        Ok(self
            .jobs
            .get_job(pb::GetJobRequest {
                job: Some(key(ws, ex, name)),
            })
            .await?
            .into_inner())
    }

    /// Waits (by WatchJob) until the job has ended and returns it.
    pub async fn wait_job(
        &mut self,
        ws: &str,
        ex: &str,
        name: &str,
        within: Duration,
    ) -> Result<pb::Job> {
        let fut = async {
            let mut stream = self
                .jobs
                .watch_job(pb::WatchJobRequest {
                    job: Some(key(ws, ex, name)),
                })
                .await?
                .into_inner();
            let mut last = None;
            while let Some(j) = stream.message().await? {
                last = Some(j);
            }
            let j = last.ok_or_else(|| anyhow!("WatchJob sent nothing"))?;
            Ok::<_, anyhow::Error>(j)
        };
        let j = tokio::time::timeout(within, fut)
            .await
            .map_err(|_| anyhow!("job {ws}/{ex}/{name} did not end within {within:?}"))??;
        if !is_ended(&j) {
            bail!("WatchJob ended before the job did: {j:?}");
        }
        Ok(j)
    }

    /// The files of the job's stdouterr directory: (name, length).
    pub async fn list_output(
        &mut self,
        ws: &str,
        ex: &str,
        name: &str,
    ) -> Result<std::collections::HashMap<String, u64>> {
        let files = self
            .jobs
            .list_output_files(pb::ListOutputFilesRequest {
                job: Some(key(ws, ex, name)),
                output_directory_id: "stdouterr".into(),
                directory: ".".into(),
                max_results: 0,
                page_token: String::new(),
                attempt: 0,
            })
            .await?
            .into_inner()
            .files;
        Ok(files
            .into_iter()
            .map(|f| (f.name, f.content_length))
            .collect())
    }

    /// Reads a whole output file (stdouterr/`path`) without following.
    pub async fn read_output(
        &mut self,
        ws: &str,
        ex: &str,
        name: &str,
        path: &str,
    ) -> Result<Vec<u8>> {
        self.read_attempt_output(ws, ex, name, path, 0).await
    }

    /// Reads a whole output file (stdouterr/`path`) of attempt `attempt`
    /// (0: the current or last) without following.
    pub async fn read_attempt_output(
        &mut self,
        ws: &str,
        ex: &str,
        name: &str,
        path: &str,
        attempt: u32,
    ) -> Result<Vec<u8>> {
        let mut stream = self
            .jobs
            .stream_output_file(pb::StreamOutputFileRequest {
                job: Some(key(ws, ex, name)),
                output_directory_id: "stdouterr".into(),
                path: path.into(),
                offset: 0,
                follow: false,
                attempt,
            })
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream.message().await? {
            if chunk.offset != out.len() as u64 {
                bail!("chunk at offset {} after {} bytes", chunk.offset, out.len());
            }
            out.extend_from_slice(&chunk.data);
        }
        Ok(out)
    }
}

pub fn is_ended(j: &pb::Job) -> bool {
    matches!(
        pb::ExecutionState::try_from(j.execution_state),
        Ok(pb::ExecutionState::Succeeded | pb::ExecutionState::Failed)
    )
}

pub fn key(ws: &str, ex: &str, name: &str) -> pb::JobKey {
    pb::JobKey {
        workspace: ws.into(),
        experiment: ex.into(),
        name: name.into(),
    }
}

/// A manual-scale cluster with `target` nodes.
pub fn cluster(ws: &str, name: &str, target: i32) -> pb::Cluster {
    pb::Cluster {
        workspace: ws.into(),
        name: name.into(),
        vm_size: "local".into(),
        scale_settings: Some(pb::ScaleSettings {
            manual: Some(pb::ManualScaleSettings {
                target_node_count: target,
                ..Default::default()
            }),
            auto_scale: None,
        }),
        ..Default::default()
    }
}

/// A one-node customToolkit job.
pub fn custom_job(ws: &str, ex: &str, name: &str, cluster: &str, command_line: &str) -> pb::Job {
    pb::Job {
        workspace: ws.into(),
        experiment: ex.into(),
        name: name.into(),
        cluster: Some(pb::ClusterRef {
            workspace: String::new(),
            name: cluster.into(),
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

pub fn exec_state(j: &pb::Job) -> pb::ExecutionState {
    pb::ExecutionState::try_from(j.execution_state).unwrap_or(pb::ExecutionState::Unspecified)
}

pub fn exit_code(j: &pb::Job) -> Option<i32> {
    j.execution_info.as_ref().and_then(|i| i.exit_code)
}

/// Polls `cond` every 20 ms until it holds or `within` passes; for sync tests.
/// The error names `what`, so a timeout says which condition never held.
pub fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + within;
    while !cond() {
        if Instant::now() > deadline {
            bail!("timed out after {within:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Polls `cond` every 20 ms until it holds or `within` passes.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut cond: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = Instant::now() + within;
    loop {
        if cond().await? {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
