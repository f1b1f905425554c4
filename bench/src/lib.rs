//! Benchmarks of the gateway.
//!
//! - [`load`]: an SMTP load generator (plain or implicit TLS), used by the `smtp_load`
//!   binary and by the `smtp_bench` runner.
//! - [`gateway_proc`]: the gateway run as a child process for the runner.
//! - [`postfix`]: a throwaway local Postfix delivering to a Maildir, the baseline.

pub mod gateway_proc;
pub mod load;
pub mod postfix;
