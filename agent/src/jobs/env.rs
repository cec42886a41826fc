//! The environment a job runs with (pure functions over data): a sane base
//! (PATH, HOME, USER, LANG...), the coordinator's `AZ_BATCHAI_*` variables,
//! the node-local Batch AI paths, the job's own variables, its secrets, and
//! last the GPUs it was given (`CUDA_VISIBLE_DEVICES` and friends: a job
//! cannot widen its allocation by setting them itself). Later entries
//! override earlier ones of the same name.

use crate::model::{EnvVar, JobSpec};
use std::path::Path;

/// `PATH` for jobs (the agent's own PATH may be systemd's minimal one).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The user the jobs run as and a few settings taken from the agent's environment.
#[derive(Clone, Debug)]
pub struct BaseEnv {
    pub user: String,
    pub home: String,
    pub lang: Option<String>,
    pub tz: Option<String>,
}

impl BaseEnv {
    /// The current user's name and home, `LANG` and `TZ` from the agent's environment.
    pub fn from_process() -> Self {
        let uid = nix::unistd::getuid();
        let user = nix::unistd::User::from_uid(uid).ok().flatten();
        Self {
            user: user
                .as_ref()
                .map_or_else(|| uid.to_string(), |u| u.name.clone()),
            home: user.map_or_else(|| "/".to_owned(), |u| u.dir.display().to_string()),
            lang: std::env::var("LANG").ok().filter(|s| !s.is_empty()),
            tz: std::env::var("TZ").ok().filter(|s| !s.is_empty()),
        }
    }

    fn vars(&self) -> Vec<EnvVar> {
        let mut v = vec![
            EnvVar::new("PATH", DEFAULT_PATH),
            EnvVar::new("HOME", &self.home),
            EnvVar::new("USER", &self.user),
            EnvVar::new("LOGNAME", &self.user),
            EnvVar::new("SHELL", "/bin/bash"),
            EnvVar::new("LANG", self.lang.as_deref().unwrap_or("C.UTF-8")),
        ];
        if let Some(tz) = &self.tz {
            v.push(EnvVar::new("TZ", tz));
        }
        v
    }
}

/// The node-local Batch AI paths of one job.
#[derive(Clone, Debug)]
pub struct NodePaths<'a> {
    pub job_temp: &'a Path,
    pub job_temp_root: &'a Path,
    pub shared_job_temp: &'a Path,
    pub stdouterr_dir: &'a Path,
    pub mount_root: &'a Path,
    pub job_mount_root: &'a Path,
    /// The UUIDs of the GPUs the job was given (none: it sees no GPU).
    pub gpu_uuids: &'a [String],
    /// Where the job has an OpenMPI hostfile, what its MPI launch needs.
    pub mpi: Option<MpiEnv<'a>>,
}

/// A job's OpenMPI setting on this node: its hostfile, and `mpirun`'s
/// remote launch through `bai-mpi` (no SSH between nodes; tree spawn off,
/// so every daemon is launched from the master).
#[derive(Clone, Debug)]
pub struct MpiEnv<'a> {
    pub hostfile: &'a Path,
    pub launcher: &'a Path,
    pub node_id: &'a str,
    /// Where OpenMPI keeps its session directories (the job's temp).
    pub session_dir: &'a Path,
    /// The job runs as root, which mpirun refuses unless told.
    pub as_root: bool,
}

impl MpiEnv<'_> {
    fn vars(&self) -> Vec<EnvVar> {
        let launcher = self.launcher.display().to_string();
        let mut v = vec![
            EnvVar::new(
                "AZ_BATCHAI_MPI_HOST_FILE",
                self.hostfile.display().to_string(),
            ),
            EnvVar::new(crate::mpi::NODE_VAR, self.node_id),
            EnvVar::new("BAI_MPI_LAUNCHER", &launcher),
            EnvVar::new("OMPI_MCA_plm_rsh_agent", &launcher),
            EnvVar::new("OMPI_MCA_plm_rsh_no_tree_spawn", "1"),
            // OpenMPI's session directories in the job's own temp: the
            // daemons of ranks sharing a host (local mode) must not meet in
            // one /tmp/ompi.<host>.<uid>, and they go with the job.
            EnvVar::new(
                "OMPI_MCA_orte_tmpdir_base",
                self.session_dir.display().to_string(),
            ),
        ];
        if self.as_root {
            v.push(EnvVar::new("OMPI_ALLOW_RUN_AS_ROOT", "1"));
            v.push(EnvVar::new("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1"));
        }
        v
    }
}

impl NodePaths<'_> {
    fn vars(&self) -> Vec<EnvVar> {
        let p = |name: &str, path: &Path| EnvVar::new(name, path.display().to_string());
        vec![
            p("AZ_BATCHAI_JOB_TEMP", self.job_temp),
            p("AZ_BATCHAI_JOB_TEMP_DIR", self.job_temp_root),
            p("AZ_BATCHAI_SHARED_JOB_TEMP", self.shared_job_temp),
            p("AZ_BATCHAI_STDOUTERR_DIR", self.stdouterr_dir),
            p("AZ_BATCHAI_MOUNT_ROOT", self.mount_root),
            p("AZ_BATCHAI_JOB_MOUNT_ROOT", self.job_mount_root),
            EnvVar::new("AZ_BATCHAI_NUM_GPUS", self.gpu_uuids.len().to_string()),
        ]
    }

    /// CUDA's and the NVIDIA container runtime's names for the job's GPUs;
    /// an empty `CUDA_VISIBLE_DEVICES` hides every GPU from CUDA.
    fn gpu_vars(&self) -> Vec<EnvVar> {
        let list = self.gpu_uuids.join(",");
        vec![
            EnvVar::new("CUDA_DEVICE_ORDER", "PCI_BUS_ID"),
            EnvVar::new("CUDA_VISIBLE_DEVICES", &list),
            EnvVar::new(
                "NVIDIA_VISIBLE_DEVICES",
                if list.is_empty() { "void" } else { &list },
            ),
        ]
    }
}

/// `value` with the node-local paths of `vars` it names (`$AZ_BATCHAI_MOUNT_ROOT`,
/// `${AZ_BATCHAI_JOB_MOUNT_ROOT}`, …) filled in: the coordinator's input and
/// output directories may start with them, and a job's shell would not expand
/// a variable inside another's value. Other `$` text stays.
fn expand(vars: &[EnvVar], value: &str) -> String {
    let known = |name: &str| {
        vars.iter()
            .find(|v| v.name == name && v.name != "AZ_BATCHAI_NUM_GPUS")
            .map(|v| v.value.clone())
    };
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, len) = match after.strip_prefix('{') {
            Some(braced) => match braced.find('}') {
                Some(end) => (&braced[..end], end + 2),
                None => ("", 0),
            },
            None => {
                let end = after.find(|c| !word(c)).unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        match known(name) {
            Some(v) if len > 0 => {
                out.push_str(&v);
                rest = &after[len..];
            }
            _ => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The job's full environment, in a stable order.
pub fn job_env(base: &BaseEnv, spec: &JobSpec, node: &NodePaths<'_>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let paths = node.vars();
    let system = spec
        .system_environment_variables
        .iter()
        .map(|v| EnvVar::new(&v.name, expand(&paths, &v.value)))
        .collect();
    let layers = [
        base.vars(),
        system,
        paths,
        node.mpi.as_ref().map(MpiEnv::vars).unwrap_or_default(),
        spec.environment_variables.clone(),
        spec.secrets.clone(),
        node.gpu_vars(),
    ];
    for var in layers.into_iter().flatten() {
        if var.name.is_empty() || var.name.contains('=') || var.name.contains('\0') {
            continue;
        }
        match out.iter_mut().find(|(n, _)| *n == var.name) {
            Some(slot) => slot.1 = var.value,
            None => out.push((var.name, var.value)),
        }
    }
    out.retain(|(_, v)| !v.contains('\0'));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::JobId;
    use std::path::PathBuf;

    fn spec() -> JobSpec {
        JobSpec {
            job_id: JobId::parse("j1").unwrap(),
            workspace: "w".into(),
            experiment: "e".into(),
            job_name: "n".into(),
            command_line: "echo $TOKEN".into(),
            environment_variables: vec![
                EnvVar::new("EPOCHS", "3"),
                EnvVar::new("LANG", "de_DE.UTF-8"),
            ],
            secrets: vec![EnvVar::new("TOKEN", "s3cr3t"), EnvVar::new("BAD=NAME", "x")],
            system_environment_variables: vec![
                EnvVar::new("AZ_BATCHAI_JOB_NAME", "n"),
                EnvVar::new("AZ_BATCHAI_NUM_GPUS", "99"),
            ],
            max_wall_clock_time: None,
            volumes: Vec::new(),
            gpu_uuids: Vec::new(),
            preparation: None,
            mpi: None,
            rank: 0,
            nodes: 1,
            container: None,
        }
    }

    fn env() -> Vec<(String, String)> {
        env_with(&spec(), &[])
    }

    fn env_with(spec: &JobSpec, gpus: &[String]) -> Vec<(String, String)> {
        let base = BaseEnv {
            user: "root".into(),
            home: "/root".into(),
            lang: None,
            tz: None,
        };
        let p = |s: &str| PathBuf::from(s);
        let (t, r, sh, so, m, jm) = (
            p("/w/j1"),
            p("/w"),
            p("/w/j1/shared"),
            p("/s/jobs/j1/stdouterr"),
            p("/m"),
            p("/s/job-mounts/j1"),
        );
        let node = NodePaths {
            job_temp: &t,
            job_temp_root: &r,
            shared_job_temp: &sh,
            stdouterr_dir: &so,
            mount_root: &m,
            job_mount_root: &jm,
            gpu_uuids: gpus,
            mpi: None,
        };
        job_env(&base, spec, &node)
    }

    #[test]
    fn a_job_sees_exactly_its_gpus_and_cannot_widen_them() {
        let mut s = spec();
        s.environment_variables
            .push(EnvVar::new("CUDA_VISIBLE_DEVICES", "0,1,2,3"));
        let gpus = ["GPU-a".to_string(), "GPU-b".to_string()];
        let e = env_with(&s, &gpus);
        assert_eq!(get(&e, "CUDA_VISIBLE_DEVICES"), Some("GPU-a,GPU-b"));
        assert_eq!(get(&e, "NVIDIA_VISIBLE_DEVICES"), Some("GPU-a,GPU-b"));
        assert_eq!(get(&e, "CUDA_DEVICE_ORDER"), Some("PCI_BUS_ID"));
        assert_eq!(get(&e, "AZ_BATCHAI_NUM_GPUS"), Some("2"));
        let e = env_with(&s, &[]);
        assert_eq!(
            get(&e, "CUDA_VISIBLE_DEVICES"),
            Some(""),
            "no GPU: CUDA sees none"
        );
        assert_eq!(get(&e, "NVIDIA_VISIBLE_DEVICES"), Some("void"));
        assert_eq!(get(&e, "AZ_BATCHAI_NUM_GPUS"), Some("0"));
    }

    #[test]
    fn input_and_output_paths_get_the_nodes_paths() {
        let mut s = spec();
        s.system_environment_variables.extend([
            EnvVar::new(
                "AZ_BATCHAI_OUTPUT_MODEL",
                "$AZ_BATCHAI_JOB_MOUNT_ROOT/afs/ws/u-1/models",
            ),
            EnvVar::new("AZ_BATCHAI_INPUT_DATA", "${AZ_BATCHAI_MOUNT_ROOT}/bfs/data"),
            EnvVar::new(
                "AZ_BATCHAI_INPUT_TMP",
                "$AZ_BATCHAI_JOB_TEMP_DIR/x:$AZ_BATCHAI_JOB_TEMP",
            ),
            EnvVar::new(
                "AZ_BATCHAI_INPUT_RAW",
                "$HOME/$AZ_BATCHAI_MOUNT_ROOTX/${NOPE}/$",
            ),
        ]);
        s.environment_variables
            .push(EnvVar::new("MINE", "$AZ_BATCHAI_MOUNT_ROOT"));
        let e = env_with(&s, &[]);
        assert_eq!(
            get(&e, "AZ_BATCHAI_OUTPUT_MODEL"),
            Some("/s/job-mounts/j1/afs/ws/u-1/models")
        );
        assert_eq!(get(&e, "AZ_BATCHAI_INPUT_DATA"), Some("/m/bfs/data"));
        assert_eq!(get(&e, "AZ_BATCHAI_INPUT_TMP"), Some("/w/x:/w/j1"));
        assert_eq!(
            get(&e, "AZ_BATCHAI_INPUT_RAW"),
            Some("$HOME/$AZ_BATCHAI_MOUNT_ROOTX/${NOPE}/$"),
            "only the node's paths, whole names only"
        );
        assert_eq!(
            get(&e, "MINE"),
            Some("$AZ_BATCHAI_MOUNT_ROOT"),
            "the job's own values are its own"
        );
    }

    fn get<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
        env.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    #[test]
    fn layers_are_merged_in_order() {
        let e = env();
        assert_eq!(get(&e, "PATH"), Some(DEFAULT_PATH));
        assert_eq!(get(&e, "HOME"), Some("/root"));
        assert_eq!(get(&e, "AZ_BATCHAI_JOB_NAME"), Some("n"));
        // Node-local values win over the coordinator's for node-local variables.
        assert_eq!(get(&e, "AZ_BATCHAI_NUM_GPUS"), Some("0"));
        assert_eq!(
            get(&e, "AZ_BATCHAI_STDOUTERR_DIR"),
            Some("/s/jobs/j1/stdouterr")
        );
        assert_eq!(get(&e, "AZ_BATCHAI_JOB_TEMP"), Some("/w/j1"));
        assert_eq!(
            get(&e, "AZ_BATCHAI_JOB_MOUNT_ROOT"),
            Some("/s/job-mounts/j1")
        );
        // The job's own variables override the base.
        assert_eq!(get(&e, "LANG"), Some("de_DE.UTF-8"));
        assert_eq!(get(&e, "EPOCHS"), Some("3"));
        assert_eq!(e.iter().filter(|(n, _)| n == "LANG").count(), 1);
    }

    #[test]
    fn secrets_are_in_the_environment_and_bad_names_are_dropped() {
        let e = env();
        assert_eq!(get(&e, "TOKEN"), Some("s3cr3t"));
        assert!(e.iter().all(|(n, _)| !n.contains('=')));
    }
}
