//! `gateway admin ...`: the administrator account, from the gateway's own machine.

use anyhow::Context;
use clap::Subcommand;
use serde_json::Value;

use super::api_call::{self, Target};
use super::mailbox_cmd::Format;
use super::output;
use crate::api::Params;

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Give `admin` a new random password and print it once (recovery; works with the
    /// gateway running or stopped).
    ResetPassword {
        #[command(flatten)]
        format: Format,
    },
}

impl AdminCommand {
    pub fn json(&self) -> bool {
        match self {
            AdminCommand::ResetPassword { format } => format.json,
        }
    }
}

pub fn run(command: AdminCommand, target: &Target) -> anyhow::Result<()> {
    match command {
        AdminCommand::ResetPassword { format } => {
            // Host-only: the network API does not have it.
            let result = api_call::call(target, "ResetAdminPassword", Params::new())?;
            if format.json {
                return output::json(&result);
            }
            let password = result
                .get("password")
                .and_then(Value::as_str)
                .context("the gateway's answer holds no password")?;
            println!("New password for the administrator `admin`:");
            println!();
            println!("    {password}");
            println!();
            println!("It is shown only this once. Log in to the console or the API as `admin`");
            println!("with it; the previous password and every login with it no longer work.");
            Ok(())
        }
    }
}
