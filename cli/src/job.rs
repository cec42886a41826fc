//! `bai job create|show|list|delete|terminate|wait`, and following a job's
//! state over WatchJob (reconnecting when the stream drops), which `demo` uses too.

use bai_proto::v1 as pb;
use pb::ExecutionState;

use crate::app::{Ctx, confirm};
use crate::args::{JobCmd, JobCreateArgs, JobName};
use crate::batchai_json;
use crate::client::{Api, is_transient};
use crate::error::CliError;
use crate::job_params::build_job;
use crate::render::Kind;
use crate::retry::{Backoff, GIVE_UP_AFTER};

pub fn key(n: &JobName) -> pb::JobKey {
    pb::JobKey {
        workspace: n.experiment.workspace.workspace.clone(),
        experiment: n.experiment.experiment.clone(),
        name: n.name.clone(),
    }
}

/// Runs a job command; the result is the exit code (`wait`: the job's).
pub async fn run(ctx: &Ctx, cmd: JobCmd) -> Result<u8, CliError> {
    // Local checks first: bad flags, files or a refused confirmation need no coordinator.
    let prepared = match &cmd {
        JobCmd::Create(args) => Some(prepare(args)?),
        JobCmd::Delete { name, confirm: c } => {
            confirm(c.yes, &format!("delete job '{}' and its output", name.name))?;
            None
        }
        JobCmd::Terminate { name, confirm: c } => {
            confirm(c.yes, &format!("terminate job '{}'", name.name))?;
            None
        }
        _ => None,
    };
    let api = ctx.api().await?;
    let mut client = api.jobs.clone();
    let err = |s| api.error(s);
    match cmd {
        JobCmd::Create(_) => {
            let job = submit(api, prepared.unwrap_or_default()).await?;
            ctx.print_one(Kind::Job, &batchai_json::job(&job))?;
        }
        JobCmd::Show(n) => {
            let j = client
                .get_job(pb::GetJobRequest { job: Some(key(&n)) })
                .await
                .map_err(err)?
                .into_inner();
            ctx.print_one(Kind::Job, &batchai_json::job(&j))?;
        }
        JobCmd::List(e) => {
            let mut all = Vec::new();
            let mut page_token = String::new();
            loop {
                let r = client
                    .list_jobs(pb::ListJobsRequest {
                        workspace: e.workspace.workspace.clone(),
                        experiment: e.experiment.clone(),
                        max_results: 0,
                        page_token,
                    })
                    .await
                    .map_err(err)?
                    .into_inner();
                all.extend(r.jobs.iter().map(batchai_json::job));
                if r.next_page_token.is_empty() {
                    break;
                }
                page_token = r.next_page_token;
            }
            ctx.print_many(Kind::Job, &all)?;
        }
        JobCmd::Delete { name, .. } => {
            client
                .delete_job(pb::DeleteJobRequest {
                    job: Some(key(&name)),
                })
                .await
                .map_err(err)?;
        }
        JobCmd::Terminate { name, .. } => {
            let j = client
                .terminate_job(pb::TerminateJobRequest {
                    job: Some(key(&name)),
                })
                .await
                .map_err(err)?
                .into_inner();
            ctx.print_one(Kind::Job, &batchai_json::job(&j))?;
        }
        JobCmd::Wait { name, .. } => {
            let job = follow(api, key(&name), log_state).await?;
            return Ok(exit_code(&job));
        }
        JobCmd::Metrics {
            name,
            follow,
            count,
        } => crate::metrics::job(ctx, api, key(&name), follow, count).await?,
        JobCmd::File(_) | JobCmd::Node(_) => {}
    }
    Ok(0)
}

/// Builds a job from the flags and the config file (no coordinator needed).
pub fn prepare(args: &JobCreateArgs) -> Result<pb::Job, CliError> {
    let text = match &args.config_file {
        Some(p) => Some(std::fs::read_to_string(p).map_err(|e| {
            CliError::usage(format!(
                "-f/--config-file: cannot read {}: {e}",
                p.display()
            ))
        })?),
        None => None,
    };
    let env = |name: &str| std::env::var(name).ok();
    if let Some(w) = crate::storage_flags::key_on_command_line_warning(&args.storage, &env) {
        eprintln!("{w}");
    }
    build_job(args, text.as_deref(), &env)
}

/// Submits a job.
pub async fn submit(api: &Api, job: pb::Job) -> Result<pb::Job, CliError> {
    api.log(format!(
        "CreateJob {}/{}/{}",
        job.workspace, job.experiment, job.name
    ));
    let created = api
        .jobs
        .clone()
        .create_job(pb::CreateJobRequest { job: Some(job) })
        .await
        .map_err(|s| api.error(s))?;
    Ok(created.into_inner())
}

/// Builds and submits a job.
pub async fn create(api: &Api, args: &JobCreateArgs) -> Result<pb::Job, CliError> {
    submit(api, prepare(args)?).await
}

pub fn is_ended(job: &pb::Job) -> bool {
    matches!(
        job.execution_state(),
        ExecutionState::Succeeded | ExecutionState::Failed
    )
}

/// The process exit code for an ended job: its own exit code (low 8 bits),
/// 0 for succeeded without one, and 1 for failed without one (or with one
/// whose low 8 bits are 0).
pub fn exit_code(job: &pb::Job) -> u8 {
    let code = job.execution_info.as_ref().and_then(|e| e.exit_code);
    let failed = job.execution_state() != ExecutionState::Succeeded;
    match code {
        Some(c) => {
            let low = (c & 0xff) as u8;
            if failed && low == 0 { 1 } else { low }
        }
        None => u8::from(failed),
    }
}

/// One line on stderr per state change: `job 'j1': running (nodes: n1)`.
pub fn log_state(job: &pb::Job) {
    eprintln!("{}", state_line(job));
}

pub fn state_line(job: &pb::Job) -> String {
    let state = batchai_json::execution_state_name(job.execution_state);
    let mut line = format!(
        "job '{}': {}",
        job.name,
        if state.is_empty() { "unknown" } else { &state }
    );
    if job.execution_state() == ExecutionState::Running && !job.node_ids.is_empty() {
        line.push_str(&format!(" (nodes: {})", job.node_ids.join(", ")));
    }
    if let Some(info) = &job.execution_info {
        if is_ended(job)
            && let Some(c) = info.exit_code
        {
            line.push_str(&format!(" (exit code {c})"));
        }
        for e in &info.errors {
            line.push_str(&format!("\n  {}: {}", e.code, e.message));
        }
    }
    line
}

/// Follows WatchJob until the job has ended, calling `on_change` for every new
/// execution state; reconnects when the stream drops or ends early.
pub async fn follow(
    api: &Api,
    key: pb::JobKey,
    mut on_change: impl FnMut(&pb::Job),
) -> Result<pb::Job, CliError> {
    let mut backoff = Backoff::new(GIVE_UP_AFTER);
    let mut last_state = None;
    loop {
        api.log(format!(
            "WatchJob {}/{}/{}",
            key.workspace, key.experiment, key.name
        ));
        match api
            .jobs
            .clone()
            .watch_job(pb::WatchJobRequest {
                job: Some(key.clone()),
            })
            .await
        {
            Ok(resp) => {
                let mut stream = resp.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(job)) => {
                            backoff.progress();
                            if last_state != Some(job.execution_state) {
                                last_state = Some(job.execution_state);
                                on_change(&job);
                            }
                            if is_ended(&job) {
                                return Ok(job);
                            }
                        }
                        Ok(None) => {
                            api.log("the watch stream ended before the job did; reconnecting");
                            break;
                        }
                        Err(s) if is_transient(&s) => {
                            api.log(format!(
                                "the watch stream dropped ({}); reconnecting",
                                s.message()
                            ));
                            break;
                        }
                        Err(s) => return Err(api.error(s)),
                    }
                }
            }
            Err(s) if is_transient(&s) => {
                api.log(format!("WatchJob failed ({}); retrying", s.message()))
            }
            Err(s) => return Err(api.error(s)),
        }
        if !backoff.wait().await {
            return Err(CliError::Unreachable {
                address: api.address.clone(),
                detail: "lost the job's watch stream and could not reconnect".into(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(state: ExecutionState, code: Option<i32>) -> pb::Job {
        pb::Job {
            name: "j".into(),
            execution_state: state as i32,
            execution_info: Some(pb::JobExecutionInfo {
                exit_code: code,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn exit_codes_follow_the_job() {
        assert_eq!(exit_code(&ended(ExecutionState::Succeeded, Some(0))), 0);
        assert_eq!(exit_code(&ended(ExecutionState::Succeeded, None)), 0);
        assert_eq!(exit_code(&ended(ExecutionState::Failed, Some(7))), 7);
        assert_eq!(exit_code(&ended(ExecutionState::Failed, None)), 1);
        assert_eq!(
            exit_code(&ended(ExecutionState::Failed, Some(256))),
            1,
            "low byte 0 but failed"
        );
        assert_eq!(exit_code(&ended(ExecutionState::Failed, Some(-1))), 255);
    }

    #[test]
    fn state_lines() {
        assert_eq!(
            state_line(&ended(ExecutionState::Failed, Some(7))),
            "job 'j': failed (exit code 7)"
        );
        let mut j = ended(ExecutionState::Running, None);
        j.node_ids = vec!["n1".into()];
        assert_eq!(state_line(&j), "job 'j': running (nodes: n1)");
    }
}
