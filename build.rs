//! Compiles proto/ with protox (pure Rust): building kactivator needs no system protoc.

const PROTOS: &[&str] = &[
    "proto/knative/stat.proto",
    // Test-only (tests/activator_proxy.rs includes it); not part of the library.
    "proto/test/echo.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
