//! The conformance suite: what every [`Store`] must do, as test functions
//! over `dyn Store`. An implementation runs the whole suite with one line in
//! its tests, `crate::store::conformance::suite!(MyBackend::new());`, where
//! `MyBackend` implements [`Backend`]; the SQLite store does so in
//! `sqlite/tests.rs`. Tests of one implementation's internals (its schema,
//! its SQL) stay beside it.

mod lifecycle;
mod resources;
mod scheduling;

pub use lifecycle::*;
pub use resources::*;
pub use scheduling::*;

use crate::domain::paging::PageRequest;
use crate::domain::*;
use crate::store::{NodeRegistration, Store};
use std::sync::Arc;

/// A store implementation under test, over durable state of its own.
pub trait Backend {
    /// A store over this backend's state: every call opens the same state
    /// afresh (a restart), so what one store committed the next one sees.
    fn open(&self) -> Arc<dyn Store>;
}

/// One `#[tokio::test]` per conformance test, each on a fresh backend made
/// by the expression given.
macro_rules! suite {
    ($backend:expr) => {
        $crate::store::conformance::suite!(@tests $backend;
            resources::workspace_crud_and_errors,
            resources::experiment_and_cluster_crud,
            resources::job_create_rules_leave_nothing_behind,
            resources::reopening_loses_nothing,
            resources::deletes_cascade,
            resources::delete_experiment_returns_active_jobs,
            lifecycle::job_lifecycle_and_node_state,
            lifecycle::terminate_paths,
            lifecycle::lost_jobs_and_reregistration,
            lifecycle::node_removal_requeues_or_fails,
            lifecycle::queued_jobs_in_creation_order,
            lifecycle::lost_nodes_become_unusable_until_they_register,
            lifecycle::nodes_prepare_before_they_take_jobs,
            lifecycle::a_gang_holds_every_node_until_every_rank_is_gone,
            lifecycle::a_lost_gang_node_requeues_the_whole_job,
            lifecycle::every_attempt_is_kept_with_where_and_how_it_ended,
            lifecycle::the_cluster_record_tells_every_size_change_and_why,
            lifecycle::only_low_priority_nodes_are_preempted_and_their_jobs_requeued,
            scheduling::concurrent_writes_commit_together_and_a_failure_poisons_none,
            scheduling::schedulable_reads_idle_nodes_and_as_many_jobs_in_priority_order,
            scheduling::cluster_queue_reads_a_clusters_nodes_and_queued_jobs_in_scheduling_order,
            scheduling::idle_nodes_and_assigning_a_pass_at_once,
            scheduling::gpu_jobs_share_a_node_with_disjoint_gpus_kept_in_their_records,
            scheduling::a_gpu_fault_terminates_its_holder_and_outlives_a_reregistration,
            scheduling::state_counts_group_jobs_and_nodes_by_cluster_and_state,
            scheduling::the_last_heartbeat_is_stored_on_disconnect_never_moving_back
        );
    };
    (@tests $backend:expr; $($module:ident :: $test:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $test() {
                let backend = $backend;
                $crate::store::conformance::$test(&backend).await;
            }
        )*
    };
}
pub(crate) use suite;

/// A workspace `w` with experiment `e` and cluster `c` (target 1).
pub(crate) async fn seeded(b: &dyn Backend) -> Arc<dyn Store> {
    let s = b.open();
    s.create_workspace(fixtures::workspace("w")).await.unwrap();
    s.create_experiment(fixtures::experiment("w", "e"))
        .await
        .unwrap();
    s.create_cluster(fixtures::cluster("w", "c", 1))
        .await
        .unwrap();
    s
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
            ssh_port: 2222,
            file_share_driver: "rclone".into(),
            blob_driver: "rclone".into(),
            gpus: vec![],
            gpu_backend: "none".into(),
            gpu_driver_version: String::new(),
            cuda_version: String::new(),
            job_cgroups: String::new(),
            gpu_isolation: String::new(),
            container_runtime: String::new(),
        },
        ready: true,
        step: String::new(),
    }
}

fn exit(code: i32) -> JobExit {
    JobExit {
        end_time: 9_000,
        exit_code: code,
        error: None,
        terminated: false,
        metrics: None,
    }
}

fn page(n: i32, token: &str) -> PageRequest {
    PageRequest::new(n, token).unwrap()
}

/// Assigns one job (a pass of one placement).
async fn assign(s: &Arc<dyn Store>, job_id: &str, node_id: &str, now: Millis) -> Option<Job> {
    s.assign_jobs(vec![(job_id.to_string(), vec![node_id.to_string()])], now)
        .await
        .unwrap()
        .pop()
        .flatten()
}
