//! The message body decoder for DATA (dot-terminated, RFC 5321 §4.5.2) and BDAT (chunked,
//! RFC 3030), one byte state machine for both so both enforce the same rules.
//!
//! Rules, chosen to defeat SMTP smuggling (the 2023 `\n.\n`-style attacks) and to store
//! only well-formed RFC 5322 text:
//!
//! - A line ends ONLY at CRLF. The end of DATA is ONLY `CRLF . CRLF` (the first CRLF may be
//!   the one ending the DATA command). `\n.\n`, `\r.\r`, `\n.\r\n`, `\r\n.\n`, `\r\n.\r\r\n`
//!   and friends are content, never an end.
//! - A bare LF or bare CR anywhere is a violation. The decoder keeps consuming up to the real
//!   end (so nothing after it is ever taken for a command) and reports the violation; the
//!   session then rejects the whole message.
//! - A text line longer than 1000 octets including CRLF (RFC 5321 §4.5.3.1.6, counted after
//!   removing the transparency dot) is a violation too.
//!
//! Output is the unstuffed body with CRLF line ends preserved; after a violation nothing more
//! is output, so a caller can never store bytes that broke the rules.

pub use crate::wire::dot::{BodyViolation, MAX_TEXT_LINE};

/// How the end of the body is found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// DATA: ends at `CRLF.CRLF`; leading dots are unstuffed.
    DotTerminated,
    /// BDAT: the session counts octets; dots are ordinary characters.
    Chunked,
}

/// What one call to [`BodyDecoder::feed`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// Input bytes consumed; when `end_of_data`, the rest belongs to the command stream.
    pub consumed: usize,
    /// The terminating `CRLF.CRLF` was consumed.
    pub end_of_data: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// At the start of a line: after CRLF, or at the very start of the body.
    LineStart,
    /// Inside a line.
    InLine,
    /// After a CR; only LF may follow.
    Cr,
    /// `.` at the start of a line (DotTerminated only), not yet output.
    Dot,
    /// `.` CR at the start of a line (DotTerminated only); LF here ends the data.
    DotCr,
    /// The end of data was reached (DotTerminated only).
    Ended,
}

/// Streaming body decoder; see the module documentation for its rules.
#[derive(Clone, Debug)]
pub struct BodyDecoder {
    framing: Framing,
    state: State,
    /// Octets of the current line output so far, including its CRLF once seen.
    line_length: usize,
    violation: Option<BodyViolation>,
}

impl BodyDecoder {
    pub fn new(framing: Framing) -> Self {
        Self {
            framing,
            state: State::LineStart,
            line_length: 0,
            violation: None,
        }
    }

    /// The first rule the body broke, if any.
    pub fn violation(&self) -> Option<BodyViolation> {
        self.violation
    }

    /// Decodes `input`, appending body bytes to `out`. Stops right after the end of data
    /// (DotTerminated) and otherwise consumes everything.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Decoded {
        let mut index = 0;
        while index < input.len() {
            // Fast path: inside a line, everything up to the next CR or LF is plain text
            // that the byte-wise machine would emit one by one.
            if self.state == State::InLine {
                let rest = &input[index..];
                let run = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
                if run > 0 {
                    self.emit_run(&rest[..run], out);
                    index += run;
                    continue;
                }
            }
            self.step(input[index], out);
            index += 1;
            if self.state == State::Ended {
                return Decoded {
                    consumed: index,
                    end_of_data: true,
                };
            }
        }
        Decoded {
            consumed: input.len(),
            end_of_data: false,
        }
    }

    /// Ordinary bytes inside a line, all at once.
    /// Emits exactly what `emit` byte by byte would: up to the line limit, then nothing.
    fn emit_run(&mut self, run: &[u8], out: &mut Vec<u8>) {
        if self.violation.is_none() {
            let room = MAX_TEXT_LINE.saturating_sub(self.line_length);
            out.extend_from_slice(&run[..run.len().min(room)]);
        }
        self.line_length += run.len();
        if self.line_length > MAX_TEXT_LINE {
            self.violate(BodyViolation::LineTooLong);
        }
    }

    /// Ends a chunked body (BDAT LAST). A trailing CR is a bare CR; a last line without
    /// CRLF gets one, so every stored message consists of CRLF-terminated lines (as
    /// Postfix does when it records such a line).
    pub fn finish_chunked(&mut self, out: &mut Vec<u8>) {
        match self.state {
            State::Cr => self.violate(BodyViolation::BareCr),
            State::InLine => self.emit_line_end(out),
            State::LineStart | State::Dot | State::DotCr | State::Ended => {}
        }
        self.state = State::LineStart;
    }

    fn violate(&mut self, violation: BodyViolation) {
        self.violation.get_or_insert(violation);
    }

    fn emit(&mut self, byte: u8, out: &mut Vec<u8>) {
        self.line_length += 1;
        if self.line_length > MAX_TEXT_LINE {
            self.violate(BodyViolation::LineTooLong);
        }
        if self.violation.is_none() {
            out.push(byte);
        }
    }

    /// CRLF, checked as one unit so a too-long line never leaves a lone CR in the output.
    fn emit_line_end(&mut self, out: &mut Vec<u8>) {
        self.line_length += 2;
        if self.line_length > MAX_TEXT_LINE {
            self.violate(BodyViolation::LineTooLong);
        }
        if self.violation.is_none() {
            out.extend_from_slice(b"\r\n");
        }
    }

    fn step(&mut self, byte: u8, out: &mut Vec<u8>) {
        self.state = match (self.state, byte) {
            (State::Ended, _) => State::Ended,
            (State::LineStart, b'.') if self.framing == Framing::DotTerminated => State::Dot,
            // `..` at the start of a line is a stuffed dot.
            (State::Dot, b'.') => {
                self.emit(b'.', out);
                State::InLine
            }
            (State::Dot, b'\r') => State::DotCr,
            (State::DotCr, b'\n') => State::Ended,
            // `.` CR followed by anything else: the CR is bare. Per RFC 5321 §4.5.2 the
            // leading dot is removed anyway; the byte after the CR is looked at afresh, so
            // `\r\n.\r\r\n` does not end the data either.
            (State::DotCr, next) => {
                self.violate(BodyViolation::BareCr);
                self.emit(b'\r', out);
                return self.step_in_line(next, out);
            }
            // `.x` at the start of a line: the dot is removed (RFC 5321 §4.5.2).
            (State::Dot, next) => return self.step_in_line(next, out),
            (State::LineStart | State::InLine, _) => return self.step_in_line(byte, out),
            (State::Cr, b'\n') => {
                self.emit_line_end(out);
                self.line_length = 0;
                State::LineStart
            }
            (State::Cr, next) => {
                self.violate(BodyViolation::BareCr);
                self.emit(b'\r', out);
                return self.step_in_line(next, out);
            }
        };
    }

    /// A byte inside a line. A bare LF does not end the line: only CRLF does.
    fn step_in_line(&mut self, byte: u8, out: &mut Vec<u8>) {
        self.state = match byte {
            b'\r' => State::Cr,
            b'\n' => {
                self.violate(BodyViolation::BareLf);
                self.emit(b'\n', out);
                State::InLine
            }
            _ => {
                self.emit(byte, out);
                State::InLine
            }
        };
    }
}

/// The whole-buffer dot-stuffer lives with the streaming one; many tests and simulations
/// reach it here.
pub use crate::wire::dot::dot_stuff;

/// Decodes one complete DATA transfer: the body, or why `wire` is not exactly one clean
/// dot-terminated body. For the property tests of the senders' stuffing.
#[cfg(test)]
pub(crate) fn decode_dot_terminated(wire: &[u8]) -> Result<Vec<u8>, String> {
    let mut decoder = BodyDecoder::new(Framing::DotTerminated);
    let mut body = Vec::new();
    let decoded = decoder.feed(wire, &mut body);
    match (decoded.end_of_data, decoder.violation()) {
        (true, None) if decoded.consumed == wire.len() => Ok(body),
        (true, None) => Err(format!(
            "{} octets after the end",
            wire.len() - decoded.consumed
        )),
        (false, None) => Err("no end of data".to_owned()),
        (_, Some(violation)) => Err(violation.to_string()),
    }
}

/// The 2023 SMTP smuggling end-of-data variants (SEC Consult), for tests here and in the
/// session.
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The byte-at-a-time machine alone, without `feed`'s fast path: the reference.
    fn decode_bytewise(
        framing: Framing,
        input: &[u8],
    ) -> (Vec<u8>, usize, bool, Option<BodyViolation>) {
        let mut decoder = BodyDecoder::new(framing);
        let mut out = Vec::new();
        for (index, &byte) in input.iter().enumerate() {
            decoder.step(byte, &mut out);
            if decoder.state == State::Ended {
                return (out, index + 1, true, decoder.violation());
            }
        }
        (out, input.len(), false, decoder.violation())
    }

    proptest! {
        #[test]
        fn fast_path_matches_the_bytewise_machine(
            input in proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), Just(0u8), any::<u8>(), Just(b'a')],
                0..3000,
            ),
            long_line in 0usize..1200,
            chunked: bool,
        ) {
            let mut input = input;
            input.splice(0..0, std::iter::repeat_n(b'x', long_line));
            let framing = if chunked { Framing::Chunked } else { Framing::DotTerminated };
            let (expected, consumed, ended, violation) = decode_bytewise(framing, &input);
            let mut decoder = BodyDecoder::new(framing);
            let mut out = Vec::new();
            let decoded = decoder.feed(&input, &mut out);
            prop_assert_eq!(out, expected);
            prop_assert_eq!(decoded.consumed, consumed);
            prop_assert_eq!(decoded.end_of_data, ended);
            prop_assert_eq!(decoder.violation(), violation);
        }
    }

    fn decode_all(input: &[u8]) -> (Vec<u8>, Decoded, Option<BodyViolation>) {
        let mut decoder = BodyDecoder::new(Framing::DotTerminated);
        let mut out = Vec::new();
        let decoded = decoder.feed(input, &mut out);
        (out, decoded, decoder.violation())
    }

    #[test]
    fn empty_message() {
        let (out, decoded, violation) = decode_all(b".\r\nQUIT\r\n");
        assert_eq!(out, b"");
        assert_eq!(
            decoded,
            Decoded {
                consumed: 3,
                end_of_data: true
            }
        );
        assert_eq!(violation, None);
    }

    #[test]
    fn unstuffs_leading_dots() {
        let (out, decoded, violation) = decode_all(b"a\r\n..b\r\n...\r\n.c\r\n.\r\n");
        assert_eq!(out, b"a\r\n.b\r\n..\r\nc\r\n");
        assert!(decoded.end_of_data);
        assert_eq!(violation, None);
    }

    #[test]
    fn dot_inside_a_line_is_content() {
        let (out, decoded, _) = decode_all(b"a.\r\nb . c\r\n.\r\n");
        assert_eq!(out, b"a.\r\nb . c\r\n");
        assert!(decoded.end_of_data);
    }

    #[test]
    fn stops_right_after_the_end() {
        let input = b"x\r\n.\r\nMAIL FROM:<>\r\n";
        let (_, decoded, _) = decode_all(input);
        assert_eq!(&input[decoded.consumed..], b"MAIL FROM:<>\r\n");
    }

    /// Every 2023 smuggling end-of-data variant: none may end the data, each is a
    /// violation, and the real end afterwards still works.
    #[test]
    fn smuggling_variants_never_end_the_data() {
        for variant in SMUGGLING_VARIANTS {
            let mut input = b"Subject: x\r\n\r\nbody".to_vec();
            input.extend_from_slice(variant);
            input.extend_from_slice(b"MAIL FROM:<evil@example>\r\n");
            let (_, decoded, _) = decode_all(&input);
            assert!(!decoded.end_of_data, "{variant:?} ended the data");
            assert_eq!(decoded.consumed, input.len());

            input.extend_from_slice(b"\r\n.\r\n");
            let (out, decoded, violation) = decode_all(&input);
            assert!(decoded.end_of_data);
            assert_eq!(decoded.consumed, input.len(), "{variant:?}");
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
    fn nul_before_dot_is_ordinary_content() {
        let (out, decoded, violation) = decode_all(b"a\r\n\x00.\r\n.\r\n");
        assert_eq!(out, b"a\r\n\x00.\r\n");
        assert!(decoded.end_of_data);
        assert_eq!(violation, None);
    }

    #[test]
    fn bare_lf_and_bare_cr_are_violations() {
        assert_eq!(decode_all(b"a\nb\r\n.\r\n").2, Some(BodyViolation::BareLf));
        assert_eq!(decode_all(b"a\rb\r\n.\r\n").2, Some(BodyViolation::BareCr));
        assert_eq!(decode_all(b"a\r\r\n.\r\n").2, Some(BodyViolation::BareCr));
        assert_eq!(decode_all(b"\n.\r\n").2, Some(BodyViolation::BareLf));
    }

    #[test]
    fn line_length_limit_counts_crlf_but_not_the_stuffing_dot() {
        let mut ok = vec![b'.'; 999]; // stuffed: 998 content octets + CRLF = 1000
        ok.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(decode_all(&ok).2, None);
        let mut long = vec![b'a'; 999];
        long.extend_from_slice(b"\r\n.\r\n");
        let (out, decoded, violation) = decode_all(&long);
        assert_eq!(violation, Some(BodyViolation::LineTooLong));
        assert!(decoded.end_of_data);
        assert_eq!(out.len(), 999, "nothing output after the violation");
    }

    #[test]
    fn chunked_framing_keeps_dots_and_terminates_last_line() {
        let mut decoder = BodyDecoder::new(Framing::Chunked);
        let mut out = Vec::new();
        let decoded = decoder.feed(b"a\r\n.\r\n.b", &mut out);
        assert_eq!(
            decoded,
            Decoded {
                consumed: 8,
                end_of_data: false
            }
        );
        decoder.finish_chunked(&mut out);
        assert_eq!(out, b"a\r\n.\r\n.b\r\n");
        assert_eq!(decoder.violation(), None);

        let mut decoder = BodyDecoder::new(Framing::Chunked);
        decoder.feed(b"a\r", &mut out);
        decoder.finish_chunked(&mut out);
        assert_eq!(decoder.violation(), Some(BodyViolation::BareCr));
    }

    fn decode_in_pieces(
        input: &[u8],
        cuts: &[usize],
        framing: Framing,
    ) -> (Vec<u8>, usize, bool, Option<BodyViolation>) {
        let mut decoder = BodyDecoder::new(framing);
        let mut out = Vec::new();
        let mut position = 0;
        let mut ended = false;
        let mut boundaries: Vec<usize> = cuts.iter().map(|cut| cut % (input.len() + 1)).collect();
        boundaries.sort_unstable();
        boundaries.push(input.len());
        for boundary in boundaries {
            if ended || boundary < position {
                continue;
            }
            let decoded = decoder.feed(&input[position..boundary], &mut out);
            position += decoded.consumed;
            if decoded.end_of_data {
                ended = true;
            }
        }
        (out, position, ended, decoder.violation())
    }

    fn crlf_lines() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec("[ -~]{0,40}", 0..12).prop_map(|lines| {
            let mut body = Vec::new();
            for line in lines {
                body.extend_from_slice(line.as_bytes());
                body.extend_from_slice(b"\r\n");
            }
            body
        })
    }

    fn smtp_ish_bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![
                Just(b'\r'),
                Just(b'\n'),
                Just(b'.'),
                Just(0u8),
                Just(b'a'),
                any::<u8>()
            ],
            0..200,
        )
    }

    proptest! {
        /// (a) Chunking invariance: any split of the input gives the same output.
        #[test]
        fn split_points_do_not_matter(input in smtp_ish_bytes(), cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
            for framing in [Framing::DotTerminated, Framing::Chunked] {
                let whole = decode_in_pieces(&input, &[], framing);
                let pieces = decode_in_pieces(&input, &cuts, framing);
                prop_assert_eq!(whole, pieces);
            }
        }

        /// (d) dot-stuff then decode is the identity on CRLF-line bodies.
        #[test]
        fn stuff_then_decode_round_trips(body in crlf_lines(), trailer in smtp_ish_bytes()) {
            let mut wire = dot_stuff(&body);
            let end = wire.len();
            wire.extend_from_slice(&trailer);
            let (out, decoded, violation) = decode_all(&wire);
            prop_assert!(decoded.end_of_data);
            prop_assert_eq!(decoded.consumed, end);
            prop_assert_eq!(violation, None);
            prop_assert_eq!(out, body);
        }

        /// Output never contains a bare CR or LF, and never exceeds the line limit.
        #[test]
        fn output_is_always_well_formed(input in smtp_ish_bytes()) {
            let (out, _, _) = decode_all(&input);
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
}
