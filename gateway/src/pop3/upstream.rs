//! The POP3 proxy's shell: logs into the upstream with the client's credentials, then moves
//! bytes between the client, [`Pop3Proxy`] and the upstream core ([`UpstreamPop3`]), and
//! stores a copy of every message the client retrieves in full.

use tokio::io::{AsyncRead, AsyncWrite};

use super::client::{
    Output as Upstream, UpstreamConfig, UpstreamError, UpstreamPassword, UpstreamPop3, UpstreamTls,
    RESPONSE_TIMEOUT,
};
use super::relay::{Action, Archived, Pop3Proxy};
use crate::net::{Driver, Machine, MaybeTls, Next, ShutdownSignal};
use crate::pop3::response::{Code, Reply};
use crate::proxy::connect::{ConnectError, Connector, UpstreamStream, Upstreams};
use crate::proxy::ProxyLogin;
use crate::service::{Gateway, MessageDraft, ProxiedCopy};

pub const POP3_PORT: u16 = 110;
pub const POP3S_PORT: u16 = 995;
const READ_BUFFER: usize = 16 * 1024;
/// Client bytes the relay lets pile up (a message passing through) before it stops reading
/// the upstream to write them out.
const FLUSH_THRESHOLD: usize = 64 * 1024;

/// An upstream POP3 connection, logged in.
pub struct Pop3Leg<C: Connector> {
    /// A write the upstream accepts nothing of for [`RESPONSE_TIMEOUT`] ends the session,
    /// as its silence does.
    upstream: Driver<UpstreamStream<C::Stream>>,
    core: UpstreamPop3,
    login: ProxyLogin,
    server: String,
}

/// Why the proxy login failed, as the client's reply.
pub fn login_refusal(failure: LoginFailure) -> Reply {
    match failure {
        LoginFailure::UnknownMailbox => {
            Reply::err_code(Code::Auth, "no such mailbox on this gateway")
        }
        LoginFailure::MailboxSuspended => {
            Reply::err_code(Code::SysTemp, "mailbox suspended, try again later")
        }
        LoginFailure::Temporary => Reply::err_code(Code::SysTemp, "temporary failure, try later"),
        LoginFailure::Rejected(text) => {
            Reply::err_code(Code::Auth, format!("upstream server: {text}"))
        }
        LoginFailure::NotNow { code, text } => {
            Reply::err_code(code, format!("upstream server: {text}"))
        }
        LoginFailure::Unavailable(text) => Reply::err_code(Code::SysTemp, text),
        LoginFailure::Throttled => {
            Reply::err_code(Code::SysTemp, "too many failed logins, try later")
        }
    }
}

/// Why a proxy login failed.
#[derive(Debug)]
pub enum LoginFailure {
    UnknownMailbox,
    MailboxSuspended,
    Temporary,
    /// The upstream refused the credentials (its text).
    Rejected(String),
    /// The upstream refused the login for another reason than the credentials (RFC 2449
    /// `IN-USE`, `LOGIN-DELAY`; RFC 3206 `SYS/TEMP`, `SYS/PERM`): not a password guess, so
    /// the login throttle does not count it. Its code is relayed.
    NotNow {
        code: Code,
        text: String,
    },
    /// The upstream cannot be used; the text says why.
    Unavailable(String),
    /// Too many failed logins from this client or for this account: nothing was sent
    /// upstream.
    Throttled,
}

impl<C: Connector> Pop3Leg<C> {
    /// Connects (implicit TLS, or STLS), logs in with the client's credentials.
    pub async fn login(
        upstreams: &Upstreams<C>,
        login: ProxyLogin,
        password: UpstreamPassword,
        implicit_tls: bool,
    ) -> Result<Self, LoginFailure> {
        let default_port = if implicit_tls { POP3S_PORT } else { POP3_PORT };
        let server = login.target(default_port);
        let stream = upstreams
            .open(&login, default_port, implicit_tls)
            .await
            .map_err(|e| unavailable(&e))?;
        let tls = if implicit_tls {
            UpstreamTls::Implicit
        } else {
            UpstreamTls::Stls
        };
        let upstream = Driver::new(stream, READ_BUFFER, RESPONSE_TIMEOUT).wiping_writes();
        let core = UpstreamPop3::new(
            UpstreamConfig::new(tls, login.remote_user.clone(), password),
            upstream.now().instant,
        );
        let mut leg = Self {
            upstream,
            core,
            login,
            server,
        };
        loop {
            match leg.upstream.next_event(&mut leg.core).await {
                Next::Event(Upstream::StartTls) => {
                    // Nothing is queued after STLS; flushed anyway so no byte can follow
                    // the handshake out of order. A failed write has closed the core.
                    let _ = leg.upstream.flush(&mut leg.core).await;
                    match upstreams
                        .start_tls(leg.upstream.stream_mut(), &leg.login)
                        .await
                    {
                        Ok(()) => leg.core.tls_established(),
                        Err(e) => return Err(unavailable(&e)),
                    }
                }
                Next::Event(Upstream::LoggedIn { .. }) => return Ok(leg),
                Next::Event(Upstream::Failed(error)) => {
                    return Err(login_failure(&error, &leg.server))
                }
                Next::Event(Upstream::Close) | Next::Closed | Next::Interrupted => {
                    return Err(login_failure(&UpstreamError::Closed, &leg.server))
                }
                Next::Event(other) => {
                    let error = UpstreamError::Protocol(format!("unexpected {other:?}"));
                    return Err(login_failure(&error, &leg.server));
                }
            }
        }
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    /// Relays the session until either side ends it. `input` is what the client pipelined
    /// behind its login.
    pub async fn relay<S>(
        mut self,
        gateway: &Gateway,
        metrics: &crate::metrics::ListenerMetrics,
        client: &mut MaybeTls<S>,
        input: &[u8],
        shutdown: ShutdownSignal,
        client_stall: std::time::Duration,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut client = Driver::new(client, READ_BUFFER, client_stall).with_shutdown(shutdown);
        let mut proxy = Pop3Proxy::new(input, client.now().instant);
        let mut copy = RetrievedCopy::None;
        loop {
            // Both waits are cancel-safe: whichever side has something first is served,
            // and the other resumes where it was (a half-written reply included).
            // The proxy's actions first, as they come: the upstream waits while it has any.
            let side = tokio::select! {
                biased;
                next = client.next_event(&mut proxy) => Side::Client(next),
                next = self.upstream.next_event(&mut self.core), if !self.core.is_closed() => {
                    Side::Upstream(next)
                }
            };
            match side {
                Side::Client(Next::Event(action)) => match action {
                    Action::Upstream(request) => {
                        if self.core.command(request).is_err() {
                            proxy.upstream(Upstream::Failed(UpstreamError::Closed));
                        }
                    }
                    Action::StoreBegin { uid } => copy = self.begin_copy(gateway, uid),
                    Action::StoreData(bytes) => copy.write(&bytes),
                    Action::StoreEnd => {
                        // The message goes to the client while the copy is committed; only
                        // its terminator waits for the copy. A failed write has told the
                        // proxy the client is gone.
                        let _ = client.flush(&mut proxy).await;
                        let archived = std::mem::replace(&mut copy, RetrievedCopy::None)
                            .commit(gateway, metrics)
                            .await;
                        proxy.stored(archived);
                    }
                    Action::StoreAbort => copy = RetrievedCopy::None,
                    Action::IsArchived { uid } => {
                        proxy.archived(self.is_archived(gateway, &uid));
                    }
                    Action::Close => {
                        // The client's last reply first, whatever the upstream does.
                        let _ = client.flush(&mut proxy).await;
                        // No QUIT unless the client sent one (the core already did):
                        // a client that just disappears must not delete anything.
                        self.upstream.shut_down(&mut self.core).await;
                        client.shut_down(&mut proxy).await;
                        return;
                    }
                },
                // The proxy's Close came first and returned above.
                Side::Client(Next::Closed | Next::Interrupted) => return,
                Side::Upstream(Next::Event(output)) => {
                    proxy.upstream(output);
                    // A message from a fast upstream to a slow client: write it out before
                    // reading on, so it never piles up here.
                    client.collect(&mut proxy);
                    if client.queued() >= FLUSH_THRESHOLD {
                        let _ = client.flush(&mut proxy).await;
                    }
                }
                // Its Close has reached the proxy, which closes too.
                Side::Upstream(Next::Closed | Next::Interrupted) => {}
            }
        }
    }

    /// Whether the archive holds the message with this UIDL (from this user and server).
    /// A failed look-up answers no: the message is then fetched and stored again.
    fn is_archived(&self, gateway: &Gateway, uid: &str) -> bool {
        gateway
            .retrieved_before(self.origin(), uid)
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "POP3 proxy: checking for an earlier copy failed");
                false
            })
    }

    /// The account, server and mailbox every copy of this session names.
    fn origin(&self) -> ProxiedCopy<'_> {
        ProxiedCopy {
            remote_user: &self.login.remote_user,
            server: &self.server,
            mailbox: &self.login.mailbox,
        }
    }

    fn begin_copy(&self, gateway: &Gateway, uid: Option<String>) -> RetrievedCopy {
        match gateway.begin_retrieved(self.origin(), uid.as_deref()) {
            Ok(Some(draft)) => RetrievedCopy::Open(draft),
            Ok(None) => RetrievedCopy::Duplicate,
            Err(e) => {
                tracing::warn!(error = %e, mailbox = %self.login.mailbox, "POP3 proxy: cannot store a copy");
                RetrievedCopy::Failed
            }
        }
    }
}

/// Which driver had something for the relay.
enum Side {
    Client(Next<Action>),
    Upstream(Next<Upstream>),
}

/// The copy of the message being retrieved.
enum RetrievedCopy {
    None,
    Open(MessageDraft),
    /// Stored before: nothing to do.
    Duplicate,
    Failed,
}

impl RetrievedCopy {
    fn write(&mut self, bytes: &[u8]) {
        if let RetrievedCopy::Open(draft) = self {
            if let Err(e) = draft.write(bytes) {
                tracing::warn!(error = %e, "POP3 proxy: the copy failed");
                *self = RetrievedCopy::Failed;
            }
        }
    }

    /// How the message is safely archived, or `None` if it is not.
    async fn commit(
        self,
        gateway: &Gateway,
        metrics: &crate::metrics::ListenerMetrics,
    ) -> Option<Archived> {
        match self {
            RetrievedCopy::Duplicate => Some(Archived::Before),
            RetrievedCopy::None | RetrievedCopy::Failed => None,
            RetrievedCopy::Open(draft) => match gateway.commit(draft).await {
                Ok((stored, durable)) => {
                    for message in &stored {
                        tracing::info!(
                            mailbox = %message.mailbox,
                            id = %message.id,
                            size = message.size,
                            "POP3 proxy: retrieved message stored"
                        );
                    }
                    metrics.message_received(
                        crate::metrics::Mode::ProxyReceived,
                        stored.first().map_or(0, |m| m.size),
                    );
                    Some(Archived::Now(durable))
                }
                Err(e) => {
                    tracing::error!(error = %e, "POP3 proxy: storing a retrieved message failed");
                    None
                }
            },
        }
    }
}

fn unavailable(error: &ConnectError) -> LoginFailure {
    tracing::warn!(%error, "upstream POP3 connection failed");
    LoginFailure::Unavailable(error.client_reason().to_owned())
}

fn login_failure(error: &UpstreamError, server: &str) -> LoginFailure {
    tracing::warn!(%server, %error, "upstream POP3 login failed");
    match error {
        UpstreamError::AuthRejected(response) => {
            let text = response.text().to_owned();
            match response.code().map(str::to_ascii_uppercase).as_deref() {
                Some("IN-USE") => LoginFailure::NotNow {
                    code: Code::InUse,
                    text,
                },
                Some("SYS/TEMP" | "LOGIN-DELAY") => LoginFailure::NotNow {
                    code: Code::SysTemp,
                    text,
                },
                Some("SYS/PERM") => LoginFailure::NotNow {
                    code: Code::SysPerm,
                    text,
                },
                _ => LoginFailure::Rejected(text),
            }
        }
        UpstreamError::NoTls => LoginFailure::Unavailable(format!(
            "upstream server {server} does not offer STLS; credentials are never sent unencrypted"
        )),
        // The detail (what answered, and how) is in the log only.
        _ => LoginFailure::Unavailable("cannot use the upstream server, try again later".into()),
    }
}
