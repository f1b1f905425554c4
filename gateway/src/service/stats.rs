//! Counters the service keeps while it runs (exported as metrics later).

use std::sync::atomic::{AtomicU64, Ordering};

/// Events worth an administrator's attention, counted since start.
#[derive(Debug, Default)]
pub struct ServiceStats {
    damaged_messages: AtomicU64,
}

impl ServiceStats {
    /// Reads of a message that turned out damaged (undecryptable or a broken record);
    /// each attempt counts.
    pub fn damaged_messages(&self) -> u64 {
        self.damaged_messages.load(Ordering::Relaxed)
    }

    pub(super) fn message_damaged(&self) {
        self.damaged_messages.fetch_add(1, Ordering::Relaxed);
    }
}
