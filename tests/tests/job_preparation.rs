//! Batch AI's jobPreparation: it runs on the node before the command line,
//! with the job's environment and directory, its output in
//! `stdout-job_prep.txt` / `stderr-job_prep.txt`; a failing one fails the
//! job without running the command line; a terminate stops it.

use anyhow::Result;
use bai_proto::v1 as pb;
use bai_tests::{Coordinator, custom_job, exec_state, exit_code, procs};
use std::time::Duration;

fn with_preparation(name: &str, preparation: &str, command_line: &str) -> pb::Job {
    let mut job = custom_job("ws", "ex", name, "c1", command_line);
    job.job_preparation = Some(pb::JobPreparation {
        command_line: preparation.into(),
    });
    job.environment_variables.push(pb::EnvironmentVariable {
        name: "FROM_THE_JOB".into(),
        value: "seen-by-the-preparation".into(),
    });
    job
}

async fn create(c: &mut bai_tests::Clients, job: pb::Job) -> Result<()> {
    c.jobs
        .create_job(pb::CreateJobRequest { job: Some(job) })
        .await?;
    Ok(())
}

async fn text(c: &mut bai_tests::Clients, name: &str, file: &str) -> Result<String> {
    Ok(String::from_utf8(
        c.read_output("ws", "ex", name, file).await?,
    )?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_preparation_runs_first_and_its_failure_fails_the_job() -> Result<()> {
    let coord = Coordinator::start()?;
    let mut c = coord.clients().await?;
    c.setup_cluster("ws", "ex", "c1", 1).await?;

    // The preparation leaves a file in the job's directory that the command
    // line reads: it ran first, to its end, with the job's variables.
    create(
        &mut c,
        with_preparation(
            "prepared",
            "echo prep-out; echo prep-err >&2; sleep 0.2; echo \"$FROM_THE_JOB\" > prepared.txt",
            "cat prepared.txt; echo main-ran; echo main-err >&2",
        ),
    )
    .await?;
    let done = c
        .wait_job("ws", "ex", "prepared", Duration::from_secs(60))
        .await?;
    assert_eq!(exec_state(&done), pb::ExecutionState::Succeeded, "{done:?}");
    assert_eq!(exit_code(&done), Some(0));
    assert_eq!(
        text(&mut c, "prepared", "stdout.txt").await?,
        "seen-by-the-preparation\nmain-ran\n"
    );
    assert_eq!(text(&mut c, "prepared", "stderr.txt").await?, "main-err\n");
    assert_eq!(
        text(&mut c, "prepared", "stdout-job_prep.txt").await?,
        "prep-out\n"
    );
    assert_eq!(
        text(&mut c, "prepared", "stderr-job_prep.txt").await?,
        "prep-err\n"
    );
    let log = text(&mut c, "prepared", "execution.log").await?;
    let prep_at = log.find("started the job preparation");
    let job_at = log.find("started the job:");
    assert!(
        matches!((prep_at, job_at), (Some(p), Some(j)) if p < j),
        "the log shows the preparation, then the job: {log}"
    );
    let files = c.list_output("ws", "ex", "prepared").await?;
    for (want, len) in [
        ("stdout-job_prep.txt", 9),
        ("stderr-job_prep.txt", 9),
        ("stdout.txt", 33),
    ] {
        assert_eq!(files.get(want), Some(&len), "{want}: {files:?}");
    }

    // A failing preparation fails the job with its exit code and output,
    // and the command line never runs.
    create(
        &mut c,
        with_preparation(
            "unprepared",
            "echo failing-prep; echo why >&2; exit 3",
            "echo should-not-run",
        ),
    )
    .await?;
    let done = c
        .wait_job("ws", "ex", "unprepared", Duration::from_secs(60))
        .await?;
    assert_eq!(exec_state(&done), pb::ExecutionState::Failed, "{done:?}");
    assert_eq!(exit_code(&done), Some(3));
    let errors = &done.execution_info.as_ref().expect("execution info").errors;
    assert!(
        errors.iter().any(|e| e.code == "JobPreparationFailed"
            && e.message.contains("exited with code 3")
            && e.message.contains("stdout-job_prep.txt")),
        "{errors:?}"
    );
    assert_eq!(
        text(&mut c, "unprepared", "stdout-job_prep.txt").await?,
        "failing-prep\n"
    );
    assert_eq!(
        text(&mut c, "unprepared", "stderr-job_prep.txt").await?,
        "why\n"
    );
    assert_eq!(text(&mut c, "unprepared", "stdout.txt").await?, "");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_during_job_preparation_stops_it_and_the_command_line_never_runs() -> Result<()> {
    let coord = Coordinator::start()?;
    let mut c = coord.clients().await?;
    c.setup_cluster("ws", "ex", "c1", 1).await?;
    create(
        &mut c,
        with_preparation("slow", "echo preparing; sleep 31341", "echo should-not-run"),
    )
    .await?;
    bai_tests::eventually(Duration::from_secs(30), "the preparation runs", || async {
        Ok(procs::with_cmdline("sleep 31341")
            .iter()
            .any(|&pid| procs::alive(pid)))
    })
    .await?;
    c.jobs
        .terminate_job(pb::TerminateJobRequest {
            job: Some(bai_tests::key("ws", "ex", "slow")),
        })
        .await?;
    let done = c
        .wait_job("ws", "ex", "slow", Duration::from_secs(40))
        .await?;
    assert_eq!(exec_state(&done), pb::ExecutionState::Failed, "{done:?}");
    let left: Vec<i32> = procs::with_cmdline("sleep 31341")
        .into_iter()
        .filter(|&pid| procs::alive(pid))
        .collect();
    assert!(left.is_empty(), "the preparation survived: {left:?}");
    assert_eq!(text(&mut c, "slow", "stdout.txt").await?, "");
    assert_eq!(
        text(&mut c, "slow", "stdout-job_prep.txt").await?,
        "preparing\n"
    );
    Ok(())
}
