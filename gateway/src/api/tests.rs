//! The dispatcher in-process: who may call what, and that answers carry the rules' words.

use std::net::{IpAddr, Ipv4Addr};

use super::*;

fn api() -> (tempfile::TempDir, Api) {
    super::test_support::api("mail.example")
}

use super::test_support::gateway_and_settings;

fn params(pairs: &[(&str, &str)]) -> Params {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), serde_json::Value::String((*v).to_owned())))
        .collect()
}

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

#[tokio::test]
async fn the_first_login_gets_a_new_password_and_nothing_else() {
    let (_dir, api) = api();
    let first = Caller::AdminFirstLogin { client: LOCAL };
    let refused = api.invoke(&first, "GetMailboxes", Params::new()).await;
    assert_eq!(refused.http_status, 403);
    assert!(refused
        .envelope
        .error
        .unwrap()
        .message
        .contains("ResetOwnPassword"));

    let reset = api
        .invoke(
            &first,
            "ResetOwnPassword",
            params(&[("currentPassword", "admin")]),
        )
        .await;
    assert!(reset.is_success(), "{reset:?}");
    let password = reset.envelope.result["password"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(password.len() >= 20);
    assert_eq!(
        api.gateway()
            .check_admin_password("admin", &password, LOCAL)
            .await
            .unwrap(),
        crate::service::AdminLogin::Valid
    );
    // The initial password is gone for good.
    let again = api
        .invoke(
            &first,
            "ResetOwnPassword",
            params(&[("currentPassword", "admin")]),
        )
        .await;
    assert_eq!(again.http_status, 401);
}

#[tokio::test]
async fn host_only_functions_do_not_exist_for_the_network() {
    let (_dir, api) = api();
    let admin = Caller::Admin { client: LOCAL };
    let hidden = api
        .invoke(&admin, "ResetAdminPassword", Params::new())
        .await;
    assert_eq!(hidden.http_status, 404);
    assert_eq!(hidden.envelope.error.unwrap().kind, "unknown_function");
    let metadata = api.metadata().to_string();
    assert!(!metadata.contains("ResetAdminPassword"));
    assert!(!api.openapi().to_string().contains("ResetAdminPassword"));

    let host = api
        .invoke(&Caller::Host, "ResetAdminPassword", Params::new())
        .await;
    assert!(host.is_success(), "{host:?}");
    assert!(api.gateway().admin_first_login_done().unwrap());
}

#[tokio::test]
async fn parameters_are_checked_against_the_function_types() {
    let (_dir, api) = api();
    let host = Caller::Host;
    let missing = api.invoke(&host, "CreateMailbox", Params::new()).await;
    assert_eq!(missing.http_status, 400);
    assert!(missing
        .envelope
        .error
        .unwrap()
        .details
        .unwrap()
        .contains("name"));
    let unknown = api
        .invoke(
            &host,
            "CreateMailbox",
            params(&[("name", "a"), ("nmae", "b")]),
        )
        .await;
    assert_eq!(unknown.http_status, 400);
    let bad_id = api
        .invoke(&host, "GetMailbox", params(&[("id", "mbx-1")]))
        .await;
    assert_eq!(bad_id.http_status, 400);
    let bad_status = api
        .invoke(
            &host,
            "SetMailboxProperties",
            params(&[
                ("id", "mbx-0123456789abcdef0123456789abcdef"),
                ("status", "paused"),
            ]),
        )
        .await;
    assert_eq!(bad_status.http_status, 400);
    let nothing = api.invoke(&host, "NoSuchFunction", Params::new()).await;
    assert_eq!(nothing.http_status, 404);
}

#[tokio::test]
async fn a_mailbox_lives_and_dies_by_the_service_rules() {
    let (_dir, api) = api();
    let host = Caller::Host;
    let created = api
        .invoke(&host, "CreateMailbox", params(&[("name", "Sales")]))
        .await;
    assert!(created.is_success());
    let id = created.envelope.result["id"].as_str().unwrap().to_owned();
    assert!(created.envelope.result["password"].as_str().unwrap().len() > 10);
    let address = created.envelope.result["address"]
        .as_str()
        .unwrap()
        .to_owned();

    let active = api
        .invoke(&host, "DeleteMailbox", params(&[("id", &id)]))
        .await;
    assert_eq!(active.http_status, 409);
    assert!(active
        .envelope
        .error
        .unwrap()
        .message
        .contains("suspended first"));
    let reset = api
        .invoke(&host, "ResetMailboxPassword", params(&[("id", &address)]))
        .await;
    assert_eq!(reset.http_status, 409);

    let suspended = api
        .invoke(
            &host,
            "SetMailboxProperties",
            params(&[
                ("id", &address),
                ("status", "suspended"),
                ("description", "old"),
            ]),
        )
        .await;
    assert_eq!(suspended.envelope.result["status"], "suspended");
    assert_eq!(suspended.envelope.result["description"], "old");
    let deleted = api
        .invoke(&host, "DeleteMailbox", params(&[("id", &id)]))
        .await;
    assert!(deleted.is_success());
    let gone = api
        .invoke(&host, "GetMailbox", params(&[("id", &id)]))
        .await;
    assert_eq!(gone.http_status, 404);
}

#[tokio::test]
async fn settings_change_live_and_bad_values_change_nothing() {
    let (dir, api) = api();
    let host = Caller::Host;
    let bad = api
        .invoke(
            &host,
            "SetSettings",
            params(&[("emailDomain", "not a domain"), ("logLevel", "debug")]),
        )
        .await;
    assert_eq!(bad.http_status, 400);
    assert!(!dir.path().join("gateway.toml").exists());
    let set = api
        .invoke(
            &host,
            "SetSettings",
            params(&[("emailDomain", "archive.example.org")]),
        )
        .await;
    assert!(set.is_success(), "{set:?}");
    assert_eq!(api.gateway().email_domain().as_ref(), "archive.example.org");
    let got = api.invoke(&host, "GetSettings", Params::new()).await;
    assert_eq!(got.envelope.result["emailDomain"], "archive.example.org");
    let saved = std::fs::read_to_string(dir.path().join("gateway.toml")).unwrap();
    assert!(saved.contains("archive.example.org"));
}

#[tokio::test]
async fn api_keys_are_shown_once_listed_without_the_secret_and_revoked() {
    let (_dir, api) = api();
    let host = Caller::Host;
    let created = api
        .invoke(&host, "CreateApiKey", params(&[("name", "backup script")]))
        .await;
    let key = created.envelope.result["key"].as_str().unwrap().to_owned();
    let id = created.envelope.result["id"].as_str().unwrap().to_owned();
    let listed = api.invoke(&host, "GetApiKeys", Params::new()).await;
    assert!(!listed.envelope.result.to_string().contains(&key));
    assert_eq!(listed.envelope.result[0]["name"], "backup script");
    assert_eq!(api.gateway().check_api_key(&key, LOCAL).await.unwrap(), id);
    let revoked = api
        .invoke(&host, "RevokeApiKey", params(&[("id", &id)]))
        .await;
    assert!(revoked.is_success());
    assert!(api.gateway().check_api_key(&key, LOCAL).await.is_err());
    let twice = api
        .invoke(&host, "RevokeApiKey", params(&[("id", &id)]))
        .await;
    assert_eq!(twice.http_status, 404);
}

#[tokio::test]
async fn get_metadata_takes_no_parameters_and_needs_the_administrator() {
    let (_dir, api) = api();
    let admin = Caller::Admin { client: LOCAL };
    let listed = api.get_metadata(&admin, Params::new());
    assert!(listed.is_success());
    assert!(listed.envelope.result.to_string().contains("CreateMailbox"));
    assert_eq!(
        api.get_metadata(&admin, params(&[("x", "1")])).http_status,
        400
    );
    let first = Caller::AdminFirstLogin { client: LOCAL };
    assert_eq!(api.get_metadata(&first, Params::new()).http_status, 403);
}

#[tokio::test]
async fn an_explicit_null_is_refused_and_an_empty_change_changes_nothing() {
    let (_dir, api) = api();
    let host = Caller::Host;
    let mut with_null = params(&[("name", "Sales")]);
    with_null.insert("description".into(), serde_json::Value::Null);
    let refused = api.invoke(&host, "CreateMailbox", with_null).await;
    assert_eq!(refused.http_status, 400);
    let created = api
        .invoke(&host, "CreateMailbox", params(&[("name", "Sales")]))
        .await;
    let id = created.envelope.result["id"].as_str().unwrap().to_owned();
    let unchanged = api
        .invoke(&host, "SetMailboxProperties", params(&[("id", &id)]))
        .await;
    assert!(unchanged.is_success(), "{unchanged:?}");
    assert_eq!(unchanged.envelope.result["name"], "Sales");
    assert_eq!(unchanged.envelope.result["status"], "active");
}

#[tokio::test]
async fn server_info_reports_the_store_files_size() {
    let (_dir, api) = api();
    let admin = Caller::Admin { client: LOCAL };
    let info = api.invoke(&admin, "GetServerInfo", Params::new()).await;
    assert!(info.is_success(), "{info:?}");
    match std::fs::metadata(api.gateway().store().path()) {
        Ok(file) => {
            assert!(file.len() > 0);
            assert_eq!(info.envelope.result["storeBytes"], file.len());
        }
        // A shared database (the tests' PostgreSQL pass) has no store file to measure.
        Err(_) => {
            assert!(std::env::var(crate::service::test_support::POSTGRES_URL_VAR).is_ok());
            assert!(info.envelope.result["storeBytes"].is_null(), "{info:?}");
        }
    }
}

#[tokio::test]
async fn server_info_reports_free_disk_space_against_the_thresholds() {
    use crate::store::space::testing::FakeVolume;
    use std::sync::atomic::Ordering;
    const MIB: u64 = 1024 * 1024;
    let volume = FakeVolume::with_free(500 * MIB);
    let (dir, gateway) =
        crate::service::test_support::gateway_on_warning(volume.clone(), 0, 30 * MIB, 100 * MIB);
    let settings = crate::settings::LiveSettings::new(
        &crate::config::Config::default(),
        gateway.email_domain_handle().clone(),
        None,
        crate::settings::SettingsFile {
            path: dir.path().join("gateway.toml"),
            create_if_missing: true,
        },
    );
    let api = Api::new(
        gateway,
        settings,
        crate::api::ServerContext::new("mail.example".into(), None, "self-signed"),
    );
    let admin = Caller::Admin { client: LOCAL };
    for (free, level) in [(500, "ok"), (99, "warning"), (29, "critical")] {
        volume.free.store(free * MIB, Ordering::SeqCst);
        let info = api.invoke(&admin, "GetServerInfo", Params::new()).await;
        assert!(info.is_success(), "{info:?}");
        let result = &info.envelope.result;
        assert_eq!(result["freeDiskBytes"], free * MIB);
        assert_eq!(result["warnFreeDiskBytes"], 100 * MIB);
        assert_eq!(result["minFreeDiskBytes"], 30 * MIB);
        assert_eq!(result["diskLevel"], level, "{free} MiB free");
    }
}

#[tokio::test]
async fn server_info_tells_whether_snapshots_are_on_and_when_the_last_was_taken() {
    let (dir, gateway, settings) = gateway_and_settings();
    let snapshots = crate::backup::Snapshots::new(crate::backup::Sources {
        store: gateway.store().clone(),
        data_dir: dir.path().to_owned(),
        config_file: None,
    });
    let context = |interval| {
        crate::api::ServerContext::new("mail.example".into(), None, "self-signed")
            .with_data_dir(dir.path().to_owned())
            .with_snapshot_interval(interval)
    };
    let admin = Caller::Admin { client: LOCAL };
    let on = Api::new(
        gateway.clone(),
        settings.clone(),
        context(Some(std::time::Duration::from_secs(900))),
    );
    let info = on.invoke(&admin, "GetServerInfo", Params::new()).await;
    assert_eq!(info.envelope.result["snapshotIntervalSeconds"], 900);
    assert!(info.envelope.result["lastSnapshotAt"].is_null(), "{info:?}");

    let (_, manifest) = snapshots.take().unwrap();
    let info = on.invoke(&admin, "GetServerInfo", Params::new()).await;
    assert_eq!(
        info.envelope.result["lastSnapshotAt"],
        manifest.created_at.as_str()
    );

    // Off: a snapshot left from before is not reported as current.
    let off = Api::new(gateway, settings, context(None));
    let info = off.invoke(&admin, "GetServerInfo", Params::new()).await;
    assert!(info.envelope.result["snapshotIntervalSeconds"].is_null());
    assert!(info.envelope.result["lastSnapshotAt"].is_null());
}

/// An API whose server presents a certificate through a resolver, as `serve` sets it up.
fn api_with_certificate() -> (
    tempfile::TempDir,
    Api,
    std::sync::Arc<crate::tls::CertResolver>,
) {
    let (dir, gateway, settings) = gateway_and_settings();
    let data_dir = dir.path().join("data");
    let (resolver, _) = crate::tls::prepare(
        &crate::tls::CertificateSourceSpec::SelfSigned,
        &data_dir,
        "mail.example",
    )
    .unwrap();
    let server = ServerContext::new("mail.example".into(), Some(resolver.clone()), "self-signed")
        .with_data_dir(data_dir);
    (dir, Api::new(gateway, settings, server), resolver)
}

fn pem_pair(name: &str, days_left: i64) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(30);
    params.not_after = now + time::Duration::days(days_left);
    let cert = params.self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn imported_certificate_is_presented_at_once_and_after_a_restart() {
    let (dir, api, resolver) = api_with_certificate();
    let (chain, key) = pem_pair("mail.example", 90);
    let answer = api
        .invoke(
            &Caller::Host,
            "ImportCertificate",
            params(&[("certificateChain", &chain), ("privateKey", &key)]),
        )
        .await;
    assert!(answer.is_success(), "{answer:?}");
    let result = &answer.envelope.result;
    assert_eq!(result["certificate"]["source"], "imported");
    assert_eq!(result["certificate"]["keyType"], "ECDSA");
    assert_eq!(result["warnings"], serde_json::json!([]));
    let fingerprint = result["certificate"]["sha256Fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(resolver.current().fingerprint(), fingerprint);
    let info = api
        .invoke(&Caller::Host, "GetCertificateInfo", Params::new())
        .await;
    assert_eq!(info.envelope.result["source"], "imported");

    // The next start serves it again.
    let data_dir = dir.path().join("data");
    let (restarted, _) = crate::tls::prepare(
        &crate::tls::CertificateSourceSpec::SelfSigned,
        &data_dir,
        "mail.example",
    )
    .unwrap();
    assert_eq!(restarted.current().fingerprint(), fingerprint);
    assert_eq!(
        crate::tls::source_name("self-signed", &data_dir),
        "imported"
    );

    // A new self-signed certificate replaces it, now and after a restart.
    let created = api
        .invoke(
            &Caller::Host,
            "CreateSelfSignedCertificate",
            params(&[("names", "mx.example, 192.0.2.1")]),
        )
        .await;
    assert!(created.is_success(), "{created:?}");
    let certificate = &created.envelope.result["certificate"];
    assert_eq!(certificate["source"], "self-signed");
    let names = certificate["dnsNames"].as_array().unwrap();
    assert!(
        names.contains(&serde_json::json!("mx.example")),
        "{names:?}"
    );
    assert!(certificate["ipAddresses"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("192.0.2.1")));
    assert_ne!(resolver.current().fingerprint(), fingerprint);
    assert_eq!(
        crate::tls::source_name("self-signed", &data_dir),
        "self-signed"
    );
    let (restarted, _) = crate::tls::prepare(
        &crate::tls::CertificateSourceSpec::SelfSigned,
        &data_dir,
        "mail.example",
    )
    .unwrap();
    assert_eq!(
        restarted.current().fingerprint(),
        resolver.current().fingerprint()
    );
}

#[tokio::test]
async fn expired_certificate_is_imported_with_a_warning_and_a_foreign_key_refused() {
    let (_dir, api, resolver) = api_with_certificate();
    let before = resolver.current().fingerprint().to_owned();
    let (chain, _) = pem_pair("mail.example", 90);
    let (_, foreign_key) = pem_pair("mail.example", 90);
    let refused = api
        .invoke(
            &Caller::Host,
            "ImportCertificate",
            params(&[("certificateChain", &chain), ("privateKey", &foreign_key)]),
        )
        .await;
    assert_eq!(refused.http_status, 400, "{refused:?}");
    let error = refused.envelope.error.unwrap();
    assert!(
        error
            .details
            .unwrap_or_default()
            .contains("does not belong"),
        "{}",
        error.message
    );
    assert_eq!(resolver.current().fingerprint(), before);

    let (chain, key) = pem_pair("other.example", -2);
    let answer = api
        .invoke(
            &Caller::Host,
            "ImportCertificate",
            params(&[("certificateChain", &chain), ("privateKey", &key)]),
        )
        .await;
    assert!(answer.is_success(), "{answer:?}");
    let warnings = answer.envelope.result["warnings"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].as_str().unwrap().contains("does not name"));
    assert!(warnings[1].as_str().unwrap().contains("expired"));
    assert!(
        answer.envelope.result["certificate"]["daysLeft"]
            .as_i64()
            .unwrap()
            < 0
    );
    assert_ne!(resolver.current().fingerprint(), before);
}

#[tokio::test]
async fn pkcs12_is_imported_with_its_password_and_refused_with_another() {
    let (dir, api, resolver) = api_with_certificate();
    let (chain, key) = pem_pair("mail.example", 90);
    std::fs::write(dir.path().join("in.pem"), format!("{chain}{key}")).unwrap();
    let out = dir.path().join("in.p12");
    let made = std::process::Command::new("openssl")
        .args(["pkcs12", "-export", "-passout", "pass:s3cret", "-in"])
        .arg(dir.path().join("in.pem"))
        .arg("-out")
        .arg(&out)
        .status()
        .unwrap();
    assert!(made.success());
    let encoded = data_encoding::BASE64.encode(&std::fs::read(&out).unwrap());
    let before = resolver.current().fingerprint().to_owned();

    let wrong = api
        .invoke(
            &Caller::Host,
            "ImportCertificate",
            params(&[("pkcs12", &encoded), ("password", "guess")]),
        )
        .await;
    assert_eq!(wrong.http_status, 400, "{wrong:?}");
    let details = wrong.envelope.error.unwrap().details.unwrap_or_default();
    assert!(details.contains("password is wrong"), "{details}");
    assert_eq!(resolver.current().fingerprint(), before);

    let both = api
        .invoke(
            &Caller::Host,
            "ImportCertificate",
            params(&[("pkcs12", &encoded), ("certificateChain", &chain)]),
        )
        .await;
    assert_eq!(both.http_status, 400, "{both:?}");

    let right = api
        .invoke(
            &Caller::Host,
            "ImportCertificate",
            params(&[("pkcs12", &encoded), ("password", "s3cret")]),
        )
        .await;
    assert!(right.is_success(), "{right:?}");
    assert_eq!(
        right.envelope.result["certificate"]["sha256Fingerprint"],
        resolver.current().fingerprint()
    );
    assert_ne!(resolver.current().fingerprint(), before);
}

#[tokio::test]
async fn a_self_signed_certificate_names_only_dns_names_and_addresses() {
    let (_dir, api) = api();
    let refused = api
        .invoke(
            &Caller::Host,
            "CreateSelfSignedCertificate",
            params(&[("names", "mail.example.com, not a name")]),
        )
        .await;
    assert_eq!(refused.http_status, 400, "{refused:?}");
    assert!(refused
        .envelope
        .error
        .unwrap()
        .details
        .unwrap()
        .contains("not a name"));
}

#[tokio::test]
async fn acme_functions_refuse_at_once_what_cannot_run() {
    let (_dir, api) = api();
    // Not an ACME certificate: nothing to renew, answered without starting a run.
    let renew = api
        .invoke(&Caller::Host, "RenewCertificate", Params::new())
        .await;
    assert_eq!(renew.http_status, 409, "{renew:?}");
    assert!(renew.envelope.token.is_none());
    // The terms of service must be accepted, the names must be DNS names.
    for (pairs, needle) in [
        (
            &[
                ("domains", "mail.example"),
                ("acceptTermsOfService", "false"),
            ][..],
            "acceptTermsOfService",
        ),
        (
            &[("domains", "*.example"), ("acceptTermsOfService", "true")][..],
            "not a DNS name",
        ),
        (
            &[
                ("domains", "mail.example"),
                ("acceptTermsOfService", "true"),
                ("directoryUrl", "http://ca.example/dir"),
            ][..],
            "https://",
        ),
    ] {
        let answer = api
            .invoke(&Caller::Host, "RequestAcmeCertificate", params(pairs))
            .await;
        assert_eq!(answer.http_status, 400, "{pairs:?}: {answer:?}");
        let error = answer.envelope.error.expect("error");
        assert!(
            format!("{} {:?}", error.message, error.details).contains(needle),
            "{pairs:?}: {error:?}"
        );
    }
}

#[tokio::test]
async fn accept_terms_of_service_is_a_json_boolean_or_the_string_a_form_sends() {
    let (_dir, api) = api();
    let call = |terms: serde_json::Value, staging: Option<serde_json::Value>| {
        let mut p = Params::new();
        // A name HTTP-01 cannot prove: refused after the flags are read, before any order.
        p.insert("domains".into(), "*.example".into());
        p.insert("acceptTermsOfService".into(), terms);
        if let Some(staging) = staging {
            p.insert("stagingFirst".into(), staging);
        }
        let api = api.clone();
        async move {
            let answer = api.invoke(&Caller::Host, "RequestAcmeCertificate", p).await;
            assert_eq!(answer.http_status, 400, "{answer:?}");
            let error = answer.envelope.error.expect("error");
            format!("{} {:?}", error.message, error.details)
        }
    };
    // What the console sends (a JSON boolean) and what a form or the CLI sends.
    for accepted in [
        serde_json::Value::Bool(true),
        " TRUE ".into(),
        "true".into(),
    ] {
        let said = call(accepted.clone(), Some(serde_json::Value::Bool(false))).await;
        assert!(said.contains("not a DNS name"), "{accepted}: {said}");
    }
    for refused in [serde_json::Value::Bool(false), "false".into()] {
        let said = call(refused.clone(), None).await;
        assert!(said.contains("acceptTermsOfService"), "{refused}: {said}");
    }
    let said = call("yes".into(), None).await;
    assert!(said.contains("true or false"), "{said}");
    let said = call(true.into(), Some("sometimes".into())).await;
    assert!(said.contains("true or false"), "{said}");
}
