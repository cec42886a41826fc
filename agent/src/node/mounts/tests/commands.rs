//! The drivers this machine cannot run for real (cifs, NFS, blobfuse2) and bad input: the
//! exact commands and files, through a recording runner.

use super::*;
use crate::node::mounts::command::fake::RecordingRunner;

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
        "use-http: false",
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
    std::os::unix::fs::symlink(d.tmp.path(), d.root.join("link")).unwrap();
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
