//! A journal sender: an MTA that delivers its messages to the gateway over SMTP and retries
//! until it gets 250, as a real one would. It may drop its connection in the middle of the
//! data, right after the final dot, or dribble its data out slowly, as the plan says.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::Rng;

use super::conn::{Broken, Conn};
use super::gateway::{EMAIL_DOMAIN, SMTP_PORT};
use super::{Cut, SharedRef};
use crate::invariants::Delivery;
use crate::scenario::SenderPlan;

/// Runs the sender to its end; never fails the simulation (problems go in the ledger).
pub async fn run(plan: SenderPlan, shared: SharedRef, mut rng: SmallRng) -> turmoil::Result {
    let me = plan.name.clone();
    tokio::time::sleep(plan.start).await;
    super::register(&shared, &plan.messages, false);
    for message in &plan.messages {
        let mut attempt = 0u32;
        // Attempts begun after the faults ended: only those count for liveness.
        let mut healthy_attempts = 0u32;
        loop {
            attempt += 1;
            if shared.faults_over.get() {
                healthy_attempts += 1;
            }
            let cut = Cut::draw(&mut rng, shared.faults_over.get(), plan.cut_rate);
            let tls = rng.random_bool(plan.tls_rate);
            let host = super::pick(&plan.gateways, &mut rng);
            let result = deliver(&plan, host, message, cut, tls, &mut rng, &shared).await;
            let delivery = match &result {
                Ok(Delivery::Acked) => "250".to_owned(),
                Ok(other) => format!("{other:?}"),
                Err(e) => format!("broken: {e}"),
            };
            let via = if plan.gateways.len() > 1 {
                format!(" via {host}")
            } else {
                String::new()
            };
            shared.log(
                &me,
                format!(
                    "{} attempt {attempt}{via}{}{}: {delivery}",
                    message.label,
                    if tls { " tls" } else { "" },
                    cut.label()
                ),
            );
            if matches!(result, Ok(Delivery::Acked)) {
                break;
            }
            if healthy_attempts >= plan.max_attempts_after_faults {
                shared.ledger.borrow_mut().problems.push(format!(
                    "{me}: {} still not accepted after the faults ended ({attempt} attempts)",
                    message.label
                ));
                break;
            }
            // An MTA's retry schedule, compressed.
            let backoff = Duration::from_millis(rng.random_range(500..5_000));
            tokio::time::sleep(backoff).await;
        }
        let pause = Duration::from_millis(rng.random_range(0..plan.max_pause_ms.max(1)));
        tokio::time::sleep(pause).await;
    }
    shared
        .senders_left
        .set(shared.senders_left.get().saturating_sub(1));
    shared.log(&me, "done");
    Ok(())
}

pub(super) fn record(shared: &SharedRef, label: &str, delivery: Delivery) {
    if let Some(sent) = shared.ledger.borrow_mut().sent.get_mut(label) {
        sent.delivery = sent.delivery.max(delivery);
    }
}

/// The SMTP reply code, reading past continuation lines.
pub(super) async fn reply(conn: &mut Conn) -> Result<u16, Broken> {
    loop {
        let line = conn.line().await?;
        let code = std::str::from_utf8(line.get(..3).unwrap_or_default())
            .ok()
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| Broken::Protocol(String::from_utf8_lossy(&line).into_owned()))?;
        if line.get(3) != Some(&b'-') {
            return Ok(code);
        }
    }
}

pub(super) async fn expect(conn: &mut Conn, wanted: u16) -> Result<(), Broken> {
    let code = reply(conn).await?;
    if code == wanted {
        Ok(())
    } else {
        Err(Broken::Protocol(format!(
            "{code} where {wanted} was expected"
        )))
    }
}

/// One attempt: connect, (STARTTLS), envelope, data. `Ok` carries what the sender now
/// knows about the message; `Err` means it broke before the data ended.
async fn deliver(
    plan: &SenderPlan,
    host: &str,
    message: &crate::scenario::MessagePlan,
    cut: Cut,
    tls: bool,
    rng: &mut SmallRng,
    shared: &SharedRef,
) -> Result<Delivery, Broken> {
    let mut conn = Conn::connect(host, SMTP_PORT, plan.patience).await?;
    expect(&mut conn, 220).await?;
    conn.send(format!("EHLO {}\r\n", plan.name).as_bytes())
        .await?;
    expect(&mut conn, 250).await?;
    if tls {
        conn.send(b"STARTTLS\r\n").await?;
        expect(&mut conn, 220).await?;
        conn.upgrade().await?;
        conn.send(format!("EHLO {}\r\n", plan.name).as_bytes())
            .await?;
        expect(&mut conn, 250).await?;
    }
    conn.send(format!("MAIL FROM:<journal@{}.example>\r\n", plan.name).as_bytes())
        .await?;
    expect(&mut conn, 250).await?;
    for rcpt in &message.rcpts {
        let address = plan.mailboxes[*rcpt].address(EMAIL_DOMAIN);
        conn.send(format!("RCPT TO:<{address}>\r\n").as_bytes())
            .await?;
        expect(&mut conn, 250).await?;
    }
    conn.send(b"DATA\r\n").await?;
    expect(&mut conn, 354).await?;
    // The library's stuffing appends the end marker (bodies end in CRLF); it goes out on its
    // own below so a cut can fall just before it.
    let mut stuffed = gateway::smtp::data::dot_stuff(&message.body);
    stuffed.truncate(stuffed.len().saturating_sub(3));
    // Pieces of the data, sometimes with the sender stalling in between (slow clients).
    let mut sent = 0;
    let half = stuffed.len() / 2;
    while sent < stuffed.len() {
        let piece = rng
            .random_range(1..=plan.max_piece.max(1))
            .min(stuffed.len() - sent);
        conn.send(&stuffed[sent..sent + piece]).await?;
        sent += piece;
        if cut == Cut::MidData && sent >= half && sent < stuffed.len() {
            conn.abandon();
            return Err(Broken::Closed);
        }
        if plan.max_stall_ms > 0 && rng.random_bool(0.3) {
            let stall = Duration::from_millis(rng.random_range(0..plan.max_stall_ms));
            tokio::time::sleep(stall).await;
        }
    }
    conn.send(b".\r\n").await?;
    record(shared, &message.label, Delivery::Unknown);
    if cut == Cut::AfterDot {
        conn.abandon();
        return Ok(Delivery::Unknown);
    }
    let code = match reply(&mut conn).await {
        Ok(code) => code,
        Err(_) => return Ok(Delivery::Unknown),
    };
    let delivery = if code == 250 {
        Delivery::Acked
    } else {
        Delivery::Refused
    };
    record(shared, &message.label, delivery);
    // QUIT politely; its answer does not matter.
    let _ = conn.send(b"QUIT\r\n").await;
    if delivery == Delivery::Refused {
        shared.log(&plan.name, format!("{} refused with {code}", message.label));
    }
    Ok(delivery)
}
