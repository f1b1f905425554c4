//! `gateway settings show|set`: what the Configuration Tool sets, on the running gateway (at
//! once, and written back to the configuration file) or on the stopped one's file.

use clap::Subcommand;
use serde_json::Value;

use super::api_call::{self, params, Target};
use super::mailbox_cmd::Format;
use super::output;
use crate::api::FunctionFailed;
use crate::api::Params;

#[derive(Debug, Subcommand)]
pub enum SettingsCommand {
    /// Show the email domain, log level and console language.
    Show {
        #[command(flatten)]
        format: Format,
    },
    /// Change settings; each takes effect at once where it can and is kept in the
    /// configuration file.
    Set {
        /// The domain of the mailbox addresses (`<mailbox-id>@<domain>`).
        #[arg(long, value_name = "DOMAIN")]
        email_domain: Option<String>,
        /// error, warn, info, debug or trace.
        #[arg(long, value_name = "LEVEL")]
        log_level: Option<String>,
        /// The console's default language: en or de.
        #[arg(long, value_name = "LANGUAGE")]
        language: Option<String>,
        #[command(flatten)]
        format: Format,
    },
}

impl SettingsCommand {
    pub fn json(&self) -> bool {
        match self {
            SettingsCommand::Show { format } | SettingsCommand::Set { format, .. } => format.json,
        }
    }
}

pub fn run(command: SettingsCommand, target: &Target) -> anyhow::Result<()> {
    let json = command.json();
    let (function, request) = request(&command)?;
    let result = api_call::call(target, function, request)?;
    if json {
        return output::json(&result);
    }
    if matches!(command, SettingsCommand::Set { .. }) {
        println!("Settings saved.");
        println!();
    }
    print!("{}", render(&result));
    Ok(())
}

fn request(command: &SettingsCommand) -> anyhow::Result<(&'static str, Params)> {
    Ok(match command {
        SettingsCommand::Show { .. } => ("GetSettings", Params::new()),
        SettingsCommand::Set {
            email_domain,
            log_level,
            language,
            ..
        } => {
            if email_domain.is_none() && log_level.is_none() && language.is_none() {
                return Err(FunctionFailed {
                    kind: "invalid_input",
                    message:
                        "nothing to change: give --email-domain, --log-level and/or --language"
                            .to_owned(),
                    details: None,
                    http_status: 400,
                }
                .into());
            }
            (
                "SetSettings",
                params([
                    ("emailDomain", email_domain.as_deref()),
                    ("logLevel", log_level.as_deref()),
                    ("consoleLanguage", language.as_deref()),
                ]),
            )
        }
    })
}

/// One line per setting: the known ones with their labels, in a fixed order, then any other
/// the gateway reports.
fn render(result: &Value) -> String {
    const LABELS: [(&str, &str); 3] = [
        ("emailDomain", "Email domain"),
        ("logLevel", "Log level"),
        ("consoleLanguage", "Console language"),
    ];
    let Some(settings) = result.as_object() else {
        return format!("{result}\n");
    };
    let text = |value: &Value| match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let mut out = String::new();
    let mut line = |label: &str, value: &Value| {
        out.push_str(&format!("{:<18}{}\n", format!("{label}:"), text(value)));
    };
    for (key, label) in LABELS {
        if let Some(value) = settings.get(key) {
            line(label, value);
        }
    }
    for (key, value) in settings {
        if !LABELS.iter().any(|(k, _)| k == key) {
            line(key, value);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn command(args: &[&str]) -> SettingsCommand {
        let mut argv = vec!["gateway", "settings"];
        argv.extend_from_slice(args);
        match super::super::Cli::parse_from(argv).command {
            super::super::Command::Settings(command) => command,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn set_sends_only_what_was_given_and_refuses_nothing() {
        let (function, params) = request(&command(&["set", "--language", "de", "--json"])).unwrap();
        assert_eq!(function, "SetSettings");
        assert_eq!(
            Value::Object(params),
            serde_json::json!({"consoleLanguage": "de"})
        );
        let (function, params) = request(&command(&[
            "set",
            "--email-domain",
            "archive.example",
            "--log-level",
            "debug",
        ]))
        .unwrap();
        assert_eq!(function, "SetSettings");
        assert_eq!(
            Value::Object(params),
            serde_json::json!({"emailDomain": "archive.example", "logLevel": "debug"})
        );
        let nothing = request(&command(&["set"])).unwrap_err();
        assert_eq!(super::super::error_output::kind(&nothing), "invalid_input");
        assert_eq!(request(&command(&["show"])).unwrap().0, "GetSettings");
    }

    #[test]
    fn settings_read_as_labelled_lines_in_a_fixed_order() {
        let text = render(&serde_json::json!({
            "consoleLanguage": "de",
            "emailDomain": "archive.example",
            "logLevel": "info",
            "somethingNew": 3,
        }));
        assert_eq!(
            text,
            "Email domain:     archive.example\n\
             Log level:        info\n\
             Console language: de\n\
             somethingNew:     3\n"
        );
    }
}
