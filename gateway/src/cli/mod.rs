//! The `gateway` command line. The binary only calls [`run`].

mod config_cmd;
mod mailbox_cmd;
mod output;
mod serve;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::Config;

/// Default configuration file, looked up in the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "gateway.toml";

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
}

/// Parses the command line and runs it.
pub fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Config(command) => config_cmd::run(command, cli.config.as_deref()),
        Command::Mailbox(command) => {
            let config = load_config(cli.config, cli.data_dir)?;
            crate::logging::init(crate::config::LogLevel::Warn);
            mailbox_cmd::run(command, &config)
        }
        Command::Serve => {
            let config = load_config(cli.config, cli.data_dir)?;
            crate::logging::init(config.gateway.log_level);
            serve::run(config)
        }
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
