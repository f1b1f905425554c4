//! The email domain as the running gateway sees it: one shared, swappable value.

use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

/// The domain of the gateway's mailbox addresses, shared by the service and every SMTP
/// session, so a change (`SetSettings`) reaches the next RCPT without a restart.
///
/// Cloning shares the value. Reads are one uncontended read lock and an `Arc` clone; the
/// value is only written by [`LiveSettings`](super::LiveSettings) after validation, so it is
/// always a valid DNS name in production (tests and simulations may construct any string).
#[derive(Clone)]
pub struct EmailDomain(Arc<RwLock<Arc<str>>>);

impl EmailDomain {
    pub fn new(domain: impl Into<Arc<str>>) -> Self {
        EmailDomain(Arc::new(RwLock::new(domain.into())))
    }

    /// The current value. Hold it for one decision (one RCPT, one listing), so that decision
    /// sees one value even if the domain changes meanwhile.
    pub fn get(&self) -> Arc<str> {
        // A writer cannot panic while holding the lock (it only swaps an `Arc`), so a
        // poisoned lock still holds a whole value.
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the value for every holder of this handle.
    pub(crate) fn set(&self, domain: impl Into<Arc<str>>) {
        let domain = domain.into();
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = domain;
    }

    /// Whether both handles share one value (a change through one reaches the other).
    pub fn is_shared_with(&self, other: &EmailDomain) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl From<&str> for EmailDomain {
    fn from(domain: &str) -> Self {
        EmailDomain::new(domain)
    }
}

impl From<String> for EmailDomain {
    fn from(domain: String) -> Self {
        EmailDomain::new(domain)
    }
}

impl fmt::Debug for EmailDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("EmailDomain").field(&&*self.get()).finish()
    }
}

impl fmt::Display for EmailDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_reaches_every_clone_but_not_a_separate_handle() {
        let domain = EmailDomain::from("old.example");
        let session_copy = domain.clone();
        let unrelated = EmailDomain::from("old.example");
        let held = domain.get();
        domain.set("new.example");
        assert_eq!(&*session_copy.get(), "new.example");
        assert_eq!(&*unrelated.get(), "old.example");
        // A value taken before the change stays whole for the decision that holds it.
        assert_eq!(&*held, "old.example");
        assert!(session_copy.is_shared_with(&domain));
        assert!(!unrelated.is_shared_with(&domain));
        assert_eq!(format!("{session_copy:?}"), "EmailDomain(\"new.example\")");
    }
}
