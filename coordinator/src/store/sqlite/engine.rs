//! Where SQLite work runs: one writer thread with group commit, and a few
//! reader threads on their own connections.
//!
//! **Group commit.** Every write (a trait method that may change state) is a
//! request on the writer's channel. The writer takes every request pending,
//! runs them in ONE `BEGIN IMMEDIATE` transaction, each inside its own
//! `SAVEPOINT` (a request that fails rolls back only itself, so a rejected
//! request changes nothing and does not poison the others), commits once
//! (one fsync with `synchronous=FULL`), and only then answers each caller. A
//! caller therefore still gets its answer only after its change is durable;
//! if the commit fails, every request of the group gets the error and none of
//! them changed anything. While one group commits, the next one gathers.
//!
//! **Reads** run on separate connections (WAL lets readers see the last
//! commit without blocking the writer), each in a deferred transaction so a
//! read sees one snapshot. A read issued after a write was answered sees it.

use crate::store::{Result, StoreError};
use rusqlite::{Connection, Transaction, TransactionBehavior};
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// Most requests in one group.
const MAX_GROUP: usize = 512;
/// Reader threads (and connections).
const READERS: usize = 2;

/// A write request as the writer sees it.
trait WriteOp: Send {
    /// Runs the request inside the group's transaction. False if the
    /// transaction itself is no longer usable (the group must be abandoned).
    fn run(&mut self, tx: &Transaction) -> bool;
    /// Answers the caller once the group's fate is known.
    fn answer(self: Box<Self>, committed: &std::result::Result<(), String>);
}

struct Op<T, F> {
    f: Option<F>,
    out: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> WriteOp for Op<T, F>
where
    T: Send,
    F: FnOnce(&Transaction) -> Result<T> + Send,
{
    fn run(&mut self, tx: &Transaction) -> bool {
        let Some(f) = self.f.take() else {
            return true;
        };
        if let Err(e) = exec(tx, "SAVEPOINT op") {
            self.out = Some(Err(e.into()));
            return false;
        }
        let r = f(tx);
        // An error that made SQLite roll back the whole transaction leaves
        // no savepoint to end: the group cannot go on.
        let usable = !tx.is_autocommit()
            && (r.is_ok() || exec(tx, "ROLLBACK TO op").is_ok())
            && exec(tx, "RELEASE op").is_ok();
        self.out = Some(if usable {
            r
        } else {
            Err(StoreError::Backend(
                "store: the transaction was aborted".into(),
            ))
        });
        usable
    }

    fn answer(self: Box<Self>, committed: &std::result::Result<(), String>) {
        let out = match (committed, self.out) {
            (_, None) => Err(StoreError::Backend("store: request not run".into())),
            (Ok(()), Some(out)) => out,
            // Its own failure says more; either way nothing of it is stored.
            (Err(_), Some(Err(e))) => Err(e),
            (Err(msg), Some(Ok(_))) => {
                Err(StoreError::Backend(format!("store: commit failed: {msg}")))
            }
        };
        let _ = self.reply.send(out);
    }
}

fn exec(tx: &Transaction, sql: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(sql)?.execute([])?;
    Ok(())
}

type ReadOp = Box<dyn FnOnce(&mut Connection) + Send>;

/// The handles callers use; threads end when the last clone is dropped.
pub struct Engine {
    writer: mpsc::Sender<Box<dyn WriteOp>>,
    reader: mpsc::Sender<ReadOp>,
}

/// Opens a connection with the settings every connection uses.
pub fn connect(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // A page cache of up to 16 MiB per connection (the default 2 MiB makes
    // the writer re-read job pages from the file once the queue is long).
    conn.pragma_update(None, "cache_size", -16384)?;
    Ok(conn)
}

impl Engine {
    /// Starts the writer on `conn` (already migrated) and the readers on new
    /// connections to `path`.
    pub fn start(path: &Path, conn: Connection) -> Result<Self> {
        let (writer, wrx) = mpsc::channel::<Box<dyn WriteOp>>();
        let (reader, rrx) = mpsc::channel::<ReadOp>();
        let rrx = Arc::new(Mutex::new(rrx));
        for i in 0..READERS {
            let mut rc = connect(path)?;
            rc.pragma_update(None, "query_only", true)?;
            let rx = rrx.clone();
            std::thread::Builder::new()
                .name(format!("store-read-{i}"))
                .spawn(move || read_loop(&mut rc, &rx))
                .map_err(|e| StoreError::Backend(format!("store: cannot start a reader: {e}")))?;
        }
        std::thread::Builder::new()
            .name("store-write".into())
            .spawn(move || write_loop(conn, &wrx))
            .map_err(|e| StoreError::Backend(format!("store: cannot start the writer: {e}")))?;
        Ok(Self { writer, reader })
    }

    /// Runs `f` in the next group; answers after that group committed.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction) -> Result<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let op = Op {
            f: Some(f),
            out: None,
            reply,
        };
        self.writer
            .send(Box::new(op))
            .map_err(|_| StoreError::Backend("store: the writer stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Backend("store: the writer stopped".into()))?
    }

    /// Runs `f` in a read-only snapshot on a reader connection.
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction) -> Result<T> + Send + 'static,
    {
        let (reply, rx) = oneshot::channel();
        let op: ReadOp = Box::new(move |conn: &mut Connection| {
            let out = conn
                .transaction_with_behavior(TransactionBehavior::Deferred)
                .map_err(StoreError::from)
                .and_then(|tx| {
                    let out = f(&tx);
                    tx.commit()?;
                    out
                });
            let _ = reply.send(out);
        });
        self.reader
            .send(op)
            .map_err(|_| StoreError::Backend("store: the readers stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Backend("store: the readers stopped".into()))?
    }
}

fn write_loop(mut conn: Connection, rx: &mpsc::Receiver<Box<dyn WriteOp>>) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        let committed = run_group(&mut conn, &mut group);
        if let Err(e) = &committed {
            tracing::error!(error = %e, requests = group.len(), "store commit failed");
        }
        for op in group {
            op.answer(&committed);
        }
    }
}

fn run_group(
    conn: &mut Connection,
    group: &mut [Box<dyn WriteOp>],
) -> std::result::Result<(), String> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(|e| e.to_string())?;
    for op in group.iter_mut() {
        if !op.run(&tx) {
            // Dropping `tx` rolls back whatever is left of it.
            return Err("a request aborted the transaction".into());
        }
    }
    tx.commit().map_err(|e| e.to_string())
}

fn read_loop(conn: &mut Connection, rx: &Mutex<mpsc::Receiver<ReadOp>>) {
    loop {
        let op = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        match op {
            Ok(op) => op(conn),
            Err(_) => return,
        }
    }
}
