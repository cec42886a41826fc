//! Each running job's figures at a heartbeat, and its summary since it
//! started: CPU seconds and resident memory of its processes (the members
//! of its cgroup, with the cgroup's CPU accounting; without cgroups, its
//! process group, read from `/proc`), the GPU memory its processes hold (NVML's
//! process lists), and the utilization of its GPUs. The summary (mean and
//! peak GPU utilization, peak GPU memory, peak memory) is kept here, sample
//! by sample, so that whatever the coordinator receives carries the whole
//! run so far: a lost heartbeat loses no part of it.

use crate::gpu::GpuBackend;
use crate::gpu::health::GpuFigures;
use crate::model::JobId;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// A running job as the meter needs it.
#[derive(Clone, Debug)]
pub struct RunningJob {
    pub id: JobId,
    pub gpu_uuids: Vec<String>,
    /// The job's process group (its members are the job's processes where
    /// it has no cgroup).
    pub pgid: i32,
    /// The job's cgroup: its members are the job's processes (a `setsid()`
    /// child included) and its CPU accounting the job's time, exited
    /// children's too.
    pub cgroup: Option<crate::jobs::cgroup::JobCgroup>,
    /// The job's container, if it runs in one: the runtime puts it in a
    /// cgroup of its own, whose members and figures are the job's too.
    pub container: Option<crate::jobs::container::ContainerLaunch>,
}

/// A job's own members: its cgroup's where it has one, else its process
/// group's (`by_group`, from one pass over /proc).
fn job_members(
    j: &RunningJob,
    by_group: &HashMap<i32, Vec<(i32, bai_common::procfs::Stat)>>,
    ticks: f64,
) -> Members {
    match &j.cgroup {
        Some(cg) => Members {
            pids: cg.procs().unwrap_or_default(),
            cpu_seconds: cg.figures().cpu_seconds,
        },
        None => {
            let procs = by_group.get(&j.pgid).map(Vec::as_slice).unwrap_or(&[]);
            let cpu_ticks: u64 = procs
                .iter()
                .map(|(_, s)| s.utime + s.stime + s.cutime + s.cstime)
                .sum();
            Members {
                pids: procs.iter().map(|(pid, _)| *pid).collect(),
                cpu_seconds: Some(cpu_ticks as f64 / ticks),
            }
        }
    }
}

/// A job's processes now, and its CPU time (None: not known).
struct Members {
    pids: Vec<i32>,
    cpu_seconds: Option<f64>,
}

/// One job's figures now, with its summary.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobFigures {
    pub job_id: String,
    pub cpu_seconds: f64,
    pub memory_bytes: u64,
    pub memory_peak_bytes: u64,
    pub gpu_memory_bytes: u64,
    pub gpu_memory_peak_bytes: u64,
    /// Mean over the job's GPUs now, and over its samples so far.
    pub gpu_utilization_percent: f64,
    pub gpu_utilization_mean: f64,
    pub gpu_utilization_max: f64,
    pub samples: u64,
    pub gpu_uuids: Vec<String>,
}

#[derive(Default)]
struct Summary {
    samples: u64,
    gpu_util_sum: f64,
    gpu_util_max: f64,
    gpu_memory_peak: u64,
    memory_peak: u64,
    /// The most CPU time seen (a process that exits takes its time along
    /// unless its parent waited for it: the figure never moves back).
    cpu_seconds: f64,
    /// The figures of the latest sample, for the job's exit report.
    last: Option<JobFigures>,
    /// Samples since the job stopped running (its summary is kept a while
    /// for the exit report, then forgotten).
    gone: u32,
    /// The cgroup of the job's container, once found (asked of the runtime
    /// at each sample until then).
    container_cgroup: Option<crate::jobs::cgroup::JobCgroup>,
}

/// How many samples a job's summary outlives the job.
const KEEP_GONE: u32 = 30;

/// The summaries of the running jobs.
pub struct Meter {
    jobs: Mutex<HashMap<JobId, Summary>>,
    /// Where cgroupfs is mounted (containers' cgroups are found under it).
    cgroup_root: std::path::PathBuf,
}

impl Default for Meter {
    fn default() -> Self {
        Self::new()
    }
}

impl Meter {
    pub fn new() -> Self {
        Self::with_cgroup_root("/sys/fs/cgroup".into())
    }

    pub fn with_cgroup_root(cgroup_root: std::path::PathBuf) -> Self {
        Self {
            jobs: Mutex::new(HashMap::new()),
            cgroup_root,
        }
    }

    /// Job `id`'s figures at its latest sample, with its whole summary (kept
    /// for a while after it stops running, for its exit report).
    pub fn last(&self, id: &JobId) -> Option<JobFigures> {
        let all = match self.jobs.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        all.get(id).and_then(|s| s.last.clone())
    }

    /// Samples `jobs` (blocking: `/proc` and NVML). Jobs no longer running
    /// are forgotten.
    pub fn sample(
        &self,
        jobs: &[RunningJob],
        gpus: &[GpuFigures],
        backend: &dyn GpuBackend,
    ) -> Vec<JobFigures> {
        let lock = || match self.jobs.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        // A container job's container, found once it runs: asked of the
        // runtime (a process of its own) outside the lock, which the exit
        // reports wait on.
        let unfound: Vec<&RunningJob> = {
            let all = lock();
            jobs.iter()
                .filter(|j| j.container.is_some())
                .filter(|j| all.get(&j.id).is_none_or(|s| s.container_cgroup.is_none()))
                .collect()
        };
        let found: Vec<(JobId, crate::jobs::cgroup::JobCgroup)> = unfound
            .into_iter()
            .filter_map(|j| {
                let c = j.container.as_ref()?;
                let pid = crate::jobs::container::init_pid(&c.runtime, &c.run.name)?;
                let cg = crate::jobs::cgroup::JobCgroup::of_process(&self.cgroup_root, pid)?;
                Some((j.id.clone(), cg))
            })
            .collect();
        let mut all = lock();
        all.retain(|id, s| {
            if jobs.iter().any(|j| &j.id == id) {
                // Running again after it was gone: a new attempt starts over.
                if s.gone > 0 {
                    *s = Summary::default();
                }
                true
            } else {
                s.gone += 1;
                s.gone <= KEEP_GONE
            }
        });
        if jobs.is_empty() {
            return Vec::new();
        }
        let ticks = bai_common::procfs::clock_ticks() as f64;
        // Who is in which job: its cgroup's members where it has one, else
        // its process group's (one pass over /proc for all of those).
        let groups: HashSet<i32> = jobs
            .iter()
            .filter(|j| j.cgroup.is_none())
            .map(|j| j.pgid)
            .collect();
        let mut by_group: HashMap<i32, Vec<(i32, bai_common::procfs::Stat)>> = HashMap::new();
        if !groups.is_empty() {
            for pid in bai_common::procfs::pids() {
                if let Some(st) = bai_common::procfs::stat(pid)
                    && groups.contains(&st.pgid)
                    && st.is_running()
                {
                    by_group.entry(st.pgid).or_default().push((pid, st));
                }
            }
        }
        for (id, cg) in found {
            all.entry(id).or_default().container_cgroup = Some(cg);
        }
        let members: Vec<Members> = jobs
            .iter()
            .map(|j| {
                let mut m = job_members(j, &by_group, ticks);
                if let Some(ccg) = all.get(&j.id).and_then(|s| s.container_cgroup.as_ref()) {
                    m.pids.extend(ccg.procs().unwrap_or_default());
                    m.cpu_seconds = match (m.cpu_seconds, ccg.figures().cpu_seconds) {
                        (Some(a), Some(b)) => Some(a + b),
                        (a, b) => a.or(b),
                    };
                }
                m
            })
            .collect();
        // GPU memory by pid, from the process lists of the GPUs jobs hold.
        let mut gpu_memory: HashMap<u32, u64> = HashMap::new();
        let held: HashSet<&str> = jobs
            .iter()
            .flat_map(|j| j.gpu_uuids.iter().map(String::as_str))
            .collect();
        for uuid in held {
            for p in backend.processes(uuid) {
                *gpu_memory.entry(p.pid).or_default() += p.used_memory_bytes;
            }
        }
        jobs.iter()
            .zip(members)
            .map(|(j, m)| {
                let memory: u64 = m
                    .pids
                    .iter()
                    .filter_map(|pid| bai_common::procfs::rss_bytes(*pid))
                    .sum();
                let gpu_mem: u64 = m
                    .pids
                    .iter()
                    .filter_map(|pid| gpu_memory.get(&u32::try_from(*pid).ok()?))
                    .sum();
                let utils: Vec<f64> = gpus
                    .iter()
                    .filter(|g| j.gpu_uuids.contains(&g.sample.uuid))
                    .map(|g| f64::from(g.sample.utilization_percent))
                    .collect();
                let util = if utils.is_empty() {
                    0.0
                } else {
                    utils.iter().sum::<f64>() / utils.len() as f64
                };
                let s = all.entry(j.id.clone()).or_default();
                s.samples += 1;
                s.gpu_util_sum += util;
                s.gpu_util_max = s.gpu_util_max.max(util);
                s.gpu_memory_peak = s.gpu_memory_peak.max(gpu_mem);
                s.memory_peak = s.memory_peak.max(memory);
                s.cpu_seconds = s.cpu_seconds.max(m.cpu_seconds.unwrap_or(0.0));
                let f = JobFigures {
                    job_id: j.id.as_str().to_owned(),
                    cpu_seconds: s.cpu_seconds,
                    memory_bytes: memory,
                    memory_peak_bytes: s.memory_peak,
                    gpu_memory_bytes: gpu_mem,
                    gpu_memory_peak_bytes: s.gpu_memory_peak,
                    gpu_utilization_percent: util,
                    gpu_utilization_mean: s.gpu_util_sum / s.samples as f64,
                    gpu_utilization_max: s.gpu_util_max,
                    samples: s.samples,
                    gpu_uuids: j.gpu_uuids.clone(),
                };
                s.last = Some(f.clone());
                f
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::fake::FakeGpus;
    use crate::gpu::health::Watch;
    use crate::gpu::{FakeSpec, GpuBackend, GpuProcess, Script};
    use std::sync::Arc;

    #[test]
    fn a_jobs_summary_follows_its_gpus_and_processes() {
        let fake = Arc::new(FakeGpus::new(
            &FakeSpec {
                count: 2,
                utilization: Script {
                    per_gpu: vec![vec![20, 60], vec![100]],
                },
                ..FakeSpec::default()
            },
            "n1",
        ));
        let uuids: Vec<String> = fake.inventory().gpus.into_iter().map(|g| g.uuid).collect();
        let watch = Watch::new(fake.clone());
        // This test process is the job: its own group, its own memory.
        let me = std::process::id() as i32;
        let pgid = bai_common::procfs::pgid(me).expect("our group");
        fake.set_processes(
            &uuids[0],
            vec![GpuProcess {
                pid: me as u32,
                used_memory_bytes: 2 << 30,
            }],
        );
        let job = RunningJob {
            id: JobId::parse("11111111-1111-4111-8111-111111111111").expect("an id"),
            gpu_uuids: vec![uuids[0].clone()],
            pgid,
            cgroup: None,
            container: None,
        };
        let meter = Meter::new();
        let mut last = JobFigures::default();
        for _ in 0..4 {
            let (gpus, _) = watch.sample();
            let f = meter.sample(std::slice::from_ref(&job), &gpus, &*fake);
            last = f.into_iter().next().expect("one job");
        }
        // GPU 0 ran 20, 60, 20, 60: mean 40, max 60; GPU 1 is not the job's.
        assert_eq!(last.samples, 4);
        assert_eq!(last.gpu_utilization_percent, 60.0);
        assert_eq!(last.gpu_utilization_mean, 40.0);
        assert_eq!(last.gpu_utilization_max, 60.0);
        assert_eq!(last.gpu_memory_bytes, 2 << 30);
        assert_eq!(last.gpu_memory_peak_bytes, 2 << 30);
        assert!(last.memory_bytes > 1 << 20, "{last:?}");
        assert!(last.memory_peak_bytes >= last.memory_bytes);
        assert!(last.cpu_seconds >= 0.0);
        // A job that ended keeps its figures for its exit report...
        assert!(meter.sample(&[], &[], &*fake).is_empty());
        assert_eq!(meter.last(&job.id), Some(last.clone()));
        // ... and running again (a new attempt) it starts from nothing.
        let (gpus, _) = watch.sample();
        let f = meter.sample(std::slice::from_ref(&job), &gpus, &*fake);
        assert_eq!(f[0].samples, 1);
        // Long gone, it is forgotten.
        for _ in 0..=KEEP_GONE {
            meter.sample(&[], &[], &*fake);
        }
        assert_eq!(meter.last(&job.id), None);
    }
}
