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

#[test]
fn defaults_without_a_file() {
    let env = |k: &str| (k == "USER").then(|| "alice".to_string());
    let one = ClusterCreateArgs {
        target: Some(1),
        ..args()
    };
    let c = build_cluster(&one, None, None, &env).unwrap();
    assert_eq!(c.vm_size, DEFAULT_VM_SIZE);
    assert_eq!(
        c.user_account_settings, None,
        "no admin user unless asked for: the coordinator refuses one until it can create it"
    );
    let env = |k: &str| (k == "BAI_ADMIN_PASSWORD").then(|| "envpw".to_string());
    let c = build_cluster(&one, None, None, &env).unwrap();
    let u = c.user_account_settings.unwrap();
    assert_eq!(
        (u.admin_user_name.as_str(), u.admin_user_password.as_str()),
        ("", "envpw")
    );
    let e = build_cluster(&args(), None, None, &no_env).unwrap_err();
    assert!(e.to_string().contains("scale settings"), "{e}");
}

#[test]
fn ssh_keys_from_files_but_not_from_the_default_path() {
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".ssh")).unwrap();
    std::fs::write(
        home.path().join(".ssh/id_rsa.pub"),
        "ssh-rsa DEFAULTKEY me@host\n",
    )
    .unwrap();
    let h = home.path().to_string_lossy().to_string();
    let env = move |k: &str| (k == "HOME").then(|| h.clone());
    let c = build_cluster(
        &ClusterCreateArgs {
            target: Some(1),
            ..args()
        },
        None,
        None,
        &env,
    )
    .unwrap();
    assert_eq!(
        c.user_account_settings, None,
        "~/.ssh/id_rsa.pub is not sent unless -k names it"
    );

    let keyfile = home.path().join("other.pub");
    std::fs::write(&keyfile, "ssh-ed25519 OTHER\n").unwrap();
    let a = ClusterCreateArgs {
        target: Some(1),
        ssh_key: Some(keyfile.to_string_lossy().into()),
        ..args()
    };
    let c = build_cluster(&a, None, None, &no_env).unwrap();
    assert_eq!(
        c.user_account_settings.unwrap().admin_user_ssh_public_key,
        "ssh-ed25519 OTHER"
    );
    let a = ClusterCreateArgs {
        target: Some(1),
        ssh_key: Some("ssh-rsa LITERAL".into()),
        ..args()
    };
    let c = build_cluster(&a, None, None, &no_env).unwrap();
    assert_eq!(
        c.user_account_settings.unwrap().admin_user_ssh_public_key,
        "ssh-rsa LITERAL"
    );
}

#[test]
fn a_bad_file_is_a_usage_error_naming_the_field() {
    let e = build_cluster(&args(), Some(r#"{"vmPriority": "spot"}"#), None, &no_env).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().starts_with("vmPriority: "), "{e}");
}
