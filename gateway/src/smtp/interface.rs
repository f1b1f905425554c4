//! Values exchanged between the session and the shell that drives it.

use std::net::IpAddr;

use super::data::BodyViolation;
use super::reply::Reply;
use crate::crypto::Secret;
use crate::mailbox::MailboxId;
use crate::net::TlsActive;
use crate::proxy::ProxyLogin;
use crate::settings::EmailDomain;

/// Per-listener settings; share one behind an `Arc` among all sessions of a listener.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Our host name: in the greeting, EHLO reply, Received header and 421 replies.
    pub host_name: String,
    /// Recipients must be `<mailbox-id>@<email_domain>` (any letter case). Shared and live:
    /// each RCPT reads the value of that moment.
    pub email_domain: EmailDomain,
    /// Largest accepted message in octets, as received (before our Received header);
    /// advertised as `SIZE`.
    pub max_message_size: u64,
    /// Accepted recipients per transaction; more get `452 4.5.3`.
    pub max_recipients: usize,
    /// Refuse MAIL until TLS is active (`530 5.7.0`).
    pub require_tls: bool,
    /// The shell can perform STARTTLS, so it is advertised.
    pub tls_available: bool,
    /// Protocol errors tolerated before the session says `421` and closes.
    pub max_errors: u32,
    /// Proxy logins are offered: AUTH PLAIN and LOGIN, after TLS only.
    pub proxy: bool,
    /// Where `<postmaster>` and `postmaster@<email_domain>` go, if anywhere.
    pub postmaster: Option<MailboxId>,
    /// How long a client may stay silent before its first MAIL (or successful AUTH): far
    /// shorter than RFC 5321's 5 minutes, so silent connections cannot hold slots.
    pub preauth_timeout: std::time::Duration,
    /// How long one transaction, from MAIL to the reply after its data, may take.
    pub transaction_timeout: std::time::Duration,
}

/// What the shell knows about one connection.
#[derive(Clone, Debug)]
pub struct ClientInfo {
    /// The client's address, for the Received header.
    pub peer: Option<IpAddr>,
    /// Set when TLS is already active (implicit TLS, port 465).
    pub tls: Option<TlsActive>,
    /// The client passed the shell's access list. If not, the greeting is `554 5.7.1` and
    /// every command but QUIT gets `503 5.7.1` (RFC 5321 §3.1).
    pub allowed: bool,
    /// A unique id for this connection chosen by the shell (random in production,
    /// deterministic in simulations); message ids are `<session_id>.<n>`.
    pub session_id: String,
}

/// The envelope of one message, handed to the shell before its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// Our id for the message: in the Received header and in `250 ... queued as <id>`.
    pub id: String,
    /// The reverse path without brackets; empty for `<>`.
    pub mail_from: String,
    /// Accepted recipients, each once, in the order given (journal mode).
    pub rcpt: Vec<MailboxId>,
    /// Proxy mode: the recipients the upstream accepted, as given by the client.
    pub forward_to: Vec<String>,
    /// MAIL carried `BODY=8BITMIME`.
    pub body_8bit: bool,
    /// MAIL carried `SMTPUTF8`.
    pub smtputf8: bool,
    /// MAIL carried `SIZE=n` (the client's estimate).
    pub declared_size: Option<u64>,
}

/// The answer to [`Event::LookupRecipient`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecipientStatus {
    Active,
    Suspended,
    Unknown,
    /// The lookup itself failed (storage error); the client should retry.
    Unavailable,
    /// No new mail is accepted for now: the disk is (nearly) full.
    StorageFull,
}

/// Why the shell could not make a message durable; the session turns it into a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitFailure {
    /// Retry may work (I/O error, writer busy).
    Temporary,
    /// Out of disk or quota.
    StorageFull,
    /// A recipient mailbox was suspended while the message was in flight.
    MailboxSuspended,
    /// Retrying will not help.
    Permanent,
}

/// Why a started message (after [`Event::MessageStart`]) will not be committed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbortReason {
    /// Over `max_message_size`.
    TooBig,
    /// Bare CR/LF or an overlong line.
    Body(BodyViolation),
    /// RSET, HELO/EHLO or QUIT in the middle of a BDAT transaction.
    Reset,
    /// The connection ended or the session closed it.
    Closed,
    /// The shell reported a timeout.
    TimedOut,
}

/// A proxy login from SMTP AUTH.
#[derive(Debug)]
pub struct ProxyCredentials {
    pub login: ProxyLogin,
    pub password: Secret<String>,
}

/// Why a proxy login failed; the session turns it into a reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthFailure {
    /// Not `remote_user%target_server%mailbox_id`, or a differing authorization identity.
    InvalidLogin,
    UnknownMailbox,
    /// No copies may be stored now: temporary.
    MailboxSuspended,
    /// The mailbox lookup failed (storage): temporary.
    Temporary,
    /// The upstream refused the credentials; its reply.
    UpstreamRejected(Reply),
    /// The upstream cannot be used (unreachable, no TLS, bad certificate, not allowed):
    /// the text says why.
    UpstreamUnavailable(String),
    /// Too many failed logins from this client or for this account: nothing was sent
    /// upstream. Temporary.
    Throttled,
}

/// A command for the upstream (from the relay); answered with
/// [`Relay::upstream_reply`](super::Relay::upstream_reply).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpstreamCommand {
    /// `params` holds the MAIL parameters the client gave (SIZE, BODY, SMTPUTF8).
    Mail {
        from: String,
        params: String,
    },
    Rcpt(String),
    Data,
    /// Ends the upstream's transaction; the reply's text does not matter.
    Rset,
    /// A client's pipelined MAIL, its RCPTs and possibly DATA, sent upstream in one write
    /// (RFC 2920) when the upstream offers PIPELINING: answered with a reply for each, in
    /// order.
    Group {
        from: String,
        params: String,
        rcpt: Vec<String>,
        data: bool,
    },
}

/// Everything the session asks of its shell, in order. Replies to the client are not
/// events: they come from `poll_transmit` ([`crate::net::Machine`]), each before the
/// events queued after it, and replies with no event between them leave in one write
/// (RFC 2920).
#[derive(Debug)]
pub enum Event {
    /// Look the mailbox up and answer with [`Session::recipient_status`]. Until then the
    /// session processes no further input.
    ///
    /// [`Session::recipient_status`]: super::Session::recipient_status
    LookupRecipient(MailboxId),
    /// A message begins: open a draft for these recipients.
    MessageStart(Envelope),
    /// The next bytes of the message (our Received header first, then the body exactly as
    /// sent, unstuffed, CRLF line ends). Chunks are at most one input buffer long.
    MessageData(Vec<u8>),
    /// The message is complete: commit it and answer with [`Session::commit_result`] (a
    /// relay: store the copy, send the final dot upstream and answer with
    /// [`Relay::message_relayed`]). Until then no further input is processed.
    ///
    /// [`Session::commit_result`]: super::Session::commit_result
    /// [`Relay::message_relayed`]: super::Relay::message_relayed
    MessageEnd,
    /// Drop the draft: the message will not be committed.
    MessageAbort(AbortReason),
    /// Run the TLS handshake on the connection (after writing the `220` transmitted before
    /// it), then
    /// call [`Session::tls_established`].
    ///
    /// [`Session::tls_established`]: super::Session::tls_established
    StartTls,
    /// Check the mailbox, connect to the upstream over TLS and log in there, then call
    /// [`Session::login_accepted`](super::Session::login_accepted) and drive the relay it
    /// returns, or [`Session::auth_failed`](super::Session::auth_failed).
    ProxyLogin(ProxyCredentials),
    /// From the relay: send this to the upstream and answer with its reply.
    Upstream(UpstreamCommand),
    /// Close the connection after writing everything sent before.
    Close,
}
