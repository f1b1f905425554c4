//! `cargo xtask ci`: everything CI checks, in order, stopping at the first failing step.

use crate::deps;
use crate::util::{cargo, display, run};
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

pub struct Options {
    /// Skip installing Debian packages (developers without root who have them already).
    pub skip_deps: bool,
}

/// A CI step; the test step records its counts in the `Tally` for the closing summary.
type Step = fn(&mut Tally) -> Result<()>;

pub fn run_ci(opts: &Options) -> Result<()> {
    // CI starts from an empty target directory, where incremental caches only cost disk
    // (they were 14 of 50 GB, and a CI machine ran out of space in the test step).
    if std::env::var_os("CARGO_INCREMENTAL").is_none() {
        std::env::set_var("CARGO_INCREMENTAL", "0");
    }
    let mut steps: Vec<(&str, Step)> = Vec::new();
    if !opts.skip_deps {
        steps.push(("deps", |_| {
            deps::ensure()?;
            deps::ensure_python_tools()?;
            deps::ensure_node_tools()
        }));
    }
    steps.push(("fmt", |_| {
        run(cargo().args(["fmt", "--all", "--", "--check"]))
    }));
    // Licences, duplicate versions, banned crates and sources (deny.toml). The advisory
    // check needs the advisory database from GitHub, so it is not part of CI.
    steps.push(("deny", |_| {
        run(deps::cargo_deny()?
            .current_dir(crate::util::workspace_root())
            .args(["check", "licenses", "bans", "sources"]))
    }));
    steps.push(("clippy", |_| {
        run(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))
    }));
    // Broken intra-doc links rot silently otherwise; the crate docs are the module map.
    steps.push(("doc", |_| {
        run(cargo()
            .args(["doc", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings"))
    }));
    // The cargo-fuzz targets (fuzz/, a workspace of its own) still compile against the
    // gateway; running them is `cargo xtask fuzz`, not CI.
    steps.push(("fuzz", |_| crate::fuzz::ci_check()));
    steps.push(("test", test));
    // The service's behaviour tests (every mailbox rule, the one-copy rule, reopening)
    // again, on a throwaway PostgreSQL instead of redb: each test gets a schema of its own.
    steps.push(("test-postgres", test_postgres));
    // The Debian package as an administrator installs it: dpkg -i, the binary runs, the
    // shipped configuration checks, the unit verifies (systemd-analyze), then it is purged.
    // Built from the dev profile (the tests built its dependencies already); `cargo xtask
    // dist` alone builds the release package to ship.
    steps.push(("package", |_| {
        crate::dist::run_dist(&crate::dist::Options {
            profile: "dev".to_owned(),
            check: true,
        })
    }));
    // The full requirement matrix (interop clients and testssl.sh included); fails on a
    // failing MUST or a stale conformance/REPORT.md. Packages were handled by `deps`.
    steps.push(("conformance", |_| {
        crate::conformance::run_conformance(&crate::conformance::Options {
            check: true,
            skip_deps: true,
        })
    }));
    // Every benchmark once at a small size, peers included (`cargo xtask bench --quick`): a
    // smoke test with no timing assertion, failing only when a bench or runner fails (an
    // error, a lost message, a peer that does not start). Postfix and Dovecot came with `deps`.
    // The SMTP intake on PostgreSQL (one and two nodes) beside redb, in the same way.
    // The smtp runner's gateway runs under perf there, and its flame graph must name a
    // gateway function (the profile pipeline, `bench --profile`); perf came with `deps`.
    steps.push(("bench", |_| {
        let quick = |store| crate::bench::Options {
            quick: true,
            store,
            profile: false,
        };
        crate::bench::run_benches(&[], &quick(None))?;
        crate::bench::run_benches(&["smtp".to_owned()], &quick(Some("postgres")))
    }));

    let mut tally = Tally::default();
    let mut timings: Vec<Timing> = Vec::new();
    let started = Instant::now();
    for (name, step) in steps {
        eprintln!("\n==> ci: {name}");
        let t = Instant::now();
        let result = step(&mut tally);
        timings.push(Timing {
            step: name,
            took: t.elapsed(),
            disk: disk_use(),
        });
        if let Err(err) = result {
            summary(&timings, started.elapsed(), &tally);
            return Err(err.context(format!("ci step `{name}` failed")));
        }
    }
    summary(&timings, started.elapsed(), &tally);
    Ok(())
}

/// Test counts summed over every test binary and doctest run.
#[derive(Default, Debug, PartialEq)]
struct Tally {
    ran: bool,
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Tally {
    /// Adds one libtest closing line, e.g.
    /// "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s".
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(label), Some(count)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = count.parse::<u64>() else {
                continue;
            };
            match label {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
        self.ran = true;
    }
}

/// `cargo test` for the whole workspace, doctests included. Its stdout is echoed line by line
/// and the per-binary results are summed, because the last of cargo's many "test result" lines
/// is often a crate with zero doctests, which would read as "ran no tests".
fn test(tally: &mut Tally) -> Result<()> {
    let mut cmd = cargo();
    // --no-fail-fast: one CI run should report every failing test binary, not just the first.
    cmd.args(["test", "--workspace", "--no-fail-fast"])
        // Tests may behave as on CI (skip nothing, no interactive prompts); insta must never
        // write or accept snapshots here, so a mismatch fails instead.
        .env("CI", "true")
        .env("INSTA_UPDATE", "no")
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::piped());
    // The API fuzzing test runs schemathesis, which pip may have put off PATH.
    if let Some(st) = deps::find_schemathesis() {
        cmd.env("GATEWAY_SCHEMATHESIS", st);
    }
    // The console browser tests drive chromium through chromedriver and inject axe-core; they
    // fail (naming the install command) when these are missing, so CI always runs them.
    if let Some(driver) = deps::find_chromedriver() {
        cmd.env("GATEWAY_CHROMEDRIVER", driver);
    }
    if let Some(chromium) = deps::find_chromium() {
        cmd.env("GATEWAY_CHROMIUM", chromium);
    }
    if let Some(axe) = deps::find_axe_js() {
        cmd.env("GATEWAY_AXE_JS", axe);
    }
    run_tests(cmd, tally)
}

/// The gateway's library tests with `GATEWAY_TEST_POSTGRES_URL` naming a throwaway
/// PostgreSQL (postgres-test-util's `with_postgres` runs them beside one and removes it).
fn test_postgres(tally: &mut Tally) -> Result<()> {
    let cargo_program = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--quiet",
        "--package",
        "postgres-test-util",
        "--example",
        "with_postgres",
        "--",
        "GATEWAY_TEST_POSTGRES_URL",
        &cargo_program,
        "test",
        "--package",
        "gateway",
        "--lib",
        "--no-fail-fast",
    ])
    .env("CI", "true")
    .env("INSTA_UPDATE", "no")
    .env("RUST_BACKTRACE", "1")
    .stdout(Stdio::piped());
    run_tests(cmd, tally)
}

/// Runs a test command, echoing its stdout and summing its result lines into `tally`.
fn run_tests(mut cmd: std::process::Command, tally: &mut Tally) -> Result<()> {
    let shown = display(&cmd);
    eprintln!("$ {shown}");
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start `{shown}`"))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading test output")?;
        println!("{line}");
        tally.add_line(&line);
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    if tally.passed == 0 {
        bail!("`{shown}` succeeded but no test passed: is the test suite wired up?");
    }
    Ok(())
}

/// One finished step: how long it took and the disk left after it.
struct Timing {
    step: &'static str,
    took: Duration,
    disk: Option<DiskUse>,
}

/// The target directory's size and the free space on its file system, in MiB.
struct DiskUse {
    target_mib: u64,
    free_mib: u64,
}

/// Measured with `du` and `df` so a run that fills the disk shows which step did it.
/// `None` when either cannot tell (no target directory yet, tools missing).
fn disk_use() -> Option<DiskUse> {
    let target = crate::util::target_dir();
    let kib = |cmd: &mut std::process::Command, column: usize| -> Option<u64> {
        let out = cmd.output().ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        let line = text.lines().last()?;
        line.split_whitespace().nth(column)?.parse().ok()
    };
    let used = kib(std::process::Command::new("du").arg("-sk").arg(&target), 0)?;
    let free = kib(std::process::Command::new("df").arg("-Pk").arg(&target), 3)?;
    Some(DiskUse {
        target_mib: used / 1024,
        free_mib: free / 1024,
    })
}

fn summary(timings: &[Timing], total: Duration, tally: &Tally) {
    println!("\n==> ci: timings");
    for t in timings {
        let disk = match &t.disk {
            Some(d) => format!(
                "   target {:>6} MiB, {:>7} MiB free",
                d.target_mib, d.free_mib
            ),
            None => String::new(),
        };
        println!("  {:<11} {:>7.1}s{disk}", t.step, t.took.as_secs_f64());
    }
    println!("  {:<11} {:>7.1}s", "total", total.as_secs_f64());
    // Last, in the plain "N passed, N failed, N skipped" form CI reads as the run's verdict.
    if tally.ran {
        println!(
            "tests: {} passed, {} failed, {} skipped",
            tally.passed, tally.failed, tally.ignored
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_libtest_result_lines() {
        let mut t = Tally::default();
        t.add_line("running 3 tests");
        t.add_line("test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 2 filtered out; finished in 0.01s");
        t.add_line("test result: FAILED. 4 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.50s");
        t.add_line("test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s");
        assert_eq!(
            t,
            Tally {
                ran: true,
                passed: 7,
                failed: 2,
                ignored: 1
            }
        );
    }

    #[test]
    fn ignores_other_lines() {
        let mut t = Tally::default();
        t.add_line("test store::tests::roundtrip ... ok");
        t.add_line("   Doc-tests gateway");
        assert_eq!(t, Tally::default());
    }
}
