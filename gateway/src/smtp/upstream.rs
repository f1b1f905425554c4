//! The SMTP proxy's connection to the upstream: the tokio shell around [`UpstreamSmtp`].
//! The SMTP server shell calls it inline, one client command (or pipelined group) at a
//! time, and it answers with the upstream's replies or with the reply the client gets for
//! a failure.

use super::client::{
    AuthPreference, Credentials, Event, UpstreamConfig, UpstreamError, UpstreamSmtp, UpstreamTls,
};
use crate::net::{Driver, Machine as _, Next};
use crate::proxy::connect::{ConnectError, Connector, UpstreamStream, Upstreams};
use crate::proxy::ProxyLogin;
use crate::smtp::interface::{AuthFailure, ProxyCredentials, UpstreamCommand};
use crate::smtp::{EnhancedStatus, Reply};

/// Default upstream ports: submission with STARTTLS, or SMTPS.
pub const SUBMISSION_PORT: u16 = 587;
pub const SMTPS_PORT: u16 = 465;
const READ_BUFFER: usize = 16 * 1024;

/// How a message ended at the upstream.
#[derive(Debug)]
pub enum Verdict {
    Accepted(Reply),
    Rejected(Reply),
    /// The connection failed before a verdict: whether the upstream took the message is
    /// unknown. The reply is for the client.
    Lost(Reply),
}

/// An authenticated upstream connection.
pub struct SmtpLeg<C: Connector> {
    driver: Driver<UpstreamStream<C::Stream>>,
    core: UpstreamSmtp,
    login: ProxyLogin,
    server: String,
}

impl<C: Connector> SmtpLeg<C> {
    /// Connects (TLS only), authenticates with the client's credentials and returns a
    /// connection ready for a transaction.
    pub async fn login(
        upstreams: &Upstreams<C>,
        credentials: &ProxyCredentials,
        implicit_tls: bool,
        ehlo_name: &str,
    ) -> Result<Self, AuthFailure> {
        let login = credentials.login.clone();
        let default_port = if implicit_tls {
            SMTPS_PORT
        } else {
            SUBMISSION_PORT
        };
        let server = login.target(default_port);
        let stream = upstreams
            .open(&login, default_port, implicit_tls)
            .await
            .map_err(|e| connect_failure(&e))?;
        let config = UpstreamConfig {
            ehlo_name: ehlo_name.to_owned(),
            tls: if implicit_tls {
                UpstreamTls::Implicit
            } else {
                UpstreamTls::StartTls
            },
            credentials: Credentials::new(
                login.remote_user.clone(),
                credentials.password.expose().as_str(),
            ),
            auth_preference: AuthPreference::default(),
        };
        // An upstream that takes nothing for the command timeout is as dead as a silent one.
        let driver =
            Driver::new(stream, READ_BUFFER, super::client::COMMAND_TIMEOUT).wiping_writes();
        let core = UpstreamSmtp::new(config, driver.now().instant)
            .map_err(|_| AuthFailure::InvalidLogin)?;
        let mut leg = Self {
            driver,
            core,
            login,
            server,
        };
        match leg.next_event(upstreams).await {
            Event::Ready { .. } => Ok(leg),
            Event::Failed(error) => Err(login_failure(&error, &leg.server)),
            other => Err(login_failure(
                &UpstreamError::Protocol(format!("unexpected {other:?}")),
                &leg.server,
            )),
        }
    }

    pub fn login_name(&self) -> &ProxyLogin {
        &self.login
    }

    /// `host:port` of the upstream, for trace headers and logs.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The upstream offers PIPELINING: the relay may send it groups.
    pub fn pipelining(&self) -> bool {
        self.core.pipelining()
    }

    /// Relays one command, or a group in one write; the replies in order, one per command:
    /// `Ok` is the upstream's reply, `Err` the client's reply for a failed connection
    /// (which is then gone, and nothing follows it).
    pub async fn command(
        &mut self,
        upstreams: &Upstreams<C>,
        command: &UpstreamCommand,
    ) -> Vec<Result<Reply, Reply>> {
        let (started, expected) = match command {
            UpstreamCommand::Mail { from, params } => (self.core.mail(from, params), 1),
            UpstreamCommand::Rcpt(to) => (self.core.rcpt(to), 1),
            UpstreamCommand::Data => (self.core.data(), 1),
            UpstreamCommand::Rset => (self.core.reset(), 1),
            UpstreamCommand::Group {
                from,
                params,
                rcpt,
                data,
            } => (
                self.core.pipeline(from, params, rcpt, *data),
                1 + rcpt.len() + usize::from(*data),
            ),
        };
        if let Err(usage) = started {
            // The parsed command cannot be passed on (e.g. SMTPUTF8 to an upstream without
            // it): refuse it for the client, the upstream never saw it.
            let refusal = Reply::new(
                555,
                EnhancedStatus::new(5, 5, 4),
                format!("cannot pass this on to the upstream server: {usage}"),
            );
            return vec![Ok(refusal); expected];
        }
        let mut replies = Vec::with_capacity(expected);
        while replies.len() < expected {
            let reply = match self.next_event(upstreams).await {
                Event::MailAccepted(reply)
                | Event::MailRejected(reply)
                | Event::RcptResult { reply, .. }
                | Event::DataRejected(reply) => Ok(reply),
                Event::DataReady => Ok(Reply::plain(354, vec!["go ahead".into()])),
                Event::ResetDone => Ok(Reply::new(250, EnhancedStatus::new(2, 0, 0), "Ok")),
                Event::Failed(error) => Err(lost_reply(&error)),
                other => Err(lost_reply(&UpstreamError::Protocol(format!(
                    "unexpected {other:?}"
                )))),
            };
            let lost = reply.is_err();
            replies.push(reply);
            if lost {
                break;
            }
        }
        replies
    }

    /// Passes body bytes on (unstuffed CRLF lines as the SMTP session decodes them; the
    /// core re-stuffs). `Err` is the client's reply when the upstream is gone.
    pub async fn body(&mut self, bytes: &[u8]) -> Result<(), Reply> {
        if self.core.data_chunk(bytes).is_err() {
            return Err(lost_reply(&UpstreamError::ConnectionLost));
        }
        // A failed write tells the core, which then says `Failed`.
        let _ = self.driver.flush(&mut self.core).await;
        while let Some(event) = self.core.poll_event() {
            if let Event::Failed(error) = event {
                return Err(lost_reply(&error));
            }
        }
        Ok(())
    }

    /// Sends the end of data and waits for the upstream's verdict.
    pub async fn finish(&mut self, upstreams: &Upstreams<C>) -> Verdict {
        if self.core.data_end().is_err() {
            return Verdict::Lost(lost_reply(&UpstreamError::ConnectionLost));
        }
        match self.next_event(upstreams).await {
            Event::DataAccepted(reply) => Verdict::Accepted(reply),
            Event::DataRejected(reply) => Verdict::Rejected(reply),
            Event::Failed(error) => Verdict::Lost(lost_reply(&error)),
            other => Verdict::Lost(lost_reply(&UpstreamError::Protocol(format!(
                "unexpected {other:?}"
            )))),
        }
    }

    /// Ends the connection: QUIT when idle; in the middle of a body the connection is
    /// just closed, so the upstream drops the partial message.
    pub async fn close(mut self, upstreams: &Upstreams<C>) {
        let idle = self.core.is_ready();
        self.core.quit();
        if idle {
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                self.next_event(upstreams),
            )
            .await;
        }
        self.driver.shut_down(&mut self.core).await;
    }

    /// Writes what the core wants sent, runs STARTTLS when asked, and reads until the core
    /// has something to say. `Failed` ends it (the core then only says `Closed`).
    async fn next_event(&mut self, upstreams: &Upstreams<C>) -> Event {
        loop {
            match self.driver.next_event(&mut self.core).await {
                Next::Event(Event::StartTls) => {
                    let started = match self.driver.flush(&mut self.core).await {
                        Ok(()) => upstreams
                            .start_tls(self.driver.stream_mut(), &self.login)
                            .await
                            .map_err(|error| error.to_string()),
                        Err(error) => Err(error.to_string()),
                    };
                    match started {
                        Ok(()) => self.core.tls_established(),
                        Err(error) => {
                            tracing::warn!(server = %self.server, %error, "upstream STARTTLS failed");
                            return Event::Failed(UpstreamError::Protocol(error));
                        }
                    }
                }
                Next::Event(Event::Closed) | Next::Closed | Next::Interrupted => {
                    return Event::Failed(UpstreamError::ConnectionLost)
                }
                Next::Event(event) => return event,
            }
        }
    }
}

/// The client's reply for a connection that failed at login.
fn connect_failure(error: &ConnectError) -> AuthFailure {
    tracing::warn!(%error, "upstream connection failed");
    AuthFailure::UpstreamUnavailable(error.client_reason().to_owned())
}

fn login_failure(error: &UpstreamError, server: &str) -> AuthFailure {
    tracing::warn!(%server, %error, "upstream login failed");
    match error {
        UpstreamError::AuthRejected(reply) => AuthFailure::UpstreamRejected(reply.clone()),
        UpstreamError::NoTls => AuthFailure::UpstreamUnavailable(format!(
            "upstream server {server} does not offer STARTTLS; credentials are never sent unencrypted"
        )),
        UpstreamError::ResponseInjection => AuthFailure::UpstreamUnavailable(format!(
            "upstream server {server} sent data in plaintext after STARTTLS (possible attack); refused"
        )),
        UpstreamError::AuthUnavailable => AuthFailure::UpstreamUnavailable(format!(
            "upstream server {server} offers neither AUTH PLAIN nor LOGIN"
        )),
        // The detail (what answered, and how) is in the log only.
        _ => AuthFailure::UpstreamUnavailable(
            "cannot use the upstream server, try again later".into(),
        ),
    }
}

/// The client's reply when the upstream connection fails in a transaction.
pub fn lost_reply(error: &UpstreamError) -> Reply {
    Reply::new(
        451,
        EnhancedStatus::new(4, 4, 2),
        format!("upstream server failed ({error}), try again later"),
    )
}
