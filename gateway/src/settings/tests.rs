//! Live settings: validation first, the file before the live values, nothing changed on
//! failure, and the log level reaching the subscriber.

use std::fs;
use std::path::PathBuf;

use super::*;
use crate::logging::test_support::Captured;

const FILE: &str =
    "# ops\n[gateway]\nemail_domain = \"old.example\" # journal\nlog_level = \"info\"\n";

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    settings: LiveSettings,
    /// What the service and the SMTP sessions hold.
    service_domain: EmailDomain,
}

fn fixture_with(text: Option<&str>, log: Option<LogControl>) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let config = match text {
        Some(text) => {
            fs::write(&path, text).unwrap();
            Config::load(&path).unwrap()
        }
        None => Config::default(),
    };
    let service_domain = EmailDomain::new(config.gateway.email_domain.as_str());
    let settings = LiveSettings::new(
        &config,
        service_domain.clone(),
        log,
        SettingsFile {
            path: path.clone(),
            create_if_missing: text.is_none(),
        },
    );
    Fixture {
        _dir: dir,
        path,
        settings,
        service_domain,
    }
}

fn fixture() -> Fixture {
    fixture_with(Some(FILE), None)
}

fn full_change() -> SettingsChange {
    SettingsChange {
        email_domain: Some("new.example".into()),
        log_level: Some(LogLevel::Debug),
        console_language: Some(Language::De),
    }
}

#[test]
fn a_change_is_saved_and_live_at_once() {
    let f = fixture();
    let after = f.settings.apply_blocking(full_change()).unwrap();
    let expected = Settings {
        email_domain: "new.example".into(),
        log_level: LogLevel::Debug,
        console_language: Language::De,
    };
    assert_eq!(after, expected);
    assert_eq!(f.settings.current(), expected);
    assert_eq!(&*f.service_domain.get(), "new.example");
    assert_eq!(f.settings.console_language(), Language::De);
    let saved = Config::load(&f.path).unwrap();
    assert_eq!(saved.gateway.email_domain, "new.example");
    assert_eq!(saved.gateway.log_level, LogLevel::Debug);
    assert_eq!(saved.console.language, Language::De);
    let text = fs::read_to_string(&f.path).unwrap();
    assert!(
        text.starts_with("# ops\n[gateway]\nemail_domain = \"new.example\" # journal\n"),
        "{text}"
    );
}

#[test]
fn an_invalid_email_domain_changes_nothing() {
    let f = fixture();
    let before = f.settings.current();
    for bad in [
        "",
        "bad domain",
        "-x.example",
        "example.com.",
        "ünicode.example",
    ] {
        let error = f
            .settings
            .apply_blocking(SettingsChange {
                email_domain: Some(bad.into()),
                // Valid on their own: the whole change is refused, not applied in part.
                log_level: Some(LogLevel::Debug),
                console_language: Some(Language::De),
            })
            .unwrap_err();
        assert!(error.is_invalid_input(), "{bad:?}: {error}");
        assert!(
            error
                .to_string()
                .starts_with("invalid configuration: gateway.email_domain: "),
            "{error}"
        );
    }
    assert_eq!(f.settings.current(), before);
    assert_eq!(fs::read_to_string(&f.path).unwrap(), FILE);
}

#[test]
fn a_change_that_cannot_be_saved_changes_nothing_live() {
    let f = fixture();
    let before = f.settings.current();
    // Edited by hand into a file that no longer loads.
    let broken = format!("{FILE}max_message_size = 5\n");
    fs::write(&f.path, &broken).unwrap();
    let error = f.settings.apply_blocking(full_change()).unwrap_err();
    assert!(
        matches!(
            error,
            SettingsError::File(ConfigFileError::WouldNotLoad { .. })
        ),
        "{error}"
    );
    assert!(!error.is_invalid_input());
    assert_eq!(f.settings.current(), before);
    assert_eq!(&*f.service_domain.get(), "old.example");
    assert_eq!(fs::read_to_string(&f.path).unwrap(), broken);

    // The directory is gone: the write fails, again nothing changes.
    let g = fixture_with(None, None);
    let parent = g.path.parent().unwrap().to_owned();
    fs::remove_dir(&parent).unwrap();
    let error = g.settings.apply_blocking(full_change()).unwrap_err();
    assert!(matches!(error, SettingsError::File(_)), "{error}");
    assert_eq!(g.settings.current().email_domain, "localhost");
    assert_eq!(&*g.service_domain.get(), "localhost");
}

#[test]
fn without_a_configuration_file_the_first_change_creates_one() {
    let f = fixture_with(None, None);
    assert!(!f.path.exists());
    f.settings
        .apply_blocking(SettingsChange {
            console_language: Some(Language::De),
            ..SettingsChange::default()
        })
        .unwrap();
    let text = fs::read_to_string(&f.path).unwrap();
    assert_eq!(
        text,
        crate::config::DEFAULT_TEMPLATE.replace("language = \"en\"", "language = \"de\"")
    );
    // The next change edits that file.
    f.settings
        .apply_blocking(SettingsChange {
            log_level: Some(LogLevel::Warn),
            ..SettingsChange::default()
        })
        .unwrap();
    let saved = Config::load(&f.path).unwrap();
    assert_eq!(saved.console.language, Language::De);
    assert_eq!(saved.gateway.log_level, LogLevel::Warn);
}

#[test]
fn an_empty_change_writes_nothing() {
    let f = fixture_with(None, None);
    let current = f
        .settings
        .apply_blocking(SettingsChange::default())
        .unwrap();
    assert_eq!(current, f.settings.current());
    assert!(!f.path.exists());
}

#[test]
fn setting_the_log_level_reaches_the_subscriber_and_sighup_reloads_it_from_the_file() {
    let captured = Captured::default();
    let writer = captured.clone();
    let (subscriber, control) =
        crate::logging::subscriber(LogLevel::Info, None, move || writer.clone());
    let f = fixture_with(Some(FILE), Some(control));
    tracing::subscriber::with_default(subscriber, || {
        tracing::debug!("debug at info");
        f.settings
            .apply_blocking(SettingsChange {
                log_level: Some(LogLevel::Debug),
                ..SettingsChange::default()
            })
            .unwrap();
        tracing::debug!("debug after SetSettings");

        // The administrator edits the file and sends SIGHUP.
        let text = fs::read_to_string(&f.path)
            .unwrap()
            .replace("log_level = \"debug\"", "log_level = \"warn\"")
            .replace("old.example", "edited.example");
        fs::write(&f.path, text).unwrap();
        let reload = f.settings.reload_log_level().unwrap();
        assert_eq!(
            reload,
            Reload {
                log_level: Some((LogLevel::Debug, LogLevel::Warn)),
                overridden_by_rust_log: false,
                not_applied: vec![("gateway.email_domain", "edited.example".into())],
            }
        );
        tracing::info!("info after SIGHUP");
        tracing::warn!("warning after SIGHUP");
    });
    let text = captured.text();
    assert!(!text.contains("debug at info"), "{text}");
    assert!(text.contains("debug after SetSettings"), "{text}");
    assert!(!text.contains("info after SIGHUP"), "{text}");
    assert!(text.contains("warning after SIGHUP"), "{text}");
    assert_eq!(f.settings.current().log_level, LogLevel::Warn);
    // A reload applies the log level only.
    assert_eq!(f.settings.current().email_domain, "old.example");
    // Nothing to do the second time.
    let again = f.settings.reload_log_level().unwrap();
    assert_eq!(again.log_level, None);
}

#[test]
fn sighup_with_a_broken_file_keeps_the_running_level() {
    let f = fixture();
    fs::write(&f.path, "[gateway]\nlog_level = \"loud\"\n").unwrap();
    let error = f.settings.reload_log_level().unwrap_err();
    assert!(matches!(error, SettingsError::Reload(_)), "{error}");
    assert_eq!(f.settings.current().log_level, LogLevel::Info);
    // Without a file (none at start) there is nothing to reload.
    let g = fixture_with(None, None);
    assert_eq!(g.settings.reload_log_level().unwrap().log_level, None);
}

#[test]
fn settings_travel_as_camel_case_json_and_parse_from_names() {
    let f = fixture();
    let json = serde_json::to_value(f.settings.current()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "emailDomain": "old.example",
            "logLevel": "info",
            "consoleLanguage": "en",
        })
    );
    let change: SettingsChange =
        serde_json::from_value(serde_json::json!({"logLevel": "trace"})).unwrap();
    assert_eq!(change.log_level, Some(LogLevel::Trace));
    assert!(
        serde_json::from_value::<SettingsChange>(serde_json::json!({"logLevel": "loud"})).is_err()
    );

    let parsed = SettingsChange::parse(Some("a.example"), Some("WARN"), Some("de")).unwrap();
    assert_eq!(
        parsed,
        SettingsChange {
            email_domain: Some("a.example".into()),
            log_level: Some(LogLevel::Warn),
            console_language: Some(Language::De),
        }
    );
    let error = SettingsChange::parse(None, Some("loud"), None).unwrap_err();
    assert!(error.is_invalid_input());
    assert!(
        error
            .to_string()
            .starts_with("invalid configuration: gateway.log_level: `loud` is not a log level"),
        "{error}"
    );
    let error = SettingsChange::parse(None, None, Some("fr")).unwrap_err();
    assert!(error.to_string().contains("console.language"), "{error}");
}

#[tokio::test]
async fn apply_runs_off_the_async_threads() {
    let f = fixture();
    let after = f
        .settings
        .apply(SettingsChange {
            email_domain: Some("async.example".into()),
            ..SettingsChange::default()
        })
        .await
        .unwrap();
    assert_eq!(after.email_domain, "async.example");
    assert_eq!(&*f.service_domain.get(), "async.example");
}
