//! `--key value` argument parsing and CSV appending shared by the bench clients.
#![allow(dead_code)]

use std::{collections::BTreeMap, io::Write as _, str::FromStr};

use anyhow::Context as _;

/// Parsed `--key value` pairs; every key must be consumed (typos are errors).
#[derive(Debug)]
pub(crate) struct Args {
    map: BTreeMap<String, String>,
    used: std::cell::RefCell<Vec<String>>,
}

impl Args {
    pub(crate) fn parse() -> anyhow::Result<Self> {
        let mut map = BTreeMap::new();
        let mut it = std::env::args().skip(1);
        while let Some(k) = it.next() {
            let key = k
                .strip_prefix("--")
                .with_context(|| format!("expected --key, got {k:?}"))?;
            let value = it
                .next()
                .with_context(|| format!("--{key} needs a value"))?;
            map.insert(key.to_owned(), value);
        }
        Ok(Self {
            map,
            used: Default::default(),
        })
    }

    /// `--key`, or `default` when absent.
    pub(crate) fn get<T: FromStr>(&self, key: &str, default: &str) -> anyhow::Result<T>
    where
        T::Err: std::fmt::Display,
    {
        self.used.borrow_mut().push(key.to_owned());
        let raw = self.map.get(key).map_or(default, String::as_str);
        raw.parse::<T>()
            .map_err(|e| anyhow::anyhow!("--{key} {raw:?}: {e}"))
    }

    /// `--key` when present.
    pub(crate) fn opt(&self, key: &str) -> Option<String> {
        self.used.borrow_mut().push(key.to_owned());
        self.map.get(key).cloned()
    }

    /// Fails on keys nobody asked for.
    pub(crate) fn finish(&self) -> anyhow::Result<()> {
        let used = self.used.borrow();
        if let Some(k) = self.map.keys().find(|k| !used.contains(k)) {
            anyhow::bail!("unknown argument --{k}");
        }
        Ok(())
    }
}

/// Appends `line` to the CSV at `path`, writing `header` first when the file is new or empty.
pub(crate) fn append_csv(path: &str, header: &str, line: &str) -> anyhow::Result<()> {
    let fresh = std::fs::metadata(path).map_or(true, |m| m.len() == 0);
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open {path}"))?;
    if fresh {
        writeln!(f, "{header}")?;
    }
    writeln!(f, "{line}")?;
    Ok(())
}
