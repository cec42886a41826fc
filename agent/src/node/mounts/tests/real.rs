//! Real mounts: `mount --bind`, rclone over FUSE against Samba and Azurite, cifs where the
//! kernel has it.

use super::*;
use bai_common::standins::azurite::Azurite;
use bai_common::standins::samba::Samba;
use bai_common::standins::wait_until;
use std::os::unix::fs::MetadataExt;

#[test]
fn unmanaged_mount_bind_for_real() {
    if !require_root() {
        return;
    }
    let d = dirs();
    let src = d.tmp.path().join("src");
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
    // A command that exits 0 but mounts nothing is a failure, not a silent empty directory.
    let volume = Volume::Unmanaged {
        mount_command: "true".into(),
        relative_mount_path: "unmanaged/nothing".into(),
    };
    let err = mount(&volume, &d.root, &ctx).unwrap_err().to_string();
    assert!(err.contains("nothing is mounted there"), "{err}");
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

    let log = m
        .files
        .iter()
        .find(|f| f.to_string_lossy().ends_with(".log"))
        .unwrap();
    let log_text = std::fs::read_to_string(log).unwrap();
    assert!(
        !log_text.is_empty() && !log_text.contains(password),
        "{log_text}"
    );

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
    // Mounting over the dead mount is refused plainly, not with ENOTCONN.
    let over = mount(&volume, &d.root, &ctx).unwrap_err();
    assert!(matches!(over, MountError::AlreadyMounted { .. }), "{over}");
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
    // The stand-in cleans up after a real SMB session too: its user is gone.
    let user = samba.user.clone();
    drop(samba);
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    assert!(
        !passwd.lines().any(|l| l.starts_with(&format!("{user}:"))),
        "{user} removed"
    );
}

#[test]
fn rclone_blob_container_round_trip_through_azurite() {
    if !fuse_ready() {
        return;
    }
    let Some(program) = standins::require_program("azurite-blob") else {
        return;
    };
    let azurite = Azurite::start(&program).expect("azurite starts");
    let d = dirs();
    let before = d.tmp.path().join("before.txt");
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
