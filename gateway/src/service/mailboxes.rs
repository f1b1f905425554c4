//! Mailbox lifecycle: create, list, show, edit, suspend/activate, delete, reset password.

use serde::{Deserialize, Serialize};

use super::{Gateway, ServiceError};
use crate::crypto::{MailboxPassword, SealedKeyPair, UnsealedKey};
use crate::mailbox::MailboxId;
use crate::store::{MailboxRecord, MailboxStatus, Writes};

const MAX_NAME: usize = 200;
const MAX_DESCRIPTION: usize = 2000;

/// What people see of a mailbox. Holds nothing secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MailboxInfo {
    #[schema(value_type = String)]
    pub id: MailboxId,
    pub address: String,
    pub name: String,
    pub description: String,
    pub status: MailboxStatus,
    /// Unix milliseconds.
    pub created_at: u64,
    pub message_count: u64,
    pub message_bytes: u64,
    /// Unix milliseconds: when the oldest message still stored arrived; `None` when empty.
    /// An old one means the archiver stopped picking up.
    pub oldest_message_at: Option<u64>,
}

/// A mailbox just created (or re-keyed), with the password shown exactly this once.
#[derive(Debug)]
pub struct NewMailbox {
    pub info: MailboxInfo,
    pub password: MailboxPassword,
}

fn check_text(field: &'static str, value: &str, max: usize) -> Result<String, ServiceError> {
    let value = value.trim();
    if value.chars().count() > max {
        return Err(ServiceError::InvalidInput {
            field,
            problem: format!("at most {max} characters"),
        });
    }
    if value.chars().any(|c| c.is_control() && c != '\n') {
        return Err(ServiceError::InvalidInput {
            field,
            problem: "control characters are not allowed".into(),
        });
    }
    Ok(value.to_owned())
}

pub(super) fn check_name(name: &str) -> Result<String, ServiceError> {
    let name = check_text("name", name, MAX_NAME)?;
    if name.is_empty() {
        return Err(ServiceError::InvalidInput {
            field: "name",
            problem: "must not be empty".into(),
        });
    }
    if name.contains('\n') {
        return Err(ServiceError::InvalidInput {
            field: "name",
            problem: "must be a single line".into(),
        });
    }
    Ok(name)
}

/// Reads the mailbox inside a write transaction, or the typed not-found error.
fn existing(
    t: &dyn Writes,
    id: &MailboxId,
) -> Result<Result<MailboxRecord, ServiceError>, crate::store::StoreError> {
    Ok(t.mailbox(id)?
        .ok_or_else(|| ServiceError::MailboxNotFound(id.clone())))
}

/// The rule for new mail: the mailbox exists and is active.
pub(super) fn accepts_mail<'r>(
    id: &MailboxId,
    record: Option<&'r MailboxRecord>,
) -> Result<&'r MailboxRecord, ServiceError> {
    let record = record.ok_or_else(|| ServiceError::MailboxNotFound(id.clone()))?;
    if record.status != MailboxStatus::Active {
        return Err(ServiceError::MailboxSuspended(id.clone()));
    }
    Ok(record)
}

/// Delete and reset need an archived-out mailbox that no longer takes mail.
fn check_suspended_and_empty(record: &MailboxRecord) -> Result<(), ServiceError> {
    if record.status != MailboxStatus::Suspended {
        return Err(ServiceError::MailboxNotSuspended(record.id.clone()));
    }
    if record.message_count > 0 {
        return Err(ServiceError::MailboxNotEmpty(
            record.id.clone(),
            record.message_count,
        ));
    }
    Ok(())
}

impl Gateway {
    /// What people see of `record`, whose oldest message arrived at `oldest_message_at`.
    pub(super) fn info(
        &self,
        record: &MailboxRecord,
        oldest_message_at: Option<u64>,
    ) -> MailboxInfo {
        MailboxInfo {
            id: record.id.clone(),
            address: record.id.address(&self.email_domain()),
            name: record.name.clone(),
            description: record.description.clone(),
            status: record.status,
            created_at: record.created_at,
            message_count: record.message_count,
            message_bytes: record.message_bytes,
            oldest_message_at,
        }
    }

    /// Creates an active mailbox with a fresh key pair; the password is returned once.
    pub async fn create_mailbox(
        &self,
        name: &str,
        description: &str,
    ) -> Result<NewMailbox, ServiceError> {
        let name = check_name(name)?;
        let description = check_text("description", description, MAX_DESCRIPTION)?;
        let id = MailboxId::generate();
        let password = MailboxPassword::generate();
        let keys = SealedKeyPair::generate(&id, &password, self.options.kdf)
            .map_err(ServiceError::Crypto)?;
        let record = MailboxRecord {
            id: id.clone(),
            name,
            description,
            status: MailboxStatus::Active,
            created_at: self.now(),
            message_count: 0,
            message_bytes: 0,
            keys,
        };
        let stored = record.clone();
        self.store
            .write(move |t| {
                // 128 random bits make a collision practically impossible; checking is cheap.
                if t.mailbox(&stored.id)?.is_some() {
                    return Err(crate::store::StoreError::Corrupt(
                        "mailbox id collision".into(),
                    ));
                }
                t.put_mailbox(&stored)
            })
            .await?;
        tracing::info!(mailbox = %id, "mailbox created");
        Ok(NewMailbox {
            info: self.info(&record, None),
            password,
        })
    }

    /// All mailboxes, ordered by name then id.
    pub fn list_mailboxes(&self) -> Result<Vec<MailboxInfo>, ServiceError> {
        let snapshot = self.store.read()?;
        let mut list = Vec::new();
        for record in snapshot.mailboxes()? {
            let oldest = snapshot.oldest_message_at(&record.id)?;
            list.push(self.info(&record, oldest));
        }
        list.sort_by(|a, b| {
            a.name
                .to_lowercase()
                .cmp(&b.name.to_lowercase())
                .then(a.id.cmp(&b.id))
        });
        Ok(list)
    }

    /// Whether `id` takes new mail now: the rule RCPT and both proxy logins ask, and the
    /// one [`Gateway::begin_message`] and the commit apply again (the status can change
    /// between). Refusals: [`ServiceError::MailboxNotFound`], [`ServiceError::MailboxSuspended`].
    pub fn accepting(&self, id: &MailboxId) -> Result<(), ServiceError> {
        let record = self.store.read()?.mailbox(id)?;
        accepts_mail(id, record.as_ref()).map(|_| ())
    }

    pub fn mailbox(&self, id: &MailboxId) -> Result<MailboxInfo, ServiceError> {
        let snapshot = self.store.read()?;
        let record = snapshot
            .mailbox(id)?
            .ok_or_else(|| ServiceError::MailboxNotFound(id.clone()))?;
        let oldest = snapshot.oldest_message_at(id)?;
        Ok(self.info(&record, oldest))
    }

    pub(super) fn mailbox_record(&self, id: &MailboxId) -> Result<MailboxRecord, ServiceError> {
        self.store
            .read()?
            .mailbox(id)?
            .ok_or_else(|| ServiceError::MailboxNotFound(id.clone()))
    }

    /// Changes name and/or description.
    pub async fn edit_mailbox(
        &self,
        id: &MailboxId,
        name: Option<&str>,
        description: Option<&str>,
    ) -> Result<MailboxInfo, ServiceError> {
        let name = name.map(check_name).transpose()?;
        let description = description
            .map(|d| check_text("description", d, MAX_DESCRIPTION))
            .transpose()?;
        self.update(id, move |record| {
            if let Some(name) = &name {
                record.name.clone_from(name);
            }
            if let Some(description) = &description {
                record.description.clone_from(description);
            }
            Ok(())
        })
        .await
    }

    /// Suspended mailboxes refuse new mail (temporarily) but can still be emptied.
    pub async fn set_status(
        &self,
        id: &MailboxId,
        status: MailboxStatus,
    ) -> Result<MailboxInfo, ServiceError> {
        let info = self
            .update(id, move |record| {
                record.status = status;
                Ok(())
            })
            .await?;
        tracing::info!(mailbox = %id, %status, "mailbox status changed");
        Ok(info)
    }

    /// Deletes a mailbox; only when it is suspended and empty, so no mail is lost.
    pub async fn delete_mailbox(&self, id: &MailboxId) -> Result<(), ServiceError> {
        let target = id.clone();
        self.store
            .write(move |t| {
                let record = match existing(t, &target)? {
                    Ok(record) => record,
                    Err(e) => return Ok(Err(e)),
                };
                if let Err(e) = check_suspended_and_empty(&record) {
                    return Ok(Err(e));
                }
                t.remove_mailbox(&target)?;
                t.remove_retrieved(&target)?;
                Ok(Ok(()))
            })
            .await?
            .value?;
        tracing::info!(mailbox = %id, "mailbox deleted");
        Ok(())
    }

    /// New key pair and password; only when suspended and empty, because mail sealed to the
    /// old key could never be read with the new password.
    pub async fn reset_password(&self, id: &MailboxId) -> Result<NewMailbox, ServiceError> {
        let record = self.mailbox_record(id)?;
        check_suspended_and_empty(&record)?;
        let password = MailboxPassword::generate();
        let keys = SealedKeyPair::generate(id, &password, self.options.kdf)
            .map_err(ServiceError::Crypto)?;
        let info = self
            .update(id, move |record| {
                // Checked again inside the transaction: mail may have arrived meanwhile.
                check_suspended_and_empty(record)?;
                record.keys = keys.clone();
                Ok(())
            })
            .await?;
        tracing::info!(mailbox = %id, "mailbox password reset");
        Ok(NewMailbox { info, password })
    }

    /// Opens the mailbox's private key with its password (Argon2id: CPU- and memory-heavy,
    /// so callers bound how many run at once).
    pub fn unseal(
        &self,
        id: &MailboxId,
        password: &MailboxPassword,
    ) -> Result<UnsealedKey, ServiceError> {
        let record = self.mailbox_record(id)?;
        record.keys.unseal(id, password).map_err(|e| match e {
            crate::crypto::CryptoError::WrongPassword => ServiceError::WrongPassword(id.clone()),
            other => ServiceError::Crypto(other),
        })
    }

    /// Read-modify-write of one mailbox record in one transaction.
    async fn update(
        &self,
        id: &MailboxId,
        change: impl Fn(&mut MailboxRecord) -> Result<(), ServiceError> + Send + 'static,
    ) -> Result<MailboxInfo, ServiceError> {
        let target = id.clone();
        let (record, oldest) = self
            .store
            .write(move |t| {
                let mut record = match existing(t, &target)? {
                    Ok(record) => record,
                    Err(e) => return Ok(Err(e)),
                };
                if let Err(e) = change(&mut record) {
                    return Ok(Err(e));
                }
                t.put_mailbox(&record)?;
                let oldest = t.oldest_message_at(&target)?;
                Ok(Ok((record, oldest)))
            })
            .await?
            .value?;
        Ok(self.info(&record, oldest))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::gateway;
    use super::*;
    use crate::crypto::Envelope;

    #[tokio::test]
    async fn create_returns_password_once_and_stores_none() {
        let (dir, gw) = gateway();
        let created = gw
            .create_mailbox("Sales", "journal of sales@")
            .await
            .unwrap();
        assert_eq!(created.info.status, MailboxStatus::Active);
        assert_eq!(
            created.info.address,
            format!("{}@archive.example", created.info.id)
        );
        assert!(gw.unseal(&created.info.id, &created.password).is_ok());
        let shown = created.password.reveal_for_display();
        let raw: String = shown.chars().filter(|c| *c != '-').collect();
        drop(gw);
        let bytes = super::super::test_support::stored_bytes(dir.path());
        // The scan sees what is stored: the mailbox's id and description are.
        for stored in [created.info.id.as_str().as_bytes(), b"journal of sales@"] {
            assert!(bytes.windows(stored.len()).any(|w| w == stored));
        }
        for needle in [shown.as_bytes(), raw.as_bytes()] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "password on disk"
            );
        }
    }

    #[tokio::test]
    async fn list_show_edit() {
        let (_dir, gw) = gateway();
        let b = gw.create_mailbox("beta", "").await.unwrap().info;
        let a = gw.create_mailbox("Alpha", "first").await.unwrap().info;
        let names: Vec<_> = gw
            .list_mailboxes()
            .unwrap()
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, ["Alpha", "beta"]);
        let edited = gw
            .edit_mailbox(&b.id, Some("Beta"), Some("second"))
            .await
            .unwrap();
        assert_eq!(
            (edited.name.as_str(), edited.description.as_str()),
            ("Beta", "second")
        );
        assert_eq!(gw.mailbox(&a.id).unwrap().description, "first");
        let missing = MailboxId::generate();
        assert_eq!(
            gw.mailbox(&missing),
            Err(ServiceError::MailboxNotFound(missing.clone()))
        );
        assert!(matches!(
            gw.edit_mailbox(&a.id, Some("  "), None).await,
            Err(ServiceError::InvalidInput { field: "name", .. })
        ));
        assert!(matches!(
            gw.create_mailbox("x\u{7}", "").await,
            Err(ServiceError::InvalidInput { field: "name", .. })
        ));
    }

    async fn deliver(gw: &Gateway, id: &MailboxId, body: &[u8]) -> Result<(), ServiceError> {
        let mut draft = gw.begin_message(std::slice::from_ref(id), &Envelope::default())?;
        draft.write(body)?;
        gw.commit(draft).await.map(|_| ())
    }

    #[tokio::test]
    async fn delete_only_when_suspended_and_empty() {
        let (_dir, gw) = gateway();
        let id = gw.create_mailbox("m", "").await.unwrap().info.id;
        deliver(&gw, &id, b"Subject: x\r\n\r\nhi\r\n")
            .await
            .unwrap();

        assert_eq!(
            gw.delete_mailbox(&id).await,
            Err(ServiceError::MailboxNotSuspended(id.clone()))
        );
        gw.set_status(&id, MailboxStatus::Suspended).await.unwrap();
        assert_eq!(
            gw.delete_mailbox(&id).await,
            Err(ServiceError::MailboxNotEmpty(id.clone(), 1))
        );
        let seqs: Vec<u64> = gw
            .list_messages(&id)
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect();
        let _ = gw.remove_messages(&id, &seqs).await.unwrap();
        gw.delete_mailbox(&id).await.unwrap();
        assert_eq!(
            gw.mailbox(&id),
            Err(ServiceError::MailboxNotFound(id.clone()))
        );
    }

    #[tokio::test]
    async fn reset_only_when_suspended_and_empty_and_old_password_stops_working() {
        let (_dir, gw) = gateway();
        let created = gw.create_mailbox("m", "").await.unwrap();
        let id = created.info.id.clone();
        assert_eq!(
            gw.reset_password(&id).await.err(),
            Some(ServiceError::MailboxNotSuspended(id.clone()))
        );
        gw.set_status(&id, MailboxStatus::Suspended).await.unwrap();
        gw.set_status(&id, MailboxStatus::Active).await.unwrap();
        deliver(&gw, &id, b"x").await.unwrap();
        gw.set_status(&id, MailboxStatus::Suspended).await.unwrap();
        assert_eq!(
            gw.reset_password(&id).await.err(),
            Some(ServiceError::MailboxNotEmpty(id.clone(), 1))
        );
        let seqs: Vec<u64> = gw
            .list_messages(&id)
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect();
        let _ = gw.remove_messages(&id, &seqs).await.unwrap();

        let reset = gw.reset_password(&id).await.unwrap();
        assert!(gw.unseal(&id, &reset.password).is_ok());
        assert_eq!(
            gw.unseal(&id, &created.password).err(),
            Some(ServiceError::WrongPassword(id.clone()))
        );
    }

    #[tokio::test]
    async fn the_oldest_stored_message_is_shown_with_the_mailbox() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let now = std::sync::Arc::new(AtomicU64::new(1_000));
        let clock = now.clone();
        let (_dir, gw) = super::super::test_support::gateway_with(|o| {
            o.clock = std::sync::Arc::new(move || clock.load(Ordering::SeqCst))
        });
        let id = gw.create_mailbox("m", "").await.unwrap().info.id;
        let other = gw.create_mailbox("other", "").await.unwrap().info.id;
        assert_eq!(gw.mailbox(&id).unwrap().oldest_message_at, None);
        deliver(&gw, &id, b"first").await.unwrap();
        now.store(2_000, Ordering::SeqCst);
        deliver(&gw, &id, b"second").await.unwrap();
        deliver(&gw, &other, b"other's").await.unwrap();
        assert_eq!(gw.mailbox(&id).unwrap().oldest_message_at, Some(1_000));
        let listed: Vec<_> = gw
            .list_mailboxes()
            .unwrap()
            .into_iter()
            .map(|m| (m.name, m.oldest_message_at))
            .collect();
        assert_eq!(
            listed,
            [("m".into(), Some(1_000)), ("other".into(), Some(2_000))]
        );
        let edited = gw.edit_mailbox(&id, Some("m2"), None).await.unwrap();
        assert_eq!(edited.oldest_message_at, Some(1_000));

        let first = gw.list_messages(&id).unwrap()[0].seq;
        let _ = gw.remove_messages(&id, &[first]).await.unwrap();
        assert_eq!(gw.mailbox(&id).unwrap().oldest_message_at, Some(2_000));
        let rest: Vec<u64> = gw
            .list_messages(&id)
            .unwrap()
            .iter()
            .map(|m| m.seq)
            .collect();
        let _ = gw.remove_messages(&id, &rest).await.unwrap();
        assert_eq!(gw.mailbox(&id).unwrap().oldest_message_at, None);
        let json = serde_json::to_value(gw.mailbox(&other).unwrap()).unwrap();
        assert_eq!(json["oldestMessageAt"], 2_000);
    }

    #[tokio::test]
    async fn suspended_mailbox_refuses_new_messages_temporarily_but_can_be_emptied() {
        let (_dir, gw) = gateway();
        let created = gw.create_mailbox("m", "").await.unwrap();
        let id = created.info.id.clone();
        deliver(&gw, &id, b"before").await.unwrap();
        gw.set_status(&id, MailboxStatus::Suspended).await.unwrap();

        let err = deliver(&gw, &id, b"after").await.unwrap_err();
        assert_eq!(err, ServiceError::MailboxSuspended(id.clone()));
        assert!(err.is_temporary());

        let key = gw.unseal(&id, &created.password).unwrap();
        let list = gw.list_messages(&id).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(gw.read_message(&key, list[0].seq).unwrap().1, b"before");
        let _ = gw.remove_messages(&id, &[list[0].seq]).await.unwrap();
        assert_eq!(gw.mailbox(&id).unwrap().message_count, 0);
    }

    /// The one question RCPT and the proxy logins ask, answered as delivery answers it.
    #[tokio::test]
    async fn accepting_follows_the_mailbox_status() {
        let (_dir, gw) = gateway();
        let id = gw.create_mailbox("m", "").await.unwrap().info.id;
        assert_eq!(gw.accepting(&id), Ok(()));
        gw.set_status(&id, MailboxStatus::Suspended).await.unwrap();
        assert_eq!(
            gw.accepting(&id).unwrap_err(),
            ServiceError::MailboxSuspended(id.clone())
        );
        gw.set_status(&id, MailboxStatus::Active).await.unwrap();
        assert!(gw.accepting(&id).is_ok());
        let unknown = MailboxId::generate();
        assert_eq!(
            gw.accepting(&unknown).unwrap_err(),
            ServiceError::MailboxNotFound(unknown.clone())
        );
    }

    #[tokio::test]
    async fn suspension_between_begin_and_commit_is_caught_at_commit() {
        let (_dir, gw) = gateway();
        let id = gw.create_mailbox("m", "").await.unwrap().info.id;
        let mut draft = gw
            .begin_message(std::slice::from_ref(&id), &Envelope::default())
            .unwrap();
        draft.write(b"body").unwrap();
        gw.set_status(&id, MailboxStatus::Suspended).await.unwrap();
        assert_eq!(
            gw.commit(draft).await.err(),
            Some(ServiceError::MailboxSuspended(id.clone()))
        );
        assert_eq!(gw.mailbox(&id).unwrap().message_count, 0);
    }

    #[tokio::test]
    async fn a_reset_between_begin_and_commit_is_caught_at_commit() {
        let (_dir, gw) = gateway();
        let id = gw.create_mailbox("m", "").await.unwrap().info.id;
        let mut draft = gw
            .begin_message(std::slice::from_ref(&id), &Envelope::default())
            .unwrap();
        draft.write(b"body").unwrap();
        gw.set_status(&id, MailboxStatus::Suspended).await.unwrap();
        gw.reset_password(&id).await.unwrap();
        gw.set_status(&id, MailboxStatus::Active).await.unwrap();
        assert_eq!(
            gw.commit(draft).await.err(),
            Some(ServiceError::MailboxChanged(id.clone()))
        );
    }
}
