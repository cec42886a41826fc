//! Output: the Batch AI JSON of `batchai_json` printed as JSON, as a compact
//! table of each resource's key fields, as TSV (the table's fields, no
//! header), or not at all. A `--query` result has no known shape: it is
//! printed as az printed one (`queried`).

use std::io::Write;

use comfy_table::{ContentArrangement, LineStyle, Table, TableStyle};
use serde_json::Value;

use crate::args::OutputFormat;

/// What is being printed, which picks the table's columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Workspace,
    Experiment,
    Cluster,
    Node,
    Job,
    File,
    /// A setup output file of a cluster's node.
    ClusterFile,
    /// An entry of a GPU health history.
    GpuEvent,
    /// An entry of a cluster's event record.
    ClusterEvent,
    /// A node's live sample (`bai cluster node top`, `bai job metrics --follow`).
    Sample,
    /// A job's metrics summary.
    JobMetrics,
}

/// az's table look: a header, a dashed line under it, columns apart by spaces.
const AZ_STYLE: TableStyle =
    TableStyle::new().header_separator(LineStyle::none().fill('-').junction(' '));

type Column = (&'static str, fn(&Value) -> String);

fn text(v: &Value, pointer: &str) -> String {
    match v.pointer(pointer) {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => a.iter().map(|x| text(x, "")).collect::<Vec<_>>().join(","),
        Some(other) => other.to_string(),
    }
}

fn scale(v: &Value) -> String {
    if let Some(m) = v.pointer("/scaleSettings/manual") {
        format!("manual {}", text(m, "/targetNodeCount"))
    } else if let Some(a) = v.pointer("/scaleSettings/autoScale") {
        format!(
            "auto {}-{}",
            text(a, "/minimumNodeCount"),
            text(a, "/maximumNodeCount")
        )
    } else {
        String::new()
    }
}

fn toolkit(v: &Value) -> String {
    if !text(v, "/toolType").is_empty() {
        return text(v, "/toolType");
    }
    let Some(obj) = v.as_object() else {
        return String::new();
    };
    obj.keys()
        .find_map(|k| {
            k.strip_suffix("Settings")
                .filter(|_| k != "containerSettings")
        })
        .unwrap_or("")
        .into()
}

fn cluster_name(v: &Value) -> String {
    text(v, "/cluster/id")
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_string()
}

/// `afs=cifs bfs=rclone`: how the node mounts File shares and Blob containers.
fn drivers(v: &Value) -> String {
    [("afs", "/fileShareDriver"), ("bfs", "/blobDriver")]
        .iter()
        .filter_map(|(k, p)| {
            let d = text(v, p);
            (!d.is_empty()).then(|| format!("{k}={d}"))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// How many GPUs a node has, how many jobs hold and how many are faulted:
/// `4 (2 held, 1 faulted)`.
fn gpus(v: &Value) -> String {
    let Some(Value::Array(gpus)) = v.get("gpus") else {
        return String::new();
    };
    let count = |key: &str, want: Option<&str>| {
        gpus.iter()
            .filter(|g| {
                g.get(key)
                    .and_then(Value::as_str)
                    .is_some_and(|s| match want {
                        Some(w) => s == w,
                        None => !s.is_empty(),
                    })
            })
            .count()
    };
    let (held, faulted) = (count("jobId", None), count("health", Some("faulted")));
    let notes: Vec<String> = [(held, "held"), (faulted, "faulted")]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
    match (gpus.len(), notes.is_empty()) {
        (0, _) => String::new(),
        (n, true) => n.to_string(),
        (n, false) => format!("{n} ({})", notes.join(", ")),
    }
}

/// A number at `pointer` with `digits` decimals (empty when absent).
fn num(v: &Value, pointer: &str, digits: usize) -> String {
    v.pointer(pointer)
        .and_then(Value::as_f64)
        .map(|x| format!("{x:.digits$}"))
        .unwrap_or_default()
}

/// Bytes at `pointer` in GiB, one decimal.
fn gib(v: &Value, pointer: &str) -> String {
    v.pointer(pointer)
        .and_then(Value::as_f64)
        .map(|b| format!("{:.1}", b / f64::from(1u32 << 30)))
        .unwrap_or_default()
}

/// `0:87/2.0 1:0/0.0` of a sample's GPUs (index: utilization / memory).
fn gpu_figures(v: &Value) -> String {
    let Some(Value::Array(gpus)) = v.get("gpus") else {
        return String::new();
    };
    gpus.iter()
        .map(|g| {
            format!(
                "{}:{}/{}",
                text(g, "/index"),
                num(g, "/utilizationPercent", 0),
                gib(g, "/memoryUsedBytes")
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `<job id prefix> (12.5, 300)` of a sample's jobs (CPU seconds, memory MiB).
fn job_figures(v: &Value) -> String {
    let Some(Value::Array(jobs)) = v.get("jobs") else {
        return String::new();
    };
    jobs.iter()
        .map(|j| {
            let id = text(j, "/jobId");
            format!(
                "{} ({}, {})",
                id.get(..8).unwrap_or(&id),
                num(j, "/cpuSeconds", 1),
                j.pointer("/memoryBytes")
                    .and_then(Value::as_f64)
                    .map(|b| format!("{:.0}", b / f64::from(1u32 << 20)))
                    .unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `code: message; ...` of a node's errors.
fn errors(v: &Value) -> String {
    let Some(Value::Array(errs)) = v.get("errors") else {
        return String::new();
    };
    errs.iter()
        .map(|e| format!("{}: {}", text(e, "/code"), text(e, "/message")))
        .collect::<Vec<_>>()
        .join("; ")
}

fn columns(kind: Kind) -> &'static [Column] {
    match kind {
        Kind::Workspace => &[
            ("Name", |v| text(v, "/name")),
            ("Location", |v| text(v, "/location")),
            ("State", |v| text(v, "/provisioningState")),
            ("Created", |v| text(v, "/creationTime")),
        ],
        Kind::Experiment => &[
            ("Name", |v| text(v, "/name")),
            ("Workspace", |v| text(v, "/workspace")),
            ("State", |v| text(v, "/provisioningState")),
            ("Created", |v| text(v, "/creationTime")),
        ],
        Kind::Cluster => &[
            ("Name", |v| text(v, "/name")),
            ("VM size", |v| text(v, "/vmSize")),
            ("Priority", |v| text(v, "/vmPriority")),
            ("Scale", scale),
            ("Allocation", |v| text(v, "/allocationState")),
            ("Nodes", |v| text(v, "/currentNodeCount")),
            ("Idle", |v| text(v, "/nodeStateCounts/idleNodeCount")),
            ("Running", |v| text(v, "/nodeStateCounts/runningNodeCount")),
            ("Preparing", |v| {
                text(v, "/nodeStateCounts/preparingNodeCount")
            }),
            ("Unusable", |v| {
                text(v, "/nodeStateCounts/unusableNodeCount")
            }),
            ("Leaving", |v| text(v, "/nodeStateCounts/leavingNodeCount")),
        ],
        Kind::Node => &[
            ("Node", |v| text(v, "/nodeId")),
            ("IP", |v| text(v, "/ipAddress")),
            ("Port", |v| text(v, "/port")),
            ("State", |v| text(v, "/state")),
            ("Step", |v| text(v, "/preparationStep")),
            ("Connected", |v| text(v, "/connected")),
            ("Drivers", drivers),
            ("GPUs", gpus),
            ("Jobs", |v| text(v, "/runningJobIds")),
            ("Errors", errors),
        ],
        Kind::Job => &[
            ("Name", |v| text(v, "/name")),
            ("Experiment", |v| text(v, "/experiment")),
            ("Cluster", cluster_name),
            ("Nodes", |v| text(v, "/nodeCount")),
            ("Tool", toolkit),
            ("State", |v| text(v, "/executionState")),
            ("Exit code", |v| text(v, "/executionInfo/exitCode")),
            ("Created", |v| text(v, "/creationTime")),
            // A queued job's place in its cluster's queue and why it waits.
            ("Queue", |v| text(v, "/queueInfo/position")),
            ("Reason", |v| text(v, "/queueInfo/reason")),
        ],
        Kind::Sample => &[
            ("Time", |v| text(v, "/time")),
            ("Node", |v| text(v, "/nodeId")),
            ("CPU %", |v| num(v, "/cpuPercent", 0)),
            ("Memory GiB", |v| gib(v, "/memoryUsedBytes")),
            ("Disk GiB used/total", |v| {
                format!("{}/{}", gib(v, "/diskUsedBytes"), gib(v, "/diskTotalBytes"))
            }),
            ("GPU util % / memory GiB", gpu_figures),
            ("Jobs (CPU s, memory MiB)", job_figures),
        ],
        Kind::JobMetrics => &[
            ("Samples", |v| text(v, "/samples")),
            ("GPU util mean %", |v| num(v, "/gpuUtilizationMean", 1)),
            ("GPU util max %", |v| num(v, "/gpuUtilizationMax", 1)),
            ("GPU memory peak GiB", |v| gib(v, "/gpuMemoryPeakBytes")),
            ("CPU s", |v| num(v, "/cpuSeconds", 1)),
            ("Memory peak GiB", |v| gib(v, "/memoryPeakBytes")),
            ("Time", |v| text(v, "/time")),
        ],
        Kind::GpuEvent => &[
            ("Time", |v| text(v, "/time")),
            ("Node", |v| text(v, "/nodeId")),
            ("GPU", |v| text(v, "/gpu")),
            ("Kind", |v| text(v, "/kind")),
            ("Code", |v| text(v, "/code")),
            ("Fault", |v| text(v, "/fault")),
            ("Job", |v| text(v, "/jobId")),
            ("Message", |v| text(v, "/message")),
        ],
        Kind::ClusterEvent => &[
            ("Time", |v| text(v, "/time")),
            ("Kind", |v| text(v, "/kind")),
            ("Node", |v| text(v, "/nodeId")),
            ("Target", |v| {
                match (v.get("fromTargetNodeCount"), v.get("toTargetNodeCount")) {
                    (Some(f), Some(t)) => format!("{f} -> {t}"),
                    _ => String::new(),
                }
            }),
            ("Message", |v| text(v, "/message")),
        ],
        Kind::ClusterFile => &[
            ("Name", |v| text(v, "/name")),
            ("Node", |v| text(v, "/nodeId")),
            ("Size", |v| text(v, "/properties/contentLength")),
            ("Modified", |v| text(v, "/properties/lastModified")),
        ],
        Kind::File => &[
            ("Name", |v| text(v, "/name")),
            ("Type", |v| text(v, "/fileType")),
            ("Size", |v| text(v, "/properties/contentLength")),
            ("Modified", |v| text(v, "/properties/lastModified")),
        ],
    }
}

/// Prints one resource (`show`, `create`).
pub fn one(
    out: &mut dyn Write,
    format: OutputFormat,
    kind: Kind,
    value: &Value,
) -> std::io::Result<()> {
    match format {
        OutputFormat::Json => writeln!(out, "{}", pretty(value)),
        _ => rows(out, format, kind, std::slice::from_ref(value)),
    }
}

/// Prints one item of a stream that follows (`--follow`, `top`): a JSON
/// line each, or a table row each with the header before the first.
pub fn streamed(
    out: &mut dyn Write,
    format: OutputFormat,
    kind: Kind,
    value: &Value,
    first: bool,
) -> std::io::Result<()> {
    let cols = columns(kind);
    let cells: Vec<String> = cols.iter().map(|(_, f)| f(value)).collect();
    match format {
        OutputFormat::Json => writeln!(out, "{value}"),
        OutputFormat::None => Ok(()),
        OutputFormat::Tsv => writeln!(out, "{}", cells.join("\t")),
        OutputFormat::Table => {
            let widths: Vec<usize> = cols
                .iter()
                .zip(&cells)
                .map(|((h, _), c)| h.len().max(c.len()).max(8))
                .collect();
            let line = |items: Vec<&str>| {
                items
                    .iter()
                    .zip(&widths)
                    .map(|(s, w)| format!("{s:<w$}"))
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_string()
            };
            if first {
                writeln!(out, "{}", line(cols.iter().map(|(h, _)| *h).collect()))?;
            }
            writeln!(out, "{}", line(cells.iter().map(String::as_str).collect()))
        }
    }
}

/// Prints a list (`list`).
pub fn many(
    out: &mut dyn Write,
    format: OutputFormat,
    kind: Kind,
    values: &[Value],
) -> std::io::Result<()> {
    match format {
        OutputFormat::Json => writeln!(out, "{}", pretty(&Value::Array(values.to_vec()))),
        _ => rows(out, format, kind, values),
    }
}

/// Prints a `--query` result as az did: JSON as it is (nothing for `null`);
/// as a table or TSV, one row per array element (or one for an object or a
/// scalar), with a column per scalar member (`Column1`... for arrays, `Result`
/// for scalars), headers capitalized; nested objects and arrays are left out.
pub fn queried(out: &mut dyn Write, format: OutputFormat, value: &Value) -> std::io::Result<()> {
    if value.is_null() {
        return Ok(());
    }
    let (header, rows) = match format {
        OutputFormat::Json => return writeln!(out, "{}", pretty(value)),
        OutputFormat::None => return Ok(()),
        OutputFormat::Table | OutputFormat::Tsv => generic_rows(value),
    };
    if format == OutputFormat::Tsv {
        for row in rows {
            let fields: Vec<String> = row.iter().map(|f| f.replace(['\t', '\n'], " ")).collect();
            writeln!(out, "{}", fields.join("\t"))?;
        }
        return Ok(());
    }
    let mut table = Table::new();
    table
        .load_style(AZ_STYLE)
        .set_content_arrangement(ContentArrangement::Dynamic);
    table.set_header(header);
    for row in rows {
        table.add_row(row);
    }
    for line in table.lines() {
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::Null => Some(String::new()),
        Value::String(s) => Some(s.clone()),
        Value::Bool(_) | Value::Number(_) => Some(v.to_string()),
        Value::Array(_) | Value::Object(_) => None,
    }
}

fn capitalized(key: &str) -> String {
    let mut c = key.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// The header and rows of a value of unknown shape.
fn generic_rows(value: &Value) -> (Vec<String>, Vec<Vec<String>>) {
    let items: Vec<&Value> = match value {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    if items.iter().all(|v| v.is_object()) {
        let mut keys: Vec<&str> = Vec::new();
        for v in &items {
            for (k, x) in v.as_object().into_iter().flatten() {
                if scalar(x).is_some() && !keys.contains(&k.as_str()) {
                    keys.push(k);
                }
            }
        }
        let rows = items
            .iter()
            .map(|v| {
                keys.iter()
                    .map(|k| v.get(*k).and_then(scalar).unwrap_or_default())
                    .collect()
            })
            .collect();
        return (keys.iter().map(|k| capitalized(k)).collect(), rows);
    }
    if items.iter().all(|v| v.is_array()) {
        let width = items
            .iter()
            .filter_map(|v| v.as_array().map(Vec::len))
            .max()
            .unwrap_or(0);
        let rows = items
            .iter()
            .map(|v| {
                (0..width)
                    .map(|i| v.get(i).and_then(scalar).unwrap_or_default())
                    .collect()
            })
            .collect();
        return ((1..=width).map(|i| format!("Column{i}")).collect(), rows);
    }
    let rows = items
        .iter()
        .map(|v| vec![scalar(v).unwrap_or_else(|| v.to_string())])
        .collect();
    (vec!["Result".to_string()], rows)
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

fn rows(
    out: &mut dyn Write,
    format: OutputFormat,
    kind: Kind,
    values: &[Value],
) -> std::io::Result<()> {
    let cols = columns(kind);
    match format {
        OutputFormat::Table => {
            let mut table = Table::new();
            table
                .load_style(AZ_STYLE)
                .set_content_arrangement(ContentArrangement::Dynamic);
            table.set_header(cols.iter().map(|(h, _)| *h));
            for v in values {
                table.add_row(cols.iter().map(|(_, f)| f(v)));
            }
            for line in table.lines() {
                writeln!(out, "{}", line.trim_end())?;
            }
            Ok(())
        }
        OutputFormat::Tsv => {
            for v in values {
                let fields: Vec<String> = cols
                    .iter()
                    .map(|(_, f)| f(v).replace(['\t', '\n'], " "))
                    .collect();
                writeln!(out, "{}", fields.join("\t"))?;
            }
            Ok(())
        }
        OutputFormat::Json | OutputFormat::None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(format: OutputFormat, kind: Kind, v: &[Value]) -> String {
        let mut buf = Vec::new();
        many(&mut buf, format, kind, v).unwrap();
        String::from_utf8(buf).unwrap()
    }

    fn job() -> Value {
        json!({"name": "j1", "experiment": "e", "cluster": {"id": "/workspaces/w/clusters/c1"},
               "nodeCount": 2, "toolType": "custom", "executionState": "failed",
               "executionInfo": {"exitCode": 3}, "creationTime": "2024-01-02T03:04:05Z"})
    }

    #[test]
    fn tsv_has_the_table_fields_in_order() {
        let out = render(OutputFormat::Tsv, Kind::Job, &[job()]);
        assert_eq!(
            out,
            "j1\te\tc1\t2\tcustom\tfailed\t3\t2024-01-02T03:04:05Z\t\t\n"
        );
    }

    #[test]
    fn table_has_headers_and_values() {
        let out = render(OutputFormat::Table, Kind::Job, &[job()]);
        for s in ["Name", "Exit code", "j1", "c1", "failed"] {
            assert!(out.contains(s), "{s} missing in\n{out}");
        }
    }

    #[test]
    fn queued_jobs_show_their_place_and_why_they_wait() {
        let mut queued = job();
        queued["executionState"] = json!("queued");
        queued["executionInfo"] = json!({});
        queued["queueInfo"] =
            json!({"position": 2, "reason": "needs 1 idle node in cluster c1: 0 idle, 1 running"});
        let out = render(OutputFormat::Tsv, Kind::Job, &[queued.clone(), job()]);
        assert_eq!(
            out,
            "j1\te\tc1\t2\tcustom\tqueued\t\t2024-01-02T03:04:05Z\t2\t\
             needs 1 idle node in cluster c1: 0 idle, 1 running\n\
             j1\te\tc1\t2\tcustom\tfailed\t3\t2024-01-02T03:04:05Z\t\t\n"
        );
        let table = render(OutputFormat::Table, Kind::Job, &[queued]);
        let lines: Vec<&str> = table.lines().collect();
        for h in ["Queue", "Reason"] {
            assert!(lines[0].contains(h), "{h} missing in\n{table}");
        }
        // The reason may wrap on a narrow terminal; its words are all there.
        for w in ["needs", "idle", "c1:", "running"] {
            assert!(table.contains(w), "{w} missing in\n{table}");
        }
    }

    #[test]
    fn cluster_scale_column() {
        let c = json!({"name": "c", "scaleSettings": {"autoScale": {"minimumNodeCount": 0, "maximumNodeCount": 4}}});
        assert!(render(OutputFormat::Tsv, Kind::Cluster, &[c]).starts_with("c\t\t\tauto 0-4\t"));
    }

    fn query_out(format: OutputFormat, v: Value) -> String {
        let mut buf = Vec::new();
        queried(&mut buf, format, &v).unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn query_results_print_like_az() {
        let v = json!({"storageAccountName": "store"});
        assert_eq!(
            query_out(OutputFormat::Json, v.clone()),
            "{\n  \"storageAccountName\": \"store\"\n}\n"
        );
        assert_eq!(query_out(OutputFormat::Tsv, v.clone()), "store\n");
        let table = query_out(OutputFormat::Table, v);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0].trim(), "StorageAccountName");
        assert!(lines[1].starts_with("---"), "{table}");
        assert_eq!(lines[2].trim(), "store");

        let rows = json!([{"nodeId": "a", "port": 22, "errors": [{"code": "x"}]},
                          {"nodeId": "b", "ok": true}]);
        assert_eq!(
            query_out(OutputFormat::Tsv, rows),
            "a\t22\t\nb\t\ttrue\n",
            "scalar members only, missing ones empty"
        );
        assert_eq!(query_out(OutputFormat::Tsv, json!(["a", 1])), "a\n1\n");
        assert_eq!(
            query_out(OutputFormat::Tsv, json!([["a", 1], ["b"]])),
            "a\t1\nb\t\n"
        );
        assert!(query_out(OutputFormat::Table, json!([["a", 1]])).contains("Column2"));
        assert_eq!(query_out(OutputFormat::Json, Value::Null), "");
        assert_eq!(query_out(OutputFormat::Json, json!("x")), "\"x\"\n");
    }

    #[test]
    fn node_table_has_the_login_fields_and_why() {
        let n = json!({"nodeId": "n1", "ipAddress": "10.0.0.4", "port": 50001, "state": "unusable",
                       "preparationStep": "", "connected": true, "fileShareDriver": "cifs",
                       "blobDriver": "rclone", "runningJobIds": [],
                       "gpus": [{"uuid": "GPU-a", "jobId": "j1"}, {"uuid": "GPU-b"}],
                       "errors": [{"code": "SetupTaskFailed", "message": "exit code 2"}]});
        assert_eq!(
            render(OutputFormat::Tsv, Kind::Node, &[n]),
            "n1\t10.0.0.4\t50001\tunusable\t\ttrue\tafs=cifs bfs=rclone\t2 (1 held)\t\tSetupTaskFailed: exit code 2\n"
        );
    }

    #[test]
    fn json_is_an_array_for_lists_and_none_prints_nothing() {
        let out = render(OutputFormat::Json, Kind::Job, &[job()]);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v[0]["name"], "j1");
        assert_eq!(render(OutputFormat::None, Kind::Job, &[job()]), "");
    }
}
