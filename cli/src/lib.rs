//! bai's command line, shaped like `az batchai`: parses flags (`args`), talks
//! gRPC to the coordinator (`client`), converts Batch AI JSON to and from the
//! protocol (`batchai_json`) and prints results (`render`). One module per
//! command group: `workspace`, `experiment`, `cluster` (with
//! `cluster_params` and `storage_flags`), `cluster_files`, `job` (with
//! `job_params`), `job_files`, `nodes` (node exec and job nodes, over `ssh`),
//! `demo`. `streaming` follows output files; `query` is `--query` (JMESPath).

pub mod app;
pub mod args;
pub mod batchai_json;
pub mod client;
pub mod cluster;
pub mod cluster_files;
pub mod cluster_params;
pub mod demo;
pub mod error;
pub mod experiment;
pub mod job;
pub mod job_files;
pub mod job_params;
pub mod metrics;
pub mod nodes;
pub mod query;
pub mod render;
pub mod retry;
pub mod ssh;
pub mod storage_flags;
pub mod streaming;
pub mod workspace;

use std::process::ExitCode;

use clap::Parser;

/// The whole program: parse, run, print an error, and pick the exit code.
pub fn main_entry() -> ExitCode {
    let cli = match args::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { error::EXIT_USAGE } else { 0 });
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(error::EXIT_API);
        }
    };
    match runtime.block_on(app::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
