//! Settings every node of a shared store follows: the email domain. One node decides what
//! mail it accepts by it, so nodes that disagree would refuse each other's mailboxes.
//!
//! The database holds the published value; a node adopts it at start (its configuration
//! file only seeds it when none was published, and a file that disagrees is reported),
//! follows changes other nodes publish within [`SETTINGS_FOLLOW_EVERY`], and publishes its
//! own changes (`SetSettings`, `gateway settings set`) before saving them. With the
//! embedded store nothing is shared and the configuration file is the whole truth.

use std::ops::ControlFlow;

use crate::config::validate_email_domain;
use crate::net::ShutdownSignal;
use crate::store::coordination::{
    EMAIL_DOMAIN_SETTING, RETRIEVAL_KEY_SETTING, SETTINGS_FOLLOW_EVERY,
};

use super::{Gateway, ServiceError};

impl Gateway {
    /// At start: takes the email domain the nodes share, or publishes this node's when none
    /// was. A database that cannot be read fails the start (a node must not take mail for
    /// a domain the others may have left).
    pub fn adopt_shared_email_domain(&self) -> Result<(), ServiceError> {
        let coordination = self.store.coordination();
        if !coordination.is_shared() {
            return Ok(());
        }
        let configured = self.email_domain();
        match coordination.shared_setting(EMAIL_DOMAIN_SETTING)? {
            Some(shared) if shared != *configured => {
                if validate_email_domain(&shared).is_ok() {
                    tracing::warn!(
                        configured = %configured,
                        shared = %shared,
                        "the nodes share another email domain than this node's configuration file names; using the shared one (change it with `gateway settings set`, which every node follows)"
                    );
                    self.options.email_domain.set(shared.as_str());
                }
            }
            Some(_) => {}
            None => coordination.publish_setting(EMAIL_DOMAIN_SETTING, &configured)?,
        }
        Ok(())
    }

    /// At start: refuses to join nodes whose proxy retrieval key (`retrieval.key`) differs
    /// from this node's, by fingerprint (the first node publishes its own). Different keys
    /// would keep one copy per node of every upstream message the POP3 proxy fetched.
    pub fn check_shared_retrieval_key(&self) -> Result<(), ServiceError> {
        let coordination = self.store.coordination();
        if !coordination.is_shared() {
            return Ok(());
        }
        let own = self.retrieval.fingerprint();
        match coordination.shared_setting(RETRIEVAL_KEY_SETTING)? {
            None => coordination.publish_setting(RETRIEVAL_KEY_SETTING, &own)?,
            Some(shared) if shared == own => {}
            Some(_) => {
                return Err(ServiceError::StoreSettings(format!(
                    "this node's {} is not the one the other nodes of this database use; copy \
                     it from a node that ran before (it keys the proxy's one-copy records: \
                     nodes with different keys would each store every fetched message)",
                    super::RETRIEVAL_KEY_FILE
                )))
            }
        }
        Ok(())
    }

    /// Follows the email domain other nodes publish, every [`SETTINGS_FOLLOW_EVERY`], until
    /// `shutdown`. Returns at once for a store nobody shares.
    pub async fn follow_shared_settings(self, shutdown: ShutdownSignal) {
        if !self.store.coordination().is_shared() {
            return;
        }
        shutdown
            .every(SETTINGS_FOLLOW_EVERY, || async {
                let coordination = self.store.coordination().clone();
                let read = self
                    .store
                    .executor()
                    .run("shared-settings", move || {
                        coordination.shared_setting(EMAIL_DOMAIN_SETTING)
                    })
                    .await;
                match read {
                    Ok(Ok(Some(shared))) if shared != *self.email_domain() => {
                        if validate_email_domain(&shared).is_ok() {
                            tracing::info!(email_domain = %shared, "following the email domain another node set");
                            self.options.email_domain.set(shared.as_str());
                        }
                    }
                    Ok(Ok(_)) => {}
                    // Out of reach for now: the next tick tries again.
                    Ok(Err(e)) => tracing::debug!(error = %e, "shared settings unreadable"),
                    Err(_) => return ControlFlow::Break(()),
                }
                ControlFlow::Continue(())
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::gateway;

    #[tokio::test]
    async fn adopting_keeps_the_domain_when_none_other_was_published() {
        let (_dir, gw) = gateway();
        gw.adopt_shared_email_domain().unwrap();
        assert_eq!(&*gw.email_domain(), "archive.example");
    }
}
