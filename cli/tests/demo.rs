//! `bai demo` end to end against a fake `bai-coordinator` process.
//!
//! This test binary has no libtest harness: run with `--local-agents` (as
//! `bai demo` runs the coordinator) it *is* the fake coordinator — a real
//! tonic server that writes `<state-dir>/coordinator.addr`, records the calls
//! it gets in `<state-dir>/calls.log`, "runs" a job by serving canned output
//! (a job whose command line is `exit N` fails with N), and on SIGTERM writes
//! `<state-dir>/stopped` and exits. Run without it, it runs the tests.

#![allow(clippy::unwrap_used)]

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bai_proto::v1 as pb;
use bai_proto::v1::cluster_service_server::{ClusterService, ClusterServiceServer};
use bai_proto::v1::experiment_service_server::{ExperimentService, ExperimentServiceServer};
use bai_proto::v1::job_service_server::{JobService, JobServiceServer};
use bai_proto::v1::workspace_service_server::{WorkspaceService, WorkspaceServiceServer};
use tokio::sync::{Mutex, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};

const BAI: &str = env!("CARGO_BIN_EXE_bai");
const STDOUT_PARTS: [&str; 3] = ["hello from the fake node\n", "countdown 1\n", "done\n"];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--local-agents") {
        fake_coordinator(&args);
        return;
    }
    let tests: [(&str, fn()); 2] = [
        (
            "demo_runs_a_job_streams_it_and_stops_the_coordinator",
            demo_runs_a_job,
        ),
        (
            "demo_exits_with_the_jobs_exit_code_and_keep_leaves_it_running",
            demo_failing_job_and_keep,
        ),
    ];
    println!("\nrunning {} tests", tests.len());
    let start = Instant::now();
    let mut failed = 0;
    for (name, t) in tests {
        let ok = std::panic::catch_unwind(t).is_ok();
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        failed += usize::from(!ok);
    }
    let passed = tests.len() - failed;
    let verdict = if failed == 0 { "ok" } else { "FAILED" };
    println!(
        "\ntest result: {verdict}. {passed} passed; {failed} failed; 0 ignored; 0 measured; 0 filtered out; finished in {:.2}s\n",
        start.elapsed().as_secs_f64()
    );
    if failed > 0 {
        std::process::exit(101);
    }
}

// ---------------------------------------------------------------- the tests

fn demo(state: &Path, extra: &[&str]) -> std::process::Output {
    let me = std::env::current_exe().unwrap();
    let mut c = Command::new(BAI);
    c.arg("demo")
        .arg("--coordinator-bin")
        .arg(&me)
        .arg("--state-dir")
        .arg(state)
        .args(extra);
    c.env_remove("BAI_COORDINATOR")
        .stdin(std::process::Stdio::null());
    c.output().unwrap()
}

fn calls(state: &Path) -> String {
    std::fs::read_to_string(state.join("calls.log")).unwrap_or_default()
}

fn wait_for(path: &Path) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn demo_runs_a_job() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let out = demo(&state, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        STDOUT_PARTS.concat(),
        "the job's stdout, streamed"
    );
    let log = calls(&state);
    for want in [
        "CreateWorkspace demo",
        "CreateExperiment demo/demo",
        "CreateCluster demo/local vm=local manual=1",
        "CreateJob demo/demo/demo-",
        "WatchJob",
        "StreamOutputFile stdout.txt 0 follow",
    ] {
        assert!(log.contains(want), "{want:?} not in calls:\n{log}");
    }
    assert!(
        log.contains("nodes=1 cmd=echo \"Hello from bai on $(hostname)\""),
        "default command:\n{log}"
    );
    assert!(stderr.contains("succeeded, exit code 0"), "{stderr}");
    assert!(
        stderr.contains("output in ") && stderr.contains("stdouterr"),
        "summary names the output: {stderr}"
    );
    assert!(
        wait_for(&state.join("stopped")),
        "the coordinator got SIGTERM"
    );
}

fn demo_failing_job_and_keep() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let out = demo(&state, &["--command-line", "exit 3", "--keep", "-t", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(calls(&state).contains("manual=2"), "{}", calls(&state));
    assert!(
        stderr.contains("export BAI_COORDINATOR=http://127.0.0.1:"),
        "{stderr}"
    );
    let pid: i32 = std::fs::read_to_string(state.join("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // A SIGTERM the demo sent before it exited would be handled before this
    // later SIGUSR1 (see the fake), so the coordinator answering it proves the
    // demo left it running.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    assert!(
        wait_for(&state.join("usr1")),
        "the coordinator did not answer SIGUSR1 (it was stopped?)"
    );
    assert!(
        !state.join("stopped").exists(),
        "--keep leaves the coordinator running"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(wait_for(&state.join("stopped")));
}

// ---------------------------------------------------------------- the fake coordinator

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn fake_coordinator(args: &[String]) {
    let state = PathBuf::from(flag(args, "--state-dir").unwrap());
    let listen = flag(args, "--listen").unwrap();
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("pid"), std::process::id().to_string()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&listen).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fake = Fake {
            state: state.clone(),
            job: Arc::new(Mutex::new(None)),
        };
        use tokio::signal::unix::{SignalKind, signal};
        // Handlers first: the demo may signal as soon as the address is written.
        let mut term = signal(SignalKind::terminate()).unwrap();
        let mut usr1 = signal(SignalKind::user_defined1()).unwrap();
        let tmp = state.join("coordinator.addr.tmp");
        std::fs::write(&tmp, addr.to_string()).unwrap();
        std::fs::rename(&tmp, state.join("coordinator.addr")).unwrap();
        let server = tonic::transport::Server::builder()
            .add_service(WorkspaceServiceServer::new(fake.clone()))
            .add_service(ExperimentServiceServer::new(fake.clone()))
            .add_service(ClusterServiceServer::new(fake.clone()))
            .add_service(JobServiceServer::new(fake.clone()))
            .serve_with_incoming(TcpListenerStream::new(listener));
        tokio::pin!(server);
        // SIGUSR1 writes `usr1`: a test sends it to learn that every earlier
        // SIGTERM has been seen (a pending SIGTERM wins the biased select).
        loop {
            tokio::select! {
                biased;
                _ = term.recv() => break,
                _ = usr1.recv() => std::fs::write(state.join("usr1"), "SIGUSR1").unwrap(),
                r = &mut server => {
                    r.unwrap();
                    break;
                }
            }
        }
        std::fs::write(state.join("stopped"), "SIGTERM").unwrap();
    });
}

#[derive(Clone)]
struct Fake {
    state: PathBuf,
    job: Arc<Mutex<Option<pb::Job>>>,
}

impl Fake {
    fn record(&self, line: String) {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state.join("calls.log"))
            .unwrap();
        writeln!(f, "{line}").unwrap();
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

fn nope<T>() -> Result<T, Status> {
    Err(Status::unimplemented("fake"))
}

#[tonic::async_trait]
impl WorkspaceService for Fake {
    async fn create_workspace(
        &self,
        r: Request<pb::CreateWorkspaceRequest>,
    ) -> Result<Response<pb::Workspace>, Status> {
        let w = r.into_inner().workspace.unwrap_or_default();
        self.record(format!("CreateWorkspace {}", w.name));
        Ok(Response::new(w))
    }
    async fn get_workspace(
        &self,
        _: Request<pb::GetWorkspaceRequest>,
    ) -> Result<Response<pb::Workspace>, Status> {
        nope()
    }
    async fn list_workspaces(
        &self,
        _: Request<pb::ListWorkspacesRequest>,
    ) -> Result<Response<pb::ListWorkspacesResponse>, Status> {
        nope()
    }
    async fn delete_workspace(
        &self,
        _: Request<pb::DeleteWorkspaceRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        nope()
    }
}

#[tonic::async_trait]
impl ExperimentService for Fake {
    async fn create_experiment(
        &self,
        r: Request<pb::CreateExperimentRequest>,
    ) -> Result<Response<pb::Experiment>, Status> {
        let e = r.into_inner().experiment.unwrap_or_default();
        self.record(format!("CreateExperiment {}/{}", e.workspace, e.name));
        // A reused state dir: the demo must accept "already exists".
        Err(Status::already_exists(format!(
            "experiment '{}' already exists",
            e.name
        )))
    }
    async fn get_experiment(
        &self,
        _: Request<pb::GetExperimentRequest>,
    ) -> Result<Response<pb::Experiment>, Status> {
        nope()
    }
    async fn list_experiments(
        &self,
        _: Request<pb::ListExperimentsRequest>,
    ) -> Result<Response<pb::ListExperimentsResponse>, Status> {
        nope()
    }
    async fn delete_experiment(
        &self,
        _: Request<pb::DeleteExperimentRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        nope()
    }
}

#[tonic::async_trait]
impl ClusterService for Fake {
    async fn create_cluster(
        &self,
        r: Request<pb::CreateClusterRequest>,
    ) -> Result<Response<pb::Cluster>, Status> {
        let c = r.into_inner().cluster.unwrap_or_default();
        let target = c
            .scale_settings
            .as_ref()
            .and_then(|s| s.manual)
            .map_or(-1, |m| m.target_node_count);
        self.record(format!(
            "CreateCluster {}/{} vm={} manual={target}",
            c.workspace, c.name, c.vm_size
        ));
        Ok(Response::new(c))
    }
    async fn get_cluster(
        &self,
        _: Request<pb::GetClusterRequest>,
    ) -> Result<Response<pb::Cluster>, Status> {
        nope()
    }
    async fn list_clusters(
        &self,
        _: Request<pb::ListClustersRequest>,
    ) -> Result<Response<pb::ListClustersResponse>, Status> {
        nope()
    }
    async fn delete_cluster(
        &self,
        _: Request<pb::DeleteClusterRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        nope()
    }
    async fn update_cluster(
        &self,
        _: Request<pb::UpdateClusterRequest>,
    ) -> Result<Response<pb::Cluster>, Status> {
        nope()
    }
    async fn list_cluster_nodes(
        &self,
        _: Request<pb::ListClusterNodesRequest>,
    ) -> Result<Response<pb::ListClusterNodesResponse>, Status> {
        nope()
    }
    async fn list_cluster_files(
        &self,
        _: Request<pb::ListClusterFilesRequest>,
    ) -> Result<Response<pb::ListClusterFilesResponse>, Status> {
        nope()
    }
    type StreamClusterFileStream = BoxStream<pb::OutputFileChunk>;
    async fn stream_cluster_file(
        &self,
        _: Request<pb::StreamClusterFileRequest>,
    ) -> Result<Response<Self::StreamClusterFileStream>, Status> {
        nope()
    }

    async fn clear_node_gpu(
        &self,
        _: Request<pb::ClearNodeGpuRequest>,
    ) -> Result<Response<pb::Node>, Status> {
        nope()
    }

    async fn list_gpu_events(
        &self,
        _: Request<pb::ListGpuEventsRequest>,
    ) -> Result<Response<pb::ListGpuEventsResponse>, Status> {
        nope()
    }

    async fn preempt_node(
        &self,
        _: Request<pb::PreemptNodeRequest>,
    ) -> Result<Response<pb::Node>, Status> {
        nope()
    }

    async fn list_cluster_events(
        &self,
        _: Request<pb::ListClusterEventsRequest>,
    ) -> Result<Response<pb::ListClusterEventsResponse>, Status> {
        nope()
    }

    type WatchMetricsStream = BoxStream<pb::NodeMetrics>;

    async fn watch_metrics(
        &self,
        _: Request<pb::WatchMetricsRequest>,
    ) -> Result<Response<Self::WatchMetricsStream>, Status> {
        nope()
    }
}

fn send_all<T: Send + 'static>(items: Vec<(Duration, T)>) -> BoxStream<T> {
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        for (delay, item) in items {
            tokio::time::sleep(delay).await;
            if tx.send(Ok(item)).await.is_err() {
                return;
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

#[tonic::async_trait]
impl JobService for Fake {
    async fn create_job(
        &self,
        r: Request<pb::CreateJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        let j = r.into_inner().job.unwrap_or_default();
        let cmd = match &j.toolkit {
            Some(pb::job::Toolkit::CustomToolkitSettings(s)) => {
                s.command_line.lines().next().unwrap_or("").to_string()
            }
            _ => String::new(),
        };
        self.record(format!(
            "CreateJob {}/{}/{} nodes={} cmd={cmd}",
            j.workspace, j.experiment, j.name, j.node_count
        ));
        let job = pb::Job {
            id: "feedface-0000-uuid".into(),
            execution_state: pb::ExecutionState::Queued as i32,
            ..j
        };
        // Where a coordinator keeps the output: a stdouterr dir with the job's uuid.
        std::fs::create_dir_all(self.state.join("jobs/demo/feedface-0000-uuid/stdouterr")).unwrap();
        *self.job.lock().await = Some(job.clone());
        Ok(Response::new(job))
    }
    async fn get_job(&self, _: Request<pb::GetJobRequest>) -> Result<Response<pb::Job>, Status> {
        nope()
    }
    async fn list_jobs(
        &self,
        _: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        nope()
    }
    async fn delete_job(
        &self,
        _: Request<pb::DeleteJobRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        nope()
    }
    async fn terminate_job(
        &self,
        _: Request<pb::TerminateJobRequest>,
    ) -> Result<Response<pb::Job>, Status> {
        nope()
    }

    type WatchJobStream = BoxStream<pb::Job>;

    async fn watch_job(
        &self,
        _: Request<pb::WatchJobRequest>,
    ) -> Result<Response<Self::WatchJobStream>, Status> {
        self.record("WatchJob".into());
        let job = self
            .job
            .lock()
            .await
            .clone()
            .ok_or_else(|| Status::not_found("no job"))?;
        let cmd = match &job.toolkit {
            Some(pb::job::Toolkit::CustomToolkitSettings(s)) => s.command_line.clone(),
            _ => String::new(),
        };
        let code: i32 = cmd
            .strip_prefix("exit ")
            .and_then(|c| c.trim().parse().ok())
            .unwrap_or(0);
        let at = |state: pb::ExecutionState, exit_code: Option<i32>| pb::Job {
            execution_state: state as i32,
            execution_info: Some(pb::JobExecutionInfo {
                exit_code,
                ..Default::default()
            }),
            node_ids: vec!["local-0".into()],
            ..job.clone()
        };
        let end = if code == 0 {
            pb::ExecutionState::Succeeded
        } else {
            pb::ExecutionState::Failed
        };
        Ok(Response::new(send_all(vec![
            (Duration::ZERO, at(pb::ExecutionState::Queued, None)),
            (
                Duration::from_millis(100),
                at(pb::ExecutionState::Running, None),
            ),
            (Duration::from_millis(400), at(end, Some(code))),
        ])))
    }

    async fn list_output_files(
        &self,
        _: Request<pb::ListOutputFilesRequest>,
    ) -> Result<Response<pb::ListOutputFilesResponse>, Status> {
        nope()
    }

    type StreamOutputFileStream = BoxStream<pb::OutputFileChunk>;

    async fn stream_output_file(
        &self,
        r: Request<pb::StreamOutputFileRequest>,
    ) -> Result<Response<Self::StreamOutputFileStream>, Status> {
        let r = r.into_inner();
        self.record(format!(
            "StreamOutputFile {} {} {}",
            r.path,
            r.offset,
            if r.follow { "follow" } else { "" }
        ));
        if r.path != "stdout.txt" {
            return Ok(Response::new(send_all(vec![])));
        }
        let mut offset = 0u64;
        let mut chunks = Vec::new();
        for part in STDOUT_PARTS {
            chunks.push((
                Duration::from_millis(100),
                pb::OutputFileChunk {
                    offset,
                    data: part.as_bytes().to_vec(),
                },
            ));
            offset += part.len() as u64;
        }
        Ok(Response::new(send_all(chunks)))
    }
}
