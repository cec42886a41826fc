//! Distributed TensorFlow as Batch AI ran it: `workerCount` workers and
//! `parameterServerCount` parameter servers spread over the job's nodes, each
//! a process of the script with its role's arguments and its place in the
//! cluster in its environment.
//!
//! Layout: worker `i` runs on rank `i % nodeCount`, parameter server `j` on
//! rank `nodeCount - 1 - (j % nodeCount)` (from the last node back, away from
//! the master), so the recipes' 2 workers and 1 ps on 2 nodes put worker 0
//! alone on the master and worker 1 beside the ps. Worker 0 is the master: it
//! runs `masterCommandLineArgs`, and the job ends when it does (the parameter
//! servers never end on their own). Each task listens on its own port (one
//! range per job, so the tasks of local agents sharing a host never meet).
//!
//! Each task sees `AZ_BATCHAI_TASK_INDEX` (its index among its role),
//! `AZ_BATCHAI_WORKER_HOSTS` and `AZ_BATCHAI_PS_HOSTS` (`host:port`,
//! comma-separated; the ps list is left unset when there is no ps rather
//! than set empty) and `TF_CONFIG` (JSON: the cluster with `master` (worker
//! 0), `worker` (the other workers) and `ps`, the task's type and index, and
//! `"environment": "cloud"`), as TensorFlow's estimators read it.

use super::spec::{EnvVar, Toolkit};
use super::types::Job;

/// A task's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Worker 0.
    Master,
    Worker,
    ParameterServer,
}

/// One process of the job: its role, its index among its role's tasks (the
/// master is worker 0), the rank it runs on and its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub role: Role,
    pub index: u32,
    pub rank: u32,
    pub host: String,
}

/// The workers (the master first) and parameter servers of a distributed
/// TensorFlow job; `None` for any other job, or a TensorFlow job of one
/// process (it runs the master's arguments alone, as before).
pub fn tasks(job: &Job) -> Option<(Vec<Task>, Vec<Task>)> {
    let Toolkit::TensorFlow {
        worker_count,
        parameter_server_count,
        ..
    } = &job.spec.toolkit
    else {
        return None;
    };
    let nodes = job.spec.node_count.max(1);
    let distributed = nodes > 1 || *worker_count > 1 || *parameter_server_count > 0;
    if !distributed {
        return None;
    }
    let workers = if *worker_count == 0 {
        nodes
    } else {
        *worker_count
    };
    let ps = if *parameter_server_count == 0 {
        1
    } else {
        *parameter_server_count
    };
    let base = base_port(job);
    let task = |role, index, rank, slot: u32| Task {
        role,
        index,
        rank,
        host: format!("{}:{}", job.rank_address(rank), base + slot),
    };
    let ps_tasks = (0..ps)
        .map(|j| task(Role::ParameterServer, j, nodes - 1 - (j % nodes), j))
        .collect();
    let worker_tasks = (0..workers)
        .map(|i| {
            let role = if i == 0 { Role::Master } else { Role::Worker };
            task(role, i, i % nodes, ps + i)
        })
        .collect();
    Some((worker_tasks, ps_tasks))
}

/// The first of the ports the job's tasks listen on: from 20000, a slot of
/// 8 per job from its id (below PyTorch's `MASTER_PORT` range).
fn base_port(job: &Job) -> u32 {
    20_000 + (bai_common::hash::fnv1a64(job.id.as_bytes()) % 1000) as u32 * 8
}

/// Whether rank `rank` of a distributed TensorFlow job runs any task.
pub fn runs_on_rank(job: &Job, rank: u32) -> bool {
    match tasks(job) {
        Some((w, p)) => w.iter().chain(&p).any(|t| t.rank == rank),
        None => rank == 0,
    }
}

/// A task's own variables: its index and `TF_CONFIG`.
fn task_env(task: &Task, workers: &[Task], ps: &[Task]) -> Vec<EnvVar> {
    let hosts = |ts: &[Task]| ts.iter().map(|t| t.host.clone()).collect::<Vec<_>>();
    let mut cluster = serde_json::Map::new();
    cluster.insert("master".into(), hosts(&workers[..1]).into());
    if workers.len() > 1 {
        cluster.insert("worker".into(), hosts(&workers[1..]).into());
    }
    if !ps.is_empty() {
        cluster.insert("ps".into(), hosts(ps).into());
    }
    let (kind, index) = match task.role {
        Role::Master => ("master", 0),
        Role::Worker => ("worker", task.index - 1),
        Role::ParameterServer => ("ps", task.index),
    };
    let config = serde_json::json!({
        "cluster": cluster,
        "task": {"type": kind, "index": index},
        "environment": "cloud",
    });
    vec![
        var("AZ_BATCHAI_TASK_INDEX", task.index.to_string()),
        var("TF_CONFIG", config.to_string()),
    ]
}

fn var(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value,
    }
}

/// The variables every task of the job shares: the host lists.
fn job_env(workers: &[Task], ps: &[Task]) -> Vec<EnvVar> {
    let list = |ts: &[Task]| {
        ts.iter()
            .map(|t| t.host.as_str())
            .collect::<Vec<_>>()
            .join(",")
    };
    let mut vars = vec![var("AZ_BATCHAI_WORKER_HOSTS", list(workers))];
    if !ps.is_empty() {
        vars.push(var("AZ_BATCHAI_PS_HOSTS", list(ps)));
    }
    vars
}

/// What rank `rank` runs: its variables and its command line. A rank with
/// one task gets that task's variables and runs it; a rank with several
/// (a worker beside a parameter server, or more workers than nodes) runs
/// each in its own subshell with its own variables exported, ends when its
/// workers have (with the first failing one's code) and then stops its
/// parameter servers; a rank of parameter servers only runs until stopped.
/// `None` when the job is not a distributed TensorFlow job.
pub fn rank_launch(job: &Job, rank: u32) -> Option<(Vec<EnvVar>, String)> {
    let Toolkit::TensorFlow {
        script,
        master_command_line_args,
        worker_command_line_args,
        parameter_server_command_line_args,
        ..
    } = &job.spec.toolkit
    else {
        return None;
    };
    let (workers, ps) = tasks(job)?;
    let mut env = job_env(&workers, &ps);
    let mine: Vec<&Task> = workers
        .iter()
        .chain(&ps)
        .filter(|t| t.rank == rank)
        .collect();
    let args = |t: &Task| match t.role {
        Role::Master => master_command_line_args,
        Role::Worker => worker_command_line_args,
        Role::ParameterServer => parameter_server_command_line_args,
    };
    let line = |t: &Task| super::env::python(script, args(t));
    if let [only] = mine.as_slice() {
        env.extend(task_env(only, &workers, &ps));
        return Some((env, line(only)));
    }
    let sub = |t: &Task| {
        let exports = task_env(t, &workers, &ps)
            .into_iter()
            .map(|v| format!("{}={}", v.name, quote(&v.value)))
            .collect::<Vec<_>>()
            .join(" ");
        format!("( export {exports}; {} ) &", line(t))
    };
    let (own_workers, own_ps): (Vec<&Task>, Vec<&Task>) =
        mine.iter().partition(|t| t.role != Role::ParameterServer);
    let mut parts = Vec::new();
    if own_workers.is_empty() {
        parts.extend(own_ps.iter().map(|t| sub(t)));
        parts.push("wait".to_string());
    } else {
        parts.push("ps_pids=''; worker_pids=''".to_string());
        for t in &own_ps {
            parts.push(format!("{} ps_pids=\"$ps_pids $!\"", sub(t)));
        }
        for t in &own_workers {
            parts.push(format!("{} worker_pids=\"$worker_pids $!\"", sub(t)));
        }
        parts.push(
            "rc=0; for p in $worker_pids; do wait $p || { s=$?; [ $rc -ne 0 ] || rc=$s; }; done"
                .to_string(),
        );
        parts.push("[ -z \"$ps_pids\" ] || kill $ps_pids 2>/dev/null; exit $rc".to_string());
    }
    Some((env, parts.join("\n")))
}

/// `value` in single quotes for bash.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures;
    use crate::domain::spec::PythonScript;
    use crate::domain::types::{Gang, JobRank};

    fn tf_job(nodes: u32, workers: u32, ps: u32) -> Job {
        let mut j = fixtures::job("w", "e", "tf", "c");
        j.spec.node_count = nodes;
        j.spec.toolkit = Toolkit::TensorFlow {
            script: PythonScript {
                python_script_file_path: "mnist.py".into(),
                ..PythonScript::default()
            },
            master_command_line_args: "--m".into(),
            worker_command_line_args: "--w".into(),
            parameter_server_command_line_args: "--ps".into(),
            worker_count: workers,
            parameter_server_count: ps,
        };
        if nodes > 1 {
            j.gang = Some(Gang {
                ranks: (0..nodes)
                    .map(|r| JobRank {
                        node_id: format!("n{r}"),
                        address: format!("10.0.0.{r}"),
                        gpu_uuids: vec![],
                        launched: true,
                        started: false,
                        ended: false,
                    })
                    .collect(),
                ..Gang::default()
            });
        }
        j
    }

    fn value<'a>(env: &'a [EnvVar], name: &str) -> Option<&'a str> {
        env.iter()
            .find(|v| v.name == name)
            .map(|v| v.value.as_str())
    }

    #[test]
    fn the_recipes_two_workers_and_one_ps_on_two_nodes() {
        let j = tf_job(2, 2, 1);
        let (workers, ps) = tasks(&j).unwrap();
        let ranks = |ts: &[Task]| ts.iter().map(|t| t.rank).collect::<Vec<_>>();
        assert_eq!(ranks(&workers), [0, 1]);
        assert_eq!(ranks(&ps), [1], "the ps goes on the last node");
        let base = base_port(&j);
        assert_eq!(ps[0].host, format!("10.0.0.1:{base}"));
        assert_eq!(workers[0].host, format!("10.0.0.0:{}", base + 1));
        assert_eq!(workers[1].host, format!("10.0.0.1:{}", base + 2));

        // The master runs alone, with its own args and TF_CONFIG.
        let (env, line) = rank_launch(&j, 0).unwrap();
        assert_eq!(line, "python mnist.py --m");
        assert_eq!(value(&env, "AZ_BATCHAI_TASK_INDEX"), Some("0"));
        assert_eq!(
            value(&env, "AZ_BATCHAI_WORKER_HOSTS"),
            Some(format!("{},{}", workers[0].host, workers[1].host).as_str())
        );
        assert_eq!(
            value(&env, "AZ_BATCHAI_PS_HOSTS"),
            Some(ps[0].host.as_str())
        );
        let config: serde_json::Value =
            serde_json::from_str(value(&env, "TF_CONFIG").unwrap()).unwrap();
        assert_eq!(
            config["task"],
            serde_json::json!({"type": "master", "index": 0})
        );
        assert_eq!(
            config["cluster"]["master"],
            serde_json::json!([workers[0].host])
        );
        assert_eq!(
            config["cluster"]["worker"],
            serde_json::json!([workers[1].host])
        );
        assert_eq!(config["cluster"]["ps"], serde_json::json!([ps[0].host]));
        assert_eq!(config["environment"], "cloud");

        // Rank 1 runs worker 1 and the ps, each with its own variables.
        let (env, line) = rank_launch(&j, 1).unwrap();
        assert_eq!(value(&env, "TF_CONFIG"), None, "per task, in the line");
        assert!(
            line.contains("export AZ_BATCHAI_TASK_INDEX='1' TF_CONFIG='{"),
            "{line}"
        );
        assert!(
            line.contains("\"task\":{\"index\":0,\"type\":\"worker\"}"),
            "{line}"
        );
        assert!(
            line.contains("\"task\":{\"index\":0,\"type\":\"ps\"}"),
            "{line}"
        );
        assert!(
            line.contains("python mnist.py --w ) & worker_pids"),
            "{line}"
        );
        assert!(line.contains("python mnist.py --ps ) & ps_pids"), "{line}");
        assert!(
            line.ends_with("kill $ps_pids 2>/dev/null; exit $rc"),
            "{line}"
        );
        assert!(runs_on_rank(&j, 0) && runs_on_rank(&j, 1));
    }

    #[test]
    fn defaults_spread_and_the_single_process_case() {
        // Workers default to one per node, ps to one.
        let j = tf_job(3, 0, 0);
        let (workers, ps) = tasks(&j).unwrap();
        assert_eq!(workers.len(), 3);
        assert_eq!((ps.len(), ps[0].rank), (1, 2));
        // A rank of a parameter server only runs it (until it is stopped).
        let j = tf_job(3, 1, 2);
        assert_eq!(rank_launch(&j, 1).unwrap().1, "python mnist.py --ps");
        assert_eq!(rank_launch(&j, 2).unwrap().1, "python mnist.py --ps");
        // More workers than nodes share them.
        let j = tf_job(2, 4, 1);
        let (_, line) = rank_launch(&j, 0).unwrap();
        assert_eq!(line.matches("--w )").count(), 1, "{line}");
        assert_eq!(line.matches("--m )").count(), 1, "{line}");
        // One node and one worker is not distributed.
        assert!(tasks(&tf_job(1, 1, 0)).is_none());
        assert!(tasks(&tf_job(1, 0, 0)).is_none());
        // Without parameter servers there is no empty PS_HOSTS: there are
        // always some once distributed, and a non-TF job has none.
        assert!(rank_launch(&fixtures::job("w", "e", "x", "c"), 0).is_none());
    }

    #[test]
    fn a_rank_with_no_task_runs_nothing() {
        // 3 nodes, 1 worker, 1 ps: rank 1 holds its node and runs nothing.
        let j = tf_job(3, 1, 1);
        assert!(runs_on_rank(&j, 0));
        assert!(!runs_on_rank(&j, 1));
        assert!(runs_on_rank(&j, 2));
    }
}
