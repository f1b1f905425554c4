//! The tokio shell around [`Session`]: moves bytes between a socket and the session, and
//! answers the session's requests with the service layer. Generic over the listener and its
//! stream, so the simulation runs it over turmoil sockets.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;

use super::interface::{
    AuthFailure, ClientInfo, CommitFailure, Event, ProxyCredentials, RecipientStatus,
    SessionConfig, UpstreamCommand,
};
use super::{Machine, Reply, Session};
use crate::config::SmtpSection;
use crate::metrics::{ListenerMetrics, LoginKind, Metrics, Mode, OpenSession};
use crate::net::{
    Admitted, ConnectionLimits, Driver, MaybeTls, Next, ProtocolServer, ShutdownSignal, TlsMode,
};
use crate::proxy::{Connector, TcpConnector, Upstreams};
use crate::service::{Gateway, MessageDraft, ProxiedCopy, ServiceError, StoredMessage};
use crate::smtp::upstream::{SmtpLeg, Verdict};

const READ_BUFFER: usize = 64 * 1024;

/// Everything the SMTP listeners share.
pub struct SmtpServer<C: Connector = TcpConnector> {
    gateway: Gateway,
    config: Arc<SessionConfig>,
    acceptor: TlsAcceptor,
    limits: ConnectionLimits,
    /// Who may deliver (`[smtp] allowed_networks`).
    access: SmtpSection,
    /// Proxy mode's way to the upstreams; `None` when proxy logins are off.
    upstreams: Option<Arc<Upstreams<C>>>,
}

impl SmtpServer<TcpConnector> {
    /// A journal-target server without proxy mode.
    pub fn new(
        gateway: Gateway,
        config: SessionConfig,
        acceptor: TlsAcceptor,
        limits: ConnectionLimits,
        access: SmtpSection,
    ) -> Arc<Self> {
        Self::build(gateway, config, acceptor, limits, access, None)
    }
}

impl<C: Connector> SmtpServer<C> {
    /// A server that also offers proxy logins through `upstreams` (when it is enabled).
    pub fn with_proxy(
        gateway: Gateway,
        config: SessionConfig,
        acceptor: TlsAcceptor,
        limits: ConnectionLimits,
        access: SmtpSection,
        upstreams: Arc<Upstreams<C>>,
    ) -> Arc<Self> {
        Self::build(gateway, config, acceptor, limits, access, Some(upstreams))
    }

    fn build(
        gateway: Gateway,
        mut config: SessionConfig,
        acceptor: TlsAcceptor,
        limits: ConnectionLimits,
        access: SmtpSection,
        upstreams: Option<Arc<Upstreams<C>>>,
    ) -> Arc<Self> {
        config.proxy = upstreams.as_ref().is_some_and(|u| u.enabled());
        Arc::new(Self {
            gateway,
            config: Arc::new(config),
            acceptor,
            limits,
            access,
            upstreams,
        })
    }
}

impl<C: Connector> ProtocolServer for SmtpServer<C> {
    const LISTENER_NAMES: (&'static str, &'static str) = ("smtp", "smtps");

    fn metrics(&self) -> &Metrics {
        self.gateway.metrics()
    }

    fn limits(&self) -> &ConnectionLimits {
        &self.limits
    }

    fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    fn busy_line(&self) -> String {
        format!(
            "421 4.7.0 {} too many connections, try again later\r\n",
            self.config.host_name
        )
    }

    async fn connection<S>(
        &self,
        metrics: &ListenerMetrics,
        session_id: String,
        admitted: Admitted<S>,
        peer: SocketAddr,
        mode: TlsMode,
        shutdown: ShutdownSignal,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Admitted {
            stream,
            permit: _permit,
            open,
        } = admitted;
        let client = ClientInfo {
            peer: Some(peer.ip()),
            tls: stream.tls_active(),
            allowed: self.access.allows(peer.ip()),
            session_id,
        };
        tracing::debug!("SMTP connection");
        let gateway = self.gateway.clone();
        let replies = metrics.clone();
        let driver = Driver::new(stream, READ_BUFFER, self.limits.write_timeout())
            .with_clock(move || gateway.now_utc())
            .with_shutdown(shutdown)
            .with_observer(move |bytes| replies.count_smtp_replies(bytes));
        let session = Session::new(self.config.clone(), client, driver.now().instant);
        let connection = Connection {
            metrics: metrics.clone(),
            _open: open,
            server: self,
            machine: Machine::Session(session),
            driver,
            peer,
            draft: None,
            implicit_tls: mode == TlsMode::Implicit,
            leg: None,
            draft_failure_reported: false,
            logged_mailbox: None,
        };
        connection.run().await;
    }
}

/// Closes a proxy leg, on the heap: inline, the upstream QUIT's state would sit in every
/// session's future, proxied or not.
fn close_boxed<C: Connector>(
    leg: SmtpLeg<C>,
    upstreams: &Upstreams<C>,
) -> std::pin::Pin<Box<impl std::future::Future<Output = ()> + '_>> {
    Box::pin(leg.close(upstreams))
}

/// A message being received: the draft, or why there is none (its recipients vanished or
/// the spool failed), which the commit then reports.
enum Draft {
    Open(MessageDraft),
    Failed(ServiceError),
}

struct Connection<'a, S, C: Connector> {
    server: &'a SmtpServer<C>,
    metrics: ListenerMetrics,
    /// Counts the connection as open while it lives.
    _open: OpenSession,
    /// The session, or after a proxy login the relay it handed over to.
    machine: Machine,
    driver: Driver<MaybeTls<S>>,
    peer: SocketAddr,
    draft: Option<Draft>,
    /// The client came in on 465: the upstream gets implicit TLS too.
    implicit_tls: bool,
    /// Proxy mode: the authenticated upstream connection.
    leg: Option<SmtpLeg<C>>,
    /// The current draft's failure was reported to the session.
    draft_failure_reported: bool,
    /// The mailbox last recorded on the session span: recorded again only when it changes.
    logged_mailbox: Option<crate::mailbox::MailboxId>,
}

impl<S, C> Connection<'_, S, C>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    C: Connector,
{
    async fn run(mut self) {
        loop {
            let event = match self.driver.next_event(&mut self.machine).await {
                Next::Event(event) => event,
                Next::Closed | Next::Interrupted => return self.close_leg().await,
            };
            match event {
                Event::LookupRecipient(id) => {
                    let status = self.recipient_status(&id);
                    if let Some(session) = self.machine.session() {
                        session.recipient_status(status);
                    }
                }
                Event::MessageStart(envelope) if self.leg.is_some() => {
                    self.draft_failure_reported = false;
                    self.start_proxied(envelope);
                    self.report_draft_failure();
                }
                Event::MessageStart(envelope) => {
                    self.draft_failure_reported = false;
                    self.start_message(envelope);
                    self.report_draft_failure();
                }
                Event::MessageData(bytes) => {
                    self.write_message(&bytes);
                    self.report_draft_failure();
                    self.relay_body(&bytes).await;
                }
                // Boxed below: the proxy's and STARTTLS's states are large and rare, and
                // inline they would sit in every session's future (which is as large as
                // the largest state of all its awaits) for the session's whole life.
                Event::MessageEnd if self.leg.is_some() => Box::pin(self.finish_proxied()).await,
                Event::MessageEnd => {
                    let result = self.commit().await;
                    if let Some(session) = self.machine.session() {
                        session.commit_result(result);
                    }
                }
                Event::MessageAbort(reason) => {
                    tracing::debug!(peer = %self.peer, ?reason, "message aborted");
                    self.draft = None;
                    // The only way to abandon a message at the upstream is to drop
                    // the connection before the final dot.
                    if let Some(leg) = self.leg.take() {
                        if let Some(upstreams) = &self.server.upstreams {
                            close_boxed(leg, upstreams).await;
                        }
                        self.upstream_failed(upstream_gone_reply());
                    }
                }
                Event::ProxyLogin(credentials) => {
                    match Box::pin(self.proxy_login(credentials)).await {
                        Ok(()) => {
                            let pipelining = self.leg.as_ref().is_some_and(SmtpLeg::pipelining);
                            self.machine.login_accepted(pipelining);
                        }
                        Err(failure) => {
                            if let Some(session) = self.machine.session() {
                                session.auth_failed(failure);
                            }
                        }
                    }
                }
                Event::Upstream(command) => Box::pin(self.relay_command(command)).await,
                Event::StartTls => {
                    if !Box::pin(self.start_tls()).await {
                        return;
                    }
                }
                Event::Close => {
                    self.driver.shut_down(&mut self.machine).await;
                    self.close_leg().await;
                    crate::net::linger(self.driver.stream_mut()).await;
                    return;
                }
            }
        }
    }

    /// Writes the `220`, runs the handshake and gives the session its proof; false when
    /// the connection is to be dropped.
    async fn start_tls(&mut self) -> bool {
        let acceptor = &self.server.acceptor;
        let Some(tls) = self
            .driver
            .start_tls(&mut self.machine, acceptor, &self.metrics)
            .await
        else {
            return false;
        };
        if let Some(session) = self.machine.session() {
            session.tls_established(tls);
        }
        true
    }

    /// The upstream connection is gone (only a relay has one).
    fn upstream_failed(&mut self, reply: Reply) {
        if let Some(relay) = self.machine.relay() {
            relay.upstream_failed(reply);
        }
    }

    async fn close_leg(&mut self) {
        if let (Some(leg), Some(upstreams)) = (self.leg.take(), &self.server.upstreams) {
            close_boxed(leg, upstreams).await;
        }
    }

    /// Checks the mailbox, then logs into the upstream with the client's credentials.
    async fn proxy_login(&mut self, credentials: ProxyCredentials) -> Result<(), AuthFailure> {
        let Some(upstreams) = self.server.upstreams.clone() else {
            return Err(AuthFailure::InvalidLogin);
        };
        let login = &credentials.login;
        let guard = upstreams.guard();
        let mut attempt = guard.admit(self.peer.ip(), login).map_err(|throttled| {
            tracing::warn!(peer = %self.peer, user = %login.remote_user, server = %login.host, retry_after = ?throttled.retry_after, "SMTP proxy login refused: too many failed logins");
            self.metrics.all().login_throttled(LoginKind::SmtpProxy);
            AuthFailure::Throttled
        })?;
        guard.wait(&mut attempt).await;
        match self.server.gateway.accepting(&login.mailbox) {
            Ok(_) => {}
            Err(ServiceError::MailboxSuspended(_)) => {
                guard.not_a_guess(attempt);
                return Err(AuthFailure::MailboxSuspended);
            }
            Err(ServiceError::MailboxNotFound(_)) => {
                tracing::info!(peer = %self.peer, "SMTP proxy login for an unknown mailbox");
                self.metrics.all().login_failed(LoginKind::SmtpProxy);
                tokio::time::sleep(guard.unknown_mailbox(attempt)).await;
                return Err(AuthFailure::UnknownMailbox);
            }
            Err(e) => {
                guard.not_a_guess(attempt);
                tracing::error!(error = %e, "mailbox lookup failed");
                return Err(AuthFailure::Temporary);
            }
        }
        let result = SmtpLeg::login(
            &upstreams,
            &credentials,
            self.implicit_tls,
            &self.server.config.host_name,
        )
        .await;
        let leg = match result {
            Ok(leg) => {
                guard.succeeded(attempt);
                leg
            }
            Err(failure @ AuthFailure::UpstreamRejected(_)) => {
                self.metrics.all().login_failed(LoginKind::SmtpProxy);
                tokio::time::sleep(guard.failed(attempt)).await;
                return Err(failure);
            }
            Err(failure) => {
                guard.not_a_guess(attempt);
                return Err(failure);
            }
        };
        tracing::Span::current().record("mailbox", tracing::field::display(&login.mailbox));
        tracing::info!(peer = %self.peer, user = %login.remote_user, server = %leg.server(), mailbox = %login.mailbox, "SMTP proxy login");
        self.leg = Some(leg);
        Ok(())
    }

    async fn relay_command(&mut self, command: UpstreamCommand) {
        let (Some(leg), Some(upstreams)) = (self.leg.as_mut(), &self.server.upstreams) else {
            return self.upstream_failed(upstream_gone_reply());
        };
        for reply in leg.command(upstreams, &command).await {
            match reply {
                Ok(reply) => {
                    let now = self.driver.now().instant;
                    if let Some(relay) = self.machine.relay() {
                        relay.upstream_reply(reply, now);
                    }
                }
                Err(reply) => {
                    self.leg = None;
                    return self.upstream_failed(reply);
                }
            }
        }
    }

    /// A proxied message begins: its copy goes to the login's mailbox, trace headers first.
    fn start_proxied(&mut self, envelope: super::Envelope) {
        let Some(leg) = &self.leg else { return };
        let login = leg.login_name();
        let origin = ProxiedCopy {
            remote_user: &login.remote_user,
            server: leg.server(),
            mailbox: &login.mailbox,
        };
        let draft = self.server.gateway.begin_sent(
            origin,
            self.peer.ip(),
            &envelope.mail_from,
            &envelope.forward_to,
        );
        self.draft = Some(match draft {
            Ok(draft) => Draft::Open(draft),
            Err(e) => Draft::Failed(e),
        });
    }

    async fn relay_body(&mut self, bytes: &[u8]) {
        let Some(leg) = self.leg.as_mut() else { return };
        if let Err(reply) = leg.body(bytes).await {
            self.leg = None;
            self.upstream_failed(reply);
        }
    }

    /// The end of a proxied message. The copy is made durable BEFORE the final dot goes
    /// upstream: then a `250` from the upstream always has its copy, and a copy that
    /// cannot be stored stops the message from being sent at all.
    async fn finish_proxied(&mut self) {
        let (Some(mut leg), Some(upstreams)) = (self.leg.take(), self.server.upstreams.clone())
        else {
            return self.upstream_failed(upstream_gone_reply());
        };
        let (stored, durable) = match self.commit_copy().await {
            Ok(committed) => committed,
            Err(failure) => {
                leg.close(&upstreams).await;
                if let Some(relay) = self.machine.relay() {
                    relay.copy_failed(failure);
                    relay.upstream_failed(upstream_gone_reply());
                }
                return;
            }
        };
        match leg.finish(&upstreams).await {
            Verdict::Accepted(reply) => {
                let size = stored.first().map_or(0, |m| m.size);
                for message in &stored {
                    tracing::info!(server = %leg.server(), mailbox = %message.mailbox, id = %message.id, size = message.size, "proxied message sent and stored");
                }
                self.metrics.message_received(Mode::ProxySent, size);
                self.leg = Some(leg);
                let now = self.driver.now().instant;
                if let Some(relay) = self.machine.relay() {
                    relay.message_relayed(Ok((durable, reply)), now);
                }
            }
            Verdict::Rejected(reply) => {
                // Not sent, so not archived as sent.
                self.server.gateway.discard_sent(&stored).await;
                self.leg = Some(leg);
                let now = self.driver.now().instant;
                if let Some(relay) = self.machine.relay() {
                    relay.message_relayed(Err(reply), now);
                }
            }
            Verdict::Lost(reply) => {
                // The upstream may or may not have taken it: keep the copy, since an
                // archive missing a sent message is worse than one holding a retry twice.
                tracing::warn!(peer = %self.peer, server = %leg.server(), "upstream lost after the final dot; keeping the copy");
                if let Some(relay) = self.machine.relay() {
                    relay.upstream_failed(reply);
                }
            }
        }
    }

    async fn commit_copy(
        &mut self,
    ) -> Result<(Vec<StoredMessage>, crate::store::Durable), CommitFailure> {
        let failure = match self.draft.take() {
            Some(Draft::Open(draft)) => match self.server.gateway.commit(draft).await {
                Ok(committed) => return Ok(committed),
                Err(e) => e,
            },
            Some(Draft::Failed(e)) => e,
            None => return Err(CommitFailure::Temporary),
        };
        tracing::warn!(peer = %self.peer, error = %failure, "proxied message not stored; not sending it");
        Err(CommitFailure::from(&failure))
    }

    fn recipient_status(&mut self, id: &crate::mailbox::MailboxId) -> RecipientStatus {
        // The service's free-space rule first: a full disk says so (452), not "unknown".
        if let Err(e) = self.server.gateway.check_intake(0) {
            return if e.is_storage_full() {
                RecipientStatus::StorageFull
            } else {
                RecipientStatus::Unavailable
            };
        }
        match self.server.gateway.accepting(id) {
            Ok(_) => {
                // The session's lines name the mailbox from here on (the last accepted
                // recipient when there are several; each stored copy's line names its own).
                // Only a change is recorded: a journaling connection names one mailbox for
                // thousands of messages.
                if self.logged_mailbox.as_ref() != Some(id) {
                    tracing::Span::current().record("mailbox", tracing::field::display(id));
                    self.logged_mailbox = Some(id.clone());
                }
                RecipientStatus::Active
            }
            Err(ServiceError::MailboxSuspended(_)) => RecipientStatus::Suspended,
            Err(ServiceError::MailboxNotFound(_)) => RecipientStatus::Unknown,
            Err(e) => {
                tracing::error!(error = %e, "mailbox lookup failed");
                RecipientStatus::Unavailable
            }
        }
    }

    fn start_message(&mut self, envelope: super::Envelope) {
        let draft = self.server.gateway.begin_journal(
            &envelope.rcpt,
            &envelope.mail_from,
            self.peer.ip(),
            &envelope.id,
        );
        self.draft = Some(match draft {
            Ok(draft) => Draft::Open(draft),
            Err(e) => Draft::Failed(e),
        });
    }

    /// A draft that failed (spool full, a write error) ends the message now: nothing of
    /// the rest could be stored. Reported once; the failure stays for the commit path.
    fn report_draft_failure(&mut self) {
        if let Some(Draft::Failed(e)) = &self.draft {
            // The session enforces the size limit itself, with its own reply.
            if matches!(e, ServiceError::MessageTooLarge(_)) {
                return;
            }
            if !self.draft_failure_reported {
                self.draft_failure_reported = true;
                tracing::warn!(peer = %self.peer, error = %e, "message cannot be stored; refusing it now");
                let failure = CommitFailure::from(e);
                self.machine.message_failed(failure);
            }
        }
    }

    fn write_message(&mut self, bytes: &[u8]) {
        if let Some(Draft::Open(draft)) = &mut self.draft {
            if let Err(e) = draft.write(bytes) {
                self.draft = Some(Draft::Failed(e));
            }
        }
    }

    async fn commit(&mut self) -> Result<crate::store::Durable, CommitFailure> {
        let failure = match self.draft.take() {
            Some(Draft::Open(draft)) => match self.server.gateway.commit(draft).await {
                Ok((stored, durable)) => {
                    // One line per stored copy (a journal message may go to several
                    // mailboxes); the metrics count the message once.
                    for message in &stored {
                        tracing::info!(mailbox = %message.mailbox, id = %message.id, size = message.size, "message stored");
                    }
                    self.metrics
                        .message_received(Mode::Journal, stored.first().map_or(0, |m| m.size));
                    return Ok(durable);
                }
                Err(e) => e,
            },
            Some(Draft::Failed(e)) => e,
            None => return Err(CommitFailure::Temporary),
        };
        if failure.is_temporary() {
            tracing::warn!(peer = %self.peer, error = %failure, "message not stored (temporary)");
        } else {
            tracing::error!(peer = %self.peer, error = %failure, "message not stored");
        }
        Err(CommitFailure::from(&failure))
    }
}

/// The client's reply when the upstream connection is gone.
fn upstream_gone_reply() -> super::Reply {
    crate::smtp::upstream::lost_reply(&crate::smtp::client::UpstreamError::ConnectionLost)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Shutdown;
    use crate::service::test_support::faulty_gateway;
    use crate::store::faults::Fault;
    use std::time::Duration;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    fn session_config() -> SessionConfig {
        SessionConfig {
            host_name: "gw.test".into(),
            email_domain: "archive.example".into(),
            max_message_size: 1024 * 1024,
            max_recipients: 10,
            require_tls: false,
            tls_available: true,
            max_errors: 10,
            proxy: false,
            postmaster: None,
            preauth_timeout: Duration::from_secs(60),
            transaction_timeout: Duration::from_secs(1800),
        }
    }

    /// Sends one message over an in-memory connection; returns every reply line before 221.
    async fn send_one(server: &Arc<SmtpServer>, rcpt: &str) -> Vec<String> {
        let (client, server_side) = tokio::io::duplex(1 << 20);
        let peer: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let shutdown = Shutdown::new();
        let task = {
            let server = server.clone();
            let signal = shutdown.signal();
            tokio::spawn(async move {
                server
                    .handle(server_side, peer, TlsMode::StartTls, signal)
                    .await
            })
        };
        let (read, mut write) = tokio::io::split(client);
        let mut lines = BufReader::new(read).lines();
        let script = format!(
            "EHLO c\r\nMAIL FROM:<j@tenant.example>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\nSubject: t\r\n\r\n{}\r\n.\r\nQUIT\r\n",
            "x".repeat(900)
        );
        write.write_all(script.as_bytes()).await.unwrap();
        let mut replies = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("221") {
                break;
            }
            replies.push(line);
        }
        task.await.unwrap();
        replies
    }

    fn accepted(replies: &[String]) -> bool {
        replies.iter().any(|r| r.starts_with("250 2.0.0"))
    }

    fn has(replies: &[String], code: &str) -> bool {
        replies.iter().any(|r| r.starts_with(code))
    }

    #[tokio::test]
    async fn storage_failures_are_temporary_replies_never_250() {
        let (dir, gateway, disk) = faulty_gateway();
        let material = crate::tls::load_or_create_self_signed(dir.path(), "gw.test").unwrap();
        let acceptor = crate::tls::acceptor(Arc::new(crate::tls::CertResolver::new(material)));
        let id = gateway.create_mailbox("m", "").await.unwrap().info.id;
        let rcpt = id.address("archive.example");
        let server = SmtpServer::new(
            gateway.clone(),
            session_config(),
            acceptor,
            ConnectionLimits::new(10, 10),
            SmtpSection::default(),
        );

        // The disk fills while the message is committed: 452 after the data.
        disk.set(Fault::Full);
        let replies = send_one(&server, &rcpt).await;
        assert!(
            !accepted(&replies) && has(&replies, "452 4.3.1"),
            "{replies:?}"
        );
        // Still broken: the store cannot even reopen, so the lookup at RCPT already says 451.
        disk.set(Fault::Broken);
        let replies = send_one(&server, &rcpt).await;
        assert!(
            !accepted(&replies) && has(&replies, "451 4.3.0"),
            "{replies:?}"
        );

        // The disk recovers: nothing half-stored, and the next delivery works without a restart.
        disk.set(Fault::Healthy);
        // The store's writer thread reopens it (readers never do); a write waits for that.
        gateway.store().write(|_| Ok(())).await.unwrap();
        assert_eq!(gateway.mailbox(&id).unwrap().message_count, 0);
        let replies = send_one(&server, &rcpt).await;
        assert!(accepted(&replies), "{replies:?}");
        assert_eq!(gateway.mailbox(&id).unwrap().message_count, 1);
    }

    /// A server on a fresh gateway, for connection tests.
    fn journal_server() -> (tempfile::TempDir, Arc<SmtpServer>) {
        let (dir, gateway) = crate::service::test_support::gateway();
        let material = crate::tls::load_or_create_self_signed(dir.path(), "gw.test").unwrap();
        let acceptor = crate::tls::acceptor(Arc::new(crate::tls::CertResolver::new(material)));
        let server = SmtpServer::new(
            gateway,
            session_config(),
            acceptor,
            ConnectionLimits::new(10, 10),
            SmtpSection::default(),
        );
        (dir, server)
    }

    #[tokio::test(start_paused = true)]
    async fn client_that_never_reads_is_disconnected() {
        let (_dir, server) = journal_server();
        crate::net::protocol_server::assert_a_client_that_never_reads_is_dropped(
            server,
            b"NOOP\r\n",
        )
        .await;
    }
}
