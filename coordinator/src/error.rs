//! The coordinator's error type and its ONE mapping to `tonic::Status`.
//! `InvalidArgument` names the field and the rule; `NotFound` and
//! `AlreadyExists` name the resource; messages are lower-case, no period.

use crate::domain::validate::Invalid;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("{kind} {name:?} not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{kind} {name:?} already exists")]
    AlreadyExists { kind: &'static str, name: String },
    /// The request is valid but the state does not allow it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A feature that is not built yet.
    #[error("{0}")]
    Unimplemented(String),
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

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Self::Internal(format!("io: {e}"))
    }
}

/// The gRPC status for an error. Internal errors are logged here, once.
pub fn to_status(e: &Error) -> tonic::Status {
    use tonic::Status;
    let msg = e.to_string();
    match e {
        Error::Invalid(_) => Status::invalid_argument(msg),
        Error::NotFound { .. } => Status::not_found(msg),
        Error::AlreadyExists { .. } => Status::already_exists(msg),
        Error::FailedPrecondition(_) => Status::failed_precondition(msg),
        Error::Unimplemented(_) => Status::unimplemented(msg),
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
    use tonic::Code;

    #[test]
    fn mapping() {
        let s = to_status(&Error::invalid("job.node_count", "must be at least 1"));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "job.node_count: must be at least 1");
        let s = to_status(&StoreError::not_found("cluster", "w/c").into());
        assert_eq!(s.code(), Code::NotFound);
        assert_eq!(s.message(), "cluster \"w/c\" not found");
        let s = to_status(
            &StoreError::AlreadyExists {
                kind: "job",
                name: "w/e/j".into(),
            }
            .into(),
        );
        assert_eq!(s.code(), Code::AlreadyExists);
        assert_eq!(s.message(), "job \"w/e/j\" already exists");
        let s = to_status(&StoreError::Conflict("x".into()).into());
        assert_eq!(s.code(), Code::FailedPrecondition);
        let s = to_status(&StoreError::Backend("disk".into()).into());
        assert_eq!(s.code(), Code::Internal);
    }
}
