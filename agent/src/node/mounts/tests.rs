//! Mount tests: real rclone mounts against real Samba and Azurite, a real bind mount, and the
//! exact commands and files of the drivers this machine cannot run (cifs, NFS, blobfuse2).
//! Tests needing root, FUSE, rclone, smbd or Azurite skip outside CI and fail in CI.

use super::command::fake::RecordingRunner;
use super::*;
use bai_common::standins::{self, free_port, require, require_root, samba::Samba, wait_until};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known development key (public, documented by Microsoft).
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

struct Dirs {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    private: PathBuf,
    records: PathBuf,
}

impl Drop for Dirs {
    /// A failed test leaves no mount behind: whatever is still mounted under its
    /// directory is unmounted lazily (a FUSE daemon then exits by itself).
    fn drop(&mut self) {
        let left: Vec<PathBuf> = mountinfo::mounts()
            .unwrap_or_default()
            .into_iter()
            .map(|m| m.mount_point)
            .filter(|mp| mp.starts_with(self._tmp.path()))
            .collect();
        for mp in left.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(mp).status();
        }
    }
}

fn dirs() -> Dirs {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().join("mounts");
    std::fs::create_dir(&root).expect("root");
    Dirs {
        root,
        private: tmp.path().join("node/mount-secrets"),
        records: tmp.path().join("node/mounts"),
        _tmp: tmp,
    }
}

fn context(
    drivers: Drivers,
    endpoints: Endpoints,
    private: &Path,
    runner: Arc<dyn Runner>,
) -> MountContext {
    MountContext {
        runner,
        ..MountContext::new(drivers, endpoints, None, private.to_path_buf())
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o7777
}

fn share_volume(account: &str, key: &str, rel: &str) -> Volume {
    Volume::AzureFileShare {
        account_name: account.into(),
        azure_file_url: format!(
            "https://{account}.file.core.windows.net/{}",
            standins::samba::SHARE
        ),
        account_key: Secret::new(key),
        relative_mount_path: rel.into(),
        file_mode: "0640".into(),
        directory_mode: "0750".into(),
    }
}

fn blob_volume(container: &str, rel: &str) -> Volume {
    Volume::AzureBlob {
        account_name: AZURITE_ACCOUNT.into(),
        container_name: container.into(),
        account_key: Secret::new(AZURITE_KEY),
        relative_mount_path: rel.into(),
        mount_options: "-o allow_other".into(),
    }
}

fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

fn environ(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Root, /dev/fuse, fusermount3 and rclone, or the reason the test cannot run.
fn fuse_ready() -> bool {
    require_root()
        && require("/dev/fuse", Path::new("/dev/fuse").exists())
        && standins::require_program("fusermount3").is_some()
        && standins::require_program("rclone").is_some()
}

// ------------------------------------------------------------------ commands and files

#[test]
fn cifs_mounts_with_batch_ai_options_and_a_0600_credentials_file() {
    let d = dirs();
    let runner = Arc::new(RecordingRunner::succeeding());
    let drivers = Drivers {
        file_share: Some(FileShareDriver::Cifs),
        blob: None,
    };
    let endpoints = Endpoints {
        file: Some("127.0.0.1:4450".into()),
        ..Endpoints::default()
    };
    let mut ctx = context(drivers, endpoints, &d.private, runner.clone());
    ctx.owner = Some((1000, 1001));
    let volume = share_volume("acct", "KEY/with+chars==", "afs");
    let m = mount(&volume, &d.root, &ctx).expect("mount");
    let mp = d.root.canonicalize().unwrap().join("afs");
    assert_eq!(
        (m.driver.as_str(), m.pid, &m.mount_point),
        ("cifs", None, &mp)
    );
    let calls = runner.calls();
    assert_eq!(calls.len(), 1);
    let creds = &m.files[0];
    assert_eq!(calls[0].program, "mount");
    assert_eq!(
        calls[0].args_lossy(),
        vec![
            "-t".to_owned(),
            "cifs".into(),
            "//127.0.0.1/share".into(),
            mp.display().to_string(),
            "-o".into(),
            format!(
                "vers=3.0,credentials={},uid=1000,gid=1001,file_mode=0640,dir_mode=0750,serverino,port=4450",
                creds.display()
            ),
        ]
    );
    assert_eq!(
        std::fs::read_to_string(creds).unwrap(),
        "username=acct\npassword=KEY/with+chars==\n"
    );
    assert_eq!(mode(creds), 0o600);
    assert_eq!(mode(&d.private), 0o700);
    assert!(!format!("{m:?} {volume:?}").contains("KEY/with"));
    // Not mounted for real, so unmount only removes the credentials; twice is fine.
    unmount(&m).unwrap();
    unmount(&m).unwrap();
    assert!(!creds.exists());
}

#[test]
fn a_failing_mount_names_the_program_hides_the_key_and_leaves_no_files() {
    let d = dirs();
    let runner = Arc::new(RecordingRunner {
        calls: Default::default(),
        answer: RunOutput {
            success: false,
            code: Some(32),
            stdout: String::new(),
            stderr: "mount error(13): Permission denied for s3cr3tkey\n".into(),
        },
    });
    let drivers = Drivers {
        file_share: Some(FileShareDriver::Cifs),
        blob: None,
    };
    let ctx = context(drivers, Endpoints::default(), &d.private, runner);
    let err = mount(&share_volume("acct", "s3cr3tkey", "afs"), &d.root, &ctx).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("mount failed") && text.contains("exit 32"),
        "{text}"
    );
    assert!(
        text.contains("Permission denied") && !text.contains("s3cr3tkey"),
        "{text}"
    );
    assert!(!format!("{err:?}").contains("s3cr3tkey"));
    assert_eq!(
        std::fs::read_dir(&d.private).unwrap().count(),
        0,
        "credentials removed"
    );
}

#[test]
fn nfs_is_mount_t_nfs_with_the_options() {
    let d = dirs();
    let runner = Arc::new(RecordingRunner::succeeding());
    let ctx = context(
        Drivers::default(),
        Endpoints::default(),
        &d.private,
        runner.clone(),
    );
    let volume = Volume::Nfs {
        server: "10.0.0.4".into(),
        source_directory: "/export/data".into(),
        relative_mount_path: "nfs".into(),
        mount_options: "rw,hard,vers=4".into(),
    };
    let m = mount(&volume, &d.root, &ctx).expect("mount");
    let mp = d.root.canonicalize().unwrap().join("nfs");
    assert_eq!(runner.calls()[0].program, "mount");
    assert_eq!(
        runner.calls()[0].args_lossy(),
        [
            "-t",
            "nfs",
            "-o",
            "rw,hard,vers=4",
            "10.0.0.4:/export/data",
            &mp.display().to_string()
        ]
    );
    assert_eq!((m.kind, m.driver.as_str()), (VolumeKind::Nfs, "nfs"));
    // The default export is `/`, and no options means no -o.
    let volume = Volume::Nfs {
        server: "fileserver".into(),
        source_directory: String::new(),
        relative_mount_path: "nfs2".into(),
        mount_options: String::new(),
    };
    mount(&volume, &d.root, &ctx).expect("mount");
    assert_eq!(
        runner.calls()[1].args_lossy()[2..3],
        ["fileserver:/".to_owned()]
    );
    let bad = Volume::Nfs {
        server: "a b".into(),
        source_directory: String::new(),
        relative_mount_path: "nfs3".into(),
        mount_options: String::new(),
    };
    assert!(matches!(
        mount(&bad, &d.root, &ctx),
        Err(MountError::Invalid {
            field: "file_server",
            ..
        })
    ));
}

#[test]
fn blobfuse2_gets_a_0600_config_with_batch_ai_defaults() {
    let d = dirs();
    let runner = Arc::new(RecordingRunner::succeeding());
    let drivers = Drivers {
        file_share: None,
        blob: Some(BlobDriver::Blobfuse2),
    };
    let mut ctx = context(drivers, Endpoints::default(), &d.private, runner.clone());
    ctx.owner = Some((1000, 1000));
    let volume = Volume::AzureBlob {
        account_name: "acct".into(),
        container_name: "batchaicontainer".into(),
        account_key: Secret::new("BLOBKEY=="),
        relative_mount_path: "bfs".into(),
        mount_options: "-o ro".into(),
    };
    let m = mount(&volume, &d.root, &ctx).expect("mount");
    let mp = d.root.canonicalize().unwrap().join("bfs");
    let (config, cache) = (&m.files[0], &m.files[1]);
    let call = &runner.calls()[0];
    assert_eq!(call.program, "blobfuse2");
    assert_eq!(
        call.args_lossy(),
        [
            "mount".to_owned(),
            mp.display().to_string(),
            format!("--config-file={}", config.display()),
            "-o".into(),
            "ro".into()
        ]
    );
    assert!(!call.args_lossy().concat().contains("BLOBKEY"));
    let text = std::fs::read_to_string(config).unwrap();
    assert_eq!(mode(config), 0o600);
    for want in [
        "allow-other: true",
        "attribute-expiration-sec: 240",
        "entry-expiration-sec: 240",
        "negative-entry-expiration-sec: 120",
        &format!("path: \"{}\"", cache.display()),
        "account-name: acct",
        "account-key: \"BLOBKEY==\"",
        "endpoint: \"https://acct.blob.core.windows.net\"",
        "mode: key",
        "container: batchaicontainer",
    ] {
        assert!(text.contains(want), "{want:?} in\n{text}");
    }
    assert!(cache.is_dir());
    assert_eq!(m.driver, "blobfuse2");
    unmount(&m).unwrap();
    assert!(!config.exists() && !cache.exists());
}

#[test]
fn bad_input_and_missing_drivers_are_refused_before_anything_runs() {
    let d = dirs();
    let runner = Arc::new(RecordingRunner::succeeding());
    let ctx = context(
        Drivers::default(),
        Endpoints::default(),
        &d.private,
        runner.clone(),
    );
    let err = mount(&share_volume("acct", "k", "afs"), &d.root, &ctx).unwrap_err();
    assert!(err.to_string().contains("install cifs-utils"), "{err}");
    let err = mount(&blob_volume("cont", "bfs"), &d.root, &ctx).unwrap_err();
    assert!(err.to_string().contains("blobfuse2 or rclone"), "{err}");
    let cifs = Drivers {
        file_share: Some(FileShareDriver::Cifs),
        blob: Some(BlobDriver::Blobfuse2),
    };
    let ctx = context(cifs, Endpoints::default(), &d.private, runner.clone());
    let cases = [
        (share_volume("acct", "", "afs"), "account_key"),
        (share_volume("ac/ct", "k", "afs"), "account_name"),
        (share_volume("acct", "k", "../out"), "relative_mount_path"),
        (share_volume("acct", "k", "/etc"), "relative_mount_path"),
        (blob_volume("Bad_Container", "bfs"), "container_name"),
        (
            Volume::Unmanaged {
                mount_command: " ".into(),
                relative_mount_path: "u".into(),
            },
            "mount_command",
        ),
    ];
    for (volume, field) in cases {
        match mount(&volume, &d.root, &ctx) {
            Err(MountError::Invalid { field: f, .. }) => assert_eq!(f, field, "{volume:?}"),
            other => panic!("{volume:?}: {other:?}"),
        }
    }
    // A symlink inside the root that leads out of it.
    std::os::unix::fs::symlink(d._tmp.path(), d.root.join("link")).unwrap();
    let err = mount(&share_volume("acct", "k", "link/x"), &d.root, &ctx).unwrap_err();
    assert!(
        matches!(
            err,
            MountError::Invalid {
                field: "relative_mount_path",
                ..
            }
        ),
        "{err}"
    );
    assert!(runner.calls().is_empty());
}

// ------------------------------------------------------------------ real mounts

#[test]
fn unmanaged_mount_bind_for_real() {
    if !require_root() {
        return;
    }
    let d = dirs();
    let src = d._tmp.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("hello.txt"), "bound").unwrap();
    let ctx = MountContext::new(
        Drivers::default(),
        Endpoints::default(),
        None,
        d.private.clone(),
    );
    let volume = Volume::Unmanaged {
        mount_command: format!("mount --bind {}", src.display()),
        relative_mount_path: "unmanaged/dir".into(),
    };
    let m = mount(&volume, &d.root, &ctx).expect("mount --bind");
    assert_eq!(
        std::fs::read_to_string(m.mount_point.join("hello.txt")).unwrap(),
        "bound"
    );
    assert_eq!(check(&m), Health::Ok);
    let again = mount(&volume, &d.root, &ctx).unwrap_err();
    assert!(
        matches!(again, MountError::AlreadyMounted { .. }),
        "{again}"
    );
    unmount(&m).unwrap();
    assert!(!m.mount_point.join("hello.txt").exists());
    assert!(matches!(check(&m), Health::Lost(r) if r.contains("no longer mounted")));
    unmount(&m).unwrap();
    // A failing command reports its exit and output.
    let volume = Volume::Unmanaged {
        mount_command: "echo nothing to mount >&2; exit 3;".into(),
        relative_mount_path: "unmanaged/fails".into(),
    };
    let err = mount(&volume, &d.root, &ctx).unwrap_err().to_string();
    assert!(
        err.contains("exit 3") && err.contains("nothing to mount"),
        "{err}"
    );
}

#[test]
fn rclone_smb_share_round_trip_health_and_adoption() {
    if !(fuse_ready() && standins::require_program("smbd").is_some()) {
        return;
    }
    let password = "Smb-Pass-4-test";
    let samba = Samba::start(password).expect("smbd");
    std::fs::write(samba.share_dir.join("before.txt"), "put there beforehand").unwrap();
    let d = dirs();
    let drivers = Drivers {
        file_share: Some(FileShareDriver::Rclone),
        blob: None,
    };
    let endpoints = Endpoints {
        file: Some(format!("127.0.0.1:{}", samba.port)),
        ..Endpoints::default()
    };
    // Owned by a non-root user (as by the admin user), who can use it (`--allow-other`).
    let share_owner = std::fs::metadata(&samba.share_dir).unwrap();
    let owner = (share_owner.uid(), share_owner.gid());
    let mut ctx = MountContext::new(drivers, endpoints, None, d.private.clone());
    ctx.owner = Some(owner);
    let volume = share_volume(&samba.user, password, "afs");
    let m = mount(&volume, &d.root, &ctx).expect("rclone smb mount");
    let pid = m.pid.expect("rclone pid");
    assert_eq!(m.driver, "rclone");

    // Keys are nowhere a process listing shows: not in argv, not in the environment.
    let (args, env) = (cmdline(pid), environ(pid));
    assert!(
        args.contains("rclone") && args.contains(&m.mount_point.display().to_string()),
        "{args}"
    );
    assert!(
        !args.contains(password) && !env.contains(password),
        "{args}"
    );
    let config = m
        .files
        .iter()
        .find(|f| f.to_string_lossy().ends_with("rclone.conf"))
        .unwrap();
    assert_eq!(mode(config), 0o600);
    assert!(
        !std::fs::read_to_string(config).unwrap().contains(password),
        "obscured in the config"
    );
    // rclone runs in a session of its own, so it outlives the agent.
    assert_eq!(bai_common::procfs::stat(pid).unwrap().sid, pid);

    assert_eq!(
        std::fs::read_to_string(m.mount_point.join("before.txt")).unwrap(),
        "put there beforehand"
    );
    std::fs::write(
        m.mount_point.join("through.txt"),
        "written through the mount",
    )
    .unwrap();
    let on_server = samba.share_dir.join("through.txt");
    assert!(
        wait_until(Duration::from_secs(10), || std::fs::read_to_string(
            &on_server
        )
        .is_ok_and(|t| t == "written through the mount")),
        "the file reached the share's directory"
    );
    let through = std::fs::metadata(m.mount_point.join("through.txt")).unwrap();
    assert_eq!(
        (through.mode() & 0o7777, through.uid(), through.gid()),
        (0o640, owner.0, owner.1)
    );
    let as_owner = Command::new("setpriv")
        .args([
            format!("--reuid={}", owner.0),
            format!("--regid={}", owner.1),
        ])
        .args(["--clear-groups", "cat"])
        .arg(m.mount_point.join("before.txt"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&as_owner.stdout),
        "put there beforehand",
        "{as_owner:?}"
    );
    assert_eq!(check(&m), Health::Ok);

    // An agent restart adopts the healthy mount as it is.
    save(&d.records, &m).unwrap();
    let adopted = adopt(&d.records).unwrap();
    assert_eq!(adopted, vec![(m.clone(), Health::Ok)]);
    assert!(bai_common::procfs::alive(pid));

    // A killed daemon is a lost mount; adoption clears it so it can be mounted again.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(wait_until(Duration::from_secs(10), || check(&m) != Health::Ok));
    assert!(matches!(check(&m), Health::Lost(r) if r.contains("rclone daemon (pid")));
    // Without the daemon's pid, the dead mount itself tells: ENOTCONN.
    let no_pid = Mounted {
        pid: None,
        ..m.clone()
    };
    // (The kernel closes a dying process's /dev/fuse after its argv is gone, so wait.)
    assert!(
        wait_until(Duration::from_secs(5), || matches!(
            check(&no_pid),
            Health::Lost(r) if r.contains("not connected")
        )),
        "{:?}",
        check(&no_pid)
    );
    let adopted = adopt(&d.records).unwrap();
    assert!(
        matches!(&adopted[..], [(_, Health::Lost(_))]),
        "{adopted:?}"
    );
    assert!(
        mountinfo::find(&m.mount_point).unwrap().is_none(),
        "lost mount cleared"
    );
    assert!(load(&d.records).unwrap().is_empty(), "its record removed");
    assert!(!config.exists());
    let again = mount(&volume, &d.root, &ctx).expect("mount again");
    assert_eq!(
        std::fs::read_to_string(again.mount_point.join("through.txt")).unwrap(),
        "written through the mount"
    );
    unmount(&again).unwrap();
    assert!(wait_until(Duration::from_secs(5), || {
        !bai_common::procfs::alive(again.pid.unwrap())
    }));
    unmount(&again).unwrap();
}

/// Azurite's Blob service on a free loopback port, in memory; killed on drop.
struct Azurite {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Azurite {
    fn start(program: &Path) -> Azurite {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port().unwrap();
        let mut child = Command::new(program)
            .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
            .args([
                "--inMemoryPersistence",
                "--skipApiVersionCheck",
                "--loose",
                "--disableTelemetry",
            ])
            .current_dir(dir.path())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start azurite-blob");
        let up = standins::wait_for_port(port, Duration::from_secs(30), || {
            matches!(child.try_wait(), Ok(None))
        });
        assert!(up, "azurite-blob listens on {port}");
        Azurite {
            child,
            port,
            _dir: dir,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{AZURITE_ACCOUNT}", self.port)
    }

    /// `rclone <args>` against it without a mount or a config file.
    fn rclone(&self, args: &[&str]) -> std::process::Output {
        Command::new("rclone")
            .args(args)
            .env("RCLONE_CONFIG", "/dev/null")
            .env("RCLONE_AZUREBLOB_USE_EMULATOR", "true")
            .env("RCLONE_AZUREBLOB_ENDPOINT", self.endpoint())
            .output()
            .expect("rclone")
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn rclone_blob_container_round_trip_through_azurite() {
    if !fuse_ready() {
        return;
    }
    let Some(program) = standins::require_program("azurite-blob") else {
        return;
    };
    let azurite = Azurite::start(&program);
    let d = dirs();
    let before = d._tmp.path().join("before.txt");
    std::fs::write(&before, "uploaded beforehand").unwrap();
    let out = azurite.rclone(&[
        "copyto",
        &before.display().to_string(),
        ":azureblob:cont/before.txt",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let drivers = Drivers {
        file_share: None,
        blob: Some(BlobDriver::Rclone),
    };
    let endpoints = Endpoints {
        blob: format!("http://127.0.0.1:{}/{{account}}", azurite.port),
        file: None,
    };
    let ctx = MountContext::new(drivers, endpoints, None, d.private.clone());
    let m = mount(&blob_volume("cont", "bfs"), &d.root, &ctx).expect("rclone azureblob mount");
    let pid = m.pid.expect("pid");
    assert!(!cmdline(pid).contains(AZURITE_KEY) && !environ(pid).contains(AZURITE_KEY));
    assert!(
        !cmdline(pid).contains("allow_other"),
        "blobfuse options stay out of rclone"
    );

    assert_eq!(
        std::fs::read_to_string(m.mount_point.join("before.txt")).unwrap(),
        "uploaded beforehand"
    );
    std::fs::write(
        m.mount_point.join("through.txt"),
        "written through the mount",
    )
    .unwrap();
    let uploaded = wait_until(Duration::from_secs(20), || {
        let out = azurite.rclone(&["cat", ":azureblob:cont/through.txt"]);
        out.status.success() && out.stdout == b"written through the mount"
    });
    assert!(uploaded, "the blob is in Azurite");
    assert_eq!(check(&m), Health::Ok);
    // A job's last write, unmounted right away (as a job mount is after its job), is not
    // lost: unmount waits for rclone to finish its uploads and exit.
    let big = vec![b'x'; 8 << 20];
    std::fs::write(m.mount_point.join("last.bin"), &big).unwrap();
    unmount(&m).unwrap();
    assert!(mountinfo::find(&m.mount_point).unwrap().is_none());
    assert!(m.files.iter().all(|f| !f.exists()), "private files removed");
    let out = azurite.rclone(&["cat", ":azureblob:cont/last.bin"]);
    assert!(
        out.status.success() && out.stdout == big,
        "the last write reached Azurite"
    );
    unmount(&m).unwrap();
}

#[test]
fn cifs_for_real_where_the_kernel_has_it() {
    // The kernel module is a property of the machine, not something CI installs: skip
    // wherever it is absent, CI included.
    if !(kernel_supports("cifs") && find_program("mount.cifs").is_some()) {
        eprintln!("skipping: the kernel has no cifs module");
        return;
    }
    if !(require_root() && standins::require_program("smbd").is_some()) {
        return;
    }
    let password = "Smb-Pass-4-cifs";
    let samba = Samba::start(password).expect("smbd");
    std::fs::write(samba.share_dir.join("before.txt"), "before").unwrap();
    let d = dirs();
    let drivers = Drivers {
        file_share: Some(FileShareDriver::Cifs),
        blob: None,
    };
    let endpoints = Endpoints {
        file: Some(format!("127.0.0.1:{}", samba.port)),
        ..Endpoints::default()
    };
    let ctx = MountContext::new(drivers, endpoints, None, d.private.clone());
    let m =
        mount(&share_volume(&samba.user, password, "afs"), &d.root, &ctx).expect("mount -t cifs");
    assert_eq!(
        std::fs::read_to_string(m.mount_point.join("before.txt")).unwrap(),
        "before"
    );
    std::fs::write(m.mount_point.join("through.txt"), "cifs").unwrap();
    assert_eq!(
        std::fs::read_to_string(samba.share_dir.join("through.txt")).unwrap(),
        "cifs"
    );
    assert_eq!(check(&m), Health::Ok);
    unmount(&m).unwrap();
}
