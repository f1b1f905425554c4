//! The one tokio driver every protocol machine runs under: the SMTP and POP3 servers, the
//! two upstream clients and the POP3 relay.
//!
//! A [`Machine`] is a sans-IO core, in the manner of quinn-proto: bytes in
//! ([`Machine::handle_input`]), bytes out into the caller's buffer
//! ([`Machine::poll_transmit`]), requests for its shell ([`Machine::poll_event`]) and one
//! timer as a deadline ([`Machine::poll_timeout`], [`Machine::handle_timeout`]). The
//! [`Driver`] owns the socket and its buffers and runs a machine until it has an event for
//! its shell; the shell answers the event with the service layer and asks again.
//!
//! What goes out is written when the machine next waits (for input, its timer or its
//! shell), so pipelined replies leave in one write. A write that makes no progress for the
//! driver's stall time counts as a lost connection, so a peer that stops reading cannot hold
//! a session open. [`Driver::next_event`] is cancel-safe: the relay selects over two of them.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use tokio_rustls::TlsAcceptor;

use super::{MaybeTls, ShutdownSignal, TlsActive, HANDSHAKE_TIMEOUT};
use crate::metrics::ListenerMetrics;

/// The time as a machine sees it: a monotonic instant for its timers, and the service's
/// clock for what it writes down (trace headers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub instant: Instant,
    pub utc: OffsetDateTime,
}

/// A sans-IO protocol machine.
pub trait Machine {
    /// What the machine asks of its shell.
    type Event;

    /// Bytes that arrived from the peer.
    fn handle_input(&mut self, input: &[u8], now: Now);
    /// Appends whatever is to be sent to `out`; `now` is when it leaves (a client starts
    /// waiting for its reply then).
    fn poll_transmit(&mut self, now: Instant, out: &mut Vec<u8>);
    /// The next request for the shell, if any.
    fn poll_event(&mut self) -> Option<Self::Event>;
    /// When [`Self::handle_timeout`] is due; `None` while no timer runs.
    fn poll_timeout(&self) -> Option<Instant>;
    /// The deadline from [`Self::poll_timeout`] has passed (or, if the machine moved it
    /// since, perhaps not: the machine checks `now` itself).
    fn handle_timeout(&mut self, now: Now);
    /// The peer closed, or reading or writing failed.
    fn handle_connection_lost(&mut self);
    /// The gateway is shutting down: finish what is in hand, then close.
    fn handle_shutdown(&mut self) {}
    /// Whether the machine reads input now.
    fn wants_input(&self) -> bool;
    /// Whether the machine is done and the connection can be dropped.
    fn is_closed(&self) -> bool;
    /// Whether the next input may carry credentials, so the driver wipes its read buffer
    /// after handing it over.
    fn may_receive_credentials(&self) -> bool {
        false
    }
    /// Whether the shell's [`Interrupt`] may end the coming wait (a POP3 session only while
    /// it waits for a command with nothing of one read). Asked before each wait.
    fn interruptible(&self) -> bool {
        true
    }
}

/// What [`Driver::next_event`] ended with.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<E> {
    /// The machine asks its shell for something.
    Event(E),
    /// The machine is closed; what it sent last has been written.
    Closed,
    /// The shell's [`Interrupt`] fired.
    Interrupted,
}

/// Something outside the connection that can stop a driver waiting, such as another
/// login taking a maildrop over.
pub trait Interrupt {
    /// Resolves when the wait must end. Must be cancel-safe. Called only for waits the
    /// machine calls [interruptible](Machine::interruptible).
    fn interrupted(&mut self) -> impl Future<Output = ()> + Send;
    /// Asked after a read in an interruptible wait, before the machine sees the input:
    /// `false` drops the input and ends the wait with [`Next::Interrupted`].
    fn admit_input(&mut self) -> bool {
        true
    }
}

/// No interrupt: [`Driver::next_event`]'s.
pub struct Never;

impl Interrupt for Never {
    fn interrupted(&mut self) -> impl Future<Output = ()> + Send {
        std::future::pending()
    }
}

/// What a machine has to say, in order: bytes for the peer and events for its shell.
/// [`Outbox::poll_transmit`] hands out only the bytes queued before the next event, and
/// [`Outbox::poll_event`] that event only once they are taken, so a `220` goes out before
/// the TLS handshake it announces, and a reply queued after an event never overtakes it.
/// Bytes between two events leave together (pipelined replies in one write).
#[derive(Debug)]
pub struct Outbox<E> {
    transmit: Vec<u8>,
    /// Each event with how many bytes of `transmit` come before it.
    events: VecDeque<(usize, E)>,
}

impl<E> Default for Outbox<E> {
    fn default() -> Self {
        Self {
            transmit: Vec::new(),
            events: VecDeque::new(),
        }
    }
}

impl<E> Outbox<E> {
    /// The buffer to append bytes for the peer to.
    pub fn transmit(&mut self) -> &mut Vec<u8> {
        &mut self.transmit
    }

    pub fn push_event(&mut self, event: E) {
        self.events.push_back((self.transmit.len(), event));
    }

    /// The last event queued, if no bytes came after it (to merge body pieces into it).
    pub fn last_event_mut(&mut self) -> Option<&mut E> {
        let len = self.transmit.len();
        match self.events.back_mut() {
            Some((at, event)) if *at == len => Some(event),
            _ => None,
        }
    }

    /// Appends the bytes that come before the next event to `out`.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) {
        let ready = self
            .events
            .front()
            .map_or(self.transmit.len(), |(at, _)| *at);
        if ready == 0 {
            return;
        }
        if ready == self.transmit.len() && out.is_empty() {
            // All of it: hand the buffer over instead of copying.
            std::mem::swap(out, &mut self.transmit);
        } else {
            out.extend(self.transmit.drain(..ready));
        }
        for (at, _) in &mut self.events {
            *at -= ready;
        }
    }

    /// The next event, once every byte before it was taken by [`Self::poll_transmit`].
    pub fn poll_event(&mut self) -> Option<E> {
        match self.events.front() {
            Some((0, _)) => self.events.pop_front().map(|(_, event)| event),
            _ => None,
        }
    }

    /// Drops everything queued (bytes and events), e.g. when the connection is gone.
    pub fn clear(&mut self) {
        self.transmit.clear();
        self.events.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.transmit.is_empty() && self.events.is_empty()
    }
}

/// Most bytes one read takes.
pub const MAX_READ: usize = 64 * 1024;
/// A transmit buffer that grew past this (a large reply, a message being relayed) is
/// released when the connection waits on its peer.
const KEPT_TRANSMIT: usize = 16 * 1024;

thread_local! {
    /// The read buffer of every connection this thread polls. A connection waiting for its
    /// peer holds no read buffer of its own: an idle session costs its state, not 64 KiB.
    /// Reads land here and go to the machine in the same poll, so no connection ever sees
    /// another's bytes; input that may hold credentials is wiped after the machine took it.
    static READ_BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0; MAX_READ].into_boxed_slice());
}

/// Reads up to `limit` bytes into this thread's [`READ_BUFFER`]; [`with_read`] hands them
/// out. Cancel-safe: a read that is not ready took nothing.
fn read_shared<S: AsyncRead + Unpin>(
    stream: &mut S,
    limit: usize,
) -> impl Future<Output = std::io::Result<usize>> + '_ {
    std::future::poll_fn(move |cx| {
        READ_BUFFER.with_borrow_mut(|buffer| {
            let mut read = ReadBuf::new(&mut buffer[..limit]);
            std::task::ready!(Pin::new(&mut *stream).poll_read(cx, &mut read))?;
            Poll::Ready(Ok(read.filled().len()))
        })
    })
}

/// Runs `f` on the `n` bytes [`read_shared`] just read on this thread.
fn with_read<R>(n: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    READ_BUFFER.with_borrow_mut(|buffer| f(&mut buffer[..n]))
}

type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;
type Observer = Box<dyn FnMut(&[u8]) + Send>;

/// Owns one connection's socket and buffers and runs machines over it.
pub struct Driver<S> {
    stream: S,
    /// Most bytes one read takes (of the thread's [`READ_BUFFER`]).
    read_limit: usize,
    transmit: Vec<u8>,
    /// How much of `transmit` is already written (a cancelled write resumes here).
    written: usize,
    stall: Duration,
    clock: Clock,
    /// Told about shutdown once; `None` when there is none to watch, or after it fired.
    shutdown: Option<ShutdownSignal>,
    /// Sees every byte a machine transmits (metrics count replies with it).
    observer: Option<Observer>,
    /// Wipe what was written (a client that sends credentials).
    wipe_writes: bool,
}

impl<S> Driver<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    /// A driver reading up to `read_buffer` bytes at a time (at most [`MAX_READ`]), whose
    /// writes fail after `stall` without progress.
    pub fn new(stream: S, read_buffer: usize, stall: Duration) -> Self {
        Self {
            stream,
            read_limit: read_buffer.clamp(1, MAX_READ),
            transmit: Vec::new(),
            written: 0,
            stall,
            clock: Arc::new(OffsetDateTime::now_utc),
            shutdown: None,
            observer: None,
            wipe_writes: false,
        }
    }

    /// Wipes every byte once written: for a connection whose machine sends credentials
    /// (a login toward an upstream). Servers never send any, and skip the cost.
    pub fn wiping_writes(mut self) -> Self {
        self.wipe_writes = true;
        self
    }

    /// The clock machines get as [`Now::utc`] (the service's, so the simulation controls it).
    pub fn with_clock(
        mut self,
        clock: impl Fn() -> OffsetDateTime + Send + Sync + 'static,
    ) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Tells the machine once when `shutdown` fires.
    pub fn with_shutdown(mut self, shutdown: ShutdownSignal) -> Self {
        self.shutdown = Some(shutdown);
        self
    }

    /// Shows `observer` every byte machines transmit through [`Self::collect`].
    pub fn with_observer(mut self, observer: impl FnMut(&[u8]) + Send + 'static) -> Self {
        self.observer = Some(Box::new(observer));
        self
    }

    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// For what the machine asked of its shell on the socket itself (a TLS upgrade).
    /// Queued bytes are not written first: [`Self::flush`] does that.
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    pub fn into_stream(self) -> S {
        self.stream
    }

    pub fn now(&self) -> Now {
        Now {
            instant: self.instant(),
            utc: (self.clock)(),
        }
    }

    /// The runtime's clock (paused in tests, simulated under turmoil).
    fn instant(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }

    /// Takes what the machine wants sent into the queue (shown to the observer).
    pub fn collect<M: Machine>(&mut self, machine: &mut M) {
        let start = self.transmit.len();
        machine.poll_transmit(self.instant(), &mut self.transmit);
        if let Some(observer) = &mut self.observer {
            if self.transmit.len() > start {
                observer(&self.transmit[start..]);
            }
        }
    }

    /// Takes what the machine wants sent into the queue without showing it to the
    /// observer (a message's lines, which are not replies).
    pub fn collect_unobserved<M: Machine>(&mut self, machine: &mut M) {
        machine.poll_transmit(self.instant(), &mut self.transmit);
    }

    /// Bytes queued and not yet written.
    pub fn queued(&self) -> usize {
        self.transmit.len() - self.written
    }

    /// Collects and writes what the machine wants sent; a failed write tells the machine
    /// its connection is lost.
    pub async fn flush<M: Machine>(&mut self, machine: &mut M) -> std::io::Result<()> {
        self.collect(machine);
        let result = self.write_queued().await;
        if result.is_err() {
            machine.handle_connection_lost();
        }
        result
    }

    /// Ends the connection in order: writes what the machine still has to send, then shuts
    /// the write side down (TLS close_notify included), each within the stall time.
    pub async fn shut_down<M: Machine>(&mut self, machine: &mut M) {
        let _ = self.flush(machine).await;
        super::shutdown_within(&mut self.stream, self.stall).await;
    }

    /// Runs the machine until it has an event for its shell, or is closed.
    pub async fn next_event<M: Machine>(&mut self, machine: &mut M) -> Next<M::Event> {
        self.next_event_or(machine, &mut Never).await
    }

    /// [`Self::next_event`], also ending when `interrupt` fires.
    pub async fn next_event_or<M, I>(
        &mut self,
        machine: &mut M,
        interrupt: &mut I,
    ) -> Next<M::Event>
    where
        M: Machine,
        I: Interrupt,
    {
        loop {
            self.collect(machine);
            if let Some(event) = machine.poll_event() {
                return Next::Event(event);
            }
            if let Err(error) = self.write_queued().await {
                tracing::debug!(%error, "write failed");
                machine.handle_connection_lost();
                continue;
            }
            if machine.is_closed() {
                return Next::Closed;
            }
            let wants_input = machine.wants_input();
            let deadline = machine.poll_timeout();
            let interruptible = machine.interruptible();
            let woke = {
                let shutdown = async {
                    match &mut self.shutdown {
                        Some(signal) => signal.triggered().await,
                        None => std::future::pending().await,
                    }
                };
                let timer = async {
                    match deadline {
                        Some(at) => tokio::time::sleep_until(at.into()).await,
                        None => std::future::pending().await,
                    }
                };
                // Lazy, so a wait that is not interruptible never calls the interrupt.
                let interrupted = async {
                    if interruptible {
                        interrupt.interrupted().await;
                    } else {
                        std::future::pending::<()>().await;
                    }
                };
                if self.transmit.capacity() > KEPT_TRANSMIT {
                    // About to wait on the peer: a large reply's buffer is not kept idle.
                    self.transmit = Vec::new();
                }
                tokio::select! {
                    read = read_shared(&mut self.stream, self.read_limit), if wants_input => Woke::Read(read),
                    () = timer => Woke::Timer,
                    () = shutdown => Woke::Shutdown,
                    () = interrupted => Woke::Interrupted,
                }
            };
            match woke {
                // No await from here until the input is handled: what was read is still in
                // this thread's READ_BUFFER, which the next poll of any connection reuses.
                Woke::Read(read) => {
                    if interruptible && !interrupt.admit_input() {
                        if let Ok(n) = read {
                            with_read(n, zeroize::Zeroize::zeroize);
                        }
                        return Next::Interrupted;
                    }
                    match read {
                        Ok(0) | Err(_) => machine.handle_connection_lost(),
                        Ok(n) => {
                            let now = self.now();
                            let credentials = machine.may_receive_credentials();
                            with_read(n, |input| {
                                machine.handle_input(input, now);
                                if credentials {
                                    // The read may have carried a password: no copy stays.
                                    zeroize::Zeroize::zeroize(input);
                                }
                            });
                        }
                    }
                }
                Woke::Timer => machine.handle_timeout(self.now()),
                Woke::Shutdown => {
                    self.shutdown = None;
                    machine.handle_shutdown();
                }
                Woke::Interrupted => return Next::Interrupted,
            }
        }
    }

    /// Writes the queue, resuming where a cancelled write stopped. Fails when the peer
    /// accepts nothing for the stall time.
    async fn write_queued(&mut self) -> std::io::Result<()> {
        if self.transmit.is_empty() {
            return Ok(());
        }
        let result = self.write_rest().await;
        if self.wipe_writes {
            // What went out may have been credentials (a login toward an upstream).
            zeroize::Zeroize::zeroize(&mut self.transmit[..]);
        }
        self.transmit.clear();
        self.written = 0;
        result
    }

    async fn write_rest(&mut self) -> std::io::Result<()> {
        while self.written < self.transmit.len() {
            let rest = &self.transmit[self.written..];
            let n = tokio::time::timeout(self.stall, self.stream.write(rest))
                .await
                .map_err(|_| stalled())??;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            self.written += n;
        }
        tokio::time::timeout(self.stall, self.stream.flush())
            .await
            .map_err(|_| stalled())?
    }
}

impl<S> Driver<MaybeTls<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    /// The server side of STARTTLS and STLS: writes what the machine sent (its go-ahead,
    /// in plaintext), runs the handshake within [`HANDSHAKE_TIMEOUT`] and counts it in
    /// `metrics`. The proof that TLS is on, or `None` when the connection is to be dropped.
    pub async fn start_tls<M: Machine>(
        &mut self,
        machine: &mut M,
        acceptor: &TlsAcceptor,
        metrics: &ListenerMetrics,
    ) -> Option<TlsActive> {
        self.flush(machine).await.ok()?;
        let upgrade = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.stream.upgrade(acceptor)).await;
        metrics.tls_handshake(matches!(upgrade, Ok(Ok(()))));
        // Only a finished handshake gives the proof.
        let tls = match upgrade {
            Ok(Ok(())) => self.stream.tls_active(),
            _ => None,
        };
        match &tls {
            Some(tls) => {
                tracing::Span::current().record("tls", tls.description());
            }
            None => tracing::debug!("TLS handshake after the upgrade command failed"),
        }
        tls
    }
}

/// What ended one wait of [`Driver::next_event_or`].
enum Woke {
    Read(std::io::Result<usize>),
    Timer,
    Shutdown,
    Interrupted,
}

fn stalled() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "peer stopped reading")
}

#[cfg(test)]
mod tests;
