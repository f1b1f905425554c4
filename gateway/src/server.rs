//! Starting and stopping the protocol listeners that `gateway serve` runs.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinSet;

use crate::api::{Api, ServerContext};
use crate::config::Config;
use crate::console_listener::{ConsoleOptions, ConsoleServer};
use crate::net::{
    ConnectionLimits, ConnectionPolicy, ProtocolServer as _, Shutdown, SocketOptions, TcpListener,
    TlsMode,
};
use crate::pop3::{Pop3Server, Pop3Settings};
use crate::proxy::{TcpConnector, Upstreams};
use crate::service::Gateway;
use crate::settings::EmailDomain;
use crate::settings::{LiveSettings, SettingsFile};
use crate::smtp::{SessionConfig, SmtpServer};
use crate::tls::{CertResolver, CertificateManager, UpstreamTrust};

/// A listener that could not be opened, named so the administrator knows which setting.
/// The cause is part of the message and deliberately not a `source`: error reports print
/// the chain of sources, which would repeat it.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({service}): {cause}{hint}")]
pub struct BindError {
    pub service: &'static str,
    pub addr: SocketAddr,
    pub cause: std::io::Error,
    hint: String,
}

/// Why the listeners did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error("proxy: cannot load the trusted CA certificates ([proxy] ca_files): {0}")]
    ProxyTrust(#[from] crate::tls::TlsError),
    #[error("tls.source = \"acme\": {0}")]
    Acme(#[from] crate::tls::acme::AcmeError),
}

/// The running listeners.
pub struct Running {
    /// Bound addresses by service name (useful when the configuration asked for port 0).
    pub addresses: Vec<(&'static str, SocketAddr)>,
    api: Api,
    shutdown: Shutdown,
    tasks: JoinSet<()>,
    /// The rolling snapshot, when `[backup] snapshot_interval` is set.
    snapshots: Option<crate::backup::Snapshots>,
}

impl Running {
    /// The Management API of this gateway, as the console listener serves it (for the
    /// control socket, which calls the same dispatcher).
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// The rolling snapshot, when `[backup] snapshot_interval` turned it on.
    pub fn snapshots(&self) -> Option<&crate::backup::Snapshots> {
        self.snapshots.as_ref()
    }

    pub fn address(&self, service: &str) -> Option<SocketAddr> {
        self.addresses
            .iter()
            .find(|(name, _)| *name == service)
            .map(|(_, addr)| *addr)
    }

    /// Graceful shutdown: stop accepting, let transactions in flight finish, close.
    pub async fn stop(mut self) {
        // Before the trigger: a load balancer asking /readyz stops sending new clients, and
        // the listeners' loops ending now are no failure.
        self.api.server().set_shutting_down();
        self.shutdown.trigger();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// The SMTP sessions' settings; `email_domain` is the service's live one, so a change of
/// the domain reaches RCPT checks and stored envelopes alike.
pub fn smtp_session_config(config: &Config, email_domain: &EmailDomain) -> SessionConfig {
    SessionConfig {
        host_name: config.gateway.host_name.clone(),
        email_domain: email_domain.clone(),
        max_message_size: config.limits.max_message_size,
        max_recipients: config.limits.max_recipients as usize,
        require_tls: config.smtp.require_tls,
        tls_available: true,
        max_errors: 10,
        proxy: config.proxy.enabled,
        postmaster: config.smtp.postmaster_mailbox.clone(),
        preauth_timeout: config.limits.preauth_timeout(),
        transaction_timeout: config.limits.transaction_timeout(),
    }
}

/// The proxy's way to upstream servers, from `[proxy]`; its failed logins count on every
/// node sharing `gateway`'s store.
pub fn upstreams(
    config: &Config,
    gateway: &Gateway,
) -> Result<Arc<Upstreams<TcpConnector>>, crate::tls::TlsError> {
    let trust = UpstreamTrust {
        system_roots: config.proxy.system_roots,
        ca_files: config.proxy.ca_files.clone(),
    };
    let connector = crate::tls::upstream_connector(&trust)?;
    Ok(Upstreams::with_guard(
        TcpConnector,
        connector,
        config.proxy.clone(),
        gateway.proxy_guard(config.proxy.failed_login_delay()),
    ))
}

/// Binds every enabled protocol listener and starts serving. Settings changed through the
/// Management API are written to `gateway.toml` in the data directory; `gateway serve` uses
/// [`start_with_settings`] to write them where its configuration came from.
pub async fn start(
    config: &Config,
    gateway: Gateway,
    resolver: Arc<CertResolver>,
) -> Result<Running, StartError> {
    let settings = LiveSettings::new(
        config,
        gateway.email_domain_handle().clone(),
        None,
        SettingsFile {
            path: config
                .gateway
                .data_dir
                .join(crate::config::DEFAULT_CONFIG_FILE),
            create_if_missing: true,
        },
    );
    start_with_settings(config, gateway, resolver, settings).await
}

/// [`start`] with the live settings the Management API shows and changes.
pub async fn start_with_settings(
    config: &Config,
    gateway: Gateway,
    resolver: Arc<CertResolver>,
    settings: LiveSettings,
) -> Result<Running, StartError> {
    let upstreams = upstreams(config, &gateway)?;
    settings.share_through(gateway.store().coordination().clone());
    gateway
        .metrics()
        .set_per_mailbox_limit(config.metrics.per_mailbox_limit);
    let shutdown = Shutdown::with_grace(config.limits.shutdown_grace());
    let mut tasks = JoinSet::new();
    let mut addresses = Vec::new();

    // One budget of connections per protocol: a flood of SMTP clients must not keep the
    // archiver out of POP3, nor the other way round.
    let policy = ConnectionPolicy {
        write_timeout: config.limits.write_timeout(),
        ..ConnectionPolicy::new(
            config.limits.max_connections,
            config.limits.max_connections_per_ip,
        )
    };
    // Only POP3 has pick-up clients to keep slots for.
    let pop3_policy = ConnectionPolicy {
        reserved_pickup: config.limits.reserved_pickup(),
        trusted: config.pop3.trusted_networks.clone(),
        ..policy.clone()
    };
    let sockets = SocketOptions {
        backlog: config.limits.listen_backlog,
        keepalive: config.limits.tcp_keepalive(),
    };
    // `serve` is the one process that renews ACME certificates on schedule.
    let certificates = Arc::new(
        CertificateManager::from_config(config, Some(resolver.clone()))
            .with_renewal()
            .with_share(gateway.certificate_share()),
    );
    // On a shared store every node presents one certificate, before it takes a connection.
    certificates.adopt_shared().await?;
    let api = Api::new(
        gateway.clone(),
        settings,
        ServerContext::new(
            config.gateway.host_name.clone(),
            Some(resolver.clone()),
            // The manager read it already (for an imported certificate, from its files).
            certificates.source(),
        )
        .with_data_dir(config.gateway.data_dir.clone())
        .with_certificate_manager(certificates.clone())
        .with_snapshot_interval(config.backup.snapshot_interval()),
    );
    let metrics_server =
        crate::metrics_endpoint::http::MetricsServer::new(gateway.clone(), Some(resolver.clone()));
    let smtp = SmtpServer::with_proxy(
        gateway.clone(),
        smtp_session_config(config, gateway.email_domain_handle()),
        crate::tls::acceptor(resolver.clone()),
        ConnectionLimits::with_policy(policy.clone()),
        config.smtp.clone(),
        upstreams.clone(),
    );
    let pop3 = Pop3Server::with_proxy(
        gateway,
        Pop3Settings {
            host_name: config.gateway.host_name.clone(),
            preauth_timeout: config.limits.preauth_timeout(),
            pickup: crate::service::PickupPolicy {
                max_concurrent_unseals: config.pop3.max_concurrent_unseals as usize,
                failed_login_delay: std::time::Duration::from_millis(
                    config.pop3.failed_login_delay_ms,
                ),
                trusted_networks: config.pop3.trusted_networks.clone(),
                lock_takeover: config.pop3.lock_takeover(),
            },
        },
        crate::tls::acceptor(resolver.clone()),
        ConnectionLimits::with_policy(pop3_policy),
        upstreams,
    );
    let listen = &config.listen;
    for (service, listener, mode) in [
        ("smtp", &listen.smtp, TlsMode::StartTls),
        ("submission", &listen.submission, TlsMode::StartTls),
        ("smtps", &listen.smtps, TlsMode::Implicit),
    ] {
        if let Some(bound) = open(service, listener, sockets, &mut addresses)? {
            let serve = smtp
                .clone()
                .serve_as(service, bound, mode, shutdown.signal());
            tasks.spawn(watched(api.clone(), service, serve));
        }
    }
    for (service, listener, mode) in [
        ("pop3", &listen.pop3, TlsMode::StartTls),
        ("pop3s", &listen.pop3s, TlsMode::Implicit),
    ] {
        if let Some(bound) = open(service, listener, sockets, &mut addresses)? {
            let serve = pop3
                .clone()
                .serve_as(service, bound, mode, shutdown.signal());
            tasks.spawn(watched(api.clone(), service, serve));
        }
    }
    // HTTPS only, with its own budget of connections: a flood of API clients must not keep
    // mail out, nor a mail flood the administrator.
    if let Some(bound) = open("console", &listen.console, sockets, &mut addresses)? {
        let console = ConsoleServer::new(
            api.clone(),
            resolver,
            ConnectionLimits::with_policy(policy),
            ConsoleOptions::default(),
        );
        tasks.spawn(watched(
            api.clone(),
            "console",
            console.serve(bound, shutdown.signal()),
        ));
    }
    // Plain HTTP for a scraper on this machine (validation keeps it on loopback unless the
    // administrator allowed otherwise); not one of the `[listen]` services.
    if let Some(addr) = config.metrics.listen {
        let metrics_listener = crate::config::Listener {
            address: addr.ip(),
            port: addr.port(),
            enabled: true,
        };
        if let Some(bound) = open("metrics", &metrics_listener, sockets, &mut addresses)? {
            tasks.spawn(metrics_server.serve(bound, shutdown.signal()));
        }
    }
    // With ACME the challenge listener is open from the start (renewals need it), and a
    // certificate is ordered in the background when none is stored.
    if certificates.acme_settings().is_some() {
        let addr = certificates.open_challenge_listener().await?;
        tracing::info!(service = "acme_http", %addr, "listening");
        addresses.push(("acme_http", addr));
        certificates.start_acme();
    } else if let Some(addr) = certificates.challenge_listener_addr().await {
        // Open on a shared store for the other nodes' orders.
        tracing::info!(service = "acme_http", %addr, "listening");
        addresses.push(("acme_http", addr));
    }
    let configured: Vec<(&'static str, SocketAddr, bool)> = listen
        .all()
        .into_iter()
        .map(|(name, listener)| (name, listener.socket_addr(), listener.enabled))
        .collect();
    api.server().set_listeners(&configured, &addresses, true);
    // A warning in the log when free space falls below `[limits] warn_free_disk_mib`.
    tasks.spawn(
        api.gateway()
            .clone()
            .watch_disk(crate::service::DISK_WATCH_PERIOD, shutdown.signal()),
    );
    // On a shared store: the certificate another node publishes reaches this one.
    tasks.spawn(certificates.clone().follow_shared(shutdown.signal()));
    // On a shared store: the email domain another node sets reaches this one.
    tasks.spawn(
        api.gateway()
            .clone()
            .follow_shared_settings(shutdown.signal()),
    );
    // Ended sealing epochs leave memory within this period, even without new mail.
    tasks.spawn(
        api.gateway()
            .clone()
            .expire_epochs(crate::service::EPOCH_SWEEP_PERIOD, shutdown.signal()),
    );
    let snapshots = config.backup.snapshot_interval().map(|interval| {
        let snapshots = crate::backup::Snapshots::new(crate::backup::Sources {
            store: api.gateway().store().clone(),
            data_dir: config.gateway.data_dir.clone(),
            config_file: Some(api.settings().config_file().to_owned()),
        });
        tasks.spawn(snapshots.clone().run(interval, shutdown.signal()));
        snapshots
    });
    Ok(Running {
        addresses,
        api,
        shutdown,
        tasks,
        snapshots,
    })
}

/// Runs a listener's accept loop. Its end before shutdown is a fault (a panic out of the
/// loop, say): `/readyz` reports that listener from then on.
async fn watched(api: Api, service: &'static str, serve: impl std::future::Future<Output = ()>) {
    let _watch = ListenerWatch { api, service };
    serve.await;
}

/// Marks its listener stopped when dropped outside shutdown: on return and on unwind alike.
struct ListenerWatch {
    api: Api,
    service: &'static str,
}

impl Drop for ListenerWatch {
    fn drop(&mut self) {
        if !self.api.server().is_shutting_down() {
            tracing::error!(service = self.service, "listener stopped serving");
            self.api.server().listener_stopped(self.service);
        }
    }
}

/// Binds an enabled listener and records its address; `None` when it is disabled.
fn open(
    service: &'static str,
    listener: &crate::config::Listener,
    options: SocketOptions,
    addresses: &mut Vec<(&'static str, SocketAddr)>,
) -> Result<Option<TcpListener>, BindError> {
    if !listener.enabled {
        return Ok(None);
    }
    let addr = listener.socket_addr();
    let bound = TcpListener::bind(addr, options).map_err(|cause| {
        let hint = match cause.kind() {
            std::io::ErrorKind::PermissionDenied => format!(
                " (ports below 1024 need root or CAP_NET_BIND_SERVICE, which the systemd unit \
                 grants; or change the port in [listen.{service}])"
            ),
            std::io::ErrorKind::AddrInUse => format!(
                " (another program uses this port: stop it, or change the port in [listen.{service}])"
            ),
            _ => String::new(),
        };
        BindError {
            service,
            addr,
            cause,
            hint,
        }
    })?;
    use crate::net::Listener as _;
    let local = bound.local_addr().unwrap_or(addr);
    tracing::info!(service, addr = %local, "listening");
    addresses.push((service, local));
    Ok(Some(bound))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listener_loop_that_ends_outside_shutdown_is_reported_stopped() {
        let (_dir, api) = crate::api::test_support::api("localhost");
        watched(api.clone(), "smtp", async {}).await;
        assert_eq!(api.server().stopped_listeners(), ["smtp"]);
        // A panic out of the loop counts too.
        let panicked = tokio::spawn(watched(api.clone(), "pop3s", async {
            panic!("accept loop failed")
        }))
        .await;
        assert!(panicked.is_err());
        assert_eq!(api.server().stopped_listeners(), ["smtp", "pop3s"]);
        // In shutdown, ending is what a loop should do.
        api.server().set_shutting_down();
        watched(api.clone(), "console", async {}).await;
        assert_eq!(api.server().stopped_listeners(), ["smtp", "pop3s"]);
    }
}
