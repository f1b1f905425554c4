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

/// Cargo's target directory: `CARGO_TARGET_DIR` when set, else `target/` in the workspace.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
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

/// Appends `text` to the file at `path` in one write, creating the file when missing.
pub fn append(path: &Path, text: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::io::Write as _;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .with_context(|| format!("appending to {}", path.display()))
}

/// Names of the targets of one kind (`"[[bench]]"`, `"[[bin]]"`) declared in a Cargo
/// manifest, in order. Criterion benches and cargo-fuzz targets must be declared there, so
/// this finds them all without a TOML parser.
pub fn declared_targets(manifest: &str, kind: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_kind = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_kind = line == kind;
        } else if let Some(value) = line.strip_prefix("name").map(str::trim_start) {
            if let (true, Some(value)) = (in_kind, value.strip_prefix('=')) {
                names.push(value.trim().trim_matches('"').to_string());
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_declared_targets_in_manifest() {
        let manifest = r#"
[package]
name = "bench"

[[bench]]
name = "crypto"
harness = false

[[bench]]
harness = false
name    = "storage"

[[bin]]
name = "smtp_data"

[dev-dependencies]
name = "not-a-bench"
"#;
        assert_eq!(
            declared_targets(manifest, "[[bench]]"),
            ["crypto", "storage"]
        );
        assert_eq!(declared_targets(manifest, "[[bin]]"), ["smtp_data"]);
        assert!(declared_targets("[package]\nname = \"bench\"\n", "[[bench]]").is_empty());
    }
}
