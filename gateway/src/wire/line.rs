//! Bounded line framing, written once for every line-based reader: the SMTP and POP3
//! servers' command lines and the proxy clients' upstream status and reply lines.
//!
//! A [`Framer`] says where the line at the front of a buffer ends and whether it is longer
//! than its limit (line end included), so no reader ever buffers more than one line's worth
//! while waiting for an LF. What stays with each protocol is what it does then: taking the
//! line out of its own buffer (wiping what may hold a password), refusing or skipping an
//! overlong line, and whether a line must end in CRLF ([`Ending`]).

use memchr::memchr;

/// How a line ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// At LF; a CR before it belongs to the line end (POP3, and replies from upstreams).
    Lf,
    /// Only at CRLF (RFC 5321 §2.3.8 for SMTP commands): a line framed at a bare LF keeps
    /// its LF, so the caller can refuse it.
    Crlf,
}

/// Where the line at the front of a buffer ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete line of `wire_len` octets, its LF included, within the limit.
    Line { wire_len: usize },
    /// No LF yet, and what there is still fits.
    Partial,
    /// The line is over the limit: `wire_len` is its length through the LF if that has come
    /// (so the line can be skipped), `None` if the buffer holds only the start of it.
    TooLong { wire_len: Option<usize> },
}

/// The line is longer than its limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LineTooLong;

/// The line framing of one direction of one protocol.
#[derive(Clone, Copy, Debug)]
pub struct Framer {
    /// The longest line accepted, line end included.
    pub limit: usize,
    pub ending: Ending,
}

impl Framer {
    pub const fn new(limit: usize, ending: Ending) -> Self {
        Self { limit, ending }
    }

    /// Where the line at the front of `buf` ends.
    pub fn frame(&self, buf: &[u8]) -> Frame {
        match memchr(b'\n', buf) {
            Some(lf) if lf < self.limit => Frame::Line { wire_len: lf + 1 },
            Some(lf) => Frame::TooLong {
                wire_len: Some(lf + 1),
            },
            None if buf.len() >= self.limit => Frame::TooLong { wire_len: None },
            None => Frame::Partial,
        }
    }

    /// Removes the line end from a line taken off a buffer by [`Framer::frame`]'s
    /// `wire_len`. False if it has none this framer accepts (a bare LF under
    /// [`Ending::Crlf`]): the line is then left as it is.
    pub fn strip(&self, line: &mut Vec<u8>) -> bool {
        match self.ending {
            Ending::Lf => {
                let lf = line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                lf == Some(b'\n')
            }
            Ending::Crlf => {
                let crlf = line.ends_with(b"\r\n");
                if crlf {
                    line.truncate(line.len() - 2);
                }
                crlf
            }
        }
    }

    /// Takes the next complete line, without its line end, off the front of `buf`; for
    /// readers whose input holds no secrets.
    pub fn next_line(&self, buf: &mut Vec<u8>) -> Result<Option<Vec<u8>>, LineTooLong> {
        match self.frame(buf) {
            Frame::Line { wire_len } => {
                let mut line: Vec<u8> = buf.drain(..wire_len).collect();
                self.strip(&mut line);
                Ok(Some(line))
            }
            Frame::Partial => Ok(None),
            Frame::TooLong { .. } => Err(LineTooLong),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const LF: Framer = Framer::new(16, Ending::Lf);
    const CRLF: Framer = Framer::new(16, Ending::Crlf);

    #[test]
    fn lines_end_at_lf_and_drop_the_cr() {
        let mut buf = b"+OK hi\r\n-ERR x\nrest".to_vec();
        assert_eq!(LF.next_line(&mut buf), Ok(Some(b"+OK hi".to_vec())));
        assert_eq!(LF.next_line(&mut buf), Ok(Some(b"-ERR x".to_vec())));
        assert_eq!(LF.next_line(&mut buf), Ok(None));
        assert_eq!(buf, b"rest");
    }

    #[test]
    fn limit_includes_the_line_end() {
        let mut exact = vec![b'a'; LF.limit - 2];
        exact.extend_from_slice(b"\r\n");
        assert_eq!(LF.frame(&exact), Frame::Line { wire_len: LF.limit });
        assert!(LF.next_line(&mut exact).unwrap().is_some());
        let mut over = vec![b'a'; LF.limit - 1];
        over.extend_from_slice(b"\r\nNEXT");
        assert_eq!(
            LF.frame(&over),
            Frame::TooLong {
                wire_len: Some(LF.limit + 1)
            }
        );
        assert_eq!(LF.next_line(&mut over), Err(LineTooLong));
        let unterminated = vec![b'a'; LF.limit];
        assert_eq!(LF.frame(&unterminated), Frame::TooLong { wire_len: None });
        assert_eq!(LF.frame(&unterminated[1..]), Frame::Partial);
    }

    #[test]
    fn crlf_framing_keeps_a_bare_lf() {
        let mut line = b"NOOP\n".to_vec();
        assert!(!CRLF.strip(&mut line));
        assert_eq!(line, b"NOOP\n");
        let mut line = b"NOOP\r\n".to_vec();
        assert!(CRLF.strip(&mut line));
        assert_eq!(line, b"NOOP");
        let mut line = b"NOOP\n".to_vec();
        assert!(LF.strip(&mut line));
        assert_eq!(line, b"NOOP");
    }

    proptest! {
        /// Framing a whole buffer line by line gives its LF-separated pieces up to the first
        /// one over the limit, and never looks past the limit for an LF that is not there.
        #[test]
        fn frames_what_splitting_at_lf_gives(
            input in proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'a')], 0..80),
        ) {
            let mut buf = input.clone();
            let mut rest = &input[..];
            loop {
                let expected = match rest.iter().position(|&b| b == b'\n') {
                    Some(lf) if lf < LF.limit => Ok(Some(lf)),
                    None if rest.len() < LF.limit => Ok(None),
                    _ => Err(LineTooLong),
                };
                match (LF.next_line(&mut buf), expected) {
                    (Ok(Some(line)), Ok(Some(lf))) => {
                        let text = &rest[..lf];
                        prop_assert_eq!(&line[..], text.strip_suffix(b"\r").unwrap_or(text));
                        rest = &rest[lf + 1..];
                    }
                    (got, want) => {
                        prop_assert_eq!(got.map(|line| line.map(|_| 0)), want.map(|_| None));
                        break;
                    }
                }
            }
        }
    }
}
