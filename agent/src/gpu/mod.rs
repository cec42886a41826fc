//! The node's GPUs behind one seam, [`GpuBackend`], with two implementations:
//! [`nvml::NvmlGpus`] (the NVIDIA driver's NVML, through `nvml-wrapper`,
//! loaded once at run time so the same binary runs on machines without a
//! driver) and [`fake::FakeGpus`] (simulated GPUs for machines without one,
//! the local demo and the tests). [`open`] picks one from the `[gpu]` config
//! and never fails: a node whose NVML cannot load has backend `"none"` and
//! says why in [`Inventory::problem`].
//!
//! Every call is blocking (NVML answers in microseconds, but its first load
//! takes milliseconds): async callers use the blocking pool.

pub mod fake;
pub mod health;
pub mod nvml;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Most GPUs a fake node may have (the largest real node has 16; 64 leaves room
/// for MIG-sized tests).
pub const MAX_FAKE_GPUS: u32 = 64;

/// One GPU as the node reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gpu {
    /// NVML's index (the order `nvidia-smi` lists).
    pub index: u32,
    /// `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, stable for the device.
    pub uuid: String,
    pub name: String,
    /// Total framebuffer memory.
    pub memory_bytes: u64,
    /// `00000000:NN:00.0`.
    pub pci_bus_id: String,
    /// N of `/dev/nvidiaN`, if the driver says.
    pub minor_number: Option<u32>,
    /// `"enabled"`, `"disabled"`, or `""` where the GPU has no MIG.
    pub mig_mode: String,
}

/// What the node has, read once when the backend opens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inventory {
    /// `"nvml"`, `"fake"` or `"none"`.
    pub backend: String,
    pub driver_version: String,
    /// The CUDA version the driver supports, `major.minor` (`"13.0"`).
    pub cuda_version: String,
    pub gpus: Vec<Gpu>,
    /// Why there are no GPUs (no driver, disabled by configuration), if so.
    pub problem: Option<String>,
}

impl Inventory {
    /// Each GPU's minor number (N of `/dev/nvidiaN`) by UUID; empty unless
    /// the driver gave every GPU's, since a job's devices can be confined
    /// only when all are known.
    pub fn minors(&self) -> std::collections::HashMap<String, u32> {
        let all: Option<std::collections::HashMap<String, u32>> = self
            .gpus
            .iter()
            .map(|g| g.minor_number.map(|m| (g.uuid.clone(), m)))
            .collect();
        all.unwrap_or_default()
    }

    /// A node without GPUs, and why.
    pub fn none(problem: impl Into<String>) -> Self {
        Self {
            backend: "none".into(),
            driver_version: String::new(),
            cuda_version: String::new(),
            gpus: Vec::new(),
            problem: Some(problem.into()),
        }
    }
}

/// One GPU's figures at one moment. A figure the GPU cannot give is 0.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GpuSample {
    pub uuid: String,
    /// Percent of the last sample period in which a kernel ran.
    pub utilization_percent: u32,
    pub memory_used_bytes: u64,
    pub temperature_c: u32,
    pub power_milliwatts: u32,
    pub sm_clock_mhz: u32,
    /// Uncorrected (double-bit) ECC errors since the driver loaded.
    pub ecc_double_bit: u64,
    /// Critical XID events seen since the backend opened.
    pub xid_count: u64,
}

/// A process using a GPU, with its GPU memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuProcess {
    pub pid: u32,
    pub used_memory_bytes: u64,
}

/// A fault a GPU reported: the hook GPU health builds on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuEvent {
    pub uuid: String,
    pub kind: GpuEventKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuEventKind {
    /// A critical XID error with its code (`999`: NVML did not say which).
    Xid(u64),
    /// This many new uncorrected (double-bit) ECC errors.
    DoubleBitEcc(u64),
    /// The GPU was reset (the fake's `reset`; NVML gives no such event, see
    /// [`health`]): time for a health check.
    Reset,
}

/// The node's GPUs. Implementations never panic on a device error: a figure
/// they cannot read is 0, logged once per cause and listed in
/// [`GpuBackend::problems`].
pub trait GpuBackend: Send + Sync + 'static {
    /// The GPUs, as read at open (cheap: a clone).
    fn inventory(&self) -> Inventory;
    /// One sample per GPU of the inventory, in index order.
    fn sample(&self) -> Vec<GpuSample>;
    /// The compute processes on the GPU `uuid` (none for an unknown uuid).
    fn processes(&self, uuid: &str) -> Vec<GpuProcess>;
    /// Each distinct cause of a failed call so far (`"temperature of GPU 1:
    /// …"`), for the node's view.
    fn problems(&self) -> Vec<String> {
        Vec::new()
    }
    /// The fault events seen since the last call, oldest first. Backends
    /// gather them as they sample (the sampler's interval bounds the delay);
    /// the sample's `xid_count` and `ecc_double_bit` count them too.
    fn take_events(&self) -> Vec<GpuEvent> {
        Vec::new()
    }
    /// A health check of GPU `uuid`: `Err` says why it is not usable.
    fn check(&self, uuid: &str) -> Result<(), String> {
        let _ = uuid;
        Ok(())
    }
}

/// Which backend `[gpu] backend` asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendChoice {
    /// NVML if it loads, else none.
    #[default]
    Auto,
    Nvml,
    Fake,
    None,
}

impl BackendChoice {
    pub const NAMES: &'static str = "auto, nvml, fake, none";

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "auto" => Self::Auto,
            "nvml" => Self::Nvml,
            "fake" => Self::Fake,
            "none" => Self::None,
            _ => return None,
        })
    }
}

/// A figure of a fake GPU over successive samples: sample `k` of GPU `i` is
/// `per_gpu[i % len][k % len_i]`. One list with one value is a constant for
/// every GPU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Script {
    pub per_gpu: Vec<Vec<u64>>,
}

impl Script {
    pub fn constant(v: u64) -> Self {
        Self {
            per_gpu: vec![vec![v]],
        }
    }

    /// The value of GPU `gpu` at sample `k`.
    pub fn at(&self, gpu: usize, k: u64) -> u64 {
        let Some(values) = self
            .per_gpu
            .get(gpu % self.per_gpu.len().max(1))
            .filter(|v| !v.is_empty())
        else {
            return 0;
        };
        values[(k % values.len() as u64) as usize]
    }

    /// Every value of the script.
    pub fn values(&self) -> impl Iterator<Item = u64> + '_ {
        self.per_gpu.iter().flatten().copied()
    }
}

/// The simulated GPUs of the fake backend (`[gpu] fake_*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FakeSpec {
    /// 1 to [`MAX_FAKE_GPUS`].
    pub count: u32,
    pub name: String,
    pub memory_mib: u64,
    /// Percent, 0 to 100.
    pub utilization: Script,
    /// MiB, at most `memory_mib`.
    pub memory_used_mib: Script,
    /// Where the fake looks for injected events at each sample (see
    /// [`fake::FakeGpus::inject`] for the format); `None`: no file.
    pub inject_path: Option<PathBuf>,
}

impl Default for FakeSpec {
    fn default() -> Self {
        Self {
            count: 1,
            name: "NVIDIA H100 80GB HBM3".into(),
            memory_mib: 81559,
            utilization: Script::constant(0),
            memory_used_mib: Script::constant(0),
            inject_path: None,
        }
    }
}

/// The resolved `[gpu]` table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GpuConfig {
    pub backend: BackendChoice,
    /// Where `libnvidia-ml.so.1` is [default: the dynamic loader's search].
    pub nvml_library: Option<PathBuf>,
    pub fake: FakeSpec,
}

/// Opens the configured backend. Never fails: NVML that cannot load gives
/// backend `"none"` with the reason, logged once. Blocking (NVML's load).
pub fn open(cfg: &GpuConfig, node_id: &str) -> Arc<dyn GpuBackend> {
    match cfg.backend {
        BackendChoice::Fake => {
            // The inject file's directory, so that a test or an operator can
            // rename a file into it.
            if let Some(dir) = cfg.fake.inject_path.as_deref().and_then(|p| p.parent())
                && let Err(e) = std::fs::create_dir_all(dir)
            {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot create the GPU inject directory");
            }
            let fake = fake::FakeGpus::new(&cfg.fake, node_id);
            tracing::info!(gpus = cfg.fake.count, name = %cfg.fake.name, "simulating GPUs (gpu backend fake)");
            Arc::new(fake)
        }
        BackendChoice::None => Arc::new(NoGpus(Inventory::none(
            "GPUs disabled by configuration (gpu backend none)",
        ))),
        BackendChoice::Nvml | BackendChoice::Auto => {
            match nvml::NvmlGpus::open(cfg.nvml_library.as_deref()) {
                Ok(n) => {
                    let inv = n.inventory();
                    tracing::info!(
                        gpus = inv.gpus.len(),
                        driver = %inv.driver_version,
                        cuda = %inv.cuda_version,
                        "NVML loaded"
                    );
                    Arc::new(n)
                }
                Err(problem) => {
                    if cfg.backend == BackendChoice::Nvml {
                        tracing::warn!(%problem, "no GPUs: gpu backend nvml asked for, NVML did not load");
                    } else {
                        tracing::info!(%problem, "no GPUs: NVML did not load");
                    }
                    Arc::new(NoGpus(Inventory::none(problem)))
                }
            }
        }
    }
}

/// A node without GPUs.
struct NoGpus(Inventory);

impl GpuBackend for NoGpus {
    fn inventory(&self) -> Inventory {
        self.0.clone()
    }
    fn sample(&self) -> Vec<GpuSample> {
        Vec::new()
    }
    fn processes(&self, _uuid: &str) -> Vec<GpuProcess> {
        Vec::new()
    }
}

/// Distinct causes of failed calls, each logged the first time only.
#[derive(Default)]
pub(crate) struct Problems {
    failed: Mutex<BTreeSet<String>>,
    unsupported: Mutex<BTreeSet<String>>,
}

impl Problems {
    /// Records a failure; logs it (warning) if it is new.
    pub(crate) fn note(&self, cause: String) {
        if first(&self.failed, &cause) {
            tracing::warn!(problem = %cause, "GPU query failed (logged once per cause)");
        }
    }

    /// Records a figure the GPU does not have; logs it (debug) if it is new.
    /// Not a problem.
    pub(crate) fn unsupported(&self, cause: String) {
        if first(&self.unsupported, &cause) {
            tracing::debug!(%cause, "GPU figure not supported (reported as 0)");
        }
    }

    pub(crate) fn list(&self) -> Vec<String> {
        match self.failed.lock() {
            Ok(s) => s.iter().cloned().collect(),
            Err(p) => p.into_inner().iter().cloned().collect(),
        }
    }
}

/// Inserts `cause`; true if it was not there.
fn first(set: &Mutex<BTreeSet<String>>, cause: &str) -> bool {
    let mut seen = match set.lock() {
        Ok(s) => s,
        Err(p) => p.into_inner(),
    };
    // Checked first so that a cause seen before costs no allocation.
    !seen.contains(cause) && seen.insert(cause.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_cycles_per_gpu() {
        let s = Script {
            per_gpu: vec![vec![10], vec![0, 50, 100]],
        };
        assert_eq!((s.at(0, 0), s.at(0, 7)), (10, 10));
        assert_eq!(
            (0..4).map(|k| s.at(1, k)).collect::<Vec<_>>(),
            [0, 50, 100, 0]
        );
        assert_eq!(s.at(2, 3), 10, "GPUs past the list wrap around");
        assert_eq!(Script { per_gpu: vec![] }.at(0, 0), 0);
    }

    #[test]
    fn fake_backend_makes_its_inject_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let inject = dir.path().join("gpu").join("inject");
        let cfg = GpuConfig {
            backend: BackendChoice::Fake,
            fake: FakeSpec {
                count: 2,
                inject_path: Some(inject.clone()),
                ..FakeSpec::default()
            },
            ..GpuConfig::default()
        };
        let b = open(&cfg, "n1");
        assert_eq!(b.inventory().backend, "fake");
        std::fs::write(&inject, "xid 1 79\n").expect("the directory exists");
        assert_eq!(b.sample()[1].xid_count, 1);
        assert_eq!(b.take_events().len(), 1);
    }

    #[test]
    fn none_backend_reports_why() {
        let cfg = GpuConfig {
            backend: BackendChoice::None,
            ..GpuConfig::default()
        };
        let b = open(&cfg, "n1");
        let inv = b.inventory();
        assert_eq!(inv.backend, "none");
        assert!(inv.gpus.is_empty());
        assert!(inv.problem.unwrap_or_default().contains("none"));
        assert!(b.sample().is_empty());
    }

    #[test]
    fn nvml_that_cannot_load_is_no_gpus_with_a_reason() {
        let cfg = GpuConfig {
            backend: BackendChoice::Nvml,
            nvml_library: Some("/nonexistent/libnvidia-ml.so.1".into()),
            ..GpuConfig::default()
        };
        let inv = open(&cfg, "n1").inventory();
        assert_eq!(inv.backend, "none");
        let problem = inv.problem.unwrap_or_default();
        assert!(problem.starts_with("NVML: "), "{problem}");
        assert!(
            problem.contains("/nonexistent/libnvidia-ml.so.1"),
            "{problem}"
        );
    }
}
