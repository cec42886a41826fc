//! `bai job file stream` follows a running job: the first line shows up while
//! the job still runs, and the stream ends with the job, every byte delivered.

use anyhow::{Result, bail};
use bai_proto::v1 as pb;
use bai_tests::{Coordinator, exec_state};
use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_shows_first_line_before_the_job_ends() -> Result<()> {
    let coord = Coordinator::start()?;
    let mut c = coord.clients().await?;
    c.setup_cluster("ws", "ex", "c1", 1).await?;
    let data = tempfile::tempdir()?;
    let go = data.path().join("go");
    c.submit(
        "ws",
        "ex",
        "follow",
        "c1",
        &format!(
            "echo first line; while [ ! -e '{}' ]; do sleep 0.05; done; seq 1 20000; echo last line",
            go.display()
        ),
    )
    .await?;

    let mut child = coord
        .cli()
        .args([
            "job",
            "file",
            "stream",
            "-w",
            "ws",
            "-e",
            "ex",
            "-j",
            "follow",
            "-f",
            "stdout.txt",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || -> std::io::Result<String> {
        let mut r = BufReader::new(stdout);
        let mut first = String::new();
        r.read_line(&mut first)?;
        let _ = tx.send(first);
        let mut rest = String::new();
        r.read_to_string(&mut rest)?;
        Ok(rest)
    });
    let first = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            bail!("no line from `bai job file stream` within 30 s");
        }
    };
    assert_eq!(first, "first line\n");
    let job = c.job("ws", "ex", "follow").await?;
    assert_eq!(
        exec_state(&job),
        pb::ExecutionState::Running,
        "the job still runs: {job:?}"
    );

    std::fs::write(&go, b"")?;
    let status = tokio::task::spawn_blocking(move || child.wait()).await??;
    let rest = reader.join().expect("reader thread")?;
    assert!(status.success(), "stream exited {status}");
    let want: String = (1..=20000).map(|i| format!("{i}\n")).collect::<String>() + "last line\n";
    assert!(
        rest == want,
        "the rest of the stream differs ({} bytes, want {})",
        rest.len(),
        want.len()
    );
    let done = c.job("ws", "ex", "follow").await?;
    assert!(
        bai_tests::is_ended(&done),
        "the stream ended only after the job: {done:?}"
    );
    Ok(())
}
