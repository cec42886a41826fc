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

#[tokio::test]
async fn a_setup_file_is_waited_for_while_its_node_prepares() {
    let fake = Fake::default();
    fake.with(|s| {
        s.nodes = nodes();
        s.nodes[0].state = pb::NodeState::Preparing as i32;
        s.nodes[0].preparation_step = "setup-task".into();
        s.cluster_file = b"installing unzip\n".to_vec();
        s.cluster_file_missing_for = 1;
    });
    let addr = fake.serve().await;
    let home = tempfile::tempdir().unwrap();
    let stream = [
        "cluster", "file", "stream", "-w", "ws", "-c", "c", "-n", "n1",
    ];
    let out = run(bai(addr, home.path(), &stream)).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "installing unzip\n");
    let reqs = fake.with(|s| s.stream_cluster_file_requests.clone());
    assert_eq!(reqs.len(), 2, "asked again after the node said it prepares");
    assert!(reqs.iter().all(|r| r.follow && r.path == "stdout.txt"));

    // A node that is done preparing: a missing file is an error at once.
    fake.with(|s| {
        s.nodes[0].state = pb::NodeState::Idle as i32;
        s.stream_cluster_file_requests.clear();
        s.cluster_file_missing_for = 1;
    });
    let out = run(bai(addr, home.path(), &stream)).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "error: stdout.txt not found\n");
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

    // Without ssh on PATH: an error that says so.
    let mut c = bai(
        addr,
        home.path(),
        &["cluster", "node", "exec", "-w", "ws", "-c", "c"],
    );
    c.env("PATH", home.path().join("empty"));
    let out = run(c).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot run ssh"), "{}", stderr(&out));

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

/// A real OpenSSH server on a loopback port for the current user (root in
/// CI), with its own host key and authorized key in a temp dir; killed on drop.
struct Sshd {
    child: std::process::Child,
    port: u16,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let ok = std::process::Command::new("ssh-keygen")
        .args(["-q", "-N", "", "-t", "ed25519", "-f"])
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "ssh-keygen {}", path.display());
}

fn start_sshd(dir: &Path, client_pub: &Path) -> Sshd {
    keygen(&dir.join("host_key"));
    std::fs::copy(client_pub, dir.join("authorized_keys")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nPubkeyAuthentication yes\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM yes\n\
             PermitRootLogin prohibit-password\nStrictModes no\n",
            d = dir.display()
        ),
    )
    .unwrap();
    // sshd's compiled-in privilege separation directory.
    std::fs::create_dir_all("/run/sshd").unwrap();
    let log = std::fs::File::create(dir.join("sshd.log")).unwrap();
    let child = std::process::Command::new("/usr/sbin/sshd")
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stderr(log)
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "sshd did not listen: {}",
            std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Sshd { child, port }
}

/// Whether a real sshd can run here (the binaries, and root for its
/// privilege separation); in CI it must.
fn sshd_available() -> bool {
    let have = Path::new("/usr/sbin/sshd").is_file()
        && std::process::Command::new("ssh").arg("-V").output().is_ok()
        && std::process::Command::new("ssh-keygen")
            .arg("-?")
            .output()
            .is_ok()
        && nix::unistd::geteuid().is_root();
    if !have {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have sshd, ssh, ssh-keygen and root"
        );
        eprintln!("skipped: needs /usr/sbin/sshd, ssh, ssh-keygen and root");
    }
    have
}

/// The real client first on PATH with a config of its own, so this machine's
/// known_hosts and ~/.ssh are left alone (ssh reads the passwd home, not
/// $HOME); bai's argv reaches /usr/bin/ssh unchanged after `-F config`.
fn real_ssh_with_own_config(dir: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let client_config = dir.join("ssh_config");
    std::fs::write(
        &client_config,
        "StrictHostKeyChecking no\nUserKnownHostsFile /dev/null\nBatchMode yes\nLogLevel ERROR\n",
    )
    .unwrap();
    let wrapper = bin.join("ssh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec /usr/bin/ssh -F {} \"$@\"\n",
            client_config.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// A fake coordinator whose cluster `c` has one node, n1, at the sshd.
async fn coordinator_for(sshd: &Sshd, admin: &str) -> (Fake, std::net::SocketAddr) {
    let fake = Fake::default();
    let mut cluster = cluster_with_share();
    cluster
        .user_account_settings
        .as_mut()
        .unwrap()
        .admin_user_name = admin.to_string();
    fake.with(|s| {
        s.cluster = Some(cluster);
        s.nodes = vec![pb::Node {
            node_id: "n1".into(),
            ip_address: "127.0.0.1".into(),
            port: u32::from(sshd.port),
            state: pb::NodeState::Idle as i32,
            ..Default::default()
        }];
    });
    let addr = fake.serve().await;
    (fake, addr)
}

fn current_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .unwrap()
        .unwrap()
        .name
}

#[tokio::test]
async fn node_exec_forwards_a_port_through_a_real_sshd() {
    if !sshd_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let client_key = dir.path().join("client_key");
    keygen(&client_key);
    let sshd = start_sshd(dir.path(), &dir.path().join("client_key.pub"));
    let (_fake, addr) = coordinator_for(&sshd, &current_user()).await;
    let bin = real_ssh_with_own_config(dir.path());

    // A service "on the node" (loopback), reached through the forward.
    let service = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service_port = service.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = service.accept().await {
            let _ = s.write_all(b"pong from the node\n").await;
        }
    });
    let local_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let forward = format!("{local_port}:127.0.0.1:{service_port}");
    let mut c = bai(
        addr,
        dir.path(),
        &[
            "cluster", "node", "exec", "-w", "ws", "-c", "c", "-L", &forward, "-k",
        ],
    );
    c.arg(&client_key).env(
        "PATH",
        format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    );
    // Its own process group, as a shell's foreground job.
    c.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = c.spawn().unwrap();
    let group = nix::unistd::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
    // Forward-only (-N) runs until stopped: wait until the forward answers.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let got = loop {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", local_port)).await {
            use tokio::io::AsyncReadExt;
            let mut buf = Vec::new();
            if s.read_to_end(&mut buf).await.is_ok() && !buf.is_empty() {
                break buf;
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            let out = child.wait_with_output().await.unwrap();
            panic!("bai ended ({status}) before forwarding: {}", stderr(&out));
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the forward never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(got, b"pong from the node\n");
    // As Ctrl-C would: the group (bai, which became ssh) gets SIGINT.
    nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("bai did not stop on SIGINT")
        .unwrap();
    assert!(!status.success());
}

#[tokio::test]
async fn node_exec_logs_in_to_a_real_sshd_and_runs_the_command() {
    if !sshd_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let client_key = dir.path().join("client_key");
    keygen(&client_key);
    let sshd = start_sshd(dir.path(), &dir.path().join("client_key.pub"));
    let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .unwrap()
        .unwrap()
        .name;

    let fake = Fake::default();
    let mut cluster = cluster_with_share();
    cluster
        .user_account_settings
        .as_mut()
        .unwrap()
        .admin_user_name = me.clone();
    fake.with(|s| {
        s.cluster = Some(cluster);
        s.nodes = vec![pb::Node {
            node_id: "n1".into(),
            ip_address: "127.0.0.1".into(),
            port: u32::from(sshd.port),
            state: pb::NodeState::Idle as i32,
            ..Default::default()
        }];
    });
    let addr = fake.serve().await;

    let bin = real_ssh_with_own_config(dir.path());

    let mut c = bai(
        addr,
        dir.path(),
        &[
            "cluster",
            "node",
            "exec",
            "-w",
            "ws",
            "-c",
            "c",
            "--exec",
            "echo \"hello from $(whoami)\" 'and quotes'; exit 3",
            "--ssh-private-key",
        ],
    );
    c.arg(&client_key);
    c.env(
        "PATH",
        format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    );
    let out = run(c).await;
    assert_eq!(
        out.status.code(),
        Some(3),
        "the remote command's exit code: {}\nsshd: {}",
        stderr(&out),
        std::fs::read_to_string(dir.path().join("sshd.log")).unwrap_or_default()
    );
    assert_eq!(stdout(&out), format!("hello from {me} and quotes\n"));
}
