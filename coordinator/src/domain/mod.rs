//! The coordinator's domain: resources, specifications, state machines,
//! validation, scheduling inputs and the environment of a job. Pure data and
//! functions: no IO, no protocol types.

pub mod auto_storage;
pub mod autoscale;
pub mod cluster_events;
pub mod container;
pub mod env;
pub mod gpus;
pub mod mpi;
pub mod names;
pub mod node_setup;
pub mod paging;
pub mod secret;
pub mod spec;
pub mod state;
pub mod tensorflow;
pub mod transition;
pub mod types;
pub mod validate;

#[cfg(test)]
pub mod fixtures;

pub use secret::Secret;
pub use spec::*;
pub use state::{ExecutionState, JobExit, NodeState};
pub use types::*;
