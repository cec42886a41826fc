//! The setup task: `bash -c <commandLine>` as root, after the mounts, with
//! `AZ_BATCHAI_MOUNT_ROOT`, the task's variables and secrets (in the
//! environment, never on a command line). Its stdout and stderr are piped
//! into `<state>/node/setup/<run>/{stdout.txt,stderr.txt}` and the agent adds
//! `execution.log`; each append is announced on a watch, from which the
//! [`Shipper`] sends `SetupOutput` chunks by (run, stream, offset) and
//! resends from the coordinator's acks (agent.proto rule 7).
//!
//! The task runs in its own process group and is killed if the agent stops
//! while it runs (the next agent runs it again: a step is finished only when
//! its exit is recorded).

use super::{SetupChunk, SetupTask};
use crate::model::Stream;
use crate::timefmt;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::SystemTime;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

/// Largest chunk sent.
const CHUNK: usize = 256 << 10;
/// Most unacknowledged bytes per stream.
const WINDOW: u64 = 4 << 20;
/// Lines of output kept in an unusable node's error.
const TAIL_LINES: usize = 20;
/// Bytes read from the end of a file for its tail.
const TAIL_BYTES: u64 = 8 << 10;

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub exit_code: i32,
    /// The last lines of stderr, or of stdout when stderr is empty.
    pub output_tail: String,
}

/// A run's files.
#[derive(Debug, Clone)]
pub struct RunFiles {
    pub run: String,
    pub dir: PathBuf,
}

impl RunFiles {
    pub fn new(setup_root: &Path, run: &str) -> Self {
        Self {
            run: run.to_string(),
            dir: setup_root.join(run),
        }
    }

    pub fn path(&self, s: Stream) -> PathBuf {
        self.dir.join(s.file_name())
    }

    /// The files' current lengths.
    pub fn lengths(&self) -> [u64; 3] {
        let mut l = [0; 3];
        for s in Stream::STDOUTERR {
            l[s.index()] = std::fs::metadata(self.path(s)).map_or(0, |m| m.len());
        }
        l
    }
}

fn append(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(data)
}

/// Runs the task to its end. `env` is the whole environment; `grew` gets
/// the files' lengths after every append.
pub async fn run(
    task: &SetupTask,
    env: Vec<(String, String)>,
    files: &RunFiles,
    grew: &watch::Sender<[u64; 3]>,
) -> io::Result<Outcome> {
    let dir = files.dir.clone();
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)?;
        for s in Stream::STDOUTERR {
            std::fs::File::create(dir.join(s.file_name()))?;
        }
        Ok::<_, io::Error>(())
    })
    .await
    .map_err(io::Error::other)??;
    let log = |line: String| {
        let path = files.path(Stream::ExecutionLog);
        async move {
            let stamped = format!("{} {line}\n", timefmt::rfc3339(SystemTime::now()));
            tokio::task::spawn_blocking(move || append(&path, stamped.as_bytes()))
                .await
                .map_err(io::Error::other)?
        }
    };
    log(format!("setup task run {} starting", files.run)).await?;
    grew.send_replace(files.lengths());
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg("-c")
        .arg(&task.command_line)
        .env_clear()
        .envs(env)
        .current_dir(&files.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            log(format!("cannot start bash: {e}")).await?;
            return Ok(Outcome {
                exit_code: -1,
                output_tail: format!("cannot start bash: {e}"),
            });
        }
    };
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let pump = |pipe: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>, s: Stream| {
        let path = files.path(s);
        let files = files.clone();
        async move {
            let Some(mut pipe) = pipe else {
                return Ok::<_, io::Error>(());
            };
            let mut buf = vec![0u8; 64 << 10];
            loop {
                let n = pipe.read(&mut buf).await?;
                if n == 0 {
                    return Ok(());
                }
                let data = buf[..n].to_vec();
                let p = path.clone();
                tokio::task::spawn_blocking(move || append(&p, &data))
                    .await
                    .map_err(io::Error::other)??;
                grew.send_replace(files.lengths());
            }
        }
    };
    let out = pump(
        stdout.map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        Stream::Stdout,
    );
    let err = pump(
        stderr.map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        Stream::Stderr,
    );
    let (a, b, status) = tokio::join!(out, err, child.wait());
    a?;
    b?;
    let code = status.map(crate::jobs::shim::exit_code).unwrap_or(-1);
    log(format!("setup task exited with code {code}")).await?;
    grew.send_replace(files.lengths());
    let tail_files = files.clone();
    let output_tail = tokio::task::spawn_blocking(move || {
        let err = tail(&tail_files.path(Stream::Stderr));
        if err.trim().is_empty() {
            tail(&tail_files.path(Stream::Stdout))
        } else {
            err
        }
    })
    .await
    .map_err(io::Error::other)?;
    Ok(Outcome {
        exit_code: code,
        output_tail,
    })
}

/// The last [`TAIL_LINES`] lines of a file (lossy UTF-8).
fn tail(path: &Path) -> String {
    let Ok(f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let from = len.saturating_sub(TAIL_BYTES);
    let mut buf = vec![0u8; (len - from) as usize];
    if f.read_exact_at(&mut buf, from).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
}

/// The directory under the task's `stdOutErrPathPrefix` where Batch AI put
/// the output (`<prefix>/<suffix>`), if the prefix lies under `mount_root`.
pub fn mirror_dir(task: &SetupTask, mount_root: &Path) -> Option<PathBuf> {
    let p = &task.std_out_err_path_prefix;
    let rest = p
        .strip_prefix("$AZ_BATCHAI_MOUNT_ROOT")
        .or_else(|| p.strip_prefix("${AZ_BATCHAI_MOUNT_ROOT}"));
    let prefix = match rest {
        Some(r) => mount_root.join(r.trim_start_matches('/')),
        None => PathBuf::from(p),
    };
    if !prefix.starts_with(mount_root) || p.split('/').any(|s| s == "..") {
        return None;
    }
    Some(prefix.join(&task.std_out_err_path_suffix))
}

/// Copies the run's files into `dir` as `stdout-<node>.txt`,
/// `stderr-<node>.txt` and `execution-<node>.log` (blocking).
pub fn mirror(files: &RunFiles, dir: &Path, node_id: &str) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for s in Stream::STDOUTERR {
        let name = match s {
            Stream::Stdout => format!("stdout-{node_id}.txt"),
            Stream::Stderr => format!("stderr-{node_id}.txt"),
            Stream::ExecutionLog => format!("execution-{node_id}.log"),
            // Not a setup task's.
            Stream::JobPrepStdout | Stream::JobPrepStderr => continue,
        };
        std::fs::copy(files.path(s), dir.join(name))?;
    }
    Ok(())
}

/// Sends a run's output by (run, stream, offset) with a bounded window, and
/// resends from the coordinator's acks.
#[derive(Debug)]
pub struct Shipper {
    files: RunFiles,
    sent: [u64; 3],
    acked: [u64; 3],
}

impl Shipper {
    /// A shipper for `files`, resuming from what the coordinator holds of
    /// `held_run` (nothing if that is another run).
    pub fn new(files: RunFiles, held_run: &str, held: [u64; 3]) -> Self {
        let start = if held_run == files.run { held } else { [0; 3] };
        Self {
            files,
            sent: start,
            acked: start,
        }
    }

    pub fn run(&self) -> &str {
        &self.files.run
    }

    /// A new session: resume from what it holds.
    pub fn resume(&mut self, held_run: &str, held: [u64; 3]) {
        let start = if held_run == self.files.run {
            held
        } else {
            [0; 3]
        };
        self.sent = start;
        self.acked = start;
    }

    /// The coordinator holds `stream` up to `offset`.
    pub fn ack(&mut self, run: &str, stream: Stream, offset: u64) {
        if run != self.files.run {
            return;
        }
        let i = stream.index();
        self.acked[i] = self.acked[i].max(offset);
        if offset < self.sent[i] && offset >= self.acked[i] {
            // It has less than was sent (a gap it refused): resend from there.
            self.sent[i] = offset;
        }
        self.sent[i] = self.sent[i].max(self.acked[i]);
    }

    /// Whether every byte up to `lengths` is acknowledged.
    pub fn done(&self, lengths: &[u64; 3]) -> bool {
        Stream::STDOUTERR
            .iter()
            .all(|s| self.acked[s.index()] >= lengths[s.index()])
    }

    /// The chunks to send now, given the files' `lengths` (blocking: reads
    /// the files).
    pub fn next_chunks(&mut self, lengths: &[u64; 3]) -> io::Result<Vec<SetupChunk>> {
        let mut out = Vec::new();
        for s in Stream::STDOUTERR {
            let i = s.index();
            while self.sent[i] < lengths[i] && self.sent[i] - self.acked[i] < WINDOW {
                let want = ((lengths[i] - self.sent[i]) as usize).min(CHUNK);
                let mut buf = vec![0u8; want];
                let f = std::fs::File::open(self.files.path(s))?;
                let n = f.read_at(&mut buf, self.sent[i])?;
                if n == 0 {
                    break;
                }
                buf.truncate(n);
                out.push(SetupChunk {
                    run: self.files.run.clone(),
                    stream: s,
                    offset: self.sent[i],
                    data: buf,
                });
                self.sent[i] += n as u64;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::EnvVar;

    fn task(cmd: &str) -> SetupTask {
        SetupTask {
            command_line: cmd.into(),
            environment_variables: vec![EnvVar::new("GREETING", "hi")],
            secrets: vec![],
            std_out_err_path_prefix: "$AZ_BATCHAI_MOUNT_ROOT/afs".into(),
            std_out_err_path_suffix: "workspaces/w/clusters/c/g1".into(),
        }
    }

    #[tokio::test]
    async fn a_run_captures_both_streams_its_exit_and_the_tail() {
        let tmp = tempfile::tempdir().unwrap();
        let files = RunFiles::new(tmp.path(), "r1");
        let (tx, rx) = watch::channel([0; 3]);
        let env = vec![
            ("PATH".to_string(), "/usr/bin:/bin".to_string()),
            ("GREETING".to_string(), "hi".to_string()),
        ];
        let script = "echo out $GREETING; for i in $(seq 1 30); do echo err$i >&2; done; exit 3";
        let outcome = run(&task(script), env, &files, &tx).await.unwrap();
        assert_eq!(outcome.exit_code, 3);
        let lines: Vec<&str> = outcome.output_tail.lines().collect();
        assert_eq!(lines.len(), TAIL_LINES);
        assert_eq!(lines.last(), Some(&"err30"));
        assert_eq!(
            std::fs::read_to_string(files.path(Stream::Stdout)).unwrap(),
            "out hi\n"
        );
        let log = std::fs::read_to_string(files.path(Stream::ExecutionLog)).unwrap();
        assert!(log.contains("exited with code 3"), "{log}");
        assert_eq!(*rx.borrow(), files.lengths());

        // Shipping: everything, in order, then resent from an ack that is short.
        let mut ship = Shipper::new(files.clone(), "other-run", [5, 5, 5]);
        let lengths = files.lengths();
        let chunks = ship.next_chunks(&lengths).unwrap();
        let stdout: Vec<u8> = chunks
            .iter()
            .filter(|c| c.stream == Stream::Stdout)
            .flat_map(|c| c.data.clone())
            .collect();
        assert_eq!(stdout, b"out hi\n");
        assert!(chunks.iter().all(|c| c.run == "r1"));
        assert!(!ship.done(&lengths));
        assert!(
            ship.next_chunks(&lengths).unwrap().is_empty(),
            "all in flight"
        );
        ship.ack("r1", Stream::Stdout, 3);
        let again = ship.next_chunks(&lengths).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(
            (again[0].offset, again[0].data.as_slice()),
            (3, &b" hi\n"[..])
        );
        for s in Stream::STDOUTERR {
            ship.ack("r1", s, lengths[s.index()]);
        }
        ship.ack("r0", Stream::Stdout, 0);
        assert!(ship.done(&lengths));
        // A session holding part of this run resumes after it.
        ship.resume("r1", [2, 0, 0]);
        let resumed = ship.next_chunks(&lengths).unwrap();
        assert_eq!(resumed[0].offset, 2);

        // The mirror on a mount, named after the node.
        let root = tmp.path().join("mounts");
        let dir = mirror_dir(&task("true"), &root).unwrap();
        assert_eq!(dir, root.join("afs/workspaces/w/clusters/c/g1"));
        mirror(&files, &dir, "n1").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("stdout-n1.txt")).unwrap(),
            "out hi\n"
        );
        assert!(dir.join("execution-n1.log").exists());
        let mut t = task("true");
        t.std_out_err_path_prefix = "/var/log/x".into();
        assert_eq!(mirror_dir(&t, &root), None, "not on a mount");
    }
}
