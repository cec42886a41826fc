//! Tests of rendering: flat camelCase JSON, Batch AI's enum spellings, RFC 3339
//! times, and never a secret value.

use bai_proto::v1 as pb;
use pb::job::Toolkit;
use serde_json::Value;

use super::*;

fn assert_camel_case(v: &Value, path: &str) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                // `tags` keys are the user's own.
                if path.ends_with("/tags") {
                    continue;
                }
                assert!(
                    !k.contains('_') && k.chars().next().is_some_and(|c| c.is_ascii_lowercase()),
                    "{path}/{k}"
                );
                assert_camel_case(x, &format!("{path}/{k}"));
            }
        }
        Value::Array(a) => a.iter().for_each(|x| assert_camel_case(x, path)),
        _ => {}
    }
}

fn full_job() -> pb::Job {
    let secret = |v: &str| pb::EnvironmentVariableWithSecretValue {
        name: "TOKEN".into(),
        value: v.into(),
        value_secret_reference: None,
    };
    pb::Job {
        workspace: "w".into(),
        experiment: "e".into(),
        name: "j1".into(),
        scheduling_priority: pb::JobPriority::High as i32,
        cluster: Some(pb::ClusterRef {
            workspace: String::new(),
            name: "c1".into(),
        }),
        node_count: 2,
        container_settings: Some(pb::ContainerSettings {
            image_source_registry: Some(pb::ImageSourceRegistry {
                server_url: "r.io".into(),
                image: "r.io/img".into(),
                credentials: Some(pb::PrivateRegistryCredentials {
                    username: "u".into(),
                    password: "registry-pw".into(),
                    password_secret_reference: None,
                }),
            }),
            shm_size: "8g".into(),
        }),
        mount_volumes: Some(pb::MountVolumes {
            azure_file_shares: vec![pb::AzureFileShareReference {
                account_name: "a".into(),
                credentials: Some(pb::AzureStorageCredentialsInfo {
                    account_key: "storage-key".into(),
                    account_key_secret_reference: None,
                }),
                relative_mount_path: "afs".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        toolkit: Some(Toolkit::CustomToolkitSettings(pb::CustomToolkitSettings {
            command_line: "echo hi".into(),
        })),
        environment_variables: vec![pb::EnvironmentVariable {
            name: "A".into(),
            value: "1".into(),
        }],
        secrets: vec![secret("hunter2")],
        constraints: Some(pb::JobBasePropertiesConstraints {
            max_wall_clock_time: Some(prost_types::Duration {
                seconds: 7200,
                nanos: 0,
            }),
        }),
        id: "5b0c2c8e-uuid".into(),
        tool_type: pb::ToolType::Custom as i32,
        creation_time: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_000_000,
        }),
        provisioning_state: pb::ProvisioningState::Succeeded as i32,
        execution_state: pb::ExecutionState::Succeeded as i32,
        execution_info: Some(pb::JobExecutionInfo {
            start_time: Some(prost_types::Timestamp {
                seconds: 1_700_000_001,
                nanos: 0,
            }),
            end_time: Some(prost_types::Timestamp {
                seconds: 1_700_000_009,
                nanos: 0,
            }),
            exit_code: Some(0),
            errors: vec![],
        }),
        node_ids: vec!["n1".into(), "n2".into()],
        ..Default::default()
    }
}

#[test]
fn jobs_render_flat_camel_case_without_secrets() {
    let v = job(&full_job());
    assert_camel_case(&v, "");
    assert_eq!(v["name"], "j1");
    assert_eq!(v["id"], "/workspaces/w/experiments/e/jobs/j1");
    assert_eq!(v["jobId"], "5b0c2c8e-uuid");
    assert_eq!(v["type"], "Microsoft.BatchAI/workspaces/experiments/jobs");
    assert_eq!(v["executionState"], "succeeded");
    assert_eq!(v["provisioningState"], "succeeded");
    assert_eq!(v["executionInfo"]["exitCode"], 0);
    assert_eq!(v["nodeCount"], 2);
    assert_eq!(v["toolType"], "custom");
    assert_eq!(v["schedulingPriority"], "high");
    assert_eq!(v["customToolkitSettings"]["commandLine"], "echo hi");
    assert_eq!(v["cluster"]["id"], "/workspaces/w/clusters/c1");
    assert_eq!(v["creationTime"], "2023-11-14T22:13:20.123Z");
    assert_eq!(v["constraints"]["maxWallClockTime"], "PT2H");
    assert_eq!(v["secrets"][0], serde_json::json!({"name": "TOKEN"}));
    let text = v.to_string();
    for secret in ["hunter2", "storage-key", "registry-pw"] {
        assert!(!text.contains(secret), "{secret} rendered: {text}");
    }
    // Table/TSV rendering sees no secrets either (they are not in the JSON).
    let mut buf = Vec::new();
    crate::render::one(
        &mut buf,
        crate::args::OutputFormat::Tsv,
        crate::render::Kind::Job,
        &v,
    )
    .unwrap();
    assert_eq!(
        String::from_utf8(buf).unwrap(),
        "j1\te\tc1\t2\tcustom\tsucceeded\t0\t2023-11-14T22:13:20.123Z\t\t\n"
    );
}

#[test]
fn a_queued_job_renders_its_queue_info_and_others_none() {
    let mut j = full_job();
    assert!(
        job(&j).get("queueInfo").is_none(),
        "a job out of the queue has none"
    );
    j.execution_state = pb::ExecutionState::Queued as i32;
    j.queue_info = Some(pb::JobQueueInfo {
        position: 2,
        reason: "waits behind 1 job ahead of it in cluster c1".into(),
    });
    let v = job(&j);
    assert_camel_case(&v, "");
    assert_eq!(
        v["queueInfo"],
        serde_json::json!({"position": 2, "reason": "waits behind 1 job ahead of it in cluster c1"})
    );
}

#[test]
fn clusters_render_with_batch_ai_enum_spellings() {
    let c = pb::Cluster {
        workspace: "w".into(),
        name: "c1".into(),
        vm_size: "local".into(),
        vm_priority: pb::VmPriority::Lowpriority as i32,
        scale_settings: Some(pb::ScaleSettings {
            manual: Some(pb::ManualScaleSettings {
                target_node_count: 2,
                node_deallocation_option: pb::DeallocationOption::Waitforjobcompletion as i32,
            }),
            auto_scale: None,
        }),
        user_account_settings: Some(pb::UserAccountSettings {
            admin_user_name: "me".into(),
            admin_user_ssh_public_key: "ssh-rsa AAA".into(),
            admin_user_password: "cluster-pw".into(),
        }),
        node_setup: Some(pb::NodeSetup {
            setup_task: Some(pb::SetupTask {
                command_line: "setup.sh".into(),
                secrets: vec![pb::EnvironmentVariableWithSecretValue {
                    name: "S".into(),
                    value: "setup-secret".into(),
                    value_secret_reference: None,
                }],
                ..Default::default()
            }),
            ..Default::default()
        }),
        allocation_state: pb::AllocationState::Steady as i32,
        provisioning_state: pb::ProvisioningState::Succeeded as i32,
        current_node_count: 2,
        node_state_counts: Some(pb::NodeStateCounts {
            idle_node_count: 1,
            running_node_count: 1,
            ..Default::default()
        }),
        ..Default::default()
    };
    let v = cluster(&c);
    assert_camel_case(&v, "");
    assert_eq!(v["vmPriority"], "lowpriority");
    assert_eq!(v["allocationState"], "steady");
    assert_eq!(
        v["scaleSettings"]["manual"]["nodeDeallocationOption"],
        "waitforjobcompletion"
    );
    assert_eq!(
        v["nodeStateCounts"]["unusableNodeCount"], 0,
        "zero counts are shown"
    );
    assert_eq!(v["currentNodeCount"], 2);
    assert_eq!(v["id"], "/workspaces/w/clusters/c1");
    assert_eq!(
        v["userAccountSettings"],
        serde_json::json!({"adminUserName": "me", "adminUserSshPublicKey": "ssh-rsa AAA"})
    );
    let text = v.to_string();
    assert!(
        !text.contains("cluster-pw") && !text.contains("setup-secret"),
        "{text}"
    );
}

#[test]
fn other_resources_render() {
    let w = workspace(&pb::Workspace {
        name: "w".into(),
        location: "local".into(),
        tags: [("team".to_string(), "ml".to_string())].into(),
        provisioning_state: pb::ProvisioningState::Succeeded as i32,
        ..Default::default()
    });
    assert_eq!(w["tags"]["team"], "ml");
    assert_eq!(w["provisioningState"], "succeeded");
    assert_eq!(w["type"], "Microsoft.BatchAI/workspaces");
    let e = experiment(&pb::Experiment {
        workspace: "w".into(),
        name: "e".into(),
        ..Default::default()
    });
    assert_eq!(e["id"], "/workspaces/w/experiments/e");
    let n = node(&pb::Node {
        node_id: "n1".into(),
        state: pb::NodeState::Idle as i32,
        connected: true,
        cpu_count: 8,
        ..Default::default()
    });
    assert_camel_case(&n, "");
    assert_eq!(
        (
            n["state"].as_str(),
            n["connected"].as_bool(),
            n["cpuCount"].as_u64()
        ),
        (Some("idle"), Some(true), Some(8))
    );
    let f = file(&pb::File {
        name: "stdout.txt".into(),
        file_type: pb::FileType::File as i32,
        content_length: 12,
        ..Default::default()
    });
    assert_eq!(f["fileType"], "file");
    assert_eq!(f["properties"]["contentLength"], 12);
}

#[test]
fn nodes_show_their_login_information_and_setup_files_their_node() {
    let n = pb::Node {
        node_id: "n1".into(),
        ip_address: "10.0.0.4".into(),
        port: 50001,
        preparation_step: "mount afs".into(),
        file_share_driver: "cifs".into(),
        blob_driver: "rclone".into(),
        ..Default::default()
    };
    let v = node(&n);
    assert_eq!(v["nodeId"], "n1");
    assert_eq!(v["ipAddress"], "10.0.0.4");
    assert_eq!(v["port"], 50001);
    assert_eq!(v["preparationStep"], "mount afs");
    assert_eq!(v["fileShareDriver"], "cifs");
    assert_eq!(v["blobDriver"], "rclone");
    assert!(node(&pb::Node::default()).get("port").is_none());

    assert_eq!(node_of_setup_file("stdout-local-0.txt"), Some("local-0"));
    assert_eq!(node_of_setup_file("execution-n1.log"), Some("n1"));
    assert_eq!(node_of_setup_file("stdout.txt"), None);
    let f = pb::File {
        name: "stderr-n2.txt".into(),
        content_length: 3,
        ..Default::default()
    };
    assert_eq!(cluster_file(&f, None)["nodeId"], "n2");
    let f = pb::File {
        name: "other.txt".into(),
        ..Default::default()
    };
    assert_eq!(cluster_file(&f, Some("n3"))["nodeId"], "n3");
    assert!(cluster_file(&f, None).get("nodeId").is_none());
}
