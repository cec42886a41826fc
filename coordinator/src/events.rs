//! The in-memory job notification hub: after every committed job change, the
//! new job (or its deletion) is published here; `WatchJob` and
//! `StreamOutputFile --follow` wait on it instead of polling the store.

use crate::domain::Job;
use std::sync::Arc;
use tokio::sync::broadcast;

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

/// Publishes job changes to every subscriber.
#[derive(Debug)]
pub struct JobEvents {
    tx: broadcast::Sender<JobEvent>,
}

impl Default for JobEvents {
    fn default() -> Self {
        Self::new()
    }
}

impl JobEvents {
    pub fn new() -> Self {
        Self {
            tx: broadcast::channel(1024).0,
        }
    }

    /// Publishes a job as committed. Call only after the commit.
    pub fn changed(&self, job: &Job) {
        let _ = self.tx.send(JobEvent::Changed(Arc::new(job.clone())));
    }

    pub fn deleted(&self, id: &str) {
        let _ = self.tx.send(JobEvent::Deleted { id: id.to_string() });
    }

    /// Events from now on. A subscriber that falls behind gets `Lagged` and
    /// should re-read the job from the store.
    pub fn subscribe(&self) -> broadcast::Receiver<JobEvent> {
        self.tx.subscribe()
    }
}
