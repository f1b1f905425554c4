//! A TCP link with a round-trip time, on loopback: a relay in front of a server that holds
//! every byte for half the round trip in each direction, so a bench can put its provider
//! "20 ms away" the way a real one is, without root (no `netem`) and without slowing the rest
//! of the machine's loopback traffic.
//!
//! Only latency is added: the bandwidth is loopback's. Each direction buffers at most
//! 64 chunks of up to 64 KiB, so a sender that outruns its receiver is held back, as by TCP's
//! window. Connection setup is not delayed (a session pays it once; the benches time
//! messages); the server's first bytes are.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Chunks one direction holds at most (of up to [`CHUNK`] bytes each).
const IN_FLIGHT: usize = 64;
const CHUNK: usize = 64 * 1024;

/// A listening relay to `target`; stops accepting when dropped (connections already open
/// run to their end).
#[derive(Debug)]
pub struct DelayLink {
    addr: SocketAddr,
    rtt: Duration,
    acceptor: JoinHandle<()>,
}

impl DelayLink {
    /// Listens on a free loopback port; every connection to it is relayed to `target` with
    /// `rtt / 2` added in each direction. Call inside a tokio runtime.
    pub async fn start(target: SocketAddr, rtt: Duration) -> std::io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let one_way = rtt / 2;
        let acceptor = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(async move {
                    // A target that refuses: the client sees its connection closed.
                    if let Ok(server) = TcpStream::connect(target).await {
                        relay(client, server, one_way).await;
                    }
                });
            }
        });
        Ok(Self {
            addr,
            rtt,
            acceptor,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn rtt(&self) -> Duration {
        self.rtt
    }
}

impl Drop for DelayLink {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

/// Both directions of one connection, until each has ended.
async fn relay(client: TcpStream, server: TcpStream, one_way: Duration) {
    // The relay's own buffering must not add Nagle's delay on top of the one it models.
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        one_direction(client_read, server_write, one_way),
        one_direction(server_read, client_write, one_way),
    );
}

/// Reads `from` and writes each chunk to `to` `delay` after it arrived, in order; at the end
/// of `from` shuts `to`'s write side once everything before is written.
async fn one_direction(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (chunks, mut due) = mpsc::channel::<(Instant, Vec<u8>)>(IN_FLIGHT);
    let reader = async move {
        let mut buffer = vec![0; CHUNK];
        while let Ok(n @ 1..) = from.read(&mut buffer).await {
            let chunk = (Instant::now() + delay, buffer[..n].to_vec());
            if chunks.send(chunk).await.is_err() {
                return;
            }
        }
    };
    let writer = async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on loopback that answers each connection until its end.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        addr
    }

    // The clock is tokio's paused one: it moves only to the relay's timers, so a round trip
    // takes exactly as long as the link holds the bytes, however loaded the machine is.
    #[tokio::test(start_paused = true)]
    async fn a_round_trip_takes_the_rtt_and_bytes_pass_unchanged_in_order() {
        let rtt = Duration::from_millis(40);
        let link = DelayLink::start(echo_server().await, rtt).await.unwrap();
        assert_eq!(link.rtt(), rtt);
        let mut stream = TcpStream::connect(link.addr()).await.unwrap();

        let sent = Instant::now();
        stream.write_all(b"ping").await.unwrap();
        let mut answer = [0; 4];
        stream.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"ping");
        let elapsed = sent.elapsed();
        assert!(elapsed >= rtt, "{elapsed:?}");
        assert!(elapsed < rtt * 2, "{elapsed:?}");

        // More than the link holds at once: backpressure, not loss or reordering.
        let big: Vec<u8> = (0..(IN_FLIGHT * CHUNK * 2))
            .map(|i| (i % 251) as u8)
            .collect();
        let (mut read, mut write) = stream.into_split();
        let expected = big.clone();
        let writer = tokio::spawn(async move {
            write.write_all(&big).await.unwrap();
            write.shutdown().await.unwrap();
        });
        let mut echoed = Vec::new();
        read.read_to_end(&mut echoed).await.unwrap();
        writer.await.unwrap();
        assert!(echoed == expected, "{} bytes back", echoed.len());
    }

    #[tokio::test]
    async fn a_target_that_refuses_closes_the_client() {
        let refused = {
            let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
            listener.local_addr().unwrap()
        };
        let link = DelayLink::start(refused, Duration::from_millis(2))
            .await
            .unwrap();
        let mut stream = TcpStream::connect(link.addr()).await.unwrap();
        let mut buffer = [0; 1];
        assert_eq!(stream.read(&mut buffer).await.unwrap_or(0), 0);
    }
}
