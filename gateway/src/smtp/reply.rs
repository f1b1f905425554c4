//! SMTP replies: a three-digit code (RFC 5321 §4.2), an optional enhanced status code
//! (RFC 3463, advertised as ENHANCEDSTATUSCODES per RFC 2034) and one or more text lines.

use std::fmt;

/// An RFC 3463 enhanced status code such as `5.1.1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnhancedStatus {
    pub class: u8,
    pub subject: u16,
    pub detail: u16,
}

impl EnhancedStatus {
    pub const fn new(class: u8, subject: u16, detail: u16) -> Self {
        Self {
            class,
            subject,
            detail,
        }
    }
}

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// One SMTP reply. Text is kept as given; [`Reply::write`] makes sure no control character
/// from it reaches the wire, so text that quotes client input cannot forge a second reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    code: u16,
    status: Option<EnhancedStatus>,
    lines: Vec<String>,
}

impl Reply {
    /// A one-line reply with an enhanced status code.
    pub fn new(code: u16, status: EnhancedStatus, text: impl Into<String>) -> Self {
        debug_assert_eq!(
            u16::from(status.class),
            code / 100,
            "enhanced status class must match the reply code class"
        );
        Self {
            code,
            status: Some(status),
            lines: vec![text.into()],
        }
    }

    /// A reply without enhanced status codes: RFC 2034 leaves them out of the greeting and
    /// the EHLO/HELO response.
    pub fn plain(code: u16, lines: Vec<String>) -> Self {
        Self {
            code,
            status: None,
            lines,
        }
    }

    /// A reply as read from a peer (the upstream server of the SMTP proxy): the enhanced
    /// status, if any, already split off every line's text.
    pub fn parsed(code: u16, status: Option<EnhancedStatus>, lines: Vec<String>) -> Self {
        Self {
            code,
            status,
            lines,
        }
    }

    pub fn code(&self) -> u16 {
        self.code
    }

    pub fn status(&self) -> Option<EnhancedStatus> {
        self.status
    }

    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// 2xx and 3xx replies.
    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// Appends the wire form: every line but the last as `code-text`, the last as
    /// `code text`, each ended by CRLF.
    pub fn write(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        let empty = [String::new()];
        let lines: &[String] = if self.lines.is_empty() {
            &empty
        } else {
            &self.lines
        };
        for (index, line) in lines.iter().enumerate() {
            let separator = if index == last { ' ' } else { '-' };
            out.extend_from_slice(format!("{}{separator}", self.code).as_bytes());
            if let Some(status) = self.status {
                out.extend_from_slice(format!("{status} ").as_bytes());
            }
            for ch in line.chars() {
                let ch = if ch.is_control() { ' ' } else { ch };
                let mut utf8 = [0u8; 4];
                out.extend_from_slice(ch.encode_utf8(&mut utf8).as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.to_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_line_with_status() {
        let reply = Reply::new(550, EnhancedStatus::new(5, 1, 1), "no such mailbox");
        assert_eq!(reply.to_bytes(), b"550 5.1.1 no such mailbox\r\n");
    }

    #[test]
    fn multi_line_uses_dash_until_the_last_line() {
        let reply = Reply::plain(
            250,
            vec![
                "mx greets you".into(),
                "PIPELINING".into(),
                "CHUNKING".into(),
            ],
        );
        assert_eq!(
            reply.to_bytes(),
            b"250-mx greets you\r\n250-PIPELINING\r\n250 CHUNKING\r\n"
        );
    }

    #[test]
    fn control_characters_never_reach_the_wire() {
        let reply = Reply::new(250, EnhancedStatus::new(2, 0, 0), "a\r\n250 forged");
        assert_eq!(reply.to_bytes(), b"250 2.0.0 a  250 forged\r\n");
    }

    #[test]
    fn empty_reply_still_has_one_line() {
        assert_eq!(Reply::plain(250, vec![]).to_bytes(), b"250 \r\n");
    }

    proptest::proptest! {
        /// What the server writes, the client side (the proxy's reader of an upstream's
        /// replies) reads back as the same reply.
        #[test]
        fn written_replies_read_back_as_themselves(
            // RFC 5321 §4.2: the second digit is 0 to 5.
            (class, category, detail_digit) in (2u16..6, 0u16..6, 0u16..10),
            status in proptest::option::of((0u16..1000, 0u16..1000)),
            lines in proptest::collection::vec("([a-zA-Z][ -~]{0,40})?", 1..5),
        ) {
            let code = class * 100 + category * 10 + detail_digit;
            // RFC 3463 §3.1: enhanced status classes are 2, 4 and 5 only.
            let status = status.filter(|_| class != 3).map(|(subject, detail)| {
                EnhancedStatus::new((code / 100) as u8, subject, detail)
            });
            let reply = Reply::parsed(code, status, lines);
            let mut reader = crate::smtp::client::ReplyReader::new();
            reader.push(&reply.to_bytes());
            proptest::prop_assert_eq!(reader.next_reply(), Ok(Some(reply)));
            proptest::prop_assert!(!reader.has_buffered());
        }
    }
}
