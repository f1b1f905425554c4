//! `cargo xtask bench [--quick] [NAME...]`: criterion benches and runner binaries of the
//! `bench` crate.
//!
//! `--quick` is the smoke run CI does: each criterion bench function runs once (criterion's
//! test mode, under `cargo test`), each runner with its own `--quick` (smallest size, a few
//! sessions and messages, its peer included). Nothing is timed against a threshold; the run
//! fails only when a bench or runner fails. It builds in the dev profile: a smoke run checks code paths, not speed,
//! and CI's test step has built the dependencies in that profile already, where a release
//! build would add minutes and gigabytes on a fresh CI machine.
//!
//! `--profile` runs the named runners' gateway processes under perf and draws flame graphs
//! ([`crate::profile`]); the quick run of every bench profiles [`CI_PROFILED_RUNNER`] that way,
//! so CI shows the pipeline working.

use crate::deps;
use crate::profile;
use crate::util::{cargo, run, target_dir, workspace_root};
use anyhow::{bail, Context, Result};

/// Benches that need something on the machine besides the workspace, e.g. a peer MTA or POP3
/// server to measure against. A bench not listed needs nothing; add one line per such bench:
/// `("smtp", &["postfix"]),`
const BENCH_PACKAGES: &[(&str, &[&str])] = &[];

/// Benches that are runner binaries of the bench crate rather than criterion targets: they
/// start the gateway and a peer server (Postfix, Dovecot) and print a side-by-side report.
/// The runner installs its peer itself (it needs debconf answers apt alone cannot give).
/// Every runner takes `--quick` and writes `<name>.md` and `<name>.json` (schema in
/// `bench/src/results.rs`) into `<target>/bench-reports/`.
const RUNNERS: &[(&str, &str)] = &[
    ("smtp", "smtp_bench"),
    ("pop3", "pop3_bench"),
    ("proxy", "proxy_bench"),
    ("tls", "tls_bench"),
    ("mem", "mem_bench"),
    ("budget", "budget_bench"),
];

/// The runner the quick run of every bench (CI's bench step) profiles, and a function its
/// flame graph must name: the profile pipeline checked end to end at no extra bench time.
const CI_PROFILED_RUNNER: (&str, &str) = ("smtp", "gateway::smtp");

/// What to run and how.
pub struct Options<'a> {
    /// The smoke run.
    pub quick: bool,
    /// `--store postgres`: the smtp runner compares the store backends.
    pub store: Option<&'a str>,
    /// `--profile`: the gateway processes of the named runners run under perf.
    pub profile: bool,
}

/// Runs the named benches (criterion targets or runners), or every one when `names` is
/// empty.
pub fn run_benches(names: &[String], opts: &Options) -> Result<()> {
    let Options {
        quick,
        store,
        profile,
    } = *opts;
    let (runners, criterion): (Vec<String>, Vec<String>) = names
        .iter()
        .cloned()
        .partition(|n| RUNNERS.iter().any(|(name, _)| name == n));
    if profile && (names.is_empty() || !criterion.is_empty()) {
        bail!(
            "bench --profile: name the runners to profile ({}); criterion benches run in one \
             process with no gateway child to profile",
            RUNNERS
                .iter()
                .map(|(name, _)| *name)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if !criterion.is_empty() || runners.is_empty() {
        run_criterion(&criterion, quick)?;
    }
    let all_runners: Vec<String> = if names.is_empty() {
        RUNNERS.iter().map(|(n, _)| n.to_string()).collect()
    } else {
        runners
    };
    for name in all_runners {
        let (_, binary) = RUNNERS
            .iter()
            .find(|(n, _)| *n == name)
            .expect("partitioned above");
        let mut cmd = cargo();
        cmd.args(["run", "--package", "bench", "--bin", binary]);
        if !quick {
            cmd.arg("--release");
        }
        cmd.arg("--");
        if quick {
            cmd.arg("--quick");
        }
        if let Some(store) = store {
            cmd.args(["--store", store]);
        }
        let ci_profiled = quick && names.is_empty() && name == CI_PROFILED_RUNNER.0;
        if !(profile || ci_profiled) {
            run(&mut cmd)?;
            continue;
        }
        // The runners write their reports there (bench::util::prepare_run).
        let reports = target_dir().join("bench-reports");
        let session = profile::Session::prepare(&reports, &name)?;
        session.wrap(&mut cmd);
        run(&mut cmd)?;
        let profiles = session.finish()?;
        let section = profile::markdown(&name, &profiles);
        println!("{section}");
        let report = reports.join(format!("{}.md", report_name(&name, store)));
        crate::util::append(&report, &section)?;
        eprintln!("profile: top functions added to {}", report.display());
        if ci_profiled {
            let (_, function) = CI_PROFILED_RUNNER;
            if !profile::names_function(&profiles, function)? {
                bail!(
                    "the {name} flame graphs name no `{function}` function: perf recorded \
                     no usable call stacks of the gateway"
                );
            }
        }
    }
    Ok(())
}

/// The name of a runner's report (`bench::util::prepare_run`): the smtp runner comparing
/// store backends writes `smtp-store.md`.
fn report_name(runner: &str, store: Option<&str>) -> String {
    match store {
        Some(_) => format!("{runner}-store"),
        None => runner.to_owned(),
    }
}

/// Runs criterion bench targets, or every one when `names` is empty; `quick`: each bench
/// function once, untimed.
fn run_criterion(names: &[String], quick: bool) -> Result<()> {
    // Targets are always named: `--benches` would also run the lib's libtest harness, which
    // rejects the criterion-only `--noplot` below.
    let names = if names.is_empty() {
        let manifest = workspace_root().join("bench/Cargo.toml");
        let text = std::fs::read_to_string(&manifest)
            .with_context(|| format!("reading {}", manifest.display()))?;
        crate::util::declared_targets(&text, "[[bench]]")
    } else {
        names.to_vec()
    };
    if names.is_empty() {
        bail!("bench/Cargo.toml declares no [[bench]] targets yet");
    }
    deps::ensure_packages(&packages_for(&names))?;

    let mut cmd = cargo();
    // Under `cargo test` criterion runs each bench function once, untimed.
    cmd.args([if quick { "test" } else { "bench" }, "--package", "bench"]);
    for name in &names {
        cmd.args(["--bench", name]);
    }
    if !quick {
        // Plots cost time and nobody looks at them on CI or over ssh; the numbers are printed.
        cmd.args(["--", "--noplot"]);
    }
    run(&mut cmd)
}

/// The Debian packages the selected benches need.
fn packages_for(names: &[String]) -> Vec<&'static str> {
    let mut packages = Vec::new();
    for (bench, needs) in BENCH_PACKAGES {
        if names.iter().any(|n| n == bench) {
            for p in needs.iter() {
                if !packages.contains(p) {
                    packages.push(*p);
                }
            }
        }
    }
    packages
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlisted_benches_need_nothing() {
        assert!(packages_for(&["crypto".to_string()]).is_empty());
    }
}
