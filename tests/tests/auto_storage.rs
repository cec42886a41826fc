//! `--use-auto-storage` end to end: the coordinator's `[storage]` account is
//! Azurite's development account (its Blob service, a real Azurite) and a
//! real Samba serving share `batchaishare` to that account name with its key
//! as the password. `bai cluster create --use-auto-storage` makes the
//! container `batchaicontainer` exist, the node mounts both (rclone over
//! FUSE, as in `node_storage.rs`; local agents get `[storage]`'s endpoints
//! without flags of their own), and a job's bytes come back through
//! Azurite's API and Samba's share directory; `bai job create
//! --use-auto-storage` mounts them for the job alone, under
//! `$AZ_BATCHAI_JOB_MOUNT_ROOT`. The key shows nowhere: not in a log, an
//! answer, a process's argv or the database.
//!
//! Also: a container that exists already is fine, a refusing or unreachable
//! Blob service stores nothing, no `[storage]` refuses the flag by its field,
//! and a group-readable key file is a configuration error (exit 2).

use anyhow::Result;
use bai_common::standins::{self, azurite, azurite::Azurite, samba::Samba};
use bai_proto::v1 as pb;
use bai_tests::{Coordinator, CoordinatorOpts, bin, exec_state};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const CONTAINER: &str = "batchaicontainer";

/// A `[storage]` config for `account` with `key` in a 0600 key file, in `dir`;
/// the config file's path.
fn storage_config(dir: &Path, key: &str, blob: &str, file: Option<&str>) -> Result<PathBuf> {
    let key_file = dir.join("storage.key");
    std::fs::write(&key_file, format!("{key}\n"))?;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600))?;
    let mut text = format!(
        "[storage]\nauto_storage_account = \"{}\"\nauto_storage_key_file = \"{}\"\nblob_endpoint = \"{blob}\"\n",
        azurite::ACCOUNT,
        key_file.display()
    );
    if let Some(f) = file {
        text.push_str(&format!("file_endpoint = \"{f}\"\n"));
    }
    let config = dir.join("coordinator.toml");
    std::fs::write(&config, text)?;
    Ok(config)
}

fn with_config(config: &Path) -> CoordinatorOpts {
    CoordinatorOpts {
        extra_args: vec!["--config".into(), config.display().to_string()],
        ..Default::default()
    }
}

fn azurite_template(azurite: &Azurite) -> String {
    format!("http://127.0.0.1:{}/{{account}}", azurite.port)
}

/// The containers Azurite holds, through its API.
fn containers(azurite: &Azurite) -> Vec<String> {
    let out = azurite.rclone(&["lsd", ":azureblob:"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect()
}

/// Whether any process's command line holds `secret`.
fn in_some_argv(secret: &str) -> bool {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .any(|c| String::from_utf8_lossy(&c).contains(secret))
}

/// Whether the coordinator's database files hold `secret`.
fn in_database(state: &Path, secret: &str) -> bool {
    ["bai.db", "bai.db-wal"].iter().any(|f| {
        let bytes = std::fs::read(state.join(f)).unwrap_or_default();
        bytes.windows(secret.len()).any(|w| w == secret.as_bytes())
    })
}

fn auto_storage_cluster(ws: &str, name: &str, target: i32) -> pb::Cluster {
    let mut c = bai_tests::cluster(ws, name, target);
    c.user_account_settings = None;
    c.node_setup = Some(pb::NodeSetup {
        mount_volumes: Some(pb::MountVolumes {
            use_auto_storage: true,
            ..Default::default()
        }),
        ..Default::default()
    });
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_auto_storage_mounts_the_share_and_container_for_clusters_and_jobs() -> Result<()> {
    let Some(azurite_bin) = standins::require_storage() else {
        return Ok(());
    };
    let started = Instant::now();
    // One account for both services, as in Azure: Samba's user is the
    // account name and its password the account key.
    let samba = Samba::start_as(azurite::ACCOUNT, "batchaishare", azurite::KEY)?;
    let azurite = Azurite::start(&azurite_bin)?;
    assert!(!containers(&azurite).contains(&CONTAINER.to_string()));
    let dir = tempfile::tempdir()?;
    let config = storage_config(
        dir.path(),
        azurite::KEY,
        &azurite_template(&azurite),
        Some(&format!("127.0.0.1:{}", samba.port)),
    )?;
    let user = format!("baiauto{}", std::process::id() % 100_000);
    let _gone = bai_tests::UserGone(user.clone());
    let coord = Coordinator::start_with(with_config(&config))?;
    let mut c = coord.clients().await?;
    c.workspace_and_experiment("ws", "ex").await?;

    let out = coord
        .cli()
        .args(["cluster", "create", "-w", "ws", "-n", "auto", "-t", "1"])
        .args(["-u", &user, "-p", "Adm1n-pw", "--use-auto-storage"])
        .output()?;
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{printed}\n{stderr}");
    let shown: serde_json::Value = serde_json::from_str(&printed)?;
    assert_eq!(
        shown["nodeSetup"]["mountVolumes"]["useAutoStorage"],
        serde_json::json!(true),
        "{printed}"
    );
    assert!(containers(&azurite).contains(&CONTAINER.to_string()));

    if let Err(e) = c
        .wait_idle_nodes("ws", "auto", 1, Duration::from_secs(90))
        .await
    {
        panic!("{e}\nagent logs:\n{}", coord.agent_logs());
    }
    let cmd = "set -e; echo to-share > \"$AZ_BATCHAI_MOUNT_ROOT/autoafs/out.txt\"; \
               echo to-blob > \"$AZ_BATCHAI_MOUNT_ROOT/autobfs/out.txt\"; \
               cat \"$AZ_BATCHAI_MOUNT_ROOT/autoafs/out.txt\"";
    c.submit("ws", "ex", "io", "auto", cmd).await?;
    let job = c
        .wait_job("ws", "ex", "io", Duration::from_secs(90))
        .await?;
    let job_out = String::from_utf8(c.read_output("ws", "ex", "io", "stdout.txt").await?)?;
    let job_err = String::from_utf8(c.read_output("ws", "ex", "io", "stderr.txt").await?)?;
    assert_eq!(
        exec_state(&job),
        pb::ExecutionState::Succeeded,
        "{job_out} {job_err}"
    );
    assert_eq!(job_out, "to-share\n");
    assert_eq!(
        std::fs::read_to_string(samba.share_dir.join("out.txt"))?,
        "to-share\n"
    );
    // rclone writes back when the file is closed; the blob appears soon after.
    let mut blob = String::new();
    for _ in 0..100 {
        let got = azurite.rclone(&["cat", &format!(":azureblob:{CONTAINER}/out.txt")]);
        blob = String::from_utf8_lossy(&got.stdout).to_string();
        if blob == "to-blob\n" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(blob, "to-blob\n");

    // The job's own auto-storage mounts, beside the cluster's.
    let cmd = "set -e; m=\"$AZ_BATCHAI_JOB_MOUNT_ROOT\"; cat \"$m/autoafs/out.txt\"; \
               echo job-share > \"$m/autoafs/job.txt\"; echo job-blob > \"$m/autobfs/job.txt\"";
    let out = coord
        .cli()
        .args([
            "job", "create", "-w", "ws", "-e", "ex", "-n", "jobio", "-c", "auto",
        ])
        .args(["--command-line", cmd, "--use-auto-storage"])
        .output()?;
    assert!(out.status.success(), "{out:?}");
    let job = c
        .wait_job("ws", "ex", "jobio", Duration::from_secs(90))
        .await?;
    let job_out = String::from_utf8(c.read_output("ws", "ex", "jobio", "stdout.txt").await?)?;
    let job_err = String::from_utf8(c.read_output("ws", "ex", "jobio", "stderr.txt").await?)?;
    assert_eq!(
        exec_state(&job),
        pb::ExecutionState::Succeeded,
        "{job_out} {job_err}\nagent logs:\n{}",
        coord.agent_logs()
    );
    assert_eq!(job_out, "to-share\n", "the job sees the same share");
    assert_eq!(
        std::fs::read_to_string(samba.share_dir.join("job.txt"))?,
        "job-share\n"
    );
    // The job's blob mount is gone before the job is reported, so the blob is written.
    let got = azurite.rclone(&["cat", &format!(":azureblob:{CONTAINER}/job.txt")]);
    assert_eq!(String::from_utf8_lossy(&got.stdout), "job-blob\n");
    let m = job.mount_volumes.clone().unwrap_or_default();
    assert!(
        m.use_auto_storage && m.azure_blob_file_systems.is_empty(),
        "{m:?}"
    );

    // What reads show: the flag, no volumes of the coordinator's, no key.
    let got = c
        .clusters
        .get_cluster(pb::GetClusterRequest {
            workspace: "ws".into(),
            name: "auto".into(),
        })
        .await?
        .into_inner();
    let m = got
        .node_setup
        .as_ref()
        .and_then(|s| s.mount_volumes.clone())
        .unwrap_or_default();
    assert!(
        m.use_auto_storage && m.azure_file_shares.is_empty(),
        "{m:?}"
    );
    assert!(!format!("{got:?}").contains(azurite::KEY));
    assert!(!coord.log().contains(azurite::KEY));
    assert!(!coord.agent_logs().contains(azurite::KEY));
    assert!(
        !in_some_argv(azurite::KEY),
        "the key is in a process's argv"
    );
    assert!(!in_database(coord.state_dir(), azurite::KEY));
    eprintln!("auto-storage round trip in {:?}", started.elapsed());

    c.clusters
        .delete_cluster(pb::DeleteClusterRequest {
            workspace: "ws".into(),
            name: "auto".into(),
        })
        .await?;
    let state = coord.state_dir().to_path_buf();
    bai_tests::eventually(Duration::from_secs(30), "the mounts to go", || {
        let left = !bai_tests::mounted_under(&state).is_empty();
        async move { Ok(!left) }
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_container_is_fine_and_a_failing_blob_service_stores_nothing() -> Result<()> {
    let Some(azurite_bin) = standins::require_program("azurite-blob") else {
        return Ok(());
    };
    if standins::require_program("rclone").is_none() {
        return Ok(());
    }
    let azurite = Azurite::start(&azurite_bin)?;
    let made = azurite.rclone(&["mkdir", &format!(":azureblob:{CONTAINER}")]);
    assert!(made.status.success(), "{made:?}");
    let dir = tempfile::tempdir()?;
    let config = storage_config(dir.path(), azurite::KEY, &azurite_template(&azurite), None)?;
    let coord = Coordinator::start_with(with_config(&config))?;
    let mut c = coord.clients().await?;
    c.workspace_and_experiment("ws", "ex").await?;
    // No nodes: what is checked here is the create, not the mounts.
    for name in ["first", "second"] {
        c.clusters
            .create_cluster(pb::CreateClusterRequest {
                cluster: Some(auto_storage_cluster("ws", name, 0)),
            })
            .await?;
    }
    // A request's own volume on an auto-storage mount point is refused by its field.
    let mut clash = auto_storage_cluster("ws", "clash", 0);
    if let Some(m) = clash
        .node_setup
        .as_mut()
        .and_then(|s| s.mount_volumes.as_mut())
    {
        m.unmanaged_file_systems
            .push(pb::UnmanagedFileSystemReference {
                mount_command: "mount --bind /srv".into(),
                relative_mount_path: "autobfs".into(),
            });
    }
    let e = c
        .clusters
        .create_cluster(pb::CreateClusterRequest {
            cluster: Some(clash),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message().starts_with(
            "cluster.node_setup.mount_volumes.unmanaged_file_systems[0].relative_mount_path: "
        ),
        "{e:?}"
    );
    drop(coord);

    // A key Azurite does not know: refused by the service, nothing stored.
    let wrong = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk=";
    let wrong_dir = tempfile::tempdir()?;
    let config = storage_config(wrong_dir.path(), wrong, &azurite_template(&azurite), None)?;
    let coord = Coordinator::start_with(with_config(&config))?;
    let mut c = coord.clients().await?;
    c.workspace_and_experiment("ws", "ex").await?;
    let e = c
        .clusters
        .create_cluster(pb::CreateClusterRequest {
            cluster: Some(auto_storage_cluster("ws", "refused", 0)),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    for part in [azurite::ACCOUNT, CONTAINER, "answered 403 "] {
        assert!(e.message().contains(part), "{part}: {e:?}");
    }
    // Azure's code is AuthenticationFailed; Azurite says AuthorizationFailure.
    assert!(
        ["AuthenticationFailed", "AuthorizationFailure"]
            .iter()
            .any(|c| e.message().contains(c)),
        "{e:?}"
    );
    assert!(!e.message().contains(wrong) && !coord.log().contains(wrong));
    let listed = c
        .clusters
        .list_clusters(pb::ListClustersRequest {
            workspace: "ws".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(listed.clusters.is_empty(), "{listed:?}");
    drop(coord);

    // Nobody at the endpoint: unavailable, nothing stored.
    let closed = standins::free_port()?;
    let gone_dir = tempfile::tempdir()?;
    let config = storage_config(
        gone_dir.path(),
        azurite::KEY,
        &format!("http://127.0.0.1:{closed}/{{account}}"),
        None,
    )?;
    let coord = Coordinator::start_with(with_config(&config))?;
    let mut c = coord.clients().await?;
    c.workspace_and_experiment("ws", "ex").await?;
    let e = c
        .clusters
        .create_cluster(pb::CreateClusterRequest {
            cluster: Some(auto_storage_cluster("ws", "unreachable", 0)),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
    assert!(e.message().contains(CONTAINER), "{e:?}");
    let listed = c
        .clusters
        .list_clusters(pb::ListClustersRequest {
            workspace: "ws".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(listed.clusters.is_empty(), "{listed:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_storage_account_use_auto_storage_is_refused_by_its_field() -> Result<()> {
    let coord = Coordinator::start()?;
    let mut c = coord.clients().await?;
    c.workspace_and_experiment("ws", "ex").await?;
    let out = coord
        .cli()
        .args(["cluster", "create", "-w", "ws", "-n", "auto", "-t", "0"])
        .args(["-u", "adminuser", "-p", "Adm1n-pw", "--use-auto-storage"])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cluster.node_setup.mount_volumes.use_auto_storage: "),
        "{stderr}"
    );
    let listed = c
        .clusters
        .list_clusters(pb::ListClustersRequest {
            workspace: "ws".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(listed.clusters.is_empty(), "{listed:?}");
    Ok(())
}

#[test]
fn a_key_file_readable_by_its_group_is_a_configuration_error() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = storage_config(
        dir.path(),
        azurite::KEY,
        "http://127.0.0.1:10000/{account}",
        None,
    )?;
    std::fs::set_permissions(
        dir.path().join("storage.key"),
        std::fs::Permissions::from_mode(0o640),
    )?;
    let out = std::process::Command::new(bin("bai-coordinator"))
        .arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0", "--state-dir"])
        .arg(dir.path().join("state"))
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("storage.auto_storage_key_file: "),
        "{stderr}"
    );
    assert!(stderr.contains("640"), "{stderr}");
    assert!(!stderr.contains(azurite::KEY), "{stderr}");
    Ok(())
}
