//! A POP3 proxy client: a mail program that retrieves its maildrop at the upstream through
//! the gateway, logging in as `<name>%upstream%<mailbox>` with its upstream password over
//! implicit TLS (995) or STLS (110), the gateway then doing the same toward the upstream.
//!
//! While the faults go on it runs sessions that retrieve part of the maildrop (some messages
//! twice, some with TOP), mark some with DELE (some never retrieved, which the gateway must
//! copy first), sometimes RSET, and may break off in the middle of a RETR or before QUIT.
//! Once the faults are over it retrieves everything that is left in one session, which must
//! succeed. In the ledger, per message: that it was asked for (before the command leaves),
//! each RETR seen complete with exact bytes, and each DELE followed by a QUIT.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::Rng;

use super::conn::{multiline, ok, status, uidl_listing, Broken, Conn};
use super::gateway::{NAME as GATEWAY, POP3S_PORT, POP3_PORT};
use super::upstream::NAME as UPSTREAM;
use super::upstream_pop3::{password, top};
use super::SharedRef;
use crate::invariants::Fetched;
use crate::scenario::{Pop3ClientPlan, UpstreamMessage};

/// How one session is to go.
#[derive(Debug, Clone, Copy)]
struct Style {
    /// Retrieve every message listed (the session after the faults) or a random part.
    everything: bool,
    /// Break off in the middle of the n-th RETR, at this line.
    cut_in_retr: Option<(usize, usize)>,
    /// Break off before QUIT.
    cut_before_quit: bool,
}

pub async fn run(plan: Pop3ClientPlan, shared: SharedRef, mut rng: SmallRng) -> turmoil::Result {
    let me = plan.name.clone();
    for message in &plan.messages {
        shared.ledger.borrow_mut().maildrop.insert(
            message.label.clone(),
            Fetched {
                user: plan.name.clone(),
                uidl: message.uidl.clone(),
                mailbox: plan.mailbox_index,
                body: message.body.clone(),
                asked: false,
                completed: 0,
                dele_then_quit: false,
                deleted_upstream: false,
            },
        );
    }
    // One way in for the whole run: the gateway keeps one copy per UIDL per upstream
    // `host:port`, on purpose (another port may be another service, where the same UIDL is
    // another message: a duplicate beats a lost copy), so a client switching between 995
    // and 110 gets a copy per port, which this scenario's one-copy rule would count.
    let implicit = rng.random_bool(0.5);
    tokio::time::sleep(plan.start).await;
    for _ in 0..plan.sessions_during_faults {
        if shared.faults_over.get() {
            break;
        }
        let style = Style {
            everything: false,
            cut_in_retr: rng
                .random_bool(plan.cut_rate)
                .then(|| (rng.random_range(0..3), rng.random_range(1..40))),
            cut_before_quit: rng.random_bool(plan.cut_rate),
        };
        session(&plan, style, implicit, &shared, &mut rng).await;
        let gap = Duration::from_millis(rng.random_range(500..plan.max_gap_ms.max(501)));
        tokio::time::sleep(gap).await;
    }
    while !shared.faults_over.get() {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let style = Style {
        everything: true,
        cut_in_retr: None,
        cut_before_quit: false,
    };
    let mut attempts = 0;
    while !session(&plan, style, implicit, &shared, &mut rng).await {
        attempts += 1;
        if attempts >= plan.max_attempts_after_faults {
            shared.ledger.borrow_mut().problems.push(format!(
                "{me}: the maildrop could not be retrieved through the proxy after the faults ended ({attempts} sessions)"
            ));
            break;
        }
        tokio::time::sleep(Duration::from_secs(rng.random_range(5..30))).await;
    }
    shared
        .senders_left
        .set(shared.senders_left.get().saturating_sub(1));
    shared.log(&me, "done");
    Ok(())
}

/// One session; true when it retrieved everything it meant to and QUIT was answered.
async fn session(
    plan: &Pop3ClientPlan,
    style: Style,
    implicit: bool,
    shared: &SharedRef,
    rng: &mut SmallRng,
) -> bool {
    let result = converse(plan, style, implicit, shared, rng).await;
    let how = if implicit { "pop3s" } else { "pop3+stls" };
    let what = match &result {
        Ok(true) => format!("session ({how}) done"),
        Ok(false) => format!("session ({how}) refused"),
        Err(e) => format!("session ({how}) broken: {e}"),
    };
    shared.log(&plan.name, what);
    matches!(result, Ok(true))
}

fn asked(shared: &SharedRef, label: &str) {
    if let Some(fetched) = shared.ledger.borrow_mut().maildrop.get_mut(label) {
        fetched.asked = true;
    }
}

async fn converse(
    plan: &Pop3ClientPlan,
    style: Style,
    implicit: bool,
    shared: &SharedRef,
    rng: &mut SmallRng,
) -> Result<bool, Broken> {
    let me = plan.name.as_str();
    let port = if implicit { POP3S_PORT } else { POP3_PORT };
    let mut conn = Conn::connect(GATEWAY, port, plan.patience).await?;
    if implicit {
        conn.upgrade().await?;
    }
    ok(&mut conn).await?;
    if !implicit {
        conn.send(b"STLS\r\n").await?;
        ok(&mut conn).await?;
        conn.upgrade().await?;
    }
    let login = format!("{me}%{UPSTREAM}%{}", plan.mailbox);
    conn.send(format!("USER {login}\r\n").as_bytes()).await?;
    ok(&mut conn).await?;
    conn.send(format!("PASS {}\r\n", password(me)).as_bytes())
        .await?;
    if let Err(refused) = status(&mut conn).await? {
        shared.log(me, format!("login refused: {refused}"));
        return Ok(false);
    }
    let listing = uidl_listing(&mut conn).await?;
    let mut messages: Vec<(String, &UpstreamMessage)> = Vec::new();
    for (n, uidl) in listing {
        let Some(message) = plan.messages.iter().find(|m| m.uidl == uidl) else {
            return Err(Broken::Protocol(format!("unknown UIDL {uidl}")));
        };
        messages.push((n, message));
    }
    shared.log(me, format!("{} messages listed", messages.len()));
    for command in ["STAT", "NOOP"] {
        if rng.random_bool(0.2) {
            conn.send(format!("{command}\r\n").as_bytes()).await?;
            ok(&mut conn).await?;
        }
    }
    if rng.random_bool(0.2) {
        conn.send(b"LIST\r\n").await?;
        ok(&mut conn).await?;
        multiline(&mut conn, None).await?;
    }
    let mut marked = Vec::new();
    let mut retrievals = 0;
    for (n, message) in &messages {
        let label = message.label.as_str();
        let choice = if style.everything {
            0
        } else {
            rng.random_range(0..10)
        };
        match choice {
            // RETR, sometimes twice in a row.
            0..=4 => {
                let times = if rng.random_bool(0.15) { 2 } else { 1 };
                for _ in 0..times {
                    let cut = style
                        .cut_in_retr
                        .and_then(|(at, line)| (at == retrievals).then_some(line));
                    retrievals += 1;
                    asked(shared, label);
                    conn.send(format!("RETR {n}\r\n").as_bytes()).await?;
                    ok(&mut conn).await?;
                    if cut.is_some() {
                        shared.log(me, format!("breaks off in the RETR of {label}"));
                    }
                    let got = multiline(&mut conn, cut).await?;
                    let mut ledger = shared.ledger.borrow_mut();
                    if got == message.body {
                        if let Some(fetched) = ledger.maildrop.get_mut(label) {
                            fetched.completed += 1;
                        }
                    } else {
                        ledger.problems.push(format!(
                            "{me}: RETR {n} relayed {label} altered ({} bytes, {} upstream)",
                            got.len(),
                            message.body.len()
                        ));
                    }
                }
            }
            5 => {
                let lines = rng.random_range(0..4);
                asked(shared, label);
                conn.send(format!("TOP {n} {lines}\r\n").as_bytes()).await?;
                ok(&mut conn).await?;
                let got = multiline(&mut conn, None).await?;
                if got != top(&message.body, lines) {
                    shared.ledger.borrow_mut().problems.push(format!(
                        "{me}: TOP {n} {lines} of {label} came back wrong ({} bytes)",
                        got.len()
                    ));
                }
            }
            // DELE without retrieving it: the gateway must copy it first.
            6 => {
                asked(shared, label);
                conn.send(format!("DELE {n}\r\n").as_bytes()).await?;
                ok(&mut conn).await?;
                marked.push(label);
                continue;
            }
            _ => continue,
        }
        if rng.random_bool(0.3) {
            conn.send(format!("DELE {n}\r\n").as_bytes()).await?;
            ok(&mut conn).await?;
            marked.push(label);
        }
    }
    if !style.everything && !marked.is_empty() && rng.random_bool(0.15) {
        conn.send(b"RSET\r\n").await?;
        ok(&mut conn).await?;
        marked.clear();
    }
    if style.cut_before_quit {
        shared.log(me, "breaks off before QUIT");
        conn.abandon();
        return Err(Broken::Closed);
    }
    // From here on the upstream may delete what is marked, whatever becomes of the answer.
    for label in &marked {
        if let Some(fetched) = shared.ledger.borrow_mut().maildrop.get_mut(*label) {
            fetched.dele_then_quit = true;
        }
    }
    conn.send(b"QUIT\r\n").await?;
    ok(&mut conn).await?;
    Ok(true)
}
