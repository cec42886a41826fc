//! The NVIDIA driver's GPUs through NVML ([`NvmlGpus`]), with `nvml-wrapper`,
//! which loads `libnvidia-ml.so.1` at run time (so a machine without the
//! driver gets a clear reason, not a failed start) and resolves each symbol
//! when it is first called: a library lacking one fails only that call.
//!
//! NVML is initialised once per `open` and stays initialised for the life of
//! the process (the handle is leaked: device handles and the event set borrow
//! it, and the driver needs no shutdown at exit). The agent opens it once.
//!
//! Calls that fail are logged once per cause and listed in
//! [`GpuBackend::problems`]; a figure a GPU does not support (ECC on a
//! consumer card) is 0, logged once at debug level, and no problem.

use super::{Gpu, GpuBackend, GpuEvent, GpuEventKind, GpuProcess, GpuSample, Inventory, Problems};
use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enum_wrappers::device::{Clock, EccCounter, MemoryError, TemperatureSensor};
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::enums::event::XidError;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::{Device, EventSet, Nvml};
use std::path::Path;
use std::sync::Mutex;

/// The library name the dynamic loader searches for by default.
pub const DEFAULT_LIBRARY: &str = "libnvidia-ml.so.1";

/// Events drained at most per sample (a storm must not stall sampling).
const MAX_EVENTS_PER_SAMPLE: usize = 1024;

/// The node's GPUs through NVML.
pub struct NvmlGpus {
    devices: Vec<Device<'static>>,
    inventory: Inventory,
    /// Critical XID events of the GPUs that support them; `None` if none do.
    events: Mutex<Option<EventSet<'static>>>,
    counts: Mutex<Counts>,
    problems: Problems,
}

#[derive(Default)]
struct Counts {
    xid: Vec<u64>,
    /// The double-bit ECC count of the last sample, per GPU.
    last_ecc: Vec<Option<u64>>,
    events: Vec<GpuEvent>,
}

impl NvmlGpus {
    /// Loads NVML from `library` (default: [`DEFAULT_LIBRARY`] on the loader's
    /// path), initialises it and reads the inventory. `Err` is the reason
    /// there are no GPUs, starting `NVML: `.
    pub fn open(library: Option<&Path>) -> Result<Self, String> {
        let name = library.map_or_else(|| DEFAULT_LIBRARY.to_owned(), |p| p.display().to_string());
        let mut builder = Nvml::builder();
        if let Some(p) = library {
            builder.lib_path(p.as_os_str());
        }
        let nvml = builder.init().map_err(|e| match e {
            NvmlError::LibloadingError(l) => format!("NVML: cannot load {name}: {l}"),
            NvmlError::FailedToLoadSymbol(s) => format!("NVML: {name} is not NVML: {s}"),
            other => format!("NVML: cannot initialise ({name}): {other}"),
        })?;
        let nvml: &'static Nvml = Box::leak(Box::new(nvml));
        Ok(Self::from_nvml(nvml))
    }

    fn from_nvml(nvml: &'static Nvml) -> Self {
        let problems = Problems::default();
        let driver_version = nvml.sys_driver_version().unwrap_or_else(|e| {
            problems.note(format!("driver version: {e}"));
            String::new()
        });
        let cuda_version = match nvml.sys_cuda_driver_version() {
            Ok(v) => cuda_version(v),
            Err(e) => {
                problems.note(format!("CUDA driver version: {e}"));
                String::new()
            }
        };
        let count = nvml.device_count().unwrap_or_else(|e| {
            problems.note(format!("device count: {e}"));
            0
        });
        let mut devices = Vec::new();
        let mut gpus = Vec::new();
        for index in 0..count {
            match nvml.device_by_index(index).and_then(|d| {
                let g = describe(index, &d, &problems)?;
                Ok((d, g))
            }) {
                Ok((d, g)) => {
                    devices.push(d);
                    gpus.push(g);
                }
                Err(e) => problems.note(format!("GPU {index} left out: {e}")),
            }
        }
        let problem = if gpus.is_empty() {
            Some(if count == 0 {
                "NVML: the driver reports no GPUs".to_owned()
            } else {
                format!("NVML: none of the {count} GPUs could be read")
            })
        } else {
            None
        };
        let events = event_set(nvml, &devices, &problems);
        let n = devices.len();
        Self {
            devices,
            inventory: Inventory {
                backend: "nvml".into(),
                driver_version,
                cuda_version,
                gpus,
                problem,
            },
            events: Mutex::new(events),
            counts: Mutex::new(Counts {
                xid: vec![0; n],
                last_ecc: vec![None; n],
                events: Vec::new(),
            }),
            problems,
        }
    }

    /// A figure from `r`, or 0 with the cause noted.
    fn figure<T: Default>(&self, i: usize, what: &str, r: Result<T, NvmlError>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => {
                note(&self.problems, &self.inventory.gpus[i], what, e);
                T::default()
            }
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        match self.counts.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        }
    }

    /// Takes the XID events that arrived since the last sample.
    fn drain_events(&self, counts: &mut Counts) {
        let guard = match self.events.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let Some(set) = guard.as_ref() else {
            return;
        };
        for _ in 0..MAX_EVENTS_PER_SAMPLE {
            match set.wait(0) {
                Ok(ev) => {
                    let code = match ev.event_data {
                        Some(XidError::Value(v)) => v,
                        Some(XidError::Unknown) | None => 999,
                    };
                    let uuid = ev.device.uuid().unwrap_or_default();
                    match self.inventory.gpus.iter().position(|g| g.uuid == uuid) {
                        Some(i) => {
                            counts.xid[i] += 1;
                            counts.events.push(GpuEvent {
                                uuid,
                                kind: GpuEventKind::Xid(code),
                            });
                        }
                        None => self.problems.note(format!(
                            "XID {code} on a GPU not in the inventory ({uuid:?})"
                        )),
                    }
                }
                Err(NvmlError::Timeout) => return,
                Err(e) => {
                    self.problems.note(format!("waiting for XID events: {e}"));
                    return;
                }
            }
        }
    }
}

impl GpuBackend for NvmlGpus {
    fn inventory(&self) -> Inventory {
        self.inventory.clone()
    }

    fn sample(&self) -> Vec<GpuSample> {
        let mut counts = self.counts();
        self.drain_events(&mut counts);
        let mut out = Vec::with_capacity(self.devices.len());
        for (i, d) in self.devices.iter().enumerate() {
            let uuid = &self.inventory.gpus[i].uuid;
            let ecc = self.figure(
                i,
                "double-bit ECC count",
                d.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile),
            );
            if let Some(last) = counts.last_ecc[i]
                && ecc > last
            {
                counts.events.push(GpuEvent {
                    uuid: uuid.clone(),
                    kind: GpuEventKind::DoubleBitEcc(ecc - last),
                });
            }
            counts.last_ecc[i] = Some(ecc);
            out.push(GpuSample {
                uuid: uuid.clone(),
                utilization_percent: self.figure(
                    i,
                    "utilization",
                    d.utilization_rates().map(|u| u.gpu),
                ),
                memory_used_bytes: self.figure(i, "memory use", d.memory_info().map(|m| m.used)),
                temperature_c: self.figure(i, "temperature", d.temperature(TemperatureSensor::Gpu)),
                power_milliwatts: self.figure(i, "power use", d.power_usage()),
                sm_clock_mhz: self.figure(i, "SM clock", d.clock_info(Clock::SM)),
                ecc_double_bit: ecc,
                xid_count: counts.xid[i],
            });
        }
        out
    }

    fn processes(&self, uuid: &str) -> Vec<GpuProcess> {
        let Some(i) = self.inventory.gpus.iter().position(|g| g.uuid == uuid) else {
            return Vec::new();
        };
        self.figure(
            i,
            "compute processes",
            self.devices[i].running_compute_processes(),
        )
        .into_iter()
        .map(|p| GpuProcess {
            pid: p.pid,
            used_memory_bytes: match p.used_gpu_memory {
                UsedGpuMemory::Used(b) => b,
                UsedGpuMemory::Unavailable => 0,
            },
        })
        .collect()
    }

    fn problems(&self) -> Vec<String> {
        self.problems.list()
    }

    fn take_events(&self) -> Vec<GpuEvent> {
        std::mem::take(&mut self.counts().events)
    }

    /// The GPU answers the queries a job's start depends on: its memory and
    /// its compute processes.
    fn check(&self, uuid: &str) -> Result<(), String> {
        let i = self
            .inventory
            .gpus
            .iter()
            .position(|g| g.uuid == uuid)
            .ok_or_else(|| format!("no GPU {uuid}"))?;
        let d = &self.devices[i];
        d.memory_info()
            .map_err(|e| format!("GPU {i} memory query: {e}"))?;
        d.running_compute_processes()
            .map_err(|e| format!("GPU {i} process query: {e}"))?;
        Ok(())
    }
}

/// One GPU's inventory entry; `Err` if it has no UUID (it could not be
/// named to the scheduler).
fn describe(index: u32, d: &Device<'_>, problems: &Problems) -> Result<Gpu, NvmlError> {
    let uuid = d.uuid()?;
    let mut g = Gpu {
        index,
        uuid,
        name: String::new(),
        memory_bytes: 0,
        pci_bus_id: String::new(),
        minor_number: None,
        mig_mode: String::new(),
    };
    let or_note = |what: &str, e: NvmlError| note(problems, &g_label(index), what, e);
    match d.name() {
        Ok(n) => g.name = n,
        Err(e) => or_note("name", e),
    }
    match d.memory_info() {
        Ok(m) => g.memory_bytes = m.total,
        Err(e) => or_note("memory size", e),
    }
    match d.pci_info() {
        Ok(p) => g.pci_bus_id = p.bus_id,
        Err(e) => or_note("PCI bus id", e),
    }
    match d.minor_number() {
        Ok(m) => g.minor_number = Some(m),
        Err(e) => or_note("minor number", e),
    }
    match d.mig_mode() {
        Ok(m) => {
            g.mig_mode = if m.current == 1 {
                "enabled"
            } else {
                "disabled"
            }
            .into();
        }
        Err(e) => or_note("MIG mode", e),
    }
    Ok(g)
}

/// A stand-in [`Gpu`] naming only the index, for problems noted while the
/// inventory entry is being read.
fn g_label(index: u32) -> Gpu {
    Gpu {
        index,
        uuid: String::new(),
        name: String::new(),
        memory_bytes: 0,
        pci_bus_id: String::new(),
        minor_number: None,
        mig_mode: String::new(),
    }
}

/// Notes a failed call: unsupported figures at debug level only, others as
/// problems.
fn note(problems: &Problems, g: &Gpu, what: &str, e: NvmlError) {
    let cause = format!("{what} of GPU {}: {e}", g.index);
    if matches!(e, NvmlError::NotSupported) {
        problems.unsupported(cause);
    } else {
        problems.note(cause);
    }
}

/// An event set with the critical XID events of every GPU that supports
/// them. NVML frees a set whose registration fails, so a GPU that refuses is
/// left out and the set built again without it.
fn event_set(
    nvml: &'static Nvml,
    devices: &[Device<'static>],
    problems: &Problems,
) -> Option<EventSet<'static>> {
    let mut wanted: Vec<usize> = devices
        .iter()
        .enumerate()
        .filter(|(i, d)| match d.supported_event_types() {
            Ok(t) => t.contains(EventTypes::CRITICAL_XID_ERROR),
            Err(e) => {
                note(problems, &g_label(*i as u32), "supported event types", e);
                false
            }
        })
        .map(|(i, _)| i)
        .collect();
    'build: while !wanted.is_empty() {
        let mut set = match nvml.create_event_set() {
            Ok(s) => s,
            Err(e) => {
                problems.note(format!("cannot create an event set: {e}"));
                return None;
            }
        };
        for (pos, &i) in wanted.iter().enumerate() {
            match devices[i].register_events(EventTypes::CRITICAL_XID_ERROR, set) {
                Ok(s) => set = s,
                Err(e) => {
                    problems.note(format!("XID events of GPU {i} not watched: {}", e.error));
                    wanted.remove(pos);
                    continue 'build;
                }
            }
        }
        return Some(set);
    }
    None
}

/// NVML's CUDA version (`13000`) as `major.minor` (`13.0`).
pub fn cuda_version(v: i32) -> String {
    format!("{}.{}", v / 1000, (v % 1000) / 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_versions_are_major_dot_minor() {
        assert_eq!(cuda_version(13000), "13.0");
        assert_eq!(cuda_version(12040), "12.4");
        assert_eq!(cuda_version(11080), "11.8");
    }

    #[test]
    fn a_missing_library_is_a_reason() {
        let Err(why) = NvmlGpus::open(Some(Path::new("/nonexistent/libnvidia-ml.so.1"))) else {
            panic!("loaded a library that does not exist");
        };
        assert!(
            why.starts_with("NVML: cannot load /nonexistent/libnvidia-ml.so.1"),
            "{why}"
        );
    }
}
