//! Streaming, strict dot-stuffing of a message body for DATA (RFC 5321 §4.5.2): the sending
//! twin of [`crate::smtp::data::BodyDecoder`], and the streaming form of
//! [`crate::smtp::data::dot_stuff`] (a property test holds them equal).
//!
//! The input is the unstuffed body the server side decoded: CRLF-terminated lines. The
//! output is fresh wire form: a line starting with `.` gets another `.`. Nothing is passed
//! through blindly: a bare CR or bare LF, or a line over 1000 octets, is an error and
//! nothing after it is written, because the smuggling attacks of 2023 live exactly in such
//! bytes. Only a few flags of state are kept, so memory does not grow with the message.

use crate::smtp::data::{BodyViolation, MAX_TEXT_LINE};

/// The end-of-data marker after the last CRLF.
const END_OF_DATA: &[u8] = b".\r\n";

#[derive(Clone, Debug)]
pub struct BodyEncoder {
    /// The next byte begins a line.
    line_start: bool,
    /// The previous byte was a CR (possibly at the end of the previous piece).
    pending_cr: bool,
    /// Octets of the current line so far, without the stuffing dot.
    line_len: usize,
    violation: Option<BodyViolation>,
}

impl Default for BodyEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl BodyEncoder {
    pub fn new() -> Self {
        Self {
            line_start: true,
            pending_cr: false,
            line_len: 0,
            violation: None,
        }
    }

    /// Appends the stuffed form of `input` to `out`. On a violation, appends the bytes
    /// before it and reports it; every later call fails with the same violation.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), BodyViolation> {
        if let Some(violation) = self.violation {
            return Err(violation);
        }
        let mut rest = input;
        while let Some((&byte, tail)) = rest.split_first() {
            if self.pending_cr {
                if byte != b'\n' {
                    return self.violate(BodyViolation::BareCr);
                }
                self.add_to_line(2)?;
                out.extend_from_slice(b"\r\n");
                self.pending_cr = false;
                self.line_start = true;
                self.line_len = 0;
                rest = tail;
                continue;
            }
            if self.line_start && byte == b'.' {
                out.push(b'.');
            }
            self.line_start = false;
            // Copy up to the next CR or LF in one go.
            let run = memchr::memchr2(b'\r', b'\n', rest).unwrap_or(rest.len());
            if run > 0 {
                self.add_to_line(run)?;
                out.extend_from_slice(&rest[..run]);
                rest = &rest[run..];
                continue;
            }
            if byte == b'\n' {
                return self.violate(BodyViolation::BareLf);
            }
            // A CR: written together with its LF, so a bare CR never reaches the wire.
            self.pending_cr = true;
            rest = tail;
        }
        Ok(())
    }

    /// Appends the end of data: a CRLF if the last line lacks one (as `dot_stuff` does),
    /// then `.` CRLF. A CR left hanging at the end is a bare CR.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), BodyViolation> {
        if let Some(violation) = self.violation {
            return Err(violation);
        }
        if self.pending_cr {
            return self.violate(BodyViolation::BareCr);
        }
        if !self.line_start {
            self.add_to_line(2)?;
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(END_OF_DATA);
        *self = Self::new();
        Ok(())
    }

    fn add_to_line(&mut self, octets: usize) -> Result<(), BodyViolation> {
        self.line_len += octets;
        if self.line_len > MAX_TEXT_LINE {
            return self.violate(BodyViolation::LineTooLong);
        }
        Ok(())
    }

    fn violate(&mut self, violation: BodyViolation) -> Result<(), BodyViolation> {
        self.violation = Some(violation);
        Err(violation)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::smtp::data::{dot_stuff, BodyDecoder, Framing};

    fn encode_in_pieces(body: &[u8], cuts: &[usize]) -> Result<Vec<u8>, BodyViolation> {
        let mut encoder = BodyEncoder::new();
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
        let mut encoder = BodyEncoder::new();
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
            let mut decoder = BodyDecoder::new(Framing::DotTerminated);
            let mut decoded = Vec::new();
            let result = decoder.feed(&wire, &mut decoded);
            prop_assert!(result.end_of_data);
            prop_assert_eq!(result.consumed, wire.len());
            prop_assert_eq!(decoder.violation(), None);
            prop_assert_eq!(decoded, body);
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
            let mut encoder = BodyEncoder::new();
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
}
