//! autoScale clusters with local agents: a queued job grows an empty cluster
//! to its node count (within the maximum), the job runs, and the cluster goes
//! back to its minimum once its nodes have been idle past the grace period.

use anyhow::Result;
use bai_proto::v1 as pb;
use bai_tests::{Clients, Coordinator, CoordinatorOpts, exec_state};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(120);

async fn cluster(c: &mut Clients) -> Result<pb::Cluster> {
    Ok(c.clusters
        .get_cluster(pb::GetClusterRequest {
            workspace: "ws".into(),
            name: "c1".into(),
        })
        .await?
        .into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn autoscale_grows_an_empty_cluster_for_its_queue_and_shrinks_it_back() -> Result<()> {
    let coord = Coordinator::start_with(CoordinatorOpts {
        extra_args: [
            "--autoscale-interval-secs",
            "1",
            "--autoscale-idle-grace-secs",
            "2",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    })?;
    let mut c = coord.clients().await?;
    c.workspace_and_experiment("ws", "ex").await?;
    let mut spec = bai_tests::cluster("ws", "c1", 0);
    spec.scale_settings = Some(pb::ScaleSettings {
        manual: None,
        auto_scale: Some(pb::AutoScaleSettings {
            minimum_node_count: 0,
            maximum_node_count: 3,
            initial_node_count: 0,
        }),
    });
    c.clusters
        .create_cluster(pb::CreateClusterRequest {
            cluster: Some(spec),
        })
        .await?;
    assert_eq!(cluster(&mut c).await?.current_node_count, 0);

    // A 3-node job on the empty cluster: three nodes come, it runs on them.
    let gate = coord.state_dir().join("go");
    let job = pb::Job {
        node_count: 3,
        ..bai_tests::custom_job(
            "ws",
            "ex",
            "wide",
            "c1",
            &format!(
                "until [ -e {} ]; do sleep 0.1; done; echo ran",
                gate.display()
            ),
        )
    };
    c.jobs
        .create_job(pb::CreateJobRequest { job: Some(job) })
        .await?;
    bai_tests::eventually(WAIT, "three running nodes", || {
        let mut c = c.clone();
        async move {
            let cl = cluster(&mut c).await?;
            let counts = cl.node_state_counts.unwrap_or_default();
            Ok(cl.current_node_count == 3
                && counts.running_node_count == 3
                && cl.allocation_state == pb::AllocationState::Steady as i32)
        }
    })
    .await?;
    std::fs::write(&gate, b"")?;
    let done = c.wait_job("ws", "ex", "wide", WAIT).await?;
    assert_eq!(exec_state(&done), pb::ExecutionState::Succeeded, "{done:?}");
    assert_eq!(done.node_ids.len(), 3);

    // Idle past the grace: back to the minimum, zero.
    bai_tests::eventually(WAIT, "the cluster back to zero, steady", || {
        let mut c = c.clone();
        async move {
            let cl = cluster(&mut c).await?;
            Ok(cl.current_node_count == 0
                && cl.allocation_state == pb::AllocationState::Steady as i32)
        }
    })
    .await?;
    // Each decision is in the cluster's events with its reason.
    let events = c.cluster_events("ws", "c1").await?;
    let decisions: Vec<(String, Option<(i32, i32)>)> = events
        .iter()
        .filter(|e| e.kind == "autoscale")
        .map(|e| (e.message.clone(), e.target.map(|t| (t.from, t.to))))
        .collect();
    assert_eq!(
        decisions,
        [
            (
                "1 job queued need 3 nodes, 0 busy: 0 → 3".to_string(),
                Some((0, 3))
            ),
            (
                "3 nodes idle past the 2 s grace: 3 → 0".to_string(),
                Some((3, 0))
            )
        ],
        "{events:?}"
    );
    let log = coord.log();
    assert!(
        log.contains("1 job queued need 3 nodes, 0 busy: 0 → 3"),
        "the reason is logged: {log}"
    );
    assert!(
        log.contains("3 nodes idle past the 2 s grace: 3 → 0"),
        "{log}"
    );
    Ok(())
}
