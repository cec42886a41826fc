//! The connection to the coordinator: address handling, the four public API
//! clients on one channel, and what a gRPC status means (`Api::error`,
//! `is_transient`, `is_not_found`, `Api::ok_if_exists`). With `error.rs`, the
//! only CLI module that matches on gRPC codes or touches the transport
//! (`cli/tests/invariants.rs` checks it); command modules use the prost
//! messages as their model.

use std::time::Duration;

use bai_proto::v1::cluster_service_client::ClusterServiceClient;
use bai_proto::v1::experiment_service_client::ExperimentServiceClient;
use bai_proto::v1::job_service_client::JobServiceClient;
use bai_proto::v1::workspace_service_client::WorkspaceServiceClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::error::CliError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const KEEPALIVE: Duration = Duration::from_secs(20);

/// `host:port` → `http://host:port`; URLs with a scheme are kept.
pub fn normalize_address(address: &str) -> String {
    let a = address.trim();
    if a.contains("://") {
        a.to_string()
    } else {
        format!("http://{a}")
    }
}

/// Clients of the coordinator's public services, sharing one channel.
#[derive(Clone)]
pub struct Api {
    pub address: String,
    pub verbose: bool,
    pub workspaces: WorkspaceServiceClient<Channel>,
    pub experiments: ExperimentServiceClient<Channel>,
    pub clusters: ClusterServiceClient<Channel>,
    pub jobs: JobServiceClient<Channel>,
}

impl Api {
    /// Connects now, so an unreachable coordinator is reported before anything else.
    pub async fn connect(address: &str, verbose: bool) -> Result<Api, CliError> {
        let address = normalize_address(address);
        if verbose {
            eprintln!("bai: connecting to {address}");
        }
        let endpoint = Endpoint::from_shared(address.clone())
            .map_err(|e| CliError::usage(format!("--coordinator: bad address {address:?}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE)
            .keep_alive_timeout(KEEPALIVE)
            .keep_alive_while_idle(true);
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| CliError::Unreachable {
                address: address.clone(),
                detail: error_chain(&e),
            })?;
        Ok(Api {
            verbose,
            workspaces: WorkspaceServiceClient::new(channel.clone()),
            experiments: ExperimentServiceClient::new(channel.clone()),
            clusters: ClusterServiceClient::new(channel.clone()),
            jobs: JobServiceClient::new(channel),
            address,
        })
    }

    /// Maps a status from a call: UNAVAILABLE means the coordinator is gone.
    pub fn error(&self, status: Status) -> CliError {
        if self.verbose {
            eprintln!(
                "bai: the coordinator answered {:?}: {}",
                status.code(),
                status.message()
            );
        }
        if status.code() == Code::Unavailable {
            CliError::Unreachable {
                address: self.address.clone(),
                detail: status.message().to_string(),
            }
        } else {
            CliError::Api(status)
        }
    }

    /// The result of a create where "already exists" is fine (a reused
    /// `--state-dir`); any other refusal is an error.
    pub fn ok_if_exists<T>(&self, r: Result<T, Status>) -> Result<(), CliError> {
        match r {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::AlreadyExists => Ok(()),
            Err(s) => Err(self.error(s)),
        }
    }

    /// Logs a line to stderr with --verbose.
    pub fn log(&self, msg: impl AsRef<str>) {
        if self.verbose {
            eprintln!("bai: {}", msg.as_ref());
        }
    }
}

/// Whether a failed call or stream is worth retrying: the connection dropped
/// or the coordinator restarted, as opposed to a refusal.
pub fn is_transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::Cancelled
            | Code::Aborted
            | Code::DeadlineExceeded
            | Code::Internal
    )
}

/// Whether the coordinator answered that the resource does not exist (yet).
pub fn is_not_found(status: &Status) -> bool {
    status.code() == Code::NotFound
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        src = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_get_a_scheme() {
        assert_eq!(normalize_address("127.0.0.1:7150"), "http://127.0.0.1:7150");
        assert_eq!(normalize_address("http://h:1"), "http://h:1");
        assert_eq!(normalize_address(" localhost:9 "), "http://localhost:9");
    }

    #[test]
    fn refusals_are_not_transient() {
        assert!(is_transient(&Status::unavailable("x")));
        assert!(is_transient(&Status::unknown("h2 protocol error")));
        assert!(!is_transient(&Status::not_found("job")));
        assert!(!is_transient(&Status::invalid_argument("job.node_count")));
        assert!(is_not_found(&Status::not_found("job")));
        assert!(!is_not_found(&Status::unavailable("x")));
    }

    #[tokio::test]
    async fn unreachable_coordinator_is_exit_3() {
        // Bind then drop a listener to get a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let err = Api::connect(&format!("127.0.0.1:{port}"), false)
            .await
            .err()
            .unwrap();
        assert_eq!(err.exit_code(), 3, "{err}");
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
    }
}
