//! `cargo xtask dist`: the Debian package (cargo-deb), and the check CI runs on it: install it
//! with dpkg, run the installed binary, verify the installed systemd unit, purge it again.

use crate::util::{self, cargo, run, target_dir, workspace_root};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The cargo-deb release the package is built with.
pub const CARGO_DEB_VERSION: &str = "3.7.0";

#[derive(Debug, PartialEq)]
pub struct Options {
    /// Cargo profile of the packaged binary: `release` for a package to ship; CI checks the
    /// packaging with `dev`, whose dependencies its tests have built already.
    pub profile: String,
    /// Install the package, run it, verify its unit, then purge it (needs root).
    pub check: bool,
}

pub fn run_dist(opts: &Options) -> Result<()> {
    let deb = build(&opts.profile)?;
    eprintln!("dist: {}", deb.display());
    if opts.check {
        check_installed(&deb)?;
    }
    Ok(())
}

/// Builds the binary alone (`-p gateway`: no other workspace member's features, so the test
/// hooks other crates enable are not compiled in) and packages it into `target/dist/`.
fn build(profile: &str) -> Result<PathBuf> {
    let cargo_deb = ensure_cargo_deb()?;
    run(cargo().args([
        "build",
        "-p",
        "gateway",
        "--bin",
        "gateway",
        "--profile",
        profile,
    ]))?;
    let out = target_dir().join("dist");
    // One package in the folder, so there is no doubt which one was built.
    if out.exists() {
        std::fs::remove_dir_all(&out).with_context(|| format!("cannot empty {}", out.display()))?;
    }
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    run(Command::new(cargo_deb)
        .current_dir(workspace_root())
        .args([
            "deb",
            "-p",
            "gateway",
            "--no-build",
            "--profile",
            profile,
            "--output",
        ])
        .arg(&out))?;
    let debs: Vec<PathBuf> = std::fs::read_dir(&out)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .collect();
    match debs.as_slice() {
        [deb] => Ok(deb.clone()),
        other => bail!("expected one .deb in {}, found {other:?}", out.display()),
    }
}

/// What an administrator does first after `dpkg -i`, and what the package promises: the
/// binary runs, the shipped configuration checks, the unit verifies, the service user owns
/// its data directory (0700). The package is purged afterwards (its data directory is kept
/// by design, so it is removed here too when this check created it).
fn check_installed(deb: &Path) -> Result<()> {
    let had_data_dir = Path::new("/var/lib/gateway").exists();
    run(Command::new("dpkg").arg("-i").arg(deb))?;
    let result = (|| -> Result<()> {
        run(Command::new("/usr/bin/gateway").arg("--version"))?;
        run(Command::new("/usr/bin/gateway").args([
            "config",
            "check",
            "/etc/gateway/gateway.toml",
        ]))?;
        run(Command::new("systemd-analyze")
            .args(["verify", "/usr/lib/systemd/system/gateway.service"])
            .env("SYSTEMD_LOG_LEVEL", "warning"))?;
        let passwd = output(Command::new("getent").args(["passwd", "gateway"]))?;
        if !passwd.contains("/var/lib/gateway") {
            bail!("the gateway user's home is not /var/lib/gateway: {passwd}");
        }
        let data = output(Command::new("stat").args(["-c", "%U %a", "/var/lib/gateway"]))?;
        if data.trim() != "gateway 700" {
            bail!(
                "/var/lib/gateway should be the gateway user's with mode 700, is `{}`",
                data.trim()
            );
        }
        let config =
            output(Command::new("stat").args(["-c", "%U %a", "/etc/gateway/gateway.toml"]))?;
        if config.trim() != "gateway 640" {
            bail!(
                "/etc/gateway/gateway.toml should be the gateway user's with mode 640, is `{}`",
                config.trim()
            );
        }
        eprintln!("dist: installed package checked");
        Ok(())
    })();
    run(Command::new("dpkg").args(["--purge", "gateway"]))?;
    if !had_data_dir {
        let _ = std::fs::remove_dir_all("/var/lib/gateway");
    }
    result
}

fn output(cmd: &mut Command) -> Result<String> {
    let shown = util::display(cmd);
    let out = cmd
        .output()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !out.status.success() {
        bail!("`{shown}` failed ({})", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// cargo-deb, installed with `cargo install` when missing (no Debian package exists).
fn ensure_cargo_deb() -> Result<PathBuf> {
    if let Some(found) = find_cargo_deb() {
        return Ok(found);
    }
    eprintln!(
        "deps: cargo-deb not found; installing cargo-deb {CARGO_DEB_VERSION} with cargo install"
    );
    run(cargo().args([
        "install",
        "--locked",
        "cargo-deb",
        "--version",
        CARGO_DEB_VERSION,
    ]))?;
    find_cargo_deb().context("cargo-deb was installed but is not on PATH nor in ~/.cargo/bin")
}

fn find_cargo_deb() -> Option<PathBuf> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")));
    let candidates = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(cargo_home.map(|home| home.join("bin")));
    candidates
        .map(|dir| dir.join("cargo-deb"))
        .find(|path| path.is_file())
        .filter(|path| version_matches(path))
}

/// A cargo-deb of another version may package differently; the pinned one is installed.
fn version_matches(path: &Path) -> bool {
    Command::new(path)
        .arg("--version")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).contains(CARGO_DEB_VERSION))
        .unwrap_or(false)
}
