//! Machine-readable results of a runner, written as `<name>.json` beside its Markdown report
//! so that two runs can be compared (`cargo xtask bench compare A B`).
//!
//! Schema (version 1):
//!
//! ```json
//! {
//!   "bench": "smtp",
//!   "version": 1,
//!   "git": "3f2a…",
//!   "quick": false,
//!   "cells": [
//!     { "id": "smtp/10 KiB/20 sessions/smtp_load, plain/msg/s", "metric": "msg/s",
//!       "value": 4047.0, "higher_is_better": true,
//!       "peer": { "name": "Postfix accepted", "value": 797.0 } }
//!   ]
//! }
//! ```
//!
//! - `git`: the commit the runner was built from (`git rev-parse HEAD`, with `-dirty` when
//!   the work tree had changes), `null` outside a repository.
//! - `quick`: a smoke run (`--quick`): tiny sizes and counts, its figures mean little.
//! - `id`: what was measured, from the run's parameters and the metric, `/`-separated; the
//!   same cell has the same id in every run, which is how `compare` matches cells. Ids are
//!   unique within a file.
//! - `peer`: the same figure for the baseline (Postfix, Dovecot, a direct connection) in the
//!   same run, when there is one.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// The schema version written into every file; bump it when a field changes meaning.
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Results {
    pub bench: String,
    pub version: u32,
    pub git: Option<String>,
    pub quick: bool,
    pub cells: Vec<Cell>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    pub id: String,
    pub metric: String,
    pub value: f64,
    pub higher_is_better: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<Peer>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Peer {
    pub name: String,
    pub value: f64,
}

/// Whether a bigger figure is better (a rate) or worse (a latency, memory, CPU time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

impl Results {
    /// An empty result set for `bench`, stamped with the current commit.
    pub fn new(bench: &str, quick: bool) -> Self {
        Self {
            bench: bench.to_owned(),
            version: VERSION,
            git: git_revision(),
            quick,
            cells: Vec::new(),
        }
    }

    /// Adds a cell whose id is `bench/<parts...>/<metric>`.
    pub fn add(
        &mut self,
        parts: &[&str],
        metric: &str,
        better: Better,
        value: f64,
        peer: Option<(&str, f64)>,
    ) {
        self.cells.push(Cell {
            id: cell_id(&self.bench, parts, metric),
            metric: metric.to_owned(),
            value,
            higher_is_better: better == Better::Higher,
            peer: peer.map(|(name, value)| Peer {
                name: name.to_owned(),
                value,
            }),
        });
    }

    /// Pretty JSON; fails on a duplicate id (two cells `compare` could not tell apart) or a
    /// value JSON cannot hold (NaN, infinity: a rate over a zero duration).
    pub fn to_json(&self) -> anyhow::Result<String> {
        let mut seen = std::collections::BTreeSet::new();
        for cell in &self.cells {
            if !seen.insert(cell.id.as_str()) {
                bail!("two result cells have the id `{}`", cell.id);
            }
            let peer = cell.peer.as_ref().map_or(0.0, |p| p.value);
            if !cell.value.is_finite() || !peer.is_finite() {
                bail!("result cell `{}` is not a finite number", cell.id);
            }
        }
        Ok(serde_json::to_string_pretty(self)? + "\n")
    }

    /// Writes the JSON beside the Markdown report `report` (same name, `.json`).
    pub fn write_beside(&self, report: &Path) -> anyhow::Result<PathBuf> {
        let path = report.with_extension("json");
        crate::util::write_report(&path, &self.to_json()?)?;
        Ok(path)
    }
}

/// `bench/part/.../metric`.
pub fn cell_id(bench: &str, parts: &[&str], metric: &str) -> String {
    let mut id = bench.to_owned();
    for part in parts.iter().chain([&metric]) {
        id.push('/');
        id.push_str(part);
    }
    id
}

/// The commit of the source tree the runner was built from, `-dirty` when it had changes.
fn git_revision() -> Option<String> {
    let dir = env!("CARGO_MANIFEST_DIR");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
    };
    let rev = git(&["rev-parse", "HEAD"])?.trim().to_owned();
    let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
        .is_some_and(|s| !s.trim().is_empty());
    Some(if dirty { format!("{rev}-dirty") } else { rev })
}

/// Reads a results file (for tests and tools).
pub fn read(path: &Path) -> anyhow::Result<Results> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Results {
        let mut r = Results {
            bench: "smtp".into(),
            version: VERSION,
            git: None,
            quick: true,
            cells: Vec::new(),
        };
        r.add(
            &["10 KiB", "20 sessions", "smtp_load, plain"],
            "msg/s",
            Better::Higher,
            4047.0,
            Some(("Postfix accepted", 797.0)),
        );
        r.add(
            &["10 KiB", "20 sessions", "smtp_load, plain"],
            "p99 ms",
            Better::Lower,
            12.5,
            None,
        );
        r
    }

    #[test]
    fn round_trips_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let report = dir.path().join("smtp.md");
        let r = sample();
        let path = r.write_beside(&report).unwrap();
        assert_eq!(path, dir.path().join("smtp.json"));
        assert_eq!(read(&path).unwrap(), r);
    }

    #[test]
    fn ids_come_from_the_parameters_and_the_metric() {
        let r = sample();
        assert_eq!(
            r.cells[0].id,
            "smtp/10 KiB/20 sessions/smtp_load, plain/msg/s"
        );
        assert_eq!(
            r.cells[1].id,
            "smtp/10 KiB/20 sessions/smtp_load, plain/p99 ms"
        );
        // A second run with other figures names its cells the same.
        let mut again = sample();
        again.cells[0].value = 1.0;
        let ids = |r: &Results| r.cells.iter().map(|c| c.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&again), ids(&r));
    }

    #[test]
    fn the_json_has_the_documented_fields() {
        let json: serde_json::Value = serde_json::from_str(&sample().to_json().unwrap()).unwrap();
        assert_eq!(json["bench"], "smtp");
        assert_eq!(json["version"], 1);
        assert_eq!(json["git"], serde_json::Value::Null);
        assert_eq!(json["quick"], true);
        let cell = &json["cells"][0];
        assert_eq!(cell["metric"], "msg/s");
        assert_eq!(cell["value"], 4047.0);
        assert_eq!(cell["higher_is_better"], true);
        assert_eq!(cell["peer"]["name"], "Postfix accepted");
        assert_eq!(cell["peer"]["value"], 797.0);
        assert!(json["cells"][1].get("peer").is_none());
        assert_eq!(json["cells"][1]["higher_is_better"], false);
    }

    #[test]
    fn rejects_duplicate_ids_and_non_finite_values() {
        let mut r = sample();
        r.add(
            &["10 KiB", "20 sessions", "smtp_load, plain"],
            "msg/s",
            Better::Higher,
            1.0,
            None,
        );
        assert!(r.to_json().is_err());
        let mut r = sample();
        r.cells[0].value = f64::INFINITY;
        assert!(r.to_json().is_err());
        let mut r = sample();
        r.cells[0].peer.as_mut().unwrap().value = f64::NAN;
        assert!(r.to_json().is_err());
    }
}
