//! `gateway backup` and `gateway restore`.
//!
//! `backup` is the API's `CreateBackup` (see [`super::api_call`]): a running gateway writes
//! it while mail keeps flowing, a stopped one is backed up by this process. `restore` never
//! goes through a gateway: it writes a data directory no gateway may be using.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use serde_json::Value;

use super::api_call::{self, params, Target};
use super::mailbox_cmd::Format;
use crate::api::control::ControlClient;
use crate::backup::{self, BackupError, Manifest};

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// A new or empty directory to write the backup into.
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    #[command(flatten)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A backup directory, a snapshots folder (its newest snapshot), or a copy of a data
    /// directory (the newest snapshot in its snapshots/ folder).
    #[arg(long, value_name = "DIR")]
    pub from: PathBuf,
    /// Also write the backed-up configuration file here (a new file).
    #[arg(long, value_name = "PATH")]
    pub restore_config: Option<PathBuf>,
    #[command(flatten)]
    pub format: Format,
}

pub fn backup(args: BackupArgs, target: &Target) -> anyhow::Result<()> {
    // The gateway may run elsewhere (another working directory): it gets an absolute path.
    let to = std::path::absolute(&args.to)
        .with_context(|| format!("cannot use {}", args.to.display()))?;
    let directory = to.to_string_lossy().into_owned();
    let json = args.format.json;
    let mut last = None;
    let result = api_call::call_long(
        target,
        "CreateBackup",
        params([("directory", Some(directory.as_str()))]),
        &mut |percent, text| {
            if !json && last != percent {
                last = percent;
                let _ = writeln!(std::io::stderr(), "{}% {text}", percent.unwrap_or(0));
            }
        },
    )?;
    if json {
        return super::output::json(&result);
    }
    print_manifest(
        "Backup written to",
        &result["directory"],
        &result["manifest"],
    );
    Ok(())
}

pub fn restore(args: RestoreArgs, data_dir: &Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if runtime
        .block_on(ControlClient::connect(data_dir))?
        .is_some()
    {
        return Err(BackupError::GatewayRunning(data_dir.to_owned()).into());
    }
    let (used, manifest) = backup::restore(&args.from, data_dir, args.restore_config.as_deref())?;
    if args.format.json {
        return super::output::json(&serde_json::json!({
            "from": used.display().to_string(),
            "dataDir": data_dir.display().to_string(),
            "configuration": args.restore_config.as_ref().map(|p| p.display().to_string()),
            "manifest": manifest,
        }));
    }
    let manifest_value = serde_json::to_value(&manifest)?;
    print_manifest(
        &format!("Restored {} into", used.display()),
        &Value::String(data_dir.display().to_string()),
        &manifest_value,
    );
    let has_config = manifest.files.iter().any(|f| f.path == backup::CONFIG_FILE);
    match (&args.restore_config, has_config) {
        (Some(path), true) => println!("Configuration: {}", path.display()),
        (None, true) => println!(
            "Configuration: not restored; it is {} (copy it where the service reads it, or use --restore-config)",
            used.join(backup::CONFIG_FILE).display()
        ),
        (_, false) => println!("Configuration: the backup holds none (the gateway ran on defaults)"),
    }
    Ok(())
}

fn print_manifest(title: &str, directory: &Value, manifest: &Value) {
    println!("{title} {}", directory.as_str().unwrap_or_default());
    println!(
        "Taken:       {}",
        manifest["createdAt"].as_str().unwrap_or_default()
    );
    println!("Mailboxes:   {}", manifest["mailboxes"]);
    println!("Messages:    {}", manifest["messages"]);
    let parsed: Option<Manifest> = serde_json::from_value(manifest.clone()).ok();
    if let Some(manifest) = parsed {
        for file in &manifest.files {
            println!(
                "  {:<32} {:>12}  sha256 {}",
                file.path,
                super::output::size(file.bytes),
                file.sha256
            );
        }
    }
}
