//! `bai-mpi`: OpenMPI's `plm_rsh_agent` for bai jobs (see `bai_agent::mpi`).
//!
//! - `bai-mpi serve`: on every rank of a multi-node job but the master,
//!   serves the master's launches until the job stops it.
//! - `bai-mpi <node> <command…>`: runs the command on that node of the job
//!   and exits with its code, as `ssh <node> <command…>` would.

use bai_agent::mpi;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None | Some("-h" | "--help") => {
            eprintln!("usage: bai-mpi serve | bai-mpi <node> <command…>");
            return ExitCode::from(2);
        }
        Some("serve") => serve(),
        Some(node) => mpi::launch(node, &args[1..].join(" ")),
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(255)),
        Err(e) => {
            eprintln!("bai-mpi: {e}");
            ExitCode::from(255)
        }
    }
}

fn serve() -> Result<i32, String> {
    let own = std::env::var(mpi::NODE_VAR).map_err(|_| format!("{} is not set", mpi::NODE_VAR))?;
    let peers = mpi::parse_peers(&std::env::var(mpi::PEERS_VAR).unwrap_or_default())?;
    let addr = peers
        .get(&own)
        .ok_or_else(|| format!("this node ({own}) is not among {}", mpi::PEERS_VAR))?;
    let port = addr
        .rsplit_once(':')
        .map(|(_, p)| p)
        .ok_or_else(|| format!("{addr}: no port"))?;
    let token =
        std::env::var(mpi::TOKEN_VAR).map_err(|_| format!("{} is not set", mpi::TOKEN_VAR))?;
    let listener = std::net::TcpListener::bind(format!("0.0.0.0:{port}"))
        .map_err(|e| format!("cannot listen on port {port}: {e}"))?;
    mpi::serve(listener, token).map_err(|e| e.to_string())?;
    Ok(0)
}
