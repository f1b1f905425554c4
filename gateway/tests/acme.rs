//! ACME against a real CA on loopback (Debian's Pebble, started by `pebble-test-util`):
//! orders that succeed, and orders that fail with the reason in words and nothing replaced.
//! Pebble's mock DNS answers 127.0.0.1 for every name, so `mail.example.test` reaches the
//! challenge listener each test binds on a free loopback port.

use std::path::Path;
use std::sync::Arc;

use gateway::tls::acme::{
    self, account_path, load_acme, AcmeError, AcmeOrder, ChallengeListener, Http01Responses,
};
use pebble_test_util::{Pebble, PebbleOptions};
use rustls::pki_types::CertificateDer;

const NAME: &str = "mail.example.test";

/// Pebble plus the gateway's challenge listener on the port Pebble dials for HTTP-01.
struct Ca {
    pebble: Pebble,
    responses: Http01Responses,
    listener: Option<ChallengeListener>,
}

async fn ca(options: PebbleOptions) -> Ca {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let pebble = Pebble::start(PebbleOptions {
        http_port: tcp.local_addr().expect("addr").port(),
        mock_dns: true,
        ..options
    })
    .unwrap_or_else(|err| panic!("{err}"));
    let responses = Http01Responses::new();
    let listener = ChallengeListener::start(tcp, responses.clone()).expect("challenge listener");
    Ca {
        pebble,
        responses,
        listener: Some(listener),
    }
}

fn order(pebble: &Pebble, names: &[&str]) -> AcmeOrder {
    AcmeOrder {
        domains: names.iter().map(|n| (*n).to_owned()).collect(),
        contact_email: Some("postmaster@example.test".to_owned()),
        directory_url: pebble.directory_url(),
        staging_directory_url: None,
        ca_pem: Some(pebble.ca_pem().to_owned()),
    }
}

/// A free loopback port for a manager's challenge listener, which the manager opens itself.
fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
}

/// Pebble dialling `port` for HTTP-01, its CA written to `<data>/pebble-ca.pem`.
fn pebble_for(port: std::net::SocketAddr, data: &Path) -> Pebble {
    let pebble = Pebble::start(PebbleOptions {
        http_port: port.port(),
        mock_dns: true,
        ..PebbleOptions::default()
    })
    .unwrap_or_else(|err| panic!("{err}"));
    std::fs::write(data.join("pebble-ca.pem"), pebble.ca_pem()).expect("CA file");
    pebble
}

fn challenge_port(addr: std::net::SocketAddr) -> Option<gateway::tls::ChallengePort> {
    Some(gateway::tls::ChallengePort {
        addr,
        options: gateway::net::SocketOptions::default(),
    })
}

/// A manager on a self-signed certificate that may order on `port`, as a CLI process has it.
fn manager(data: &Path, port: std::net::SocketAddr) -> Arc<gateway::tls::CertificateManager> {
    Arc::new(
        gateway::tls::CertificateManager::new(
            NAME.to_owned(),
            Some(data.to_owned()),
            None,
            "self-signed",
        )
        .with_acme(None, challenge_port(port)),
    )
}

/// ACME settings for `NAME` from `directory_url`, trusting `<data>/pebble-ca.pem` if given.
fn settings(
    directory_url: String,
    ca_file: Option<std::path::PathBuf>,
) -> gateway::config::AcmeSettings {
    gateway::config::AcmeSettings {
        directory_url,
        contact_email: None,
        ca_file,
        domains: vec![NAME.to_owned()],
        staging_directory_url: None,
    }
}

/// The chain verifies for `name` against `root_pem` alone, as a client trusting only that
/// root would check it.
fn assert_chains_to(chain: &[CertificateDer<'static>], root_pem: &str, name: &str) {
    test_support::pki::verify_chain(root_pem.as_bytes(), chain, name)
        .expect("the issued chain verifies against the CA's issuing root");
}

fn account_files(data_dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(acme::acme_dir(data_dir)) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("account-"))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn obtains_a_certificate_chaining_to_the_cas_issuing_root() {
    let ca = ca(PebbleOptions::default()).await;
    let data = tempfile::tempdir().expect("data dir");
    let material = acme::obtain(
        &order(&ca.pebble, &[NAME, "smtp.example.test"]),
        data.path(),
        &ca.responses,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", ca.pebble.log()));

    assert_chains_to(material.chain(), ca.pebble.issuing_root_pem(), NAME);
    assert!(material.info().covers("smtp.example.test"));
    // Stored where start-up finds it, private, the key ECDSA P-256.
    let loaded = load_acme(data.path()).expect("stored").expect("usable");
    assert_eq!(loaded.fingerprint(), material.fingerprint());
    let dir = acme::acme_dir(data.path());
    let key_pem = std::fs::read_to_string(dir.join(acme::ACME_KEY_FILE)).expect("key.pem");
    let key = rcgen::KeyPair::from_pem(&key_pem).expect("PEM key");
    assert!(
        key.is_compatible(&rcgen::PKCS_ECDSA_P256_SHA256),
        "key type"
    );
    use std::os::unix::fs::PermissionsExt;
    for file in std::fs::read_dir(&dir).expect("acme dir") {
        let file = file.expect("entry");
        let mode = file.metadata().expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{:?}", file.file_name());
    }
    // Tokens are withdrawn once the order is over.
    assert!(ca.responses.get("anything").await.is_none());
}

#[tokio::test]
async fn the_account_is_registered_once_and_reused_for_the_next_order() {
    let ca = ca(PebbleOptions::default()).await;
    let data = tempfile::tempdir().expect("data dir");
    let order = order(&ca.pebble, &[NAME]);
    let first = acme::obtain(&order, data.path(), &ca.responses)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", ca.pebble.log()));
    let account = account_path(data.path(), &order.directory_url);
    let credentials = std::fs::read(&account).expect("account stored");

    let second = acme::obtain(&order, data.path(), &ca.responses)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", ca.pebble.log()));
    assert_ne!(
        first.fingerprint(),
        second.fingerprint(),
        "a new certificate"
    );
    assert_eq!(
        std::fs::read(&account).expect("account"),
        credentials,
        "the stored account was used, not replaced"
    );
    assert_eq!(account_files(data.path()).len(), 1);
}

#[tokio::test]
async fn staging_first_runs_the_order_on_staging_then_on_production() {
    let production = ca(PebbleOptions::default()).await;
    // The staging CA dials the same challenge listener (orders run one after the other).
    let staging = Pebble::start(PebbleOptions {
        http_port: production.pebble.http_port(),
        mock_dns: true,
        ..PebbleOptions::default()
    })
    .unwrap_or_else(|err| panic!("{err}"));
    let data = tempfile::tempdir().expect("data dir");
    let mut order = order(&production.pebble, &[NAME]);
    order.staging_directory_url = Some(staging.directory_url());
    order.ca_pem = Some(format!(
        "{}{}",
        staging.ca_pem(),
        production.pebble.ca_pem()
    ));

    let material = acme::obtain(&order, data.path(), &production.responses)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", staging.log(), production.pebble.log()));
    // The certificate kept is production's; staging issued one too (it has an account).
    assert_chains_to(material.chain(), production.pebble.issuing_root_pem(), NAME);
    assert!(account_path(data.path(), &staging.directory_url()).exists());
    assert!(account_path(data.path(), &order.directory_url).exists());
    assert!(
        staging.log().contains("Issued certificate")
            || staging.log().to_lowercase().contains("certificate"),
        "staging issued nothing:\n{}",
        staging.log()
    );
}

/// A directory URL on a port nothing listens on.
fn dead_directory() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    format!("https://127.0.0.1:{port}/dir")
}

#[tokio::test]
async fn staging_down_means_production_is_not_asked() {
    let production = ca(PebbleOptions::default()).await;
    let data = tempfile::tempdir().expect("data dir");
    let mut order = order(&production.pebble, &[NAME]);
    let staging_url = dead_directory();
    order.staging_directory_url = Some(staging_url.clone());

    let err = acme::obtain(&order, data.path(), &production.responses)
        .await
        .expect_err("staging is down");
    let text = err.to_string();
    assert!(matches!(err, AcmeError::Staging { .. }), "{err:?}");
    assert!(
        text.contains(&format!(
            "the trial order against the staging CA ({staging_url}) failed"
        )) && text.contains("the production CA was not asked")
            && text.contains(&format!("cannot reach the ACME server at {staging_url}"))
            && text.to_lowercase().contains("connection refused"),
        "{text}"
    );
    assert!(!account_path(data.path(), &order.directory_url).exists());
    assert!(load_acme(data.path()).is_none());
}

#[tokio::test]
async fn an_unreachable_challenge_port_is_reported_in_words_and_the_old_certificate_kept() {
    let mut ca = ca(PebbleOptions::default()).await;
    let data = tempfile::tempdir().expect("data dir");
    let order = order(&ca.pebble, &[NAME]);
    let old = acme::obtain(&order, data.path(), &ca.responses)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", ca.pebble.log()));

    // Nothing listens on the port the CA dials any more.
    ca.listener.take().expect("listener").stop().await;
    // A new account, so the CA has no valid authorization it could reuse: Pebble reuses one
    // in a hundred even at `PEBBLE_AUTHZREUSE=0`, and then the order needs no challenge.
    std::fs::remove_file(account_path(data.path(), &order.directory_url)).expect("account");
    let err = acme::obtain(&order, data.path(), &ca.responses)
        .await
        .expect_err("the CA cannot reach the challenge");
    let text = err.to_string();
    assert!(matches!(err, AcmeError::ChallengeFailed { .. }), "{err:?}");
    assert!(
        text.starts_with(&format!(
            "the CA could not reach http://{NAME}/.well-known/acme-challenge/"
        )) && text.to_lowercase().contains("connection refused")
            && text.contains("is port 80 forwarded to this machine"),
        "{text}"
    );
    assert!(!err.is_permanent());
    let kept = load_acme(data.path()).expect("stored").expect("usable");
    assert_eq!(
        kept.fingerprint(),
        old.fingerprint(),
        "the old certificate stays"
    );
}

#[tokio::test]
async fn a_ca_that_is_down_is_reported_as_unreachable() {
    let data = tempfile::tempdir().expect("data dir");
    let pebble = Pebble::start(PebbleOptions::default()).unwrap_or_else(|err| panic!("{err}"));
    let mut order = order(&pebble, &[NAME]);
    let url = dead_directory();
    order.directory_url = url.clone();
    let err = acme::obtain(&order, data.path(), &Http01Responses::new())
        .await
        .expect_err("nothing answers");
    let text = err.to_string();
    assert!(matches!(err, AcmeError::Unreachable { .. }), "{err:?}");
    assert!(
        text.starts_with(&format!("cannot reach the ACME server at {url}: "))
            && text.to_lowercase().contains("connection refused"),
        "{text}"
    );
    assert!(!err.is_permanent());
    assert!(load_acme(data.path()).is_none());
    assert!(account_files(data.path()).is_empty());
}

#[tokio::test]
async fn a_name_the_ca_refuses_is_a_permanent_error_in_words() {
    let blocked = "blocked.example.test";
    let ca = ca(PebbleOptions {
        domain_blocklist: vec![blocked.to_owned()],
        ..PebbleOptions::default()
    })
    .await;
    let data = tempfile::tempdir().expect("data dir");
    let err = acme::obtain(&order(&ca.pebble, &[blocked]), data.path(), &ca.responses)
        .await
        .expect_err("the CA refuses the name");
    let text = err.to_string();
    assert!(matches!(err, AcmeError::Refused { .. }), "{err:?}");
    assert!(
        text.starts_with(&format!(
            "the CA refuses to issue a certificate for {blocked}: "
        )) && text.contains("forbidden by policy"),
        "{text}"
    );
    assert!(err.is_permanent());
    assert!(load_acme(data.path()).is_none());
}

#[tokio::test]
async fn rejected_nonces_are_retried_until_the_order_succeeds() {
    let ca = ca(PebbleOptions {
        nonce_reject_percent: 60,
        ..PebbleOptions::default()
    })
    .await;
    let data = tempfile::tempdir().expect("data dir");
    let material = acme::obtain(&order(&ca.pebble, &[NAME]), data.path(), &ca.responses)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", ca.pebble.log()));
    assert_chains_to(material.chain(), ca.pebble.issuing_root_pem(), NAME);
}

#[tokio::test]
async fn a_ca_rejecting_every_nonce_gives_a_clear_error() {
    let ca = ca(PebbleOptions {
        nonce_reject_percent: 100,
        ..PebbleOptions::default()
    })
    .await;
    let data = tempfile::tempdir().expect("data dir");
    let err = acme::obtain(&order(&ca.pebble, &[NAME]), data.path(), &ca.responses)
        .await
        .expect_err("every nonce is rejected");
    let text = err.to_string();
    assert!(matches!(err, AcmeError::BadNonce { .. }), "{err:?}");
    assert!(
        text.starts_with("the ACME server rejected the request's anti-replay nonce")
            && text.contains("(badNonce)"),
        "{text}"
    );
    assert!(load_acme(data.path()).is_none());
}

#[tokio::test]
async fn choosing_another_certificate_stops_acme_and_closes_the_challenge_port() {
    // The port Pebble dials is the manager's challenge port: free now, opened by the order.
    let port = free_port();
    let data = tempfile::tempdir().expect("data dir");
    let pebble = pebble_for(port, data.path());
    let manager = manager(data.path(), port);
    let settings = settings(
        pebble.directory_url(),
        Some(data.path().join("pebble-ca.pem")),
    );
    let material = manager
        .request_acme(settings.clone(), false)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", pebble.log()));
    assert_eq!(manager.source(), "acme");
    assert_eq!(manager.acme_settings(), Some(settings));
    assert_eq!(manager.challenge_listener_addr().await, Some(port));
    assert!(
        std::net::TcpStream::connect(port).is_ok(),
        "open for renewals"
    );
    let renewed = manager
        .renew_now()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", pebble.log()));
    assert_ne!(renewed.fingerprint(), material.fingerprint());

    // The administrator chooses a self-signed certificate instead.
    let chosen = gateway::tls::create_self_signed(data.path(), NAME, &[]).expect("self-signed");
    manager.put_in_use(&chosen, "self-signed").await;
    assert_eq!(manager.source(), "self-signed");
    assert!(manager.acme_settings().is_none(), "renewal stops");
    assert_eq!(manager.challenge_listener_addr().await, None);
    assert!(
        std::net::TcpStream::connect(port).is_err(),
        "the challenge port is closed"
    );
    let err = manager.renew_now().await.expect_err("not ACME any more");
    assert!(matches!(err, AcmeError::NotAcme), "{err:?}");
}

#[tokio::test]
async fn a_failed_first_order_leaves_the_challenge_port_closed() {
    let port = free_port();
    let data = tempfile::tempdir().expect("data dir");
    let manager = manager(data.path(), port);
    let settings = settings(dead_directory(), None);
    let err = manager
        .request_acme(settings, false)
        .await
        .expect_err("the CA is down");
    assert!(matches!(err, AcmeError::Unreachable { .. }), "{err:?}");
    assert_eq!(manager.source(), "self-signed", "the old source stays");
    assert_eq!(manager.challenge_listener_addr().await, None);
}

#[tokio::test]
async fn renewal_by_hand_goes_through_the_loop_its_record_survives_a_restart_and_stops_with_self_signed(
) {
    use gateway::config::AcmeSettings;
    use gateway::tls::acme::renewal::state_path;
    use gateway::tls::{CertResolver, CertificateManager};
    let port = free_port();
    let data = tempfile::tempdir().expect("data dir");
    let pebble = pebble_for(port, data.path());
    let first = gateway::tls::create_self_signed(data.path(), NAME, &[]).expect("self-signed");
    let resolver = Arc::new(CertResolver::new(first));
    let challenge = challenge_port(port);
    // As `serve` builds it: with a renewal loop.
    let serving = |acme: Option<AcmeSettings>, source| {
        Arc::new(
            CertificateManager::new(
                NAME.to_owned(),
                Some(data.path().to_owned()),
                Some(Arc::clone(&resolver)),
                source,
            )
            .with_acme(acme, challenge)
            .with_renewal(),
        )
    };
    let manager = serving(None, "self-signed");
    assert!(manager.renewal_handle().is_none(), "no loop before ACME");
    let settings = settings(
        pebble.directory_url(),
        Some(data.path().join("pebble-ca.pem")),
    );
    let ordered = manager
        .request_acme(settings.clone(), false)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", pebble.log()));
    let handle = manager
        .renewal_handle()
        .expect("the loop runs once the source is ACME");
    assert_eq!(handle.state().consecutive_failures, 0);
    assert!(handle.state().last_success.is_some());

    // RenewCertificate's path: an attempt by the loop, presented on the listeners.
    let renewed = manager
        .renew()
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", pebble.log()));
    assert_ne!(renewed.fingerprint(), ordered.fingerprint());
    assert_eq!(resolver.current().fingerprint(), renewed.fingerprint());

    // The CA goes away: the failure is the loop's, recorded and on disk.
    drop(pebble);
    let err = manager.renew().await.expect_err("the CA is down");
    assert!(matches!(err, AcmeError::RenewalFailed { .. }), "{err:?}");
    assert!(err.to_string().contains("retried at"), "{err}");
    let failed = handle.state();
    assert_eq!(failed.consecutive_failures, 1);
    assert!(failed.last_error.is_some());
    assert_eq!(
        resolver.current().fingerprint(),
        renewed.fingerprint(),
        "old one kept"
    );

    // A restart: the record is read back, not forgotten.
    drop(manager);
    assert_eq!(
        handle.renew_now().await,
        None,
        "the old loop ended with its manager"
    );
    let restarted = serving(Some(settings), "acme");
    let stored = load_acme(data.path()).expect("stored").expect("readable");
    restarted.start_renewal(&stored);
    let status = restarted
        .renewal_status(Some(stored.info()))
        .expect("ACME has a renewal status");
    assert!(status.scheduled);
    assert_eq!(status.state.consecutive_failures, 1);
    assert_eq!(status.state.last_error, failed.last_error);
    // Not due yet: the next attempt is the due date, whatever the failures' backoff said.
    assert_eq!(status.state.next_attempt, status.due);

    // Choosing a self-signed certificate by hand stops the loop: no further attempts.
    let handle = restarted.renewal_handle().expect("loop after restart");
    let recorded = std::fs::read(state_path(data.path())).expect("renewal.json");
    let chosen = gateway::tls::create_self_signed(data.path(), NAME, &[]).expect("self-signed");
    restarted.put_in_use(&chosen, "self-signed").await;
    assert!(restarted.renewal_handle().is_none());
    assert!(restarted.renewal_status(None).is_none(), "no renewal shown");
    assert_eq!(handle.renew_now().await, None, "the loop is gone");
    assert_eq!(
        std::fs::read(state_path(data.path())).expect("renewal.json"),
        recorded,
        "no attempt was made"
    );
}
