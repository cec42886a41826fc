//! Multi-node jobs on local agents: a 3-node pyTorch job whose ranks meet
//! over TCP at the rendezvous their environment names, each rank's output
//! kept apart, a terminate that stops every rank on every node, TensorFlow's
//! roles, and real `mpirun` (OpenMPI) across 3 nodes through `bai-mpi`.

use anyhow::Result;
use bai_common::standins;
use bai_proto::v1 as pb;
use bai_tests::{Clients, Coordinator, exec_state, exit_code, procs};
use std::path::Path;
use std::time::Duration;

/// The rendezvous: rank 0 listens on MASTER_ADDR:MASTER_PORT and waits for
/// every other rank to say who it is; each worker connects (retrying until
/// the master listens) and hears back the ranks the master has seen. Every
/// rank prints its environment first.
const RENDEZVOUS: &str = r#"
import os, socket, sys, time
env = {k: os.environ.get(k, "<unset>") for k in
       ["RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK",
        "AZ_BATCHAI_TASK_INDEX", "AZ_BATCHAI_PYTORCH_INIT_METHOD",
        "AZ_BATCHAI_PYTORCH_BACKEND"]}
print("env", " ".join(f"{k}={v}" for k, v in sorted(env.items())), flush=True)
rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
addr, port = env["MASTER_ADDR"], int(env["MASTER_PORT"])
if rank == 0:
    srv = socket.create_server((addr, port), reuse_port=False)
    srv.settimeout(60)
    seen = [0]
    peers = []
    while len(seen) < world:
        conn, _ = srv.accept()
        seen.append(int(conn.recv(16).decode()))
        peers.append(conn)
    seen.sort()
    for conn in peers:
        conn.sendall(",".join(map(str, seen)).encode())
        conn.close()
    print("master saw ranks", ",".join(map(str, seen)), flush=True)
else:
    deadline = time.time() + 60
    while True:
        try:
            conn = socket.create_connection((addr, port), timeout=5)
            break
        except OSError:
            if time.time() > deadline:
                sys.exit("no master at %s:%d" % (addr, port))
            time.sleep(0.1)
    conn.sendall(str(rank).encode())
    print("worker", rank, "heard", conn.recv(64).decode(), flush=True)
"#;

/// A pyTorch job of `nodes` nodes running the script at `script`.
fn pytorch_job(name: &str, nodes: i32, script: &Path) -> pb::Job {
    pb::Job {
        node_count: nodes,
        toolkit: Some(pb::job::Toolkit::PyTorchSettings(pb::PyTorchSettings {
            python_script_file_path: script.display().to_string(),
            python_interpreter_path: "python3".into(),
            communication_backend: "Gloo".into(),
            ..Default::default()
        })),
        ..bai_tests::custom_job("ws", "ex", name, "c1", "unused")
    }
}

/// A coordinator with workspace ws, experiment ex and cluster c1 of
/// `nodes` idle local agents.
async fn cluster(nodes: i32) -> Result<(Coordinator, Clients)> {
    let coord = Coordinator::start()?;
    let mut c = coord.clients().await?;
    c.setup_cluster("ws", "ex", "c1", nodes).await?;
    Ok((coord, c))
}

async fn submit(c: &mut Clients, job: pb::Job) -> Result<pb::Job> {
    Ok(c.jobs
        .create_job(pb::CreateJobRequest { job: Some(job) })
        .await?
        .into_inner())
}

async fn text(c: &mut Clients, job: &str, file: &str) -> Result<String> {
    Ok(String::from_utf8(
        c.read_output("ws", "ex", job, file).await?,
    )?)
}

/// `VAR=value` from the `env …` line a rank printed.
fn var<'a>(out: &'a str, name: &str) -> &'a str {
    let line = out.lines().find(|l| l.starts_with("env ")).unwrap_or("");
    line.split(' ')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .unwrap_or("<missing>")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_ranks_of_a_pytorch_job_meet_at_their_rendezvous() -> Result<()> {
    if standins::require_program("python3").is_none() {
        return Ok(());
    }
    let (coord, mut c) = cluster(3).await?;
    let script = coord.state_dir().join("rendezvous.py");
    std::fs::write(&script, RENDEZVOUS)?;
    submit(&mut c, pytorch_job("ddp", 3, &script)).await?;
    let done = c
        .wait_job("ws", "ex", "ddp", Duration::from_secs(90))
        .await?;
    let master = text(&mut c, "ddp", "stdout.txt").await?;
    assert_eq!(
        exec_state(&done),
        pb::ExecutionState::Succeeded,
        "{done:?}\nmaster:\n{master}\n{}",
        coord.agent_logs()
    );
    assert_eq!(exit_code(&done), Some(0));
    let mut nodes = done.node_ids.clone();
    nodes.sort();
    nodes.dedup();
    assert_eq!(
        nodes.len(),
        3,
        "three nodes, master first: {:?}",
        done.node_ids
    );
    assert!(master.contains("master saw ranks 0,1,2\n"), "{master}");
    let mut outs = vec![master];
    for rank in 1..3 {
        let out = text(&mut c, "ddp", &format!("stdout-{rank}.txt")).await?;
        assert!(
            out.contains(&format!("worker {rank} heard 0,1,2\n")),
            "{out}"
        );
        outs.push(out);
    }
    let (addr, port) = (var(&outs[0], "MASTER_ADDR"), var(&outs[0], "MASTER_PORT"));
    assert!(!addr.is_empty() && addr != "<unset>", "{}", outs[0]);
    for (rank, out) in outs.iter().enumerate() {
        assert_eq!(var(out, "RANK"), rank.to_string(), "{out}");
        assert_eq!(var(out, "AZ_BATCHAI_TASK_INDEX"), rank.to_string(), "{out}");
        assert_eq!(var(out, "WORLD_SIZE"), "3", "{out}");
        assert_eq!(var(out, "LOCAL_RANK"), "0", "{out}");
        assert_eq!(var(out, "AZ_BATCHAI_PYTORCH_BACKEND"), "gloo", "{out}");
        assert_eq!(var(out, "MASTER_ADDR"), addr, "{out}");
        assert_eq!(var(out, "MASTER_PORT"), port, "{out}");
        assert_eq!(
            var(out, "AZ_BATCHAI_PYTORCH_INIT_METHOD"),
            format!("tcp://{addr}:{port}"),
            "{out}"
        );
    }
    // Every rank's files are listed; each node logged its own launch.
    let files = c.list_output("ws", "ex", "ddp").await?;
    for f in [
        "stdout.txt",
        "stdout-1.txt",
        "stdout-2.txt",
        "execution-2.log",
    ] {
        assert!(files.contains_key(f), "{f} not in {files:?}");
    }
    // The gang's nodes are free again.
    c.wait_idle_nodes("ws", "c1", 3, Duration::from_secs(20))
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_stops_every_rank_of_a_three_node_job() -> Result<()> {
    if standins::require_program("python3").is_none() {
        return Ok(());
    }
    let (coord, mut c) = cluster(3).await?;
    let script = coord.state_dir().join("hold.py");
    // Each rank runs a child that outlives SIGTERM to the shell it came from
    // only if the agent forgets that rank's process tree.
    std::fs::write(
        &script,
        "import os, subprocess\n\
         subprocess.run(['sleep', str(41000 + int(os.environ['RANK']))])\n",
    )?;
    submit(&mut c, pytorch_job("hold", 3, &script)).await?;
    let sleeps = ["sleep 41000", "sleep 41001", "sleep 41002"];
    let alive = |p: &str| procs::alive_with_cmdline(p);
    bai_tests::eventually(Duration::from_secs(60), "every rank's process", || async {
        Ok(sleeps.iter().all(|p| !alive(p).is_empty()))
    })
    .await?;
    c.jobs
        .terminate_job(pb::TerminateJobRequest {
            job: Some(bai_tests::key("ws", "ex", "hold")),
        })
        .await?;
    let done = c
        .wait_job("ws", "ex", "hold", Duration::from_secs(60))
        .await?;
    assert_eq!(exec_state(&done), pb::ExecutionState::Failed, "{done:?}");
    let left: Vec<_> = sleeps.iter().flat_map(|p| alive(p)).collect();
    assert!(left.is_empty(), "ranks survived the terminate: {left:?}");
    c.wait_idle_nodes("ws", "c1", 3, Duration::from_secs(20))
        .await?;
    Ok(())
}

/// Each task prints what it was told, as one JSON line: its argv, task
/// index, host lists and TF_CONFIG; a parameter server then serves until
/// it is stopped, as TensorFlow's do.
const TF_TASK: &str = r#"
import json, os, sys, time
print("task " + json.dumps({
    "argv": sys.argv[1:],
    "index": os.environ.get("AZ_BATCHAI_TASK_INDEX"),
    "workers": os.environ.get("AZ_BATCHAI_WORKER_HOSTS"),
    "ps": os.environ.get("AZ_BATCHAI_PS_HOSTS"),
    "tf_config": json.loads(os.environ["TF_CONFIG"]),
}), flush=True)
if "--ps" in sys.argv:
    while True:
        time.sleep(1)
time.sleep(0.5)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tensorflow_tasks_get_their_roles_hosts_and_tf_config_on_every_node() -> Result<()> {
    if standins::require_program("python3").is_none() {
        return Ok(());
    }
    let (coord, mut c) = cluster(2).await?;
    let script = coord.state_dir().join("tf_task.py");
    std::fs::write(&script, TF_TASK)?;
    // The distributed TensorFlow recipe's shape: 2 nodes, 2 workers, 1 ps.
    let job = pb::Job {
        node_count: 2,
        toolkit: Some(pb::job::Toolkit::TensorFlowSettings(
            pb::TensorFlowSettings {
                python_script_file_path: script.display().to_string(),
                python_interpreter_path: "python3".into(),
                master_command_line_args: "--master --task_index=$AZ_BATCHAI_TASK_INDEX".into(),
                worker_command_line_args: "--worker --task_index=$AZ_BATCHAI_TASK_INDEX".into(),
                parameter_server_command_line_args: "--ps --task_index=$AZ_BATCHAI_TASK_INDEX"
                    .into(),
                worker_count: 2,
                parameter_server_count: 1,
            },
        )),
        ..bai_tests::custom_job("ws", "ex", "tf", "c1", "unused")
    };
    submit(&mut c, job).await?;
    let done = c
        .wait_job("ws", "ex", "tf", Duration::from_secs(90))
        .await?;
    let mut tasks = Vec::new();
    for file in ["stdout.txt", "stdout-1.txt"] {
        let out = text(&mut c, "tf", file).await?;
        for line in out.lines().filter_map(|l| l.strip_prefix("task ")) {
            let t: serde_json::Value = serde_json::from_str(line)?;
            tasks.push((file, t));
        }
    }
    assert_eq!(
        exec_state(&done),
        pb::ExecutionState::Succeeded,
        "the ps is stopped once the master ends: {done:?}\n{tasks:?}"
    );
    assert_eq!(tasks.len(), 3, "{tasks:?}");
    let role = |t: &serde_json::Value| t["argv"][0].as_str().unwrap_or("").to_string();
    let find = |r: &str| {
        tasks
            .iter()
            .find(|(_, t)| role(t) == r)
            .unwrap_or_else(|| panic!("no {r} task in {tasks:?}"))
    };
    let (master_file, master) = find("--master");
    let (worker_file, worker) = find("--worker");
    let (ps_file, ps) = find("--ps");
    assert_eq!(*master_file, "stdout.txt", "the master runs on rank 0");
    assert_eq!((*worker_file, *ps_file), ("stdout-1.txt", "stdout-1.txt"));
    // The flags' lists and TF_CONFIG agree, on every node.
    let workers: Vec<&str> = master["workers"].as_str().unwrap().split(',').collect();
    let ps_hosts: Vec<&str> = master["ps"].as_str().unwrap().split(',').collect();
    assert_eq!((workers.len(), ps_hosts.len()), (2, 1), "{master}");
    for (t, index, kind, tf_index) in [
        (master, "0", "master", 0),
        (worker, "1", "worker", 0),
        (ps, "0", "ps", 0),
    ] {
        assert_eq!(t["index"], index, "{t}");
        assert_eq!(t["argv"][1], format!("--task_index={index}"), "{t}");
        assert_eq!(t["workers"], master["workers"], "{t}");
        assert_eq!(t["ps"], master["ps"], "{t}");
        let config = &t["tf_config"];
        assert_eq!(config["task"]["type"], kind, "{t}");
        assert_eq!(config["task"]["index"], tf_index, "{t}");
        assert_eq!(config["environment"], "cloud", "{t}");
        assert_eq!(
            config["cluster"]["master"],
            serde_json::json!([workers[0]]),
            "{t}"
        );
        assert_eq!(
            config["cluster"]["worker"],
            serde_json::json!([workers[1]]),
            "{t}"
        );
        assert_eq!(config["cluster"]["ps"], serde_json::json!(ps_hosts), "{t}");
    }
    let mut all: Vec<&str> = workers.iter().chain(&ps_hosts).copied().collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 3, "every task has its own address: {all:?}");
    c.wait_idle_nodes("ws", "c1", 2, Duration::from_secs(20))
        .await?;
    Ok(())
}

/// Each MPI process says who it is: its rank in the world, the node whose
/// job environment it runs in, and its argv.
const WHOAMI: &str =
    "echo \"mpi rank=$OMPI_COMM_WORLD_RANK size=$OMPI_COMM_WORLD_SIZE node=$BAI_NODE_ID args=$*\"";

/// `(rank, node)` of each `mpi rank=… node=…` line.
fn mpi_ranks(out: &str) -> Vec<(u32, String)> {
    let mut v: Vec<(u32, String)> = out
        .lines()
        .filter_map(|l| l.strip_prefix("mpi "))
        .filter_map(|l| {
            let field = |k: &str| l.split(' ').find_map(|kv| kv.strip_prefix(k));
            Some((field("rank=")?.parse().ok()?, field("node=")?.to_string()))
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_mpi_runs_mpirun_across_three_nodes_without_ssh() -> Result<()> {
    if standins::require_program("mpirun").is_none() {
        return Ok(());
    }
    let (coord, mut c) = cluster(3).await?;
    let script = coord.state_dir().join("whoami.sh");
    std::fs::write(&script, WHOAMI)?;
    let job = pb::Job {
        node_count: 3,
        toolkit: Some(pb::job::Toolkit::CustomMpiSettings(pb::CustomMpiSettings {
            command_line: format!("bash {} one two", script.display()),
            process_count: 3,
        })),
        ..bai_tests::custom_job("ws", "ex", "mpi", "c1", "unused")
    };
    submit(&mut c, job).await?;
    let done = c
        .wait_job("ws", "ex", "mpi", Duration::from_secs(120))
        .await?;
    let out = text(&mut c, "mpi", "stdout.txt").await?;
    let err = text(&mut c, "mpi", "stderr.txt").await?;
    assert_eq!(
        exec_state(&done),
        pb::ExecutionState::Succeeded,
        "{done:?}\nstdout:\n{out}\nstderr:\n{err}\n{}",
        coord.agent_logs()
    );
    // mpirun gathers every process's output on the master.
    let ranks = mpi_ranks(&out);
    assert_eq!(
        ranks.iter().map(|r| r.0).collect::<Vec<_>>(),
        [0, 1, 2],
        "{out}"
    );
    let mut nodes: Vec<String> = ranks.iter().map(|r| r.1.clone()).collect();
    nodes.sort();
    let mut want = done.node_ids.clone();
    want.sort();
    assert_eq!(nodes, want, "one process in each node's job: {out}");
    assert!(out.contains("size=3 "), "{out}");
    assert!(out.contains("args=one two"), "{out}");
    c.wait_idle_nodes("ws", "c1", 3, Duration::from_secs(20))
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn horovod_runs_the_script_under_mpirun_on_every_node() -> Result<()> {
    if standins::require_program("mpirun").is_none()
        || standins::require_program("python3").is_none()
    {
        return Ok(());
    }
    let (coord, mut c) = cluster(2).await?;
    let script = coord.state_dir().join("hvd.py");
    std::fs::write(
        &script,
        "import os, sys\n\
         print('mpi rank=%s size=%s node=%s args=%s' % (os.environ['OMPI_COMM_WORLD_RANK'], \
         os.environ['OMPI_COMM_WORLD_SIZE'], os.environ['BAI_NODE_ID'], ' '.join(sys.argv[1:])), flush=True)\n",
    )?;
    // Two processes on each of two nodes, as the Horovod recipes ask.
    let job = pb::Job {
        node_count: 2,
        toolkit: Some(pb::job::Toolkit::HorovodSettings(pb::HorovodSettings {
            python_script_file_path: script.display().to_string(),
            python_interpreter_path: "python3".into(),
            command_line_args: "--epochs 1".into(),
            process_count: 4,
        })),
        ..bai_tests::custom_job("ws", "ex", "hvd", "c1", "unused")
    };
    submit(&mut c, job).await?;
    let done = c
        .wait_job("ws", "ex", "hvd", Duration::from_secs(120))
        .await?;
    let out = text(&mut c, "hvd", "stdout.txt").await?;
    assert_eq!(
        exec_state(&done),
        pb::ExecutionState::Succeeded,
        "{done:?}\n{out}\n{}",
        text(&mut c, "hvd", "stderr.txt").await?
    );
    let ranks = mpi_ranks(&out);
    assert_eq!(
        ranks.iter().map(|r| r.0).collect::<Vec<_>>(),
        [0, 1, 2, 3],
        "{out}"
    );
    for node in &done.node_ids {
        let here = ranks.iter().filter(|r| &r.1 == node).count();
        assert_eq!(here, 2, "two slots on {node}: {out}");
    }
    assert!(out.contains("args=--epochs 1"), "{out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_preparation_runs_on_every_node_and_one_failing_fails_the_job() -> Result<()> {
    let (_coord, mut c) = cluster(2).await?;
    // Rank 1's preparation fails; the master's succeeds and its command
    // line would run for a long while if nothing stopped it.
    let mut job = bai_tests::custom_job("ws", "ex", "prep", "c1", "sleep 41999");
    job.node_count = 2;
    job.job_preparation = Some(pb::JobPreparation {
        command_line: "echo prep-on-$AZ_BATCHAI_TASK_INDEX; \
                       [ \"$AZ_BATCHAI_TASK_INDEX\" = 0 ] || { echo broke >&2; exit 3; }"
            .into(),
    });
    submit(&mut c, job).await?;
    let done = c
        .wait_job("ws", "ex", "prep", Duration::from_secs(60))
        .await?;
    assert_eq!(exec_state(&done), pb::ExecutionState::Failed, "{done:?}");
    let errors = &done.execution_info.as_ref().unwrap().errors;
    assert_eq!(errors[0].code, "RankFailed", "{errors:?}");
    assert!(errors[0].message.contains("rank 1"), "{errors:?}");
    assert!(
        errors.iter().any(|e| e.code == "JobPreparationFailed"),
        "{errors:?}"
    );
    // Each node's preparation output is kept, under its rank's names.
    assert_eq!(
        text(&mut c, "prep", "stdout-job_prep.txt").await?,
        "prep-on-0\n"
    );
    assert_eq!(
        text(&mut c, "prep", "stdout-job_prep-1.txt").await?,
        "prep-on-1\n"
    );
    assert_eq!(
        text(&mut c, "prep", "stderr-job_prep-1.txt").await?,
        "broke\n"
    );
    assert!(
        procs::alive_with_cmdline("sleep 41999").is_empty(),
        "the master's command line was not stopped"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_job_temp_is_one_directory_for_every_node() -> Result<()> {
    if standins::require_program("python3").is_none() {
        return Ok(());
    }
    let (coord, mut c) = cluster(2).await?;
    let script = coord.state_dir().join("shared.py");
    // Caffe2's recipe meets in $AZ_BATCHAI_SHARED_JOB_TEMP: rank 1 leaves a
    // file there and the master reads it.
    std::fs::write(
        &script,
        "import os, time\n\
         d = os.environ['AZ_BATCHAI_SHARED_JOB_TEMP']\n\
         print('shared=' + d, flush=True)\n\
         if os.environ['RANK'] == '1':\n\
         \x20   open(os.path.join(d, 'from-1'), 'w').write('hello from rank 1')\n\
         else:\n\
         \x20   p = os.path.join(d, 'from-1')\n\
         \x20   for _ in range(600):\n\
         \x20       if os.path.exists(p): break\n\
         \x20       time.sleep(0.05)\n\
         \x20   print('read=' + open(p).read(), flush=True)\n",
    )?;
    submit(&mut c, pytorch_job("meet", 2, &script)).await?;
    let done = c
        .wait_job("ws", "ex", "meet", Duration::from_secs(60))
        .await?;
    let master = text(&mut c, "meet", "stdout.txt").await?;
    let worker = text(&mut c, "meet", "stdout-1.txt").await?;
    assert_eq!(
        exec_state(&done),
        pb::ExecutionState::Succeeded,
        "{done:?}\n{master}\n{worker}"
    );
    assert!(master.contains("read=hello from rank 1\n"), "{master}");
    let dir = |out: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix("shared="))
            .unwrap_or_default()
            .to_string()
    };
    let shared = dir(&master);
    assert_eq!(shared, dir(&worker), "one directory: {master}\n{worker}");
    assert!(shared.ends_with(&done.id), "{shared}");
    // The master's node removes it once the job is released.
    bai_tests::eventually(Duration::from_secs(20), "the shared temp removed", || {
        let gone = !std::path::Path::new(&shared).exists();
        async move { Ok(gone) }
    })
    .await?;
    Ok(())
}
