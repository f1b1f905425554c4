//! The one timer of each POP3 machine, as a deadline for [`crate::net::Machine::poll_timeout`].
//!
//! A machine arms it from the `Now` it is given with input. The shell's answers (a login
//! result, a message streamed, a request to relay) come without one, and the timer must
//! then run from when the driver next waits, as the loops before the driver had it: so an
//! answer only marks it for a restart, and the driver's next `poll_transmit` (which it
//! calls before every wait, with the time) starts it ([`Timer::settle`]). Should a restart
//! still be pending when the driver asks, [`Timer::deadline`] is already due and
//! [`Timer::expired`] restarts it instead of firing.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub(crate) struct Timer {
    state: State,
    /// The latest time the machine was given: due, whenever a restart is pending.
    seen: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    At(Instant),
    /// Starts again at the driver's next look.
    Restart,
}

impl Timer {
    /// Runs for `after` from `now`.
    pub(crate) fn new(now: Instant, after: Duration) -> Self {
        Self {
            state: State::At(now + after),
            seen: now,
        }
    }

    /// Runs again for `after` from `now`.
    pub(crate) fn start(&mut self, now: Instant, after: Duration) {
        *self = Self::new(now, after);
    }

    /// Runs again from the driver's next look (the caller has no `now`).
    pub(crate) fn restart(&mut self) {
        self.state = State::Restart;
    }

    /// Starts a pending restart from `now`, for `after`.
    pub(crate) fn settle(&mut self, now: Instant, after: Duration) {
        if self.state == State::Restart {
            self.start(now, after);
        }
    }

    pub(crate) fn deadline(&self) -> Instant {
        match self.state {
            State::At(at) => at,
            State::Restart => self.seen,
        }
    }

    /// Whether the timer ran out by `now`; a pending restart starts it for `after` instead.
    pub(crate) fn expired(&mut self, now: Instant, after: Duration) -> bool {
        match self.state {
            State::At(at) => {
                self.seen = self.seen.max(now);
                now >= at
            }
            State::Restart => {
                self.start(now, after);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(60);

    #[test]
    fn fires_at_exactly_the_deadline() {
        let start = Instant::now();
        let mut timer = Timer::new(start, T);
        assert_eq!(timer.deadline(), start + T);
        assert!(!timer.expired(start + T - Duration::from_nanos(1), T));
        assert!(timer.expired(start + T, T));
    }

    #[test]
    fn a_restart_is_due_at_once_and_runs_from_the_next_look() {
        let start = Instant::now();
        let mut timer = Timer::new(start, T);
        timer.restart();
        assert_eq!(timer.deadline(), start, "due now, so the driver looks");
        let later = start + Duration::from_secs(500);
        assert!(!timer.expired(later, T), "a restart never fires");
        assert_eq!(timer.deadline(), later + T);
    }

    #[test]
    fn a_settled_restart_runs_from_the_transmit_and_settling_a_running_timer_does_nothing() {
        let start = Instant::now();
        let mut timer = Timer::new(start, T);
        let later = start + Duration::from_secs(5);
        timer.settle(later, T);
        assert_eq!(timer.deadline(), start + T, "running: unchanged");
        timer.restart();
        timer.settle(later, T);
        assert_eq!(timer.deadline(), later + T);
        assert!(!timer.expired(later + T - Duration::from_nanos(1), T));
        assert!(timer.expired(later + T, T));
    }
}

/// The machines' tests: a `Now` at an instant, and a timer run out as the driver would.
#[cfg(test)]
pub(crate) mod testing {
    use std::time::Instant;

    use crate::net::{Machine, Now};

    pub(crate) fn at(instant: Instant) -> Now {
        Now {
            instant,
            utc: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    /// Lets the machine's timer run out: the driver wakes it at each deadline it reports
    /// (the first may be a restart's, which only starts the timer).
    pub(crate) fn run_out(machine: &mut impl Machine) {
        for _ in 0..2 {
            if let Some(deadline) = machine.poll_timeout() {
                machine.handle_timeout(at(deadline));
            }
        }
    }
}
