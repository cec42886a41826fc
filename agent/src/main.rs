//! `bai-agent`: parse the configuration, set up logging, run the agent until
//! SIGTERM/SIGINT. `bai-agent shim <job-dir>` is the internal per-job supervisor.
//! Exit status: 0 clean stop, 1 runtime error, 2 bad configuration.

use bai_agent::config::{self, Cli, Command, Config, EnvSource};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Shim { job_dir }) = &cli.command {
        let code = bai_agent::jobs::shim::run(job_dir);
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    let config = match load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("bai-agent: {e}");
            return ExitCode::from(config::EXIT_BAD_CONFIG as u8);
        }
    };
    // The same setup, and JSON shape, as the coordinator's.
    if bai_common::telemetry::init(config.log_format.into()).is_err() {
        eprintln!("bai-agent: logging was already set up");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(bai_agent::run(config, shutdown_signal()));
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(stopped) => {
            tracing::info!(?stopped, "bai-agent stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e, "bai-agent failed");
            ExitCode::FAILURE
        }
    }
}

fn load(cli: &Cli) -> Result<Config, config::ConfigError> {
    let file = config::read_config_file(cli)?;
    let env = EnvSource {
        bai_coordinator: std::env::var("BAI_COORDINATOR").ok(),
        state_directory: std::env::var("STATE_DIRECTORY").ok(),
    };
    Config::resolve(
        cli,
        file.as_ref().map(|(p, t)| (p.as_path(), t.as_str())),
        &env,
        agent_exe(),
    )
}

/// This binary's path, for starting job supervisors. After an upgrade
/// replaced the file, Linux reports "<path> (deleted)": use the new file.
fn agent_exe() -> PathBuf {
    match std::env::current_exe() {
        Ok(p) => {
            let s = p.to_string_lossy();
            match s.strip_suffix(" (deleted)") {
                Some(stripped) => PathBuf::from(stripped),
                None => p,
            }
        }
        Err(_) => PathBuf::from("bai-agent"),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
