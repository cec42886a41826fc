//! Bad input gets a clear error that names the field and the rule, and
//! changes nothing — not even after a restart.

use anyhow::Result;
use bai_proto::v1 as pb;
use bai_tests::{Clients, Coordinator, cluster, custom_job};
use tonic::Code;

async fn snapshot(c: &mut Clients) -> Result<String> {
    let ws = c
        .workspaces
        .list_workspaces(pb::ListWorkspacesRequest::default())
        .await?
        .into_inner();
    let ex = c
        .experiments
        .list_experiments(pb::ListExperimentsRequest {
            workspace: "ws".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let cl = c
        .clusters
        .list_clusters(pb::ListClustersRequest {
            workspace: "ws".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let jobs = c
        .jobs
        .list_jobs(pb::ListJobsRequest {
            workspace: "ws".into(),
            experiment: "ex".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let names = |v: Vec<String>| v.join(",");
    Ok(format!(
        "ws={} ex={} clusters={} jobs={}",
        names(ws.workspaces.into_iter().map(|w| w.name).collect()),
        names(ex.experiments.into_iter().map(|e| e.name).collect()),
        names(cl.clusters.into_iter().map(|c| c.name).collect()),
        names(jobs.jobs.into_iter().map(|j| j.name).collect()),
    ))
}

fn expect_err<T: std::fmt::Debug>(
    r: Result<tonic::Response<T>, tonic::Status>,
    code: Code,
    words: &[&str],
) {
    let st = r.expect_err("the request was accepted");
    assert_eq!(st.code(), code, "{st:?}");
    for w in words {
        assert!(
            st.message().contains(w),
            "message {:?} should mention {w:?}",
            st.message()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_are_rejected_and_store_nothing() -> Result<()> {
    let mut coord = Coordinator::start()?;
    let mut c = coord.clients().await?;
    c.setup_cluster("ws", "ex", "c1", 0).await?;
    c.submit("ws", "ex", "good", "c1", "true").await?;
    let before = snapshot(&mut c).await?;

    let ws = |name: &str| pb::CreateWorkspaceRequest {
        workspace: Some(pb::Workspace {
            name: name.into(),
            location: "local".into(),
            ..Default::default()
        }),
    };
    expect_err(
        c.workspaces.create_workspace(ws("bad name!")).await,
        Code::InvalidArgument,
        &["name"],
    );
    expect_err(
        c.workspaces.create_workspace(ws("")).await,
        Code::InvalidArgument,
        &["name"],
    );
    expect_err(
        c.workspaces.create_workspace(ws(&"x".repeat(65))).await,
        Code::InvalidArgument,
        &["name", "64"],
    );
    expect_err(
        c.workspaces.create_workspace(ws("ws")).await,
        Code::AlreadyExists,
        &["ws"],
    );

    let ex = |ws: &str, name: &str| pb::CreateExperimentRequest {
        experiment: Some(pb::Experiment {
            workspace: ws.into(),
            name: name.into(),
            ..Default::default()
        }),
    };
    expect_err(
        c.experiments.create_experiment(ex("nope", "e2")).await,
        Code::NotFound,
        &["nope"],
    );
    expect_err(
        c.experiments.create_experiment(ex("ws", "a/b")).await,
        Code::InvalidArgument,
        &["name"],
    );
    expect_err(
        c.experiments.create_experiment(ex("ws", "ex")).await,
        Code::AlreadyExists,
        &["ex"],
    );

    let mut negative = cluster("ws", "c2", -1);
    expect_err(
        c.clusters
            .create_cluster(pb::CreateClusterRequest {
                cluster: Some(negative.clone()),
            })
            .await,
        Code::InvalidArgument,
        &["target_node_count"],
    );
    negative.scale_settings = Some(pb::ScaleSettings {
        manual: None,
        auto_scale: Some(pb::AutoScaleSettings {
            minimum_node_count: 3,
            maximum_node_count: 1,
            initial_node_count: 0,
        }),
    });
    expect_err(
        c.clusters
            .create_cluster(pb::CreateClusterRequest {
                cluster: Some(negative),
            })
            .await,
        Code::InvalidArgument,
        &["maximum_node_count"],
    );
    expect_err(
        c.clusters
            .create_cluster(pb::CreateClusterRequest {
                cluster: Some(cluster("ws", "c1", 1)),
            })
            .await,
        Code::AlreadyExists,
        &["c1"],
    );

    let mut j = custom_job("ws", "ex", "j2", "nocluster", "true");
    expect_err(
        c.jobs
            .create_job(pb::CreateJobRequest {
                job: Some(j.clone()),
            })
            .await,
        Code::NotFound,
        &["nocluster"],
    );
    j = custom_job("ws", "ex", "j2", "c1", "true");
    j.node_count = 0;
    expect_err(
        c.jobs
            .create_job(pb::CreateJobRequest {
                job: Some(j.clone()),
            })
            .await,
        Code::InvalidArgument,
        &["node_count"],
    );
    j.node_count = 1;
    j.toolkit = None;
    expect_err(
        c.jobs
            .create_job(pb::CreateJobRequest {
                job: Some(j.clone()),
            })
            .await,
        Code::InvalidArgument,
        &["toolkit"],
    );
    let mut j = custom_job("ws", "ex", "bad job", "c1", "true");
    expect_err(
        c.jobs
            .create_job(pb::CreateJobRequest {
                job: Some(j.clone()),
            })
            .await,
        Code::InvalidArgument,
        &["name"],
    );
    j = custom_job("ws", "ex", "j3", "c1", "true");
    j.environment_variables.push(pb::EnvironmentVariable {
        name: "1BAD=".into(),
        value: "x".into(),
    });
    expect_err(
        c.jobs
            .create_job(pb::CreateJobRequest { job: Some(j) })
            .await,
        Code::InvalidArgument,
        &["environment_variables"],
    );
    expect_err(
        c.jobs
            .create_job(pb::CreateJobRequest {
                job: Some(custom_job("ws", "ex", "good", "c1", "true")),
            })
            .await,
        Code::AlreadyExists,
        &["good"],
    );
    expect_err(
        c.jobs
            .create_job(pb::CreateJobRequest {
                job: Some(custom_job("ws", "nox", "j4", "c1", "true")),
            })
            .await,
        Code::NotFound,
        &["nox"],
    );
    expect_err(
        c.jobs.create_job(pb::CreateJobRequest { job: None }).await,
        Code::InvalidArgument,
        &["job"],
    );

    assert_eq!(
        snapshot(&mut c).await?,
        before,
        "a rejected request changed the store"
    );

    // The CLI refuses what it can check itself as a usage error (exit 2), and
    // shows the coordinator's field-named refusal with exit 1.
    let cli_job = |count: &str| {
        coord
            .cli()
            .args([
                "job",
                "create",
                "-w",
                "ws",
                "-e",
                "ex",
                "-n",
                "j5",
                "-c",
                "c1",
                "--command-line",
                "true",
            ])
            .args(["--node-count", count])
            .output()
    };
    let out = cli_job("0")?;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("node-count"),
        "{out:?}"
    );
    let out = cli_job("2")?;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("node_count"),
        "{out:?}"
    );

    coord.restart()?;
    let mut c = coord.clients().await?;
    assert_eq!(
        snapshot(&mut c).await?,
        before,
        "a rejected request was stored"
    );
    Ok(())
}
