//! Streaming byte-stuffing of a message body for RETR and TOP (RFC 1939 §3).
//!
//! Fed arbitrary pieces of a body, a [`Stuffer`] writes the wire form: every line that starts
//! with `.` gets another `.`, a bare LF becomes CRLF (a POP3 line always ends in CRLF, and a
//! client that splits on LF must not mistake `\n.\r\n` inside a body for the terminator), a
//! body whose last line lacks its CRLF gets one, and [`Stuffer::finish`] appends the `.`
//! terminator. It keeps a few flags of state and never buffers the body, so memory stays
//! bounded whatever the message size. Because bare LFs are expanded, the octet count on the
//! wire may exceed the stored size; RFC 1939 §11 allows the `+OK` count to differ.
//!
//! [`Stuffer::top`] is the TOP variant: it passes the header block, the blank line that ends
//! it, and then at most `n` body lines, and reports [`Stuffer::is_done`] so the caller can stop
//! reading the rest of the message.

/// The streaming stuffer.
#[derive(Debug, Clone)]
pub struct Stuffer {
    /// The next byte begins a line.
    line_start: bool,
    /// The last byte written was a CR (possibly at the end of the previous piece).
    prev_cr: bool,
    /// Bytes of the current line seen so far.
    line_len: usize,
    top: Option<Top>,
    done: bool,
}

#[derive(Debug, Clone)]
struct Top {
    in_header: bool,
    remaining: u64,
}

impl Default for Stuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl Stuffer {
    /// Stuffs a whole message (RETR).
    pub fn new() -> Self {
        Self {
            line_start: true,
            prev_cr: false,
            line_len: 0,
            top: None,
            done: false,
        }
    }

    /// Stuffs the header block and the first `lines` body lines (TOP).
    pub fn top(lines: u32) -> Self {
        Self {
            top: Some(Top {
                in_header: true,
                remaining: u64::from(lines),
            }),
            ..Self::new()
        }
    }

    /// Whether no more input will be written (TOP has all its lines).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Appends the stuffed form of `input` to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let mut rest = input;
        while !rest.is_empty() && !self.done {
            if self.line_start {
                if rest[0] == b'.' {
                    out.push(b'.');
                }
                self.line_start = false;
                self.line_len = 0;
            }
            match memchr::memchr(b'\n', rest) {
                None => {
                    out.extend_from_slice(rest);
                    self.line_len += rest.len();
                    self.prev_cr = rest.last() == Some(&b'\r');
                    rest = &[];
                }
                Some(i) => {
                    out.extend_from_slice(&rest[..i]);
                    let cr_before = if i > 0 {
                        rest[i - 1] == b'\r'
                    } else {
                        self.prev_cr
                    };
                    if !cr_before {
                        out.push(b'\r');
                    }
                    out.push(b'\n');
                    let len = self.line_len + i;
                    self.end_line(len == 0 || (len == 1 && cr_before));
                    rest = &rest[i + 1..];
                }
            }
        }
    }

    /// Appends the CRLF a body without a final line end needs, and the terminator.
    pub fn finish(self, out: &mut Vec<u8>) {
        if !self.done && !self.line_start {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(super::response::TERMINATOR);
    }

    fn end_line(&mut self, empty: bool) {
        self.line_start = true;
        self.prev_cr = false;
        self.line_len = 0;
        if let Some(top) = &mut self.top {
            if top.in_header {
                top.in_header = !empty;
            } else {
                top.remaining = top.remaining.saturating_sub(1);
            }
            if !top.in_header && top.remaining == 0 {
                self.done = true;
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reverses the wire form: returns the body and whether the terminator was found.
    pub(crate) fn unstuff(wire: &[u8]) -> (Vec<u8>, bool) {
        let mut body = Vec::new();
        let mut rest = wire;
        while !rest.is_empty() {
            let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
                return (body, false);
            };
            let line = &rest[..end];
            if line == b"." {
                assert_eq!(&rest[end + 2..], b"", "bytes after the terminator");
                return (body, true);
            }
            let line = line.strip_prefix(b".").unwrap_or(line);
            body.extend_from_slice(line);
            body.extend_from_slice(b"\r\n");
            rest = &rest[end + 2..];
        }
        (body, false)
    }

    /// What the wire carries for `body`: bare LFs as CRLF, and a final CRLF if it lacked one.
    pub(crate) fn expected(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for (i, &b) in body.iter().enumerate() {
            if b == b'\n' && (i == 0 || body[i - 1] != b'\r') {
                out.push(b'\r');
            }
            out.push(b);
        }
        if !out.is_empty() && !out.ends_with(b"\n") {
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    fn stuff_in_pieces(mut stuffer: Stuffer, body: &[u8], cuts: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut start = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
        cuts.sort_unstable();
        for cut in cuts.into_iter().chain([body.len()]) {
            stuffer.feed(&body[start..cut], &mut out);
            start = cut;
        }
        stuffer.finish(&mut out);
        out
    }

    fn stuffed(body: &[u8]) -> Vec<u8> {
        stuff_in_pieces(Stuffer::new(), body, &[])
    }

    #[test]
    fn dots_at_line_start_are_doubled() {
        assert_eq!(
            stuffed(b".a\r\nb.\r\n..\r\n.\r\n"),
            b"..a\r\nb.\r\n...\r\n..\r\n.\r\n"
        );
    }

    #[test]
    fn missing_final_crlf_is_added() {
        assert_eq!(stuffed(b"abc"), b"abc\r\n.\r\n");
        assert_eq!(stuffed(b"abc\r\n"), b"abc\r\n.\r\n");
        assert_eq!(stuffed(b""), b".\r\n");
        assert_eq!(stuffed(b"."), b"..\r\n.\r\n");
    }

    #[test]
    fn bare_lf_becomes_crlf_even_across_pieces() {
        assert_eq!(stuffed(b"a\n.b\n"), b"a\r\n..b\r\n.\r\n");
        assert_eq!(
            stuff_in_pieces(Stuffer::new(), b"a\r\n.b", &[1, 2]),
            b"a\r\n..b\r\n.\r\n"
        );
        assert_eq!(
            stuff_in_pieces(Stuffer::new(), b"a\r\n", &[2]),
            b"a\r\n.\r\n"
        );
    }

    #[test]
    fn top_stops_after_header_and_n_lines() {
        let message = b"From: a\r\nSubject: b\r\n\r\nline 1\r\n.line 2\r\nline 3\r\n";
        let top = |n| stuff_in_pieces(Stuffer::top(n), message, &[]);
        assert_eq!(top(0), b"From: a\r\nSubject: b\r\n\r\n.\r\n");
        assert_eq!(top(1), b"From: a\r\nSubject: b\r\n\r\nline 1\r\n.\r\n");
        assert_eq!(
            top(2),
            b"From: a\r\nSubject: b\r\n\r\nline 1\r\n..line 2\r\n.\r\n"
        );
        assert_eq!(top(9), stuffed(message));
        // No blank line: everything is header.
        assert_eq!(
            stuff_in_pieces(Stuffer::top(0), b"From: a\r\nX: y", &[]),
            b"From: a\r\nX: y\r\n.\r\n"
        );
        let mut stuffer = Stuffer::top(1);
        let mut out = Vec::new();
        stuffer.feed(b"A: b\r\n\r\none\r\n", &mut out);
        assert!(stuffer.is_done());
        stuffer.feed(b"two\r\n", &mut out);
        assert_eq!(out, b"A: b\r\n\r\none\r\n");
    }

    proptest! {
        #[test]
        fn pieces_do_not_matter_and_unstuffing_restores_the_body(
            body in proptest::collection::vec(
                prop_oneof![Just(b'.'), Just(b'\r'), Just(b'\n'), any::<u8>()], 0..600),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let whole = stuffed(&body);
            let pieces = stuff_in_pieces(Stuffer::new(), &body, &cuts);
            prop_assert_eq!(&whole, &pieces);
            let (restored, terminated) = unstuff(&whole);
            prop_assert!(terminated);
            prop_assert_eq!(restored, expected(&body));
        }

        #[test]
        fn top_yields_exactly_header_and_n_lines(
            header in proptest::collection::vec("[A-Za-z]{1,8}: [ -~]{0,20}", 0..5),
            lines in proptest::collection::vec("[ -~]{0,30}", 0..10),
            n in 0u32..12,
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut message = String::new();
            for h in &header { message.push_str(h); message.push_str("\r\n"); }
            message.push_str("\r\n");
            for l in &lines { message.push_str(l); message.push_str("\r\n"); }
            let out = stuff_in_pieces(Stuffer::top(n), message.as_bytes(), &cuts);
            let (restored, terminated) = unstuff(&out);
            prop_assert!(terminated);
            let mut want = String::new();
            for h in &header { want.push_str(h); want.push_str("\r\n"); }
            want.push_str("\r\n");
            for l in lines.iter().take(n as usize) { want.push_str(l); want.push_str("\r\n"); }
            prop_assert_eq!(String::from_utf8(restored).unwrap(), want);
        }
    }
}
