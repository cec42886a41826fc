//! The in-memory job notification hub: after every committed job change, the
//! new job (or its deletion) is published here; `WatchJob` and
//! `StreamOutputFile --follow` wait on it instead of polling the store.
//!
//! Subscriptions are per job (keyed by the job's workspace/experiment/name, so
//! a watcher can subscribe before it has read the job and learnt its id): a
//! change wakes only that job's subscribers, and a job's channel is dropped
//! when its last subscriber goes. Subscribers still check the job id (a job
//! deleted and created again under the same name has a new id).

use crate::domain::{Job, JobKey};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::broadcast;

/// Events buffered per job before a slow subscriber sees `Lagged`.
const PER_JOB_CAPACITY: usize = 16;

/// A committed change of one job.
#[derive(Debug, Clone)]
pub enum JobEvent {
    Changed(Arc<Job>),
    Deleted { id: String },
}

impl JobEvent {
    pub fn job_id(&self) -> &str {
        match self {
            Self::Changed(j) => &j.id,
            Self::Deleted { id } => id,
        }
    }
}

type Channels = HashMap<String, broadcast::Sender<JobEvent>>;

/// Publishes job changes to the subscribers of each job.
#[derive(Debug, Default)]
pub struct JobEvents {
    channels: Arc<Mutex<Channels>>,
}

fn lock(m: &Mutex<Channels>) -> MutexGuard<'_, Channels> {
    // Entries are inserted and removed whole: a poisoned map is consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl JobEvents {
    pub fn new() -> Self {
        Self::default()
    }

    fn publish(&self, key: &JobKey, ev: impl FnOnce() -> JobEvent) {
        let map = lock(&self.channels);
        if let Some(tx) = map.get(&key.to_string()) {
            let _ = tx.send(ev());
        }
    }

    /// Publishes a job as committed. Call only after the commit.
    pub fn changed(&self, job: &Job) {
        self.publish(&job.key, || JobEvent::Changed(Arc::new(job.clone())));
    }

    /// Publishes a job's deletion. Call only after the commit.
    pub fn deleted(&self, job: &Job) {
        self.publish(&job.key, || JobEvent::Deleted { id: job.id.clone() });
    }

    /// Events of the job named `key` from now on. A subscriber that falls
    /// behind gets `Lagged` and should re-read the job from the store.
    pub fn subscribe(&self, key: &JobKey) -> Subscription {
        let name = key.to_string();
        let rx = lock(&self.channels)
            .entry(name.clone())
            .or_insert_with(|| broadcast::channel(PER_JOB_CAPACITY).0)
            .subscribe();
        Subscription {
            rx: Some(rx),
            key: name,
            channels: self.channels.clone(),
        }
    }

    /// How many jobs have subscribers (for tests).
    pub fn watched_jobs(&self) -> usize {
        lock(&self.channels).len()
    }
}

/// One subscriber of one job's events; unsubscribes when dropped.
#[derive(Debug)]
pub struct Subscription {
    rx: Option<broadcast::Receiver<JobEvent>>,
    key: String,
    channels: Arc<Mutex<Channels>>,
}

impl Subscription {
    pub async fn recv(&mut self) -> Result<JobEvent, broadcast::error::RecvError> {
        match &mut self.rx {
            Some(rx) => rx.recv().await,
            None => Err(broadcast::error::RecvError::Closed),
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        drop(self.rx.take());
        let mut map = lock(&self.channels);
        if map
            .get(&self.key)
            .is_some_and(|tx| tx.receiver_count() == 0)
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures;

    #[tokio::test]
    async fn only_the_jobs_subscribers_hear_and_channels_go_away() {
        let ev = JobEvents::new();
        let a = fixtures::job("w", "e", "a", "c");
        let b = fixtures::job("w", "e", "b", "c");
        let mut sa = ev.subscribe(&a.key);
        let mut sa2 = ev.subscribe(&a.key);
        let sb = ev.subscribe(&b.key);
        assert_eq!(ev.watched_jobs(), 2);
        ev.changed(&b);
        ev.changed(&a);
        ev.deleted(&a);
        assert!(matches!(sa.recv().await.unwrap(), JobEvent::Changed(j) if j.key == a.key));
        assert!(matches!(sa.recv().await.unwrap(), JobEvent::Deleted { ref id } if *id == a.id));
        assert_eq!(sa2.recv().await.unwrap().job_id(), a.id);
        drop(sb);
        assert_eq!(ev.watched_jobs(), 1);
        drop(sa);
        assert_eq!(ev.watched_jobs(), 1, "one subscriber of a is left");
        drop(sa2);
        assert_eq!(ev.watched_jobs(), 0);
        ev.changed(&a); // nobody listens: nothing happens
    }
}
