//! Test support: an in-process fake coordinator (a real tonic server on
//! 127.0.0.1:0 whose sessions the test scripts message by message), a store
//! that applies agent.proto's output rules and checks rule 3, and the real
//! `bai-agent` binary run as a child process with its own state directory.
#![allow(dead_code, clippy::unwrap_used)]

use bai_proto::v1 as pb;
use pb::agent_message::Msg as AgentMsg;
use pb::agent_service_server::{AgentService, AgentServiceServer};
use pb::coordinator_message::Msg as CoordMsg;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status, Streaming};

pub const STDOUT: i32 = pb::OutputStream::Stdout as i32;
pub const STDERR: i32 = pb::OutputStream::Stderr as i32;
pub const EXEC_LOG: i32 = pb::OutputStream::ExecutionLog as i32;
pub const WAIT: Duration = Duration::from_secs(30);

// ------------------------------------------------------------------ fake coordinator

/// One agent session as the coordinator sees it.
pub struct Session {
    inbound: Streaming<pb::AgentMessage>,
    out: mpsc::UnboundedSender<Result<pb::CoordinatorMessage, Status>>,
}

impl Session {
    /// The next agent message; panics after [`WAIT`]; `None` when the stream ended.
    pub async fn recv(&mut self) -> Option<AgentMsg> {
        match tokio::time::timeout(WAIT, self.inbound.message()).await {
            Ok(Ok(m)) => m.map(|m| m.msg.expect("agent message with a body")),
            Ok(Err(_)) => None,
            Err(_) => panic!("no agent message within {WAIT:?}"),
        }
    }

    /// The next message, or `None` if none arrives within `d`.
    pub async fn recv_within(&mut self, d: Duration) -> Option<AgentMsg> {
        match tokio::time::timeout(d, self.inbound.message()).await {
            Ok(Ok(m)) => m.and_then(|m| m.msg),
            _ => None,
        }
    }

    pub fn send(&self, m: CoordMsg) {
        let _ = self.out.send(Ok(pb::CoordinatorMessage { msg: Some(m) }));
    }

    /// Ends the stream with an error status.
    pub fn fail(&self, s: Status) {
        let _ = self.out.send(Err(s));
    }

    /// Reads `Register` and answers `Registered` with the given resume points.
    pub async fn register(&mut self, resume: Vec<pb::OutputAck>) -> pb::Register {
        let Some(AgentMsg::Register(r)) = self.recv().await else {
            panic!("the first message is not Register")
        };
        self.send(CoordMsg::Registered(pb::Registered {
            node_id: r.node_id.clone(),
            heartbeat_interval: Some(prost_types::Duration {
                seconds: 0,
                nanos: 200_000_000,
            }),
            resume,
        }));
        r
    }

    /// Receives and applies messages until `done(store)` holds.
    pub async fn drive(&mut self, store: &mut Store, done: impl Fn(&Store) -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done(store) {
            assert!(
                Instant::now() < deadline,
                "condition not reached within {WAIT:?}"
            );
            let m = self.recv().await.expect("the agent ended the session");
            if let Some(ack) = store.apply(m) {
                self.send(ack);
            }
        }
    }
}

struct Svc {
    sessions: mpsc::UnboundedSender<Session>,
}

#[tonic::async_trait]
impl AgentService for Svc {
    type SessionStream = UnboundedReceiverStream<Result<pb::CoordinatorMessage, Status>>;

    async fn join(
        &self,
        _req: Request<pb::JoinRequest>,
    ) -> Result<tonic::Response<pb::JoinResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented(
            "the fake coordinator does not join agents",
        ))
    }

    async fn session(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let (out, rx) = mpsc::unbounded_channel();
        let _ = self.sessions.send(Session {
            inbound: req.into_inner(),
            out,
        });
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }
}

/// A scripted coordinator: each agent session is handed to the test.
pub struct FakeCoordinator {
    pub addr: SocketAddr,
    sessions: mpsc::UnboundedReceiver<Session>,
}

impl FakeCoordinator {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let svc = AgentServiceServer::new(Svc { sessions: tx })
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        tokio::spawn(
            tonic::transport::Server::builder()
                .initial_stream_window_size(8 << 20)
                .initial_connection_window_size(16 << 20)
                .max_frame_size(Some(1 << 20))
                .add_service(svc)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        Self { addr, sessions: rx }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn session(&mut self) -> Session {
        tokio::time::timeout(WAIT, self.sessions.recv())
            .await
            .expect("no agent session")
            .expect("server gone")
    }

    /// A session opened within `d`, if any.
    pub async fn session_within(&mut self, d: Duration) -> Option<Session> {
        tokio::time::timeout(d, self.sessions.recv())
            .await
            .ok()
            .flatten()
    }
}

// ------------------------------------------------------------------ store

/// The coordinator's side of output: rule 2 (append at the current length,
/// skip what it has, drop gaps) and a check of rule 3 at every JobExited.
#[derive(Default)]
pub struct Store {
    pub output: HashMap<(String, i32), Vec<u8>>,
    pub started: Vec<pb::JobStarted>,
    pub exited: Vec<pb::JobExited>,
    pub heartbeats: Vec<pb::Heartbeat>,
    pub node_status: Vec<pb::NodeStatus>,
    pub setup_output: Vec<pb::SetupOutput>,
    pub gpu_events: Vec<pb::GpuHealthEvent>,
    pub chunks: usize,
    pub max_chunk: usize,
    pub duplicate_bytes: u64,
    pub gaps: usize,
    /// Offsets of the first chunk of each (job, stream) seen since `mark`.
    pub first_offsets: HashMap<(String, i32), u64>,
    /// When true, chunks are stored but not acknowledged.
    pub no_ack: bool,
    /// Output chunks that arrived before their job's JobStarted.
    pub output_before_start: usize,
}

impl Store {
    pub fn out(&self, job: &str, stream: i32) -> &[u8] {
        self.output
            .get(&(job.to_owned(), stream))
            .map_or(&[], Vec::as_slice)
    }

    pub fn text(&self, job: &str, stream: i32) -> String {
        String::from_utf8_lossy(self.out(job, stream)).into_owned()
    }

    pub fn exited(&self, job: &str) -> Option<&pb::JobExited> {
        self.exited.iter().find(|e| e.job_id == job)
    }

    pub fn resume(&self, job: &str) -> Vec<pb::OutputAck> {
        [STDOUT, STDERR, EXEC_LOG]
            .iter()
            .map(|s| pb::OutputAck {
                job_id: job.to_owned(),
                stream: *s,
                offset: self.out(job, *s).len() as u64,
            })
            .collect()
    }

    pub fn mark(&mut self) {
        self.first_offsets.clear();
    }

    /// Applies one message; returns the ack to send, if any.
    pub fn apply(&mut self, m: AgentMsg) -> Option<CoordMsg> {
        match m {
            AgentMsg::Output(c) => {
                self.chunks += 1;
                if !self.started.iter().any(|s| s.job_id == c.job_id) {
                    self.output_before_start += 1;
                }
                self.max_chunk = self.max_chunk.max(c.data.len());
                let key = (c.job_id.clone(), c.stream);
                self.first_offsets.entry(key.clone()).or_insert(c.offset);
                let buf = self.output.entry(key).or_default();
                let len = buf.len() as u64;
                let end = c.offset + c.data.len() as u64;
                if c.offset > len {
                    self.gaps += 1;
                } else if end <= len {
                    self.duplicate_bytes += c.data.len() as u64;
                } else {
                    let skip = (len - c.offset) as usize;
                    self.duplicate_bytes += skip as u64;
                    buf.extend_from_slice(&c.data[skip..]);
                }
                let offset = buf.len() as u64;
                (!self.no_ack).then_some(CoordMsg::OutputAck(pb::OutputAck {
                    job_id: c.job_id,
                    stream: c.stream,
                    offset,
                }))
            }
            AgentMsg::JobExited(e) => {
                for l in &e.lengths {
                    assert_eq!(
                        self.out(&e.job_id, l.stream).len() as u64,
                        l.length,
                        "rule 3: JobExited before all output of stream {}",
                        l.stream
                    );
                }
                self.exited.push(e);
                None
            }
            AgentMsg::JobStarted(s) => {
                self.started.push(s);
                None
            }
            AgentMsg::Heartbeat(h) => {
                self.heartbeats.push(h);
                None
            }
            AgentMsg::Register(_) => panic!("a second Register in one session"),
            AgentMsg::CertificateRequest(_) => panic!("a CSR nobody asked for"),
            AgentMsg::NodeStatus(st) => {
                self.node_status.push(st);
                None
            }
            AgentMsg::SetupOutput(o) => {
                self.setup_output.push(o);
                None
            }
            AgentMsg::GpuEvent(e) => {
                self.gpu_events.push(e);
                None
            }
        }
    }
}

pub fn assign(job_id: &str, command_line: &str) -> pb::AssignJob {
    pb::AssignJob {
        job_id: job_id.to_owned(),
        workspace: "ws".into(),
        experiment: "exp".into(),
        job_name: format!("name-{job_id}"),
        command_line: command_line.to_owned(),
        ..Default::default()
    }
}

pub fn env(name: &str, value: &str) -> pb::EnvironmentVariable {
    pb::EnvironmentVariable {
        name: name.into(),
        value: value.into(),
    }
}

pub fn dur(secs: f64) -> prost_types::Duration {
    let d = Duration::from_secs_f64(secs);
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

// ------------------------------------------------------------------ agent process

/// A `bai-agent` child process with its own state directory. Dropping it
/// kills the agent and every job process it left behind.
pub struct Agent {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub node_id: String,
}

impl Agent {
    pub fn new() -> Self {
        Self {
            child: None,
            dir: tempfile::Builder::new()
                .prefix("bai-agent-test-")
                .tempdir()
                .unwrap(),
            node_id: "node-1".into(),
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("agent.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn job_dir(&self, job: &str) -> PathBuf {
        self.state_dir().join("jobs").join(job)
    }

    pub fn job_temp(&self, job: &str) -> PathBuf {
        self.state_dir().join("work").join(job)
    }

    pub fn command(&self, url: &str, extra: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_bai-agent"));
        c.args(["--coordinator", url, "--workspace", "ws", "--cluster", "c1"])
            .args(["--node-id", &self.node_id])
            .arg("--state-dir")
            .arg(self.state_dir())
            .args(extra)
            .env_remove("BAI_COORDINATOR")
            .env("RUST_LOG", "bai_agent=debug,info")
            .stdin(Stdio::null());
        c
    }

    /// Starts (or restarts) the agent.
    pub fn start(&mut self, url: &str, extra: &[&str]) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = self
            .command(url, extra)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGKILLs the agent (its jobs keep running).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `sig` and waits for the agent to exit.
    pub fn stop_with(&mut self, sig: nix::sys::signal::Signal) -> ExitStatus {
        let mut c = self.child.take().expect("agent running");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig).unwrap();
        wait_child(&mut c, WAIT).expect("agent did not exit")
    }

    /// Waits for the agent to exit on its own.
    pub fn wait_exit(&mut self, d: Duration) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        let st = wait_child(&mut c, d);
        if st.is_none() {
            self.child = Some(c);
        }
        st
    }

    /// Pids of live processes whose environment or command line mentions
    /// this test's directory (jobs and their supervisors).
    pub fn leftover_pids(&self) -> Vec<i32> {
        pids_mentioning(self.dir.path().to_str().unwrap())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        for pid in self.leftover_pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // Jobs never released leave their cgroups (run as root): remove them.
        let jobs = std::fs::read_dir(self.state_dir().join("jobs"));
        for e in jobs.into_iter().flatten().flatten() {
            let rec = std::fs::read(e.path().join("launch.json"))
                .ok()
                .and_then(|b| {
                    serde_json::from_slice::<bai_agent::jobs::layout::LaunchRecord>(&b).ok()
                });
            if let Some(cg) = rec.and_then(|r| r.cgroup) {
                let _ = cg.remove();
            }
        }
        if std::thread::panicking() {
            eprintln!("----- agent log -----\n{}", self.log());
        }
    }
}

pub fn wait_child(c: &mut Child, d: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + d;
    loop {
        if let Some(st) = c.try_wait().unwrap() {
            return Some(st);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Live (non-zombie) processes whose environment or argv contains `needle`.
pub fn pids_mentioning(needle: &str) -> Vec<i32> {
    use bai_common::procfs;
    let hit = |entries: Option<Vec<std::ffi::OsString>>| {
        entries.is_some_and(|e| {
            e.iter()
                .any(|a| contains(a.as_encoded_bytes(), needle.as_bytes()))
        })
    };
    procfs::other_pids()
        .filter(|&p| procfs::alive(p) && (hit(procfs::environ(p)) || hit(procfs::args(p))))
        .collect()
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Polls `f` until it holds or `d` passes.
pub async fn eventually(d: Duration, f: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + d;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}

pub fn file_mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}
