//! When to renew the ACME certificate, and the loop that does it.
//!
//! The schedule is pure: [`RenewalPolicy::due_at`] says when a certificate is due,
//! [`backoff_delay`] how long to wait after a failure. [`Renewal`] is the loop around them,
//! generic over a [`Clock`] (so tests run a simulated year in microseconds) and an [`Issue`]r
//! (the ACME client, or a fake). Its state lives in `<data_dir>/tls/acme/renewal.json`, so a
//! restart neither retries at once after a failure (hammering the CA) nor forgets that a
//! renewal is due.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::{watch, Notify};

use crate::tls::self_signed::{create_private_dir, write_atomically};
use crate::tls::{CertifiedMaterial, TlsError};

const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// The first wait after a failure.
pub const BACKOFF_START: Duration = Duration::from_secs(5 * 60);
/// The longest wait after failures, and the wait after a permanent error.
pub const BACKOFF_CAP: Duration = DAY;
/// Jitter, as a fraction of the wait, either way: spreads many gateways that failed together
/// (say, during a CA outage) so they do not all come back at the same second.
pub const JITTER: f64 = 0.2;
/// A CA's Retry-After is honoured up to this long; a larger value is more likely a broken
/// header than a plan, and the certificate may expire meanwhile.
pub const RETRY_AFTER_LIMIT: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The renewal state file, beside the ACME certificate.
pub const STATE_FILE: &str = "renewal.json";

/// `<data_dir>/tls/acme/renewal.json`.
pub fn state_path(data_dir: &Path) -> PathBuf {
    super::acme_dir(data_dir).join(STATE_FILE)
}

/// When a certificate is due for renewal: `renew_after` after its start, or `renew_before`
/// ahead of its end, whichever comes first (`[tls] acme_renew_after_days`,
/// `acme_renew_before_days`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RenewalPolicy {
    pub renew_after: Duration,
    pub renew_before: Duration,
}

impl Default for RenewalPolicy {
    /// 60 days old or 30 days left: Let's Encrypt's 90-day certificates renew at day 60.
    fn default() -> Self {
        Self::from_days(60, 30)
    }
}

impl RenewalPolicy {
    pub fn from_days(renew_after_days: u32, renew_before_days: u32) -> Self {
        Self {
            renew_after: DAY * renew_after_days,
            renew_before: DAY * renew_before_days,
        }
    }

    /// When a certificate valid from `not_before` to `not_after` is due.
    ///
    /// A `renew_before` that reaches into the first third of the lifetime (say, 30 days
    /// before the end of a 6-day certificate, as CAs move to shorter ones) would renew right
    /// after every issuance; then "two thirds of the lifetime", which CAs recommend, takes
    /// its place.
    pub fn due_at(&self, not_before: SystemTime, not_after: SystemTime) -> SystemTime {
        let lifetime = not_after
            .duration_since(not_before)
            .unwrap_or(Duration::ZERO);
        let by_age = not_before
            .checked_add(self.renew_after)
            .unwrap_or(not_after);
        let by_end = match not_after.checked_sub(self.renew_before) {
            Some(t) if t >= not_before + lifetime / 3 => t,
            _ => not_before + lifetime * 2 / 3,
        };
        by_age.min(by_end)
    }
}

/// How long to wait after the `failures`-th consecutive failure (1 for the first).
///
/// Doubles from [`BACKOFF_START`] up to [`BACKOFF_CAP`]; a permanent error waits the cap. The
/// wait is spread by `jitter` (in -1..=1, scaled to ±[`JITTER`]) but never below the start
/// nor above the cap. A CA's `retry_after` longer than that wins (up to
/// [`RETRY_AFTER_LIMIT`]), spread upwards only, since the CA said "not before".
pub fn backoff_delay(
    failures: u32,
    retry_after: Option<Duration>,
    permanent: bool,
    jitter: f64,
) -> Duration {
    let jitter = if jitter.is_finite() {
        jitter.clamp(-1.0, 1.0)
    } else {
        0.0
    };
    let base = if permanent {
        BACKOFF_CAP
    } else {
        // 5 min × 2^(failures-1), capped; the shift is bounded so it cannot overflow.
        let doublings = failures.saturating_sub(1).min(20);
        BACKOFF_START
            .saturating_mul(1u32 << doublings)
            .min(BACKOFF_CAP)
    };
    let spread = base
        .mul_f64(1.0 + JITTER * jitter)
        .clamp(BACKOFF_START, BACKOFF_CAP);
    let delay = match retry_after.map(|r| r.min(RETRY_AFTER_LIMIT)) {
        Some(r) if r > spread => r.mul_f64(1.0 + JITTER * jitter.abs()),
        _ => spread,
    };
    // Whole seconds, rounded up: what the state file stores, and never earlier than asked.
    Duration::from_secs(delay.as_secs() + u64::from(delay.subsec_nanos() > 0))
}

/// What the renewal loop remembers across restarts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RenewalState {
    /// When a certificate was last obtained by renewal.
    pub last_success: Option<SystemTime>,
    /// When the last attempt, successful or not, ended.
    pub last_attempt: Option<SystemTime>,
    /// Failures since the last success; 0 after a success.
    pub consecutive_failures: u32,
    /// When the next attempt is planned (None before the loop first planned one).
    pub next_attempt: Option<SystemTime>,
    /// The last failure in words, for the administrator; None after a success.
    pub last_error: Option<String>,
}

/// The file's shape: seconds since the epoch, so it stays readable with `jq`.
#[derive(Serialize, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct StateFile {
    last_success: Option<u64>,
    last_attempt: Option<u64>,
    consecutive_failures: u32,
    next_attempt: Option<u64>,
    last_error: Option<String>,
}

/// Rounded up, so a stored plan is never earlier than the one in memory.
fn to_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

fn from_secs(secs: u64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_secs(secs))
        .unwrap_or(UNIX_EPOCH)
}

impl RenewalState {
    /// Reads the state file. A missing file is a fresh start; an unreadable or corrupt one
    /// is logged and treated the same way: renewal must go on, and the worst case is one
    /// attempt earlier than the lost backoff would have allowed.
    pub fn load(path: &Path) -> Self {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Self::default(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the ACME renewal state; starting afresh");
                return Self::default();
            }
        };
        match serde_json::from_slice::<StateFile>(&bytes) {
            Ok(file) => Self {
                last_success: file.last_success.map(from_secs),
                last_attempt: file.last_attempt.map(from_secs),
                consecutive_failures: file.consecutive_failures,
                next_attempt: file.next_attempt.map(from_secs),
                last_error: file.last_error,
            },
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "the ACME renewal state is corrupt; starting afresh");
                Self::default()
            }
        }
    }

    /// Writes the state file atomically, mode 0600 (the error text may name hosts).
    pub fn save(&self, path: &Path) -> Result<(), TlsError> {
        let file = StateFile {
            last_success: self.last_success.map(to_secs),
            last_attempt: self.last_attempt.map(to_secs),
            consecutive_failures: self.consecutive_failures,
            next_attempt: self.next_attempt.map(to_secs),
            last_error: self.last_error.clone(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| TlsError::Write {
            path: path.to_owned(),
            source: std::io::Error::other(e),
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        create_private_dir(dir)?;
        write_atomically(dir, path, &bytes, 0o600)
    }
}

/// When the first attempt after a start should be: a due certificate with failures on
/// record continues their backoff (never earlier than planned), a due one without is
/// renewed now, one not due waits for its time.
pub fn first_attempt(
    policy: &RenewalPolicy,
    not_before: SystemTime,
    not_after: SystemTime,
    state: &RenewalState,
    now: SystemTime,
) -> SystemTime {
    let due = policy.due_at(not_before, not_after);
    if due > now {
        return due;
    }
    match state.next_attempt {
        // Bounded, so a clock that jumped back or a hand-edited file cannot stop renewal.
        Some(planned) if state.consecutive_failures > 0 => {
            planned.clamp(now, now + BACKOFF_CAP.max(RETRY_AFTER_LIMIT))
        }
        _ => now,
    }
}

/// Wall-clock time for the loop; tests use a fake one.
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;
    /// Returns at `deadline` or later.
    fn sleep_until(&self, deadline: SystemTime) -> impl Future<Output = ()> + Send;
}

/// The real clock. Sleeps in steps of at most an hour, re-reading the wall clock, so a
/// suspended machine or a clock correction does not push the renewal out by the gap.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    async fn sleep_until(&self, deadline: SystemTime) {
        const STEP: Duration = Duration::from_secs(3600);
        while let Ok(left) = deadline.duration_since(SystemTime::now()) {
            if left.is_zero() {
                break;
            }
            tokio::time::sleep(left.min(STEP)).await;
        }
    }
}

/// What the loop needs to know about a failed issuance. The ACME client's error implements
/// it; the `Display` text is shown to the administrator as it is.
pub trait RenewalError: fmt::Display {
    /// The CA asked us to wait this long (Retry-After, rate limits).
    fn retry_after(&self) -> Option<Duration>;
    /// Retrying the same order soon will not help (e.g. the CA refuses a name).
    fn is_permanent(&self) -> bool;
}

/// Obtains a new certificate (and stores it): the ACME client, in tests a fake.
pub trait Issue: Send + Sync {
    type Error: RenewalError + Send;
    fn issue(&self) -> impl Future<Output = Result<CertifiedMaterial, Self::Error>> + Send;
}

/// The end of one attempt, as [`RenewalHandle::renew_now`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The new certificate's SHA-256 fingerprint.
    Renewed { fingerprint: String },
    /// The error in words, and when the next attempt is planned.
    Failed {
        error: String,
        next_attempt: SystemTime,
    },
}

struct Shared {
    state: Mutex<RenewalState>,
    /// Wakes the loop for an attempt now.
    wake: Notify,
}

/// Attempts finished so far, with the last one's outcome. Only the loop holds the sender,
/// so a handle sees the loop end (task aborted) as a closed channel instead of waiting on.
type Finished = (u64, Option<AttemptOutcome>);

/// Looks at the loop from outside: its state for display (`GetCertificateInfo`, the
/// console) and "renew now". Cheap to clone.
#[derive(Clone)]
pub struct RenewalHandle {
    shared: Arc<Shared>,
    finished: watch::Receiver<Finished>,
}

impl RenewalHandle {
    /// A copy of the current state (next attempt, failures, last error).
    pub fn state(&self) -> RenewalState {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Asks the loop for an attempt now and waits for its outcome. The loop runs it like a
    /// scheduled one (same code, same state), so `RenewCertificate` and the schedule agree.
    /// None when the loop ended before answering.
    pub async fn renew_now(&self) -> Option<AttemptOutcome> {
        let mut finished = self.finished.clone();
        let before = finished.borrow_and_update().0;
        self.shared.wake.notify_one();
        loop {
            if finished.changed().await.is_err() {
                return None;
            }
            let (count, outcome) = finished.borrow_and_update().clone();
            if count > before {
                return outcome;
            }
        }
    }
}

/// The renewal loop: sleeps until the certificate is due (or the backoff is over), asks the
/// issuer, hands a new certificate to the callback, records the outcome.
pub struct Renewal<C, I> {
    policy: RenewalPolicy,
    clock: C,
    issuer: I,
    state_path: PathBuf,
    shared: Arc<Shared>,
    finished: watch::Sender<Finished>,
    rng: StdRng,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl<C: Clock, I: Issue> Renewal<C, I> {
    /// A loop for `current` (the certificate in use), its state read from
    /// `<data_dir>/tls/acme/renewal.json`. `seed` drives the jitter: random in production
    /// (so gateways spread), fixed in tests.
    pub fn new(
        policy: RenewalPolicy,
        clock: C,
        issuer: I,
        data_dir: &Path,
        current: &CertifiedMaterial,
        seed: u64,
    ) -> Self {
        let state_path = state_path(data_dir);
        let mut state = RenewalState::load(&state_path);
        let info = current.info();
        state.next_attempt = Some(first_attempt(
            &policy,
            info.not_before,
            info.not_after,
            &state,
            clock.now(),
        ));
        let (finished, _) = watch::channel((0, None));
        Self {
            policy,
            clock,
            issuer,
            state_path,
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                wake: Notify::new(),
            }),
            finished,
            rng: StdRng::seed_from_u64(seed),
            not_before: info.not_before,
            not_after: info.not_after,
        }
    }

    pub fn handle(&self) -> RenewalHandle {
        RenewalHandle {
            shared: Arc::clone(&self.shared),
            finished: self.finished.subscribe(),
        }
    }

    /// When the next attempt is planned.
    pub fn next_attempt(&self) -> SystemTime {
        self.lock().next_attempt.unwrap_or(UNIX_EPOCH)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RenewalState> {
        // The state is plain data: a panic elsewhere cannot leave it half-updated.
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs until the future is dropped (the caller aborts the task at shutdown; every
    /// state write is complete before the next await, so that is safe).
    pub async fn run<F>(mut self, mut on_renewed: F)
    where
        F: FnMut(CertifiedMaterial) + Send,
    {
        loop {
            let next = self.next_attempt();
            tokio::select! {
                () = self.clock.sleep_until(next) => {}
                () = self.shared.wake.notified() => {}
            }
            self.attempt(&mut on_renewed).await;
        }
    }

    /// One attempt now, whatever the schedule says; records the outcome and plans the
    /// next one.
    pub async fn attempt<F>(&mut self, on_renewed: &mut F) -> AttemptOutcome
    where
        F: FnMut(CertifiedMaterial) + Send,
    {
        tracing::info!("renewing the ACME certificate");
        let result = self.issuer.issue().await;
        let now = self.clock.now();
        let outcome = match result {
            Ok(material) => {
                let info = material.info();
                self.not_before = info.not_before;
                self.not_after = info.not_after;
                let due = self.policy.due_at(self.not_before, self.not_after);
                let fingerprint = material.fingerprint().to_owned();
                tracing::info!(
                    sha256 = %fingerprint,
                    not_after = %time::OffsetDateTime::from(info.not_after),
                    next_renewal = %time::OffsetDateTime::from(due),
                    "renewed the ACME certificate"
                );
                on_renewed(material);
                let mut state = self.lock();
                state.last_success = Some(now);
                state.last_attempt = Some(now);
                state.consecutive_failures = 0;
                state.last_error = None;
                state.next_attempt = Some(due.max(now));
                AttemptOutcome::Renewed { fingerprint }
            }
            Err(error) => {
                let jitter = self.rng.random_range(-1.0..=1.0);
                let mut state = self.lock();
                state.consecutive_failures = state.consecutive_failures.saturating_add(1);
                let delay = backoff_delay(
                    state.consecutive_failures,
                    error.retry_after(),
                    error.is_permanent(),
                    jitter,
                );
                let next = now + delay;
                let text = error.to_string();
                tracing::warn!(
                    error = %text,
                    failures = state.consecutive_failures,
                    retry_in_secs = delay.as_secs(),
                    "ACME certificate renewal failed; the current certificate stays in use"
                );
                state.last_attempt = Some(now);
                state.next_attempt = Some(next);
                state.last_error = Some(text.clone());
                AttemptOutcome::Failed {
                    error: text,
                    next_attempt: next,
                }
            }
        };
        let snapshot = self.lock().clone();
        // A state that cannot be written costs at most an early retry after a restart; the
        // renewal itself must not stop over it.
        if let Err(e) = snapshot.save(&self.state_path) {
            tracing::error!(error = %e, "cannot store the ACME renewal state");
        }
        self.finished.send_modify(|(count, last)| {
            *count += 1;
            *last = Some(outcome.clone());
        });
        outcome
    }
}

#[cfg(test)]
mod tests;
