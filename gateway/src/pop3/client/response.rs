//! Typed upstream replies: status lines (`+OK` / `-ERR`, with an optional RFC 2449 response
//! code), SASL continuations, CAPA capability lists and UIDL entries, and how long their
//! lines may be ([`MAX_RESPONSE_LINE`]).
//!
//! The server core writes replies from a fixed set of codes ([`crate::pop3::response`]); an
//! upstream may send any code and any text, so the client side parses into its own types.
//! Text is sanitised at parse time (control characters become spaces), so a [`Response`]
//! can be relayed to the mail client as exactly one line.

use crate::wire::line::{Ending, Framer};

/// Status lines, capability lines and UIDL listing lines are at most this long, line end
/// included. RFC 2449 §4 allows 512 octets for responses; this is twice that, for lenience.
pub const MAX_RESPONSE_LINE: usize = 1024;

/// The upstream's lines end at LF, a CR before it optional (RFC 1939 wants CRLF; a lone LF
/// is tolerated because the client un-stuffs bodies leniently anyway).
pub(crate) const RESPONSE_LINES: Framer = Framer::new(MAX_RESPONSE_LINE, Ending::Lf);

/// One status line from the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    ok: bool,
    code: Option<String>,
    text: String,
}

/// What a line from the upstream is, where a status line is expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StatusLine {
    Status(Response),
    /// `+ [base64]`: a SASL continuation (RFC 5034 §4).
    Continuation,
}

/// The upstream's line is neither `+OK`, `-ERR` nor a continuation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NotAStatusLine;

/// RFC 2449 §8 sets no length for a response code; a bracketed word longer than this is
/// treated as text, not as a code.
const MAX_CODE_LEN: usize = 64;

impl Response {
    pub fn ok(text: impl Into<String>) -> Self {
        Self {
            ok: true,
            code: None,
            text: text.into(),
        }
    }

    pub fn err(text: impl Into<String>) -> Self {
        Self {
            ok: false,
            code: None,
            text: text.into(),
        }
    }

    /// `+OK` (true) or `-ERR` (false).
    pub fn is_ok(&self) -> bool {
        self.ok
    }

    /// The response code without its brackets (`IN-USE`, `SYS/TEMP`, `AUTH`,
    /// `LOGIN-DELAY`, ...), if the upstream sent one.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// The text after the status indicator and code; may be empty.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Appends the status line as the upstream sent it (sanitised), with CRLF, for relaying.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(if self.ok { b"+OK" } else { b"-ERR" });
        if let Some(code) = &self.code {
            out.extend_from_slice(b" [");
            out.extend_from_slice(code.as_bytes());
            out.push(b']');
        }
        if !self.text.is_empty() {
            out.push(b' ');
            out.extend_from_slice(self.text.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
    }

    /// The two leading numbers of a `+OK` to STAT (`count octets`) or single LIST
    /// (`message octets`), if present.
    pub fn two_numbers(&self) -> Option<(u64, u64)> {
        let mut words = self.text.split_ascii_whitespace();
        let first = words.next()?.parse().ok()?;
        let second = words.next()?.parse().ok()?;
        Some((first, second))
    }
}

/// Parses a status line (without its line end).
pub(crate) fn parse_status(line: &[u8]) -> Result<StatusLine, NotAStatusLine> {
    if line == b"+" || line.starts_with(b"+ ") {
        return Ok(StatusLine::Continuation);
    }
    let (ok, rest) = if let Some(rest) = strip_indicator(line, b"+OK") {
        (true, rest)
    } else if let Some(rest) = strip_indicator(line, b"-ERR") {
        (false, rest)
    } else {
        return Err(NotAStatusLine);
    };
    let text = sanitise(rest);
    let text = text.trim_start_matches(' ');
    let (code, text) = split_code(text);
    Ok(StatusLine::Status(Response {
        ok,
        code,
        text: text.trim_end().to_owned(),
    }))
}

/// `+OK` and `-ERR` followed by the end of the line or a space (case-insensitively: some
/// servers send `+ok`).
fn strip_indicator<'a>(line: &'a [u8], indicator: &[u8]) -> Option<&'a [u8]> {
    let head = line.get(..indicator.len())?;
    if !head.eq_ignore_ascii_case(indicator) {
        return None;
    }
    let rest = &line[indicator.len()..];
    match rest.first() {
        None | Some(b' ') | Some(b'\t') => Some(rest),
        Some(_) => None,
    }
}

fn split_code(text: &str) -> (Option<String>, &str) {
    let Some(inner) = text.strip_prefix('[') else {
        return (None, text);
    };
    let Some(end) = inner.find(']') else {
        return (None, text);
    };
    let code = &inner[..end];
    let valid = !code.is_empty()
        && code.len() <= MAX_CODE_LEN
        && code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'/' || b == b'-');
    if !valid {
        return (None, text);
    }
    (
        Some(code.to_ascii_uppercase()),
        inner[end + 1..].trim_start_matches(' '),
    )
}

/// Lossy UTF-8 with every control character (CR, tab, NUL, ...) turned into a space.
fn sanitise(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The upstream's CAPA list (RFC 2449), one capability per line, as sent (sanitised).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    lines: Vec<String>,
}

impl Capabilities {
    pub fn new(lines: Vec<String>) -> Self {
        Self { lines }
    }

    /// Every capability line, in the upstream's order.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// Whether the capability `name` (its first word, case-insensitively) is listed.
    pub fn has(&self, name: &str) -> bool {
        self.arguments(name).is_some()
    }

    /// The arguments of capability `name`, if it is listed.
    pub fn arguments(&self, name: &str) -> Option<Vec<&str>> {
        self.lines.iter().find_map(|line| {
            let mut words = line.split_ascii_whitespace();
            words
                .next()
                .filter(|first| first.eq_ignore_ascii_case(name))
                .map(|_| words.collect())
        })
    }

    /// Whether `SASL` lists the `PLAIN` mechanism (RFC 5034 §6).
    pub fn sasl_plain(&self) -> bool {
        self.arguments("SASL")
            .is_some_and(|mechanisms| mechanisms.iter().any(|m| m.eq_ignore_ascii_case("PLAIN")))
    }

    pub(crate) fn push_line(&mut self, line: &[u8]) {
        self.lines.push(sanitise(line).trim().to_owned());
    }

    pub(crate) fn len(&self) -> usize {
        self.lines.len()
    }
}

/// A line of a multi-line response read line by line (CAPA, UIDL).
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

/// RFC 1939 §7: a unique-id is 1 to 70 characters in 0x21..=0x7E.
pub const MAX_UID_LEN: usize = 70;

/// Parses `n uid` (a UIDL listing line, or the text of a `+OK` to `UIDL n`).
pub(crate) fn parse_uidl_entry(text: &[u8]) -> Option<(u32, String)> {
    let text = std::str::from_utf8(text).ok()?;
    let mut words = text.split_ascii_whitespace();
    let number: u32 = words.next()?.parse().ok()?;
    let uid = words.next()?;
    if words.next().is_some()
        || uid.len() > MAX_UID_LEN
        || !uid.bytes().all(|b| (0x21..=0x7e).contains(&b))
    {
        return None;
    }
    Some((number, uid.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_lines() {
        assert_eq!(listing_line(b"."), ListingLine::End);
        assert_eq!(listing_line(b"..x"), ListingLine::Content(b".x"));
        assert_eq!(listing_line(b"TOP"), ListingLine::Content(b"TOP"));
    }

    fn status(line: &str) -> Response {
        match parse_status(line.as_bytes()) {
            Ok(StatusLine::Status(response)) => response,
            other => panic!("{line:?}: {other:?}"),
        }
    }

    #[test]
    fn status_lines() {
        let ok = status("+OK 2 320");
        assert!(ok.is_ok());
        assert_eq!((ok.code(), ok.text()), (None, "2 320"));
        assert_eq!(ok.two_numbers(), Some((2, 320)));
        let err = status("-ERR [IN-USE] mailbox locked");
        assert!(!err.is_ok());
        assert_eq!((err.code(), err.text()), (Some("IN-USE"), "mailbox locked"));
        assert_eq!(status("+OK").text(), "");
        assert_eq!(status("-ERR").text(), "");
        assert_eq!(status("+ok fine").text(), "fine");
        let sys = status("-ERR [SYS/TEMP]");
        assert_eq!((sys.code(), sys.text()), (Some("SYS/TEMP"), ""));
        // Not a code: stays text.
        assert_eq!(status("-ERR [not a code] x").text(), "[not a code] x");
        assert_eq!(status("-ERR [open").text(), "[open");
        assert_eq!(
            parse_status(b"+ "),
            Ok(StatusLine::Continuation),
            "continuation"
        );
        assert_eq!(parse_status(b"+"), Ok(StatusLine::Continuation));
        for bad in [&b"+OKAY"[..], b"OK", b"", b"-ERROR", b"* OK imap"] {
            assert_eq!(parse_status(bad), Err(NotAStatusLine), "{bad:?}");
        }
    }

    #[test]
    fn text_is_sanitised_and_round_trips() {
        let r = status("-ERR a\rb\x00c \u{7f}");
        assert_eq!(r.text(), "a b c");
        let mut out = Vec::new();
        status("-ERR [AUTH] bad  password").write_to(&mut out);
        assert_eq!(out, b"-ERR [AUTH] bad  password\r\n");
        let mut out = Vec::new();
        status("+OK").write_to(&mut out);
        assert_eq!(out, b"+OK\r\n");
    }

    #[test]
    fn capabilities() {
        let mut caps = Capabilities::default();
        for line in [
            "TOP",
            "UIDL",
            "SASL LOGIN plain",
            "stls",
            "IMPLEMENTATION x y",
        ] {
            caps.push_line(line.as_bytes());
        }
        assert!(caps.has("STLS"));
        assert!(caps.has("uidl"));
        assert!(!caps.has("USER"));
        assert!(caps.sasl_plain());
        assert_eq!(caps.arguments("IMPLEMENTATION"), Some(vec!["x", "y"]));
        let caps = Capabilities::new(vec!["SASL LOGIN XOAUTH2".into()]);
        assert!(!caps.sasl_plain());
    }

    #[test]
    fn uidl_entries() {
        assert_eq!(parse_uidl_entry(b"1 abc"), Some((1, "abc".into())));
        assert_eq!(parse_uidl_entry(b" 7   x~!  "), Some((7, "x~!".into())));
        for bad in [
            &b"1"[..],
            b"x abc",
            b"1 abc def",
            b"-1 abc",
            b"1 \xff",
            b"4294967296 a",
        ] {
            assert_eq!(parse_uidl_entry(bad), None, "{bad:?}");
        }
        let long = format!("1 {}", "a".repeat(MAX_UID_LEN + 1));
        assert_eq!(parse_uidl_entry(long.as_bytes()), None);
        let max = format!("1 {}", "a".repeat(MAX_UID_LEN));
        assert!(parse_uidl_entry(max.as_bytes()).is_some());
    }
}
