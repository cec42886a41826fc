//! The real NVML backend (nvml-wrapper over a dlopened library) driven by the
//! fake `libnvidia-ml.so.1` of `fake_nvml/`, built here with `cc`: the values
//! checked are the ones `fake_nvml.c` documents.
#![allow(clippy::unwrap_used)]

mod fake_nvml;

use bai_agent::gpu::nvml::NvmlGpus;
use bai_agent::gpu::{self, BackendChoice, GpuBackend, GpuConfig, GpuEventKind, GpuProcess};

const GIB: u64 = 1 << 30;

fn fake_library(defines: &[&str]) -> Option<(tempfile::TempDir, std::path::PathBuf)> {
    let dir = tempfile::tempdir().unwrap();
    let lib = fake_nvml::build(dir.path(), defines)?;
    Some((dir, lib))
}

fn uuid(i: u32) -> String {
    format!("GPU-fa4e0000-0000-4000-8000-{i:012x}")
}

#[test]
fn inventory_comes_from_nvml() {
    let Some((_dir, lib)) = fake_library(&[]) else {
        return;
    };
    let cfg = GpuConfig {
        backend: BackendChoice::Auto,
        nvml_library: Some(lib),
        ..GpuConfig::default()
    };
    let inv = gpu::open(&cfg, "node-1").inventory();
    assert_eq!(inv.backend, "nvml");
    assert_eq!(inv.problem, None);
    assert_eq!(inv.driver_version, "580.65.06");
    assert_eq!(inv.cuda_version, "13.0");
    assert_eq!(inv.gpus.len(), 2);
    for (i, g) in inv.gpus.iter().enumerate() {
        let i = i as u32;
        assert_eq!(g.index, i);
        assert_eq!(g.uuid, uuid(i));
        assert_eq!(g.name, "Fake NVML GPU");
        assert_eq!(g.memory_bytes, 80 * GIB);
        assert_eq!(g.pci_bus_id, format!("00000000:{:02X}:00.0", 0x18 + i));
        assert_eq!(g.minor_number, Some(i));
    }
    assert_eq!(inv.gpus[0].mig_mode, "disabled");
    assert_eq!(inv.gpus[1].mig_mode, "enabled");
}

#[test]
fn samples_processes_and_an_xid_event() {
    let Some((_dir, lib)) = fake_library(&[]) else {
        return;
    };
    let n = NvmlGpus::open(Some(&lib)).unwrap();
    let s = n.sample();
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].uuid, uuid(0));
    assert_eq!(
        (s[0].utilization_percent, s[1].utilization_percent),
        (10, 30)
    );
    assert_eq!(
        (s[0].memory_used_bytes, s[1].memory_used_bytes),
        (GIB, 2 * GIB)
    );
    assert_eq!(
        (s[0].power_milliwatts, s[1].power_milliwatts),
        (100_000, 101_000)
    );
    assert_eq!((s[0].sm_clock_mhz, s[1].sm_clock_mhz), (1500, 1501));
    assert_eq!(s[0].temperature_c, 40);
    // GPU 0 has no ECC (not supported: 0, no problem); GPU 1 has 3.
    assert_eq!((s[0].ecc_double_bit, s[1].ecc_double_bit), (0, 3));
    // The fake delivers XID 79 on GPU 1 once.
    assert_eq!((s[0].xid_count, s[1].xid_count), (0, 1));
    assert_eq!(
        n.take_events(),
        [gpu::GpuEvent {
            uuid: uuid(1),
            kind: GpuEventKind::Xid(79)
        }]
    );
    let s = n.sample();
    assert_eq!(s[1].xid_count, 1, "counted once");
    assert!(n.take_events().is_empty());

    assert_eq!(
        n.processes(&uuid(0)),
        [
            GpuProcess {
                pid: 1234,
                used_memory_bytes: GIB
            },
            GpuProcess {
                pid: 5678,
                used_memory_bytes: 0
            }
        ]
    );
    assert!(n.processes(&uuid(1)).is_empty());
    assert!(n.processes("GPU-not-here").is_empty());
}

#[test]
fn a_failing_call_is_zero_and_one_problem() {
    let Some((_dir, lib)) = fake_library(&[]) else {
        return;
    };
    let n = NvmlGpus::open(Some(&lib)).unwrap();
    for _ in 0..5 {
        // GPU 1's temperature read always fails.
        assert_eq!(n.sample()[1].temperature_c, 0);
    }
    let problems = n.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("temperature of GPU 1"),
        "{problems:?}"
    );
}

#[test]
fn one_gpu_build_and_a_library_that_is_not_nvml() {
    let Some((_dir, lib)) = fake_library(&["FAKE_NVML_GPUS=1"]) else {
        return;
    };
    let n = NvmlGpus::open(Some(&lib)).unwrap();
    assert_eq!(n.inventory().gpus.len(), 1);
    assert_eq!(n.sample()[0].xid_count, 0);
    // A shared library without NVML's symbols: "none" with the reason.
    let other = fake_nvml::build_other(_dir.path()).unwrap();
    let cfg = GpuConfig {
        backend: BackendChoice::Nvml,
        nvml_library: Some(other),
        ..GpuConfig::default()
    };
    let inv = gpu::open(&cfg, "n").inventory();
    assert_eq!(inv.backend, "none");
    let problem = inv.problem.unwrap();
    assert!(problem.contains("is not NVML"), "{problem}");
}
