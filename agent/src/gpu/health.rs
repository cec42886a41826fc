//! GPU health as the agent reports it. Each heartbeat's sample also takes the
//! backend's fault events and turns them into [`Report`]s for the
//! coordinator, which keeps each GPU's health and its history and decides
//! what a fault means for scheduling (see the coordinator's `domain::gpus`).
//!
//! - An XID is a fault unless it is one of [`APPLICATION_XIDS`] (errors of
//!   the application's own making: the GPU is fine); a new double-bit ECC
//!   error is always a fault.
//! - A reset (the fake's `reset`) is followed by a health check
//!   ([`GpuBackend::check`]): passing it reports the GPU recovered, failing
//!   it reports why. NVML has no reset event, so on a real node a faulted
//!   GPU comes back when an operator clears it (after `nvidia-smi -r`, say).

use super::{GpuBackend, GpuEventKind, GpuSample};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// XIDs NVIDIA documents as caused by the application (a bad kernel, a
/// page fault, a preemption cleanup...): the job failed, the GPU did not.
pub const APPLICATION_XIDS: [u64; 6] = [13, 31, 43, 45, 68, 109];

/// Whether XID `code` takes its GPU out of scheduling.
pub fn is_fault_xid(code: u64) -> bool {
    !APPLICATION_XIDS.contains(&code)
}

/// What an XID means, in a few words (NVIDIA's XID catalogue).
pub fn xid_meaning(code: u64) -> &'static str {
    match code {
        13 => "graphics engine exception (application)",
        31 => "GPU memory page fault (application)",
        43 => "GPU stopped processing (application)",
        45 => "preemptive cleanup (application)",
        48 => "double-bit ECC error",
        61 | 62 => "internal micro-controller error",
        63 | 64 => "ECC page retirement or row remapping",
        68 => "video processor exception (application)",
        69 => "graphics engine class error",
        74 => "NVLink error",
        79 => "GPU has fallen off the bus",
        92 => "high single-bit ECC error rate",
        94 => "contained ECC error",
        95 => "uncontained ECC error",
        109 => "context switch timeout (application)",
        119 | 120 => "GSP error",
        999 => "unknown critical error",
        _ => "critical error",
    }
}

/// One health event of one GPU, for the coordinator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub uuid: String,
    pub index: u32,
    pub time: SystemTime,
    pub kind: ReportKind,
    /// For people: what happened, with the GPU's index and UUID.
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportKind {
    Xid(u64),
    /// This many new double-bit ECC errors.
    DoubleBitEcc(u64),
    /// Reset, and the health check passed.
    Recovered,
    /// Reset, and the health check failed (the message says why).
    CheckFailed,
}

impl Report {
    /// Whether this takes the GPU out of scheduling.
    pub fn is_fault(&self) -> bool {
        match self.kind {
            ReportKind::Xid(code) => is_fault_xid(code),
            ReportKind::DoubleBitEcc(_) | ReportKind::CheckFailed => true,
            ReportKind::Recovered => false,
        }
    }
}

/// One GPU's figures of a heartbeat, with what the inventory adds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GpuFigures {
    pub index: u32,
    pub memory_total_bytes: u64,
    /// The latest XID the GPU raised since the agent started (0: none), as
    /// dcgm-exporter's `DCGM_FI_DEV_XID_ERRORS`.
    pub last_xid: u64,
    pub sample: GpuSample,
}

/// Samples the GPUs and turns their events into reports.
pub struct Watch {
    backend: Arc<dyn GpuBackend>,
    last_xid: Mutex<HashMap<String, u64>>,
}

impl Watch {
    pub fn new(backend: Arc<dyn GpuBackend>) -> Self {
        Self {
            backend,
            last_xid: Mutex::new(HashMap::new()),
        }
    }

    pub fn backend(&self) -> &Arc<dyn GpuBackend> {
        &self.backend
    }

    /// One sample of every GPU and the reports of the events since the last
    /// call. Blocking (NVML, the fake's inject file, health checks).
    pub fn sample(&self) -> (Vec<GpuFigures>, Vec<Report>) {
        let inventory = self.backend.inventory();
        let samples = self.backend.sample();
        let now = SystemTime::now();
        let mut last = match self.last_xid.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        let mut reports = Vec::new();
        for ev in self.backend.take_events() {
            let index = inventory
                .gpus
                .iter()
                .find(|g| g.uuid == ev.uuid)
                .map(|g| g.index)
                .unwrap_or_default();
            let gpu = format!("GPU {index} ({})", ev.uuid);
            let (kind, message) = match ev.kind {
                GpuEventKind::Xid(code) => {
                    last.insert(ev.uuid.clone(), code);
                    let effect = if is_fault_xid(code) {
                        "the GPU is out of scheduling"
                    } else {
                        "an application error: the GPU stays in service"
                    };
                    (
                        ReportKind::Xid(code),
                        format!("{gpu}: XID {code}, {}; {effect}", xid_meaning(code)),
                    )
                }
                GpuEventKind::DoubleBitEcc(n) => (
                    ReportKind::DoubleBitEcc(n),
                    format!(
                        "{gpu}: {n} new double-bit (uncorrectable) ECC error(s); the GPU is out of scheduling"
                    ),
                ),
                GpuEventKind::Reset => match self.backend.check(&ev.uuid) {
                    Ok(()) => (
                        ReportKind::Recovered,
                        format!("{gpu}: reset, and its health check passed"),
                    ),
                    Err(why) => (
                        ReportKind::CheckFailed,
                        format!("{gpu}: reset, but its health check failed: {why}"),
                    ),
                },
            };
            reports.push(Report {
                uuid: ev.uuid,
                index,
                time: now,
                kind,
                message,
            });
        }
        let figures = samples
            .into_iter()
            .map(|s| {
                let (index, memory_total_bytes) = inventory
                    .gpus
                    .iter()
                    .find(|g| g.uuid == s.uuid)
                    .map(|g| (g.index, g.memory_bytes))
                    .unwrap_or_default();
                GpuFigures {
                    index,
                    memory_total_bytes,
                    last_xid: last.get(&s.uuid).copied().unwrap_or(0),
                    sample: s,
                }
            })
            .collect();
        (figures, reports)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::fake::FakeGpus;
    use crate::gpu::{FakeSpec, GpuEventKind};

    fn watch(n: u32) -> (Arc<FakeGpus>, Watch) {
        let fake = Arc::new(FakeGpus::new(
            &FakeSpec {
                count: n,
                ..FakeSpec::default()
            },
            "n1",
        ));
        (fake.clone(), Watch::new(fake))
    }

    #[test]
    fn application_xids_are_not_faults() {
        for code in APPLICATION_XIDS {
            assert!(!is_fault_xid(code), "{code}");
        }
        for code in [48, 63, 74, 79, 94, 95, 119, 999] {
            assert!(is_fault_xid(code), "{code}");
        }
    }

    #[test]
    fn events_become_reports_and_the_last_xid_is_kept() {
        let (fake, w) = watch(2);
        let (figs, reports) = w.sample();
        assert!(reports.is_empty());
        assert_eq!(figs.iter().map(|f| f.last_xid).collect::<Vec<_>>(), [0, 0]);
        assert_eq!(figs[1].index, 1);
        assert!(figs[1].memory_total_bytes > 0);

        assert!(fake.inject("1", GpuEventKind::Xid(79)));
        assert!(fake.inject("0", GpuEventKind::Xid(13)));
        let (figs, reports) = w.sample();
        assert_eq!(
            figs.iter().map(|f| f.last_xid).collect::<Vec<_>>(),
            [13, 79]
        );
        assert_eq!(reports.len(), 2);
        let r79 = reports.iter().find(|r| r.index == 1).expect("GPU 1's");
        assert!(r79.is_fault());
        assert!(
            r79.message.contains("XID 79") && r79.message.contains("fallen off the bus"),
            "{}",
            r79.message
        );
        let r13 = reports.iter().find(|r| r.index == 0).expect("GPU 0's");
        assert!(!r13.is_fault(), "{r13:?}");
        assert!(w.sample().1.is_empty(), "each event is reported once");
    }

    #[test]
    fn a_reset_is_checked() {
        let (fake, w) = watch(2);
        fake.inject_line("reset 1").expect("valid");
        let (_, r) = w.sample();
        assert_eq!(r[0].kind, ReportKind::Recovered);
        assert!(!r[0].is_fault());
        fake.inject_line("reset 0 fail").expect("valid");
        let (_, r) = w.sample();
        assert_eq!(r[0].kind, ReportKind::CheckFailed);
        assert!(r[0].is_fault());
        assert!(
            r[0].message.contains("health check failed"),
            "{}",
            r[0].message
        );
        fake.inject_line("ecc 0 2").expect("valid");
        let (_, r) = w.sample();
        assert_eq!(r[0].kind, ReportKind::DoubleBitEcc(2));
        assert!(r[0].is_fault());
    }
}
