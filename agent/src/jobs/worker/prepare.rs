//! Setting up a new job's directory (blocking: run it off the runtime):
//! directories, spool files, the job's own mounts, its cgroup (with the GPUs
//! it was not given denied), the job environment and `launch.json`; and
//! recording a job that could not be started.

use crate::jobs::JobSettings;
use crate::jobs::cgroup::JobCgroup;
use crate::jobs::container::{self, ContainerLaunch, ContainerRun, GpuAccess};
use crate::jobs::env::{MpiEnv, NodePaths, job_env};
use crate::jobs::job_mounts;
use crate::jobs::layout::{self, JobPaths, LaunchRecord, log_line, write_record};
use crate::model::{JobError, JobExit, JobSpec, Stream};
use crate::timefmt;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::time::SystemTime;
use tracing::warn;

/// The GPU minors a job may open, from its `gpu_uuids` and the node's map
/// (see `cgroup/devices.rs`): `None` when the node's map is empty (no GPU
/// inventory: nothing is denied); a UUID the map lacks is an error.
pub fn gpu_minors(
    uuids: &[String],
    map: &std::collections::HashMap<String, u32>,
) -> Result<Option<Vec<u32>>, JobError> {
    if map.is_empty() {
        return Ok(None);
    }
    uuids
        .iter()
        .map(|u| {
            map.get(u)
                .copied()
                .ok_or_else(|| JobError::new("GpuNotFound", format!("this node has no GPU {u}")))
        })
        .collect::<Result<Vec<u32>, _>>()
        .map(Some)
}

/// The variables naming a job's output directories.
const OUTPUT_PREFIX: &str = "AZ_BATCHAI_OUTPUT_";

/// Creates the job's directories (its output directories too), spool files,
/// cgroup and `launch.json`; returns the cgroup (none where the host has none)
/// and the container the job runs in, if it does.
pub fn prepare(
    settings: &JobSettings,
    spec: &JobSpec,
    paths: &JobPaths,
) -> Result<(Option<JobCgroup>, Option<ContainerLaunch>), JobError> {
    let fail = |what: &str, path: &Path, e: std::io::Error| {
        JobError::new(
            "JobSetupFailed",
            format!("cannot create {what} {}: {e}", path.display()),
        )
    };
    let mut private = std::fs::DirBuilder::new();
    private.recursive(true).mode(0o700);
    let mut public = std::fs::DirBuilder::new();
    public.recursive(true).mode(0o755);
    private
        .create(&paths.dir)
        .map_err(|e| fail("the job directory", &paths.dir, e))?;
    public
        .create(&paths.spool)
        .map_err(|e| fail("the output directory", &paths.spool, e))?;
    for s in Stream::ALL {
        let p = paths.stream(s);
        std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&p)
            .map_err(|e| fail("the output file", &p, e))?;
    }
    let run_as = settings.run_as.borrow().clone();
    // One directory for all the job's nodes where they share a root.
    let shared_root = settings
        .layout
        .shared_temp(&spec.job_id)
        .filter(|_| spec.nodes > 1);
    let shared_temp = shared_root
        .clone()
        .unwrap_or_else(|| paths.shared_temp.clone());
    for (what, dir, owned) in [
        ("the job temp directory", &paths.temp, true),
        // Given to the job's user on a shared root (every node's admin user
        // is the same user); inside the job's temp it stays the agent's.
        (
            "the shared job temp directory",
            &shared_temp,
            shared_root.is_some(),
        ),
        ("the job mount root", &paths.mount_root, true),
    ] {
        public.create(dir).map_err(|e| fail(what, dir, e))?;
        if let (Some(u), true) = (&run_as, owned) {
            std::os::unix::fs::chown(dir, Some(u.uid), Some(u.gid))
                .map_err(|e| fail(what, dir, e))?;
        }
    }
    let mounted = if spec.volumes.is_empty() {
        Vec::new()
    } else {
        let ctx = settings.mounts.as_ref().ok_or_else(|| {
            JobError::new(
                job_mounts::JOB_MOUNT_FAILED,
                "this agent cannot make mounts (no mount context)",
            )
        })?;
        job_mounts::mount_all(ctx, &spec.volumes, paths, run_as.as_ref())?
    };
    let undo_mounts = || {
        if !spec.volumes.is_empty() {
            let _ = job_mounts::unmount_all(paths);
        }
    };
    let gpu_minors =
        gpu_minors(&spec.gpu_uuids, &settings.gpu_minors).inspect_err(|_| undo_mounts())?;
    // Before launch.json: the shim reads the cgroup from it. Named with the
    // node too: in local mode the agents share a host and its cgroups, and
    // each rank of a multi-node job kills only its own processes.
    let name = format!("{}.{}", spec.job_id.as_str(), settings.node_id);
    let cgroup = settings
        .cgroups
        .create(&name, gpu_minors.as_deref())
        .map_err(|e| {
            undo_mounts();
            JobError::new("JobCgroupFailed", e.to_string())
        })?;
    let layout = &settings.layout;
    let hostfile = paths.temp.join("hostfile");
    if let Some(m) = &spec.mpi
        && let Err(e) = std::fs::write(&hostfile, m.hostfile())
    {
        undo_mounts();
        if let Some(cg) = &cgroup {
            let _ = cg.remove();
        }
        return Err(fail("the MPI hostfile", &hostfile, e));
    }
    let env = job_env(
        &settings.base_env,
        spec,
        &NodePaths {
            job_temp: &paths.temp,
            job_temp_root: &layout.job_temp_root,
            shared_job_temp: &shared_temp,
            stdouterr_dir: &paths.spool,
            mount_root: &layout.mount_root,
            job_mount_root: &paths.mount_root,
            gpu_uuids: &spec.gpu_uuids,
            mpi: spec.mpi.as_ref().map(|_| MpiEnv {
                hostfile: &hostfile,
                // In a container, the launcher bound in for it.
                launcher: if spec.container.is_some() {
                    Path::new(container::MPI_LAUNCHER)
                } else {
                    &settings.mpi_launcher
                },
                node_id: &settings.node_id,
                session_dir: &paths.temp,
                as_root: run_as.is_none() && nix::unistd::geteuid().is_root(),
            }),
        },
    );
    // Batch AI made the output directories before the job; on a share the
    // mount's own permissions decide who may write, so a chown it refuses
    // is only noted.
    let mut notes = Vec::new();
    for (name, dir) in env.iter().filter(|(n, _)| n.starts_with(OUTPUT_PREFIX)) {
        let dir = Path::new(dir);
        if !dir.is_absolute() {
            continue;
        }
        if let Err(e) = std::fs::create_dir_all(dir) {
            undo_mounts();
            if let Some(cg) = &cgroup {
                let _ = cg.remove();
            }
            return Err(JobError::new(
                "JobOutputDirectoryFailed",
                format!("cannot create {name} {}: {e}", dir.display()),
            ));
        }
        if let Some(u) = &run_as
            && let Err(e) = std::os::unix::fs::chown(dir, Some(u.uid), Some(u.gid))
        {
            notes.push(format!(
                "{name} {}: not given to the job's user: {e}",
                dir.display()
            ));
        }
    }
    // A preparation inside a container writes its output files itself, as
    // the job's user.
    if let (Some(_), Some(_), Some(u)) = (&spec.container, &spec.preparation, &run_as) {
        for s in [Stream::JobPrepStdout, Stream::JobPrepStderr] {
            let _ = std::os::unix::fs::chown(paths.stream(s), Some(u.uid), Some(u.gid));
        }
    }
    let container = match &spec.container {
        None => None,
        Some(image) => {
            let minors = gpu_minors.as_deref();
            match container_launch(
                settings,
                spec,
                paths,
                image,
                run_as.as_ref(),
                &shared_temp,
                minors,
            ) {
                Ok(launch) => Some(launch),
                Err(e) => {
                    undo_mounts();
                    if let Some(cg) = &cgroup {
                        let _ = cg.remove();
                    }
                    return Err(e);
                }
            }
        }
    };
    let rec = LaunchRecord {
        job_id: spec.job_id.as_str().to_owned(),
        shell: settings.shell.clone(),
        command_line: spec.command_line.clone(),
        work_dir: paths.temp.clone(),
        env,
        max_wall_clock_ms: spec
            .max_wall_clock_time
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        assigned_at_ns: timefmt::to_unix_nanos(SystemTime::now()),
        run_as,
        cgroup,
        gpu_minors,
        gpu_uuids: spec.gpu_uuids.clone(),
        preparation: spec.preparation.clone(),
        // On the cluster's shared root the master's node removes it.
        shared_temp: shared_root.filter(|_| spec.rank == 0),
        container,
    };
    if let Err(e) = write_record(&paths.launch, &rec, 0o600) {
        let _ = job_mounts::unmount_all(paths);
        if let Some(cg) = &rec.cgroup {
            let _ = cg.remove();
        }
        return Err(fail("the launch record", &paths.launch, e));
    }
    let _ = log_line(
        &paths.stream(Stream::ExecutionLog),
        &format!(
            "bai-agent {} on node {}: starting job {}/{}/{} ({})",
            env!("CARGO_PKG_VERSION"),
            settings.node_id,
            spec.workspace,
            spec.experiment,
            spec.job_name,
            spec.job_id
        ),
    );
    for line in mounted.into_iter().chain(notes) {
        let _ = log_line(&paths.stream(Stream::ExecutionLog), &line);
    }
    Ok((rec.cgroup, rec.container))
}

/// Pulls a container job's image (a `pulling` line and the runtime's
/// progress in `execution.log`) and says how the shim runs it.
fn container_launch(
    settings: &JobSettings,
    spec: &JobSpec,
    paths: &JobPaths,
    image: &crate::model::ContainerImage,
    run_as: Option<&crate::node::admin_user::RunAs>,
    shared_temp: &Path,
    gpu_minors: Option<&[u32]>,
) -> Result<ContainerLaunch, JobError> {
    let runtime = settings.containers.as_deref().ok_or_else(|| {
        JobError::new(
            "ContainerRuntimeMissing",
            "this node has no container runtime (podman or docker)",
        )
    })?;
    let mut ro_binds = Vec::new();
    let devices = if spec.gpu_uuids.is_empty() {
        Vec::new()
    } else {
        match &runtime.gpus {
            GpuAccess::Cdi => container::gpu_devices(&spec.gpu_uuids),
            GpuAccess::DeviceNodes { dev_dir, driver } => {
                // The job's minors, found and checked by `prepare`.
                let minors = gpu_minors.ok_or_else(|| {
                    JobError::new(
                        "ContainerGpusUnavailable",
                        "the node's GPUs have no known device numbers",
                    )
                })?;
                ro_binds.extend(driver.iter().cloned());
                container::gpu_device_nodes(dev_dir, minors)
                    .map_err(|e| JobError::new("ContainerGpusUnavailable", e))?
            }
            GpuAccess::Unavailable => {
                return Err(JobError::new(
                    "ContainerGpusUnavailable",
                    "the job was given GPUs and this node can give a container none: no CDI spec (install the NVIDIA Container Toolkit and run `nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`) and no NVIDIA driver libraries",
                ));
            }
        }
    };
    let reference = container::reference(&image.image, &image.server_url);
    let log = paths.stream(Stream::ExecutionLog);
    // An image behind credentials is pulled every time, so each job's own
    // credentials are checked (another job's pull must not open it); any
    // other only when the node lacks it.
    if image.credentials.is_none() && container::cached(runtime, &reference) {
        let _ = log_line(&log, &format!("image {reference} is on this node already"));
    } else {
        let _ = log_line(&log, &format!("pulling {reference}"));
        let credentials = image
            .credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()));
        // In the job's own directory (0700), and gone once the image is here.
        let auth_dir = paths.dir.join("registry-auth");
        let pulled = container::pull(
            runtime,
            &reference,
            &image.server_url,
            credentials,
            &auth_dir,
            &log,
        );
        let _ = std::fs::remove_dir_all(&auth_dir);
        pulled.map_err(|e| JobError::new("ImagePullFailed", e))?;
        let _ = log_line(&log, &format!("pulled {reference}"));
    }
    if let Some(cache) = &settings.image_cache {
        cache.used(runtime, &reference, &|line| {
            let _ = log_line(&log, line);
        });
    }
    // A rank of an MPI job launches (or serves) OpenMPI's daemons with
    // bai-mpi: the host's, bound in with what it needs to run.
    if spec.mpi.is_some() {
        let script = paths.dir.join("bai-mpi.sh");
        let mpi = container::mpi_binds(&settings.mpi_launcher, &script).map_err(|e| {
            JobError::new(
                "ContainerMpiUnavailable",
                format!("cannot give the container bai-mpi: {e}"),
            )
        })?;
        ro_binds.extend(mpi);
    }
    let mut binds = vec![
        settings.layout.mount_root.clone(),
        paths.mount_root.clone(),
        paths.temp.clone(),
        shared_temp.to_owned(),
        paths.spool.clone(),
    ];
    binds.dedup();
    Ok(ContainerLaunch {
        runtime: runtime.clone(),
        run: ContainerRun {
            image: reference,
            name: container::name(spec.job_id.as_str(), &settings.node_id),
            binds,
            user: run_as.map(|u| format!("{}:{}", u.uid, u.gid)),
            shm_size: Some(image.shm_size.clone()).filter(|s| !s.is_empty()),
            devices,
            ro_binds,
        },
    })
}

/// Records a job that could not be started: an `execution.log` line and
/// `exit.json` where the directory allows, and the exit either way.
pub fn record_failure(paths: &JobPaths, err: JobError) -> JobExit {
    warn!(code = %err.code, "{}", err.message);
    let now = SystemTime::now();
    let _ = log_line(
        &paths.stream(Stream::ExecutionLog),
        &format!("the job could not be started: {}", err.message),
    );
    let _ = write_record(
        &paths.exit,
        &layout::ExitRecord {
            exit_code: -1,
            end_time_ns: timefmt::to_unix_nanos(now),
            error: Some(err.clone()),
        },
        0o644,
    );
    JobExit {
        exit_code: -1,
        end_time: now,
        error: Some(err),
        terminated: false,
        lengths: paths.lengths(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jobs_gpus_are_mapped_to_minors_when_the_node_knows_them() {
        let uuids = vec!["GPU-b".to_string()];
        let none = std::collections::HashMap::new();
        assert_eq!(gpu_minors(&uuids, &none).unwrap(), None);
        let map: std::collections::HashMap<String, u32> =
            [("GPU-a".to_string(), 0), ("GPU-b".to_string(), 1)].into();
        assert_eq!(gpu_minors(&uuids, &map).unwrap(), Some(vec![1]));
        assert_eq!(gpu_minors(&[], &map).unwrap(), Some(vec![]));
        let e = gpu_minors(&["GPU-z".to_string()], &map).unwrap_err();
        assert_eq!(e.code, "GpuNotFound");
        assert!(e.message.contains("GPU-z"));
    }
}
