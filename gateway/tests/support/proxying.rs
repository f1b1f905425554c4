//! Proxy mode against the real throwaway provider (Postfix and Dovecot from
//! `upstream-test-util`): a gateway that trusts it, the login that names it, and the
//! Python client (smtplib, poplib) the tests drive the proxy with.

use std::path::Path;

use gateway::config::Config;
use gateway::mailbox::MailboxId;
use upstream_test_util::Provider;

use super::TestGateway;

pub async fn provider() -> Provider {
    tokio::task::spawn_blocking(Provider::start)
        .await
        .unwrap()
        .expect("start Postfix and Dovecot")
}

/// Proxy settings that reach `provider`: its CA trusted, loopback and its ports allowed.
pub fn trust_provider(config: &mut Config, provider: &Provider) {
    config.proxy.ca_files = vec![provider.ca_file().to_owned()];
    config.proxy.system_roots = false;
    // The provider runs on loopback, on ports of its own.
    config.proxy.allow_private_networks = true;
    config.proxy.allowed_ports.clear();
}

pub async fn gateway_for(provider: &Provider) -> TestGateway {
    TestGateway::start_with(|config| trust_provider(config, provider)).await
}

/// The proxy login: `remote_user%server%mailbox`.
pub fn login(user: &str, server: std::net::SocketAddr, mailbox: &MailboxId) -> String {
    format!("{user}%{server}%{mailbox}")
}

/// Runs `tests/clients/proxy_client.py` with `args`; its output, which must be a success.
pub async fn python(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/proxy_client.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .args(args)
        .output()
        .await
        .expect("run python3");
    assert!(
        out.status.success(),
        "python client failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
