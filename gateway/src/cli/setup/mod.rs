//! `gateway setup`: the first-run questions (email domain, host name, certificate, log
//! level), asked on the terminal or taken from flags for scripts; checks what it can (DNS,
//! free ports), then writes the configuration file with its comments kept.

mod checks;

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};

use crate::config::{
    is_dns_name, AcmeSettings, CertificateSource, Config, LogLevel, DEFAULT_EMAIL_DOMAIN,
    DEFAULT_TEMPLATE, LETS_ENCRYPT_DIRECTORY, LETS_ENCRYPT_STAGING_DIRECTORY,
};
use crate::settings::config_file::{self, KeyEdit};
use crate::settings::SettingsFile;
use checks::{check_dns, check_ports, Finding, HickoryDns};

#[derive(Debug, Args)]
pub struct SetupArgs {
    /// The domain of the mailbox addresses (mbx-…@DOMAIN); its MX record must name the host.
    #[arg(long, value_name = "DOMAIN")]
    email_domain: Option<String>,
    /// The name clients, the archiver and senders use to reach this gateway (its
    /// certificate names it).
    #[arg(long, value_name = "NAME")]
    host_name: Option<String>,
    /// The certificate every listener presents: a self-signed one, one from Let's Encrypt
    /// (ACME, needs port 80 reachable from the internet), or keep the current choice. To use
    /// your own, run `gateway cert import` afterwards.
    #[arg(long, value_enum)]
    certificate: Option<CertificateChoice>,
    /// Contact address for the ACME CA (expiry notices).
    #[arg(long, value_name = "EMAIL")]
    acme_email: Option<String>,
    /// Agree to the ACME CA's terms of service (required with --certificate acme).
    #[arg(long)]
    accept_tos: bool,
    /// error, warn, info, debug or trace.
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Ask nothing: flags and the current file (or the defaults) give every value.
    #[arg(long)]
    non_interactive: bool,
    /// Do not look up DNS records or try the ports (e.g. on a machine without network).
    #[arg(long)]
    skip_checks: bool,
    /// Ask this DNS server (ADDRESS:PORT) instead of the system's resolvers, e.g. a public
    /// one to see what senders see past split-horizon DNS.
    #[arg(long, value_name = "ADDRESS:PORT")]
    dns_server: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CertificateChoice {
    SelfSigned,
    Acme,
    Keep,
}

/// The answers, checked.
struct Answers {
    email_domain: String,
    host_name: String,
    certificate: CertificateChoice,
    acme_email: Option<String>,
    log_level: LogLevel,
}

pub fn run(
    args: SetupArgs,
    config_path: Option<&Path>,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    let file = crate::cli::settings_file(config_path);
    // Setup is where a missing file is made, wherever --config points.
    let file = SettingsFile {
        create_if_missing: !file.path.exists(),
        ..file
    };
    let current = if file.path.exists() {
        Config::load(&file.path)?
    } else {
        Config::default()
    };
    let current = current.overridden(data_dir.clone());
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut ask = |question: &str, default: &str| -> anyhow::Result<String> {
        if args.non_interactive {
            return Ok(default.to_owned());
        }
        prompt(&mut input, question, default)
    };
    println!("Setting up {}", file.path.display());
    let answers = gather(&args, &current, &mut ask)?;
    if !args.skip_checks {
        run_checks(&args, &answers, &current)?;
    }
    let edits = edits(&answers, data_dir.as_deref());
    let tls = tls_source(&answers, &current);
    let template = match &data_dir {
        Some(dir) => config_file::template_with_data_dir(dir)?,
        None => DEFAULT_TEMPLATE.to_owned(),
    };
    let written = config_file::apply_edits(&file, &template, &edits, tls.as_ref())?;
    println!("Wrote {}", file.path.display());
    next_steps(&written, running(&written));
    Ok(())
}

/// Each value: the flag, else the question (with the current value as its default).
fn gather(
    args: &SetupArgs,
    current: &Config,
    ask: &mut dyn FnMut(&str, &str) -> anyhow::Result<String>,
) -> anyhow::Result<Answers> {
    let email_domain = match &args.email_domain {
        Some(domain) => domain.clone(),
        None => ask(
            "Email domain of the mailboxes (its MX record points here)",
            &current.gateway.email_domain,
        )?,
    }
    .trim()
    .trim_end_matches('.')
    .to_ascii_lowercase();
    crate::config::validate_email_domain(&email_domain)?;
    let host_name = match &args.host_name {
        Some(name) => name.clone(),
        None => ask("Host name of this gateway", &current.gateway.host_name)?,
    }
    .trim()
    .trim_end_matches('.')
    .to_ascii_lowercase();
    if !is_dns_name(&host_name) {
        bail!("host name `{host_name}` is not a DNS name");
    }
    let certificate = match args.certificate {
        Some(choice) => choice,
        None => {
            let answer = ask(
                "Certificate: self-signed, acme (Let's Encrypt) or keep",
                "keep",
            )?;
            CertificateChoice::from_str(answer.trim(), true)
                .map_err(|_| anyhow::anyhow!("`{answer}` is not self-signed, acme or keep"))?
        }
    };
    let mut acme_email = args.acme_email.clone();
    if certificate == CertificateChoice::Acme {
        if acme_email.is_none() {
            let answer = ask(
                "Contact email for the CA (expiry notices; empty for none)",
                "",
            )?;
            acme_email = Some(answer.trim().to_owned()).filter(|a| !a.is_empty());
        }
        if let Some(email) = &acme_email {
            if !email.contains('@') || email.chars().any(char::is_whitespace) {
                bail!("`{email}` is not an email address");
            }
        }
        let agreed = args.accept_tos
            || ask(
                "Do you agree to the CA's terms of service (https://letsencrypt.org/repository/)? yes/no",
                "no",
            )?
            .trim()
            .eq_ignore_ascii_case("yes");
        if !agreed {
            bail!("Let's Encrypt issues certificates only to those who agree to its terms of service (--accept-tos)");
        }
    }
    let log_level = match &args.log_level {
        Some(level) => level.clone(),
        None => ask(
            "Log level (error, warn, info, debug, trace)",
            current.gateway.log_level.as_str(),
        )?,
    }
    .parse::<LogLevel>()?;
    Ok(Answers {
        email_domain,
        host_name,
        certificate,
        acme_email,
        log_level,
    })
}

/// One line to stderr, one answer line from `input`; an empty answer (or end of input)
/// takes the default.
fn prompt(input: &mut dyn BufRead, question: &str, default: &str) -> anyhow::Result<String> {
    if default.is_empty() {
        eprint!("{question}: ");
    } else {
        eprint!("{question} [{default}]: ");
    }
    std::io::stderr().flush().ok();
    let mut line = String::new();
    input
        .read_line(&mut line)
        .context("cannot read the answer")?;
    let answer = line.trim();
    Ok(if answer.is_empty() { default } else { answer }.to_owned())
}

fn run_checks(args: &SetupArgs, answers: &Answers, current: &Config) -> anyhow::Result<()> {
    println!("Checking:");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut findings = match HickoryDns::new(args.dns_server) {
        Ok(dns) => runtime.block_on(check_dns(&dns, &answers.email_domain, &answers.host_name)),
        Err(why) => vec![Finding::Warning(why)],
    };
    if running(current) {
        findings.push(Finding::Ok(
            "the gateway is running: its ports are in use by itself (not checked)".to_owned(),
        ));
    } else {
        let mut listeners = current.listeners();
        if answers.certificate == CertificateChoice::Acme
            && !listeners.iter().any(|(name, _)| *name == "acme_http")
        {
            listeners.push(("acme_http", current.listen.acme_http.socket_addr()));
        }
        findings.extend(check_ports(&listeners));
    }
    for finding in &findings {
        println!("{finding}");
    }
    Ok(())
}

/// Whether a gateway using this data directory answers on its control socket.
fn running(config: &Config) -> bool {
    std::os::unix::net::UnixStream::connect(crate::api::control::socket_path(
        &config.gateway.data_dir,
    ))
    .is_ok()
}

fn edits(answers: &Answers, data_dir: Option<&Path>) -> Vec<KeyEdit> {
    let set = |table, key, value: &str| KeyEdit::Set {
        table,
        key,
        value: value.into(),
    };
    let mut edits = vec![
        set("gateway", "email_domain", &answers.email_domain),
        set("gateway", "host_name", &answers.host_name),
        set("gateway", "log_level", answers.log_level.as_str()),
    ];
    if let Some(dir) = data_dir {
        edits.push(set("gateway", "data_dir", &dir.to_string_lossy()));
    }
    edits
}

/// The certificate source chosen, or `None` to keep `[tls]` as it is.
fn tls_source(answers: &Answers, current: &Config) -> Option<CertificateSource> {
    match answers.certificate {
        CertificateChoice::Keep => None,
        CertificateChoice::SelfSigned => Some(CertificateSource::SelfSigned),
        // A directory, CA file or names chosen by hand (a private CA) stay.
        CertificateChoice::Acme => {
            let kept = current
                .tls
                .source
                .acme()
                .cloned()
                .unwrap_or_else(|| AcmeSettings {
                    directory_url: LETS_ENCRYPT_DIRECTORY.to_owned(),
                    contact_email: None,
                    ca_file: None,
                    domains: Vec::new(),
                    staging_directory_url: Some(LETS_ENCRYPT_STAGING_DIRECTORY.to_owned()),
                });
            Some(CertificateSource::Acme(AcmeSettings {
                contact_email: answers.acme_email.clone(),
                ..kept
            }))
        }
    }
}

fn next_steps(config: &Config, running: bool) {
    let g = &config.gateway;
    println!();
    println!("Next:");
    if g.email_domain == DEFAULT_EMAIL_DOMAIN {
        println!("  - set a real email domain: mail from outside cannot reach `localhost`");
    } else {
        println!(
            "  - DNS: `{}. MX 10 {}.` and an A/AAAA record for {}",
            g.email_domain, g.host_name, g.host_name
        );
    }
    println!("  - firewall: see docs/admin-guide.md (25, 465, 587, 110, 995 in; 8450 from administrators)");
    if running {
        println!("  - restart the gateway to apply: sudo systemctl restart gateway");
    } else {
        println!("  - start it: sudo systemctl enable --now gateway   (or: gateway serve)");
    }
    println!("  - first console password: sudo gateway admin reset-password");
    println!("  - your own certificate instead: gateway cert import FILE");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> SetupArgs {
        SetupArgs {
            email_domain: None,
            host_name: None,
            certificate: None,
            acme_email: None,
            accept_tos: false,
            log_level: None,
            non_interactive: false,
            skip_checks: true,
            dns_server: None,
        }
    }

    /// Answers the questions in order from `lines`, as a terminal would.
    fn answered(args: &SetupArgs, lines: &str) -> anyhow::Result<Answers> {
        let mut input = std::io::Cursor::new(lines.as_bytes().to_vec());
        let current = Config::default();
        gather(args, &current, &mut |q, d| prompt(&mut input, q, d))
    }

    #[test]
    fn answers_come_from_the_terminal_and_empty_ones_keep_the_default() {
        let a = answered(&args(), "Archive.Example.\ngw.example\n\nwarn\n").unwrap();
        assert_eq!(a.email_domain, "archive.example");
        assert_eq!(a.host_name, "gw.example");
        assert_eq!(a.certificate, CertificateChoice::Keep);
        assert_eq!(a.log_level, LogLevel::Warn);
    }

    #[test]
    fn acme_needs_the_terms_agreed() {
        let refused = answered(&args(), "a.example\ngw.example\nacme\nops@a.example\nno\n");
        assert!(refused.is_err_and(|e| e.to_string().contains("terms of service")));
        let agreed = answered(
            &args(),
            "a.example\ngw.example\nacme\nops@a.example\nyes\ninfo\n",
        )
        .unwrap();
        assert_eq!(agreed.certificate, CertificateChoice::Acme);
        assert_eq!(agreed.acme_email.as_deref(), Some("ops@a.example"));
    }

    #[test]
    fn bad_answers_are_refused_with_the_reason() {
        let bad_domain = answered(&args(), "not a domain\n");
        assert!(bad_domain.is_err());
        let bad_host = answered(&args(), "a.example\nbad_host!\n");
        assert!(bad_host.is_err_and(|e| e.to_string().contains("not a DNS name")));
        let bad_level = answered(&args(), "a.example\ngw.example\nkeep\nloud\n");
        assert!(bad_level.is_err_and(|e| e.to_string().contains("log level")));
    }

    #[test]
    fn choosing_self_signed_removes_the_other_sources_keys() {
        let answers = Answers {
            email_domain: "a.example".into(),
            host_name: "gw.example".into(),
            certificate: CertificateChoice::SelfSigned,
            acme_email: None,
            log_level: LogLevel::Info,
        };
        let text =
            "[tls]\nsource = \"files\"\ncertificate_chain = \"/c.pem\"\nprivate_key = \"/k.pem\"\n";
        let source = tls_source(&answers, &Config::default()).expect("a choice");
        let edited = config_file::edit_keys(text, &edits(&answers, None), Path::new("g.toml"))
            .and_then(|t| config_file::edit_tls(&t, &source, Path::new("g.toml")))
            .unwrap();
        let config = Config::from_toml_str(&edited).expect(&edited);
        assert_eq!(config.tls.source, CertificateSource::SelfSigned);
        assert_eq!(config.gateway.email_domain, "a.example");
    }
}
