//! Error messages say each thing once: an error type whose message prints its cause must not
//! also return that cause from `source()`, or a chain printer (`{:#}`, as `main` uses) prints it
//! twice (`cannot bind …: Address already in use (os error 98): Address already in use …`).
//! Checked over the source of every `thiserror` variant in `src/`.
#![allow(clippy::unwrap_used)]

use std::path::Path;

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).unwrap();
            out.push((path.display().to_string(), text));
        }
    }
}

/// The variants of `text` whose message prints a field that is also their `source()`.
fn repeated_causes(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("#[error(") {
        rest = &rest[at + "#[error(".len()..];
        // The variant: up to the next attribute of another variant, or the end of the enum.
        let end = [rest.find("#[error("), rest.find("\n}")]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(rest.len());
        let variant = &rest[..end];
        let message = variant.split(")]").next().unwrap_or_default();
        if message.starts_with("transparent") {
            continue;
        }
        let is_source = |field: &str| {
            variant.contains("#[from]")
                || variant.contains("#[source]")
                || (field == "source" && variant.contains("source:"))
        };
        let prints = |field: &str| message.contains(&format!("{{{field}}}"));
        if (prints("0") && is_source("0")) || (prints("source") && is_source("source")) {
            found.push(message.lines().next().unwrap_or_default().to_string());
        }
    }
    found
}

#[test]
fn no_error_prints_its_source_twice() {
    let mut files = Vec::new();
    sources(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    assert!(files.len() > 20, "the crate's sources are found");
    let offenders: Vec<String> = files
        .iter()
        .flat_map(|(path, text)| {
            repeated_causes(text)
                .into_iter()
                .map(move |m| format!("{path}: #[error({m}"))
        })
        .collect();
    assert!(offenders.is_empty(), "{offenders:#?}");
}

#[test]
fn the_check_finds_the_pattern() {
    let bad = "enum E {\n    #[error(\"cannot bind {addr}: {source}\")]\n    Bind { addr: A, \
               #[source]\n source: io::Error },\n    #[error(\"x: {0}\")]\n    X(#[from] Y),\n}\n";
    assert_eq!(repeated_causes(bad).len(), 2);
    let good = "enum E {\n    #[error(\"cannot bind {addr}: {error}\")]\n    Bind { addr: A, \
                error: io::Error },\n    #[error(transparent)]\n    X(#[from] Y),\n}\n";
    assert_eq!(repeated_causes(good), Vec::<String>::new());
}
