//! Runs a parsed command line: connects, dispatches to the command group, and
//! turns the result into the process exit code. Also holds what every command
//! shares: the output context and the confirmation prompt.

use std::io::{BufRead, IsTerminal, Write};

use serde_json::Value;

use crate::args::{Cli, Command, OutputFormat};
use crate::client::Api;
use crate::error::CliError;
use crate::render::{self, Kind};
use crate::{cluster, demo, experiment, job, job_files, workspace};

/// What a command needs: the API (connected on first use, so that local
/// checks — flags, files, confirmation — come first) and how to print.
pub struct Ctx {
    pub address: String,
    pub verbose: bool,
    pub output: OutputFormat,
    api: tokio::sync::OnceCell<Api>,
}

impl Ctx {
    pub fn new(address: String, verbose: bool, output: OutputFormat) -> Self {
        Ctx {
            address,
            verbose,
            output,
            api: tokio::sync::OnceCell::new(),
        }
    }

    /// The coordinator's API; connects (once) on the first call.
    pub async fn api(&self) -> Result<&Api, CliError> {
        self.api
            .get_or_try_init(|| Api::connect(&self.address, self.verbose))
            .await
    }

    pub fn print_one(&self, kind: Kind, value: &Value) -> Result<(), CliError> {
        let mut out = std::io::stdout().lock();
        ignore_broken_pipe(
            render::one(&mut out, self.output, kind, value).and_then(|()| out.flush()),
        )
    }

    pub fn print_many(&self, kind: Kind, values: &[Value]) -> Result<(), CliError> {
        let mut out = std::io::stdout().lock();
        ignore_broken_pipe(
            render::many(&mut out, self.output, kind, values).and_then(|()| out.flush()),
        )
    }
}

/// A closed stdout (`bai ... | head`) ends output quietly.
pub fn ignore_broken_pipe(r: std::io::Result<()>) -> Result<(), CliError> {
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Runs the command; `Ok(code)` is the exit code (non-zero only for a job's own).
pub async fn run(cli: Cli) -> Result<u8, CliError> {
    if let Command::Demo(args) = cli.command {
        return demo::run(args, cli.verbose).await;
    }
    let ctx = Ctx::new(cli.coordinator, cli.verbose, cli.output);
    match cli.command {
        Command::Workspace(cmd) => workspace::run(&ctx, cmd).await.map(|()| 0),
        Command::Experiment(cmd) => experiment::run(&ctx, cmd).await.map(|()| 0),
        Command::Cluster(cmd) => cluster::run(&ctx, cmd).await.map(|()| 0),
        Command::Job(crate::args::JobCmd::File(cmd)) => job_files::run(&ctx, cmd).await.map(|()| 0),
        Command::Job(cmd) => job::run(&ctx, cmd).await,
        Command::Demo(_) => Ok(0),
    }
}

/// Asks before a delete or terminate, as az does. `-y` skips the question;
/// without a terminal on stdin there is no one to ask, so the command is refused.
pub fn confirm(yes: bool, what: &str) -> Result<(), CliError> {
    if yes {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(CliError::usage(format!(
            "refusing to {what} without confirmation: stdin is not a terminal; pass -y/--yes"
        )));
    }
    eprint!("Are you sure you want to {what}? (y/n): ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    if matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
        Ok(())
    } else {
        Err(CliError::usage(format!("not confirmed; did not {what}")))
    }
}
