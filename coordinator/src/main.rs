//! `bai-coordinator`: parse the configuration, set up logging, bind the
//! listener and run until SIGTERM or SIGINT. Exit codes: 0 clean shutdown,
//! 1 runtime failure, 2 bad configuration.

use bai_coordinator::config::{self, Args};
use clap::Parser;
use std::process::ExitCode;

const EXIT_FAILURE: u8 = 1;
const EXIT_BAD_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_BAD_CONFIG } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let config = match config::load(args, std::env::var_os("STATE_DIRECTORY").map(Into::into)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bai-coordinator: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    if config.local_agents {
        match bai_coordinator::local_provider::agent_bin(&config) {
            Ok(bin) if bin.is_file() => {}
            Ok(bin) => {
                eprintln!(
                    "bai-coordinator: agent_bin: {} does not exist (needed by --local-agents)",
                    bin.display()
                );
                return ExitCode::from(EXIT_BAD_CONFIG);
            }
            Err(e) => {
                eprintln!("bai-coordinator: agent_bin: {e}");
                return ExitCode::from(EXIT_BAD_CONFIG);
            }
        }
    }
    if !bai_coordinator::telemetry::init(config.log_format) {
        eprintln!("bai-coordinator: logging was already set up");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    runtime.block_on(async {
        let listener = match tokio::net::TcpListener::bind(config.listen).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(listen = %config.listen, error = %e, "cannot listen");
                return ExitCode::from(EXIT_FAILURE);
            }
        };
        match bai_coordinator::run(config, listener, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "coordinator failed");
                ExitCode::from(EXIT_FAILURE)
            }
        }
    })
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
