//! Reading replies from the upstream (RFC 5321 §4.2): bounded lines, multi-line replies
//! assembled into one [`Reply`], enhanced status codes (RFC 3463) split off the text.
//!
//! A reply line is `code SP text` (the last line), `code - text` (every other line) or a
//! bare `code`. Lines end at LF; a CR before it is dropped (RFC 5321 wants CRLF; a lone LF
//! is tolerated because no end-of-data depends on it here). Every line of one reply must
//! carry the same code. Limits: [`MAX_REPLY_LINE`] per line, [`MAX_REPLY_LINES`] per reply,
//! so an upstream cannot make us buffer without bound.

use crate::smtp::{EnhancedStatus, Reply};
use crate::wire::line::{Ending, Framer, LineTooLong};

/// Longest accepted reply line including its line end. RFC 5321 §4.5.3.1.5 sets 512; real
/// servers exceed it with long EHLO keywords, so this is generous but fixed.
pub const MAX_REPLY_LINE: usize = 4096;
/// Reply lines end at LF, a CR before it dropped (see the module documentation).
const REPLY_LINES: Framer = Framer::new(MAX_REPLY_LINE, Ending::Lf);
/// Most lines in one reply (an EHLO reply has one per extension).
pub const MAX_REPLY_LINES: usize = 128;

/// The upstream broke the reply syntax; the connection cannot be trusted any more.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    #[error("reply line longer than {MAX_REPLY_LINE} octets")]
    LineTooLong,
    #[error("reply with more than {MAX_REPLY_LINES} lines")]
    TooManyLines,
    #[error("malformed reply line")]
    Malformed,
    #[error("reply code changed inside a multi-line reply")]
    CodeMismatch,
}

/// Buffers upstream bytes and hands out complete replies.
#[derive(Debug, Default)]
pub struct ReplyReader {
    buf: Vec<u8>,
    /// The lines of a multi-line reply read so far, with their code.
    partial: Option<(u16, Vec<String>)>,
}

impl ReplyReader {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Whether bytes (a partial or complete line) are waiting, beyond the replies handed
    /// out. After the `220` to STARTTLS this must be false: anything else was injected in
    /// plaintext.
    pub fn has_buffered(&self) -> bool {
        !self.buf.is_empty() || self.partial.is_some()
    }

    /// The next complete reply, `Ok(None)` if more bytes are needed.
    pub fn next_reply(&mut self) -> Result<Option<Reply>, ReplyError> {
        loop {
            let line = REPLY_LINES.next_line(&mut self.buf);
            let Some(line) = line.map_err(|LineTooLong| ReplyError::LineTooLong)? else {
                return Ok(None);
            };
            let (code, last, text) = parse_line(&line)?;
            let (expected, lines) = self.partial.get_or_insert_with(|| (code, Vec::new()));
            if *expected != code {
                return Err(ReplyError::CodeMismatch);
            }
            lines.push(text);
            if lines.len() > MAX_REPLY_LINES {
                return Err(ReplyError::TooManyLines);
            }
            if last {
                let (code, lines) = self.partial.take().unwrap_or_default();
                return Ok(Some(split_status(code, lines)));
            }
        }
    }
}

/// `(code, is_last_line, text)` of one line without its line end.
fn parse_line(line: &[u8]) -> Result<(u16, bool, String), ReplyError> {
    let digits = line.get(..3).ok_or(ReplyError::Malformed)?;
    // RFC 5321 §4.2: the first digit is 2 to 5, the second 0 to 5.
    let valid = (b'2'..=b'5').contains(&digits[0])
        && (b'0'..=b'5').contains(&digits[1])
        && digits[2].is_ascii_digit();
    if !valid {
        return Err(ReplyError::Malformed);
    }
    let code = digits
        .iter()
        .fold(0u16, |code, digit| code * 10 + u16::from(digit - b'0'));
    let (last, text) = match line.get(3) {
        None => (true, &[][..]),
        Some(b' ') => (true, &line[4..]),
        Some(b'-') => (false, &line[4..]),
        Some(_) => return Err(ReplyError::Malformed),
    };
    if text.iter().any(|&b| b == b'\r' || b == 0) {
        return Err(ReplyError::Malformed);
    }
    Ok((code, last, String::from_utf8_lossy(text).into_owned()))
}

/// Splits an enhanced status code off the lines if the first line has one whose class
/// matches the reply code (RFC 3463 §2); the same prefix is removed from every line.
fn split_status(code: u16, mut lines: Vec<String>) -> Reply {
    let Some((status, prefix_len)) = lines.first().and_then(|first| parse_status(code, first))
    else {
        return Reply::parsed(code, None, lines);
    };
    let prefix = lines[0][..prefix_len].to_owned();
    for line in &mut lines {
        if let Some(rest) = line.strip_prefix(&prefix) {
            *line = rest.trim_start_matches(' ').to_owned();
        }
    }
    Reply::parsed(code, Some(status), lines)
}

/// `class.subject.detail` at the start of `text`, followed by a space or the end; returns
/// the status and the length of the prefix.
fn parse_status(code: u16, text: &str) -> Option<(EnhancedStatus, usize)> {
    let token_len = text.find(' ').unwrap_or(text.len());
    let mut parts = text[..token_len].split('.');
    let mut number = |max_len: usize| -> Option<u16> {
        let part = parts.next()?;
        if part.is_empty() || part.len() > max_len || !part.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let class = number(1)?;
    let subject = number(3)?;
    let detail = number(3)?;
    if parts.next().is_some() || class != code / 100 || !matches!(class, 2 | 4 | 5) {
        return None;
    }
    let class = u8::try_from(class).ok()?;
    Some((EnhancedStatus::new(class, subject, detail), token_len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(bytes: &[u8]) -> Result<Vec<Reply>, ReplyError> {
        let mut reader = ReplyReader::new();
        reader.push(bytes);
        let mut replies = Vec::new();
        while let Some(reply) = reader.next_reply()? {
            replies.push(reply);
        }
        Ok(replies)
    }

    #[test]
    fn single_line_with_enhanced_status() {
        let replies = read_all(b"550 5.1.1 no such user\r\n").unwrap();
        assert_eq!(
            replies,
            vec![Reply::new(
                550,
                EnhancedStatus::new(5, 1, 1),
                "no such user"
            )]
        );
    }

    #[test]
    fn multi_line_reply_is_one_value() {
        let replies =
            read_all(b"250-mx.example hello\r\n250-PIPELINING\r\n250 AUTH PLAIN LOGIN\r\n")
                .unwrap();
        assert_eq!(
            replies,
            vec![Reply::plain(
                250,
                vec![
                    "mx.example hello".into(),
                    "PIPELINING".into(),
                    "AUTH PLAIN LOGIN".into()
                ]
            )]
        );
    }

    #[test]
    fn status_is_split_off_every_line() {
        let replies = read_all(b"550-5.7.1 first\r\n550 5.7.1 second\r\n").unwrap();
        assert_eq!(replies[0].status(), Some(EnhancedStatus::new(5, 7, 1)));
        assert_eq!(replies[0].lines(), ["first", "second"]);
    }

    #[test]
    fn status_of_the_wrong_class_stays_text() {
        let replies = read_all(b"250 5.0.0 odd\r\n").unwrap();
        assert_eq!(replies[0].status(), None);
        assert_eq!(replies[0].lines(), ["5.0.0 odd"]);
    }

    #[test]
    fn bare_code_and_bare_lf_are_accepted() {
        let replies = read_all(b"250\n354 go\n").unwrap();
        assert_eq!(replies[0], Reply::plain(250, vec![String::new()]));
        assert_eq!(replies[1].code(), 354);
    }

    #[test]
    fn malformed_lines_are_errors() {
        for bad in [
            &b"25 x\r\n"[..],
            b"250x\r\n",
            b"650 nope\r\n",
            b"2a0 x\r\n",
            b"250 a\rb\r\n",
        ] {
            assert_eq!(read_all(bad), Err(ReplyError::Malformed), "{bad:?}");
        }
        assert_eq!(
            read_all(b"250-a\r\n550 b\r\n"),
            Err(ReplyError::CodeMismatch)
        );
    }

    #[test]
    fn limits() {
        let mut long = b"250 ".to_vec();
        long.resize(MAX_REPLY_LINE - 2, b'x');
        long.extend_from_slice(b"\r\n");
        assert!(read_all(&long).is_ok());
        long.insert(5, b'x');
        assert_eq!(read_all(&long), Err(ReplyError::LineTooLong));
        // Without a line end, the buffer is cut off at the limit.
        let mut reader = ReplyReader::new();
        reader.push(&vec![b'2'; MAX_REPLY_LINE]);
        assert_eq!(reader.next_reply(), Err(ReplyError::LineTooLong));
        let many = b"250-x\r\n".repeat(MAX_REPLY_LINES + 1);
        assert_eq!(read_all(&many), Err(ReplyError::TooManyLines));
    }

    #[test]
    fn leftover_bytes_are_visible() {
        let mut reader = ReplyReader::new();
        reader.push(b"220 go\r\n2");
        assert!(reader.next_reply().unwrap().is_some());
        assert!(reader.has_buffered());
        let mut reader = ReplyReader::new();
        reader.push(b"220-go\r\n");
        assert_eq!(reader.next_reply(), Ok(None));
        assert!(reader.has_buffered());
    }
}
