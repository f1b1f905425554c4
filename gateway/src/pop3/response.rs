//! Typed POP3 replies: `+OK text`, `-ERR [CODE] text` (RFC 2449 response codes, RFC 3206
//! `SYS/TEMP`, `SYS/PERM`, `AUTH`) and multi-line responses with byte-stuffing and the
//! `.` terminator (RFC 1939 §3).

use std::borrow::Cow;

/// An extended response code (RFC 2449 §8, RFC 3206), written in brackets after `-ERR`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// The failure is about the credentials themselves (RFC 3206 §5).
    Auth,
    /// The maildrop is locked by another session (RFC 2449 §8.1.2).
    InUse,
    /// A temporary system problem: trying again later may succeed (RFC 3206 §4).
    SysTemp,
    /// A permanent system problem: retrying will not help (RFC 3206 §4).
    SysPerm,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Auth => "AUTH",
            Code::InUse => "IN-USE",
            Code::SysTemp => "SYS/TEMP",
            Code::SysPerm => "SYS/PERM",
        }
    }
}

/// One status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    ok: bool,
    code: Option<Code>,
    text: Cow<'static, str>,
}

impl Reply {
    pub fn ok(text: impl Into<Cow<'static, str>>) -> Self {
        Self {
            ok: true,
            code: None,
            text: text.into(),
        }
    }

    pub fn err(text: impl Into<Cow<'static, str>>) -> Self {
        Self {
            ok: false,
            code: None,
            text: text.into(),
        }
    }

    pub fn err_code(code: Code, text: impl Into<Cow<'static, str>>) -> Self {
        Self {
            ok: false,
            code: Some(code),
            text: text.into(),
        }
    }

    pub fn is_ok(&self) -> bool {
        self.ok
    }

    pub fn code(&self) -> Option<Code> {
        self.code
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Appends the status line with its CRLF. CR and LF inside the text (which could only come
    /// from a misconfigured host name) become spaces, so a reply is always exactly one line.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(if self.ok { b"+OK" } else { b"-ERR" });
        if let Some(code) = self.code {
            out.extend_from_slice(b" [");
            out.extend_from_slice(code.as_str().as_bytes());
            out.push(b']');
        }
        if !self.text.is_empty() {
            out.push(b' ');
            write_single_line(out, &self.text);
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// Appends a complete multi-line response: `first`, every line (dot-stuffed), and `.`.
pub fn write_multiline<I>(out: &mut Vec<u8>, first: &Reply, lines: I)
where
    I: IntoIterator,
    I::Item: AsRef<str>,
{
    first.write_to(out);
    for line in lines {
        let line = line.as_ref();
        if line.starts_with('.') {
            out.push(b'.');
        }
        write_single_line(out, line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(TERMINATOR);
}

/// Ends every multi-line response.
pub use crate::wire::dot::TERMINATOR;

fn write_single_line(out: &mut Vec<u8>, text: &str) {
    out.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(reply: &Reply) -> String {
        let mut out = Vec::new();
        reply.write_to(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn status_lines() {
        assert_eq!(written(&Reply::ok("")), "+OK\r\n");
        assert_eq!(written(&Reply::ok("2 320")), "+OK 2 320\r\n");
        assert_eq!(
            written(&Reply::err("no such message")),
            "-ERR no such message\r\n"
        );
        assert_eq!(
            written(&Reply::err_code(Code::SysTemp, "try later")),
            "-ERR [SYS/TEMP] try later\r\n"
        );
        assert_eq!(
            written(&Reply::err_code(Code::InUse, "")),
            "-ERR [IN-USE]\r\n"
        );
    }

    #[test]
    fn text_cannot_inject_lines() {
        assert_eq!(
            written(&Reply::ok("host\r\n+OK evil")),
            "+OK host  +OK evil\r\n"
        );
    }

    #[test]
    fn multiline_is_stuffed_and_terminated() {
        let mut out = Vec::new();
        write_multiline(
            &mut out,
            &Reply::ok("list follows"),
            [".hidden", "TOP", "."],
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "+OK list follows\r\n..hidden\r\nTOP\r\n..\r\n.\r\n"
        );
        let mut out = Vec::new();
        write_multiline(&mut out, &Reply::ok(""), std::iter::empty::<&str>());
        assert_eq!(out, b"+OK\r\n.\r\n");
    }
}
