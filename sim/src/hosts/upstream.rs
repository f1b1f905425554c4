//! The upstream provider of proxy mode: a small submission server (STARTTLS, then
//! `AUTH PLAIN`/`LOGIN`) that records every message it accepts in the ledger and, while the
//! faults go on, fails on command: it refuses a message after the dot (554), drops the
//! connection in the middle of the data or right after the dot (having taken the message
//! or not), or stalls before its verdict. With maildrops in its plan it also serves POP3
//! ([`super::upstream_pop3`]).

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::Rng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::SharedRef;

pub const NAME: &str = "upstream";
pub const SUBMISSION_PORT: u16 = 587;

trait Duplex: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Duplex for T {}

/// What the upstream does with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Accept,
    /// 554 after the dot.
    Refuse,
    /// Close after about half of the data.
    DropMidData,
    /// Take the message, then close before the reply.
    TakeAndDrop,
    /// Close right after the dot without taking it (a crash before its commit).
    DropAfterDot,
    /// Wait this long before the 250.
    Stall(Duration),
}

/// The upstream's plan: how often a message (or a POP3 command) meets a fault while the
/// faults go on, and the POP3 maildrops it serves.
#[derive(Debug, Clone)]
pub struct UpstreamPlan {
    pub fault_rate: f64,
    pub seed: u64,
    /// Account (user name) and its messages; none: no POP3 service.
    pub maildrops: Vec<(String, Vec<crate::scenario::UpstreamMessage>)>,
}

/// The host's software (never crashed; turmoil calls it once).
pub async fn run(plan: UpstreamPlan, shared: SharedRef) -> turmoil::Result {
    let rng = Rc::new(RefCell::new(
        <SmallRng as rand::SeedableRng>::seed_from_u64(plan.seed),
    ));
    if !plan.maildrops.is_empty() {
        super::upstream_pop3::spawn(&plan, &shared, &rng).await?;
    }
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", SUBMISSION_PORT)).await?;
    let mut connection = 0u64;
    loop {
        let (stream, _) = listener.accept().await?;
        connection += 1;
        let (shared, rng, plan) = (shared.clone(), rng.clone(), plan.clone());
        tokio::task::spawn_local(async move {
            let mut conn = Server::new(stream);
            let end = serve(&mut conn, connection, &plan, &shared, &rng).await;
            if let Err(why) = end {
                shared.log(NAME, format!("connection {connection} ended: {why}"));
            }
        });
    }
}

/// The upstream's side of a connection (SMTP or POP3).
pub(super) struct Server {
    stream: Option<Box<dyn Duplex>>,
    buffer: Vec<u8>,
}

impl Server {
    pub(super) fn new(stream: turmoil::net::TcpStream) -> Self {
        Self {
            stream: Some(Box::new(stream)),
            buffer: Vec::new(),
        }
    }

    /// Raw bytes (a multi-line answer, or part of one).
    pub(super) async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), String> {
        let stream = self.stream.as_mut().ok_or("closed")?;
        stream.write_all(bytes).await.map_err(|e| e.to_string())?;
        stream.flush().await.map_err(|e| e.to_string())
    }

    pub(super) async fn send(&mut self, line: &str) -> Result<(), String> {
        self.send_raw(format!("{line}\r\n").as_bytes()).await
    }

    /// One line without its CRLF; an idle client is dropped after ten minutes.
    pub(super) async fn line(&mut self) -> Result<Vec<u8>, String> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|w| w == b"\r\n") {
                let line = self.buffer[..end].to_vec();
                self.buffer.drain(..end + 2);
                return Ok(line);
            }
            let stream = self.stream.as_mut().ok_or("closed")?;
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout(Duration::from_secs(600), stream.read(&mut chunk))
                .await
                .map_err(|_| "idle")?
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("closed by the client".into());
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
    }

    pub(super) async fn start_tls(&mut self) -> Result<(), String> {
        let stream = self.stream.take().ok_or("closed")?;
        if !self.buffer.is_empty() {
            return Err("data pipelined before the TLS handshake".into());
        }
        let tls = crate::tls::acceptor()
            .accept(stream)
            .await
            .map_err(|e| e.to_string())?;
        self.stream = Some(Box::new(tls));
        Ok(())
    }
}

fn draw_fate(plan: &UpstreamPlan, shared: &SharedRef, rng: &RefCell<SmallRng>) -> Fate {
    let mut rng = rng.borrow_mut();
    if shared.faults_over.get() || !rng.random_bool(plan.fault_rate) {
        return Fate::Accept;
    }
    match rng.random_range(0..5) {
        0 => Fate::Refuse,
        1 => Fate::DropMidData,
        2 => Fate::TakeAndDrop,
        3 => Fate::DropAfterDot,
        _ => Fate::Stall(Duration::from_millis(rng.random_range(100..20_000))),
    }
}

async fn serve(
    conn: &mut Server,
    id: u64,
    plan: &UpstreamPlan,
    shared: &SharedRef,
    rng: &RefCell<SmallRng>,
) -> Result<(), String> {
    let me = format!("{NAME}#{id}");
    conn.send("220 upstream.sim ESMTP").await?;
    let mut tls = false;
    let mut authed = false;
    let mut in_transaction = false;
    loop {
        let line = conn.line().await?;
        let text = String::from_utf8_lossy(&line).into_owned();
        let verb = text
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        match verb.as_str() {
            "EHLO" => {
                conn.send("250-upstream.sim").await?;
                conn.send("250-PIPELINING").await?;
                if tls {
                    conn.send("250-AUTH PLAIN LOGIN").await?;
                } else {
                    conn.send("250-STARTTLS").await?;
                }
                conn.send("250 8BITMIME").await?;
            }
            "STARTTLS" if !tls => {
                conn.send("220 go ahead").await?;
                conn.start_tls().await?;
                tls = true;
            }
            "AUTH" if tls && !authed => {
                // Any credentials will do; the gateway's handling of them is tested elsewhere.
                if text.to_ascii_uppercase().starts_with("AUTH LOGIN") {
                    conn.send("334 VXNlcm5hbWU6").await?;
                    conn.line().await?;
                    conn.send("334 UGFzc3dvcmQ6").await?;
                    conn.line().await?;
                }
                conn.send("235 2.7.0 authenticated").await?;
                authed = true;
            }
            "MAIL" if authed => {
                if conn.buffer.windows(2).any(|w| w == b"\r\n") {
                    crate::paths::pipelined_group();
                }
                in_transaction = true;
                conn.send("250 2.1.0 ok").await?;
            }
            "RCPT" if in_transaction => conn.send("250 2.1.5 ok").await?,
            "RSET" => {
                in_transaction = false;
                conn.send("250 2.0.0 ok").await?;
            }
            "DATA" if in_transaction => {
                in_transaction = false;
                let fate = draw_fate(plan, shared, rng);
                conn.send("354 go ahead").await?;
                let mut body = Vec::new();
                let mut lines = 0usize;
                loop {
                    let line = conn.line().await?;
                    if line == b"." {
                        break;
                    }
                    lines += 1;
                    if fate == Fate::DropMidData && lines == 3 {
                        shared.log(&me, "drops the connection in the middle of the data");
                        return Ok(());
                    }
                    let line = line.strip_prefix(b".").unwrap_or(&line);
                    body.extend_from_slice(line);
                    body.extend_from_slice(b"\r\n");
                }
                let label = crate::invariants::label_of(&body).unwrap_or_else(|| "?".into());
                match fate {
                    Fate::Refuse => {
                        shared.log(&me, format!("refuses {label}"));
                        conn.send("554 5.7.1 refused by the simulation").await?;
                        continue;
                    }
                    Fate::DropAfterDot | Fate::DropMidData => {
                        shared.log(&me, format!("drops {label} after the dot, not taken"));
                        return Ok(());
                    }
                    Fate::Stall(for_) => {
                        shared.log(&me, format!("stalls {for_:?} before taking {label}"));
                        tokio::time::sleep(for_).await;
                    }
                    Fate::Accept | Fate::TakeAndDrop => {}
                }
                shared.log(&me, format!("takes {label} ({} bytes)", body.len()));
                shared
                    .ledger
                    .borrow_mut()
                    .upstream
                    .entry(label)
                    .or_default()
                    .push(body);
                if fate == Fate::TakeAndDrop {
                    shared.log(&me, "drops the connection before its 250");
                    return Ok(());
                }
                conn.send("250 2.0.0 queued").await?;
            }
            "NOOP" => conn.send("250 2.0.0 ok").await?,
            "QUIT" => {
                conn.send("221 2.0.0 bye").await?;
                return Ok(());
            }
            _ => conn.send("503 5.5.1 bad sequence").await?,
        }
    }
}
