//! `kill -9` of the coordinator while jobs are queued and running, then a
//! restart: no job is lost, none runs twice, and every output is complete and
//! not duplicated.

use anyhow::Result;
use bai_proto::v1 as pb;
use bai_tests::{Coordinator, exec_state};
use std::path::Path;
use std::time::Duration;

const JOBS: usize = 6;
const LINES: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_kill9_loses_nothing_and_runs_nothing_twice() -> Result<()> {
    let mut coord = Coordinator::start()?;
    let mut c = coord.clients().await?;
    c.setup_cluster("ws", "ex", "c1", 2).await?;
    let data = tempfile::tempdir()?;
    let runs = data.path();

    for i in 0..JOBS {
        let name = format!("job{i}");
        // Each run leaves a line in its own file and its last line number in
        // another (so the test can place its crashes); output takes about 3 s.
        let cmd = format!(
            "echo run >> '{dir}/{name}.runs'; for i in $(seq 1 {LINES}); do echo \"{name} line $i\"; \
             echo \"{name} err $i\" >&2; echo $i > '{dir}/{name}.at'; sleep 0.01; done",
            dir = runs.display()
        );
        c.submit("ws", "ex", &name, "c1", &cmd).await?;
    }
    // Two run, four wait. The first crash comes once both running jobs are
    // well into their output.
    bai_tests::eventually(Duration::from_secs(60), "two jobs 50 lines in", || async {
        Ok(progress(runs).iter().filter(|&&(_, at)| at >= 50).count() >= 2)
    })
    .await?;

    // First crash: jobs keep running and writing while the coordinator is gone.
    coord.kill9()?;
    wait_for_more_output(runs).await?;
    coord.restart()?;
    let mut c = coord.clients().await?;

    // Second crash, later in the run: once the first two jobs have ended and two
    // others are well into theirs.
    bai_tests::eventually(
        Duration::from_secs(120),
        "the next two jobs in flight",
        || {
            let mut c = c.clone();
            async move {
                let mut ended = 0;
                for i in 0..JOBS {
                    if bai_tests::is_ended(&c.job("ws", "ex", &format!("job{i}")).await?) {
                        ended += 1;
                    }
                }
                let in_flight = progress(runs)
                    .iter()
                    .filter(|&&(_, at)| (50..LINES).contains(&at))
                    .count();
                Ok(ended >= 2 && in_flight >= 2)
            }
        },
    )
    .await?;
    coord.kill9()?;
    wait_for_more_output(runs).await?;
    coord.restart()?;
    let mut c2 = coord.clients().await?;
    std::mem::swap(&mut c, &mut c2);

    for i in 0..JOBS {
        let name = format!("job{i}");
        let job = c
            .wait_job("ws", "ex", &name, Duration::from_secs(120))
            .await?;
        assert_eq!(
            exec_state(&job),
            pb::ExecutionState::Succeeded,
            "{name}: {job:?}"
        );
        let ran = std::fs::read_to_string(runs.join(format!("{name}.runs")))?;
        assert_eq!(
            ran.lines().count(),
            1,
            "{name} ran {} times",
            ran.lines().count()
        );
        let want: String = (1..=LINES).map(|l| format!("{name} line {l}\n")).collect();
        let got = c.read_output("ws", "ex", &name, "stdout.txt").await?;
        assert!(
            String::from_utf8_lossy(&got) == want,
            "{name}: stdout is not exactly the job's output:\n{}",
            String::from_utf8_lossy(&got)
        );
        let want: String = (1..=LINES).map(|l| format!("{name} err {l}\n")).collect();
        let got = c.read_output("ws", "ex", &name, "stderr.txt").await?;
        assert!(
            String::from_utf8_lossy(&got) == want,
            "{name}: stderr differs"
        );
    }
    // The two nodes are still there and idle, not duplicated by the restarts.
    c.wait_idle_nodes("ws", "c1", 2, Duration::from_secs(30))
        .await?;
    let nodes = c.nodes("ws", "c1").await?;
    assert_eq!(nodes.len(), 2, "{nodes:?}");
    let agents = std::fs::read_dir(coord.state_dir().join("local-nodes"))?.count();
    assert_eq!(agents, 2, "local agents were duplicated");
    Ok(())
}

/// `(job, last line written)` of every job that has started writing.
fn progress(runs: &Path) -> Vec<(String, usize)> {
    (0..JOBS)
        .filter_map(|i| {
            let name = format!("job{i}");
            let at = std::fs::read_to_string(runs.join(format!("{name}.at"))).ok()?;
            Some((name, at.trim().parse().ok()?))
        })
        .collect()
}

/// Waits until some unfinished job writes 20 more lines: jobs run on while the
/// coordinator is down.
async fn wait_for_more_output(runs: &Path) -> Result<()> {
    let before = progress(runs);
    bai_tests::eventually(Duration::from_secs(30), "jobs to write on", || {
        let before = before.clone();
        async move {
            Ok(progress(runs).iter().any(|(name, at)| {
                before
                    .iter()
                    .any(|(n, was)| n == name && *was < LINES && *at >= (*was + 20).min(LINES))
            }))
        }
    })
    .await
}
