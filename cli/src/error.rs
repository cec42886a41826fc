//! The CLI's error type and its exit codes (documented in `bai --help`).

use crate::batchai_json::JsonError;

/// Exit code for an API error (the coordinator refused the request) or I/O error.
pub const EXIT_API: u8 = 1;
/// Exit code for a usage error (flags, config files, confirmation).
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the coordinator cannot be reached.
pub const EXIT_UNREACHABLE: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad flags or input files.
    #[error("{0}")]
    Usage(String),
    /// The coordinator answered with an error status.
    #[error("{}", status_text(.0))]
    Api(tonic::Status),
    /// The coordinator could not be reached.
    #[error("cannot reach the coordinator at {address}: {detail}")]
    Unreachable { address: String, detail: String },
    /// Local I/O (writing output, reading files, running processes).
    #[error("{0}")]
    Io(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Api(_) | CliError::Io(_) => EXIT_API,
            CliError::Unreachable { .. } => EXIT_UNREACHABLE,
        }
    }

    pub fn usage(msg: impl Into<String>) -> Self {
        CliError::Usage(msg.into())
    }
}

fn status_text(s: &tonic::Status) -> String {
    if s.message().is_empty() {
        format!("the coordinator answered {:?}", s.code())
    } else {
        s.message().to_string()
    }
}

impl From<JsonError> for CliError {
    fn from(e: JsonError) -> Self {
        CliError::Usage(e.to_string())
    }
}

impl From<std::io::Error> for CliError {
    fn from(e: std::io::Error) -> Self {
        CliError::Io(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(CliError::usage("x").exit_code(), 2);
        assert_eq!(
            CliError::Api(tonic::Status::invalid_argument(
                "job.node_count: must be at least 1"
            ))
            .exit_code(),
            1
        );
        let e = CliError::Unreachable {
            address: "a".into(),
            detail: "d".into(),
        };
        assert_eq!(e.exit_code(), 3);
    }

    #[test]
    fn api_errors_print_the_status_message() {
        let e = CliError::Api(tonic::Status::invalid_argument(
            "job.node_count: must be at least 1",
        ));
        assert_eq!(e.to_string(), "job.node_count: must be at least 1");
        let e = CliError::Api(tonic::Status::internal(""));
        assert!(e.to_string().contains("Internal"), "{e}");
    }
}
