//! Generated protocol types for bai (`bai.v1`): the public API services
//! (workspaces, experiments, clusters, jobs) and the node agent protocol.
//!
//! Only the crates' `convert`/`pb` edge modules should use these types; the
//! domain logic works on its own types.

pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("bai.v1");
}

/// The encoded `FileDescriptorSet` of every bai proto file, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("bai_descriptor");
