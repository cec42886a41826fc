//! Compiles `bai/v1/*.proto` without a system `protoc`: protox parses the files
//! into a descriptor set, tonic-prost-build generates the code, and the encoded
//! descriptor set is kept for gRPC reflection.

use prost::Message;
use std::path::PathBuf;

const FILES: &[&str] = &[
    "bai/v1/resources.proto",
    "bai/v1/api.proto",
    "bai/v1/agent.proto",
    "bai/v1/auth.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for f in FILES {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(FILES, ["."])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("bai_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
