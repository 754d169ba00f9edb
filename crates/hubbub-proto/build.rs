//! Generates the protobuf client subprotocols' message types from `proto/webpubsub.v1.proto`.
//!
//! The .proto is compiled by protox (pure Rust, so no `protoc` binary is needed here or on CI)
//! and the descriptors are handed to prost-build; `google.protobuf.Any` maps to `prost_types`.
//! The output is `$OUT_DIR/azure.webpubsub.rs`, included by `src/protobuf.rs`.

fn main() {
    const PROTO: &str = "proto/webpubsub.v1.proto";
    println!("cargo:rerun-if-changed={PROTO}");
    println!("cargo:rerun-if-changed=build.rs");
    let fds = match protox::compile([PROTO], ["proto"]) {
        Ok(fds) => fds,
        Err(e) => panic!("{PROTO} does not compile: {e:?}"),
    };
    // BTreeMap for the `map<string, string>` fields: encoding is then deterministic (sorted by
    // key), so the same message always makes the same bytes.
    if let Err(e) = prost_build::Config::new().btree_map(["."]).compile_fds(fds) {
        panic!("prost-build could not generate code from {PROTO}: {e}");
    }
}
