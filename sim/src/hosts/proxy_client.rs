//! A proxy-mode client: a mail program that submits its messages through the gateway to the
//! upstream (STARTTLS, then `AUTH PLAIN` as `user%upstream:587%<mailbox>`), and retries until
//! it gets 250. It may drop its connection mid-data or right after the dot. What it was told
//! goes into the ledger: 250 (sent, and archived), 5xx after the dot (the upstream refused:
//! no copy may remain), anything else (outcome unknown).

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::Rng;

use super::conn::{Broken, Conn};
use super::gateway::{NAME as GATEWAY, SMTP_PORT};
use super::sender::{expect, record, reply};
use super::upstream::{NAME as UPSTREAM, SUBMISSION_PORT};
use super::{Cut, SharedRef};
use crate::invariants::Delivery;
use crate::scenario::{MessagePlan, ProxyClientPlan};

pub async fn run(plan: ProxyClientPlan, shared: SharedRef, mut rng: SmallRng) -> turmoil::Result {
    let me = plan.name.clone();
    tokio::time::sleep(plan.start).await;
    super::register(&shared, &plan.messages, true);
    for (index, message) in plan.messages.iter().enumerate() {
        // Every other message's MAIL, RCPT and DATA go in one write (RFC 2920), chosen
        // without a draw so the rest of the run is what its seed always made it.
        let pipelined = index % 2 == 1;
        let mut attempt = 0u32;
        let mut healthy_attempts = 0u32;
        loop {
            attempt += 1;
            if shared.faults_over.get() {
                healthy_attempts += 1;
            }
            let cut = Cut::draw(&mut rng, shared.faults_over.get(), plan.cut_rate);
            let result = submit(&plan, message, pipelined, cut, &mut rng, &shared).await;
            let told = match &result {
                Ok((Delivery::Acked, _)) => "250".to_owned(),
                Ok((other, code)) => format!("{other:?} ({code})"),
                Err(e) => format!("broken: {e}"),
            };
            shared.log(
                &me,
                format!("{} attempt {attempt}{}: {told}", message.label, cut.label()),
            );
            if matches!(result, Ok((Delivery::Acked, _))) {
                break;
            }
            if healthy_attempts >= plan.max_attempts_after_faults {
                shared.ledger.borrow_mut().problems.push(format!(
                    "{me}: {} still not sent after the faults ended ({attempt} attempts)",
                    message.label
                ));
                break;
            }
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

/// One attempt; `Ok` carries what the client now knows and the reply code (0: none).
async fn submit(
    plan: &ProxyClientPlan,
    message: &MessagePlan,
    pipelined: bool,
    cut: Cut,
    rng: &mut SmallRng,
    shared: &SharedRef,
) -> Result<(Delivery, u16), Broken> {
    let mut conn = Conn::connect(GATEWAY, SMTP_PORT, plan.patience).await?;
    expect(&mut conn, 220).await?;
    conn.send(format!("EHLO {}\r\n", plan.name).as_bytes())
        .await?;
    expect(&mut conn, 250).await?;
    conn.send(b"STARTTLS\r\n").await?;
    expect(&mut conn, 220).await?;
    conn.upgrade().await?;
    conn.send(format!("EHLO {}\r\n", plan.name).as_bytes())
        .await?;
    expect(&mut conn, 250).await?;
    let login = format!(
        "{}%{UPSTREAM}:{SUBMISSION_PORT}%{}",
        plan.name, plan.mailbox
    );
    let token = base64(format!("\0{login}\0secret-{}", plan.name).as_bytes());
    conn.send(format!("AUTH PLAIN {token}\r\n").as_bytes())
        .await?;
    expect(&mut conn, 235).await?;
    let envelope = [
        format!("MAIL FROM:<{}@client.sim>\r\n", plan.name),
        "RCPT TO:<someone@elsewhere.sim>\r\n".to_owned(),
        "DATA\r\n".to_owned(),
    ];
    if pipelined {
        conn.send(envelope.concat().as_bytes()).await?;
    }
    for (command, code) in envelope.iter().zip([250, 250, 354]) {
        if !pipelined {
            conn.send(command.as_bytes()).await?;
        }
        expect(&mut conn, code).await?;
    }
    let mut stuffed = gateway::smtp::data::dot_stuff(&message.body);
    stuffed.truncate(stuffed.len().saturating_sub(3));
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
    }
    // From here on this attempt may leave a copy, unless the upstream's refusal comes back.
    allow_copy(shared, &message.label, 1);
    conn.send(b".\r\n").await?;
    record(shared, &message.label, Delivery::Unknown);
    if cut == Cut::AfterDot {
        conn.abandon();
        return Ok((Delivery::Unknown, 0));
    }
    let code = match reply(&mut conn).await {
        Ok(code) => code,
        Err(_) => return Ok((Delivery::Unknown, 0)),
    };
    // 5xx after the dot is the upstream's refusal, relayed (the copy must be gone); a 4xx
    // may be a connection to the upstream lost after the dot: sent or not, nobody knows.
    let delivery = match code {
        250 => Delivery::Acked,
        500..=599 => Delivery::Refused,
        _ => Delivery::Unknown,
    };
    record(shared, &message.label, delivery);
    if delivery == Delivery::Refused {
        allow_copy(shared, &message.label, -1);
    }
    let _ = conn.send(b"QUIT\r\n").await;
    Ok((delivery, code))
}

fn allow_copy(shared: &SharedRef, label: &str, change: i32) {
    if let Some(sent) = shared.ledger.borrow_mut().sent.get_mut(label) {
        sent.copies_allowed = sent.copies_allowed.saturating_add_signed(change);
    }
}

/// Standard base64 with padding (enough for an `AUTH PLAIN` token).
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_rfc_examples() {
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b"fo"), "Zm8=");
        assert_eq!(super::base64(b"foo"), "Zm9v");
        assert_eq!(super::base64(b"foobar"), "Zm9vYmFy");
    }
}
