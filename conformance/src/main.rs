//! `conformance`: runs the suites, prints the matrix, writes (or with `--check` compares)
//! the Markdown report, and exits non-zero when a MUST fails. `cargo xtask conformance`
//! runs it; see the crate docs for what is checked.

use std::path::PathBuf;
use std::process::ExitCode;

use conformance::{report, Options};

const USAGE: &str = "\
usage: conformance [--check] [--report PATH] [--only PREFIX]... [--skip-testssl] [--allow-skips]

  --check          compare the report with PATH instead of writing it; fail if it differs
  --report PATH    the Markdown report (default: conformance/REPORT.md)
  --only PREFIX    run only requirements whose id starts with PREFIX (repeatable);
                   the report is then neither written nor checked
  --skip-testssl   leave out the testssl.sh scans
  --allow-skips    a check that cannot run here (missing tool) does not fail the run";

struct Args {
    check: bool,
    report: PathBuf,
    options: Options,
    allow_skips: bool,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut parsed = Args {
        check: false,
        report: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("REPORT.md"),
        options: Options::default(),
        allow_skips: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--check" => parsed.check = true,
            "--skip-testssl" => parsed.options.skip_testssl = true,
            "--allow-skips" => parsed.allow_skips = true,
            "--report" => {
                parsed.report = it.next().ok_or("--report needs a path")?.into();
            }
            "--only" => parsed
                .options
                .only
                .push(it.next().ok_or("--only needs a prefix")?.clone()),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(parsed)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse(&args) {
        Ok(args) => args,
        Err(err) => {
            eprintln!("conformance: {err}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("conformance: tokio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let started = std::time::Instant::now();
    let outcomes = match runtime.block_on(conformance::run(&args.options)) {
        Ok(outcomes) => outcomes,
        Err(err) => {
            eprintln!("conformance: could not run the suites: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", report::console(&outcomes));
    println!(
        "ran {} checks in {:.1}s",
        outcomes.len(),
        started.elapsed().as_secs_f64()
    );

    let mut failed = false;
    let blocking: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.blocks(args.allow_skips))
        .collect();
    for b in &blocking {
        eprintln!("conformance: {b}");
        failed = true;
    }

    let partial = !args.options.only.is_empty() || args.options.skip_testssl;
    if !partial {
        let md = report::markdown(&outcomes);
        if args.check {
            let current = std::fs::read_to_string(&args.report).unwrap_or_default();
            if current != md {
                eprintln!(
                    "conformance: {} is stale: run `cargo xtask conformance` and commit it",
                    args.report.display()
                );
                failed = true;
            } else {
                println!("{} is up to date", args.report.display());
            }
        } else if let Err(err) = std::fs::write(&args.report, md) {
            eprintln!("conformance: write {}: {err}", args.report.display());
            failed = true;
        } else {
            println!("wrote {}", args.report.display());
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
