//! `gateway config init|check`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Subcommand;

use crate::config::{Config, DEFAULT_TEMPLATE};

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Write a commented configuration file with every default (and the data directory
    /// given with --data-dir, if any).
    Init {
        /// Where to write it (default: --config, else ./gateway.toml).
        #[arg(value_name = "PATH")]
        path: Option<PathBuf>,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Validate a configuration file and print the effective settings.
    Check {
        /// The file to check (default: --config, else ./gateway.toml).
        #[arg(value_name = "PATH")]
        path: Option<PathBuf>,
    },
}

/// `data_dir` is `--data-dir` (or `GATEWAY_DATA_DIR`), which `check` reports as the effective
/// data directory.
pub fn run(
    command: ConfigCommand,
    global: Option<&Path>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let default = || {
        global
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_CONFIG_FILE))
    };
    match command {
        ConfigCommand::Init { path, force } => {
            let path = path.unwrap_or_else(default);
            if path.exists() && !force {
                bail!(
                    "{} already exists (use --force to replace it)",
                    path.display()
                );
            }
            let text = match &data_dir {
                Some(dir) => crate::settings::config_file::template_with_data_dir(dir)?,
                None => DEFAULT_TEMPLATE.to_owned(),
            };
            let mut file = std::fs::File::create(&path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            println!("Wrote {}", path.display());
        }
        ConfigCommand::Check { path } => {
            let path = path.unwrap_or_else(default);
            let config = Config::load(&path)?;
            let configured = config.gateway.data_dir.clone();
            let config = config.overridden(data_dir);
            config
                .validate()
                .context("the data directory given on the command line is not usable")?;
            println!("{} is valid.", path.display());
            println!("  email domain: {}", config.gateway.email_domain);
            println!("  host name:    {}", config.gateway.host_name);
            if config.gateway.data_dir == configured {
                println!("  data dir:     {}", configured.display());
            } else {
                // What `serve` will use, and why it differs from the file.
                println!(
                    "  data dir:     {} (from --data-dir or GATEWAY_DATA_DIR; the file says {})",
                    config.gateway.data_dir.display(),
                    configured.display()
                );
            }
            for (name, addr) in config.listeners() {
                println!("  {name:<12}  {addr}");
            }
            if let Some(addr) = config.metrics.listen {
                println!(
                    "  {:<12}  {addr} (plain HTTP, no login: GET /metrics)",
                    "metrics"
                );
            }
            if config.logging.file {
                println!(
                    "  log files:    {} (daily, kept {} days)",
                    config
                        .gateway
                        .data_dir
                        .join(crate::logging::files::LOG_DIR)
                        .display(),
                    config.logging.retention_days
                );
            }
        }
    }
    Ok(())
}
