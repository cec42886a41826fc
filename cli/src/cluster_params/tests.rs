//! Tests of `cluster create`'s flag/file merge and az's scale rules.

use super::*;

fn manual(n: i32) -> pb::ScaleSettings {
    pb::ScaleSettings {
        manual: Some(pb::ManualScaleSettings {
            target_node_count: n,
            node_deallocation_option: 0,
        }),
        auto_scale: None,
    }
}

#[test]
fn scale_rules() {
    assert_eq!(
        scale_settings(Some(3), None, None, None).unwrap(),
        manual(3)
    );
    assert_eq!(
        scale_settings(Some(7), Some(2), Some(2), None).unwrap(),
        manual(2),
        "min == max is manual"
    );
    let auto = scale_settings(Some(1), Some(0), Some(4), None)
        .unwrap()
        .auto_scale
        .unwrap();
    assert_eq!(
        (
            auto.minimum_node_count,
            auto.maximum_node_count,
            auto.initial_node_count
        ),
        (0, 4, 1)
    );
    let auto = scale_settings(None, Some(1), Some(4), None)
        .unwrap()
        .auto_scale
        .unwrap();
    assert_eq!(auto.initial_node_count, 0, "initial defaults to 0");
    let e = scale_settings(None, Some(5), Some(4), None).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("--min (5)"), "{e}");
    assert!(scale_settings(None, Some(1), None, None).is_err());
    assert!(
        scale_settings(None, None, None, None).is_err(),
        "a cluster needs scale settings"
    );
    assert_eq!(
        scale_settings(None, None, None, Some(manual(4))).unwrap(),
        manual(4),
        "from the file"
    );
    assert_eq!(
        scale_settings(Some(1), None, None, Some(manual(4))).unwrap(),
        manual(1),
        "flags override"
    );
}

#[test]
fn image_aliases() {
    let i = image_reference("UbuntuLTS", None).unwrap();
    assert_eq!(
        (
            i.publisher.as_str(),
            i.offer.as_str(),
            i.sku.as_str(),
            i.version.as_str()
        ),
        ("Canonical", "UbuntuServer", "16.04-LTS", "latest")
    );
    let i = image_reference("a:b:c:1.0", Some("/images/x")).unwrap();
    assert_eq!(
        (
            i.sku.as_str(),
            i.version.as_str(),
            i.virtual_machine_image_id.as_str()
        ),
        ("c", "1.0", "/images/x")
    );
    assert!(image_reference("ubuntu", None).is_err());
    assert!(image_reference("a::c", None).is_err());
}

fn args() -> ClusterCreateArgs {
    ClusterCreateArgs {
        workspace: "w".into(),
        name: "c".into(),
        ..Default::default()
    }
}

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn flags_override_the_file() {
    let file = r#"{"properties": {"vmSize": "STANDARD_NC6", "vmPriority": "lowpriority",
        "scaleSettings": {"autoScale": {"minimumNodeCount": 0, "maximumNodeCount": 4}},
        "userAccountSettings": {"adminUserName": "fromfile", "adminUserPassword": "filepw"},
        "nodeSetup": {"setupTask": {"commandLine": "old.sh", "stdOutErrPathPrefix": "/old",
                                    "environmentVariables": [{"name": "K", "value": "V"}]}}}}"#;
    let c = build_cluster(&args(), Some(file), None, &no_env).unwrap();
    assert_eq!(c.vm_size, "STANDARD_NC6");
    assert_eq!(c.vm_priority, pb::VmPriority::Lowpriority as i32);
    assert!(c.scale_settings.as_ref().unwrap().auto_scale.is_some());
    assert_eq!(
        c.user_account_settings.as_ref().unwrap().admin_user_name,
        "fromfile"
    );
    assert_eq!((c.workspace.as_str(), c.name.as_str()), ("w", "c"));

    let a = ClusterCreateArgs {
        vm_size: Some("local".into()),
        vm_priority: Some("dedicated".into()),
        target: Some(2),
        user_name: Some("me".into()),
        setup_task: Some("new.sh".into()),
        setup_task_output: Some("/new".into()),
        ..args()
    };
    let c = build_cluster(&a, Some(file), Some("stdinpw".into()), &no_env).unwrap();
    assert_eq!(c.vm_size, "local");
    assert_eq!(c.vm_priority, pb::VmPriority::Dedicated as i32);
    assert_eq!(c.scale_settings.unwrap(), manual(2));
    let u = c.user_account_settings.unwrap();
    assert_eq!(
        (u.admin_user_name.as_str(), u.admin_user_password.as_str()),
        ("me", "stdinpw")
    );
    let task = c.node_setup.unwrap().setup_task.unwrap();
    assert_eq!(
        (
            task.command_line.as_str(),
            task.std_out_err_path_prefix.as_str()
        ),
        ("new.sh", "/new")
    );
    assert_eq!(
        task.environment_variables.len(),
        1,
        "the file's setup task environment is kept"
    );
}

fn home_with_key(key: Option<&str>) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    if let Some(k) = key {
        std::fs::create_dir_all(home.path().join(".ssh")).unwrap();
        std::fs::write(home.path().join(".ssh/id_rsa.pub"), k).unwrap();
    }
    home
}

fn env_of(pairs: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> {
    move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
}

#[test]
fn defaults_without_a_file() {
    let home = home_with_key(Some("ssh-rsa DEFAULTKEY me@host\n"));
    let h = home.path().to_string_lossy().to_string();
    let env = env_of(vec![("USER", "alice".into()), ("HOME", h.clone())]);
    let one = ClusterCreateArgs {
        target: Some(1),
        ..args()
    };
    let c = build_cluster(&one, None, None, &env).unwrap();
    assert_eq!(c.vm_size, DEFAULT_VM_SIZE);
    let u = c.user_account_settings.unwrap();
    assert_eq!(
        (
            u.admin_user_name.as_str(),
            u.admin_user_ssh_public_key.as_str(),
            u.admin_user_password.as_str()
        ),
        ("alice", "ssh-rsa DEFAULTKEY me@host", ""),
        "az's defaults: the current user and ~/.ssh/id_rsa.pub"
    );
    // With a password, the default key is not used (az's rule).
    let env = env_of(vec![
        ("USER", "alice".into()),
        ("HOME", h),
        ("BAI_ADMIN_PASSWORD", "envpw".into()),
    ]);
    let u = build_cluster(&one, None, None, &env)
        .unwrap()
        .user_account_settings
        .unwrap();
    assert_eq!(
        (
            u.admin_user_password.as_str(),
            u.admin_user_ssh_public_key.as_str()
        ),
        ("envpw", "")
    );
    let e = build_cluster(&args(), None, None, &no_env).unwrap_err();
    assert!(e.to_string().contains("scale settings"), "{e}");
}

#[test]
fn no_key_and_no_password_is_a_usage_error() {
    let home = home_with_key(None);
    let env = env_of(vec![
        ("USER", "alice".into()),
        ("HOME", home.path().to_string_lossy().to_string()),
    ]);
    let one = ClusterCreateArgs {
        target: Some(1),
        ..args()
    };
    let e = build_cluster(&one, None, None, &env).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().starts_with("no admin credentials"), "{e}");
    // A password alone will do; the file's user name is kept.
    let file = r#"{"userAccountSettings": {"adminUserName": "fromfile"}}"#;
    let u = build_cluster(&one, Some(file), Some("pw".into()), &env)
        .unwrap()
        .user_account_settings
        .unwrap();
    assert_eq!(
        (u.admin_user_name.as_str(), u.admin_user_password.as_str()),
        ("fromfile", "pw")
    );
    // --generate-ssh-keys reads the pair it made (here: not made, so named).
    let a = ClusterCreateArgs {
        generate_ssh_keys: true,
        ..one.clone()
    };
    let e = build_cluster(&a, None, None, &env).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("--generate-ssh-keys: cannot read"),
        "{e}"
    );
    let home = home_with_key(Some("ssh-rsa GENERATED x\n"));
    let env = env_of(vec![
        ("USER", "alice".into()),
        ("HOME", home.path().to_string_lossy().to_string()),
    ]);
    let u = build_cluster(&a, None, Some("pw".into()), &env)
        .unwrap()
        .user_account_settings
        .unwrap();
    assert_eq!(u.admin_user_ssh_public_key, "ssh-rsa GENERATED x");
}

#[test]
fn ssh_keys_from_files_literals_and_bad_values() {
    let home = home_with_key(None);
    let keyfile = home.path().join("other.pub");
    std::fs::write(&keyfile, "ssh-ed25519 OTHER me\n").unwrap();
    let private = home.path().join("id");
    std::fs::write(&private, "-----BEGIN OPENSSH PRIVATE KEY-----\nxx\n").unwrap();
    let h = home.path().to_string_lossy().to_string();
    let env = env_of(vec![("USER", "u".into()), ("HOME", h)]);
    let with_key = |k: &str| ClusterCreateArgs {
        target: Some(1),
        ssh_key: Some(k.into()),
        ..args()
    };
    let key_of = |k: &str| {
        build_cluster(&with_key(k), None, None, &env)
            .map(|c| c.user_account_settings.unwrap().admin_user_ssh_public_key)
    };
    assert_eq!(
        key_of(&keyfile.to_string_lossy()).unwrap(),
        "ssh-ed25519 OTHER me"
    );
    assert_eq!(key_of("~/other.pub").unwrap(), "ssh-ed25519 OTHER me");
    assert_eq!(key_of("ssh-rsa LITERAL c").unwrap(), "ssh-rsa LITERAL c");
    let e = key_of(&private.to_string_lossy()).unwrap_err();
    assert!(e.to_string().contains("is a private key"), "{e}");
    let e = key_of("id_rsa.pub").unwrap_err();
    assert!(
        e.to_string()
            .starts_with("-k/--ssh-key: \"id_rsa.pub\" is neither"),
        "{e}"
    );
}

#[test]
fn setup_task_needs_its_output_prefix_and_storage_flags_add_mounts() {
    let env = env_of(vec![("USER", "u".into())]);
    let one = ClusterCreateArgs {
        target: Some(1),
        password: None,
        ..args()
    };
    let file = r#"{"nodeSetup": {"setupTask": {"commandLine": "setup.sh"}}}"#;
    let e = build_cluster(&one, Some(file), Some("pw".into()), &env).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(
        e.to_string()
            .starts_with("nodeSetup.setupTask.stdOutErrPathPrefix: required"),
        "{e}"
    );
    let file = r#"{"nodeSetup": {"mountVolumes": {"azureFileShares": [
        {"accountName": "a", "azureFileUrl": "https://a.file.core.windows.net/s",
         "credentials": {"accountKey": "k"}, "relativeMountPath": "s"}]}}}"#;
    let a = ClusterCreateArgs {
        setup_task: Some("apt install unzip -y".into()),
        setup_task_output: Some("$AZ_BATCHAI_MOUNT_ROOT/afs".into()),
        storage: crate::args::StorageArgs {
            storage_account_name: Some("store".into()),
            storage_account_key: Some(crate::args::Secret::new("k3y")),
            afs_name: Some("afsmount".into()),
            bfs_name: Some("bfsmount".into()),
            nfs: Some("nfsmount".into()),
            ..Default::default()
        },
        ..one
    };
    let c = build_cluster(&a, Some(file), Some("pw".into()), &env).unwrap();
    let setup = c.node_setup.unwrap();
    let m = setup.mount_volumes.unwrap();
    let shares: Vec<_> = m
        .azure_file_shares
        .iter()
        .map(|s| (s.relative_mount_path.as_str(), s.azure_file_url.as_str()))
        .collect();
    assert_eq!(
        shares,
        [
            ("s", "https://a.file.core.windows.net/s"),
            ("afs", "https://store.file.core.windows.net/afsmount")
        ]
    );
    assert_eq!(m.azure_blob_file_systems[0].container_name, "bfsmount");
    assert_eq!(
        m.file_servers[0].file_server.as_ref().unwrap().id,
        "nfsmount"
    );
    assert_eq!(
        setup.setup_task.unwrap().std_out_err_path_prefix,
        "$AZ_BATCHAI_MOUNT_ROOT/afs"
    );
}

#[test]
fn a_bad_file_is_a_usage_error_naming_the_field() {
    let e = build_cluster(&args(), Some(r#"{"vmPriority": "spot"}"#), None, &no_env).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().starts_with("vmPriority: "), "{e}");
}
