//! The phases of a held job, as a pure type: [`Phase::on`] takes the phase,
//! an [`Event`] and the time, and returns the next phase with the
//! [`Action`]s to carry out. No IO happens here; the worker does the actions
//! and feeds back what it observed.
//!
//! ```text
//! Preparing ──Prepared──▶ Starting ──Started──▶ Running
//!     │                      │                     │
//!     │                  Terminate             Terminate ──▶ Terminating{signalled} ──GraceOver──▶ Killing
//!     │                      ▼                                        ▲
//!     │          Terminating{not signalled} ──Started (SIGTERM)───────┘
//!     │
//!  every phase before Collecting ──Exited (unmount)──▶ Collecting ──Reported──▶ Reported ──Release (delete)──▶ Released
//!                                                         ▲                      │
//!                                                         └────── Unreported ────┘
//! ```
//!
//! The job's own mounts are made in `Preparing` (with its directory) and
//! removed as its exit becomes known: the [`Action::Unmount`] of the step into
//! `Collecting`. Later phases (job preparation, per-rank launch) are new
//! variants with their own events, not flags on the worker.

use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Creating the job directory and mounts and starting the supervisor (new jobs), or
    /// reading what a previous agent left (adopted jobs).
    Preparing,
    /// The supervisor runs; the job's process is not recorded yet.
    Starting,
    /// The job's process runs.
    Running,
    /// Termination decided; SIGKILL is due at `kill_at`. `signalled` is
    /// whether SIGTERM went out (it waits for the start when it did not).
    Terminating { kill_at: Instant, signalled: bool },
    /// SIGKILL went out; waiting for the exit.
    Killing,
    /// The exit is known; the output up to the final lengths is being shipped.
    Collecting,
    /// `JobExited` went out; waiting for `ReleaseJob`.
    Reported,
    /// The job's files are deleted; the worker ends.
    Released,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// The supervisor is started (or found running after an agent restart).
    Prepared,
    /// `started.json` was read.
    Started,
    /// The exit is known (`exit.json`, a lost supervisor, a failed start).
    Exited,
    /// Stop the job, SIGKILL at `kill_at` (coordinator or wall clock).
    Terminate { kill_at: Instant },
    /// An adopted job was already being terminated by an earlier agent
    /// (SIGTERM went out then).
    Resume { kill_at: Instant },
    /// The kill deadline is reached.
    GraceOver,
    /// `JobExited` was sent.
    Reported,
    /// The report must be sent again (a new session, a re-sent assignment).
    Unreported,
    /// `ReleaseJob` arrived.
    Release,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    SigTerm,
    SigKill,
    /// Remove the job's own mounts (its processes are gone).
    Unmount,
    /// Delete the job's directories.
    Delete,
}

/// A transition: the next phase and what to do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub phase: Phase,
    pub actions: Vec<Action>,
}

impl Step {
    fn to(phase: Phase) -> Self {
        Self {
            phase,
            actions: Vec::new(),
        }
    }

    fn with(phase: Phase, actions: &[Action]) -> Self {
        Self {
            phase,
            actions: actions.to_vec(),
        }
    }
}

impl Phase {
    /// The job may still have processes.
    pub fn is_live(self) -> bool {
        !matches!(self, Phase::Collecting | Phase::Reported | Phase::Released)
    }

    /// When the worker must act without an event: the SIGKILL deadline.
    pub fn deadline(self) -> Option<Instant> {
        match self {
            Phase::Terminating {
                kill_at,
                signalled: true,
            } => Some(kill_at),
            _ => None,
        }
    }

    /// The transition for `event` at `now`; an event that means nothing in
    /// this phase leaves it unchanged with no action.
    pub fn on(self, event: Event, now: Instant) -> Step {
        use Phase::*;
        match (self, event) {
            (Released, _) => Step::to(Released),
            (Preparing, Event::Prepared) => Step::to(Starting),
            (s, Event::Exited) if s.is_live() => Step::with(Collecting, &[Action::Unmount]),
            (Preparing | Starting, Event::Started) => Step::to(Running),
            (Preparing | Starting, Event::Terminate { kill_at }) => Step::to(Terminating {
                kill_at,
                signalled: false,
            }),
            (Running, Event::Terminate { kill_at }) => Step::with(
                Terminating {
                    kill_at,
                    signalled: true,
                },
                &[Action::SigTerm],
            ),
            (Preparing | Starting | Running, Event::Resume { kill_at }) => Step::to(Terminating {
                kill_at,
                signalled: true,
            }),
            (
                Terminating {
                    kill_at,
                    signalled: false,
                },
                Event::Started,
            ) => {
                if now >= kill_at {
                    Step::with(Killing, &[Action::SigTerm, Action::SigKill])
                } else {
                    Step::with(
                        Terminating {
                            kill_at,
                            signalled: true,
                        },
                        &[Action::SigTerm],
                    )
                }
            }
            (
                Terminating {
                    kill_at,
                    signalled: true,
                },
                Event::GraceOver,
            ) if now >= kill_at => Step::with(Killing, &[Action::SigKill]),
            (Collecting, Event::Reported) => Step::to(Reported),
            (Reported, Event::Unreported) => Step::to(Collecting),
            (Collecting | Reported, Event::Release) => Step::with(Released, &[Action::Delete]),
            (s, _) => Step::to(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use Phase::*;
    use std::time::Duration;

    fn t0() -> Instant {
        Instant::now()
    }

    /// Every phase and every event, so a new variant must be added here.
    fn phases(k: Instant) -> Vec<Phase> {
        vec![
            Preparing,
            Starting,
            Running,
            Terminating {
                kill_at: k,
                signalled: false,
            },
            Terminating {
                kill_at: k,
                signalled: true,
            },
            Killing,
            Collecting,
            Reported,
            Released,
        ]
    }

    fn events(k: Instant) -> Vec<Event> {
        vec![
            Event::Prepared,
            Event::Started,
            Event::Exited,
            Event::Terminate { kill_at: k },
            Event::Resume { kill_at: k },
            Event::GraceOver,
            Event::Reported,
            Event::Unreported,
            Event::Release,
        ]
    }

    /// The expected step for every (phase, event) pair, before the deadline.
    fn expected(p: Phase, e: Event, k: Instant) -> Step {
        let term = |signalled| Terminating {
            kill_at: k,
            signalled,
        };
        match (p, e) {
            (Released, _) => Step::to(Released),
            (Preparing, Event::Prepared) => Step::to(Starting),
            (Preparing | Starting | Running | Terminating { .. } | Killing, Event::Exited) => {
                Step::with(Collecting, &[Unmount])
            }
            (Preparing | Starting, Event::Started) => Step::to(Running),
            (Preparing | Starting, Event::Terminate { .. }) => Step::to(term(false)),
            (Running, Event::Terminate { .. }) => Step::with(term(true), &[SigTerm]),
            (Preparing | Starting | Running, Event::Resume { .. }) => Step::to(term(true)),
            (
                Terminating {
                    signalled: false, ..
                },
                Event::Started,
            ) => Step::with(term(true), &[SigTerm]),
            (Collecting, Event::Reported) => Step::to(Reported),
            (Reported, Event::Unreported) => Step::to(Collecting),
            (Collecting | Reported, Event::Release) => Step::with(Released, &[Delete]),
            (p, _) => Step::to(p),
        }
    }

    #[test]
    fn every_transition_before_the_kill_deadline() {
        let now = t0();
        let k = now + Duration::from_secs(10);
        for p in phases(k) {
            for e in events(k) {
                assert_eq!(p.on(e, now), expected(p, e, k), "{p:?} on {e:?}");
            }
        }
    }

    #[test]
    fn the_kill_deadline_sends_sigkill_only_once_it_is_reached() {
        let now = t0();
        let k = now + Duration::from_secs(10);
        let signalled = Terminating {
            kill_at: k,
            signalled: true,
        };
        assert_eq!(signalled.deadline(), Some(k));
        assert_eq!(signalled.on(Event::GraceOver, now), Step::to(signalled));
        assert_eq!(
            signalled.on(Event::GraceOver, k),
            Step::with(Killing, &[SigKill])
        );
        // A job that starts after its kill deadline gets SIGTERM, then SIGKILL.
        let waiting = Terminating {
            kill_at: k,
            signalled: false,
        };
        assert_eq!(waiting.deadline(), None, "nothing to kill before the start");
        assert_eq!(waiting.on(Event::GraceOver, k), Step::to(waiting));
        assert_eq!(
            waiting.on(Event::Started, k),
            Step::with(Killing, &[SigTerm, SigKill])
        );
        for p in phases(k) {
            if p != signalled {
                assert_eq!(p.deadline(), None, "{p:?}");
            }
        }
    }

    #[test]
    fn a_job_is_live_until_its_exit_is_known() {
        let k = t0();
        let live: Vec<bool> = phases(k).into_iter().map(Phase::is_live).collect();
        assert_eq!(
            live,
            [true, true, true, true, true, true, false, false, false]
        );
    }

    #[test]
    fn a_whole_life() {
        let now = t0();
        let k = now + Duration::from_secs(1);
        let mut p = Preparing;
        let mut acts = Vec::new();
        for (e, at) in [
            (Event::Prepared, now),
            (Event::Started, now),
            (Event::Terminate { kill_at: k }, now),
            (Event::GraceOver, k),
            (Event::Exited, k),
            (Event::Reported, k),
            (Event::Unreported, k),
            (Event::Reported, k),
            (Event::Release, k),
        ] {
            let s = p.on(e, at);
            p = s.phase;
            acts.extend(s.actions);
        }
        assert_eq!(p, Released);
        assert_eq!(acts, [SigTerm, SigKill, Unmount, Delete]);
    }
}
