//! Compiles `proto/halo/worker/v1/worker.proto` into OUT_DIR with a vendored protoc, so the build
//! needs no system protobuf compiler, and writes the file descriptor set that server reflection
//! serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest.join("../../proto");
    let worker = proto_root.join("halo/worker/v1/worker.proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .file_descriptor_set_path(out_dir.join("halo_worker_descriptor.bin"))
        .compile_with_config(
            config,
            std::slice::from_ref(&worker),
            std::slice::from_ref(&proto_root),
        )?;

    println!("cargo:rerun-if-changed={}", worker.display());
    Ok(())
}
