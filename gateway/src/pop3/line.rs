//! Bounded line framing of client input.
//!
//! Input is kept raw until the session is ready for its next command, so pipelined commands
//! wait behind a pending action and bytes after STLS can be thrown away unexecuted. A line
//! ends at LF (an optional CR before it is stripped). No line longer than [`MAX_AUTH_LINE`]
//! is ever buffered: a longer one is dropped up to its LF and reported as [`Frame::TooLong`].
//! Consumed bytes (which may hold a password) are wiped, and so is the buffer when it grows
//! or is dropped.

use zeroize::Zeroizing;

use crate::crypto::WipingBuffer;
use crate::wire::line::{Ending, Frame as Framed, Framer};

/// RFC 2449 §4: a command line, CRLF included, is at most 255 octets.
pub const MAX_COMMAND_LINE: usize = 255;
/// AUTH lines with an initial response, and SASL continuation lines, may be longer
/// (RFC 5034 §4); this is their limit, CRLF included.
pub const MAX_AUTH_LINE: usize = 2048;

/// Lines end at LF, a CR before it optional; the longest kind of line bounds them all.
const COMMAND_LINES: Framer = Framer::new(MAX_AUTH_LINE, Ending::Lf);

/// One framed piece of input.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A line without its line end; `wire_len` counts the line end too.
    Line {
        text: Zeroizing<Vec<u8>>,
        wire_len: usize,
    },
    /// A line longer than [`MAX_AUTH_LINE`], already discarded.
    TooLong,
}

#[derive(Debug, Default)]
pub struct LineBuffer {
    buf: WipingBuffer,
    /// Dropping an overlong line until its LF.
    discarding: bool,
}

impl LineBuffer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes waiting to be framed.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn push(&mut self, data: &[u8]) {
        self.buf.push(data);
    }

    /// An overlong line is being dropped: its start was too long and its LF has not come.
    pub fn overflowed(&self) -> bool {
        self.discarding
    }

    /// Everything buffered, handed on (to the proxy after a proxy login).
    pub fn take_all(&mut self) -> Zeroizing<Vec<u8>> {
        self.discarding = false;
        self.buf.take_all()
    }

    /// Wipes and drops everything buffered (after STLS, or on close).
    pub fn clear(&mut self) {
        self.buf.clear();
        self.discarding = false;
    }

    /// The next complete line, if there is one.
    pub fn next_frame(&mut self) -> Option<Frame> {
        match COMMAND_LINES.frame(&self.buf) {
            Framed::Line { wire_len } if !self.discarding => {
                // Any line may be PASS or a SASL response: wipe what it leaves behind.
                let mut text = self.buf.take_front_wiping(wire_len);
                COMMAND_LINES.strip(&mut text);
                Some(Frame::Line { text, wire_len })
            }
            Framed::Line { wire_len }
            | Framed::TooLong {
                wire_len: Some(wire_len),
            } => {
                self.discarding = false;
                drop(self.buf.take_front_wiping(wire_len));
                Some(Frame::TooLong)
            }
            framed => {
                if self.discarding || framed != Framed::Partial {
                    self.buf.clear();
                    self.discarding = true;
                }
                None
            }
        }
    }

    /// The whole allocation, stale bytes included.
    #[cfg(test)]
    pub(crate) fn storage(&self) -> &[u8] {
        self.buf.storage()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &[u8], wire_len: usize) -> Option<Frame> {
        Some(Frame::Line {
            text: Zeroizing::new(text.to_vec()),
            wire_len,
        })
    }

    #[test]
    fn frames_crlf_and_bare_lf_lines() {
        let mut buf = LineBuffer::new();
        buf.push(b"STAT\r\nNOOP\nLI");
        assert_eq!(buf.next_frame(), line(b"STAT", 6));
        assert_eq!(buf.next_frame(), line(b"NOOP", 5));
        assert_eq!(buf.next_frame(), None);
        buf.push(b"ST\r\n");
        assert_eq!(buf.next_frame(), line(b"LIST", 6));
        assert_eq!(buf.len(), 0);
    }

    #[test]
    fn overlong_lines_are_dropped_without_buffering_them() {
        let mut buf = LineBuffer::new();
        for _ in 0..100 {
            buf.push(&[b'x'; 1000]);
            assert_eq!(buf.next_frame(), None);
            assert!(buf.len() < MAX_AUTH_LINE);
        }
        assert!(buf.overflowed());
        buf.push(b"xx\r\nNOOP\r\n");
        assert_eq!(buf.next_frame(), Some(Frame::TooLong));
        assert_eq!(buf.next_frame(), line(b"NOOP", 6));
    }

    #[test]
    fn limit_is_inclusive_of_the_line_end() {
        let mut buf = LineBuffer::new();
        let mut exact = vec![b'a'; MAX_AUTH_LINE - 2];
        exact.extend_from_slice(b"\r\n");
        buf.push(&exact);
        assert!(
            matches!(buf.next_frame(), Some(Frame::Line { wire_len, .. }) if wire_len == MAX_AUTH_LINE)
        );
        let mut over = vec![b'a'; MAX_AUTH_LINE - 1];
        over.extend_from_slice(b"\r\n");
        buf.push(&over);
        assert_eq!(buf.next_frame(), Some(Frame::TooLong));
    }

    #[test]
    fn pass_line_leaves_no_password_bytes_in_the_buffer() {
        let mut buf = LineBuffer::new();
        buf.push(b"USER mbx\r\nPASS ABCD-EFGH-secret\r\nST");
        assert_eq!(buf.next_frame(), line(b"USER mbx", 10));
        assert_eq!(buf.next_frame(), line(b"PASS ABCD-EFGH-secret", 23));
        assert!(!crate::crypto::test_contains(buf.storage(), b"EFGH-secret"));
        assert!(!crate::crypto::test_contains(buf.storage(), b"mbx"));
        buf.push(b"AT\r\n");
        assert_eq!(buf.next_frame(), line(b"STAT", 6));
    }

    #[test]
    fn clear_forgets_pipelined_input() {
        let mut buf = LineBuffer::new();
        buf.push(b"CAPA\r\n");
        buf.clear();
        assert_eq!(buf.next_frame(), None);
    }
}
