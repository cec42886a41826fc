//! Runs a parsed command line: connects, dispatches to the command group, and
//! turns the result into the process exit code. Also holds what every command
//! shares: the output context and the confirmation prompt.

use std::io::{BufRead, IsTerminal, Write};

use serde_json::Value;

use crate::args::{Cli, ClusterCmd, ClusterNodeCmd, Command, JobCmd, OutputFormat};
use crate::client::Api;
use crate::error::CliError;
use crate::query::Query;
use crate::render::{self, Kind};
use crate::{cluster, cluster_files, demo, experiment, job, job_files, nodes, workspace};

/// What a command needs: the API (connected on first use, so that local
/// checks — flags, files, confirmation — come first) and how to print.
pub struct Ctx {
    pub address: String,
    pub verbose: bool,
    pub output: OutputFormat,
    /// `--query`, applied to every answer before it is printed.
    pub query: Option<Query>,
    api: tokio::sync::OnceCell<Api>,
}

impl Ctx {
    pub fn new(address: String, verbose: bool, output: OutputFormat) -> Self {
        Ctx {
            address,
            verbose,
            output,
            query: None,
            api: tokio::sync::OnceCell::new(),
        }
    }

    pub fn with_query(mut self, query: Option<Query>) -> Self {
        self.query = query;
        self
    }

    /// Commands that write raw bytes or hand over the terminal have no JSON
    /// answer for `--query`.
    pub fn refuse_query(&self, command: &str) -> Result<(), CliError> {
        match &self.query {
            Some(_) => Err(CliError::usage(format!(
                "--query: `{command}` prints no JSON to query"
            ))),
            None => Ok(()),
        }
    }

    fn print_queried(&self, q: &Query, value: &Value) -> Result<(), CliError> {
        let result = q.apply(value)?;
        let mut out = std::io::stdout().lock();
        ignore_broken_pipe(
            render::queried(&mut out, self.output, &result).and_then(|()| out.flush()),
        )
    }

    /// The coordinator's API; connects (once) on the first call.
    pub async fn api(&self) -> Result<&Api, CliError> {
        self.api
            .get_or_try_init(|| Api::connect(&self.address, self.verbose))
            .await
    }

    pub fn print_one(&self, kind: Kind, value: &Value) -> Result<(), CliError> {
        if let Some(q) = &self.query {
            return self.print_queried(q, value);
        }
        let mut out = std::io::stdout().lock();
        ignore_broken_pipe(
            render::one(&mut out, self.output, kind, value).and_then(|()| out.flush()),
        )
    }

    /// Prints one item of a followed stream (see [`render::streamed`]).
    pub fn print_streamed(&self, kind: Kind, value: &Value, first: bool) -> Result<(), CliError> {
        let mut out = std::io::stdout().lock();
        ignore_broken_pipe(
            render::streamed(&mut out, self.output, kind, value, first).and_then(|()| out.flush()),
        )
    }

    pub fn print_many(&self, kind: Kind, values: &[Value]) -> Result<(), CliError> {
        if let Some(q) = &self.query {
            return self.print_queried(q, &Value::Array(values.to_vec()));
        }
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
    let query = cli.query.as_deref().map(Query::parse).transpose()?;
    if let Command::Demo(args) = cli.command {
        if query.is_some() {
            return Err(CliError::usage(
                "--query: `bai demo` prints no JSON to query",
            ));
        }
        return demo::run(args, cli.verbose).await;
    }
    let ctx = Ctx::new(cli.coordinator, cli.verbose, cli.output).with_query(query);
    match cli.command {
        Command::Workspace(cmd) => workspace::run(&ctx, cmd).await.map(|()| 0),
        Command::Experiment(cmd) => experiment::run(&ctx, cmd).await.map(|()| 0),
        Command::Cluster(ClusterCmd::Node(ClusterNodeCmd::Exec { cluster, node, ssh })) => {
            nodes::cluster_exec(
                &ctx,
                &cluster.workspace.workspace,
                &cluster.cluster,
                node.as_deref(),
                &ssh,
            )
            .await
        }
        Command::Cluster(ClusterCmd::File(cmd)) => cluster_files::run(&ctx, cmd).await.map(|()| 0),
        Command::Cluster(cmd) => cluster::run(&ctx, cmd).await.map(|()| 0),
        Command::Job(JobCmd::File(cmd)) => job_files::run(&ctx, cmd).await.map(|()| 0),
        Command::Job(JobCmd::Node(cmd)) => nodes::job_run(&ctx, cmd).await,
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
