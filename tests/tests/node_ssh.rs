//! The admin user end to end: a cluster with `userAccountSettings` gets the
//! user on its nodes, jobs run as that user (not root) with their directories
//! owned by it and write to the cluster's mount as it, and the user logs in
//! over SSH at the node's listed ip and port, with its key (`bai cluster
//! node exec`, and `-L` forwarding) and with its password.

use anyhow::{Result, bail};
use bai_common::standins::{self, sshd::Sshd};
use bai_proto::v1 as pb;
use bai_tests::{Coordinator, CoordinatorOpts, exec_state};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A client `ssh` first on PATH with its own config, so the machine's
/// known_hosts is left alone.
fn ssh_wrapper(dir: &Path) -> Result<std::path::PathBuf> {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    let cfg = dir.join("ssh_config");
    std::fs::write(
        &cfg,
        "StrictHostKeyChecking no\nUserKnownHostsFile /dev/null\nLogLevel ERROR\n",
    )?;
    let w = bin.join("ssh");
    std::fs::write(
        &w,
        format!("#!/bin/sh\nexec /usr/bin/ssh -F {} \"$@\"\n", cfg.display()),
    )?;
    std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o755))?;
    Ok(bin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_into_a_node_as_the_admin_user() -> Result<()> {
    if !standins::require_root()
        || standins::require_program("sshd").is_none()
        || standins::require_program("sshpass").is_none()
    {
        return Ok(());
    }
    let sshd = Sshd::start()?;
    let tmp = tempfile::tempdir()?;
    let key = tmp.path().join("id_ed25519");
    standins::sshd::keygen(&key)?;
    let pubkey = std::fs::read_to_string(tmp.path().join("id_ed25519.pub"))?;
    let data = tempfile::tempdir()?;
    std::fs::set_permissions(data.path(), std::fs::Permissions::from_mode(0o777))?;
    let user = format!("baie2e{}", std::process::id() % 100_000);
    let _gone = bai_tests::UserGone(user.clone());
    let password = "Pw-e2e-4711";

    let coord = Coordinator::start_with(CoordinatorOpts {
        extra_args: vec!["--local-agent-ssh-port".into(), sshd.port.to_string()],
        ..Default::default()
    })?;
    let mut c = coord.clients().await?;
    c.workspace_and_experiment("ws", "ex").await?;
    let mut cluster = bai_tests::cluster("ws", "c", 1);
    cluster.user_account_settings = Some(pb::UserAccountSettings {
        admin_user_name: user.clone(),
        admin_user_ssh_public_key: pubkey.trim().into(),
        admin_user_password: password.into(),
    });
    cluster.node_setup = Some(pb::NodeSetup {
        mount_volumes: Some(pb::MountVolumes {
            unmanaged_file_systems: vec![pb::UnmanagedFileSystemReference {
                mount_command: format!("mount --bind {}", data.path().display()),
                relative_mount_path: "data".into(),
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
    c.wait_idle_nodes("ws", "c", 1, Duration::from_secs(60))
        .await?;
    let node = c
        .clusters
        .list_cluster_nodes(pb::ListClusterNodesRequest {
            workspace: "ws".into(),
            cluster: "c".into(),
        })
        .await?
        .into_inner()
        .nodes
        .remove(0);
    assert_eq!(node.port, u32::from(sshd.port), "{node:?}");
    assert_eq!(node.ip_address, "127.0.0.1");
    let uid = bai_tests::procs::uid_of(&user).expect("the admin user exists");

    // A job runs as the admin user, its temp directory is the user's, and
    // what it writes to the mount is the user's.
    c.submit(
        "ws",
        "ex",
        "who",
        "c",
        "id -un; stat -c %U \"$AZ_BATCHAI_JOB_TEMP\"; echo $HOME; echo hi > \"$AZ_BATCHAI_MOUNT_ROOT/data/by-job\"",
    )
    .await?;
    let job = c
        .wait_job("ws", "ex", "who", Duration::from_secs(60))
        .await?;
    let out = String::from_utf8(c.read_output("ws", "ex", "who", "stdout.txt").await?)?;
    assert_eq!(
        exec_state(&job),
        pb::ExecutionState::Succeeded,
        "{job:?} {out}"
    );
    assert_eq!(out, format!("{user}\n{user}\n/home/{user}\n"));
    assert_eq!(std::fs::metadata(data.path().join("by-job"))?.uid(), uid);

    // SSH with the key, through `bai cluster node exec`, at the listed port.
    let path = format!(
        "{}:{}",
        ssh_wrapper(tmp.path())?.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = coord
        .cli()
        .env("PATH", &path)
        .args(["cluster", "node", "exec", "-w", "ws", "-c", "c", "-n"])
        .arg(&node.node_id)
        .args([
            "--exec",
            "id -un; if command -v sudo >/dev/null; then sudo -n true && echo sudo-ok; fi",
        ])
        .arg("-k")
        .arg(&key)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {} {}",
        String::from_utf8_lossy(&out.stderr),
        sshd.log()
    );
    assert!(stdout.starts_with(&format!("{user}\n")), "{stdout}");
    if Path::new("/usr/bin/sudo").exists() {
        assert!(stdout.contains("sudo-ok"), "{stdout}");
    }

    // -L forwards a local port to one on the node.
    let target = std::net::TcpListener::bind("127.0.0.1:0")?;
    let target_port = target.local_addr()?.port();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = target.accept() {
            use std::io::Write;
            let _ = s.write_all(b"through the tunnel\n");
        }
    });
    let local = standins::free_port()?;
    let mut tunnel = coord
        .cli()
        .env("PATH", &path)
        .args(["cluster", "node", "exec", "-w", "ws", "-c", "c", "-n"])
        .arg(&node.node_id)
        .arg("-L")
        .arg(format!("{local}:127.0.0.1:{target_port}"))
        .args(["--exec", "sleep 20"])
        .arg("-k")
        .arg(&key)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let got = loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", local)) {
            use std::io::Read;
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            if !buf.is_empty() {
                break buf;
            }
        }
        if Instant::now() > deadline {
            let _ = tunnel.kill();
            bail!("no forwarded connection: {}", sshd.log());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = tunnel.kill();
    let _ = tunnel.wait();
    assert_eq!(got, "through the tunnel\n");

    // The password works too (sshpass reads it from the environment).
    let out = Command::new("sshpass")
        .arg("-e")
        .arg("/usr/bin/ssh")
        .args([
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
        ])
        .args([
            "-o",
            "PreferredAuthentications=password",
            "-o",
            "PubkeyAuthentication=no",
        ])
        .arg("-p")
        .arg(sshd.port.to_string())
        .arg(format!("{user}@127.0.0.1"))
        .arg("id -un")
        .env("SSHPASS", password)
        .output()?;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{user}\n"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!coord.log().contains(password));
    assert!(!coord.agent_logs().contains(password));

    c.clusters
        .delete_cluster(pb::DeleteClusterRequest {
            workspace: "ws".into(),
            name: "c".into(),
        })
        .await?;
    Ok(())
}
