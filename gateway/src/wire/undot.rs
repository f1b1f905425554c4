//! Dot-un-stuffing (RFC 5321 §4.5.2, RFC 1939 §3), written once for both protocols: the
//! reading twin of [`Stuffer`](super::dot::Stuffer).
//!
//! An [`Unstuffer`] is fed the wire form in reads cut anywhere, appends the body and stops
//! right after the `.` CRLF terminator, wherever the reads split it. It keeps a few words of
//! state and never buffers a line, so a body of any size passes in bounded memory. Its
//! [`Mode`] decides how the lines are read:
//!
//! - [`Strict`] (the SMTP server's DATA): a line ends ONLY at CRLF, and the end is ONLY
//!   `CRLF . CRLF` (the first CRLF may be the one ending the DATA command), so the smuggling
//!   variants of 2023 ([`SMUGGLING_VARIANTS`]) are content, never an end. A bare LF, a bare
//!   CR or a line over [`MAX_TEXT_LINE`] octets (counted after removing the transparency dot)
//!   is a [`BodyViolation`]: the unstuffer records the first, outputs nothing more, and keeps
//!   consuming up to the real end, so nothing after a violation is taken for a command.
//!   [`Unstuffer::strict_chunk`] applies the same line rules to BDAT chunks (RFC 3030), where
//!   dots are plain text and there is no terminator.
//! - [`Lenient`] (the POP3 client reading RETR and TOP from an upstream): a line starts after
//!   every LF, so an upstream that sends bare LFs still has its stuffing undone at the right
//!   places; every byte, CR and LF included, passes unchanged apart from the removed leading
//!   dot. The relay stuffs again what it forwards, so nothing it reads here reaches a client
//!   unrepaired.

use std::marker::PhantomData;

use memchr::{memchr, memchr2};

use super::dot::{BodyViolation, Lenient, Mode, Strict, MAX_TEXT_LINE};

/// What one call to [`Unstuffer::feed`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Input bytes consumed; when `end_of_data`, the rest belongs to what follows the body.
    pub consumed: usize,
    /// The `.` CRLF terminator was consumed.
    pub end_of_data: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the start of a line: after its predecessor's end, or at the start of the body.
    LineStart,
    /// Inside a line.
    InLine,
    /// After a CR inside a line (strict only); only LF may follow.
    Cr,
    /// `.` at the start of a line, held back: it is stuffing or the terminator.
    Dot,
    /// `.` CR at the start of a line, held back; LF here ends the body.
    DotCr,
    /// The terminator was consumed.
    Ended,
}

/// The streaming un-stuffer. `Unstuffer` alone is the lenient POP3 form.
#[derive(Clone, Debug)]
pub struct Unstuffer<M: Mode = Lenient> {
    state: State,
    /// Dot-transparency and the terminator apply (not in BDAT chunks).
    dots: bool,
    /// Octets of the current line output so far, its CRLF included once seen (checked
    /// modes only).
    line_len: usize,
    /// The first rule the body broke; nothing is output after it.
    violation: Option<M::Error>,
    mode: PhantomData<M>,
}

impl Unstuffer<Strict> {
    /// Reads a DATA body, checking its lines.
    pub fn strict() -> Self {
        Self::start(true)
    }

    /// Reads BDAT chunk content: the line rules of [`Unstuffer::strict`], but dots are text
    /// and there is no terminator (RFC 3030 §2); [`Unstuffer::finish_chunk`] ends the body.
    pub fn strict_chunk() -> Self {
        Self::start(false)
    }

    /// The first rule the body broke, if any.
    pub fn violation(&self) -> Option<BodyViolation> {
        self.violation
    }

    /// Ends a chunked body (BDAT LAST). A trailing CR is a bare CR; a last line without
    /// CRLF gets one, so every stored message consists of CRLF-terminated lines (as
    /// Postfix does when it records such a line).
    pub fn finish_chunk(&mut self, out: &mut Vec<u8>) {
        match self.state {
            State::Cr => self.violate(BodyViolation::BareCr),
            State::InLine => self.line_end(out),
            State::LineStart | State::Dot | State::DotCr | State::Ended => {}
        }
        self.state = State::LineStart;
    }
}

impl Default for Unstuffer<Lenient> {
    fn default() -> Self {
        Self::new()
    }
}

impl Unstuffer<Lenient> {
    /// Reads a multi-line response body from a POP3 upstream.
    pub fn new() -> Self {
        Self::start(true)
    }
}

impl<M: Mode> Unstuffer<M> {
    fn start(dots: bool) -> Self {
        Self {
            state: State::LineStart,
            dots,
            line_len: 0,
            violation: None,
            mode: PhantomData,
        }
    }

    /// Un-stuffs `input`, appending body bytes to `out`. Stops right after the terminator
    /// (nothing after it is consumed; a later call consumes nothing) and otherwise consumes
    /// everything. `out` grows by at most `input.len() + 1` bytes (a held-back CR).
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Decoded {
        let mut index = 0;
        while let Some(&byte) = input.get(index) {
            match self.state {
                State::InLine => {
                    let rest = &input[index..];
                    if M::CHECKED {
                        // The hot path: everything up to the next CR or LF is plain text.
                        let run = memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
                        if run > 0 {
                            self.text(&rest[..run], out);
                            index += run;
                            continue;
                        }
                        if byte == b'\r' {
                            self.state = State::Cr;
                        } else {
                            // A bare LF does not end the line: only CRLF does.
                            self.violate(BodyViolation::BareLf);
                            self.text(b"\n", out);
                        }
                        index += 1;
                    } else {
                        // The hot path: one search per line, the line copied in one go.
                        let Some(lf) = memchr(b'\n', rest) else {
                            out.extend_from_slice(rest);
                            break;
                        };
                        out.extend_from_slice(&rest[..=lf]);
                        index += lf + 1;
                        self.state = State::LineStart;
                    }
                }
                State::LineStart => {
                    if M::CHECKED && self.violation.is_none() {
                        let clean = self.clean_lines(&input[index..]);
                        if clean > 0 {
                            out.extend_from_slice(&input[index..index + clean]);
                            index += clean;
                            continue;
                        }
                    }
                    if self.dots && byte == b'.' {
                        index += 1;
                        self.state = State::Dot;
                    } else {
                        self.state = State::InLine;
                    }
                }
                State::Dot => {
                    if byte == b'\r' {
                        index += 1;
                        self.state = State::DotCr;
                    } else {
                        // `..` or `.x`: the dot was stuffing (RFC 5321 §4.5.2 removes it even
                        // before a character other than a dot); the rest is the line.
                        self.state = State::InLine;
                    }
                }
                State::DotCr => {
                    if byte == b'\n' {
                        self.state = State::Ended;
                        return Decoded {
                            consumed: index + 1,
                            end_of_data: true,
                        };
                    }
                    // `.` CR then something else: the dot was stuffing, the CR is content, and
                    // the next byte is looked at afresh, so `\r\n.\r\r\n` does not end the body.
                    self.bare_cr(out);
                    self.state = State::InLine;
                }
                State::Cr => {
                    if byte == b'\n' {
                        index += 1;
                        self.line_end(out);
                        self.line_len = 0;
                        self.state = State::LineStart;
                    } else {
                        self.bare_cr(out);
                        self.state = State::InLine;
                    }
                }
                State::Ended => {
                    return Decoded {
                        consumed: index,
                        end_of_data: true,
                    }
                }
            }
        }
        Decoded {
            consumed: input.len(),
            end_of_data: self.state == State::Ended,
        }
    }

    /// The length of the complete lines at the start of `input` that need no decision: each
    /// ends in CRLF, holds no other CR or LF, fits the line limit and (where dots are
    /// stuffing) does not begin with a dot. They pass as they are, in one copy; a body of
    /// short lines otherwise costs a search, a copy and four state changes per line. The
    /// first line that is not that plain is left to the byte rules.
    fn clean_lines(&self, input: &[u8]) -> usize {
        let mut start = 0;
        let mut line_ends = memchr::memchr2_iter(b'\r', b'\n', input);
        loop {
            if self.dots && input.get(start) == Some(&b'.') {
                return start;
            }
            let Some(cr) = line_ends.next() else {
                return start;
            };
            let end = cr + 2;
            if input[cr] != b'\r'
                || input.get(cr + 1) != Some(&b'\n')
                || end - start > MAX_TEXT_LINE
            {
                return start;
            }
            // The LF of this CRLF.
            line_ends.next();
            start = end;
        }
    }

    /// Line content without CR or LF (or a bare LF, already reported), output up to the
    /// line limit; nothing once a rule is broken.
    fn text(&mut self, text: &[u8], out: &mut Vec<u8>) {
        if self.violation.is_none() {
            let room = if M::CHECKED {
                MAX_TEXT_LINE.saturating_sub(self.line_len)
            } else {
                text.len()
            };
            out.extend_from_slice(&text[..text.len().min(room)]);
        }
        if M::CHECKED {
            self.add_to_line(text.len());
        }
    }

    /// A CR that does not end a line.
    fn bare_cr(&mut self, out: &mut Vec<u8>) {
        self.violate(BodyViolation::BareCr);
        self.text(b"\r", out);
    }

    /// CRLF, checked as one unit so a too-long line never leaves a lone CR in the output.
    fn line_end(&mut self, out: &mut Vec<u8>) {
        self.add_to_line(2);
        if self.violation.is_none() {
            out.extend_from_slice(b"\r\n");
        }
    }

    fn add_to_line(&mut self, octets: usize) {
        self.line_len = self.line_len.saturating_add(octets);
        if self.line_len > MAX_TEXT_LINE {
            self.violate(BodyViolation::LineTooLong);
        }
    }

    /// Records the first broken rule; the lenient mode does not mind.
    fn violate(&mut self, violation: BodyViolation) {
        if let Err(error) = M::answer(violation) {
            self.violation.get_or_insert(error);
        }
    }
}

/// The 2023 SMTP smuggling end-of-data variants (SEC Consult), for tests of the strict
/// unstuffer, the SMTP session and the conformance suite.
pub const SMUGGLING_VARIANTS: &[&[u8]] = &[
    b"\n.\n",
    b"\n.\r",
    b"\r.\n",
    b"\r.\r",
    b"\n.\r\n",
    b"\r.\r\n",
    b"\r\n\x00.\r\n",
    b"\r\n.\n",
    b"\r\n.\r",
    b"\r\n.\r\r\n",
];

/// Decodes one complete DATA transfer: the body, or why `wire` is not exactly one clean
/// dot-terminated body. For the property tests of the senders' stuffing.
#[cfg(test)]
pub(crate) fn decode_dot_terminated(wire: &[u8]) -> Result<Vec<u8>, String> {
    let mut unstuffer = Unstuffer::strict();
    let mut body = Vec::new();
    let decoded = unstuffer.feed(wire, &mut body);
    match (decoded.end_of_data, unstuffer.violation()) {
        (true, None) if decoded.consumed == wire.len() => Ok(body),
        (true, None) => Err(format!(
            "{} octets after the end",
            wire.len() - decoded.consumed
        )),
        (false, None) => Err("no end of data".to_owned()),
        (_, Some(violation)) => Err(violation.to_string()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::wire::dot::tests::expected;
    use crate::wire::dot::{dot_stuff, Stuffer};

    /// A reading of some input: the body, the bytes consumed, whether the terminator was
    /// among them, and the first violation.
    type Reading = (Vec<u8>, usize, bool, Option<BodyViolation>);

    /// The reference: the rules a byte at a time, without the fast paths, as the two
    /// unstuffers were written before they became one.
    fn reference(input: &[u8], dots: bool, strict: bool) -> Reading {
        #[derive(Clone, Copy)]
        enum S {
            Start,
            Line,
            Cr,
            Dot,
            DotCr,
        }
        struct Model {
            strict: bool,
            out: Vec<u8>,
            line: usize,
            violation: Option<BodyViolation>,
        }
        impl Model {
            fn violate(&mut self, violation: BodyViolation) {
                if self.strict {
                    self.violation.get_or_insert(violation);
                }
            }
            fn emit(&mut self, bytes: &[u8]) {
                if self.strict {
                    self.line += bytes.len();
                    if self.line > MAX_TEXT_LINE {
                        self.violate(BodyViolation::LineTooLong);
                    }
                }
                if self.violation.is_none() {
                    self.out.extend_from_slice(bytes);
                }
            }
            fn in_line(&mut self, byte: u8) -> S {
                match byte {
                    b'\r' if self.strict => S::Cr,
                    b'\n' if self.strict => {
                        self.violate(BodyViolation::BareLf);
                        self.emit(b"\n");
                        S::Line
                    }
                    b'\n' => {
                        self.emit(b"\n");
                        S::Start
                    }
                    _ => {
                        self.emit(&[byte]);
                        S::Line
                    }
                }
            }
        }
        let mut model = Model {
            strict,
            out: Vec::new(),
            line: 0,
            violation: None,
        };
        let mut state = S::Start;
        for (index, &byte) in input.iter().enumerate() {
            state = match (state, byte) {
                (S::Start, b'.') if dots => S::Dot,
                (S::Dot, b'\r') => S::DotCr,
                (S::DotCr, b'\n') => return (model.out, index + 1, true, model.violation),
                (S::Cr, b'\n') => {
                    model.emit(b"\r\n");
                    model.line = 0;
                    S::Start
                }
                (S::Cr | S::DotCr, _) => {
                    model.violate(BodyViolation::BareCr);
                    model.emit(b"\r");
                    model.in_line(byte)
                }
                (S::Start | S::Dot | S::Line, _) => model.in_line(byte),
            };
        }
        (model.out, input.len(), false, model.violation)
    }

    /// Feeds `input` cut at `cuts` (taken modulo its length) and stops at the terminator.
    fn read_in_pieces<M: Mode>(
        mut unstuffer: Unstuffer<M>,
        input: &[u8],
        cuts: &[usize],
    ) -> (Vec<u8>, usize, bool, Unstuffer<M>) {
        let mut out = Vec::new();
        let mut position = 0;
        let mut boundaries: Vec<usize> = cuts.iter().map(|cut| cut % (input.len() + 1)).collect();
        boundaries.sort_unstable();
        boundaries.push(input.len());
        for boundary in boundaries {
            if boundary < position {
                continue;
            }
            let decoded = unstuffer.feed(&input[position..boundary], &mut out);
            position += decoded.consumed;
            if decoded.end_of_data {
                return (out, position, true, unstuffer);
            }
            assert_eq!(position, boundary, "stopped early without an end");
        }
        (out, position, false, unstuffer)
    }

    fn strict_in_pieces(input: &[u8], cuts: &[usize], dots: bool) -> Reading {
        let start = if dots {
            Unstuffer::strict()
        } else {
            Unstuffer::strict_chunk()
        };
        let (out, consumed, ended, unstuffer) = read_in_pieces(start, input, cuts);
        (out, consumed, ended, unstuffer.violation())
    }

    fn lenient_in_pieces(input: &[u8], cuts: &[usize]) -> Reading {
        let (out, consumed, ended, _) = read_in_pieces(Unstuffer::new(), input, cuts);
        (out, consumed, ended, None)
    }

    fn decode_all(input: &[u8]) -> Reading {
        strict_in_pieces(input, &[], true)
    }

    fn wire_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                Just(b'\r'),
                Just(b'\n'),
                Just(b'.'),
                Just(0u8),
                Just(b'a'),
                any::<u8>()
            ],
            0..max,
        )
    }

    fn cuts() -> impl Strategy<Value = Vec<usize>> {
        proptest::collection::vec(any::<usize>(), 0..8)
    }

    proptest! {
        /// The fast paths, in any reads, give what the byte-at-a-time rules give.
        #[test]
        fn fast_paths_match_the_bytewise_rules(
            input in wire_bytes(3000),
            long_line in 0usize..1200,
            cuts in cuts(),
            dots: bool,
        ) {
            let mut input = input;
            input.splice(0..0, std::iter::repeat_n(b'x', long_line));
            prop_assert_eq!(strict_in_pieces(&input, &cuts, dots), reference(&input, dots, true));
            prop_assert_eq!(lenient_in_pieces(&input, &cuts), reference(&input, true, false));
        }

        /// The same on bodies of mostly plain lines, where the bulk path does most of the
        /// work and hands over at every line it cannot take.
        #[test]
        fn bulk_lines_match_the_bytewise_rules(
            lines in proptest::collection::vec(
                prop_oneof![
                    6 => (0usize..120).prop_map(|n| [vec![b'a'; n], b"\r\n".to_vec()].concat()),
                    1 => (990usize..1010).prop_map(|n| [vec![b'a'; n], b"\r\n".to_vec()].concat()),
                    1 => Just(b".a\r\n".to_vec()),
                    1 => Just(b"a\nb\r\n".to_vec()),
                    1 => Just(b"a\rb\r\n".to_vec()),
                    1 => Just(b".\r\n".to_vec()),
                    1 => Just(b"\r".to_vec()),
                ],
                0..40,
            ),
            cuts in cuts(),
            dots: bool,
        ) {
            let input = lines.concat();
            prop_assert_eq!(strict_in_pieces(&input, &cuts, dots), reference(&input, dots, true));
        }

        /// Chunking invariance: any split of the input gives the same reading.
        #[test]
        fn split_points_do_not_matter(input in wire_bytes(200), cuts in cuts()) {
            for dots in [true, false] {
                prop_assert_eq!(
                    strict_in_pieces(&input, &[], dots),
                    strict_in_pieces(&input, &cuts, dots)
                );
            }
            prop_assert_eq!(lenient_in_pieces(&input, &[]), lenient_in_pieces(&input, &cuts));
        }

        /// `Unstuffer<Strict>` undoes `Stuffer<Strict>`, and `Unstuffer<Lenient>` undoes
        /// `Stuffer<Lenient>`, on every body the stuffer accepts, in any reads; nothing after
        /// the terminator is consumed.
        #[test]
        fn unstuffing_undoes_stuffing(
            body in prop_oneof![wire_bytes(600), crlf_lines(DOTTED_LINE, 12)],
            stuff_cuts in cuts(),
            read_cuts in cuts(),
            trailer in wire_bytes(20),
        ) {
            let pieces = |cuts: &[usize]| {
                let mut at: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
                at.sort_unstable();
                let mut start = 0;
                at.into_iter().chain([body.len()]).map(move |cut| {
                    let piece = start..cut;
                    start = cut;
                    piece
                }).collect::<Vec<_>>()
            };

            let mut stuffer = Stuffer::strict();
            let mut wire = Vec::new();
            let accepted = pieces(&stuff_cuts)
                .into_iter()
                .all(|piece| stuffer.feed(&body[piece], &mut wire).is_ok())
                && stuffer.finish(&mut wire).is_ok();
            if accepted {
                let end = wire.len();
                wire.extend_from_slice(&trailer);
                let (out, consumed, ended, violation) = strict_in_pieces(&wire, &read_cuts, true);
                prop_assert_eq!(violation, None);
                prop_assert!(ended);
                prop_assert_eq!(consumed, end);
                // The stuffer ends an unterminated last line with CRLF.
                prop_assert_eq!(out, expected(&body));
            }

            let mut stuffer = Stuffer::new();
            let mut wire = Vec::new();
            for piece in pieces(&stuff_cuts) {
                stuffer.feed(&body[piece], &mut wire);
            }
            stuffer.finish(&mut wire);
            let end = wire.len();
            wire.extend_from_slice(&trailer);
            let (out, consumed, ended, _) = lenient_in_pieces(&wire, &read_cuts);
            prop_assert!(ended);
            prop_assert_eq!(consumed, end);
            prop_assert_eq!(out, expected(&body));
        }
    }

    // Strict (DATA).

    /// Clean bodies: leading dots unstuffed, dots elsewhere (after a NUL too) content, and
    /// nothing after the end consumed.
    #[test]
    fn clean_bodies() {
        for (input, body, consumed) in [
            (&b".\r\nQUIT\r\n"[..], &b""[..], 3),
            (
                b"a\r\n..b\r\n...\r\n.c\r\n.\r\n",
                b"a\r\n.b\r\n..\r\nc\r\n",
                20,
            ),
            (b"a.\r\nb . c\r\n.\r\n", b"a.\r\nb . c\r\n", 14),
            (b"a\r\n\x00.\r\n.\r\n", b"a\r\n\x00.\r\n", 10),
        ] {
            assert_eq!(decode_all(input), (body.to_vec(), consumed, true, None));
        }
    }

    #[test]
    fn stops_right_after_the_end() {
        let input = b"x\r\n.\r\nMAIL FROM:<>\r\n";
        let (_, consumed, _, _) = decode_all(input);
        assert_eq!(&input[consumed..], b"MAIL FROM:<>\r\n");
        let mut unstuffer = Unstuffer::strict();
        unstuffer.feed(b".\r\n", &mut Vec::new());
        let again = unstuffer.feed(b"x", &mut Vec::new());
        assert_eq!(
            again,
            Decoded {
                consumed: 0,
                end_of_data: true
            }
        );
    }

    /// Every 2023 smuggling end-of-data variant: none may end the data, each is a
    /// violation, and the real end afterwards still works.
    #[test]
    fn smuggling_variants_never_end_the_data() {
        for variant in SMUGGLING_VARIANTS {
            let mut input = b"Subject: x\r\n\r\nbody".to_vec();
            input.extend_from_slice(variant);
            input.extend_from_slice(b"MAIL FROM:<evil@example>\r\n");
            let (_, consumed, ended, _) = decode_all(&input);
            assert!(!ended, "{variant:?} ended the data");
            assert_eq!(consumed, input.len());

            input.extend_from_slice(b"\r\n.\r\n");
            let (out, consumed, ended, violation) = decode_all(&input);
            assert!(ended);
            assert_eq!(consumed, input.len(), "{variant:?}");
            if *variant != b"\r\n\x00.\r\n" {
                assert!(violation.is_some(), "{variant:?} not flagged");
                assert!(
                    !out.windows(4).any(|w| w == b"MAIL"),
                    "{variant:?} output after violation"
                );
            }
        }
    }

    #[test]
    fn bare_lf_and_bare_cr_are_violations() {
        assert_eq!(decode_all(b"a\nb\r\n.\r\n").3, Some(BodyViolation::BareLf));
        assert_eq!(decode_all(b"a\rb\r\n.\r\n").3, Some(BodyViolation::BareCr));
        assert_eq!(decode_all(b"a\r\r\n.\r\n").3, Some(BodyViolation::BareCr));
        assert_eq!(decode_all(b"\n.\r\n").3, Some(BodyViolation::BareLf));
    }

    #[test]
    fn line_length_limit_counts_crlf_but_not_the_stuffing_dot() {
        let mut ok = vec![b'.'; 999]; // stuffed: 998 content octets + CRLF = 1000
        ok.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(decode_all(&ok).3, None);
        let mut long = vec![b'a'; 999];
        long.extend_from_slice(b"\r\n.\r\n");
        let (out, _, ended, violation) = decode_all(&long);
        assert_eq!(violation, Some(BodyViolation::LineTooLong));
        assert!(ended);
        assert_eq!(out.len(), 999, "nothing output after the violation");
    }

    #[test]
    fn chunks_keep_dots_and_finish_the_last_line() {
        let mut unstuffer = Unstuffer::strict_chunk();
        let mut out = Vec::new();
        let decoded = unstuffer.feed(b"a\r\n.\r\n.b", &mut out);
        assert_eq!(
            decoded,
            Decoded {
                consumed: 8,
                end_of_data: false
            }
        );
        unstuffer.finish_chunk(&mut out);
        assert_eq!(out, b"a\r\n.\r\n.b\r\n");
        assert_eq!(unstuffer.violation(), None);

        let mut unstuffer = Unstuffer::strict_chunk();
        unstuffer.feed(b"a\r", &mut out);
        unstuffer.finish_chunk(&mut out);
        assert_eq!(unstuffer.violation(), Some(BodyViolation::BareCr));
    }

    /// A body of up to `max_lines` CRLF lines, each matching `line`.
    pub(crate) fn crlf_lines(
        line: &'static str,
        max_lines: usize,
    ) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(line, 0..max_lines).prop_map(|lines| {
            let mut body = Vec::new();
            for line in lines {
                body.extend_from_slice(line.as_bytes());
                body.extend_from_slice(b"\r\n");
            }
            body
        })
    }

    /// Printable lines, some starting with dots.
    const DOTTED_LINE: &str = "[.]{0,2}[ -~]{0,40}";

    proptest! {
        /// dot-stuff then decode is the identity on CRLF-line bodies.
        #[test]
        fn stuff_then_decode_round_trips(body in crlf_lines(DOTTED_LINE, 12), trailer in wire_bytes(200)) {
            let mut wire = dot_stuff(&body);
            let end = wire.len();
            wire.extend_from_slice(&trailer);
            let (out, consumed, ended, violation) = decode_all(&wire);
            prop_assert!(ended);
            prop_assert_eq!(consumed, end);
            prop_assert_eq!(violation, None);
            prop_assert_eq!(out, body);
        }

        /// Output never contains a bare CR or LF, and never exceeds the line limit.
        #[test]
        fn output_is_always_well_formed(input in wire_bytes(200)) {
            let (out, _, _, _) = decode_all(&input);
            let mut previous = 0u8;
            for (index, &byte) in out.iter().enumerate() {
                if byte == b'\n' {
                    prop_assert_eq!(previous, b'\r');
                }
                if previous == b'\r' {
                    prop_assert_eq!(byte, b'\n', "bare CR at {}", index);
                }
                previous = byte;
            }
        }
    }

    // Lenient (RETR and TOP from a POP3 upstream).

    /// Un-stuffs `wire` fed in the given pieces; returns the content and the bytes after
    /// the terminator (or `None` if there was none).
    fn unstuff_pieces(pieces: &[&[u8]]) -> (Vec<u8>, Option<Vec<u8>>) {
        let mut unstuffer = Unstuffer::new();
        let mut out = Vec::new();
        for (k, piece) in pieces.iter().enumerate() {
            let decoded = unstuffer.feed(piece, &mut out);
            if decoded.end_of_data {
                let mut rest = piece[decoded.consumed..].to_vec();
                for later in &pieces[k + 1..] {
                    rest.extend_from_slice(later);
                }
                return (out, Some(rest));
            }
            assert_eq!(decoded.consumed, piece.len());
        }
        (out, None)
    }

    #[test]
    fn lenient_unstuffs_and_stops_at_the_terminator() {
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
    fn lenient_terminator_only_at_line_start() {
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
}
