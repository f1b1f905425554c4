//! The upstream provider's POP3 service (the `pop3-proxy` scenario): implicit TLS on 995 and
//! STLS on 110, `CAPA`, `USER`/`PASS` and (on every other connection) `AUTH PLAIN`, then
//! `STAT`, `LIST`, `UIDL`, `RETR`, `TOP`, `DELE`, `RSET`, `NOOP` and `QUIT`, over fixed
//! maildrops from the plan. Messages marked with `DELE` go only in the UPDATE after `QUIT`;
//! what goes is recorded in the ledger. While the faults go on it sometimes refuses a login
//! for a while (`[IN-USE]`, at most twice per account so the gateway's login throttle never
//! locks the account out), drops the connection in the middle of a RETR, or stalls before
//! answering one.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::Rng;

use super::upstream::{Server, UpstreamPlan, NAME};
use super::SharedRef;
use crate::scenario::UpstreamMessage;

pub const POP3_PORT: u16 = 110;
pub const POP3S_PORT: u16 = 995;

/// The password every account has at the upstream.
pub fn password(user: &str) -> String {
    format!("secret-{user}")
}

/// One account: its messages (deleted ones stay, marked) and the login refusals it has left.
struct Account {
    messages: Vec<(UpstreamMessage, bool)>,
    refusals_left: u32,
}

type Accounts = Rc<RefCell<BTreeMap<String, Account>>>;

/// Binds both POP3 listeners and serves them on tasks of the upstream host.
pub(super) async fn spawn(
    plan: &UpstreamPlan,
    shared: &SharedRef,
    rng: &Rc<RefCell<SmallRng>>,
) -> std::io::Result<()> {
    let accounts: Accounts = Rc::new(RefCell::new(
        plan.maildrops
            .iter()
            .map(|(user, messages)| {
                let account = Account {
                    messages: messages.iter().map(|m| (m.clone(), false)).collect(),
                    refusals_left: 2,
                };
                (user.clone(), account)
            })
            .collect(),
    ));
    let counter = Rc::new(Cell::new(0u64));
    for (port, implicit) in [(POP3S_PORT, true), (POP3_PORT, false)] {
        let listener = turmoil::net::TcpListener::bind(("0.0.0.0", port)).await?;
        let (shared, rng, plan, accounts, counter) = (
            shared.clone(),
            rng.clone(),
            plan.clone(),
            accounts.clone(),
            counter.clone(),
        );
        tokio::task::spawn_local(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.set(counter.get() + 1);
                let id = counter.get();
                let (shared, rng, plan, accounts) =
                    (shared.clone(), rng.clone(), plan.clone(), accounts.clone());
                tokio::task::spawn_local(async move {
                    let mut conn = Server::new(stream);
                    let me = format!("{NAME}-pop3#{id}");
                    let end = serve(
                        &mut conn, id, implicit, &me, &plan, &shared, &rng, &accounts,
                    );
                    if let Err(why) = end.await {
                        shared.log(&me, format!("connection ended: {why}"));
                    }
                });
            }
        });
    }
    Ok(())
}

/// A fault drawn for this command, while the faults go on.
fn fault(plan: &UpstreamPlan, shared: &SharedRef, rng: &RefCell<SmallRng>) -> bool {
    !shared.faults_over.get() && rng.borrow_mut().random_bool(plan.fault_rate)
}

/// A logged-in session: the user, the maildrop's messages at login (indexes into the
/// account's), and which of them are marked.
struct Transaction {
    user: String,
    visible: Vec<usize>,
    marked: Vec<bool>,
}

impl Transaction {
    /// Message `n` (1-based) if it exists and is not marked.
    fn message(&self, arg: Option<&str>) -> Option<usize> {
        let n: usize = arg?.parse().ok()?;
        let i = n.checked_sub(1)?;
        (i < self.visible.len() && !self.marked[i]).then_some(i)
    }
}

#[allow(clippy::too_many_arguments)]
async fn serve(
    conn: &mut Server,
    id: u64,
    implicit: bool,
    me: &str,
    plan: &UpstreamPlan,
    shared: &SharedRef,
    rng: &RefCell<SmallRng>,
    accounts: &Accounts,
) -> Result<(), String> {
    if implicit {
        conn.start_tls().await?;
    }
    conn.send("+OK upstream.sim POP3 ready").await?;
    let mut tls = implicit;
    let sasl = id.is_multiple_of(2);
    let mut user: Option<String> = None;
    let mut session: Option<Transaction> = None;
    loop {
        let line = conn.line().await?;
        let text = String::from_utf8_lossy(&line).into_owned();
        let mut words = text.split(' ');
        let verb = words.next().unwrap_or_default().to_ascii_uppercase();
        let (arg1, arg2) = (words.next(), words.next());
        // The login, before a maildrop is open.
        let Some(t) = session.as_mut() else {
            let login = match verb.as_str() {
                "CAPA" => {
                    let mut capa = String::from("+OK\r\n");
                    if !tls {
                        capa.push_str("STLS\r\n");
                    }
                    capa.push_str("USER\r\nUIDL\r\nTOP\r\n");
                    if tls && sasl {
                        capa.push_str("SASL PLAIN\r\n");
                    }
                    capa.push_str(".\r\n");
                    conn.send_raw(capa.as_bytes()).await?;
                    None
                }
                "STLS" if !tls => {
                    conn.send("+OK begin TLS").await?;
                    conn.start_tls().await?;
                    tls = true;
                    None
                }
                "USER" if tls => {
                    user = arg1.map(str::to_owned);
                    conn.send("+OK").await?;
                    None
                }
                "PASS" if tls => user
                    .take()
                    .filter(|u| arg1 == Some(password(u).as_str()))
                    .map(|u| (u, "PASS")),
                "AUTH" if tls && sasl && arg1.is_some_and(|m| m.eq_ignore_ascii_case("PLAIN")) => {
                    // The initial response names one of the accounts, with its password.
                    let token = arg2.unwrap_or_default();
                    let known: Vec<String> = accounts.borrow().keys().cloned().collect();
                    let user = known.into_iter().find(|u| {
                        let plain = format!("\0{u}\0{}", password(u));
                        super::proxy_client::base64(plain.as_bytes()) == token
                    });
                    user.map(|u| (u, "AUTH PLAIN"))
                }
                "QUIT" => {
                    conn.send("+OK bye").await?;
                    return Ok(());
                }
                _ => {
                    conn.send("-ERR not now").await?;
                    None
                }
            };
            match login {
                None if matches!(verb.as_str(), "PASS" | "AUTH") => {
                    shared.log(me, format!("refuses {verb}: wrong credentials"));
                    conn.send("-ERR [AUTH] wrong credentials").await?;
                }
                None => {}
                Some((name, how)) => {
                    let refuse = {
                        let mut accounts = accounts.borrow_mut();
                        let account = accounts.get_mut(&name).ok_or("unknown account")?;
                        let refuse = account.refusals_left > 0 && fault(plan, shared, rng);
                        if refuse {
                            account.refusals_left -= 1;
                        }
                        refuse
                    };
                    if refuse {
                        shared.log(me, format!("refuses {name}'s login for now"));
                        conn.send("-ERR [IN-USE] maildrop busy, try later").await?;
                        continue;
                    }
                    let visible: Vec<usize> = accounts.borrow()[&name]
                        .messages
                        .iter()
                        .enumerate()
                        .filter(|(_, (_, deleted))| !deleted)
                        .map(|(i, _)| i)
                        .collect();
                    shared.log(
                        me,
                        format!("{name} logged in ({how}), {} messages", visible.len()),
                    );
                    conn.send("+OK maildrop ready").await?;
                    session = Some(Transaction {
                        marked: vec![false; visible.len()],
                        visible,
                        user: name,
                    });
                }
            }
            continue;
        };
        let body = |i: usize| accounts.borrow()[&t.user].messages[t.visible[i]].0.clone();
        match verb.as_str() {
            "STAT" => {
                let (count, size) = (0..t.visible.len())
                    .filter(|i| !t.marked[*i])
                    .fold((0, 0), |(c, s), i| (c + 1, s + body(i).body.len()));
                conn.send(&format!("+OK {count} {size}")).await?;
            }
            "LIST" | "UIDL" => {
                let item = |i: usize| {
                    let m = body(i);
                    if verb == "LIST" {
                        format!("{} {}", i + 1, m.body.len())
                    } else {
                        format!("{} {}", i + 1, m.uidl)
                    }
                };
                if arg1.is_some() {
                    match t.message(arg1) {
                        Some(i) => conn.send(&format!("+OK {}", item(i))).await?,
                        None => conn.send("-ERR no such message").await?,
                    }
                } else {
                    let mut out = String::from("+OK\r\n");
                    for i in (0..t.visible.len()).filter(|i| !t.marked[*i]) {
                        out.push_str(&item(i));
                        out.push_str("\r\n");
                    }
                    out.push_str(".\r\n");
                    conn.send_raw(out.as_bytes()).await?;
                }
            }
            "RETR" | "TOP" => {
                let Some(i) = t.message(arg1) else {
                    conn.send("-ERR no such message").await?;
                    continue;
                };
                let message = body(i);
                let text = match (verb.as_str(), arg2.and_then(|k| k.parse::<usize>().ok())) {
                    ("TOP", Some(k)) => top(&message.body, k),
                    ("TOP", None) => {
                        conn.send("-ERR TOP needs a line count").await?;
                        continue;
                    }
                    _ => message.body.clone(),
                };
                let mut stuffed = gateway::smtp::data::dot_stuff(&text);
                if verb == "RETR" && fault(plan, shared, rng) {
                    if rng.borrow_mut().random_bool(0.5) {
                        shared.log(
                            me,
                            format!("drops the connection mid-RETR of {}", message.label),
                        );
                        stuffed.truncate(stuffed.len() / 2);
                        conn.send(&format!("+OK {} octets", message.body.len()))
                            .await?;
                        conn.send_raw(&stuffed).await?;
                        return Ok(());
                    }
                    let for_ = Duration::from_millis(rng.borrow_mut().random_range(100..20_000));
                    shared.log(
                        me,
                        format!("stalls {for_:?} before RETR of {}", message.label),
                    );
                    tokio::time::sleep(for_).await;
                }
                conn.send(&format!("+OK {} octets", message.body.len()))
                    .await?;
                conn.send_raw(&stuffed).await?;
            }
            "DELE" => match t.message(arg1) {
                Some(i) => {
                    t.marked[i] = true;
                    conn.send("+OK marked").await?;
                }
                None => conn.send("-ERR no such message").await?,
            },
            "RSET" => {
                t.marked.iter_mut().for_each(|m| *m = false);
                conn.send("+OK").await?;
            }
            "NOOP" => conn.send("+OK").await?,
            "QUIT" => {
                // The UPDATE.
                let mut gone = Vec::new();
                {
                    let mut accounts = accounts.borrow_mut();
                    let account = accounts.get_mut(&t.user).ok_or("unknown account")?;
                    let mut ledger = shared.ledger.borrow_mut();
                    for (i, _) in t.marked.iter().enumerate().filter(|(_, m)| **m) {
                        let (message, deleted) = &mut account.messages[t.visible[i]];
                        *deleted = true;
                        gone.push(message.label.clone());
                        if let Some(fetched) = ledger.maildrop.get_mut(&message.label) {
                            fetched.deleted_upstream = true;
                        }
                    }
                }
                if !gone.is_empty() {
                    shared.log(me, format!("UPDATE deletes {gone:?}"));
                }
                conn.send("+OK bye").await?;
                return Ok(());
            }
            _ => conn.send("-ERR unknown command").await?,
        }
    }
}

/// The header, the blank line and the first `lines` lines of the body.
pub fn top(body: &[u8], lines: usize) -> Vec<u8> {
    let mut end = 0;
    let mut in_body = false;
    let mut taken = 0;
    while end < body.len() {
        if in_body && taken == lines {
            break;
        }
        let next = body[end..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(body.len(), |p| end + p + 2);
        if in_body {
            taken += 1;
        } else if next - end == 2 {
            in_body = true;
        }
        end = next;
    }
    body[..end].to_vec()
}

#[cfg(test)]
mod tests {
    #[test]
    fn top_takes_the_header_and_so_many_body_lines() {
        let body = b"A: 1\r\nB: 2\r\n\r\nx\r\n.y\r\nz\r\n";
        assert_eq!(super::top(body, 0), b"A: 1\r\nB: 2\r\n\r\n");
        assert_eq!(super::top(body, 2), b"A: 1\r\nB: 2\r\n\r\nx\r\n.y\r\n");
        assert_eq!(super::top(body, 9), body);
    }
}
