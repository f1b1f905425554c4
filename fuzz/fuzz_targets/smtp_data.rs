//! The DATA / BDAT body decoder (`gateway::smtp::data::BodyDecoder`), fed arbitrary bytes in
//! arbitrary reads (one selector byte, then the stream; see `Split`). Bit 0x40 of the
//! selector picks BDAT framing (the pieces are then the chunks, ended by `BDAT ... LAST`),
//! otherwise DATA's dot-terminated framing.
//!
//! - Split independence: the body, the bytes consumed, the end of data and the violation are
//!   the same whether the stream arrives whole or in pieces (one byte per read included).
//! - DATA ends only at `CRLF . CRLF` (or `. CRLF` as the very first line): no smuggling
//!   variant ends it, and nothing after the end is consumed.
//! - The output never holds a bare CR or LF and never a line over the 1000-octet limit
//!   (RFC 5321 §4.5.3.1.6), violation or not; a body without violation is CRLF lines.
//! - A clean DATA body, dot-stuffed again (`dot_stuff`), decodes to itself.

#![no_main]

use gateway::smtp::data::{dot_stuff, BodyDecoder, BodyViolation, Framing, MAX_TEXT_LINE};
use gateway_fuzz::{crlf_lines, Split};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(split) = Split::new(data) else {
        return;
    };
    let framing = if data[0] & 0x40 != 0 {
        Framing::Chunked
    } else {
        Framing::DotTerminated
    };
    let whole = decode(framing, &[split.payload]);
    let pieces = decode(framing, split.pieces());
    assert_eq!(whole, pieces, "the decoded body depends on how reads split");

    check_output(&whole);
    match framing {
        Framing::DotTerminated => check_dot_terminated(split.payload, &whole),
        Framing::Chunked => {
            assert_eq!(
                whole.consumed,
                split.payload.len(),
                "BDAT consumes every octet"
            );
            assert!(!whole.ended);
            if whole.violation.is_none() {
                assert!(
                    crlf_lines(&whole.body).is_some(),
                    "a finished BDAT body is CRLF lines"
                );
            }
        }
    }
});

#[derive(Debug, PartialEq)]
struct Decoding {
    body: Vec<u8>,
    consumed: usize,
    ended: bool,
    violation: Option<BodyViolation>,
}

fn decode(framing: Framing, pieces: &[&[u8]]) -> Decoding {
    let mut decoder = BodyDecoder::new(framing);
    let mut body = Vec::new();
    let (mut consumed, mut ended) = (0, false);
    for piece in pieces {
        if ended {
            break;
        }
        let decoded = decoder.feed(piece, &mut body);
        assert!(decoded.consumed <= piece.len());
        if !decoded.end_of_data {
            assert_eq!(
                decoded.consumed,
                piece.len(),
                "stopped early without an end"
            );
        }
        consumed += decoded.consumed;
        ended = decoded.end_of_data;
    }
    if framing == Framing::Chunked {
        decoder.finish_chunked(&mut body);
    }
    Decoding {
        body,
        consumed,
        ended,
        violation: decoder.violation(),
    }
}

/// What any output must look like, with or without a violation: CRLF-ended lines of at most
/// the limit, then possibly the start of a line, never a bare CR or LF.
fn check_output(decoding: &Decoding) {
    let body = &decoding.body;
    let complete = body
        .windows(2)
        .rposition(|pair| pair == b"\r\n")
        .map_or(0, |at| at + 2);
    let lines = crlf_lines(&body[..complete]).expect("bare CR or LF in the decoded body");
    for line in lines {
        assert!(
            line.len() + 2 <= MAX_TEXT_LINE,
            "line of {} octets",
            line.len() + 2
        );
    }
    let tail = &body[complete..];
    assert!(
        !tail.contains(&b'\r') && !tail.contains(&b'\n'),
        "bare CR or LF at the end"
    );
    assert!(
        tail.len() <= MAX_TEXT_LINE,
        "partial line of {} octets",
        tail.len()
    );
    if decoding.violation.is_none() && decoding.ended {
        assert!(tail.is_empty(), "DATA ended inside a line");
    }
}

fn check_dot_terminated(stream: &[u8], decoding: &Decoding) {
    assert!(decoding.body.len() <= decoding.consumed);
    if !decoding.ended {
        assert_eq!(decoding.consumed, stream.len());
        return;
    }
    let taken = &stream[..decoding.consumed];
    assert!(
        taken == b".\r\n" || taken.ends_with(b"\r\n.\r\n"),
        "DATA ended without CRLF.CRLF"
    );
    if decoding.violation.is_some() {
        return;
    }
    let restuffed = dot_stuff(&decoding.body);
    let again = decode(Framing::DotTerminated, &[&restuffed]);
    assert_eq!(
        again.body, decoding.body,
        "dot_stuff then decode is not the identity"
    );
    assert!(again.ended && again.violation.is_none());
    assert_eq!(again.consumed, restuffed.len());
}
