//! Lines on the control socket: read with a limit enforced while reading, not after.

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt};

/// What [`read_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line is in the buffer (without its line ending). A last line without a newline
    /// before the peer closed counts too, so `printf '{...}' | socat` works.
    Complete,
    /// The peer closed between lines.
    Closed,
    /// The line is longer than allowed; the rest of it is not read.
    TooLong,
}

/// Reads one line of at most `max` bytes into `buf` (cleared first).
pub async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    max: usize,
    buf: &mut Vec<u8>,
) -> std::io::Result<Line> {
    buf.clear();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(if buf.is_empty() {
                Line::Closed
            } else {
                trim_cr(buf);
                Line::Complete
            });
        }
        let (take, done) = match memchr::memchr(b'\n', available) {
            Some(end) => (end, true),
            None => (available.len(), false),
        };
        if buf.len() + take > max {
            return Ok(Line::TooLong);
        }
        buf.extend_from_slice(&available[..take]);
        reader.consume(if done { take + 1 } else { take });
        if done {
            trim_cr(buf);
            return Ok(Line::Complete);
        }
    }
}

fn trim_cr(buf: &mut Vec<u8>) {
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
}

/// Writes `value` as one JSON line.
pub async fn write_json_line<W: AsyncWrite + Unpin>(
    writer: &mut W,
    value: &impl serde::Serialize,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    line.push(b'\n');
    writer.write_all(&line).await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::BufReader;

    async fn lines(input: &[u8], max: usize) -> Vec<(Line, Vec<u8>)> {
        // A tiny buffer, so lines arrive in many pieces as they do on a socket.
        let mut reader = BufReader::with_capacity(3, input);
        let mut out = Vec::new();
        let mut buf = Vec::new();
        loop {
            let line = read_line(&mut reader, max, &mut buf).await.unwrap();
            let stop = line != Line::Complete;
            out.push((line, buf.clone()));
            if stop {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn lines_are_split_on_newlines_with_or_without_carriage_return() {
        let got = lines(b"{\"a\":1}\r\n{}\nlast", 100).await;
        assert_eq!(
            got,
            vec![
                (Line::Complete, b"{\"a\":1}".to_vec()),
                (Line::Complete, b"{}".to_vec()),
                (Line::Complete, b"last".to_vec()),
                (Line::Closed, Vec::new()),
            ]
        );
    }

    #[tokio::test]
    async fn a_line_over_the_limit_is_refused_before_it_is_read_whole() {
        let got = lines(b"12345\n123456\n", 5).await;
        assert_eq!(got[0], (Line::Complete, b"12345".to_vec()));
        assert_eq!(got[1].0, Line::TooLong);
        assert!(got[1].1.len() <= 5, "kept no more than the limit");
        // Without a newline at all, too.
        assert_eq!(lines(&[b'x'; 64], 10).await[0].0, Line::TooLong);
    }
}
