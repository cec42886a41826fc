//! `bai cluster node exec` and `bai job node exec|list`: the ssh call, first
//! through a fake `ssh` on PATH that records its argv, then through the real
//! client to a real sshd on loopback (a command's output and exit code, and
//! `-L` forwarding).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use bai_proto::v1 as pb;
use support::Fake;
use support::setup::*;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

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
