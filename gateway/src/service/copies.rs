//! What a stored message says about itself: the sealed envelope's attributes and, for
//! proxied copies, the `X-Gateway-*` trace fields before the message. One place for each
//! kind of copy, so the SMTP server, the SMTP proxy and the POP3 proxy cannot drift apart.

use std::net::IpAddr;

use super::messages::{MessageDraft, RetrievalKey, StoredMessage};
use super::trace::{trace_headers, Direction};
use super::{Gateway, ServiceError};
use crate::crypto::Envelope;
use crate::mailbox::MailboxId;

/// Where a proxied copy comes from: the provider's account and server, and the mailbox
/// that keeps the copy.
#[derive(Debug, Clone, Copy)]
pub struct ProxiedCopy<'a> {
    /// The user name at the provider.
    pub remote_user: &'a str,
    /// The upstream server as connected (`host:port`).
    pub server: &'a str,
    pub mailbox: &'a MailboxId,
}

impl ProxiedCopy<'_> {
    /// A retrieved message is the same message when account, server and UIDL are.
    fn retrieval_key(&self, uid: &str) -> RetrievalKey {
        RetrievalKey::new(self.remote_user, self.server, uid)
    }

    fn envelope(&self, direction: Direction) -> Envelope {
        let mut envelope = Envelope::default();
        let attributes = [
            ("direction", direction.as_str()),
            ("remote-user", self.remote_user),
            ("server", self.server),
        ];
        for (key, value) in attributes {
            envelope.attributes.insert(key.into(), value.to_owned());
        }
        envelope
    }
}

impl Gateway {
    /// A journaled message for `recipients` (each must be [`Gateway::accepting`]), as the
    /// SMTP server received it from `client` under our id `smtp_id`.
    pub fn begin_journal(
        &self,
        recipients: &[MailboxId],
        mail_from: &str,
        client: IpAddr,
        smtp_id: &str,
    ) -> Result<MessageDraft, ServiceError> {
        let domain = self.email_domain();
        let mut envelope = Envelope {
            mail_from: mail_from.to_owned(),
            rcpt_to: recipients.iter().map(|id| id.address(&domain)).collect(),
            ..Envelope::default()
        };
        let attributes = [
            ("direction", "journal".to_owned()),
            ("client", client.to_string()),
            ("smtp-id", smtp_id.to_owned()),
        ];
        for (key, value) in attributes {
            envelope.attributes.insert(key.into(), value);
        }
        self.begin_message(recipients, &envelope)
    }

    /// The copy of a message a proxy client at `client` sends through the SMTP proxy, to
    /// the recipients the upstream accepted; the trace fields name the envelope.
    pub fn begin_sent(
        &self,
        origin: ProxiedCopy<'_>,
        client: IpAddr,
        mail_from: &str,
        forward_to: &[String],
    ) -> Result<MessageDraft, ServiceError> {
        let mut envelope = origin.envelope(Direction::Sent);
        envelope.mail_from = mail_from.to_owned();
        envelope.rcpt_to = forward_to.to_vec();
        envelope
            .attributes
            .insert("client".into(), client.to_string());
        let mut draft = self.begin_message(std::slice::from_ref(origin.mailbox), &envelope)?;
        draft.write_trace(&trace_headers(
            Direction::Sent,
            origin.remote_user,
            origin.server,
            Some((mail_from, forward_to)),
        ))?;
        Ok(draft)
    }

    /// Whether the message with UIDL `uid` on the origin's account and server has a copy.
    pub fn retrieved_before(
        &self,
        origin: ProxiedCopy<'_>,
        uid: &str,
    ) -> Result<bool, ServiceError> {
        self.already_retrieved(origin.mailbox, &origin.retrieval_key(uid))
    }

    /// The copy of a message a proxy client retrieves through the POP3 proxy; `uid` is its
    /// UIDL when the upstream gave one. `None` when a copy under that UIDL was stored
    /// before: one copy per message, however often it is retrieved.
    pub fn begin_retrieved(
        &self,
        origin: ProxiedCopy<'_>,
        uid: Option<&str>,
    ) -> Result<Option<MessageDraft>, ServiceError> {
        let key = uid.map(|uid| origin.retrieval_key(uid));
        if let Some(key) = &key {
            if self.already_retrieved(origin.mailbox, key)? {
                return Ok(None);
            }
        }
        let mut envelope = origin.envelope(Direction::Received);
        if let Some(uid) = uid {
            envelope.attributes.insert("uidl".into(), uid.to_owned());
        }
        let mut draft = self.begin_message(std::slice::from_ref(origin.mailbox), &envelope)?;
        if let Some(key) = key {
            draft.once(key);
        }
        draft.write_trace(&trace_headers(
            Direction::Received,
            origin.remote_user,
            origin.server,
            None,
        ))?;
        Ok(Some(draft))
    }

    /// Removes the copies of a message the upstream refused after they were stored: not
    /// sent, so not archived as sent. Failures are logged; the copies then stay.
    pub async fn discard_sent(&self, stored: &[StoredMessage]) {
        for message in stored {
            if let Err(e) = self.remove_messages(&message.mailbox, &[message.seq]).await {
                tracing::error!(error = %e, mailbox = %message.mailbox, "could not remove the copy of a message the upstream refused");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::gateway;
    use super::*;

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    /// Commits `draft` with `body` and reads the stored copy back with the password.
    async fn stored(
        gw: &Gateway,
        id: &MailboxId,
        password: &crate::crypto::MailboxPassword,
        mut draft: MessageDraft,
        body: &[u8],
    ) -> (Envelope, String) {
        draft.write(body).unwrap();
        let _ = gw.commit(draft).await.unwrap();
        let key = gw.unseal(id, password).unwrap();
        let last = gw.list_messages(id).unwrap().pop().expect("a message");
        let (envelope, bytes) = gw.read_message(&key, last.seq).unwrap();
        (envelope, String::from_utf8(bytes).unwrap())
    }

    #[tokio::test]
    async fn a_journaled_copy_names_its_recipients_client_and_id_and_is_stored_as_received() {
        let (_dir, gw) = gateway();
        let created = gw.create_mailbox("m", "").await.unwrap();
        let id = created.info.id.clone();
        let draft = gw
            .begin_journal(std::slice::from_ref(&id), "a@b.example", CLIENT, "Q1")
            .unwrap();
        let (envelope, text) = stored(&gw, &id, &created.password, draft, b"hi\r\n").await;
        assert_eq!(envelope.mail_from, "a@b.example");
        assert_eq!(envelope.rcpt_to, [id.address(&gw.email_domain())]);
        assert_eq!(envelope.attributes["direction"], "journal");
        assert_eq!(envelope.attributes["client"], "127.0.0.1");
        assert_eq!(envelope.attributes["smtp-id"], "Q1");
        assert_eq!(text, "hi\r\n", "no trace fields on journaled mail");
    }

    #[tokio::test]
    async fn a_sent_copy_starts_with_its_trace_fields() {
        let (_dir, gw) = gateway();
        let created = gw.create_mailbox("m", "").await.unwrap();
        let id = created.info.id.clone();
        let origin = ProxiedCopy {
            remote_user: "jdoe",
            server: "smtp.example.com:465",
            mailbox: &id,
        };
        let to = ["x@y.example".to_owned()];
        let draft = gw
            .begin_sent(origin, CLIENT, "jdoe@example.com", &to)
            .unwrap();
        let (envelope, text) = stored(&gw, &id, &created.password, draft, b"hi\r\n").await;
        assert_eq!(envelope.rcpt_to, to);
        assert_eq!(envelope.attributes["direction"], "sent");
        assert_eq!(envelope.attributes["remote-user"], "jdoe");
        assert_eq!(envelope.attributes["server"], "smtp.example.com:465");
        assert_eq!(envelope.attributes["client"], "127.0.0.1");
        assert!(
            text.starts_with("X-Gateway-Direction: sent\r\nX-Gateway-Remote-User: jdoe\r\n"),
            "{text}"
        );
        assert!(
            text.contains("X-Gateway-Envelope-To: <x@y.example>\r\n"),
            "{text}"
        );
        assert!(text.ends_with("\r\nhi\r\n"), "{text}");
    }

    /// One copy per UIDL from the same account and server, however often it is retrieved;
    /// the same UIDL from another server is another message.
    #[tokio::test]
    async fn a_retrieved_copy_is_kept_once_per_uidl() {
        let (_dir, gw) = gateway();
        let created = gw.create_mailbox("m", "").await.unwrap();
        let id = created.info.id.clone();
        let origin = ProxiedCopy {
            remote_user: "jdoe",
            server: "pop.example.com:995",
            mailbox: &id,
        };
        assert!(!gw.retrieved_before(origin, "u1").unwrap());
        let draft = gw
            .begin_retrieved(origin, Some("u1"))
            .unwrap()
            .expect("new");
        let (envelope, text) = stored(&gw, &id, &created.password, draft, b"hi\r\n").await;
        assert_eq!(envelope.attributes["uidl"], "u1");
        assert_eq!(envelope.attributes["direction"], "received");
        assert!(
            text.starts_with("X-Gateway-Direction: received\r\n"),
            "{text}"
        );

        assert!(gw.retrieved_before(origin, "u1").unwrap());
        assert!(gw.begin_retrieved(origin, Some("u1")).unwrap().is_none());
        let elsewhere = ProxiedCopy {
            server: "pop.other.example:995",
            ..origin
        };
        assert!(gw.begin_retrieved(elsewhere, Some("u1")).unwrap().is_some());
        // Without a UIDL nothing identifies the message: every retrieval is kept.
        assert!(gw.begin_retrieved(origin, None).unwrap().is_some());
    }
}
