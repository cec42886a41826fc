//! Batch AI JSON ⇄ `bai.v1` protocol types: the only module, besides
//! `render`, that knows Batch AI's JSON shapes.
//!
//! Reading: config files (`-f`) in either the `{"properties": {...}}` form or
//! flat; `$schema`, unknown members (`comment`) and `null`s are ignored; enum
//! values are matched case-insensitively; errors name the member at fault.
//!
//! Writing: resources as az printed them — flat (`name`, `id`, `type` and the
//! properties at top level), camelCase, keys sorted, empty members left out,
//! enum values as Batch AI spells them, timestamps in RFC 3339, durations in
//! ISO 8601, and never a secret value.

mod cluster;
mod common;
mod duration;
mod job;
mod storage;

use bai_proto::v1 as pb;
use serde_json::{Map, Value, json};

pub use common::{cluster_id, parse_cluster_ref};
pub use duration::{format_duration, parse_duration};
pub use storage::StorageAccount;

use common::*;

/// A config file or value that does not fit Batch AI's shape.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("not valid JSON: {0}")]
    Syntax(#[from] serde_json::Error),
    #[error("{field}: {message}")]
    Field { field: String, message: String },
}

impl JsonError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        JsonError::Field {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// The properties object of a config file (wrapped or flat), nulls removed.
fn properties(text: &str, storage: &StorageAccount) -> Result<Map<String, Value>, JsonError> {
    let mut v: Value = serde_json::from_str(text)?;
    strip_nulls(&mut v);
    substitute_placeholders(&mut v, storage)?;
    let Value::Object(mut top) = v else {
        return Err(JsonError::field("config file", "expected a JSON object"));
    };
    let mut props = match top.remove("properties") {
        Some(Value::Object(p)) => p,
        Some(_) => return Err(JsonError::field("properties", "expected an object")),
        None => top,
    };
    props.remove("$schema");
    Ok(props)
}

fn substitute_placeholders(v: &mut Value, storage: &StorageAccount) -> Result<(), JsonError> {
    storage::substitute(v, storage)
}

/// Parses a Batch AI job config file into create parameters.
///
/// Accepts `priority` (the name the example response uses) for
/// `schedulingPriority`, and the 2018-03-01 integer priority (<0 low, 0 normal,
/// >0 high).
pub fn parse_job(text: &str, storage: &StorageAccount) -> Result<pb::Job, JsonError> {
    let mut props = properties(text, storage)?;
    if let Some(p) = props.remove("priority") {
        props.entry("schedulingPriority").or_insert(p);
    }
    if let Some(Value::Number(n)) = props.get("schedulingPriority") {
        let level = match n.as_f64() {
            Some(x) if x < 0.0 => "low",
            Some(x) if x > 0.0 => "high",
            _ => "normal",
        };
        props.insert("schedulingPriority".into(), Value::String(level.into()));
    }
    let parsed: job::JobJson = from_object(props)?;
    let mut job = parsed.into_pb()?;
    if let Some(m) = job.mount_volumes.as_mut() {
        storage::complete_mounts(m, storage);
    }
    Ok(job)
}

/// Parses a Batch AI ClusterCreateParameters file.
pub fn parse_cluster(text: &str, storage: &StorageAccount) -> Result<pb::Cluster, JsonError> {
    let props = properties(text, storage)?;
    let parsed: cluster::ClusterJson = from_object(props)?;
    let mut c = parsed.into_pb()?;
    if let Some(m) = c.node_setup.as_mut().and_then(|n| n.mount_volumes.as_mut()) {
        storage::complete_mounts(m, storage);
    }
    Ok(c)
}

fn with_header(mut props: Map<String, Value>, id: String, name: &str, kind: &str) -> Value {
    props.insert("id".into(), Value::String(id));
    props.insert("name".into(), Value::String(name.to_string()));
    props.insert("type".into(), Value::String(kind.to_string()));
    Value::Object(props)
}

fn id_or(given: &str, built: String) -> String {
    if given.starts_with('/') {
        given.to_string()
    } else {
        built
    }
}

pub fn workspace(w: &pb::Workspace) -> Value {
    let mut props = to_pruned(&json!({
        "location": w.location,
        "tags": w.tags,
        "creationTime": ts(w.creation_time.as_ref()),
        "provisioningState": enum_name(w.provisioning_state, PROVISIONING),
        "provisioningStateTransitionTime": ts(w.provisioning_state_transition_time.as_ref()),
    }));
    props.entry("tags").or_insert_with(|| json!({}));
    let id = id_or(&w.id, format!("/workspaces/{}", w.name));
    with_header(props, id, &w.name, "Microsoft.BatchAI/workspaces")
}

pub fn experiment(e: &pb::Experiment) -> Value {
    let props = to_pruned(&json!({
        "workspace": e.workspace,
        "creationTime": ts(e.creation_time.as_ref()),
        "provisioningState": enum_name(e.provisioning_state, PROVISIONING),
        "provisioningStateTransitionTime": ts(e.provisioning_state_transition_time.as_ref()),
    }));
    let id = id_or(
        &e.id,
        format!("/workspaces/{}/experiments/{}", e.workspace, e.name),
    );
    with_header(
        props,
        id,
        &e.name,
        "Microsoft.BatchAI/workspaces/experiments",
    )
}

pub fn cluster(c: &pb::Cluster) -> Value {
    let mut props = to_pruned(&cluster::ClusterJson::from_pb(c));
    props.insert("workspace".into(), Value::String(c.workspace.clone()));
    if !c.recent_events.is_empty() {
        let events = c.recent_events.iter().map(cluster_event).collect();
        props.insert("recentEvents".into(), Value::Array(events));
    }
    let id = id_or(&c.id, cluster_id(&c.workspace, &c.name));
    with_header(props, id, &c.name, "Microsoft.BatchAI/workspaces/clusters")
}

/// A job. `id` is the ARM-ish path; the job's uuid (which tells it from an
/// earlier job of the same name) is `jobId`.
pub fn job(j: &pb::Job) -> Value {
    let mut props = to_pruned(&job::JobJson::from_pb(j));
    props.insert("workspace".into(), Value::String(j.workspace.clone()));
    props.insert("experiment".into(), Value::String(j.experiment.clone()));
    if !j.attempts.is_empty() {
        let attempts = j.attempts.iter().map(attempt).collect();
        props.insert("attempts".into(), Value::Array(attempts));
    }
    if !j.id.is_empty() && !j.id.starts_with('/') {
        props.insert("jobId".into(), Value::String(j.id.clone()));
    }
    let id = id_or(
        &j.id,
        format!(
            "/workspaces/{}/experiments/{}/jobs/{}",
            j.workspace, j.experiment, j.name
        ),
    );
    with_header(
        props,
        id,
        &j.name,
        "Microsoft.BatchAI/workspaces/experiments/jobs",
    )
}

/// A node (bai lists nodes; Batch AI only had counts). `nodeId`,
/// `ipAddress` and `port` are Batch AI's RemoteLoginInformation.
pub fn node(n: &pb::Node) -> Value {
    let mut v = Value::Object(to_pruned(&json!({
        "nodeId": n.node_id,
        "port": (n.port != 0).then_some(n.port),
        "preparationStep": n.preparation_step,
        "fileShareDriver": n.file_share_driver,
        "blobDriver": n.blob_driver,
        "workspace": n.workspace,
        "cluster": n.cluster,
        "state": enum_name(n.state, NODE_STATE),
        "stateTransitionTime": ts(n.state_transition_time.as_ref()),
        "hostname": n.hostname,
        "ipAddress": n.ip_address,
        "agentVersion": n.agent_version,
        "cpuCount": n.cpu_count,
        "memoryBytes": n.memory_bytes,
        "connected": n.connected,
        "lastHeartbeatTime": ts(n.last_heartbeat_time.as_ref()),
        "runningJobIds": n.running_job_ids,
        "errors": errors_from_pb(&n.errors),
        "gpuBackend": n.gpu_backend,
        "gpuDriverVersion": n.gpu_driver_version,
        "cudaVersion": n.cuda_version,
        "jobCgroups": n.job_cgroups,
        "gpuIsolation": n.gpu_isolation,
        "containerRuntime": n.container_runtime,
        "gpuProblems": n.gpu_problems,
        "gpus": n.gpus.iter().map(|g| json!({
            "index": g.index,
            "uuid": g.uuid,
            "name": g.name,
            "memoryBytes": g.memory_bytes,
            "pciBusId": g.pci_bus_id,
            "migMode": g.mig_mode,
            "jobId": g.job_id,
            "health": g.health,
            "faultReason": g.fault_reason,
            "faultTime": ts(g.fault_time.as_ref()),
        })).collect::<Vec<_>>(),
    })));
    if let Value::Object(m) = &mut v {
        m.entry("runningJobIds").or_insert_with(|| json!([]));
    }
    v
}

/// One node sample of `WatchMetrics` (bai's addition).
pub fn node_metrics(m: &pb::NodeMetrics) -> Value {
    Value::Object(to_pruned(&json!({
        "time": ts(m.time.as_ref()),
        "nodeId": m.node_id,
        "cpuPercent": m.cpu_percent,
        "memoryUsedBytes": m.memory_used_bytes,
        "memoryTotalBytes": m.memory_total_bytes,
        "diskUsedBytes": m.disk_used_bytes,
        "diskTotalBytes": m.disk_total_bytes,
        "networkRxBytes": m.network_rx_bytes,
        "networkTxBytes": m.network_tx_bytes,
        "gpus": m.gpus.iter().map(|g| json!({
            "index": g.index,
            "uuid": g.uuid,
            "utilizationPercent": g.utilization_percent,
            "memoryUsedBytes": g.memory_used_bytes,
            "memoryTotalBytes": g.memory_total_bytes,
            "temperatureCelsius": g.temperature_celsius,
            "powerWatts": g.power_watts,
            "smClockMhz": g.sm_clock_mhz,
            "eccDoubleBitErrors": g.ecc_double_bit_errors,
            "xidErrors": g.xid_errors,
            "lastXid": g.last_xid,
            "jobId": g.job_id,
        })).collect::<Vec<_>>(),
        "jobs": m.jobs.iter().map(|j| json!({
            "jobId": j.job_id,
            "cpuSeconds": j.cpu_seconds,
            "memoryBytes": j.memory_bytes,
            "memoryPeakBytes": j.memory_peak_bytes,
            "gpuMemoryBytes": j.gpu_memory_bytes,
            "gpuMemoryPeakBytes": j.gpu_memory_peak_bytes,
            "gpuUtilizationPercent": j.gpu_utilization_percent,
            "gpuUtilizationMean": j.gpu_utilization_mean,
            "gpuUtilizationMax": j.gpu_utilization_max,
            "samples": j.samples,
        })).collect::<Vec<_>>(),
    })))
}

/// One entry of a GPU health history.
/// An entry of a cluster's event record (bai's own).
pub fn cluster_event(e: &pb::ClusterEvent) -> Value {
    Value::Object(to_pruned(&json!({
        "time": ts(e.time.as_ref()),
        "kind": e.kind,
        "nodeId": e.node_id,
        "fromTargetNodeCount": e.target.map(|t| t.from),
        "toTargetNodeCount": e.target.map(|t| t.to),
        "message": e.message,
    })))
}

/// One attempt of a job (bai's own).
fn attempt(a: &pb::JobAttempt) -> Value {
    Value::Object(to_pruned(&json!({
        "number": a.number,
        "outcome": a.outcome,
        "nodeIds": a.node_ids,
        "assignedTime": ts(a.assigned_time.as_ref()),
        "startTime": ts(a.start_time.as_ref()),
        "endTime": ts(a.end_time.as_ref()),
        "exitCode": a.exit_code,
        "requeueReason": a.requeue_reason,
        "errors": errors_from_pb(&a.errors),
    })))
}

pub fn gpu_event(e: &pb::GpuHealthRecord) -> Value {
    Value::Object(to_pruned(&json!({
        "time": ts(e.time.as_ref()),
        "nodeId": e.node_id,
        "gpu": e.index,
        "uuid": e.uuid,
        "kind": e.kind,
        "code": e.code,
        "fault": e.fault,
        "jobId": e.job_id,
        "message": e.message,
    })))
}

/// An output file, as listOutputFiles returned it.
pub fn file(f: &pb::File) -> Value {
    let mut props = to_pruned(&json!({
        "name": f.name,
        "fileType": enum_name(f.file_type, FILE_TYPE),
        "downloadUrl": f.download_url,
        "properties": {
            "lastModified": ts(f.last_modified.as_ref()),
            "contentLength": f.content_length,
        },
    }));
    props.entry("properties").or_insert_with(|| json!({}));
    Value::Object(props)
}

/// The node a setup output file belongs to: `stdout-<node>.txt`,
/// `stderr-<node>.txt`, `execution-<node>.log` (Batch AI's names end with the
/// node id).
pub fn node_of_setup_file(name: &str) -> Option<&str> {
    let stem = name.rsplit_once('.').map_or(name, |(s, _)| s);
    ["stdout-", "stderr-", "execution-"]
        .iter()
        .find_map(|p| stem.strip_prefix(p))
        .filter(|n| !n.is_empty())
}

/// A cluster's setup output file: an output file plus `nodeId` (from the
/// name, else the node that was asked for).
pub fn cluster_file(f: &pb::File, asked_node: Option<&str>) -> Value {
    let mut v = file(f);
    if let (Value::Object(m), Some(n)) = (&mut v, node_of_setup_file(&f.name).or(asked_node)) {
        m.insert("nodeId".into(), Value::String(n.to_string()));
    }
    v
}

/// The Batch AI spelling of a job's execution state ("running", ...).
pub fn execution_state_name(state: i32) -> String {
    enum_name(state, EXECUTION)
}

#[cfg(test)]
mod render_tests;
#[cfg(test)]
pub(crate) mod tests;
