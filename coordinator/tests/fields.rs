//! Nothing accepted and ignored: every field of the job and cluster create
//! messages, read from the proto descriptors (so a new field cannot slip by),
//! is in exactly one row of `docs/fields.md`, and each row holds:
//!
//! - honoured: the test it names exists in the workspace;
//! - rejected: a create that sets it, sent to a real coordinator over gRPC,
//!   fails with `InvalidArgument` naming the field;
//! - descriptive: a create that sets it succeeds and `Get` shows it back;
//! - read-only: a create that sets it succeeds and the coordinator's own value
//!   is shown instead.
//!
//! Rejected, descriptive and read-only rows need an edit below that sets the
//! field on a valid request ([`job_edit`], [`cluster_edit`]).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bai_proto::v1 as pb;
use pb::job::Toolkit as T;
use prost::Message;
use prost_types::field_descriptor_proto::Type;
use prost_types::{DescriptorProto, FileDescriptorSet};
use std::path::{Path, PathBuf};
use support::*;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

// ---------------------------------------------------------------- the fields

fn message<'a>(fds: &'a FileDescriptorSet, full_name: &str) -> &'a DescriptorProto {
    let name = full_name.trim_start_matches('.');
    fds.file
        .iter()
        .flat_map(|f| {
            let package = f.package().to_string();
            f.message_type
                .iter()
                .map(move |m| (format!("{package}.{}", m.name()), m))
        })
        .find(|(n, _)| n == name)
        .map(|(_, m)| m)
        .unwrap_or_else(|| panic!("no message {name} in the descriptor set"))
}

/// Every leaf field path under `prefix` (well-known types are leaves).
fn leaves(fds: &FileDescriptorSet, full_name: &str, prefix: &str, out: &mut Vec<String>) {
    for f in &message(fds, full_name).field {
        let path = format!("{prefix}.{}", f.name());
        let nested = f.r#type() == Type::Message && !f.type_name().starts_with(".google.protobuf.");
        if nested {
            leaves(fds, f.type_name(), &path, out);
        } else {
            out.push(path);
        }
    }
}

fn create_fields() -> Vec<String> {
    let fds = FileDescriptorSet::decode(bai_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut out = Vec::new();
    leaves(&fds, "bai.v1.Job", "job", &mut out);
    leaves(&fds, "bai.v1.Cluster", "cluster", &mut out);
    out
}

// ---------------------------------------------------------------- the table

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Honoured(String),
    Rejected,
    Descriptive,
    ReadOnly,
}

#[derive(Debug)]
struct Row {
    path: String,
    kind: Kind,
}

fn table() -> Vec<Row> {
    let file = workspace_root().join("docs/fields.md");
    let text = std::fs::read_to_string(&file).unwrap();
    let mut rows = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let path = cells[1].trim_matches('`').to_string();
        let what = cells[2];
        let kind = if let Some(rest) = what.strip_prefix("honoured:") {
            Kind::Honoured(rest.trim().trim_matches('`').to_string())
        } else if what.starts_with("rejected") {
            Kind::Rejected
        } else if what == "descriptive" {
            Kind::Descriptive
        } else if what == "read-only" {
            Kind::ReadOnly
        } else {
            panic!(
                "docs/fields.md: {path}: say honoured: `test_name`, rejected (issue N), \
                 descriptive or read-only, not {what:?}"
            );
        };
        rows.push(Row { path, kind });
    }
    assert!(rows.len() > 20, "docs/fields.md has no table");
    rows
}

fn covers(row: &str, field: &str) -> bool {
    field == row || field.starts_with(&format!("{row}."))
}

#[test]
fn every_create_field_is_in_exactly_one_row() {
    let rows = table();
    let fields = create_fields();
    let mut problems = Vec::new();
    for f in &fields {
        let hits: Vec<&str> = rows
            .iter()
            .filter(|r| covers(&r.path, f))
            .map(|r| r.path.as_str())
            .collect();
        match hits.len() {
            1 => {}
            0 => problems.push(format!(
                "{f} is in no row: add it to docs/fields.md as honoured (with the test that \
                 proves it), rejected (refuse it in coordinator/src/domain/validate.rs) or \
                 descriptive, and give it an edit in coordinator/tests/fields.rs"
            )),
            _ => problems.push(format!("{f} is in several rows: {hits:?}")),
        }
    }
    for r in &rows {
        if !fields.iter().any(|f| covers(&r.path, f)) {
            problems.push(format!(
                "docs/fields.md: {} names no field of the create messages",
                r.path
            ));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

fn rust_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            let name = p.file_name().unwrap_or_default();
            if name != "target" && !name.to_string_lossy().starts_with('.') {
                rust_sources(&p, out);
            }
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn honoured_rows_name_a_test_that_exists() {
    let root = workspace_root();
    let mut files = Vec::new();
    for d in ["coordinator", "agent", "cli", "tests", "proto"] {
        rust_sources(&root.join(d), &mut files);
    }
    let sources: Vec<String> = files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect();
    for r in table() {
        if let Kind::Honoured(test) = &r.kind {
            let decl = format!("fn {test}(");
            assert!(
                sources.iter().any(|s| s.contains(&decl)),
                "docs/fields.md: {}: no test named {test}",
                r.path
            );
        }
    }
}

// ---------------------------------------------------------------- the edits

type JobEdit = fn(&mut pb::Job);
type ClusterEdit = fn(&mut pb::Cluster);

fn script_toolkit(path: &str) -> Option<T> {
    let (script, count) = (String::from("train.py"), 2);
    Some(match path {
        "job.py_torch_settings.process_count" => T::PyTorchSettings(pb::PyTorchSettings {
            python_script_file_path: script,
            process_count: count,
            ..Default::default()
        }),
        _ => return None,
    })
}

fn ts1() -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp {
        seconds: 1,
        nanos: 0,
    })
}

/// Sets the field of a row that is not honoured on a valid job request.
fn job_edit(path: &str) -> Option<JobEdit> {
    if script_toolkit(path).is_some() {
        // Edits are plain functions: find the toolkit again by the row's path
        // through a small table of them.
        return TOOLKIT_EDITS
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, e)| *e);
    }
    Some(match path {
        "job.job_preparation" => |j| {
            j.job_preparation = Some(pb::JobPreparation {
                command_line: "apt install -y unzip".into(),
            })
        },
        "job.std_out_err_path_prefix" => {
            |j| j.std_out_err_path_prefix = "$AZ_BATCHAI_JOB_MOUNT_ROOT/logs".into()
        }
        "job.secrets.value_secret_reference" => |j| {
            j.secrets[0].value_secret_reference = Some(pb::KeyVaultSecretReference {
                source_vault_id: "/vaults/v".into(),
                secret_url: "https://v/secrets/s".into(),
            })
        },
        "job.id" => |j| j.id = "not-a-uuid".into(),
        "job.tool_type" => |j| j.tool_type = pb::ToolType::Horovod as i32,
        "job.job_output_directory_path_segment" => {
            |j| j.job_output_directory_path_segment = "x".into()
        }
        "job.creation_time" => |j| j.creation_time = ts1(),
        "job.provisioning_state" => |j| j.provisioning_state = pb::ProvisioningState::Failed as i32,
        "job.provisioning_state_transition_time" => {
            |j| j.provisioning_state_transition_time = ts1()
        }
        "job.execution_state" => |j| j.execution_state = pb::ExecutionState::Succeeded as i32,
        "job.execution_state_transition_time" => |j| j.execution_state_transition_time = ts1(),
        "job.execution_info" => |j| {
            j.execution_info = Some(pb::JobExecutionInfo {
                exit_code: Some(3),
                ..Default::default()
            })
        },
        "job.node_ids" => |j| j.node_ids = vec!["n".into()],
        "job.gpu_uuids" => |j| j.gpu_uuids = vec!["GPU-x".into()],
        "job.metrics" => |j| {
            j.metrics = Some(pb::JobMetricsSummary {
                samples: 3,
                cpu_seconds: 1.5,
                ..Default::default()
            })
        },
        "job.queue_info" => |j| {
            j.queue_info = Some(pb::JobQueueInfo {
                position: 7,
                reason: "sent by the client".into(),
            })
        },
        "job.attempts" => |j| {
            j.attempts = vec![pb::JobAttempt {
                number: 4,
                outcome: "succeeded".into(),
                ..Default::default()
            }]
        },
        _ => return None,
    })
}

macro_rules! toolkit_edits {
    ($($p:literal),* $(,)?) => {
        &[$(($p, |j: &mut pb::Job| j.toolkit = script_toolkit($p))),*]
    };
}

const TOOLKIT_EDITS: &[(&str, JobEdit)] = toolkit_edits!["job.py_torch_settings.process_count",];

/// Sets the field of a row that is not honoured on a valid cluster request.
fn cluster_edit(path: &str) -> Option<ClusterEdit> {
    Some(match path {
        "cluster.vm_size" => |c| c.vm_size = "STANDARD_NC24".into(),
        "cluster.vm_priority" => |c| c.vm_priority = pb::VmPriority::Lowpriority as i32,
        "cluster.virtual_machine_configuration" => |c| {
            c.virtual_machine_configuration = Some(pb::VirtualMachineConfiguration {
                image_reference: Some(pb::ImageReference {
                    publisher: "Canonical".into(),
                    offer: "UbuntuServer".into(),
                    sku: "16.04-LTS".into(),
                    version: "latest".into(),
                    virtual_machine_image_id: String::new(),
                }),
            })
        },
        "cluster.subnet" => |c| {
            c.subnet = Some(pb::ResourceId {
                id: "/subnets/default".into(),
            })
        },
        "cluster.scale_settings.auto_scale" => |c| {
            c.scale_settings = Some(pb::ScaleSettings {
                manual: None,
                auto_scale: Some(pb::AutoScaleSettings {
                    minimum_node_count: 0,
                    maximum_node_count: 4,
                    initial_node_count: 1,
                }),
            })
        },
        "cluster.node_setup.setup_task" => |c| {
            c.node_setup = Some(pb::NodeSetup {
                setup_task: Some(pb::SetupTask {
                    command_line: "apt install -y unzip".into(),
                    std_out_err_path_prefix: "$AZ_BATCHAI_MOUNT_ROOT/logs".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
        },
        "cluster.node_setup.performance_counters_settings" => |c| {
            c.node_setup = Some(pb::NodeSetup {
                performance_counters_settings: Some(pb::PerformanceCountersSettings {
                    app_insights_reference: Some(pb::AppInsightsReference {
                        component: Some(pb::ResourceId { id: "/ai".into() }),
                        instrumentation_key: "k".into(),
                        instrumentation_key_secret_reference: None,
                    }),
                }),
                ..Default::default()
            })
        },
        "cluster.user_account_settings.admin_user_name" => |c| {
            c.user_account_settings = Some(pb::UserAccountSettings {
                admin_user_name: "me".into(),
                ..Default::default()
            })
        },
        "cluster.user_account_settings.admin_user_ssh_public_key" => |c| {
            c.user_account_settings = Some(pb::UserAccountSettings {
                admin_user_ssh_public_key: "ssh-ed25519 AAAA me@host".into(),
                ..Default::default()
            })
        },
        "cluster.user_account_settings.admin_user_password" => |c| {
            c.user_account_settings = Some(pb::UserAccountSettings {
                admin_user_password: "hunter2".into(),
                ..Default::default()
            })
        },
        "cluster.id" => |c| c.id = "x".into(),
        "cluster.creation_time" => |c| c.creation_time = ts1(),
        "cluster.provisioning_state" => {
            |c| c.provisioning_state = pb::ProvisioningState::Failed as i32
        }
        "cluster.provisioning_state_transition_time" => {
            |c| c.provisioning_state_transition_time = ts1()
        }
        "cluster.allocation_state" => |c| c.allocation_state = pb::AllocationState::Resizing as i32,
        "cluster.allocation_state_transition_time" => {
            |c| c.allocation_state_transition_time = ts1()
        }
        "cluster.errors" => |c| {
            c.errors = vec![pb::BatchAiError {
                code: "X".into(),
                message: "y".into(),
                details: vec![],
            }]
        },
        "cluster.current_node_count" => |c| c.current_node_count = 5,
        "cluster.recent_events" => |c| {
            c.recent_events = vec![pb::ClusterEvent {
                seq: 9,
                kind: "resize".into(),
                message: "sent by the client".into(),
                ..Default::default()
            }]
        },
        "cluster.node_state_counts" => |c| {
            c.node_state_counts = Some(pb::NodeStateCounts {
                idle_node_count: 5,
                ..Default::default()
            })
        },
        _ => return None,
    })
}

/// The message with list indexes taken out: `job.secrets[0].x` → `job.secrets.x`.
fn without_indexes(m: &str) -> String {
    let mut out = String::new();
    let mut in_index = false;
    for ch in m.chars() {
        match ch {
            '[' => in_index = true,
            ']' if in_index => in_index = false,
            _ if !in_index => out.push(ch),
            _ => {}
        }
    }
    out
}

/// What a create with the field set must lead to, or why it did not.
fn check_outcome<M: Clone + PartialEq + std::fmt::Debug>(
    row: &Row,
    created: Result<(), tonic::Status>,
    got: impl FnOnce() -> Option<M>,
    edit: impl Fn(&mut M),
) -> Option<String> {
    let p = &row.path;
    match (&row.kind, created) {
        (Kind::Rejected, Ok(())) => Some(format!(
            "{p}: set, yet accepted; refuse it (validate.rs) or move its row"
        )),
        (Kind::Rejected, Err(s)) => {
            let named = without_indexes(s.message()).contains(p.as_str());
            (s.code() != tonic::Code::InvalidArgument || !named)
                .then(|| format!("{p}: refused with {s:?}, not InvalidArgument naming {p}"))
        }
        (_, Err(s)) => Some(format!(
            "{p}: a valid request that sets it was refused: {s:?}"
        )),
        (kind, Ok(())) => {
            let got = got()?;
            let mut again = got.clone();
            edit(&mut again);
            let shown = again == got;
            match kind {
                Kind::Descriptive if !shown => Some(format!(
                    "{p}: descriptive, but a read does not show it: {got:?}"
                )),
                Kind::ReadOnly if shown => Some(format!(
                    "{p}: read-only, but the coordinator took the request's value"
                )),
                _ => None,
            }
        }
    }
}

#[tokio::test]
async fn rejected_fields_are_refused_by_name_and_the_rest_are_kept_or_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let c = Coordinator::start(dir.path()).await;
    c.seed(0).await;
    let (mut jobs, mut clusters) = (c.jobs(), c.clusters());
    let mut problems = Vec::new();
    let mut checked = 0;
    for (i, row) in table().into_iter().enumerate() {
        if matches!(row.kind, Kind::Honoured(_)) {
            continue;
        }
        let name = format!("f{i}");
        if row.path.starts_with("job.") {
            let Some(edit) = job_edit(&row.path) else {
                problems.push(format!(
                    "{}: add an edit that sets it to job_edit in coordinator/tests/fields.rs",
                    row.path
                ));
                continue;
            };
            let mut j = job(&name, "true");
            edit(&mut j);
            let created = jobs
                .create_job(pb::CreateJobRequest { job: Some(j) })
                .await
                .map(drop);
            let read = jobs
                .get_job(pb::GetJobRequest {
                    job: Some(key(&name)),
                })
                .await
                .ok()
                .map(|r| r.into_inner());
            problems.extend(check_outcome(&row, created, || read, edit));
        } else {
            let Some(edit) = cluster_edit(&row.path) else {
                problems.push(format!(
                    "{}: add an edit that sets it to cluster_edit in coordinator/tests/fields.rs",
                    row.path
                ));
                continue;
            };
            let mut cl = cluster(&name, 0);
            edit(&mut cl);
            let created = clusters
                .create_cluster(pb::CreateClusterRequest { cluster: Some(cl) })
                .await
                .map(drop);
            let read = clusters
                .get_cluster(pb::GetClusterRequest {
                    workspace: "w".into(),
                    name: name.clone(),
                })
                .await
                .ok()
                .map(|r| r.into_inner());
            problems.extend(check_outcome(&row, created, || read, edit));
        }
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} rows were checked");
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
    c.stop().await;
}

#[test]
fn readme_and_architecture_link_the_table() {
    for doc in ["README.md", "ARCHITECTURE.md"] {
        let text = std::fs::read_to_string(workspace_root().join(doc)).unwrap();
        assert!(
            text.contains("docs/fields.md"),
            "{doc} should link docs/fields.md"
        );
    }
}
