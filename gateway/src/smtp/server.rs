//! The tokio shell around [`Session`]: moves bytes between a socket and the session, and
//! answers the session's requests with the service layer. Generic over the listener and its
//! stream, so the simulation runs it over turmoil sockets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsAcceptor;

use super::interface::{ClientInfo, CommitFailure, Output, RecipientStatus, SessionConfig};
use super::Session;
use crate::config::SmtpSection;
use crate::crypto::Envelope;
use crate::net::{
    ConnectionLimits, Listener, MaybeTls, ShutdownSignal, TlsMode, HANDSHAKE_TIMEOUT,
};
use crate::service::{Gateway, MessageDraft, ServiceError};
use crate::store::MailboxStatus;

/// How long connections may take to finish after shutdown begins; then they are dropped.
/// Nothing is lost by that: a message is only acknowledged after its commit.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
const READ_BUFFER: usize = 64 * 1024;

/// Everything the SMTP listeners share.
pub struct SmtpServer {
    gateway: Gateway,
    config: Arc<SessionConfig>,
    acceptor: TlsAcceptor,
    limits: ConnectionLimits,
    /// Who may deliver (`[smtp] allowed_networks`).
    access: SmtpSection,
}

impl SmtpServer {
    pub fn new(
        gateway: Gateway,
        config: SessionConfig,
        acceptor: TlsAcceptor,
        limits: ConnectionLimits,
        access: SmtpSection,
    ) -> Arc<Self> {
        Arc::new(Self {
            gateway,
            config: Arc::new(config),
            acceptor,
            limits,
            access,
        })
    }

    /// Accepts connections until shutdown, then waits (bounded) for the open ones to finish.
    pub async fn serve<L: Listener>(
        self: Arc<Self>,
        listener: L,
        mode: TlsMode,
        shutdown: ShutdownSignal,
    ) {
        crate::net::serve_connections(
            listener,
            shutdown,
            SHUTDOWN_GRACE,
            move |stream, peer, signal| {
                let server = self.clone();
                async move { server.handle(stream, peer, mode, signal).await }
            },
        )
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
        let busy = format!(
            "421 4.7.0 {} too many connections, try again later\r\n",
            self.config.host_name
        );
        let Some((stream, _permit)) = crate::net::admit(
            stream,
            peer,
            mode,
            &self.limits,
            &self.acceptor,
            busy.as_bytes(),
        )
        .await
        else {
            return;
        };
        let client = ClientInfo {
            peer: Some(peer.ip()),
            tls: stream.tls_description(),
            allowed: self.access.allows(peer.ip()),
            session_id: session_id(),
        };
        tracing::debug!(%peer, session = %client.session_id, tls = ?client.tls, "SMTP connection");
        let connection = Connection {
            server: self,
            session: Session::new(self.config.clone(), client),
            stream,
            peer,
            draft: None,
            shutdown,
        };
        connection.run().await;
    }
}

fn session_id() -> String {
    let mut bytes = [0u8; 8];
    crate::crypto::fill_random_id(&mut bytes);
    data_encoding::HEXUPPER.encode(&bytes)
}

/// A message being received: the draft, or why there is none (its recipients vanished or
/// the spool failed), which the commit then reports.
enum Draft {
    Open(MessageDraft),
    Failed(ServiceError),
}

struct Connection<'a, S> {
    server: &'a SmtpServer,
    session: Session,
    stream: MaybeTls<S>,
    peer: SocketAddr,
    draft: Option<Draft>,
    shutdown: ShutdownSignal,
}

impl<S> Connection<'_, S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    async fn run(mut self) {
        let mut buffer = vec![0u8; READ_BUFFER];
        let mut pending = Vec::new();
        let mut shutdown_seen = false;
        loop {
            while let Some(output) = self.session.poll() {
                match output {
                    Output::Send(bytes) => pending.extend_from_slice(&bytes),
                    Output::LookupRecipient(id) => {
                        let status = self.recipient_status(&id);
                        self.session.recipient_status(status);
                    }
                    Output::MessageStart(envelope) => self.start_message(envelope),
                    Output::MessageData(bytes) => self.write_message(&bytes),
                    Output::MessageEnd => {
                        let result = self.commit().await;
                        self.session.commit_result(result);
                    }
                    Output::MessageAbort(reason) => {
                        tracing::debug!(peer = %self.peer, ?reason, "message aborted");
                        self.draft = None;
                    }
                    Output::StartTls => {
                        if self.stream.write_pending(&mut pending).await.is_err() {
                            return;
                        }
                        let upgrade = tokio::time::timeout(
                            HANDSHAKE_TIMEOUT,
                            self.stream.upgrade(&self.server.acceptor),
                        )
                        .await;
                        match upgrade {
                            Ok(Ok(())) => {
                                let description = self.stream.tls_description().unwrap_or_default();
                                self.session.tls_established(description);
                            }
                            _ => {
                                tracing::debug!(peer = %self.peer, "STARTTLS handshake failed");
                                return;
                            }
                        }
                    }
                    Output::Close => {
                        let _ = self.stream.write_pending(&mut pending).await;
                        let _ = self.stream.shutdown().await;
                        return;
                    }
                }
            }
            if self.stream.write_pending(&mut pending).await.is_err() {
                self.session.connection_lost();
                continue;
            }
            if self.session.is_closed() {
                return;
            }
            let timeout = self.session.timeout();
            tokio::select! {
                read = tokio::time::timeout(timeout, self.stream.read(&mut buffer)) => match read {
                    Ok(Ok(0)) | Ok(Err(_)) => self.session.connection_lost(),
                    Ok(Ok(n)) => {
                        let now = self.server.gateway.now_utc();
                        self.session.receive(&buffer[..n], now);
                    }
                    Err(_) => self.session.timed_out(),
                },
                _ = self.shutdown.triggered(), if !shutdown_seen => {
                    shutdown_seen = true;
                    self.session.shutdown();
                }
            }
        }
    }

    fn recipient_status(&self, id: &crate::mailbox::MailboxId) -> RecipientStatus {
        match self.server.gateway.mailbox(id) {
            Ok(info) if info.status == MailboxStatus::Active => RecipientStatus::Active,
            Ok(_) => RecipientStatus::Suspended,
            Err(ServiceError::MailboxNotFound(_)) => RecipientStatus::Unknown,
            Err(e) => {
                tracing::error!(error = %e, "mailbox lookup failed");
                RecipientStatus::Unavailable
            }
        }
    }

    fn start_message(&mut self, envelope: super::Envelope) {
        let domain = self.server.gateway.email_domain();
        let mut stored = Envelope {
            mail_from: envelope.mail_from,
            rcpt_to: envelope.rcpt.iter().map(|id| id.address(domain)).collect(),
            ..Envelope::default()
        };
        stored
            .attributes
            .insert("direction".into(), "journal".into());
        stored
            .attributes
            .insert("client".into(), self.peer.ip().to_string());
        stored.attributes.insert("smtp-id".into(), envelope.id);
        self.draft = Some(
            match self.server.gateway.begin_message(&envelope.rcpt, &stored) {
                Ok(draft) => Draft::Open(draft),
                Err(e) => Draft::Failed(e),
            },
        );
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
                    tracing::info!(peer = %self.peer, copies = stored.len(), size = stored.first().map(|m| m.size), "message stored");
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Shutdown;
    use crate::service::test_support::faulty_gateway;
    use crate::store::faults::Fault;
    use tokio::io::{AsyncBufReadExt, BufReader};

    fn session_config() -> SessionConfig {
        SessionConfig {
            host_name: "gw.test".into(),
            email_domain: "archive.example".into(),
            max_message_size: 1024 * 1024,
            max_recipients: 10,
            require_tls: false,
            tls_available: true,
            max_errors: 10,
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
        assert_eq!(gateway.mailbox(&id).unwrap().message_count, 0);
        let replies = send_one(&server, &rcpt).await;
        assert!(accepted(&replies), "{replies:?}");
        assert_eq!(gateway.mailbox(&id).unwrap().message_count, 1);
    }
}
