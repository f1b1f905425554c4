//! `cargo xtask bench compare A B`: two runs of the benchmark runners side by side.
//!
//! A and B are results files (`<target>/bench-reports/<name>.json`, written by the runners;
//! schema in `bench/src/results.rs`) or directories of them. Cells are matched by id; the
//! Markdown table gives both values, B/A, and whether B is better or worse given the cell's
//! `higher_is_better`. Cells only one side has are listed after it.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Differences smaller than this fraction are shown as "≈": runs on a shared machine vary
/// more than that, so calling them better or worse would be noise.
const NOISE: f64 = 0.05;

/// The schema version this reader understands (`bench::results::VERSION`).
const VERSION: u64 = 1;

/// One measured figure of a run.
#[derive(Debug, Clone, PartialEq)]
struct Cell {
    metric: String,
    value: f64,
    higher_is_better: bool,
}

/// The cells of one side (one file, or every file of a directory), by id.
#[derive(Debug, Default)]
struct Side {
    /// Where the cells came from and at which commit, for the heading.
    sources: Vec<String>,
    quick: bool,
    cells: BTreeMap<String, Cell>,
}

pub fn run_compare(a: &Path, b: &Path) -> Result<()> {
    let (a, b) = (load(a)?, load(b)?);
    print!("{}", render(&a, &b));
    Ok(())
}

/// Reads a results file, or every `*.json` file of a directory.
fn load(path: &Path) -> Result<Side> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("reading {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        if files.is_empty() {
            bail!("{} holds no .json results", path.display());
        }
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut side = Side::default();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        add_file(&mut side, &file.display().to_string(), &text)
            .with_context(|| format!("in {}", file.display()))?;
    }
    Ok(side)
}

/// Adds the cells of one results file (JSON text) to `side`.
fn add_file(side: &mut Side, name: &str, text: &str) -> Result<()> {
    let json: Value = serde_json::from_str(text).context("not JSON")?;
    let version = json["version"].as_u64().context("no `version`")?;
    if version != VERSION {
        bail!("results version {version}; this compare reads version {VERSION}");
    }
    let git = json["git"].as_str().unwrap_or("unknown commit");
    let quick = json["quick"].as_bool().unwrap_or(false);
    side.quick |= quick;
    side.sources.push(format!(
        "{name} ({git}{})",
        if quick { ", quick run" } else { "" }
    ));
    for cell in json["cells"].as_array().context("no `cells` array")? {
        let id = cell["id"].as_str().context("a cell without `id`")?;
        let parsed = Cell {
            metric: cell["metric"].as_str().unwrap_or("").to_owned(),
            value: cell["value"]
                .as_f64()
                .with_context(|| format!("cell `{id}` has no numeric `value`"))?,
            higher_is_better: cell["higher_is_better"]
                .as_bool()
                .with_context(|| format!("cell `{id}` has no `higher_is_better`"))?,
        };
        if side.cells.insert(id.to_owned(), parsed).is_some() {
            bail!("cell `{id}` appears twice");
        }
    }
    Ok(())
}

/// "better", "worse" or "≈" for B against A, and B/A when A is not zero.
fn verdict(a: &Cell, b: &Cell) -> (Option<f64>, &'static str) {
    let ratio = (a.value != 0.0).then(|| b.value / a.value);
    let change = match ratio {
        Some(r) => r - 1.0,
        None if b.value == 0.0 => 0.0,
        // From zero to anything: as large a change as there is.
        None => b.value.signum() * f64::INFINITY,
    };
    let word = if change.abs() < NOISE {
        "≈"
    } else if (change > 0.0) == a.higher_is_better {
        "better"
    } else {
        "worse"
    };
    (ratio, word)
}

/// A figure with as many decimals as its size needs.
fn number(v: f64) -> String {
    match v.abs() {
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 1.0 => format!("{v:.2}"),
        _ => format!("{v:.3}"),
    }
}

fn render(a: &Side, b: &Side) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Benchmark comparison\n");
    let _ = writeln!(s, "- A: {}", a.sources.join(", "));
    let _ = writeln!(s, "- B: {}", b.sources.join(", "));
    if a.quick || b.quick {
        let _ = writeln!(
            s,
            "\nA quick (smoke) run is involved: its sizes and counts are tiny, its figures \
             are not comparable to a full run's."
        );
    }
    let _ = writeln!(
        s,
        "\nB/A and whether B is better given each metric's direction; differences under \
         {:.0} % are shown as ≈.\n",
        NOISE * 100.0
    );
    let _ = writeln!(s, "| id | metric | A | B | B/A | B is |");
    let _ = writeln!(s, "|---|---|---:|---:|---:|---|");
    for (id, ca) in &a.cells {
        let Some(cb) = b.cells.get(id) else { continue };
        let (ratio, word) = verdict(ca, cb);
        let _ = writeln!(
            s,
            "| {id} | {} | {} | {} | {} | {word} |",
            ca.metric,
            number(ca.value),
            number(cb.value),
            ratio.map_or_else(|| "—".to_owned(), |r| format!("{r:.2}")),
        );
    }
    for (label, this, other) in [("A", a, b), ("B", b, a)] {
        let only: Vec<(&String, &Cell)> = this
            .cells
            .iter()
            .filter(|(id, _)| !other.cells.contains_key(*id))
            .collect();
        if only.is_empty() {
            continue;
        }
        let _ = writeln!(s, "\n## Only in {label}\n");
        let _ = writeln!(s, "| id | metric | {label} |\n|---|---|---:|");
        for (id, c) in only {
            let _ = writeln!(s, "| {id} | {} | {} |", c.metric, number(c.value));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = r#"{
      "bench": "smtp", "version": 1, "git": "aaa", "quick": false,
      "cells": [
        {"id": "smtp/10 KiB/1 sessions/msg/s", "metric": "msg/s", "value": 1000.0,
         "higher_is_better": true, "peer": {"name": "Postfix accepted", "value": 500.0}},
        {"id": "smtp/10 KiB/1 sessions/p99 ms", "metric": "p99 ms", "value": 2.0,
         "higher_is_better": false},
        {"id": "smtp/10 KiB/1 sessions/CPU s/1000 msg", "metric": "CPU s/1000 msg",
         "value": 0.0, "higher_is_better": false},
        {"id": "smtp/zero/msg/s", "metric": "msg/s", "value": 0.0, "higher_is_better": true},
        {"id": "smtp/gone/msg/s", "metric": "msg/s", "value": 7.0, "higher_is_better": true}
      ]
    }"#;

    const B: &str = r#"{
      "bench": "smtp", "version": 1, "git": null, "quick": true,
      "cells": [
        {"id": "smtp/10 KiB/1 sessions/msg/s", "metric": "msg/s", "value": 1500.0,
         "higher_is_better": true},
        {"id": "smtp/10 KiB/1 sessions/p99 ms", "metric": "p99 ms", "value": 2.02,
         "higher_is_better": false},
        {"id": "smtp/10 KiB/1 sessions/CPU s/1000 msg", "metric": "CPU s/1000 msg",
         "value": 0.5, "higher_is_better": false},
        {"id": "smtp/zero/msg/s", "metric": "msg/s", "value": 0.0, "higher_is_better": true},
        {"id": "smtp/new/msg/s", "metric": "msg/s", "value": 3.0, "higher_is_better": true}
      ]
    }"#;

    fn side(name: &str, text: &str) -> Side {
        let mut side = Side::default();
        add_file(&mut side, name, text).unwrap();
        side
    }

    fn row<'a>(table: &'a str, id: &str) -> Vec<&'a str> {
        let line = table
            .lines()
            .find(|l| l.starts_with(&format!("| {id} |")))
            .unwrap_or_else(|| panic!("no row for {id} in\n{table}"));
        line.trim_matches('|').split(" | ").map(str::trim).collect()
    }

    #[test]
    fn matches_cells_by_id_and_judges_by_direction() {
        let out = render(&side("a.json", A), &side("b.json", B));
        assert_eq!(
            row(&out, "smtp/10 KiB/1 sessions/msg/s"),
            [
                "smtp/10 KiB/1 sessions/msg/s",
                "msg/s",
                "1000",
                "1500",
                "1.50",
                "better"
            ]
        );
        // Lower is better, and 1 % is within the noise.
        assert_eq!(
            row(&out, "smtp/10 KiB/1 sessions/p99 ms")[4..],
            ["1.01", "≈"]
        );
        // From zero: no ratio, but CPU time appearing is worse; zero to zero is no change.
        assert_eq!(
            row(&out, "smtp/10 KiB/1 sessions/CPU s/1000 msg")[4..],
            ["—", "worse"]
        );
        assert_eq!(row(&out, "smtp/zero/msg/s")[4..], ["—", "≈"]);
        assert!(out.contains("- A: a.json (aaa)"));
        assert!(out.contains("- B: b.json (unknown commit, quick run)"));
        assert!(out.contains("A quick (smoke) run is involved"));
    }

    #[test]
    fn lists_cells_only_one_side_has() {
        let out = render(&side("a.json", A), &side("b.json", B));
        let only_a = out
            .split("## Only in A")
            .nth(1)
            .expect("an Only in A section");
        let (only_a, only_b) = only_a.split_once("## Only in B").expect("and an Only in B");
        assert_eq!(
            row(only_a, "smtp/gone/msg/s"),
            ["smtp/gone/msg/s", "msg/s", "7.00"]
        );
        assert_eq!(
            row(only_b, "smtp/new/msg/s"),
            ["smtp/new/msg/s", "msg/s", "3.00"]
        );
        assert!(!only_a.contains("smtp/new/"));
        // Matched cells are not repeated there.
        assert!(!only_b.contains("sessions"));
    }

    #[test]
    fn worse_when_a_rate_drops() {
        let fewer = A.replace("\"value\": 1000.0", "\"value\": 3000.0");
        let out = render(&side("a.json", &fewer), &side("b.json", B));
        assert_eq!(
            row(&out, "smtp/10 KiB/1 sessions/msg/s")[4..],
            ["0.50", "worse"]
        );
    }

    #[test]
    fn rejects_bad_files() {
        let mut s = Side::default();
        assert!(add_file(&mut s, "x", "not json").is_err());
        assert!(add_file(&mut s, "x", &A.replace("\"version\": 1", "\"version\": 2")).is_err());
        assert!(add_file(
            &mut s,
            "x",
            &A.replace("\"value\": 2.0", "\"value\": \"2\"")
        )
        .is_err());
        // The same id twice (two files of a directory holding the same bench).
        let mut s = side("a.json", A);
        assert!(add_file(&mut s, "again.json", A).is_err());
    }

    #[test]
    fn reads_a_directory_of_results() {
        let dir = std::env::temp_dir().join(format!("xtask-compare-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("smtp.json"), A).unwrap();
        std::fs::write(dir.join("pop3.json"), A.replace("smtp/", "pop3/")).unwrap();
        std::fs::write(dir.join("smtp.md"), "# not results").unwrap();
        let loaded = load(&dir);
        let file = load(&dir.join("smtp.json"));
        std::fs::remove_dir_all(&dir).unwrap();
        let loaded = loaded.unwrap();
        assert_eq!(loaded.cells.len(), 10);
        assert_eq!(loaded.sources.len(), 2);
        assert_eq!(file.unwrap().cells.len(), 5);
    }
}
