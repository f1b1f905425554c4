//! Running external commands: echo them, inherit stdio, and turn a non-zero exit into an error
//! that names the command, so every failure in CI says what was being run.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root. xtask always runs from there so `cargo` sees the whole workspace,
/// whatever directory the developer invoked it from.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// `cargo` as a command, using the same cargo that runs xtask (cargo sets `CARGO`), so a
/// pinned or non-default toolchain is used consistently.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(workspace_root());
    cmd
}

/// Human-readable form of a command, for logs and error messages; runs `cmd` with inherited
/// stdio (echoed first), failing with an error that names it; whether a program is on `PATH`.
pub use test_support::packages::{display, on_path, run};
