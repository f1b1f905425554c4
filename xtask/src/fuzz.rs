//! `cargo xtask fuzz [--time SECONDS] [TARGET...]`: runs the cargo-fuzz targets of `fuzz/`
//! one after the other, each for a while on its corpus, minimises the grown corpus and logs
//! every run in `fuzz/RUNS.md`, so the fuzzing time of each target adds up across runs.

use crate::deps;
use crate::util::{cargo, display, run, workspace_root};
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime};

#[derive(Debug, PartialEq)]
pub struct Options {
    /// Seconds per target.
    pub seconds: u64,
    /// Targets to run; all when empty.
    pub targets: Vec<String>,
}

/// Seconds per target when `--time` is not given.
pub const DEFAULT_SECONDS: u64 = 60;

/// libFuzzer's default input limit is 4096 octets; targets whose limits lie beyond it get
/// room to reach them (an upstream reply line may be 4096 octets, a POP3 multi-line piece
/// 16 KiB).
const MAX_LEN: &[(&str, usize)] = &[("smtp_reply_reader", 10_000), ("pop3_response", 20_000)];
const DEFAULT_MAX_LEN: usize = 4096;

/// Every cargo-fuzz invocation builds the same way, so `run` and `cmin` share one build:
/// no sanitizer (the gateway forbids unsafe code, and AddressSanitizer would halve the
/// speed), optimised with debug assertions and overflow checks (cargo-fuzz's default).
const BUILD_FLAGS: &[&str] = &["--sanitizer", "none"];

/// `cargo fmt` for the fuzz crate, which `cargo fmt --all` at the root does not reach (it is
/// a workspace of its own).
pub const FMT_ARGS: &[&str] = &["fmt", "--manifest-path", "fuzz/Cargo.toml"];

/// The CI step: the fuzz crate is formatted, every target compiles and passes clippy, and
/// the shared helpers' tests pass. All on stable and without running a fuzzer (libFuzzer
/// itself needs nightly), so a target broken by a change in the gateway fails CI cheaply.
pub fn ci_check() -> Result<()> {
    run(cargo().args(FMT_ARGS).args(["--", "--check"]))?;
    // A target directory of its own inside the workspace's: the fuzz crate builds the gateway
    // and its dependencies with other features than the workspace does, so little could be
    // shared, and apart the two builds leave each other's artifacts alone.
    let target_dir = crate::util::target_dir().join("fuzz-check");
    // Not --locked: fuzz/Cargo.lock pins what it has, and a dependency the gateway gains
    // is added to it here rather than failing CI until someone updates the second lock file.
    let manifest = ["--manifest-path", "fuzz/Cargo.toml"];
    run(cargo()
        .args(["clippy"])
        .args(manifest)
        .args(["--all-targets", "--", "-D", "warnings"])
        .env("CARGO_TARGET_DIR", &target_dir))?;
    // Without the gateway (an optional dependency for this): testing the helpers then takes
    // seconds instead of a full build of every dependency.
    run(cargo()
        .args(["test", "--lib", "--no-default-features"])
        .args(manifest)
        .env("CARGO_TARGET_DIR", &target_dir))
}

/// Parses `--time N` and target names.
pub fn parse_args(args: &[String]) -> Result<Options> {
    let mut opts = Options {
        seconds: DEFAULT_SECONDS,
        targets: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--time" => {
                opts.seconds = it
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n > 0)
                    .context("fuzz: --time needs a number of seconds")?
            }
            flag if flag.starts_with('-') => bail!("fuzz: unknown flag `{flag}`"),
            name => opts.targets.push(name.to_owned()),
        }
    }
    Ok(opts)
}

/// What one target's run did.
struct Outcome {
    target: String,
    seconds: u64,
    execs: Option<u64>,
    new_entries: isize,
    corpus_after: usize,
    crash: Option<String>,
}

pub fn run_fuzz(opts: &Options) -> Result<()> {
    let root = workspace_root();
    let fuzz_dir = root.join("fuzz");
    let manifest =
        std::fs::read_to_string(fuzz_dir.join("Cargo.toml")).context("reading fuzz/Cargo.toml")?;
    let all = crate::util::declared_targets(&manifest, "[[bin]]");
    let targets = if opts.targets.is_empty() {
        all.clone()
    } else {
        opts.targets.clone()
    };
    if let Some(unknown) = targets.iter().find(|t| !all.contains(t)) {
        bail!(
            "fuzz: no target `{unknown}` in fuzz/Cargo.toml (targets: {})",
            all.join(", ")
        );
    }
    deps::ensure_nightly()?;
    let cargo_fuzz = deps::cargo_fuzz()?;

    let mut outcomes = Vec::new();
    for target in &targets {
        eprintln!("\n==> fuzz: {target} for {} s", opts.seconds);
        let outcome = run_target(&cargo_fuzz, &fuzz_dir, target, opts.seconds)?;
        append_run(&fuzz_dir.join("RUNS.md"), &outcome)?;
        outcomes.push(outcome);
    }

    let totals = totals(&std::fs::read_to_string(fuzz_dir.join("RUNS.md"))?);
    println!("\n==> fuzz: summary");
    for o in &outcomes {
        let total = totals
            .iter()
            .find(|(t, _)| *t == o.target)
            .map_or(0, |t| t.1);
        println!(
            "  {:<18} {:>6} s {:>12} runs  {:>+5} new, {:>5} in corpus  total {:>6} s  {}",
            o.target,
            o.seconds,
            o.execs.map_or("?".to_owned(), |n| n.to_string()),
            o.new_entries,
            o.corpus_after,
            total,
            o.crash
                .as_deref()
                .map_or("ok".to_owned(), |c| format!("CRASH {c}")),
        );
    }
    let crashes: Vec<&Outcome> = outcomes.iter().filter(|o| o.crash.is_some()).collect();
    if !crashes.is_empty() {
        bail!(
            "{} target(s) crashed; reproduce with `cargo +nightly fuzz run -s none <target> <artifact>`",
            crashes.len()
        );
    }
    Ok(())
}

fn run_target(cargo_fuzz: &Path, fuzz_dir: &Path, target: &str, seconds: u64) -> Result<Outcome> {
    let corpus = fuzz_dir.join("corpus").join(target);
    std::fs::create_dir_all(&corpus)?;
    let before = count_files(&corpus)?;
    let max_len = MAX_LEN
        .iter()
        .find(|(t, _)| *t == target)
        .map_or(DEFAULT_MAX_LEN, |(_, n)| *n);
    let mut libfuzzer_args = vec![
        format!("-max_total_time={seconds}"),
        format!("-max_len={max_len}"),
        // A slow input is a finding too (a decoder gone quadratic).
        "-timeout=10".to_owned(),
        "-print_final_stats=1".to_owned(),
    ];
    let dict = fuzz_dir.join("dict").join(format!("{target}.dict"));
    if dict.is_file() {
        libfuzzer_args.push(format!("-dict={}", dict.display()));
    }

    let mut cmd = cargo_fuzz_command(cargo_fuzz, fuzz_dir, "run");
    cmd.arg(target)
        .arg(&corpus)
        .arg("--")
        .args(&libfuzzer_args)
        .stderr(Stdio::piped());
    let shown = display(&cmd);
    eprintln!("$ {shown}");
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start `{shown}`"))?;
    // libFuzzer reports on stderr; echo it and pick out the numbers. Its clock starts with
    // its first `INFO:` line, after cargo's build.
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut report = Report::default();
    let mut fuzzing_since = None;
    for line in BufReader::new(stderr).lines() {
        let line = line.context("reading the fuzzer's output")?;
        eprintln!("{line}");
        if line.starts_with("INFO: ") {
            fuzzing_since.get_or_insert_with(Instant::now);
        }
        report.add_line(&line);
    }
    let status = child.wait()?;
    let Some(fuzzing_since) = fuzzing_since else {
        // Not a run: the build (or cargo-fuzz itself) failed. Nothing goes into RUNS.md.
        bail!("`{shown}` failed before fuzzing started ({status})");
    };
    let elapsed = fuzzing_since.elapsed().as_secs();
    let crash = if status.success() {
        None
    } else {
        Some(match &report.artifact {
            // Relative to the repository, as RUNS.md and the summary show it.
            Some(path) => path
                .strip_prefix(&format!("{}/", workspace_root().display()))
                .unwrap_or(path)
                .to_owned(),
            None => format!("exit {status}, no artifact written"),
        })
    };
    let grown = count_files(&corpus)?;
    if crash.is_none() {
        minimise(cargo_fuzz, fuzz_dir, target, &corpus, max_len)?;
    }
    Ok(Outcome {
        target: target.to_owned(),
        // libFuzzer's count when it finished normally; after a crash, it printed none.
        seconds: report.seconds.unwrap_or(elapsed),
        execs: report.execs,
        new_entries: grown as isize - before as isize,
        corpus_after: count_files(&corpus)?,
        crash,
    })
}

/// `cargo +nightly fuzz <subcommand>` with the shared build flags, run from `fuzz/`.
fn cargo_fuzz_command(cargo_fuzz: &Path, fuzz_dir: &Path, subcommand: &str) -> Command {
    let mut cmd = Command::new(cargo_fuzz);
    // `cargo run` gave xtask the variables cargo sets for a crate (CARGO, CARGO_PKG_NAME,
    // ...). Cargo compares build scripts' `rerun-if-env-changed` against its own
    // environment, so passing them on would rebuild ring and everything above it whenever
    // cargo-fuzz alternates between here and a shell. CARGO would also pin the toolchain.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key == "CARGO"
            || key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || matches!(
                &*key,
                "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE"
            )
        {
            cmd.env_remove(&*key);
        }
    }
    // cargo-fuzz runs `cargo build`; the toolchain comes from RUSTUP_TOOLCHAIN.
    cmd.current_dir(fuzz_dir)
        .env("RUSTUP_TOOLCHAIN", "nightly")
        .arg("fuzz")
        .arg(subcommand)
        .args(BUILD_FLAGS);
    cmd
}

/// Keeps only the inputs that add coverage (`cargo fuzz cmin`), so the corpus committed
/// stays small.
fn minimise(
    cargo_fuzz: &Path,
    fuzz_dir: &Path,
    target: &str,
    corpus: &Path,
    max_len: usize,
) -> Result<()> {
    let mut cmd = cargo_fuzz_command(cargo_fuzz, fuzz_dir, "cmin");
    cmd.arg(target)
        .arg(corpus)
        .arg("--")
        .arg(format!("-max_len={max_len}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    run(&mut cmd)
}

fn count_files(dir: &Path) -> Result<usize> {
    Ok(std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter(|e| e.as_ref().is_ok_and(|e| e.path().is_file()))
        .count())
}

/// The numbers libFuzzer prints: final stats (`-print_final_stats=1`), `Done N runs in S
/// second(s)`, and where it wrote a crashing input.
#[derive(Debug, Default, PartialEq)]
struct Report {
    execs: Option<u64>,
    seconds: Option<u64>,
    artifact: Option<String>,
}

impl Report {
    fn add_line(&mut self, line: &str) {
        let line = line.trim();
        if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
            self.execs = n.trim().parse().ok().or(self.execs);
        } else if let Some(rest) = line.strip_prefix("Done ") {
            // "Done 123 runs in 61 second(s)"
            let words: Vec<&str> = rest.split_whitespace().collect();
            if let [runs, "runs", "in", secs, ..] = words.as_slice() {
                self.execs = runs.parse().ok().or(self.execs);
                self.seconds = secs.parse().ok();
            }
        } else if let Some((_, path)) = line.split_once("Test unit written to ") {
            self.artifact = Some(path.trim().to_owned());
        }
    }
}

const RUNS_HEADER: &str = "\
# Fuzzing runs

One line per target run, appended by `cargo xtask fuzz`; the seconds add up to each target's
total fuzzing time (`cargo xtask fuzz` prints the totals).

| date | target | seconds | execs | result |
|---|---|---:|---:|---|
";

/// Appends one table row, creating the file with its header first if needed.
fn append_run(path: &Path, o: &Outcome) -> Result<()> {
    let mut text = String::new();
    if !path.exists() {
        text.push_str(RUNS_HEADER);
    }
    let result = match &o.crash {
        None => format!("ok ({:+} corpus)", o.new_entries),
        Some(artifact) => format!("crash: `{artifact}`"),
    };
    text.push_str(&format!(
        "| {} | {} | {} | {} | {} |\n",
        today(),
        o.target,
        o.seconds,
        o.execs.map_or("?".to_owned(), |n| n.to_string()),
        result
    ));
    // One write in append mode: parallel runs of different targets may share the file.
    crate::util::append(path, &text)
}

/// Seconds per target summed over the rows of RUNS.md, in order of first appearance.
fn totals(runs: &str) -> Vec<(String, u64)> {
    let mut totals: Vec<(String, u64)> = Vec::new();
    for line in runs.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let [_, _date, target, seconds, ..] = cells.as_slice() else {
            continue;
        };
        let Ok(seconds) = seconds.parse::<u64>() else {
            continue;
        };
        match totals.iter_mut().find(|(t, _)| t == target) {
            Some((_, total)) => *total += seconds,
            None => totals.push(((*target).to_owned(), seconds)),
        }
    }
    totals
}

/// Today's date (UTC) as YYYY-MM-DD, without a date crate.
fn today() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    civil_date(secs / 86_400)
}

/// The proleptic Gregorian date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_date(days: u64) -> String {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Options> {
        parse_args(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn parses_time_and_targets() {
        assert_eq!(
            args(&[]).unwrap(),
            Options {
                seconds: DEFAULT_SECONDS,
                targets: vec![]
            }
        );
        assert_eq!(
            args(&["--time", "900", "smtp_data", "pop3_command"]).unwrap(),
            Options {
                seconds: 900,
                targets: vec!["smtp_data".into(), "pop3_command".into()]
            }
        );
        assert!(args(&["--time"]).is_err());
        assert!(args(&["--time", "0"]).is_err());
        assert!(args(&["--time", "soon"]).is_err());
        assert!(args(&["--jobs", "2"]).is_err());
    }

    #[test]
    fn reads_libfuzzer_reports() {
        let mut r = Report::default();
        r.add_line("#1048576\tpulse  cov: 312 ft: 1040 corp: 88/9Kb exec/s: 349525 rss: 48Mb");
        r.add_line("Done 20971520 runs in 61 second(s)");
        r.add_line("stat::number_of_executed_units: 20971521");
        assert_eq!(
            r,
            Report {
                execs: Some(20_971_521),
                seconds: Some(61),
                artifact: None
            }
        );
        let mut crash = Report::default();
        crash.add_line("artifact_prefix='/w/fuzz/artifacts/smtp_data/'; Test unit written to /w/fuzz/artifacts/smtp_data/crash-da39a3ee");
        assert_eq!(
            crash.artifact.as_deref(),
            Some("/w/fuzz/artifacts/smtp_data/crash-da39a3ee")
        );
    }

    #[test]
    fn sums_runs_per_target() {
        let runs = format!(
            "{RUNS_HEADER}| 2026-05-20 | smtp_data | 900 | 1000 | ok (+3 corpus) |\n\
             | 2026-05-20 | pop3_command | 60 | ? | ok (+0 corpus) |\n\
             | 2026-05-21 | smtp_data | 901 | 2000 | crash: `x` |\n"
        );
        assert_eq!(
            totals(&runs),
            [
                ("smtp_data".to_owned(), 1801),
                ("pop3_command".to_owned(), 60)
            ]
        );
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(11_016), "2000-02-29");
        assert_eq!(civil_date(20_593), "2026-05-20");
    }
}
