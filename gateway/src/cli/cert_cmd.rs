//! `gateway cert ...`: the certificate every listener presents. Each command is one API
//! function (see [`super::api_call`]), so a running gateway swaps the new certificate in at
//! once.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use serde_json::Value;

use super::api_call::{self, params, Target};
use super::mailbox_cmd::Format;
use super::output;
use crate::api::Params;

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Show the certificate the listeners present.
    Show {
        #[command(flatten)]
        format: Format,
    },
    /// Create a new self-signed certificate for the host name and present it.
    SelfSigned {
        /// A further name (DNS name or IP address) for the certificate; repeatable.
        #[arg(long = "name", value_name = "N")]
        names: Vec<String>,
        #[command(flatten)]
        format: Format,
    },
    /// Import a PKCS#12 file (.p12/.pfx) or a PEM certificate chain with its private key, and
    /// present it. The PKCS#12 password comes from --password-file or GATEWAY_CERT_PASSWORD.
    Import {
        /// A .p12/.pfx file, or a PEM file with the chain (server certificate first) and,
        /// unless `--key` is given, the unencrypted private key.
        file: PathBuf,
        /// PEM file with the private key, when it is not in FILE.
        #[arg(long, value_name = "KEYFILE")]
        key: Option<PathBuf>,
        /// File whose first line is the PKCS#12 password.
        #[arg(long, value_name = "F")]
        password_file: Option<PathBuf>,
        #[command(flatten)]
        format: Format,
    },
    /// Order a certificate from an ACME CA (Let's Encrypt by default) with HTTP-01, present
    /// it and renew it from then on. The CA must reach this machine on port 80
    /// ([listen.acme_http]); on failure the certificate in use stays.
    Acme {
        /// A DNS name for the certificate (the first is its common name); repeatable.
        #[arg(long = "domain", value_name = "D", required = true)]
        domains: Vec<String>,
        /// Contact address for the CA's expiry and policy notices.
        #[arg(long, value_name = "E")]
        email: Option<String>,
        /// Agree to the CA's terms of service (required).
        #[arg(long)]
        accept_tos: bool,
        /// The CA's ACME directory URL (default: the configured one, else Let's Encrypt).
        #[arg(long = "directory", value_name = "URL")]
        directory: Option<String>,
        /// PEM file with the CA certificate that signs the ACME server's HTTPS (a private
        /// CA or a test CA).
        #[arg(long, value_name = "PEM")]
        ca_file: Option<PathBuf>,
        /// Run the whole order against the staging directory first, then production.
        #[arg(long)]
        staging_first: bool,
        /// The staging directory (default: Let's Encrypt's when ordering from it).
        #[arg(long = "staging-directory", value_name = "URL")]
        staging_directory: Option<String>,
        #[command(flatten)]
        format: Format,
    },
    /// Renew the ACME certificate now and present the new one.
    Renew {
        #[command(flatten)]
        format: Format,
    },
}

impl CertCommand {
    pub fn json(&self) -> bool {
        match self {
            CertCommand::Show { format }
            | CertCommand::SelfSigned { format, .. }
            | CertCommand::Import { format, .. }
            | CertCommand::Acme { format, .. }
            | CertCommand::Renew { format } => format.json,
        }
    }
}

pub fn run(command: CertCommand, target: &Target) -> anyhow::Result<()> {
    let json = command.json();
    let (function, request) = request(&command)?;
    let result = if matches!(
        command,
        CertCommand::Acme { .. } | CertCommand::Renew { .. }
    ) {
        // Orders take seconds to minutes: say what happens meanwhile (on stderr, so
        // `--json` output stays clean).
        api_call::call_polling(target, function, request, |text| eprintln!("{text}"))?
    } else {
        api_call::call(target, function, request)?
    };
    if json {
        return output::json(&result);
    }
    print!("{}", render(&result));
    Ok(())
}

fn request(command: &CertCommand) -> anyhow::Result<(&'static str, Params)> {
    Ok(match command {
        CertCommand::Show { .. } => ("GetCertificateInfo", Params::new()),
        CertCommand::SelfSigned { names, .. } => {
            let names = names.join(",");
            let names = (!names.is_empty()).then_some(names.as_str());
            ("CreateSelfSignedCertificate", params([("names", names)]))
        }
        CertCommand::Renew { .. } => ("RenewCertificate", Params::new()),
        CertCommand::Acme {
            domains,
            email,
            accept_tos,
            directory,
            ca_file,
            staging_first,
            staging_directory,
            ..
        } => {
            if !accept_tos {
                anyhow::bail!(
                    "ordering a certificate means agreeing to the CA's terms of service \
                     (Let's Encrypt: https://letsencrypt.org/repository/); add --accept-tos"
                );
            }
            let domains = domains.join(",");
            let ca_pem = ca_file.as_deref().map(read).transpose()?;
            (
                "RequestAcmeCertificate",
                params([
                    ("domains", Some(domains.as_str())),
                    ("email", email.as_deref()),
                    ("acceptTermsOfService", Some("true")),
                    ("directoryUrl", directory.as_deref()),
                    ("caPem", ca_pem.as_deref()),
                    ("stagingFirst", staging_first.then_some("true")),
                    ("stagingDirectoryUrl", staging_directory.as_deref()),
                ]),
            )
        }
        CertCommand::Import {
            file,
            key,
            password_file,
            ..
        } => {
            if is_pkcs12(file) {
                let bytes = std::fs::read(file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                let password = pkcs12_password(password_file.as_deref())?;
                let encoded = data_encoding::BASE64.encode(&bytes);
                return Ok((
                    "ImportCertificate",
                    params([
                        ("pkcs12", Some(encoded.as_str())),
                        ("password", Some(password.as_str())),
                    ]),
                ));
            }
            let chain = read(file)?;
            let key = match key {
                Some(path) => read(path)?,
                None => chain.clone(),
            };
            (
                "ImportCertificate",
                params([
                    ("certificateChain", Some(chain.as_str())),
                    ("privateKey", Some(key.as_str())),
                ]),
            )
        }
    })
}

/// Never an argument (it would show in `ps` and the shell history): a file, or the
/// environment.
fn pkcs12_password(file: Option<&Path>) -> anyhow::Result<String> {
    if let Some(path) = file {
        let text = read(path)?;
        return Ok(text.lines().next().unwrap_or_default().to_owned());
    }
    if let Ok(password) = std::env::var(PASSWORD_VAR) {
        return Ok(password);
    }
    prompt_password()
}

/// Asks on the terminal, without echo; refuses when there is no terminal to ask on.
fn prompt_password() -> anyhow::Result<String> {
    use rustix::termios::{isatty, tcgetattr, tcsetattr, LocalModes, OptionalActions};
    let stdin = std::io::stdin();
    if !isatty(&stdin) {
        anyhow::bail!(
            "a PKCS#12 file needs its password: give --password-file FILE or set {PASSWORD_VAR}"
        );
    }
    eprint!("PKCS#12 password: ");
    let old = tcgetattr(&stdin).context("cannot read the terminal's settings")?;
    let mut quiet = old.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    tcsetattr(&stdin, OptionalActions::Now, &quiet).context("cannot turn off echo")?;
    let mut line = String::new();
    let read = stdin.read_line(&mut line);
    // Echo back on whatever the read did.
    let restored = tcsetattr(&stdin, OptionalActions::Now, &old);
    eprintln!();
    read.context("cannot read the password")?;
    restored.context("cannot turn echo back on")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

const PASSWORD_VAR: &str = "GATEWAY_CERT_PASSWORD";

fn is_pkcs12(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("p12") || e.eq_ignore_ascii_case("pfx"))
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// `GetCertificateInfo` answers the certificate; the changing functions wrap it with the
/// warnings.
fn render(result: &Value) -> String {
    let (certificate, warnings) = match result.get("certificate") {
        Some(certificate) => (certificate, result["warnings"].as_array()),
        None => (result, None),
    };
    let text = |key: &str| certificate[key].as_str().unwrap_or_default().to_owned();
    let list = |key: &str| {
        certificate[key]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let mut out = String::new();
    let _ = writeln!(out, "subject:      {}", text("subject"));
    let _ = writeln!(out, "issuer:       {}", text("issuer"));
    let _ = writeln!(out, "DNS names:    {}", list("dnsNames"));
    let _ = writeln!(out, "IP addresses: {}", list("ipAddresses"));
    let _ = writeln!(out, "not before:   {}", text("notBefore"));
    let _ = writeln!(out, "not after:    {}", text("notAfter"));
    let _ = writeln!(out, "days left:    {}", certificate["daysLeft"]);
    let _ = writeln!(out, "SHA-256:      {}", text("sha256Fingerprint"));
    let _ = writeln!(out, "key type:     {}", text("keyType"));
    let _ = writeln!(out, "source:       {}", text("source"));
    if let Some(renewal) = certificate.get("renewal").filter(|r| r.is_object()) {
        render_renewal(&mut out, renewal);
    }
    for warning in warnings.into_iter().flatten().filter_map(Value::as_str) {
        let _ = writeln!(out, "warning: {warning}");
    }
    out
}

/// The ACME renewal's plan and record (`GetCertificateInfo`'s `renewal`).
fn render_renewal(out: &mut String, renewal: &Value) {
    let text = |key: &str| renewal[key].as_str().unwrap_or("-").to_owned();
    let scheduled = if renewal["scheduled"].as_bool() == Some(true) {
        ""
    } else {
        " (when the gateway runs)"
    };
    let _ = writeln!(out, "renewal due:  {}", text("due"));
    let _ = writeln!(out, "next attempt: {}{scheduled}", text("nextAttempt"));
    let _ = writeln!(out, "last renewed: {}", text("lastSuccess"));
    let failures = renewal["consecutiveFailures"].as_u64().unwrap_or(0);
    if failures > 0 {
        let _ = writeln!(out, "failures:     {failures} in a row");
    }
    if let Some(error) = renewal["lastError"].as_str() {
        let _ = writeln!(out, "last error:   {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_state_is_printed_for_acme_certificates() {
        let result = serde_json::json!({
            "subject": "CN=mx", "source": "acme",
            "renewal": {"due": "2027-01-01T00:00:00Z", "nextAttempt": "2026-12-04T22:05:00Z",
                        "consecutiveFailures": 2, "lastError": "cannot reach the ACME server",
                        "lastSuccess": null, "scheduled": true},
        });
        let text = render(&result);
        assert!(
            text.contains("renewal due:  2027-01-01T00:00:00Z"),
            "{text}"
        );
        assert!(
            text.contains("next attempt: 2026-12-04T22:05:00Z\n"),
            "{text}"
        );
        assert!(text.contains("last renewed: -"), "{text}");
        assert!(text.contains("failures:     2 in a row"), "{text}");
        assert!(
            text.contains("last error:   cannot reach the ACME server"),
            "{text}"
        );
        let stopped = serde_json::json!({"source": "acme", "renewal": {"scheduled": false,
            "nextAttempt": "2027-01-01T00:00:00Z", "consecutiveFailures": 0}});
        let text = render(&stopped);
        assert!(text.contains("(when the gateway runs)"), "{text}");
        assert!(!text.contains("failures"), "{text}");
    }

    #[test]
    fn pkcs12_files_are_recognised_by_extension() {
        assert!(is_pkcs12(Path::new("/x/server.P12")));
        assert!(is_pkcs12(Path::new("server.pfx")));
        assert!(!is_pkcs12(Path::new("server.pem")));
    }

    #[test]
    fn warnings_are_printed_after_the_certificate() {
        let result = serde_json::json!({
            "certificate": {"subject": "CN=mx", "dnsNames": ["mx", "mx2"], "daysLeft": -2,
                            "source": "imported"},
            "warnings": ["the certificate expired on 2026-01-01T00:00:00Z"],
        });
        let text = render(&result);
        assert!(text.contains("DNS names:    mx, mx2"), "{text}");
        assert!(text.contains("days left:    -2"), "{text}");
        assert!(text.ends_with("warning: the certificate expired on 2026-01-01T00:00:00Z\n"));
    }
}
