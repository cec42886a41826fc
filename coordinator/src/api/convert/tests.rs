//! Round trips between wire and domain forms, and secret redaction.

use super::*;
use crate::domain::{ClusterView, ExecutionState, Node, NodeState, fixtures};
use bai_proto::v1 as pb;
use bai_proto::v1::job::Toolkit as PbToolkit;

fn pb_job() -> pb::Job {
    pb::Job {
        workspace: "w".into(),
        experiment: "e".into(),
        name: "j".into(),
        scheduling_priority: pb::JobPriority::High as i32,
        cluster: Some(pb::ClusterRef {
            workspace: String::new(),
            name: "c".into(),
        }),
        node_count: 1,
        toolkit: Some(PbToolkit::CustomToolkitSettings(
            pb::CustomToolkitSettings {
                command_line: "echo hi".into(),
            },
        )),
        environment_variables: vec![pb::EnvironmentVariable {
            name: "A".into(),
            value: "1".into(),
        }],
        secrets: vec![pb::EnvironmentVariableWithSecretValue {
            name: "TOKEN".into(),
            value: "s3cret".into(),
            value_secret_reference: None,
        }],
        mount_volumes: Some(pb::MountVolumes {
            azure_file_shares: vec![pb::AzureFileShareReference {
                account_name: "acct".into(),
                azure_file_url: "https://acct/share".into(),
                credentials: Some(pb::AzureStorageCredentialsInfo {
                    account_key: "k3y".into(),
                    account_key_secret_reference: None,
                }),
                relative_mount_path: "afs".into(),
                file_mode: String::new(),
                directory_mode: String::new(),
            }],
            ..Default::default()
        }),
        input_directories: vec![pb::InputDirectory {
            id: "DATA".into(),
            path: "/data".into(),
        }],
        constraints: Some(pb::JobBasePropertiesConstraints {
            max_wall_clock_time: Some(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
        }),
        ..Default::default()
    }
}

#[test]
fn job_round_trip_redacts_secrets() {
    let job = job_from(pb_job(), 1_234).unwrap();
    assert_eq!(
        job.spec.cluster.workspace, "w",
        "empty cluster workspace means the job's"
    );
    assert_eq!(job.spec.max_wall_clock_time_ms, 3_600_000);
    assert_eq!(job.spec.secrets[0].value.expose(), "s3cret");
    assert_eq!(job.execution_state, ExecutionState::Queued);
    assert_eq!(job.id.len(), 36);
    let mounts = job.spec.mount_volumes.as_ref().unwrap();
    assert_eq!(
        mounts.azure_file_shares[0].file_mode, "0777",
        "defaults filled in"
    );

    let out = job_to(&job);
    assert_eq!(out.name, "j");
    assert_eq!(out.scheduling_priority, pb::JobPriority::High as i32);
    assert_eq!(out.secrets[0].name, "TOKEN");
    assert_eq!(out.secrets[0].value, "", "secret values are never returned");
    let share = &out.mount_volumes.as_ref().unwrap().azure_file_shares[0];
    assert_eq!(share.credentials.as_ref().unwrap().account_key, "");
    assert_eq!(out.tool_type, pb::ToolType::Custom as i32);
    assert_eq!(out.execution_state, pb::ExecutionState::Queued as i32);
    assert_eq!(
        out.job_output_directory_path_segment,
        format!("workspaces/w/experiments/e/jobs/j/{}", job.id)
    );
    assert_eq!(out.execution_info.as_ref().unwrap().exit_code, None);
    // Converting the read back gives the same spec, apart from the blanked secrets.
    let mut again = job_from(out, 1_234).unwrap();
    again.spec.secrets = job.spec.secrets.clone();
    again.spec.mount_volumes = job.spec.mount_volumes.clone();
    assert_eq!(again.spec, job.spec);
}

#[test]
fn job_wire_errors_name_the_field() {
    let mut j = pb_job();
    j.toolkit = None;
    assert_eq!(job_from(j, 0).unwrap_err().field, "job.toolkit");
    let mut j = pb_job();
    j.node_count = -1;
    assert_eq!(
        job_from(j, 0).unwrap_err().to_string(),
        "job.node_count: must not be negative"
    );
    let mut j = pb_job();
    j.scheduling_priority = 42;
    assert_eq!(
        job_from(j, 0).unwrap_err().to_string(),
        "job.scheduling_priority: unknown value 42"
    );
    let mut j = pb_job();
    j.secrets[0].value_secret_reference = Some(pb::KeyVaultSecretReference::default());
    assert_eq!(
        job_from(j, 0).unwrap_err().field,
        "job.secrets[0].value_secret_reference"
    );
    let mut j = pb_job();
    j.constraints = Some(pb::JobBasePropertiesConstraints {
        max_wall_clock_time: Some(prost_types::Duration {
            seconds: 0,
            nanos: 0,
        }),
    });
    assert_eq!(
        job_from(j, 0).unwrap_err().to_string(),
        "job.constraints.max_wall_clock_time: must be positive"
    );
    let mut j = pb_job();
    j.constraints = None;
    assert_eq!(
        job_from(j, 0).unwrap().spec.max_wall_clock_time_ms,
        crate::domain::DEFAULT_MAX_WALL_CLOCK_MS
    );
}

#[test]
fn toolkits_round_trip() {
    let kits = vec![
        PbToolkit::PyTorchSettings(pb::PyTorchSettings {
            python_script_file_path: "t.py".into(),
            command_line_args: "--x".into(),
            communication_backend: "gloo".into(),
            ..Default::default()
        }),
        PbToolkit::TensorFlowSettings(pb::TensorFlowSettings {
            python_script_file_path: "t.py".into(),
            master_command_line_args: "--m".into(),
            worker_count: 1,
            ..Default::default()
        }),
        PbToolkit::CntkSettings(pb::CntkSettings {
            language_type: "BrainScript".into(),
            config_file_path: "c.cntk".into(),
            ..Default::default()
        }),
        PbToolkit::CaffeSettings(pb::CaffeSettings {
            config_file_path: "s.prototxt".into(),
            ..Default::default()
        }),
        PbToolkit::Caffe2Settings(pb::Caffe2Settings {
            python_script_file_path: "t.py".into(),
            ..Default::default()
        }),
        PbToolkit::ChainerSettings(pb::ChainerSettings {
            python_script_file_path: "t.py".into(),
            ..Default::default()
        }),
        PbToolkit::HorovodSettings(pb::HorovodSettings {
            python_script_file_path: "t.py".into(),
            ..Default::default()
        }),
        PbToolkit::CustomMpiSettings(pb::CustomMpiSettings {
            command_line: "x".into(),
            process_count: 2,
        }),
    ];
    for kit in kits {
        let mut j = pb_job();
        j.toolkit = Some(kit.clone());
        let job = job_from(j, 0).unwrap();
        assert_eq!(job_to(&job).toolkit, Some(kit));
    }
}

#[test]
fn cluster_round_trip_and_view() {
    let c = pb::Cluster {
        workspace: "w".into(),
        name: "c".into(),
        vm_size: "STANDARD_NC6".into(),
        vm_priority: pb::VmPriority::Lowpriority as i32,
        scale_settings: Some(pb::ScaleSettings {
            manual: Some(pb::ManualScaleSettings {
                target_node_count: 2,
                node_deallocation_option: pb::DeallocationOption::Terminate as i32,
            }),
            auto_scale: None,
        }),
        user_account_settings: Some(pb::UserAccountSettings {
            admin_user_name: "me".into(),
            admin_user_ssh_public_key: "ssh-rsa x".into(),
            admin_user_password: "pw".into(),
        }),
        ..Default::default()
    };
    let cluster = cluster_from(c.clone(), 5).unwrap();
    assert_eq!(cluster.target_node_count, 2);
    assert_eq!(
        cluster
            .spec
            .user_account
            .as_ref()
            .unwrap()
            .admin_user_password
            .expose(),
        "pw"
    );
    let node = |id: &str, s| -> Node { fixtures::node(id, "w", "c", s) };
    let view = ClusterView::new(cluster.clone(), &[node("a", NodeState::Idle)]);
    let out = cluster_to(&view);
    assert_eq!(out.scale_settings, c.scale_settings);
    assert_eq!(out.vm_priority, c.vm_priority);
    assert_eq!(
        out.user_account_settings
            .as_ref()
            .unwrap()
            .admin_user_password,
        ""
    );
    assert_eq!(out.allocation_state, pb::AllocationState::Resizing as i32);
    assert_eq!(out.current_node_count, 1);
    assert_eq!(out.node_state_counts.unwrap().idle_node_count, 1);
    assert_eq!(cluster_from(out, 5).unwrap().spec.scale, cluster.spec.scale);

    let mut both = c.clone();
    both.scale_settings.as_mut().unwrap().auto_scale = Some(pb::AutoScaleSettings::default());
    assert_eq!(
        cluster_from(both, 0).unwrap_err().to_string(),
        "cluster.scale_settings: exactly one of manual or auto_scale is required"
    );
    let mut none = c;
    none.scale_settings = None;
    assert!(cluster_from(none, 0).is_err());
}

#[test]
fn timestamps() {
    for ms in [0, 1, 999, 1_000, 1_700_000_000_123, -1] {
        assert_eq!(from_ts(&ts(ms)), ms);
    }
    assert_eq!(from_duration("f", &duration(1_500)).unwrap(), 1_500);
}

#[test]
fn messages_left_at_their_defaults_count_as_absent() {
    let mut j = pb_job();
    j.mount_volumes = Some(pb::MountVolumes::default());
    j.container_settings = Some(pb::ContainerSettings::default());
    j.job_preparation = Some(pb::JobPreparation::default());
    let job = job_from(j, 0).unwrap();
    assert_eq!(job.spec.mount_volumes, None);
    assert_eq!(job.spec.container_settings, None);
    assert_eq!(job.spec.job_preparation_command_line, None);
    crate::domain::validate::job(&job).expect("empty messages ask the node for nothing");

    let c = pb::Cluster {
        workspace: "w".into(),
        name: "c".into(),
        scale_settings: Some(pb::ScaleSettings {
            manual: Some(pb::ManualScaleSettings::default()),
            auto_scale: None,
        }),
        node_setup: Some(pb::NodeSetup {
            setup_task: Some(pb::SetupTask::default()),
            mount_volumes: Some(pb::MountVolumes::default()),
            performance_counters_settings: Some(pb::PerformanceCountersSettings {
                app_insights_reference: Some(pb::AppInsightsReference::default()),
            }),
        }),
        user_account_settings: Some(pb::UserAccountSettings::default()),
        virtual_machine_configuration: Some(pb::VirtualMachineConfiguration {
            image_reference: Some(pb::ImageReference::default()),
        }),
        ..Default::default()
    };
    let cluster = cluster_from(c, 0).unwrap();
    assert_eq!(cluster.spec.user_account, None);
    assert_eq!(cluster.spec.image, None);
    let setup = cluster.spec.node_setup.as_ref().unwrap();
    assert_eq!(
        (&setup.setup_task, &setup.mount_volumes, &setup.app_insights),
        (&None, &None, &None)
    );
    crate::domain::validate::cluster(&cluster).expect("empty messages ask the node for nothing");
}
