//! A job's own mounts end to end (`mountVolumes` of the job, Batch AI's
//! `$AZ_BATCHAI_JOB_MOUNT_ROOT`): made before the job on the node that runs
//! it, owned by the cluster's admin user, removed as soon as the job ends
//! (before it is reported), undone when one of them fails, kept across an
//! agent restart while the job runs, and gone with a terminated job.

use anyhow::Result;
use bai_common::standins::{self, azurite::Azurite, samba::Samba};
use bai_proto::v1 as pb;
use bai_tests::{Clients, Coordinator, CoordinatorOpts, custom_job, eventually, exec_state};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(90);

fn bind(dir: &Path, at: &str) -> pb::UnmanagedFileSystemReference {
    pb::UnmanagedFileSystemReference {
        mount_command: format!("mount --bind {}", dir.display()),
        relative_mount_path: at.into(),
    }
}

async fn submit_with(
    c: &mut Clients,
    name: &str,
    command_line: &str,
    mounts: pb::MountVolumes,
) -> Result<()> {
    let mut job = custom_job("ws", "ex", name, "c", command_line);
    job.mount_volumes = Some(mounts);
    c.jobs
        .create_job(pb::CreateJobRequest { job: Some(job) })
        .await?;
    Ok(())
}

/// No mount and no FUSE daemon left of the job's mounts.
fn nothing_left(state: &Path) {
    let root = state.join("local-nodes");
    let mounted: Vec<_> = bai_tests::mounted_under(&root)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("/job-mounts/"))
        .collect();
    assert!(mounted.is_empty(), "job mounts left: {mounted:?}");
    let daemons = bai_tests::procs::alive_with_cmdline("/job-mounts/");
    assert!(daemons.is_empty(), "FUSE daemons left: {daemons:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_own_mounts_are_made_for_it_and_removed_after_it() -> Result<()> {
    let Some(azurite_bin) = standins::require_storage() else {
        return Ok(());
    };
    let samba = Samba::start("Smb-j0b-pw")?;
    std::fs::write(samba.share_dir.join("before.txt"), "in the share\n")?;
    let azurite = Azurite::start(&azurite_bin)?;
    azurite.put("jobdata/before.txt", b"in the container\n")?;
    let local = tempfile::tempdir()?;
    std::fs::set_permissions(local.path(), std::fs::Permissions::from_mode(0o777))?;
    let user = format!("baijm{}", std::process::id() % 100_000);
    let _gone = bai_tests::UserGone(user.clone());

    let coord = Coordinator::start_with(CoordinatorOpts {
        extra_args: vec![
            "--local-agent-blob-endpoint".into(),
            format!("http://127.0.0.1:{}/{{account}}", azurite.port),
            "--local-agent-file-endpoint".into(),
            format!("127.0.0.1:{}", samba.port),
        ],
        ..Default::default()
    })?;
    let mut c = coord.clients().await?;
    c.workspace_and_experiment("ws", "ex").await?;
    let mut cluster = bai_tests::cluster("ws", "c", 1);
    cluster.user_account_settings = Some(pb::UserAccountSettings {
        admin_user_name: user.clone(),
        admin_user_password: "Adm1n-pw".into(),
        ..Default::default()
    });
    c.clusters
        .create_cluster(pb::CreateClusterRequest {
            cluster: Some(cluster),
        })
        .await?;
    if let Err(e) = c.wait_idle_nodes("ws", "c", 1, WAIT).await {
        panic!("{e}\nagent logs:\n{}", coord.agent_logs());
    }
    let key_of = |k: &str| {
        Some(pb::AzureStorageCredentialsInfo {
            account_key: k.into(),
            account_key_secret_reference: None,
        })
    };
    let mounts = pb::MountVolumes {
        azure_file_shares: vec![pb::AzureFileShareReference {
            account_name: samba.user.clone(),
            azure_file_url: format!(
                "https://{}.file.core.windows.net/{}",
                samba.user,
                standins::samba::SHARE
            ),
            credentials: key_of(&samba.password),
            relative_mount_path: "afs".into(),
            file_mode: "0777".into(),
            directory_mode: "0777".into(),
        }],
        azure_blob_file_systems: vec![pb::AzureBlobFileSystemReference {
            account_name: standins::azurite::ACCOUNT.into(),
            container_name: "jobdata".into(),
            credentials: key_of(standins::azurite::KEY),
            relative_mount_path: "bfs".into(),
            mount_options: String::new(),
        }],
        unmanaged_file_systems: vec![bind(local.path(), "local")],
        ..Default::default()
    };
    let cmd = "set -e; m=\"$AZ_BATCHAI_JOB_MOUNT_ROOT\"; id -un; \
               cat \"$m/afs/before.txt\" \"$m/bfs/before.txt\"; \
               echo to-share > \"$m/afs/out.txt\"; echo to-blob > \"$m/bfs/out.txt\"; \
               echo to-local > \"$m/local/out.txt\"; \
               test -z \"$(ls \"$AZ_BATCHAI_MOUNT_ROOT\")\" && echo no-cluster-mounts";
    submit_with(&mut c, "io", cmd, mounts.clone()).await?;
    let job = c.wait_job("ws", "ex", "io", WAIT).await?;
    let out = String::from_utf8(c.read_output("ws", "ex", "io", "stdout.txt").await?)?;
    let err = String::from_utf8(c.read_output("ws", "ex", "io", "stderr.txt").await?)?;
    let log = String::from_utf8(c.read_output("ws", "ex", "io", "execution.log").await?)?;
    assert_eq!(
        exec_state(&job),
        pb::ExecutionState::Succeeded,
        "{out} {err} {log}\n{}",
        coord.agent_logs()
    );
    assert_eq!(
        out,
        format!("{user}\nin the share\nin the container\nno-cluster-mounts\n")
    );
    for at in ["afs", "bfs", "local"] {
        assert!(
            log.contains(&format!("at $AZ_BATCHAI_JOB_MOUNT_ROOT/{at} (")),
            "execution.log says what was mounted: {log}"
        );
    }
    // Removed before the job was reported as ended.
    nothing_left(coord.state_dir());
    assert_eq!(
        std::fs::read_to_string(samba.share_dir.join("out.txt"))?,
        "to-share\n"
    );
    let written = local.path().join("out.txt");
    assert_eq!(std::fs::read_to_string(&written)?, "to-local\n");
    assert_eq!(
        Some(std::fs::metadata(&written)?.uid()),
        bai_tests::procs::uid_of(&user),
        "the job wrote as the admin user"
    );
    let blob = azurite.rclone(&["cat", ":azureblob:jobdata/out.txt"]);
    assert_eq!(String::from_utf8_lossy(&blob.stdout), "to-blob\n");
    // The keys reach no API read, log or process list.
    let view = format!("{:?}", c.job("ws", "ex", "io").await?);
    for secret in [samba.password.as_str(), standins::azurite::KEY] {
        assert!(!view.contains(secret), "the job view holds a key");
        assert!(!coord.agent_logs().contains(secret));
        assert!(!coord.log().contains(secret));
    }

    // One mount failing: the job fails with the reason, the mount made
    // before it is undone, and the node goes on to the next job.
    let broken = pb::MountVolumes {
        unmanaged_file_systems: vec![
            bind(local.path(), "fine"),
            pb::UnmanagedFileSystemReference {
                mount_command: "echo no such export >&2; false".into(),
                relative_mount_path: "broken".into(),
            },
        ],
        ..Default::default()
    };
    submit_with(&mut c, "bad", "echo never ran", broken).await?;
    let job = match c.wait_job("ws", "ex", "bad", WAIT).await {
        Ok(j) => j,
        Err(e) => panic!("{e}\nagent logs:\n{}", coord.agent_logs()),
    };
    assert_eq!(exec_state(&job), pb::ExecutionState::Failed, "{job:?}");
    let e = job
        .execution_info
        .as_ref()
        .and_then(|i| i.errors.first())
        .expect("a failed mount says why");
    assert_eq!(e.code, "JobMountFailed", "{e:?}");
    assert!(
        e.message.contains("$AZ_BATCHAI_JOB_MOUNT_ROOT/broken")
            && e.message.contains("no such export"),
        "{e:?}"
    );
    assert!(
        c.read_output("ws", "ex", "bad", "stdout.txt")
            .await?
            .is_empty()
    );
    nothing_left(coord.state_dir());
    c.submit("ws", "ex", "after", "c", "echo fine").await?;
    let job = c.wait_job("ws", "ex", "after", WAIT).await?;
    assert_eq!(exec_state(&job), pb::ExecutionState::Succeeded, "{job:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_mounts_outlive_an_agent_restart_and_go_with_the_job() -> Result<()> {
    if !standins::require_root() {
        return Ok(());
    }
    let data = tempfile::tempdir()?;
    std::fs::write(data.path().join("input.txt"), "data\n")?;
    let coord = Coordinator::start()?;
    let mut c = coord.clients().await?;
    c.setup_cluster("ws", "ex", "c", 1).await?;
    c.wait_idle_nodes("ws", "c", 1, WAIT).await?;
    let mounts = pb::MountVolumes {
        unmanaged_file_systems: vec![bind(data.path(), "data")],
        ..Default::default()
    };
    // The job waits for a file that appears only through its mount.
    let cmd = "m=\"$AZ_BATCHAI_JOB_MOUNT_ROOT/data\"; cat \"$m/input.txt\"; \
               touch \"$m/started\"; until [ -e \"$m/go\" ]; do sleep 0.05; done; echo done";
    submit_with(&mut c, "wait", cmd, mounts.clone()).await?;
    let started = data.path().join("started");
    bai_tests::wait_until(WAIT, "the job to start", || started.exists())?;
    let state = coord.state_dir().to_path_buf();
    let job_mounts = |s: &Path| {
        bai_tests::mounted_under(&s.join("local-nodes"))
            .into_iter()
            .filter(|p| p.to_string_lossy().contains("/job-mounts/"))
            .collect::<Vec<_>>()
    };
    assert_eq!(job_mounts(&state).len(), 1, "{:?}", job_mounts(&state));

    // The agent stops and a new one takes the running job over: its mount
    // stays (once), and goes when the job ends.
    let pids = bai_tests::agent_pids(&state);
    assert_eq!(pids.len(), 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pids[0]),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    eventually(WAIT, "a new agent", || {
        let now = bai_tests::agent_pids(&state);
        let done =
            now.len() == 1 && now != pids && !Path::new(&format!("/proc/{}", pids[0])).exists();
        async move { Ok(done) }
    })
    .await?;
    assert_eq!(job_mounts(&state).len(), 1, "{:?}", job_mounts(&state));
    std::fs::write(data.path().join("go"), "")?;
    let job = c.wait_job("ws", "ex", "wait", WAIT).await?;
    assert_eq!(exec_state(&job), pb::ExecutionState::Succeeded, "{job:?}");
    assert_eq!(
        c.read_output("ws", "ex", "wait", "stdout.txt").await?,
        b"data\ndone\n"
    );
    assert!(job_mounts(&state).is_empty(), "{:?}", job_mounts(&state));

    // A terminated job's mount goes with it; deleting the job removes its
    // mount root.
    std::fs::remove_file(data.path().join("go"))?;
    std::fs::remove_file(&started)?;
    submit_with(&mut c, "stop", cmd, mounts).await?;
    bai_tests::wait_until(WAIT, "the second job to start", || started.exists())?;
    assert_eq!(job_mounts(&state).len(), 1);
    c.jobs
        .terminate_job(pb::TerminateJobRequest {
            job: Some(bai_tests::key("ws", "ex", "stop")),
        })
        .await?;
    let job = c.wait_job("ws", "ex", "stop", WAIT).await?;
    assert_eq!(exec_state(&job), pb::ExecutionState::Failed, "{job:?}");
    assert!(job_mounts(&state).is_empty(), "{:?}", job_mounts(&state));
    c.jobs
        .delete_job(pb::DeleteJobRequest {
            job: Some(bai_tests::key("ws", "ex", "stop")),
        })
        .await?;
    eventually(WAIT, "the job's mount root to go", || {
        let roots: Vec<_> = bai_tests::files_under(&state.join("local-nodes"))
            .into_iter()
            .chain(dirs_under(&state.join("local-nodes")))
            .filter(|p| {
                p.to_string_lossy()
                    .contains(&format!("/job-mounts/{}", job.id))
            })
            .collect();
        async move { Ok(roots.is_empty()) }
    })
    .await?;
    assert!(data.path().join("input.txt").exists(), "the data survives");
    Ok(())
}

/// Every directory under `dir`.
fn dirs_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                out.push(p.clone());
                stack.push(p);
            }
        }
    }
    out
}
