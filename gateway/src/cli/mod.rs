//! The `gateway` command line. The binary only calls [`run`].

mod admin_cmd;
pub mod api_call;
mod backup_cmd;
pub mod build_check;
mod cert_cmd;
mod check_cmd;
mod config_cmd;
pub mod error_output;
mod mailbox_cmd;
mod output;
mod reload;
mod serve;
mod settings_cmd;
mod setup;
mod store_cmd;

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{Config, DEFAULT_CONFIG_FILE};
use crate::settings::SettingsFile;

#[derive(Debug, Parser)]
#[command(
    name = "gateway",
    version,
    about = "Email-archiving gateway: SMTP journal target, SMTP/POP3 proxy and encrypted pick-up mailboxes"
)]
pub struct Cli {
    /// Configuration file. Without it, ./gateway.toml is used if present, else built-in defaults.
    #[arg(long, global = true, env = "GATEWAY_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Data directory (store, spool, certificates); overrides the configuration file.
    #[arg(long, global = true, env = "GATEWAY_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve,
    /// Write or check the configuration file.
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
    /// Manage mailboxes.
    #[command(subcommand)]
    Mailbox(mailbox_cmd::MailboxCommand),
    /// The administrator account.
    #[command(subcommand)]
    Admin(admin_cmd::AdminCommand),
    /// Email domain, log level and console language.
    #[command(subcommand)]
    Settings(settings_cmd::SettingsCommand),
    /// The TLS certificate every listener presents.
    #[command(subcommand)]
    Cert(cert_cmd::CertCommand),
    /// First run: email domain, host name, certificate and log level, checked and written to
    /// the configuration file.
    Setup(setup::SetupArgs),
    /// Write a consistent backup (store, certificates, retrieval key, configuration) into a
    /// new or empty directory, while the gateway runs or not.
    Backup(backup_cmd::BackupArgs),
    /// Restore a backup into an empty data directory (the gateway must not run on it).
    Restore(backup_cmd::RestoreArgs),
    /// Monitoring probe (Nagios/Icinga plugin): listeners, certificates, waiting mail.
    Check(check_cmd::CheckArgs),
    /// The store itself: copy it between redb and PostgreSQL, create or upgrade its tables.
    #[command(subcommand)]
    Store(store_cmd::StoreCommand),
}

/// Parses the command line, runs it, and reports a failure (as a JSON object for a `--json`
/// command). The binary's `main`.
pub fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
            let help = matches!(
                error.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            );
            if !help && check_cmd::is_check_command(&args) {
                return check_cmd::usage_error(&error);
            }
            error.exit()
        }
    };
    // The plugin convention's exit codes, not the other commands' success or failure.
    if let Command::Check(args) = cli.command {
        return check_cmd::main(args, cli.config, cli.data_dir);
    }
    let json = cli.command.json();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            error_output::report(&error, json);
            std::process::ExitCode::FAILURE
        }
    }
}

impl Command {
    /// Whether the command writes JSON, so its errors are JSON too.
    pub fn json(&self) -> bool {
        match self {
            Command::Mailbox(command) => command.json(),
            Command::Admin(command) => command.json(),
            Command::Settings(command) => command.json(),
            Command::Cert(command) => command.json(),
            Command::Backup(args) => args.format.json,
            Command::Restore(args) => args.format.json,
            Command::Serve
            | Command::Config(_)
            | Command::Setup(_)
            | Command::Check(_)
            | Command::Store(_) => false,
        }
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Config(command) => config_cmd::run(command, cli.config.as_deref(), cli.data_dir),
        Command::Mailbox(command) => mailbox_cmd::run(command, &target(cli.config, cli.data_dir)?),
        Command::Admin(command) => admin_cmd::run(command, &target(cli.config, cli.data_dir)?),
        Command::Settings(command) => {
            settings_cmd::run(command, &target(cli.config, cli.data_dir)?)
        }
        Command::Cert(command) => cert_cmd::run(command, &target(cli.config, cli.data_dir)?),
        Command::Setup(args) => setup::run(args, cli.config.as_deref(), cli.data_dir),
        Command::Backup(args) => backup_cmd::backup(args, &target(cli.config, cli.data_dir)?),
        Command::Restore(args) => {
            let config = load_config(cli.config, cli.data_dir)?;
            crate::logging::init(crate::config::LogLevel::Warn);
            backup_cmd::restore(args, &config.gateway.data_dir)
        }
        Command::Store(command) => {
            let config = load_config(cli.config, cli.data_dir)?;
            crate::logging::init(crate::config::LogLevel::Warn);
            store_cmd::run(command, &config)
        }
        Command::Check(args) => {
            // Reached only through `run` (tests, embedding): no exit code to give, so a
            // state other than OK is an error. The binary goes through `main`.
            let report = check_cmd::report(args, cli.config, cli.data_dir);
            print!("{}", report.render());
            anyhow::ensure!(
                report.state() == crate::check::State::Ok,
                "the check found problems"
            );
            Ok(())
        }
        Command::Serve => {
            build_check::check_this_binary()?;
            // Before loading: whether the file exists now decides whether a settings change
            // may create it.
            let settings_file = settings_file(cli.config.as_deref());
            let config = load_config(cli.config, cli.data_dir.clone())?;
            let log = crate::logging::init_with(&crate::logging::LogOptions::from_config(&config))?;
            // Before any secret can reach memory: no core dumps, no debugger attachment.
            crate::hardening::disable_core_dumps_and_ptrace()
                .context("cannot protect the process's memory")?;
            tracing::info!("core dumps and debugger attachment disabled");
            open_files(config.limits.max_connections);
            serve::run(config, cli.data_dir, settings_file, log)
        }
    }
}

/// Raises the open-files limit as far as allowed, and says when it is still below what
/// `max_connections` may need (a connection refused with EMFILE is a client refused).
fn open_files(max_connections: u32) {
    let needed = crate::net::descriptors_needed(max_connections);
    match crate::net::raise_open_files_limit() {
        Ok(limits) if limits.suffices(needed) => {
            tracing::info!(before = limits.before, now = limits.now, "open files limit");
        }
        Ok(limits) => tracing::warn!(
            limit = limits.now,
            needed,
            "the open files limit is below what [limits] max_connections may use; raise the \
             hard limit (systemd: LimitNOFILE) or lower max_connections"
        ),
        Err(error) => tracing::warn!(%error, "cannot raise the open files limit"),
    }
}

/// The gateway a management command administers (running or not), with quiet logging.
fn target(config: Option<PathBuf>, data_dir: Option<PathBuf>) -> anyhow::Result<api_call::Target> {
    // Before loading, as for `serve`: the same file decides where a stopped gateway's
    // settings are saved.
    let settings_file = settings_file(config.as_deref());
    let config = load_config(config, data_dir)?;
    crate::logging::init(crate::config::LogLevel::Warn);
    Ok(api_call::Target {
        config,
        settings_file,
    })
}

/// Where settings changed at run time are written: the file given (`--config`,
/// `GATEWAY_CONFIG`), else `./gateway.toml`, created from the commented template at the first
/// change when the gateway started without one. Absolute, so it names the same file whatever
/// the working directory later is.
pub fn settings_file(path: Option<&Path>) -> SettingsFile {
    let (path, create_if_missing) = match path {
        Some(path) => (path.to_path_buf(), false),
        None => {
            let default = PathBuf::from(DEFAULT_CONFIG_FILE);
            let missing = !default.exists();
            (default, missing)
        }
    };
    let path = std::path::absolute(&path).unwrap_or(path);
    SettingsFile {
        path,
        create_if_missing,
    }
}

/// The effective configuration: an explicit path must exist; the default path is optional.
pub fn load_config(path: Option<PathBuf>, data_dir: Option<PathBuf>) -> anyhow::Result<Config> {
    let config = match path {
        Some(path) => Config::load(&path)?,
        None => {
            let default = PathBuf::from(DEFAULT_CONFIG_FILE);
            if default.exists() {
                Config::load(&default)?
            } else {
                Config::default()
            }
        }
    };
    let config = config.overridden(data_dir);
    config
        .validate()
        .context("the data directory given on the command line is not usable")?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_configuration_file_is_never_created_from_the_template() {
        let file = settings_file(Some(Path::new("conf/gateway.toml")));
        assert!(!file.create_if_missing);
        assert!(file.path.is_absolute());
        assert!(file.path.ends_with("conf/gateway.toml"));
    }
}
