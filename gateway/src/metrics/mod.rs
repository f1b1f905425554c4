//! Prometheus metrics: one registry per gateway and the typed handles that count into it.
//!
//! [`Metrics`] is created with the service ([`crate::service::Gateway`] holds it, so every
//! front end that has the service has its metrics, and two gateways in one process never
//! share a counter: there is no global registry). The protocol shells count what passes
//! through them (sessions, TLS handshakes, refusals, messages received and picked up, login
//! failures) through a [`ListenerMetrics`] made once per listener; the store's writer
//! reports each group commit through [`crate::store::CommitObserver`]. The sans-IO protocol
//! cores know nothing of metrics.
//!
//! This module only counts, so everything that counts can depend on it. Gauges that need a
//! look at the service or the certificate, and the `/metrics` endpoints that serve the text,
//! sit above it, in [`crate::metrics_endpoint`].

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

/// Per-mailbox series are written while there are at most this many mailboxes
/// (`[metrics] per_mailbox_limit`).
pub const DEFAULT_PER_MAILBOX_LIMIT: u32 = 50;

/// How a message came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Journaled to the SMTP journal target.
    Journal,
    /// Sent by a mail client through the SMTP proxy.
    ProxySent,
    /// Retrieved by a mail client through the POP3 proxy.
    ProxyReceived,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Journal => "journal",
            Mode::ProxySent => "proxy_sent",
            Mode::ProxyReceived => "proxy_received",
        }
    }
}

/// Which kind of reply a refusal was: SMTP 4xx and POP3 `-ERR` with a temporary response
/// code (`[SYS/TEMP]`, `[IN-USE]`, `[LOGIN-DELAY]`) are `Temporary`; SMTP 5xx and every other
/// `-ERR` are `Permanent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyClass {
    Temporary,
    Permanent,
}

impl ReplyClass {
    /// The label value: `4xx` or `5xx` (for POP3 the same split by its response codes).
    pub fn as_str(self) -> &'static str {
        match self {
            ReplyClass::Temporary => "4xx",
            ReplyClass::Permanent => "5xx",
        }
    }
}

/// Where a login was tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginKind {
    /// POP3 pick-up with a mailbox password.
    Pop3,
    /// A proxy login on the SMTP listeners.
    SmtpProxy,
    /// A proxy login on the POP3 listeners.
    Pop3Proxy,
    /// The Management API and console (administrator password or API key).
    Api,
}

impl LoginKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LoginKind::Pop3 => "pop3",
            LoginKind::SmtpProxy => "smtp_proxy",
            LoginKind::Pop3Proxy => "pop3_proxy",
            LoginKind::Api => "api",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReceivedLabels {
    listener: &'static str,
    mode: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    protocol: &'static str,
    class: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoginLabel {
    login: &'static str,
}

/// The registry and every handle that counts into it. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    sessions: Family<ListenerLabel, Counter>,
    sessions_open: Family<ListenerLabel, Gauge>,
    tls_handshakes: Family<ListenerLabel, Counter>,
    tls_failures: Family<ListenerLabel, Counter>,
    busy_refusals: Family<ListenerLabel, Counter>,
    messages_received: Family<ReceivedLabels, Counter>,
    bytes_received: Family<ReceivedLabels, Counter>,
    messages_picked_up: Family<ListenerLabel, Counter>,
    bytes_picked_up: Family<ListenerLabel, Counter>,
    refusals: Family<RefusalLabels, Counter>,
    login_failures: Family<LoginLabel, Counter>,
    throttled: Family<LoginLabel, Counter>,
    commit_seconds: Histogram,
    commit_batch: Histogram,
    /// `[metrics] per_mailbox_limit`.
    per_mailbox_limit: std::sync::atomic::AtomicU32,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gateway");
        let inner = Inner {
            sessions: Family::default(),
            sessions_open: Family::default(),
            tls_handshakes: Family::default(),
            tls_failures: Family::default(),
            busy_refusals: Family::default(),
            messages_received: Family::default(),
            bytes_received: Family::default(),
            messages_picked_up: Family::default(),
            bytes_picked_up: Family::default(),
            refusals: Family::default(),
            login_failures: Family::default(),
            throttled: Family::default(),
            // 1 ms to ~16 s: an fsync on a fast SSD up to a disk in trouble.
            commit_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            // 1 to 256 requests, the writer's largest batch.
            commit_batch: Histogram::new(exponential_buckets(1.0, 2.0, 9)),
            registry: Registry::default(),
            per_mailbox_limit: std::sync::atomic::AtomicU32::new(DEFAULT_PER_MAILBOX_LIMIT),
        };
        registry.register(
            "sessions",
            "Connections accepted and admitted, per listener",
            inner.sessions.clone(),
        );
        registry.register(
            "sessions_open",
            "Connections open now, per listener",
            inner.sessions_open.clone(),
        );
        registry.register(
            "tls_handshakes",
            "TLS handshakes completed (implicit TLS, STARTTLS, STLS), per listener",
            inner.tls_handshakes.clone(),
        );
        registry.register(
            "tls_handshake_failures",
            "TLS handshakes that failed or timed out, per listener",
            inner.tls_failures.clone(),
        );
        registry.register(
            "connections_refused_busy",
            "Connections refused because the connection limits were reached, per listener",
            inner.busy_refusals.clone(),
        );
        registry.register(
            "messages_received",
            "Messages stored durably, per listener and mode (journal, proxy_sent, proxy_received)",
            inner.messages_received.clone(),
        );
        registry.register(
            "message_bytes_received",
            "Bytes of messages stored durably (as received, before encryption), per listener and mode",
            inner.bytes_received.clone(),
        );
        registry.register(
            "messages_picked_up",
            "Messages an archiver retrieved in full over POP3, per listener",
            inner.messages_picked_up.clone(),
        );
        registry.register(
            "message_bytes_picked_up",
            "Bytes of the messages an archiver retrieved in full over POP3, per listener",
            inner.bytes_picked_up.clone(),
        );
        registry.register(
            "refusals",
            "Error replies sent, per protocol and class (4xx temporary, 5xx permanent; POP3 -ERR by its response code)",
            inner.refusals.clone(),
        );
        registry.register(
            "login_failures",
            "Failed logins (wrong password, unknown mailbox or key, refused upstream), per kind of login",
            inner.login_failures.clone(),
        );
        registry.register(
            "logins_throttled",
            "Logins refused without a check because their client failed too often, per kind of login",
            inner.throttled.clone(),
        );
        registry.register_with_unit(
            "store_commit",
            "Duration of one group commit of the store (transaction and fsync)",
            prometheus_client::registry::Unit::Seconds,
            inner.commit_seconds.clone(),
        );
        registry.register(
            "store_commit_batch_size",
            "Writes made durable together by one group commit",
            inner.commit_batch.clone(),
        );
        registry.register(
            "build",
            "The gateway's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        // Every series that can appear starts at 0, so the first event is an increase a
        // scraper sees (a series that appears with 1 looks like it always was 1).
        for protocol in ["smtp", "pop3"] {
            for class in [ReplyClass::Temporary, ReplyClass::Permanent] {
                let _ = inner.refusals.get_or_create(&RefusalLabels {
                    protocol,
                    class: class.as_str(),
                });
            }
        }
        for kind in [
            LoginKind::Pop3,
            LoginKind::SmtpProxy,
            LoginKind::Pop3Proxy,
            LoginKind::Api,
        ] {
            let label = LoginLabel {
                login: kind.as_str(),
            };
            let _ = inner.login_failures.get_or_create(&label);
            let _ = inner.throttled.get_or_create(&label);
        }
        Self {
            inner: Arc::new(Inner { registry, ..inner }),
        }
    }

    /// The handles of one listener (`smtp`, `submission`, `smtps`, `pop3`, `pop3s`,
    /// `console`); made once when the listener starts.
    pub fn listener(&self, name: &'static str) -> ListenerMetrics {
        let label = ListenerLabel { listener: name };
        let i = &self.inner;
        // The series this listener can move, at 0 from the start (see `new`).
        let modes: &[Mode] = match name {
            "smtp" | "submission" | "smtps" => &[Mode::Journal, Mode::ProxySent],
            "pop3" | "pop3s" => &[Mode::ProxyReceived],
            _ => &[],
        };
        for &mode in modes {
            let _ = i.received(name, mode);
        }
        if name.starts_with("pop3") {
            let _ = i.picked_up(name);
        }
        ListenerMetrics {
            metrics: self.clone(),
            name,
            sessions: i.sessions.get_or_create_owned(&label),
            sessions_open: i.sessions_open.get_or_create_owned(&label),
            tls_handshakes: i.tls_handshakes.get_or_create_owned(&label),
            tls_failures: i.tls_failures.get_or_create_owned(&label),
            busy: i.busy_refusals.get_or_create_owned(&label),
        }
    }

    /// A failed login of `kind`.
    pub fn login_failed(&self, kind: LoginKind) {
        self.inner
            .login_failures
            .get_or_create(&LoginLabel {
                login: kind.as_str(),
            })
            .inc();
    }

    /// A login refused by the throttle before any check.
    pub fn login_throttled(&self, kind: LoginKind) {
        self.inner
            .throttled
            .get_or_create(&LoginLabel {
                login: kind.as_str(),
            })
            .inc();
    }

    /// An error reply of `protocol` (`smtp`, `pop3`, `api`).
    pub fn refusal(&self, protocol: &'static str, class: ReplyClass) {
        self.inner
            .refusals
            .get_or_create(&RefusalLabels {
                protocol,
                class: class.as_str(),
            })
            .inc();
    }

    /// One group commit of `requests` writes that took `took`.
    pub fn store_committed(&self, requests: usize, took: Duration) {
        self.inner.commit_seconds.observe(took.as_secs_f64());
        self.inner.commit_batch.observe(requests as f64);
    }

    /// Per-mailbox series are written while there are at most `limit` mailboxes.
    pub fn set_per_mailbox_limit(&self, limit: u32) {
        self.inner
            .per_mailbox_limit
            .store(limit, std::sync::atomic::Ordering::Relaxed);
    }

    /// The limit [`Self::set_per_mailbox_limit`] set.
    pub fn per_mailbox_limit(&self) -> u32 {
        self.inner
            .per_mailbox_limit
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The counters in the Prometheus text format, followed by `gauges`: those a scrape
    /// computes from the state of the moment ([`crate::metrics_endpoint::scrape()`]).
    pub fn render(&self, gauges: &Registry) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail; the encoder only reports the writer's errors.
        let _ =
            prometheus_client::encoding::prometheus_text::encode(&mut text, &self.inner.registry);
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, gauges);
        text
    }
}

/// A pair of series that move together: messages and their bytes.
struct MessageCounters {
    messages: Counter,
    bytes: Counter,
}

impl MessageCounters {
    /// One message of `bytes`.
    fn count(&self, bytes: u64) {
        self.messages.inc();
        self.bytes.inc_by(bytes);
    }
}

impl Inner {
    /// `messages_received` and `message_bytes_received` of `listener` in `mode`.
    fn received(&self, listener: &'static str, mode: Mode) -> MessageCounters {
        let labels = ReceivedLabels {
            listener,
            mode: mode.as_str(),
        };
        MessageCounters {
            messages: self.messages_received.get_or_create_owned(&labels),
            bytes: self.bytes_received.get_or_create_owned(&labels),
        }
    }

    /// `messages_picked_up` and `message_bytes_picked_up` of `listener`.
    fn picked_up(&self, listener: &'static str) -> MessageCounters {
        let label = ListenerLabel { listener };
        MessageCounters {
            messages: self.messages_picked_up.get_or_create_owned(&label),
            bytes: self.bytes_picked_up.get_or_create_owned(&label),
        }
    }
}

/// The handles of one listener. Cheap to clone.
#[derive(Clone)]
pub struct ListenerMetrics {
    metrics: Metrics,
    name: &'static str,
    sessions: Counter,
    sessions_open: Gauge,
    tls_handshakes: Counter,
    tls_failures: Counter,
    busy: Counter,
}

impl std::fmt::Debug for ListenerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerMetrics")
            .field("listener", &self.name)
            .finish_non_exhaustive()
    }
}

impl ListenerMetrics {
    /// The listener's name, as in `[listen.<name>]`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The whole registry (for what is not per listener).
    pub fn all(&self) -> &Metrics {
        &self.metrics
    }

    /// A connection was admitted; it counts as open until the guard is dropped.
    pub fn session_opened(&self) -> OpenSession {
        self.sessions.inc();
        self.sessions_open.inc();
        OpenSession(self.sessions_open.clone())
    }

    /// A connection refused by the connection limits.
    pub fn refused_busy(&self) {
        self.busy.inc();
    }

    /// The outcome of a TLS handshake (implicit, STARTTLS or STLS).
    pub fn tls_handshake(&self, succeeded: bool) {
        if succeeded {
            self.tls_handshakes.inc();
        } else {
            self.tls_failures.inc();
        }
    }

    /// A message of `bytes` (as received) stored durably in `mode`.
    pub fn message_received(&self, mode: Mode, bytes: u64) {
        self.metrics.inner.received(self.name, mode).count(bytes);
    }

    /// A message of `bytes` retrieved in full by an archiver.
    pub fn message_picked_up(&self, bytes: u64) {
        self.metrics.inner.picked_up(self.name).count(bytes);
    }

    /// Counts the error replies in `bytes` that an SMTP server wrote (final lines of 4xx
    /// and 5xx replies; a multi-line reply counts once).
    pub fn count_smtp_replies(&self, bytes: &[u8]) {
        for line in bytes.split(|b| *b == b'\n') {
            if let Some(class) = smtp_reply_class(line) {
                self.metrics.refusal("smtp", class);
            }
        }
    }

    /// Counts the `-ERR` replies in `bytes` that a POP3 server wrote. Only for replies, never
    /// for a message's lines.
    pub fn count_pop3_replies(&self, bytes: &[u8]) {
        for line in bytes.split(|b| *b == b'\n') {
            if let Some(class) = pop3_reply_class(line) {
                self.metrics.refusal("pop3", class);
            }
        }
    }
}

/// The class of an SMTP reply line, when it is the last line of an error reply.
fn smtp_reply_class(line: &[u8]) -> Option<ReplyClass> {
    // `4yz ` or `4yz\r` ends a reply; `4yz-` continues it.
    let (code, end) = (line.get(..3)?, line.get(3).copied());
    if !code.iter().all(u8::is_ascii_digit) || !matches!(end, Some(b' ') | Some(b'\r') | None) {
        return None;
    }
    match code[0] {
        b'4' => Some(ReplyClass::Temporary),
        b'5' => Some(ReplyClass::Permanent),
        _ => None,
    }
}

/// The class of a POP3 reply line, when it is `-ERR`.
fn pop3_reply_class(line: &[u8]) -> Option<ReplyClass> {
    let rest = line.strip_prefix(b"-ERR")?;
    let rest = rest.strip_prefix(b" ").unwrap_or(rest);
    let temporary = [&b"[SYS/TEMP]"[..], b"[IN-USE]", b"[LOGIN-DELAY]"]
        .iter()
        .any(|code| rest.starts_with(code));
    Some(if temporary {
        ReplyClass::Temporary
    } else {
        ReplyClass::Permanent
    })
}

/// An open connection, counted in `sessions_open` until dropped.
#[derive(Debug)]
pub struct OpenSession(Gauge);

impl Drop for OpenSession {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl crate::store::CommitObserver for Metrics {
    fn committed(&self, requests: usize, took: Duration) {
        self.store_committed(requests, took);
    }
}

#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;
