//! The archiver: empties the mailboxes over POP3S with their passwords. During the faults it
//! runs sessions that may take only some messages or break off in the middle of a RETR or
//! before QUIT; once the faults are over and the senders are done it drains every mailbox.

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::Rng;

use super::conn::{multiline, ok, status, uidl_listing, Broken, Conn};
use super::gateway::POP3S_PORT;
use super::SharedRef;
use crate::invariants::{Pop3Session, SessionEnd};
use crate::scenario::ArchiverPlan;

const ME: &str = "archiver";

/// How one session is to go.
#[derive(Debug, Clone, Copy)]
struct Style {
    /// Retrieve and delete everything (the final drain) or a random part.
    everything: bool,
    /// Break off in the middle of the n-th RETR.
    cut_in_retr: Option<usize>,
    /// Break off after the DELEs, before QUIT.
    cut_before_quit: bool,
}

pub async fn run(plan: ArchiverPlan, shared: SharedRef, mut rng: SmallRng) -> turmoil::Result {
    // Sessions while the faults go on.
    for _ in 0..plan.sessions_during_faults {
        let wait = Duration::from_millis(rng.random_range(1_000..plan.max_gap_ms.max(1_001)));
        tokio::time::sleep(wait).await;
        if shared.faults_over.get() {
            break;
        }
        let mailbox = rng.random_range(0..plan.mailboxes.len());
        let style = Style {
            everything: false,
            cut_in_retr: rng
                .random_bool(plan.cut_rate)
                .then(|| rng.random_range(0..3)),
            cut_before_quit: rng.random_bool(plan.cut_rate),
        };
        session(&plan, mailbox, style, &shared, &mut rng).await;
    }
    // The final drain.
    while !(shared.faults_over.get() && shared.senders_left.get() == 0) {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for mailbox in 0..plan.mailboxes.len() {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let style = Style {
                everything: true,
                cut_in_retr: None,
                cut_before_quit: false,
            };
            let end = session(&plan, mailbox, style, &shared, &mut rng).await;
            if end == SessionEnd::Completed {
                break;
            }
            if attempts >= plan.max_drain_attempts {
                shared.ledger.borrow_mut().problems.push(format!(
                    "archiver: mailbox {mailbox} could not be emptied after the faults ended ({attempts} sessions)"
                ));
                break;
            }
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    }
    shared.log(ME, "done");
    Ok(())
}

/// One session on one mailbox; everything it saw goes into the ledger.
async fn session(
    plan: &ArchiverPlan,
    mailbox: usize,
    style: Style,
    shared: &SharedRef,
    rng: &mut SmallRng,
) -> SessionEnd {
    let mut record = Pop3Session {
        mailbox,
        listing: None,
        deleted: Vec::new(),
        end: SessionEnd::NoLogin,
    };
    let result = converse(plan, &mut record, style, shared, rng).await;
    let what = match &result {
        Ok(()) => format!("mailbox {mailbox}: {:?}", record.end),
        Err(e) => format!("mailbox {mailbox}: {:?} ({e})", record.end),
    };
    shared.log(ME, what);
    let end = record.end;
    shared.ledger.borrow_mut().sessions.push(record);
    end
}

async fn converse(
    plan: &ArchiverPlan,
    record: &mut Pop3Session,
    style: Style,
    shared: &SharedRef,
    rng: &mut SmallRng,
) -> Result<(), Broken> {
    let (id, password) = &plan.mailboxes[record.mailbox];
    let host = super::pick(&plan.gateways, rng);
    if plan.gateways.len() > 1 {
        shared.log(ME, format!("mailbox {} via {host}", record.mailbox));
    }
    let mut conn = Conn::connect(host, POP3S_PORT, plan.patience).await?;
    conn.upgrade().await?;
    ok(&mut conn).await?;
    conn.send(format!("USER {id}\r\n").as_bytes()).await?;
    ok(&mut conn).await?;
    conn.send(format!("PASS {password}\r\n").as_bytes()).await?;
    if let Err(refused) = status(&mut conn).await? {
        let code = refused.split(' ').nth(1).unwrap_or("");
        shared.log(ME, format!("login refused: {code}"));
        // [IN-USE]: its own earlier session still holds the maildrop, which is legitimate.
        if plan.never_refused && code != "[IN-USE]" {
            shared.ledger.borrow_mut().problems.push(format!(
                "archiver: the right password for mailbox {} was refused: {refused}",
                record.mailbox
            ));
        }
        return Ok(());
    }
    // From here on the maildrop is ours: the session has begun.
    record.end = SessionEnd::NoUpdate;
    let (numbers, uidls): (Vec<String>, Vec<String>) =
        uidl_listing(&mut conn).await?.into_iter().unzip();
    // Only a listing that arrived whole says what the maildrop held.
    record.listing = Some(uidls.clone());
    shared.log(
        ME,
        format!("mailbox {}: {} messages", record.mailbox, numbers.len()),
    );
    let mut retrieved = 0;
    for (i, n) in numbers.iter().enumerate() {
        if !style.everything && rng.random_bool(0.4) {
            continue;
        }
        conn.send(format!("RETR {n}\r\n").as_bytes()).await?;
        ok(&mut conn).await?;
        let cut = style.cut_in_retr == Some(retrieved);
        let message = multiline(&mut conn, cut.then_some(3)).await?;
        retrieved += 1;
        let uidl = uidls[i].clone();
        let label = crate::invariants::message_of(&message)
            .and_then(|(_, m)| crate::invariants::label_of(m))
            .unwrap_or_else(|| "?".into());
        shared.log(ME, format!("RETR {n}: {label}"));
        {
            let mut ledger = shared.ledger.borrow_mut();
            let key = (record.mailbox, uidl.clone());
            if let Some(earlier) = ledger.retrieved.get(&key) {
                if earlier != &message {
                    ledger.problems.push(format!(
                        "mailbox {}: {uidl} changed between two retrievals",
                        record.mailbox
                    ));
                }
            }
            ledger.retrieved.insert(key, message);
        }
        if style.everything || rng.random_bool(0.7) {
            conn.send(format!("DELE {n}\r\n").as_bytes()).await?;
            ok(&mut conn).await?;
            record.deleted.push(uidl);
        }
    }
    if style.cut_before_quit {
        conn.abandon();
        return Err(Broken::Closed);
    }
    conn.send(b"QUIT\r\n").await?;
    record.end = SessionEnd::QuitUnanswered;
    match status(&mut conn).await? {
        Ok(_) => record.end = SessionEnd::Completed,
        Err(refused) => {
            record.end = SessionEnd::UpdateFailed;
            shared.log(
                ME,
                format!("QUIT refused: {}", refused.split(' ').nth(1).unwrap_or("")),
            );
            if plan.pickup_always_frees && !record.deleted.is_empty() {
                shared.ledger.borrow_mut().problems.push(format!(
                    "archiver: mailbox {}: QUIT after {} DELE refused ({refused}): pick-up could not free space",
                    record.mailbox,
                    record.deleted.len()
                ));
            }
        }
    }
    Ok(())
}
