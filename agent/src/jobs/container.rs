//! The container runtime seam: which runtime a node has (podman first, docker
//! second, or none), and how a job runs in a container with it.
//!
//! A container job's process is the runtime's client: `<runtime> run --rm
//! --name bai-<job>-<node> --network host -e NAME… -v <path>:<path>… -w <dir>
//! [--init] [--user uid:gid] [--shm-size N] <image> sh -c '<runner>' <command line>`,
//! spawned by the shim like any job (its output is the job's stdout and
//! stderr). The job's variables pass by name only (`-e NAME`: the runtime
//! copies the value from its own environment, which is the job's), so no value
//! — secrets included — is ever on a command line. The node's mount root, the
//! job's mounts, temp, shared temp and stdouterr directories appear at the
//! same paths inside. The container is removed by name when the job ends, so
//! a SIGKILLed client leaves nothing running.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The agent config's `[containers]` table.
#[derive(Clone, Debug, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ContainerConfig {
    /// `auto` (podman, else docker, else none), `podman`, `docker` or `none`.
    pub runtime: String,
    /// Flags before `run` (e.g. podman's `--runtime runc`).
    pub global_args: Vec<String>,
    /// Flags added to every `run` (e.g. `--ulimit nofile=1024:1024`).
    pub run_args: Vec<String>,
    /// The most the images bai's jobs pulled may take on the node (`50g`,
    /// `500m`; `0` for no cap): least recently used go first.
    pub image_cache_max: String,
}

impl Default for ContainerConfig {
    fn default() -> Self {
        Self {
            runtime: "auto".into(),
            global_args: Vec::new(),
            run_args: Vec::new(),
            image_cache_max: "50g".into(),
        }
    }
}

impl ContainerConfig {
    /// `image_cache_max` in bytes, 0 for no cap.
    pub fn image_cache_max_bytes(&self) -> Result<u64, &'static str> {
        if self.image_cache_max.trim() == "0" {
            return Ok(0);
        }
        bai_common::size::parse_size(&self.image_cache_max)
    }
}

/// Which runtime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Podman,
    Docker,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Podman => "podman",
            Kind::Docker => "docker",
        }
    }
}

/// A node's container runtime.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Runtime {
    pub kind: Kind,
    pub program: PathBuf,
    /// What `<program> --version` said, e.g. "podman version 4.3.1".
    pub version: String,
    pub global_args: Vec<String>,
    pub run_args: Vec<String>,
    /// Whether the runtime has its init (podman's catatonit, docker's
    /// docker-init): with it the container's PID 1 passes a terminate's
    /// SIGTERM on to the job; without, PID 1 ignores it and the job only
    /// ends with the SIGKILL after the grace period.
    #[serde(default)]
    pub init: bool,
    /// How its containers get a job's GPUs.
    #[serde(default)]
    pub gpus: GpuAccess,
}

/// How a node's container jobs get their GPUs, found at agent start.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpuAccess {
    /// The NVIDIA Container Toolkit's CDI spec: `--device nvidia.com/gpu=<uuid>`.
    Cdi,
    /// Without it: the job's device nodes (and the driver's control nodes)
    /// from `dev_dir`, and the driver's libraries and `nvidia-smi` bound
    /// read-only at `/usr/local/nvidia/{lib64,bin}` (where CUDA images look,
    /// as nvidia-docker 1 bound them).
    DeviceNodes {
        dev_dir: PathBuf,
        driver: Vec<(PathBuf, PathBuf)>,
    },
    /// Neither: a job given GPUs fails on the node, saying why.
    #[default]
    Unavailable,
}

impl GpuAccess {
    /// Finds the way: CDI where a spec is in `cdi_dirs`, else device nodes
    /// where the driver's libraries are found (beside `nvml_library` when
    /// the config names it, else where the loader finds libnvidia-ml).
    pub fn detect(cdi_dirs: &[&Path], dev_dir: &Path, nvml_library: Option<&Path>) -> Self {
        if nvidia_cdi(cdi_dirs) {
            return GpuAccess::Cdi;
        }
        let dir = match nvml_library {
            Some(lib) => lib.parent().map(Path::to_owned),
            None => loader_dir_of("libnvidia-ml.so.1"),
        };
        let Some(dir) = dir else {
            return GpuAccess::Unavailable;
        };
        let driver = driver_binds(
            &dir,
            crate::node::mounts::find_program("nvidia-smi").as_deref(),
        );
        if driver.is_empty() {
            return GpuAccess::Unavailable;
        }
        GpuAccess::DeviceNodes {
            dev_dir: dev_dir.to_owned(),
            driver,
        }
    }

    /// For the node view.
    pub fn describe(&self) -> &'static str {
        match self {
            GpuAccess::Cdi => "GPUs by CDI",
            GpuAccess::DeviceNodes { .. } => "GPUs by device nodes and driver libraries",
            GpuAccess::Unavailable => "no GPUs (no CDI spec, no NVIDIA driver libraries)",
        }
    }
}

/// Where the dynamic loader finds `lib` (`ldconfig -p`), its directory.
fn loader_dir_of(lib: &str) -> Option<PathBuf> {
    let out = Command::new("ldconfig")
        .arg("-p")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .or_else(|_| {
            Command::new("/sbin/ldconfig")
                .arg("-p")
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
        })
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.trim_start().starts_with(&format!("{lib} ")))
        .find_map(|l| l.split(" => ").nth(1))
        .and_then(|p| Path::new(p.trim()).parent().map(Path::to_owned))
}

/// Where the driver's files go in a container without CDI.
pub const DRIVER_LIB_DIR: &str = "/usr/local/nvidia/lib64";
pub const DRIVER_BIN_DIR: &str = "/usr/local/nvidia/bin";

/// The driver's user-space libraries in `dir` (`libcuda.so*`,
/// `libnvidia-*.so*`) and `nvidia-smi`, each bound at its own name.
pub fn driver_binds(dir: &Path, smi: Option<&Path>) -> Vec<(PathBuf, PathBuf)> {
    let mut binds: Vec<(PathBuf, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let driver = (name.starts_with("libcuda.so") || name.starts_with("libnvidia-"))
                && name.contains(".so");
            driver.then(|| (e.path(), Path::new(DRIVER_LIB_DIR).join(&name)))
        })
        .collect();
    binds.sort();
    if let Some(smi) = smi {
        binds.push((smi.to_owned(), Path::new(DRIVER_BIN_DIR).join("nvidia-smi")));
    }
    binds
}

/// The driver's control nodes a GPU job opens besides its GPUs.
const CONTROL_NODES: [&str; 4] = [
    "nvidiactl",
    "nvidia-uvm",
    "nvidia-uvm-tools",
    "nvidia-modeset",
];

/// The `--device` values that give a container the GPU nodes `minors` and
/// the control nodes present in `dev_dir`, at their /dev names; `Err` names
/// a GPU node that is missing.
pub fn gpu_device_nodes(dev_dir: &Path, minors: &[u32]) -> Result<Vec<String>, String> {
    let mut v = Vec::new();
    for m in minors {
        let node = dev_dir.join(format!("nvidia{m}"));
        if !node.exists() {
            return Err(format!("{} is missing", node.display()));
        }
        v.push(format!("{}:/dev/nvidia{m}", node.display()));
    }
    for c in CONTROL_NODES {
        let node = dev_dir.join(c);
        if node.exists() {
            v.push(format!("{}:/dev/{c}", node.display()));
        }
    }
    Ok(v)
}

/// Where each runtime's init is found (podman's `init_path` default, the
/// Debian package's, docker's).
fn has_init(kind: Kind) -> bool {
    let (dirs, program): (&[&str], &str) = match kind {
        Kind::Podman => (&["/usr/libexec/podman"], "catatonit"),
        Kind::Docker => (&["/usr/libexec/docker"], "docker-init"),
    };
    dirs.iter().any(|d| Path::new(d).join(program).is_file())
        || crate::node::mounts::find_program(program).is_some()
}

fn version(program: &Path) -> Option<String> {
    let out = Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The runtime the config names, or the first found for `auto`; `Ok(None)`
/// for none; `Err` when the named one is missing or does not answer.
/// Blocking (runs `--version`).
pub fn detect(cfg: &ContainerConfig) -> Result<Option<Runtime>, String> {
    let candidates: &[Kind] = match cfg.runtime.as_str() {
        "none" => return Ok(None),
        "auto" => &[Kind::Podman, Kind::Docker],
        "podman" => &[Kind::Podman],
        "docker" => &[Kind::Docker],
        other => {
            return Err(format!(
                "containers.runtime: {other:?} is not auto, podman, docker or none"
            ));
        }
    };
    for &kind in candidates {
        if let Some(program) = crate::node::mounts::find_program(kind.name())
            && let Some(version) = version(&program)
        {
            return Ok(Some(Runtime {
                kind,
                program,
                version,
                global_args: cfg.global_args.clone(),
                run_args: cfg.run_args.clone(),
                init: has_init(kind),
                gpus: GpuAccess::Unavailable,
            }));
        }
    }
    if cfg.runtime == "auto" {
        Ok(None)
    } else {
        Err(format!(
            "containers.runtime: {} is not installed or does not answer --version",
            cfg.runtime
        ))
    }
}

/// What one container job needs beyond the job's own launch record.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContainerRun {
    pub image: String,
    /// The container's name (one per job and node).
    pub name: String,
    /// Directories shown inside at the same path.
    pub binds: Vec<PathBuf>,
    /// `uid:gid` to run as inside (the cluster's admin user), if any.
    pub user: Option<String>,
    /// `--shm-size` as the job gave it (`2g`), checked by the coordinator.
    pub shm_size: Option<String>,
    /// `--device` names (CDI: `nvidia.com/gpu=<uuid>` for each of the job's GPUs).
    #[serde(default)]
    pub devices: Vec<String>,
    /// Host files shown read-only inside at another path (bai's MPI
    /// launcher and what it needs to run: `mpi_binds`).
    #[serde(default)]
    pub ro_binds: Vec<(PathBuf, PathBuf)>,
}

/// Where a multi-node MPI job's container finds bai's MPI launcher: the
/// host's `bai-mpi`, its loader and C libraries under `MPI_DIR`, run by that
/// loader (the image's own C library may be older, or absent), through a
/// one-line `sh` script at `MPI_LAUNCHER`.
pub const MPI_DIR: &str = "/opt/bai";
pub const MPI_LAUNCHER: &str = "/opt/bai/bin/bai-mpi";

/// The loader and libraries in `ldd`'s answer for a program.
pub fn parse_ldd(out: &str) -> Result<(PathBuf, Vec<PathBuf>), String> {
    let mut loader = None;
    let mut libs = Vec::new();
    for line in out.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some((name, rest)) = line.split_once(" => ") {
            let path = rest.split(" (").next().unwrap_or_default().trim();
            if path == "not found" || !path.starts_with('/') {
                return Err(format!("{name} is not found"));
            }
            libs.push(PathBuf::from(path));
        } else if line.starts_with('/') {
            loader = Some(PathBuf::from(line.split(" (").next().unwrap_or_default()));
        } else if !line.starts_with("linux-vdso") && !line.starts_with("linux-gate") {
            return Err(format!("ldd said {line:?}"));
        }
    }
    let loader = loader.ok_or("no program loader in ldd's answer (a static binary?)")?;
    Ok((loader, libs))
}

/// The read-only binds that give a container `launcher` (the host's
/// `bai-mpi`) at `MPI_LAUNCHER`, its script written to `script` (a file of
/// the job's own directory). Blocking (runs `ldd` once per agent).
pub fn mpi_binds(launcher: &Path, script: &Path) -> Result<Vec<(PathBuf, PathBuf)>, String> {
    static CLOSURE: std::sync::OnceLock<Result<(PathBuf, Vec<PathBuf>), String>> =
        std::sync::OnceLock::new();
    let (loader, libs) = CLOSURE
        .get_or_init(|| {
            let out = Command::new("ldd")
                .arg(launcher)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("cannot run ldd: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "ldd {}: {}",
                    launcher.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            parse_ldd(&String::from_utf8_lossy(&out.stdout))
        })
        .clone()?;
    let dir = Path::new(MPI_DIR);
    let lib = dir.join("lib");
    let real = dir.join("bin/bai-mpi.real");
    let text = format!(
        "#!/bin/sh\nexec {} --library-path {} {} \"$@\"\n",
        lib.join("ld.so").display(),
        lib.display(),
        real.display()
    );
    std::fs::write(script, text).map_err(|e| format!("{}: {e}", script.display()))?;
    std::fs::set_permissions(script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .map_err(|e| format!("{}: {e}", script.display()))?;
    let mut binds = vec![
        (script.to_owned(), PathBuf::from(MPI_LAUNCHER)),
        (launcher.to_owned(), real),
        (loader, lib.join("ld.so")),
    ];
    for l in libs {
        let name = l.file_name().map(PathBuf::from).unwrap_or_default();
        binds.push((l, lib.join(name)));
    }
    Ok(binds)
}

/// Where CDI specs are looked for (the NVIDIA Container Toolkit writes
/// `nvidia.yaml` to one of them with `nvidia-ctk cdi generate`).
pub const CDI_DIRS: [&str; 2] = ["/etc/cdi", "/var/run/cdi"];

/// Whether a CDI spec for NVIDIA GPUs is installed under one of `dirs`: the
/// runtime can then give a container exactly the job's GPUs by UUID, with
/// the driver's libraries.
pub fn nvidia_cdi(dirs: &[&Path]) -> bool {
    dirs.iter().any(|d| {
        std::fs::read_dir(d).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                std::fs::read_to_string(e.path()).is_ok_and(|t| t.contains("nvidia.com/gpu"))
            })
        })
    })
}

/// The `--device` names that give a container the GPUs `uuids` through CDI.
pub fn gpu_devices(uuids: &[String]) -> Vec<String> {
    uuids
        .iter()
        .map(|u| format!("nvidia.com/gpu={u}"))
        .collect()
}

/// What the shim needs to run a container job (kept in `launch.json`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContainerLaunch {
    pub runtime: Runtime,
    pub run: ContainerRun,
}

/// The image reference to pull, always with its registry: the image as
/// given when it names one, else under `server_url`'s host, else Docker
/// Hub's (`docker.io/`, `docker.io/library/` for an official image), as
/// Batch AI read an image without a server.
pub fn reference(image: &str, server_url: &str) -> String {
    let host = server_url
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or("");
    if registry_in(image).is_some() {
        image.to_string()
    } else if !host.is_empty() {
        format!("{host}/{image}")
    } else if image.contains('/') {
        // Docker Hub's, named in full: podman resolves no short name
        // unless the node's registries.conf lists search registries.
        format!("docker.io/{image}")
    } else {
        format!("docker.io/library/{image}")
    }
}

/// Whether the node has `reference` already (then it is not pulled again:
/// the runtimes' "missing" pull policy). Blocking.
pub fn cached(rt: &Runtime, reference: &str) -> bool {
    let mut cmd = Command::new(&rt.program);
    cmd.args(&rt.global_args);
    match rt.kind {
        Kind::Podman => cmd.args(["image", "exists", reference]),
        Kind::Docker => cmd.args(["image", "inspect", "--format", "x", reference]),
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The registry an image reference names, if it names one: its first path
/// component when that has a `.` or a `:` or is `localhost` (the
/// distribution grammar's rule, as the coordinator checked it).
fn registry_in(reference: &str) -> Option<&str> {
    let (first, _) = reference.split_once('/')?;
    (first.contains('.') || first.contains(':') || first == "localhost").then_some(first)
}

/// The registry host of `reference` (Docker Hub's when it names none).
fn registry_of(reference: &str) -> &str {
    registry_in(reference).unwrap_or("docker.io")
}

/// Logs in to `reference`'s registry as `user`, the password written to the
/// runtime's stdin (never an argument), the token kept in `auth_dir` (0700:
/// podman's `--authfile`, docker's `--config`); returns the flags a pull
/// then takes. Blocking.
fn login(
    rt: &Runtime,
    reference: &str,
    server_url: &str,
    (user, password): (&str, &str),
    auth_dir: &Path,
) -> Result<Vec<String>, String> {
    use std::io::Write;
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(auth_dir)
        .map_err(|e| format!("cannot create {}: {e}", auth_dir.display()))?;
    let auth = match rt.kind {
        Kind::Podman => vec![
            "--authfile".to_string(),
            auth_dir.join("auth.json").display().to_string(),
        ],
        Kind::Docker => vec![],
    };
    let mut cmd = Command::new(&rt.program);
    cmd.args(&rt.global_args);
    if rt.kind == Kind::Docker {
        cmd.arg("--config").arg(auth_dir);
    }
    cmd.arg("login").args(&auth);
    if server_url.starts_with("http://") && rt.kind == Kind::Podman {
        cmd.arg("--tls-verify=false");
    }
    let mut child = cmd
        .args([
            "--username",
            user,
            "--password-stdin",
            registry_of(reference),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", rt.program.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(password.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr).replace(password, "<redacted>");
        return Err(format!(
            "{} login to {} as {user}: {}",
            rt.kind.name(),
            registry_of(reference),
            err.trim()
        ));
    }
    Ok(auth)
}

/// Pulls `reference` (over plain HTTP where `server_url` says `http://`;
/// logged in first with `credentials`, their token kept in `auth_dir`), the
/// runtime's progress and answer appended to `log`. `Err` carries the
/// runtime's last lines (the registry's answer), never the password.
/// Blocking.
pub fn pull(
    rt: &Runtime,
    reference: &str,
    server_url: &str,
    credentials: Option<(&str, &str)>,
    auth_dir: &Path,
    log: &Path,
) -> Result<(), String> {
    let auth = match credentials {
        Some(c) => login(rt, reference, server_url, c, auth_dir)?,
        None => Vec::new(),
    };
    let log_file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
        .map_err(|e| format!("cannot open {}: {e}", log.display()))?;
    let mut cmd = Command::new(&rt.program);
    cmd.args(&rt.global_args);
    if credentials.is_some() && rt.kind == Kind::Docker {
        cmd.arg("--config").arg(auth_dir);
    }
    cmd.arg("pull").args(&auth);
    if server_url.starts_with("http://") {
        cmd.arg(match rt.kind {
            Kind::Podman => "--tls-verify=false",
            // docker takes insecure registries from its daemon's config.
            Kind::Docker => "--quiet",
        });
    }
    let out = cmd
        .arg(reference)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", rt.program.display()))?;
    let err = String::from_utf8_lossy(&out.stderr);
    use std::io::Write;
    let _ = (&log_file).write_all(err.as_bytes());
    if out.status.success() {
        return Ok(());
    }
    let last: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = last[last.len().saturating_sub(3)..].join("; ");
    Err(format!("{} pull {reference}: {tail}", rt.kind.name()))
}

/// The container's name for `job` on `node`.
pub fn name(job: &str, node: &str) -> String {
    format!("bai-{job}-{node}")
}

/// Variables the container keeps its image's own values of: the host's
/// would break the image (its PATH, its HOME).
const IMAGE_OWN: [&str; 4] = ["PATH", "HOME", "SHELL", "HOSTNAME"];

/// In the container: bash where the image has it, else sh, runs the command
/// line (passed as `$0`, never through another layer of quoting).
const RUNNER: &str =
    "if command -v bash >/dev/null 2>&1; then exec bash -c \"$0\"; else exec sh -c \"$0\"; fi";

/// In the container: the job preparation (its output to the preparation's
/// files, bound at the same paths), then — only if it exited 0 — the
/// command line, in the same container; a failing preparation leaves its
/// exit code in the marker file. Arguments: `$0` preparation, `$1` command
/// line, `$2`/`$3` the preparation's stdout/stderr files, `$4` the marker.
const PREP_RUNNER: &str = "if command -v bash >/dev/null 2>&1; then s=bash; else s=sh; fi; \
$s -c \"$0\" >>\"$2\" 2>>\"$3\"; rc=$?; \
if [ \"$rc\" -ne 0 ]; then echo \"$rc\" >\"$4\"; exit \"$rc\"; fi; exec $s -c \"$1\"";

/// A job preparation run inside the container before the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preparation<'a> {
    pub line: &'a str,
    pub stdout: &'a Path,
    pub stderr: &'a Path,
    /// Written with the preparation's exit code if it fails.
    pub marker: &'a Path,
}

/// Where a failed in-container preparation leaves its exit code.
pub fn preparation_marker(work_dir: &Path) -> PathBuf {
    work_dir.join(".bai-job-preparation-failed")
}

/// The runtime's argv (program first) that runs `line` in the container
/// with the job's variables `env` (names only), in `work_dir`, after
/// `preparation` if there is one.
pub fn run_argv_prepared(
    rt: &Runtime,
    run: &ContainerRun,
    env: &[(String, String)],
    work_dir: &Path,
    line: &str,
    preparation: Option<&Preparation<'_>>,
) -> Vec<String> {
    let mut a = run_argv(rt, run, env, work_dir, line);
    if let Some(p) = preparation {
        // `... <image> sh -c RUNNER <line>` becomes
        // `... <image> sh -c PREP_RUNNER <prep> <line> <out> <err> <marker>`.
        let n = a.len();
        a.truncate(n - 2);
        a.extend([
            PREP_RUNNER.to_string(),
            p.line.to_string(),
            line.to_string(),
            p.stdout.display().to_string(),
            p.stderr.display().to_string(),
            p.marker.display().to_string(),
        ]);
    }
    a
}

/// The runtime's argv (program first) that runs `line` in the container
/// with the job's variables `env` (names only), in `work_dir`.
pub fn run_argv(
    rt: &Runtime,
    run: &ContainerRun,
    env: &[(String, String)],
    work_dir: &Path,
    line: &str,
) -> Vec<String> {
    let mut a: Vec<String> = vec![rt.program.display().to_string()];
    a.extend(rt.global_args.iter().cloned());
    a.extend(
        [
            "run",
            "--rm",
            "--name",
            &run.name,
            "--network",
            "host",
            "--stop-timeout",
            "0",
        ]
        .map(String::from),
    );
    if rt.init {
        a.push("--init".to_string());
    }
    a.extend(rt.run_args.iter().cloned());
    for (name, _) in env.iter().filter(|(n, _)| !IMAGE_OWN.contains(&n.as_str())) {
        a.extend(["-e".to_string(), name.clone()]);
    }
    for b in &run.binds {
        a.extend(["-v".to_string(), format!("{0}:{0}", b.display())]);
    }
    for (host, inside) in &run.ro_binds {
        a.extend([
            "-v".to_string(),
            format!("{}:{}:ro", host.display(), inside.display()),
        ]);
    }
    a.extend(["-w".to_string(), work_dir.display().to_string()]);
    if let Some(u) = &run.user {
        a.extend(["--user".to_string(), u.clone()]);
    }
    if let Some(s) = &run.shm_size {
        a.extend(["--shm-size".to_string(), s.clone()]);
    }
    for d in &run.devices {
        a.extend(["--device".to_string(), d.clone()]);
    }
    a.extend([
        run.image.clone(),
        "sh".to_string(),
        "-c".to_string(),
        RUNNER.to_string(),
        line.to_string(),
    ]);
    a
}

/// The host pid of container `name`'s first process, while it runs.
/// Blocking (runs the runtime's `inspect`).
pub fn init_pid(rt: &Runtime, name: &str) -> Option<i32> {
    let out = Command::new(&rt.program)
        .args(&rt.global_args)
        .args(["inspect", "--format", "{{.State.Pid}}", name])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    (out.status.success() && pid > 0).then_some(pid)
}

/// Removes the container `name` (stopping it first if it runs) and its
/// anonymous volumes; a missing one is fine. Blocking.
pub fn remove(rt: &Runtime, name: &str) -> Result<(), String> {
    let mut cmd = Command::new(&rt.program);
    // Its anonymous volumes too, as `--rm` would have removed them.
    cmd.args(&rt.global_args)
        .args(["rm", "--force", "--volumes"]);
    if rt.kind == Kind::Podman {
        // docker's rm kills at once; podman's waits out a stop timeout.
        cmd.args(["--time", "0"]);
    }
    let out = cmd
        .arg(name)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", rt.program.display()))?;
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success()
        || err.contains("no such container")
        || err.contains("No such container")
    {
        return Ok(());
    }
    Err(format!("{} rm {name}: {}", rt.kind.name(), err.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn podman() -> Runtime {
        Runtime {
            kind: Kind::Podman,
            program: "/usr/bin/podman".into(),
            version: "podman version 4.3.1".into(),
            global_args: vec!["--runtime".into(), "runc".into()],
            run_args: vec!["--ulimit".into(), "nofile=1024:1024".into()],
            init: true,
            gpus: GpuAccess::Cdi,
        }
    }

    #[test]
    fn the_run_line_passes_variables_by_name_only() {
        let run = ContainerRun {
            image: "tensorflow/tensorflow:1.8.0-gpu".into(),
            name: name("j1", "n1"),
            binds: vec!["/mnt/batch".into(), "/work/j1".into()],
            user: Some("1000:1000".into()),
            shm_size: Some("2g".into()),
            devices: gpu_devices(&["GPU-1".to_string()]),
            ro_binds: vec![("/usr/bin/bai-mpi".into(), MPI_LAUNCHER.into())],
        };
        let env = vec![
            ("PATH".to_string(), "/usr/bin".to_string()),
            ("TOKEN".to_string(), "s3cr3t".to_string()),
            ("AZ_BATCHAI_JOB_TEMP".to_string(), "/work/j1".to_string()),
        ];
        let a = run_argv(&podman(), &run, &env, Path::new("/work/j1"), "echo $TOKEN");
        let line = a.join(" ");
        assert!(
            !line.contains("s3cr3t"),
            "a value on the command line: {line}"
        );
        assert!(
            line.starts_with(
                "/usr/bin/podman --runtime runc run --rm --name bai-j1-n1 --network host"
            ),
            "{line}"
        );
        assert!(line.contains(" -e TOKEN -e AZ_BATCHAI_JOB_TEMP "), "{line}");
        assert!(
            !line.contains("-e PATH"),
            "the image keeps its PATH: {line}"
        );
        assert!(
            line.contains(" --init --ulimit nofile=1024:1024 "),
            "PID 1 passes signals on: {line}"
        );
        assert!(
            line.contains(
                " -v /mnt/batch:/mnt/batch -v /work/j1:/work/j1 -v /usr/bin/bai-mpi:/opt/bai/bin/bai-mpi:ro -w /work/j1 "
            ),
            "{line}"
        );
        assert!(
            line.contains(" --user 1000:1000 --shm-size 2g --device nvidia.com/gpu=GPU-1 "),
            "{line}"
        );
        let n = a.len();
        assert_eq!(
            a[n - 5..n - 2],
            [
                "tensorflow/tensorflow:1.8.0-gpu".to_string(),
                "sh".into(),
                "-c".into()
            ]
        );
        assert_eq!(a[n - 1], "echo $TOKEN", "the command line is one argument");
    }

    #[test]
    fn without_cdi_the_device_nodes_and_driver_libraries_go_in() {
        let dir = tempfile::tempdir().unwrap();
        let (dev, lib) = (dir.path().join("dev"), dir.path().join("lib"));
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::create_dir_all(&lib).unwrap();
        for f in [
            "libnvidia-ml.so.1",
            "libcuda.so.1",
            "libcuda.so.580.65",
            "libz.so.1",
        ] {
            std::fs::write(lib.join(f), b"").unwrap();
        }
        for f in ["nvidia0", "nvidia1", "nvidiactl"] {
            std::fs::write(dev.join(f), b"").unwrap();
        }
        let none: [&Path; 0] = [];
        let access = GpuAccess::detect(&none, &dev, Some(&lib.join("libnvidia-ml.so.1")));
        let GpuAccess::DeviceNodes { dev_dir, driver } = &access else {
            panic!("{access:?}");
        };
        assert_eq!(dev_dir, &dev);
        let inside: Vec<_> = driver
            .iter()
            .map(|(_, i)| i.display().to_string())
            .collect();
        assert_eq!(
            inside,
            [
                "/usr/local/nvidia/lib64/libcuda.so.1",
                "/usr/local/nvidia/lib64/libcuda.so.580.65",
                "/usr/local/nvidia/lib64/libnvidia-ml.so.1"
            ],
            "the driver's, not every library"
        );
        assert_eq!(
            gpu_device_nodes(&dev, &[1]).unwrap(),
            [
                format!("{}:/dev/nvidia1", dev.join("nvidia1").display()),
                format!("{}:/dev/nvidiactl", dev.join("nvidiactl").display())
            ]
        );
        assert!(
            gpu_device_nodes(&dev, &[3])
                .unwrap_err()
                .contains("nvidia3")
        );
        // A CDI spec wins; no driver at all is no way.
        std::fs::write(dir.path().join("nvidia.yaml"), "kind: nvidia.com/gpu\n").unwrap();
        assert_eq!(GpuAccess::detect(&[dir.path()], &dev, None), GpuAccess::Cdi);
        assert_eq!(
            GpuAccess::detect(&none, &dev, Some(&dev.join("libnvidia-ml.so.1"))),
            GpuAccess::Unavailable
        );
    }

    #[test]
    fn ldd_answers_give_the_loader_and_libraries() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f9a)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f9b)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f9c)\n";
        let (loader, libs) = parse_ldd(out).unwrap();
        assert_eq!(loader, Path::new("/lib64/ld-linux-x86-64.so.2"));
        assert_eq!(
            libs,
            [
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                "/lib/x86_64-linux-gnu/libc.so.6".into()
            ]
        );
        assert!(parse_ldd("\tlibfoo.so => not found\n").is_err());
        assert!(parse_ldd("\tstatically linked\n").is_err());
    }

    #[test]
    fn the_launcher_runs_in_a_container_by_the_hosts_loader() {
        // This test binary is dynamic like bai-mpi: its closure is found.
        let exe = std::env::current_exe().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("bai-mpi.sh");
        let binds = mpi_binds(&exe, &script).unwrap();
        assert_eq!(binds[0], (script.clone(), PathBuf::from(MPI_LAUNCHER)));
        assert!(
            binds
                .iter()
                .any(|(_, i)| i == Path::new("/opt/bai/lib/ld.so"))
        );
        assert!(
            binds
                .iter()
                .any(|(h, i)| i.starts_with("/opt/bai/lib") && h.ends_with("libc.so.6"))
        );
        let text = std::fs::read_to_string(&script).unwrap();
        assert_eq!(
            text,
            "#!/bin/sh\nexec /opt/bai/lib/ld.so --library-path /opt/bai/lib /opt/bai/bin/bai-mpi.real \"$@\"\n"
        );
    }

    #[test]
    fn references_always_name_their_registry() {
        let hub = |i| reference(i, "");
        assert_eq!(
            hub("tensorflow/tensorflow:1.8.0-gpu"),
            "docker.io/tensorflow/tensorflow:1.8.0-gpu"
        );
        assert_eq!(hub("caffe2ai/caffe2"), "docker.io/caffe2ai/caffe2");
        assert_eq!(hub("ubuntu:22.04"), "docker.io/library/ubuntu:22.04");
        assert_eq!(
            hub("nvcr.io/nvidia/pytorch:24.01"),
            "nvcr.io/nvidia/pytorch:24.01"
        );
        assert_eq!(
            reference("batchai/job:1", "https://my.azurecr.io"),
            "my.azurecr.io/batchai/job:1"
        );
        assert_eq!(
            reference("trainer:1", "http://127.0.0.1:5000"),
            "127.0.0.1:5000/trainer:1"
        );
        assert_eq!(
            reference("localhost/mine:1", "https://my.azurecr.io"),
            "localhost/mine:1",
            "an image naming its registry keeps it"
        );
    }

    #[test]
    fn a_cdi_spec_for_nvidia_gpus_is_found() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!nvidia_cdi(&[dir.path(), Path::new("/nonexistent")]));
        std::fs::write(dir.path().join("other.yaml"), "kind: vendor.com/thing\n").unwrap();
        assert!(!nvidia_cdi(&[dir.path()]));
        std::fs::write(
            dir.path().join("nvidia.yaml"),
            "cdiVersion: 0.5.0\nkind: nvidia.com/gpu\ndevices:\n- name: GPU-1\n",
        )
        .unwrap();
        assert!(nvidia_cdi(&[dir.path()]));
    }

    #[test]
    fn detection_follows_the_config() {
        let none = ContainerConfig {
            runtime: "none".into(),
            ..ContainerConfig::default()
        };
        assert_eq!(detect(&none), Ok(None));
        let bad = ContainerConfig {
            runtime: "lxc".into(),
            ..ContainerConfig::default()
        };
        assert!(detect(&bad).unwrap_err().contains("lxc"));
        // `auto` finds whatever this machine has, or nothing; never an error.
        assert!(detect(&ContainerConfig::default()).is_ok());
    }
}
