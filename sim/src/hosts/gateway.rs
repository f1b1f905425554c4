//! The gateway host: the real SMTP and POP3 servers (sessions and shells from the `gateway`
//! crate) over turmoil listeners, on a store that lives on the simulated [`Disk`], or in the
//! `cluster` scenario on the model of a database shared with the other nodes
//! ([`StoreAt::Model`]). turmoil calls [`run`] again at every restart; the disk (or the
//! shared database) is all that survives.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use gateway::config::SmtpSection;
use gateway::config::{LimitsSection, ProxySection};
use gateway::crypto::KdfParams;
use gateway::net::{ConnectionLimits, Listener, ProtocolServer as _, Shutdown, TlsMode};
use gateway::pop3::{Pop3Server, Pop3Settings};
use gateway::proxy::{Connector, Upstreams};
use gateway::service::{Gateway, PickupPolicy, ServiceOptions};
use gateway::smtp::{SessionConfig, SmtpServer};
use gateway::store::model::{ModelDatabase, NodeId};
use gateway::store::{Space, Store, StoreError, StoreOptions};

use super::SharedRef;
use crate::disk::Disk;

pub const NAME: &str = "gateway";
/// The cluster's nodes, by [`NodeId`].
pub const NODES: [&str; 2] = ["gateway-a", "gateway-b"];
pub const SMTP_PORT: u16 = 25;
pub const POP3S_PORT: u16 = 995;
/// POP3 with STLS (proxy mode only).
pub const POP3_PORT: u16 = 110;
pub const EMAIL_DOMAIN: &str = "archive.sim";
/// Small enough that a sender's largest message spans a few sealed chunks.
pub const MAX_MESSAGE_SIZE: u64 = 512 * 1024;

/// turmoil's listener under the gateway's [`Listener`] trait (a newtype: both are foreign).
pub struct SimListener(turmoil::net::TcpListener);

impl Listener for SimListener {
    type Stream = turmoil::net::TcpStream;

    async fn accept(&mut self) -> std::io::Result<(Self::Stream, SocketAddr)> {
        self.0.accept().await
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// turmoil's TCP for the proxy's upstream connections (host names resolve to turmoil hosts).
pub struct SimConnector;

impl Connector for SimConnector {
    type Stream = turmoil::net::TcpStream;

    async fn resolve(&self, host: &str) -> std::io::Result<Vec<std::net::IpAddr>> {
        // Only the configured upstream's name gets here ([proxy] allowed_servers), and
        // turmoil knows every host.
        Ok(vec![turmoil::lookup(host)])
    }

    async fn connect(&self, addr: SocketAddr) -> std::io::Result<Self::Stream> {
        turmoil::net::TcpStream::connect(addr).await
    }
}

/// The space reserve beside the store: enough for a deletion's commit and a recovery.
pub const DISK_RESERVE: u64 = 2 * 1024 * 1024;
/// New mail is refused below this much free space.
pub const MIN_FREE_DISK: u64 = 256 * 1024;

/// Opens the store on the disk as the gateway does at start, with its group-commit writer and
/// blocking work as tasks of the simulated runtime (the production code, in simulated time
/// under the seed), a small cache, the space reserve on the same disk.
pub fn open_store(disk: &Disk) -> Result<Store, StoreError> {
    let space = Space::new(Arc::new(disk.clone()), DISK_RESERVE);
    let disk = disk.clone();
    let store = Store::open_with_backend(
        move || Ok(disk.backend()),
        Path::new("simulated-disk"),
        &StoreOptions {
            cache_bytes: 4 * 1024 * 1024,
            executor: crate::paths::executor(),
            space: Some(Arc::new(space)),
        },
    )?;
    store.observe_commits(Arc::new(crate::paths::Commits));
    Ok(store)
}

/// Where a gateway host's store lives.
#[derive(Clone)]
pub enum StoreAt {
    /// redb on the host's own simulated disk.
    Disk(Disk),
    /// The model of a database shared with other nodes, as this node.
    Model(Arc<ModelDatabase>, NodeId),
}

impl StoreAt {
    /// Opens the store as the gateway does at start.
    pub fn open(&self) -> Result<Store, StoreError> {
        match self {
            StoreAt::Disk(disk) => open_store(disk),
            StoreAt::Model(db, node) => open_model_store(db, *node),
        }
    }
}

/// Opens `node`'s store on the shared model database, its writer and blocking work as tasks
/// of the simulated runtime.
pub fn open_model_store(db: &Arc<ModelDatabase>, node: NodeId) -> Result<Store, StoreError> {
    let store = Store::open_model(
        db.clone(),
        node,
        &StoreOptions {
            executor: crate::paths::executor(),
            ..StoreOptions::default()
        },
    )?;
    store.observe_commits(Arc::new(crate::paths::Commits));
    Ok(store)
}

/// The service on that store, on simulated time when inside the simulation.
pub fn service(store: Store) -> Gateway {
    Gateway::new(
        store,
        ServiceOptions {
            email_domain: EMAIL_DOMAIN.into(),
            kdf: KdfParams::insecure_for_tests(),
            // Drafts never spill: the memory limit is above the largest message.
            spool_dir: "/nonexistent/sim-spool".into(),
            spool_memory_bytes: 4 * MAX_MESSAGE_SIZE as usize,
            spool_memory_total_bytes: u64::MAX,
            spool_max_bytes: u64::MAX,
            max_message_size: MAX_MESSAGE_SIZE,
            min_free_disk: MIN_FREE_DISK,
            warn_free_disk: MIN_FREE_DISK,
            clock: Arc::new(|| {
                turmoil::since_epoch()
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0)
            }),
            // The embedded store: one node, no leases.
            lease: gateway::service::LeasePolicy::default(),
        },
        // The simulated disk has no data directory; the secret only needs to outlive crashes.
        gateway::service::RetrievalSecret::from_bytes(&[7; 32]),
    )
}

/// The host's software, from boot to crash. A store that cannot be opened (a full disk
/// where redb's recovery must write, a shared database out of reach) is retried every
/// second, as a service manager restarting the gateway would. `name` is the host's.
///
/// `skip_sync` switches on the store's deliberately wrong variant (commits without a sync);
/// `proxy` offers proxy logins (SMTP after STARTTLS, POP3 on 995 and after STLS on 110) to
/// upstreams reached through turmoil.
pub async fn run(
    name: &'static str,
    at: StoreAt,
    shared: SharedRef,
    skip_sync: bool,
    proxy: bool,
) -> turmoil::Result {
    let mut failures = 0u32;
    let store = loop {
        match at.open() {
            Ok(store) => break store,
            Err(e) => {
                if failures == 0 {
                    shared.log(name, format!("cannot start: {e}"));
                }
                failures += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    if failures > 0 {
        shared.log(name, format!("started after {failures} failed attempts"));
    }
    store.skip_sync_for_tests(skip_sync);
    let gateway = service(store);
    let config = SessionConfig {
        host_name: crate::tls::HOST_NAME.into(),
        email_domain: EMAIL_DOMAIN.into(),
        max_message_size: MAX_MESSAGE_SIZE,
        max_recipients: 10,
        require_tls: false,
        tls_available: true,
        max_errors: 10,
        proxy,
        postmaster: None,
        // The production defaults: the simulation runs the timeouts the gateway ships with.
        preauth_timeout: LimitsSection::default().preauth_timeout(),
        transaction_timeout: LimitsSection::default().transaction_timeout(),
    };
    // Proxy logins (SMTP and POP3) are offered in proxy mode only.
    let upstreams = Upstreams::new(
        SimConnector,
        crate::tls::connector(),
        ProxySection {
            enabled: proxy,
            ca_files: Vec::new(),
            system_roots: false,
            allowed_servers: vec![super::upstream::NAME.into()],
            connect_timeout_secs: 30,
            // turmoil's hosts have private addresses (192.168.0.0/16).
            allow_private_networks: true,
            ..ProxySection::default()
        },
    );
    let smtp = if proxy {
        Either::Proxy(SmtpServer::with_proxy(
            gateway.clone(),
            config,
            crate::tls::acceptor(),
            ConnectionLimits::new(64, 16),
            SmtpSection::default(),
            upstreams.clone(),
        ))
    } else {
        Either::Journal(SmtpServer::new(
            gateway.clone(),
            config,
            crate::tls::acceptor(),
            ConnectionLimits::new(64, 16),
            SmtpSection::default(),
        ))
    };
    let pop3 = Pop3Server::with_proxy(
        gateway,
        Pop3Settings {
            host_name: crate::tls::HOST_NAME.into(),
            preauth_timeout: LimitsSection::default().preauth_timeout(),
            pickup: PickupPolicy {
                max_concurrent_unseals: 2,
                failed_login_delay: Duration::from_secs(2),
                trusted_networks: Vec::new(),
                lock_takeover: gateway::config::Pop3Section::default().lock_takeover(),
            },
        },
        crate::tls::acceptor(),
        ConnectionLimits::new(64, 16),
        upstreams,
    );
    let smtp_listener = turmoil::net::TcpListener::bind(("0.0.0.0", SMTP_PORT)).await?;
    let pop3_listener = turmoil::net::TcpListener::bind(("0.0.0.0", POP3S_PORT)).await?;
    // POP3 with STLS too in proxy mode, so proxy logins reach the upstream both ways.
    let stls_listener = if proxy {
        Some(turmoil::net::TcpListener::bind(("0.0.0.0", POP3_PORT)).await?)
    } else {
        None
    };
    // Never triggered: the simulation stops the gateway by crashing it.
    let shutdown = Shutdown::new();
    let smtp = async {
        match smtp {
            Either::Journal(smtp) => {
                smtp.serve(
                    SimListener(smtp_listener),
                    TlsMode::StartTls,
                    shutdown.signal(),
                )
                .await
            }
            Either::Proxy(smtp) => {
                smtp.serve(
                    SimListener(smtp_listener),
                    TlsMode::StartTls,
                    shutdown.signal(),
                )
                .await
            }
        }
    };
    let pop3_stls = pop3.clone();
    let stls = async {
        if let Some(listener) = stls_listener {
            pop3_stls
                .serve(SimListener(listener), TlsMode::StartTls, shutdown.signal())
                .await;
        }
    };
    tokio::join!(
        smtp,
        pop3.serve(
            SimListener(pop3_listener),
            TlsMode::Implicit,
            shutdown.signal()
        ),
        stls,
    );
    Ok(())
}

/// The SMTP server without or with proxy logins (their connector types differ).
enum Either {
    Journal(Arc<SmtpServer>),
    Proxy(Arc<SmtpServer<SimConnector>>),
}
