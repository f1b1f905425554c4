//! Reading the upstream's bytes: bounded status-line framing, and the streaming reverse of
//! byte-stuffing for multi-line responses (RFC 1939 §3).
//!
//! The [`Unstuffer`] keeps two bits of state and never buffers a line, so a RETR of any size
//! with lines of any length passes through in bounded memory, and the `.` CRLF terminator is
//! found wherever the reads happen to split it. A line starts after every LF (an upstream
//! that sends bare LFs still has its stuffing undone at the right places); content bytes,
//! CR and LF included, pass through unchanged apart from the removed leading dot.

use memchr::memchr;

/// Status lines, capability lines and UIDL listing lines are at most this long, line end
/// included. RFC 2449 §4 allows 512 octets for responses; this is twice that, for lenience.
pub const MAX_RESPONSE_LINE: usize = 1024;

/// The line is longer than [`MAX_RESPONSE_LINE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LineTooLong;

/// Takes the next complete line (without its LF and the CR before it) off the front of
/// `buf`, if there is one.
pub(crate) fn next_line(buf: &mut Vec<u8>) -> Result<Option<Vec<u8>>, LineTooLong> {
    match memchr(b'\n', buf) {
        Some(lf) if lf < MAX_RESPONSE_LINE => {
            let mut line: Vec<u8> = buf.drain(..=lf).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            Ok(Some(line))
        }
        Some(_) => Err(LineTooLong),
        None if buf.len() >= MAX_RESPONSE_LINE => Err(LineTooLong),
        None => Ok(None),
    }
}

/// A line of a multi-line response read with [`next_line`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ListingLine<'a> {
    /// The content, with the stuffed dot removed.
    Content(&'a [u8]),
    /// The `.` terminator.
    End,
}

pub(crate) fn listing_line(line: &[u8]) -> ListingLine<'_> {
    match line.strip_prefix(b".") {
        Some(b"") => ListingLine::End,
        Some(rest) => ListingLine::Content(rest),
        None => ListingLine::Content(line),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    /// The next byte begins a line.
    LineStart,
    /// A `.` began the line (held back: it is either stuffing or the terminator).
    Dot,
    /// `.` CR began the line (held back).
    DotCr,
    /// Inside a line.
    Middle,
}

/// Streaming un-stuffer of one multi-line response body.
#[derive(Debug, Clone)]
pub(crate) struct Unstuffer {
    position: Position,
}

impl Unstuffer {
    pub(crate) fn new() -> Self {
        Self {
            position: Position::LineStart,
        }
    }

    /// Un-stuffs `input` into `out` until the terminator. Returns how many bytes of `input`
    /// were consumed and whether the terminator was among them (nothing after it is
    /// consumed). `out` grows by at most `input.len() + 1` bytes (a held-back CR).
    pub(crate) fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
        let mut i = 0;
        while i < input.len() {
            match self.position {
                Position::Middle => match memchr(b'\n', &input[i..]) {
                    Some(lf) => {
                        out.extend_from_slice(&input[i..=i + lf]);
                        i += lf + 1;
                        self.position = Position::LineStart;
                    }
                    None => {
                        out.extend_from_slice(&input[i..]);
                        i = input.len();
                    }
                },
                Position::LineStart => {
                    if input[i] == b'.' {
                        i += 1;
                        self.position = Position::Dot;
                    } else {
                        self.position = Position::Middle;
                    }
                }
                Position::Dot => {
                    if input[i] == b'\r' {
                        i += 1;
                        self.position = Position::DotCr;
                    } else {
                        // The dot was stuffing: drop it, the rest of the line is content.
                        self.position = Position::Middle;
                    }
                }
                Position::DotCr => {
                    if input[i] == b'\n' {
                        self.position = Position::LineStart;
                        return (i + 1, true);
                    }
                    // `.` CR then something else: the dot was stuffing, the CR is content.
                    out.push(b'\r');
                    self.position = Position::Middle;
                }
            }
        }
        (i, false)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Un-stuffs `wire` fed in the given pieces; returns the content and the bytes after
    /// the terminator (or `None` if there was none).
    pub(crate) fn unstuff_pieces(pieces: &[&[u8]]) -> (Vec<u8>, Option<Vec<u8>>) {
        let mut unstuffer = Unstuffer::new();
        let mut out = Vec::new();
        for (k, piece) in pieces.iter().enumerate() {
            let (used, done) = unstuffer.feed(piece, &mut out);
            if done {
                let mut rest = piece[used..].to_vec();
                for later in &pieces[k + 1..] {
                    rest.extend_from_slice(later);
                }
                return (out, Some(rest));
            }
            assert_eq!(used, piece.len());
        }
        (out, None)
    }

    #[test]
    fn unstuffs_and_stops_at_the_terminator() {
        let wire = b"a\r\n..b\r\n...\r\n.\rx\r\n.x\r\n\r\n.\r\nNEXT";
        let (content, rest) = unstuff_pieces(&[wire]);
        assert_eq!(content, b"a\r\n.b\r\n..\r\n\rx\r\nx\r\n\r\n");
        assert_eq!(rest.as_deref(), Some(&b"NEXT"[..]));
        for split in 0..=wire.len() {
            let (a, b) = wire.split_at(split);
            assert_eq!(
                unstuff_pieces(&[a, b]),
                (content.clone(), Some(b"NEXT".to_vec())),
                "split at {split}"
            );
        }
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        assert_eq!(unstuff_pieces(&bytes), (content, Some(b"NEXT".to_vec())));
    }

    #[test]
    fn terminator_only_at_line_start() {
        assert_eq!(
            unstuff_pieces(&[b"x.\r\n.\r\n"]),
            (b"x.\r\n".to_vec(), Some(Vec::new()))
        );
        assert_eq!(unstuff_pieces(&[b".\r\n"]), (Vec::new(), Some(Vec::new())));
        // A bare LF also starts a line; `.` LF is not the terminator.
        assert_eq!(
            unstuff_pieces(&[b"a\n..b\n.\n.\r\n"]),
            (b"a\n.b\n\n".to_vec(), Some(Vec::new()))
        );
        assert_eq!(
            unstuff_pieces(&[b"abc", b"\r\n."]),
            (b"abc\r\n".to_vec(), None)
        );
    }

    #[test]
    fn line_framing() {
        let mut buf = b"+OK hi\r\n-ERR x\nrest".to_vec();
        assert_eq!(next_line(&mut buf), Ok(Some(b"+OK hi".to_vec())));
        assert_eq!(next_line(&mut buf), Ok(Some(b"-ERR x".to_vec())));
        assert_eq!(next_line(&mut buf), Ok(None));
        assert_eq!(buf, b"rest");
        let mut exact = vec![b'a'; MAX_RESPONSE_LINE - 2];
        exact.extend_from_slice(b"\r\n");
        assert!(next_line(&mut exact).unwrap().is_some());
        let mut over = vec![b'a'; MAX_RESPONSE_LINE - 1];
        over.extend_from_slice(b"\r\n");
        assert_eq!(next_line(&mut over), Err(LineTooLong));
        let mut unterminated = vec![b'a'; MAX_RESPONSE_LINE];
        assert_eq!(next_line(&mut unterminated), Err(LineTooLong));
        assert_eq!(listing_line(b"."), ListingLine::End);
        assert_eq!(listing_line(b"..x"), ListingLine::Content(b".x"));
        assert_eq!(listing_line(b"TOP"), ListingLine::Content(b"TOP"));
    }
}
