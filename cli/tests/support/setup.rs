//! Helpers for the node-setup tests: `bai` with a clean environment, and a
//! cluster and nodes as a coordinator would show them.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use bai_proto::v1 as pb;
use tokio::process::Command;

pub const BAI: &str = env!("CARGO_BIN_EXE_bai");

/// `bai` with a clean environment for what it reads (HOME is a fresh temp dir).
pub fn bai(addr: impl std::fmt::Display, home: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BAI);
    c.arg("--coordinator").arg(addr.to_string()).args(args);
    for v in [
        "BAI_WORKSPACE",
        "BAI_EXPERIMENT",
        "BAI_COORDINATOR",
        "BAI_ADMIN_PASSWORD",
        "AZURE_BATCHAI_STORAGE_ACCOUNT",
        "AZURE_BATCHAI_STORAGE_KEY",
    ] {
        c.env_remove(v);
    }
    c.env("HOME", home).env("USER", "tester");
    c.stdin(Stdio::null()).kill_on_drop(true);
    c
}

pub async fn run(mut c: Command) -> Output {
    tokio::time::timeout(Duration::from_secs(60), c.output())
        .await
        .expect("bai timed out")
        .unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn nowhere() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

pub fn cluster_with_share() -> pb::Cluster {
    pb::Cluster {
        workspace: "ws".into(),
        name: "c".into(),
        vm_size: "local".into(),
        user_account_settings: Some(pb::UserAccountSettings {
            admin_user_name: "adminuser".into(),
            admin_user_ssh_public_key: "ssh-rsa K".into(),
            admin_user_password: "never-printed".into(),
        }),
        node_setup: Some(pb::NodeSetup {
            mount_volumes: Some(pb::MountVolumes {
                azure_file_shares: vec![pb::AzureFileShareReference {
                    account_name: "bai0123".into(),
                    azure_file_url: "https://bai0123.file.core.windows.net/batchaishare".into(),
                    relative_mount_path: "autoafs".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn nodes() -> Vec<pb::Node> {
    vec![
        pb::Node {
            node_id: "n1".into(),
            ip_address: "127.0.0.1".into(),
            port: 50022,
            state: pb::NodeState::Idle as i32,
            file_share_driver: "cifs".into(),
            blob_driver: "rclone".into(),
            ..Default::default()
        },
        pb::Node {
            node_id: "n2".into(),
            ip_address: "127.0.0.2".into(),
            port: 0,
            state: pb::NodeState::Unusable as i32,
            errors: vec![pb::BatchAiError {
                code: "SetupTaskFailed".into(),
                message: "exit code 2".into(),
                details: vec![],
            }],
            ..Default::default()
        },
    ]
}
