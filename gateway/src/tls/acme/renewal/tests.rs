//! The renewal schedule and loop under a fake clock: a simulated year of 90-day
//! certificates, a CA outage, Retry-After, permanent errors, restarts and a corrupt state file.

use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;

use super::*;
use crate::tls::CertificateInfo;

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const SEED: u64 = 0x5eed_0014;

/// 2026-01-01T00:00:00Z.
fn t0() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

/// A certificate valid from `not_before` for `lifetime`. The key is real (rustls wants one);
/// only the dates differ between certificates, and the fingerprint tells them apart.
fn certificate(not_before: SystemTime, lifetime: Duration) -> CertifiedMaterial {
    static KEY: std::sync::OnceLock<CertifiedMaterial> = std::sync::OnceLock::new();
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    let base = KEY.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        crate::tls::create_self_signed(dir.path(), "mail.example.com", &[]).unwrap()
    });
    let info = CertificateInfo {
        not_before,
        not_after: not_before + lifetime,
        sha256_fingerprint: format!("{:064x}", SERIAL.fetch_add(1, Ordering::Relaxed)),
        ..base.info().clone()
    };
    CertifiedMaterial::new(Arc::clone(base.certified_key()), info)
}

/// A clock whose sleeps return at once, moving time to the deadline. Past `horizon` it never
/// returns, and tells the test the simulation is over.
#[derive(Clone)]
struct FakeClock {
    now: Arc<Mutex<SystemTime>>,
    horizon: SystemTime,
    over: Arc<Notify>,
}

impl FakeClock {
    fn new(start: SystemTime, horizon: SystemTime) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
            horizon,
            over: Arc::new(Notify::new()),
        }
    }

    fn set(&self, t: SystemTime) {
        *self.now.lock().unwrap() = t;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap()
    }

    async fn sleep_until(&self, deadline: SystemTime) {
        if deadline > self.horizon {
            self.over.notify_one();
            std::future::pending::<()>().await;
        }
        let mut now = self.now.lock().unwrap();
        *now = (*now).max(deadline);
    }
}

#[derive(Debug, Clone)]
struct FakeError {
    retry_after: Option<Duration>,
    permanent: bool,
}

impl fmt::Display for FakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("cannot reach the ACME server at https://acme.test/dir: connection refused")
    }
}

impl RenewalError for FakeError {
    fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
    fn is_permanent(&self) -> bool {
        self.permanent
    }
}

type Answer = dyn Fn(SystemTime) -> Result<(), FakeError> + Send + Sync;

/// The CA: answers by the clock's time, issues 90-day certificates, records every attempt.
#[derive(Clone)]
struct FakeCa {
    clock: FakeClock,
    answer: Arc<Answer>,
    attempts: Arc<Mutex<Vec<SystemTime>>>,
}

impl FakeCa {
    fn new(
        clock: &FakeClock,
        answer: impl Fn(SystemTime) -> Result<(), FakeError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            clock: clock.clone(),
            answer: Arc::new(answer),
            attempts: Arc::default(),
        }
    }

    fn attempts(&self) -> Vec<SystemTime> {
        self.attempts.lock().unwrap().clone()
    }
}

impl Issue for FakeCa {
    type Error = FakeError;

    async fn issue(&self) -> Result<CertifiedMaterial, FakeError> {
        let now = self.clock.now();
        self.attempts.lock().unwrap().push(now);
        (self.answer)(now)?;
        Ok(certificate(now, 90 * DAY))
    }
}

fn down() -> FakeError {
    FakeError {
        retry_after: None,
        permanent: false,
    }
}

/// Runs the loop until the clock passes its horizon; returns the certificates handed out.
async fn simulate(
    renewal: Renewal<FakeClock, FakeCa>,
    clock: &FakeClock,
) -> Vec<CertifiedMaterial> {
    let mut renewed = Vec::new();
    let over = Arc::clone(&clock.over);
    tokio::select! {
        () = renewal.run(|m| renewed.push(m)) => unreachable!("the loop never ends by itself"),
        () = over.notified() => {}
    }
    renewed
}

#[tokio::test]
async fn renews_inside_the_window_over_a_simulated_year_of_90_day_certificates() {
    let data = tempfile::tempdir().unwrap();
    let clock = FakeClock::new(t0(), t0() + 365 * DAY);
    let ca = FakeCa::new(&clock, |_| Ok(()));
    let first = certificate(t0(), 90 * DAY);
    let renewal = Renewal::new(
        RenewalPolicy::default(),
        clock.clone(),
        ca.clone(),
        data.path(),
        &first,
        SEED,
    );
    let renewed = simulate(renewal, &clock).await;

    // Day 60, 120, ..., 360: one issuance every 60 days, none in between.
    let attempts = ca.attempts();
    assert_eq!(attempts.len(), 6, "{attempts:?}");
    assert_eq!(renewed.len(), 6);
    let mut current = first;
    for (at, new) in attempts.iter().zip(&renewed) {
        let info = current.info();
        let age = at.duration_since(info.not_before).unwrap();
        let left = info.not_after.duration_since(*at).unwrap();
        assert!(
            age >= 60 * DAY || left <= 30 * DAY,
            "renewed too early at {at:?}"
        );
        assert!(
            age <= 60 * DAY && left >= 30 * DAY,
            "renewed too late at {at:?}"
        );
        current = new.clone();
    }
    let state = RenewalState::load(&state_path(data.path()));
    assert_eq!(state.consecutive_failures, 0);
    assert_eq!(state.last_success, attempts.last().copied());
    assert_eq!(state.next_attempt, Some(t0() + 420 * DAY));
}

#[tokio::test]
async fn a_three_day_ca_outage_is_retried_with_growing_gaps_and_few_attempts() {
    let data = tempfile::tempdir().unwrap();
    let due = t0() + 60 * DAY;
    let back = due + 3 * DAY;
    let clock = FakeClock::new(t0(), due + 5 * DAY);
    let ca = FakeCa::new(
        &clock,
        move |now| if now < back { Err(down()) } else { Ok(()) },
    );
    let renewal = Renewal::new(
        RenewalPolicy::default(),
        clock.clone(),
        ca.clone(),
        data.path(),
        &certificate(t0(), 90 * DAY),
        SEED,
    );
    let renewed = simulate(renewal, &clock).await;

    let attempts = ca.attempts();
    assert_eq!(attempts[0], due);
    let gaps: Vec<Duration> = attempts
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).unwrap())
        .collect();
    assert!(gaps.iter().all(|g| *g >= BACKOFF_START), "{gaps:?}");
    assert!(gaps.iter().all(|g| *g <= BACKOFF_CAP), "{gaps:?}");
    // Doubling beats ±20 % jitter, so the gaps grow until they reach the cap's range.
    for w in gaps.windows(2) {
        if w[0] < BACKOFF_CAP.mul_f64(1.0 - JITTER) {
            assert!(w[1] > w[0], "gaps do not grow: {gaps:?}");
        }
    }
    // 5 min doubling to the 24 h cap takes 42.6 h (±20 %) over 10 attempts, then zero to
    // two more, about a day apart, until the CA is back: 10 to 12 attempts in 3 days
    // (11 without jitter), where a retry every 5 minutes would make 864.
    let during_outage = attempts.iter().filter(|t| **t < back).count();
    assert!(
        (10..=12).contains(&during_outage),
        "{during_outage}: {attempts:?}"
    );
    // The first attempt after the CA is back succeeds, within a day of its return.
    assert_eq!(renewed.len(), 1);
    assert_eq!(attempts.len(), during_outage + 1);
    let recovered = attempts[during_outage];
    assert!(recovered.duration_since(back).unwrap() <= BACKOFF_CAP);
}

/// One failed attempt at `now` with `error`; returns how long until the next one.
async fn delay_after(error: FakeError) -> Duration {
    let data = tempfile::tempdir().unwrap();
    let now = t0() + 61 * DAY;
    let clock = FakeClock::new(now, now);
    let ca = FakeCa::new(&clock, move |_| Err(error.clone()));
    let mut renewal = Renewal::new(
        RenewalPolicy::default(),
        clock,
        ca,
        data.path(),
        &certificate(t0(), 90 * DAY),
        SEED,
    );
    let outcome = renewal.attempt(&mut |_| unreachable!()).await;
    let AttemptOutcome::Failed { next_attempt, .. } = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(renewal.next_attempt(), next_attempt);
    next_attempt.duration_since(now).unwrap()
}

#[tokio::test]
async fn the_cas_retry_after_is_honoured_when_longer_than_the_backoff() {
    let delay = delay_after(FakeError {
        retry_after: Some(6 * HOUR),
        permanent: false,
    })
    .await;
    assert!(
        delay >= 6 * HOUR && delay <= (6 * HOUR).mul_f64(1.0 + JITTER) + Duration::from_secs(1),
        "{delay:?}"
    );
    // A shorter one does not shorten the backoff.
    let delay = delay_after(FakeError {
        retry_after: Some(Duration::from_secs(1)),
        permanent: false,
    })
    .await;
    assert!(delay >= BACKOFF_START, "{delay:?}");
}

#[tokio::test]
async fn a_permanent_error_waits_the_cap() {
    let delay = delay_after(FakeError {
        retry_after: None,
        permanent: true,
    })
    .await;
    assert!(
        delay >= BACKOFF_CAP.mul_f64(1.0 - JITTER) && delay <= BACKOFF_CAP,
        "{delay:?}"
    );
    let transient = delay_after(down()).await;
    assert!(
        transient <= BACKOFF_START.mul_f64(1.0 + JITTER),
        "{transient:?}"
    );
}

#[tokio::test]
async fn a_restart_continues_the_backoff_instead_of_retrying_at_once() {
    let data = tempfile::tempdir().unwrap();
    let due = t0() + 60 * DAY;
    let clock = FakeClock::new(due, due + 365 * DAY);
    let ca = FakeCa::new(&clock, |_| Err(down()));
    let cert = certificate(t0(), 90 * DAY);
    let mut renewal = Renewal::new(
        RenewalPolicy::default(),
        clock.clone(),
        ca.clone(),
        data.path(),
        &cert,
        SEED,
    );
    for _ in 0..4 {
        clock.set(renewal.next_attempt());
        renewal.attempt(&mut |_| {}).await;
    }
    let planned = renewal.next_attempt();
    let last = *ca.attempts().last().unwrap();
    drop(renewal);

    // The process restarts a minute after the fourth failure.
    clock.set(last + MINUTE);
    let mut restarted = Renewal::new(
        RenewalPolicy::default(),
        clock.clone(),
        ca.clone(),
        data.path(),
        &cert,
        SEED + 1,
    );
    assert_eq!(restarted.next_attempt(), planned);
    assert!(planned >= last + 40 * MINUTE.mul_f64(1.0 - JITTER));
    let state = restarted.handle().state();
    assert_eq!(state.consecutive_failures, 4);
    assert!(state.last_error.unwrap().contains("connection refused"));
    // Its next failure is the fifth: 80 minutes ± 20 %.
    clock.set(planned);
    restarted.attempt(&mut |_| {}).await;
    let gap = restarted.next_attempt().duration_since(planned).unwrap();
    assert!(gap >= (80 * MINUTE).mul_f64(1.0 - JITTER), "{gap:?}");
}

#[tokio::test]
async fn a_restart_does_not_forget_a_due_renewal() {
    let data = tempfile::tempdir().unwrap();
    let cert = certificate(t0(), 90 * DAY);
    RenewalState {
        last_success: Some(t0()),
        next_attempt: Some(t0() + 60 * DAY),
        ..RenewalState::default()
    }
    .save(&state_path(data.path()))
    .unwrap();
    // Down over the due date: the first start afterwards renews at once.
    let now = t0() + 75 * DAY;
    let clock = FakeClock::new(now, now);
    let renewal = Renewal::new(
        RenewalPolicy::default(),
        clock.clone(),
        FakeCa::new(&clock, |_| Ok(())),
        data.path(),
        &cert,
        SEED,
    );
    assert_eq!(renewal.next_attempt(), now);
    // Not due yet: it waits for day 60, whatever the file says.
    let early = FakeClock::new(t0() + DAY, t0() + DAY);
    let renewal = Renewal::new(
        RenewalPolicy::default(),
        early.clone(),
        FakeCa::new(&early, |_| Ok(())),
        data.path(),
        &cert,
        SEED,
    );
    assert_eq!(renewal.next_attempt(), t0() + 60 * DAY);
}

#[tokio::test]
async fn a_corrupt_state_file_is_not_fatal() {
    let data = tempfile::tempdir().unwrap();
    let path = state_path(data.path());
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"{\"consecutiveFailures\": \"many\"").unwrap();
    let now = t0() + 61 * DAY;
    let clock = FakeClock::new(now, now);
    let ca = FakeCa::new(&clock, |_| Ok(()));
    let mut renewal = Renewal::new(
        RenewalPolicy::default(),
        clock,
        ca,
        data.path(),
        &certificate(t0(), 90 * DAY),
        SEED,
    );
    assert_eq!(renewal.next_attempt(), now, "treated as empty: due now");
    let mut renewed = 0;
    let outcome = renewal.attempt(&mut |_| renewed += 1).await;
    assert!(matches!(outcome, AttemptOutcome::Renewed { .. }));
    assert_eq!(renewed, 1);
    // And it was replaced by a good one, private to the gateway's user.
    let state = RenewalState::load(&path);
    assert_eq!(state.last_success, Some(now));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[tokio::test]
async fn renew_now_runs_an_attempt_through_the_loop_and_reports_it() {
    let data = tempfile::tempdir().unwrap();
    let start = t0() + DAY;
    // The clock never reaches the due date: only "renew now" can make the loop attempt.
    let clock = FakeClock::new(start, start);
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let ca = {
        let fail = Arc::clone(&fail);
        FakeCa::new(&clock, move |_| {
            if fail.load(Ordering::Relaxed) {
                Err(FakeError {
                    retry_after: None,
                    permanent: true,
                })
            } else {
                Ok(())
            }
        })
    };
    let renewal = Renewal::new(
        RenewalPolicy::default(),
        clock.clone(),
        ca.clone(),
        data.path(),
        &certificate(t0(), 90 * DAY),
        SEED,
    );
    let handle = renewal.handle();
    let swapped = Arc::new(Mutex::new(Vec::new()));
    let task = {
        let swapped = Arc::clone(&swapped);
        tokio::spawn(renewal.run(move |m| swapped.lock().unwrap().push(m)))
    };
    let failed = handle.renew_now().await.unwrap();
    assert!(
        matches!(&failed, AttemptOutcome::Failed { error, .. } if error.contains("connection refused")),
        "{failed:?}"
    );
    assert_eq!(handle.state().consecutive_failures, 1);
    fail.store(false, Ordering::Relaxed);
    let renewed = handle.renew_now().await.unwrap();
    let AttemptOutcome::Renewed { fingerprint } = renewed else {
        panic!("{renewed:?}")
    };
    assert_eq!(swapped.lock().unwrap()[0].fingerprint(), fingerprint);
    let state = handle.state();
    assert_eq!(state.consecutive_failures, 0);
    assert_eq!(state.last_error, None);
    assert_eq!(state.next_attempt, Some(start + 60 * DAY));
    assert_eq!(ca.attempts().len(), 2);
    task.abort();
}

#[test]
fn due_at_handles_short_lived_certificates() {
    let policy = RenewalPolicy::default();
    // 90 days: day 60 either way.
    assert_eq!(policy.due_at(t0(), t0() + 90 * DAY), t0() + 60 * DAY);
    // 45 days: 30 days left comes first, on day 15 (one third in: still acceptable).
    assert_eq!(policy.due_at(t0(), t0() + 45 * DAY), t0() + 15 * DAY);
    // 6 days: "30 days left" is before the start, so two thirds in.
    assert_eq!(policy.due_at(t0(), t0() + 6 * DAY), t0() + 4 * DAY);
    // A year: 60 days old.
    assert_eq!(policy.due_at(t0(), t0() + 365 * DAY), t0() + 60 * DAY);
}

#[test]
fn backoff_doubles_from_five_minutes_to_a_day() {
    let plain: Vec<Duration> = (1..=11)
        .map(|n| backoff_delay(n, None, false, 0.0))
        .collect();
    assert_eq!(plain[0], 5 * MINUTE);
    assert_eq!(plain[1], 10 * MINUTE);
    assert_eq!(plain[8], 1280 * MINUTE);
    assert_eq!(plain[9], BACKOFF_CAP);
    assert_eq!(backoff_delay(u32::MAX, None, false, 1.0), BACKOFF_CAP);
    assert_eq!(backoff_delay(1, None, false, -1.0), BACKOFF_START);
    assert_eq!(backoff_delay(1, None, true, 0.0), BACKOFF_CAP);
    assert_eq!(
        backoff_delay(1, Some(400 * DAY), false, 0.0),
        RETRY_AFTER_LIMIT
    );
    assert_eq!(backoff_delay(1, None, false, f64::NAN), BACKOFF_START);
}

fn policy() -> impl Strategy<Value = RenewalPolicy> {
    (1u32..400, 1u32..400).prop_map(|(a, b)| RenewalPolicy::from_days(a, b))
}

proptest! {
    #[test]
    fn the_next_attempt_is_never_in_the_past_nor_after_the_certificate_unless_due(
        policy in policy(),
        lifetime_hours in 1u64..(400 * 24),
        now_offset_hours in 0u64..(800 * 24),
        failures in 0u32..50,
        planned_offset_mins in 0u64..(20 * 24 * 60),
    ) {
        let not_before = t0();
        let not_after = t0() + HOUR * u32::try_from(lifetime_hours).unwrap();
        let now = t0() + HOUR * u32::try_from(now_offset_hours).unwrap();
        let state = RenewalState {
            consecutive_failures: failures,
            next_attempt: Some(t0() + MINUTE * u32::try_from(planned_offset_mins).unwrap()),
            ..RenewalState::default()
        };
        let next = first_attempt(&policy, not_before, not_after, &state, now);
        prop_assert!(next >= now);
        let due = policy.due_at(not_before, not_after);
        prop_assert!(due > not_before && due < not_after);
        if due > now {
            // Not due: planned at the due date, which leaves a margin before the end.
            prop_assert_eq!(next, due);
            let margin = policy.renew_before.min((not_after.duration_since(not_before).unwrap()) / 3);
            prop_assert!(next <= not_after - margin);
        } else {
            prop_assert!(next <= now + RETRY_AFTER_LIMIT);
            if failures == 0 {
                prop_assert_eq!(next, now);
            }
        }
    }

    #[test]
    fn backoff_stays_between_five_minutes_and_the_cap_or_the_cas_wish(
        failures in 1u32..100,
        retry_after_secs in proptest::option::of(0u64..(30 * 86_400)),
        permanent in any::<bool>(),
        jitter in -1.0f64..=1.0,
    ) {
        let retry_after = retry_after_secs.map(Duration::from_secs);
        let delay = backoff_delay(failures, retry_after, permanent, jitter);
        prop_assert!(delay >= BACKOFF_START);
        let ca = retry_after.map_or(Duration::ZERO, |r| r.min(RETRY_AFTER_LIMIT));
        prop_assert!(delay >= ca);
        // (+1 s: delays are rounded up to whole seconds.)
        prop_assert!(delay <= BACKOFF_CAP.max(ca.mul_f64(1.0 + JITTER) + Duration::from_secs(1)));
        // More failures never wait less (same jitter).
        prop_assert!(backoff_delay(failures + 1, retry_after, permanent, jitter) >= delay);
    }
}

#[tokio::test]
async fn renew_now_answers_none_once_the_loop_is_stopped() {
    let data = tempfile::tempdir().unwrap();
    let start = t0() + DAY;
    let clock = FakeClock::new(start, start);
    let ca = FakeCa::new(&clock, |_| Ok(()));
    let renewal = Renewal::new(
        RenewalPolicy::default(),
        clock.clone(),
        ca.clone(),
        data.path(),
        &certificate(t0(), 90 * DAY),
        SEED,
    );
    let handle = renewal.handle();
    let task = tokio::spawn(renewal.run(|_| {}));
    // What "choosing another certificate by hand" does to the loop.
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    // Before, the handle kept the loop's channel open and this waited for ever.
    assert_eq!(handle.renew_now().await, None);
    assert!(ca.attempts().is_empty());
}
