//! `bai-bench SCENARIO [options]`: runs one benchmark scenario and prints one
//! JSON line of figures to stdout (diagnostics go to stderr). Ctrl-C or SIGTERM
//! stops the run and everything it started.

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let opts = bai_bench::cli::Opts::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bai-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = rt.block_on(async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let terminated = async {
            match term.as_mut() {
                Some(t) => t.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = bai_bench::run(opts) => Some(r),
            _ = tokio::signal::ctrl_c() => None,
            _ = terminated => None,
        }
    });
    // Dropping the runtime ends simulated agents; the coordinator was stopped
    // when the scenario's future (which owned it) was dropped.
    drop(rt);
    match outcome {
        Some(Ok(report)) => {
            println!("{}", report.line());
            ExitCode::SUCCESS
        }
        Some(Err(e)) => {
            eprintln!("bai-bench: {e:#}");
            ExitCode::FAILURE
        }
        None => {
            eprintln!("bai-bench: interrupted");
            ExitCode::from(130)
        }
    }
}
