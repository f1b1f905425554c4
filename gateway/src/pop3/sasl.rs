//! SASL PLAIN (RFC 4616) inside POP3 AUTH (RFC 5034): decoding the base64 response and the
//! continuation line that answers a `+ ` challenge.

use zeroize::Zeroizing;

use crate::crypto::decode_secret;

/// The client's answer to a `+ ` continuation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continuation<'a> {
    /// `*`: the client gives up (RFC 5034 §4).
    Cancel,
    /// A base64 response (or `=` for an empty one).
    Response(&'a str),
}

/// A response that is not valid PLAIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// Decoded PLAIN credentials. The password is wiped on drop.
pub struct PlainCredentials {
    pub authzid: String,
    pub authcid: String,
    pub password: Zeroizing<String>,
}

impl std::fmt::Debug for PlainCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainCredentials")
            .field("authzid", &self.authzid)
            .field("authcid", &self.authcid)
            .finish_non_exhaustive()
    }
}

/// Reads a continuation line (without its line end).
pub fn continuation(line: &[u8]) -> Result<Continuation<'_>, Malformed> {
    let text = std::str::from_utf8(line).map_err(|_| Malformed)?;
    let text = text.trim_matches(' ');
    if text == "*" {
        Ok(Continuation::Cancel)
    } else {
        Ok(Continuation::Response(text))
    }
}

/// Decodes a base64 PLAIN response: `[authzid] NUL authcid NUL passwd`.
pub fn decode_plain(response: &str) -> Result<PlainCredentials, Malformed> {
    if response == "=" || response.is_empty() {
        return Err(Malformed);
    }
    let bytes = decode_secret(&data_encoding::BASE64, response.as_bytes())
        .or_else(|| decode_secret(&data_encoding::BASE64_NOPAD, response.as_bytes()))
        .ok_or(Malformed)?;
    let mut parts = bytes.split(|&b| b == 0);
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
        password: Zeroizing::new(utf8(password)?.to_owned()),
    })
}

fn utf8(part: &[u8]) -> Result<&str, Malformed> {
    std::str::from_utf8(part).map_err(|_| Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode(raw: &[u8]) -> String {
        data_encoding::BASE64.encode(raw)
    }

    #[test]
    fn decodes_plain() {
        let creds = decode_plain(&encode(b"\0user\0pass word")).unwrap();
        assert_eq!(creds.authzid, "");
        assert_eq!(creds.authcid, "user");
        assert_eq!(creds.password.as_str(), "pass word");
        let creds = decode_plain(&encode(b"user\0user\0pw")).unwrap();
        assert_eq!(creds.authzid, "user");
        let unpadded = encode(b"\0u\0p").trim_end_matches('=').to_owned();
        assert_eq!(decode_plain(&unpadded).unwrap().authcid, "u");
        assert!(!format!("{creds:?}").contains("pw"));
    }

    #[test]
    fn rejects_malformed_plain() {
        for bad in [
            "=".to_owned(),
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
    fn continuation_lines() {
        assert_eq!(continuation(b"*"), Ok(Continuation::Cancel));
        assert_eq!(
            continuation(b"AGEAYg=="),
            Ok(Continuation::Response("AGEAYg=="))
        );
        assert_eq!(continuation(b"\xff"), Err(Malformed));
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,80}", raw in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = decode_plain(&text);
            let _ = decode_plain(&encode(&raw));
            let _ = continuation(&raw);
        }
    }
}
