//! The real detection and the real cgroupfs on this host (v1 controllers,
//! and the empty unified hierarchy of a hybrid host as v2), as root; each
//! test uses a subtree of its own and removes it. Skipped with a reason
//! when not root or without cgroupfs, except under `CI`, where they fail.

use super::*;
use std::time::{Duration, Instant};

/// Whether the host can run these tests; panics under CI when it cannot.
fn gate(root: &Path) -> bool {
    let why = if !nix::unistd::geteuid().is_root() {
        Some("not root")
    } else if !root.is_dir() {
        Some("no cgroupfs")
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

fn config(root: &str) -> CgroupConfig {
    CgroupConfig {
        root: root.into(),
        name: format!("bai-test-{}", uuid::Uuid::new_v4().simple()),
        ..CgroupConfig::default()
    }
}

/// Removes a test's subtree when dropped, even after a failed assertion:
/// what is left in its job directories is killed first.
struct Subtree(Cgroups);

impl Drop for Subtree {
    fn drop(&mut self) {
        let bases: Vec<PathBuf> = match &self.0.mode {
            Mode::V1(ctls) => ctls.iter().map(|c| c.base.clone()).collect(),
            Mode::V2 { jobs, .. } => vec![jobs.clone()],
            Mode::None { .. } => Vec::new(),
        };
        for base in &bases {
            let jobs = std::fs::read_dir(base).into_iter().flatten().flatten();
            for e in jobs.filter(|e| e.file_type().is_ok_and(|t| t.is_dir())) {
                let cg = JobCgroup {
                    version: if matches!(self.0.mode, Mode::V2 { .. }) {
                        Version::V2
                    } else {
                        Version::V1
                    },
                    dirs: vec![CgroupDir {
                        controller: String::new(),
                        path: e.path(),
                        home: base.clone(),
                    }],
                };
                let _ = cg.remove();
            }
            let _ = std::fs::remove_dir(base);
        }
        if let Mode::V2 { jobs, .. } = &self.0.mode
            && let Some(p) = jobs.parent()
        {
            let _ = std::fs::remove_dir(p);
        }
    }
}

impl std::ops::Deref for Subtree {
    type Target = Cgroups;
    fn deref(&self) -> &Cgroups {
        &self.0
    }
}

fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `script` in the job's cgroup: a bash that moves itself in, then
/// execs it. (The shim's own `enter`/`leave` move the whole process, which
/// in this multi-threaded test binary would move every other test's
/// children too; the agent tests in `tests/cgroups.rs` cover them.)
fn spawn_in(cg: &JobCgroup, script: &str) -> std::process::Child {
    let mut enter = String::new();
    for d in &cg.dirs {
        enter.push_str(&format!(
            "echo $$ > '{}/cgroup.procs' || exit 99; ",
            d.path.display()
        ));
    }
    std::process::Command::new("bash")
        .args(["-c", &format!("{enter}exec bash -c \"$0\""), script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn first_line(c: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(c.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    line.trim().to_owned()
}

/// Checks the whole life on one interface: a job that escapes its session
/// and group is listed, killed in full, and its directories removed.
fn kills_an_escaped_child(cgs: &Cgroups) {
    let job = format!("job-{}", uuid::Uuid::new_v4().simple());
    let cg = cgs.create(&job, None).unwrap().expect("a cgroup");
    let me = std::process::id() as i32;
    let mut child = spawn_in(&cg, "setsid sleep 31337 & echo $!; exec sleep 31338");
    let escaped: i32 = first_line(&mut child).parse().unwrap();
    assert!(
        !cg.procs().unwrap().contains(&me),
        "the test left the job's cgroup"
    );
    eventually("both sleeps are in the cgroup", || {
        let p = cg.procs().unwrap();
        p.contains(&escaped) && p.contains(&(child.id() as i32))
    });
    eventually("the sleeper leads a session of its own", || {
        bai_common::procfs::stat(escaped).is_some_and(|s| s.sid == escaped)
    });
    assert!(cg.kill_all(&[]).unwrap() >= 2);
    child.wait().unwrap();
    eventually("the escaped sleeper dies", || {
        !bai_common::procfs::alive(escaped) && cg.procs().unwrap().is_empty()
    });
    cg.remove().unwrap();
    assert!(cg.dirs.iter().all(|d| !d.path.exists()));
}

#[test]
fn v1_on_this_host_tracks_kills_and_removes_a_job() {
    let root = Path::new("/sys/fs/cgroup");
    if !gate(root) {
        return;
    }
    if root.join("cgroup.controllers").exists() {
        eprintln!("skipping: this host is cgroup v2 (see the v2 test)");
        return;
    }
    let cgs = Subtree(Cgroups::detect(&config("/sys/fs/cgroup")));
    assert_eq!(cgs.kind(), "v1", "{:?}", cgs.mode);
    // The devices controller confines GPUs only where the node has their
    // device nodes (this test's host has none: simulated GPUs are env-only).
    let expect = if cgs.devices.gpu_minors.is_empty() {
        "env-only"
    } else {
        "devices-cgroup-v1"
    };
    assert_eq!(cgs.gpu_isolation(1, &one_gpu()), expect);
    let Mode::V1(ctls) = &cgs.mode else {
        unreachable!()
    };
    // The memory controller is where this process's own path may be non-root.
    let own = parse::proc_cgroup(&std::fs::read_to_string("/proc/self/cgroup").unwrap());
    for c in ctls {
        let want = under(&root.join(c.name), parse::v1_path(&own, c.name).unwrap());
        assert_eq!(c.home, want, "{}", c.name);
    }
    kills_an_escaped_child(&cgs);
}

#[test]
fn v1_figures_follow_the_job() {
    let root = Path::new("/sys/fs/cgroup");
    if !gate(root) || root.join("cgroup.controllers").exists() {
        return;
    }
    let cgs = Subtree(Cgroups::detect(&config("/sys/fs/cgroup")));
    let cg = cgs.create("job-mem", None).unwrap().unwrap();
    // tail keeps the last 64 MiB of its input in memory until EOF.
    let mut child = spawn_in(
        &cg,
        "{ head -c 67108864 /dev/zero; exec sleep 31339; } | tail -c 67108864 >/dev/null",
    );
    eventually("64 MiB charged to the job", || {
        cg.figures().memory_bytes.is_some_and(|b| b >= 64 << 20)
    });
    let f = cg.figures();
    assert!(f.memory_peak_bytes.unwrap() >= 64 << 20, "{f:?}");
    assert!(f.cpu_seconds.unwrap() > 0.0, "{f:?}");
    cg.kill_all(&[]).unwrap();
    child.wait().unwrap();
    cg.remove().unwrap();
}

#[test]
fn v2_interface_of_a_hybrid_host_tracks_and_kills() {
    // A v2 host here is either the root itself or the hybrid's unified
    // mount (no controllers: tracking, freezing and cgroup.kill only).
    let root = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(Path::new)
        .find(|r| r.join("cgroup.controllers").exists());
    let Some(root) = root else {
        if gate(Path::new("/nonexistent-cgroup-v2")) {
            unreachable!()
        }
        return;
    };
    if !gate(root) {
        return;
    }
    let cgs = Subtree(Cgroups::detect(&config(root.to_str().unwrap())));
    assert_eq!(cgs.kind(), "v2", "{:?}", cgs.mode);
    assert_eq!(cgs.gpu_isolation(1, &one_gpu()), "env-only");
    kills_an_escaped_child(&cgs);
}

fn one_gpu() -> std::collections::HashMap<String, u32> {
    [("GPU-0".to_string(), 0)].into()
}

#[test]
fn disabled_or_unusable_cgroups_are_none() {
    let off = CgroupConfig {
        enabled: false,
        ..CgroupConfig::default()
    };
    let cgs = Cgroups::detect(&off);
    assert_eq!(
        (cgs.kind(), cgs.gpu_isolation(1, &one_gpu())),
        ("none", "env-only")
    );
    assert!(cgs.create("job-1", Some(&[0])).unwrap().is_none());
    let empty = tempfile::tempdir().unwrap();
    let cgs = Cgroups::detect(&CgroupConfig {
        root: empty.path().to_owned(),
        ..CgroupConfig::default()
    });
    assert_eq!(cgs.kind(), "none");
}

#[test]
fn a_v1_job_is_denied_the_gpus_it_was_not_given() {
    let root = Path::new("/sys/fs/cgroup");
    if !gate(root) || !root.join("devices/devices.deny").exists() {
        return;
    }
    let dev = tempfile::tempdir().unwrap();
    for minor in 0..4 {
        nix::sys::stat::mknod(
            &dev.path().join(format!("nvidia{minor}")),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(u64::from(NVIDIA_MAJOR), minor),
        )
        .unwrap();
    }
    let cgs = Subtree(Cgroups::detect(&CgroupConfig {
        dev_dir: dev.path().to_owned(),
        ..config("/sys/fs/cgroup")
    }));
    assert_eq!(cgs.devices().gpu_minors, [0, 1, 2, 3]);
    let cg = cgs.create("job-gpu", Some(&[1])).unwrap().unwrap();
    assert!(cg.dirs.iter().any(|d| d.controller == "devices"));
    // A job with nothing to deny is not placed in the devices controller.
    let plain = cgs.create("job-plain", None).unwrap().unwrap();
    assert!(plain.dirs.iter().all(|d| d.controller != "devices"));
    plain.remove().unwrap();
    // Open each node from inside: ENXIO (allowed, no driver) or EPERM (denied).
    let script = format!(
        "for i in 0 1 2 3; do if ( exec 3<{0}/nvidia$i ) 2>/dev/null; then echo ok; else ( exec 3<{0}/nvidia$i ) 2>&1 | grep -o 'No such device or address\\|Operation not permitted' | head -1; fi; done | paste -sd,",
        dev.path().display()
    );
    let mut child = spawn_in(&cg, &script);
    let seen = first_line(&mut child);
    child.wait().unwrap();
    assert_eq!(
        seen,
        "Operation not permitted,No such device or address,Operation not permitted,Operation not permitted"
    );
    cg.remove().unwrap();
}

#[test]
fn the_cgroups_table_of_the_agent_config() {
    let f: crate::config::FileConfig =
        toml::from_str("[cgroups]\nenabled = false\nroot = \"/x\"\n").unwrap();
    assert!(!f.cgroups.enabled);
    assert_eq!(f.cgroups.root, Path::new("/x"));
    assert_eq!(f.cgroups.name, "bai", "unset keys keep their defaults");
    let none: crate::config::FileConfig = toml::from_str("").unwrap();
    assert_eq!(none.cgroups, CgroupConfig::default());
    assert!(toml::from_str::<crate::config::FileConfig>("[cgroups]\nroots = \"/x\"\n").is_err());
}

/// The meter counts a job by its cgroup: a `setsid()` child's memory, and
/// the CPU time of a child that burnt it and exited unwaited for, which its
/// process group alone would not show.
#[test]
fn a_job_is_metered_by_its_cgroup_escaped_children_included() {
    let root = Path::new("/sys/fs/cgroup");
    if !gate(root) {
        return;
    }
    let cgs = Subtree(Cgroups::detect(&config("/sys/fs/cgroup")));
    assert_ne!(cgs.kind(), "none", "{:?}", cgs.mode);
    let job = format!("job-{}", uuid::Uuid::new_v4().simple());
    let cg = cgs.create(&job, None).unwrap().expect("a cgroup");
    let mut child = spawn_in(
        &cg,
        "setsid sh -c 'i=0; while [ $i -lt 400000 ]; do i=$((i+1)); done' & \
         setsid sleep 31343 & echo $!; exec sleep 31344",
    );
    let escaped: i32 = first_line(&mut child).parse().unwrap();
    eventually("the burner has used its CPU", || {
        cg.figures().cpu_seconds.is_some_and(|s| s >= 0.1)
    });
    let backend = crate::gpu::open(
        &crate::gpu::GpuConfig {
            backend: crate::gpu::BackendChoice::None,
            ..Default::default()
        },
        "n1",
    );
    // No process has the child's pid as its group: only the cgroup finds them.
    let pgid = child.id() as i32;
    let running = |cgroup| crate::metrics::RunningJob {
        id: crate::model::JobId::parse("11111111-1111-4111-8111-111111111111").unwrap(),
        gpu_uuids: Vec::new(),
        pgid,
        cgroup,
        container: None,
    };
    let by_group = crate::metrics::Meter::new().sample(&[running(None)], &[], &*backend);
    assert_eq!(
        (by_group[0].memory_bytes, by_group[0].cpu_seconds),
        (0, 0.0)
    );
    let f = crate::metrics::Meter::new().sample(&[running(Some(cg.clone()))], &[], &*backend);
    let sleepers = bai_common::procfs::rss_bytes(escaped).unwrap()
        + bai_common::procfs::rss_bytes(pgid).unwrap();
    assert!(f[0].memory_bytes >= sleepers, "{f:?} < {sleepers}");
    assert!(f[0].cpu_seconds >= 0.1, "{f:?}");
    assert!(cg.kill_all(&[]).unwrap() >= 2);
    child.wait().unwrap();
    cg.remove().unwrap();
}
