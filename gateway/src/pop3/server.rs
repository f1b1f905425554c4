//! The tokio shell around the POP3 [`Session`]: logins (throttled, with a bounded number of
//! concurrent Argon2id unseals), the exclusive maildrop lock, streaming decryption of
//! messages, and the UPDATE commit. Generic over listener and stream like the SMTP shell.
//!
//! ## A lock held by a connection that cannot be answered
//!
//! The maildrop lock lives as long as the session's [`Maildrop`]. Two things release it
//! sooner than the 10-minute autologout RFC 1939 §3 asks for (the session keeps its
//! autologout at [`MIN_IDLE_TIMEOUT`](super::MIN_IDLE_TIMEOUT) while logged in):
//!
//! - TCP keepalive on every accepted connection (`[limits] tcp_keepalive_secs`, 60 s, then
//!   6 probes 10 s apart): the kernel notices a peer that no longer answers about two
//!   minutes after it went silent, the read fails, and the session ends as any lost
//!   connection does.
//! - Takeover by a login with the right password (see [`crate::service::Pickup`]): this
//!   shell tells the maildrop's [`Holder`] when it waits for a command and when input
//!   arrives (through the driver's interrupt), and ends the session (`-ERR [IN-USE]`,
//!   then close) when it is revoked. Input that arrives after the takeover is not run.
//!
//! Either way the old session ends without UPDATE, so nothing it marked is deleted. A client
//! that stops reading is dropped by the write timeout. Before login the short `[limits]
//! preauth_timeout_secs` applies; no lock is held then.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;

use super::response::Reply;
use super::{
    Action, AuthFailure, CommitFailure, Feed, Listing, Session, SessionConfig, StreamFailure,
};
use crate::metrics::{ListenerMetrics, LoginKind, Metrics, OpenSession};
use crate::net::{
    Admitted, ConnectionLimits, ConnectionPermit, Driver, Interrupt, MaybeTls, Next,
    ProtocolServer, ShutdownSignal, TlsMode,
};
use crate::pop3::client::UpstreamPassword;
use crate::pop3::upstream::{login_refusal, LoginFailure, Pop3Leg};
use crate::proxy::{Connector, ProxyLogin, TcpConnector, Upstreams};
use crate::service::{Gateway, Holder, Maildrop, Pickup, PickupPolicy, ServiceError};

const READ_BUFFER: usize = 16 * 1024;
/// The refusal when every slot this client may take is in use.
const BUSY: &str = "too many connections, try again later";
/// Pending output that is written out in the middle of a message. Just below one chunk:
/// each chunk of a large message leaves on its own, and the session's buffer and the
/// driver's trade places instead of the next chunk being copied after it; a message of one
/// chunk still leaves with its terminator in one write.
const FLUSH_THRESHOLD: usize = crate::crypto::CHUNK_SIZE - 4 * 1024;

/// POP3 settings from the configuration.
#[derive(Debug, Clone)]
pub struct Pop3Settings {
    pub host_name: String,
    /// Silence allowed before login (see [`SessionConfig::preauth_timeout`]).
    pub preauth_timeout: Duration,
    /// Pick-up logins: throttles, unseal slots, lock takeover.
    pub pickup: PickupPolicy,
}

/// Everything the POP3 listeners share.
pub struct Pop3Server<C: Connector = TcpConnector> {
    /// Proxy mode's way to the upstreams; `None` when proxy logins are off.
    upstreams: Option<Arc<Upstreams<C>>>,
    gateway: Gateway,
    settings: Pop3Settings,
    acceptor: TlsAcceptor,
    limits: ConnectionLimits,
    /// The only way to a maildrop.
    pickup: Pickup,
}

impl Pop3Server<TcpConnector> {
    /// A pick-up server without proxy mode.
    pub fn new(
        gateway: Gateway,
        settings: Pop3Settings,
        acceptor: TlsAcceptor,
        limits: ConnectionLimits,
    ) -> Arc<Self> {
        Self::build(gateway, settings, acceptor, limits, None)
    }
}

impl<C: Connector> Pop3Server<C> {
    /// A server that also offers proxy logins through `upstreams` (when it is enabled).
    pub fn with_proxy(
        gateway: Gateway,
        settings: Pop3Settings,
        acceptor: TlsAcceptor,
        limits: ConnectionLimits,
        upstreams: Arc<Upstreams<C>>,
    ) -> Arc<Self> {
        Self::build(gateway, settings, acceptor, limits, Some(upstreams))
    }

    fn build(
        gateway: Gateway,
        settings: Pop3Settings,
        acceptor: TlsAcceptor,
        limits: ConnectionLimits,
        upstreams: Option<Arc<Upstreams<C>>>,
    ) -> Arc<Self> {
        Arc::new(Self {
            upstreams,
            pickup: gateway.pickup(settings.pickup.clone()),
            gateway,
            settings,
            acceptor,
            limits,
        })
    }

    /// Checks the mailbox, then logs into the upstream with the client's credentials.
    async fn proxy_login(
        &self,
        peer: SocketAddr,
        login: ProxyLogin,
        password: UpstreamPassword,
        implicit_tls: bool,
    ) -> Result<Pop3Leg<C>, LoginFailure> {
        let Some(upstreams) = &self.upstreams else {
            return Err(LoginFailure::Temporary);
        };
        let guard = upstreams.guard();
        let mut attempt = guard.admit(peer.ip(), &login).map_err(|throttled| {
            tracing::warn!(%peer, user = %login.remote_user, server = %login.host, retry_after = ?throttled.retry_after, "POP3 proxy login refused: too many failed logins");
            self.gateway.metrics().login_throttled(LoginKind::Pop3Proxy);
            LoginFailure::Throttled
        })?;
        guard.wait(&mut attempt).await;
        match self.gateway.accepting(&login.mailbox) {
            Ok(_) => {}
            Err(ServiceError::MailboxSuspended(_)) => {
                guard.not_a_guess(attempt);
                return Err(LoginFailure::MailboxSuspended);
            }
            Err(ServiceError::MailboxNotFound(_)) => {
                tracing::info!(peer = %peer, "POP3 proxy login for an unknown mailbox");
                self.gateway.metrics().login_failed(LoginKind::Pop3Proxy);
                tokio::time::sleep(guard.unknown_mailbox(attempt)).await;
                return Err(LoginFailure::UnknownMailbox);
            }
            Err(e) => {
                guard.not_a_guess(attempt);
                tracing::error!(error = %e, "mailbox lookup failed");
                return Err(LoginFailure::Temporary);
            }
        }
        let user = login.remote_user.clone();
        let mailbox = login.mailbox.clone();
        match Pop3Leg::login(upstreams, login, password, implicit_tls).await {
            Ok(leg) => {
                guard.succeeded(attempt);
                tracing::Span::current().record("mailbox", tracing::field::display(&mailbox));
                tracing::info!(peer = %peer, %user, server = %leg.server(), %mailbox, "POP3 proxy login");
                Ok(leg)
            }
            Err(failure @ LoginFailure::Rejected(_)) => {
                self.gateway.metrics().login_failed(LoginKind::Pop3Proxy);
                tokio::time::sleep(guard.failed(attempt)).await;
                Err(failure)
            }
            Err(failure) => {
                guard.not_a_guess(attempt);
                Err(failure)
            }
        }
    }
}

impl<C: Connector> ProtocolServer for Pop3Server<C> {
    const LISTENER_NAMES: (&'static str, &'static str) = ("pop3", "pop3s");

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
        format!("-ERR [SYS/TEMP] {BUSY}\r\n")
    }

    async fn connection<S>(
        &self,
        metrics: &ListenerMetrics,
        _session_id: String,
        admitted: Admitted<S>,
        peer: SocketAddr,
        mode: TlsMode,
        shutdown: ShutdownSignal,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Admitted {
            stream,
            permit,
            open,
        } = admitted;
        let tls = stream.tls_active();
        tracing::debug!("POP3 connection");
        let mut config = SessionConfig::new(self.settings.host_name.clone(), tls, true);
        config.proxy = self.upstreams.as_ref().is_some_and(|u| u.enabled());
        config.preauth_timeout = self.settings.preauth_timeout;
        let replies = metrics.clone();
        let driver = Driver::new(stream, READ_BUFFER, self.limits.write_timeout())
            .with_shutdown(shutdown.clone())
            .with_observer(move |bytes| replies.count_pop3_replies(bytes));
        let connection = Connection {
            server: self,
            metrics: metrics.clone(),
            _open: open,
            session: Session::new(config, driver.now().instant),
            driver,
            peer,
            shutdown,
            maildrop: None,
            implicit_tls: mode == TlsMode::Implicit,
            permit,
        };
        connection.run().await;
    }
}

/// One POP3 connection: the session core, its stream and, after login, its maildrop.
struct Connection<'a, S, C: Connector> {
    server: &'a Pop3Server<C>,
    metrics: ListenerMetrics,
    /// Counts the connection as open while it lives.
    _open: OpenSession,
    session: Session,
    /// The client's socket and buffers; every reply it writes is counted in metrics (the
    /// lines of a message are not: they go out unobserved).
    driver: Driver<MaybeTls<S>>,
    peer: SocketAddr,
    /// For the relay after a proxy login (the driver has its own).
    shutdown: ShutdownSignal,
    /// After login: the key and the lock, released when the connection ends on any path.
    maildrop: Option<Maildrop>,
    /// The client came in on 995: the upstream gets implicit TLS too.
    implicit_tls: bool,
    /// The connection's slot, perhaps one of those reserved for pick-up.
    permit: ConnectionPermit,
}

impl<S, C> Connection<'_, S, C>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    C: Connector,
{
    async fn run(mut self) {
        loop {
            // Logged in: a new login may take the maildrop over while the session waits
            // for a command (the session says when, see `Machine::interruptible`).
            let mut takeover = Takeover {
                holder: self.maildrop.as_ref().map(|m| m.holder().clone()),
                refused_input: false,
            };
            match self
                .driver
                .next_event_or(&mut self.session, &mut takeover)
                .await
            {
                Next::Event(action) => {
                    if !self.act(action).await {
                        self.driver.shut_down(&mut self.session).await;
                        // Release the slot and the maildrop lock before lingering.
                        self.maildrop = None;
                        crate::net::linger(self.driver.stream_mut()).await;
                        return;
                    }
                }
                Next::Closed => return,
                Next::Interrupted => {
                    if !takeover.refused_input {
                        tracing::info!(peer = %self.peer, "POP3 session taken over by a new login");
                    }
                    self.session.taken_over();
                }
            }
        }
    }

    /// Carries out one action; false when the connection must end now.
    async fn act(&mut self, action: Action) -> bool {
        let stall = self.server.limits.write_timeout();
        match action {
            Action::StartTls => {
                // The `+OK` goes out in plaintext, before the handshake.
                let acceptor = &self.server.acceptor;
                let Some(tls) = self
                    .driver
                    .start_tls(&mut self.session, acceptor, &self.metrics)
                    .await
                else {
                    return false;
                };
                self.session.tls_established(tls);
            }
            Action::Authenticate { mailbox, password } => {
                let opened = self
                    .server
                    .pickup
                    .open_maildrop(self.peer.ip(), mailbox, password)
                    .await;
                let result = opened.map(|maildrop| {
                    tracing::Span::current()
                        .record("mailbox", tracing::field::display(maildrop.mailbox()));
                    // From now on this address may use the slots kept for pick-up.
                    self.server.limits.remember_pickup(self.peer.ip());
                    let listing = Listing::of(&maildrop);
                    self.maildrop = Some(maildrop);
                    listing
                });
                self.session.auth_result(result.map_err(AuthFailure::from));
            }
            Action::RejectLogin => {
                let refused = self.server.pickup.refuse(self.peer.ip()).await;
                self.session.auth_result(Err(AuthFailure::from(refused)));
            }
            Action::StreamMessage { seq, top_lines } => {
                return self.stream_message(seq, top_lines.is_none()).await
            }
            Action::Commit { delete } => {
                let Some(maildrop) = self.maildrop.take() else {
                    self.session.commit_result(Err(CommitFailure::Permanent));
                    return true;
                };
                let result = self
                    .server
                    .gateway
                    .delete_messages(&maildrop, &delete)
                    .await;
                let mailbox = maildrop.mailbox();
                if let Err(e) = &result {
                    tracing::error!(%mailbox, error = %e, "POP3 UPDATE failed");
                } else {
                    tracing::info!(%mailbox, deleted = delete.len(), "POP3 UPDATE");
                }
                // The session ends with UPDATE: the maildrop (its lock, and its lease on a
                // shared store) is free before the answer, so the archiver's next login,
                // on this node or another, finds it free.
                drop(maildrop);
                self.session
                    .commit_result(result.map_err(|e| CommitFailure::from_service_error(&e)));
            }
            Action::ProxyLogin { login, password } => {
                // The reserve is for pick-up: a proxy session needs an ordinary slot.
                if !self.permit.move_to_general() {
                    tracing::info!(peer = %self.peer, "POP3 proxy login refused: only reserved slots are free");
                    let busy = Reply::err_code(super::response::Code::SysTemp, BUSY);
                    self.session.proxy_result(Err(busy));
                    return true;
                }
                let result = self
                    .server
                    .proxy_login(self.peer, login, password, self.implicit_tls)
                    .await;
                match result {
                    Ok(leg) => {
                        let ready = Reply::ok(format!("logged in at {}, relaying", leg.server()));
                        self.session.proxy_result(Ok(ready));
                        if self.driver.flush(&mut self.session).await.is_err() {
                            return false;
                        }
                        let input = self.session.take_input();
                        leg.relay(
                            &self.server.gateway,
                            &self.metrics,
                            self.driver.stream_mut(),
                            &input,
                            self.shutdown.clone(),
                            stall,
                        )
                        .await;
                        return false;
                    }
                    Err(failure) => self.session.proxy_result(Err(login_refusal(failure))),
                }
            }
            Action::Close => return false,
        }
        true
    }

    /// Decrypts one message chunk by chunk straight into the session (and the socket), so
    /// memory stays at about one chunk whatever the message size.
    /// `whole` is a RETR (counted as picked up once it all went out), not a TOP.
    async fn stream_message(&mut self, seq: u64, whole: bool) -> bool {
        let Some(maildrop) = &self.maildrop else {
            self.session.message_end(Err(StreamFailure::Temporary));
            return true;
        };
        let mailbox = maildrop.mailbox().clone();
        let mut reader = match self.server.pickup.open_message(maildrop, seq).await {
            Ok(reader) => reader,
            Err(e) => {
                // A damaged message was logged and counted by the service already.
                if !e.is_damaged_message() {
                    tracing::error!(%mailbox, seq, error = %e, "opening a message failed");
                }
                self.session
                    .message_end(Err(StreamFailure::from_service_error(&e)));
                return true;
            }
        };
        let mut end = Ok(());
        while let Some(chunk) = reader.next_chunk() {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(e) => {
                    if !e.is_damaged_message() {
                        tracing::error!(%mailbox, seq, error = %e, "reading a message failed");
                    }
                    end = Err(StreamFailure::from_service_error(&e));
                    break;
                }
            };
            let feed = self.session.message_data(&chunk);
            // Message lines are not replies: metrics do not see them.
            self.driver.collect_unobserved(&mut self.session);
            // Small messages leave with the next reply in one write; large ones go out a
            // chunk at a time, so memory stays at about one chunk. A failed write has told
            // the session its connection is lost.
            if self.driver.queued() >= FLUSH_THRESHOLD
                && self.driver.flush(&mut self.session).await.is_err()
            {
                return true;
            }
            if feed == Feed::Enough {
                break;
            }
        }
        if whole && end.is_ok() {
            let size = reader.size();
            tracing::info!(seq, id = %reader.id(), size, "message picked up");
            self.metrics.message_picked_up(size);
        }
        self.session.message_end(end);
        true
    }
}

/// A login with the mailbox's password taking the maildrop over: ends the driver's wait
/// while the session waits for a command, and refuses input that arrives after it.
struct Takeover {
    /// The maildrop's, once logged in.
    holder: Option<Arc<Holder>>,
    /// The wait ended because input came after the takeover (not the takeover itself).
    refused_input: bool,
}

impl Interrupt for Takeover {
    fn interrupted(&mut self) -> impl std::future::Future<Output = ()> + Send {
        let holder = self.holder.clone();
        if let Some(holder) = &holder {
            holder.mark_idle();
        }
        async move {
            match holder {
                Some(holder) => holder.revoked().await,
                None => std::future::pending().await,
            }
        }
    }

    fn admit_input(&mut self) -> bool {
        let admitted = self.holder.as_ref().is_none_or(|holder| holder.mark_busy());
        self.refused_input = !admitted;
        admitted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn client_that_never_reads_is_disconnected() {
        let (dir, gateway) = crate::service::test_support::gateway();
        let material = crate::tls::load_or_create_self_signed(dir.path(), "gw.test").unwrap();
        let acceptor = crate::tls::acceptor(Arc::new(crate::tls::CertResolver::new(material)));
        let server = Pop3Server::new(
            gateway,
            Pop3Settings {
                host_name: "gw.test".into(),
                preauth_timeout: super::super::DEFAULT_PREAUTH_TIMEOUT,
                pickup: crate::service::PickupPolicy {
                    max_concurrent_unseals: 1,
                    failed_login_delay: Duration::ZERO,
                    lock_takeover: None,
                    trusted_networks: Vec::new(),
                },
            },
            acceptor,
            ConnectionLimits::new(10, 10),
        );
        crate::net::protocol_server::assert_a_client_that_never_reads_is_dropped(
            server,
            b"CAPA\r\n",
        )
        .await;
    }
}
