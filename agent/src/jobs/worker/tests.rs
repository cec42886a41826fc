//! The worker against a fake supervisor, in paused time: the test plays the
//! shim (writes its records, ends it by killing a stand-in process whose
//! pidfd the worker watches) and the fake launcher records every signal with
//! the (virtual) time it was sent. Real files, real inotify, real pidfds; only
//! the clock and the job's processes are not real.

use super::*;
use crate::config::ShipConfig;
use crate::jobs::env::BaseEnv;
use crate::jobs::launcher::LaunchError;
use crate::jobs::layout::{ExitRecord, Layout, TerminateReason, write_record_volatile};
use crate::model::{JobError, STREAMS};
use bai_common::process::ProcessHandle;
use nix::sys::signal::Signal;
use std::path::Path;
use std::process::Child;
use std::sync::atomic::{AtomicUsize, Ordering};

const SHIM_PID: i32 = 0x3fff_fff0;
const PGID: i32 = 0x3fff_fff1;

#[derive(Default)]
struct FakeShim {
    signals: Mutex<Vec<(Signal, Instant)>>,
    /// The process whose exit stands for the shim's (its pidfd is the
    /// handle's); killed when the test plays the shim exiting.
    alive: Mutex<Option<Child>>,
    launches: AtomicUsize,
}

impl FakeShim {
    fn signals(&self) -> Vec<Signal> {
        self.signals.lock().unwrap().iter().map(|s| s.0).collect()
    }

    /// Plays the shim's exit: kills and reaps the stand-in, so its pidfd is
    /// readable when this returns.
    fn exit(&self) {
        if let Some(mut c) = self.alive.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for FakeShim {
    fn drop(&mut self) {
        self.exit();
    }
}

impl Launcher for FakeShim {
    fn launch(&self, _paths: &JobPaths) -> Result<ShimHandle, LaunchError> {
        let stand_in = std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .unwrap();
        let exit = ProcessHandle::open(stand_in.id() as i32).unwrap();
        *self.alive.lock().unwrap() = Some(stand_in);
        self.launches.fetch_add(1, Ordering::SeqCst);
        Ok(ShimHandle {
            pid: SHIM_PID,
            exit: Some(exit),
            child: false,
        })
    }
    fn find_shim(&self, _pid: Option<i32>, _job_dir: &Path) -> Option<ShimHandle> {
        None
    }
    fn shim_alive(&self, _pid: i32, _job_dir: &Path) -> bool {
        false
    }
    fn signal_job(
        &self,
        pgid: i32,
        _cgroup: Option<&crate::jobs::cgroup::JobCgroup>,
        signal: Signal,
    ) -> std::io::Result<bool> {
        assert_eq!(pgid, PGID);
        self.signals.lock().unwrap().push((signal, Instant::now()));
        Ok(true)
    }
    fn reap(&self, _pid: i32) {}
    fn kill_lost(
        &self,
        _shim: Option<i32>,
        _pgid: Option<i32>,
        _cgroup: Option<&crate::jobs::cgroup::JobCgroup>,
        _marker: &str,
    ) -> usize {
        0
    }
}

struct Rig {
    _dir: tempfile::TempDir,
    shim: Arc<FakeShim>,
    handle: Handle,
    paths: JobPaths,
    out: mpsc::UnboundedReceiver<Outbound>,
}

fn spec(max_wall: Option<Duration>) -> JobSpec {
    JobSpec {
        job_id: JobId::parse("job-1").unwrap(),
        workspace: "ws".into(),
        experiment: "ex".into(),
        job_name: "j".into(),
        command_line: "true".into(),
        environment_variables: vec![],
        secrets: vec![],
        system_environment_variables: vec![],
        max_wall_clock_time: max_wall,
        volumes: Vec::new(),
        gpu_uuids: Vec::new(),
        preparation: None,
        mpi: None,
        rank: 0,
        nodes: 1,
        container: None,
    }
}

impl Rig {
    fn start(max_wall: Option<Duration>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(
            dir.path(),
            &dir.path().join("work"),
            &dir.path().join("mnt"),
        );
        let settings = JobSettings {
            layout: layout.clone(),
            shell: "/bin/sh".into(),
            base_env: BaseEnv {
                user: "u".into(),
                home: "/".into(),
                lang: None,
                tz: None,
            },
            default_grace: Duration::from_secs(10),
            run_as: tokio::sync::watch::channel(None).1,
            mounts: None,
            cgroups: Arc::new(crate::jobs::cgroup::Cgroups::none()),
            gpu_minors: Arc::default(),
            ship: ShipConfig {
                chunk_bytes: 1 << 16,
                max_unacked_bytes: 1 << 20,
            },
            node_id: "n1".into(),
            mpi_launcher: "/usr/bin/bai-mpi".into(),
            containers: None,
            image_cache: None,
        };
        let shim = Arc::new(FakeShim::default());
        let deps = Deps {
            launcher: shim.clone(),
            settings: Arc::new(settings),
            watcher: Some(Watcher::start().unwrap()),
            blocking: Arc::new(Semaphore::new(BLOCKING_JOBS)),
        };
        let spec = spec(max_wall);
        let paths = layout.job(&spec.job_id);
        let (tx, out) = mpsc::unbounded_channel();
        let handle = spawn(
            Start {
                id: spec.job_id.clone(),
                paths: paths.clone(),
                origin: Origin::New(Box::new(spec)),
            },
            deps,
            Some((Link { out: tx }, [0; STREAMS])),
        );
        Self {
            _dir: dir,
            shim,
            handle,
            paths,
            out,
        }
    }

    fn phase(&self) -> Phase {
        self.handle.shared.lock().unwrap().phase
    }

    fn wakeups(&self) -> u64 {
        self.handle.shared.lock().unwrap().wakeups
    }

    /// Waits (in virtual time, a millisecond at a time) until `f` holds.
    async fn until(&self, what: &str, f: impl Fn(&Self) -> bool) {
        for _ in 0..100_000 {
            if f(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("never reached: {what} (phase {:?})", self.phase());
    }

    /// Plays the shim: the job's process is running.
    async fn job_starts(&self) {
        self.until("launched", |r| r.shim.launches.load(Ordering::SeqCst) == 1)
            .await;
        let rec = StartedRecord {
            shim_pid: SHIM_PID,
            pid: PGID,
            pgid: PGID,
            start_time_ns: timefmt::to_unix_nanos(SystemTime::now()),
        };
        write_record_volatile(&self.paths.started, &rec, 0o644).unwrap();
        self.until("running", |r| r.phase() != Phase::Starting)
            .await;
    }

    /// Plays the shim: the job ended with `code`, then the shim exits.
    async fn job_exits(&self, code: i32) {
        let rec = ExitRecord {
            exit_code: code,
            end_time_ns: timefmt::to_unix_nanos(SystemTime::now()),
            error: None,
        };
        write_record_volatile(&self.paths.exit, &rec, 0o644).unwrap();
        self.shim.exit();
        self.until("exit known", |r| !r.phase().is_live()).await;
    }

    /// Plays the coordinator: acknowledges every chunk received so far.
    fn ack_all(&mut self) {
        while let Ok(m) = self.out.try_recv() {
            if let Outbound::Output {
                stream,
                offset,
                data,
                ..
            } = m
            {
                let end = offset + data.len() as u64;
                self.handle.ctl.send(Ctl::Ack(stream, end)).unwrap();
            }
        }
    }

    fn terminate(&self, grace: Duration) {
        self.handle.ctl.send(Ctl::Terminate(Some(grace))).unwrap();
    }

    async fn exited(&mut self) -> JobExit {
        loop {
            match self.out.recv().await.expect("worker ended") {
                Outbound::JobExited { exit, .. } => return exit,
                _ => continue,
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn terminate_sends_sigterm_and_sigkill_only_after_the_grace_period() {
    let mut rig = Rig::start(None);
    rig.job_starts().await;
    assert_eq!(rig.phase(), Phase::Running);
    let grace = Duration::from_secs(30);
    rig.terminate(grace);
    rig.until("SIGTERM", |r| !r.shim.signals().is_empty()).await;
    assert_eq!(
        rig.shim.signals(),
        [Signal::SIGTERM],
        "SIGTERM first, alone"
    );
    // Just before the grace period ends: still no SIGKILL.
    tokio::time::sleep(grace - Duration::from_secs(1)).await;
    assert_eq!(rig.shim.signals(), [Signal::SIGTERM]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    rig.until("SIGKILL", |r| r.shim.signals().len() == 2).await;
    let s = rig.shim.signals.lock().unwrap().clone();
    assert_eq!(s[1].0, Signal::SIGKILL);
    let waited = s[1].1 - s[0].1;
    assert!(
        waited >= grace && waited < grace + Duration::from_secs(1),
        "SIGKILL {waited:?} after SIGTERM"
    );
    assert_eq!(rig.phase(), Phase::Killing);
    rig.job_exits(137).await;
    let e = rig.exited().await;
    assert!(e.terminated && e.error.is_none());
    assert_eq!(e.exit_code, 137);
    let log = std::fs::read_to_string(rig.paths.stream(Stream::ExecutionLog)).unwrap();
    assert!(log.contains("SIGKILL in 30.0s"), "{log}");
    assert!(log.contains("the grace period is over"), "{log}");
    assert_eq!(rig.phase(), Phase::Reported);
}

#[tokio::test(start_paused = true)]
async fn a_job_that_stops_on_sigterm_is_never_killed() {
    let mut rig = Rig::start(None);
    rig.job_starts().await;
    rig.terminate(Duration::from_secs(30));
    rig.until("SIGTERM", |r| !r.shim.signals().is_empty()).await;
    rig.job_exits(143).await;
    // Long past the grace period: the kill timer went with the exit.
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(rig.shim.signals(), [Signal::SIGTERM]);
    assert_eq!(rig.exited().await.exit_code, 143);
}

#[tokio::test(start_paused = true)]
async fn the_max_wall_clock_time_is_enforced_on_time() {
    let mut rig = Rig::start(Some(Duration::from_secs(60)));
    rig.job_starts().await;
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert!(rig.shim.signals().is_empty(), "terminated early");
    tokio::time::sleep(Duration::from_secs(2)).await;
    rig.until("SIGTERM", |r| !r.shim.signals().is_empty()).await;
    assert_eq!(rig.shim.signals(), [Signal::SIGTERM]);
    let t: TerminateRecord = crate::jobs::layout::read_record(&rig.paths.terminate)
        .unwrap()
        .unwrap();
    assert_eq!(t.reason, TerminateReason::MaxWallClockTime);
    assert_eq!(t.grace_ms, 10_000, "the agent's default grace period");
    rig.job_exits(143).await;
    let e = rig.exited().await;
    assert!(!e.terminated);
    assert_eq!(
        e.error.map(|e: JobError| e.code),
        Some("MaxWallClockTimeExceeded".to_owned())
    );
}

#[tokio::test(start_paused = true)]
async fn an_idle_running_job_costs_no_wakeups() {
    let mut rig = Rig::start(None);
    rig.job_starts().await;
    // Let the start settle (JobStarted and the execution log's first line
    // sent and acknowledged: bytes in flight would rightly set a stall timer).
    tokio::time::sleep(Duration::from_millis(100)).await;
    rig.ack_all();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = rig.wakeups();
    // An hour of virtual time: any timer the worker had set would fire.
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(rig.wakeups(), before, "the worker woke while the job idled");
    // Output wakes it, and is shipped.
    std::fs::write(rig.paths.stream(Stream::Stdout), b"hello\n").unwrap();
    loop {
        match rig.out.recv().await.unwrap() {
            Outbound::Output { data, .. } => {
                assert_eq!(data, b"hello\n");
                break;
            }
            _ => continue,
        }
    }
    assert!(rig.wakeups() > before);
}

#[tokio::test(start_paused = true)]
async fn a_shim_that_dies_without_an_exit_record_is_reported_lost() {
    let mut rig = Rig::start(None);
    rig.job_starts().await;
    rig.shim.exit();
    let e = rig.exited().await;
    assert_eq!(e.exit_code, -1);
    assert_eq!(e.error.unwrap().code, "ExitStatusUnknown");
    let rec: ExitRecord = crate::jobs::layout::read_record(&rig.paths.exit)
        .unwrap()
        .unwrap();
    assert_eq!(rec.exit_code, -1, "the agent recorded the exit");
}

#[tokio::test(start_paused = true)]
async fn release_deletes_the_job_only_after_its_exit() {
    let mut rig = Rig::start(None);
    rig.job_starts().await;
    rig.handle.ctl.send(Ctl::Release).unwrap();
    rig.terminate(Duration::from_secs(1));
    rig.until("SIGTERM", |r| !r.shim.signals().is_empty()).await;
    assert!(rig.paths.dir.exists(), "released while running");
    rig.job_exits(143).await;
    rig.exited().await;
    rig.handle.ctl.send(Ctl::Release).unwrap();
    rig.until("released", |r| r.phase() == Phase::Released)
        .await;
    rig.until("deleted", |r| r.handle.shared.lock().unwrap().released)
        .await;
    assert!(!rig.paths.dir.exists() && !rig.paths.temp.exists());
}
