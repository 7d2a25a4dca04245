//! Generates the peer protocol (`proto/cairn/peer.proto`) with the vendored protoc; the etcd
//! messages it embeds come from `cairn-proto`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR unset")?);
    let proto_root = manifest_dir.join("../../proto");
    println!("cargo:rerun-if-changed={}", proto_root.join("cairn").display());
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .extern_path(".etcdserverpb", "::cairn_proto::etcdserverpb")
        .extern_path(".mvccpb", "::cairn_proto::mvccpb")
        .extern_path(".authpb", "::cairn_proto::authpb")
        .compile_with_config(config, &[proto_root.join("cairn/peer.proto")], &[proto_root])?;
    Ok(())
}
