//! Opening connections to upstream servers: the name resolved and each address checked
//! ([`super::address`]), TCP through a [`Connector`] (tokio in production, turmoil in the
//! simulation) to an address that passed, then TLS with certificate verification.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::address::{is_global, is_numeric_spelling};
use super::login::ProxyLogin;
use super::throttle::ProxyGuard;
use crate::config::ProxySection;
use crate::net::Switchable;

/// Resolves upstream names and opens TCP connections to upstream servers: tokio in
/// production, turmoil in the simulation, a fake in unit tests. The address policy lives in
/// [`Upstreams::open`], between the two calls, so it holds whatever the connector.
pub trait Connector: Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// The addresses `host` (a name, never an IP literal) resolves to.
    fn resolve(&self, host: &str) -> impl Future<Output = io::Result<Vec<IpAddr>>> + Send;

    /// Connects to exactly `addr`: no resolution happens here.
    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<Self::Stream>> + Send;
}

/// Production: tokio's TCP with the system resolver.
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    type Stream = tokio::net::TcpStream;

    async fn resolve(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        Ok(tokio::net::lookup_host((host, 0))
            .await?
            .map(|addr| addr.ip())
            .collect())
    }

    async fn connect(&self, addr: SocketAddr) -> io::Result<Self::Stream> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

/// Why no usable upstream connection came about. The texts are for the log; the client
/// gets [`ConnectError::client_reason`], so the proxy tells nothing about what answers
/// where (it must not be a port scanner).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("the upstream server {0} is not allowed by this gateway's configuration")]
    NotAllowed(String),
    #[error("the upstream server {target} is refused: {reason}")]
    Refused { target: String, reason: String },
    #[error("cannot resolve {target}: {source}")]
    Resolve { target: String, source: io::Error },
    #[error("cannot connect to {target}: {source}")]
    Connect { target: String, source: io::Error },
    #[error("no answer from {0} in time")]
    TimedOut(String),
    #[error("TLS with {target} failed: {source}")]
    Tls { target: String, source: io::Error },
}

impl ConnectError {
    /// What the client is told: whether the gateway refused the target, or could not use
    /// it, and nothing more.
    pub fn client_reason(&self) -> &'static str {
        match self {
            ConnectError::NotAllowed(_) | ConnectError::Refused { .. } => {
                "this upstream server is not allowed by the gateway"
            }
            _ => "cannot use the upstream server, try again later",
        }
    }
}

/// Everything needed to reach upstreams; one per gateway, shared by all proxy sessions.
pub struct Upstreams<C: Connector> {
    connector: C,
    tls: TlsConnector,
    policy: ProxySection,
    timeout: Duration,
    /// Failed logins, counted across the SMTP and POP3 proxies.
    guard: ProxyGuard,
}

impl<C: Connector> Upstreams<C> {
    /// Counting failed logins on this node alone.
    pub fn new(connector: C, tls: TlsConnector, policy: ProxySection) -> Arc<Self> {
        let guard = ProxyGuard::new(policy.failed_login_delay());
        Self::with_guard(connector, tls, policy, guard)
    }

    /// With the login throttle `guard` (one counting on every node of a shared store:
    /// [`crate::service::Gateway::proxy_guard`]).
    pub fn with_guard(
        connector: C,
        tls: TlsConnector,
        policy: ProxySection,
        guard: ProxyGuard,
    ) -> Arc<Self> {
        Arc::new(Self {
            connector,
            tls,
            timeout: Duration::from_secs(policy.connect_timeout_secs.max(1)),
            guard,
            policy,
        })
    }

    /// The throttle of proxy logins.
    pub fn guard(&self) -> &ProxyGuard {
        &self.guard
    }

    /// Whether proxy logins are offered at all.
    pub fn enabled(&self) -> bool {
        self.policy.enabled
    }

    /// Connects to the login's server (at `default_port` unless it names one); with
    /// `implicit_tls` the TLS handshake is done before this returns.
    ///
    /// The name is resolved once, every address is checked against the policy, and the
    /// connection goes to an address that passed: a second resolution (DNS rebinding)
    /// cannot swap in another.
    pub async fn open(
        &self,
        login: &ProxyLogin,
        default_port: u16,
        implicit_tls: bool,
    ) -> Result<UpstreamStream<C::Stream>, ConnectError> {
        let target = login.target(default_port);
        if !self.policy.allows_server(&login.host) {
            return Err(ConnectError::NotAllowed(login.host.clone()));
        }
        let port = login.port.unwrap_or(default_port);
        if !self.policy.allows_port(port) {
            return Err(ConnectError::Refused {
                target,
                reason: format!("port {port} is not in [proxy] allowed_ports"),
            });
        }
        let stream =
            match tokio::time::timeout(self.timeout, self.connect(login, &target, port)).await {
                Err(_) => return Err(ConnectError::TimedOut(target)),
                Ok(result) => result?,
            };
        let mut stream = Switchable::Plain(stream);
        if implicit_tls {
            self.start_tls(&mut stream, login).await?;
        }
        Ok(stream)
    }

    /// Resolves, checks and connects: the permitted addresses in the resolver's order,
    /// the first that answers wins.
    async fn connect(
        &self,
        login: &ProxyLogin,
        target: &str,
        port: u16,
    ) -> Result<C::Stream, ConnectError> {
        let addresses = self.permitted_addresses(&login.host, target).await?;
        let mut last_error = None;
        for ip in addresses {
            match self.connector.connect(SocketAddr::new(ip, port)).await {
                Ok(stream) => return Ok(stream),
                Err(source) => last_error = Some(source),
            }
        }
        Err(ConnectError::Connect {
            target: target.to_owned(),
            source: last_error.unwrap_or_else(|| io::Error::other("no address")),
        })
    }

    /// The addresses of `host` the policy allows (never empty).
    async fn permitted_addresses(
        &self,
        host: &str,
        target: &str,
    ) -> Result<Vec<IpAddr>, ConnectError> {
        let resolved = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) if is_numeric_spelling(host) => {
                return Err(ConnectError::Refused {
                    target: target.to_owned(),
                    reason: "a numeric host name that is not a plain IP address".into(),
                })
            }
            Err(_) => {
                self.connector
                    .resolve(host)
                    .await
                    .map_err(|source| ConnectError::Resolve {
                        target: target.to_owned(),
                        source,
                    })?
            }
        };
        // Mapped forms are connected to as the IPv4 address that was checked.
        let resolved: Vec<IpAddr> = resolved.into_iter().map(|ip| ip.to_canonical()).collect();
        let permitted: Vec<IpAddr> = resolved
            .iter()
            .copied()
            .filter(|&ip| self.policy.allow_private_networks || is_global(ip))
            .collect();
        if permitted.is_empty() {
            let list: Vec<String> = resolved.iter().map(ToString::to_string).collect();
            return Err(ConnectError::Refused {
                target: target.to_owned(),
                reason: if list.is_empty() {
                    "the name has no address".into()
                } else {
                    format!(
                        "{} is not a globally reachable address ([proxy] allow_private_networks is off)",
                        list.join(", ")
                    )
                },
            });
        }
        Ok(permitted)
    }

    /// The TLS handshake on an open connection, verifying the server's certificate for
    /// the host the client named.
    pub async fn start_tls(
        &self,
        stream: &mut UpstreamStream<C::Stream>,
        login: &ProxyLogin,
    ) -> Result<(), ConnectError> {
        let target = login.host.clone();
        let name = ServerName::try_from(login.host.clone()).map_err(|e| ConnectError::Tls {
            target: target.clone(),
            source: io::Error::new(io::ErrorKind::InvalidInput, e),
        })?;
        let plain = match std::mem::replace(stream, Switchable::Gone) {
            Switchable::Plain(plain) => plain,
            other => {
                *stream = other;
                return Err(ConnectError::Tls {
                    target,
                    source: io::Error::other("TLS is already active"),
                });
            }
        };
        match tokio::time::timeout(self.timeout, self.tls.connect(name, plain)).await {
            Err(_) => Err(ConnectError::TimedOut(target)),
            Ok(Err(source)) => Err(ConnectError::Tls { target, source }),
            Ok(Ok(tls)) => {
                *stream = Switchable::Tls(Box::new(tls));
                Ok(())
            }
        }
    }
}

/// A connection to an upstream: plain until STARTTLS/STLS, or TLS from the start.
pub type UpstreamStream<S> = Switchable<S, TlsStream<S>>;

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, VecDeque};
    use std::sync::Mutex;

    use super::*;
    use crate::tls::{upstream_connector, UpstreamTrust};

    const ID: &str = "mbx-0123456789abcdef0123456789abcdef";
    /// A global address for the fake to hand out; nothing is ever sent to it.
    const PUBLIC: &str = "93.184.216.34";

    /// A resolver answering from a script (each lookup of a name takes its next answer, so
    /// a second lookup would "rebind" it) and a connector that only records where it was
    /// asked to connect: no test here sends a packet anywhere.
    #[derive(Default)]
    struct Fake {
        answers: Mutex<HashMap<String, VecDeque<Vec<IpAddr>>>>,
        lookups: Mutex<Vec<String>>,
        connected: Mutex<Vec<SocketAddr>>,
    }

    impl Fake {
        fn answer(self: &Arc<Self>, name: &str, answers: &[&[&str]]) -> Arc<Self> {
            let answers = answers
                .iter()
                .map(|ips| ips.iter().map(|ip| ip.parse().unwrap()).collect())
                .collect();
            self.answers
                .lock()
                .unwrap()
                .insert(name.to_owned(), answers);
            self.clone()
        }

        fn connected(&self) -> Vec<SocketAddr> {
            self.connected.lock().unwrap().clone()
        }
    }

    impl Connector for Arc<Fake> {
        type Stream = tokio::io::DuplexStream;

        async fn resolve(&self, host: &str) -> io::Result<Vec<IpAddr>> {
            self.lookups.lock().unwrap().push(host.to_owned());
            let mut answers = self.answers.lock().unwrap();
            answers
                .get_mut(host)
                .and_then(VecDeque::pop_front)
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such name"))
        }

        async fn connect(&self, addr: SocketAddr) -> io::Result<Self::Stream> {
            self.connected.lock().unwrap().push(addr);
            Ok(tokio::io::duplex(64).0)
        }
    }

    fn upstreams(
        fake: &Arc<Fake>,
        adjust: impl FnOnce(&mut ProxySection),
    ) -> Arc<Upstreams<Arc<Fake>>> {
        let mut policy = ProxySection {
            system_roots: false,
            ..ProxySection::default()
        };
        adjust(&mut policy);
        let tls = upstream_connector(&UpstreamTrust::default()).unwrap();
        Upstreams::new(fake.clone(), tls, policy)
    }

    async fn open(upstreams: &Upstreams<Arc<Fake>>, server: &str) -> Result<(), ConnectError> {
        let login = ProxyLogin::parse(&format!("user%{server}%{ID}")).unwrap();
        upstreams.open(&login, 587, false).await.map(drop)
    }

    #[tokio::test]
    async fn proxy_refuses_loopback_and_private_targets() {
        let fake = Arc::new(Fake::default())
            .answer("internal.example", &[&["10.1.2.3"]])
            .answer("metadata.example", &[&["169.254.169.254", "fd00::1"]]);
        let upstreams = upstreams(&fake, |_| {});
        for server in [
            "127.0.0.1",
            "127.1",
            "2130706433",
            "0x7f.1",
            "0x7f000001",
            "[::1]",
            "[::ffff:127.0.0.1]",
            "[::ffff:7f00:1]",
            "0.0.0.0",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.169.254",
            "[fe80::1]",
            "[fc00::1]",
            "[ff02::1]",
            "[64:ff9b::a00:1]",
            "224.0.0.1",
            "internal.example",
            "metadata.example",
        ] {
            let refused = open(&upstreams, server).await.unwrap_err();
            assert!(
                matches!(refused, ConnectError::Refused { .. }),
                "{server}: {refused}"
            );
            assert_eq!(
                refused.client_reason(),
                "this upstream server is not allowed by the gateway",
                "{server}"
            );
        }
        assert!(fake.connected().is_empty(), "{:?}", fake.connected());
        // Literals and numeric spellings never reach the resolver.
        assert_eq!(
            *fake.lookups.lock().unwrap(),
            ["internal.example", "metadata.example"]
        );
    }

    #[tokio::test]
    async fn proxy_connects_to_exactly_the_address_it_checked() {
        // DNS rebinding: the first answer is public, any later one loopback. The name is
        // resolved once, and the connection goes to the address that was checked.
        let fake = Arc::new(Fake::default())
            .answer("rebind.example", &[&[PUBLIC], &["127.0.0.1"]])
            .answer(
                "mixed.example",
                &[&["127.0.0.1", "::ffff:10.0.0.1", PUBLIC]],
            )
            .answer("mapped.example", &[&["::ffff:93.184.216.34"]]);
        let upstreams = upstreams(&fake, |_| {});
        open(&upstreams, "rebind.example").await.unwrap();
        open(&upstreams, "mixed.example").await.unwrap();
        open(&upstreams, "mapped.example:465").await.unwrap();
        let public: IpAddr = PUBLIC.parse().unwrap();
        assert_eq!(
            fake.connected(),
            [
                SocketAddr::new(public, 587),
                SocketAddr::new(public, 587),
                SocketAddr::new(public, 465)
            ]
        );
        assert_eq!(fake.lookups.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn proxy_only_connects_to_mail_ports_unless_configured() {
        let fake = Arc::new(Fake::default()).answer("mail.example", &[&[PUBLIC] as &[&str]; 8]);
        let upstreams_default = upstreams(&fake, |_| {});
        for port in [22, 80, 143, 993, 3306, 6379] {
            let refused = open(&upstreams_default, &format!("mail.example:{port}"))
                .await
                .unwrap_err();
            assert!(matches!(refused, ConnectError::Refused { .. }), "{port}");
        }
        assert!(fake.lookups.lock().unwrap().is_empty());
        for port in [25, 465, 587, 110, 995] {
            let server = format!("{PUBLIC}:{port}");
            open(&upstreams_default, &server).await.unwrap();
        }
        let custom = upstreams(&fake, |p| p.allowed_ports = vec![2525]);
        open(&custom, "mail.example:2525").await.unwrap();
        assert!(open(&custom, "mail.example:25").await.is_err());
        let any = upstreams(&fake, |p| p.allowed_ports.clear());
        open(&any, "mail.example:8025").await.unwrap();
    }

    #[tokio::test]
    async fn private_networks_can_be_allowed() {
        let fake = Arc::new(Fake::default()).answer("internal.example", &[&["10.1.2.3"]]);
        let upstreams = upstreams(&fake, |p| p.allow_private_networks = true);
        open(&upstreams, "internal.example").await.unwrap();
        open(&upstreams, "[::1]:995").await.unwrap();
        // Numeric spellings stay refused: they are never a real host name.
        assert!(open(&upstreams, "127.1").await.is_err());
        let connected: Vec<String> = fake.connected().iter().map(ToString::to_string).collect();
        assert_eq!(connected, ["10.1.2.3:587", "[::1]:995"]);
    }

    #[tokio::test]
    async fn connection_failures_give_the_client_a_generic_reason() {
        let fake = Arc::new(Fake::default());
        let upstreams = upstreams(&fake, |_| {});
        let failed = open(&upstreams, "unknown.example").await.unwrap_err();
        assert!(matches!(failed, ConnectError::Resolve { .. }));
        assert_eq!(
            failed.client_reason(),
            "cannot use the upstream server, try again later"
        );
        let refused = ConnectError::Connect {
            target: "x:25".into(),
            source: io::Error::from(io::ErrorKind::ConnectionRefused),
        };
        assert!(!refused.client_reason().contains("refused"));
    }
}
