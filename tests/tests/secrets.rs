//! Job secrets reach the job's environment and nowhere else: not the API's
//! answers, not a log line, not any process's command line.

use anyhow::Result;
use bai_proto::v1 as pb;
use bai_tests::{Coordinator, custom_job, exec_state, procs};
use std::time::Duration;

const SECRET: &str = "s3cr3t-Value-7fd1c0a2";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_write_only() -> Result<()> {
    let coord = Coordinator::start()?;
    let mut c = coord.clients().await?;
    c.setup_cluster("ws", "ex", "c1", 1).await?;

    let data = tempfile::tempdir()?;
    let go = data.path().join("go");
    let checked = data.path().join("checked");
    // The job checks the value without the command line holding it.
    let reversed: String = SECRET.chars().rev().collect();
    let mut job = custom_job(
        "ws",
        "ex",
        "sec",
        "c1",
        &format!(
            "test \"$(printf %s \"$MY_SECRET\" | rev)\" = '{reversed}' && echo secret-ok; \
             echo \"plain=$PLAIN\"; : > '{}'; \
             while [ ! -e '{}' ]; do sleep 0.05; done",
            checked.display(),
            go.display()
        ),
    );
    job.environment_variables.push(pb::EnvironmentVariable {
        name: "PLAIN".into(),
        value: "visible".into(),
    });
    job.secrets.push(pb::EnvironmentVariableWithSecretValue {
        name: "MY_SECRET".into(),
        value: SECRET.into(),
        value_secret_reference: None,
    });
    let created = c
        .jobs
        .create_job(pb::CreateJobRequest { job: Some(job) })
        .await?
        .into_inner();
    assert!(
        format!("{created:?}").contains("MY_SECRET"),
        "the secret's name is returned"
    );
    assert!(
        !format!("{created:?}").contains(SECRET),
        "create returned the secret value"
    );

    // While the job runs, no process carries the secret on its command line.
    // Once the job has used the secret (and written `checked`), every process
    // that could hold it (agent, shim, the job's shell) has been started.
    bai_tests::eventually(Duration::from_secs(30), "the job to use its secret", || {
        let checked = checked.clone();
        async move { Ok(checked.exists()) }
    })
    .await?;
    assert!(
        procs::with_cmdline(SECRET).is_empty(),
        "a command line holds the secret"
    );

    std::fs::write(&go, b"")?;
    let done = c
        .wait_job("ws", "ex", "sec", Duration::from_secs(60))
        .await?;
    assert_eq!(exec_state(&done), pb::ExecutionState::Succeeded, "{done:?}");
    let out = c.read_output("ws", "ex", "sec", "stdout.txt").await?;
    assert_eq!(String::from_utf8_lossy(&out), "secret-ok\nplain=visible\n");

    let got = c.job("ws", "ex", "sec").await?;
    assert_eq!(got.secrets.len(), 1);
    assert_eq!(got.secrets[0].name, "MY_SECRET");
    assert!(
        got.secrets[0].value.is_empty(),
        "get returned the secret value"
    );
    let list = c
        .jobs
        .list_jobs(pb::ListJobsRequest {
            workspace: "ws".into(),
            experiment: "ex".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(
        !format!("{list:?}").contains(SECRET),
        "list returned the secret value"
    );

    let out = coord
        .cli()
        .args([
            "job", "show", "-w", "ws", "-e", "ex", "-n", "sec", "-o", "json",
        ])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains(SECRET));

    assert!(
        !coord.log().contains(SECRET),
        "the coordinator logged the secret"
    );
    assert!(
        !coord.agent_logs().contains(SECRET),
        "an agent logged the secret"
    );
    Ok(())
}
