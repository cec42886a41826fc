//! Job cgroups with the real agent and the real shim on this host's
//! cgroupfs (as root): terminate and a lost shim kill a job that escaped its
//! session, also after an agent restart; a job's memory figure; cleanup at
//! release; GPU device nodes denied by the devices controller, for a job
//! run as another user. Skipped with a reason when not root or without
//! cgroupfs; under `CI` they fail instead.

#![allow(clippy::unwrap_used)]

mod common;

use bai_agent::jobs::cgroup::{CgroupConfig, Cgroups, JobCgroup, NVIDIA_MAJOR};
use bai_agent::jobs::layout::LaunchRecord;
use bai_proto::v1 as pb;
use common::*;
use pb::coordinator_message::Msg as CoordMsg;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn gate() -> bool {
    let why = if !nix::unistd::geteuid().is_root() {
        Some("not root")
    } else if !Path::new("/sys/fs/cgroup").is_dir() {
        Some("no /sys/fs/cgroup")
    } else {
        None
    };
    match why {
        None => true,
        Some(why) if std::env::var_os("CI").is_some() => {
            panic!("cgroup tests need root and cgroupfs: {why}")
        }
        Some(why) => {
            eprintln!("skipping: {why}");
            false
        }
    }
}

/// An agent whose job cgroups live in a subtree of their own, removed
/// (with anything left in it) when dropped.
struct CgAgent {
    agent: Agent,
    config: PathBuf,
    name: String,
}

impl CgAgent {
    fn new() -> Self {
        let agent = Agent::new();
        let name = format!("bai-test-{}", uuid::Uuid::new_v4().simple());
        let config = agent.dir.path().join("agent.toml");
        std::fs::write(&config, format!("[cgroups]\nname = \"{name}\"\n")).unwrap();
        Self {
            agent,
            config,
            name,
        }
    }

    fn start(&mut self, url: &str) {
        let cfg = self.config.to_str().unwrap().to_owned();
        self.agent.start(url, &["--config", &cfg]);
    }

    /// The job's cgroup as its `launch.json` records it.
    fn cgroup(&self, job: &str) -> JobCgroup {
        let rec: LaunchRecord = serde_json::from_slice(
            &std::fs::read(self.agent.job_dir(job).join("launch.json")).unwrap(),
        )
        .unwrap();
        rec.cgroup.expect("the job has a cgroup")
    }

    /// Parents of this agent's job cgroups (`.../<name>`).
    fn subtrees(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
            let members = bai_agent::jobs::cgroup::parse::proc_cgroup(&own);
            let ctl = e.file_name().to_string_lossy().into_owned();
            if let Some(p) = bai_agent::jobs::cgroup::parse::v1_path(&members, &ctl) {
                let base = e.path().join(p.strip_prefix("/").unwrap()).join(&self.name);
                if base.exists() {
                    out.push(base);
                }
            }
        }
        out
    }
}

impl Drop for CgAgent {
    fn drop(&mut self) {
        self.agent.kill();
        for base in self.subtrees() {
            let jobs = std::fs::read_dir(&base).into_iter().flatten().flatten();
            for e in jobs.filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
                for pid in std::fs::read_to_string(e.path().join("cgroup.procs"))
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| l.parse().ok())
                {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let deadline = std::time::Instant::now() + Duration::from_secs(2);
                while std::fs::remove_dir(e.path()).is_err() && std::time::Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            let _ = std::fs::remove_dir(&base);
        }
    }
}

/// A job whose child leaves its session and group, with a nested bash,
/// and a sleeper of its own; every process carries `marker`.
fn escaping_job(id: &str, marker: &str, wait: &str) -> pb::AssignJob {
    let mut job = assign(
        id,
        &format!(
            "trap '' TERM; setsid bash -c 'trap \"\" TERM; sleep 31337 & bash -c \"sleep 31338\"; wait' & echo ready; {wait} wait"
        ),
    );
    job.environment_variables.push(env("TEST_MARKER", marker));
    job
}

/// The processes of the escaping job have started (bash, setsid's bash,
/// two sleeps and the nested bash where it does not exec).
async fn wait_escaped(marker: &str) {
    assert!(
        eventually(Duration::from_secs(20), || {
            let pids = pids_mentioning(marker);
            let sleeps = pids
                .iter()
                .filter(|&&p| {
                    bai_common::procfs::args(p)
                        .is_some_and(|a| a.first().is_some_and(|a| a == "sleep"))
                })
                .count();
            sleeps >= 2
        })
        .await,
        "the job's sleepers did not start: {:?}",
        pids_mentioning(marker)
    );
    // At least one process is in a session that is not the shim's.
    let sids: std::collections::HashSet<i32> = pids_mentioning(marker)
        .into_iter()
        .filter_map(|p| bai_common::procfs::stat(p).map(|s| s.sid))
        .collect();
    assert!(
        sids.len() >= 2,
        "nothing escaped the job's session: {sids:?}"
    );
}

async fn terminate_and_check(
    s: &mut Session,
    store: &mut Store,
    job: &str,
    marker: &str,
    cg: &JobCgroup,
) {
    assert!(cg.procs().unwrap().len() >= 3, "{:?}", cg.procs());
    s.send(CoordMsg::TerminateJob(pb::TerminateJob {
        job_id: job.into(),
        grace_period: Some(dur(0.5)),
    }));
    s.drive(store, |st| st.exited(job).is_some()).await;
    let e = store.exited(job).unwrap();
    assert!(e.terminated);
    assert_eq!(e.exit_code, 128 + 9, "the job ignored SIGTERM");
    assert!(
        eventually(Duration::from_secs(10), || pids_mentioning(marker)
            .is_empty())
        .await,
        "left: {:?}",
        pids_mentioning(marker)
    );
    assert!(cg.procs().unwrap().is_empty());
    let log = store.text(job, EXEC_LOG);
    assert!(
        log.contains("to every process in the job's cgroup"),
        "{log}"
    );
}

async fn release_and_check(s: &mut Session, agent: &CgAgent, job: &str, cg: &JobCgroup) {
    assert!(cg.dirs.iter().all(|d| d.path.is_dir()));
    s.send(CoordMsg::ReleaseJob(pb::ReleaseJob { job_id: job.into() }));
    assert!(
        eventually(Duration::from_secs(10), || {
            !agent.agent.job_dir(job).exists() && cg.dirs.iter().all(|d| !d.path.exists())
        })
        .await,
        "the job's cgroup is still there after release: {:?}",
        cg.dirs
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_kills_a_job_that_left_its_session_and_release_removes_its_cgroup() {
    if !gate() {
        return;
    }
    let mut coord = FakeCoordinator::start().await;
    let mut agent = CgAgent::new();
    agent.start(&coord.url());
    let mut s = coord.session().await;
    s.register(vec![]).await;
    let marker = format!("marker-{}", uuid::Uuid::new_v4());
    s.send(CoordMsg::AssignJob(escaping_job(
        "job-e",
        &marker,
        "sleep 1000 &",
    )));
    let mut store = Store::default();
    s.drive(&mut store, |st| st.text("job-e", STDOUT) == "ready\n")
        .await;
    wait_escaped(&marker).await;
    let cg = agent.cgroup("job-e");
    assert!(
        agent.agent.log().contains("jobs run in cgroup"),
        "{}",
        agent.agent.log()
    );
    // The shim went back to the agent's cgroup: it is not killed with the job.
    let started: serde_json::Value = serde_json::from_slice(
        &std::fs::read(agent.agent.job_dir("job-e").join("started.json")).unwrap(),
    )
    .unwrap();
    let shim = started["shim_pid"].as_i64().unwrap() as i32;
    assert!(!cg.procs().unwrap().contains(&shim));
    terminate_and_check(&mut s, &mut store, "job-e", &marker, &cg).await;
    release_and_check(&mut s, &agent, "job-e", &cg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_still_kills_the_whole_cgroup() {
    if !gate() {
        return;
    }
    let mut coord = FakeCoordinator::start().await;
    let mut agent = CgAgent::new();
    agent.start(&coord.url());
    let mut s = coord.session().await;
    s.register(vec![]).await;
    let marker = format!("marker-{}", uuid::Uuid::new_v4());
    s.send(CoordMsg::AssignJob(escaping_job(
        "job-r",
        &marker,
        "sleep 1000 &",
    )));
    let mut store = Store::default();
    s.drive(&mut store, |st| st.text("job-r", STDOUT) == "ready\n")
        .await;
    wait_escaped(&marker).await;
    agent.agent.kill();
    drop(s);
    agent.start(&coord.url());
    let mut s = coord.session().await;
    let reg = s.register(store.resume("job-r")).await;
    assert!(
        reg.jobs
            .iter()
            .any(|j| j.job_id == "job-r" && j.exited.is_none())
    );
    let cg = agent.cgroup("job-r");
    terminate_and_check(&mut s, &mut store, "job-r", &marker, &cg).await;
    release_and_check(&mut s, &agent, "job-r", &cg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_shim_takes_the_escaped_processes_with_it() {
    if !gate() {
        return;
    }
    let mut coord = FakeCoordinator::start().await;
    let mut agent = CgAgent::new();
    agent.start(&coord.url());
    let mut s = coord.session().await;
    s.register(vec![]).await;
    let marker = format!("marker-{}", uuid::Uuid::new_v4());
    s.send(CoordMsg::AssignJob(escaping_job(
        "job-l",
        &marker,
        "sleep 1000 &",
    )));
    let mut store = Store::default();
    s.drive(&mut store, |st| st.text("job-l", STDOUT) == "ready\n")
        .await;
    wait_escaped(&marker).await;
    let started: serde_json::Value = serde_json::from_slice(
        &std::fs::read(agent.agent.job_dir("job-l").join("started.json")).unwrap(),
    )
    .unwrap();
    let shim = started["shim_pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    s.drive(&mut store, |st| st.exited("job-l").is_some()).await;
    assert_eq!(
        store.exited("job-l").unwrap().error.as_ref().unwrap().code,
        "ExitStatusUnknown"
    );
    assert!(
        eventually(Duration::from_secs(10), || pids_mentioning(&marker)
            .is_empty())
        .await,
        "left: {:?}",
        pids_mentioning(&marker)
    );
    let cg = agent.cgroup("job-l");
    release_and_check(&mut s, &agent, "job-l", &cg).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_memory_figure_reflects_what_it_holds() {
    if !gate() {
        return;
    }
    let mut coord = FakeCoordinator::start().await;
    let mut agent = CgAgent::new();
    agent.start(&coord.url());
    let mut s = coord.session().await;
    s.register(vec![]).await;
    // tail keeps the last 64 MiB of its input until EOF, which never comes.
    s.send(CoordMsg::AssignJob(assign(
        "job-m",
        "{ head -c 67108864 /dev/zero; exec sleep 1000; } | tail -c 67108864 >/dev/null",
    )));
    let mut store = Store::default();
    s.drive(&mut store, |st| !st.started.is_empty()).await;
    let cg = agent.cgroup("job-m");
    assert!(
        eventually(Duration::from_secs(20), || cg
            .figures()
            .memory_bytes
            .is_some_and(|b| b >= 64 << 20))
        .await,
        "{:?}",
        cg.figures()
    );
    let f = cg.figures();
    assert!(f.memory_peak_bytes.unwrap() >= 64 << 20, "{f:?}");
    assert!(f.cpu_seconds.unwrap() > 0.0, "{f:?}");
    s.send(CoordMsg::TerminateJob(pb::TerminateJob {
        job_id: "job-m".into(),
        grace_period: Some(dur(0.2)),
    }));
    s.drive(&mut store, |st| st.exited("job-m").is_some()).await;
    release_and_check(&mut s, &agent, "job-m", &cg).await;
}

/// The device test runs the real shim on a launch record made as the agent
/// makes it (the agent's map from GPU UUIDs to minors comes with the GPU
/// inventory): the job, run as `nobody`, is given minor 1 of four NVIDIA
/// device nodes made with mknod, and opens each.
#[test]
fn a_job_given_gpu_1_of_4_opens_only_its_device_node() {
    if !gate() {
        return;
    }
    if !Path::new("/sys/fs/cgroup/devices/devices.deny").exists() {
        assert!(
            std::env::var_os("CI").is_none()
                || Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
            "a v1 host without the devices controller"
        );
        eprintln!("skipping: no v1 devices controller (v2 confines GPUs by environment only)");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("bai-gpu-test-")
        .tempdir()
        .unwrap();
    let dev = dir.path().join("dev");
    std::fs::create_dir(&dev).unwrap();
    for minor in 0..4 {
        nix::sys::stat::mknod(
            &dev.join(format!("nvidia{minor}")),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(u64::from(NVIDIA_MAJOR), minor),
        )
        .unwrap();
    }
    let name = format!("bai-test-{}", uuid::Uuid::new_v4().simple());
    let cgs = Cgroups::detect(&CgroupConfig {
        name: name.clone(),
        dev_dir: dev.clone(),
        ..CgroupConfig::default()
    });
    let minors = (0..4).map(|m| (format!("GPU-{m}"), m)).collect();
    assert_eq!(cgs.gpu_isolation(4, &minors), "devices-cgroup-v1");
    assert_eq!(cgs.gpu_isolation(0, &Default::default()), "");
    // A GPU whose minor the driver did not give cannot be confined.
    assert_eq!(cgs.gpu_isolation(5, &minors), "env-only");
    assert_eq!(cgs.devices().gpu_minors, [0, 1, 2, 3]);
    let cg = cgs.create("job-gpu", Some(&[1])).unwrap().unwrap();
    let job_dir = dir.path().join("job-gpu");
    let spool = job_dir.join("stdouterr");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&spool).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    use std::os::unix::fs::PermissionsExt;
    for d in [dir.path(), work.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let script = format!(
        "id -u; for i in 0 1 2 3; do ( exec 3<{0}/nvidia$i ) 2>&1 | grep -o 'No such device or address\\|Operation not permitted' | head -1; done",
        dev.display()
    );
    let rec = LaunchRecord {
        job_id: "job-gpu".into(),
        shell: "bash".into(),
        command_line: script,
        work_dir: work.clone(),
        env: vec![("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into())],
        max_wall_clock_ms: None,
        assigned_at_ns: 0,
        run_as: Some(bai_agent::node::admin_user::RunAs {
            name: "nobody".into(),
            uid: 65534,
            gid: 65534,
            home: work.clone(),
        }),
        cgroup: Some(cg.clone()),
        gpu_minors: Some(vec![1]),
        gpu_uuids: Vec::new(),
        preparation: None,
        shared_temp: None,
        container: None,
    };
    bai_agent::jobs::layout::write_record(&job_dir.join("launch.json"), &rec, 0o600).unwrap();
    let st = std::process::Command::new(env!("CARGO_BIN_EXE_bai-agent"))
        .arg("shim")
        .arg(&job_dir)
        .status()
        .unwrap();
    assert!(st.success());
    let out = std::fs::read_to_string(spool.join("stdout.txt")).unwrap();
    let log = std::fs::read_to_string(spool.join("execution.log")).unwrap_or_default();
    assert_eq!(
        out,
        "65534\nOperation not permitted\nNo such device or address\nOperation not permitted\nOperation not permitted\n",
        "{log}"
    );
    cg.remove().unwrap();
    for d in &cg.dirs {
        let _ = std::fs::remove_dir(d.path.parent().unwrap());
    }
}
