//! Simulated GPUs ([`FakeGpus`]) for machines without one, the local demo and
//! the tests: the `[gpu] fake_*` settings' names and memory, utilization and
//! memory use from a [`Script`](super::Script), plausible temperature, power
//! and clock derived from the utilization, and XID/ECC faults injected by
//! [`FakeGpus::inject`] or through a file (see [`FakeGpus::inject_line`]).
//!
//! UUIDs are derived from the node id and the index, so they are stable
//! across restarts and two agents on one machine get different GPUs.

use super::{
    FakeSpec, Gpu, GpuBackend, GpuEvent, GpuEventKind, GpuProcess, GpuSample, Inventory, Problems,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

/// The fake's driver version, as NVML formats one.
pub const FAKE_DRIVER_VERSION: &str = "580.0.0-fake";
/// The CUDA version the fake's "driver" supports.
pub const FAKE_CUDA_VERSION: &str = "13.0";

/// Simulated GPUs (`[gpu] backend = "fake"`).
pub struct FakeGpus {
    inventory: Inventory,
    spec: FakeSpec,
    state: Mutex<State>,
    problems: Problems,
}

#[derive(Default)]
struct State {
    /// Samples taken so far: the scripts' position.
    samples: u64,
    xid: Vec<u64>,
    ecc: Vec<u64>,
    /// GPUs whose health check fails (`reset <gpu> fail`).
    broken: Vec<bool>,
    events: Vec<GpuEvent>,
    processes: HashMap<String, Vec<GpuProcess>>,
}

impl FakeGpus {
    /// `spec.count` GPUs for node `node_id` (the spec is taken as valid:
    /// `config` checks it).
    pub fn new(spec: &FakeSpec, node_id: &str) -> Self {
        let gpus = (0..spec.count)
            .map(|index| Gpu {
                index,
                uuid: fake_uuid(node_id, index),
                name: spec.name.clone(),
                memory_bytes: spec.memory_mib << 20,
                // One bus per GPU, as on a real board (64 GPUs fit).
                pci_bus_id: format!("00000000:{:02X}:00.0", 0x10 + index),
                minor_number: Some(index),
                mig_mode: "disabled".into(),
            })
            .collect::<Vec<_>>();
        let n = gpus.len();
        Self {
            inventory: Inventory {
                backend: "fake".into(),
                driver_version: FAKE_DRIVER_VERSION.into(),
                cuda_version: FAKE_CUDA_VERSION.into(),
                gpus,
                problem: None,
            },
            spec: spec.clone(),
            state: Mutex::new(State {
                xid: vec![0; n],
                ecc: vec![0; n],
                broken: vec![false; n],
                ..State::default()
            }),
            problems: Problems::default(),
        }
    }

    /// Injects a fault on the GPU with index or UUID `gpu`: it counts in the
    /// following samples and is handed out by the next
    /// [`GpuBackend::take_events`]. Returns false for an unknown GPU.
    pub fn inject(&self, gpu: &str, kind: GpuEventKind) -> bool {
        let Some(i) = self.find(gpu) else {
            return false;
        };
        let mut st = self.lock();
        match kind {
            GpuEventKind::Xid(_) => st.xid[i] += 1,
            GpuEventKind::DoubleBitEcc(n) => st.ecc[i] += n,
            GpuEventKind::Reset => {}
        }
        st.events.push(GpuEvent {
            uuid: self.inventory.gpus[i].uuid.clone(),
            kind,
        });
        true
    }

    /// Applies one line of the inject file: `xid <gpu> <code>`,
    /// `ecc <gpu> [count]` (double-bit errors, default 1), `reset <gpu>` (a
    /// reset after which the health check passes) or `reset <gpu> fail` (one
    /// after which it fails), `<gpu>` an index or a UUID; blank lines and `#`
    /// comments are nothing.
    ///
    /// The file is `[gpu]`'s inject path (`<state-dir>/gpu/inject` by
    /// default). Each [`GpuBackend::sample`] takes it if it exists (renames
    /// it away, applies each line, removes it), so a writer puts a whole file
    /// in place with a rename, and several writers need several renames.
    pub fn inject_line(&self, line: &str) -> Result<(), String> {
        let line = line.split('#').next().unwrap_or("").trim();
        let words: Vec<&str> = line.split_whitespace().collect();
        let number = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| format!("{s:?} is not a number"))
        };
        let kind = match words.as_slice() {
            [] => return Ok(()),
            ["xid", _, code] => GpuEventKind::Xid(number(code)?),
            ["ecc", _] => GpuEventKind::DoubleBitEcc(1),
            ["ecc", _, n] => GpuEventKind::DoubleBitEcc(number(n)?),
            ["reset", gpu] | ["reset", gpu, "fail"] => {
                let i = self.find(gpu).ok_or_else(|| format!("no GPU {gpu:?}"))?;
                self.lock().broken[i] = words.len() == 3;
                GpuEventKind::Reset
            }
            _ => {
                return Err(
                    "expected `xid <gpu> <code>`, `ecc <gpu> [count]` or `reset <gpu> [fail]`"
                        .into(),
                );
            }
        };
        if self.inject(words[1], kind) {
            Ok(())
        } else {
            Err(format!("no GPU {:?}", words[1]))
        }
    }

    /// Sets the compute processes `processes` reports for GPU `uuid`.
    pub fn set_processes(&self, uuid: &str, processes: Vec<GpuProcess>) {
        self.lock().processes.insert(uuid.to_owned(), processes);
    }

    fn find(&self, gpu: &str) -> Option<usize> {
        let gpus = &self.inventory.gpus;
        match gpu.parse::<usize>() {
            Ok(i) if i < gpus.len() => Some(i),
            _ => gpus.iter().position(|g| g.uuid == gpu),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        }
    }

    /// Takes the inject file if there is one.
    fn take_inject_file(&self, path: &PathBuf) {
        let taken = path.with_extension("taking");
        match std::fs::rename(path, &taken) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                self.problems
                    .note(format!("cannot take inject file {}: {e}", path.display()));
                return;
            }
        }
        let text = std::fs::read_to_string(&taken);
        let _ = std::fs::remove_file(&taken);
        match text {
            Ok(text) => {
                for line in text.lines() {
                    match self.inject_line(line) {
                        Ok(()) => {}
                        Err(e) => {
                            tracing::warn!(line, error = %e, "ignoring a line of the GPU inject file");
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "cannot read the GPU inject file")
            }
        }
    }
}

impl GpuBackend for FakeGpus {
    fn inventory(&self) -> Inventory {
        self.inventory.clone()
    }

    fn sample(&self) -> Vec<GpuSample> {
        if let Some(path) = &self.spec.inject_path {
            self.take_inject_file(path);
        }
        let mut st = self.lock();
        let k = st.samples;
        st.samples += 1;
        self.inventory
            .gpus
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let util = self.spec.utilization.at(i, k).min(100) as u32;
                let used_mib = self.spec.memory_used_mib.at(i, k).min(self.spec.memory_mib);
                GpuSample {
                    uuid: g.uuid.clone(),
                    utilization_percent: util,
                    memory_used_bytes: used_mib << 20,
                    temperature_c: 30 + util * 2 / 5,
                    power_milliwatts: 70_000 + util * 6_300,
                    sm_clock_mhz: if util > 0 { 1980 } else { 345 },
                    ecc_double_bit: st.ecc[i],
                    xid_count: st.xid[i],
                }
            })
            .collect()
    }

    fn processes(&self, uuid: &str) -> Vec<GpuProcess> {
        self.lock().processes.get(uuid).cloned().unwrap_or_default()
    }

    fn problems(&self) -> Vec<String> {
        self.problems.list()
    }

    fn take_events(&self) -> Vec<GpuEvent> {
        std::mem::take(&mut self.lock().events)
    }

    fn check(&self, uuid: &str) -> Result<(), String> {
        match self.find(uuid) {
            None => Err(format!("no GPU {uuid}")),
            Some(i) if self.lock().broken[i] => Err(format!(
                "GPU {i} does not answer after its reset (simulated)"
            )),
            Some(_) => Ok(()),
        }
    }
}

/// `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` from a hash of the node id and
/// the index (FNV-1a, stable across builds and platforms), version-4-shaped
/// like the UUIDs NVIDIA's driver reports.
pub fn fake_uuid(node_id: &str, index: u32) -> String {
    let hash = |salt: u8| {
        use bai_common::hash::{fnv1a64, fnv1a64_update};
        let mut h = fnv1a64(&[salt]);
        for piece in [node_id.as_bytes(), &[0], &index.to_le_bytes()] {
            h = fnv1a64_update(h, piece);
        }
        // A final mix, so nearby inputs differ in every digit.
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^ (h >> 33)
    };
    let bits = (u128::from(hash(1)) << 64) | u128::from(hash(2));
    let bits = (bits & !(0xf << 76)) | (0x4 << 76); // version 4
    let bits = (bits & !(0x3 << 62)) | (0x2 << 62); // RFC 4122 variant
    let hex = format!("{bits:032x}");
    format!(
        "GPU-{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::super::Script;
    use super::*;

    fn spec(count: u32) -> FakeSpec {
        FakeSpec {
            count,
            ..FakeSpec::default()
        }
    }

    #[test]
    fn uuids_are_stable_per_node_and_look_real() {
        let a = FakeGpus::new(&spec(4), "node-a").inventory();
        let again = FakeGpus::new(&spec(4), "node-a").inventory();
        let b = FakeGpus::new(&spec(4), "node-b").inventory();
        assert_eq!(a, again);
        let mut all: Vec<&str> = a.gpus.iter().chain(&b.gpus).map(|g| &*g.uuid).collect();
        for u in &all {
            let parts: Vec<&str> = u.strip_prefix("GPU-").unwrap().split('-').collect();
            assert_eq!(
                parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
                [8, 4, 4, 4, 12],
                "{u}"
            );
            assert!(
                parts
                    .iter()
                    .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
            );
            assert!(uuid::Uuid::parse_str(&u[4..]).is_ok(), "{u}");
        }
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 8, "two nodes never share a GPU");
    }

    #[test]
    fn inventory_follows_the_spec() {
        let inv = FakeGpus::new(&spec(3), "n").inventory();
        assert_eq!(inv.backend, "fake");
        assert_eq!(inv.cuda_version, FAKE_CUDA_VERSION);
        assert_eq!(inv.problem, None);
        let g = &inv.gpus[2];
        assert_eq!((g.index, g.minor_number), (2, Some(2)));
        assert_eq!(g.memory_bytes, 81559 << 20);
        assert_eq!(g.pci_bus_id, "00000000:12:00.0");
        assert_eq!(g.mig_mode, "disabled");
    }

    #[test]
    fn samples_follow_the_scripts() {
        let f = FakeGpus::new(
            &FakeSpec {
                count: 2,
                utilization: Script {
                    per_gpu: vec![vec![0, 100], vec![40]],
                },
                memory_used_mib: Script::constant(1024),
                ..FakeSpec::default()
            },
            "n",
        );
        let util = |s: &[GpuSample]| s.iter().map(|x| x.utilization_percent).collect::<Vec<_>>();
        let s0 = f.sample();
        assert_eq!(util(&s0), [0, 40]);
        assert_eq!(s0[0].memory_used_bytes, 1 << 30);
        assert_eq!(s0[0].uuid, f.inventory().gpus[0].uuid);
        assert_eq!(util(&f.sample()), [100, 40]);
        assert_eq!(util(&f.sample()), [0, 40]);
        assert!(s0[1].temperature_c > s0[0].temperature_c);
    }

    #[test]
    fn injected_faults_count_and_are_handed_out_once() {
        let f = FakeGpus::new(&spec(2), "n");
        let uuid1 = f.inventory().gpus[1].uuid.clone();
        assert!(f.inject("1", GpuEventKind::Xid(79)));
        f.inject_line(&format!("ecc {uuid1} 2 # two at once"))
            .unwrap();
        f.inject_line("").unwrap();
        assert!(f.inject_line("xid 7 79").unwrap_err().contains("no GPU"));
        assert!(f.inject_line("xid 0").is_err());
        assert!(f.inject_line("xid 0 x").is_err());
        let s = f.sample();
        assert_eq!((s[0].xid_count, s[1].xid_count), (0, 1));
        assert_eq!(s[1].ecc_double_bit, 2);
        let ev = f.take_events();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].kind, GpuEventKind::Xid(79));
        assert!(ev.iter().all(|e| e.uuid == uuid1));
        assert!(f.take_events().is_empty());
    }

    #[test]
    fn the_inject_file_is_taken_at_a_sample() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inject");
        let f = FakeGpus::new(
            &FakeSpec {
                count: 2,
                inject_path: Some(path.clone()),
                ..FakeSpec::default()
            },
            "n",
        );
        std::fs::write(&path, "xid 0 79\nbogus line\nxid 0 13\n").unwrap();
        assert_eq!(f.sample()[0].xid_count, 2);
        assert!(!path.exists(), "the file was taken");
        assert_eq!(f.sample()[0].xid_count, 2, "and applied once");
        assert_eq!(f.take_events().len(), 2);
        assert!(f.problems().is_empty());
    }

    #[test]
    fn processes_are_what_was_set() {
        let f = FakeGpus::new(&spec(1), "n");
        let uuid = f.inventory().gpus[0].uuid.clone();
        assert!(f.processes(&uuid).is_empty());
        let p = vec![GpuProcess {
            pid: 42,
            used_memory_bytes: 2 << 30,
        }];
        f.set_processes(&uuid, p.clone());
        assert_eq!(f.processes(&uuid), p);
        assert!(f.processes("GPU-unknown").is_empty());
    }
}
