//! Reading the upstream's lines: bounded status-line framing, and the lines of the listings
//! read line by line (CAPA, UIDL). Message bodies (RETR, TOP, LIST) stream through the
//! lenient [`Unstuffer`](crate::wire::undot::Unstuffer) instead.

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

#[cfg(test)]
mod tests {
    use super::*;

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
