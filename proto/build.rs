//! Compiles `proto/` with protox (a Rust protobuf compiler: no system protoc) and generates the
//! tonic clients and servers; also writes the descriptor set that gRPC reflection serves.
use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["labelfleet/v1/labelfleet.proto"], ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("labelfleet_v1_descriptor.bin"),
        fds.encode_to_vec(),
    )?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
