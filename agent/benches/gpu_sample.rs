//! The agent's cost per GPU sample: `GpuBackend::sample()` timed over many
//! calls for the fake backend (with and without its inject-file check) and for
//! the real NVML backend over the fake `libnvidia-ml.so.1` (built with `cc`;
//! left out, and said so, without one). On a GPU machine, `BAI_BENCH_NVML=
//! <path or name of libnvidia-ml.so.1>` times the real driver instead.
//! Prints one JSON line. Run with `cargo bench -p bai-agent --bench gpu_sample`.

#![allow(clippy::unwrap_used)]

#[path = "../tests/fake_nvml/mod.rs"]
mod fake_nvml;

use bai_agent::gpu::fake::FakeGpus;
use bai_agent::gpu::nvml::NvmlGpus;
use bai_agent::gpu::{FakeSpec, GpuBackend};
use serde_json::{Value, json};
use std::hint::black_box;
use std::time::Instant;

/// Nanoseconds per `sample()` call, the best of 5 rounds of `calls` calls.
fn per_call(b: &dyn GpuBackend, calls: u32) -> f64 {
    for _ in 0..calls / 10 {
        black_box(b.sample());
    }
    (0..5)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..calls {
                black_box(b.sample());
            }
            t.elapsed().as_nanos() as f64 / f64::from(calls)
        })
        .fold(f64::INFINITY, f64::min)
}

fn figure(b: &dyn GpuBackend, calls: u32) -> Value {
    let gpus = b.inventory().gpus.len();
    let ns = per_call(b, calls);
    let uuid = b
        .inventory()
        .gpus
        .first()
        .map(|g| g.uuid.clone())
        .unwrap_or_default();
    let t = Instant::now();
    for _ in 0..calls {
        black_box(b.processes(&uuid));
    }
    let processes_ns = t.elapsed().as_nanos() as f64 / f64::from(calls);
    json!({
        "gpus": gpus,
        "ns_per_sample": ns.round(),
        "ns_per_gpu": (ns / gpus.max(1) as f64).round(),
        "ns_per_processes_call": processes_ns.round(),
    })
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let spec = |count, inject: bool| FakeSpec {
        count,
        inject_path: inject.then(|| dir.path().join("inject")),
        ..FakeSpec::default()
    };
    let mut out = serde_json::Map::new();
    out.insert("bench".into(), json!("gpu_sample"));
    out.insert(
        "fake_8_gpus".into(),
        figure(&FakeGpus::new(&spec(8, false), "bench"), 200_000),
    );
    out.insert(
        "fake_8_gpus_with_inject_file_check".into(),
        figure(&FakeGpus::new(&spec(8, true), "bench"), 200_000),
    );
    match std::env::var("BAI_BENCH_NVML") {
        Ok(lib) => match NvmlGpus::open(Some(std::path::Path::new(&lib))) {
            Ok(n) => {
                out.insert("nvml_driver".into(), figure(&n, 2_000));
            }
            Err(e) => {
                out.insert("nvml_driver".into(), json!({ "error": e }));
            }
        },
        Err(_) => match fake_nvml::build(dir.path(), &["FAKE_NVML_GPUS=8"]) {
            Some(lib) => {
                let n = NvmlGpus::open(Some(&lib)).unwrap();
                out.insert("nvml_over_fake_library_8_gpus".into(), figure(&n, 100_000));
            }
            None => {
                out.insert(
                    "nvml_over_fake_library_8_gpus".into(),
                    json!({ "skipped": "no C compiler" }),
                );
            }
        },
    }
    println!("{}", Value::Object(out));
}
