//! Tests of `job create`'s flag/file merge.

use super::*;
use pb::job::Toolkit;

fn args() -> JobCreateArgs {
    JobCreateArgs {
        workspace: "w".into(),
        experiment: "e".into(),
        name: "j".into(),
        ..Default::default()
    }
}

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn command_line_shortcut() {
    let a = JobCreateArgs {
        cluster: Some("c1".into()),
        command_line: Some("echo hi".into()),
        ..args()
    };
    let j = build_job(&a, None, &no_env).unwrap();
    assert_eq!(
        (j.workspace.as_str(), j.experiment.as_str(), j.name.as_str()),
        ("w", "e", "j")
    );
    assert_eq!(
        j.cluster.unwrap(),
        pb::ClusterRef {
            workspace: "w".into(),
            name: "c1".into()
        }
    );
    assert_eq!(j.node_count, 1);
    assert_eq!(
        j.toolkit,
        Some(Toolkit::CustomToolkitSettings(pb::CustomToolkitSettings {
            command_line: "echo hi".into()
        }))
    );
}

#[test]
fn flags_override_the_file() {
    let file = r#"{"properties": {"nodeCount": 4, "cluster": {"id": "/workspaces/other/clusters/big"},
        "horovodSettings": {"pythonScriptFilePath": "train.py"},
        "environmentVariables": [{"name": "A", "value": "file"}, {"name": "B", "value": "file"}],
        "secrets": [{"name": "TOKEN", "value": "fromfile"}],
        "constraints": {"maxWallClockTime": "P7D"}}}"#;
    let j = build_job(&args(), Some(file), &no_env).unwrap();
    assert_eq!(j.node_count, 4);
    assert_eq!(
        j.cluster.as_ref().unwrap(),
        &pb::ClusterRef {
            workspace: "other".into(),
            name: "big".into()
        }
    );
    assert!(matches!(j.toolkit, Some(Toolkit::HorovodSettings(_))));
    assert_eq!(
        j.secrets[0].value, "fromfile",
        "secrets from the file are sent"
    );

    let env = |k: &str| (k == "TOKEN").then(|| "fromenv".to_string());
    let a = JobCreateArgs {
        cluster: Some("small".into()),
        command_line: Some("run.sh".into()),
        node_count: Some(2),
        env: vec![("A".into(), "flag".into()), ("C".into(), "flag".into())],
        secret_env: vec!["TOKEN".into()],
        max_wall_clock_time: Some("02:00:00".into()),
        priority: Some("low".into()),
        ..args()
    };
    let j = build_job(&a, Some(file), &env).unwrap();
    assert_eq!(
        j.cluster.unwrap(),
        pb::ClusterRef {
            workspace: "w".into(),
            name: "small".into()
        }
    );
    assert_eq!(j.node_count, 2);
    assert!(matches!(j.toolkit, Some(Toolkit::CustomToolkitSettings(_))));
    let env: Vec<(&str, &str)> = j
        .environment_variables
        .iter()
        .map(|e| (e.name.as_str(), e.value.as_str()))
        .collect();
    assert_eq!(env, vec![("A", "flag"), ("B", "file"), ("C", "flag")]);
    assert_eq!(j.secrets.len(), 1);
    assert_eq!(j.secrets[0].value, "fromenv");
    assert_eq!(
        j.constraints.unwrap().max_wall_clock_time.unwrap().seconds,
        7200
    );
    assert_eq!(j.scheduling_priority, pb::JobPriority::Low as i32);
}

#[test]
fn missing_pieces_are_usage_errors() {
    let e = build_job(
        &JobCreateArgs {
            command_line: Some("x".into()),
            ..args()
        },
        None,
        &no_env,
    )
    .unwrap_err();
    assert!(e.to_string().contains("no cluster"), "{e}");
    assert_eq!(e.exit_code(), 2);
    let e = build_job(
        &JobCreateArgs {
            cluster: Some("c".into()),
            ..args()
        },
        None,
        &no_env,
    )
    .unwrap_err();
    assert!(e.to_string().contains("no toolkit"), "{e}");
    let a = JobCreateArgs {
        cluster: Some("c".into()),
        command_line: Some("x".into()),
        secret_env: vec!["NOPE".into()],
        ..args()
    };
    let e = build_job(&a, None, &no_env).unwrap_err();
    assert!(e.to_string().contains("--secret-env NOPE"), "{e}");
    let a = JobCreateArgs {
        cluster: Some("c".into()),
        command_line: Some("x".into()),
        max_wall_clock_time: Some("soon".into()),
        ..args()
    };
    assert!(
        build_job(&a, None, &no_env)
            .unwrap_err()
            .to_string()
            .starts_with("--max-wall-clock-time")
    );
}

#[test]
fn a_recipe_file_with_storage_from_the_environment() {
    let Some(reference) = crate::batchai_json::tests::reference_dir() else {
        return;
    };
    let path = reference.join("batchai-recipes/recipes__Horovod__Horovod-PyTorch__job.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let env = |k: &str| (k == "AZURE_BATCHAI_STORAGE_KEY").then(|| "envkey".to_string());
    let a = JobCreateArgs {
        cluster: Some("nc6".into()),
        storage: crate::args::StorageArgs {
            storage_account_name: Some("mystore".into()),
            ..Default::default()
        },
        ..args()
    };
    let j = build_job(&a, Some(&text), &env).unwrap();
    let shares = &j.mount_volumes.unwrap().azure_file_shares;
    assert_eq!(
        shares[0].azure_file_url,
        "https://mystore.file.core.windows.net/logs"
    );
    assert_eq!(
        shares[0].credentials.as_ref().unwrap().account_key,
        "envkey"
    );
    assert_eq!(j.node_count, 2);
    let e = build_job(
        &JobCreateArgs {
            cluster: Some("nc6".into()),
            ..args()
        },
        Some(&text),
        &no_env,
    )
    .unwrap_err();
    assert!(e.to_string().contains("--storage-account-name"), "{e}");
}

#[test]
fn storage_flags_add_job_mounts_to_the_files() {
    let file = r#"{"properties": {"customToolkitSettings": {"commandLine": "x"},
        "mountVolumes": {"fileServers": [{"fileServer": {"id": "nfs1"}, "relativeMountPath": "n1"}]}}}"#;
    let a = JobCreateArgs {
        cluster: Some("c".into()),
        storage: crate::args::StorageArgs {
            storage_account_name: Some("store".into()),
            storage_account_key: Some(crate::args::Secret::new("flagkey")),
            afs_name: Some("logs".into()),
            bfs_name: Some("data".into()),
            bfs_mount_path: Some("input".into()),
            nfs: Some("10.0.0.9".into()),
            use_auto_storage: true,
            ..Default::default()
        },
        ..args()
    };
    let j = build_job(&a, Some(file), &no_env).unwrap();
    let m = j.mount_volumes.unwrap();
    assert_eq!(
        m.azure_file_shares[0].azure_file_url,
        "https://store.file.core.windows.net/logs"
    );
    assert_eq!(m.azure_file_shares[0].relative_mount_path, "afs");
    assert_eq!(
        m.azure_blob_file_systems[0]
            .credentials
            .as_ref()
            .unwrap()
            .account_key,
        "flagkey"
    );
    assert_eq!(m.azure_blob_file_systems[0].relative_mount_path, "input");
    let servers: Vec<_> = m
        .file_servers
        .iter()
        .map(|f| f.relative_mount_path.as_str())
        .collect();
    assert_eq!(servers, ["n1", "nfs"], "the flag adds to the file's list");
    assert!(m.use_auto_storage);

    // The key from the environment when the flag is absent.
    let env = |k: &str| (k == "AZURE_BATCHAI_STORAGE_KEY").then(|| "envkey".to_string());
    let a = JobCreateArgs {
        cluster: Some("c".into()),
        command_line: Some("x".into()),
        storage: crate::args::StorageArgs {
            storage_account_name: Some("store".into()),
            afs_name: Some("logs".into()),
            ..Default::default()
        },
        ..args()
    };
    let j = build_job(&a, None, &env).unwrap();
    assert_eq!(
        j.mount_volumes.unwrap().azure_file_shares[0]
            .credentials
            .as_ref()
            .unwrap()
            .account_key,
        "envkey"
    );
    let e = build_job(&a, None, &no_env).unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(
        e.to_string()
            .starts_with("--afs-name: needs the storage account's key"),
        "{e}"
    );
}
