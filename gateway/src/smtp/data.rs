//! The message body decoder for DATA (dot-terminated, RFC 5321 §4.5.2) and BDAT (chunked,
//! RFC 3030): both read the body with the strict [`Unstuffer`], so both enforce the same
//! rules, chosen to defeat SMTP smuggling (the 2023 `\n.\n`-style attacks) and to store only
//! well-formed RFC 5322 text; the rules are written down in [`crate::wire::undot`].
//!
//! What is SMTP's own stays here: the two framings (BDAT counts octets and ends at `BDAT
//! LAST`, DATA ends at `CRLF . CRLF`), and the violation, which the session turns into a
//! rejection of the whole message. Output is the unstuffed body with CRLF line ends
//! preserved; after a violation nothing more is output, so a caller can never store bytes
//! that broke the rules.

use crate::wire::dot::Strict;
pub use crate::wire::dot::{BodyViolation, MAX_TEXT_LINE};
use crate::wire::undot::Unstuffer;
pub use crate::wire::undot::{Decoded, SMUGGLING_VARIANTS};

/// How the end of the body is found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// DATA: ends at `CRLF.CRLF`; leading dots are unstuffed.
    DotTerminated,
    /// BDAT: the session counts octets; dots are ordinary characters.
    Chunked,
}

/// Streaming body decoder; see the module documentation for its rules.
#[derive(Clone, Debug)]
pub struct BodyDecoder {
    lines: Unstuffer<Strict>,
}

impl BodyDecoder {
    pub fn new(framing: Framing) -> Self {
        let lines = match framing {
            Framing::DotTerminated => Unstuffer::strict(),
            Framing::Chunked => Unstuffer::strict_chunk(),
        };
        Self { lines }
    }

    /// The first rule the body broke, if any.
    pub fn violation(&self) -> Option<BodyViolation> {
        self.lines.violation()
    }

    /// Decodes `input`, appending body bytes to `out`. Stops right after the end of data
    /// (DotTerminated) and otherwise consumes everything.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Decoded {
        self.lines.feed(input, out)
    }

    /// Ends a chunked body (BDAT LAST): see [`Unstuffer::finish_chunk`].
    pub fn finish_chunked(&mut self, out: &mut Vec<u8>) {
        self.lines.finish_chunk(out);
    }
}

/// The whole-buffer dot-stuffer lives with the streaming one; many tests and simulations
/// reach it here.
pub use crate::wire::dot::dot_stuff;

#[cfg(test)]
mod tests {
    use super::*;

    /// The un-stuffing rules are tested with [`Unstuffer`]; here, that the framing picks them.
    #[test]
    fn framing_decides_whether_dots_end_the_body() {
        let input = b"a\r\n.\r\nb";
        let mut out = Vec::new();
        let mut data = BodyDecoder::new(Framing::DotTerminated);
        assert_eq!(
            data.feed(input, &mut out),
            Decoded {
                consumed: 6,
                end_of_data: true
            }
        );
        assert_eq!(out, b"a\r\n");
        out.clear();
        let mut chunk = BodyDecoder::new(Framing::Chunked);
        assert!(!chunk.feed(input, &mut out).end_of_data);
        chunk.finish_chunked(&mut out);
        assert_eq!(out, b"a\r\n.\r\nb\r\n");
        assert_eq!(chunk.violation(), None);
    }
}
