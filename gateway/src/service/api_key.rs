//! The API key format and how a key's secret is stored.
//!
//! A key reads `gwk_<id>_<secret>`: `gwk_` says what it is (secret scanners and people
//! recognise it), `<id>` is 16 lowercase hex digits naming the key in lists and logs, and
//! `<secret>` is 64 lowercase hex digits (256 random bits). Only the id and a hash of the
//! secret are stored. The hash is HMAC-SHA256 under a public label over the id and the
//! secret: 256 random bits need no slow password hash (nobody can guess them, hashed fast or
//! slow), binding the id means a record cannot be moved to another id, and ring's HMAC
//! verification compares in constant time.

use std::fmt;

use ring::hmac;
use zeroize::Zeroizing;

const PREFIX: &str = "gwk_";
const ID_BYTES: usize = 8;
const SECRET_BYTES: usize = 32;
const ID_CHARS: usize = ID_BYTES * 2;
const SECRET_CHARS: usize = SECRET_BYTES * 2;
/// Domain separation: the hash of a key secret is nothing else's.
const LABEL: &[u8] = b"gateway/api-key/v1";

/// A whole API key, as handed to its owner once. Wiped on drop, never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Zeroizing<String>);

/// A key taken apart: its id and its secret.
pub struct ParsedApiKey {
    pub id: String,
    secret: Zeroizing<[u8; SECRET_BYTES]>,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl fmt::Debug for ParsedApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ParsedApiKey({}, <redacted>)", self.id)
    }
}

impl ApiKey {
    /// A fresh key: id and secret from the OS CSPRNG (the id through the seedable id source,
    /// like every identifier).
    pub fn generate() -> (Self, ParsedApiKey) {
        let mut id = [0u8; ID_BYTES];
        crate::random::fill_random_id(&mut id);
        let mut secret = Zeroizing::new([0u8; SECRET_BYTES]);
        crate::random::fill_random(secret.as_mut());
        let parsed = ParsedApiKey {
            id: data_encoding::HEXLOWER.encode(&id),
            secret,
        };
        (parsed.to_key(), parsed)
    }

    /// The key, to show exactly once.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// Takes a presented key apart; `None` unless it has exactly the form this gateway
    /// hands out (so no lookup is made for anything else).
    pub fn parse(text: &str) -> Option<ParsedApiKey> {
        let rest = text.strip_prefix(PREFIX)?;
        let (id, secret) = rest.split_once('_')?;
        if !is_lower_hex(id, ID_CHARS) || !is_lower_hex(secret, SECRET_CHARS) {
            return None;
        }
        let mut bytes = Zeroizing::new([0u8; SECRET_BYTES]);
        data_encoding::HEXLOWER
            .decode_mut(secret.as_bytes(), bytes.as_mut())
            .ok()?;
        Some(ParsedApiKey {
            id: id.to_owned(),
            secret: bytes,
        })
    }

    /// Whether `text` has the form of a key id (what lists show and revoking takes).
    pub fn is_id(text: &str) -> bool {
        is_lower_hex(text, ID_CHARS)
    }
}

impl ParsedApiKey {
    /// What the store keeps for this key, in lowercase hex.
    pub fn stored_hash(&self) -> String {
        data_encoding::HEXLOWER.encode(hmac::sign(&label_key(), &self.hashed_input()).as_ref())
    }

    /// Whether this key's secret is the one `stored` was made from, compared in constant
    /// time. A damaged stored value matches nothing.
    pub fn matches(&self, stored: &str) -> bool {
        let Ok(tag) = data_encoding::HEXLOWER.decode(stored.as_bytes()) else {
            return false;
        };
        hmac::verify(&label_key(), &self.hashed_input(), &tag).is_ok()
    }

    fn hashed_input(&self) -> Zeroizing<Vec<u8>> {
        let mut input = Zeroizing::new(Vec::with_capacity(ID_CHARS + 1 + SECRET_BYTES));
        input.extend_from_slice(self.id.as_bytes());
        input.push(0);
        input.extend_from_slice(self.secret.as_ref());
        input
    }

    fn to_key(&self) -> ApiKey {
        let mut key = Zeroizing::new(String::with_capacity(
            PREFIX.len() + ID_CHARS + 1 + SECRET_CHARS,
        ));
        key.push_str(PREFIX);
        key.push_str(&self.id);
        key.push('_');
        key.push_str(&Zeroizing::new(
            data_encoding::HEXLOWER.encode(self.secret.as_ref()),
        ));
        ApiKey(key)
    }
}

fn label_key() -> hmac::Key {
    hmac::Key::new(hmac::HMAC_SHA256, LABEL)
}

fn is_lower_hex(text: &str, len: usize) -> bool {
    text.len() == len && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_keys_parse_back_and_match_only_their_own_hash() {
        let (key, parsed) = ApiKey::generate();
        assert_eq!(key.reveal().len(), 4 + 16 + 1 + 64);
        assert!(key.reveal().starts_with("gwk_"));
        let again = ApiKey::parse(key.reveal()).unwrap();
        assert_eq!(again.id, parsed.id);
        assert!(ApiKey::is_id(&parsed.id));
        let stored = parsed.stored_hash();
        assert!(again.matches(&stored));
        let (_, other) = ApiKey::generate();
        assert!(!other.matches(&stored));
        assert!(!again.matches("not hex"));
        assert!(!again.matches(""));
        let secret = &key.reveal()[21..];
        assert!(!stored.contains(secret));
        assert!(!format!("{key:?}{again:?}").contains(secret));
    }

    #[test]
    fn the_id_is_bound_into_the_hash() {
        let (key, parsed) = ApiKey::generate();
        let stored = parsed.stored_hash();
        let moved = format!("gwk_{}{}", "0".repeat(16), &key.reveal()[20..]);
        let moved = ApiKey::parse(&moved).unwrap();
        assert!(!moved.matches(&stored));
    }

    #[test]
    fn near_misses_are_not_keys() {
        let (key, _) = ApiKey::generate();
        let k = key.reveal();
        for bad in [
            String::new(),
            k.to_uppercase(),
            k.replacen("gwk_", "gwx_", 1),
            format!("{k}0"),
            k[..k.len() - 1].to_owned(),
            k.replacen('_', "-", 2),
            format!(" {k}"),
        ] {
            assert!(ApiKey::parse(&bad).is_none(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused_without_panic(text in "\\PC{0,100}") {
            let _ = ApiKey::parse(&text);
        }

        #[test]
        fn well_formed_keys_round_trip(id: [u8; 8], secret: [u8; 32]) {
            let parsed = ParsedApiKey {
                id: data_encoding::HEXLOWER.encode(&id),
                secret: Zeroizing::new(secret),
            };
            let key = parsed.to_key();
            let back = ApiKey::parse(key.reveal()).unwrap();
            prop_assert_eq!(&back.id, &parsed.id);
            prop_assert_eq!(back.secret.as_ref(), parsed.secret.as_ref());
            prop_assert!(back.matches(&parsed.stored_hash()));
        }

        #[test]
        fn changing_any_character_of_a_key_breaks_it(index in 0usize..85, replacement in "[0-9a-z_]") {
            let (key, parsed) = ApiKey::generate();
            let stored = parsed.stored_hash();
            let mut text = key.reveal().to_owned();
            prop_assume!(text[index..index + 1] != replacement);
            text.replace_range(index..index + 1, &replacement);
            prop_assert!(ApiKey::parse(&text).is_none_or(|p| !p.matches(&stored)));
        }
    }
}
