//! Every committed fuzz corpus file (fuzz/corpus/<target>/) through the same invariant checks as
//! the cargo-fuzz targets, on the stable toolchain, as part of a plain `cargo test`.

use std::{
    panic::{self, AssertUnwindSafe},
    path::{Path, PathBuf},
};

use kactivator::fuzzing;

type Check = fn(&[u8]);

/// Runs `check` on every file of `fuzz/<dir>/<target>/`; fails naming each file that panics.
fn run(dir: &str, target: &str, check: Check) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(dir)
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|entry| {
            entry
                .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
                .path()
        })
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", root.display());
    let failed: Vec<String> = files
        .iter()
        .filter(|path| {
            let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            panic::catch_unwind(AssertUnwindSafe(|| check(&data))).is_err()
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} inputs break an invariant:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
}

#[test]
fn request_head_corpus() {
    run("corpus", "request_head", fuzzing::check_request);
}

#[test]
fn response_head_corpus() {
    run("corpus", "response_head", fuzzing::check_response);
}

#[test]
fn chunked_corpus() {
    run("corpus", "chunked", fuzzing::check_chunked);
}

#[test]
fn gob_corpus() {
    run("corpus", "gob", fuzzing::check_gob);
}

#[test]
fn stats_frame_corpus() {
    run("corpus", "stats_frame", fuzzing::check_stats_frame);
}

#[test]
fn adapter_proto_corpus() {
    run("corpus", "adapter_proto", fuzzing::check_adapter_proto);
}

#[test]
fn config_corpus() {
    run("corpus", "config", fuzzing::check_config);
}

// Inputs the fuzzer found that broke an invariant (docs/fuzzing.md, "Findings"), all fixed;
// they stay as regression tests.

#[test]
fn request_head_regressions() {
    run("regressions", "request_head", fuzzing::check_request);
}

#[test]
fn response_head_regressions() {
    run("regressions", "response_head", fuzzing::check_response);
}
