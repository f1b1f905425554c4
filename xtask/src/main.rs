//! Project tasks: `cargo xtask <task>` (aliased in .cargo/config.toml). Only std, anyhow,
//! serde_json (for benchmark results) and inferno without its default features (flame graphs
//! of `bench --profile`) so xtask itself builds in seconds on CI.

mod bench;
mod ci;
mod compare;
mod conformance;
mod deps;
mod dist;
mod fuzz;
mod profile;
mod sim;
mod tidy;
mod util;

use anyhow::{bail, Result};
use std::path::PathBuf;

const HELP: &str = "\
usage: cargo xtask <task> [args]

tasks:
  ci [--skip-deps]   install needed Debian packages, then fmt check, clippy, tests
                     (--skip-deps: don't touch system packages; for developers without root)
  conformance [--check] [--skip-deps]
                     run the RFC conformance, security, TLS (testssl.sh) and interop suites,
                     print the requirement matrix and write conformance/REPORT.md; fails on
                     any failing MUST (--check: compare the report instead, fail if stale)
  bench [--quick] [NAME...] [--store postgres] [--profile]
                     run benchmarks: criterion targets (crypto, storage, wire) and side-by-side
                     runners against peer servers (smtp: vs Postfix, pop3: vs Dovecot, proxy:
                     vs direct to Postfix); all when no NAME. Runners write
                     target/bench-reports/NAME.md and NAME.json. --quick: smoke run (every
                     bench once at a small size, no timing; CI runs it, the smtp runner
                     profiled). `bench smtp --store postgres`: SMTP intake on redb and on
                     PostgreSQL with one and two nodes. --profile (runners only, needs perf):
                     their gateway processes run under perf record; flame graphs
                     profile-NAME-PID.svg and folded stacks beside the report, and the top
                     functions by self and inclusive share in NAME.md
  bench compare A B  compare two runs' JSON results (files or directories of them): B/A per
                     cell, better or worse
  sim [--seeds N] [--from S] [--scenario X] [--bug B]
                     run N random simulation seeds (default 100; from S if given) and
                     print the failing ones
  sim --seed S [--scenario X] [--bug B]
                     replay one seed with its readable trace; scenarios: calm, crash,
                     power-cut, network, full-disk, slow-clients, mixed, proxy, guessing,
                     pop3-proxy, cluster (two nodes on a shared model database; never
                     picked without --scenario); bug: unsynced-commit, lying-disk,
                     unflushed-commit, trusted-lost-commit (cluster only)
  dist [--profile P] [--check]
                     build the Debian package into target/dist/ with cargo-deb (profile
                     release unless given); --check installs it with dpkg, runs it, verifies
                     its systemd unit and purges it again (needs root)
  fuzz [--time SECONDS] [TARGET...]
                     run the cargo-fuzz targets in fuzz/ (all when no TARGET), each for
                     SECONDS (default 60) on its corpus with nightly; minimise the corpus,
                     log the run in fuzz/RUNS.md and print each target's total time; fails
                     naming the artifact when a target crashes
  fmt                format the workspace and fuzz/ (cargo fmt)
  help               this text";

#[derive(Debug, PartialEq)]
enum Task {
    Ci {
        skip_deps: bool,
    },
    Conformance {
        check: bool,
        skip_deps: bool,
    },
    Bench {
        names: Vec<String>,
        quick: bool,
        /// `--store postgres`: the smtp runner compares the store backends instead.
        store: Option<String>,
        /// `--profile`: the runners' gateway processes run under perf.
        profile: bool,
    },
    BenchCompare {
        a: PathBuf,
        b: PathBuf,
    },
    Sim {
        args: Vec<String>,
    },
    Dist(dist::Options),
    Fuzz(fuzz::Options),
    Fmt,
    Help,
}

fn parse(args: &[String]) -> Result<Task> {
    let Some((task, rest)) = args.split_first() else {
        return Ok(Task::Help);
    };
    let task = match task.as_str() {
        "ci" => {
            let mut skip_deps = false;
            for arg in rest {
                match arg.as_str() {
                    "--skip-deps" => skip_deps = true,
                    other => bail!("ci: unknown argument `{other}`"),
                }
            }
            Task::Ci { skip_deps }
        }
        "conformance" => {
            let (mut check, mut skip_deps) = (false, false);
            for arg in rest {
                match arg.as_str() {
                    "--check" => check = true,
                    "--skip-deps" => skip_deps = true,
                    other => bail!("conformance: unknown argument `{other}`"),
                }
            }
            Task::Conformance { check, skip_deps }
        }
        "bench" => match rest {
            [compare, args @ ..] if compare == "compare" => match args {
                [a, b] if !a.starts_with('-') && !b.starts_with('-') => Task::BenchCompare {
                    a: a.into(),
                    b: b.into(),
                },
                _ => bail!("bench compare: give two results files or directories, A and B"),
            },
            _ => {
                let mut quick = false;
                let mut profile = false;
                let mut store = None;
                let mut names = Vec::new();
                let mut args = rest.iter();
                while let Some(arg) = args.next() {
                    match arg.as_str() {
                        "--quick" => quick = true,
                        "--profile" => profile = true,
                        "--store" => match args.next().map(String::as_str) {
                            Some(backend @ ("redb" | "postgres")) => {
                                store = Some(backend.to_owned())
                            }
                            _ => bail!("bench: --store takes redb or postgres"),
                        },
                        flag if flag.starts_with('-') => {
                            bail!("bench: unknown flag `{flag}` (only --quick, --store and --profile)")
                        }
                        name => names.push(name.to_owned()),
                    }
                }
                if store.is_some() && names != ["smtp"] {
                    bail!("bench: --store goes with the smtp runner alone (`bench smtp --store postgres`)");
                }
                if profile && names.is_empty() {
                    bail!("bench: --profile needs the runners to profile named (`bench smtp --profile`)");
                }
                Task::Bench {
                    names,
                    quick,
                    store,
                    profile,
                }
            }
        },
        "sim" => {
            sim::check_args(rest)?;
            Task::Sim {
                args: rest.to_vec(),
            }
        }
        "dist" => {
            let mut opts = dist::Options {
                profile: "release".to_owned(),
                check: false,
            };
            let mut args = rest.iter();
            while let Some(arg) = args.next() {
                match arg.as_str() {
                    "--check" => opts.check = true,
                    "--profile" => match args.next() {
                        Some(profile) if !profile.starts_with('-') => {
                            opts.profile = profile.clone()
                        }
                        _ => bail!("dist: --profile needs a profile name"),
                    },
                    other => bail!("dist: unknown argument `{other}`"),
                }
            }
            Task::Dist(opts)
        }
        "fuzz" => Task::Fuzz(fuzz::parse_args(rest)?),
        "fmt" | "help" | "-h" | "--help" if !rest.is_empty() => {
            bail!("{task}: takes no arguments")
        }
        "fmt" => Task::Fmt,
        "help" | "-h" | "--help" => Task::Help,
        other => bail!("unknown task `{other}`"),
    };
    Ok(task)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let task = match parse(&args) {
        Ok(task) => task,
        Err(err) => {
            eprintln!("xtask: {err:#}\n\n{HELP}");
            std::process::exit(2);
        }
    };
    let result = match task {
        Task::Ci { skip_deps } => ci::run_ci(&ci::Options { skip_deps }),
        Task::Conformance { check, skip_deps } => {
            conformance::run_conformance(&conformance::Options { check, skip_deps })
        }
        Task::Bench {
            names,
            quick,
            store,
            profile,
        } => bench::run_benches(
            &names,
            &bench::Options {
                quick,
                store: store.as_deref(),
                profile,
            },
        ),
        Task::BenchCompare { a, b } => compare::run_compare(&a, &b),
        Task::Sim { args } => sim::run_sim(&args),
        Task::Dist(opts) => dist::run_dist(&opts),
        Task::Fuzz(opts) => fuzz::run_fuzz(&opts),
        Task::Fmt => util::run(util::cargo().args(["fmt", "--all"]))
            .and_then(|()| util::run(util::cargo().args(fuzz::FMT_ARGS))),
        Task::Help => {
            println!("{HELP}");
            Ok(())
        }
    };
    if let Err(err) = result {
        eprintln!("\nxtask: error: {err:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Task> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn parses_tasks() {
        assert_eq!(p(&[]).unwrap(), Task::Help);
        assert_eq!(p(&["help"]).unwrap(), Task::Help);
        assert_eq!(p(&["--help"]).unwrap(), Task::Help);
        assert_eq!(p(&["fmt"]).unwrap(), Task::Fmt);
        assert_eq!(p(&["ci"]).unwrap(), Task::Ci { skip_deps: false });
        assert_eq!(
            p(&["ci", "--skip-deps"]).unwrap(),
            Task::Ci { skip_deps: true }
        );
        assert_eq!(
            p(&["conformance"]).unwrap(),
            Task::Conformance {
                check: false,
                skip_deps: false
            }
        );
        assert_eq!(
            p(&["conformance", "--check", "--skip-deps"]).unwrap(),
            Task::Conformance {
                check: true,
                skip_deps: true
            }
        );
        assert_eq!(
            p(&["bench"]).unwrap(),
            Task::Bench {
                names: vec![],
                quick: false,
                store: None,
                profile: false
            }
        );
        assert_eq!(
            p(&["bench", "--quick"]).unwrap(),
            Task::Bench {
                names: vec![],
                quick: true,
                store: None,
                profile: false
            }
        );
        assert_eq!(
            p(&["bench", "smtp", "--quick", "crypto"]).unwrap(),
            Task::Bench {
                names: vec!["smtp".into(), "crypto".into()],
                quick: true,
                store: None,
                profile: false
            }
        );
        assert_eq!(
            p(&["bench", "compare", "old/", "new/smtp.json"]).unwrap(),
            Task::BenchCompare {
                a: "old/".into(),
                b: "new/smtp.json".into()
            }
        );
        assert_eq!(
            p(&["dist"]).unwrap(),
            Task::Dist(dist::Options {
                profile: "release".into(),
                check: false
            })
        );
        assert_eq!(
            p(&["dist", "--profile", "dev", "--check"]).unwrap(),
            Task::Dist(dist::Options {
                profile: "dev".into(),
                check: true
            })
        );
        assert_eq!(
            p(&["sim", "--seed", "7", "--scenario", "crash"]).unwrap(),
            Task::Sim {
                args: vec![
                    "--seed".into(),
                    "7".into(),
                    "--scenario".into(),
                    "crash".into()
                ]
            }
        );
        assert_eq!(
            p(&["fuzz", "--time", "30", "smtp_data"]).unwrap(),
            Task::Fuzz(fuzz::Options {
                seconds: 30,
                targets: vec!["smtp_data".into()]
            })
        );
        assert_eq!(
            p(&["bench", "crypto", "storage"]).unwrap(),
            Task::Bench {
                names: vec!["crypto".into(), "storage".into()],
                quick: false,
                store: None,
                profile: false
            }
        );
    }

    #[test]
    fn rejects_bad_arguments() {
        assert!(p(&["nope"]).is_err());
        assert!(p(&["ci", "--skip-dep"]).is_err());
        assert_eq!(
            p(&["bench", "smtp", "--store", "postgres"]).unwrap(),
            Task::Bench {
                names: vec!["smtp".into()],
                quick: false,
                store: Some("postgres".into()),
                profile: false
            }
        );
        assert!(p(&["bench", "smtp", "--store", "mysql"]).is_err());
        assert!(p(&["bench", "pop3", "--store", "postgres"]).is_err());
        assert!(p(&["bench", "--store"]).is_err());
        assert!(p(&["bench", "--profile"]).is_err());
        assert_eq!(
            p(&["bench", "smtp", "--quick", "--profile"]).unwrap(),
            Task::Bench {
                names: vec!["smtp".into()],
                quick: true,
                store: None,
                profile: true
            }
        );
        assert!(p(&["bench", "--noplot"]).is_err());
        assert!(p(&["bench", "--quick", "--fast"]).is_err());
        assert!(p(&["bench", "compare", "a.json"]).is_err());
        assert!(p(&["bench", "compare", "a.json", "b.json", "c.json"]).is_err());
        assert!(p(&["bench", "compare", "--quick", "b.json"]).is_err());
        assert!(p(&["conformance", "--fast"]).is_err());
        assert!(p(&["fmt", "x"]).is_err());
        assert!(p(&["dist", "--profile"]).is_err());
        assert!(p(&["dist", "--profile", "--check"]).is_err());
        assert!(p(&["dist", "--install"]).is_err());
        assert!(p(&["fuzz", "--time"]).is_err());
        assert!(p(&["sim", "--seed"]).is_err());
        assert!(p(&["sim", "--sead", "1"]).is_err());
        assert!(p(&["sim", "--seed", "1", "--seeds", "5"]).is_err());
    }
}
