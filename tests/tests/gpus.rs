//! GPUs end to end on simulated GPUs (the agent's fake backend, as a machine
//! without one runs it): a node's GPUs in its view, two `gpusPerNode: 2`
//! jobs sharing a 4-GPU node with disjoint GPUs (checked from inside the
//! jobs), a whole-node job waiting until both end and then seeing every GPU,
//! and a `gpusPerNode` no node can give refused at create.

use anyhow::Result;
use bai_proto::v1 as pb;
use bai_tests::{Clients, Coordinator, CoordinatorOpts, custom_job, exec_state};
use std::collections::BTreeSet;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// A coordinator whose one-node cluster `ws/c` has `gpus` fake GPUs, idle;
/// `extra` are more coordinator flags.
async fn gpu_cluster(gpus: u32, extra: &[&str]) -> Result<(Coordinator, Clients)> {
    let mut extra_args = vec!["--local-agent-fake-gpus".to_string(), gpus.to_string()];
    extra_args.extend(extra.iter().map(|a| a.to_string()));
    let coord = Coordinator::start_with(CoordinatorOpts {
        extra_args,
        ..Default::default()
    })?;
    let mut c = coord.clients().await?;
    c.setup_cluster("ws", "ex", "c", 1).await?;
    c.wait_idle_nodes("ws", "c", 1, WAIT).await?;
    Ok((coord, c))
}

async fn submit(c: &mut Clients, name: &str, gpus: u32, cmd: &str) -> Result<pb::Job> {
    let mut job = custom_job("ws", "ex", name, "c", cmd);
    job.gpus_per_node = gpus;
    Ok(c.jobs
        .create_job(pb::CreateJobRequest { job: Some(job) })
        .await?
        .into_inner())
}

async fn node(c: &mut Clients) -> Result<pb::Node> {
    Ok(c.clusters
        .list_cluster_nodes(pb::ListClusterNodesRequest {
            workspace: "ws".into(),
            cluster: "c".into(),
        })
        .await?
        .into_inner()
        .nodes
        .remove(0))
}

/// The job's stdout: the GPUs it was given, one line.
async fn seen(c: &mut Clients, name: &str) -> Result<BTreeSet<String>> {
    let out = String::from_utf8(c.read_output("ws", "ex", name, "stdout.txt").await?)?;
    let line = out.lines().next().unwrap_or_default();
    Ok(line
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpu_jobs_share_a_node_with_disjoint_gpus_and_a_whole_node_job_waits() -> Result<()> {
    let (_coord, mut c) = gpu_cluster(4, &[]).await?;
    let n = node(&mut c).await?;
    assert_eq!(n.gpu_backend, "fake", "{n:?}");
    assert_eq!(n.gpus.len(), 4, "{n:?}");
    // Simulated GPUs have no device nodes to deny: the node says so.
    assert_eq!(n.gpu_isolation, "env-only", "{n:?}");
    assert!(
        ["v1", "v2", "none"].contains(&n.job_cgroups.as_str()),
        "{n:?}"
    );
    let all: BTreeSet<String> = n.gpus.iter().map(|g| g.uuid.clone()).collect();
    assert_eq!(all.len(), 4, "distinct UUIDs");
    assert!(all.iter().all(|u| u.starts_with("GPU-")), "{all:?}");
    for (i, g) in n.gpus.iter().enumerate() {
        assert_eq!(g.index as usize, i);
        assert!(g.memory_bytes > 0 && !g.name.is_empty(), "{g:?}");
    }

    // Each waits for a file, so both run at once.
    let go = tempfile::tempdir()?;
    let gate = go.path().join("go");
    let cmd = format!(
        "echo \"$CUDA_VISIBLE_DEVICES\"; echo \"$AZ_BATCHAI_NUM_GPUS $NVIDIA_VISIBLE_DEVICES $CUDA_DEVICE_ORDER\"; \
         until [ -e {} ]; do sleep 0.05; done",
        gate.display()
    );
    let a = submit(&mut c, "a", 2, &cmd).await?;
    let b = submit(&mut c, "b", 2, &cmd).await?;
    bai_tests::eventually(WAIT, "both GPU jobs to run", || {
        let mut c = c.clone();
        async move {
            let a = c.job("ws", "ex", "a").await?;
            let b = c.job("ws", "ex", "b").await?;
            Ok(exec_state(&a) == pb::ExecutionState::Running
                && exec_state(&b) == pb::ExecutionState::Running
                && !c
                    .read_output("ws", "ex", "a", "stdout.txt")
                    .await?
                    .is_empty()
                && !c
                    .read_output("ws", "ex", "b", "stdout.txt")
                    .await?
                    .is_empty())
        }
    })
    .await?;
    let (sa, sb) = (seen(&mut c, "a").await?, seen(&mut c, "b").await?);
    assert_eq!((sa.len(), sb.len()), (2, 2), "{sa:?} {sb:?}");
    assert!(sa.is_disjoint(&sb), "{sa:?} {sb:?}");
    assert_eq!(&sa | &sb, all);
    let out = String::from_utf8(c.read_output("ws", "ex", "a", "stdout.txt").await?)?;
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[1], format!("2 {} PCI_BUS_ID", lines[0]), "{out}");
    // The API says the same: the job records and the node's view.
    let ja = c.job("ws", "ex", "a").await?;
    assert_eq!(ja.gpu_uuids.iter().cloned().collect::<BTreeSet<_>>(), sa);
    assert_eq!(ja.gpus_per_node, 2);
    let n = node(&mut c).await?;
    assert_eq!(n.state, pb::NodeState::Running as i32);
    for g in &n.gpus {
        let holder = if sa.contains(&g.uuid) { &a.id } else { &b.id };
        assert_eq!(&g.job_id, holder, "{g:?}");
    }

    // A whole-node job waits while the GPU jobs hold the node: it starts
    // only after both have ended (the job times say so, no sleeping here).
    submit(&mut c, "whole", 0, "echo \"$CUDA_VISIBLE_DEVICES\"").await?;
    assert_eq!(
        exec_state(&c.job("ws", "ex", "whole").await?),
        pb::ExecutionState::Queued
    );
    std::fs::write(&gate, "")?;
    let mut ended = Vec::new();
    for name in ["a", "b", "whole"] {
        let j = c.wait_job("ws", "ex", name, WAIT).await?;
        assert_eq!(exec_state(&j), pb::ExecutionState::Succeeded, "{j:?}");
        let info = j.execution_info.unwrap_or_default();
        let start = info.start_time.as_ref().map(|t| (t.seconds, t.nanos));
        let end = info.end_time.as_ref().map(|t| (t.seconds, t.nanos));
        ended.push((start, end));
    }
    let (whole_start, a_end, b_end) = (ended[2].0, ended[0].1, ended[1].1);
    assert!(
        whole_start.is_some() && a_end.is_some() && b_end.is_some(),
        "{ended:?}"
    );
    assert!(
        whole_start >= a_end && whole_start >= b_end,
        "the whole-node job started before a GPU job ended: {ended:?}"
    );
    let w = seen(&mut c, "whole").await?;
    assert_eq!(w, all, "a whole-node job sees every GPU");

    // More GPUs than the largest node has: refused by name, nothing stored.
    let err = submit(&mut c, "huge", 5, "true").await.unwrap_err();
    let status = err.downcast_ref::<tonic::Status>().expect("a status");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status
            .message()
            .starts_with("job.gpus_per_node: must be at most 4")
            && status.message().contains(&n.node_id),
        "{}",
        status.message()
    );
    assert!(c.job("ws", "ex", "huge").await.is_err());
    Ok(())
}

/// `GET /metrics` on the coordinator's metrics port, as Prometheus does.
fn scrape(state: &std::path::Path) -> Result<String> {
    use std::io::{Read, Write};
    let addr = std::fs::read_to_string(state.join("metrics.addr"))?;
    let mut s = std::net::TcpStream::connect(addr.trim())?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: bai\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    anyhow::ensure!(text.starts_with("HTTP/1.1 200"), "{text}");
    Ok(text)
}

/// The value of the series `name{labels}` where every `(k, v)` of `want` is
/// among its labels.
fn value(text: &str, name: &str, want: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| {
            want.iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_has_dcgm_series_labelled_with_node_gpu_and_job() -> Result<()> {
    let cfg = tempfile::NamedTempFile::new()?;
    std::fs::write(
        cfg.path(),
        "[gpu]\nfake_utilization = [[30], [70]]\nfake_memory_used_mib = [[1024], [2048]]\n",
    )?;
    let cfg_path = cfg.path().display().to_string();
    let (coord, mut c) = gpu_cluster(
        2,
        &[
            "--local-agent-config",
            cfg_path.as_str(),
            "--metrics-listen",
            "127.0.0.1:0",
            "--heartbeat-interval-secs",
            "1",
        ],
    )
    .await?;
    let n = node(&mut c).await?;
    let go = tempfile::tempdir()?;
    let gate = go.path().join("go");
    let job = submit(
        &mut c,
        "m",
        1,
        &format!("until [ -e {} ]; do sleep 0.05; done", gate.display()),
    )
    .await?;
    bai_tests::eventually(WAIT, "the job to run", || {
        let mut c = c.clone();
        async move { Ok(exec_state(&c.job("ws", "ex", "m").await?) == pb::ExecutionState::Running) }
    })
    .await?;
    let held = c.job("ws", "ex", "m").await?.gpu_uuids.remove(0);
    let index = n
        .gpus
        .iter()
        .find(|g| g.uuid == held)
        .map(|g| g.index)
        .expect("the job's GPU is the node's");
    let other = n.gpus.iter().find(|g| g.uuid != held).expect("2 GPUs");
    let (util, fb) = if index == 0 {
        (30.0, 1024.0)
    } else {
        (70.0, 2048.0)
    };
    let mut text = String::new();
    bai_tests::eventually(WAIT, "a scrape with the job's GPU", || {
        let r = scrape(coord.state_dir());
        let found = r.as_ref().is_ok_and(|t| {
            value(t, "DCGM_FI_DEV_GPU_UTIL", &[("job_id", job.id.as_str())]).is_some()
                && value(t, "bai_jobs", &[("state", "running")]) == Some(1.0)
        });
        if let Ok(t) = r {
            text = t;
        }
        async move { Ok(found) }
    })
    .await?;
    let mine = [
        ("cluster", "c"),
        ("node", n.node_id.as_str()),
        ("UUID", held.as_str()),
        ("job_id", job.id.as_str()),
        ("bai_job", "ws/ex/m"),
    ];
    assert_eq!(
        value(&text, "DCGM_FI_DEV_GPU_UTIL", &mine),
        Some(util),
        "{text}"
    );
    assert_eq!(
        value(&text, "DCGM_FI_DEV_FB_USED", &mine),
        Some(fb),
        "{text}"
    );
    assert!(
        value(&text, "DCGM_FI_DEV_GPU_TEMP", &mine).is_some(),
        "{text}"
    );
    assert!(
        value(&text, "DCGM_FI_DEV_POWER_USAGE", &mine).is_some(),
        "{text}"
    );
    assert_eq!(
        value(&text, "bai_gpu_xid_errors_total", &mine),
        Some(0.0),
        "{text}"
    );
    // The node's disk (its agent's state directory) and network.
    let node_labels = [("cluster", "c"), ("node", n.node_id.as_str())];
    let disk_total = value(&text, "bai_node_disk_total_bytes", &node_labels).unwrap_or(0.0);
    let disk_used = value(&text, "bai_node_disk_used_bytes", &node_labels).unwrap_or(-1.0);
    assert!(
        disk_total > 0.0 && (0.0..=disk_total).contains(&disk_used),
        "{text}"
    );
    assert!(
        value(&text, "bai_node_network_receive_bytes_total", &node_labels).is_some(),
        "{text}"
    );
    // The free GPU is there too, without a job label.
    let free_line = text
        .lines()
        .find(|l| {
            l.starts_with("DCGM_FI_DEV_GPU_UTIL{")
                && l.contains(&format!("UUID=\"{}\"", other.uuid))
        })
        .unwrap_or_default();
    assert!(!free_line.contains("job_id"), "{free_line}");
    assert_eq!(
        free_line.rsplit(' ').next(),
        Some(if index == 0 { "70" } else { "30" })
    );
    assert_eq!(
        value(&text, "bai_nodes", &[("state", "running")]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(value(&text, "bai_queue_length", &[]), Some(0.0), "{text}");
    std::fs::write(&gate, "")?;
    c.wait_job("ws", "ex", "m", WAIT).await?;
    Ok(())
}

/// Puts `lines` into the fake GPUs' inject file of `node` (a whole file, by
/// rename, as the fake expects).
fn inject(coord: &Coordinator, node: &str, lines: &str) -> Result<()> {
    let dir = coord.state_dir().join("local-nodes").join(node).join("gpu");
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(".inject.tmp");
    std::fs::write(&tmp, lines)?;
    std::fs::rename(&tmp, dir.join("inject"))?;
    Ok(())
}

async fn gpu_events(c: &mut Clients) -> Result<Vec<pb::GpuHealthRecord>> {
    Ok(c.clusters
        .list_gpu_events(pb::ListGpuEventsRequest {
            workspace: "ws".into(),
            cluster: "c".into(),
            node_id: String::new(),
        })
        .await?
        .into_inner()
        .events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_xid_takes_its_gpu_out_of_scheduling_until_cleared_and_an_application_xid_does_not()
-> Result<()> {
    let (coord, mut c) = gpu_cluster(4, &["--heartbeat-interval-secs", "1"]).await?;
    let n = node(&mut c).await?;
    assert!(n.gpus.iter().all(|g| g.health == "healthy"), "{n:?}");

    // A job on one GPU, running until told.
    let go = tempfile::tempdir()?;
    let gate = go.path().join("go");
    let wait = format!("until [ -e {} ]; do sleep 0.05; done", gate.display());
    let victim = submit(&mut c, "victim", 1, &wait).await?;
    let other = submit(&mut c, "other", 1, &wait).await?;
    bai_tests::eventually(WAIT, "both jobs to run", || {
        let mut c = c.clone();
        async move {
            Ok(
                exec_state(&c.job("ws", "ex", "victim").await?) == pb::ExecutionState::Running
                    && exec_state(&c.job("ws", "ex", "other").await?)
                        == pb::ExecutionState::Running,
            )
        }
    })
    .await?;
    let bad = c.job("ws", "ex", "victim").await?.gpu_uuids.remove(0);
    let bad_index = n
        .gpus
        .iter()
        .find(|g| g.uuid == bad)
        .expect("its GPU")
        .index;
    let other_gpu = c.job("ws", "ex", "other").await?.gpu_uuids.remove(0);
    let other_index = n
        .gpus
        .iter()
        .find(|g| g.uuid == other_gpu)
        .expect("its GPU")
        .index;

    // XID 13 (the application's) on the other job's GPU: history only.
    // XID 79 (fallen off the bus) on the victim's: its GPU is faulted, the
    // victim is terminated with GpuFault and its execution log says why.
    inject(
        &coord,
        &n.node_id,
        &format!("xid {other_index} 13\nxid {bad_index} 79\n"),
    )?;
    let j = c.wait_job("ws", "ex", "victim", WAIT).await?;
    assert_eq!(exec_state(&j), pb::ExecutionState::Failed, "{j:?}");
    let errors = j.execution_info.unwrap_or_default().errors;
    assert_eq!(errors[0].code, "GpuFault", "{errors:?}");
    assert!(errors[0].message.contains("XID 79"), "{errors:?}");
    let log = String::from_utf8(c.read_output("ws", "ex", "victim", "execution.log").await?)?;
    assert!(
        log.contains(&format!("GPU {bad_index} ({bad}): XID 79")),
        "{log}"
    );
    let n = node(&mut c).await?;
    let g = |n: &pb::Node, u: &str| n.gpus.iter().find(|g| g.uuid == u).cloned().expect("GPU");
    assert_eq!(g(&n, &bad).health, "faulted");
    assert!(g(&n, &bad).fault_reason.contains("XID 79"));
    assert_eq!(
        g(&n, &other_gpu).health,
        "healthy",
        "XID 13 is the application's"
    );
    assert_eq!(
        exec_state(&c.job("ws", "ex", "other").await?),
        pb::ExecutionState::Running,
        "the other job keeps running"
    );
    let log = String::from_utf8(c.read_output("ws", "ex", "other", "execution.log").await?)?;
    bai_tests::eventually(WAIT, "XID 13 in the other job's log", || {
        let mut c = c.clone();
        async move {
            let log =
                String::from_utf8(c.read_output("ws", "ex", "other", "execution.log").await?)?;
            Ok(log.contains("XID 13"))
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}: {log}"))?;

    // Every job has ended, but one GPU is faulted: a 4-GPU job waits, and a
    // whole-node job runs on the three healthy ones.
    std::fs::write(&gate, "")?;
    c.wait_job("ws", "ex", "other", WAIT).await?;
    submit(&mut c, "big", 4, "echo \"$CUDA_VISIBLE_DEVICES\"").await?;
    let whole = submit(&mut c, "whole", 0, "echo \"$CUDA_VISIBLE_DEVICES\"").await?;
    let w = c.wait_job("ws", "ex", "whole", WAIT).await?;
    assert_eq!(exec_state(&w), pb::ExecutionState::Succeeded);
    let seen_whole = seen(&mut c, "whole").await?;
    assert_eq!(
        seen_whole.len(),
        3,
        "a whole-node job gets the healthy GPUs: {seen_whole:?}"
    );
    assert!(!seen_whole.contains(&bad));
    assert_eq!(w.id, whole.id);
    assert_eq!(
        exec_state(&c.job("ws", "ex", "big").await?),
        pb::ExecutionState::Queued,
        "4 GPUs asked, 3 healthy"
    );

    // The operator clears it: the 4-GPU job runs, on every GPU.
    let cleared = c
        .clusters
        .clear_node_gpu(pb::ClearNodeGpuRequest {
            workspace: "ws".into(),
            cluster: "c".into(),
            node_id: n.node_id.clone(),
            gpu: bad_index.to_string(),
        })
        .await?
        .into_inner();
    assert_eq!(g(&cleared, &bad).health, "healthy");
    let big = c.wait_job("ws", "ex", "big", WAIT).await?;
    assert_eq!(exec_state(&big), pb::ExecutionState::Succeeded, "{big:?}");
    assert_eq!(seen(&mut c, "big").await?.len(), 4);

    // The history: both XIDs (who held the GPU then), and the clear.
    let events = gpu_events(&mut c).await?;
    let kinds: Vec<(&str, u64, bool, &str)> = events
        .iter()
        .map(|e| (e.kind.as_str(), e.code, e.fault, e.job_id.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("xid", 13, false, other.id.as_str()),
            ("xid", 79, true, victim.id.as_str()),
            ("cleared", 0, false, ""),
        ],
        "{events:?}"
    );
    assert!(events.iter().all(|e| e.node_id == n.node_id));

    // Bad input changes nothing.
    for (node_id, gpu, code) in [
        (n.node_id.as_str(), "7", tonic::Code::NotFound),
        ("no-such-node", "0", tonic::Code::NotFound),
        (n.node_id.as_str(), "", tonic::Code::InvalidArgument),
    ] {
        let err = c
            .clusters
            .clear_node_gpu(pb::ClearNodeGpuRequest {
                workspace: "ws".into(),
                cluster: "c".into(),
                node_id: node_id.into(),
                gpu: gpu.into(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "{node_id} {gpu}: {err:?}");
    }
    assert_eq!(gpu_events(&mut c).await?.len(), 3);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_recovers_when_its_health_check_passes_after_a_reset() -> Result<()> {
    let (coord, mut c) = gpu_cluster(2, &["--heartbeat-interval-secs", "1"]).await?;
    let n = node(&mut c).await?;
    let health = |n: &pb::Node| n.gpus.iter().map(|g| g.health.clone()).collect::<Vec<_>>();
    inject(&coord, &n.node_id, "ecc 1 2\n")?;
    bai_tests::eventually(WAIT, "GPU 1 faulted", || {
        let mut c = c.clone();
        async move { Ok(health(&node(&mut c).await?) == ["healthy", "faulted"]) }
    })
    .await?;
    // A reset whose check fails keeps it out; one that passes returns it.
    inject(&coord, &n.node_id, "reset 1 fail\n")?;
    bai_tests::eventually(WAIT, "the failed check recorded", || {
        let mut c = c.clone();
        async move { Ok(gpu_events(&mut c).await?.len() == 2) }
    })
    .await?;
    assert_eq!(health(&node(&mut c).await?), ["healthy", "faulted"]);
    inject(&coord, &n.node_id, "reset 1\n")?;
    bai_tests::eventually(WAIT, "GPU 1 back", || {
        let mut c = c.clone();
        async move { Ok(health(&node(&mut c).await?) == ["healthy", "healthy"]) }
    })
    .await?;
    let kinds: Vec<String> = gpu_events(&mut c)
        .await?
        .iter()
        .map(|e| e.kind.clone())
        .collect();
    assert_eq!(kinds, ["double_bit_ecc", "check_failed", "recovered"]);
    Ok(())
}

/// `bai <args> -o json` against the coordinator, as a user runs it.
fn bai_json_lines(coord: &Coordinator, args: &[&str]) -> Result<Vec<serde_json::Value>> {
    let out = coord.cli().args(args).args(["-o", "json"]).output()?;
    let stdout = String::from_utf8(out.stdout)?;
    anyhow::ensure!(
        out.status.success(),
        "bai {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One JSON document, or one per line (a followed stream).
    if let Ok(v) = serde_json::from_str(&stdout) {
        return Ok(vec![v]);
    }
    Ok(stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_metrics_stream_live_and_its_summary_is_kept() -> Result<()> {
    let cfg = tempfile::NamedTempFile::new()?;
    std::fs::write(cfg.path(), "[gpu]\nfake_utilization = [[20, 60], [5]]\n")?;
    let cfg_path = cfg.path().display().to_string();
    let (coord, mut c) = gpu_cluster(
        2,
        &[
            "--local-agent-config",
            cfg_path.as_str(),
            "--heartbeat-interval-secs",
            "1",
        ],
    )
    .await?;
    let go = tempfile::tempdir()?;
    let gate = go.path().join("go");
    // 256 MiB held by `tail` (one line of zeros) while the gate is shut,
    // and a second of busy CPU.
    let cmd = format!(
        "(head -c 268435456 /dev/zero; until [ -e {gate} ]; do sleep 0.05; done) | tail >/dev/null & \
         end=$(($(date +%s) + 2)); while [ $(date +%s) -lt $end ]; do :; done; wait",
        gate = gate.display()
    );
    let job = submit(&mut c, "m", 1, &cmd).await?;
    let mut stream = c
        .clusters
        .watch_metrics(pb::WatchMetricsRequest {
            job: Some(bai_tests::key("ws", "ex", "m")),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut samples = Vec::new();
    while samples.len() < 4 {
        let s = tokio::time::timeout(WAIT, stream.message())
            .await??
            .expect("samples while the job runs");
        samples.push(s);
    }
    let held = c.job("ws", "ex", "m").await?.gpu_uuids;
    for s in &samples {
        // Only the job's GPU and the job's own figures.
        assert_eq!(s.gpus.len(), 1, "{s:?}");
        assert_eq!(s.gpus[0].uuid, held[0]);
        assert_eq!(s.gpus[0].job_id, job.id);
        assert_eq!(s.jobs.len(), 1);
        assert_eq!(s.jobs[0].job_id, job.id);
    }
    let last = &samples[3].jobs[0];
    assert!(last.samples >= 4, "{last:?}");
    assert_eq!(last.gpu_utilization_max, 60.0, "{last:?}");
    assert!(last.gpu_utilization_mean > 20.0 && last.gpu_utilization_mean < 60.0);
    assert!(last.memory_peak_bytes >= 256 << 20, "{last:?}");
    // The live summary is in the job's view too.
    let live = c
        .job("ws", "ex", "m")
        .await?
        .metrics
        .expect("a live summary");
    assert!(live.samples >= 4);

    // The job ends: the stream ends, the summary stays with the job.
    std::fs::write(&gate, "")?;
    let ended = tokio::time::timeout(WAIT, async {
        while stream.message().await?.is_some() {}
        Ok::<_, tonic::Status>(())
    })
    .await?;
    ended?;
    let j = c.wait_job("ws", "ex", "m", WAIT).await?;
    assert_eq!(exec_state(&j), pb::ExecutionState::Succeeded, "{j:?}");
    let m = j.metrics.expect("the stored summary");
    assert!(m.samples >= last.samples, "{m:?}");
    assert_eq!(m.gpu_utilization_max, 60.0);
    assert!(m.cpu_seconds >= 1.0, "two seconds of busy shell: {m:?}");
    assert!(m.memory_peak_bytes >= 256 << 20, "{m:?}");
    // A coordinator restart keeps it.
    let mut coord = coord;
    coord.restart()?;
    let mut c = coord.clients().await?;
    assert_eq!(c.job("ws", "ex", "m").await?.metrics, Some(m));

    // The CLI: the summary, and `top` on the cluster.
    let v = bai_json_lines(
        &coord,
        &["job", "metrics", "-w", "ws", "-e", "ex", "-n", "m"],
    )?;
    assert_eq!(v[0]["samples"], m.samples, "{v:?}");
    assert_eq!(v[0]["gpuUtilizationMax"], 60.0);
    c.wait_idle_nodes("ws", "c", 1, WAIT).await?;
    let top = bai_json_lines(
        &coord,
        &[
            "cluster", "node", "top", "-w", "ws", "-c", "c", "--count", "2",
        ],
    )?;
    assert_eq!(top.len(), 2, "{top:?}");
    assert_eq!(top[1]["gpus"].as_array().map(Vec::len), Some(2), "{top:?}");
    Ok(())
}

/// Between heartbeats (a minute apart here) a node with running jobs samples
/// them and their GPUs every `job_sample_secs` (1): a short job's stored
/// summary has all its samples, and a fault XID ends its holder within
/// seconds, not at the next heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_jobs_are_sampled_between_heartbeats() -> Result<()> {
    let cfg = tempfile::NamedTempFile::new()?;
    std::fs::write(
        cfg.path(),
        "job_sample_secs = 1\n[gpu]\nfake_utilization = [[20, 60], [5]]\n",
    )?;
    let cfg_path = cfg.path().display().to_string();
    let (coord, mut c) = gpu_cluster(
        2,
        &[
            "--local-agent-config",
            cfg_path.as_str(),
            "--heartbeat-interval-secs",
            "60",
        ],
    )
    .await?;
    let n = node(&mut c).await?;
    // Three seconds of busy shell, then done: well inside one heartbeat.
    submit(
        &mut c,
        "short",
        1,
        "end=$(($(date +%s) + 3)); while [ $(date +%s) -lt $end ]; do :; done",
    )
    .await?;
    let j = c.wait_job("ws", "ex", "short", WAIT).await?;
    assert_eq!(exec_state(&j), pb::ExecutionState::Succeeded, "{j:?}");
    let m = j
        .metrics
        .expect("a summary without any heartbeat during the job");
    assert!(m.samples >= 2, "{m:?}");
    assert_eq!(m.gpu_utilization_max, 60.0, "{m:?}");
    assert!(m.cpu_seconds >= 1.0, "{m:?}");

    let go = tempfile::tempdir()?;
    let gate = go.path().join("go");
    submit(
        &mut c,
        "victim",
        1,
        &format!("until [ -e {} ]; do sleep 0.05; done", gate.display()),
    )
    .await?;
    bai_tests::eventually(WAIT, "the victim to run", || {
        let mut c = c.clone();
        async move {
            Ok(exec_state(&c.job("ws", "ex", "victim").await?) == pb::ExecutionState::Running)
        }
    })
    .await?;
    let uuid = c.job("ws", "ex", "victim").await?.gpu_uuids.remove(0);
    let index = n
        .gpus
        .iter()
        .find(|g| g.uuid == uuid)
        .expect("its GPU")
        .index;
    inject(&coord, &n.node_id, &format!("xid {index} 79\n"))?;
    let j = c
        .wait_job("ws", "ex", "victim", Duration::from_secs(20))
        .await?;
    let errors = j.execution_info.unwrap_or_default().errors;
    assert_eq!(errors[0].code, "GpuFault", "{errors:?}");
    std::fs::write(&gate, "")?;
    Ok(())
}

#[path = "../../agent/tests/fake_nvml/mod.rs"]
mod fake_nvml;

/// A real agent on the NVML backend (over the fake `libnvidia-ml.so.1`,
/// whose GPU 1 fails every temperature read): the node shows NVML's GPUs,
/// and the failing query in its view instead of crashing or hiding it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_nvml_shows_its_gpus_and_the_queries_that_fail() -> Result<()> {
    let lib_dir = tempfile::tempdir()?;
    let Some(lib) = fake_nvml::build(lib_dir.path(), &[]) else {
        return Ok(());
    };
    let cfg = tempfile::NamedTempFile::new()?;
    std::fs::write(
        cfg.path(),
        format!(
            "[gpu]\nbackend = \"nvml\"\nnvml_library = \"{}\"\n",
            lib.display()
        ),
    )?;
    let cfg_path = cfg.path().display().to_string();
    let coord = Coordinator::start_with(CoordinatorOpts {
        extra_args: vec![
            "--local-agent-config".into(),
            cfg_path,
            "--heartbeat-interval-secs".into(),
            "1".into(),
        ],
        ..Default::default()
    })?;
    let mut c = coord.clients().await?;
    c.setup_cluster("ws", "ex", "c", 1).await?;
    c.wait_idle_nodes("ws", "c", 1, WAIT).await?;
    let mut n = node(&mut c).await?;
    assert_eq!(n.gpu_backend, "nvml", "{n:?}");
    assert!(n.gpus.len() >= 2, "{n:?}");
    assert!(!n.gpu_driver_version.is_empty(), "{n:?}");
    bai_tests::eventually(WAIT, "the failing query in the node's view", || {
        let mut c = c.clone();
        async move {
            let n = node(&mut c).await?;
            Ok(n.gpu_problems
                .iter()
                .any(|p| p.starts_with("temperature of GPU 1")))
        }
    })
    .await?;
    n = node(&mut c).await?;
    assert_eq!(n.gpu_problems.len(), 1, "each cause once: {n:?}");
    Ok(())
}
