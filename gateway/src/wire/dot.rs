//! Dot-stuffing (RFC 5321 §4.5.2, RFC 1939 §3), written once for both protocols: the sending
//! twin of [`Unstuffer`](super::undot::Unstuffer).
//!
//! A [`Stuffer`] is fed the unstuffed body in pieces cut anywhere and appends the wire form:
//! a line starting with `.` gets another `.`, a last line without CRLF gets one, and `finish`
//! appends the `.` CRLF terminator. It keeps a few flags of state and never buffers the body,
//! so memory does not grow with the message. Its [`Mode`] decides what happens to bytes that
//! break the line rules:
//!
//! - [`Strict`] (DATA toward an SMTP upstream): a bare CR or bare LF, or a line over
//!   [`MAX_TEXT_LINE`] octets, is a [`BodyViolation`] and nothing after it is written,
//!   because the smuggling attacks of 2023 live exactly in such bytes.
//! - [`Lenient`] (RETR and TOP): a bare LF becomes CRLF (a client that splits on LF must not
//!   mistake `\n.\r\n` inside a body for the terminator); bare CRs and long lines pass. The
//!   octet count on the wire may then exceed the stored size, which RFC 1939 §11 allows.
//!   [`Stuffer::top`] passes the header block, the blank line and `n` body lines, then
//!   reports [`Stuffer::is_done`] so the caller can stop reading.
//!
//! [`dot_stuff`] is the whole-buffer form, a plain byte loop kept apart from the streaming
//! one so that tests can hold one against the other.

use std::convert::Infallible;
use std::fmt;

/// RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets including CRLF.
pub const MAX_TEXT_LINE: usize = 1000;

/// The end of a multi-line body (DATA, and a POP3 multi-line response): `.` CRLF after the
/// last line's CRLF.
pub const TERMINATOR: &[u8] = b".\r\n";

/// A rule the body broke (here, or in the SMTP server's decoder).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyViolation {
    #[error("bare LF in message")]
    BareLf,
    #[error("bare CR in message")]
    BareCr,
    #[error("text line longer than 1000 octets")]
    LineTooLong,
}

const CRLF: &[u8] = b"\r\n";

mod sealed {
    pub trait Sealed {}
}

/// What a [`Stuffer`] or an [`Unstuffer`](super::undot::Unstuffer) does with a body that
/// breaks the line rules: [`Strict`] or [`Lenient`].
pub trait Mode: sealed::Sealed {
    /// A refusal: [`BodyViolation`], or [`Infallible`] for a mode that never refuses.
    type Error: Copy + fmt::Debug;
    /// Whether lines are checked at all; lets the unchecked mode skip the scans.
    const CHECKED: bool;
    /// The answer to a broken rule: an error stops the stuffer (the unstuffer records it and
    /// outputs nothing more); `Ok` goes on.
    fn answer(violation: BodyViolation) -> Result<(), Self::Error>;
}

/// Refuses bare CR, bare LF and overlong lines (DATA, in both directions).
#[derive(Clone, Copy, Debug, Default)]
pub struct Strict;

/// Never refuses (RETR and TOP). Stuffing, it repairs what a client could misread: bare LFs
/// become CRLF. Un-stuffing an upstream's response, it reads what comes: a line starts after
/// any LF and every byte passes. One name for both, because in both directions the body is
/// taken as it is and never rejected.
#[derive(Clone, Copy, Debug, Default)]
pub struct Lenient;

impl sealed::Sealed for Strict {}
impl sealed::Sealed for Lenient {}

impl Mode for Strict {
    type Error = BodyViolation;
    const CHECKED: bool = true;
    fn answer(violation: BodyViolation) -> Result<(), BodyViolation> {
        Err(violation)
    }
}

impl Mode for Lenient {
    type Error = Infallible;
    const CHECKED: bool = false;
    fn answer(_: BodyViolation) -> Result<(), Infallible> {
        Ok(())
    }
}

/// The streaming stuffer. `Stuffer` alone is the repairing POP3 form.
#[derive(Clone, Debug)]
pub struct Stuffer<M: Mode = Lenient> {
    /// The next byte begins a line.
    line_start: bool,
    /// The previous byte was a CR (possibly at the end of the previous piece); whether it
    /// ends the line shows with the next byte. A checking mode holds it back until then, so
    /// a bare CR never reaches the wire; the repairing mode has written it already.
    pending_cr: bool,
    /// Octets of the current line written so far, without the stuffing dot.
    line_len: usize,
    top: Option<Top>,
    /// TOP has all its lines: further input is dropped.
    done: bool,
    /// The refusal every later call repeats.
    failed: Option<M::Error>,
}

#[derive(Clone, Copy, Debug)]
struct Top {
    in_header: bool,
    remaining: u64,
}

impl Stuffer<Strict> {
    /// Stuffs a DATA body, refusing broken lines.
    pub fn strict() -> Self {
        Self::start(None)
    }

    /// Appends the stuffed form of `input` to `out`. On a violation, appends the bytes
    /// before it and reports it; every later call fails with the same violation.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), BodyViolation> {
        self.stuff(input, out)
    }

    /// Appends a CRLF if the last line lacks one, then `.` CRLF, and starts over for the
    /// next body. A CR left hanging at the end is a bare CR.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), BodyViolation> {
        self.end(out)?;
        *self = Self::strict();
        Ok(())
    }
}

impl Default for Stuffer<Lenient> {
    fn default() -> Self {
        Self::new()
    }
}

impl Stuffer<Lenient> {
    /// Stuffs a whole message (RETR).
    pub fn new() -> Self {
        Self::start(None)
    }

    /// Stuffs the header block and the first `lines` body lines (TOP).
    pub fn top(lines: u32) -> Self {
        Self::start(Some(Top {
            in_header: true,
            remaining: u64::from(lines),
        }))
    }

    /// Appends the stuffed form of `input` to `out`.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let Ok(()) = self.stuff(input, out);
    }

    /// Appends the CRLF a body without a final line end needs, and the terminator.
    pub fn finish(mut self, out: &mut Vec<u8>) {
        let Ok(()) = self.end(out);
    }
}

impl<M: Mode> Stuffer<M> {
    fn start(top: Option<Top>) -> Self {
        Self {
            line_start: true,
            pending_cr: false,
            line_len: 0,
            top,
            done: false,
            failed: None,
        }
    }

    /// Whether no more input will be written (TOP has all its lines).
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn stuff(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), M::Error> {
        if !M::CHECKED && self.top.is_none() {
            self.repair_in_bulk(input, out);
            return Ok(());
        }
        self.stuff_lines(input, out)
    }

    /// RETR's form of [`Self::stuff_lines`]: with no line checked or counted, only the
    /// line feeds matter (so `line_len`, which only checks and TOP read, is not kept).
    /// Copies the input in runs between the few places that need a byte inserted (a `.`
    /// starting a line, a bare LF), instead of a search and two appends for every line.
    fn repair_in_bulk(&mut self, input: &[u8], out: &mut Vec<u8>) {
        let Some(&last) = input.last() else {
            return;
        };
        out.reserve(input.len() + 16);
        if self.line_start && input[0] == b'.' {
            out.push(b'.');
        }
        let mut copied = 0;
        for lf in memchr::memchr_iter(b'\n', input) {
            let after_cr = match lf.checked_sub(1) {
                Some(before) => input[before] == b'\r',
                None => self.pending_cr,
            };
            if !after_cr {
                out.extend_from_slice(&input[copied..lf]);
                out.push(b'\r');
                copied = lf;
            }
            if input.get(lf + 1) == Some(&b'.') {
                out.extend_from_slice(&input[copied..=lf]);
                out.push(b'.');
                copied = lf + 1;
            }
        }
        out.extend_from_slice(&input[copied..]);
        self.line_start = last == b'\n';
        self.pending_cr = last == b'\r';
    }

    fn stuff_lines(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), M::Error> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        // Once, rather than the line-by-line appends growing (and copying) it.
        out.reserve(input.len());
        let mut rest = input;
        while let Some(&first) = rest.first() {
            if self.done {
                break;
            }
            if self.pending_cr {
                self.pending_cr = false;
                let held = M::CHECKED;
                if first == b'\n' {
                    self.line_end(if held { CRLF } else { b"\n" }, out)?;
                    rest = &rest[1..];
                    continue;
                }
                self.refuse(BodyViolation::BareCr)?;
                self.add_to_line(1)?;
                if held {
                    out.push(b'\r');
                }
            }
            if self.line_start {
                if first == b'.' {
                    out.push(b'.');
                }
                self.line_start = false;
            }
            // The hot path: one search per line, the line copied in one go.
            match memchr::memchr(b'\n', rest) {
                Some(end) => {
                    let (text, cr) = without_final_cr(&rest[..end]);
                    self.text(text, out)?;
                    if !cr {
                        self.refuse(BodyViolation::BareLf)?;
                    }
                    self.line_end(CRLF, out)?;
                    rest = &rest[end + 1..];
                }
                None => {
                    let (text, cr) = without_final_cr(rest);
                    self.text(text, out)?;
                    self.pending_cr = cr;
                    if cr && !M::CHECKED {
                        out.push(b'\r');
                    }
                    rest = &[];
                }
            }
        }
        Ok(())
    }

    fn end(&mut self, out: &mut Vec<u8>) -> Result<(), M::Error> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        if self.pending_cr {
            // Only the repairing mode gets past this, and it has written the CR already.
            self.refuse(BodyViolation::BareCr)?;
            self.add_to_line(1)?;
        }
        if !self.line_start {
            self.add_to_line(CRLF.len())?;
            out.extend_from_slice(CRLF);
        }
        out.extend_from_slice(TERMINATOR);
        Ok(())
    }

    /// Writes line content that holds no LF and does not end in CR.
    fn text(&mut self, text: &[u8], out: &mut Vec<u8>) -> Result<(), M::Error> {
        let bare_cr = if M::CHECKED {
            memchr::memchr(b'\r', text)
        } else {
            None
        };
        let clean = &text[..bare_cr.unwrap_or(text.len())];
        self.add_to_line(clean.len())?;
        out.extend_from_slice(clean);
        if bare_cr.is_some() {
            self.refuse(BodyViolation::BareCr)?;
        }
        Ok(())
    }

    /// Writes the rest of the CRLF that ends a line (`ending`); counts TOP's lines.
    fn line_end(&mut self, ending: &[u8], out: &mut Vec<u8>) -> Result<(), M::Error> {
        let empty = self.line_len == 0;
        self.add_to_line(CRLF.len())?;
        out.extend_from_slice(ending);
        self.line_start = true;
        self.line_len = 0;
        if let Some(top) = &mut self.top {
            if top.in_header {
                top.in_header = !empty;
            } else {
                top.remaining = top.remaining.saturating_sub(1);
            }
            self.done = !top.in_header && top.remaining == 0;
        }
        Ok(())
    }

    fn add_to_line(&mut self, octets: usize) -> Result<(), M::Error> {
        self.line_len = self.line_len.saturating_add(octets);
        if M::CHECKED && self.line_len > MAX_TEXT_LINE {
            return self.refuse(BodyViolation::LineTooLong);
        }
        Ok(())
    }

    fn refuse(&mut self, violation: BodyViolation) -> Result<(), M::Error> {
        M::answer(violation).inspect_err(|&error| self.failed = Some(error))
    }
}

/// Splits off a CR that ends `bytes`: it belongs to the line end, not the content.
fn without_final_cr(bytes: &[u8]) -> (&[u8], bool) {
    match bytes.split_last() {
        Some((&b'\r', text)) => (text, true),
        _ => (bytes, false),
    }
}

/// Dot-stuffs a body of CRLF-terminated lines and appends the end-of-data marker: the
/// sending side of DATA, used by tests and simulations. Bytes are passed as they are, so a
/// test can also send bodies that break the rules.
pub fn dot_stuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    let mut at_line_start = true;
    for &byte in body {
        if at_line_start && byte == b'.' {
            out.push(b'.');
        }
        out.push(byte);
        at_line_start = byte == b'\n';
    }
    if !body.is_empty() && !body.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(TERMINATOR);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::wire::undot::decode_dot_terminated;

    // Strict (DATA toward an SMTP upstream).
    fn encode_in_pieces(body: &[u8], cuts: &[usize]) -> Result<Vec<u8>, BodyViolation> {
        let mut encoder = Stuffer::strict();
        let mut out = Vec::new();
        let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut % (body.len() + 1)).collect();
        cuts.sort_unstable();
        let mut start = 0;
        for cut in cuts.into_iter().chain([body.len()]) {
            encoder.feed(&body[start..cut], &mut out)?;
            start = cut;
        }
        encoder.finish(&mut out)?;
        Ok(out)
    }

    #[test]
    fn leading_dots_are_stuffed() {
        let out = encode_in_pieces(b".\r\n..x\r\na.b\r\n", &[]).unwrap();
        assert_eq!(out, b"..\r\n...x\r\na.b\r\n.\r\n");
    }

    #[test]
    fn empty_body_is_just_the_terminator() {
        assert_eq!(encode_in_pieces(b"", &[]).unwrap(), b".\r\n");
    }

    #[test]
    fn bare_cr_and_lf_are_refused() {
        assert_eq!(
            encode_in_pieces(b"a\nb\r\n", &[]),
            Err(BodyViolation::BareLf)
        );
        assert_eq!(
            encode_in_pieces(b"a\rb\r\n", &[]),
            Err(BodyViolation::BareCr)
        );
        assert_eq!(encode_in_pieces(b"a\r", &[1]), Err(BodyViolation::BareCr));
        assert_eq!(
            encode_in_pieces(b"a\r\n\n.\n", &[3]),
            Err(BodyViolation::BareLf)
        );
    }

    #[test]
    fn nothing_after_a_violation_is_written() {
        let mut encoder = Stuffer::strict();
        let mut out = Vec::new();
        assert!(encoder
            .feed(b"ok\r\nbad\n.\r\nMAIL FROM:<x>\r\n", &mut out)
            .is_err());
        assert_eq!(out, b"ok\r\nbad");
        assert!(encoder.feed(b"more\r\n", &mut out).is_err());
        assert!(encoder.finish(&mut out).is_err());
        assert_eq!(out, b"ok\r\nbad");
    }

    #[test]
    fn line_limit_excludes_the_stuffing_dot() {
        let mut line = vec![b'.'; MAX_TEXT_LINE - 2];
        line.extend_from_slice(b"\r\n");
        assert!(encode_in_pieces(&line, &[]).is_ok());
        line.insert(0, b'.');
        assert_eq!(
            encode_in_pieces(&line, &[]),
            Err(BodyViolation::LineTooLong)
        );
    }

    fn crlf_body() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            proptest::collection::vec(
                prop_oneof![Just(b'.'), Just(b'a'), Just(b' '), Just(0u8), Just(0xC3u8)],
                0..20,
            ),
            0..12,
        )
        .prop_map(|lines| {
            let mut body = Vec::new();
            for line in lines {
                body.extend_from_slice(&line);
                body.extend_from_slice(b"\r\n");
            }
            body
        })
    }

    proptest! {
        /// The bytes sent, read back by the server's own DATA decoder, are the body exactly.
        #[test]
        fn round_trips_through_the_server_decoder(
            body in crlf_body(),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
        ) {
            let wire = encode_in_pieces(&body, &cuts).unwrap();
            prop_assert_eq!(decode_dot_terminated(&wire), Ok(body));
        }

        /// Streaming in any pieces gives what the whole-body `dot_stuff` gives.
        #[test]
        fn matches_dot_stuff(
            body in crlf_body(),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
        ) {
            prop_assert_eq!(encode_in_pieces(&body, &cuts).unwrap(), dot_stuff(&body));
        }

        /// Arbitrary bytes either fail or give wire form without bare CR or LF.
        #[test]
        fn output_never_holds_a_bare_line_end(
            body in proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'x')], 0..40),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
        ) {
            let mut encoder = Stuffer::strict();
            let mut out = Vec::new();
            let mut start = 0;
            let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut % (body.len() + 1)).collect();
            cuts.sort_unstable();
            let mut ok = true;
            for cut in cuts.into_iter().chain([body.len()]) {
                ok &= encoder.feed(&body[start..cut], &mut out).is_ok();
                start = cut;
            }
            for (index, &byte) in out.iter().enumerate() {
                if byte == b'\r' {
                    prop_assert_eq!(out.get(index + 1), Some(&b'\n'));
                }
                if byte == b'\n' {
                    prop_assert!(index > 0 && out[index - 1] == b'\r');
                }
            }
            if ok {
                prop_assert!(!body.windows(2).any(|w| w == b"\n\n"));
            }
        }
    }

    // Lenient (RETR and TOP).

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

    fn stuff_in_pieces(stuffer: Stuffer, body: &[u8], cuts: &[usize]) -> Vec<u8> {
        feed_in_pieces(stuffer, body, cuts, |stuffer, piece, out| {
            stuffer.feed(piece, out);
        })
    }

    fn stuffed(body: &[u8]) -> Vec<u8> {
        stuff_in_pieces(Stuffer::new(), body, &[])
    }

    /// [`stuff_in_pieces`] through the line-by-line path that TOP and the checking mode
    /// take, which RETR's bulk path must match byte for byte.
    fn stuff_lines_in_pieces(body: &[u8], cuts: &[usize]) -> Vec<u8> {
        feed_in_pieces(Stuffer::new(), body, cuts, |stuffer, piece, out| {
            let Ok(()) = stuffer.stuff_lines(piece, out);
        })
    }

    /// Feeds `body` cut at `cuts` (taken modulo its length, in order), then finishes.
    fn feed_in_pieces(
        mut stuffer: Stuffer,
        body: &[u8],
        cuts: &[usize],
        mut feed: impl FnMut(&mut Stuffer, &[u8], &mut Vec<u8>),
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let mut start = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
        cuts.sort_unstable();
        for cut in cuts.into_iter().chain([body.len()]) {
            feed(&mut stuffer, &body[start..cut], &mut out);
            start = cut;
        }
        stuffer.finish(&mut out);
        out
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

    #[test]
    fn bare_cr_passes_even_across_pieces() {
        assert_eq!(stuffed(b"a\rb\r\n"), b"a\rb\r\n.\r\n");
        assert_eq!(
            stuff_in_pieces(Stuffer::new(), b"a\rb\r\n", &[2]),
            b"a\rb\r\n.\r\n"
        );
        assert_eq!(
            stuff_in_pieces(Stuffer::new(), b"a\r", &[2]),
            b"a\r\r\n.\r\n"
        );
    }

    #[test]
    fn dot_stuff_output() {
        assert_eq!(dot_stuff(b".a\r\nb\r\n"), b"..a\r\nb\r\n.\r\n");
        assert_eq!(dot_stuff(b""), b".\r\n");
    }

    proptest! {
        /// On well-formed bodies repairing changes nothing: both modes give `dot_stuff`.
        #[test]
        fn repair_matches_dot_stuff_on_crlf_bodies(
            body in crlf_body(),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
        ) {
            prop_assert_eq!(stuff_in_pieces(Stuffer::new(), &body, &cuts), dot_stuff(&body));
        }

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
        fn the_bulk_path_matches_the_line_by_line_one(
            body in proptest::collection::vec(
                prop_oneof![Just(b'.'), Just(b'\r'), Just(b'\n'), Just(b'a')], 0..600),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
            other_cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            prop_assert_eq!(
                stuff_in_pieces(Stuffer::new(), &body, &cuts),
                stuff_lines_in_pieces(&body, &other_cuts)
            );
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
