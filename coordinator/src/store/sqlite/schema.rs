//! The SQLite schema as embedded, versioned migrations. `PRAGMA user_version`
//! holds how many have been applied; each runs in its own transaction, so
//! opening a database again (or concurrently) applies each exactly once.

use rusqlite::Connection;

/// Migrations in order; never edit one that has shipped, append a new one.
const MIGRATIONS: &[&str] = &[
    r#"
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
"#,
    r#"
-- The scheduling priority as a column (0 high, 1 normal, 2 low), so a
-- scheduler pass reads only the first queued jobs of a cluster in order.
ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 1;
UPDATE jobs SET priority = CASE json_extract(spec, '$.scheduling_priority')
    WHEN 'high' THEN 0 WHEN 'low' THEN 2 ELSE 1 END;
CREATE INDEX jobs_queue ON jobs (cluster_workspace, cluster, execution_state, priority, seq);
-- A node's active jobs without visiting every job it ever ran (replaces
-- the index on node_id alone, which the planner would otherwise prefer).
DROP INDEX jobs_node;
CREATE INDEX jobs_node_state ON jobs (node_id, execution_state);
"#,
    r#"
-- What node preparation adds to a node, as JSON: the preparation step, the
-- SSH port and the mount drivers its agent reports.
ALTER TABLE nodes ADD COLUMN details TEXT NOT NULL DEFAULT '{}';
"#,
    r#"
-- The GPUs (UUIDs, a JSON array) a job's current or last attempt holds, and
-- how many it asks for per node (0: the whole node) as a column, so a node's
-- holdings are read without parsing the spec.
ALTER TABLE jobs ADD COLUMN gpu_uuids TEXT NOT NULL DEFAULT '[]';
ALTER TABLE jobs ADD COLUMN gpus_per_node INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET gpus_per_node = COALESCE(json_extract(spec, '$.gpus_per_node'), 0);
"#,
    r#"
-- The GPU health history of each node (faults, recoveries, operators'
-- clears), oldest first by seq; deleted with its node. A GPU's current
-- health is in the node's details.
CREATE TABLE gpu_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id TEXT NOT NULL,
    uuid TEXT NOT NULL,
    gpu_index INTEGER NOT NULL,
    time INTEGER NOT NULL,
    kind TEXT NOT NULL,
    code INTEGER NOT NULL,
    fault INTEGER NOT NULL,
    message TEXT NOT NULL,
    job_id TEXT
);
CREATE INDEX gpu_events_node ON gpu_events (node_id, seq);
"#,
    r#"
-- The summary of a job's last attempt (GPU utilization, peak memory, CPU
-- time), as JSON; NULL before an attempt ends with one.
ALTER TABLE jobs ADD COLUMN metrics TEXT;
"#,
    r#"
-- A multi-node job's ranks and pending end, as JSON (NULL: one node); the
-- row's node_id and gpu_uuids are rank 0's. job_ranks indexes the other
-- ranks of each active multi-node job by node, so a node's holdings are
-- found without parsing JSON; it is rewritten from the JSON with the row.
ALTER TABLE jobs ADD COLUMN gang TEXT;
CREATE TABLE job_ranks (
    job_id TEXT NOT NULL,
    rank INTEGER NOT NULL,
    node_id TEXT NOT NULL,
    gpu_uuids TEXT NOT NULL,
    PRIMARY KEY (job_id, rank)
) STRICT;
CREATE INDEX job_ranks_node ON job_ranks (node_id);
"#,
    r#"
-- Each cluster's record of size changes and their reasons (the autoscaler's
-- decisions, resizes, nodes joining, leaving, lost or preempted), oldest first
-- by seq; written in the transaction of the change; deleted with the cluster.
CREATE TABLE cluster_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace TEXT NOT NULL,
    cluster TEXT NOT NULL,
    time INTEGER NOT NULL,
    kind TEXT NOT NULL,
    node_id TEXT,
    from_target INTEGER,
    to_target INTEGER,
    message TEXT NOT NULL
);
CREATE INDEX cluster_events_cluster ON cluster_events (workspace, cluster, seq);
"#,
    r#"
-- A job's attempts (where, when, how each ended), as JSON, the current one
-- last; '[]' until its first assignment.
ALTER TABLE jobs ADD COLUMN attempts TEXT NOT NULL DEFAULT '[]';
"#,
    r#"
-- The providers look for leaving nodes at every pass: found by index, not
-- by reading every node's row.
CREATE INDEX nodes_state ON nodes (state);
"#,
];

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_2_backfills_priority_from_the_spec() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        for (id, p) in [("a", "high"), ("b", "low"), ("c", "normal")] {
            conn.execute(
                "INSERT INTO jobs (id, workspace, experiment, name, cluster_workspace, cluster, \
                 spec, creation_time, execution_state, execution_state_transition_time, errors, \
                 attempt_started, requeue_on_exit) \
                 VALUES (?1, 'w', 'e', ?1, 'w', 'c', ?2, 0, 'queued', 0, '[]', 0, 0)",
                rusqlite::params![id, format!(r#"{{"scheduling_priority":"{p}"}}"#)],
            )
            .unwrap();
        }
        assert_eq!(migrate(&mut conn).unwrap(), VERSION);
        let got: Vec<(String, i64)> = conn
            .prepare("SELECT id, priority FROM jobs ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(got, [("a".into(), 0), ("b".into(), 2), ("c".into(), 1)]);
    }
}
