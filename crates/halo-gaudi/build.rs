//! Compiles the sidecar protocol (proto/halo/sidecar/v1/sidecar.proto) with a vendored protoc,
//! so building needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let proto = root.join("halo/sidecar/v1/sidecar.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    // The build script is single-threaded, so setting the variable cannot race a reader.
    std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(&[proto], &[root])?;
    Ok(())
}
