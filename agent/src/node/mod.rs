//! Node preparation: what a node does after registering and before it becomes idle.

pub mod mounts;
