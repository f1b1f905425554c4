//! What `gateway setup` checks before it writes: the email domain's MX record, the host
//! name's addresses, and whether each listener's port is free. Findings are advice, never a
//! reason to refuse: DNS is often set up after the gateway.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::pin::Pin;

/// How a check came out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    Ok(String),
    Warning(String),
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Finding::Ok(text) => write!(f, "  ok       {text}"),
            Finding::Warning(text) => write!(f, "  warning  {text}"),
        }
    }
}

/// Why a lookup gave no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupError {
    /// The name exists in no form the question asked for.
    NoRecords,
    /// The resolver failed (timeout, refused, no network): the answer is unknown.
    Failed(String),
}

type Lookup<'a, T> = Pin<Box<dyn Future<Output = Result<T, LookupError>> + Send + 'a>>;

/// DNS as the checks need it; tests inject answers.
pub trait Dns: Send + Sync {
    /// The mail exchangers of `domain`, lowest preference first, without the final dot.
    fn mx<'a>(&'a self, domain: &'a str) -> Lookup<'a, Vec<String>>;
    /// The addresses `name` resolves to.
    fn addresses<'a>(&'a self, name: &'a str) -> Lookup<'a, Vec<IpAddr>>;
}

/// The system's resolvers (`/etc/resolv.conf`), or one DNS server given by the
/// administrator (to see what the internet sees past split-horizon DNS).
pub struct HickoryDns {
    resolver: hickory_resolver::TokioResolver,
}

impl HickoryDns {
    pub fn new(server: Option<SocketAddr>) -> Result<Self, String> {
        use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
        use hickory_resolver::name_server::TokioConnectionProvider;
        use hickory_resolver::Resolver;
        let builder = match server {
            Some(addr) => Resolver::builder_with_config(
                ResolverConfig::from_parts(
                    None,
                    Vec::new(),
                    NameServerConfigGroup::from_ips_clear(&[addr.ip()], addr.port(), true),
                ),
                TokioConnectionProvider::default(),
            ),
            None => Resolver::builder_tokio()
                .map_err(|e| format!("cannot read the system's DNS configuration: {e}"))?,
        };
        let mut builder = builder;
        // An administrator waits for the answer: a few seconds, not the default's retries.
        builder.options_mut().timeout = std::time::Duration::from_secs(3);
        builder.options_mut().attempts = 1;
        Ok(Self {
            resolver: builder.build(),
        })
    }
}

fn lookup_error(e: hickory_resolver::ResolveError) -> LookupError {
    if e.is_no_records_found() {
        LookupError::NoRecords
    } else {
        LookupError::Failed(e.to_string())
    }
}

/// Absolute, so the system's search domains are never appended to the name.
fn absolute(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

impl Dns for HickoryDns {
    fn mx<'a>(&'a self, domain: &'a str) -> Lookup<'a, Vec<String>> {
        Box::pin(async move {
            let answer = self
                .resolver
                .mx_lookup(absolute(domain))
                .await
                .map_err(lookup_error)?;
            let mut records: Vec<(u16, String)> = answer
                .iter()
                .map(|mx| {
                    let host = mx.exchange().to_ascii();
                    (mx.preference(), host.trim_end_matches('.').to_owned())
                })
                .collect();
            records.sort();
            Ok(records.into_iter().map(|(_, host)| host).collect())
        })
    }

    fn addresses<'a>(&'a self, name: &'a str) -> Lookup<'a, Vec<IpAddr>> {
        Box::pin(async move {
            let answer = self
                .resolver
                .lookup_ip(absolute(name))
                .await
                .map_err(lookup_error)?;
            Ok(answer.iter().collect())
        })
    }
}

/// The MX of the email domain should name the host name, and the host name should resolve.
pub async fn check_dns(dns: &dyn Dns, email_domain: &str, host_name: &str) -> Vec<Finding> {
    let mut findings = Vec::new();
    let same = |a: &str, b: &str| a.trim_end_matches('.').eq_ignore_ascii_case(b);
    findings.push(match dns.mx(email_domain).await {
        Ok(hosts) if hosts.iter().any(|h| same(h, host_name)) => {
            Finding::Ok(format!("MX {email_domain} -> {}", hosts.join(", ")))
        }
        Ok(hosts) if !hosts.is_empty() => Finding::Warning(format!(
            "the MX record of {email_domain} names {}, not {host_name}: journal mail for the \
             mailboxes goes there, not to this gateway",
            hosts.join(", ")
        )),
        Ok(_) | Err(LookupError::NoRecords) => Finding::Warning(format!(
            "{email_domain} has no MX record; add `{email_domain}. MX 10 {host_name}.` so that \
             mail for the mailboxes reaches this gateway"
        )),
        Err(LookupError::Failed(why)) => Finding::Warning(format!(
            "could not look up the MX record of {email_domain}: {why}"
        )),
    });
    findings.push(match dns.addresses(host_name).await {
        Ok(addresses) if !addresses.is_empty() => {
            let shown: Vec<String> = addresses.iter().map(IpAddr::to_string).collect();
            Finding::Ok(format!("{host_name} -> {}", shown.join(", ")))
        }
        Ok(_) | Err(LookupError::NoRecords) => Finding::Warning(format!(
            "{host_name} does not resolve; senders, mail clients, the archiver and an ACME CA \
             reach the gateway by this name: add an A (and AAAA) record"
        )),
        Err(LookupError::Failed(why)) => {
            Finding::Warning(format!("could not look up {host_name}: {why}"))
        }
    });
    findings
}

/// Whether each listener's port can be bound now. Binding is the only reliable test; the
/// socket is closed at once.
pub fn check_ports(listeners: &[(&'static str, SocketAddr)]) -> Vec<Finding> {
    listeners
        .iter()
        .map(|&(name, addr)| match bind(addr) {
            Ok(()) => Finding::Ok(format!("{name} can listen on {addr}")),
            Err(e) => Finding::Warning(port_problem(name, addr, &e)),
        })
        .collect()
}

/// Binds as the gateway would: the dual-stack wildcard falls back to IPv4 on a system
/// without IPv6.
fn bind(addr: SocketAddr) -> io::Result<()> {
    match TcpListener::bind(addr) {
        Err(e) if e.kind() == io::ErrorKind::AddrNotAvailable && addr.ip().is_unspecified() => {
            TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], addr.port()))).map(drop)
        }
        other => other.map(drop),
    }
}

fn port_problem(name: &str, addr: SocketAddr, e: &io::Error) -> String {
    let port = addr.port();
    match e.kind() {
        io::ErrorKind::AddrInUse => format!(
            "{name}: port {port} is in use by another program (a local mail server?); stop it \
             or choose another port in [listen.{name}]"
        ),
        io::ErrorKind::PermissionDenied => format!(
            "{name}: port {port} needs CAP_NET_BIND_SERVICE; the systemd unit grants it, and by \
             hand: `sudo setcap cap_net_bind_service=+ep $(command -v gateway)`"
        ),
        _ => format!("{name}: cannot listen on {addr}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct FakeDns {
        mx: HashMap<&'static str, Result<Vec<String>, LookupError>>,
        addresses: HashMap<&'static str, Result<Vec<IpAddr>, LookupError>>,
    }

    impl Dns for FakeDns {
        fn mx<'a>(&'a self, domain: &'a str) -> Lookup<'a, Vec<String>> {
            let answer = self
                .mx
                .get(domain)
                .cloned()
                .unwrap_or(Err(LookupError::NoRecords));
            Box::pin(async move { answer })
        }
        fn addresses<'a>(&'a self, name: &'a str) -> Lookup<'a, Vec<IpAddr>> {
            let answer = self
                .addresses
                .get(name)
                .cloned()
                .unwrap_or(Err(LookupError::NoRecords));
            Box::pin(async move { answer })
        }
    }

    fn dns(
        mx: Result<Vec<String>, LookupError>,
        addresses: Result<Vec<IpAddr>, LookupError>,
    ) -> FakeDns {
        let mut fake = FakeDns::default();
        fake.mx.insert("archive.example", mx);
        fake.addresses.insert("gw.example", addresses);
        fake
    }

    async fn findings(fake: FakeDns) -> Vec<Finding> {
        check_dns(&fake, "archive.example", "gw.example").await
    }

    #[tokio::test]
    async fn an_mx_naming_the_host_and_a_resolving_host_are_ok() {
        let found = findings(dns(
            Ok(vec!["backup.example".into(), "GW.example".into()]),
            Ok(vec!["192.0.2.1".parse().unwrap()]),
        ))
        .await;
        assert_eq!(
            found,
            [
                Finding::Ok("MX archive.example -> backup.example, GW.example".into()),
                Finding::Ok("gw.example -> 192.0.2.1".into()),
            ]
        );
    }

    #[tokio::test]
    async fn an_mx_elsewhere_or_missing_and_an_unknown_host_are_warned_about() {
        let found = findings(dns(
            Ok(vec!["mx.other.example".into()]),
            Err(LookupError::NoRecords),
        ))
        .await;
        assert!(
            matches!(&found[0], Finding::Warning(w) if w.contains("names mx.other.example, not gw.example")),
            "{found:?}"
        );
        assert!(
            matches!(&found[1], Finding::Warning(w) if w.contains("gw.example does not resolve")),
            "{found:?}"
        );
        let found = findings(dns(Err(LookupError::NoRecords), Ok(vec![]))).await;
        assert!(
            matches!(&found[0], Finding::Warning(w) if w.contains("add `archive.example. MX 10 gw.example.`")),
            "{found:?}"
        );
    }

    #[tokio::test]
    async fn a_failing_resolver_is_reported_as_unknown_not_as_missing() {
        let found = findings(dns(
            Err(LookupError::Failed("timed out".into())),
            Err(LookupError::Failed("timed out".into())),
        ))
        .await;
        assert!(
            found
                .iter()
                .all(|f| matches!(f, Finding::Warning(w) if w.starts_with("could not look up") && w.ends_with("timed out"))),
            "{found:?}"
        );
    }

    #[test]
    fn a_port_in_use_is_named_with_the_fix() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let found = check_ports(&[("smtp", addr)]);
        assert!(
            matches!(&found[0], Finding::Warning(w) if w.contains(&format!("port {} is in use", addr.port())) && w.contains("[listen.smtp]")),
            "{found:?}"
        );
        drop(taken);
        assert!(matches!(check_ports(&[("smtp", addr)])[0], Finding::Ok(_)));
    }

    #[test]
    fn a_privileged_port_explains_the_capability() {
        let text = port_problem(
            "smtp",
            "0.0.0.0:25".parse().unwrap(),
            &io::Error::from(io::ErrorKind::PermissionDenied),
        );
        assert!(text.contains("CAP_NET_BIND_SERVICE"), "{text}");
    }
}
