//! A gateway storing numbered messages until it is killed, and the check afterwards that
//! everything it acknowledged is there: the crash tests' child processes and their parents.

use std::collections::BTreeSet;
use std::time::Duration;

use gateway::crypto::{Envelope, MailboxPassword};
use gateway::mailbox::MailboxId;
use gateway::service::Gateway;

/// Deterministic body of message `n`, from a few bytes to several chunks.
pub fn body(n: u64) -> Vec<u8> {
    let len = [40, 10_000, 200_000, 70_000][(n % 4) as usize];
    let mut out = format!("Subject: message {n}\r\n\r\n").into_bytes();
    out.extend((0..len).map(|i| b'a' + ((i as u64 * 7 + n) % 26) as u8));
    out
}

/// Stores messages into `mailbox` from four concurrent writers (so commits are shared)
/// forever, printing `stored N` once message N's commit returned (only then is it
/// acknowledged, as a 250 would be) and `refused N` when it failed (as a 451 would be).
pub fn store_until_killed(gateway: Gateway, mailbox: MailboxId) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let mut tasks = Vec::new();
        for worker in 0..4u64 {
            let gateway = gateway.clone();
            let mailbox = mailbox.clone();
            tasks.push(tokio::spawn(async move {
                for round in 0.. {
                    let n = round * 4 + worker;
                    let stored = async {
                        let mut draft = gateway
                            .begin_message(std::slice::from_ref(&mailbox), &Envelope::default())?;
                        for piece in body(n).chunks(16 * 1024) {
                            draft.write(piece)?;
                        }
                        gateway.commit(draft).await
                    }
                    .await;
                    match stored {
                        Ok(_) => println!("stored {n}"),
                        Err(_) => {
                            println!("refused {n}");
                            // As a client would, before its next try.
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
}

/// What a storing child printed: acknowledged and refused message numbers.
#[derive(Default)]
pub struct Outcomes {
    pub stored: BTreeSet<u64>,
    pub refused: usize,
}

impl Outcomes {
    /// One line of the child's output. libtest prints the child test's name on the line of
    /// its first output, so the outcome is looked for at the line's end.
    pub fn note(&mut self, line: &str) {
        if let Some((_, n)) = line.rsplit_once("stored ") {
            self.stored.insert(n.trim().parse().unwrap());
        } else if line.rsplit_once("refused ").is_some() {
            self.refused += 1;
        }
    }

    /// Reads lines until `done` holds.
    pub fn until(
        &mut self,
        lines: &mut impl Iterator<Item = std::io::Result<String>>,
        done: impl Fn(&Self) -> bool,
    ) {
        while !done(self) {
            let line = lines
                .next()
                .expect("the storing child ended early")
                .unwrap();
            self.note(&line);
        }
    }

    /// Notes whatever else the child printed before it died: acknowledgements too.
    pub fn drain(&mut self, lines: impl Iterator<Item = std::io::Result<String>>) {
        for line in lines.map_while(Result::ok) {
            self.note(&line);
        }
    }
}

/// Every acknowledged message is in the mailbox, read through `gateway`, byte for byte and
/// once, and the mailbox's counter matches what is listed.
pub fn assert_all_there(
    gateway: &Gateway,
    mailbox: &MailboxId,
    password: &MailboxPassword,
    acknowledged: &BTreeSet<u64>,
) {
    let key = gateway.unseal(mailbox, password).unwrap();
    let mut found = BTreeSet::new();
    let listed = gateway.list_messages(mailbox).unwrap();
    for message in &listed {
        let (_, bytes) = gateway
            .read_message(&key, message.seq)
            .expect("every stored message decrypts completely");
        let n: u64 = String::from_utf8_lossy(&bytes[..bytes.len().min(40)])
            .strip_prefix("Subject: message ")
            .and_then(|rest| rest.split("\r\n").next())
            .and_then(|n| n.parse().ok())
            .expect("a message the child wrote");
        assert_eq!(bytes, body(n), "message {n} is byte-identical");
        assert!(found.insert(n), "message {n} stored once");
    }
    for n in acknowledged {
        assert!(found.contains(n), "acknowledged message {n} was lost");
    }
    assert_eq!(
        gateway.mailbox(mailbox).unwrap().message_count as usize,
        listed.len(),
        "counters match the messages"
    );
}
