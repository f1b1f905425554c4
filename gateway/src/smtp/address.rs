//! Envelope paths (RFC 5321 §4.1.2), with the RFC 6531 extension for UTF-8 addresses.
//!
//! ```text
//! Reverse-path = Path / "<>"
//! Forward-path = Path / "<Postmaster>"
//! Path         = "<" [ A-d-l ":" ] Mailbox ">"
//! A-d-l        = At-domain *( "," At-domain )    ; source route: parsed and ignored
//! Mailbox      = Local-part "@" ( Domain / address-literal )
//! Local-part   = Dot-string / Quoted-string
//! ```
//!
//! Non-ASCII characters are accepted in local parts and domains (as U-labels) only when the
//! caller says SMTPUTF8 is in effect; otherwise such an address is refused with a distinct
//! error so the session can answer `553 5.6.7` as RFC 6531 §3.6.2 asks.

use std::fmt;

/// RFC 5321 §4.5.3.1.1: local parts of at most 64 octets.
pub const MAX_LOCAL_PART: usize = 64;
/// RFC 5321 §4.5.3.1.2: domains of at most 255 octets.
pub const MAX_DOMAIN: usize = 255;
/// RFC 5321 §4.5.3.1.3: paths of at most 256 octets including the angle brackets.
pub const MAX_PATH: usize = 256;

/// Why a path was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("address syntax error")]
    Syntax,
    #[error("address too long")]
    TooLong,
    #[error("non-ASCII address without SMTPUTF8")]
    Utf8NotPermitted,
}

/// The domain part of a mailbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Domain {
    /// A domain name as written (letter case preserved).
    Name(String),
    /// An address literal including its brackets, e.g. `[192.0.2.1]`.
    Literal(String),
}

impl Domain {
    pub fn as_str(&self) -> &str {
        match self {
            Domain::Name(name) => name,
            Domain::Literal(literal) => literal,
        }
    }
}

/// `local-part@domain`. The local part is stored by meaning: a quoted local part is kept
/// without its quotes and backslash escapes, so `"mbx-1"@d` and `mbx-1@d` compare equal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mailbox {
    pub local_part: String,
    pub domain: Domain,
}

impl Mailbox {
    pub fn is_ascii(&self) -> bool {
        self.local_part.is_ascii() && self.domain.as_str().is_ascii()
    }
}

impl fmt::Display for Mailbox {
    /// Writes the address in its canonical SMTP form, quoting the local part only if it is
    /// not a dot-string.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if is_dot_string(&self.local_part) {
            f.write_str(&self.local_part)?;
        } else {
            f.write_str("\"")?;
            for ch in self.local_part.chars() {
                if ch == '"' || ch == '\\' {
                    f.write_str("\\")?;
                }
                write!(f, "{ch}")?;
            }
            f.write_str("\"")?;
        }
        write!(f, "@{}", self.domain.as_str())
    }
}

/// The argument of `MAIL FROM:`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReversePath {
    /// `<>`: bounces and other messages that must not cause a bounce.
    Null,
    Mailbox(Mailbox),
}

impl ReversePath {
    pub fn is_ascii(&self) -> bool {
        match self {
            ReversePath::Null => true,
            ReversePath::Mailbox(mailbox) => mailbox.is_ascii(),
        }
    }
}

impl fmt::Display for ReversePath {
    /// The address without brackets; empty for the null path.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReversePath::Null => Ok(()),
            ReversePath::Mailbox(mailbox) => mailbox.fmt(f),
        }
    }
}

/// The argument of `RCPT TO:`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ForwardPath {
    /// `<Postmaster>` without a domain (RFC 5321 §4.1.1.3), any letter case.
    Postmaster,
    Mailbox(Mailbox),
}

impl fmt::Display for ForwardPath {
    /// The address without brackets; `Postmaster` for the bare postmaster.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ForwardPath::Postmaster => f.write_str("Postmaster"),
            ForwardPath::Mailbox(mailbox) => mailbox.fmt(f),
        }
    }
}

/// Parses a reverse path at the start of `input`; returns it and the rest of the input
/// (the ESMTP parameters).
pub fn parse_reverse_path(
    input: &str,
    allow_utf8: bool,
) -> Result<(ReversePath, &str), AddressError> {
    if let Some(rest) = input.strip_prefix("<>") {
        return Ok((ReversePath::Null, rest));
    }
    let (mailbox, rest) = parse_path(input, allow_utf8)?;
    Ok((ReversePath::Mailbox(mailbox), rest))
}

/// Parses a forward path at the start of `input`; returns it and the rest of the input.
pub fn parse_forward_path(
    input: &str,
    allow_utf8: bool,
) -> Result<(ForwardPath, &str), AddressError> {
    const POSTMASTER: &str = "<postmaster>";
    if input.len() >= POSTMASTER.len()
        && input.is_char_boundary(POSTMASTER.len())
        && input[..POSTMASTER.len()].eq_ignore_ascii_case(POSTMASTER)
    {
        return Ok((ForwardPath::Postmaster, &input[POSTMASTER.len()..]));
    }
    let (mailbox, rest) = parse_path(input, allow_utf8)?;
    Ok((ForwardPath::Mailbox(mailbox), rest))
}

/// `"<" [ A-d-l ":" ] Mailbox ">"`.
fn parse_path(input: &str, allow_utf8: bool) -> Result<(Mailbox, &str), AddressError> {
    let mut cursor = Cursor {
        text: input,
        position: 0,
    };
    cursor.expect('<')?;
    if cursor.peek() == Some('@') {
        // Source route: RFC 5321 §4.1.1.3 says to accept and ignore it.
        loop {
            cursor.expect('@')?;
            cursor.domain()?;
            if cursor.peek() == Some(',') {
                cursor.advance(1);
                continue;
            }
            cursor.expect(':')?;
            break;
        }
    }
    let local_start = cursor.position;
    let local_part = if cursor.peek() == Some('"') {
        cursor.quoted_string()?
    } else {
        cursor.dot_string()?
    };
    if cursor.position - local_start > MAX_LOCAL_PART {
        return Err(AddressError::TooLong);
    }
    cursor.expect('@')?;
    let domain = if cursor.peek() == Some('[') {
        Domain::Literal(cursor.address_literal()?.to_owned())
    } else {
        Domain::Name(cursor.domain()?.to_owned())
    };
    cursor.expect('>')?;
    if cursor.position > MAX_PATH {
        return Err(AddressError::TooLong);
    }
    let mailbox = Mailbox { local_part, domain };
    if !allow_utf8 && !mailbox.is_ascii() {
        return Err(AddressError::Utf8NotPermitted);
    }
    Ok((mailbox, &input[cursor.position..]))
}

/// RFC 5322 atext (RFC 5321 uses the same set for Atom).
fn is_atext(ch: char) -> bool {
    ch.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(ch)
}

/// Non-ASCII is syntactically fine (RFC 6531 UTF8-non-ascii); whether it is permitted is
/// checked once the address is complete.
fn is_utf8_non_ascii(ch: char) -> bool {
    !ch.is_ascii() && !ch.is_control()
}

fn is_dot_string(text: &str) -> bool {
    !text.is_empty()
        && text.split('.').all(|atom| {
            !atom.is_empty() && atom.chars().all(|ch| is_atext(ch) || is_utf8_non_ascii(ch))
        })
}

/// A position in the text being parsed. Non-ASCII characters are let through where RFC 6531
/// allows them; whether they are permitted at all is decided once at the end, so that the
/// error says "needs SMTPUTF8" rather than "syntax".
struct Cursor<'a> {
    text: &'a str,
    position: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<char> {
        self.text[self.position..].chars().next()
    }

    fn advance(&mut self, bytes: usize) {
        self.position += bytes;
    }

    fn expect(&mut self, wanted: char) -> Result<(), AddressError> {
        if self.peek() == Some(wanted) {
            self.advance(wanted.len_utf8());
            Ok(())
        } else {
            Err(AddressError::Syntax)
        }
    }

    /// `Atom *("." Atom)`, returned as written.
    fn dot_string(&mut self) -> Result<String, AddressError> {
        let start = self.position;
        loop {
            let atom_start = self.position;
            while let Some(ch) = self.peek() {
                if is_atext(ch) || is_utf8_non_ascii(ch) {
                    self.advance(ch.len_utf8());
                } else {
                    break;
                }
            }
            if self.position == atom_start {
                return Err(AddressError::Syntax);
            }
            if self.peek() == Some('.') {
                self.advance(1);
            } else {
                break;
            }
        }
        Ok(self.text[start..self.position].to_owned())
    }

    /// `DQUOTE *QcontentSMTP DQUOTE`; returns the content with escapes removed.
    fn quoted_string(&mut self) -> Result<String, AddressError> {
        self.expect('"')?;
        let mut value = String::new();
        loop {
            let ch = self.peek().ok_or(AddressError::Syntax)?;
            self.advance(ch.len_utf8());
            match ch {
                '"' => return Ok(value),
                '\\' => {
                    // quoted-pairSMTP = %d92 %d32-126
                    let escaped = self.peek().ok_or(AddressError::Syntax)?;
                    if !(' '..='~').contains(&escaped) {
                        return Err(AddressError::Syntax);
                    }
                    self.advance(1);
                    value.push(escaped);
                }
                // qtextSMTP = %d32-33 / %d35-91 / %d93-126
                ' '..='~' => value.push(ch),
                _ if is_utf8_non_ascii(ch) => value.push(ch),
                _ => return Err(AddressError::Syntax),
            }
        }
    }

    /// `sub-domain *("." sub-domain)` with `sub-domain = Let-dig [Ldh-str]`, or a U-label.
    fn domain(&mut self) -> Result<&str, AddressError> {
        let start = self.position;
        loop {
            let label_start = self.position;
            let mut last = None;
            while let Some(ch) = self.peek() {
                let allowed = ch.is_ascii_alphanumeric()
                    || is_utf8_non_ascii(ch)
                    || (ch == '-' && last.is_some());
                if !allowed {
                    break;
                }
                last = Some(ch);
                self.advance(ch.len_utf8());
            }
            if self.position == label_start || last == Some('-') {
                return Err(AddressError::Syntax);
            }
            if self.peek() == Some('.') {
                self.advance(1);
            } else {
                break;
            }
        }
        if self.position - start > MAX_DOMAIN {
            return Err(AddressError::TooLong);
        }
        Ok(&self.text[start..self.position])
    }

    /// `"[" 1*dcontent "]"` with `dcontent = %d33-90 / %d94-126`; covers IPv4, `IPv6:` and
    /// general literals without judging their insides (they are never our domain anyway).
    fn address_literal(&mut self) -> Result<&str, AddressError> {
        let start = self.position;
        self.expect('[')?;
        let content_start = self.position;
        while let Some(ch) = self.peek() {
            if ('!'..='Z').contains(&ch) || ('^'..='~').contains(&ch) {
                self.advance(1);
            } else {
                break;
            }
        }
        if self.position == content_start {
            return Err(AddressError::Syntax);
        }
        self.expect(']')?;
        Ok(&self.text[start..self.position])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn mailbox(local: &str, domain: &str) -> Mailbox {
        Mailbox {
            local_part: local.into(),
            domain: Domain::Name(domain.into()),
        }
    }

    #[test]
    fn null_reverse_path() {
        assert_eq!(
            parse_reverse_path("<> SIZE=1", false),
            Ok((ReversePath::Null, " SIZE=1"))
        );
    }

    #[test]
    fn plain_mailbox_and_rest() {
        let (path, rest) = parse_reverse_path("<a.b+c@example.com> BODY=8BITMIME", false).unwrap();
        assert_eq!(path, ReversePath::Mailbox(mailbox("a.b+c", "example.com")));
        assert_eq!(rest, " BODY=8BITMIME");
        assert_eq!(path.to_string(), "a.b+c@example.com");
    }

    #[test]
    fn quoted_local_part_is_stored_by_meaning() {
        let (path, _) = parse_forward_path(r#"<"a b\"c"@x.example>"#, false).unwrap();
        assert_eq!(path, ForwardPath::Mailbox(mailbox("a b\"c", "x.example")));
        let ForwardPath::Mailbox(mailbox) = path else {
            unreachable!()
        };
        assert_eq!(mailbox.to_string(), r#""a b\"c"@x.example"#);
        // A quoted local part that is a dot-string means the same as the unquoted one.
        let (quoted, _) = parse_forward_path(r#"<"mbx-1"@d>"#, false).unwrap();
        assert_eq!(quoted, parse_forward_path("<mbx-1@d>", false).unwrap().0);
    }

    #[test]
    fn source_route_is_accepted_and_ignored() {
        let (path, rest) =
            parse_forward_path("<@a.example,@b.example:user@d.example>", false).unwrap();
        assert_eq!(path, ForwardPath::Mailbox(mailbox("user", "d.example")));
        assert_eq!(rest, "");
    }

    #[test]
    fn postmaster_without_domain() {
        assert_eq!(
            parse_forward_path("<PostMaster>", false),
            Ok((ForwardPath::Postmaster, ""))
        );
        assert!(parse_reverse_path("<postmaster>", false).is_err());
    }

    #[test]
    fn address_literals() {
        let (path, _) = parse_forward_path("<u@[192.0.2.1]>", false).unwrap();
        let ForwardPath::Mailbox(mailbox) = path else {
            unreachable!()
        };
        assert_eq!(mailbox.domain, Domain::Literal("[192.0.2.1]".into()));
        assert!(parse_forward_path("<u@[IPv6:2001:db8::1]>", false).is_ok());
        assert!(parse_forward_path("<u@[]>", false).is_err());
        assert!(parse_forward_path("<u@[a b]>", false).is_err());
    }

    #[test]
    fn utf8_addresses_need_smtputf8() {
        let input = "<jøran@bløbærsyltetøy.example>";
        assert_eq!(
            parse_forward_path(input, false),
            Err(AddressError::Utf8NotPermitted)
        );
        let (path, _) = parse_forward_path(input, true).unwrap();
        assert_eq!(
            path,
            ForwardPath::Mailbox(mailbox("jøran", "bløbærsyltetøy.example"))
        );
        assert_eq!(
            parse_reverse_path("<\"ü\"@x>", false),
            Err(AddressError::Utf8NotPermitted)
        );
    }

    #[test]
    fn rejected_forms() {
        for bad in [
            "",
            "a@b",
            "<a@b",
            "<@a:b>",
            "<a>",
            "<a@>",
            "<@b>",
            "<a..b@c>",
            "<.a@c>",
            "<a.@c>",
            "<a@b..c>",
            "<a@-b>",
            "<a@b->",
            "<a@b.>",
            "<a b@c>",
            "<a@b c>",
            "<\"a@c>",
            "<\"a\\\u{7}\"@c>",
            "<\"a\u{7}\"@c>",
            "<@a,b:c@d>",
            "<@a,@b c@d>",
            "< a@b>",
            "<a@b >",
            "<a(comment)@b>",
        ] {
            assert!(parse_forward_path(bad, true).is_err(), "{bad:?} accepted");
            assert!(parse_reverse_path(bad, true).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn length_limits() {
        let local = "a".repeat(MAX_LOCAL_PART);
        assert!(parse_forward_path(&format!("<{local}@b>"), false).is_ok());
        assert_eq!(
            parse_forward_path(&format!("<{local}a@b>"), false),
            Err(AddressError::TooLong)
        );
        let labels = vec!["a".repeat(60); 5].join(".");
        assert_eq!(
            parse_forward_path(&format!("<x@{labels}>"), false),
            Err(AddressError::TooLong)
        );
    }

    proptest! {
        #[test]
        fn never_panics(input in "\\PC{0,80}", utf8 in any::<bool>()) {
            let _ = parse_forward_path(&input, utf8);
            let _ = parse_reverse_path(&input, utf8);
        }

        #[test]
        fn display_round_trips(local in "[a-z\" .\\\\]{1,20}", domain in "[a-z]{1,10}(\\.[a-z]{1,10}){0,2}") {
            let mailbox = Mailbox { local_part: local, domain: Domain::Name(domain) };
            let text = format!("<{mailbox}>");
            let (parsed, rest) = parse_forward_path(&text, false).unwrap();
            prop_assert_eq!(parsed, ForwardPath::Mailbox(mailbox));
            prop_assert_eq!(rest, "");
        }
    }
}
