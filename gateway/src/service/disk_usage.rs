//! How full the data directory's disk is, for metrics, the API, the console and the log: one
//! reading and one rule for everyone.
//!
//! Free space is counted as the refusal rule counts it (`service::disk`): what the file
//! system has free outside the space reserve. Two thresholds judge it: below
//! `[limits] warn_free_disk_mib` it is low (the log warns, monitoring says WARNING), below
//! `[limits] min_free_disk_mib` new mail is refused (CRITICAL).

use std::time::Duration;

use super::Gateway;
use crate::net::ShutdownSignal;

/// How often the running gateway looks at the free space for its log warning.
pub const DISK_WATCH_PERIOD: Duration = Duration::from_secs(60);

/// The disk now. Each part is `None` when it cannot be read (no space accounting, a file
/// system that does not say): a reading that failed is no reason to fail the whole answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DiskUsage {
    /// Bytes free on the data directory's file system, the space reserve not counted.
    pub free: Option<u64>,
    /// The file system's size.
    pub total: Option<u64>,
    /// Bytes the store file takes.
    pub store: Option<u64>,
}

/// How free space compares with the thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DiskLevel {
    Ok,
    /// Below the warning threshold.
    Low,
    /// Below the minimum: new mail is refused.
    Critical,
}

impl DiskLevel {
    /// `free` against a warning threshold and the minimum (both "less than" limits).
    pub fn of(free: u64, warn: u64, min: u64) -> Self {
        if free < min {
            DiskLevel::Critical
        } else if free < warn {
            DiskLevel::Low
        } else {
            DiskLevel::Ok
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DiskLevel::Ok => "ok",
            DiskLevel::Low => "warning",
            DiskLevel::Critical => "critical",
        }
    }
}

impl Gateway {
    /// Free space, the file system's size and the store's size, read now. Reads only: the
    /// reserve is not taken back here (the intake check does that).
    pub fn disk_usage(&self) -> DiskUsage {
        DiskUsage {
            free: self.free_space(),
            total: self.store.space().and_then(|s| s.total().ok().flatten()),
            store: std::fs::metadata(self.store.path()).map(|m| m.len()).ok(),
        }
    }

    /// Free space for mail, read now; `None` when it cannot be read.
    fn free_space(&self) -> Option<u64> {
        self.store
            .space()
            .and_then(|s| s.status().ok())
            .map(|s| s.room())
    }

    /// `[limits] warn_free_disk_mib` in bytes, never below the minimum.
    pub fn warn_free_disk(&self) -> u64 {
        self.options.warn_free_disk.max(self.options.min_free_disk)
    }

    /// `[limits] min_free_disk_mib` in bytes.
    pub fn min_free_disk(&self) -> u64 {
        self.options.min_free_disk
    }

    /// How `free` bytes compare with this gateway's thresholds.
    pub fn disk_level(&self, free: u64) -> DiskLevel {
        DiskLevel::of(free, self.warn_free_disk(), self.min_free_disk())
    }

    /// Looks at the free space every `period` until shutdown and logs when it falls below
    /// the warning threshold and when it recovers, once per crossing.
    pub async fn watch_disk(self, period: Duration, mut shutdown: ShutdownSignal) {
        let warn = self.warn_free_disk();
        let watch = watch_free_space(move || self.free_space(), warn, period, log_crossing);
        tokio::select! {
            () = watch => {}
            () = shutdown.triggered() => {}
        }
    }
}

/// A change of side of the warning threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskCrossing {
    /// Free space fell below the threshold.
    Low { free: u64, warn: u64 },
    /// Free space is at or above it again.
    Recovered { free: u64, warn: u64 },
}

/// Remembers which side of the threshold the last reading was on, so that a disk that stays
/// low is reported once, not at every look.
#[derive(Debug, Clone)]
pub struct DiskWatch {
    warn: u64,
    low: bool,
}

impl DiskWatch {
    /// Starts on the good side: a disk already low at start is reported at the first look.
    pub fn new(warn: u64) -> Self {
        Self { warn, low: false }
    }

    /// A reading; the crossing if it changed sides. An unreadable one changes nothing.
    pub fn observe(&mut self, free: Option<u64>) -> Option<DiskCrossing> {
        let free = free?;
        let low = free < self.warn;
        if low == self.low {
            return None;
        }
        self.low = low;
        let warn = self.warn;
        Some(if low {
            DiskCrossing::Low { free, warn }
        } else {
            DiskCrossing::Recovered { free, warn }
        })
    }
}

/// Reads `free` at once and then every `period`, handing each crossing to `report`.
/// Never returns; the caller ends it.
pub async fn watch_free_space(
    free: impl Fn() -> Option<u64>,
    warn: u64,
    period: Duration,
    mut report: impl FnMut(DiskCrossing),
) {
    let mut watch = DiskWatch::new(warn);
    let mut ticks = tokio::time::interval(period);
    // After a stall (a suspended machine), one look is enough, not a burst.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Some(crossing) = watch.observe(free()) {
            report(crossing);
        }
    }
}

fn log_crossing(crossing: DiskCrossing) {
    match crossing {
        DiskCrossing::Low { free, warn } => tracing::warn!(
            free_bytes = free,
            warn_free_bytes = warn,
            "disk space low: less than [limits] warn_free_disk_mib free on the data \
             directory's file system; new mail is refused below min_free_disk_mib"
        ),
        DiskCrossing::Recovered { free, warn } => tracing::info!(
            free_bytes = free,
            warn_free_bytes = warn,
            "disk space above the warning threshold again"
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::{Arc, Mutex};

    use super::super::test_support::gateway_on;
    use super::*;
    use crate::store::space::testing::FakeVolume;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn the_level_is_critical_below_the_minimum_and_low_below_the_warning() {
        assert_eq!(DiskLevel::of(100, 50, 10), DiskLevel::Ok);
        assert_eq!(DiskLevel::of(50, 50, 10), DiskLevel::Ok);
        assert_eq!(DiskLevel::of(49, 50, 10), DiskLevel::Low);
        assert_eq!(DiskLevel::of(10, 50, 10), DiskLevel::Low);
        assert_eq!(DiskLevel::of(9, 50, 10), DiskLevel::Critical);
        assert_eq!(DiskLevel::of(0, 0, 0), DiskLevel::Ok);
    }

    #[test]
    fn a_low_disk_is_reported_once_per_crossing() {
        let mut watch = DiskWatch::new(100);
        assert_eq!(watch.observe(Some(500)), None);
        assert_eq!(
            watch.observe(Some(99)),
            Some(DiskCrossing::Low {
                free: 99,
                warn: 100
            })
        );
        assert_eq!(watch.observe(Some(50)), None);
        assert_eq!(
            watch.observe(None),
            None,
            "an unreadable disk changes nothing"
        );
        assert_eq!(watch.observe(Some(0)), None);
        assert_eq!(
            watch.observe(Some(100)),
            Some(DiskCrossing::Recovered {
                free: 100,
                warn: 100
            })
        );
        assert_eq!(watch.observe(Some(1000)), None);
        assert!(matches!(
            watch.observe(Some(1)),
            Some(DiskCrossing::Low { .. })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn the_watcher_looks_every_period_and_warns_only_when_the_side_changes() {
        // Free space at each look, in MiB; the warning threshold is 100 MiB.
        let script = [500, 90, 80, 70, 60, 200, 300, 50, 40];
        let volume = FakeVolume::with_free(script[0] * MIB);
        let (_dir, gw) = gateway_on(volume.clone(), 0, 10 * MIB);
        let looks = Arc::new(Mutex::new(Vec::new()));
        let crossings = Arc::new(Mutex::new(Vec::new()));
        let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
        let watcher = {
            let (looks, crossings) = (looks.clone(), crossings.clone());
            let start = tokio::time::Instant::now();
            let source = move || {
                let mut looks = looks.lock().unwrap();
                looks.push(start.elapsed());
                let free = script.get(looks.len()).copied();
                let reading = gw.disk_usage().free;
                match free {
                    // The next look's free space, set now so the test drives the disk.
                    Some(next) => volume.free.store(next * MIB, Ordering::SeqCst),
                    None => {
                        let _ = done.send(());
                    }
                }
                reading
            };
            tokio::spawn(watch_free_space(
                source,
                100 * MIB,
                DISK_WATCH_PERIOD,
                move |c| crossings.lock().unwrap().push(c),
            ))
        };
        finished.recv().await.unwrap();
        watcher.abort();

        let looks = looks.lock().unwrap().clone();
        let expected: Vec<Duration> = (0..script.len() as u32)
            .map(|i| DISK_WATCH_PERIOD * i)
            .collect();
        assert_eq!(looks, expected, "one look a minute, the first at once");
        let crossings = crossings.lock().unwrap().clone();
        let warn = 100 * MIB;
        assert_eq!(
            crossings,
            [
                DiskCrossing::Low {
                    free: 90 * MIB,
                    warn
                },
                DiskCrossing::Recovered {
                    free: 200 * MIB,
                    warn
                },
                DiskCrossing::Low {
                    free: 50 * MIB,
                    warn
                },
            ]
        );
    }

    #[tokio::test]
    async fn usage_reads_the_free_space_outside_the_reserve_and_the_store_size() {
        let volume = FakeVolume::with_free(100 * MIB);
        let (_dir, gw) = gateway_on(volume.clone(), 20 * MIB, 30 * MIB);
        gw.check_intake(0).unwrap();
        let usage = gw.disk_usage();
        assert_eq!(usage.free, Some(80 * MIB));
        assert_eq!(usage.total, None, "the fake volume does not tell its size");
        assert!(usage.store.is_some_and(|bytes| bytes > 0));
        assert_eq!(gw.disk_level(usage.free.unwrap()), DiskLevel::Ok);
        assert_eq!(gw.disk_level(29 * MIB), DiskLevel::Critical);
        // Without a warning threshold of its own, the warning is the minimum.
        assert_eq!(gw.warn_free_disk(), 30 * MIB);
    }
}
