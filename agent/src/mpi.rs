//! MPI across a job's nodes without SSH keys: `bai-mpi`, OpenMPI's
//! `plm_rsh_agent` for bai jobs.
//!
//! Every rank of a multi-node job but the master runs `bai-mpi serve`
//! inside the job (its user, environment, directory and cgroup). When the
//! master's `mpirun` starts a daemon on another node it runs
//! `bai-mpi <node> <command…>` (the hostfile names nodes by their ids); the
//! launcher connects to that node's `serve`, proves it belongs to the job,
//! and the server runs the command with `bash -c` (`sh -c` where there is
//! no bash, in a container's image) inside its rank of the
//! job, its output going to that rank's stdout/stderr; the launcher waits
//! and exits with the command's code, as `ssh` would. For the launcher's own
//! node it runs the command itself. Tree spawn is off, so every launch comes
//! from the master.
//!
//! The proof: the server sends a fresh nonce, the launcher answers with
//! HMAC-SHA256 over the nonce and the command, keyed with the job's token
//! (`BAI_MPI_TOKEN`, a secret every rank of this attempt has and nothing
//! else): the token never crosses the network and an answer is good for
//! one command once. Peers come from `BAI_MPI_PEERS` (`<node>=<host>:<port>`,
//! comma-separated), this node from `BAI_NODE_ID`.

use ring::hmac;
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

/// The variables the launcher and server read.
pub const PEERS_VAR: &str = "BAI_MPI_PEERS";
pub const TOKEN_VAR: &str = "BAI_MPI_TOKEN";
pub const NODE_VAR: &str = "BAI_NODE_ID";
/// Where OpenMPI keeps its session directories (the agent sets it to the
/// job's temp).
pub const SESSION_VAR: &str = "OMPI_MCA_orte_tmpdir_base";

/// How long a launcher keeps trying to reach a rank's server (it may still
/// be preparing: mounts, jobPreparation).
const CONNECT_FOR: Duration = Duration::from_secs(120);

/// `<node>=<host>:<port>,…` as a map.
pub fn parse_peers(s: &str) -> Result<HashMap<String, String>, String> {
    let mut peers = HashMap::new();
    for entry in s.split(',').filter(|e| !e.is_empty()) {
        let Some((node, addr)) = entry.split_once('=') else {
            return Err(format!(
                "{PEERS_VAR}: {entry:?} is not <node>=<host>:<port>"
            ));
        };
        peers.insert(node.to_string(), addr.to_string());
    }
    Ok(peers)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The answer to `nonce` for running `command`.
pub fn proof(token: &str, nonce: &str, command: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, token.as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(nonce.as_bytes());
    ctx.update(b"\n");
    ctx.update(command.as_bytes());
    hex(ctx.sign().as_ref())
}

fn verify(token: &str, nonce: &str, command: &str, answer: &str) -> bool {
    let key = hmac::Key::new(hmac::HMAC_SHA256, token.as_bytes());
    let Some(tag) = unhex(answer) else {
        return false;
    };
    let mut msg = Vec::with_capacity(nonce.len() + 1 + command.len());
    msg.extend_from_slice(nonce.as_bytes());
    msg.push(b'\n');
    msg.extend_from_slice(command.as_bytes());
    hmac::verify(&key, &msg, &tag).is_ok()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn nonce() -> io::Result<String> {
    let mut b = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| io::Error::other("no randomness"))?;
    Ok(hex(&b))
}

/// bash where there is one, else sh (a container's image may have only
/// sh): what runs the commands OpenMPI sends, as `ssh` would run them.
fn shell() -> &'static str {
    if crate::node::mounts::find_program("bash").is_some() {
        "bash"
    } else {
        "sh"
    }
}

/// The shell's code for how a process ended: its exit code, or 128 + the
/// signal that ended it.
fn code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(255)
}

/// Serves launches for this rank until killed: one thread per connection.
pub fn serve(listener: TcpListener, token: String) -> io::Result<()> {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let token = token.clone();
        std::thread::spawn(move || {
            if let Err(e) = serve_one(conn, &token) {
                eprintln!("bai-mpi serve: {e}");
            }
        });
    }
    Ok(())
}

/// Protocol, one line each: server `nonce <hex>`; launcher
/// `run <proof> <command>`; server `exit <code>` when the command ends (or
/// `refused` and the connection closes). If the launcher goes away first,
/// the command's process group is killed.
fn serve_one(conn: TcpStream, token: &str) -> io::Result<()> {
    let mut out = conn.try_clone()?;
    let nonce = nonce()?;
    writeln!(out, "nonce {nonce}")?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let line = line.trim_end_matches('\n');
    let Some((answer, command)) = line.strip_prefix("run ").and_then(|r| r.split_once(' ')) else {
        writeln!(out, "refused")?;
        return Err(io::Error::other("a malformed request"));
    };
    if !verify(token, &nonce, command, answer) {
        writeln!(out, "refused")?;
        return Err(io::Error::other("a request without the job's token"));
    }
    let command = match std::env::var(SESSION_VAR) {
        Ok(base) => with_session_base(command, Path::new(&base)),
        Err(_) => command.to_string(),
    };
    let mut child = Command::new(shell())
        .arg("-c")
        .arg(command)
        .process_group(0)
        .spawn()?;
    let pgid = child.id() as i32;
    // The launcher's end of the connection going away while the command
    // runs means mpirun is gone: so must the daemon be. Once the command has
    // ended it is left alone: what it started may still be leaving its
    // process group (an `orted --daemonize` on its way to its own session).
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut watch = reader.into_inner();
    watch.set_read_timeout(None)?;
    let ended = done.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while matches!(io::Read::read(&mut watch, &mut buf), Ok(n) if n > 0) {}
        if !ended.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pgid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    });
    let status = child.wait()?;
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    writeln!(out, "exit {}", code(status))?;
    Ok(())
}

/// `command` with OpenMPI's session directory base set to `base`.
///
/// mpirun hands its own `orte_tmpdir_base` to every daemon on the daemon's
/// command line (`-mca orte_tmpdir_base "<dir>"`), which beats the daemon's
/// environment; daemons sharing a host (local mode, and mpirun beside its
/// own node's daemon) then make and remove the same session directories
/// under one host name, and a daemon that loses that race dies before it
/// reports (mpirun waits for it forever). Each daemon gets its own rank's
/// base instead.
pub fn with_session_base(command: &str, base: &Path) -> String {
    const PARAM: &str = " orte_tmpdir_base ";
    let quoted = format!("\"{}\"", base.display());
    let mut out = String::with_capacity(command.len() + quoted.len());
    let mut rest = command;
    while let Some(at) = rest.find(PARAM) {
        let before = &rest[..at];
        let after = &rest[at + PARAM.len()..];
        out.push_str(before);
        out.push_str(PARAM);
        if !(before.ends_with("-mca") || before.ends_with("--mca")) {
            rest = after;
            continue;
        }
        // The value: a double-quoted string or one word.
        let end = match after.strip_prefix('"') {
            Some(q) => q.find('"').map_or(after.len(), |i| i + 2),
            None => after.find(' ').unwrap_or(after.len()),
        };
        out.push_str(&quoted);
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Runs `command` on `node` of this job (as `ssh node command` would) and
/// returns its exit code.
pub fn launch(node: &str, command: &str) -> Result<i32, String> {
    let own = std::env::var(NODE_VAR).unwrap_or_default();
    if node == own || node == "localhost" {
        // This node's daemon beside mpirun itself: its own session
        // directory, or the two collide making it.
        let mut command = command.to_string();
        let mut cmd = Command::new(shell());
        if let Ok(base) = std::env::var(SESSION_VAR) {
            let own_dir = Path::new(&base).join("orted");
            std::fs::create_dir_all(&own_dir)
                .map_err(|e| format!("cannot create {}: {e}", own_dir.display()))?;
            command = with_session_base(&command, &own_dir);
            cmd.env(SESSION_VAR, own_dir);
        }
        let status = cmd
            .arg("-c")
            .arg(command)
            .status()
            .map_err(|e| format!("cannot run {}: {e}", shell()))?;
        return Ok(code(status));
    }
    let peers = parse_peers(&std::env::var(PEERS_VAR).unwrap_or_default())?;
    let Some(addr) = peers.get(node) else {
        return Err(format!("node {node} is not a node of this job"));
    };
    let token = std::env::var(TOKEN_VAR).map_err(|_| format!("{TOKEN_VAR} is not set"))?;
    let deadline = Instant::now() + CONNECT_FOR;
    let conn = loop {
        match TcpStream::connect(addr) {
            Ok(c) => break c,
            Err(e) if Instant::now() > deadline => {
                return Err(format!("cannot reach node {node} at {addr}: {e}"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    run_on(conn, &token, command).map_err(|e| format!("node {node} at {addr}: {e}"))
}

fn run_on(conn: TcpStream, token: &str, command: &str) -> io::Result<i32> {
    let mut out = conn.try_clone()?;
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let Some(nonce) = line.trim_end().strip_prefix("nonce ") else {
        return Err(io::Error::other(format!("not a bai-mpi server: {line:?}")));
    };
    // One line: a command with a newline in it is not one OpenMPI sends.
    let command = command.replace('\n', " ");
    writeln!(out, "run {} {command}", proof(token, nonce, &command))?;
    line.clear();
    reader.read_line(&mut line)?;
    match line.trim_end().strip_prefix("exit ") {
        Some(c) => c
            .parse()
            .map_err(|_| io::Error::other(format!("a bad answer: {line:?}"))),
        None if line.trim_end() == "refused" => Err(io::Error::other("refused the job's token")),
        None => Err(io::Error::other(
            "the connection ended before the command did",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(token: &str) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let token = token.to_string();
        std::thread::spawn(move || serve(l, token));
        addr
    }

    #[test]
    fn peers_parse_and_refuse_what_is_not_a_peer() {
        let p = parse_peers("a=10.0.0.1:10001,b=10.0.0.2:10002").unwrap();
        assert_eq!(p["b"], "10.0.0.2:10002");
        assert!(parse_peers("a").is_err());
        assert!(parse_peers("").unwrap().is_empty());
    }

    #[test]
    fn a_proof_is_for_one_nonce_and_one_command() {
        let p = proof("t", "n1", "orted -x");
        assert!(verify("t", "n1", "orted -x", &p));
        assert!(!verify("t", "n2", "orted -x", &p), "another nonce");
        assert!(!verify("t", "n1", "rm -rf /", &p), "another command");
        assert!(!verify("u", "n1", "orted -x", &p), "another token");
        assert!(!verify("t", "n1", "orted -x", "zz"));
    }

    #[test]
    fn each_daemon_gets_its_own_session_base() {
        let base = Path::new("/jobs/j1/node-2/temp");
        let orted = r#"orted --daemonize -mca ess "env" -mca orte_tmpdir_base "/jobs/j1/node-0/temp" -mca plm "rsh""#;
        assert_eq!(
            with_session_base(orted, base),
            r#"orted --daemonize -mca ess "env" -mca orte_tmpdir_base "/jobs/j1/node-2/temp" -mca plm "rsh""#
        );
        // Unquoted, last, with --mca; and left alone where it is no parameter.
        assert_eq!(
            with_session_base("orted --mca orte_tmpdir_base /x", base),
            r#"orted --mca orte_tmpdir_base "/jobs/j1/node-2/temp""#
        );
        assert_eq!(
            with_session_base("echo orte_tmpdir_base here", base),
            "echo orte_tmpdir_base here"
        );
    }

    #[test]
    fn the_server_runs_a_proven_command_and_answers_its_exit_code() {
        let addr = server("s3cret");
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let cmd = format!("touch {}; exit 7", marker.display());
        let code = run_on(TcpStream::connect(&addr).unwrap(), "s3cret", &cmd).unwrap();
        assert_eq!(code, 7);
        assert!(marker.exists());
        // Killed by a signal: 128 + its number, as a shell says.
        let code = run_on(TcpStream::connect(&addr).unwrap(), "s3cret", "kill -9 $$").unwrap();
        assert_eq!(code, 137);
    }

    #[test]
    fn the_server_refuses_a_wrong_token_and_runs_nothing() {
        let addr = server("s3cret");
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let cmd = format!("touch {}", marker.display());
        let e = run_on(TcpStream::connect(&addr).unwrap(), "guess", &cmd).unwrap_err();
        assert!(e.to_string().contains("refused"), "{e}");
        std::thread::sleep(Duration::from_millis(100));
        assert!(!marker.exists());
    }

    #[test]
    fn a_launcher_that_goes_away_takes_its_command_with_it() {
        let addr = server("s3cret");
        let mut conn = TcpStream::connect(&addr).unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let nonce = line.trim_end().strip_prefix("nonce ").unwrap().to_string();
        let cmd = "sleep 31415";
        writeln!(conn, "run {} {cmd}", proof("s3cret", &nonce, cmd)).unwrap();
        let alive = || {
            std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .is_ok_and(|c| c.starts_with(b"sleep\x0031415"))
            })
        };
        let t0 = Instant::now();
        while !alive() && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(alive(), "the command started");
        drop(reader);
        drop(conn);
        let t0 = Instant::now();
        while alive() && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!alive(), "the command outlived its launcher");
    }
}
