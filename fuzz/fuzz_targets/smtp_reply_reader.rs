//! The SMTP proxy's reader of upstream replies (`gateway::smtp::client::ReplyReader`),
//! fed arbitrary upstream bytes in arbitrary reads (one selector byte, then the stream; see
//! `Split`), draining every complete reply after each read as the client core does.
//!
//! - Split independence: the same replies, then the same error or the same leftover state,
//!   whether the bytes arrive whole or in pieces.
//! - Every reply keeps the limits: a code of 200 to 559 whose enhanced status (if any) has
//!   the code's class, 1 to `MAX_REPLY_LINES` lines without CR or NUL.
//! - Relaying is safe and faithful: a reply written for the client (`Reply::write`) reads
//!   back as exactly one reply, so an upstream cannot make the proxy forge a second one, with
//!   the same code, enhanced status and lines, the text changed only where `write` promises
//!   (control characters become spaces, the status prefix goes on every line).

#![no_main]

use gateway::smtp::client::{ReplyError, ReplyReader, MAX_REPLY_LINE, MAX_REPLY_LINES};
use gateway::smtp::Reply;
use gateway_fuzz::Split;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(split) = Split::new(data) else {
        return;
    };
    let whole = read(&[split.payload]);
    let pieces = read(split.pieces());
    assert_eq!(whole, pieces, "the replies depend on how reads split");
    for reply in &whole.replies {
        check_reply(reply);
        check_relay(reply);
    }
});

#[derive(Debug, PartialEq)]
struct Reading {
    replies: Vec<Reply>,
    error: Option<ReplyError>,
    buffered: bool,
}

fn read(pieces: &[&[u8]]) -> Reading {
    let mut reader = ReplyReader::new();
    let mut replies = Vec::new();
    for piece in pieces {
        reader.push(piece);
        loop {
            match reader.next_reply() {
                Ok(Some(reply)) => replies.push(reply),
                Ok(None) => break,
                Err(error) => {
                    return Reading {
                        replies,
                        error: Some(error),
                        buffered: true,
                    }
                }
            }
        }
    }
    Reading {
        replies,
        error: None,
        buffered: reader.has_buffered(),
    }
}

fn check_reply(reply: &Reply) {
    assert!((200..=559).contains(&reply.code()), "{reply:?}");
    assert!(reply.code() % 100 / 10 <= 5, "{reply:?}");
    if let Some(status) = reply.status() {
        assert_eq!(u16::from(status.class), reply.code() / 100, "{reply:?}");
    }
    assert!(
        (1..=MAX_REPLY_LINES).contains(&reply.lines().len()),
        "{reply:?}"
    );
    for line in reply.lines() {
        assert!(line.len() < MAX_REPLY_LINE * 3, "{reply:?}");
        assert!(!line.contains(['\r', '\0']), "{reply:?}");
    }
}

fn check_relay(reply: &Reply) {
    let written = reply.to_bytes();
    // The status prefix on lines that lacked it can push a relayed line over our own limit;
    // the client is not this reader, so such replies are only checked for line breaks.
    let over_limit = written
        .split_inclusive(|&b| b == b'\n')
        .any(|line| line.len() > MAX_REPLY_LINE);
    assert_eq!(
        written.iter().filter(|&&b| b == b'\n').count(),
        reply.lines().len(),
        "a relayed reply must be one line per line"
    );
    if over_limit {
        return;
    }
    let again = read(&[&written]);
    assert_eq!(again.error, None, "relayed {reply:?} does not read back");
    assert!(!again.buffered);
    let [relayed] = again.replies.as_slice() else {
        panic!("relayed {reply:?} reads back as {:?}", again.replies);
    };
    assert_eq!(relayed.code(), reply.code());
    // A status is kept. One may appear: `5.1.1` followed by a control character is no status
    // to the reader, but the control character goes out as a space.
    if reply.status().is_some() {
        assert_eq!(relayed.status(), reply.status());
    }
    assert_eq!(
        relayed.lines(),
        relayed_text(reply, relayed),
        "relayed text changed"
    );
}

/// The lines the client reads from a relayed reply: each line's text with control
/// characters as spaces (`Reply::write`), less the status prefix the reader takes off every
/// line that carries it, with the spaces after it.
fn relayed_text(reply: &Reply, relayed: &Reply) -> Vec<String> {
    let sanitised: Vec<String> = reply
        .lines()
        .iter()
        .map(|line| {
            line.chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect()
        })
        .collect();
    // Written on every line when the reply has a status; otherwise the first line's first
    // word, if the relayed reply gained a status from it.
    let prefix = match (reply.status(), relayed.status()) {
        (Some(status), _) => Some(status.to_string()),
        (None, Some(_)) => sanitised[0].split(' ').next().map(str::to_owned),
        (None, None) => None,
    };
    sanitised
        .iter()
        .map(|text| match (reply.status(), &prefix) {
            (Some(_), _) => text.trim_start_matches(' ').to_owned(),
            (None, Some(prefix)) => text
                .strip_prefix(prefix.as_str())
                .map_or(text.as_str(), |rest| rest.trim_start_matches(' '))
                .to_owned(),
            (None, None) => text.clone(),
        })
        .collect()
}
