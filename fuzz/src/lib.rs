//! Helpers shared by the fuzz targets: cutting one input into the pieces a stream decoder is
//! fed, so every target can check that its decoder's result does not depend on how the
//! network happened to split the bytes.

#![forbid(unsafe_code)]

/// The fuzz input as a stream payload and the reads it arrives in.
///
/// The first byte chooses the cuts: with its top bit set the payload arrives one byte per
/// read; otherwise its low four bits say how many of the following bytes are piece lengths
/// (0 to 255 each, an empty read included), and whatever the lengths leave over is the last
/// piece. The payload is everything after those bytes, so a seed is one selector byte (0:
/// no cuts) followed by the stream.
#[derive(Debug)]
pub struct Split<'a> {
    pub payload: &'a [u8],
    pieces: Vec<&'a [u8]>,
}

impl<'a> Split<'a> {
    /// `None` for an empty input.
    pub fn new(data: &'a [u8]) -> Option<Self> {
        let (&selector, rest) = data.split_first()?;
        if selector & 0x80 != 0 {
            return Some(Self {
                payload: rest,
                pieces: rest.chunks(1).collect(),
            });
        }
        let count = usize::from(selector & 0x0f).min(rest.len());
        let (lengths, payload) = rest.split_at(count);
        let mut pieces = Vec::with_capacity(count + 1);
        let mut remaining = payload;
        for &length in lengths {
            let (piece, rest) = remaining.split_at(usize::from(length).min(remaining.len()));
            pieces.push(piece);
            remaining = rest;
        }
        pieces.push(remaining);
        Some(Self { payload, pieces })
    }

    /// The reads, in order; concatenated they are exactly [`Split::payload`].
    pub fn pieces(&self) -> &[&'a [u8]] {
        &self.pieces
    }
}

/// `AUTH mechanism [initial-response]`, as SMTP and POP3 clients write it.
pub fn auth_line(mechanism: &str, initial_response: Option<&str>) -> String {
    match initial_response {
        None => format!("AUTH {mechanism}"),
        Some(response) => format!("AUTH {mechanism} {response}"),
    }
}

/// Lines of `bytes`, each ended by CRLF, without it; `None` if any CR or LF is not part of a
/// CRLF or the last line lacks its CRLF.
pub fn crlf_lines(bytes: &[u8]) -> Option<Vec<&[u8]>> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let body = bytes.strip_suffix(b"\r\n")?;
    let lines: Vec<&[u8]> = split_crlf(body).collect();
    lines
        .iter()
        .all(|line| !line.contains(&b'\r') && !line.contains(&b'\n'))
        .then_some(lines)
}

fn split_crlf(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(bytes);
    std::iter::from_fn(move || {
        let text = rest?;
        match text.windows(2).position(|pair| pair == b"\r\n") {
            Some(at) => {
                rest = Some(&text[at + 2..]);
                Some(&text[..at])
            }
            None => {
                rest = None;
                Some(text)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_payload() {
        let split = Split::new(b"\x02\x01\x00abcdef").unwrap();
        assert_eq!(split.payload, b"abcdef");
        assert_eq!(split.pieces(), [&b"a"[..], b"", b"bcdef"]);
        let bytewise = Split::new(b"\x80abc").unwrap();
        assert_eq!(bytewise.pieces(), [&b"a"[..], b"b", b"c"]);
        let short = Split::new(b"\x0f\x05").unwrap();
        assert_eq!(short.payload, b"");
        assert!(Split::new(b"").is_none());
    }

    #[test]
    fn crlf_lines_only_for_clean_text() {
        assert_eq!(
            crlf_lines(b"a\r\n\r\nb\r\n"),
            Some(vec![&b"a"[..], b"", b"b"])
        );
        assert_eq!(crlf_lines(b""), Some(vec![]));
        assert_eq!(crlf_lines(b"a\nb\r\n"), None);
        assert_eq!(crlf_lines(b"a\r\rb\r\n"), None);
        assert_eq!(crlf_lines(b"a"), None);
    }
}
