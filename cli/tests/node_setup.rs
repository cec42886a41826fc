//! Issue 7's CLI against the in-process fake coordinator: the storage, admin
//! user and setup-task flags of `cluster create` (the requests they build),
//! `--query`, cluster files, and `node exec` running a fake `ssh` first on
//! PATH that records its argv.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use bai_proto::v1 as pb;
use support::Fake;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

const BAI: &str = env!("CARGO_BIN_EXE_bai");

/// `bai` with a clean environment for what it reads (HOME is a fresh temp dir).
fn bai(addr: impl std::fmt::Display, home: &Path, args: &[&str]) -> Command {
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

async fn run(mut c: Command) -> Output {
    tokio::time::timeout(Duration::from_secs(60), c.output())
        .await
        .expect("bai timed out")
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn nowhere() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("127.0.0.1:{port}")
}

#[tokio::test]
async fn the_seeds_third_cluster_create_builds_the_full_request() {
    let fake = Fake::default();
    let addr = fake.serve().await;
    let home = tempfile::tempdir().unwrap();
    let key = home.path().join("id_rsa.pub");
    std::fs::write(&key, "ssh-rsa AAAAB3Nza admin@laptop\n").unwrap();
    let mut c = bai(
        addr,
        home.path(),
        &[
            "cluster",
            "create",
            "-n",
            "mycluster",
            "-w",
            "ws",
            "-s",
            "Standard_NC6",
            "-t",
            "1",
            "--image",
            "UbuntuDSVM",
            "--setup-task",
            "apt install unzip -y",
            "--setup-task-output",
            "$AZ_BATCHAI_MOUNT_ROOT/afs",
            "--storage-account-name",
            "mystore",
            "--nfs",
            "10.0.0.4",
            "--afs-name",
            "afsmount",
            "--bfs-name",
            "bfsmount",
            "--user-name",
            "adminuser",
            "--ssh-key",
        ],
    );
    c.arg(&key).arg("--password-stdin");
    c.env("AZURE_BATCHAI_STORAGE_KEY", "s3cret-key");
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"secretpassword\n").await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    let sent = fake.with(|s| s.create_cluster_requests.clone());
    assert_eq!(sent.len(), 1);
    let cl = &sent[0];
    let u = cl.user_account_settings.as_ref().unwrap();
    assert_eq!(
        (
            u.admin_user_name.as_str(),
            u.admin_user_ssh_public_key.as_str(),
            u.admin_user_password.as_str()
        ),
        (
            "adminuser",
            "ssh-rsa AAAAB3Nza admin@laptop",
            "secretpassword"
        )
    );
    let setup = cl.node_setup.as_ref().unwrap();
    let task = setup.setup_task.as_ref().unwrap();
    assert_eq!(task.command_line, "apt install unzip -y");
    assert_eq!(task.std_out_err_path_prefix, "$AZ_BATCHAI_MOUNT_ROOT/afs");
    let m = setup.mount_volumes.as_ref().unwrap();
    assert_eq!(m.azure_file_shares.len(), 1);
    let afs = &m.azure_file_shares[0];
    assert_eq!(
        (
            afs.account_name.as_str(),
            afs.azure_file_url.as_str(),
            afs.relative_mount_path.as_str(),
            afs.credentials.as_ref().unwrap().account_key.as_str()
        ),
        (
            "mystore",
            "https://mystore.file.core.windows.net/afsmount",
            "afs",
            "s3cret-key"
        )
    );
    let bfs = &m.azure_blob_file_systems[0];
    assert_eq!(
        (
            bfs.container_name.as_str(),
            bfs.relative_mount_path.as_str()
        ),
        ("bfsmount", "bfs")
    );
    assert_eq!(
        m.file_servers[0].file_server.as_ref().unwrap().id,
        "10.0.0.4"
    );
    assert_eq!(m.file_servers[0].relative_mount_path, "nfs");

    let printed = stdout(&out);
    let v: serde_json::Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(v["userAccountSettings"]["adminUserName"], "adminuser");
    assert_eq!(
        v["nodeSetup"]["mountVolumes"]["azureFileShares"][0]["accountName"],
        "mystore"
    );
    for secret in ["secretpassword", "s3cret-key"] {
        assert!(!printed.contains(secret), "{secret} printed:\n{printed}");
        assert!(!stderr(&out).contains(secret), "{secret} on stderr");
    }
}

#[tokio::test]
async fn admin_credentials_are_required_and_generated_on_request() {
    let home = tempfile::tempdir().unwrap();
    let base = ["cluster", "create", "-w", "ws", "-n", "c", "-t", "1"];
    // No key, no password, no ~/.ssh/id_rsa.pub: refused before any connection.
    let out = run(bai(nowhere(), home.path(), &base)).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("no admin credentials"),
        "{}",
        stderr(&out)
    );
    // A flag that needs the storage account without one.
    let out = run(bai(
        nowhere(),
        home.path(),
        &[&base[..], &["-p", "pw", "--afs-name", "s"]].concat(),
    ))
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--afs-name: needs a storage account"),
        "{}",
        stderr(&out)
    );

    if std::process::Command::new("ssh-keygen")
        .arg("-?")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "ssh-keygen is missing in CI"
        );
        eprintln!("skipped --generate-ssh-keys: ssh-keygen is not installed");
        return;
    }
    let fake = Fake::default();
    let addr = fake.serve().await;
    let out = run(bai(
        addr,
        home.path(),
        &[&base[..], &["--generate-ssh-keys"]].concat(),
    ))
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    let public = std::fs::read_to_string(home.path().join(".ssh/id_rsa.pub")).unwrap();
    assert!(home.path().join(".ssh/id_rsa").is_file());
    let sent = fake.with(|s| s.create_cluster_requests.clone());
    let u = sent[0].user_account_settings.as_ref().unwrap();
    assert_eq!(u.admin_user_ssh_public_key, public.trim());
    assert_eq!(u.admin_user_name, "tester", "the current user by default");
    // The next create finds the default key without being asked.
    let out = run(bai(addr, home.path(), &base)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let sent = fake.with(|s| s.create_cluster_requests.clone());
    assert_eq!(
        sent[1]
            .user_account_settings
            .as_ref()
            .unwrap()
            .admin_user_ssh_public_key,
        public.trim()
    );
}

fn cluster_with_share() -> pb::Cluster {
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

fn nodes() -> Vec<pb::Node> {
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

#[tokio::test]
async fn query_applies_before_every_output_format() {
    let fake = Fake::default();
    fake.with(|s| {
        s.cluster = Some(cluster_with_share());
        s.nodes = nodes();
    });
    let addr = fake.serve().await;
    let home = tempfile::tempdir().unwrap();
    let show = [
        "cluster",
        "show",
        "-n",
        "c",
        "-w",
        "ws",
        "--query",
        "nodeSetup.mountVolumes.azureFileShares[0].{storageAccountName:accountName}",
    ];
    let out = run(bai(addr, home.path(), &show)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v, serde_json::json!({"storageAccountName": "bai0123"}));
    let out = run(bai(
        addr,
        home.path(),
        &[&show[..], &["-o", "tsv"]].concat(),
    ))
    .await;
    assert_eq!(stdout(&out), "bai0123\n");
    let out = run(bai(
        addr,
        home.path(),
        &[&show[..], &["-o", "table"]].concat(),
    ))
    .await;
    let table = stdout(&out);
    assert!(
        table.trim_start().starts_with("StorageAccountName") && table.contains("bai0123"),
        "{table}"
    );

    let out = run(bai(
        addr,
        home.path(),
        &[
            "cluster",
            "node",
            "list",
            "-w",
            "ws",
            "-c",
            "c",
            "--query",
            "[?state=='unusable'].nodeId",
            "-o",
            "tsv",
        ],
    ))
    .await;
    assert_eq!(stdout(&out), "n2\n", "{}", stderr(&out));

    // A bad expression is a usage error naming the flag, before any connection.
    let out = run(bai(
        nowhere(),
        home.path(),
        &[
            "cluster",
            "show",
            "-n",
            "c",
            "-w",
            "ws",
            "--query",
            "nodeSetup.[",
        ],
    ))
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with("error: --query: "),
        "{}",
        stderr(&out)
    );
    // Raw-byte commands refuse it.
    let out = run(bai(
        addr,
        home.path(),
        &[
            "cluster", "file", "stream", "-w", "ws", "-c", "c", "-n", "n1", "--query", "x",
        ],
    ))
    .await;
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn node_list_shows_remote_login_information() {
    let fake = Fake::default();
    fake.with(|s| s.nodes = nodes());
    let addr = fake.serve().await;
    let home = tempfile::tempdir().unwrap();
    let out = run(bai(
        addr,
        home.path(),
        &[
            "cluster", "node", "list", "-w", "ws", "-c", "c", "-o", "table",
        ],
    ))
    .await;
    let table = stdout(&out);
    let header = table.lines().next().unwrap();
    for col in ["Node", "IP", "Port", "State", "Step", "Drivers", "Errors"] {
        assert!(header.contains(col), "{col} missing:\n{table}");
    }
    assert!(
        table.contains("50022") && table.contains("afs=cifs bfs=rclone"),
        "{table}"
    );
    assert!(table.contains("SetupTaskFailed: exit code 2"), "{table}");
    let out = run(bai(
        addr,
        home.path(),
        &["cluster", "node", "list", "-w", "ws", "-c", "c"],
    ))
    .await;
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        (&v[0]["nodeId"], &v[0]["ipAddress"], &v[0]["port"]),
        (&"n1".into(), &"127.0.0.1".into(), &50022.into())
    );
}

#[tokio::test]
async fn cluster_files_list_and_stream() {
    let fake = Fake::default();
    let bytes: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    fake.with(|s| {
        s.cluster_files = vec![
            pb::File {
                name: "stdout-n1.txt".into(),
                file_type: pb::FileType::File as i32,
                content_length: 5000,
                ..Default::default()
            },
            pb::File {
                name: "execution-n1.log".into(),
                file_type: pb::FileType::File as i32,
                content_length: 12,
                ..Default::default()
            },
        ];
        s.cluster_file = bytes.clone();
    });
    let addr = fake.serve().await;
    let home = tempfile::tempdir().unwrap();
    let out = run(bai(
        addr,
        home.path(),
        &[
            "cluster", "file", "list", "-w", "ws", "-c", "c", "-n", "n1", "-o", "tsv",
        ],
    ))
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "stdout-n1.txt\tn1\t5000\t\nexecution-n1.log\tn1\t12\t\n"
    );
    let req = fake.with(|s| s.list_cluster_files_requests[0].clone());
    assert_eq!(
        (
            req.workspace.as_str(),
            req.cluster.as_str(),
            req.node_id.as_str()
        ),
        ("ws", "c", "n1")
    );

    let out = run(bai(
        addr,
        home.path(),
        &[
            "cluster",
            "file",
            "stream",
            "-w",
            "ws",
            "-c",
            "c",
            "-n",
            "n1",
            "-f",
            "stderr.txt",
            "--no-follow",
        ],
    ))
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(out.stdout == bytes, "the streamed bytes differ");
    let req = fake.with(|s| s.stream_cluster_file_requests[0].clone());
    assert_eq!(
        (
            req.cluster.as_str(),
            req.node_id.as_str(),
            req.path.as_str(),
            req.offset,
            req.follow
        ),
        ("c", "n1", "stderr.txt", 0, false)
    );
}

/// A fake `ssh` first on PATH: writes its argv, one per line, to
/// `$FAKE_SSH_LOG` and exits 7.
fn fake_ssh(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("ssh");
    std::fs::write(
        &script,
        "#!/bin/sh\nprintf '%s\\n' \"$@\" > \"$FAKE_SSH_LOG\"\nexit 7\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

fn with_fake_ssh(mut c: Command, dir: &Path) -> (Command, std::path::PathBuf) {
    let bin = fake_ssh(dir);
    let log = dir.join("ssh-argv");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    c.env("PATH", path).env("FAKE_SSH_LOG", &log);
    (c, log)
}

#[tokio::test]
async fn node_exec_runs_ssh_as_the_admin_user_on_the_nodes_port() {
    let fake = Fake::default();
    fake.with(|s| {
        s.cluster = Some(cluster_with_share());
        s.nodes = nodes();
    });
    let addr = fake.serve().await;
    let home = tempfile::tempdir().unwrap();
    let c = bai(
        addr,
        home.path(),
        &[
            "cluster",
            "node",
            "exec",
            "-w",
            "ws",
            "-c",
            "c",
            "-n",
            "n1",
            "--exec",
            "nvidia-smi; echo 'done'",
            "-L",
            "8888:localhost:8888",
            "--ssh-private-key",
            "/keys/id",
        ],
    );
    let (c, log) = with_fake_ssh(c, home.path());
    let out = run(c).await;
    assert_eq!(
        out.status.code(),
        Some(7),
        "ssh's exit code: {}",
        stderr(&out)
    );
    let argv = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        argv,
        "-p\n50022\n-i\n/keys/id\n-L\n8888:localhost:8888\n--\nadminuser@127.0.0.1\n\
         bash -ilc 'nvidia-smi; echo '\\''done'\\'''\n"
    );
    assert!(!argv.contains("never-printed"), "a password on ssh's argv");

    // Without -n: the first node; a node reporting no port gets 22.
    fake.with(|s| s.nodes.reverse());
    let c = bai(
        addr,
        home.path(),
        &["cluster", "node", "exec", "-w", "ws", "-c", "c"],
    );
    let (c, log) = with_fake_ssh(c, home.path());
    let out = run(c).await;
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "-p\n22\n--\nadminuser@127.0.0.2\n"
    );

    // A bad -L is refused before ssh runs.
    let c = bai(
        addr,
        home.path(),
        &[
            "cluster", "node", "exec", "-w", "ws", "-c", "c", "-L", "8888",
        ],
    );
    let (c, log) = with_fake_ssh(c, home.path());
    std::fs::remove_file(&log).unwrap();
    let out = run(c).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(!log.exists(), "ssh ran for a bad -L");
}

#[tokio::test]
async fn job_nodes_are_the_jobs_ids_joined_with_the_clusters_nodes() {
    let fake = Fake::default();
    fake.with(|s| {
        s.cluster = Some(cluster_with_share());
        s.nodes = nodes();
        s.get_job = Some(pb::Job {
            workspace: "ws".into(),
            experiment: "e".into(),
            name: "j".into(),
            cluster: Some(pb::ClusterRef {
                workspace: "ws".into(),
                name: "c".into(),
            }),
            node_ids: vec!["n2".into()],
            ..Default::default()
        });
    });
    let addr = fake.serve().await;
    let home = tempfile::tempdir().unwrap();
    let out = run(bai(
        addr,
        home.path(),
        &[
            "job",
            "node",
            "list",
            "-w",
            "ws",
            "-e",
            "e",
            "-j",
            "j",
            "--query",
            "[].[nodeId, ipAddress]",
            "-o",
            "tsv",
        ],
    ))
    .await;
    assert_eq!(stdout(&out), "n2\t127.0.0.2\n", "{}", stderr(&out));

    let c = bai(
        addr,
        home.path(),
        &[
            "job", "node", "exec", "-w", "ws", "-e", "e", "-j", "j", "--exec", "ls",
        ],
    );
    let (c, log) = with_fake_ssh(c, home.path());
    let out = run(c).await;
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "-p\n22\n--\nadminuser@127.0.0.2\nbash -ilc 'ls'\n",
        "the job's first node"
    );
    let out = run(bai(
        addr,
        home.path(),
        &[
            "job", "node", "exec", "-w", "ws", "-e", "e", "-j", "j", "-n", "n1",
        ],
    ))
    .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("does not run on node 'n1'"),
        "{}",
        stderr(&out)
    );
}
