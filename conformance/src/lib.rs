//! # conformance
//!
//! Black-box conformance, security and interop suites for the gateway, and the requirement
//! matrix they fill in. `cargo xtask conformance` runs every check, prints the matrix, writes
//! `conformance/REPORT.md` and fails on any MUST that fails.
//!
//! ## Module map
//!
//! - [`matrix`]: [`Requirement`] (id, RFC, section, level, title),
//!   [`Verdict`] and which outcomes fail a run.
//! - [`target`]: the gateway under test, started in-process on loopback with free ports and
//!   a root → intermediate → leaf test PKI.
//! - [`client`]: a raw SMTP/POP3 client over TCP or TLS that sends exactly the bytes it is
//!   given and parses replies strictly.
//! - [`smtp`], [`pop3`]: the protocol suites (RFC 5321, 1870, 2920, 3207, 2034/3463, 6152,
//!   6531, 3030; RFC 1939, 2449, 2595, 5034).
//! - [`tls`]: implicit TLS (RFC 8314), the served chain, and `testssl.sh` on every listener.
//! - [`security`]: STARTTLS/STLS injection, credentials before TLS, smuggling, overlong and
//!   malformed input, big pipelines, slow clients and connection floods.
//! - [`interop`]: swaks, Python's smtplib and poplib, curl, `openssl s_client`, fetchmail.
//! - [`transcripts`]: canonical sessions, redacted, for the insta snapshots.
//! - [`report`]: the console table and the generated Markdown report.
//!
//! Each check is one `async fn(&Target) -> anyhow::Result<()>`: `Ok` is a pass, an error is a
//! failure whose message says what was observed, and [`skip`] marks a check that cannot run
//! here (a missing client tool).
#![forbid(unsafe_code)]

pub mod client;
pub mod interop;
pub mod matrix;
pub mod pop3;
pub mod report;
pub mod security;
pub mod smtp;
pub mod target;
pub mod tls;
pub mod transcripts;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use matrix::{Outcome, Requirement, Verdict};
use target::Target;

/// What a check returns.
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send + 'a>>;

/// A requirement and the check that decides its verdict.
pub struct Check {
    pub requirement: Requirement,
    pub run: for<'a> fn(&'a Target) -> CheckFuture<'a>,
}

/// Builds a `Vec<Check>` from `requirement => async fn` pairs.
macro_rules! checks {
    ($($req:expr => $f:path),* $(,)?) => {
        vec![$(
            $crate::Check {
                requirement: $req,
                run: {
                    fn run(t: &$crate::target::Target) -> $crate::CheckFuture<'_> {
                        Box::pin($f(t))
                    }
                    run
                },
            }
        ),*]
    };
}
pub(crate) use checks;

/// Defines `r(id, rfc, section, level, title)`: a [`Requirement`] of the module's suite.
macro_rules! requirement_fn {
    ($suite:expr) => {
        const fn r(
            id: &'static str,
            rfc: &'static str,
            section: &'static str,
            level: $crate::matrix::Level,
            title: &'static str,
        ) -> $crate::matrix::Requirement {
            $crate::matrix::Requirement::new(id, $suite, rfc, section, level, title)
        }
    };
}
pub(crate) use requirement_fn;

/// Why a check did not run; see [`skip`].
#[derive(Debug)]
pub struct Skipped(pub String);

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Skipped {}

/// The error a check returns when it cannot run here.
pub fn skip(why: impl Into<String>) -> anyhow::Error {
    Skipped(why.into()).into()
}

/// The longest a single check may take; a hung check fails instead of hanging the run.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(90);

/// Every check except the `testssl.sh` scans, in report order.
pub fn all_checks() -> Vec<Check> {
    let mut checks = smtp::checks();
    checks.extend(pop3::checks());
    checks.extend(tls::checks());
    checks.extend(security::checks());
    checks.extend(interop::checks());
    checks
}

/// Every requirement in the matrix, testssl rows included, in report order.
pub fn requirements() -> Vec<Requirement> {
    let mut all: Vec<Requirement> = all_checks().iter().map(|c| c.requirement).collect();
    all.extend(tls::testssl_requirements());
    all.sort_by_key(|r| r.suite);
    all
}

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Run only requirements whose id starts with one of these (all when empty).
    pub only: Vec<String>,
    /// Leave out the `testssl.sh` scans (they take the longest).
    pub skip_testssl: bool,
}

impl Options {
    fn selects(&self, id: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| id.starts_with(p.as_str()))
    }
}

/// Runs the selected checks against fresh gateways and returns their outcomes in report
/// order. The testssl scans run against their own gateway in parallel with the rest.
pub async fn run(options: &Options) -> anyhow::Result<Vec<Outcome>> {
    let want_testssl = !options.skip_testssl
        && tls::testssl_requirements()
            .iter()
            .any(|r| options.selects(r.id));
    let testssl = async {
        if want_testssl {
            tls::testssl_outcomes().await
        } else {
            Ok(Vec::new())
        }
    };
    let protocol = async {
        let mut target = Target::start().await?;
        let mut outcomes = Vec::new();
        for check in all_checks() {
            if !options.selects(check.requirement.id) {
                continue;
            }
            let verdict = match tokio::time::timeout(CHECK_TIMEOUT, (check.run)(&target)).await {
                Err(_) => Verdict::Fail(format!("no verdict within {CHECK_TIMEOUT:?}")),
                Ok(Ok(())) => Verdict::Pass,
                Ok(Err(err)) => match err.downcast_ref::<Skipped>() {
                    Some(Skipped(why)) => Verdict::Skip(why.clone()),
                    None => Verdict::Fail(one_line(&format!("{err:#}"))),
                },
            };
            outcomes.push(Outcome {
                requirement: check.requirement,
                verdict,
            });
        }
        target.stop().await;
        anyhow::Ok(outcomes)
    };
    let (testssl, protocol) = tokio::join!(testssl, protocol);
    let mut outcomes = protocol?;
    outcomes.extend(
        testssl?
            .into_iter()
            .filter(|o| options.selects(o.requirement.id)),
    );
    // Stable: keeps check order inside a suite.
    outcomes.sort_by_key(|o| o.requirement.suite);
    Ok(outcomes)
}

/// An error chain on one line, bounded, for a table cell.
fn one_line(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut flat = flat.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > 300 {
        flat = flat.chars().take(300).collect::<String>() + "…";
    }
    flat
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirement_ids_are_unique_and_well_formed() {
        let reqs = requirements();
        let mut ids: Vec<&str> = reqs.iter().map(|r| r.id).collect();
        ids.sort_unstable();
        let before = ids.len();
        ids.dedup();
        assert_eq!(before, ids.len(), "duplicate requirement id");
        for r in &reqs {
            assert!(
                r.id.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)),
                "{}",
                r.id
            );
            assert!(!r.rfc.is_empty() && !r.section.is_empty() && !r.title.is_empty());
        }
    }

    #[test]
    fn one_line_flattens_and_bounds() {
        assert_eq!(one_line("a\n  b\r\nc"), "a b c");
        assert_eq!(one_line(&"x".repeat(400)).chars().count(), 301);
    }
}
