//! The supervision half of a job's worker: reading the job's records,
//! noticing a supervisor that died, terminating (SIGTERM, then SIGKILL after
//! the grace period) and enforcing the max wall clock time. Every decision is
//! written to `execution.log` and, where it must survive an agent restart, to
//! a record in the job directory.

use super::Worker;
use crate::jobs::layout::{
    ExitRecord, StartedRecord, TerminateReason, TerminateRecord, read_record, write_record,
};
use crate::model::{JobError, JobExit};
use crate::timefmt;
use nix::sys::signal::Signal;
use std::time::{Duration, Instant, SystemTime};
use tracing::{info, warn};

impl Worker {
    /// Reads the job's records and checks its supervisor.
    pub(super) fn refresh(&mut self) {
        if self.exit.is_some() {
            return;
        }
        if self.started.is_none() {
            match read_record::<StartedRecord>(&self.paths.started) {
                Ok(Some(s)) => self.on_started(s),
                Ok(None) => {}
                Err(e) => warn!(error = %e, "cannot read started.json"),
            }
        }
        if self.check_exit_record() {
            return;
        }
        let alive = !self.shim_gone
            && (self.own_shim
                || self
                    .shim_pid
                    .is_some_and(|p| self.deps.launcher.shim_alive(p, &self.paths.dir)));
        if !alive && !self.check_exit_record() {
            let (code, msg) = match self.started {
                Some(s) => (
                    "ExitStatusUnknown",
                    format!("the job's supervisor (process {}) ended without recording the job's exit status", s.shim_pid),
                ),
                None => (
                    "JobStartFailed",
                    "the job's supervisor ended before the job started (the agent may have stopped while starting it)".to_owned(),
                ),
            };
            self.lose(code, msg);
        }
    }

    pub(super) fn check_exit_record(&mut self) -> bool {
        match read_record::<ExitRecord>(&self.paths.exit) {
            Ok(Some(r)) => {
                self.on_exit(r);
                true
            }
            Ok(None) => false,
            Err(e) => {
                warn!(error = %e, "cannot read exit.json");
                false
            }
        }
    }

    pub(super) fn on_started(&mut self, s: StartedRecord) {
        info!(pid = s.pid, "job process started");
        self.started = Some(s);
        self.shim_pid.get_or_insert(s.shim_pid);
        if let Ok(mut sh) = self.shared.lock() {
            sh.start_time = Some(timefmt::from_unix_nanos(s.start_time_ns));
        }
        self.send_started();
        if self.terminate.is_some() && !self.term_signalled {
            self.signal(Signal::SIGTERM);
        }
        self.poll.active();
    }

    pub(super) fn on_exit(&mut self, r: ExitRecord) {
        let wall_clock = self
            .terminate
            .is_some_and(|t| t.reason == TerminateReason::MaxWallClockTime);
        let error = r.error.or_else(|| {
            wall_clock.then(|| {
                JobError::new(
                    "MaxWallClockTimeExceeded",
                    "the job ran longer than its maximum wall clock time and was terminated",
                )
            })
        });
        let exit = JobExit {
            exit_code: r.exit_code,
            end_time: timefmt::from_unix_nanos(r.end_time_ns),
            error,
            terminated: self
                .terminate
                .is_some_and(|t| t.reason == TerminateReason::Coordinator),
            lengths: self.paths.lengths(),
        };
        info!(
            exit_code = exit.exit_code,
            terminated = exit.terminated,
            "job exited"
        );
        self.set_exit(exit);
    }

    pub(super) fn set_exit(&mut self, exit: JobExit) {
        if let Ok(mut sh) = self.shared.lock() {
            sh.exit = Some(exit.clone());
        }
        self.exit = Some(exit);
        self.kill_at = None;
        self.poll.active();
    }

    /// The supervisor is gone without an exit record: clean up what is left
    /// of the job and record the exit ourselves.
    pub(super) fn lose(&mut self, code: &str, msg: String) {
        let marker = format!("AZ_BATCHAI_STDOUTERR_DIR={}", self.paths.spool.display());
        let killed = self.deps.launcher.kill_marked(&marker);
        warn!(killed, "{msg}");
        let mut line = msg.clone();
        if killed > 0 {
            line.push_str(&format!("; killed {killed} remaining processes of the job"));
        }
        self.exec_log(&line);
        let rec = ExitRecord {
            exit_code: -1,
            end_time_ns: timefmt::to_unix_nanos(SystemTime::now()),
            error: Some(JobError::new(code, msg)),
        };
        if let Err(e) = write_record(&self.paths.exit, &rec, 0o644) {
            warn!(error = %e, "cannot write exit.json");
        }
        self.on_exit(rec);
    }

    pub(super) fn load_terminate(&mut self) {
        if self.exit.is_some() {
            return;
        }
        if let Ok(Some(t)) = read_record::<TerminateRecord>(&self.paths.terminate) {
            // Adopted mid-termination: SIGTERM was sent; keep the SIGKILL time.
            let due =
                timefmt::from_unix_nanos(t.requested_at_ns) + Duration::from_millis(t.grace_ms);
            let left = due.duration_since(SystemTime::now()).unwrap_or_default();
            self.terminate = Some(t);
            self.term_signalled = true;
            self.kill_at = Some(Instant::now() + left);
        }
    }

    pub(super) fn begin_terminate(&mut self, reason: TerminateReason, grace: Duration) {
        if self.exit.is_some() || self.terminate.is_some() {
            return;
        }
        let rec = TerminateRecord {
            reason,
            requested_at_ns: timefmt::to_unix_nanos(SystemTime::now()),
            grace_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
        };
        if let Err(e) = write_record(&self.paths.terminate, &rec, 0o644) {
            warn!(error = %e, "cannot write terminate.json");
        }
        let why = match reason {
            TerminateReason::Coordinator => "the coordinator asked to terminate the job".to_owned(),
            TerminateReason::MaxWallClockTime => format!(
                "the job exceeded its maximum wall clock time of {}s",
                self.max_wall.unwrap_or_default().as_secs()
            ),
        };
        let how = match self.started {
            Some(s) => format!(
                "sending SIGTERM to process group {}, SIGKILL in {:.1}s",
                s.pgid,
                grace.as_secs_f64()
            ),
            None => "the job has not started yet; it will be stopped as it starts".to_owned(),
        };
        info!(?reason, "terminating the job");
        self.exec_log(&format!("terminating: {why}; {how}"));
        self.terminate = Some(rec);
        self.kill_at = Some(Instant::now() + grace);
        if self.started.is_some() {
            self.signal(Signal::SIGTERM);
        }
    }

    pub(super) fn signal(&mut self, sig: Signal) {
        let Some(s) = self.started else { return };
        // Once the supervisor has recorded the exit, the group is gone (it
        // kills leftovers first) and its id may be reused: never signal it.
        if !self.paths.exit.exists()
            && let Err(e) = self.deps.launcher.signal_group(s.pgid, sig)
        {
            warn!(error = %e, pgid = s.pgid, %sig, "cannot signal the job");
        }
        match sig {
            Signal::SIGKILL => self.kill_sent = true,
            _ => self.term_signalled = true,
        }
    }

    pub(super) fn wall_deadline(&self) -> Option<SystemTime> {
        let (max, s) = (self.max_wall?, self.started?);
        if self.terminate.is_some() || self.exit.is_some() {
            return None;
        }
        Some(timefmt::from_unix_nanos(s.start_time_ns) + max)
    }

    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let kill = self
            .kill_at
            .filter(|_| !self.kill_sent && self.exit.is_none());
        let wall = self
            .wall_deadline()
            .map(|t| Instant::now() + t.duration_since(SystemTime::now()).unwrap_or_default());
        match (kill, wall) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub(super) fn enforce_deadlines(&mut self) {
        if self.exit.is_some() {
            return;
        }
        if self.wall_deadline().is_some_and(|t| SystemTime::now() >= t) {
            self.begin_terminate(TerminateReason::MaxWallClockTime, self.deps.default_grace);
        }
        if let Some(at) = self.kill_at
            && !self.kill_sent
            && self.started.is_some()
            && Instant::now() >= at
        {
            self.exec_log("the grace period is over: sending SIGKILL to the job's process group");
            self.signal(Signal::SIGKILL);
        }
    }
}
