//! Multi-node jobs on local agents: a 3-node pyTorch job whose ranks meet
//! over TCP at the rendezvous their environment names, each rank's output
//! kept apart, and a terminate that stops every rank on every node.

use anyhow::Result;
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
    let coord = Coordinator::start()?;
    let mut c = coord.clients().await?;
    c.setup_cluster("ws", "ex", "c1", 3).await?;
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
    let coord = Coordinator::start()?;
    let mut c = coord.clients().await?;
    c.setup_cluster("ws", "ex", "c1", 3).await?;
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
