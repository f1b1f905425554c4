//! The gateway under test: started in-process with every listener on 127.0.0.1 and a free
//! port, its own data directory, and a three-level test PKI (root, intermediate, leaf) so
//! that "the chain is served complete" is something a client trusting only the root can
//! check. Checks talk to it only over the wire; the store is read only to compare what was
//! delivered with what was sent.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use gateway::config::Config;
use gateway::crypto::MailboxPassword;
use gateway::mailbox::MailboxId;
use gateway::server::Running;
use gateway::service::Gateway;
use gateway::tls::CertificateSourceSpec;
use test_support::pki::{self, Ca, Leaf};
use tokio_rustls::TlsConnector;

/// The domain of the gateway's mailbox addresses in every suite.
pub const EMAIL_DOMAIN: &str = "archive.test";
/// The gateway's host name (greetings). The certificate names it and `localhost`.
pub const HOST_NAME: &str = "mx.archive.test";

/// The five protocol listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// SMTP with STARTTLS (25 in production).
    Smtp,
    /// Submission with STARTTLS (587).
    Submission,
    /// SMTP over implicit TLS (465).
    Smtps,
    /// POP3 with STLS (110).
    Pop3,
    /// POP3 over implicit TLS (995).
    Pop3s,
}

impl Service {
    pub const ALL: [Service; 5] = [
        Service::Smtp,
        Service::Submission,
        Service::Smtps,
        Service::Pop3,
        Service::Pop3s,
    ];

    /// The name `gateway::server::Running` uses.
    pub fn name(self) -> &'static str {
        match self {
            Service::Smtp => "smtp",
            Service::Submission => "submission",
            Service::Smtps => "smtps",
            Service::Pop3 => "pop3",
            Service::Pop3s => "pop3s",
        }
    }

    /// Whether TLS starts before the first protocol byte.
    pub fn implicit_tls(self) -> bool {
        matches!(self, Service::Smtps | Service::Pop3s)
    }

    pub fn is_smtp(self) -> bool {
        matches!(self, Service::Smtp | Service::Submission | Service::Smtps)
    }
}

/// A mailbox: its id, address and password.
pub struct Mailbox {
    pub id: MailboxId,
    pub address: String,
    pub password: MailboxPassword,
}

impl Mailbox {
    /// The password as the POP3 client types it.
    pub fn pass(&self) -> String {
        self.password.reveal_for_display().to_string()
    }

    /// The POP3 user name (the mailbox id).
    pub fn user(&self) -> String {
        self.id.to_string()
    }
}

/// The test PKI's files.
pub struct Pki {
    /// The root CA: the only certificate clients trust.
    pub root: PathBuf,
    /// What the gateway serves: leaf, then intermediate.
    pub chain: PathBuf,
    pub key: PathBuf,
}

/// A running gateway.
pub struct Target {
    dir: tempfile::TempDir,
    pub config: Config,
    gateway: Gateway,
    running: Option<Running>,
    addresses: Vec<(Service, SocketAddr)>,
    pub pki: Pki,
    connector: TlsConnector,
}

impl Target {
    /// The defaults of a fresh installation, on loopback.
    pub async fn start() -> Result<Self> {
        Self::start_with(|_| {}).await
    }

    /// Like [`start`](Self::start), with the configuration adjusted by `adjust` first.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let pki = make_pki(dir.path()).context("test PKI")?;
        let mut config = Config::default();
        config.gateway.data_dir = dir.path().join("data");
        config.gateway.email_domain = EMAIL_DOMAIN.to_owned();
        config.gateway.host_name = HOST_NAME.to_owned();
        for listener in [
            &mut config.listen.smtp,
            &mut config.listen.submission,
            &mut config.listen.smtps,
            &mut config.listen.pop3,
            &mut config.listen.pop3s,
        ] {
            listener.address = std::net::Ipv4Addr::LOCALHOST.into();
            listener.port = 0;
            listener.enabled = true;
        }
        for off in [&mut config.listen.console, &mut config.listen.acme_http] {
            off.enabled = false;
        }
        // Failed POP3 logins pause briefly so negative checks stay fast; the delay itself
        // is not an RFC requirement.
        config.pop3.failed_login_delay_ms = 10;
        config.proxy.failed_login_delay_ms = 10;
        adjust(&mut config);
        std::fs::create_dir_all(&config.gateway.data_dir)?;

        let gateway = Gateway::open(&config).map_err(|e| anyhow!("open gateway: {e}"))?;
        let spec = CertificateSourceSpec::Files {
            chain: pki.chain.clone(),
            key: pki.key.clone(),
        };
        let (resolver, _material) =
            gateway::tls::prepare(&spec, &config.gateway.data_dir, &config.gateway.host_name)
                .map_err(|e| anyhow!("TLS material: {e}"))?;
        let running = gateway::server::start(&config, gateway.clone(), resolver)
            .await
            .map_err(|e| anyhow!("start listeners: {e}"))?;
        let mut addresses = Vec::new();
        for service in Service::ALL {
            let addr = running
                .address(service.name())
                .ok_or_else(|| anyhow!("no {} listener", service.name()))?;
            addresses.push((service, addr));
        }
        let connector = connector(&pki.root)?;
        Ok(Self {
            dir,
            config,
            gateway,
            running: Some(running),
            addresses,
            pki,
            connector,
        })
    }

    pub fn addr(&self, service: Service) -> SocketAddr {
        self.addresses
            .iter()
            .find(|(s, _)| *s == service)
            .map(|(_, a)| *a)
            // Every service is bound in start_with, which fails otherwise.
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// A rustls client trusting only the test root.
    pub fn connector(&self) -> &TlsConnector {
        &self.connector
    }

    /// A scratch directory for client-side files.
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// A new active mailbox.
    pub async fn mailbox(&self, name: &str) -> Result<Mailbox> {
        let created = self
            .gateway
            .create_mailbox(name, "conformance")
            .await
            .map_err(|e| anyhow!("create mailbox: {e}"))?;
        Ok(Mailbox {
            id: created.info.id,
            address: created.info.address,
            password: created.password,
        })
    }

    /// Suspends a mailbox (senders get a temporary error).
    pub async fn suspend(&self, mailbox: &Mailbox) -> Result<()> {
        self.gateway
            .set_status(&mailbox.id, gateway::store::MailboxStatus::Suspended)
            .await
            .map_err(|e| anyhow!("suspend: {e}"))?;
        Ok(())
    }

    /// Every stored message of a mailbox, decrypted, in arrival order.
    pub fn messages(&self, mailbox: &Mailbox) -> Result<Vec<Vec<u8>>> {
        let summaries = self
            .gateway
            .list_messages(&mailbox.id)
            .map_err(|e| anyhow!("list: {e}"))?;
        if summaries.is_empty() {
            return Ok(Vec::new());
        }
        let key = self
            .gateway
            .unseal(&mailbox.id, &mailbox.password)
            .map_err(|e| anyhow!("unseal: {e}"))?;
        summaries
            .iter()
            .map(|s| {
                self.gateway
                    .read_message(&key, s.seq)
                    .map(|(_, bytes)| bytes)
                    .map_err(|e| anyhow!("read: {e}"))
            })
            .collect()
    }

    pub fn message_count(&self, mailbox: &Mailbox) -> Result<usize> {
        Ok(self
            .gateway
            .list_messages(&mailbox.id)
            .map_err(|e| anyhow!("list: {e}"))?
            .len())
    }

    /// Graceful shutdown.
    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            // A listener that does not stop within the grace period is left to the runtime.
            let _ = tokio::time::timeout(Duration::from_secs(60), running.stop()).await;
        }
    }
}

/// A client configuration trusting only `root`, with rustls' safe defaults (TLS 1.2, 1.3).
pub fn connector(root: &Path) -> Result<TlsConnector> {
    test_support::pki::connector_for_file(root)
}

/// Root CA, intermediate CA and leaf (for `localhost`, [`HOST_NAME`] and 127.0.0.1),
/// written as PEM under `dir`.
fn make_pki(dir: &Path) -> Result<Pki> {
    let root = Ca::new("gateway conformance root")?;
    let intermediate = root.intermediate("gateway conformance intermediate")?;
    // rcgen's default runs from 1975 to 4096, which testssl rightly flags; a leaf lives 90 days.
    let leaf = intermediate.issue(
        Leaf::names(&["localhost", HOST_NAME, "127.0.0.1"])
            .common_name(HOST_NAME)
            .valid(Duration::from_secs(3600), 90 * pki::DAY),
    )?;
    let pki = Pki {
        root: dir.join("root.pem"),
        chain: dir.join("chain.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&pki.root, root.pem())?;
    leaf.write(&pki.chain, &pki.key)?;
    Ok(pki)
}
