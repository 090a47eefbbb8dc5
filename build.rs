//! Compiles proto/ with protox (pure Rust): building kactivator needs no system protoc.

const PROTOS: &[&str] = &[
    "proto/knative/stat.proto",
    "proto/kactivator/config.proto",
    "proto/mixer/template/authorization/template_handler_service.proto",
    "proto/mixer/template/metric/template_handler_service.proto",
    "proto/envoy/service/auth/v3/external_auth.proto",
    // Test-only (tests/support/backend.rs includes it); not part of the library.
    "proto/test/echo.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    params_descriptor()?;
    Ok(())
}

/// The adapter CR's `config` (Mixer validates handler params against it): the
/// FileDescriptorSet of the Params proto alone, without source info, so the bytes only change
/// when the schema does.
fn params_descriptor() -> Result<(), Box<dyn std::error::Error>> {
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler
        .include_imports(true)
        .include_source_info(false)
        .open_file("kactivator/config.proto")?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("kactivator_params.fds");
    std::fs::write(out, compiler.encode_file_descriptor_set())?;
    Ok(())
}
