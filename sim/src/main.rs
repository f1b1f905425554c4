//! `sim --seeds N [--from S] [--scenario X]`: runs N seeds (from a random start unless `--from`
//! says) and prints the failing ones.
//! `sim --seed S [--scenario X] [--bug B]`: replays one seed with its readable trace.
//! `cargo xtask sim` runs this with tokio's scheduler seeded too.

use std::process::ExitCode;
use std::time::Instant;

use sim::scenario::Scenario;
use sim::{run, Bug, Options};

struct Args {
    seeds: Option<u64>,
    from: Option<u64>,
    seed: Option<u64>,
    scenario: Option<Scenario>,
    bug: Option<Bug>,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        seeds: None,
        from: None,
        seed: None,
        scenario: None,
        bug: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{v}: {e}"));
        match flag.as_str() {
            "--seeds" => args.seeds = Some(number(value()?)?),
            "--from" => args.from = Some(number(value()?)?),
            "--seed" => args.seed = Some(number(value()?)?),
            "--scenario" => {
                let name = value()?;
                let names: Vec<&str> = Scenario::named().map(|s| s.name()).collect();
                args.scenario = Some(
                    Scenario::parse(&name)
                        .ok_or(format!("unknown scenario {name}; one of {names:?}"))?,
                );
            }
            "--bug" => {
                let name = value()?;
                let names: Vec<&str> = Bug::ALL.iter().map(|b| b.name()).collect();
                args.bug =
                    Some(Bug::parse(&name).ok_or(format!("unknown bug {name}; one of {names:?}"))?);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

/// A seed's scenario when none is named: spread the seeds over all of them.
fn scenario_for(seed: u64) -> Scenario {
    Scenario::ALL[(seed % Scenario::ALL.len() as u64) as usize]
}

fn main() -> ExitCode {
    // The gateway's own logs, for digging into a replay: `RUST_LOG=debug`.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let args = match parse() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("sim: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(seed) = args.seed {
        let options = Options {
            seed,
            scenario: args.scenario.unwrap_or(scenario_for(seed)),
            bug: args.bug,
        };
        let outcome = run(options);
        print!("{}", outcome.trace.render());
        println!(
            "seed {seed} scenario {}: {} (trace hash {:016x}, {:?} simulated)",
            options.scenario.name(),
            if outcome.passed() { "passed" } else { "FAILED" },
            outcome.trace.hash(),
            outcome.sim_time
        );
        return if outcome.passed() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let count = args.seeds.unwrap_or(100);
    // New ground on every invocation unless told; any seed replays with --seed.
    let from = args.from.unwrap_or_else(|| {
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new().hash_one(0u8) >> 16
    });
    println!("seeds {from}..{}", from.saturating_add(count));
    let started = Instant::now();
    let mut failed = Vec::new();
    for seed in from..from.saturating_add(count) {
        let scenario = args.scenario.unwrap_or(scenario_for(seed));
        let outcome = run(Options {
            seed,
            scenario,
            bug: args.bug,
        });
        if !outcome.passed() {
            println!(
                "FAILED seed {seed} scenario {}: {}",
                scenario.name(),
                outcome.violations.join("; ")
            );
            failed.push(seed);
        }
    }
    println!(
        "{} passed, {} failed ({} seeds in {:.1?})",
        count as usize - failed.len(),
        failed.len(),
        count,
        started.elapsed()
    );
    if !failed.is_empty() {
        let mut replay = format!("cargo xtask sim --seed {}", failed[0]);
        if let Some(scenario) = args.scenario {
            replay.push_str(&format!(" --scenario {}", scenario.name()));
        }
        if let Some(bug) = args.bug {
            replay.push_str(&format!(" --bug {}", bug.name()));
        }
        println!("replay one with: {replay}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
