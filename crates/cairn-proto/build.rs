//! Generates the etcd v3 API from `<workspace>/proto` with the vendored protoc
//! (no system protoc needed). Messages are always generated; tonic client and
//! server stubs only when the `grpc` feature is on.

use std::env;
use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "etcd/mvccpb/kv.proto",
    "etcd/authpb/auth.proto",
    "etcd/etcdserverpb/rpc.proto",
    "etcd/v3lockpb/v3lock.proto",
    "etcd/v3electionpb/v3election.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").ok_or("CARGO_MANIFEST_DIR unset")?);
    let proto_root = manifest_dir.join("../../proto");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or("OUT_DIR unset")?);
    let grpc = env::var_os("CARGO_FEATURE_GRPC").is_some();
    let json = env::var_os("CARGO_FEATURE_JSON").is_some();

    println!("cargo:rerun-if-changed={}", proto_root.display());
    println!("cargo:rerun-if-changed=build.rs");

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);

    let protos: Vec<PathBuf> = PROTOS.iter().map(|p| proto_root.join(p)).collect();
    tonic_prost_build::configure()
        .build_client(grpc)
        .build_server(grpc)
        .build_transport(grpc)
        .file_descriptor_set_path(out_dir.join("cairn_descriptor.bin"))
        .compile_with_config(config, &protos, &[proto_root])?;
    if json {
        // grpc-gateway as etcd configures it: proto field names out, zero values omitted
        // (`emit_fields` off); both proto and JSON names accepted in, unknown fields ignored.
        let descriptors = std::fs::read(out_dir.join("cairn_descriptor.bin"))?;
        pbjson_build::Builder::new()
            .register_descriptors(&descriptors)?
            .preserve_proto_field_names()
            .ignore_unknown_fields()
            .build(&[".mvccpb", ".authpb", ".etcdserverpb", ".v3lockpb", ".v3electionpb"])?;
    }
    Ok(())
}
