//! Output: the Batch AI JSON of `batchai_json` printed as JSON, as a compact
//! table of each resource's key fields, as TSV (the table's fields, no
//! header), or not at all.

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
            ("State", |v| text(v, "/state")),
            ("Hostname", |v| text(v, "/hostname")),
            ("IP", |v| text(v, "/ipAddress")),
            ("Connected", |v| text(v, "/connected")),
            ("CPUs", |v| text(v, "/cpuCount")),
            ("Jobs", |v| text(v, "/runningJobIds")),
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
            "j1\te\tc1\t2\tcustom\tfailed\t3\t2024-01-02T03:04:05Z\n"
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
    fn cluster_scale_column() {
        let c = json!({"name": "c", "scaleSettings": {"autoScale": {"minimumNodeCount": 0, "maximumNodeCount": 4}}});
        assert!(render(OutputFormat::Tsv, Kind::Cluster, &[c]).starts_with("c\t\t\tauto 0-4\t"));
    }

    #[test]
    fn json_is_an_array_for_lists_and_none_prints_nothing() {
        let out = render(OutputFormat::Json, Kind::Job, &[job()]);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v[0]["name"], "j1");
        assert_eq!(render(OutputFormat::None, Kind::Job, &[job()]), "");
    }
}
