//! What the clients observed during a run (the ledger) and the rules checked against it and
//! against the store left on the disk after the run.
//!
//! The rules, from issue #6:
//! - every message acknowledged with 250 is retrievable exactly as sent (the archiver took
//!   it out in a completed UPDATE, or it is still in the store);
//! - nothing half-received is ever retrievable: whatever POP3 or the store hands out is,
//!   after the gateway's `Received:` header, byte for byte a message a sender sent completely;
//! - a POP3 session that never reached UPDATE deleted nothing;
//! - a message deleted in a completed UPDATE never comes back (and an UPDATE whose answer was
//!   lost deleted all of its messages or none);
//! - the gateway never panics and always comes back after a restart;
//! - once the faults are over, every message is accepted and the mailboxes can be emptied.
//!
//! And for proxy mode (a stored copy is the gateway's `X-Gateway-*` lines, then exactly the
//! message):
//! - no 250 without a durable copy: every message a proxy client got 250 for has a copy
//!   (archived or in the store after the final power cut), and the upstream took exactly it;
//! - nothing goes upstream without a durable copy: every message the upstream took (even one
//!   whose 250 was lost) has a copy;
//! - a message the upstream refused after the dot leaves no copy: there are never more
//!   copies of a message than attempts of it that were not refused after their dot;
//! - copies are never half-received (as above). Duplicates are allowed: a client that got
//!   no answer retries, and the gateway keeps the copy of every attempt whose outcome it
//!   could not know.
//!
//! And for the POP3 proxy (a message in an upstream maildrop, identified by its label and
//! retrieved through the gateway; its copy is the gateway's `X-Gateway-*` lines, then
//! exactly the message):
//! - no `.` before durable: every message whose RETR the client saw complete (final `.`
//!   received, bytes exact) has a copy, archived by the archiver's final drain or left in
//!   the store after the final power cut;
//! - one copy per UIDL: never more than one copy of an upstream message in the mailbox
//!   (distinct gateway UIDLs in the store and handed out by the archiver), however often
//!   and in however many sessions it was retrieved. Crash windows count the same: a copy
//!   committed whose `.` was lost (the client cut off, the gateway crashed or lost power
//!   after the commit) is allowed, and the retrieval that follows must find it and store
//!   nothing; a commit cut by the power either happened whole (copy and its one-copy
//!   record) or not at all;
//! - copies are never half-received, and only of messages the client asked for (RETR,
//!   TOP or DELE);
//! - the upstream deletes a message only after a client marked it with DELE and then sent
//!   QUIT, and only once a copy of it is archived.

use std::collections::{BTreeMap, BTreeSet};

/// What a sender knows about one of its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Delivery {
    /// The final dot never left the sender.
    NotSent,
    /// Refused after the data (4xx/5xx).
    Refused,
    /// The dot left but no reply came back: stored or not, both are allowed.
    Unknown,
    /// 250 after the data.
    Acked,
}

/// One message a sender wants delivered.
#[derive(Debug, Clone)]
pub struct Sent {
    pub label: String,
    /// Exactly the message bytes (unstuffed), as they must come back.
    pub body: Vec<u8>,
    /// Mailbox indexes.
    pub rcpts: Vec<usize>,
    /// The best outcome over all attempts.
    pub delivery: Delivery,
    /// Submitted through the SMTP proxy (else journaled).
    pub proxy: bool,
    /// Proxy mode: attempts that may have left a copy (the dot went out, and the upstream's
    /// refusal did not come back). Each leaves at most one, so more copies than this means
    /// a refused attempt's copy stayed.
    pub copies_allowed: u32,
}

/// How a POP3 session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// No maildrop (connection failed, login refused, mailbox in use).
    NoLogin,
    /// Logged in, but the connection ended before QUIT was sent: must delete nothing.
    NoUpdate,
    /// QUIT sent, no answer: the UPDATE happened entirely or not at all.
    QuitUnanswered,
    /// `-ERR` to QUIT: the UPDATE's commit failed. After a failed sync nobody knows whether
    /// it is durable (the written pages stay readable, as Linux keeps them after a failed
    /// fsync), so this too is all or nothing; RFC 1939 only says "some deleted messages not
    /// removed".
    UpdateFailed,
    /// `+OK` to QUIT: the marked messages are gone for good.
    Completed,
}

/// One archiver session.
#[derive(Debug, Clone)]
pub struct Pop3Session {
    pub mailbox: usize,
    /// UIDLs at login, in order; `None` when the listing never arrived whole (the session
    /// was cut before or during UIDL's answer), which says nothing about the maildrop: an
    /// empty listing would read as "everything is gone".
    pub listing: Option<Vec<String>>,
    /// UIDLs marked with DELE (acknowledged with +OK).
    pub deleted: Vec<String>,
    pub end: SessionEnd,
}

/// A message in an upstream maildrop (POP3 proxy mode), and what became of it.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub user: String,
    pub uidl: String,
    /// The mailbox of the client's login: where its copy goes.
    pub mailbox: usize,
    /// Exactly the message.
    pub body: Vec<u8>,
    /// The client sent RETR, TOP or DELE for it: only then may the gateway fetch it.
    pub asked: bool,
    /// RETRs the client saw complete: the final `.` arrived and the bytes were exact.
    pub completed: u32,
    /// A client session marked it with DELE (answered `+OK`) and then sent QUIT.
    pub dele_then_quit: bool,
    /// The upstream removed it in an UPDATE.
    pub deleted_upstream: bool,
}

/// Everything the clients saw.
#[derive(Debug, Default)]
pub struct Ledger {
    pub sent: BTreeMap<String, Sent>,
    pub sessions: Vec<Pop3Session>,
    /// (mailbox, uidl) → the retrieved bytes (every retrieval of it must be the same).
    pub retrieved: BTreeMap<(usize, String), Vec<u8>>,
    /// Proxy mode: label → every message body the upstream took for it.
    pub upstream: BTreeMap<String, Vec<Vec<u8>>>,
    /// POP3 proxy mode: label → the upstream message.
    pub maildrop: BTreeMap<String, Fetched>,
    /// Problems the clients saw directly (a retrieval that differed from an earlier one, a
    /// sender that could not deliver after the faults ended).
    pub problems: Vec<String>,
}

/// A mailbox's content in the store after the run: UIDL → message bytes.
pub type FinalMailbox = BTreeMap<String, Vec<u8>>;

/// Strips the gateway's own `Received:` field (with its folded lines) from a stored message.
pub fn without_received(message: &[u8]) -> Option<&[u8]> {
    if !message.starts_with(b"Received:") {
        return None;
    }
    let mut rest = message;
    let mut first = true;
    loop {
        let at_continuation = rest.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !first && !at_continuation {
            return Some(rest);
        }
        first = false;
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        rest = &rest[end + 2..];
    }
}

/// Strips the gateway's `X-Gateway-*` trace lines from a proxied copy.
pub fn without_trace_lines(message: &[u8]) -> Option<&[u8]> {
    if !message.starts_with(b"X-Gateway-") {
        return None;
    }
    let mut rest = message;
    while rest.starts_with(b"X-Gateway-") {
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        rest = &rest[end + 2..];
    }
    Some(rest)
}

/// The message in a stored copy, with whether it is a proxied one (`X-Gateway-*` lines) or
/// a journaled one (`Received:`).
pub fn message_of(stored: &[u8]) -> Option<(bool, &[u8])> {
    without_received(stored)
        .map(|m| (false, m))
        .or_else(|| without_trace_lines(stored).map(|m| (true, m)))
}

/// The scenario's label of a message: its first header field, `X-Sim-Label: <label>`.
pub fn label_of(body: &[u8]) -> Option<String> {
    let line = body.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    line.strip_prefix("X-Sim-Label: ").map(str::to_owned)
}

impl Ledger {
    /// The message a retrieved or stored copy must be: its label if the copy is exactly a
    /// completely sent message for this mailbox, else the reason it is not.
    fn identify(&self, mailbox: usize, stored: &[u8]) -> Result<String, String> {
        let (proxied, body) = message_of(stored)
            .ok_or("lacks the gateway's Received: header or X-Gateway-* lines")?;
        let label = label_of(body).ok_or("carries no label: not a message any sender sent")?;
        if let Some(fetched) = self.maildrop.get(&label) {
            return Self::identify_fetched(mailbox, proxied, body, label, fetched);
        }
        let sent = self
            .sent
            .get(&label)
            .ok_or_else(|| format!("label {label} was never sent"))?;
        if body != sent.body.as_slice() {
            return Err(format!(
                "{label} differs from what was sent ({} bytes stored, {} sent): half-received or altered",
                body.len(),
                sent.body.len()
            ));
        }
        if sent.delivery == Delivery::NotSent {
            return Err(format!("{label} is stored although its data never ended"));
        }
        if proxied != sent.proxy {
            return Err(format!(
                "{label} is stored as {} but was {}",
                if proxied {
                    "a proxied copy"
                } else {
                    "journaled"
                },
                if sent.proxy { "proxied" } else { "journaled" }
            ));
        }
        if !sent.rcpts.contains(&mailbox) {
            return Err(format!(
                "{label} landed in mailbox {mailbox}, not a recipient"
            ));
        }
        Ok(label)
    }

    /// [`Self::identify`] for a copy of an upstream message retrieved through the POP3 proxy.
    fn identify_fetched(
        mailbox: usize,
        proxied: bool,
        body: &[u8],
        label: String,
        fetched: &Fetched,
    ) -> Result<String, String> {
        if body != fetched.body.as_slice() {
            return Err(format!(
                "{label} differs from the upstream's message ({} bytes stored, {} upstream): half-received or altered",
                body.len(),
                fetched.body.len()
            ));
        }
        if !proxied {
            return Err(format!(
                "{label} is stored as journaled but came through the POP3 proxy"
            ));
        }
        if mailbox != fetched.mailbox {
            return Err(format!(
                "{label} landed in mailbox {mailbox}, not the login's {}",
                fetched.mailbox
            ));
        }
        if !fetched.asked {
            return Err(format!(
                "{label} was copied although the client never asked for it"
            ));
        }
        Ok(label)
    }

    /// Checks every rule; returns the violations (empty when the run is clean).
    pub fn check(&self, final_store: &[FinalMailbox]) -> Vec<String> {
        let mut violations = self.problems.clone();

        // Nothing retrievable that was not completely sent, over POP3 or in the store.
        for ((mailbox, uidl), bytes) in &self.retrieved {
            if let Err(why) = self.identify(*mailbox, bytes) {
                violations.push(format!(
                    "POP3 handed out {uidl} in mailbox {mailbox}: {why}"
                ));
            }
        }
        for (mailbox, messages) in final_store.iter().enumerate() {
            for (uidl, bytes) in messages {
                if let Err(why) = self.identify(mailbox, bytes) {
                    violations.push(format!("store holds {uidl} in mailbox {mailbox}: {why}"));
                }
            }
        }

        // Sessions in order per mailbox, with the store as the last listing. A session whose
        // listing never arrived is left out: it marked nothing (DELE comes after the listing)
        // and never sent QUIT, and it saw nothing to compare with.
        let mut per_mailbox: BTreeMap<usize, Vec<(&Pop3Session, &[String])>> = BTreeMap::new();
        for session in &self.sessions {
            if session.end == SessionEnd::NoLogin {
                continue;
            }
            match &session.listing {
                Some(listing) => per_mailbox
                    .entry(session.mailbox)
                    .or_default()
                    .push((session, listing)),
                None if !session.deleted.is_empty() || session.end != SessionEnd::NoUpdate => {
                    violations.push(format!(
                        "mailbox {}: the archiver marked or quit without a listing (a simulator bug)",
                        session.mailbox
                    ));
                }
                None => {}
            }
        }
        let mut taken: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
        for (mailbox, sessions) in &per_mailbox {
            let store: BTreeSet<&String> = final_store
                .get(*mailbox)
                .map(|m| m.keys().collect())
                .unwrap_or_default();
            for (i, (session, listing)) in sessions.iter().enumerate() {
                let next: BTreeSet<&String> = match sessions.get(i + 1) {
                    Some((_, next)) => next.iter().collect(),
                    None => store.clone(),
                };
                let deleted: BTreeSet<&String> = session.deleted.iter().collect();
                let kept: Vec<&String> = listing.iter().filter(|u| !deleted.contains(u)).collect();
                for uidl in &kept {
                    if !next.contains(uidl) {
                        violations.push(format!(
                            "mailbox {mailbox}: {uidl} vanished although no UPDATE deleted it"
                        ));
                    }
                }
                match session.end {
                    SessionEnd::NoUpdate => {
                        for uidl in &deleted {
                            if !next.contains(uidl) {
                                violations.push(format!(
                                    "mailbox {mailbox}: {uidl} deleted by a session that never reached UPDATE"
                                ));
                            }
                        }
                    }
                    SessionEnd::QuitUnanswered | SessionEnd::UpdateFailed => {
                        let gone = deleted.iter().filter(|u| !next.contains(**u)).count();
                        if gone != 0 && gone != deleted.len() {
                            violations.push(format!(
                                "mailbox {mailbox}: an UPDATE deleted {gone} of its {} messages",
                                deleted.len()
                            ));
                        }
                        if gone == deleted.len() {
                            taken
                                .entry(*mailbox)
                                .or_default()
                                .extend(deleted.iter().map(|u| (*u).clone()));
                        }
                    }
                    SessionEnd::Completed => {
                        // Gone now and in every later listing and the store.
                        for later in sessions[i + 1..]
                            .iter()
                            .map(|(_, listing)| listing.iter().collect::<BTreeSet<_>>())
                            .chain(std::iter::once(store.clone()))
                        {
                            for uidl in &deleted {
                                if later.contains(uidl) {
                                    violations.push(format!(
                                        "mailbox {mailbox}: {uidl} came back after a completed UPDATE"
                                    ));
                                }
                            }
                        }
                        taken
                            .entry(*mailbox)
                            .or_default()
                            .extend(deleted.iter().map(|u| (*u).clone()));
                    }
                    SessionEnd::NoLogin => {}
                }
            }
        }

        // Whether a copy of the message is retrievable: taken out by the archiver, or still in
        // the store.
        let archived = |label: &str, mailbox: usize| {
            let in_store = final_store.get(mailbox).is_some_and(|m| {
                m.values()
                    .any(|bytes| self.identify(mailbox, bytes).ok().as_deref() == Some(label))
            });
            let archived = taken.get(&mailbox).is_some_and(|uidls| {
                uidls.iter().any(|uidl| {
                    self.retrieved
                        .get(&(mailbox, uidl.clone()))
                        .and_then(|bytes| self.identify(mailbox, bytes).ok())
                        .as_deref()
                        == Some(label)
                })
            });
            in_store || archived
        };
        // A copy anywhere: in the store or handed out by POP3 (taken or not).
        let copied = |label: &str, mailbox: usize| {
            final_store.get(mailbox).is_some_and(|m| {
                m.values()
                    .any(|bytes| self.identify(mailbox, bytes).ok().as_deref() == Some(label))
            }) || self.retrieved.iter().any(|((m, _), bytes)| {
                *m == mailbox && self.identify(mailbox, bytes).ok().as_deref() == Some(label)
            })
        };

        // Distinct copies (by UIDL) in the store or handed out by POP3.
        let copy_count = |label: &str, mailbox: usize| {
            let mut uidls = BTreeSet::new();
            if let Some(m) = final_store.get(mailbox) {
                for (uidl, bytes) in m {
                    if self.identify(mailbox, bytes).ok().as_deref() == Some(label) {
                        uidls.insert(uidl.clone());
                    }
                }
            }
            for ((m, uidl), bytes) in &self.retrieved {
                if *m == mailbox && self.identify(mailbox, bytes).ok().as_deref() == Some(label) {
                    uidls.insert(uidl.clone());
                }
            }
            uidls.len()
        };

        for sent in self.sent.values() {
            let label = sent.label.as_str();
            for &mailbox in &sent.rcpts {
                if sent.delivery == Delivery::Acked && !archived(label, mailbox) {
                    violations.push(if sent.proxy {
                        format!("proxy: {label} got 250 but has no durable copy in mailbox {mailbox}")
                    } else {
                        format!("{label} was acknowledged with 250 but is not retrievable from mailbox {mailbox}")
                    });
                }
                if !sent.proxy {
                    continue;
                }
                let took = self.upstream.get(label);
                if took.is_some() && !archived(label, mailbox) {
                    violations.push(format!(
                        "proxy: the upstream took {label} but no copy is archived in mailbox {mailbox}"
                    ));
                }
                if sent.delivery == Delivery::Refused && copied(label, mailbox) {
                    violations.push(format!(
                        "proxy: every attempt of {label} was refused by the upstream, yet a copy is archived in mailbox {mailbox}"
                    ));
                }
                let copies = copy_count(label, mailbox);
                if copies > sent.copies_allowed as usize {
                    violations.push(format!(
                        "proxy: {copies} copies of {label} in mailbox {mailbox}, but only {} attempts were not refused: a refused attempt's copy stayed",
                        sent.copies_allowed
                    ));
                }
            }
            if sent.proxy {
                let took = self.upstream.get(label);
                if sent.delivery == Delivery::Acked && took.is_none() {
                    violations.push(format!(
                        "proxy: {label} got 250 but the upstream never took it"
                    ));
                }
                if took.is_some_and(|bodies| bodies.iter().any(|b| *b != sent.body)) {
                    violations.push(format!("proxy: the upstream took {label} altered"));
                }
            }
        }
        for (label, fetched) in &self.maildrop {
            let (mailbox, uidl) = (fetched.mailbox, &fetched.uidl);
            if fetched.completed > 0 && !archived(label, mailbox) {
                violations.push(format!(
                    "pop3 proxy: {label} (UIDL {uidl}) reached the client whole but has no durable copy in mailbox {mailbox}: its final `.` came before the copy was durable"
                ));
            }
            let copies = copy_count(label, mailbox);
            if copies > 1 {
                violations.push(format!(
                    "pop3 proxy: {copies} copies of {label} (UIDL {uidl}) in mailbox {mailbox}: one copy per UIDL, however often it is retrieved"
                ));
            }
            if fetched.deleted_upstream && !fetched.dele_then_quit {
                violations.push(format!(
                    "pop3 proxy: the upstream deleted {label} (UIDL {uidl}) although no client sent DELE and then QUIT"
                ));
            }
            if fetched.deleted_upstream && !archived(label, mailbox) {
                violations.push(format!(
                    "pop3 proxy: the upstream deleted {label} (UIDL {uidl}) but no copy is archived in mailbox {mailbox}"
                ));
            }
        }
        violations
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger_with(label: &str, delivery: Delivery) -> Ledger {
        let mut ledger = Ledger::default();
        ledger.sent.insert(
            label.into(),
            Sent {
                label: label.into(),
                body: format!("X-Sim-Label: {label}\r\n\r\nhello\r\n").into_bytes(),
                rcpts: vec![0],
                delivery,
                proxy: false,
                copies_allowed: 0,
            },
        );
        ledger
    }

    fn stored(body: &str) -> Vec<u8> {
        format!("Received: from c ([10.0.0.1])\r\n\tby gw with ESMTP id X;\r\n\tdate\r\n{body}")
            .into_bytes()
    }

    #[test]
    fn an_acknowledged_message_missing_everywhere_is_a_violation() {
        let ledger = ledger_with("s0-m0", Delivery::Acked);
        let v = ledger.check(&[FinalMailbox::new()]);
        assert!(v.iter().any(|v| v.contains("acknowledged")), "{v:?}");
        let mut store = FinalMailbox::new();
        store.insert("u1".into(), stored("X-Sim-Label: s0-m0\r\n\r\nhello\r\n"));
        assert!(ledger.check(&[store]).is_empty());
    }

    #[test]
    fn a_truncated_copy_is_a_violation() {
        let ledger = ledger_with("s0-m0", Delivery::Unknown);
        let mut store = FinalMailbox::new();
        store.insert("u1".into(), stored("X-Sim-Label: s0-m0\r\n\r\nhel"));
        let v = ledger.check(&[store]);
        assert!(v.iter().any(|v| v.contains("half-received")), "{v:?}");
    }

    #[test]
    fn deletions_without_update_and_resurrections_are_violations() {
        let mut ledger = ledger_with("s0-m0", Delivery::Acked);
        ledger.sessions.push(Pop3Session {
            mailbox: 0,
            listing: Some(vec!["u1".into()]),
            deleted: vec!["u1".into()],
            end: SessionEnd::NoUpdate,
        });
        let v = ledger.check(&[FinalMailbox::new()]);
        assert!(
            v.iter().any(|v| v.contains("never reached UPDATE")),
            "{v:?}"
        );

        ledger.sessions[0].end = SessionEnd::Completed;
        ledger.retrieved.insert(
            (0, "u1".into()),
            stored("X-Sim-Label: s0-m0\r\n\r\nhello\r\n"),
        );
        assert!(ledger.check(&[FinalMailbox::new()]).is_empty());
        let mut store = FinalMailbox::new();
        store.insert("u1".into(), stored("X-Sim-Label: s0-m0\r\n\r\nhello\r\n"));
        let v = ledger.check(&[store]);
        assert!(v.iter().any(|v| v.contains("came back")), "{v:?}");
    }

    /// Seed 202416066124139 (network): a session marks u1 and is cut before QUIT; the next
    /// logs in and is cut by a partition before its listing arrives; the last one lists u1
    /// again. The cut session's missing listing is no evidence that u1 went away.
    #[test]
    fn a_session_cut_before_its_listing_is_no_evidence_of_a_deletion() {
        let mut ledger = ledger_with("s0-m0", Delivery::Acked);
        let message = stored("X-Sim-Label: s0-m0\r\n\r\nhello\r\n");
        ledger.retrieved.insert((0, "u1".into()), message.clone());
        let session = |listing: Option<Vec<String>>, deleted: &[&str], end| Pop3Session {
            mailbox: 0,
            listing,
            deleted: deleted.iter().map(|u| (*u).to_owned()).collect(),
            end,
        };
        ledger.sessions = vec![
            session(Some(vec!["u1".into()]), &["u1"], SessionEnd::NoUpdate),
            session(None, &[], SessionEnd::NoUpdate),
            session(Some(vec!["u1".into()]), &["u1"], SessionEnd::Completed),
        ];
        let v = ledger.check(&[FinalMailbox::new()]);
        assert!(v.is_empty(), "{v:?}");

        // Still caught: the message really gone after the session that never reached UPDATE.
        ledger.sessions[2] = session(Some(vec![]), &[], SessionEnd::Completed);
        let v = ledger.check(&[FinalMailbox::new()]);
        assert!(
            v.iter().any(|v| v.contains("never reached UPDATE")),
            "{v:?}"
        );
        // And as the last word, the store.
        ledger.sessions.truncate(2);
        let v = ledger.check(&[FinalMailbox::new()]);
        assert!(
            v.iter().any(|v| v.contains("never reached UPDATE")),
            "{v:?}"
        );
        let mut store = FinalMailbox::new();
        store.insert("u1".into(), message);
        assert!(ledger.check(&[store]).is_empty());
    }

    fn proxied(body: &str) -> Vec<u8> {
        format!("X-Gateway-Direction: sent\r\nX-Gateway-Server: upstream:587\r\n{body}")
            .into_bytes()
    }

    fn proxy_ledger(delivery: Delivery) -> Ledger {
        let mut ledger = ledger_with("p0-m0", delivery);
        ledger.sent.get_mut("p0-m0").unwrap().proxy = true;
        ledger
    }

    #[test]
    fn a_proxied_250_needs_a_copy_and_the_upstreams_acceptance() {
        let mut ledger = proxy_ledger(Delivery::Acked);
        ledger.sent.get_mut("p0-m0").unwrap().copies_allowed = 1;
        let mut store = FinalMailbox::new();
        store.insert("u1".into(), proxied("X-Sim-Label: p0-m0\r\n\r\nhello\r\n"));
        let v = ledger.check(std::slice::from_ref(&store));
        assert!(v.iter().any(|v| v.contains("never took it")), "{v:?}");
        ledger.upstream.insert(
            "p0-m0".into(),
            vec![b"X-Sim-Label: p0-m0\r\n\r\nhello\r\n".to_vec()],
        );
        assert!(ledger.check(std::slice::from_ref(&store)).is_empty());
        let v = ledger.check(&[FinalMailbox::new()]);
        assert!(v.iter().any(|v| v.contains("no durable copy")), "{v:?}");
        assert!(v.iter().any(|v| v.contains("the upstream took")), "{v:?}");
        // A journaled copy does not stand in for a proxied one.
        let mut journaled = FinalMailbox::new();
        journaled.insert("u1".into(), stored("X-Sim-Label: p0-m0\r\n\r\nhello\r\n"));
        let v = ledger.check(&[journaled]);
        assert!(v.iter().any(|v| v.contains("journaled")), "{v:?}");
    }

    #[test]
    fn a_copy_of_a_refused_message_is_a_violation() {
        let mut ledger = proxy_ledger(Delivery::Refused);
        assert!(ledger.check(&[FinalMailbox::new()]).is_empty());
        let mut store = FinalMailbox::new();
        store.insert("u1".into(), proxied("X-Sim-Label: p0-m0\r\n\r\nhello\r\n"));
        let v = ledger.check(std::slice::from_ref(&store));
        assert!(v.iter().any(|v| v.contains("refused")), "{v:?}");
        // Another attempt, accepted, left one copy; a refused one must not leave a second.
        ledger.sent.get_mut("p0-m0").unwrap().delivery = Delivery::Unknown;
        ledger.sent.get_mut("p0-m0").unwrap().copies_allowed = 1;
        assert!(ledger.check(std::slice::from_ref(&store)).is_empty());
        store.insert("u2".into(), proxied("X-Sim-Label: p0-m0\r\n\r\nhello\r\n"));
        let v = ledger.check(&[store]);
        assert!(
            v.iter().any(|v| v.contains("refused attempt's copy")),
            "{v:?}"
        );
    }

    fn fetched_ledger() -> Ledger {
        let mut ledger = Ledger::default();
        ledger.maildrop.insert(
            "r0-m0".into(),
            Fetched {
                user: "pop3-client-0".into(),
                uidl: "up0.0".into(),
                mailbox: 0,
                body: b"X-Sim-Label: r0-m0\r\n\r\n.hello\r\n".to_vec(),
                asked: true,
                completed: 0,
                dele_then_quit: false,
                deleted_upstream: false,
            },
        );
        ledger
    }

    fn retrieved_copy(body: &str) -> Vec<u8> {
        format!("X-Gateway-Direction: received\r\nX-Gateway-Server: upstream:995\r\n{body}")
            .into_bytes()
    }

    #[test]
    fn a_pop3_retrieval_seen_whole_needs_a_durable_copy() {
        let mut ledger = fetched_ledger();
        // Asked for and cut off: no copy is fine.
        assert!(ledger.check(&[FinalMailbox::new()]).is_empty());
        ledger.maildrop.get_mut("r0-m0").unwrap().completed = 1;
        let v = ledger.check(&[FinalMailbox::new()]);
        assert!(v.iter().any(|v| v.contains("no durable copy")), "{v:?}");
        let mut store = FinalMailbox::new();
        store.insert(
            "g1".into(),
            retrieved_copy("X-Sim-Label: r0-m0\r\n\r\n.hello\r\n"),
        );
        assert!(ledger.check(std::slice::from_ref(&store)).is_empty());
        // Archived by the final drain counts too.
        ledger
            .retrieved
            .insert((0, "g1".into()), store["g1"].clone());
        ledger.sessions.push(Pop3Session {
            mailbox: 0,
            listing: Some(vec!["g1".into()]),
            deleted: vec!["g1".into()],
            end: SessionEnd::Completed,
        });
        assert!(ledger.check(&[FinalMailbox::new()]).is_empty());
    }

    #[test]
    fn two_copies_of_one_uidl_are_a_violation() {
        let mut ledger = fetched_ledger();
        ledger.maildrop.get_mut("r0-m0").unwrap().completed = 3;
        let copy = retrieved_copy("X-Sim-Label: r0-m0\r\n\r\n.hello\r\n");
        let mut store = FinalMailbox::new();
        store.insert("g1".into(), copy.clone());
        assert!(ledger.check(std::slice::from_ref(&store)).is_empty());
        // A second copy, taken out by the archiver, still counts.
        ledger.retrieved.insert((0, "g2".into()), copy);
        let v = ledger.check(&[store]);
        assert!(v.iter().any(|v| v.contains("one copy per UIDL")), "{v:?}");
    }

    #[test]
    fn a_half_retrieved_or_unasked_pop3_copy_is_a_violation() {
        let mut ledger = fetched_ledger();
        let mut store = FinalMailbox::new();
        store.insert(
            "g1".into(),
            retrieved_copy("X-Sim-Label: r0-m0\r\n\r\n.hel"),
        );
        let v = ledger.check(std::slice::from_ref(&store));
        assert!(v.iter().any(|v| v.contains("half-received")), "{v:?}");
        store.insert(
            "g1".into(),
            retrieved_copy("X-Sim-Label: r0-m0\r\n\r\n.hello\r\n"),
        );
        ledger.maildrop.get_mut("r0-m0").unwrap().asked = false;
        let v = ledger.check(&[store]);
        assert!(v.iter().any(|v| v.contains("never asked")), "{v:?}");
    }

    #[test]
    fn an_upstream_deletion_needs_dele_quit_and_a_copy() {
        let mut ledger = fetched_ledger();
        ledger.maildrop.get_mut("r0-m0").unwrap().deleted_upstream = true;
        let v = ledger.check(&[FinalMailbox::new()]);
        assert!(v.iter().any(|v| v.contains("DELE and then QUIT")), "{v:?}");
        assert!(v.iter().any(|v| v.contains("no copy is archived")), "{v:?}");
        ledger.maildrop.get_mut("r0-m0").unwrap().dele_then_quit = true;
        let mut store = FinalMailbox::new();
        store.insert(
            "g1".into(),
            retrieved_copy("X-Sim-Label: r0-m0\r\n\r\n.hello\r\n"),
        );
        assert!(ledger.check(&[store]).is_empty());
    }

    #[test]
    fn the_received_field_is_stripped_with_its_folded_lines() {
        let message = stored("X-Sim-Label: a\r\n\r\nb\r\n");
        assert_eq!(
            without_received(&message).unwrap(),
            b"X-Sim-Label: a\r\n\r\nb\r\n"
        );
        assert_eq!(label_of(without_received(&message).unwrap()).unwrap(), "a");
    }
}
