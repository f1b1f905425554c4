//! Trace header fields on every proxied copy, so an archiver can tell who sent or fetched
//! it, through which server, and (for sent mail) the envelope. Prepended to the stored copy
//! only; the upstream and the client see the message unchanged.
//!
//! Only the gateway writes `X-Gateway-*` fields: the same fields arriving in a message
//! (anyone can send one with `X-Gateway-Remote-User: ceo`) are renamed on every stored copy
//! by a [`ForeignTrace`] filter, to `X-Original-X-Gateway-*`, so an archiver cannot be
//! fooled and the evidence stays.

/// Which way the message went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Submitted by the client through the SMTP proxy.
    Sent,
    /// Retrieved by the client through the POP3 proxy.
    Received,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Sent => "sent",
            Direction::Received => "received",
        }
    }
}

/// The header block (CRLF lines) to put before the message. `envelope` is the sender and
/// the accepted recipients of sent mail. Values cannot break the header: the login parser
/// refuses control characters and the SMTP parser validated the addresses.
pub fn trace_headers(
    direction: Direction,
    remote_user: &str,
    server: &str,
    envelope: Option<(&str, &[String])>,
) -> Vec<u8> {
    let mut out = String::new();
    let mut field = |name: &str, value: &str| {
        let clean: String = value.chars().filter(|c| !c.is_control()).collect();
        out.push_str(name);
        out.push_str(": ");
        out.push_str(&clean);
        out.push_str("\r\n");
    };
    field("X-Gateway-Direction", direction.as_str());
    field("X-Gateway-Remote-User", remote_user);
    field("X-Gateway-Server", server);
    if let Some((from, to)) = envelope {
        field("X-Gateway-Envelope-From", &format!("<{from}>"));
        for rcpt in to {
            field("X-Gateway-Envelope-To", &format!("<{rcpt}>"));
        }
    }
    out.into_bytes()
}

/// What incoming `X-Gateway-*` fields are renamed to: this prefix, then the field name.
pub const FOREIGN_PREFIX: &[u8] = b"X-Original-";
/// The gateway's own field names start with this (compared without letter case).
const OURS: &[u8] = b"x-gateway-";

/// Renames `X-Gateway-*` fields in a message's header section as it streams: holds at most
/// the few bytes of a line start that could still become `X-Gateway-`, and passes the body
/// (everything after the first empty line) through untouched. A folded field's
/// continuation lines stay with it.
#[derive(Debug, Clone)]
pub struct ForeignTrace {
    in_header: bool,
    /// How much of [`OURS`] the current line starts with so far; `None` once it does not.
    matched: Option<usize>,
    held: [u8; OURS.len()],
    /// The current line has a byte other than CR (an empty line ends the header).
    line_content: bool,
}

impl Default for ForeignTrace {
    fn default() -> Self {
        Self::new()
    }
}

impl ForeignTrace {
    pub fn new() -> Self {
        Self {
            in_header: true,
            matched: Some(0),
            held: [0; OURS.len()],
            line_content: false,
        }
    }

    /// Filters `input`: the header part goes, renamed, into `out`; once the header has
    /// ended, the rest of `input` is returned to be written after `out`, uncopied.
    pub fn feed<'a>(&mut self, input: &'a [u8], out: &mut Vec<u8>) -> &'a [u8] {
        for (i, &byte) in input.iter().enumerate() {
            if !self.in_header {
                return &input[i..];
            }
            if let Some(n) = self.matched {
                if byte.eq_ignore_ascii_case(&OURS[n]) {
                    self.held[n] = byte;
                    self.line_content = true;
                    if n + 1 == OURS.len() {
                        out.extend_from_slice(FOREIGN_PREFIX);
                        out.extend_from_slice(&self.held);
                        self.matched = None;
                    } else {
                        self.matched = Some(n + 1);
                    }
                    continue;
                }
                out.extend_from_slice(&self.held[..n]);
                self.matched = None;
            }
            out.push(byte);
            match byte {
                b'\n' => {
                    self.in_header = self.line_content;
                    self.line_content = false;
                    self.matched = Some(0);
                }
                b'\r' => {}
                _ => self.line_content = true,
            }
        }
        &[]
    }

    /// At the end of the message: the bytes still held back.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if let Some(n) = self.matched.take() {
            out.extend_from_slice(&self.held[..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The filter's output for `input` cut into the given pieces.
    fn filtered(pieces: &[&[u8]]) -> Vec<u8> {
        let mut filter = ForeignTrace::new();
        let mut out = Vec::new();
        for piece in pieces {
            let rest = filter.feed(piece, &mut out);
            out.extend_from_slice(rest);
        }
        filter.finish(&mut out);
        out
    }

    #[test]
    fn incoming_gateway_fields_are_renamed_in_the_header_only() {
        let message: &[u8] = b"From: a@b.example\r\nX-Gateway-Remote-User: ceo\r\n\
            x-gateway-direction: sent\r\nX-Gateway-Envelope-To: <a@b>,\r\n <c@d>\r\n\
            \tX-Gateway-Folded: not a field\r\nX-Gatewayish: kept\r\nSubject: hi\r\n\r\n\
            X-Gateway-Remote-User: in the body stays\r\n";
        let expected: &[u8] = b"From: a@b.example\r\nX-Original-X-Gateway-Remote-User: ceo\r\n\
            X-Original-x-gateway-direction: sent\r\nX-Original-X-Gateway-Envelope-To: <a@b>,\r\n <c@d>\r\n\
            \tX-Gateway-Folded: not a field\r\nX-Gatewayish: kept\r\nSubject: hi\r\n\r\n\
            X-Gateway-Remote-User: in the body stays\r\n";
        assert_eq!(
            String::from_utf8_lossy(&filtered(&[message])),
            String::from_utf8_lossy(expected)
        );
        // Any cut into pieces, including inside `X-Gateway-` and inside CRLF.
        for cut in 0..message.len() {
            let (a, b) = message.split_at(cut);
            assert_eq!(filtered(&[a, b]), expected, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = message.chunks(1).collect();
        assert_eq!(filtered(&bytes), expected);
    }

    #[test]
    fn headers_end_at_the_first_empty_line_and_partial_names_are_kept() {
        assert_eq!(
            filtered(&[b"\r\nX-Gateway-A: b\r\n"]),
            b"\r\nX-Gateway-A: b\r\n"
        );
        assert_eq!(
            filtered(&[b"S: x\n\nX-Gateway-A: b\n"]),
            b"S: x\n\nX-Gateway-A: b\n"
        );
        assert_eq!(filtered(&[b"X-Gate"]), b"X-Gate");
        assert_eq!(filtered(&[b"X-Gateway-"]), b"X-Original-X-Gateway-");
        assert_eq!(
            filtered(&[b"X-Gatewa\r\nX-Gateway-B: 1\r\n"]),
            b"X-Gatewa\r\nX-Original-X-Gateway-B: 1\r\n"
        );
    }

    proptest::proptest! {
        /// However the input is cut, the output is the same, and no header line of it
        /// starts with `X-Gateway-`.
        #[test]
        fn any_chunking_gives_the_same_renamed_header(
            lines in proptest::collection::vec(
                proptest::sample::select(vec![
                    &b"X-Gateway-Remote-User: x"[..], b"x-gAtEwAy-a:", b" folded", b"X-Gate",
                    b"Subject: s", b"", b"\r", b"X-Gateway-",
                ]),
                0..12,
            ),
            cuts in proptest::collection::vec(0usize..200, 0..6),
        ) {
            let message: Vec<u8> = lines.iter().flat_map(|l| [*l, b"\r\n"].concat()).collect();
            let whole = filtered(&[&message]);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(message.len())).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut start = 0;
            for cut in cuts {
                pieces.push(&message[start..cut]);
                start = cut;
            }
            pieces.push(&message[start..]);
            proptest::prop_assert_eq!(&filtered(&pieces), &whole);
            // The header ends at the first line with nothing but CRs.
            let header = whole
                .split_inclusive(|&b| b == b'\n')
                .take_while(|line| line.iter().any(|&b| b != b'\r' && b != b'\n'));
            for line in header {
                proptest::prop_assert!(
                    !line.to_ascii_lowercase().starts_with(b"x-gateway-"),
                    "{}", String::from_utf8_lossy(line)
                );
            }
        }
    }

    #[test]
    fn sent_mail_carries_the_envelope() {
        let to = vec!["a@x.example".to_owned(), "b@y.example".to_owned()];
        let headers = trace_headers(
            Direction::Sent,
            "jdoe@example.com",
            "mail.example.com:587",
            Some(("jdoe@example.com", &to)),
        );
        assert_eq!(
            String::from_utf8(headers).unwrap(),
            "X-Gateway-Direction: sent\r\nX-Gateway-Remote-User: jdoe@example.com\r\n\
             X-Gateway-Server: mail.example.com:587\r\nX-Gateway-Envelope-From: <jdoe@example.com>\r\n\
             X-Gateway-Envelope-To: <a@x.example>\r\nX-Gateway-Envelope-To: <b@y.example>\r\n"
        );
        let received = trace_headers(
            Direction::Received,
            "jdoe@example.com",
            "mail.example.com:995",
            None,
        );
        assert!(String::from_utf8(received)
            .unwrap()
            .starts_with("X-Gateway-Direction: received\r\n"));
    }
}
