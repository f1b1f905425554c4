//! Gauges computed at scrape time from the service, the store's volume and the certificate.
//!
//! Mailbox gauges come from one read of the store (the same one `GetMailboxes` makes: each
//! mailbox's record holds its message count and bytes, and the oldest message is the first
//! row of its range). Per-mailbox series are written only while there are at most
//! [`ScrapeSources::per_mailbox_limit`] mailboxes: a label per mailbox id beyond that would
//! make every scrape and the scraper's database grow with the customer base. The totals are
//! always there.

use std::sync::atomic::AtomicU64;
use std::time::SystemTime;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::service::{Gateway, MailboxInfo};
use crate::store::MailboxStatus;
use crate::tls::CertResolver;

/// What a scrape reads.
pub struct ScrapeSources<'a> {
    pub gateway: &'a Gateway,
    /// The certificate the listeners present; `None` where there is none (tests).
    pub certificate: Option<&'a CertResolver>,
    pub per_mailbox_limit: u32,
    pub now: SystemTime,
}

type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MailboxLabel {
    mailbox: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

/// The whole text a scrape gets: the gateway's counters, and the gauges of this moment read
/// from `gateway` and the presented `certificate`.
pub fn scrape(gateway: &Gateway, certificate: Option<&CertResolver>) -> String {
    let metrics = gateway.metrics();
    metrics.render(&registry(&ScrapeSources {
        gateway,
        certificate,
        per_mailbox_limit: metrics.per_mailbox_limit(),
        now: SystemTime::now(),
    }))
}

/// A registry holding this moment's gauges.
fn registry(sources: &ScrapeSources<'_>) -> Registry {
    let mut registry = Registry::with_prefix("gateway");
    let gateway = sources.gateway;
    match gateway.list_mailboxes() {
        Ok(mailboxes) => mailbox_gauges(
            &mut registry,
            &mailboxes,
            unix_millis(sources.now),
            sources.per_mailbox_limit,
        ),
        // The store is reopening after a storage error: the other gauges still help.
        Err(e) => tracing::debug!(error = %e, "metrics: mailboxes not readable now"),
    }
    // The same reading GetServerInfo and the console show (`Gateway::disk_usage`).
    let disk = gateway.disk_usage();
    if let Some(bytes) = disk.store {
        let size: Gauge = Gauge::default();
        size.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        registry.register_with_unit(
            "store_size",
            "Size of the store file (every mailbox's encrypted messages and the records)",
            Unit::Bytes,
            size,
        );
    }
    if let Some(bytes) = disk.free {
        let free: Gauge = Gauge::default();
        free.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        registry.register_with_unit(
            "disk_free",
            "Free space on the data directory's file system, the space reserve not counted",
            Unit::Bytes,
            free,
        );
    }
    let spool: Gauge = Gauge::default();
    spool.set(i64::try_from(gateway.spool_used()).unwrap_or(i64::MAX));
    registry.register_with_unit(
        "spool",
        "Bytes that messages being received hold in spool files now",
        Unit::Bytes,
        spool,
    );
    registry.register(
        "damaged_messages",
        "Reads of a stored message that found it damaged (each attempt counts)",
        ConstCounter::new(gateway.stats().damaged_messages()),
    );
    if let Some(resolver) = sources.certificate {
        let seconds = seconds_until(resolver.current().not_after(), sources.now);
        let expiry: FloatGauge = Gauge::default();
        expiry.set(seconds);
        registry.register_with_unit(
            "certificate_expiry",
            "Seconds until the presented certificate expires (negative once it has)",
            Unit::Seconds,
            expiry,
        );
    }
    registry
}

/// Mailbox counts by status, messages and bytes waiting, the oldest message's age; per
/// mailbox too while there are at most `limit` mailboxes.
fn mailbox_gauges(registry: &mut Registry, mailboxes: &[MailboxInfo], now_ms: u64, limit: u32) {
    let by_status: Family<StatusLabel, Gauge> = Family::default();
    for status in [MailboxStatus::Active, MailboxStatus::Suspended] {
        let count = mailboxes.iter().filter(|m| m.status == status).count();
        by_status
            .get_or_create(&StatusLabel {
                status: status_name(status),
            })
            .set(i64::try_from(count).unwrap_or(i64::MAX));
    }
    registry.register("mailboxes", "Mailboxes, by status", by_status);

    let age = |m: &MailboxInfo| {
        m.oldest_message_at
            .map(|at| now_ms.saturating_sub(at) as f64 / 1000.0)
    };
    let waiting: Gauge = Gauge::default();
    let waiting_bytes: Gauge = Gauge::default();
    let oldest: FloatGauge = Gauge::default();
    let total = |f: fn(&MailboxInfo) -> u64| {
        i64::try_from(mailboxes.iter().map(f).sum::<u64>()).unwrap_or(i64::MAX)
    };
    waiting.set(total(|m| m.message_count));
    waiting_bytes.set(total(|m| m.message_bytes));
    oldest.set(mailboxes.iter().filter_map(age).fold(0.0, f64::max));
    registry.register(
        "messages_waiting",
        "Messages stored and not yet picked up, all mailboxes",
        waiting,
    );
    registry.register_with_unit(
        "messages_waiting",
        "Bytes of the messages not yet picked up (encrypted size), all mailboxes",
        Unit::Bytes,
        waiting_bytes,
    );
    registry.register_with_unit(
        "oldest_message_age",
        "Age of the oldest message not yet picked up, any mailbox (0 when none waits)",
        Unit::Seconds,
        oldest,
    );

    if mailboxes.len() > limit as usize {
        return;
    }
    let per_count: Family<MailboxLabel, Gauge> = Family::default();
    let per_age: Family<MailboxLabel, FloatGauge> = Family::default();
    for mailbox in mailboxes {
        let label = MailboxLabel {
            mailbox: mailbox.id.to_string(),
        };
        per_count
            .get_or_create(&label)
            .set(i64::try_from(mailbox.message_count).unwrap_or(i64::MAX));
        per_age
            .get_or_create(&label)
            .set(age(mailbox).unwrap_or(0.0));
    }
    registry.register(
        "mailbox_messages_waiting",
        "Messages not yet picked up, per mailbox (only while there are at most [metrics] per_mailbox_limit mailboxes)",
        per_count,
    );
    registry.register_with_unit(
        "mailbox_oldest_message_age",
        "Age of the mailbox's oldest message not yet picked up (0 when empty), per mailbox (same limit)",
        Unit::Seconds,
        per_age,
    );
}

fn status_name(status: MailboxStatus) -> &'static str {
    match status {
        MailboxStatus::Active => "active",
        MailboxStatus::Suspended => "suspended",
    }
}

fn unix_millis(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn seconds_until(at: SystemTime, now: SystemTime) -> f64 {
    match at.duration_since(now) {
        Ok(left) => left.as_secs_f64(),
        Err(past) => -past.duration().as_secs_f64(),
    }
}

#[cfg(test)]
pub(super) fn mailbox_text(mailboxes: &[MailboxInfo], now_ms: u64, limit: u32) -> String {
    let mut registry = Registry::with_prefix("gateway");
    mailbox_gauges(&mut registry, mailboxes, now_ms, limit);
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)
        .expect("a String takes any text");
    text
}
