//! Store tests against a real SQLite file in a temporary directory.

use super::SqliteStore;
use crate::domain::paging::PageRequest;
use crate::domain::state::{CLUSTER_DELETED, JOB_LOST, JOB_TERMINATED, NODE_REMOVED};
use crate::domain::*;
use crate::store::{NodeRegistration, Store, StoreError};

struct Db {
    dir: tempfile::TempDir,
    store: SqliteStore,
}

impl Db {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("bai.db")).unwrap();
        Self { dir, store }
    }

    fn reopen(self) -> Self {
        let Db { dir, store } = self;
        drop(store);
        let store = SqliteStore::open(&dir.path().join("bai.db")).unwrap();
        Self { dir, store }
    }
}

/// A workspace `w` with experiment `e` and cluster `c` (target 1).
async fn seeded() -> Db {
    let db = Db::new();
    db.store
        .create_workspace(fixtures::workspace("w"))
        .await
        .unwrap();
    db.store
        .create_experiment(fixtures::experiment("w", "e"))
        .await
        .unwrap();
    db.store
        .create_cluster(fixtures::cluster("w", "c", 1))
        .await
        .unwrap();
    db
}

fn reg(node: &str, cluster: &str) -> NodeRegistration {
    NodeRegistration {
        node_id: node.into(),
        workspace: "w".into(),
        cluster: cluster.into(),
        info: NodeInfo {
            hostname: "h".into(),
            ip_address: "10.0.0.1".into(),
            agent_version: "0.1.0".into(),
            cpu_count: 4,
            memory_bytes: 1 << 33,
        },
    }
}

fn exit(code: i32) -> JobExit {
    JobExit {
        end_time: 9_000,
        exit_code: code,
        error: None,
        terminated: false,
    }
}

fn page(n: i32, token: &str) -> PageRequest {
    PageRequest::new(n, token).unwrap()
}

#[tokio::test]
async fn workspace_crud_and_errors() {
    let db = Db::new();
    let s = &db.store;
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

#[tokio::test]
async fn experiment_and_cluster_crud() {
    let db = seeded().await;
    let s = &db.store;
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

#[tokio::test]
async fn job_create_rules_leave_nothing_behind() {
    let db = seeded().await;
    let s = &db.store;
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
    assert_eq!(s.queued_jobs().await.unwrap().len(), 1);
}

#[tokio::test]
async fn job_lifecycle_and_node_state() {
    let db = seeded().await;
    let s = &db.store;
    let job = s
        .create_job(fixtures::job("w", "e", "j", "c"))
        .await
        .unwrap();
    let (node, held) = s.register_node(reg("n1", "c"), 10).await.unwrap();
    assert_eq!(node.state, NodeState::Idle);
    assert!(node.connected);
    assert!(held.is_empty());

    let j = s.assign_job(&job.id, "n1", 20).await.unwrap().unwrap();
    assert_eq!(j.execution_state, ExecutionState::Running);
    assert_eq!(j.node_id.as_deref(), Some("n1"));
    let n = s.get_node("n1").await.unwrap();
    assert_eq!(n.state, NodeState::Running);
    assert_eq!(n.running_job_ids, vec![job.id.clone()]);
    // Assigning again changes nothing.
    assert!(s.assign_job(&job.id, "n1", 21).await.unwrap().is_none());

    let j = s
        .record_job_started(&job.id, "n1", 30)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(j.start_time, Some(30));
    assert!(j.attempt_started);
    assert!(
        s.record_job_started(&job.id, "other", 30)
            .await
            .unwrap()
            .is_none()
    );

    let j = s.finish_job(&job.id, "n1", exit(0)).await.unwrap().unwrap();
    assert_eq!(j.execution_state, ExecutionState::Succeeded);
    assert_eq!(j.exit_code, Some(0));
    assert_eq!(j.end_time, Some(9_000));
    assert_eq!(s.get_node("n1").await.unwrap().state, NodeState::Idle);
    // A repeated exit (after a reconnect) changes nothing.
    assert!(
        s.finish_job(&job.id, "n1", exit(1))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        s.get_job(&job.key).await.unwrap().execution_state,
        ExecutionState::Succeeded
    );
}

#[tokio::test]
async fn terminate_paths() {
    let db = seeded().await;
    let s = &db.store;
    let queued = s
        .create_job(fixtures::job("w", "e", "q", "c"))
        .await
        .unwrap();
    let t = s.terminate_job(&queued.key, 50).await.unwrap();
    assert_eq!(t.execution_state, ExecutionState::Failed);
    assert_eq!(t.errors[0].code, JOB_TERMINATED);
    assert_eq!(t.exit_code, None);
    // Terminating an ended job is a no-op.
    assert_eq!(s.terminate_job(&queued.key, 60).await.unwrap(), t);

    let job = s
        .create_job(fixtures::job("w", "e", "r", "c"))
        .await
        .unwrap();
    s.register_node(reg("n1", "c"), 10).await.unwrap();
    s.assign_job(&job.id, "n1", 20).await.unwrap().unwrap();
    let t = s.terminate_job(&job.key, 70).await.unwrap();
    assert_eq!(t.execution_state, ExecutionState::Terminating);
    let mut e = exit(143);
    e.terminated = true;
    let j = s.finish_job(&job.id, "n1", e).await.unwrap().unwrap();
    assert_eq!(j.execution_state, ExecutionState::Failed);
    assert_eq!(j.exit_code, Some(143));
    assert_eq!(j.errors[0].code, JOB_TERMINATED);
}

#[tokio::test]
async fn lost_jobs_and_reregistration() {
    let db = seeded().await;
    let s = &db.store;
    let job = s
        .create_job(fixtures::job("w", "e", "j", "c"))
        .await
        .unwrap();
    s.register_node(reg("n1", "c"), 10).await.unwrap();
    s.assign_job(&job.id, "n1", 20).await.unwrap().unwrap();
    s.set_node_connected("n1", false, Some(25)).await.unwrap();
    assert!(!s.get_node("n1").await.unwrap().connected);
    let (node, held) = s.register_node(reg("n1", "c"), 30).await.unwrap();
    assert_eq!(node.state, NodeState::Running);
    assert!(node.connected);
    assert_eq!(held.len(), 1);
    let j = s
        .fail_job(&job.id, "n1", BatchAiError::new(JOB_LOST, "lost"), 40)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(j.execution_state, ExecutionState::Failed);
    assert_eq!(j.errors[0].code, JOB_LOST);
    assert_eq!(s.get_node("n1").await.unwrap().state, NodeState::Idle);
    // A node id cannot move to another cluster.
    s.create_cluster(fixtures::cluster("w", "c2", 0))
        .await
        .unwrap();
    assert!(matches!(
        s.register_node(reg("n1", "c2"), 50).await.unwrap_err(),
        StoreError::Conflict(_)
    ));
    assert!(matches!(
        s.register_node(reg("n9", "nope"), 50).await.unwrap_err(),
        StoreError::NotFound {
            kind: "cluster",
            ..
        }
    ));
    s.disconnect_all_nodes().await.unwrap();
    assert!(!s.get_node("n1").await.unwrap().connected);
}

#[tokio::test]
async fn node_removal_requeues_or_fails() {
    let db = seeded().await;
    let s = &db.store;
    let a = s
        .create_job(fixtures::job("w", "e", "a", "c"))
        .await
        .unwrap();
    s.register_node(reg("n1", "c"), 10).await.unwrap();
    s.assign_job(&a.id, "n1", 20).await.unwrap().unwrap();
    let removal = s
        .begin_node_removal("n1", DeallocationOption::Requeue, 30)
        .await
        .unwrap();
    assert_eq!(removal.node.state, NodeState::Leaving);
    assert_eq!(removal.terminating.len(), 1);
    assert!(removal.terminating[0].requeue_on_exit);
    let mut e = exit(143);
    e.terminated = true;
    let j = s.finish_job(&a.id, "n1", e).await.unwrap().unwrap();
    assert_eq!(j.execution_state, ExecutionState::Queued);
    assert_eq!(j.node_id, None);
    assert_eq!(j.exit_code, None);
    assert_eq!(s.get_node("n1").await.unwrap().state, NodeState::Leaving);
    s.remove_node("n1", 40).await.unwrap();
    assert!(s.get_node("n1").await.is_err());

    // Terminate option, node removed before the job exits.
    s.register_node(reg("n2", "c"), 50).await.unwrap();
    s.assign_job(&a.id, "n2", 60).await.unwrap().unwrap();
    s.begin_node_removal("n2", DeallocationOption::Terminate, 70)
        .await
        .unwrap();
    let changed = s.remove_node("n2", 80).await.unwrap();
    assert_eq!(changed[0].execution_state, ExecutionState::Failed);
    assert_eq!(changed[0].errors[0].code, NODE_REMOVED);
}

#[tokio::test]
async fn deletes_cascade() {
    let db = seeded().await;
    let s = &db.store;
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
    s.assign_job(&running.id, "n1", 20).await.unwrap().unwrap();

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

#[tokio::test]
async fn delete_experiment_returns_active_jobs() {
    let db = seeded().await;
    let s = &db.store;
    let job = s
        .create_job(fixtures::job("w", "e", "j", "c"))
        .await
        .unwrap();
    s.register_node(reg("n1", "c"), 10).await.unwrap();
    s.assign_job(&job.id, "n1", 20).await.unwrap().unwrap();
    let removed = s.delete_experiment("w", "e").await.unwrap();
    assert_eq!(removed.stop, vec![(job.id.clone(), "n1".to_string())]);
    assert!(s.get_job_by_id(&job.id).await.is_err());
    // The node stays running until its agent reports the process gone.
    assert_eq!(s.get_node("n1").await.unwrap().state, NodeState::Running);
    s.refresh_node_state("n1", 30).await.unwrap();
    assert_eq!(s.get_node("n1").await.unwrap().state, NodeState::Idle);
}

#[tokio::test]
async fn reopening_loses_nothing_and_migrations_are_idempotent() {
    let db = seeded().await;
    let job = db
        .store
        .create_job(fixtures::job("w", "e", "j", "c"))
        .await
        .unwrap();
    db.store.register_node(reg("n1", "c"), 10).await.unwrap();
    db.store
        .assign_job(&job.id, "n1", 20)
        .await
        .unwrap()
        .unwrap();
    let before = db.store.get_job(&job.key).await.unwrap();
    let db = db.reopen().reopen();
    let after = db.store.get_job(&job.key).await.unwrap();
    assert_eq!(before, after);
    assert_eq!(after.spec.secrets[0].value.expose(), "s3cret");
    assert_eq!(
        db.store.get_node("n1").await.unwrap().state,
        NodeState::Running
    );
    let conn = rusqlite::Connection::open(db.dir.path().join("bai.db")).unwrap();
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v as usize, super::schema::VERSION);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn queued_jobs_in_creation_order() {
    let db = seeded().await;
    let s = &db.store;
    for n in ["z", "a", "m"] {
        s.create_job(fixtures::job("w", "e", n, "c")).await.unwrap();
    }
    let names: Vec<_> = s
        .queued_jobs()
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.key.name)
        .collect();
    assert_eq!(names, ["z", "a", "m"]);
}

#[tokio::test]
async fn lost_nodes_become_unusable_until_they_register() {
    let db = seeded().await;
    let s = &db.store;
    let job = s
        .create_job(fixtures::job("w", "e", "j", "c"))
        .await
        .unwrap();
    s.register_node(reg("n1", "c"), 10).await.unwrap();
    s.assign_job(&job.id, "n1", 20).await.unwrap().unwrap();
    let changed = s
        .mark_node_lost("n1", BatchAiError::new("NodeLost", "gone for 10m"), 30)
        .await
        .unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].execution_state, ExecutionState::Failed);
    assert_eq!(changed[0].errors[0].code, JOB_LOST);
    let n = s.get_node("n1").await.unwrap();
    assert_eq!(n.state, NodeState::Unusable);
    assert_eq!(n.errors[0].code, "NodeLost");
    let (n, _) = s.register_node(reg("n1", "c"), 40).await.unwrap();
    assert_eq!(n.state, NodeState::Idle);
    assert!(n.errors.is_empty());
}

#[path = "group_tests.rs"]
mod group;
