//! SASL as SMTP AUTH (RFC 4954) and POP3 AUTH (RFC 5034) carry it: a response line
//! (base64, `=` for an empty response, `*` to cancel) and the PLAIN mechanism (RFC 4616),
//! for the server sessions that decode it and the upstream clients that encode it.
//! Decoded secrets live in buffers wiped on drop.

use zeroize::Zeroizing;

use crate::crypto::{decode_secret, Secret};

/// A response line or PLAIN message that breaks the grammar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// A client's SASL response line, decoded.
#[derive(PartialEq, Eq)]
pub enum Response {
    /// `*`: the client gives up.
    Cancel,
    /// The decoded bytes (empty for `=`).
    Data(Zeroizing<Vec<u8>>),
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Response::Cancel => f.write_str("Cancel"),
            Response::Data(data) => write!(f, "Data({} bytes)", data.len()),
        }
    }
}

/// RFC 4422 §3.1: a mechanism name is 1 to 20 of `A-Z 0-9 - _` (letter case is the
/// parsers' business).
pub fn is_mechanism_name(name: &str) -> bool {
    (1..=20).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Appends `AUTH <mechanism> [<initial response>]` without its line end: the same in SMTP
/// (RFC 4954 §4) and POP3 (RFC 5034 §4).
pub fn write_auth(out: &mut Vec<u8>, mechanism: &str, initial_response: Option<&str>) {
    out.extend_from_slice(b"AUTH ");
    out.extend_from_slice(mechanism.as_bytes());
    if let Some(response) = initial_response {
        out.push(b' ');
        out.extend_from_slice(response.as_bytes());
    }
}

/// Reads a response line (without its line end; surrounding spaces ignored). base64 is
/// accepted with or without its padding, as clients differ.
pub fn response(line: &[u8]) -> Result<Response, Malformed> {
    let text = trim_spaces(line);
    match text {
        b"*" => Ok(Response::Cancel),
        b"=" => Ok(Response::Data(Zeroizing::new(Vec::new()))),
        _ => decode_secret(&data_encoding::BASE64, text)
            .or_else(|| decode_secret(&data_encoding::BASE64_NOPAD, text))
            .map(Response::Data)
            .ok_or(Malformed),
    }
}

fn trim_spaces(mut text: &[u8]) -> &[u8] {
    while let [b' ', rest @ ..] = text {
        text = rest;
    }
    while let [rest @ .., b' '] = text {
        text = rest;
    }
    text
}

/// Decoded PLAIN credentials.
#[derive(Debug)]
pub struct PlainCredentials {
    /// The authorization identity; empty when the client names none.
    pub authzid: String,
    pub authcid: String,
    pub password: Secret<String>,
}

impl PlainCredentials {
    /// RFC 4616 leaves the authorization identity to the server; ours: none, or the same
    /// as the authentication identity.
    pub fn same_identity(&self) -> bool {
        self.authzid.is_empty() || self.authzid == self.authcid
    }
}

/// Reads a PLAIN message: `[authzid] NUL authcid NUL passwd`, UTF-8, with a non-empty
/// authcid and password and no further NUL.
pub fn plain(message: &[u8]) -> Result<PlainCredentials, Malformed> {
    let mut parts = message.split(|&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Malformed);
    };
    if authcid.is_empty() || password.is_empty() {
        return Err(Malformed);
    }
    Ok(PlainCredentials {
        authzid: utf8(authzid)?.to_owned(),
        authcid: utf8(authcid)?.to_owned(),
        password: Secret::new(utf8(password)?),
    })
}

/// A PLAIN response as a line carries it (base64): [`response`], then [`plain`]. A
/// cancel is malformed here (an initial response cannot cancel).
pub fn plain_response(line: &[u8]) -> Result<PlainCredentials, Malformed> {
    match response(line)? {
        Response::Data(message) => plain(&message),
        Response::Cancel => Err(Malformed),
    }
}

/// base64(`NUL authcid NUL password`): PLAIN with no authorization identity, as the
/// upstream clients log in.
pub fn encode_plain(authcid: &str, password: &str) -> Zeroizing<String> {
    let mut raw = Zeroizing::new(Vec::with_capacity(authcid.len() + password.len() + 2));
    raw.push(0);
    raw.extend_from_slice(authcid.as_bytes());
    raw.push(0);
    raw.extend_from_slice(password.as_bytes());
    Zeroizing::new(data_encoding::BASE64.encode(&raw))
}

fn utf8(part: &[u8]) -> Result<&str, Malformed> {
    std::str::from_utf8(part).map_err(|_| Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn mechanism_names_and_the_auth_line() {
        for good in ["PLAIN", "LOGIN", "SCRAM-SHA-256", "X_1", &"A".repeat(20)] {
            assert!(is_mechanism_name(good), "{good}");
        }
        for bad in ["", "PLAIN LOGIN", "PLÄIN", "A=B", &"A".repeat(21)] {
            assert!(!is_mechanism_name(bad), "{bad}");
        }
        let mut line = Vec::new();
        write_auth(&mut line, "PLAIN", Some("AGE="));
        assert_eq!(line, b"AUTH PLAIN AGE=");
        line.clear();
        write_auth(&mut line, "LOGIN", None);
        assert_eq!(line, b"AUTH LOGIN");
    }

    fn encode(raw: &[u8]) -> String {
        data_encoding::BASE64.encode(raw)
    }

    fn decode_plain(text: &str) -> Result<PlainCredentials, Malformed> {
        plain_response(text.as_bytes())
    }

    #[test]
    fn decodes_plain() {
        let creds = decode_plain(&encode(b"\0user\0pass word")).unwrap();
        assert_eq!(creds.authzid, "");
        assert_eq!(creds.authcid, "user");
        assert_eq!(creds.password.expose(), "pass word");
        assert!(creds.same_identity());
        let creds = decode_plain(&encode(b"user\0user\0pw")).unwrap();
        assert_eq!(creds.authzid, "user");
        assert!(creds.same_identity());
        let unpadded = encode(b"\0u\0p").trim_end_matches('=').to_owned();
        assert_eq!(decode_plain(&unpadded).unwrap().authcid, "u");
        assert!(!format!("{creds:?}").contains("pw"));
        assert!(!decode_plain(&encode(b"boss\0user\0pw"))
            .unwrap()
            .same_identity());
    }

    #[test]
    fn rejects_malformed_plain() {
        for bad in [
            "=".to_owned(),
            "*".to_owned(),
            String::new(),
            "not base64!".to_owned(),
            encode(b"user\0pass"),
            encode(b"\0\0pass"),
            encode(b"\0user\0"),
            encode(b"\0user\0pass\0extra"),
            encode(b"\0us\xffer\0pass"),
            encode(b"\0user\0pa\xffss"),
        ] {
            assert_eq!(decode_plain(&bad).map(|_| ()), Err(Malformed), "{bad:?}");
        }
    }

    #[test]
    fn response_lines() {
        assert_eq!(response(b"*"), Ok(Response::Cancel));
        assert_eq!(response(b" * "), Ok(Response::Cancel));
        assert_eq!(
            response(b"="),
            Ok(Response::Data(Zeroizing::new(Vec::new())))
        );
        assert_eq!(
            response(b"AGEAYg=="),
            Ok(Response::Data(Zeroizing::new(b"\0a\0b".to_vec())))
        );
        assert_eq!(response(b"\xff"), Err(Malformed));
        let secret = response(encode(b"s3cret").as_bytes());
        assert_eq!(format!("{secret:?}"), "Ok(Data(6 bytes))");
    }

    #[test]
    fn encoding_is_what_the_servers_decode() {
        let encoded = encode_plain("jdoe@example.com", "s3cret pw");
        assert_eq!(encoded.as_str(), encode(b"\0jdoe@example.com\0s3cret pw"));
        let creds = decode_plain(&encoded).unwrap();
        assert_eq!(creds.authcid, "jdoe@example.com");
        assert_eq!(creds.password.expose(), "s3cret pw");
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,80}", raw in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = decode_plain(&text);
            let _ = decode_plain(&encode(&raw));
            let _ = response(&raw);
            let _ = plain(&raw);
        }

        /// Whatever a client encodes (no NUL, non-empty) decodes to the same credentials.
        #[test]
        fn round_trip(user in "[^\\x00]{1,40}", password in "[^\\x00]{1,40}") {
            let creds = decode_plain(&encode_plain(&user, &password)).unwrap();
            prop_assert_eq!(creds.authcid, user);
            prop_assert_eq!(creds.password.expose(), &password);
        }
    }
}
