//! Tests of the public configuration API: parsing, defaults, errors, validation.

use std::net::IpAddr;
use std::path::PathBuf;

use proptest::prelude::*;

use super::*;

fn parse_err(text: &str) -> String {
    match Config::from_toml_str(text) {
        Ok(c) => panic!("expected an error for {text:?}, got {c:?}"),
        Err(e) => e.to_string(),
    }
}

/// ACME from `directory_url` with nothing else set.
fn acme_settings(directory_url: &str) -> AcmeSettings {
    AcmeSettings {
        directory_url: directory_url.to_owned(),
        contact_email: None,
        ca_file: None,
        domains: Vec::new(),
        staging_directory_url: None,
    }
}

/// Asserts that validating `config` fails with a message naming `key`.
fn assert_invalid(config: &Config, key: &str) {
    match config.validate() {
        Ok(()) => panic!("expected {key} to be rejected"),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("invalid configuration: {key}: ")),
                "{msg}"
            );
            assert!(!msg.contains('\n'), "{msg}");
        }
    }
}

#[test]
fn defaults() {
    let c = Config::default();
    assert_eq!(c.gateway.email_domain, "localhost");
    assert_eq!(c.gateway.host_name, detect_host_name());
    assert_eq!(c.gateway.data_dir, PathBuf::from("./gateway-data"));
    assert_eq!(c.gateway.log_level, LogLevel::Info);
    assert_eq!(c.listen.smtp.port, 25);
    assert_eq!(c.listen.smtps.port, 465);
    assert_eq!(c.listen.submission.port, 587);
    assert_eq!(c.listen.pop3.port, 110);
    assert_eq!(c.listen.pop3s.port, 995);
    assert_eq!(c.listen.console.port, 8450);
    assert_eq!(c.listen.acme_http.port, 80);
    assert_eq!(
        c.listen.console.address,
        "::".parse::<IpAddr>().expect("ip")
    );
    assert_eq!(c.tls.source, CertificateSource::SelfSigned);
    assert_eq!(c.limits.max_message_size, 104_857_600);
    assert_eq!(c.limits.max_recipients, 100);
    assert_eq!(c.limits.max_connections, 500);
    assert_eq!(c.limits.max_connections_per_ip, 20);
    assert_eq!(c.limits.store_cache_mib, None);
    assert_eq!(c.limits.spool_memory_kib, 2048);
    assert_eq!(c.limits.spool_memory_total_mib, 64);
    assert_eq!(c.limits.min_free_disk_mib, 256);
    assert_eq!(c.limits.disk_reserve_mib, 32);
    assert!(!c.smtp.require_tls);
    assert!(c.smtp.allowed_networks.is_empty());
    assert_eq!(c.pop3.max_concurrent_unseals, 4);
    assert_eq!(c.pop3.failed_login_delay_ms, 2000);
    assert!(c.pop3.trusted_networks.is_empty());
    assert_eq!(c.proxy.failed_login_delay_ms, 2000);
    c.validate().expect("defaults are valid");
}

#[test]
fn empty_file_is_defaults() {
    assert_eq!(Config::from_toml_str("").expect("empty"), Config::default());
    assert_eq!(
        Config::from_toml_str("# only a comment\n\n").expect("comment"),
        Config::default()
    );
}

#[test]
fn template_parses_to_defaults() {
    let parsed = Config::from_toml_str(DEFAULT_TEMPLATE).expect("template parses");
    assert_eq!(parsed, Config::default());
}

#[test]
fn template_mentions_every_key() {
    // Every key of the serialized defaults appears in the template (uncommented, except
    // host_name which is detected), so a new key cannot be forgotten there.
    let rendered = Config::default().to_toml_string();
    for line in rendered.lines() {
        let line = line.trim();
        if let Some((key, _)) = line.split_once(" = ") {
            let needle = if key == "host_name" {
                "# host_name = ".to_owned()
            } else {
                format!("\n{key} = ")
            };
            assert!(DEFAULT_TEMPLATE.contains(&needle), "template lacks {key}");
        } else if line.starts_with('[') {
            assert!(DEFAULT_TEMPLATE.contains(line), "template lacks {line}");
        }
    }
}

#[test]
fn serialization_round_trips() {
    let mut c = Config::default();
    c.tls.source = CertificateSource::Acme(AcmeSettings {
        directory_url: "https://acme.test/dir".to_owned(),
        contact_email: Some("ops@example.com".to_owned()),
        ca_file: None,
        domains: vec!["mail.example.com".to_owned(), "mx.example.com".to_owned()],
        staging_directory_url: Some("https://acme.test/staging".to_owned()),
    });
    c.smtp.allowed_networks = vec!["10.0.0.0/8".parse().expect("net")];
    c.listen.console.enabled = false;
    let text = c.to_toml_string();
    assert_eq!(Config::from_toml_str(&text).expect("round trip"), c);

    c.tls.source = CertificateSource::Files {
        certificate_chain: "chain.pem".into(),
        private_key: "key.pem".into(),
    };
    let text = c.to_toml_string();
    assert_eq!(Config::from_toml_str(&text).expect("round trip"), c);
}

#[test]
fn partial_file_keeps_other_defaults() {
    let c = Config::from_toml_str("[limits]\nmax_recipients = 7\n").expect("valid");
    let mut expected = Config::default();
    expected.limits.max_recipients = 7;
    assert_eq!(c, expected);

    // A partial listener table keeps that service's own defaults.
    let c = Config::from_toml_str("[listen.pop3s]\naddress = \"127.0.0.1\"\n").expect("valid");
    assert_eq!(c.listen.pop3s.port, 995);
    assert!(c.listen.pop3s.enabled);
    assert_eq!(
        c.listen.pop3s.address,
        "127.0.0.1".parse::<IpAddr>().expect("ip")
    );
    assert_eq!(c.listen.smtp, Config::default().listen.smtp);
}

#[test]
fn unknown_key_is_rejected_by_name() {
    let msg = parse_err("[limits]\nmax_recipients = 5\n\nmax_mesage_size = 10\n");
    assert!(msg.contains("max_mesage_size"), "{msg}");
    assert!(msg.contains("line 4, column 1"), "{msg}");
    assert!(msg.contains("limits: unknown field"), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");

    let msg = parse_err("[gatway]\n");
    assert!(msg.contains("gatway"), "{msg}");
    let msg = parse_err("[listen.smtp]\nprot = 25\n");
    assert!(msg.contains("prot") && msg.contains("listen.smtp"), "{msg}");
    let msg = parse_err("[listen.imap]\nport = 143\n");
    assert!(msg.contains("imap"), "{msg}");
}

#[test]
fn wrong_type_gives_line_and_key() {
    let msg = parse_err("[listen.smtp]\n\nport = \"x\"\n");
    assert!(msg.contains("line 3"), "{msg}");
    assert!(msg.contains("listen.smtp.port"), "{msg}");

    let msg = parse_err("[listen.smtp]\nport = 70000\n");
    assert!(msg.contains("listen.smtp.port"), "{msg}");

    let msg = parse_err("[gateway]\nlog_level = \"loud\"\n");
    assert!(
        msg.contains("gateway.log_level") && msg.contains("loud"),
        "{msg}"
    );

    let msg = parse_err("[smtp]\nallowed_networks = [\"10.0.0.0/8\", \"nonsense\"]\n");
    assert!(
        msg.contains("smtp.allowed_networks") && msg.contains("nonsense"),
        "{msg}"
    );
}

#[test]
fn syntax_error_gives_line() {
    let msg = parse_err("[gateway]\nemail_domain = \n");
    assert!(msg.starts_with("configuration: line 2"), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
}

#[test]
fn tls_sources() {
    let c = Config::from_toml_str(
        "[tls]\nsource = \"files\"\ncertificate_chain = \"c.pem\"\nprivate_key = \"k.pem\"\n",
    )
    .expect("files");
    assert_eq!(
        c.tls.source,
        CertificateSource::Files {
            certificate_chain: "c.pem".into(),
            private_key: "k.pem".into()
        }
    );

    let c = Config::from_toml_str("[tls]\nsource = \"acme\"\n").expect("acme");
    assert_eq!(
        c.tls.source,
        CertificateSource::Acme(AcmeSettings {
            // A new setup is tried against Let's Encrypt's staging directory first.
            staging_directory_url: Some(LETS_ENCRYPT_STAGING_DIRECTORY.to_owned()),
            ..acme_settings(LETS_ENCRYPT_DIRECTORY)
        })
    );
    // Another CA has no staging directory unless one is named.
    let c = Config::from_toml_str(
        "[tls]\nsource = \"acme\"\nacme_directory_url = \"https://ca.test/dir\"\n",
    )
    .expect("acme");
    assert!(matches!(
        c.tls.source,
        CertificateSource::Acme(AcmeSettings {
            staging_directory_url: None,
            ..
        })
    ));
    let msg = parse_err("[tls]\nacme_domains = [\"mail.example.com\"]\n");
    assert!(msg.contains("acme_domains"), "{msg}");

    let msg = parse_err("[tls]\nsource = \"files\"\ncertificate_chain = \"c.pem\"\n");
    assert!(msg.contains("tls") && msg.contains("private_key"), "{msg}");
    let msg = parse_err("[tls]\nsource = \"self-signed\"\nprivate_key = \"k.pem\"\n");
    assert!(msg.contains("tls") && msg.contains("private_key"), "{msg}");
    let msg = parse_err("[tls]\nsource = \"acme\"\ncertificate_chain = \"c.pem\"\n");
    assert!(msg.contains("certificate_chain"), "{msg}");
    let msg = parse_err("[tls]\ncertificate_chain = \"c.pem\"\n");
    assert!(
        msg.contains("only applies when source = \"files\""),
        "{msg}"
    );
    let msg = parse_err("[tls]\nsource = \"letsencrypt\"\n");
    assert!(msg.contains("tls") && msg.contains("letsencrypt"), "{msg}");
}

#[test]
fn listeners_lists_enabled_services() {
    let c = Config::default();
    let names: Vec<_> = c.listeners().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        ["smtp", "smtps", "submission", "pop3", "pop3s", "console"]
    );
    assert_eq!(c.listeners()[0].1, "[::]:25".parse().expect("addr"));

    let mut c = Config::from_toml_str("[tls]\nsource = \"acme\"\n[listen.pop3]\nenabled = false\n")
        .expect("valid");
    let names: Vec<_> = c.listeners().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "smtp",
            "smtps",
            "submission",
            "pop3s",
            "console",
            "acme_http"
        ]
    );
    c.listen.smtp.enabled = false;
    assert_eq!(c.listeners().len(), 5);
}

#[test]
fn data_dir_override() {
    let c = Config::default().overridden(Some("/srv/gw".into()));
    assert_eq!(c.gateway.data_dir, PathBuf::from("/srv/gw"));
    let c = c.overridden(None);
    assert_eq!(c.gateway.data_dir, PathBuf::from("/srv/gw"));
}

#[test]
fn load_reads_file_and_names_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, "[limits]\nmax_recipients = 3\n").expect("write");
    assert_eq!(Config::load(&path).expect("load").limits.max_recipients, 3);

    std::fs::write(&path, "[limits]\nmax_mesage_size = 1\n").expect("write");
    let msg = Config::load(&path).expect_err("typo").to_string();
    assert!(
        msg.starts_with(&format!(
            "config file {}: line 2, column 1: ",
            path.display()
        )),
        "{msg}"
    );

    let missing = dir.path().join("missing.toml");
    let msg = Config::load(&missing).expect_err("missing").to_string();
    assert!(msg.contains("missing.toml"), "{msg}");

    // Validation errors from a file keep their key.
    std::fs::write(&path, "[limits]\nmax_recipients = 0\n").expect("write");
    let err = Config::load(&path).expect_err("invalid");
    assert_eq!(err.key(), Some("limits.max_recipients"));
}

#[test]
fn proxy_reaches_only_global_addresses_and_mail_ports_by_default() {
    let c = Config::default();
    assert!(!c.proxy.allow_private_networks);
    assert_eq!(c.proxy.allowed_ports, [25, 465, 587, 110, 995]);
    assert!(c.proxy.allows_port(995) && !c.proxy.allows_port(22));
    let mut any = c.clone();
    any.proxy.allowed_ports.clear();
    assert!(any.proxy.allows_port(22));
    any.validate().expect("empty means any port");
    any.proxy.allowed_ports = vec![2525, 0];
    assert_invalid(&any, "proxy.allowed_ports");
}

#[test]
fn validation_rules_name_their_key() {
    let base = Config::default();
    let with = |f: &dyn Fn(&mut Config)| {
        let mut c = base.clone();
        f(&mut c);
        c
    };

    assert_invalid(
        &with(&|c| c.gateway.email_domain = "bad domain".into()),
        "gateway.email_domain",
    );
    assert_invalid(
        &with(&|c| c.gateway.email_domain = String::new()),
        "gateway.email_domain",
    );
    assert_invalid(
        &with(&|c| c.gateway.host_name = "-mx.example".into()),
        "gateway.host_name",
    );
    assert_invalid(
        &with(&|c| c.gateway.host_name = "a".repeat(64)),
        "gateway.host_name",
    );
    assert_invalid(
        &with(&|c| c.gateway.data_dir = PathBuf::new()),
        "gateway.data_dir",
    );

    assert_invalid(&with(&|c| c.listen.pop3.port = 0), "listen.pop3.port");
    with(&|c| {
        c.listen.pop3.port = 0;
        c.listen.pop3.enabled = false;
    })
    .validate()
    .expect("a disabled listener may have port 0");
    assert_invalid(&with(&|c| c.listen.console.port = 25), "listen.console");
    assert_invalid(
        &with(&|c| {
            c.listen.console.port = 25;
            c.listen.console.address = "127.0.0.1".parse().expect("ip");
        }),
        "listen.console",
    );
    with(&|c| {
        c.listen.console.port = 25;
        c.listen.smtp.enabled = false;
    })
    .validate()
    .expect("a disabled listener does not conflict");
    with(&|c| c.listen.acme_http.port = 8450)
        .validate()
        .expect("acme_http is not opened without ACME");
    assert_invalid(
        &with(&|c| {
            c.listen.acme_http.port = 8450;
            c.tls.source = CertificateSource::Acme(acme_settings(LETS_ENCRYPT_DIRECTORY));
        }),
        "listen.acme_http",
    );

    for size in [0, 12, 1023, 2 * 1024 * 1024 * 1024 + 1] {
        assert_invalid(
            &with(&|c| c.limits.max_message_size = size),
            "limits.max_message_size",
        );
    }
    for size in [1024, 2 * 1024 * 1024 * 1024] {
        with(&|c| c.limits.max_message_size = size)
            .validate()
            .expect("bounds are inclusive");
    }
    assert_invalid(
        &with(&|c| c.limits.max_recipients = 0),
        "limits.max_recipients",
    );
    assert_invalid(
        &with(&|c| c.limits.max_connections = 0),
        "limits.max_connections",
    );
    assert_invalid(
        &with(&|c| c.limits.max_connections_per_ip = 0),
        "limits.max_connections_per_ip",
    );
    assert_invalid(
        &with(&|c| c.limits.max_connections_per_ip = 501),
        "limits.max_connections_per_ip",
    );
    assert_invalid(
        &with(&|c| c.limits.store_cache_mib = Some(0)),
        "limits.store_cache_mib",
    );
    assert_invalid(
        &with(&|c| c.limits.store_cache_mib = Some(u64::MAX)),
        "limits.store_cache_mib",
    );
    assert_invalid(
        &with(&|c| c.limits.spool_memory_kib = u64::MAX),
        "limits.spool_memory_kib",
    );
    assert_invalid(
        &with(&|c| c.limits.spool_memory_total_mib = u64::MAX),
        "limits.spool_memory_total_mib",
    );
    assert_invalid(
        &with(&|c| c.limits.min_free_disk_mib = u64::MAX),
        "limits.min_free_disk_mib",
    );
    assert_invalid(
        &with(&|c| c.limits.warn_free_disk_mib = Some(c.limits.min_free_disk_mib - 1)),
        "limits.warn_free_disk_mib",
    );
    assert_invalid(
        &with(&|c| c.limits.disk_reserve_mib = 4097),
        "limits.disk_reserve_mib",
    );

    assert_invalid(
        &with(&|c| {
            c.tls.source = CertificateSource::Files {
                certificate_chain: PathBuf::new(),
                private_key: "k.pem".into(),
            }
        }),
        "tls.certificate_chain",
    );
    assert_invalid(
        &with(&|c| {
            c.tls.source = CertificateSource::Files {
                certificate_chain: "c.pem".into(),
                private_key: PathBuf::new(),
            }
        }),
        "tls.private_key",
    );
    let acme = |url: &str, email: Option<&str>, ca: Option<&str>| {
        CertificateSource::Acme(AcmeSettings {
            contact_email: email.map(Into::into),
            ca_file: ca.map(Into::into),
            ..acme_settings(url)
        })
    };
    assert_invalid(
        &with(&|c| {
            c.tls.source = CertificateSource::Acme(AcmeSettings {
                domains: vec!["*.example.com".into()],
                ..acme_settings(LETS_ENCRYPT_DIRECTORY)
            })
        }),
        "tls.acme_domains",
    );
    assert_invalid(
        &with(&|c| {
            c.tls.source = CertificateSource::Acme(AcmeSettings {
                staging_directory_url: Some("http://staging.test/dir".into()),
                ..acme_settings(LETS_ENCRYPT_DIRECTORY)
            })
        }),
        "tls.acme_staging_directory_url",
    );
    assert_invalid(
        &with(&|c| c.tls.source = acme("http://acme.test/dir", None, None)),
        "tls.acme_directory_url",
    );
    assert_invalid(
        &with(&|c| c.tls.source = acme("https:///dir", None, None)),
        "tls.acme_directory_url",
    );
    assert_invalid(
        &with(&|c| c.tls.source = acme(LETS_ENCRYPT_DIRECTORY, Some("nobody"), None)),
        "tls.acme_contact_email",
    );
    assert_invalid(
        &with(&|c| c.tls.source = acme(LETS_ENCRYPT_DIRECTORY, None, Some(""))),
        "tls.acme_ca_file",
    );
    with(&|c| {
        c.tls.source = acme(
            "https://localhost:14000/dir",
            Some("a@b.test"),
            Some("ca.pem"),
        )
    })
    .validate()
    .expect("valid ACME settings");

    assert_invalid(
        &with(&|c| c.pop3.max_concurrent_unseals = 0),
        "pop3.max_concurrent_unseals",
    );
    assert_invalid(
        &with(&|c| c.pop3.failed_login_delay_ms = 60_001),
        "pop3.failed_login_delay_ms",
    );
    assert_invalid(
        &with(&|c| c.proxy.failed_login_delay_ms = 60_001),
        "proxy.failed_login_delay_ms",
    );
}

#[test]
fn pop3_trusted_networks_parse_as_cidr() {
    let c =
        Config::from_toml_str("[pop3]\ntrusted_networks = [\"192.0.2.0/24\", \"2001:db8::/48\"]\n")
            .expect("valid");
    assert_eq!(c.pop3.trusted_networks.len(), 2);
    let msg = parse_err("[pop3]\ntrusted_networks = [\"archiver\"]\n");
    assert!(msg.contains("pop3.trusted_networks"), "{msg}");
}

#[test]
fn from_toml_str_validates() {
    let msg = parse_err("[limits]\nmax_message_size = 12\n");
    assert_eq!(
        msg,
        "invalid configuration: limits.max_message_size: must be between 1024 and \
         2147483648 bytes, got 12"
    );
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = Config::from_toml_str(&text);
    }

    #[test]
    fn tomlish_text_never_panics(
        text in "(\\[[a-z_.]{0,12}\\]\n|[a-z_]{1,12} = (\"[a-z0-9./:@ -]{0,12}\"|-?[0-9]{1,12}|true|\\[\\]|\\{\\})\n){0,8}"
    ) {
        // Key-and-value shaped input reaches the serde and validation paths far more often
        // than arbitrary strings do.
        if let Err(e) = Config::from_toml_str(&text) {
            prop_assert!(!e.to_string().contains('\n'));
        }
    }
}

#[test]
fn the_plain_metrics_listener_stays_on_loopback_unless_remote_is_allowed() {
    let parsed = Config::from_toml_str(
        "[metrics]\nlisten = \"127.0.0.1:9450\"\nper_mailbox_limit = 10\n\n[logging]\nfile = true\nretention_days = 30\nformat = \"json\"\n",
    )
    .unwrap();
    assert_eq!(
        parsed.metrics.listen,
        Some("127.0.0.1:9450".parse().unwrap())
    );
    assert_eq!(parsed.metrics.per_mailbox_limit, 10);
    assert!(parsed.logging.file);
    assert_eq!(parsed.logging.retention_days, 30);
    assert_eq!(parsed.logging.format, LogFormat::Json);
    let defaults = Config::default();
    assert_eq!(defaults.metrics.listen, None);
    assert!(!defaults.metrics.allow_remote);
    assert_eq!(defaults.metrics.per_mailbox_limit, 50);
    assert_eq!(defaults.logging, LoggingSection::default());
    assert!(!defaults.logging.file);
    assert_eq!(defaults.logging.retention_days, 14);
    assert_eq!(defaults.logging.format, LogFormat::Text);

    let with = |listen: &str, allow_remote: bool| {
        let mut config = Config::default();
        config.metrics.listen = Some(listen.parse().unwrap());
        config.metrics.allow_remote = allow_remote;
        config
    };
    for loopback in [
        "127.0.0.1:9450",
        "[::1]:9450",
        "127.0.0.2:9450",
        "[::ffff:127.0.0.1]:9450",
    ] {
        assert!(with(loopback, false).validate().is_ok(), "{loopback}");
    }
    // Only the address is checked here: nothing is bound or connected to.
    for remote in [
        "0.0.0.0:9450",
        "[::]:9450",
        "192.0.2.10:9450",
        "[2001:db8::1]:9450",
    ] {
        assert_invalid(&with(remote, false), "metrics.listen");
        assert!(with(remote, true).validate().is_ok(), "{remote}");
    }
    assert_invalid(&with("127.0.0.1:0", false), "metrics.listen");
    // The console's port on an overlapping address.
    assert_invalid(&with("[::]:8450", true), "metrics.listen");
    assert!(
        parse_err("[metrics]\nlisten = \"127.0.0.1:995\"\n").starts_with(
            "invalid configuration: metrics.listen: 127.0.0.1:995 conflicts with listen.pop3s"
        )
    );
    // A misspelt format is a parse error naming the key.
    assert!(parse_err("[logging]\nformat = \"xml\"\n").contains("logging"));
}

#[test]
fn log_retention_is_one_day_to_ten_years() {
    let mut config = Config::default();
    for days in [1, 14, 3650] {
        config.logging.retention_days = days;
        assert!(config.validate().is_ok(), "{days}");
    }
    for days in [0, 3651] {
        config.logging.retention_days = days;
        assert_invalid(&config, "logging.retention_days");
    }
}

#[test]
fn acme_renewal_days_default_parse_round_trip_and_belong_to_acme() {
    let c = Config::from_toml_str("[tls]\nsource = \"acme\"\n").expect("acme");
    assert_eq!(c.tls.acme_renewal, AcmeRenewal::default());
    assert_eq!(c.tls.acme_renewal.renew_after_days, 60);
    assert_eq!(c.tls.acme_renewal.renew_before_days, 30);

    let text =
        "[tls]\nsource = \"acme\"\nacme_renew_after_days = 40\nacme_renew_before_days = 20\n";
    let c = Config::from_toml_str(text).expect("custom days");
    assert_eq!(
        c.tls.acme_renewal,
        AcmeRenewal {
            renew_after_days: 40,
            renew_before_days: 20
        }
    );
    let again = Config::from_toml_str(&c.to_toml_string()).expect("reparse");
    assert_eq!(again.tls.acme_renewal, c.tls.acme_renewal);

    let msg = parse_err("[tls]\nacme_renew_after_days = 40\n");
    assert!(
        msg.contains("acme_renew_after_days")
            && msg.contains("only applies when source = \"acme\""),
        "{msg}"
    );
    let msg = parse_err("[tls]\nsource = \"files\"\ncertificate_chain = \"c.pem\"\nprivate_key = \"k.pem\"\nacme_renew_before_days = 10\n");
    assert!(msg.contains("acme_renew_before_days"), "{msg}");

    for (after, before, key) in [
        (0, 30, "tls.acme_renew_after_days"),
        (60, 0, "tls.acme_renew_before_days"),
        (366, 30, "tls.acme_renew_after_days"),
    ] {
        let mut c = Config::from_toml_str("[tls]\nsource = \"acme\"\n").expect("acme");
        c.tls.acme_renewal = AcmeRenewal {
            renew_after_days: after,
            renew_before_days: before,
        };
        assert_invalid(&c, key);
    }
}

#[test]
fn a_snapshot_interval_without_a_unit_is_refused_by_its_key() {
    let mut c = Config::default();
    c.backup.snapshot_interval = "60".to_owned();
    assert_invalid(&c, "backup.snapshot_interval");
    c.backup.snapshot_interval = "1h".to_owned();
    assert!(c.validate().is_ok());
    assert_eq!(
        c.backup.snapshot_interval(),
        Some(std::time::Duration::from_secs(3600))
    );
}

/// A configuration written before `warn_free_disk_mib` existed, with a minimum above its
/// default, stays valid after an upgrade: the warning threshold follows the minimum.
#[test]
fn an_unset_disk_warning_threshold_follows_a_high_minimum() {
    let c = Config::from_toml_str("[limits]\nmin_free_disk_mib = 4096\n").expect("valid");
    assert_eq!(c.limits.warn_free_disk_bytes(), 4096 * 1024 * 1024);
    let c = Config::from_toml_str("[limits]\nmin_free_disk_mib = 100\n").expect("valid");
    assert_eq!(c.limits.warn_free_disk_bytes(), 1024 * 1024 * 1024);
    let c = Config::from_toml_str("[limits]\nwarn_free_disk_mib = 2000\n").expect("valid");
    assert_eq!(c.limits.warn_free_disk_bytes(), 2000 * 1024 * 1024);
}

/// A PostgreSQL store at `url`, TLS as given.
fn postgres_store(url: &str, tls: DatabaseTls) -> Config {
    let mut config = Config::default();
    config.store.backend = StoreBackend::Postgres;
    config.store.url = url.to_owned();
    config.store.tls = tls;
    config
}

#[test]
fn the_embedded_store_is_the_default_and_takes_no_url() {
    let c = Config::default();
    assert_eq!(c.store.backend, StoreBackend::Redb);
    assert!(c.validate().is_ok());
    let mut stray = Config::default();
    stray.store.url = "postgres://gateway@db.example.com/gateway".into();
    assert_invalid(&stray, "store.url");
}

#[test]
fn a_postgres_store_needs_a_url_without_a_password() {
    let ok = postgres_store(
        "postgres://gateway@db.example.com:5432/gateway",
        DatabaseTls::Verify,
    );
    assert!(ok.validate().is_ok(), "{:?}", ok.validate());
    // Several hosts, the one that takes writes chosen at connect (a failover-following URL).
    let failover = postgres_store(
        "postgres://gateway@db1.example.com,db2.example.com/gateway?target_session_attrs=read-write",
        DatabaseTls::Verify,
    );
    assert!(failover.validate().is_ok(), "{:?}", failover.validate());
    let keywords = postgres_store(
        "host=db.example.com user=gateway dbname=gateway",
        DatabaseTls::Verify,
    );
    assert!(keywords.validate().is_ok());
    assert_invalid(&postgres_store("", DatabaseTls::Verify), "store.url");
    assert_invalid(
        &postgres_store("postgres://gateway@/gateway", DatabaseTls::Verify),
        "store.url",
    );
    let secret = "s3cret-in-the-url";
    let with_password = postgres_store(
        &format!("postgres://gateway:{secret}@db.example.com/gateway"),
        DatabaseTls::Verify,
    );
    assert_invalid(&with_password, "store.url");
    let message = with_password.validate().unwrap_err().to_string();
    assert!(!message.contains(secret), "{message}");
    let mut pool = ok.clone();
    pool.store.pool_size = 0;
    assert_invalid(&pool, "store.pool_size");
}

#[test]
fn plain_connections_to_the_database_only_stay_on_this_machine() {
    for local in [
        "postgres://gateway@127.0.0.1/gateway",
        "postgres://gateway@localhost:5433/gateway",
        "postgres://gateway@[::1]/gateway",
        "host=/run/postgresql user=gateway dbname=gateway",
    ] {
        let config = postgres_store(local, DatabaseTls::Off);
        assert!(
            config.validate().is_ok(),
            "{local}: {:?}",
            config.validate()
        );
    }
    for remote in [
        "postgres://gateway@db.example.com/gateway",
        "postgres://gateway@10.0.0.5/gateway",
        "host=127.0.0.1,db.example.com user=gateway dbname=gateway",
    ] {
        assert_invalid(&postgres_store(remote, DatabaseTls::Off), "store.tls");
    }
}

#[test]
fn the_store_section_parses_from_toml() {
    let c = Config::from_toml_str(
        "[store]\nbackend = \"postgres\"\nurl = \"postgres://gw@db/gw\"\npool_size = 4\ntls = \"verify\"\nca_file = \"/etc/gateway/db-ca.pem\"\nmigrate = false\n",
    )
    .unwrap();
    assert_eq!(c.store.backend, StoreBackend::Postgres);
    assert_eq!(c.store.pool_size, 4);
    assert_eq!(
        c.store.ca_file,
        Some(PathBuf::from("/etc/gateway/db-ca.pem"))
    );
    assert!(!c.store.migrate);
    assert!(parse_err("[store]\nbackend = \"mysql\"\n").contains("backend"));
}
