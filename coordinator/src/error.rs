//! The coordinator's error type and its ONE mapping to `tonic::Status`.
//! `InvalidArgument` names the field and the rule; `NotFound` and
//! `AlreadyExists` name the resource; messages are lower-case, no period.
//!
//! No other module builds a `tonic::Status` (`tests/invariants.rs` checks
//! the sources): handlers and stream tasks return an [`Error`] and turn it
//! into a status with [`to_status`] (or `?`), which logs internal errors.

use crate::domain::validate::Invalid;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    /// The resource was deleted while a stream was following it.
    #[error("{kind} {name:?} was deleted")]
    Deleted { kind: &'static str, name: String },
    #[error("{kind} {name:?} already exists")]
    AlreadyExists { kind: &'static str, name: String },
    /// The request is valid but the state does not allow it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A feature that is not built yet.
    #[error("{0}")]
    Unimplemented(String),
    /// What a stream was sending changed under it; the client starts over.
    #[error("{0}")]
    Aborted(String),
    /// The other side gave up (closed its stream, went away).
    #[error("{0}")]
    Cancelled(String),
    /// The other side did not do its part in time.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The coordinator cannot serve this now (it is shutting down); retry.
    #[error("{0}")]
    Unavailable(String),
    /// A fault of the coordinator (IO, the store, a lost task). The message is
    /// built from the cause's own text, never from request values, and is
    /// logged by [`to_status`].
    #[error("{0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn invalid(field: impl Into<String>, rule: impl Into<String>) -> Self {
        Self::Invalid(Invalid::new(field, rule))
    }

    pub fn not_found(kind: &'static str, name: impl Into<String>) -> Self {
        Self::NotFound {
            kind,
            name: name.into(),
        }
    }

    /// An internal error: `what` failed because of `cause`.
    pub fn internal(what: &str, cause: impl std::fmt::Display) -> Self {
        Self::Internal(format!("{what}: {cause}"))
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { kind, name } => Self::NotFound { kind, name },
            StoreError::AlreadyExists { kind, name } => Self::AlreadyExists { kind, name },
            StoreError::Conflict(m) => Self::FailedPrecondition(m),
            StoreError::Backend(m) => Self::Internal(m),
        }
    }
}

/// The auto-storage container could not be made sure of: the service's
/// refusal (a wrong key, say) is the configuration's to fix; no answer may
/// pass, so the caller may retry.
impl From<crate::storage::blob::BlobError> for Error {
    fn from(e: crate::storage::blob::BlobError) -> Self {
        use crate::storage::blob::BlobError as B;
        let message = format!("auto-storage: {e}");
        match e {
            B::Refused { .. } | B::Invalid { .. } => Self::FailedPrecondition(message),
            B::Unreachable { .. } | B::TimedOut { .. } => Self::Unavailable(message),
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Self::Internal(format!("io: {e}"))
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::Internal(format!("a blocking task failed: {e}"))
    }
}

/// The gRPC status for an error. Internal errors are logged here, once, as
/// an `error` event in the caller's span (so with its `node`, `job`, …
/// fields); the other kinds are the client's to handle and are not logged.
/// Only the error's own message is logged: no request, and no [`Secret`]
/// (which has no `Display`, so cannot be part of one).
///
/// [`Secret`]: crate::domain::Secret
pub fn to_status(e: &Error) -> tonic::Status {
    use tonic::Status;
    let msg = e.to_string();
    match e {
        Error::Invalid(_) => Status::invalid_argument(msg),
        Error::NotFound { .. } | Error::Deleted { .. } => Status::not_found(msg),
        Error::AlreadyExists { .. } => Status::already_exists(msg),
        Error::FailedPrecondition(_) => Status::failed_precondition(msg),
        Error::Unimplemented(_) => Status::unimplemented(msg),
        Error::Aborted(_) => Status::aborted(msg),
        Error::Cancelled(_) => Status::cancelled(msg),
        Error::DeadlineExceeded(_) => Status::deadline_exceeded(msg),
        Error::Unavailable(_) => Status::unavailable(msg),
        Error::Internal(_) => {
            tracing::error!(error = %msg, "internal error");
            Status::internal(msg)
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        to_status(&e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tonic::Code;

    fn named(kind: &'static str) -> (&'static str, String) {
        (kind, "w/e/j".to_string())
    }

    #[test]
    fn each_kind_maps_to_its_code_with_a_named_message() {
        let (kind, name) = named("job");
        let cases: Vec<(Error, Code, &str)> = vec![
            (
                Error::invalid("job.node_count", "must be at least 1"),
                Code::InvalidArgument,
                "job.node_count: must be at least 1",
            ),
            (
                StoreError::not_found("cluster", "w/c").into(),
                Code::NotFound,
                "cluster \"w/c\" not found",
            ),
            (
                Error::Deleted {
                    kind,
                    name: name.clone(),
                },
                Code::NotFound,
                "job \"w/e/j\" was deleted",
            ),
            (
                StoreError::AlreadyExists { kind, name }.into(),
                Code::AlreadyExists,
                "job \"w/e/j\" already exists",
            ),
            (
                StoreError::Conflict("job \"w/e/j\" has ended".into()).into(),
                Code::FailedPrecondition,
                "job \"w/e/j\" has ended",
            ),
            (
                Error::Unimplemented("job.node_count: more than 1 is not supported yet".into()),
                Code::Unimplemented,
                "job.node_count: more than 1 is not supported yet",
            ),
            (
                Error::Aborted("stdout.txt: the output restarted".into()),
                Code::Aborted,
                "stdout.txt: the output restarted",
            ),
            (
                Error::Cancelled("register: the stream closed".into()),
                Code::Cancelled,
                "register: the stream closed",
            ),
            (
                Error::DeadlineExceeded("register: nothing within 30s".into()),
                Code::DeadlineExceeded,
                "register: nothing within 30s",
            ),
            (
                Error::Unavailable("the coordinator is shutting down".into()),
                Code::Unavailable,
                "the coordinator is shutting down",
            ),
            (
                StoreError::Backend("disk I/O error".into()).into(),
                Code::Internal,
                "disk I/O error",
            ),
            (
                Error::internal("read output", "short read"),
                Code::Internal,
                "read output: short read",
            ),
            (
                std::io::Error::other("no space").into(),
                Code::Internal,
                "io: no space",
            ),
        ];
        for (e, code, msg) in cases {
            let s = to_status(&e);
            assert_eq!(s.code(), code, "{e:?}");
            assert_eq!(s.message(), msg, "{e:?}");
            let via_from: tonic::Status = e.into();
            assert_eq!(via_from.code(), code);
        }
    }

    /// A log sink for one test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
        }
    }

    /// Runs `f` with a subscriber that writes every event (with its spans'
    /// fields) to the returned text.
    fn logged(f: impl FnOnce()) -> String {
        let sink = Captured::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        sink.text()
    }

    #[test]
    fn internal_errors_are_logged_with_the_span_fields() {
        let out = logged(|| {
            let span = tracing::info_span!("session", node = "node-7", job = "job-3");
            let _in = span.enter();
            let s = to_status(&StoreError::Backend("database is locked".into()).into());
            assert_eq!(s.code(), Code::Internal);
        });
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1, "one event: {out}");
        let line = lines[0];
        assert!(line.contains("ERROR"), "{line}");
        assert!(line.contains("internal error"), "{line}");
        assert!(line.contains("database is locked"), "{line}");
        assert!(
            line.contains("node=\"node-7\""),
            "the span's fields: {line}"
        );
        assert!(line.contains("job=\"job-3\""), "the span's fields: {line}");
    }

    #[test]
    fn client_errors_are_not_logged() {
        let out = logged(|| {
            for e in [
                Error::invalid("job.environment_variables[0].value", "must not be empty"),
                Error::not_found("job", "w/e/j"),
                Error::FailedPrecondition("job \"w/e/j\" has ended".into()),
                Error::Unavailable("the coordinator is shutting down".into()),
            ] {
                let _ = to_status(&e);
            }
        });
        assert_eq!(out, "", "nothing logged for a client's error");
    }
}
