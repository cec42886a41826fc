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
    // Both scale modes at once, and a maximum above the local provider's 100.
    let auto = pb::AutoScaleSettings {
        minimum_node_count: 0,
        maximum_node_count: 101,
        initial_node_count: 0,
    };
    let mut both = cluster("ws", "c2", 1);
    both.scale_settings.as_mut().unwrap().auto_scale = Some(pb::AutoScaleSettings {
        maximum_node_count: 2,
        ..auto
    });
    expect_err(
        c.clusters
            .create_cluster(pb::CreateClusterRequest {
                cluster: Some(both),
            })
            .await,
        Code::InvalidArgument,
        &["scale_settings", "exactly one of manual or auto_scale"],
    );
    let mut huge = cluster("ws", "c2", 0);
    huge.scale_settings = Some(pb::ScaleSettings {
        manual: None,
        auto_scale: Some(auto),
    });
    expect_err(
        c.clusters
            .create_cluster(pb::CreateClusterRequest {
                cluster: Some(huge),
            })
            .await,
        Code::InvalidArgument,
        &["maximum_node_count"],
    );
    // A resize of a cluster that is gone (a delete is one transaction: there
    // is no cluster "being deleted" to resize), a preemption of a node that
    // does not exist or has a bad name, a bad events page token.
    let resize_gone = pb::UpdateClusterRequest {
        workspace: "ws".into(),
        name: "c2".into(),
        scale_settings: cluster("ws", "c2", 3).scale_settings,
    };
    expect_err(
        c.clusters.update_cluster(resize_gone).await,
        Code::NotFound,
        &["c2"],
    );
    let preempt = |node: &str| pb::PreemptNodeRequest {
        workspace: "ws".into(),
        cluster: "c1".into(),
        node_id: node.into(),
    };
    expect_err(
        c.clusters.preempt_node(preempt("no-such-node")).await,
        Code::NotFound,
        &["no-such-node"],
    );
    expect_err(
        c.clusters.preempt_node(preempt("bad/name")).await,
        Code::InvalidArgument,
        &["node_id"],
    );
    expect_err(
        c.clusters
            .list_cluster_events(pb::ListClusterEventsRequest {
                workspace: "ws".into(),
                cluster: "c1".into(),
                max_results: 0,
                page_token: "x1".into(),
            })
            .await,
        Code::InvalidArgument,
        &["page_token"],
    );
    expect_err(
        c.clusters
            .list_cluster_events(pb::ListClusterEventsRequest {
                workspace: "ws".into(),
                cluster: "c1".into(),
                max_results: 5000,
                page_token: String::new(),
            })
            .await,
        Code::InvalidArgument,
        &["max_results"],
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
    let out = cli_job("101")?;
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

/// The public Batch AI recipes all run in a container, most with mounts, some
/// with job preparation, 12 of 17 on several nodes: bai takes every one as
/// written (storage placeholders filled), and each without its container too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_recipe_is_taken_as_written() -> Result<()> {
    let Some(recipes) = bai_tests::recipes_dir() else {
        return Ok(());
    };
    let jobs = bai_tests::recipe_job_files(&recipes);
    assert!(
        jobs.len() >= 15,
        "found only {} recipe job files",
        jobs.len()
    );

    let coord = Coordinator::start()?;
    let mut c = coord.clients().await?;
    c.setup_cluster("ws", "ex", "c1", 0).await?;
    let mut multi_node = 0;
    for (i, file) in jobs.iter().enumerate() {
        let name = format!("recipe{i}");
        let out = coord
            .cli()
            .args(["job", "create", "-w", "ws", "-e", "ex", "-c", "c1"])
            .args(["-n", &name, "--storage-account-name", "store"])
            .arg("-f")
            .arg(file)
            .env("AZURE_BATCHAI_STORAGE_KEY", "k3y")
            .output()?;
        let err = String::from_utf8_lossy(&out.stderr);
        let shown = file.display();
        assert!(!err.contains("k3y"), "{shown}: the storage key was echoed");
        assert!(out.status.success(), "{shown}: refused: {err}");
        let job = c.job("ws", "ex", &name).await?;
        assert!(job.container_settings.is_some(), "{shown}: {job:?}");
        if job.node_count > 1 {
            multi_node += 1;
        }
    }
    assert!(multi_node >= 10, "only {multi_node} multi-node recipes");

    // Without their containers, every recipe is taken as written: multi-node
    // toolkits, MPI, process counts, mounts and job preparation included.
    let bare_dir = tempfile::tempdir()?;
    for (i, file) in jobs.iter().enumerate() {
        let mut job: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(file)?)?;
        let props = job
            .get_mut("properties")
            .and_then(|p| p.as_object_mut())
            .unwrap_or_else(|| panic!("{}: no properties", file.display()));
        props.remove("containerSettings");
        let bare = bare_dir.path().join(format!("bare{i}.json"));
        std::fs::write(&bare, serde_json::to_vec(&job)?)?;
        let out = coord
            .cli()
            .args(["job", "create", "-w", "ws", "-e", "ex", "-c", "c1"])
            .args(["-n", &format!("bare{i}"), "--storage-account-name", "store"])
            .arg("-f")
            .arg(&bare)
            .env("AZURE_BATCHAI_STORAGE_KEY", "k3y")
            .output()?;
        assert!(
            out.status.success(),
            "{}: refused without its container: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The documentation's cluster files: setup tasks and mounts are taken now
    // (at target 0, so no node tries to reach Azure); what is still refused
    // is refused by name: block 3's Key Vault secret, block 4's placeholder.
    for (block, refused) in [
        (
            "block-03-line625",
            Some("cluster.node_setup.setup_task.secrets"),
        ),
        // A placeholder where the NFS server's address belongs.
        (
            "block-04-line680",
            Some("cluster.node_setup.mount_volumes.file_servers[0].file_server.id"),
        ),
        ("block-05-line781", None),
    ] {
        let file = recipes.join(format!(
            "documentation__using-azure-cli-20.md__{block}.json"
        ));
        let out = coord
            .cli()
            .args([
                "cluster",
                "create",
                "-w",
                "ws",
                "-n",
                &format!("doc{}", &block[6..8]),
                "-t",
                "0",
            ])
            .args([
                "--storage-account-name",
                "store",
                "-u",
                "docadmin",
                "--password-stdin",
            ])
            .arg("-f")
            .arg(&file)
            .env("AZURE_BATCHAI_STORAGE_KEY", "k3y")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                if let Some(mut i) = child.stdin.take() {
                    i.write_all(b"Doc-pa55\n")?;
                }
                child.wait_with_output()
            })?;
        let err = String::from_utf8_lossy(&out.stderr);
        match refused {
            Some(field) => {
                assert_eq!(out.status.code(), Some(1), "{block}: {out:?}");
                assert!(err.contains(&format!("error: {field}")), "{block}: {err}");
            }
            None => assert!(out.status.success(), "{block}: {err}"),
        }
        assert!(
            !err.contains("k3y") && !err.contains("Doc-pa55"),
            "{block}: {err}"
        );
    }
    Ok(())
}
