//! A binary compiled with the `test-support` feature refuses to serve.
//!
//! `test-support` exists for the simulator and other crates' tests: it can switch the store's
//! fsync off and make ids predictable. Cargo unifies features across the packages it builds
//! together, so `cargo build --workspace` (or `cargo test --workspace`, which also builds the
//! `gateway` binary for the integration tests) compiles it into the binary. A compile error
//! would break those test builds, so the check is made at start instead: `gateway serve`
//! stops unless [`OVERRIDE_VAR`] holds [`OVERRIDE_VALUE`], which only a test sets.

use std::ffi::OsStr;

/// Whether this build has the `test-support` feature.
pub const TEST_SUPPORT: bool = cfg!(feature = "test-support");

/// The environment variable a test sets to run a test-support binary anyway.
pub const OVERRIDE_VAR: &str = "GATEWAY_ALLOW_TEST_SUPPORT_BUILD";
/// The value it must hold: deliberately not something set by accident (`1`, `true`).
pub const OVERRIDE_VALUE: &str = "not-for-production";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "this gateway binary was built with the `test-support` feature (commits that skip fsync, \
     predictable ids) and must not serve; build the release with `cargo build --release -p gateway` \
     (or plain `cargo build --release` at the workspace root)"
)]
pub struct TestSupportBuild;

/// Refuses a test-support build unless the test override is set exactly.
pub fn check(test_support: bool, override_value: Option<&OsStr>) -> Result<(), TestSupportBuild> {
    if !test_support || override_value == Some(OsStr::new(OVERRIDE_VALUE)) {
        return Ok(());
    }
    Err(TestSupportBuild)
}

/// [`check`] for this binary and its environment.
pub fn check_this_binary() -> Result<(), TestSupportBuild> {
    check(TEST_SUPPORT, std::env::var_os(OVERRIDE_VAR).as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_support_build_refuses_to_serve_without_the_exact_override() {
        assert_eq!(check(true, None), Err(TestSupportBuild));
        assert_eq!(check(true, Some(OsStr::new("1"))), Err(TestSupportBuild));
        assert_eq!(check(true, Some(OsStr::new(""))), Err(TestSupportBuild));
        assert_eq!(check(true, Some(OsStr::new(OVERRIDE_VALUE))), Ok(()));
    }

    #[test]
    fn production_build_serves_whatever_the_environment() {
        assert_eq!(check(false, None), Ok(()));
        assert_eq!(check(false, Some(OsStr::new("1"))), Ok(()));
    }
}
