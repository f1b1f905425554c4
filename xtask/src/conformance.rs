//! `cargo xtask conformance`: runs the conformance suites (crate `conformance`), prints the
//! requirement matrix and writes `conformance/REPORT.md`; `--check` compares instead of
//! writing, as CI does. Fails when a MUST fails or, with `--check`, when the report is stale.

use crate::deps;
use crate::util::{cargo, run};
use anyhow::Result;

pub struct Options {
    /// Compare the generated report with the checked-in one instead of writing it.
    pub check: bool,
    /// Don't touch system packages (the suites then skip what is missing, and fail on it).
    pub skip_deps: bool,
}

pub fn run_conformance(opts: &Options) -> Result<()> {
    if !opts.skip_deps {
        deps::ensure()?;
    }
    let mut cmd = cargo();
    // The debug profile shares its build with `cargo test`, so CI compiles the gateway once.
    cmd.args(["run", "-p", "conformance", "--bin", "conformance", "--"]);
    if opts.check {
        cmd.arg("--check");
    }
    run(&mut cmd)
}
