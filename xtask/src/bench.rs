//! `cargo xtask bench [NAME...]`: criterion benches of the `bench` crate.

use crate::deps;
use crate::util::{cargo, run, workspace_root};
use anyhow::{bail, Context, Result};

/// Benches that need something on the machine besides the workspace, e.g. a peer MTA or POP3
/// server to measure against. A bench not listed needs nothing; add one line per such bench:
/// `("smtp", &["postfix"]),`
const BENCH_PACKAGES: &[(&str, &[&str])] = &[];

/// Benches that are runner binaries of the bench crate rather than criterion targets: they
/// start the gateway and a peer server (Postfix, Dovecot) and print a side-by-side report.
/// The runner installs its peer itself (it needs debconf answers apt alone cannot give).
const RUNNERS: &[(&str, &str)] = &[
    ("smtp", "smtp_bench"),
    ("pop3", "pop3_bench"),
    ("proxy", "proxy_bench"),
    ("tls", "tls_bench"),
];

/// Runs the named benches (criterion targets or runners), or every one when `names` is
/// empty.
pub fn run_benches(names: &[String]) -> Result<()> {
    let (runners, criterion): (Vec<String>, Vec<String>) = names
        .iter()
        .cloned()
        .partition(|n| RUNNERS.iter().any(|(name, _)| name == n));
    if !criterion.is_empty() || runners.is_empty() {
        run_criterion(&criterion)?;
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
        cmd.args(["run", "--release", "--package", "bench", "--bin", binary]);
        run(&mut cmd)?;
    }
    Ok(())
}

/// Runs criterion bench targets, or every one when `names` is empty.
fn run_criterion(names: &[String]) -> Result<()> {
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
    cmd.args(["bench", "--package", "bench"]);
    for name in &names {
        cmd.args(["--bench", name]);
    }
    // Plots cost time and nobody looks at them on CI or over ssh; the numbers are printed.
    cmd.args(["--", "--noplot"]);
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
