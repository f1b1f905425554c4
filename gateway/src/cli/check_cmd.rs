//! `gateway check`: runs [`crate::check`] and exits with the plugin convention's code
//! (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN). Everything that keeps the check from running
//! (bad usage, an unreadable configuration) is UNKNOWN, never CRITICAL: the gateway may be
//! fine, the check is not.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Args;

use crate::check::{parse_duration, CheckOptions, Report};

/// Monitoring probe for Nagios, Icinga and compatible systems.
#[derive(Debug, Args)]
#[command(
    long_about = "Connects to every enabled listener as a client would (STARTTLS on SMTP, \
    STLS on POP3, implicit TLS on 465 and 995, HTTPS on the console), reads the days left \
    on each presented certificate, and optionally asks the running gateway (control socket) \
    how long mail has been waiting for pick-up and how much disk space is free. Prints one status line with performance \
    data and exits 0 (OK), 1 (WARNING), 2 (CRITICAL) or 3 (UNKNOWN)."
)]
pub struct CheckArgs {
    /// Connect to this host instead of the configured listener addresses (a remote gateway;
    /// its name is also sent as SNI).
    #[arg(long, value_name = "HOST")]
    host: Option<String>,
    /// Use this port for a listener instead of the configured one, e.g. `smtp=2525`
    /// (repeatable). Names: smtp, submission, smtps, pop3, pop3s, console, acme_http.
    #[arg(long = "port", value_name = "NAME=PORT", value_parser = parse_port)]
    ports: Vec<(String, u16)>,
    /// Check only this listener (repeatable); all enabled ones by default.
    #[arg(long = "listener", value_name = "NAME")]
    listeners: Vec<String>,
    /// Limit for each listener: connecting, the conversation and the TLS handshakes.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// WARNING when a certificate has fewer days left.
    #[arg(long, value_name = "DAYS", default_value_t = 30)]
    warn_days: u32,
    /// CRITICAL when a certificate has fewer days left.
    #[arg(long, value_name = "DAYS", default_value_t = 7)]
    crit_days: u32,
    /// WARNING when mail has waited at least this long for pick-up (e.g. 24h; 0s: any
    /// waiting mail). Asks the running gateway through its control socket.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    warn_waiting: Option<Duration>,
    /// CRITICAL when mail has waited at least this long for pick-up.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    crit_waiting: Option<Duration>,
    /// Check the data directory's free disk space against the gateway's own thresholds
    /// (`[limits] warn_free_disk_mib`: WARNING, `min_free_disk_mib`: CRITICAL). Asks the
    /// running gateway through its control socket.
    #[arg(long)]
    disk: bool,
    /// WARNING when less than this many MiB are free (implies --disk).
    #[arg(long, value_name = "MIB")]
    warn_disk_mib: Option<u64>,
    /// CRITICAL when less than this many MiB are free (implies --disk).
    #[arg(long, value_name = "MIB")]
    crit_disk_mib: Option<u64>,
}

fn parse_port(text: &str) -> Result<(String, u16), String> {
    let (name, port) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected NAME=PORT, e.g. smtp=2525"))?;
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{port:?} is not a port number"))?;
    Ok((name.trim().to_owned(), port))
}

/// Runs the check and prints its output; the exit code is the state's.
pub fn main(args: CheckArgs, config: Option<PathBuf>, data_dir: Option<PathBuf>) -> ExitCode {
    let report = report(args, config, data_dir);
    print!("{}", report.render());
    ExitCode::from(report.state().exit_code())
}

/// Runs the check with the configuration as every command finds it.
pub fn report(args: CheckArgs, config: Option<PathBuf>, data_dir: Option<PathBuf>) -> Report {
    match super::load_config(config, data_dir) {
        Ok(config) => run(&config, args),
        Err(e) => Report::unknown(format!("cannot read the configuration: {e:#}")),
    }
}

fn run(config: &crate::config::Config, args: CheckArgs) -> Report {
    let options = CheckOptions {
        host: args.host,
        ports: args.ports,
        only: args.listeners,
        timeout: args.timeout,
        warn_days: args.warn_days,
        crit_days: args.crit_days,
        warn_waiting: args.warn_waiting,
        crit_waiting: args.crit_waiting,
        disk: args.disk,
        warn_disk_mib: args.warn_disk_mib,
        crit_disk_mib: args.crit_disk_mib,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return Report::unknown(format!("cannot start: {e}")),
    };
    runtime.block_on(crate::check::run(config, &options, SystemTime::now()))
}

/// Whether the command line asks for `check`: its first word that is neither an option
/// nor the value of a global option. A usage error there must exit UNKNOWN (3), where
/// clap's own usage exit code (2) would read as CRITICAL.
pub fn is_check_command(args: &[OsString]) -> bool {
    let mut words = args.iter().skip(1);
    while let Some(word) = words.next() {
        let Some(word) = word.to_str() else {
            return false;
        };
        match word {
            "--config" | "--data-dir" => {
                words.next();
            }
            _ if word.starts_with('-') => {}
            _ => return word == "check",
        }
    }
    false
}

/// A usage error of `gateway check`, in the plugin convention: one UNKNOWN status line on
/// stdout, clap's full message on stderr, exit code 3.
pub fn usage_error(error: &clap::Error) -> ExitCode {
    let rendered = error.render().to_string();
    let first = rendered
        .lines()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ");
    print!(
        "{}",
        Report::unknown(format!("bad usage: {first}")).render()
    );
    eprint!("{rendered}");
    ExitCode::from(crate::check::State::Unknown.exit_code())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_check_command_is_found_after_global_options() {
        assert!(is_check_command(&args(&["gateway", "check", "--bogus"])));
        assert!(is_check_command(&args(&[
            "gateway", "--config", "check", "check"
        ])));
        assert!(is_check_command(&args(&[
            "gateway",
            "--data-dir",
            "/d",
            "check"
        ])));
        assert!(is_check_command(&args(&["gateway", "--config=x", "check"])));
        assert!(!is_check_command(&args(&["gateway", "mailbox", "check"])));
        assert!(!is_check_command(&args(&["gateway", "--config", "check"])));
        assert!(!is_check_command(&args(&["gateway"])));
    }

    #[test]
    fn ports_are_name_equals_number() {
        assert_eq!(parse_port("smtp=2525"), Ok(("smtp".into(), 2525)));
        for bad in ["smtp", "smtp=", "smtp=0", "smtp=70000", "=x"] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
    }
}
