//! The public gRPC API: one module per service. Handlers convert the request
//! (`convert`), validate it (`domain::validate`), call the store or a `Core`
//! action, and convert the answer back. Errors go through `error::to_status`.

mod auto_storage;
pub mod cluster;
mod cluster_files;
pub mod convert;
pub mod experiment;
pub mod job;
mod metrics_watch;
mod output_dirs;
mod output_files;
pub mod workspace;

use crate::domain::validate::{self, Invalid};
use crate::error::Error;

/// Checks a resource name in a request field.
fn name(field: &str, v: &str) -> Result<(), Error> {
    validate::name(field, v).map_err(Error::from)
}

/// The resource of a create request, or `<field>: is required`.
fn required<T>(field: &str, v: Option<T>) -> Result<T, Error> {
    v.ok_or_else(|| Invalid::new(field, "is required").into())
}
