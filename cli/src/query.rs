//! `--query`: a JMESPath expression (the `jmespath` crate) applied to the JSON
//! form of an answer before it is printed, as az does.

use serde_json::Value;

use crate::error::CliError;

/// A checked `--query` expression.
#[derive(Debug, Clone)]
pub struct Query {
    text: String,
}

impl Query {
    /// Checks the expression; a bad one is a usage error naming the flag.
    pub fn parse(text: &str) -> Result<Query, CliError> {
        jmespath::compile(text).map_err(|e| bad(text, &e))?;
        Ok(Query {
            text: text.to_string(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The expression's result on `value` (`null` when nothing matches).
    pub fn apply(&self, value: &Value) -> Result<Value, CliError> {
        // Compiled again here: the crate's expressions are not Send.
        let expr = jmespath::compile(&self.text).map_err(|e| bad(&self.text, &e))?;
        let data = jmespath::Variable::try_from(value)
            .map_err(|e| CliError::usage(format!("--query: {e}")))?;
        let found = expr
            .search(data)
            .map_err(|e| CliError::usage(format!("--query: {e}")))?;
        serde_json::to_value(&*found)
            .map_err(|e| CliError::Io(format!("--query: cannot convert the result: {e}")))
    }
}

fn bad(text: &str, e: &jmespath::JmespathError) -> CliError {
    CliError::usage(format!(
        "--query: {text:?} is not a valid JMESPath expression: {e}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_seeds_query_picks_the_account() {
        let cluster = json!({"nodeSetup": {"mountVolumes": {"azureFileShares": [
            {"accountName": "store", "azureFileUrl": "https://store.file.core.windows.net/s"}]}}});
        let q = Query::parse(
            "nodeSetup.mountVolumes.azureFileShares[0].{storageAccountName:accountName}",
        )
        .unwrap();
        assert_eq!(
            q.apply(&cluster).unwrap(),
            json!({"storageAccountName": "store"})
        );
        let q = Query::parse("[?state=='idle'].nodeId").unwrap();
        let nodes = json!([{"nodeId": "a", "state": "idle"}, {"nodeId": "b", "state": "running"}]);
        assert_eq!(q.apply(&nodes).unwrap(), json!(["a"]));
        assert_eq!(
            Query::parse("nope").unwrap().apply(&nodes).unwrap(),
            Value::Null
        );
    }

    #[test]
    fn a_bad_expression_names_the_flag() {
        let e = Query::parse("nodeSetup.[").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.to_string().starts_with("--query: \"nodeSetup.[\""), "{e}");
    }
}
