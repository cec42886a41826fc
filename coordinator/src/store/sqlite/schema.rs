//! The SQLite schema as embedded, versioned migrations. `PRAGMA user_version`
//! holds how many have been applied; each runs in its own transaction, so
//! opening a database again (or concurrently) applies each exactly once.

use rusqlite::Connection;

/// Migrations in order; never edit one that has shipped, append a new one.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE workspaces (
    name TEXT PRIMARY KEY,
    location TEXT NOT NULL,
    tags TEXT NOT NULL,
    creation_time INTEGER NOT NULL
) STRICT;

CREATE TABLE experiments (
    workspace TEXT NOT NULL,
    name TEXT NOT NULL,
    creation_time INTEGER NOT NULL,
    PRIMARY KEY (workspace, name)
) STRICT;

CREATE TABLE clusters (
    workspace TEXT NOT NULL,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    target_node_count INTEGER NOT NULL,
    creation_time INTEGER NOT NULL,
    allocation_state_transition_time INTEGER NOT NULL,
    errors TEXT NOT NULL,
    PRIMARY KEY (workspace, name)
) STRICT;

CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY,
    workspace TEXT NOT NULL,
    cluster TEXT NOT NULL,
    state TEXT NOT NULL,
    state_transition_time INTEGER NOT NULL,
    hostname TEXT NOT NULL,
    ip_address TEXT NOT NULL,
    agent_version TEXT NOT NULL,
    cpu_count INTEGER NOT NULL,
    memory_bytes INTEGER NOT NULL,
    connected INTEGER NOT NULL,
    last_heartbeat_time INTEGER,
    errors TEXT NOT NULL
) STRICT;
CREATE INDEX nodes_cluster ON nodes (workspace, cluster);

CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    workspace TEXT NOT NULL,
    experiment TEXT NOT NULL,
    name TEXT NOT NULL,
    cluster_workspace TEXT NOT NULL,
    cluster TEXT NOT NULL,
    spec TEXT NOT NULL,
    creation_time INTEGER NOT NULL,
    execution_state TEXT NOT NULL,
    execution_state_transition_time INTEGER NOT NULL,
    start_time INTEGER,
    end_time INTEGER,
    exit_code INTEGER,
    errors TEXT NOT NULL,
    node_id TEXT,
    attempt_started INTEGER NOT NULL,
    requeue_on_exit INTEGER NOT NULL,
    UNIQUE (workspace, experiment, name)
) STRICT;
CREATE INDEX jobs_state ON jobs (execution_state, seq);
CREATE INDEX jobs_node ON jobs (node_id);
CREATE INDEX jobs_cluster ON jobs (cluster_workspace, cluster);
"#];

/// The schema version this build writes.
pub const VERSION: usize = MIGRATIONS.len();

/// Applies the migrations the database lacks.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<usize> {
    loop {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let version = usize::try_from(version).unwrap_or(0);
        let Some(sql) = MIGRATIONS.get(version) else {
            return Ok(version);
        };
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (version + 1) as i64)?;
        tx.commit()?;
    }
}
