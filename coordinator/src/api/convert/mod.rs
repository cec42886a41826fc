//! The only place on the API side that knows prost types: conversions between
//! `bai_proto::v1` messages and domain types. Conversions from requests return
//! [`Invalid`] for what only the wire form can get wrong (unknown enum values,
//! a missing oneof, Key Vault references); domain rules live in
//! `domain::validate`. Conversions to responses never include a secret's value.

mod cluster;
mod common;
mod job;
pub mod output;
#[cfg(test)]
mod tests;

pub use cluster::*;
pub use common::*;
pub use job::*;

use crate::domain::validate::Invalid;
use crate::domain::{Experiment, Millis, Workspace};
use bai_proto::v1 as pb;

/// Whether a conversion to the wire keeps secret values (only for the node
/// that runs a job) or blanks them (every API read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    Redact,
    Reveal,
}

pub fn ts(ms: Millis) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

pub fn ts_opt(ms: Option<Millis>) -> Option<prost_types::Timestamp> {
    ms.map(ts)
}

pub fn from_ts(t: &prost_types::Timestamp) -> Millis {
    t.seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(t.nanos) / 1_000_000)
}

pub fn duration(ms: u64) -> prost_types::Duration {
    prost_types::Duration {
        seconds: (ms / 1000) as i64,
        nanos: ((ms % 1000) * 1_000_000) as i32,
    }
}

/// A positive duration in milliseconds, or why not.
pub fn from_duration(field: &str, d: &prost_types::Duration) -> Result<u64, Invalid> {
    let ms = d
        .seconds
        .saturating_mul(1000)
        .saturating_add(i64::from(d.nanos) / 1_000_000);
    if ms <= 0 {
        return Err(Invalid::new(field, "must be positive"));
    }
    Ok(ms as u64)
}

/// A message that was sent but left at its defaults counts as absent, so an
/// empty `containerSettings: {}` is not mistaken for a request to use one.
pub fn set<T: Default + PartialEq>(m: Option<T>) -> Option<T> {
    m.filter(|m| *m != T::default())
}

/// A count that must not be negative.
pub fn count(field: &str, v: i32) -> Result<u32, Invalid> {
    u32::try_from(v).map_err(|_| Invalid::new(field, "must not be negative"))
}

pub fn unknown_enum(field: &str, v: i32) -> Invalid {
    Invalid::new(field, format!("unknown value {v}"))
}

pub fn workspace_from(w: pb::Workspace, now: Millis) -> Workspace {
    Workspace {
        name: w.name,
        location: w.location,
        tags: w.tags.into_iter().collect(),
        creation_time: now,
    }
}

pub fn workspace_to(w: &Workspace) -> pb::Workspace {
    pb::Workspace {
        name: w.name.clone(),
        location: w.location.clone(),
        tags: w.tags.clone().into_iter().collect(),
        id: format!("/workspaces/{}", w.name),
        creation_time: Some(ts(w.creation_time)),
        provisioning_state: pb::ProvisioningState::Succeeded as i32,
        provisioning_state_transition_time: Some(ts(w.creation_time)),
    }
}

pub fn experiment_from(e: pb::Experiment, now: Millis) -> Experiment {
    Experiment {
        workspace: e.workspace,
        name: e.name,
        creation_time: now,
    }
}

pub fn experiment_to(e: &Experiment) -> pb::Experiment {
    pb::Experiment {
        workspace: e.workspace.clone(),
        name: e.name.clone(),
        id: format!("/workspaces/{}/experiments/{}", e.workspace, e.name),
        creation_time: Some(ts(e.creation_time)),
        provisioning_state: pb::ProvisioningState::Succeeded as i32,
        provisioning_state_transition_time: Some(ts(e.creation_time)),
    }
}
