//! Issue 7's CLI against the in-process fake coordinator: the storage, admin
//! user and setup-task flags of `cluster create` (the requests they build),
//! `--query` in every output format, node lists and cluster files.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use std::process::Stdio;
use std::time::Duration;

use bai_proto::v1 as pb;
use support::Fake;
use support::setup::*;
use tokio::io::AsyncWriteExt;

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
