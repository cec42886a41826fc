//! File events for job workers: one inotify instance for the whole agent
//! (the per-user instance limit is small; watches are plentiful), read by
//! one task that routes each event to the job whose directory it concerns.
//!
//! A job directory's watch reports records renamed into place
//! (`started.json`, `exit.json` are written by rename); its spool
//! directory's watch reports writes to the output files. The worker is told
//! which happened and reads the files itself, so a lost or merged event
//! costs nothing: the flags only say "look again".

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;
use tracing::warn;

/// After a batch with output events, how long the router lets events gather.
const GATHER: std::time::Duration = std::time::Duration::from_millis(1);

/// What changed for one job since its worker last looked.
#[derive(Debug, Default)]
pub struct Changes {
    records: AtomicBool,
    spool: AtomicBool,
    notify: Notify,
}

/// The flags taken by [`Changes::take`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    pub records: bool,
    pub spool: bool,
}

impl Changes {
    /// Waits until something changed and takes the flags.
    pub async fn changed(&self) -> Seen {
        loop {
            let seen = self.take();
            if seen.records || seen.spool {
                return seen;
            }
            self.notify.notified().await;
        }
    }

    pub fn take(&self) -> Seen {
        Seen {
            records: self.records.swap(false, Ordering::AcqRel),
            spool: self.spool.swap(false, Ordering::AcqRel),
        }
    }

    fn mark(&self, records: bool) {
        let flag = if records { &self.records } else { &self.spool };
        flag.store(true, Ordering::Release);
        self.notify.notify_one();
    }
}

#[derive(Clone)]
struct Route {
    changes: Arc<Changes>,
    records: bool,
}

/// The agent's inotify instance and its routing table.
#[derive(Clone)]
pub struct Watcher {
    inner: Arc<Inner>,
}

/// The inotify instance, as a descriptor owner the reactor accepts. It owns
/// its descriptor and never closes or replaces it while registered.
struct Ino(Inotify);

impl AsRawFd for Ino {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

struct Inner {
    fd: AsyncFd<Ino>,
    routes: Mutex<HashMap<WatchDescriptor, Route>>,
}

/// A job's watches; dropping it removes them.
pub struct JobWatch {
    watcher: Watcher,
    wds: Vec<WatchDescriptor>,
    pub changes: Arc<Changes>,
}

impl Drop for JobWatch {
    fn drop(&mut self) {
        let mut routes = self
            .watcher
            .inner
            .routes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for wd in self.wds.drain(..) {
            routes.remove(&wd);
            // Fails harmlessly when the directory is already deleted.
            let _ = self.watcher.inner.fd.get_ref().0.rm_watch(wd);
        }
    }
}

impl Watcher {
    /// Creates the instance and starts the task that routes its events.
    /// Must be called within the runtime.
    pub fn start() -> std::io::Result<Self> {
        let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        // Deprecated because a `T` that does not own its descriptor could
        // close it while it is registered; `Ino` owns its descriptor until the
        // `AsyncFd` drops it (as `bai_common::process` does with a pidfd).
        #[allow(deprecated)]
        let fd = AsyncFd::with_interest(Ino(ino), Interest::READABLE)?;
        let inner = Arc::new(Inner {
            fd,
            routes: Mutex::new(HashMap::new()),
        });
        tokio::spawn(route(inner.clone()));
        Ok(Self { inner })
    }

    /// Watches a job's directory (records) and spool directory (output).
    /// Blocking (it resolves paths): call it off the runtime.
    pub fn watch(&self, dir: &Path, spool: &Path) -> std::io::Result<JobWatch> {
        let changes = Arc::new(Changes::default());
        let mut w = JobWatch {
            watcher: self.clone(),
            wds: Vec::new(),
            changes: changes.clone(),
        };
        let ino = &self.inner.fd.get_ref().0;
        for (path, flags, records) in [
            // Records are only ever renamed into place.
            (dir, AddWatchFlags::IN_MOVED_TO, true),
            (spool, AddWatchFlags::IN_MODIFY, false),
        ] {
            let wd = ino.add_watch(path, flags | AddWatchFlags::IN_ONLYDIR)?;
            w.wds.push(wd);
            self.inner
                .routes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    wd,
                    Route {
                        changes: changes.clone(),
                        records,
                    },
                );
        }
        Ok(w)
    }
}

async fn route(strong: Arc<Inner>) {
    loop {
        let mut guard = match strong.fd.readable().await {
            Ok(g) => g,
            Err(e) => {
                warn!(error = %e, "inotify failed: job files are no longer watched");
                return;
            }
        };
        let mut output = false;
        match guard.get_inner().0.read_events() {
            Ok(events) => {
                let routes = strong.routes.lock().unwrap_or_else(|e| e.into_inner());
                let mut overflow = false;
                for ev in &events {
                    if ev.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                        overflow = true;
                    }
                    if let Some(r) = routes.get(&ev.wd) {
                        r.changes.mark(r.records);
                        output |= !r.records;
                    }
                }
                if overflow {
                    // Events were lost: every job and record looks again.
                    for r in routes.values() {
                        r.changes.mark(true);
                        r.changes.mark(false);
                    }
                }
            }
            Err(nix::errno::Errno::EAGAIN) => guard.clear_ready(),
            Err(e) => {
                warn!(error = %e, "cannot read inotify events");
                guard.clear_ready();
            }
        }
        drop(guard);
        if output {
            // A job writing in small pieces raises an event per write: let
            // them gather (the kernel merges repeats) rather than wake per
            // write. Costs a record event at most this long, only while
            // output flows.
            tokio::time::sleep(GATHER).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn routes_record_and_spool_events_to_their_job() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        for d in [&a, &b] {
            std::fs::create_dir_all(d.join("spool")).unwrap();
        }
        let w = Watcher::start().unwrap();
        let wa = w.watch(&a, &a.join("spool")).unwrap();
        let wb = w.watch(&b, &b.join("spool")).unwrap();
        std::fs::write(a.join("x.tmp"), b"{}").unwrap();
        std::fs::rename(a.join("x.tmp"), a.join("x.json")).unwrap();
        let seen = tokio::time::timeout(Duration::from_secs(10), wa.changes.changed())
            .await
            .unwrap();
        assert!(seen.records);
        std::fs::write(b.join("spool/out"), b"data").unwrap();
        let seen = tokio::time::timeout(Duration::from_secs(10), wb.changes.changed())
            .await
            .unwrap();
        assert!(seen.spool && !seen.records, "{seen:?}");
        assert_eq!(wa.changes.take(), Seen::default(), "b's write reached a");
        drop(wa);
        assert_eq!(w.inner.routes.lock().unwrap().len(), 2);
    }
}
