//! `gateway mailbox ...`: every command is one API function, called on the running gateway
//! or on the stopped gateway's store (see [`super::api_call`]); none re-implements a rule.

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Deserialize;
use serde_json::Value;

use super::api_call::{self, params, FunctionFailed};
use super::output;
use crate::api::Params;
use crate::config::Config;
use crate::service::MailboxInfo;

#[derive(Debug, Subcommand)]
pub enum MailboxCommand {
    /// Create a mailbox; its password is shown once and never stored.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        format: Format,
    },
    /// List all mailboxes.
    List {
        #[command(flatten)]
        format: Format,
    },
    /// Show one mailbox.
    Show {
        /// Mailbox id or address.
        mailbox: String,
        #[command(flatten)]
        format: Format,
    },
    /// Change a mailbox's name or description.
    Edit {
        mailbox: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        format: Format,
    },
    /// Stop accepting new messages (senders get a temporary error); pick-up still works.
    Suspend {
        mailbox: String,
        #[command(flatten)]
        format: Format,
    },
    /// Accept new messages again.
    Activate {
        mailbox: String,
        #[command(flatten)]
        format: Format,
    },
    /// Delete a mailbox (it must be suspended and empty).
    Delete {
        mailbox: String,
        #[command(flatten)]
        format: Format,
    },
    /// New key pair and password (the mailbox must be suspended and empty).
    ResetPassword {
        mailbox: String,
        #[command(flatten)]
        format: Format,
    },
}

impl MailboxCommand {
    /// Whether `--json` was given.
    pub fn json(&self) -> bool {
        match self {
            MailboxCommand::Create { format, .. }
            | MailboxCommand::List { format }
            | MailboxCommand::Show { format, .. }
            | MailboxCommand::Edit { format, .. }
            | MailboxCommand::Suspend { format, .. }
            | MailboxCommand::Activate { format, .. }
            | MailboxCommand::Delete { format, .. }
            | MailboxCommand::ResetPassword { format, .. } => format.json,
        }
    }
}

#[derive(Debug, Args)]
pub struct Format {
    /// Machine-readable JSON output.
    #[arg(long)]
    pub json: bool,
}

pub fn run(command: MailboxCommand, config: &Config) -> anyhow::Result<()> {
    let json = command.json();
    let (function, request) = request(&command)?;
    let result = api_call::call(config, function, request)?;
    if json {
        return output::json(&result);
    }
    print(&command, result)
}

/// The API function and parameters for `command`.
fn request(command: &MailboxCommand) -> anyhow::Result<(&'static str, Params)> {
    let id = |mailbox: &str| params([("id", Some(mailbox))]);
    Ok(match command {
        MailboxCommand::Create {
            name, description, ..
        } => (
            "CreateMailbox",
            params([
                ("name", Some(name.as_str())),
                ("description", Some(description.as_str())),
            ]),
        ),
        MailboxCommand::List { .. } => ("GetMailboxes", Params::new()),
        MailboxCommand::Show { mailbox, .. } => ("GetMailbox", id(mailbox)),
        MailboxCommand::Edit {
            mailbox,
            name,
            description,
            ..
        } => {
            if name.is_none() && description.is_none() {
                return Err(nothing_to_change());
            }
            (
                "SetMailboxProperties",
                params([
                    ("id", Some(mailbox.as_str())),
                    ("name", name.as_deref()),
                    ("description", description.as_deref()),
                ]),
            )
        }
        MailboxCommand::Suspend { mailbox, .. } => (
            "SetMailboxProperties",
            params([
                ("id", Some(mailbox.as_str())),
                ("status", Some("suspended")),
            ]),
        ),
        MailboxCommand::Activate { mailbox, .. } => (
            "SetMailboxProperties",
            params([("id", Some(mailbox.as_str())), ("status", Some("active"))]),
        ),
        MailboxCommand::Delete { mailbox, .. } => ("DeleteMailbox", id(mailbox)),
        MailboxCommand::ResetPassword { mailbox, .. } => ("ResetMailboxPassword", id(mailbox)),
    })
}

fn nothing_to_change() -> anyhow::Error {
    FunctionFailed {
        kind: "invalid_input",
        message: "nothing to change: give --name and/or --description".to_owned(),
        details: None,
        http_status: 400,
    }
    .into()
}

/// The human output of a succeeded `command`.
fn print(command: &MailboxCommand, result: Value) -> anyhow::Result<()> {
    match command {
        MailboxCommand::Create { .. } => print_new(&result, "Mailbox created."),
        MailboxCommand::ResetPassword { .. } => print_new(&result, "Password reset."),
        MailboxCommand::List { .. } => {
            let list: Vec<MailboxInfo> = parse(result)?;
            if list.is_empty() {
                println!("No mailboxes. Create one with `gateway mailbox create --name NAME`.");
                return Ok(());
            }
            println!(
                "{:<36}  {:<9}  {:>8}  {:>10}  NAME",
                "ID", "STATUS", "MESSAGES", "SIZE"
            );
            for m in &list {
                println!(
                    "{:<36}  {:<9}  {:>8}  {:>10}  {}",
                    m.id,
                    m.status,
                    m.message_count,
                    output::size(m.message_bytes),
                    m.name
                );
            }
            Ok(())
        }
        MailboxCommand::Show { .. }
        | MailboxCommand::Edit { .. }
        | MailboxCommand::Suspend { .. }
        | MailboxCommand::Activate { .. } => print_info(&result),
        MailboxCommand::Delete { .. } => {
            #[derive(Deserialize)]
            struct Deleted {
                id: String,
            }
            let deleted: Deleted = parse(result)?;
            println!("Mailbox {} deleted.", deleted.id);
            Ok(())
        }
    }
}

/// The typed view of a result, for the human output.
fn parse<T: serde::de::DeserializeOwned>(result: Value) -> anyhow::Result<T> {
    serde_json::from_value(result).context("the gateway's answer has an unexpected shape")
}

fn print_info(result: &Value) -> anyhow::Result<()> {
    let info: MailboxInfo = parse(result.clone())?;
    println!("ID:          {}", info.id);
    println!("Address:     {}", info.address);
    println!("Name:        {}", info.name);
    if !info.description.is_empty() {
        println!("Description: {}", info.description);
    }
    println!("Status:      {}", info.status);
    println!("Created:     {}", output::time(info.created_at));
    println!(
        "Messages:    {} ({})",
        info.message_count,
        output::size(info.message_bytes)
    );
    // Read from the JSON, so a gateway that does not report it simply leaves the line out.
    if let Some(oldest) = result.get("oldestMessageAt").and_then(Value::as_u64) {
        println!("Oldest:      {}", output::time(oldest));
    }
    Ok(())
}

fn print_new(result: &Value, headline: &str) -> anyhow::Result<()> {
    let password = result
        .get("password")
        .and_then(Value::as_str)
        .context("the gateway's answer holds no password")?;
    println!("{headline}");
    println!();
    print_info(result)?;
    println!("Password:    {password}");
    println!();
    println!("Keep this password safe now: it is shown only this once and the gateway does not");
    println!("store it. Without it nobody, administrators included, can decrypt this mailbox.");
    Ok(())
}
