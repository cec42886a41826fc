//! The one JSON line a run prints: the traceability fields (scenario,
//! bai_version, git, params) and the scenario's figures at the top level.

use serde_json::{Map, Value, json};

/// Figures and parameters of one run.
#[derive(Debug, Clone)]
pub struct Report {
    scenario: &'static str,
    params: Map<String, Value>,
    figures: Map<String, Value>,
}

/// The commit the bench was built from (`git rev-parse --short HEAD`), or "unknown".
pub const GIT: &str = env!("BAI_BENCH_GIT");

impl Report {
    pub fn new(scenario: &'static str) -> Self {
        Self {
            scenario,
            params: Map::new(),
            figures: Map::new(),
        }
    }

    /// Records an input of the run.
    pub fn param(&mut self, key: &str, v: impl Into<Value>) -> &mut Self {
        self.params.insert(key.into(), v.into());
        self
    }

    /// Records a measured figure.
    pub fn figure(&mut self, key: &str, v: impl Into<Value>) -> &mut Self {
        self.figures.insert(key.into(), v.into());
        self
    }

    /// The whole report as one JSON object.
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        out.insert("scenario".into(), json!(self.scenario));
        out.insert("bai_version".into(), json!(env!("CARGO_PKG_VERSION")));
        out.insert("git".into(), json!(GIT));
        out.insert("params".into(), Value::Object(self.params.clone()));
        for (k, v) in &self.figures {
            out.insert(k.clone(), v.clone());
        }
        Value::Object(out)
    }

    /// The report as one line of JSON.
    pub fn line(&self) -> String {
        self.to_json().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_holds_traceability_fields_params_and_figures() {
        let mut r = Report::new("latency");
        r.param("jobs", 200).figure("submit_to_start_ms_p50", 1.5);
        let line = r.line();
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["scenario"], "latency");
        assert_eq!(v["params"]["jobs"], 200);
        assert_eq!(v["submit_to_start_ms_p50"], 1.5);
        assert!(v["git"].as_str().is_some_and(|g| !g.is_empty()));
        assert_eq!(v["bai_version"], env!("CARGO_PKG_VERSION"));
    }
}
