use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::*;

const IDLE: Duration = Duration::from_secs(10);
const STALL: Duration = Duration::from_secs(30);

/// A toy line machine: `ask` asks the shell, `quit` closes, anything else is echoed.
/// Silence for `IDLE` closes it, as shutdown does.
#[derive(Default)]
struct Echo {
    input: Vec<u8>,
    out: Vec<u8>,
    events: Vec<&'static str>,
    deadline: Option<Instant>,
    waiting: bool,
    closed: bool,
    lost: bool,
    shutdowns: u32,
    /// Holds off the shell's interrupt.
    uninterruptible: bool,
    /// Input may carry a password.
    credentials: bool,
}

impl Echo {
    fn started(now: Instant) -> Self {
        Self {
            deadline: Some(now + IDLE),
            ..Self::default()
        }
    }

    fn answer(&mut self, answer: &str) {
        self.waiting = false;
        self.out
            .extend_from_slice(format!("{answer}\r\n").as_bytes());
        self.process();
    }

    fn process(&mut self) {
        while !self.waiting && !self.closed {
            let Some(end) = self.input.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let line: Vec<u8> = self.input.drain(..end + 2).take(end).collect();
            match &line[..] {
                b"ask" => {
                    self.waiting = true;
                    self.events.push("ask");
                }
                b"quit" => self.close("bye"),
                _ => {
                    self.out.extend_from_slice(b"ok ");
                    self.out.extend_from_slice(&line);
                    self.out.extend_from_slice(b"\r\n");
                }
            }
        }
    }

    fn close(&mut self, why: &str) {
        self.out.extend_from_slice(format!("{why}\r\n").as_bytes());
        self.closed = true;
    }
}

impl Machine for Echo {
    type Event = &'static str;

    fn handle_input(&mut self, input: &[u8], now: Now) {
        self.deadline = Some(now.instant + IDLE);
        self.input.extend_from_slice(input);
        self.process();
    }

    fn poll_transmit(&mut self, _now: Instant, out: &mut Vec<u8>) {
        out.append(&mut self.out);
    }

    fn poll_event(&mut self) -> Option<&'static str> {
        self.events.pop()
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.deadline.filter(|_| !self.closed)
    }

    fn handle_timeout(&mut self, now: Now) {
        if self.deadline.is_some_and(|at| now.instant >= at) {
            self.close("timeout");
        }
    }

    fn handle_connection_lost(&mut self) {
        self.lost = true;
        self.closed = true;
    }

    fn handle_shutdown(&mut self) {
        self.shutdowns += 1;
        if !self.waiting {
            self.close("shutting down");
        }
    }

    fn wants_input(&self) -> bool {
        !self.waiting && !self.closed
    }

    fn is_closed(&self) -> bool {
        self.closed
    }

    fn interruptible(&self) -> bool {
        !self.uninterruptible
    }

    fn may_receive_credentials(&self) -> bool {
        self.credentials
    }
}

fn pair(buffer: usize) -> (Driver<DuplexStream>, DuplexStream) {
    let (ours, theirs) = tokio::io::duplex(buffer);
    (Driver::new(ours, 1024, STALL), theirs)
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

async fn read_all(peer: &mut DuplexStream) -> String {
    let mut text = Vec::new();
    peer.read_to_end(&mut text).await.unwrap();
    String::from_utf8(text).unwrap()
}

#[tokio::test(start_paused = true)]
async fn pipelined_lines_are_answered_and_the_shell_is_asked_in_order() {
    let (mut driver, mut peer) = pair(4096);
    let mut echo = Echo::started(now());
    peer.write_all(b"a\r\nask\r\nb\r\nquit\r\n").await.unwrap();
    assert_eq!(driver.next_event(&mut echo).await, Next::Event("ask"));
    echo.answer("answered");
    assert_eq!(driver.next_event(&mut echo).await, Next::Closed);
    drop(driver);
    assert_eq!(
        read_all(&mut peer).await,
        "ok a\r\nanswered\r\nok b\r\nbye\r\n"
    );
}

#[tokio::test(start_paused = true)]
async fn the_timer_fires_at_the_deadline_and_input_moves_it() {
    let (mut driver, mut peer) = pair(4096);
    let started = tokio::time::Instant::now();
    let mut echo = Echo::started(now());
    let client = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(4)).await;
        peer.write_all(b"still here\r\n").await.unwrap();
        peer
    });
    assert_eq!(driver.next_event(&mut echo).await, Next::Closed);
    // Idle from second 4, so the timer fires at 4 + 10, not at 10.
    assert_eq!(started.elapsed(), Duration::from_secs(14));
    let mut peer = client.await.unwrap();
    drop(driver);
    assert_eq!(read_all(&mut peer).await, "ok still here\r\ntimeout\r\n");
}

#[tokio::test(start_paused = true)]
async fn shutdown_is_told_once() {
    let (driver, mut peer) = pair(4096);
    let shutdown = crate::net::Shutdown::new();
    let mut driver = driver.with_shutdown(shutdown.signal());
    let mut echo = Echo::started(now());
    peer.write_all(b"ask\r\n").await.unwrap();
    assert_eq!(driver.next_event(&mut echo).await, Next::Event("ask"));
    // The shell has not answered: the machine keeps going, and must not hear it again.
    shutdown.trigger();
    let wait = tokio::time::timeout(Duration::from_secs(1), driver.next_event(&mut echo)).await;
    assert!(wait.is_err(), "still waiting for the shell");
    assert_eq!(echo.shutdowns, 1);
    assert!(!echo.is_closed());
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_while_idle_closes_the_machine() {
    let (driver, mut peer) = pair(4096);
    let shutdown = crate::net::Shutdown::new();
    let mut driver = driver.with_shutdown(shutdown.signal());
    let mut echo = Echo::started(now());
    shutdown.trigger();
    assert_eq!(driver.next_event(&mut echo).await, Next::Closed);
    assert_eq!(echo.shutdowns, 1);
    drop(driver);
    assert_eq!(read_all(&mut peer).await, "shutting down\r\n");
}

/// An interrupt that fires on demand and may refuse input.
struct Switch {
    fire: Option<tokio::sync::oneshot::Receiver<()>>,
    admit: bool,
}

impl Interrupt for Switch {
    fn interrupted(&mut self) -> impl Future<Output = ()> + Send {
        let fire = self.fire.as_mut();
        async move {
            match fire {
                Some(fire) => {
                    let _ = fire.await;
                }
                None => std::future::pending().await,
            }
        }
    }

    fn admit_input(&mut self) -> bool {
        self.admit
    }
}

#[tokio::test(start_paused = true)]
async fn an_interrupt_ends_the_wait_and_can_refuse_input() {
    let (mut driver, mut peer) = pair(4096);
    let mut echo = Echo::started(now());
    let (fire, fired) = tokio::sync::oneshot::channel();
    let mut switch = Switch {
        fire: Some(fired),
        admit: true,
    };
    fire.send(()).unwrap();
    assert_eq!(
        driver.next_event_or(&mut echo, &mut switch).await,
        Next::Interrupted
    );

    let mut refuse = Switch {
        fire: None,
        admit: false,
    };
    peer.write_all(b"quit\r\n").await.unwrap();
    assert_eq!(
        driver.next_event_or(&mut echo, &mut refuse).await,
        Next::Interrupted
    );
    assert!(
        !echo.is_closed(),
        "the refused input never reached the machine"
    );
}

#[tokio::test(start_paused = true)]
async fn an_uninterruptible_wait_neither_hears_the_interrupt_nor_asks_it_about_input() {
    let (mut driver, mut peer) = pair(4096);
    let mut echo = Echo {
        uninterruptible: true,
        ..Echo::started(now())
    };
    let (fire, fired) = tokio::sync::oneshot::channel();
    let mut switch = Switch {
        fire: Some(fired),
        admit: false,
    };
    fire.send(()).unwrap();
    peer.write_all(b"ask\r\n").await.unwrap();
    assert_eq!(
        driver.next_event_or(&mut echo, &mut switch).await,
        Next::Event("ask")
    );
}

#[tokio::test(start_paused = true)]
async fn the_peer_closing_is_a_lost_connection() {
    let (mut driver, peer) = pair(4096);
    let mut echo = Echo::started(now());
    drop(peer);
    assert_eq!(driver.next_event(&mut echo).await, Next::Closed);
    assert!(echo.lost);
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_stops_reading_is_a_lost_connection_after_the_stall_time() {
    let (mut driver, mut peer) = pair(64);
    let mut echo = Echo::started(now());
    let started = tokio::time::Instant::now();
    // Far more replies than the connection holds; the peer never reads them.
    let burst = "x\r\n".repeat(200);
    let writer = tokio::spawn(async move {
        // Fails once the driver is gone.
        let _ = peer.write_all(burst.as_bytes()).await;
    });
    let closed = driver.next_event(&mut echo).await;
    assert_eq!(closed, Next::Closed);
    assert!(echo.lost);
    assert!(started.elapsed() >= STALL);
    drop(driver);
    writer.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_wait_resumes_its_write_without_losing_or_repeating_bytes() {
    let (mut driver, mut peer) = pair(64);
    let mut echo = Echo::started(now());
    let lines: String = (0..100).map(|i| format!("line {i}\r\n")).collect();
    echo.input.extend_from_slice(lines.as_bytes());
    echo.input.extend_from_slice(b"quit\r\n");
    echo.process();
    // The peer reads nothing yet: the write blocks after 64 bytes and the wait is dropped.
    let cancelled =
        tokio::time::timeout(Duration::from_secs(1), driver.next_event(&mut echo)).await;
    assert!(cancelled.is_err());
    assert!(driver.queued() > 0);
    let reader = tokio::spawn(async move { read_all(&mut peer).await });
    assert_eq!(driver.next_event(&mut echo).await, Next::Closed);
    drop(driver);
    let expected: String = (0..100).map(|i| format!("ok line {i}\r\n")).collect();
    assert_eq!(reader.await.unwrap(), expected + "bye\r\n");
}

#[tokio::test(start_paused = true)]
async fn the_observer_sees_what_machines_transmit() {
    let (driver, mut peer) = pair(4096);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    let mut driver =
        driver.with_observer(move |bytes| sink.lock().unwrap().extend_from_slice(bytes));
    let mut echo = Echo::started(now());
    peer.write_all(b"a\r\nquit\r\n").await.unwrap();
    assert_eq!(driver.next_event(&mut echo).await, Next::Closed);
    assert_eq!(&seen.lock().unwrap()[..], b"ok a\r\nbye\r\n");
}

#[test]
fn an_outbox_keeps_bytes_and_events_in_order() {
    let mut outbox = Outbox::default();
    outbox.transmit().extend_from_slice(b"220 go ahead\r\n");
    outbox.push_event("start tls");
    outbox.transmit().extend_from_slice(b"after\r\n");
    outbox.push_event("close");
    assert_eq!(outbox.poll_event(), None, "bytes before an event go first");
    let mut out = Vec::new();
    outbox.poll_transmit(&mut out);
    assert_eq!(out, b"220 go ahead\r\n");
    outbox.poll_transmit(&mut out);
    assert_eq!(out, b"220 go ahead\r\n", "nothing past the event yet");
    assert_eq!(outbox.poll_event(), Some("start tls"));
    assert_eq!(outbox.poll_event(), None);
    outbox.poll_transmit(&mut out);
    assert_eq!(out, b"220 go ahead\r\nafter\r\n");
    assert_eq!(outbox.poll_event(), Some("close"));
    assert!(outbox.is_empty());
}

#[test]
fn an_outbox_merges_only_into_an_event_nothing_followed() {
    let mut outbox: Outbox<Vec<u8>> = Outbox::default();
    outbox.push_event(b"a".to_vec());
    outbox.last_event_mut().unwrap().extend_from_slice(b"b");
    outbox.transmit().extend_from_slice(b"x");
    assert!(outbox.last_event_mut().is_none());
    assert_eq!(outbox.poll_event(), Some(b"ab".to_vec()));
}

proptest::proptest! {
    /// Whatever is queued, transmitting and polling in any pattern gives the bytes and
    /// events in the order they were queued.
    #[test]
    fn an_outbox_never_reorders(ops in proptest::collection::vec(proptest::option::of(proptest::collection::vec(0u8..=255, 0..8)), 0..40), polls in proptest::collection::vec(proptest::bool::ANY, 0..80)) {
        let mut outbox = Outbox::default();
        let mut expected = Vec::new();
        let mut seen = Vec::new();
        let mut out = Vec::new();
        let mut polls = polls.into_iter();
        for (n, op) in ops.into_iter().enumerate() {
            match op {
                Some(bytes) => {
                    outbox.transmit().extend_from_slice(&bytes);
                    expected.extend(bytes.into_iter().map(|b| (false, u32::from(b))));
                }
                None => {
                    outbox.push_event(n as u32);
                    expected.push((true, n as u32));
                }
            }
            if polls.next() == Some(true) {
                let start = out.len();
                outbox.poll_transmit(&mut out);
                seen.extend(out[start..].iter().map(|b| (false, u32::from(*b))));
                if let Some(event) = outbox.poll_event() {
                    seen.push((true, event));
                }
            }
        }
        loop {
            let start = out.len();
            outbox.poll_transmit(&mut out);
            seen.extend(out[start..].iter().map(|b| (false, u32::from(*b))));
            match outbox.poll_event() {
                Some(event) => seen.push((true, event)),
                None => break,
            }
        }
        proptest::prop_assert_eq!(seen, expected);
    }
}

#[tokio::test(start_paused = true)]
async fn connections_polled_on_one_thread_see_only_their_own_input() {
    // Both drivers share this thread's read buffer (a current-thread runtime).
    let (mut a, mut peer_a) = pair(4096);
    let (mut b, mut peer_b) = pair(4096);
    let mut echo_a = Echo::started(now());
    let mut echo_b = Echo::started(now());
    let feed = async {
        for i in 0..50 {
            peer_a
                .write_all(format!("a{i}\r\n").as_bytes())
                .await
                .unwrap();
            peer_b
                .write_all(format!("b{i}-longer\r\n").as_bytes())
                .await
                .unwrap();
            tokio::task::yield_now().await;
        }
        peer_a.write_all(b"quit\r\n").await.unwrap();
        peer_b.write_all(b"quit\r\n").await.unwrap();
        (read_all(&mut peer_a).await, read_all(&mut peer_b).await)
    };
    let run_a = async {
        assert_eq!(a.next_event(&mut echo_a).await, Next::Closed);
        drop(a);
    };
    let run_b = async {
        assert_eq!(b.next_event(&mut echo_b).await, Next::Closed);
        drop(b);
    };
    let ((got_a, got_b), (), ()) = tokio::join!(feed, run_a, run_b);
    let want = |prefix: &str, suffix: &str| {
        let mut text: String = (0..50)
            .map(|i| format!("ok {prefix}{i}{suffix}\r\n"))
            .collect();
        text.push_str("bye\r\n");
        text
    };
    assert_eq!(got_a, want("a", ""));
    assert_eq!(got_b, want("b", "-longer"));
}

/// Whether this thread's read buffer still holds `needle`.
fn read_buffer_holds(needle: &[u8]) -> bool {
    READ_BUFFER.with_borrow(|buffer| buffer.windows(needle.len()).any(|w| w == needle))
}

#[tokio::test(start_paused = true)]
async fn input_that_may_carry_credentials_is_wiped_from_the_read_buffer() {
    for credentials in [false, true] {
        let (mut driver, mut peer) = pair(4096);
        let mut echo = Echo {
            credentials,
            ..Echo::started(now())
        };
        peer.write_all(b"hunter2-secret\r\nask\r\n").await.unwrap();
        assert_eq!(driver.next_event(&mut echo).await, Next::Event("ask"));
        // Without the flag the bytes stay (so this test can fail); with it, they are gone.
        assert_eq!(read_buffer_holds(b"hunter2-secret"), !credentials);
        with_read(MAX_READ, |buffer| buffer.fill(0));
    }
}

#[tokio::test(start_paused = true)]
async fn a_large_transmit_buffer_is_released_while_waiting_for_the_peer() {
    let (mut driver, mut peer) = pair(64 * 1024);
    let mut echo = Echo::started(now());
    let long = "x".repeat(2 * KEPT_TRANSMIT);
    peer.write_all(format!("{long}\r\nask\r\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(driver.next_event(&mut echo).await, Next::Event("ask"));
    echo.answer("answered");
    // The echo went out with the answer; the driver now waits on the peer.
    let waiting = tokio::time::timeout(Duration::from_secs(1), driver.next_event(&mut echo)).await;
    assert!(waiting.is_err(), "nothing more to do but wait");
    assert_eq!(driver.transmit.capacity(), 0);
    let mut echoed = vec![0; long.len() + 5];
    peer.read_exact(&mut echoed).await.unwrap();
    assert_eq!(&echoed[3..long.len() + 3], long.as_bytes());
}
