//! The tokio shell around the POP3 [`Session`]: logins (throttled, with a bounded number of
//! concurrent Argon2id unseals), the exclusive maildrop lock, streaming decryption of
//! messages, and the UPDATE commit. Generic over listener and stream like the SMTP shell.
//!
//! ## A lock held by a connection that cannot be answered
//!
//! The maildrop lock lives as long as the session that took it. A client that vanished
//! without a FIN or RST (a partition, a crashed host) would keep it, and every later login
//! would get `[IN-USE]`, until the autologout timer. RFC 1939 §3 sets that timer to at
//! least 10 minutes, so it is not shortened while logged in (the session keeps its
//! autologout at [`MIN_IDLE_TIMEOUT`](super::MIN_IDLE_TIMEOUT)). Two things release the
//! lock sooner without breaking that rule:
//!
//! - TCP keepalive on every accepted connection (`[limits] tcp_keepalive_secs`, 60 s, then
//!   6 probes 10 s apart): the kernel notices a peer that no longer answers about two
//!   minutes after it went silent, the read fails, and the session ends as any lost
//!   connection does.
//! - Takeover (`[pop3] lock_takeover_secs`, 60 s): a login that proves the mailbox
//!   password while the lock's session has waited that long for a command, with nothing
//!   of one received, ends that session (`-ERR [IN-USE]`, then close) and takes the lock.
//!   This is not an autologout: the session is ended because the mailbox's owner logged
//!   in again, which is what an archiver reconnecting after a partition does. A session
//!   that is streaming, committing (UPDATE after QUIT) or has input waiting is never taken
//!   over, and input that arrives after the takeover is not run.
//!
//! Either way the old session ends without UPDATE, so nothing it marked is deleted (RFC
//! 1939 §6: only QUIT in TRANSACTION deletes). A client that stops reading is dropped by
//! the write timeout. Before login the short `[limits] preauth_timeout_secs` applies; no
//! lock is held then.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument as _;

use super::guard::{LoginGuard, MaildropLock, MaildropLocks};
use super::response::Reply;
use super::{
    Action, AuthFailure, CommitFailure, Feed, Maildrop, Output, Session, SessionConfig,
    StreamFailure,
};
use crate::config::IpNetwork;
use crate::crypto::{MailboxPassword, UnsealedKey};
use crate::mailbox::MailboxId;
use crate::metrics::{ListenerMetrics, LoginKind, OpenSession};
use crate::net::{
    ConnectionLimits, ConnectionPermit, Listener, MaybeTls, ShutdownSignal, TlsMode,
    HANDSHAKE_TIMEOUT,
};
use crate::proxy::pop3_client::UpstreamPassword;
use crate::proxy::pop3_leg::{login_refusal, LoginFailure, Pop3Leg};
use crate::proxy::{Connector, ProxyLogin, TcpConnector, Upstreams};
use crate::service::{Gateway, MessageReader, ServiceError};

/// How long a login may wait for an unseal slot before it is told to come back later.
const UNSEAL_QUEUE_TIMEOUT: Duration = Duration::from_secs(30);
const READ_BUFFER: usize = 16 * 1024;
/// The refusal when every slot this client may take is in use.
const BUSY: &str = "too many connections, try again later";
/// Pending output that is written out in the middle of a message.
const FLUSH_THRESHOLD: usize = 64 * 1024;

/// POP3 settings from the configuration.
#[derive(Debug, Clone)]
pub struct Pop3Settings {
    pub host_name: String,
    /// Argon2id derivations allowed at once (each takes ~19 MiB and a core for ~15 ms).
    pub max_concurrent_unseals: usize,
    /// Pause before answering a failed login.
    pub failed_login_delay: Duration,
    /// The archiver's networks (`[pop3] trusted_networks`): never throttled.
    pub trusted_networks: Vec<IpNetwork>,
    /// Run Argon2id unseals on tokio's blocking threads and open the next message on one while
    /// the client reads the current one. The simulation turns this off (blocking threads stall
    /// simulated time): unseals then run on the session's task and nothing is prefetched.
    pub blocking_threads: bool,
    /// Silence allowed before login (see [`SessionConfig::preauth_timeout`]).
    pub preauth_timeout: Duration,
    /// A login with the right password takes the maildrop over from a session that has
    /// waited this long for a command (see the module documentation); `None`: never.
    pub lock_takeover: Option<Duration>,
}

/// Everything the POP3 listeners share.
pub struct Pop3Server<C: Connector = TcpConnector> {
    /// Proxy mode's way to the upstreams; `None` when proxy logins are off.
    upstreams: Option<Arc<Upstreams<C>>>,
    gateway: Gateway,
    settings: Pop3Settings,
    acceptor: TlsAcceptor,
    limits: ConnectionLimits,
    unseals: Semaphore,
    /// One more password check slot that only trusted clients may take, so a flood of
    /// guesses filling `unseals` cannot make the archiver's login time out.
    trusted_unseals: Semaphore,
    guard: LoginGuard,
    locks: Arc<MaildropLocks>,
    holders: Arc<Holders>,
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
            unseals: Semaphore::new(settings.max_concurrent_unseals.max(1)),
            trusted_unseals: Semaphore::new(1),
            guard: LoginGuard::new(settings.trusted_networks.clone()),
            gateway,
            settings,
            acceptor,
            limits,
            locks: Arc::new(MaildropLocks::default()),
            holders: Arc::default(),
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
        let attempt = guard.admit(peer.ip(), &login).map_err(|throttled| {
            tracing::warn!(%peer, user = %login.remote_user, server = %login.host, retry_after = ?throttled.retry_after, "POP3 proxy login refused: too many failed logins");
            self.gateway.metrics().login_throttled(LoginKind::Pop3Proxy);
            LoginFailure::Throttled
        })?;
        tokio::time::sleep(attempt.wait).await;
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

    /// Accepts connections until shutdown, then waits (bounded) for the open ones to finish.
    /// The listener is named `pop3` (STLS) or `pop3s` (implicit TLS) in metrics and logs.
    pub async fn serve<L: Listener>(
        self: Arc<Self>,
        listener: L,
        mode: TlsMode,
        shutdown: ShutdownSignal,
    ) {
        self.serve_as(default_listener_name(mode), listener, mode, shutdown)
            .await;
    }

    /// [`Self::serve`] for the listener `name`.
    pub async fn serve_as<L: Listener>(
        self: Arc<Self>,
        name: &'static str,
        listener: L,
        mode: TlsMode,
        shutdown: ShutdownSignal,
    ) {
        let metrics = self.gateway.metrics().listener(name);
        crate::net::serve_connections(listener, shutdown, move |stream, peer, signal| {
            let server = self.clone();
            let metrics = metrics.clone();
            async move { server.handle_as(&metrics, stream, peer, mode, signal).await }
        })
        .await;
    }

    /// Runs one connection to its end.
    pub async fn handle<S>(
        &self,
        stream: S,
        peer: SocketAddr,
        mode: TlsMode,
        shutdown: ShutdownSignal,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let metrics = self.gateway.metrics().listener(default_listener_name(mode));
        self.handle_as(&metrics, stream, peer, mode, shutdown).await;
    }

    /// Runs one connection of the listener `metrics` counts for to its end, inside a
    /// `session` span that puts the session's id, listener and client on every log line.
    pub async fn handle_as<S>(
        &self,
        metrics: &ListenerMetrics,
        stream: S,
        peer: SocketAddr,
        mode: TlsMode,
        shutdown: ShutdownSignal,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let span = crate::net::session_span(&crate::net::session_id(), metrics.name(), peer);
        self.connection(metrics, stream, peer, mode, shutdown)
            .instrument(span)
            .await;
    }

    async fn connection<S>(
        &self,
        metrics: &ListenerMetrics,
        stream: S,
        peer: SocketAddr,
        mode: TlsMode,
        shutdown: ShutdownSignal,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let busy = format!("-ERR [SYS/TEMP] {BUSY}\r\n");
        let Some((stream, permit)) = crate::net::admit(
            stream,
            peer,
            mode,
            &self.limits,
            &self.acceptor,
            busy.as_bytes(),
            metrics,
        )
        .await
        else {
            return;
        };
        let open = metrics.session_opened();
        let tls = stream.tls_active();
        if let Some(tls) = &tls {
            tracing::Span::current().record("tls", tls.description());
        }
        tracing::debug!("POP3 connection");
        let mut config = SessionConfig::new(self.settings.host_name.clone(), tls, true);
        config.proxy = self.upstreams.as_ref().is_some_and(|u| u.enabled());
        config.preauth_timeout = self.settings.preauth_timeout;
        let connection = Connection {
            server: self,
            metrics: metrics.clone(),
            _open: open,
            session: Session::new(config),
            stream,
            peer,
            shutdown,
            login: None,
            prefetch: None,
            implicit_tls: mode == TlsMode::Implicit,
            permit,
        };
        connection.run().await;
    }

    /// Checks the password and takes the maildrop. Every attempt is counted against its
    /// client as it starts (trusted clients excepted); every failure that could be a guess
    /// is answered after the failure delay, plus the mailbox's delay when it is under attack.
    async fn login(
        &self,
        peer: IpAddr,
        mailbox: Option<MailboxId>,
        password: Option<MailboxPassword>,
    ) -> Result<(LoggedIn, Maildrop), AuthFailure> {
        let attempt = match self.guard.admit(peer) {
            Ok(attempt) => attempt,
            Err(throttled) => {
                tracing::warn!(%peer, retry_after = ?throttled.retry_after, "POP3 login refused: too many failed logins from this client");
                self.gateway.metrics().login_throttled(LoginKind::Pop3);
                return Err(AuthFailure::RateLimited);
            }
        };
        if !attempt.wait.is_zero() {
            tokio::time::sleep(attempt.wait).await;
        }
        let (Some(mailbox), Some(password)) = (mailbox, password) else {
            self.gateway.metrics().login_failed(LoginKind::Pop3);
            let extra = self.guard.failed(attempt, None);
            return Err(self.failed(extra, AuthFailure::WrongCredentials).await);
        };
        let unsealed = self.unseal(&mailbox, password, attempt.is_trusted()).await;
        let key = match unsealed {
            Ok(key) => key,
            Err(e) => {
                let failure = AuthFailure::from_service_error(&e);
                if failure.counts_as_failed_login() {
                    tracing::info!(%peer, "POP3 login failed");
                    self.gateway.metrics().login_failed(LoginKind::Pop3);
                    // Only existing mailboxes are counted, so made-up ids add no keys.
                    let existing = matches!(e, ServiceError::WrongPassword(_));
                    let extra = self.guard.failed(attempt, existing.then_some(&mailbox));
                    return Err(self.failed(extra, failure).await);
                }
                self.guard.not_checked(attempt);
                tracing::error!(%peer, error = %e, "POP3 login could not be checked");
                return Err(failure);
            }
        };
        self.guard.succeeded(attempt, &mailbox);
        let lock = match self.locks.try_lock(&mailbox) {
            Some(lock) => lock,
            None => self
                .take_over(&mailbox, peer)
                .await
                .ok_or(AuthFailure::Locked)?,
        };
        let holder = self.holders.register(&mailbox);
        let messages = self.gateway.list_messages(&mailbox).map_err(|e| {
            tracing::error!(error = %e, "listing the maildrop failed");
            AuthFailure::from_service_error(&e)
        })?;
        tracing::Span::current().record("mailbox", tracing::field::display(&mailbox));
        tracing::info!(%peer, %mailbox, messages = messages.len(), "POP3 login");
        let seqs = messages.iter().map(|m| m.seq).collect();
        let maildrop = Maildrop::unsealed(&key, messages);
        let logged_in = LoggedIn {
            mailbox,
            key: Arc::new(key),
            _lock: lock,
            holder,
            seqs,
        };
        Ok((logged_in, maildrop))
    }

    /// The maildrop is locked: if its session has waited for a command for at least
    /// `lock_takeover`, end it and take its lock. Only reached with the right password.
    async fn take_over(&self, mailbox: &MailboxId, peer: IpAddr) -> Option<MaildropLock> {
        let threshold = self.settings.lock_takeover?;
        let holder = self.holders.get(mailbox)?;
        let released = holder.released.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        let idle = holder.revoke_if_idle(threshold)?;
        tracing::info!(%peer, %mailbox, idle_secs = idle.as_secs(), "POP3 login takes the maildrop over from an idle session");
        // The old session ends at its next turn and releases the lock as it goes.
        if tokio::time::timeout(TAKEOVER_WAIT, released).await.is_err() {
            tracing::warn!(%mailbox, "the session taken over did not end in time");
        }
        self.locks.try_lock(mailbox)
    }

    /// Answers a failed login after the failure delay and `extra`.
    async fn failed(&self, extra: Duration, failure: AuthFailure) -> AuthFailure {
        tokio::time::sleep(self.settings.failed_login_delay + extra).await;
        failure
    }

    /// Argon2id off the async workers (on the task itself without blocking threads), at most
    /// `max_concurrent_unseals` at once.
    async fn unseal(
        &self,
        mailbox: &MailboxId,
        password: MailboxPassword,
        trusted: bool,
    ) -> Result<UnsealedKey, ServiceError> {
        let acquire = async {
            tokio::select! {
                permit = self.unseals.acquire() => permit,
                permit = self.trusted_unseals.acquire(), if trusted => permit,
            }
        };
        let permit = tokio::time::timeout(UNSEAL_QUEUE_TIMEOUT, acquire)
            .await
            .map_err(|_| ServiceError::Unavailable("too many logins in progress"))?
            .map_err(|_| ServiceError::Unavailable("shutting down"))?;
        if !self.settings.blocking_threads {
            let result = self.gateway.unseal(mailbox, &password);
            drop(permit);
            return result;
        }
        let gateway = self.gateway.clone();
        let mailbox = mailbox.clone();
        let result = tokio::task::spawn_blocking(move || gateway.unseal(&mailbox, &password))
            .await
            .map_err(|_| ServiceError::Unavailable("login task failed"))?;
        drop(permit);
        result
    }
}

/// Sessions holding a maildrop lock, for taking over from one that waits for a command.
#[derive(Default)]
struct Holders {
    by_mailbox: std::sync::Mutex<std::collections::HashMap<MailboxId, Arc<Holder>>>,
}

/// How long a login that took a maildrop over waits for the old session to end.
const TAKEOVER_WAIT: Duration = Duration::from_secs(5);

/// One lock-holding session, as seen by a login that finds the maildrop locked.
#[derive(Default)]
struct Holder {
    state: std::sync::Mutex<HolderState>,
    /// The session must end (a takeover).
    revoked: tokio::sync::Notify,
    /// The session ended and its lock is free.
    released: tokio::sync::Notify,
}

#[derive(Default)]
enum HolderState {
    #[default]
    Busy,
    /// Waiting for a command since then.
    Idle(tokio::time::Instant),
    Revoked,
}

impl Holders {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<MailboxId, Arc<Holder>>> {
        self.by_mailbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn register(self: &Arc<Self>, mailbox: &MailboxId) -> HolderEntry {
        let holder = Arc::new(Holder::default());
        self.lock().insert(mailbox.clone(), holder.clone());
        HolderEntry {
            holders: self.clone(),
            mailbox: mailbox.clone(),
            holder,
        }
    }

    fn get(&self, mailbox: &MailboxId) -> Option<Arc<Holder>> {
        self.lock().get(mailbox).cloned()
    }
}

impl Holder {
    fn state(&self) -> std::sync::MutexGuard<'_, HolderState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The session waits for a command (keeps the earlier start if it already did).
    fn mark_idle(&self) {
        let mut state = self.state();
        if matches!(*state, HolderState::Busy) {
            *state = HolderState::Idle(tokio::time::Instant::now());
        }
    }

    /// Input arrived; false when the session was taken over first (the input must not run).
    fn mark_busy(&self) -> bool {
        let mut state = self.state();
        if matches!(*state, HolderState::Revoked) {
            return false;
        }
        *state = HolderState::Busy;
        true
    }

    /// Revokes the session if it has waited for a command for `threshold`; how long it had.
    fn revoke_if_idle(&self, threshold: Duration) -> Option<Duration> {
        let mut state = self.state();
        let HolderState::Idle(since) = *state else {
            return None;
        };
        let idle = since.elapsed();
        if idle < threshold {
            return None;
        }
        *state = HolderState::Revoked;
        self.revoked.notify_one();
        Some(idle)
    }
}

/// A session's registration as the maildrop's holder; removed when the session ends.
struct HolderEntry {
    holders: Arc<Holders>,
    mailbox: MailboxId,
    holder: Arc<Holder>,
}

impl Drop for HolderEntry {
    fn drop(&mut self) {
        let mut map = self.holders.lock();
        if map
            .get(&self.mailbox)
            .is_some_and(|current| Arc::ptr_eq(current, &self.holder))
        {
            map.remove(&self.mailbox);
        }
        drop(map);
        self.holder.released.notify_waiters();
    }
}

/// A logged-in session's secrets and lock; dropped (key zeroized, lock released) when the
/// connection ends on any path.
struct LoggedIn {
    mailbox: MailboxId,
    key: Arc<UnsealedKey>,
    /// Declared before `holder`: fields drop in order, so the lock is free when a login
    /// waiting to take over hears of the release.
    _lock: MaildropLock,
    holder: HolderEntry,
    /// The maildrop's messages in order, for prefetching the one after a RETR.
    seqs: Vec<u64>,
}

/// A message opened ahead of its RETR (key decapsulation and envelope done on a blocking
/// thread while the client is busy with the previous one).
type Prefetch = (
    u64,
    tokio::task::JoinHandle<Result<MessageReader, ServiceError>>,
);

/// How [`Pop3Server::serve`] names a listener it was not told the name of.
fn default_listener_name(mode: TlsMode) -> &'static str {
    match mode {
        TlsMode::StartTls => "pop3",
        TlsMode::Implicit => "pop3s",
    }
}

/// A session's id for its log lines: random, so lines of different sessions never mix.
struct Connection<'a, S, C: Connector> {
    server: &'a Pop3Server<C>,
    metrics: ListenerMetrics,
    /// Counts the connection as open while it lives.
    _open: OpenSession,
    session: Session,
    stream: MaybeTls<S>,
    peer: SocketAddr,
    shutdown: ShutdownSignal,
    login: Option<LoggedIn>,
    prefetch: Option<Prefetch>,
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
        let stall = self.server.limits.write_timeout();
        let mut buffer = vec![0u8; READ_BUFFER];
        let mut pending = Vec::new();
        let mut shutdown_seen = false;
        loop {
            while let Some(output) = self.session.poll() {
                match output {
                    Output::Send(bytes) => {
                        // Replies only: message lines go out in `stream_message`.
                        self.metrics.count_pop3_replies(&bytes);
                        pending.extend_from_slice(&bytes);
                    }
                    Output::Action(action) => {
                        if !self.act(action, &mut pending).await {
                            let _ = self.stream.write_pending(&mut pending, stall).await;
                            crate::net::shutdown_within(&mut self.stream, stall).await;
                            // Release the slot and the maildrop lock before lingering.
                            self.login = None;
                            crate::net::linger(&mut self.stream).await;
                            return;
                        }
                    }
                }
            }
            if let Err(e) = self.stream.write_pending(&mut pending, stall).await {
                tracing::debug!(peer = %self.peer, error = %e, "POP3 client write failed");
                self.session.connection_lost();
                continue;
            }
            if self.session.is_closed() {
                return;
            }
            let wants_input = self.session.wants_input();
            // Logged in and waiting for a command: a new login may take the maildrop over.
            let idle_holder = self
                .login
                .as_ref()
                .filter(|_| self.session.waits_for_command())
                .map(|login| login.holder.holder.clone());
            if let Some(holder) = &idle_holder {
                holder.mark_idle();
            }
            let revoked = async {
                match &idle_holder {
                    Some(holder) => holder.revoked.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                read = self.stream.read(&mut buffer), if wants_input => {
                    if idle_holder.as_ref().is_some_and(|holder| !holder.mark_busy()) {
                        self.session.taken_over();
                        continue;
                    }
                    match read {
                        Ok(0) | Err(_) => self.session.connection_lost(),
                        Ok(n) => {
                            let credentials = self.session.may_receive_credentials();
                            self.session.receive(&buffer[..n]);
                            if credentials {
                                // The read may have carried PASS or AUTH: no copy stays behind.
                                zeroize::Zeroize::zeroize(&mut buffer[..n]);
                            }
                        }
                    }
                },
                _ = revoked => {
                    tracing::info!(peer = %self.peer, "POP3 session taken over by a new login");
                    self.session.taken_over();
                }
                _ = tokio::time::sleep(self.session.timeout()) => self.session.timed_out(),
                _ = self.shutdown.triggered(), if !shutdown_seen => {
                    shutdown_seen = true;
                    self.session.shutdown();
                }
            }
        }
    }

    /// Carries out one action; false when the connection must end now.
    async fn act(&mut self, action: Action, pending: &mut Vec<u8>) -> bool {
        let stall = self.server.limits.write_timeout();
        match action {
            Action::StartTls => {
                if self.stream.write_pending(pending, stall).await.is_err() {
                    return false;
                }
                let upgrade = tokio::time::timeout(
                    HANDSHAKE_TIMEOUT,
                    self.stream.upgrade(&self.server.acceptor),
                )
                .await;
                self.metrics.tls_handshake(matches!(upgrade, Ok(Ok(()))));
                // A finished handshake gives the proof the session needs.
                let active = match upgrade {
                    Ok(Ok(())) => self.stream.tls_active(),
                    _ => None,
                };
                let Some(tls) = active else {
                    tracing::debug!(peer = %self.peer, "STLS handshake failed");
                    return false;
                };
                tracing::Span::current().record("tls", tls.description());
                self.session.tls_established(tls);
            }
            Action::Authenticate { mailbox, password } => {
                let result = self
                    .server
                    .login(self.peer.ip(), Some(mailbox), Some(password))
                    .await;
                let result = result.map(|(logged_in, maildrop)| {
                    self.login = Some(logged_in);
                    maildrop
                });
                if result.is_ok() {
                    // From now on this address may use the slots kept for pick-up.
                    self.server.limits.remember_pickup(self.peer.ip());
                }
                self.session.auth_result(result);
            }
            Action::RejectLogin => {
                // No mailbox or password: the same count and delay as a wrong password.
                let failure = match self.server.login(self.peer.ip(), None, None).await {
                    Ok(_) => AuthFailure::WrongCredentials,
                    Err(failure) => failure,
                };
                self.session.auth_result(Err(failure));
            }
            Action::StreamMessage { seq, top_lines } => {
                return self.stream_message(seq, top_lines.is_none(), pending).await
            }
            Action::Commit { delete } => {
                let Some(login) = &self.login else {
                    self.session.commit_result(Err(CommitFailure::Permanent));
                    return true;
                };
                let result = self
                    .server
                    .gateway
                    .delete_messages(&login.mailbox, &delete)
                    .await;
                if let Err(e) = &result {
                    tracing::error!(mailbox = %login.mailbox, error = %e, "POP3 UPDATE failed");
                } else {
                    tracing::info!(mailbox = %login.mailbox, deleted = delete.len(), "POP3 UPDATE");
                }
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
                        while let Some(Output::Send(bytes)) = self.session.poll() {
                            pending.extend_from_slice(&bytes);
                        }
                        if self.stream.write_pending(pending, stall).await.is_err() {
                            return false;
                        }
                        let input = self.session.take_input();
                        leg.relay(
                            &self.server.gateway,
                            &self.metrics,
                            &mut self.stream,
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
    async fn stream_message(&mut self, seq: u64, whole: bool, pending: &mut Vec<u8>) -> bool {
        let Some(login) = &self.login else {
            self.session.message_end(Err(StreamFailure::Temporary));
            return true;
        };
        let opened = match self.prefetch.take() {
            Some((prefetched, handle)) if prefetched == seq => match handle.await {
                Ok(result) => result,
                Err(_) => self.server.gateway.open_message(&login.key, seq),
            },
            _ => self.server.gateway.open_message(&login.key, seq),
        };
        let mut reader = match opened {
            Ok(reader) => reader,
            Err(e) => {
                // A damaged message was logged and counted by the service already.
                if !e.is_damaged_message() {
                    tracing::error!(mailbox = %login.mailbox, seq, error = %e, "opening a message failed");
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
                        tracing::error!(mailbox = %login.mailbox, seq, error = %e, "reading a message failed");
                    }
                    end = Err(StreamFailure::from_service_error(&e));
                    break;
                }
            };
            let feed = self.session.message_data(&chunk);
            while let Some(Output::Send(bytes)) = self.session.poll() {
                pending.extend_from_slice(&bytes);
            }
            // Small messages leave with the next reply in one write; large ones go out a
            // chunk at a time, so memory stays at about one chunk.
            if pending.len() >= FLUSH_THRESHOLD
                && self
                    .stream
                    .write_pending(pending, self.server.limits.write_timeout())
                    .await
                    .is_err()
            {
                self.session.connection_lost();
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
        self.prefetch_after(seq);
        true
    }

    /// Archivers fetch messages in order: open the next one while this one travels.
    fn prefetch_after(&mut self, seq: u64) {
        let Some(login) = &self.login else { return };
        if !self.server.settings.blocking_threads {
            return;
        }
        let Some(next) = login.seqs.iter().skip_while(|s| **s != seq).nth(1).copied() else {
            return;
        };
        let gateway = self.server.gateway.clone();
        let key = login.key.clone();
        let handle = tokio::task::spawn_blocking(move || gateway.open_message(&key, next));
        self.prefetch = Some((next, handle));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Shutdown;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn client_that_never_reads_is_disconnected() {
        let (dir, gateway) = crate::service::test_support::gateway();
        let material = crate::tls::load_or_create_self_signed(dir.path(), "gw.test").unwrap();
        let acceptor = crate::tls::acceptor(Arc::new(crate::tls::CertResolver::new(material)));
        let server = Pop3Server::new(
            gateway,
            Pop3Settings {
                host_name: "gw.test".into(),
                max_concurrent_unseals: 1,
                failed_login_delay: Duration::ZERO,
                blocking_threads: false,
                preauth_timeout: super::super::DEFAULT_PREAUTH_TIMEOUT,
                lock_takeover: None,
                trusted_networks: Vec::new(),
            },
            acceptor,
            ConnectionLimits::new(10, 10),
        );
        let (client, server_side) = tokio::io::duplex(4096);
        let peer: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        let shutdown = Shutdown::new();
        let signal = shutdown.signal();
        let task = tokio::spawn(async move {
            server
                .handle(server_side, peer, TlsMode::StartTls, signal)
                .await
        });
        let (_read, mut write) = tokio::io::split(client);
        let burst = b"CAPA\r\n".repeat(1000);
        tokio::spawn(async move { while write.write_all(&burst).await.is_ok() {} });
        tokio::time::timeout(Duration::from_secs(3600), task)
            .await
            .expect("the connection is dropped once its writes stall")
            .unwrap();
    }

    use crate::service::test_support;
    use crate::tls::{load_or_create_self_signed, CertResolver};
    use tokio::time::Instant;

    const WRONG: &str = "AAAA-BBBB-CCCC-DDDD";

    struct Fixture {
        _dirs: (tempfile::TempDir, tempfile::TempDir),
        server: Arc<Pop3Server>,
        mailbox: MailboxId,
        password: String,
    }

    /// A server without blocking threads (they would stall paused time) and one mailbox;
    /// time is paused once it exists.
    async fn fixture(trusted: &[&str]) -> Fixture {
        let (data, gateway) = test_support::gateway();
        let created = gateway.create_mailbox("archive", "").await.unwrap();
        let tls = tempfile::tempdir().unwrap();
        let material = load_or_create_self_signed(tls.path(), "mail.example.com").unwrap();
        let server = Pop3Server::new(
            gateway,
            Pop3Settings {
                host_name: "mail.example.com".into(),
                max_concurrent_unseals: 2,
                failed_login_delay: Duration::from_secs(2),
                trusted_networks: trusted.iter().map(|n| n.parse().unwrap()).collect(),
                blocking_threads: false,
                preauth_timeout: super::super::DEFAULT_PREAUTH_TIMEOUT,
                lock_takeover: None,
            },
            crate::tls::acceptor(Arc::new(CertResolver::new(material))),
            ConnectionLimits::new(64, 16),
        );
        tokio::time::pause();
        Fixture {
            _dirs: (data, tls),
            server,
            mailbox: created.info.id,
            password: created.password.reveal_for_display().to_string(),
        }
    }

    impl Fixture {
        async fn login(&self, from: &str, password: &str) -> Result<(), AuthFailure> {
            let password = MailboxPassword::from_user_input(password);
            self.server
                .login(
                    from.parse().unwrap(),
                    Some(self.mailbox.clone()),
                    Some(password),
                )
                .await
                .map(drop)
        }
    }

    #[tokio::test]
    async fn correct_password_is_never_refused_after_others_failed() {
        let f = fixture(&[]).await;
        // Many clients, each well within its own allowance, fail against the mailbox
        // (before the fix, 30 such failures walled the mailbox off for everyone).
        for n in 0..200u32 {
            let from = format!("203.0.{}.{}", n / 100, n % 100 + 1);
            for _ in 0..3 {
                let result = f.login(&from, WRONG).await;
                assert_eq!(result, Err(AuthFailure::WrongCredentials));
            }
        }
        // The archiver, from its own address, gets in at once.
        let started = Instant::now();
        assert_eq!(f.login("192.0.2.10", &f.password).await, Ok(()));
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test]
    async fn failures_against_a_mailbox_delay_failed_answers_within_a_bound() {
        let f = fixture(&[]).await;
        let mut longest = Duration::ZERO;
        for n in 0..100u32 {
            let started = Instant::now();
            let result = f.login(&format!("203.0.113.{}", n + 1), WRONG).await;
            assert_eq!(result, Err(AuthFailure::WrongCredentials));
            longest = longest.max(started.elapsed());
        }
        // The failure delay plus the mailbox's cap (timers round up to a millisecond).
        let bound = Duration::from_secs(2) + super::super::guard::MAX_MAILBOX_DELAY;
        assert!(
            longest >= bound && longest < bound + Duration::from_secs(1),
            "{longest:?}"
        );
    }

    #[tokio::test]
    async fn a_client_is_throttled_by_its_own_failures_per_64() {
        let f = fixture(&[]).await;
        let mut refused = false;
        for n in 0..30u32 {
            // Every address of one /64.
            match f.login(&format!("2001:db8:5:5::{:x}", n + 1), WRONG).await {
                Err(AuthFailure::WrongCredentials) => {}
                Err(AuthFailure::RateLimited) => refused = true,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(refused);
        // Even the right password waits its turn from there...
        assert_eq!(
            f.login("2001:db8:5:5::99", &f.password).await,
            Err(AuthFailure::RateLimited)
        );
        // ...but not from another /64.
        assert_eq!(f.login("2001:db8:5:6::1", &f.password).await, Ok(()));
    }

    #[tokio::test]
    async fn parallel_guesses_are_counted_when_they_start() {
        let f = fixture(&[]).await;
        let mut guesses = tokio::task::JoinSet::new();
        for _ in 0..40 {
            let (server, mailbox) = (f.server.clone(), f.mailbox.clone());
            guesses.spawn(async move {
                let password = MailboxPassword::from_user_input(WRONG);
                let from = "198.51.100.7".parse().unwrap();
                server
                    .login(from, Some(mailbox), Some(password))
                    .await
                    .map(drop)
            });
        }
        let results = guesses.join_all().await;
        let checked = results
            .iter()
            .filter(|r| **r == Err(AuthFailure::WrongCredentials))
            .count();
        let refused = results
            .iter()
            .filter(|r| **r == Err(AuthFailure::RateLimited))
            .count();
        assert_eq!(checked + refused, 40);
        // Before the fix all 40 were checked: none had failed yet when each began.
        assert!(checked <= 10, "{checked} parallel guesses were checked");
    }

    #[tokio::test]
    async fn trusted_networks_are_exempt_from_throttling() {
        let f = fixture(&["192.0.2.0/28"]).await;
        for _ in 0..50 {
            assert_eq!(
                f.login("192.0.2.3", WRONG).await,
                Err(AuthFailure::WrongCredentials)
            );
        }
        let started = Instant::now();
        assert_eq!(f.login("192.0.2.3", &f.password).await, Ok(()));
        assert_eq!(started.elapsed(), Duration::ZERO);
        // An untrusted neighbour doing the same is refused.
        for _ in 0..50 {
            let _ = f.login("192.0.2.99", WRONG).await;
        }
        assert_eq!(
            f.login("192.0.2.99", &f.password).await,
            Err(AuthFailure::RateLimited)
        );
    }
}
