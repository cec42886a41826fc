//! The public API over gRPC: validation errors name the field, NotFound and
//! AlreadyExists name the resource, lists page, reads hide secrets, deletes
//! cascade, and reflection lists the services.

#![allow(clippy::unwrap_used)]

mod support;

use bai_proto::v1 as pb;
use support::*;
use tonic::Code;

fn status<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> tonic::Status {
    r.unwrap_err()
}

#[tokio::test]
async fn workspace_errors_and_paging() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path()).await;
    let mut ws = c.workspaces();
    let s = status(
        ws.create_workspace(pb::CreateWorkspaceRequest { workspace: None })
            .await,
    );
    assert_eq!(
        (s.code(), s.message()),
        (Code::InvalidArgument, "workspace: is required")
    );
    let bad = pb::Workspace {
        name: "no spaces".into(),
        ..Default::default()
    };
    let s = status(
        ws.create_workspace(pb::CreateWorkspaceRequest {
            workspace: Some(bad),
        })
        .await,
    );
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(
        s.message().starts_with("workspace.name: "),
        "{}",
        s.message()
    );
    for n in ["a", "b", "c"] {
        let w = ws
            .create_workspace(pb::CreateWorkspaceRequest {
                workspace: Some(pb::Workspace {
                    name: n.into(),
                    tags: [("k".to_string(), "v".to_string())].into(),
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            w.provisioning_state,
            pb::ProvisioningState::Succeeded as i32
        );
        assert!(w.creation_time.is_some());
    }
    let s = status(
        ws.create_workspace(pb::CreateWorkspaceRequest {
            workspace: Some(pb::Workspace {
                name: "a".into(),
                ..Default::default()
            }),
        })
        .await,
    );
    assert_eq!(
        (s.code(), s.message()),
        (Code::AlreadyExists, "workspace \"a\" already exists")
    );
    let s = status(
        ws.get_workspace(pb::GetWorkspaceRequest { name: "zz".into() })
            .await,
    );
    assert_eq!(
        (s.code(), s.message()),
        (Code::NotFound, "workspace \"zz\" not found")
    );

    let page = ws
        .list_workspaces(pb::ListWorkspacesRequest {
            max_results: 2,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.workspaces.len(), 2);
    assert_eq!(
        page.workspaces[0].tags.get("k").map(String::as_str),
        Some("v")
    );
    let rest = ws
        .list_workspaces(pb::ListWorkspacesRequest {
            max_results: 2,
            page_token: page.next_page_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.workspaces.len(), 1);
    assert_eq!(rest.workspaces[0].name, "c");
    assert!(rest.next_page_token.is_empty());
    let s = status(
        ws.list_workspaces(pb::ListWorkspacesRequest {
            max_results: 1001,
            page_token: String::new(),
        })
        .await,
    );
    assert_eq!(s.message(), "max_results: must be between 1 and 1000");
    c.stop().await;
}

#[tokio::test]
async fn cluster_reads_and_resize() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path()).await;
    c.seed(2).await;
    let mut clusters = c.clusters();
    // A password without a user name is refused by field name, without
    // echoing the password.
    let mut with_password = cluster("p", 0);
    with_password.user_account_settings = Some(pb::UserAccountSettings {
        admin_user_name: String::new(),
        admin_user_ssh_public_key: String::new(),
        admin_user_password: "hunter2".into(),
    });
    let s = status(
        clusters
            .create_cluster(pb::CreateClusterRequest {
                cluster: Some(with_password),
            })
            .await,
    );
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    assert!(
        s.message()
            .starts_with("cluster.user_account_settings.admin_user_name: is required"),
        "{s:?}"
    );
    assert!(!s.message().contains("hunter2"));
    clusters
        .create_cluster(pb::CreateClusterRequest {
            cluster: Some(cluster("p", 0)),
        })
        .await
        .unwrap();
    let got = clusters
        .get_cluster(pb::GetClusterRequest {
            workspace: "w".into(),
            name: "c".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        got.allocation_state,
        pb::AllocationState::Resizing as i32,
        "target 2, no nodes"
    );
    assert_eq!(got.current_node_count, 0);
    assert_eq!(got.vm_priority, pb::VmPriority::Dedicated as i32);
    let auto_scale = |max| pb::UpdateClusterRequest {
        workspace: "w".into(),
        name: "c".into(),
        scale_settings: Some(pb::ScaleSettings {
            manual: None,
            auto_scale: Some(pb::AutoScaleSettings {
                minimum_node_count: 0,
                maximum_node_count: max,
                initial_node_count: 0,
            }),
        }),
    };
    let refused = status(clusters.update_cluster(auto_scale(0)).await);
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        refused.message(),
        "scale_settings.auto_scale.maximum_node_count: must be at least 1",
        "{refused:?}"
    );
    let auto = clusters
        .update_cluster(auto_scale(3))
        .await
        .unwrap()
        .into_inner();
    let s = auto.scale_settings.unwrap().auto_scale.unwrap();
    assert_eq!((s.minimum_node_count, s.maximum_node_count), (0, 3));
    let resized = clusters
        .update_cluster(pb::UpdateClusterRequest {
            workspace: "w".into(),
            name: "c".into(),
            scale_settings: Some(pb::ScaleSettings {
                manual: Some(pb::ManualScaleSettings {
                    target_node_count: 0,
                    ..Default::default()
                }),
                auto_scale: None,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resized.allocation_state, pb::AllocationState::Steady as i32);
    assert_eq!(
        resized
            .scale_settings
            .unwrap()
            .manual
            .unwrap()
            .target_node_count,
        0
    );
    let s = status(
        clusters
            .update_cluster(pb::UpdateClusterRequest {
                workspace: "w".into(),
                name: "c".into(),
                scale_settings: None,
            })
            .await,
    );
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(
        s.message().starts_with("scale_settings: exactly one"),
        "{}",
        s.message()
    );
    let s = status(
        clusters
            .update_cluster(pb::UpdateClusterRequest {
                workspace: "w".into(),
                name: "nope".into(),
                scale_settings: cluster("x", 1).scale_settings,
            })
            .await,
    );
    assert_eq!(
        (s.code(), s.message()),
        (Code::NotFound, "cluster \"w/nope\" not found")
    );
    let s = status(
        clusters
            .create_cluster(pb::CreateClusterRequest {
                cluster: Some(cluster("c", 1)),
            })
            .await,
    );
    assert_eq!(s.code(), Code::AlreadyExists);
    let mut negative = cluster("n", 1);
    negative
        .scale_settings
        .as_mut()
        .unwrap()
        .manual
        .as_mut()
        .unwrap()
        .target_node_count = -1;
    let s = status(
        clusters
            .create_cluster(pb::CreateClusterRequest {
                cluster: Some(negative),
            })
            .await,
    );
    assert_eq!(
        s.message(),
        "cluster.scale_settings.manual.target_node_count: must not be negative"
    );
    let list = clusters
        .list_clusters(pb::ListClustersRequest {
            workspace: "w".into(),
            max_results: 0,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = list.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["c", "p"]);
    c.stop().await;
}

#[tokio::test]
async fn job_create_rules() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path()).await;
    c.seed(0).await;
    let mut jobs = c.jobs();
    // More nodes than the cluster has (its manual target) is refused.
    c.clusters()
        .create_cluster(pb::CreateClusterRequest {
            cluster: Some(cluster("small", 1)),
        })
        .await
        .unwrap();
    let mut wide = job("wide", "x");
    wide.node_count = 2;
    wide.cluster.as_mut().unwrap().name = "small".into();
    let s = status(
        jobs.create_job(pb::CreateJobRequest { job: Some(wide) })
            .await,
    );
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(
        s.message()
            .starts_with("job.node_count: must be at most 1, cluster w/small's target"),
        "{}",
        s.message()
    );
    // A container setting that does not parse is named, before containers
    // are refused at all.
    let mut boxed = job("boxed", "x");
    boxed.container_settings = Some(pb::ContainerSettings {
        image_source_registry: Some(pb::ImageSourceRegistry {
            image: "tensorflow/tensorflow:1.8.0-gpu".into(),
            ..Default::default()
        }),
        shm_size: "-2g".into(),
    });
    let s = status(
        jobs.create_job(pb::CreateJobRequest { job: Some(boxed) })
            .await,
    );
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(
        s.message()
            .starts_with("job.container_settings.shm_size: must be a positive size"),
        "{}",
        s.message()
    );
    let mut zero = job("zero", "x");
    zero.node_count = 0;
    let s = status(
        jobs.create_job(pb::CreateJobRequest { job: Some(zero) })
            .await,
    );
    assert_eq!(s.message(), "job.node_count: must be at least 1");
    let mut nowhere = job("nowhere", "x");
    nowhere.cluster.as_mut().unwrap().name = "missing".into();
    let s = status(
        jobs.create_job(pb::CreateJobRequest { job: Some(nowhere) })
            .await,
    );
    assert_eq!(
        (s.code(), s.message()),
        (Code::NotFound, "cluster \"w/missing\" not found")
    );
    let mut no_exp = job("x", "x");
    no_exp.experiment = "nope".into();
    let s = status(
        jobs.create_job(pb::CreateJobRequest { job: Some(no_exp) })
            .await,
    );
    assert_eq!(
        (s.code(), s.message()),
        (Code::NotFound, "experiment \"w/nope\" not found")
    );

    let j = c.create_job("j", "echo hi").await;
    assert_eq!(j.tool_type, pb::ToolType::Custom as i32);
    assert_eq!(j.scheduling_priority, pb::JobPriority::Normal as i32);
    assert_eq!(j.secrets[0].name, "TOKEN");
    assert_eq!(j.secrets[0].value, "");
    assert_eq!(
        j.job_output_directory_path_segment,
        format!("workspaces/w/experiments/e/jobs/j/{}", j.id)
    );
    assert_eq!(
        j.execution_state,
        pb::ExecutionState::Queued as i32,
        "no nodes: stays queued"
    );
    let s = status(
        jobs.create_job(pb::CreateJobRequest {
            job: Some(job("j", "x")),
        })
        .await,
    );
    assert_eq!(
        (s.code(), s.message()),
        (Code::AlreadyExists, "job \"w/e/j\" already exists")
    );
    let list = jobs
        .list_jobs(pb::ListJobsRequest {
            workspace: "w".into(),
            experiment: "e".into(),
            max_results: 0,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(list.jobs.len(), 1, "rejected creates left nothing");

    // Output RPC argument errors.
    let s = status(
        jobs.list_output_files(pb::ListOutputFilesRequest {
            job: Some(key("j")),
            output_directory_id: String::new(),
            directory: String::new(),
            max_results: 0,
            page_token: String::new(),
            attempt: 0,
        })
        .await,
    );
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().starts_with("output_directory_id: is required"));
    let s = status(
        jobs.list_output_files(pb::ListOutputFilesRequest {
            job: Some(key("j")),
            output_directory_id: "MODEL".into(),
            directory: String::new(),
            max_results: 0,
            page_token: String::new(),
            attempt: 0,
        })
        .await,
    );
    assert_eq!(
        (s.code(), s.message()),
        (Code::NotFound, "output directory \"MODEL\" not found")
    );
    let empty = jobs
        .list_output_files(pb::ListOutputFilesRequest {
            job: Some(key("j")),
            output_directory_id: "stdouterr".into(),
            directory: String::new(),
            max_results: 0,
            page_token: String::new(),
            attempt: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(empty.files.is_empty(), "no output yet");
    let s = jobs
        .stream_output_file(pb::StreamOutputFileRequest {
            job: Some(key("j")),
            output_directory_id: String::new(),
            path: "secret.txt".into(),
            offset: 0,
            follow: false,
            attempt: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(s.code(), Code::NotFound);

    // A queued job terminated fails at once; watching an ended job gives it once.
    let t = jobs
        .terminate_job(pb::TerminateJobRequest {
            job: Some(key("j")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(t.execution_state, pb::ExecutionState::Failed as i32);
    assert_eq!(t.execution_info.unwrap().errors[0].code, "JobTerminated");
    let mut w = jobs
        .watch_job(pb::WatchJobRequest {
            job: Some(key("j")),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        w.message().await.unwrap().unwrap().execution_state,
        pb::ExecutionState::Failed as i32
    );
    assert!(w.message().await.unwrap().is_none());
    c.stop().await;
}

#[tokio::test]
async fn deletes_cascade() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path()).await;
    c.seed(0).await;
    c.create_job("a", "x").await;
    c.create_job("b", "x").await;
    c.experiments()
        .delete_experiment(pb::DeleteExperimentRequest {
            workspace: "w".into(),
            name: "e".into(),
        })
        .await
        .unwrap();
    let s = status(
        c.jobs()
            .get_job(pb::GetJobRequest {
                job: Some(key("a")),
            })
            .await,
    );
    assert_eq!(s.code(), Code::NotFound);
    c.workspaces()
        .delete_workspace(pb::DeleteWorkspaceRequest { name: "w".into() })
        .await
        .unwrap();
    let s = status(
        c.clusters()
            .get_cluster(pb::GetClusterRequest {
                workspace: "w".into(),
                name: "c".into(),
            })
            .await,
    );
    assert_eq!(s.code(), Code::NotFound);
    let s = status(
        c.workspaces()
            .delete_workspace(pb::DeleteWorkspaceRequest { name: "w".into() })
            .await,
    );
    assert_eq!(s.code(), Code::NotFound);
    c.stop().await;
}

#[tokio::test]
async fn reflection_lists_the_services() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path()).await;
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp = ServerReflectionClient::new(c.channel.clone())
        .server_reflection_info(tokio_stream::iter(vec![req]))
        .await
        .unwrap()
        .into_inner();
    let msg = resp.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = msg.message_response else {
        panic!("unexpected {msg:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "bai.v1.JobService",
        "bai.v1.AgentService",
        "bai.v1.WorkspaceService",
    ] {
        assert!(names.contains(&want), "{names:?}");
    }
    c.stop().await;
}
