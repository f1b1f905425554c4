//! `gateway mailbox ...`: every command is one API function, called on the running gateway
//! or on the stopped gateway's store (see [`super::api_call`]); none re-implements a rule.

use std::fmt::Write as _;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Deserialize;
use serde_json::Value;

use super::api_call::{self, params, Target};
use super::output;
use crate::api::FunctionFailed;
use crate::api::Params;
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

pub fn run(command: MailboxCommand, target: &Target) -> anyhow::Result<()> {
    let json = command.json();
    let (function, request) = request(&command)?;
    let result = api_call::call(target, function, request)?;
    if json {
        return output::json(&result);
    }
    print!("{}", render(&command, result)?);
    Ok(())
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
fn render(command: &MailboxCommand, result: Value) -> anyhow::Result<String> {
    let mut out = String::new();
    match command {
        MailboxCommand::Create { .. } => render_new(&mut out, &result, "Mailbox created.")?,
        MailboxCommand::ResetPassword { .. } => render_new(&mut out, &result, "Password reset.")?,
        MailboxCommand::List { .. } => {
            let list: Vec<MailboxInfo> = parse(result)?;
            if list.is_empty() {
                writeln!(
                    out,
                    "No mailboxes. Create one with `gateway mailbox create --name NAME`."
                )?;
                return Ok(out);
            }
            writeln!(
                out,
                "{:<36}  {:<9}  {:>8}  {:>10}  NAME",
                "ID", "STATUS", "MESSAGES", "SIZE"
            )?;
            for m in &list {
                writeln!(
                    out,
                    "{:<36}  {:<9}  {:>8}  {:>10}  {}",
                    m.id,
                    m.status,
                    m.message_count,
                    output::size(m.message_bytes),
                    m.name
                )?;
            }
        }
        MailboxCommand::Show { .. }
        | MailboxCommand::Edit { .. }
        | MailboxCommand::Suspend { .. }
        | MailboxCommand::Activate { .. } => render_info(&mut out, &result)?,
        MailboxCommand::Delete { .. } => {
            #[derive(Deserialize)]
            struct Deleted {
                id: String,
            }
            let deleted: Deleted = parse(result)?;
            writeln!(out, "Mailbox {} deleted.", deleted.id)?;
        }
    }
    Ok(out)
}

/// The typed view of a result, for the human output.
fn parse<T: serde::de::DeserializeOwned>(result: Value) -> anyhow::Result<T> {
    serde_json::from_value(result).context("the gateway's answer has an unexpected shape")
}

fn render_info(out: &mut String, result: &Value) -> anyhow::Result<()> {
    let info: MailboxInfo = parse(result.clone())?;
    writeln!(out, "ID:          {}", info.id)?;
    writeln!(out, "Address:     {}", info.address)?;
    writeln!(out, "Name:        {}", info.name)?;
    if !info.description.is_empty() {
        writeln!(out, "Description: {}", info.description)?;
    }
    writeln!(out, "Status:      {}", info.status)?;
    writeln!(out, "Created:     {}", output::time(info.created_at))?;
    writeln!(
        out,
        "Messages:    {} ({})",
        info.message_count,
        output::size(info.message_bytes)
    )?;
    if let Some(oldest) = info.oldest_message_at {
        writeln!(out, "Oldest:      {}", output::time(oldest))?;
    }
    Ok(())
}

fn render_new(out: &mut String, result: &Value, headline: &str) -> anyhow::Result<()> {
    let password = result
        .get("password")
        .and_then(Value::as_str)
        .context("the gateway's answer holds no password")?;
    writeln!(out, "{headline}")?;
    writeln!(out)?;
    render_info(out, result)?;
    writeln!(out, "Password:    {password}")?;
    writeln!(out)?;
    writeln!(
        out,
        "Keep this password safe now: it is shown only this once and the gateway does not"
    )?;
    writeln!(
        out,
        "store it. Without it nobody, administrators included, can decrypt this mailbox."
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn command(args: &[&str]) -> MailboxCommand {
        let mut argv = vec!["gateway", "mailbox"];
        argv.extend_from_slice(args);
        match super::super::Cli::parse_from(argv).command {
            super::super::Command::Mailbox(command) => command,
            other => panic!("{other:?}"),
        }
    }

    fn request_of(args: &[&str]) -> (&'static str, Value) {
        let (function, params) = request(&command(args)).unwrap();
        (function, Value::Object(params))
    }

    #[test]
    fn edit_suspend_and_activate_are_set_mailbox_properties() {
        let id = "mbx-0123456789abcdef0123456789abcdef";
        assert_eq!(
            request_of(&["edit", id, "--name", "EU"]),
            (
                "SetMailboxProperties",
                serde_json::json!({"id": id, "name": "EU"})
            )
        );
        assert_eq!(
            request_of(&["suspend", id]),
            (
                "SetMailboxProperties",
                serde_json::json!({"id": id, "status": "suspended"})
            )
        );
        assert_eq!(
            request_of(&["activate", id, "--json"]),
            (
                "SetMailboxProperties",
                serde_json::json!({"id": id, "status": "active"})
            )
        );
        assert_eq!(
            request_of(&["create", "--name", "Sales"]),
            (
                "CreateMailbox",
                serde_json::json!({"name": "Sales", "description": ""})
            )
        );
        let nothing = request(&command(&["edit", id])).unwrap_err();
        assert_eq!(super::super::error_output::kind(&nothing), "invalid_input");
    }

    fn info(oldest: Option<u64>) -> Value {
        let mut value = serde_json::json!({
            "id": "mbx-0123456789abcdef0123456789abcdef",
            "address": "mbx-0123456789abcdef0123456789abcdef@archive.test",
            "name": "Sales",
            "description": "",
            "status": "active",
            "createdAt": 0,
            "messageCount": 2,
            "messageBytes": 2048,
        });
        if let Some(oldest) = oldest {
            value["oldestMessageAt"] = oldest.into();
        }
        value
    }

    #[test]
    fn the_oldest_message_line_appears_only_when_the_gateway_reports_one() {
        let show = command(&["show", "mbx-0123456789abcdef0123456789abcdef"]);
        let with = render(&show, info(Some(86_400_000))).unwrap();
        assert!(
            with.contains("Messages:    2 (2.0 KiB)\nOldest:      1970-01-02 00:00:00 UTC\n"),
            "{with}"
        );
        let without = render(&show, info(None)).unwrap();
        assert!(!without.contains("Oldest"), "{without}");
        // A null (no message held) is no line either.
        let mut empty = info(None);
        empty["oldestMessageAt"] = Value::Null;
        assert!(!render(&show, empty).unwrap().contains("Oldest"));
    }

    #[test]
    fn a_new_password_is_shown_with_its_warning_and_a_missing_one_is_an_error() {
        let create = command(&["create", "--name", "Sales"]);
        let mut created = info(None);
        created["password"] = "abcd-efgh".into();
        let text = render(&create, created).unwrap();
        assert!(text.starts_with("Mailbox created.\n"), "{text}");
        assert!(text.contains("Password:    abcd-efgh\n") && text.contains("shown only this once"));
        assert!(render(&create, info(None)).is_err());
    }
}
