//! The SQLite store: the conformance suite over a real SQLite file in a
//! temporary directory, and what is SQLite's own (schema, the free-node SQL).

use super::{SqliteStore, nodes, schema};
use crate::domain::{ExecutionState, NodeState, fixtures, transition};
use crate::store::conformance::{self, Backend};
use crate::store::{NodeRegistration, Store};
use std::path::PathBuf;
use std::sync::Arc;

/// A fresh database file.
pub struct Sqlite {
    dir: tempfile::TempDir,
}

impl Sqlite {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("bai.db")
    }
}

impl Backend for Sqlite {
    fn open(&self) -> Arc<dyn Store> {
        Arc::new(SqliteStore::open(&self.path()).unwrap())
    }
}

mod suite {
    crate::store::conformance::suite!(super::Sqlite::new());
}

#[tokio::test]
async fn migrations_are_idempotent_and_the_journal_is_wal() {
    let b = Sqlite::new();
    conformance::reopening_loses_nothing(&b).await;
    drop(b.open());
    let conn = rusqlite::Connection::open(b.path()).unwrap();
    let v: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v as usize, schema::VERSION);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn the_active_states_sql_is_the_domain_rule() {
    for s in ExecutionState::ALL {
        let listed = super::rows::active_states!().contains(&format!("'{}'", s.as_str()));
        assert_eq!(listed, s.is_active(), "{s:?}");
    }
}

/// The pre-filtering SQL of the nodes a pass reads selects exactly the nodes
/// the domain rule says take jobs (now or as their jobs end), over every
/// node state and every state of a job that names the node.
#[tokio::test]
async fn the_free_node_sql_agrees_with_the_domain_rule() {
    let b = Sqlite::new();
    let s = conformance::seeded(&b).await;
    let mut combos = Vec::new();
    for node_state in NodeState::ALL {
        for job_state in std::iter::once(None).chain(ExecutionState::ALL.map(Some)) {
            let id = format!("n{}", combos.len());
            s.register_node(reg(&id), 10).await.unwrap();
            if let Some(js) = job_state {
                let job = s
                    .create_job(fixtures::job("w", "e", &format!("j{id}"), "c"))
                    .await
                    .unwrap();
                combos.push((id.clone(), node_state, Some((job.id, js))));
            } else {
                combos.push((id.clone(), node_state, None));
            }
        }
    }
    drop(s);
    // Arbitrary combinations, written past the state machine on purpose.
    {
        let conn = rusqlite::Connection::open(b.path()).unwrap();
        for (id, ns, job) in &combos {
            conn.execute(
                "UPDATE nodes SET state = ?2 WHERE node_id = ?1",
                [id.as_str(), ns.as_str()],
            )
            .unwrap();
            if let Some((job_id, js)) = job {
                conn.execute(
                    "UPDATE jobs SET execution_state = ?2, node_id = ?3 WHERE id = ?1",
                    [job_id.as_str(), js.as_str(), id.as_str()],
                )
                .unwrap();
            }
        }
    }
    let store = SqliteStore::open(&b.path()).unwrap();
    let selected: Vec<String> = store
        .read(nodes::placeable)
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.node_id)
        .collect();
    let mut expected = Vec::new();
    for (id, ns, job) in &combos {
        let node = store.get_node(id).await.unwrap();
        assert_eq!(node.state, *ns);
        let occupied = job.as_ref().is_some_and(|(_, js)| js.is_active());
        assert_eq!(node.running_job_ids.is_empty(), !occupied, "{id}");
        if transition::takes_jobs(&node) {
            expected.push(id.clone());
        }
    }
    expected.sort();
    assert_eq!(
        expected.len(),
        6,
        "idle with no job, or with a queued or ended one; running with an active one"
    );
    assert_eq!(selected, expected);
}

fn reg(node: &str) -> NodeRegistration {
    NodeRegistration {
        node_id: node.into(),
        workspace: "w".into(),
        cluster: "c".into(),
        info: Default::default(),
        ready: true,
        step: String::new(),
    }
}
