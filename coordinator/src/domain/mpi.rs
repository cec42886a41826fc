//! The MPI launch, as Batch AI did it for customMpi, Horovod, Chainer and
//! multi-process CNTK and Caffe: `mpirun -np <processCount> --hostfile
//! $AZ_BATCHAI_MPI_HOST_FILE <program>` on the master, the program being the
//! custom command line or the toolkit's own (`python <script> <args>`,
//! `cntk configFile=…`). `processCount` defaults to `nodeCount`; the hostfile
//! gives each node `ceil(processCount / nodeCount)` slots.
//!
//! No SSH between nodes: every other rank of a multi-node job (MPI or
//! custom, whose command line may run `mpirun` itself) runs `bai-mpi serve`
//! inside the job, and the agent points OpenMPI's remote launch at
//! `bai-mpi`, which reaches a rank's server through `BAI_MPI_PEERS` and
//! proves it belongs to the job with the attempt's `BAI_MPI_TOKEN` (see the
//! agent's `mpi` module). Each rank's server listens on its own port, hashed
//! from the job id and the rank, distinct within the job, so local agents
//! sharing a host rarely meet.

use super::spec::{EnvVar, SecretEnvVar, Toolkit};
use super::types::Job;

/// What `mpirun` runs and how many processes, for a job launched with MPI;
/// `None` for a job that is not.
pub fn program(job: &Job) -> Option<(String, u32)> {
    let nodes = job.spec.node_count.max(1);
    let count = |c: u32| if c == 0 { nodes } else { c };
    let t = &job.spec.toolkit;
    match t {
        Toolkit::CustomMpi {
            command_line,
            process_count,
        } => Some((command_line.clone(), count(*process_count))),
        Toolkit::Horovod { script } | Toolkit::Chainer { script } => {
            Some((super::env::command_line(t), count(script.process_count)))
        }
        // Batch AI ran these through MPI when they had several processes.
        Toolkit::Cntk { script, .. } | Toolkit::Caffe { script, .. }
            if count(script.process_count) > 1 =>
        {
            Some((super::env::command_line(t), count(script.process_count)))
        }
        _ => None,
    }
}

/// The slots per node of the job's hostfile: its processes per node for an
/// MPI job, one for any other multi-node job (a custom command line may run
/// `mpirun` over the nodes itself), none for a single-node job without MPI.
pub fn slots(job: &Job) -> u32 {
    let nodes = job.spec.node_count.max(1);
    match program(job) {
        Some((_, processes)) => processes.div_ceil(nodes),
        None if nodes > 1 => 1,
        None => 0,
    }
}

/// Whether the job's ranks other than the master run `bai-mpi serve`.
pub fn serves(job: &Job) -> bool {
    job.spec.node_count > 1
        && (program(job).is_some() || matches!(job.spec.toolkit, Toolkit::Custom { .. }))
}

/// The master's `mpirun` line, for a job launched with MPI.
pub fn mpirun_line(job: &Job) -> Option<String> {
    let (program, processes) = program(job)?;
    Some(format!(
        "mpirun -np {processes} --hostfile \"$AZ_BATCHAI_MPI_HOST_FILE\" {program}"
    ))
}

/// What a serving rank runs.
pub const SERVE_LINE: &str = "exec \"$BAI_MPI_LAUNCHER\" serve";

/// The ports the ranks' servers listen on, in rank order: each from 10000
/// to 19999 by a hash of the job id and the rank (so two jobs' ranks on one
/// host rarely meet), the next free one where an earlier rank of the job has
/// it (local agents share a host).
fn ports(job: &Job, ranks: usize) -> Vec<u32> {
    use bai_common::hash::{fnv1a64, fnv1a64_update};
    let mut out: Vec<u32> = Vec::with_capacity(ranks);
    for rank in 0..ranks {
        let h = fnv1a64_update(fnv1a64(job.id.as_bytes()), &(rank as u64).to_le_bytes());
        let mut port = 10_000 + (h % 10_000) as u32;
        while out.contains(&port) {
            port = 10_000 + (port - 10_000 + 1) % 10_000;
        }
        out.push(port);
    }
    out
}

/// `BAI_MPI_PEERS` and the `BAI_MPI_TOKEN` secret of a multi-node job's
/// ranks; nothing for a single-node job (its launches stay on its node).
pub fn rank_env(job: &Job) -> Option<(EnvVar, SecretEnvVar)> {
    let gang = job.gang.as_ref()?;
    let ports = ports(job, gang.ranks.len());
    let peers = gang
        .ranks
        .iter()
        .zip(ports)
        .map(|(r, port)| format!("{}={}:{port}", r.node_id, r.address))
        .collect::<Vec<_>>()
        .join(",");
    Some((
        EnvVar {
            name: "BAI_MPI_PEERS".into(),
            value: peers,
        },
        SecretEnvVar {
            name: "BAI_MPI_TOKEN".into(),
            value: gang.token.clone(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures;
    use crate::domain::spec::PythonScript;
    use crate::domain::types::{Gang, JobRank};

    fn job(nodes: u32, toolkit: Toolkit) -> Job {
        let mut j = fixtures::job("w", "e", "m", "c");
        j.spec.node_count = nodes;
        j.spec.toolkit = toolkit;
        j
    }

    fn script(processes: u32) -> PythonScript {
        PythonScript {
            python_script_file_path: "hvd.py".into(),
            command_line_args: "--epochs 1".into(),
            process_count: processes,
            ..PythonScript::default()
        }
    }

    #[test]
    fn mpi_toolkits_run_mpirun_over_the_hostfile() {
        let mpi = job(
            3,
            Toolkit::CustomMpi {
                command_line: "./ring".into(),
                process_count: 0,
            },
        );
        assert_eq!(
            mpirun_line(&mpi).unwrap(),
            "mpirun -np 3 --hostfile \"$AZ_BATCHAI_MPI_HOST_FILE\" ./ring"
        );
        assert_eq!(slots(&mpi), 1);
        assert!(serves(&mpi));
        let hvd = job(2, Toolkit::Horovod { script: script(8) });
        assert_eq!(
            mpirun_line(&hvd).unwrap(),
            "mpirun -np 8 --hostfile \"$AZ_BATCHAI_MPI_HOST_FILE\" python hvd.py --epochs 1"
        );
        assert_eq!(slots(&hvd), 4);
        let chainer = job(2, Toolkit::Chainer { script: script(3) });
        assert_eq!(slots(&chainer), 2, "rounded up");
        // One CNTK process runs without MPI, several through it.
        let cntk = |p| {
            job(
                1,
                Toolkit::Cntk {
                    language_type: "BrainScript".into(),
                    config_file_path: "a.cntk".into(),
                    script: PythonScript {
                        process_count: p,
                        ..PythonScript::default()
                    },
                },
            )
        };
        assert!(mpirun_line(&cntk(1)).is_none());
        assert_eq!(slots(&cntk(1)), 0);
        assert!(
            mpirun_line(&cntk(2))
                .unwrap()
                .ends_with(" cntk configFile=a.cntk")
        );
    }

    #[test]
    fn other_ranks_serve_launches_and_know_their_peers() {
        let custom = job(
            2,
            Toolkit::Custom {
                command_line: "mpirun hostname".into(),
            },
        );
        assert!(
            serves(&custom),
            "a custom command line may run mpirun itself"
        );
        assert_eq!(slots(&custom), 1);
        assert!(mpirun_line(&custom).is_none(), "it runs as given");
        let single = job(1, custom.spec.toolkit.clone());
        assert!(!serves(&single) && slots(&single) == 0 && rank_env(&single).is_none());

        let mut j = custom.clone();
        j.gang = Some(Gang {
            ranks: ["a", "b"]
                .iter()
                .enumerate()
                .map(|(i, n)| JobRank {
                    node_id: n.to_string(),
                    address: format!("10.0.0.{i}"),
                    ..JobRank::default()
                })
                .collect(),
            token: crate::domain::Secret::new("t0k"),
            ..Gang::default()
        });
        let (peers, token) = rank_env(&j).unwrap();
        let p = ports(&j, 2);
        assert_eq!(
            peers.value,
            format!("a=10.0.0.0:{},b=10.0.0.1:{}", p[0], p[1])
        );
        assert_eq!(token.value.expose(), "t0k");
        // Every rank of a job of 100 nodes has its own port in the range.
        let mut all = ports(&j, 100);
        assert!(all.iter().all(|p| (10_000..20_000).contains(p)));
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 100);
    }
}
