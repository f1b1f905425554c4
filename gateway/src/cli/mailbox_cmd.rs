//! `gateway mailbox ...`: every command calls the service layer; none re-implements a rule.

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;

use super::output;
use crate::config::Config;
use crate::mailbox::{parse_id_or_address, MailboxId};
use crate::service::{Gateway, MailboxInfo, NewMailbox, ServiceError};
use crate::store::{MailboxStatus, StoreError};

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
    json: bool,
}

pub fn run(command: MailboxCommand, config: &Config) -> anyhow::Result<()> {
    let gateway = Gateway::open(config).map_err(explain_open_error)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(dispatch(command, &gateway))
}

fn explain_open_error(e: ServiceError) -> anyhow::Error {
    match e {
        // The typed error stays in the chain so `--json` can report its kind.
        ServiceError::Store(StoreError::Locked) => anyhow::Error::new(StoreError::Locked).context(
            "the store is in use by a running gateway; stop it first (`gateway serve` holds the store exclusively)",
        ),
        other => anyhow::Error::new(other).context("cannot open the store"),
    }
}

fn parse(mailbox: &str) -> anyhow::Result<MailboxId> {
    parse_id_or_address(mailbox).with_context(|| format!("`{mailbox}`"))
}

async fn dispatch(command: MailboxCommand, gw: &Gateway) -> anyhow::Result<()> {
    match command {
        MailboxCommand::Create {
            name,
            description,
            format,
        } => {
            let created = gw.create_mailbox(&name, &description).await?;
            print_new(&created, format.json, "Mailbox created.")
        }
        MailboxCommand::List { format } => {
            let list = gw.list_mailboxes()?;
            if format.json {
                return print_json(&list);
            }
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
        MailboxCommand::Show { mailbox, format } => {
            print_info(&gw.mailbox(&parse(&mailbox)?)?, format.json)
        }
        MailboxCommand::Edit {
            mailbox,
            name,
            description,
            format,
        } => {
            if name.is_none() && description.is_none() {
                anyhow::bail!("nothing to change: give --name and/or --description");
            }
            let info = gw
                .edit_mailbox(&parse(&mailbox)?, name.as_deref(), description.as_deref())
                .await?;
            print_info(&info, format.json)
        }
        MailboxCommand::Suspend { mailbox, format } => {
            let info = gw
                .set_status(&parse(&mailbox)?, MailboxStatus::Suspended)
                .await?;
            print_info(&info, format.json)
        }
        MailboxCommand::Activate { mailbox, format } => {
            let info = gw
                .set_status(&parse(&mailbox)?, MailboxStatus::Active)
                .await?;
            print_info(&info, format.json)
        }
        MailboxCommand::Delete { mailbox, format } => {
            let id = parse(&mailbox)?;
            gw.delete_mailbox(&id).await?;
            if format.json {
                print_json(&serde_json::json!({ "id": id, "deleted": true }))
            } else {
                println!("Mailbox {id} deleted.");
                Ok(())
            }
        }
        MailboxCommand::ResetPassword { mailbox, format } => {
            let created = gw.reset_password(&parse(&mailbox)?).await?;
            print_new(&created, format.json, "Password reset.")
        }
    }
}

fn print_json(value: &impl Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn print_info(info: &MailboxInfo, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(info);
    }
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
    if let Some(oldest) = info.oldest_message_at {
        println!("Oldest:      {}", output::time(oldest));
    }
    Ok(())
}

fn print_new(created: &NewMailbox, json: bool, headline: &str) -> anyhow::Result<()> {
    let password = created.password.reveal_for_display();
    if json {
        #[derive(Serialize)]
        struct Created<'a> {
            #[serde(flatten)]
            info: &'a MailboxInfo,
            password: &'a str,
        }
        return print_json(&Created {
            info: &created.info,
            password: password.as_str(),
        });
    }
    println!("{headline}");
    println!();
    print_info(&created.info, false)?;
    println!("Password:    {}", password.as_str());
    println!();
    println!("Keep this password safe now: it is shown only this once and the gateway does not");
    println!("store it. Without it nobody, administrators included, can decrypt this mailbox.");
    Ok(())
}
