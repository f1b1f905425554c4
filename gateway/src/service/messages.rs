//! Messages: streaming intake into drafts, group-committed storage, reading and deletion.

use serde::Serialize;

use super::spool::{Replay, Spool};
use std::sync::Arc;

use super::mailboxes::accepts_mail;
use super::trace::ForeignTrace;
use super::{Gateway, ServiceError, ServiceStats};
use crate::crypto::{
    CryptoError, Envelope, MessageId, MessageOpener, MessageSealer, SealedHeader, UnsealedKey,
};
use crate::mailbox::MailboxId;
use crate::store::{Durable, Lease, MessageRecord, Snapshot, StoreError};

/// A message being received: one encrypted copy per recipient mailbox, sealed chunk by chunk
/// as bytes arrive, so memory stays bounded whatever the message size.
pub struct MessageDraft {
    copies: Vec<DraftCopy>,
    size: u64,
    max_size: u64,
    /// Store only if no copy was stored under this key before ([`MessageDraft::once`]).
    retrieval_key: Option<RetrievalKey>,
    /// Renames `X-Gateway-*` fields that come with the message: only the gateway's own
    /// ([`MessageDraft::write_trace`]) may carry those names.
    foreign_trace: ForeignTrace,
}

/// Identifies one upstream message for the POP3 proxy's one-copy rule: a SHA-256 over the
/// remote user, the upstream server and the upstream's UIDL. Held in memory only: the store
/// sees its HMAC under the [`super::RetrievalSecret`], which a copy of the store lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetrievalKey([u8; 32]);

impl RetrievalKey {
    pub fn new(remote_user: &str, server: &str, uid: &str) -> Self {
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        for part in [remote_user, server, uid] {
            // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
            context.update(&(part.len() as u64).to_be_bytes());
            context.update(part.as_bytes());
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(context.finish().as_ref());
        Self(key)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

struct DraftCopy {
    mailbox: MailboxId,
    /// The key the copy is sealed to; the commit refuses it if the mailbox was re-keyed since.
    public_key: Vec<u8>,
    id: MessageId,
    header: SealedHeader,
    sealer: MessageSealer,
    spool: Spool,
}

impl MessageDraft {
    /// Appends message bytes. Past the size limit the draft refuses further data. In the
    /// header section, `X-Gateway-*` fields are renamed (the limit counts the bytes as
    /// received).
    pub fn write(&mut self, data: &[u8]) -> Result<(), ServiceError> {
        self.size += data.len() as u64;
        if self.size > self.max_size {
            return Err(ServiceError::MessageTooLarge(self.max_size));
        }
        let mut header = Vec::new();
        let body = self.foreign_trace.feed(data, &mut header);
        self.seal(&header)?;
        self.seal(body)
    }

    /// Prepends the gateway's own trace fields (before any [`MessageDraft::write`]).
    pub(super) fn write_trace(&mut self, fields: &[u8]) -> Result<(), ServiceError> {
        self.size += fields.len() as u64;
        self.seal(fields)
    }

    fn seal(&mut self, data: &[u8]) -> Result<(), ServiceError> {
        if data.is_empty() {
            return Ok(());
        }
        for copy in &mut self.copies {
            let spool = &mut copy.spool;
            copy.sealer
                .push(data, &mut |chunk| spool.push(chunk).map_err(DraftError::Io))
                .map_err(ServiceError::from)?;
        }
        Ok(())
    }

    /// Body bytes so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Commit this draft only if nothing was committed under `key` before; a later commit
    /// with the same key stores nothing and reports no copies.
    pub(super) fn once(&mut self, key: RetrievalKey) {
        self.retrieval_key = Some(key);
    }

    /// The mailboxes that will receive a copy.
    pub fn recipients(&self) -> impl Iterator<Item = &MailboxId> {
        self.copies.iter().map(|c| &c.mailbox)
    }

    /// Makes every copy's spool file unreadable, as a failing disk would.
    #[cfg(test)]
    pub(crate) fn damage_spool_for_tests(&mut self) {
        for copy in &mut self.copies {
            copy.spool.break_for_tests();
        }
    }
}

/// Sealing writes into the spool: either side can fail.
enum DraftError {
    Io(std::io::Error),
    Crypto(CryptoError),
}

impl From<CryptoError> for DraftError {
    fn from(e: CryptoError) -> Self {
        DraftError::Crypto(e)
    }
}

impl From<DraftError> for ServiceError {
    fn from(e: DraftError) -> Self {
        match e {
            DraftError::Io(e) => e.into(),
            DraftError::Crypto(e) => ServiceError::Crypto(e),
        }
    }
}

/// A copy that reached the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoredMessage {
    pub mailbox: MailboxId,
    pub seq: u64,
    pub id: String,
    pub size: u64,
}

/// A stored message as listed (no content).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageSummary {
    /// Arrival sequence: orders a mailbox's messages and addresses one of them.
    pub seq: u64,
    /// Unique, stable id (POP3 UIDL).
    pub id: String,
    pub size: u64,
    /// Unix milliseconds.
    pub received_at: u64,
}

impl From<(u64, MessageRecord)> for MessageSummary {
    fn from((seq, record): (u64, MessageRecord)) -> Self {
        Self {
            seq,
            id: record.id.to_hex(),
            size: record.size,
            received_at: record.received_at,
        }
    }
}

/// Reads one message's body chunk by chunk from a consistent snapshot.
pub struct MessageReader {
    snapshot: Snapshot,
    mailbox: MailboxId,
    seq: u64,
    stats: Arc<ServiceStats>,
    id: MessageId,
    opener: MessageOpener,
    next: u32,
    envelope: Envelope,
    size: u64,
}

impl MessageReader {
    pub fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The message's id as POP3's UIDL shows it (hex; not secret).
    pub fn id(&self) -> String {
        self.id.to_hex()
    }

    /// The next piece of plaintext, or `None` at the end.
    pub fn next_chunk(&mut self) -> Option<Result<Vec<u8>, ServiceError>> {
        if self.opener.is_complete() {
            return None;
        }
        let index = self.next;
        self.next += 1;
        let chunk = self
            .snapshot
            .chunk(self.id, index)
            .map_err(ServiceError::from)
            .and_then(|sealed| {
                self.opener
                    .open_next(sealed)
                    .map_err(|e| ServiceError::Damaged(self.id.to_hex(), e))
            });
        Some(chunk.map_err(|e| note_damage(&self.stats, &self.mailbox, self.seq, Some(self.id), e)))
    }
}

/// A message's record, read but not opened yet ([`Gateway::stored_message`]).
pub struct StoredForReading {
    snapshot: Snapshot,
    seq: u64,
    record: MessageRecord,
    stats: Arc<ServiceStats>,
}

impl StoredForReading {
    /// Whether [`StoredForReading::open`] runs without a key agreement (an X25519): see
    /// [`UnsealedKey::opens_without_key_agreement`].
    pub fn opens_without_key_agreement(&self, key: &UnsealedKey) -> bool {
        key.opens_without_key_agreement(&self.record.header)
    }

    /// Opens the envelope with `key`; the body follows through [`MessageReader::next_chunk`].
    pub fn open(self, key: &UnsealedKey) -> Result<MessageReader, ServiceError> {
        let Self {
            snapshot,
            seq,
            record,
            stats,
        } = self;
        let mailbox = key.mailbox();
        let (envelope, opener) =
            MessageOpener::new(key, record.id, &record.header, record.chunk_count).map_err(
                |e| {
                    let error = ServiceError::Damaged(record.id.to_hex(), e);
                    note_damage(&stats, mailbox, seq, Some(record.id), error)
                },
            )?;
        Ok(MessageReader {
            snapshot,
            mailbox: mailbox.clone(),
            seq,
            stats,
            id: record.id,
            opener,
            next: 0,
            envelope,
            size: record.size,
        })
    }
}

impl Gateway {
    /// Starts a message for `recipients` (duplicates collapse to one copy). Every mailbox
    /// must exist and be active; the commit checks again.
    pub fn begin_message(
        &self,
        recipients: &[MailboxId],
        envelope: &Envelope,
    ) -> Result<MessageDraft, ServiceError> {
        // A spool already at its limit: refuse now rather than after part of the message.
        if self.spool_budget.is_exhausted() {
            return Err(super::spool::spool_full().into());
        }
        self.check_intake(0)?;
        let snapshot = self.store.read()?;
        let now = self.now();
        let mut copies: Vec<DraftCopy> = Vec::with_capacity(recipients.len());
        for mailbox in recipients {
            if copies.iter().any(|c| &c.mailbox == mailbox) {
                continue;
            }
            let record = snapshot.mailbox(mailbox)?;
            let record = accepts_mail(mailbox, record.as_ref())?;
            let id = MessageId::generate_at(now);
            let (header, sealer) = self
                .epochs
                .sealer(&record.keys, mailbox, id, envelope, now)
                .map_err(ServiceError::Crypto)?;
            copies.push(DraftCopy {
                mailbox: mailbox.clone(),
                public_key: record.keys.public_key.clone(),
                id,
                header,
                sealer,
                spool: Spool::new(
                    &self.options.spool_dir,
                    self.options.spool_memory_bytes,
                    self.spool_budget.clone(),
                ),
            });
        }
        Ok(MessageDraft {
            copies,
            size: 0,
            max_size: self.options.max_message_size,
            retrieval_key: None,
            foreign_trace: ForeignTrace::new(),
        })
    }

    /// Stores every copy of the draft in one durable commit (shared with whatever else is
    /// committing at the same moment). All copies land or none do, so a sender that retries
    /// after a temporary failure creates no duplicates.
    pub async fn commit(
        &self,
        mut draft: MessageDraft,
    ) -> Result<(Vec<StoredMessage>, Durable), ServiceError> {
        let mut held = Vec::new();
        draft.foreign_trace.finish(&mut held);
        draft.seal(&held)?;
        // It must fit beside the reserve, which is kept for deletions.
        let copies = draft.copies.len() as u64;
        self.check_room_for(draft.size.saturating_mul(copies))?;
        let received_at = self.now();
        let retrieval_key = draft
            .retrieval_key
            .map(|key| self.retrieval.record_key(&key));
        let mut sealed = Vec::with_capacity(draft.copies.len());
        for copy in draft.copies {
            let (last, size, chunk_count) = copy.sealer.finish().map_err(ServiceError::Crypto)?;
            let mut spool = copy.spool;
            spool.push(last)?;
            debug_assert_eq!(spool.len(), chunk_count as usize);
            let record = MessageRecord {
                id: copy.id,
                received_at,
                size,
                chunk_count,
                header: copy.header,
            };
            sealed.push((copy.mailbox, copy.public_key, record, spool));
        }
        // A spool that cannot be read back fails inside the shared transaction; the writer
        // then answers that message alone and runs the others again (reading every spool
        // back here first, as this did, cost each message one more read of its bytes).
        let committed = self
            .store
            .write(move |t| {
                // Every precondition first: a refusal must leave the shared transaction as
                // it found it. The records read here (locked until the commit on a shared
                // database) are the ones the counters below are added to.
                let mut records = std::collections::HashMap::with_capacity(sealed.len());
                for (mailbox, public_key, _, _) in &sealed {
                    let record = t.mailbox(mailbox)?;
                    let record = match accepts_mail(mailbox, record.as_ref()) {
                        Ok(record) => record,
                        Err(refused) => return Ok(Err(refused)),
                    };
                    if &record.keys.public_key != public_key {
                        return Ok(Err(ServiceError::MailboxChanged(mailbox.clone())));
                    }
                    records.insert(mailbox.clone(), record.clone());
                }
                if let Some(key) = &retrieval_key {
                    for (mailbox, _, _, _) in &sealed {
                        if t.retrieved(mailbox, key)? {
                            return Ok(Ok(Vec::new()));
                        }
                    }
                }
                let mut stored = Vec::with_capacity(sealed.len());
                for (mailbox, _, record, spool) in &sealed {
                    if let Some(key) = &retrieval_key {
                        t.put_retrieved(mailbox, key, received_at)?;
                    }
                    spool
                        .for_each(|index, bytes| t.put_chunk(record.id, index, bytes))
                        .map_err(|e| match e {
                            // This message's own failure, not the store's.
                            Replay::Unreadable(e) => StoreError::Input(format!("spool: {e}")),
                            Replay::Failed(e) => e,
                        })?;
                    let seq = t.next_seq()?;
                    t.put_message(mailbox, seq, record)?;
                    let mailbox_record = records
                        .get_mut(mailbox)
                        .ok_or_else(|| StoreError::Internal("a mailbox not checked".into()))?;
                    // Saturating: a damaged counter must not fail (or wrap) a delivery.
                    mailbox_record.message_count = mailbox_record.message_count.saturating_add(1);
                    mailbox_record.message_bytes =
                        mailbox_record.message_bytes.saturating_add(record.size);
                    t.put_mailbox(mailbox_record)?;
                    stored.push(StoredMessage {
                        mailbox: mailbox.clone(),
                        seq,
                        id: record.id.to_hex(),
                        size: record.size,
                    });
                }
                Ok(Ok(stored))
            })
            .await
            .map_err(|e| match e {
                StoreError::Input(what) => ServiceError::Spool(what),
                other => ServiceError::Store(other),
            })?;
        let stored = committed.value?;
        for message in &stored {
            tracing::debug!(mailbox = %message.mailbox, seq = message.seq, size = message.size, "message stored");
        }
        Ok((stored, committed.durable))
    }

    /// Drops the sealing epochs that have ended every `period` until shutdown, so an epoch's
    /// secret leaves memory soon after the epoch even when no more mail comes.
    pub async fn expire_epochs(
        self,
        period: std::time::Duration,
        mut shutdown: crate::net::ShutdownSignal,
    ) {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let sweep = async {
            loop {
                ticks.tick().await;
                self.epochs.expire(self.now());
            }
        };
        tokio::select! {
            () = sweep => {}
            () = shutdown.triggered() => {}
        }
    }

    /// Sealing epochs held now (ended ones until [`Gateway::expire_epochs`] drops them).
    pub fn sealing_epochs(&self) -> usize {
        self.epochs.len()
    }

    /// Whether the POP3 proxy already stored a copy of this upstream message.
    pub(super) fn already_retrieved(
        &self,
        mailbox: &MailboxId,
        key: &RetrievalKey,
    ) -> Result<bool, ServiceError> {
        let key = self.retrieval.record_key(key);
        Ok(self.store.read()?.retrieved(mailbox, &key)?)
    }

    /// A mailbox's messages in arrival order. Needs no password: sizes and times are clear.
    pub fn list_messages(&self, mailbox: &MailboxId) -> Result<Vec<MessageSummary>, ServiceError> {
        let snapshot = self.store.read()?;
        if snapshot.mailbox(mailbox)?.is_none() {
            return Err(ServiceError::MailboxNotFound(mailbox.clone()));
        }
        Ok(snapshot
            .messages(mailbox)?
            .into_iter()
            .map(MessageSummary::from)
            .collect())
    }

    /// Opens one message for streaming decryption with the mailbox's unsealed key.
    pub fn open_message(&self, key: &UnsealedKey, seq: u64) -> Result<MessageReader, ServiceError> {
        self.stored_message(key, seq)?.open(key)
    }

    /// Message `seq` of `key`'s mailbox as stored, to open with [`StoredForReading::open`]
    /// (the snapshot it was read from is kept: the chunks come from the same one).
    pub fn stored_message(
        &self,
        key: &UnsealedKey,
        seq: u64,
    ) -> Result<StoredForReading, ServiceError> {
        let mailbox = key.mailbox();
        let snapshot = self.store.read()?;
        let record = snapshot
            .message(mailbox, seq)
            .map_err(|e| note_damage(&self.stats, mailbox, seq, None, e.into()))?
            .ok_or_else(|| ServiceError::MessageNotFound(mailbox.clone(), seq))?;
        Ok(StoredForReading {
            snapshot,
            seq,
            record,
            stats: self.stats.clone(),
        })
    }

    /// Envelope and whole body of one message, for callers that want it in memory (CLI,
    /// tests). Protocols stream with [`Gateway::open_message`] instead.
    pub fn read_message(
        &self,
        key: &UnsealedKey,
        seq: u64,
    ) -> Result<(Envelope, Vec<u8>), ServiceError> {
        let mut reader = self.open_message(key, seq)?;
        // The size is from the record, in clear: a damaged one must not reserve gigabytes.
        const MAX_RESERVE: u64 = 16 * 1024 * 1024;
        let mut body = Vec::with_capacity(reader.size().min(MAX_RESERVE) as usize);
        while let Some(chunk) = reader.next_chunk() {
            body.extend(chunk?);
        }
        Ok((reader.envelope().clone(), body))
    }

    /// Deletes messages in one durable commit (for [`Gateway::delete_messages`] and
    /// [`Gateway::discard_sent`]). Sequence numbers that are already gone are ignored, so a repeated UPDATE is harmless. On a full disk the space
    /// reserve makes room for the commit, and the freed space goes back to the file system
    /// (see `service::disk`).
    pub(super) async fn remove_messages(
        &self,
        mailbox: &MailboxId,
        seqs: &[u64],
    ) -> Result<Durable, ServiceError> {
        self.remove_messages_fenced(mailbox, seqs, None).await
    }

    /// [`Gateway::remove_messages`] by a POP3 session holding `fence`, the maildrop's lease
    /// on a shared store: checked in the deletion's own transaction, so a session whose
    /// lease another node took deletes nothing (a temporary failure).
    pub(super) async fn remove_messages_fenced(
        &self,
        mailbox: &MailboxId,
        seqs: &[u64],
        fence: Option<Lease>,
    ) -> Result<Durable, ServiceError> {
        let durable = match self.delete_once(mailbox, seqs, fence.clone()).await {
            Err(e) if self.release_reserve_after(&e) => {
                tracing::warn!(error = %e, %mailbox, "deletion met a full disk; trying again in the reserve");
                self.delete_once(mailbox, seqs, fence).await?
            }
            other => other?,
        };
        self.give_back_space().await;
        Ok(durable)
    }

    async fn delete_once(
        &self,
        mailbox: &MailboxId,
        seqs: &[u64],
        fence: Option<Lease>,
    ) -> Result<Durable, ServiceError> {
        let target = mailbox.clone();
        let seqs = seqs.to_vec();
        // With room on the disk, the chunks wait in the store's purge queue and the writer
        // removes them when idle: removing one reads its page, which a POP3 QUIT then need not
        // wait for. Short of space they go now, so the compaction that follows gives their
        // space back.
        let purge = if self.space_is_short() {
            None
        } else {
            self.store.purge_signal()
        };
        let committed = self
            .store
            .write(move |t| {
                if let Some(lease) = &fence {
                    if !t.holds_lease(lease)? {
                        return Ok(Err(ServiceError::Unavailable(
                            "the maildrop's lease was lost; nothing was deleted",
                        )));
                    }
                }
                let Some(mut record) = t.mailbox(&target)? else {
                    return Ok(Err(ServiceError::MailboxNotFound(target.clone())));
                };
                // Newest first: where chunks go at once, removing one reads its page, and the
                // pages a POP3 session retrieved last are the likeliest still in the cache.
                for &seq in seqs.iter().rev() {
                    let removed = match &purge {
                        Some(purge) => purge.retire(t, &target, seq)?,
                        None => t.remove_message(&target, seq)?,
                    };
                    if let Some(message) = removed {
                        record.message_count = record.message_count.saturating_sub(1);
                        record.message_bytes = record.message_bytes.saturating_sub(message.size);
                    }
                }
                t.put_mailbox(&record)?;
                Ok(Ok(()))
            })
            .await?;
        committed.value?;
        Ok(committed.durable)
    }
}

/// Logs and counts a damaged message (ids only, never content) and passes the error on.
fn note_damage(
    stats: &ServiceStats,
    mailbox: &MailboxId,
    seq: u64,
    id: Option<MessageId>,
    error: ServiceError,
) -> ServiceError {
    if error.is_damaged_message() {
        stats.message_damaged();
        tracing::error!(
            %mailbox,
            seq,
            message = id.map(|id| id.to_hex()).unwrap_or_default(),
            %error,
            "message is damaged and cannot be read"
        );
    }
    error
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{gateway, gateway_with};
    use super::super::Gateway;
    use super::*;
    use crate::crypto::CHUNK_SIZE;

    fn envelope() -> Envelope {
        Envelope {
            mail_from: "journal@tenant.example".into(),
            rcpt_to: vec!["x@archive.example".into()],
            ..Envelope::default()
        }
    }

    #[tokio::test]
    async fn a_retrieval_key_stores_one_copy_even_after_pickup() {
        let (_dir, gw) = gateway();
        let created = gw.create_mailbox("m", "").await.unwrap();
        let id = created.info.id.clone();
        let key = RetrievalKey::new("alice", "pop.example:995", "UID-1");
        assert_ne!(key, RetrievalKey::new("alic", "epop.example:995", "UID-1"));
        assert!(!gw.already_retrieved(&id, &key).unwrap());
        let store = |key: RetrievalKey| {
            let gw = gw.clone();
            let id = id.clone();
            async move {
                let mut draft = gw.begin_message(&[id], &envelope()).unwrap();
                draft.write(b"Subject: x\r\n\r\nbody\r\n").unwrap();
                draft.once(key);
                gw.commit(draft).await.unwrap().0.len()
            }
        };
        assert_eq!(store(key).await, 1);
        assert!(gw.already_retrieved(&id, &key).unwrap());
        assert_eq!(store(key).await, 0, "second retrieval stores nothing");
        // The archiver picks the copy up; the key still prevents a second copy.
        let seqs: Vec<u64> = gw
            .list_messages(&id)
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect();
        let _durable = gw.remove_messages(&id, &seqs).await.unwrap();
        assert_eq!(store(key).await, 0);
        assert_eq!(
            store(RetrievalKey::new("alice", "pop.example:995", "UID-2")).await,
            1
        );
        assert_eq!(gw.mailbox(&id).unwrap().message_count, 1);
    }

    #[tokio::test]
    async fn damaged_sizes_and_counters_in_records_do_not_panic() {
        let (_dir, gw) = gateway();
        let created = gw.create_mailbox("m", "").await.unwrap();
        let id = created.info.id.clone();
        let mut draft = gw
            .begin_message(std::slice::from_ref(&id), &envelope())
            .unwrap();
        draft.write(b"body").unwrap();
        let seq = gw.commit(draft).await.unwrap().0[0].seq;
        let target = id.clone();
        gw.store()
            .write(move |t| {
                let mut message = t.message(&target, seq)?.unwrap();
                message.size = u64::MAX;
                t.put_message(&target, seq, &message)?;
                let mut record = t.mailbox(&target)?.unwrap();
                record.message_count = u64::MAX;
                record.message_bytes = u64::MAX;
                t.put_mailbox(&record)
            })
            .await
            .unwrap();
        let key = gw.unseal(&id, &created.password).unwrap();
        assert_eq!(gw.read_message(&key, seq).unwrap().1, b"body");
        let mut draft = gw
            .begin_message(std::slice::from_ref(&id), &envelope())
            .unwrap();
        draft.write(b"more").unwrap();
        let _ = gw.commit(draft).await.unwrap();
        assert_eq!(gw.mailbox(&id).unwrap().message_count, u64::MAX);
    }

    #[tokio::test]
    async fn retrieval_records_cannot_be_confirmed_without_the_secret() {
        let (dir, gw) = gateway();
        let id = gw.create_mailbox("m", "").await.unwrap().info.id;
        let key = RetrievalKey::new("alice", "pop.example:995", "UID-1");
        let mut draft = gw
            .begin_message(std::slice::from_ref(&id), &envelope())
            .unwrap();
        draft.write(b"Subject: x\r\n\r\nbody\r\n").unwrap();
        draft.once(key);
        let _ = gw.commit(draft).await.unwrap();
        assert!(gw.already_retrieved(&id, &key).unwrap());

        // The same store with another secret (a thief's guess) confirms nothing.
        let other = Gateway::new(
            gw.store().clone(),
            (*gw.options).clone(),
            super::super::RetrievalSecret::from_bytes(&[8; 32]),
        );
        assert!(!other.already_retrieved(&id, &key).unwrap());
        drop((gw, other));
        // Nor does the file hold the unkeyed hash anyone could recompute from a guess.
        let bytes = super::super::test_support::stored_bytes(dir.path());
        assert!(!bytes.windows(32).any(|w| w == key.as_bytes()));
    }

    #[tokio::test]
    async fn one_copy_per_mailbox_all_decrypt_to_the_sent_bytes() {
        let (_dir, gw) = gateway_with(|o| o.spool_memory_bytes = 70_000);
        let a = gw.create_mailbox("a", "").await.unwrap();
        let b = gw.create_mailbox("b", "").await.unwrap();
        let body: Vec<u8> = (0..(3 * CHUNK_SIZE + 17))
            .map(|i| (i % 251) as u8)
            .collect();
        let recipients = [a.info.id.clone(), b.info.id.clone(), a.info.id.clone()];
        let mut draft = gw.begin_message(&recipients, &envelope()).unwrap();
        for piece in body.chunks(1000) {
            draft.write(piece).unwrap();
        }
        let (stored, _durable) = gw.commit(draft).await.unwrap();
        assert_eq!(stored.len(), 2, "duplicate recipient collapsed");

        for created in [&a, &b] {
            let key = gw.unseal(&created.info.id, &created.password).unwrap();
            let list = gw.list_messages(&created.info.id).unwrap();
            assert_eq!(list.len(), 1);
            assert_eq!(list[0].size, body.len() as u64);
            let (env, got) = gw.read_message(&key, list[0].seq).unwrap();
            assert_eq!(env, envelope());
            assert_eq!(got, body);
            let info = gw.mailbox(&created.info.id).unwrap();
            assert_eq!(
                (info.message_count, info.message_bytes),
                (1, body.len() as u64)
            );
        }
        // One mailbox's key cannot read the other's copy.
        let key_a = gw.unseal(&a.info.id, &a.password).unwrap();
        let seq_b = gw.list_messages(&b.info.id).unwrap()[0].seq;
        assert!(gw.open_message(&key_a, seq_b).is_err());
    }

    async fn deliver(gw: &Gateway, id: &MailboxId, body: &[u8]) -> u64 {
        let mut draft = gw
            .begin_message(std::slice::from_ref(id), &envelope())
            .unwrap();
        draft.write(body).unwrap();
        gw.commit(draft).await.unwrap().0[0].seq
    }

    fn header(gw: &Gateway, id: &MailboxId, seq: u64) -> SealedHeader {
        let record = gw.store().read().unwrap().message(id, seq).unwrap();
        record.unwrap().header
    }

    #[tokio::test]
    async fn new_mail_is_sealed_in_epochs_and_format_1_mail_still_reads() {
        use crate::crypto::MessageFormat;
        use crate::store::MailboxStatus;
        let (_dir, gw) = gateway();
        let created = gw.create_mailbox("m", "").await.unwrap();
        let id = created.info.id.clone();

        // A format 1 message, as a gateway before format 2 stored it.
        let keys = gw
            .store()
            .read()
            .unwrap()
            .mailbox(&id)
            .unwrap()
            .unwrap()
            .keys;
        let old_id = MessageId::generate();
        let (old_header, mut sealer) = MessageSealer::new(&keys, &id, old_id, &envelope()).unwrap();
        let mut chunks = Vec::new();
        sealer
            .push(b"old mail", &mut |c| {
                chunks.push(c);
                Ok::<_, CryptoError>(())
            })
            .unwrap();
        let (last, size, chunk_count) = sealer.finish().unwrap();
        chunks.push(last);
        let target = id.clone();
        let old_seq = gw
            .store()
            .write(move |t| {
                for (index, chunk) in chunks.iter().enumerate() {
                    t.put_chunk(old_id, index as u32, chunk)?;
                }
                let seq = t.next_seq()?;
                let record = MessageRecord {
                    id: old_id,
                    received_at: 1,
                    size,
                    chunk_count,
                    header: old_header.clone(),
                };
                t.put_message(&target, seq, &record)?;
                Ok(seq)
            })
            .await
            .unwrap()
            .value;

        let a = deliver(&gw, &id, b"first").await;
        let b = deliver(&gw, &id, b"second").await;
        let (ha, hb) = (header(&gw, &id, a), header(&gw, &id, b));
        assert_eq!(header(&gw, &id, old_seq).format, MessageFormat::V1);
        assert_eq!(
            (ha.format, hb.format),
            (MessageFormat::V2, MessageFormat::V2)
        );
        assert_eq!(ha.encapped_key, hb.encapped_key, "one epoch");
        assert_eq!(gw.sealing_epochs(), 1);

        let key = gw.unseal(&id, &created.password).unwrap();
        let bodies: Vec<Vec<u8>> = [old_seq, a, b]
            .iter()
            .map(|&seq| gw.read_message(&key, seq).unwrap().1)
            .collect();
        assert_eq!(bodies, [&b"old mail"[..], b"first", b"second"]);

        // A password reset (suspended, empty) gives a new key pair: the next message is
        // sealed to it, in a new epoch, and opens with the new password only.
        let _durable = gw.remove_messages(&id, &[old_seq, a, b]).await.unwrap();
        gw.set_status(&id, MailboxStatus::Suspended).await.unwrap();
        let reset = gw.reset_password(&id).await.unwrap();
        gw.set_status(&id, MailboxStatus::Active).await.unwrap();
        let c = deliver(&gw, &id, b"after reset").await;
        assert_ne!(header(&gw, &id, c).encapped_key, ha.encapped_key);
        let new_key = gw.unseal(&id, &reset.password).unwrap();
        assert_eq!(gw.read_message(&new_key, c).unwrap().1, b"after reset");
        assert!(gw.read_message(&key, c).is_err());
    }

    #[tokio::test]
    async fn oversized_messages_are_refused_while_streaming() {
        let (_dir, gw) = gateway_with(|o| o.max_message_size = 10_000);
        let id = gw.create_mailbox("m", "").await.unwrap().info.id;
        let mut draft = gw
            .begin_message(std::slice::from_ref(&id), &envelope())
            .unwrap();
        draft.write(&[b'a'; 9_000]).unwrap();
        assert_eq!(
            draft.write(&[b'a'; 2_000]),
            Err(ServiceError::MessageTooLarge(10_000))
        );
    }

    #[tokio::test]
    async fn unknown_recipients_are_refused() {
        let (_dir, gw) = gateway();
        let missing = MailboxId::generate();
        assert_eq!(
            gw.begin_message(std::slice::from_ref(&missing), &envelope())
                .err(),
            Some(ServiceError::MailboxNotFound(missing))
        );
    }

    #[tokio::test]
    async fn concurrent_commits_all_land_in_order_with_distinct_ids() {
        let (_dir, gw) = gateway();
        let created = gw.create_mailbox("m", "").await.unwrap();
        let id = created.info.id.clone();
        let mut tasks = Vec::new();
        for i in 0..50u32 {
            let gw = gw.clone();
            let id = id.clone();
            tasks.push(tokio::spawn(async move {
                let mut draft = gw.begin_message(&[id], &envelope()).unwrap();
                draft.write(format!("message {i}\r\n").as_bytes()).unwrap();
                gw.commit(draft).await.unwrap().0
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let list = gw.list_messages(&id).unwrap();
        assert_eq!(list.len(), 50);
        let mut ids: Vec<_> = list.iter().map(|m| m.id.clone()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 50);
        let key = gw.unseal(&id, &created.password).unwrap();
        let mut bodies: Vec<String> = list
            .iter()
            .map(|m| String::from_utf8(gw.read_message(&key, m.seq).unwrap().1).unwrap())
            .collect();
        bodies.sort();
        let mut expected: Vec<String> = (0..50).map(|i| format!("message {i}\r\n")).collect();
        expected.sort();
        assert_eq!(bodies, expected);
    }

    /// Ids are ordered by the time a message began, whatever order the commits land in, so
    /// the store appends each message's chunks. Fails with fully random ids.
    #[tokio::test]
    async fn message_ids_follow_the_time_messages_began() {
        let now = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1_700_000_000_000));
        let clock = now.clone();
        let (_dir, gw) = gateway_with(|o| {
            o.clock = std::sync::Arc::new(move || clock.load(std::sync::atomic::Ordering::SeqCst))
        });
        let id = gw.create_mailbox("m", "").await.unwrap().info.id;
        let mut drafts = Vec::new();
        for _ in 0..20 {
            now.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut draft = gw
                .begin_message(std::slice::from_ref(&id), &envelope())
                .unwrap();
            draft.write(b"x\r\n").unwrap();
            drafts.push(draft);
        }
        // Committed newest first: the ids still sort as the messages began.
        let mut began = Vec::new();
        while let Some(draft) = drafts.pop() {
            began.push(gw.commit(draft).await.unwrap().0[0].id.clone());
        }
        began.reverse();
        let mut sorted = began.clone();
        sorted.sort();
        assert_eq!(began, sorted);
        // The first 48 bits are the service clock's milliseconds.
        let first = MessageId::from_hex(&began[0]).unwrap();
        assert_eq!(first.0[..6], 1_700_000_000_001u64.to_be_bytes()[2..]);
    }

    #[tokio::test]
    async fn a_deleted_message_is_gone_at_once_and_its_chunks_once_the_writer_is_idle() {
        let (_dir, gw) = gateway();
        let id = gw.create_mailbox("m", "").await.unwrap().info.id;
        for body in [vec![b'a'; 2 * CHUNK_SIZE + 1], b"small".to_vec()] {
            let mut draft = gw
                .begin_message(std::slice::from_ref(&id), &envelope())
                .unwrap();
            draft.write(&body).unwrap();
            let _ = gw.commit(draft).await.unwrap();
        }
        let list = gw.list_messages(&id).unwrap();
        let big = gw
            .store()
            .read()
            .unwrap()
            .message(&id, list[0].seq)
            .unwrap()
            .unwrap();
        assert_eq!(big.chunk_count, 3);
        let _durable = gw.remove_messages(&id, &[list[0].seq]).await.unwrap();
        assert_eq!(
            gw.list_messages(&id).unwrap().len(),
            1,
            "gone when the commit is"
        );
        assert_eq!(gw.mailbox(&id).unwrap().message_count, 1);

        // Each write gives the writer a turn; it purges in one where nothing else waits.
        let mut left = 3;
        for _ in 0..100 {
            let reads = gw.store().read().unwrap();
            left = (0..3).filter(|&i| reads.chunk(big.id, i).is_ok()).count();
            if left == 0 {
                break;
            }
            gw.store().write(|_| Ok(())).await.unwrap();
        }
        assert_eq!(left, 0, "the deleted message's chunks are removed");
        let small = gw.list_messages(&id).unwrap()[0].seq;
        let reads = gw.store().read().unwrap();
        let small = reads.message(&id, small).unwrap().unwrap();
        assert!(reads.chunk(small.id, 0).is_ok(), "the other stays");
    }

    #[tokio::test]
    async fn deleting_twice_is_harmless_and_counts_stay_right() {
        let (_dir, gw) = gateway();
        let id = gw.create_mailbox("m", "").await.unwrap().info.id;
        for body in [&b"one"[..], b"three"] {
            let mut draft = gw
                .begin_message(std::slice::from_ref(&id), &envelope())
                .unwrap();
            draft.write(body).unwrap();
            let _ = gw.commit(draft).await.unwrap();
        }
        let list = gw.list_messages(&id).unwrap();
        let _ = gw.remove_messages(&id, &[list[0].seq]).await.unwrap();
        let _ = gw.remove_messages(&id, &[list[0].seq]).await.unwrap();
        let info = gw.mailbox(&id).unwrap();
        assert_eq!((info.message_count, info.message_bytes), (1, 5));
    }
}

#[cfg(test)]
mod spool_fault_tests {
    use std::future::Future;
    use std::pin::{pin, Pin};
    use std::task::{Context, Poll, Waker};

    use super::super::test_support::gateway_with;
    use super::super::Gateway;
    use super::*;
    use crate::crypto::CHUNK_SIZE;

    /// A draft whose first chunk is already in its spool file (the spool keeps nothing in
    /// memory in these tests).
    fn draft(gw: &Gateway, id: &MailboxId) -> MessageDraft {
        let mut draft = gw
            .begin_message(std::slice::from_ref(id), &Envelope::default())
            .unwrap();
        draft.write(&vec![b'x'; CHUNK_SIZE + 100]).unwrap();
        draft
    }

    fn poll_once<F: Future>(future: Pin<&mut F>) -> Poll<F::Output> {
        future.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[tokio::test]
    async fn bad_spool_fails_only_its_own_request() {
        let (_dir, gw) = gateway_with(|o| o.spool_memory_bytes = 0);
        let id = gw.create_mailbox("m", "").await.unwrap().info.id;
        // Hold the writer so that the next two commits queue up and share one transaction.
        let (open_gate, gate) = std::sync::mpsc::channel::<()>();
        let gate = std::sync::Mutex::new(gate);
        let (inside, writer_inside) = std::sync::mpsc::channel::<()>();
        let mut held = pin!(gw.store().write(move |_| {
            let _ = inside.send(());
            let _ = gate.lock().unwrap().recv();
            Ok(())
        }));
        assert!(poll_once(held.as_mut()).is_pending());
        // Only once the writer is inside the held write do the other two queue. Otherwise a
        // writer still busy (with its idle purge, say) takes all three in one batch, and after
        // the bad spool fails it runs the held write again, on a gate opened only once.
        writer_inside.recv().unwrap();
        let mut good = pin!(gw.commit(draft(&gw, &id)));
        assert!(poll_once(good.as_mut()).is_pending());
        let mut bad_draft = draft(&gw, &id);
        bad_draft.damage_spool_for_tests();
        let mut bad = pin!(gw.commit(bad_draft));
        let early = poll_once(bad.as_mut());
        open_gate.send(()).unwrap();
        let _ = held.await.unwrap();
        let bad = match early {
            Poll::Ready(result) => result,
            Poll::Pending => bad.await,
        };
        assert!(matches!(bad, Err(ServiceError::Spool(_))), "{bad:?}");
        let (stored, _durable) = good.await.expect("the good message is not dragged down");
        assert_eq!(stored.len(), 1);
        assert_eq!(gw.list_messages(&id).unwrap().len(), 1);
    }

    #[tokio::test]
    async fn spool_error_does_not_reopen_the_store() {
        let (_dir, gw) = gateway_with(|o| o.spool_memory_bytes = 0);
        let id = gw.create_mailbox("m", "").await.unwrap().info.id;
        let _ = gw.commit(draft(&gw, &id)).await.unwrap();
        // A live read, as a POP3 session streaming a message holds one.
        let reading = gw.store().read().unwrap();
        let mut bad = draft(&gw, &id);
        bad.damage_spool_for_tests();
        let err = gw.commit(bad).await.unwrap_err();
        assert!(matches!(err, ServiceError::Spool(_)), "{err}");
        assert!(err.is_temporary());
        assert_eq!(gw.store().reopens(), 0);
        assert_eq!(
            reading.messages(&id).unwrap().len(),
            1,
            "the live read goes on"
        );
        let _ = gw.commit(draft(&gw, &id)).await.unwrap();
        assert_eq!(gw.list_messages(&id).unwrap().len(), 2);
    }
}

#[cfg(test)]
mod disk_fault_tests {
    use super::super::test_support::faulty_gateway;
    use super::super::Gateway;
    use super::*;
    use crate::store::faults::Fault;

    async fn deliver(gw: &Gateway, id: &MailboxId, body: &[u8]) -> Result<(), ServiceError> {
        let mut draft = gw.begin_message(std::slice::from_ref(id), &Envelope::default())?;
        draft.write(body)?;
        gw.commit(draft).await.map(|_| ())
    }

    #[tokio::test]
    async fn readers_never_reopen_the_store_themselves() {
        let (_dir, gw, switch) = faulty_gateway();
        let id = gw.create_mailbox("m", "").await.unwrap().info.id;
        // A long read (a POP3 download) keeps the old database's file until it ends.
        let reading = gw.store().read().unwrap();
        switch.set(Fault::Full);
        assert!(deliver(&gw, &id, &vec![b'x'; 300_000]).await.is_err());
        switch.set(Fault::Healthy);
        // Another reader is answered at once instead of retrying the reopen on its async
        // worker. On a loaded machine the writer's own retry (20 ms after the failure) may
        // already have reopened the store, so a successful read is allowed too.
        let early = gw.store().read().err();
        assert!(
            matches!(early, None | Some(crate::store::StoreError::Reopening)),
            "{early:?}"
        );
        drop(reading);
        gw.store().write(|_| Ok(())).await.unwrap();
        assert_eq!(gw.store().reopens(), 1);
        deliver(&gw, &id, b"after").await.unwrap();
    }

    #[tokio::test]
    async fn a_full_disk_fails_the_commit_cleanly_and_the_store_recovers() {
        let (_dir, gw, switch) = faulty_gateway();
        let created = gw.create_mailbox("m", "").await.unwrap();
        let id = created.info.id.clone();
        deliver(&gw, &id, b"before").await.unwrap();

        for fault in [Fault::Full, Fault::Broken] {
            switch.set(fault);
            let err = deliver(&gw, &id, &vec![b'x'; 300_000]).await.unwrap_err();
            assert!(err.is_temporary(), "{err}");
            assert_eq!(err.is_storage_full(), fault == Fault::Full, "{err}");
            switch.set(Fault::Healthy);
            // The writer thread reopens the store (reads never do, on an async worker); a
            // write waits for that, so the next read finds it open.
            gw.store().write(|_| Ok(())).await.unwrap();
        }

        // The disk has room again: the store works without a restart and lost nothing.
        deliver(&gw, &id, b"after").await.unwrap();
        let key = gw.unseal(&id, &created.password).unwrap();
        let bodies: Vec<Vec<u8>> = gw
            .list_messages(&id)
            .unwrap()
            .iter()
            .map(|m| gw.read_message(&key, m.seq).unwrap().1)
            .collect();
        assert_eq!(bodies, vec![b"before".to_vec(), b"after".to_vec()]);
        assert_eq!(gw.mailbox(&id).unwrap().message_count, 2);
        assert!(gw.store().reopens() >= 1, "storage errors do reopen");
    }
}
