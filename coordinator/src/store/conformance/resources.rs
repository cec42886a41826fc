//! Workspaces, experiments, clusters, jobs' creation, deletes and restarts.

use super::*;
use crate::domain::state::CLUSTER_DELETED;
use crate::store::StoreError;

pub async fn workspace_crud_and_errors(b: &dyn Backend) {
    let s = b.open();
    let ws = s.create_workspace(fixtures::workspace("w")).await.unwrap();
    assert_eq!(s.get_workspace("w").await.unwrap(), ws);
    let dup = s
        .create_workspace(fixtures::workspace("w"))
        .await
        .unwrap_err();
    assert!(matches!(
        dup,
        StoreError::AlreadyExists {
            kind: "workspace",
            ..
        }
    ));
    for n in ["b", "a", "c"] {
        s.create_workspace(fixtures::workspace(n)).await.unwrap();
    }
    let p1 = s.list_workspaces(&page(2, "")).await.unwrap();
    let names: Vec<_> = p1.items.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    let token = p1.next_page_token.unwrap();
    let p2 = s.list_workspaces(&page(2, &token)).await.unwrap();
    let names: Vec<_> = p2.items.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(names, ["c", "w"]);
    assert_eq!(p2.next_page_token, None);
    s.delete_workspace("a", 5).await.unwrap();
    assert!(matches!(
        s.get_workspace("a").await.unwrap_err(),
        StoreError::NotFound {
            kind: "workspace",
            ..
        }
    ));
    assert!(matches!(
        s.delete_workspace("a", 5).await.unwrap_err(),
        StoreError::NotFound { .. }
    ));
}

pub async fn experiment_and_cluster_crud(b: &dyn Backend) {
    let s = seeded(b).await;
    assert_eq!(s.get_experiment("w", "e").await.unwrap().name, "e");
    assert!(matches!(
        s.create_experiment(fixtures::experiment("w", "e"))
            .await
            .unwrap_err(),
        StoreError::AlreadyExists {
            kind: "experiment",
            ..
        }
    ));
    assert!(matches!(
        s.create_experiment(fixtures::experiment("nope", "e"))
            .await
            .unwrap_err(),
        StoreError::NotFound {
            kind: "workspace",
            ..
        }
    ));
    assert_eq!(
        s.list_experiments("w", &page(0, ""))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    s.delete_experiment("w", "e").await.unwrap();
    assert!(s.get_experiment("w", "e").await.is_err());

    let c = s.get_cluster("w", "c").await.unwrap();
    assert_eq!(c, fixtures::cluster("w", "c", 1));
    assert_eq!(
        c.spec.user_account.unwrap().admin_user_password.expose(),
        "p4ss",
        "secrets are stored for the nodes"
    );
    assert!(matches!(
        s.create_cluster(fixtures::cluster("w", "c", 1))
            .await
            .unwrap_err(),
        StoreError::AlreadyExists {
            kind: "cluster",
            ..
        }
    ));
    let scale = ScaleSettings::Manual {
        target_node_count: 3,
        deallocation: DeallocationOption::Terminate,
    };
    let c = s.update_cluster_scale("w", "c", scale, 77).await.unwrap();
    assert_eq!(c.target_node_count, 3);
    assert_eq!(c.allocation_state_transition_time, 77);
    assert_eq!(s.get_cluster("w", "c").await.unwrap().spec.scale, scale);
    // The autoscaler's target: only for an autoScale cluster, within its
    // bounds, its settings untouched.
    assert_eq!(
        s.set_autoscale_target("w", "c", 2, "why", 78)
            .await
            .unwrap(),
        None
    );
    assert_eq!(s.get_cluster("w", "c").await.unwrap().target_node_count, 3);
    let auto = ScaleSettings::AutoScale {
        minimum_node_count: 1,
        maximum_node_count: 4,
        initial_node_count: 1,
    };
    s.update_cluster_scale("w", "c", auto, 79).await.unwrap();
    let c = s
        .set_autoscale_target("w", "c", 9, "why", 80)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (c.target_node_count, c.allocation_state_transition_time),
        (4, 80)
    );
    let c = s.get_cluster("w", "c").await.unwrap();
    assert_eq!((c.target_node_count, c.spec.scale), (4, auto));
    let c = s
        .set_autoscale_target("w", "c", 0, "why", 81)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.target_node_count, 1, "never below the minimum");
    assert_eq!(
        s.set_autoscale_target("w", "nope", 1, "why", 82)
            .await
            .unwrap(),
        None
    );
    s.update_cluster_scale("w", "c", scale, 83).await.unwrap();
    assert_eq!(
        s.list_clusters("w", &page(0, ""))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(s.list_all_clusters().await.unwrap().len(), 1);
    s.delete_cluster("w", "c", 5).await.unwrap();
    assert!(matches!(
        s.get_cluster("w", "c").await.unwrap_err(),
        StoreError::NotFound {
            kind: "cluster",
            ..
        }
    ));
}

pub async fn job_create_rules_leave_nothing_behind(b: &dyn Backend) {
    let s = seeded(b).await;
    let job = s
        .create_job(fixtures::job("w", "e", "j", "c"))
        .await
        .unwrap();
    assert_eq!(s.get_job(&job.key).await.unwrap(), job);
    assert_eq!(s.get_job_by_id(&job.id).await.unwrap(), job);
    assert!(matches!(
        s.create_job(fixtures::job("w", "e", "j", "c"))
            .await
            .unwrap_err(),
        StoreError::AlreadyExists { kind: "job", .. }
    ));
    let err = s
        .create_job(fixtures::job("w", "e", "k", "nocluster"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::NotFound { kind: "cluster", ref name } if name == "w/nocluster")
    );
    assert!(matches!(
        s.create_job(fixtures::job("w", "noexp", "k", "c"))
            .await
            .unwrap_err(),
        StoreError::NotFound {
            kind: "experiment",
            ..
        }
    ));
    let all = s.list_jobs("w", "e", &page(0, "")).await.unwrap();
    assert_eq!(all.items.len(), 1, "failed creates left nothing");
}

pub async fn reopening_loses_nothing(b: &dyn Backend) {
    let s = seeded(b).await;
    let job = s
        .create_job(fixtures::job("w", "e", "j", "c"))
        .await
        .unwrap();
    s.register_node(reg("n1", "c"), 10).await.unwrap();
    assign(&s, &job.id, "n1", 20).await.unwrap();
    let before = s.get_job(&job.key).await.unwrap();
    drop(s);
    drop(b.open());
    let s = b.open();
    let after = s.get_job(&job.key).await.unwrap();
    assert_eq!(before, after);
    assert_eq!(after.spec.secrets[0].value.expose(), "s3cret");
    assert_eq!(s.get_node("n1").await.unwrap().state, NodeState::Running);
}

pub async fn deletes_cascade(b: &dyn Backend) {
    let s = seeded(b).await;
    s.create_workspace(fixtures::workspace("other"))
        .await
        .unwrap();
    s.create_experiment(fixtures::experiment("other", "e"))
        .await
        .unwrap();
    let running = s
        .create_job(fixtures::job("w", "e", "r", "c"))
        .await
        .unwrap();
    let queued = s
        .create_job(fixtures::job("w", "e", "q", "c"))
        .await
        .unwrap();
    // A job of another workspace on w's cluster.
    let mut foreign = fixtures::job("other", "e", "f", "c");
    foreign.spec.cluster.workspace = "w".into();
    let foreign = s.create_job(foreign).await.unwrap();
    s.register_node(reg("n1", "c"), 10).await.unwrap();
    assign(&s, &running.id, "n1", 20).await.unwrap();

    let removed = s.delete_workspace("w", 30).await.unwrap();
    let mut deleted: Vec<_> = removed
        .deleted_jobs
        .iter()
        .map(|j| j.key.name.clone())
        .collect();
    deleted.sort();
    assert_eq!(deleted, ["q", "r"]);
    assert_eq!(removed.stop, vec![(running.id.clone(), "n1".to_string())]);
    assert_eq!(removed.nodes.len(), 1);
    assert_eq!(removed.changed_jobs.len(), 1);
    assert_eq!(removed.changed_jobs[0].id, foreign.id);
    let f = s.get_job_by_id(&foreign.id).await.unwrap();
    assert_eq!(f.execution_state, ExecutionState::Failed);
    assert_eq!(f.errors[0].code, CLUSTER_DELETED);
    assert!(s.get_job_by_id(&queued.id).await.is_err());
    assert!(s.get_node("n1").await.is_err());
    assert!(s.list_all_clusters().await.unwrap().is_empty());
    assert!(s.get_experiment("w", "e").await.is_err());
}

pub async fn delete_experiment_returns_active_jobs(b: &dyn Backend) {
    let s = seeded(b).await;
    let job = s
        .create_job(fixtures::job("w", "e", "j", "c"))
        .await
        .unwrap();
    s.register_node(reg("n1", "c"), 10).await.unwrap();
    assign(&s, &job.id, "n1", 20).await.unwrap();
    let removed = s.delete_experiment("w", "e").await.unwrap();
    assert_eq!(removed.stop, vec![(job.id.clone(), "n1".to_string())]);
    assert!(s.get_job_by_id(&job.id).await.is_err());
    // The node stays running until its agent reports the process gone.
    assert_eq!(s.get_node("n1").await.unwrap().state, NodeState::Running);
    s.refresh_node_state("n1", 30).await.unwrap();
    assert_eq!(s.get_node("n1").await.unwrap().state, NodeState::Idle);
}
