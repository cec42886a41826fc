//! Test support: an in-process coordinator on 127.0.0.1:0 and a hand-written
//! fake agent speaking agent.proto over a real tonic client.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use bai_coordinator::Config;
use bai_proto::v1 as pb;
use bai_proto::v1::agent_message::Msg as In;
use bai_proto::v1::agent_service_client::AgentServiceClient;
use bai_proto::v1::cluster_service_client::ClusterServiceClient;
use bai_proto::v1::coordinator_message::Msg as Out;
use bai_proto::v1::experiment_service_client::ExperimentServiceClient;
use bai_proto::v1::job_service_client::JobServiceClient;
use bai_proto::v1::workspace_service_client::WorkspaceServiceClient;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

pub const WAIT: Duration = Duration::from_secs(10);

pub struct Coordinator {
    pub addr: SocketAddr,
    pub state: PathBuf,
    pub channel: Channel,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), bai_coordinator::RunError>>>,
}

impl Coordinator {
    pub async fn start(state: &Path) -> Self {
        Self::start_with(Config::for_state_dir(state)).await
    }

    pub async fn start_with(config: Config) -> Self {
        let state = config.state_dir.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(bai_coordinator::run(config, listener, async move {
            let _ = rx.await;
        }));
        let channel = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        // Wait for the address file: the coordinator is serving.
        for _ in 0..200 {
            if state.join("coordinator.addr").exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Self {
            addr,
            state,
            channel,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(WAIT, t)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }
    }

    pub fn workspaces(&self) -> WorkspaceServiceClient<Channel> {
        WorkspaceServiceClient::new(self.channel.clone())
    }
    pub fn experiments(&self) -> ExperimentServiceClient<Channel> {
        ExperimentServiceClient::new(self.channel.clone())
    }
    pub fn clusters(&self) -> ClusterServiceClient<Channel> {
        ClusterServiceClient::new(self.channel.clone())
    }
    pub fn jobs(&self) -> JobServiceClient<Channel> {
        JobServiceClient::new(self.channel.clone())
    }

    /// Workspace `w`, experiment `e`, cluster `c` (manual, target `target`).
    pub async fn seed(&self, target: i32) {
        self.workspaces()
            .create_workspace(pb::CreateWorkspaceRequest {
                workspace: Some(pb::Workspace {
                    name: "w".into(),
                    location: "local".into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
        self.experiments()
            .create_experiment(pb::CreateExperimentRequest {
                experiment: Some(pb::Experiment {
                    workspace: "w".into(),
                    name: "e".into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
        self.clusters()
            .create_cluster(pb::CreateClusterRequest {
                cluster: Some(cluster("c", target)),
            })
            .await
            .unwrap();
    }

    pub async fn create_job(&self, name: &str, command: &str) -> pb::Job {
        self.jobs()
            .create_job(pb::CreateJobRequest {
                job: Some(job(name, command)),
            })
            .await
            .unwrap()
            .into_inner()
    }

    pub async fn get_job(&self, name: &str) -> pb::Job {
        self.jobs()
            .get_job(pb::GetJobRequest {
                job: Some(key(name)),
            })
            .await
            .unwrap()
            .into_inner()
    }

    /// Waits until the job reaches `state`.
    pub async fn wait_state(&self, name: &str, state: pb::ExecutionState) -> pb::Job {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let j = self.get_job(name).await;
            if j.execution_state == state as i32 {
                return j;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {name} never became {state:?}: {j:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn nodes(&self) -> Vec<pb::Node> {
        self.clusters()
            .list_cluster_nodes(pb::ListClusterNodesRequest {
                workspace: "w".into(),
                cluster: "c".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .nodes
    }
}

/// Seeds a coordinator that runs in another process.
pub struct Seeder {
    pub channel: Channel,
}

impl Seeder {
    pub async fn seed(&self, target: i32) {
        WorkspaceServiceClient::new(self.channel.clone())
            .create_workspace(pb::CreateWorkspaceRequest {
                workspace: Some(pb::Workspace {
                    name: "w".into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap();
        ClusterServiceClient::new(self.channel.clone())
            .create_cluster(pb::CreateClusterRequest {
                cluster: Some(cluster("c", target)),
            })
            .await
            .unwrap();
    }
}

pub fn cluster(name: &str, target: i32) -> pb::Cluster {
    pb::Cluster {
        workspace: "w".into(),
        name: name.into(),
        vm_size: "STANDARD_NC6".into(),
        scale_settings: Some(pb::ScaleSettings {
            manual: Some(pb::ManualScaleSettings {
                target_node_count: target,
                node_deallocation_option: 0,
            }),
            auto_scale: None,
        }),
        ..Default::default()
    }
}

pub fn job(name: &str, command: &str) -> pb::Job {
    pb::Job {
        workspace: "w".into(),
        experiment: "e".into(),
        name: name.into(),
        cluster: Some(pb::ClusterRef {
            workspace: String::new(),
            name: "c".into(),
        }),
        node_count: 1,
        toolkit: Some(pb::job::Toolkit::CustomToolkitSettings(
            pb::CustomToolkitSettings {
                command_line: command.into(),
            },
        )),
        secrets: vec![pb::EnvironmentVariableWithSecretValue {
            name: "TOKEN".into(),
            value: "s3cret".into(),
            value_secret_reference: None,
        }],
        ..Default::default()
    }
}

pub fn key(name: &str) -> pb::JobKey {
    pb::JobKey {
        workspace: "w".into(),
        experiment: "e".into(),
        name: name.into(),
    }
}

pub fn ts(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms / 1000,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

/// A fake agent: sends what the test says, records what it gets.
pub struct FakeAgent {
    pub node_id: String,
    tx: mpsc::Sender<pb::AgentMessage>,
    rx: tonic::Streaming<pb::CoordinatorMessage>,
    /// The node setup sent right after Registered (by `connect`).
    pub prepare: Option<pb::PrepareNode>,
}

pub fn register(node_id: &str, cluster: &str, jobs: Vec<pb::HeldJob>) -> pb::Register {
    pb::Register {
        node_id: node_id.into(),
        workspace: "w".into(),
        cluster: cluster.into(),
        hostname: "fake-host".into(),
        ip_address: "127.0.0.1".into(),
        cpu_count: 2,
        memory_bytes: 1 << 30,
        agent_version: "test".into(),
        jobs,
        ..Default::default()
    }
}

impl FakeAgent {
    /// Opens a session and sends `reg`; returns the agent (the Registered
    /// message or the error is read by the caller).
    pub async fn open(c: &Coordinator, reg: pb::Register) -> Result<Self, tonic::Status> {
        let (tx, rx) = mpsc::channel(1024);
        let node_id = reg.node_id.clone();
        tx.send(pb::AgentMessage {
            msg: Some(In::Register(reg)),
        })
        .await
        .unwrap();
        let resp = AgentServiceClient::new(c.channel.clone())
            .session(ReceiverStream::new(rx))
            .await?;
        Ok(Self {
            node_id,
            tx,
            rx: resp.into_inner(),
            prepare: None,
        })
    }

    /// Opens a session and expects Registered, then PrepareNode (kept in
    /// `prepare`).
    pub async fn connect(c: &Coordinator, reg: pb::Register) -> (Self, pb::Registered) {
        let mut a = Self::open(c, reg).await.unwrap();
        let registered = match a.recv().await {
            Out::Registered(r) => r,
            other => panic!("expected registered, got {other:?}"),
        };
        match a.recv().await {
            Out::PrepareNode(p) => a.prepare = Some(p),
            other => panic!("expected the node setup after registered, got {other:?}"),
        }
        (a, registered)
    }

    pub async fn send(&self, msg: In) {
        self.tx
            .send(pb::AgentMessage { msg: Some(msg) })
            .await
            .unwrap();
    }

    pub async fn output(&self, job_id: &str, stream: pb::OutputStream, offset: u64, data: &[u8]) {
        self.send(In::Output(pb::OutputChunk {
            job_id: job_id.into(),
            stream: stream as i32,
            offset,
            data: data.to_vec(),
        }))
        .await;
    }

    pub async fn started(&self, job_id: &str) {
        self.send(In::JobStarted(pb::JobStarted {
            job_id: job_id.into(),
            start_time: Some(ts(1_700_000_000_000)),
            pid: 42,
        }))
        .await;
    }

    pub async fn exited(&self, job_id: &str, code: i32, stdout_len: u64, terminated: bool) {
        self.send(In::JobExited(exited(job_id, code, stdout_len, terminated)))
            .await;
    }

    /// The next message; panics on error, end or timeout.
    pub async fn recv(&mut self) -> Out {
        match tokio::time::timeout(WAIT, self.rx.message()).await {
            Ok(Ok(Some(m))) => m.msg.expect("empty coordinator message"),
            Ok(Ok(None)) => panic!("session ended"),
            Ok(Err(s)) => panic!("session failed: {s:?}"),
            Err(_) => panic!("no message within {WAIT:?}"),
        }
    }

    /// The stream's end: Ok(()) for a clean end, Err(status) for an error.
    pub async fn end(&mut self) -> Result<(), tonic::Status> {
        loop {
            match tokio::time::timeout(WAIT, self.rx.message()).await {
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) => return Ok(()),
                Ok(Err(s)) => return Err(s),
                Err(_) => panic!("session did not end within {WAIT:?}"),
            }
        }
    }

    /// Reads messages until one matches, returning it (others are dropped).
    pub async fn until<T>(&mut self, mut f: impl FnMut(Out) -> Option<T>) -> T {
        loop {
            if let Some(t) = f(self.recv().await) {
                return t;
            }
        }
    }

    pub async fn assignment(&mut self) -> pb::AssignJob {
        self.until(|m| match m {
            Out::AssignJob(a) => Some(a),
            _ => None,
        })
        .await
    }

    /// Nothing arrives for `d`.
    pub async fn quiet(&mut self, d: Duration) -> Option<Out> {
        match tokio::time::timeout(d, self.rx.message()).await {
            Ok(Ok(Some(m))) => m.msg,
            _ => None,
        }
    }

    /// Closes the agent's side of the stream.
    pub fn hang_up(self) {}
}

pub fn exited(job_id: &str, code: i32, stdout_len: u64, terminated: bool) -> pb::JobExited {
    pb::JobExited {
        job_id: job_id.into(),
        end_time: Some(ts(1_700_000_001_000)),
        exit_code: code,
        error: None,
        lengths: vec![pb::StreamLength {
            stream: pb::OutputStream::Stdout as i32,
            length: stdout_len,
        }],
        terminated,
        metrics: None,
    }
}

/// Reads a whole output file over StreamOutputFile.
pub async fn read_output(c: &Coordinator, job: &str, path: &str, follow: bool) -> Vec<u8> {
    let mut s = c
        .jobs()
        .stream_output_file(pb::StreamOutputFileRequest {
            job: Some(key(job)),
            output_directory_id: String::new(),
            path: path.into(),
            offset: 0,
            follow,
            attempt: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut out = Vec::new();
    while let Some(chunk) = tokio::time::timeout(WAIT, s.message())
        .await
        .unwrap()
        .unwrap()
    {
        assert_eq!(chunk.offset as usize, out.len());
        out.extend_from_slice(&chunk.data);
    }
    out
}
