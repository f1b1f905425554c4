//! `cargo xtask sim`: the deterministic simulator (the `sim` crate's binary), optimised and
//! built with `--cfg tokio_unstable`, which lets turmoil seed tokio's scheduler too (the order
//! `select!` polls its branches). That flag changes how everything compiles, so the build
//! gets its own target directory and leaves the normal one alone.

use anyhow::{bail, Result};

use crate::util;

/// Flags the simulator takes, each with a value.
const FLAGS: &[&str] = &["--seeds", "--from", "--seed", "--scenario", "--bug"];

/// Checks the arguments before a long build: flags known, each with a value.
pub fn check_args(args: &[String]) -> Result<()> {
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if !FLAGS.contains(&flag.as_str()) {
            bail!(
                "sim: unknown argument `{flag}` (flags: {})",
                FLAGS.join(", ")
            );
        }
        if it.next().is_none() {
            bail!("sim: `{flag}` needs a value");
        }
    }
    if args.iter().any(|a| a == "--seed") && args.iter().any(|a| a == "--seeds") {
        bail!("sim: give either --seed S (replay one) or --seeds N (run N), not both");
    }
    Ok(())
}

pub fn run_sim(args: &[String]) -> Result<()> {
    let target = util::target_dir().join("sim-tokio-unstable");
    let mut flags = std::env::var("RUSTFLAGS").unwrap_or_default();
    flags.push_str(" --cfg tokio_unstable");
    let mut cmd = util::cargo();
    cmd.env("RUSTFLAGS", flags.trim())
        .env("CARGO_TARGET_DIR", target)
        .args(["run", "--release", "--quiet", "-p", "sim", "--"])
        .args(args);
    util::run(&mut cmd)
}
