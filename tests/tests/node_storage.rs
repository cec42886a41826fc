//! The seed's third example end to end: a cluster with a setup task, an
//! Azure Files share (a real Samba server, through rclone's SMB backend as
//! this kernel has no cifs), a Blob container (a real Azurite, through
//! `rclone mount`), an unmanaged bind mount and an admin user with key and
//! password. Its node is idle; a job running as the admin user reads what
//! was there before and writes through both storage mounts, and the bytes
//! are read back from Samba's share directory and Azurite's API.

use anyhow::Result;
use bai_common::standins::{self, azurite::Azurite, samba::Samba};
use bai_proto::v1 as pb;
use bai_tests::{Coordinator, CoordinatorOpts, exec_state};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seeds_cluster_mounts_files_and_blobs_for_its_admin_user() -> Result<()> {
    let Some(azurite_bin) = standins::require_storage() else {
        return Ok(());
    };
    let samba = Samba::start("Smb-pa55")?;
    std::fs::write(samba.share_dir.join("before.txt"), "in the share\n")?;
    let azurite = Azurite::start(&azurite_bin)?;
    azurite.put("data/before.txt", b"in the container\n")?;
    let local = tempfile::tempdir()?;
    std::fs::set_permissions(local.path(), std::fs::Permissions::from_mode(0o777))?;

    let user = format!("baist{}", std::process::id() % 100_000);
    let _gone = bai_tests::UserGone(user.clone());
    let key_dir = tempfile::tempdir()?;
    let key = key_dir.path().join("id_ed25519");
    standins::sshd::keygen(&key)?;
    let pubkey = std::fs::read_to_string(key_dir.path().join("id_ed25519.pub"))?;

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
    let key_of = |k: &str| {
        Some(pb::AzureStorageCredentialsInfo {
            account_key: k.into(),
            account_key_secret_reference: None,
        })
    };
    let mut cluster = bai_tests::cluster("ws", "nc6", 1);
    cluster.user_account_settings = Some(pb::UserAccountSettings {
        admin_user_name: user.clone(),
        admin_user_ssh_public_key: pubkey.trim().into(),
        admin_user_password: "Adm1n-pw".into(),
    });
    cluster.node_setup = Some(pb::NodeSetup {
        setup_task: Some(pb::SetupTask {
            command_line: "ls \"$AZ_BATCHAI_MOUNT_ROOT/afs\" \"$AZ_BATCHAI_MOUNT_ROOT/bfs\"".into(),
            std_out_err_path_prefix: "$AZ_BATCHAI_MOUNT_ROOT/afs".into(),
            ..Default::default()
        }),
        mount_volumes: Some(pb::MountVolumes {
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
                container_name: "data".into(),
                credentials: key_of(standins::azurite::KEY),
                relative_mount_path: "bfs".into(),
                mount_options: String::new(),
            }],
            unmanaged_file_systems: vec![pb::UnmanagedFileSystemReference {
                mount_command: format!("mount --bind {}", local.path().display()),
                relative_mount_path: "local".into(),
            }],
            ..Default::default()
        }),
        ..Default::default()
    });
    c.clusters
        .create_cluster(pb::CreateClusterRequest {
            cluster: Some(cluster),
        })
        .await?;
    if let Err(e) = c
        .wait_idle_nodes("ws", "nc6", 1, Duration::from_secs(90))
        .await
    {
        panic!("{e}\nagent logs:\n{}", coord.agent_logs());
    }
    let node = c
        .clusters
        .list_cluster_nodes(pb::ListClusterNodesRequest {
            workspace: "ws".into(),
            cluster: "nc6".into(),
        })
        .await?
        .into_inner()
        .nodes
        .remove(0);
    assert_eq!(node.file_share_driver, "rclone", "{node:?}");
    assert_eq!(node.blob_driver, "rclone", "{node:?}");
    // The setup task saw both mounts, and its output went to the share too.
    let setup_out = String::from_utf8_lossy(
        &std::fs::read(coord.state_dir().join(format!(
            "output/workspaces/ws/clusters/nc6/nodes/{}/setup/stdout.txt",
            node.node_id
        )))
        .unwrap_or_default(),
    )
    .to_string();
    assert!(
        setup_out.contains("before.txt"),
        "setup output: {setup_out:?}"
    );

    let cmd = "set -e; id -un; cat \"$AZ_BATCHAI_MOUNT_ROOT/afs/before.txt\" \"$AZ_BATCHAI_MOUNT_ROOT/bfs/before.txt\"; \
               echo to-share > \"$AZ_BATCHAI_MOUNT_ROOT/afs/out.txt\"; \
               echo to-blob > \"$AZ_BATCHAI_MOUNT_ROOT/bfs/out.txt\"";
    c.submit("ws", "ex", "io", "nc6", cmd).await?;
    let job = c
        .wait_job("ws", "ex", "io", Duration::from_secs(90))
        .await?;
    let out = String::from_utf8(c.read_output("ws", "ex", "io", "stdout.txt").await?)?;
    let err = String::from_utf8(c.read_output("ws", "ex", "io", "stderr.txt").await?)?;
    assert_eq!(
        exec_state(&job),
        pb::ExecutionState::Succeeded,
        "{out} {err}"
    );
    assert_eq!(out, format!("{user}\nin the share\nin the container\n"));
    assert_eq!(
        std::fs::read_to_string(samba.share_dir.join("out.txt"))?,
        "to-share\n"
    );
    // rclone writes back when the file is closed; the blob appears soon after.
    let mut blob = String::new();
    for _ in 0..100 {
        let got = azurite.rclone(&["cat", ":azureblob:data/out.txt"]);
        blob = String::from_utf8_lossy(&got.stdout).to_string();
        if blob == "to-blob\n" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(blob, "to-blob\n");
    // The setup output is on the share in Batch AI's layout.
    let mirrored = bai_tests::files_under(&samba.share_dir)
        .into_iter()
        .any(|p| p.ends_with(format!("stdout-{}.txt", node.node_id)));
    assert!(mirrored, "no setup output on the share");
    // No key in any log or process list.
    for secret in [samba.password.as_str(), standins::azurite::KEY] {
        assert!(!coord.agent_logs().contains(secret));
        assert!(!coord.log().contains(secret));
    }

    c.clusters
        .delete_cluster(pb::DeleteClusterRequest {
            workspace: "ws".into(),
            name: "nc6".into(),
        })
        .await?;
    let state = coord.state_dir().to_path_buf();
    bai_tests::eventually(Duration::from_secs(30), "the mounts to go", || {
        let left = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .any(|p| std::path::Path::new(p).starts_with(&state));
        async move { Ok(!left) }
    })
    .await?;
    Ok(())
}
