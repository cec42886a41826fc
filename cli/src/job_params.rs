//! Builds `job create`'s request from a Batch AI job file and the flags, which
//! override it; the storage flags add mount volumes to the file's. Pure: the
//! environment (for `--secret-env` and the storage key) is passed in.

use bai_proto::v1 as pb;

use crate::args::JobCreateArgs;
use crate::batchai_json::{self, StorageAccount, parse_cluster_ref, parse_duration};
use crate::cluster_params::EnvLookup;
use crate::error::CliError;
use crate::storage_flags;

/// The full create request: the file (if any), then the flags on top.
pub fn build_job(
    args: &JobCreateArgs,
    file_text: Option<&str>,
    env: EnvLookup<'_>,
) -> Result<pb::Job, CliError> {
    let key = args
        .storage
        .storage_account_key
        .as_ref()
        .map(|k| k.expose().to_string())
        .or_else(|| env("AZURE_BATCHAI_STORAGE_KEY"));
    let storage = StorageAccount {
        name: args.storage.storage_account_name.clone(),
        key: key.clone(),
    };
    let mut job = match file_text {
        Some(t) => batchai_json::parse_job(t, &storage)?,
        None => pb::Job::default(),
    };
    job.workspace = args.workspace.clone();
    job.experiment = args.experiment.clone();
    job.name = args.name.clone();

    if let Some(c) = &args.cluster {
        job.cluster = Some(parse_cluster_ref("-c/--cluster", c)?);
    }
    let cluster = job.cluster.as_mut().ok_or_else(|| {
        CliError::usage("no cluster: give -c/--cluster, or cluster.id in the config file")
    })?;
    if cluster.workspace.is_empty() {
        cluster.workspace = job.workspace.clone();
    }

    if let Some(cmd) = &args.command_line {
        job.toolkit = Some(pb::job::Toolkit::CustomToolkitSettings(
            pb::CustomToolkitSettings {
                command_line: cmd.clone(),
            },
        ));
    }
    if job.toolkit.is_none() {
        return Err(CliError::usage(
            "no toolkit: give --command-line, or a toolkit settings object (e.g. customToolkitSettings) in the config file",
        ));
    }
    if let Some(n) = args.node_count {
        job.node_count = n;
    }
    if job.node_count == 0 {
        job.node_count = 1;
    }
    if let Some(g) = args.gpus_per_node {
        job.gpus_per_node = g;
    }

    for (name, value) in &args.env {
        match job
            .environment_variables
            .iter_mut()
            .find(|e| &e.name == name)
        {
            Some(e) => e.value = value.clone(),
            None => job.environment_variables.push(pb::EnvironmentVariable {
                name: name.clone(),
                value: value.clone(),
            }),
        }
    }
    for name in &args.secret_env {
        let value = env(name).ok_or_else(|| {
            CliError::usage(format!(
                "--secret-env {name}: the environment variable {name} is not set"
            ))
        })?;
        let secret = pb::EnvironmentVariableWithSecretValue {
            name: name.clone(),
            value,
            value_secret_reference: None,
        };
        match job.secrets.iter_mut().find(|s| &s.name == name) {
            Some(s) => *s = secret,
            None => job.secrets.push(secret),
        }
    }
    if let Some(t) = &args.max_wall_clock_time {
        let d = parse_duration(t)
            .map_err(|e| CliError::usage(format!("--max-wall-clock-time: {e}")))?;
        job.constraints = Some(pb::JobBasePropertiesConstraints {
            max_wall_clock_time: Some(d),
        });
    }
    job.mount_volumes =
        storage_flags::add_volumes(&args.storage, key.as_deref(), job.mount_volumes.take())?;
    if let Some(p) = &args.priority {
        job.scheduling_priority = match p.as_str() {
            "low" => pb::JobPriority::Low as i32,
            "high" => pb::JobPriority::High as i32,
            _ => pb::JobPriority::Normal as i32,
        };
    }
    Ok(job)
}

#[cfg(test)]
mod tests;
