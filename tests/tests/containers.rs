//! Container jobs through podman, against a local registry (Debian's
//! docker-registry on loopback) serving a tiny image the test builds from
//! busybox-static: the job runs in the image with its variables (secrets
//! passed by name, never on a command line), mounts and `shmSize`, its output
//! exact; terminate stops and removes the container; an image the registry
//! does not have fails the job with the registry's answer; a restarted agent
//! adopts a running container, and one whose supervisor is lost is removed.

use anyhow::{Context, Result, bail};
use bai_common::standins;
use bai_proto::v1 as pb;
use bai_tests::{Clients, Coordinator, CoordinatorOpts, exec_state};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A registry on loopback with `IMAGE` pushed to it.
struct Registry {
    child: Child,
    url: String,
    /// What it serves, as the nodes name it (`<url>/<image>`).
    images: Vec<String>,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // What the nodes pulled from it goes too: the host's image store is
        // shared by every test run.
        for image in &self.images {
            let _ = Command::new("podman")
                .args(["rmi", "--force", image])
                .output();
        }
    }
}

const IMAGE: &str = "batchaitraining/busybox:1";

/// The test image under a name that declares `VOLUME /scratch`.
const WITH_VOLUME: &str = "batchaitraining/with-volume:1";

/// The host's podman volumes.
fn volumes() -> Vec<String> {
    Command::new("podman")
        .args(["volume", "ls", "-q"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// `python`, `cntk` and `pip` in the test image: the program's name and
/// arguments, the script it was given (if it can read it), then the
/// launch's variables, sorted. With `BAI_TEST_BARRIER` set, each rank then
/// waits for all WORLD_SIZE ranks in the shared job temp (so the master
/// does not end, and the job with it, before the others have printed).
const FAKE_PROGRAM: &str = "#!/bin/sh\n\
echo \"argv: ${0##*/} $*\"\n\
if [ -f \"$1\" ]; then echo \"script: $(cat \"$1\")\"; fi\n\
env | grep -E '^(AZ_BATCHAI_|TF_CONFIG=|CUDA_VISIBLE_DEVICES=|MASTER_|WORLD_SIZE=|RANK=|LOCAL_RANK=)' | sort\n\
if [ -n \"$BAI_TEST_BARRIER\" ]; then\n\
  touch \"$AZ_BATCHAI_SHARED_JOB_TEMP/rank-$RANK\"\n\
  until [ \"$(ls \"$AZ_BATCHAI_SHARED_JOB_TEMP\" | grep -c rank-)\" -ge \"$WORLD_SIZE\" ]; do sleep 0.1; done\n\
fi\n";

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Runs `cmd` with `input` on its stdin.
fn run_with_stdin(cmd: &mut Command, input: &str) -> Result<()> {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// A registry that wants `user`/`password` (htpasswd, bcrypt) when given,
/// serving the test image as `IMAGE` and as each of `more`.
fn registry_with(auth: Option<(&str, &str)>, more: &[&str]) -> Result<Registry> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().join("rootfs");
    for d in ["bin", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(d)).context("rootfs")?;
    }
    // Where a test binds the host's /usr in, its programs find their loader
    // and libraries as on a merged-/usr host.
    for lib in ["lib", "lib64"] {
        std::os::unix::fs::symlink(format!("usr/{lib}"), root.join(lib)).context("symlink")?;
    }
    std::fs::write(root.join("etc/bai-test-image"), "busybox\n")?;
    let busybox = standins::require_program("busybox").context("busybox")?;
    std::fs::copy(&busybox, root.join("bin/busybox")).context("copy busybox")?;
    for applet in [
        "sh", "echo", "cat", "env", "ls", "sleep", "id", "df", "test", "[", "grep", "sort",
        "touch", "timeout",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).context("symlink")?;
    }
    // The frameworks' programs, as stand-ins that say how they were run.
    for program in ["python", "python3", "cntk", "pip"] {
        let path = root.join("bin").join(program);
        std::fs::write(&path, FAKE_PROGRAM)?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    }
    let tar = dir.path().join("image.tar");
    run(Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg("."))?;
    let port = standins::free_port()?;
    let url = format!("127.0.0.1:{port}");
    let config = dir.path().join("registry.yml");
    let mut yaml = format!(
        "version: 0.1\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: {url}}}\n",
        dir.path().join("data").display()
    );
    let authfile = dir.path().join("push-auth.json");
    if let Some((user, password)) = auth {
        let htpasswd = dir.path().join("htpasswd");
        let out = Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .context("htpasswd")?;
        std::fs::write(&htpasswd, out.stdout)?;
        yaml.push_str(&format!(
            "auth: {{htpasswd: {{realm: bai, path: {}}}}}\n",
            htpasswd.display()
        ));
    }
    std::fs::write(&config, yaml)?;
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("docker-registry")?;
    let mut reg = Registry {
        child,
        url: url.clone(),
        images: Vec::new(),
        _dir: dir,
    };
    let authfile = authfile.display().to_string();
    for image in std::iter::once(IMAGE).chain(more.iter().copied()) {
        let tagged = format!("{url}/{image}");
        reg.images.push(tagged.clone());
        push(&tar, &tagged, auth, &url, &authfile)?;
    }
    Ok(reg)
}

/// Imports `tar` as `tagged` and pushes it (logging in first with `auth`;
/// the registry may still be starting), then removes it here: the node
/// pulls it itself.
fn push(
    tar: &Path,
    tagged: &str,
    auth: Option<(&str, &str)>,
    url: &str,
    authfile: &str,
) -> Result<()> {
    // An image named for it declares a volume (each container gets an
    // anonymous one).
    let mut import = Command::new("podman");
    import.arg("import");
    if tagged.ends_with(WITH_VOLUME) {
        import.args(["--change", "VOLUME /scratch"]);
    }
    run(import.arg(tar).arg(tagged))?;
    let mut pushed = false;
    for _ in 0..50 {
        if let Some((user, password)) = auth {
            let login = run_with_stdin(
                Command::new("podman").args([
                    "login",
                    "--tls-verify=false",
                    "--authfile",
                    authfile,
                    "--username",
                    user,
                    "--password-stdin",
                    url,
                ]),
                password,
            );
            if login.is_err() {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        }
        let mut push = Command::new("podman");
        push.args(["push", "--tls-verify=false", tagged]);
        if auth.is_some() {
            push.args(["--authfile", authfile]);
        }
        if push.output()?.status.success() {
            pushed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if !pushed {
        bail!("could not push {tagged}");
    }
    let _ = Command::new("podman").args(["rmi", "-f", tagged]).output();
    Ok(())
}

/// podman as this host needs it (runc: crun refuses hybrid cgroups here;
/// limits at or below the host's).
fn agent_config(dir: &Path, more: &str) -> Result<std::path::PathBuf> {
    agent_config_with(dir, &podman_table(&[]), more)
}

/// The `[containers]` table for podman as this host needs it, its
/// `run_args` gaining `run_args`.
fn podman_table(run_args: &[&str]) -> String {
    let mut args = vec![
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
    ];
    args.extend_from_slice(run_args);
    format!(
        "[containers]\nruntime = \"podman\"\n\
         global_args = [\"--runtime\", \"runc\", \"--cgroup-manager\", \"cgroupfs\"]\n\
         run_args = {args:?}\n"
    )
}

/// An agent config of `table` (a `[containers]` table) and `more` after it.
fn agent_config_with(dir: &Path, table: &str, more: &str) -> Result<std::path::PathBuf> {
    let p = dir.join("agent.toml");
    std::fs::write(&p, format!("{table}{more}"))?;
    Ok(p)
}

fn container_job(name: &str, registry: &str, image: &str, cmd: &str) -> pb::Job {
    let mut job = bai_tests::custom_job("ws", "ex", name, "c1", cmd);
    job.container_settings = Some(pb::ContainerSettings {
        image_source_registry: Some(pb::ImageSourceRegistry {
            server_url: format!("http://{registry}"),
            image: image.into(),
            credentials: None,
        }),
        shm_size: "64m".into(),
    });
    job
}

/// The containers (running or not) of jobs on `node` (named
/// `bai-<job>-<node>`: the host's podman is shared by the tests running at
/// once), with their ids.
fn containers_on(node: &str) -> Vec<(String, String)> {
    let out = Command::new("podman")
        .args(["ps", "-a", "--format", "{{.Names}} {{.ID}}"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    let suffix = format!("-{node}");
    out.lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(name, _)| name.starts_with("bai-") && name.ends_with(&suffix))
        .map(|(n, id)| (n.to_string(), id.to_string()))
        .collect()
}

async fn start(c: &mut Clients, job: pb::Job) -> Result<()> {
    c.jobs
        .create_job(pb::CreateJobRequest { job: Some(job) })
        .await?;
    Ok(())
}

/// A registry serving the test image and a coordinator whose local agents
/// run containers.
struct Rig {
    reg: Registry,
    coord: Coordinator,
    c: Clients,
    _config: tempfile::TempDir,
}

async fn rig(auth: Option<(&str, &str)>) -> Result<Option<Rig>> {
    rig_on(RigOpts {
        auth,
        ..RigOpts::default()
    })
    .await
}

/// How a rig differs from the plain one.
struct RigOpts<'a> {
    /// Credentials the registry wants.
    auth: Option<(&'a str, &'a str)>,
    /// More names the registry serves the test image as.
    images: &'a [&'a str],
    /// The agents' `[containers]` table (podman's by default).
    table: String,
    /// More agent config after it (more `[containers]` keys, other tables).
    config: &'a str,
    nodes: i32,
    /// More coordinator arguments.
    coord_args: &'a [&'a str],
    /// Programs the test needs beyond podman's.
    needs: &'a [&'a str],
}

impl Default for RigOpts<'_> {
    fn default() -> Self {
        Self {
            auth: None,
            images: &[],
            table: podman_table(&[]),
            config: "",
            nodes: 1,
            coord_args: &[],
            needs: &[],
        }
    }
}

/// What a container test needs, or `None` where a component is missing
/// (outside CI): a registry serving `IMAGE` (and `o.images`), and a
/// coordinator whose local agents run containers as `o.table` says.
async fn rig_on(o: RigOpts<'_>) -> Result<Option<Rig>> {
    if !standins::require_root()
        || standins::require_program("podman").is_none()
        || standins::require_program("docker-registry").is_none()
        || standins::require_program("busybox").is_none()
        || (o.auth.is_some() && standins::require_program("htpasswd").is_none())
        || o.needs
            .iter()
            .any(|p| standins::require_program(p).is_none())
    {
        return Ok(None);
    }
    let reg = registry_with(o.auth, o.images).context("the registry")?;
    let dir = tempfile::tempdir()?;
    let coord = Coordinator::start_with(CoordinatorOpts {
        extra_args: [
            "--local-agent-config".into(),
            agent_config_with(dir.path(), &o.table, o.config)?
                .display()
                .to_string(),
        ]
        .into_iter()
        .chain(o.coord_args.iter().map(|a| a.to_string()))
        .collect(),
        ..Default::default()
    })
    .context("the coordinator")?;
    let mut c = coord.clients().await?;
    c.setup_cluster("ws", "ex", "c1", o.nodes).await?;
    Ok(Some(Rig {
        reg,
        coord,
        c,
        _config: dir,
    }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_in_its_image_with_its_environment_mounts_and_shm() -> Result<()> {
    let Some(Rig {
        reg,
        coord,
        mut c,
        _config,
    }) = rig(None).await?
    else {
        return Ok(());
    };
    let node = c.nodes("ws", "c1").await?.remove(0);
    assert!(
        node.container_runtime.starts_with("podman version"),
        "{node:?}"
    );

    // Inside: no Debian (the image is busybox alone), the job's variables,
    // its temp directory writable at the same path, /dev/shm of 64 MiB.
    let cmd = "[ ! -e /etc/debian_version ] && echo in-the-image; \
               echo \"A=$A TOKEN=$TOKEN\"; \
               echo written > \"$AZ_BATCHAI_JOB_TEMP/from-container\"; \
               df -k /dev/shm | while read fs blocks rest; do echo \"shm=$blocks\"; done; \
               until [ -e \"$AZ_BATCHAI_JOB_TEMP/go\" ]; do sleep 0.1; done; echo done";
    start(
        &mut c,
        with_a_and_token(
            container_job("boxed", &reg.url, IMAGE, cmd),
            "hunter2-in-a-box",
        ),
    )
    .await?;
    // While it runs: the secret is on no command line on this host.
    bai_tests::eventually(
        Duration::from_secs(120),
        "the container running",
        || async { Ok(!containers_on(&node.node_id).is_empty()) },
    )
    .await?;
    let leaked = bai_tests::procs::with_cmdline("hunter2-in-a-box");
    assert!(leaked.is_empty(), "the secret is in an argv: {leaked:?}");
    let temp = coord.state_dir().join("local-nodes");
    // The job's temp is under the node's state: find its "from-container".
    let mut written = None;
    bai_tests::eventually(Duration::from_secs(30), "the job's file", || {
        written = bai_tests::files_under(&temp)
            .into_iter()
            .find(|p| p.ends_with("from-container"));
        let found = written.is_some();
        async move { Ok(found) }
    })
    .await?;
    let written = written.unwrap();
    // Written inside, seen on the node (the temp goes with the job).
    assert_eq!(std::fs::read_to_string(&written)?, "written\n");
    std::fs::write(written.with_file_name("go"), b"")?;
    let done = c
        .wait_job("ws", "ex", "boxed", Duration::from_secs(60))
        .await?;
    let out = String::from_utf8(c.read_output("ws", "ex", "boxed", "stdout.txt").await?)?;
    assert_eq!(
        exec_state(&done),
        pb::ExecutionState::Succeeded,
        "{done:?}\n{out}"
    );
    assert_eq!(
        out,
        "in-the-image\nA=1 TOKEN=hunter2-in-a-box\nshm=1K-blocks\nshm=65536\ndone\n"
    );
    let log = String::from_utf8(c.read_output("ws", "ex", "boxed", "execution.log").await?)?;
    assert!(
        log.contains(&format!("pulling {}/{IMAGE}", reg.url)),
        "{log}"
    );
    bai_tests::eventually(Duration::from_secs(20), "the container removed", || async {
        Ok(containers_on(&node.node_id).is_empty())
    })
    .await?;

    // Terminate: the job in the container gets the SIGTERM (its PID 1 is
    // the runtime's init, which passes it on), then the container is
    // removed; the image was not pulled again.
    terminate_a_waiting_job(&mut c, &reg.url).await?;
    bai_tests::eventually(
        Duration::from_secs(20),
        "the long container removed",
        || async { Ok(containers_on(&node.node_id).is_empty()) },
    )
    .await?;

    // An image the registry does not have fails the job, with its answer.
    start(
        &mut c,
        container_job("nope", &reg.url, "batchaitraining/none:1", "true"),
    )
    .await?;
    let done = c
        .wait_job("ws", "ex", "nope", Duration::from_secs(60))
        .await?;
    assert_eq!(exec_state(&done), pb::ExecutionState::Failed, "{done:?}");
    let errors = &done.execution_info.as_ref().unwrap().errors;
    assert_eq!(errors[0].code, "ImagePullFailed", "{errors:?}");
    assert!(
        errors[0].message.contains("batchaitraining/none"),
        "{errors:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_registry_credentials_are_used_and_never_shown() -> Result<()> {
    let Some(Rig {
        reg,
        coord,
        mut c,
        _config,
    }) = rig(Some(("puller", "Reg-pa55word"))).await?
    else {
        return Ok(());
    };
    let with = |name: &str, password: &str| {
        let mut job = container_job(name, &reg.url, IMAGE, "echo pulled-with-credentials");
        if let Some(r) = job
            .container_settings
            .as_mut()
            .and_then(|s| s.image_source_registry.as_mut())
        {
            r.credentials = Some(pb::PrivateRegistryCredentials {
                username: "puller".into(),
                password: password.into(),
                password_secret_reference: None,
            });
        }
        job
    };
    start(&mut c, with("good", "Reg-pa55word")).await?;
    let done = c
        .wait_job("ws", "ex", "good", Duration::from_secs(120))
        .await?;
    let out = String::from_utf8(c.read_output("ws", "ex", "good", "stdout.txt").await?)?;
    assert_eq!(exec_state(&done), pb::ExecutionState::Succeeded, "{done:?}");
    assert_eq!(out, "pulled-with-credentials\n");
    // Write-only: a read shows the user, not the password.
    let creds = done
        .container_settings
        .and_then(|s| s.image_source_registry)
        .and_then(|r| r.credentials)
        .unwrap();
    assert_eq!(
        (creds.username.as_str(), creds.password.as_str()),
        ("puller", "")
    );

    start(&mut c, with("bad", "Wrong-pa55word")).await?;
    let done = c
        .wait_job("ws", "ex", "bad", Duration::from_secs(120))
        .await?;
    assert_eq!(exec_state(&done), pb::ExecutionState::Failed, "{done:?}");
    let errors = &done.execution_info.as_ref().unwrap().errors;
    assert_eq!(errors[0].code, "ImagePullFailed", "{errors:?}");
    assert!(errors[0].message.contains("login"), "{errors:?}");
    for job in ["good", "bad"] {
        let log = String::from_utf8(c.read_output("ws", "ex", job, "execution.log").await?)?;
        assert!(
            !log.contains("pa55word"),
            "{job}: a password in the log: {log}"
        );
    }
    assert!(!format!("{errors:?}").contains("pa55word"));
    assert!(!coord.log().contains("pa55word") && !coord.agent_logs().contains("pa55word"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_preparation_runs_first_in_the_same_container() -> Result<()> {
    let Some(Rig {
        reg,
        coord: _coord,
        mut c,
        _config,
    }) = rig(None).await?
    else {
        return Ok(());
    };
    // What the preparation leaves in the container's own filesystem is
    // there for the command line: the same container.
    let mut job = container_job(
        "prepped",
        &reg.url,
        IMAGE,
        "[ -e /tmp/installed ] && echo the-preparation-ran-here",
    );
    job.job_preparation = Some(pb::JobPreparation {
        command_line: "echo preparing; echo to-stderr >&2; echo yes > /tmp/installed".into(),
    });
    start(&mut c, job).await?;
    let done = c
        .wait_job("ws", "ex", "prepped", Duration::from_secs(120))
        .await?;
    let read = |f: &'static str| {
        let mut c = c.clone();
        async move {
            Ok::<_, anyhow::Error>(String::from_utf8(
                c.read_output("ws", "ex", "prepped", f).await?,
            )?)
        }
    };
    assert_eq!(exec_state(&done), pb::ExecutionState::Succeeded, "{done:?}");
    assert_eq!(read("stdout.txt").await?, "the-preparation-ran-here\n");
    assert_eq!(read("stdout-job_prep.txt").await?, "preparing\n");
    assert_eq!(read("stderr-job_prep.txt").await?, "to-stderr\n");

    // A failing preparation fails the job; the command line never runs.
    let mut job = container_job("broken", &reg.url, IMAGE, "echo must-not-run");
    job.job_preparation = Some(pb::JobPreparation {
        command_line: "echo broke >&2; exit 4".into(),
    });
    start(&mut c, job).await?;
    let done = c
        .wait_job("ws", "ex", "broken", Duration::from_secs(120))
        .await?;
    assert_eq!(exec_state(&done), pb::ExecutionState::Failed, "{done:?}");
    let errors = &done.execution_info.as_ref().unwrap().errors;
    assert_eq!(errors[0].code, "JobPreparationFailed", "{errors:?}");
    assert!(errors[0].message.contains("code 4"), "{errors:?}");
    let out = String::from_utf8(c.read_output("ws", "ex", "broken", "stdout.txt").await?)?;
    assert_eq!(out, "", "the command line ran");
    let err = String::from_utf8(
        c.read_output("ws", "ex", "broken", "stderr-job_prep.txt")
            .await?,
    )?;
    assert_eq!(err, "broke\n");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_adopts_the_container_and_a_lost_one_is_removed() -> Result<()> {
    let Some(Rig {
        reg,
        coord,
        mut c,
        _config,
    }) = rig_on(RigOpts {
        images: &[WITH_VOLUME],
        ..RigOpts::default()
    })
    .await?
    else {
        return Ok(());
    };
    let node = c.nodes("ws", "c1").await?.remove(0).node_id;
    let state = coord.state_dir().to_path_buf();
    let cmd = "echo up; touch \"$AZ_BATCHAI_JOB_TEMP/up\"; \
               until [ -e \"$AZ_BATCHAI_JOB_TEMP/go\" ]; do sleep 0.1; done; echo done";
    start(&mut c, container_job("adopted", &reg.url, IMAGE, cmd)).await?;
    let mut up = None;
    bai_tests::eventually(Duration::from_secs(120), "the job running", || {
        up = bai_tests::files_under(&state.join("local-nodes"))
            .into_iter()
            .find(|p| p.ends_with("up"));
        let found = up.is_some();
        async move { Ok(found) }
    })
    .await?;
    let before = containers_on(&node);
    assert_eq!(before.len(), 1, "{before:?}");

    // The agent stops; the one started in its place takes the job over.
    let pids = bai_tests::agent_pids(&state);
    assert_eq!(pids.len(), 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pids[0]),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    bai_tests::eventually(Duration::from_secs(60), "a new agent", || {
        let now = bai_tests::agent_pids(&state);
        let done =
            now.len() == 1 && now != pids && !Path::new(&format!("/proc/{}", pids[0])).exists();
        async move { Ok(done) }
    })
    .await?;
    bai_tests::eventually(Duration::from_secs(60), "the job adopted", || {
        let adopted = coord.agent_logs().contains("adopting job");
        async move { Ok(adopted) }
    })
    .await?;
    assert_eq!(
        containers_on(&node),
        before,
        "the same container, no second one"
    );
    std::fs::write(up.unwrap().with_file_name("go"), b"")?;
    let done = c
        .wait_job("ws", "ex", "adopted", Duration::from_secs(60))
        .await?;
    assert_eq!(exec_state(&done), pb::ExecutionState::Succeeded, "{done:?}");
    let out = c.read_output("ws", "ex", "adopted", "stdout.txt").await?;
    assert_eq!(out, b"up\ndone\n");
    bai_tests::eventually(Duration::from_secs(20), "the container removed", || async {
        Ok(containers_on(&node).is_empty())
    })
    .await?;

    // The job's supervisor and the runtime's client are killed: the
    // container would run on under the runtime's monitor; the agent ends
    // the job and removes it, with its anonymous volume.
    let volumes_before = volumes();
    start(
        &mut c,
        container_job("orphan", &reg.url, WITH_VOLUME, "sleep 600"),
    )
    .await?;
    bai_tests::eventually(
        Duration::from_secs(60),
        "the orphan's container",
        || async { Ok(!containers_on(&node).is_empty()) },
    )
    .await?;
    let name = &containers_on(&node)[0].0;
    let mut killed = bai_tests::procs::alive_with_cmdline(&format!("--name {name}"));
    killed.extend(
        bai_tests::procs::alive_with_cmdline(" shim ")
            .into_iter()
            .filter(|&p| {
                bai_tests::procs::cmdline(p).is_some_and(|c| c.contains(state.to_str().unwrap()))
            }),
    );
    assert_eq!(killed.len(), 2, "the client and its supervisor: {killed:?}");
    for pid in killed {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )?;
    }
    let done = c
        .wait_job("ws", "ex", "orphan", Duration::from_secs(60))
        .await?;
    assert_eq!(exec_state(&done), pb::ExecutionState::Failed, "{done:?}");
    bai_tests::eventually(Duration::from_secs(20), "the orphan removed", || async {
        Ok(containers_on(&node).is_empty())
    })
    .await?;
    let log = String::from_utf8(c.read_output("ws", "ex", "orphan", "execution.log").await?)?;
    assert!(
        log.contains(&format!("removed its container {name}")),
        "{log}"
    );
    assert_eq!(volumes(), volumes_before, "the container's volume is left");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_image_cache_keeps_to_its_cap_least_recently_used_first() -> Result<()> {
    const OTHER: &str = "batchaitraining/other:2";
    // A cap below one image: every pull evicts the image used before.
    let Some(Rig {
        reg,
        coord: _coord,
        mut c,
        _config,
    }) = rig_on(RigOpts {
        images: &[OTHER],
        config: "image_cache_max = \"1k\"\n",
        ..RigOpts::default()
    })
    .await?
    else {
        return Ok(());
    };
    let exists = |image: &str| {
        Command::new("podman")
            .args(["image", "exists", &format!("{}/{image}", reg.url)])
            .status()
            .is_ok_and(|s| s.success())
    };
    let mut run = async |name: &str, image: &str| -> Result<String> {
        start(&mut c, container_job(name, &reg.url, image, "echo ran")).await?;
        let done = c
            .wait_job("ws", "ex", name, Duration::from_secs(120))
            .await?;
        assert_eq!(exec_state(&done), pb::ExecutionState::Succeeded, "{done:?}");
        assert_eq!(
            c.read_output("ws", "ex", name, "stdout.txt").await?,
            b"ran\n"
        );
        Ok(String::from_utf8(
            c.read_output("ws", "ex", name, "execution.log").await?,
        )?)
    };
    run("first", IMAGE).await?;
    assert!(exists(IMAGE), "the image a job just used stays");
    let log = run("second", OTHER).await?;
    assert!(!exists(IMAGE), "the least recently used went: {log}");
    assert!(exists(OTHER));
    assert!(
        log.contains(&format!("removed cached image {}/{IMAGE}", reg.url)),
        "{log}"
    );
    // Needed again: pulled again, and the other goes.
    let log = run("third", IMAGE).await?;
    assert!(
        log.contains(&format!("pulling {}/{IMAGE}", reg.url)),
        "{log}"
    );
    assert!(exists(IMAGE) && !exists(OTHER), "{log}");
    Ok(())
}

/// `$NAME` and `${NAME}` in `s` replaced from `env` (as the job's shell
/// expands a recipe's paths).
fn expand(s: &str, env: &std::collections::HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, tail) = match after.strip_prefix('{') {
            Some(b) => match b.split_once('}') {
                Some((n, t)) => (n, t),
                None => (b, ""),
            },
            None => {
                let n = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..n], &after[n..])
            }
        };
        out.push_str(env.get(name).map_or("", String::as_str));
        rest = tail;
    }
    out.push_str(rest);
    out
}

/// Removes the Docker Hub images a test pulled through its mirror.
struct Pulled(Vec<String>);

impl Drop for Pulled {
    fn drop(&mut self) {
        for image in &self.0 {
            let _ = Command::new("podman")
                .args(["rmi", "--force", image])
                .output();
        }
    }
}

/// Batch AI's single-node recipes, each as its job file says: the image from
/// Docker Hub (here a mirror on loopback, through podman's registries.conf),
/// the recipe's Azure File shares mounted (Samba), its job preparation run
/// first, and the framework launched as Batch AI documented — the program
/// and arguments with the recipe's variables expanded, the `AZ_BATCHAI_*`
/// variables set and true — inside the image, the script read from the
/// recipe's share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_single_node_recipes_run_in_their_images_as_batch_ai_ran_them() -> Result<()> {
    let Some(recipes) = bai_tests::recipes_dir() else {
        return Ok(());
    };
    let Some(azurite_bin) = standins::require_storage() else {
        return Ok(());
    };
    if !standins::require_root()
        || standins::require_program("podman").is_none()
        || standins::require_program("docker-registry").is_none()
        || standins::require_program("busybox").is_none()
    {
        return Ok(());
    }
    let mut single = Vec::new();
    for file in bai_tests::recipe_job_files(&recipes) {
        let job: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file)?)?;
        if job["properties"]["nodeCount"] == 1 {
            single.push((file, job["properties"].clone()));
        }
    }
    assert!(single.len() >= 5, "{} single-node recipes", single.len());
    let images: Vec<String> = single
        .iter()
        .map(|(_, p)| {
            p["containerSettings"]["imageSourceRegistry"]["image"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let mut distinct = images.clone();
    distinct.sort();
    distinct.dedup();
    let names: Vec<&str> = distinct.iter().map(String::as_str).collect();
    let reg = registry_with(None, &names)?;
    let _pulled = Pulled(distinct.iter().map(|i| format!("docker.io/{i}")).collect());
    let conf_dir = tempfile::tempdir()?;
    let registries = conf_dir.path().join("registries.conf");
    std::fs::write(
        &registries,
        format!(
            "[[registry]]\nprefix = \"docker.io\"\nlocation = \"{}\"\ninsecure = true\n",
            reg.url
        ),
    )?;
    // One storage account for the recipes' shares (Samba) and blob
    // containers (Azurite): Azurite's own account and key.
    let (account, key) = (standins::azurite::ACCOUNT, standins::azurite::KEY);
    let samba = standins::samba::Samba::start_shares(account, &["logs", "scripts"], key)?;
    let azurite = standins::azurite::Azurite::start(&azurite_bin)?;
    for (_, props) in &single {
        for blob in props["mountVolumes"]["azureBlobFileSystems"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let container = blob["containerName"].as_str().unwrap_or_default();
            azurite.put(&format!("{container}/README"), b"a recipe's data\n")?;
        }
    }
    let coord = Coordinator::start_with(CoordinatorOpts {
        extra_args: vec![
            "--local-agent-config".into(),
            agent_config(conf_dir.path(), "")?.display().to_string(),
            "--local-agent-file-endpoint".into(),
            format!("127.0.0.1:{}", samba.port),
            "--local-agent-blob-endpoint".into(),
            format!("http://127.0.0.1:{}/{{account}}", azurite.port),
        ],
        env: vec![(
            "CONTAINERS_REGISTRIES_CONF".into(),
            registries.display().to_string(),
        )],
        ..Default::default()
    })?;
    let mut c = coord.clients().await?;
    c.setup_cluster("ws", "ex", "c1", 1).await?;

    for (i, (file, props)) in single.iter().enumerate() {
        let shown = file.file_name().unwrap_or_default().to_string_lossy();
        let name = format!("recipe{i}");
        // A Python script on one of the recipe's shares: put it there.
        let script = ["tensorFlowSettings", "cntkSettings"]
            .iter()
            .find_map(|t| props[t]["pythonScriptFilePath"].as_str())
            .unwrap_or_default();
        let script_on_share = script
            .strip_prefix("$AZ_BATCHAI_JOB_MOUNT_ROOT/")
            .and_then(|p| p.split_once('/'))
            .filter(|(share, _)| ["logs", "scripts"].contains(share))
            .map(|(share, rest)| -> Result<String> {
                let path = samba.share_path(share).join(rest);
                std::fs::create_dir_all(path.parent().unwrap())?;
                let text = format!("print('recipe {i}')");
                std::fs::write(&path, &text)?;
                Ok(text)
            })
            .transpose()?;
        let out = coord
            .cli()
            .args([
                "job", "create", "-w", "ws", "-e", "ex", "-c", "c1", "-n", &name,
            ])
            .args(["--storage-account-name", account, "-f"])
            .arg(file)
            .env("AZURE_BATCHAI_STORAGE_KEY", key)
            .output()?;
        assert!(
            out.status.success(),
            "{shown}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let done = c
            .wait_job("ws", "ex", &name, Duration::from_secs(120))
            .await?;
        let stdout = String::from_utf8(c.read_output("ws", "ex", &name, "stdout.txt").await?)?;
        assert_eq!(
            exec_state(&done),
            pb::ExecutionState::Succeeded,
            "{shown}: {done:?}\n{stdout}\n{}",
            String::from_utf8_lossy(&c.read_output("ws", "ex", &name, "execution.log").await?)
        );
        let mut lines = stdout.lines();
        let argv = lines.next().unwrap_or_default().to_string();
        let env: std::collections::HashMap<String, String> = lines
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();

        // The launch, as Batch AI documented it for the toolkit.
        let tool = |t: &str, k: &str| props[t][k].as_str().unwrap_or_default().to_string();
        let want = if props.get("tensorFlowSettings").is_some() {
            let python = Some(tool("tensorFlowSettings", "pythonInterpreterPath"))
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "python".into());
            format!(
                "{python} {} {}",
                tool("tensorFlowSettings", "pythonScriptFilePath"),
                tool("tensorFlowSettings", "masterCommandLineArgs")
            )
        } else if !tool("cntkSettings", "pythonScriptFilePath").is_empty() {
            format!(
                "python {} {}",
                tool("cntkSettings", "pythonScriptFilePath"),
                tool("cntkSettings", "commandLineArgs")
            )
        } else {
            format!(
                "cntk configFile={} {}",
                tool("cntkSettings", "configFilePath"),
                tool("cntkSettings", "commandLineArgs")
            )
        };
        let words = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        assert_eq!(
            words(&format!("argv: {}", expand(&want, &env))),
            words(&argv),
            "{shown}: the launch"
        );

        // The variables: every path real and absolute, nothing empty or left
        // unexpanded.
        for var in [
            "AZ_BATCHAI_MOUNT_ROOT",
            "AZ_BATCHAI_JOB_MOUNT_ROOT",
            "AZ_BATCHAI_JOB_TEMP",
            "AZ_BATCHAI_SHARED_JOB_TEMP",
            "AZ_BATCHAI_STDOUTERR_DIR",
        ] {
            let v = env.get(var).map(String::as_str).unwrap_or_default();
            assert!(v.starts_with('/'), "{shown}: {var}={v:?}\n{stdout}");
        }
        assert_eq!(
            env.get("AZ_BATCHAI_NUM_GPUS").map(String::as_str),
            Some("0"),
            "{shown}"
        );
        // No GPU given: CUDA sees none (empty hides them all).
        assert_eq!(
            env.get("CUDA_VISIBLE_DEVICES").map(String::as_str),
            Some(""),
            "{shown}"
        );
        for (k, v) in env.iter().filter(|(k, _)| *k != "CUDA_VISIBLE_DEVICES") {
            assert!(
                !v.is_empty() && !v.contains("$AZ_BATCHAI"),
                "{shown}: {k}={v:?}"
            );
        }
        for d in props["inputDirectories"].as_array().into_iter().flatten() {
            let id = d["id"].as_str().unwrap_or_default();
            assert_eq!(
                env.get(&format!("AZ_BATCHAI_INPUT_{id}")),
                Some(&expand(d["path"].as_str().unwrap_or_default(), &env)),
                "{shown}: input {id}"
            );
        }
        for d in props["outputDirectories"].as_array().into_iter().flatten() {
            let id = d["id"].as_str().unwrap_or_default();
            let got = env
                .get(&format!("AZ_BATCHAI_OUTPUT_{id}"))
                .cloned()
                .unwrap_or_default();
            let prefix = expand(d["pathPrefix"].as_str().unwrap_or_default(), &env);
            let suffix = d["pathSuffix"].as_str().unwrap_or_default();
            assert!(
                got.starts_with(&prefix) && got.ends_with(suffix),
                "{shown}: output {id} = {got:?} (prefix {prefix}, suffix {suffix})"
            );
        }
        // The preparation ran first, in the image.
        if let Some(prep) = props["jobPreparation"]["commandLine"].as_str() {
            let out = String::from_utf8(
                c.read_output("ws", "ex", &name, "stdout-job_prep.txt")
                    .await?,
            )?;
            assert!(
                out.starts_with(&format!("argv: {prep}\n")),
                "{shown}: {out}"
            );
        }
        // The script came from the recipe's share, mounted in the container.
        if let Some(on_share) = &script_on_share {
            assert!(
                stdout.contains(&format!("\nscript: {on_share}\n")),
                "{shown}: the script from the share: {stdout}"
            );
        }
    }
    Ok(())
}

/// A 3-node customMpi job in containers: every rank runs in its own
/// container on its node, and the master's mpirun (OpenMPI from the host's
/// /usr, bound in by the agents' run_args: the test image has none) reaches
/// the other ranks' containers through bai-mpi, bound in by the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_node_mpi_job_runs_each_rank_in_its_own_container() -> Result<()> {
    if standins::require_program("mpirun").is_none() {
        return Ok(());
    }
    let host_usr = [
        "-v",
        "/usr:/usr:ro",
        "-v",
        "/etc/openmpi:/etc/openmpi:ro",
        "-v",
        "/etc/alternatives:/etc/alternatives:ro",
    ];
    let Some(Rig {
        reg,
        coord: _coord,
        mut c,
        _config,
    }) = rig_on(RigOpts {
        table: podman_table(&host_usr),
        nodes: 3,
        ..RigOpts::default()
    })
    .await?
    else {
        return Ok(());
    };
    let mut job = container_job("mpi", &reg.url, IMAGE, "unused");
    job.node_count = 3;
    job.toolkit = Some(pb::job::Toolkit::CustomMpiSettings(pb::CustomMpiSettings {
        command_line: "sh -c 'echo \"mpi rank=$OMPI_COMM_WORLD_RANK node=$BAI_NODE_ID image=$(cat /etc/bai-test-image)\"'".into(),
        process_count: 3,
    }));
    let (done, out) = run_to_success(&mut c, job).await?;
    let mut ranks: Vec<(String, String, String)> = out
        .lines()
        .filter_map(|l| l.strip_prefix("mpi "))
        .map(|l| {
            let field = |k: &str| {
                l.split(' ')
                    .find_map(|kv| kv.strip_prefix(k))
                    .unwrap_or_default()
                    .to_string()
            };
            (field("rank="), field("node="), field("image="))
        })
        .collect();
    ranks.sort();
    assert_eq!(
        ranks.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        ["0", "1", "2"],
        "{out}"
    );
    let mut nodes: Vec<&str> = ranks.iter().map(|r| r.1.as_str()).collect();
    nodes.sort();
    let mut want = done.node_ids.clone();
    want.sort();
    assert_eq!(nodes, want, "one process on each node: {out}");
    assert!(
        ranks.iter().all(|r| r.2 == "busybox"),
        "every process in the image: {out}"
    );
    for node in &done.node_ids {
        bai_tests::eventually(
            Duration::from_secs(20),
            "the containers removed",
            || async { Ok(containers_on(node).is_empty()) },
        )
        .await?;
    }
    Ok(())
}

/// A 2-node pyTorch job in containers: the script runs in each node's own
/// container, each with its rank and the same rendezvous, as on the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_node_pytorch_job_runs_each_rank_in_its_own_container() -> Result<()> {
    let Some(Rig {
        reg,
        coord: _coord,
        mut c,
        _config,
    }) = rig_on(RigOpts {
        nodes: 2,
        ..RigOpts::default()
    })
    .await?
    else {
        return Ok(());
    };
    let mut job = container_job("torch", &reg.url, IMAGE, "unused");
    job.node_count = 2;
    job.environment_variables.push(pb::EnvironmentVariable {
        name: "BAI_TEST_BARRIER".into(),
        value: "1".into(),
    });
    job.toolkit = Some(pb::job::Toolkit::PyTorchSettings(pb::PyTorchSettings {
        python_script_file_path: "train.py".into(),
        command_line_args: "--epochs 1".into(),
        ..Default::default()
    }));
    start(&mut c, job).await?;
    let done = c
        .wait_job("ws", "ex", "torch", Duration::from_secs(120))
        .await?;
    assert_eq!(exec_state(&done), pb::ExecutionState::Succeeded, "{done:?}");
    let mut masters = Vec::new();
    for (rank, file) in ["stdout.txt", "stdout-1.txt"].iter().enumerate() {
        let out = String::from_utf8(c.read_output("ws", "ex", "torch", file).await?)?;
        let env: std::collections::HashMap<&str, &str> =
            out.lines().filter_map(|l| l.split_once('=')).collect();
        assert!(
            out.starts_with("argv: python train.py --epochs 1\n"),
            "{out}"
        );
        assert_eq!(env.get("RANK"), Some(&rank.to_string().as_str()), "{out}");
        assert_eq!(env.get("WORLD_SIZE"), Some(&"2"), "{out}");
        let var = |k: &str| env.get(k).map(|v| v.to_string());
        masters.push((var("MASTER_ADDR"), var("MASTER_PORT")));
    }
    assert!(
        masters[0].0.is_some() && masters[0].1.is_some(),
        "{masters:?}"
    );
    assert_eq!(masters[0], masters[1], "one rendezvous");
    Ok(())
}

/// Without the NVIDIA Container Toolkit, a container job gets its GPUs as
/// nvidia-docker 1 gave them: only its own GPU device nodes (and the
/// driver's control node), the driver's libraries read-only at
/// /usr/local/nvidia/lib64, and CUDA_VISIBLE_DEVICES naming its GPU. Here
/// with simulated GPUs, device nodes made with mknod (no driver behind them)
/// and stand-in driver libraries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_job_gets_only_its_gpus_without_the_container_toolkit() -> Result<()> {
    if !standins::require_root() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let (dev, driver) = (dir.path().join("dev"), dir.path().join("driver"));
    std::fs::create_dir_all(&dev)?;
    std::fs::create_dir_all(&driver)?;
    for (name, minor) in [("nvidia0", 0), ("nvidia1", 1), ("nvidiactl", 255)] {
        nix::sys::stat::mknod(
            &dev.join(name),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o666),
            nix::sys::stat::makedev(195, minor),
        )?;
    }
    for lib in ["libnvidia-ml.so.1", "libcuda.so.1"] {
        std::fs::write(driver.join(lib), format!("stand-in {lib}\n"))?;
    }
    let config = format!(
        "[cgroups]\ndev_dir = \"{}\"\n[gpu]\nnvml_library = \"{}\"\n",
        dev.display(),
        driver.join("libnvidia-ml.so.1").display()
    );
    let Some(Rig {
        reg,
        coord: _coord,
        mut c,
        _config,
    }) = rig_on(RigOpts {
        config: &config,
        coord_args: &["--local-agent-fake-gpus", "2"],
        ..RigOpts::default()
    })
    .await?
    else {
        return Ok(());
    };
    let node = c.nodes("ws", "c1").await?.remove(0);
    assert!(
        node.container_runtime
            .ends_with("GPUs by device nodes and driver libraries"),
        "{node:?}"
    );
    let mut job = container_job(
        "gpu",
        &reg.url,
        IMAGE,
        "ls /dev | grep nvidia; cat /usr/local/nvidia/lib64/*; echo CUDA=$CUDA_VISIBLE_DEVICES",
    );
    job.gpus_per_node = 1;
    start(&mut c, job).await?;
    let done = c
        .wait_job("ws", "ex", "gpu", Duration::from_secs(120))
        .await?;
    let out = String::from_utf8(c.read_output("ws", "ex", "gpu", "stdout.txt").await?)?;
    assert_eq!(
        exec_state(&done),
        pb::ExecutionState::Succeeded,
        "{done:?}\n{out}"
    );
    assert_eq!(done.gpu_uuids.len(), 1, "{done:?}");
    // A simulated GPU's device number is its index.
    let minor = node
        .gpus
        .iter()
        .find(|g| g.uuid == done.gpu_uuids[0])
        .map(|g| g.index)
        .expect("the job's GPU is the node's");
    assert_eq!(
        out,
        format!(
            "nvidia{minor}\nnvidiactl\nstand-in libcuda.so.1\nstand-in libnvidia-ml.so.1\nCUDA={}\n",
            done.gpu_uuids[0]
        ),
        "its GPU alone, the control node, the driver"
    );
    Ok(())
}

/// A container job's figures are its container's: the runtime puts the
/// container in a cgroup of its own, which the agent samples with the
/// job's (the job's own cgroup holds only the runtime's client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_jobs_metrics_count_its_containers_processes() -> Result<()> {
    let Some(Rig {
        reg,
        coord: _coord,
        mut c,
        _config,
    }) = rig(None).await?
    else {
        return Ok(());
    };
    // Four seconds of one core's work inside, then a rest long enough for
    // a sample (every 2 s) to see it all.
    let burn = "timeout 4 sh -c 'while :; do :; done'; sleep 2.5";
    start(&mut c, container_job("burn", &reg.url, IMAGE, burn)).await?;
    let done = c
        .wait_job("ws", "ex", "burn", Duration::from_secs(120))
        .await?;
    assert_eq!(exec_state(&done), pb::ExecutionState::Succeeded, "{done:?}");
    let m = done.metrics.unwrap_or_default();
    // The runtime's client alone uses a fraction of a second.
    assert!(m.cpu_seconds >= 2.0, "the container's CPU time: {m:?}");
    Ok(())
}

/// Submits `job`, waits for its end and asserts it succeeded (showing its
/// stdout, stderr and execution.log if not); returns it and its stdout.
async fn run_to_success(c: &mut Clients, job: pb::Job) -> Result<(pb::Job, String)> {
    let name = job.name.clone();
    start(c, job).await?;
    let done = c
        .wait_job("ws", "ex", &name, Duration::from_secs(120))
        .await?;
    let mut read = async |f: &str| -> Result<String> {
        Ok(String::from_utf8(
            c.read_output("ws", "ex", &name, f).await?,
        )?)
    };
    let out = read("stdout.txt").await?;
    if exec_state(&done) != pb::ExecutionState::Succeeded {
        let err = read("stderr.txt").await?;
        let log = read("execution.log").await?;
        bail!(
            "{name} did not succeed: {done:?}\nstdout:\n{out}\nstderr:\n{err}\nexecution.log:\n{log}"
        );
    }
    Ok((done, out))
}

/// `job` with variable A=1 and secret TOKEN=`secret`.
fn with_a_and_token(mut job: pb::Job, secret: &str) -> pb::Job {
    job.environment_variables.push(pb::EnvironmentVariable {
        name: "A".into(),
        value: "1".into(),
    });
    job.secrets.push(pb::EnvironmentVariableWithSecretValue {
        name: "TOKEN".into(),
        value: secret.into(),
        value_secret_reference: None,
    });
    job
}

/// Runs job "long" (`echo waiting; sleep 600`) in `IMAGE`, already on the
/// node, and terminates it once it waits: it must end by the SIGTERM (a
/// shell with no handler as PID 1 would ignore it and last until the
/// SIGKILL: the runtime's init passes it on), and the image not be pulled
/// again.
async fn terminate_a_waiting_job(c: &mut Clients, registry: &str) -> Result<()> {
    start(
        c,
        container_job("long", registry, IMAGE, "echo waiting; sleep 600"),
    )
    .await?;
    bai_tests::eventually(Duration::from_secs(60), "the long job waiting", || {
        let mut c = c.clone();
        async move {
            let out = c.read_output("ws", "ex", "long", "stdout.txt").await;
            Ok(out.is_ok_and(|o| o.starts_with(b"waiting")))
        }
    })
    .await?;
    c.jobs
        .terminate_job(pb::TerminateJobRequest {
            job: Some(bai_tests::key("ws", "ex", "long")),
        })
        .await?;
    let done = c
        .wait_job("ws", "ex", "long", Duration::from_secs(60))
        .await?;
    assert_eq!(exec_state(&done), pb::ExecutionState::Failed, "{done:?}");
    assert_eq!(
        done.execution_info.as_ref().and_then(|e| e.exit_code),
        Some(128 + 15),
        "the job ended by the SIGTERM: {done:?}"
    );
    let log = String::from_utf8(c.read_output("ws", "ex", "long", "execution.log").await?)?;
    assert!(
        log.contains("is on this node already"),
        "pulled again: {log}"
    );
    Ok(())
}

/// A dockerd of the test's own (socket, data and exec roots in a temporary
/// directory; vfs storage, no bridge or iptables: the host network only),
/// stopped on drop.
struct Dockerd {
    child: Child,
    sock: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Dockerd {
    fn start() -> Result<Dockerd> {
        let dir = tempfile::Builder::new().prefix("bai-dockerd-").tempdir()?;
        let sock = dir.path().join("docker.sock");
        let log = std::fs::File::create(dir.path().join("dockerd.log"))?;
        let child = Command::new("dockerd")
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--storage-driver=vfs",
            ])
            .arg("--data-root")
            .arg(dir.path().join("data"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", sock.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("dockerd")?;
        let d = Dockerd {
            child,
            sock,
            _dir: dir,
        };
        let ready = bai_tests::wait_until(Duration::from_secs(60), "dockerd to answer", || {
            d.docker()
                .arg("info")
                .output()
                .is_ok_and(|o| o.status.success())
        });
        if ready.is_err() {
            let log =
                std::fs::read_to_string(d._dir.path().join("dockerd.log")).unwrap_or_default();
            bail!("dockerd did not start: {log}");
        }
        Ok(d)
    }

    /// The docker client, talking to this daemon.
    fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        c.arg("-H").arg(format!("unix://{}", self.sock.display()));
        c
    }

    fn containers_on(&self, node: &str) -> Vec<String> {
        let out = self
            .docker()
            .args(["ps", "-a", "--format", "{{.Names}}"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        out.lines()
            .filter(|n| n.starts_with("bai-") && n.ends_with(&format!("-{node}")))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = bai_tests::wait_until(Duration::from_secs(20), "dockerd to stop", || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        let _ = self.child.kill();
        let _ = self.child.wait();
        // What dockerd leaves mounted (its network namespace's nsfs).
        for m in bai_tests::mounted_under(self._dir.path()) {
            let _ = Command::new("umount").arg("-l").arg(&m).output();
        }
    }
}

/// docker, the second runtime, with its own daemon: the job runs in its
/// image with its variables by name and its shm, its output exact; a
/// terminate's SIGTERM reaches the job (docker-init) and the container goes;
/// a cached image is not pulled again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_runs_a_job_as_podman_does() -> Result<()> {
    if !standins::require_root() || standins::require_program("dockerd").is_none() {
        return Ok(());
    }
    let dockerd = Dockerd::start()?;
    let table = format!(
        "[containers]\nruntime = \"docker\"\nglobal_args = [\"-H\", \"unix://{}\"]\n",
        dockerd.sock.display()
    );
    let Some(Rig {
        reg,
        coord: _coord,
        mut c,
        _config,
    }) = rig_on(RigOpts {
        table,
        needs: &["docker"],
        ..RigOpts::default()
    })
    .await?
    else {
        return Ok(());
    };
    let node = c.nodes("ws", "c1").await?.remove(0);
    assert!(
        node.container_runtime.starts_with("Docker version"),
        "{node:?}"
    );
    let cmd = "[ ! -e /etc/debian_version ] && echo in-the-image; echo \"A=$A TOKEN=$TOKEN\"; \
               df -k /dev/shm | while read fs blocks rest; do echo \"shm=$blocks\"; done";
    let job = with_a_and_token(
        container_job("boxed", &reg.url, IMAGE, cmd),
        "hunter2-in-a-whale",
    );
    run_to_success(&mut c, job).await?;
    let out = String::from_utf8(c.read_output("ws", "ex", "boxed", "stdout.txt").await?)?;
    let log = String::from_utf8(c.read_output("ws", "ex", "boxed", "execution.log").await?)?;
    assert_eq!(
        out,
        "in-the-image\nA=1 TOKEN=hunter2-in-a-whale\nshm=1K-blocks\nshm=65536\n"
    );
    assert!(
        log.contains(&format!("pulling {}/{IMAGE}", reg.url)),
        "{log}"
    );
    assert!(log.contains("started the job in container"), "{log}");

    terminate_a_waiting_job(&mut c, &reg.url).await?;
    bai_tests::eventually(Duration::from_secs(20), "the containers removed", || {
        let left = dockerd.containers_on(&node.node_id);
        async move { Ok(left.is_empty()) }
    })
    .await?;
    Ok(())
}
