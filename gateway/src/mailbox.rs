//! Mailbox identifiers and addresses.
//!
//! A mailbox id is also the local part of its journal address, so anyone who can guess an id
//! can put mail into that archive. Ids therefore carry 128 random bits from the OS CSPRNG,
//! are written `mbx-` plus 32 lowercase hex digits (safe in URLs, file names and addresses),
//! and are matched case-insensitively because mail systems may change the case of local parts.

use std::fmt;
use std::str::FromStr;

const PREFIX: &str = "mbx-";
const HEX_DIGITS: usize = 32;

/// A validated, canonical (lowercase) mailbox id such as `mbx-0123456789abcdef0123456789abcdef`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MailboxId(String);

/// Why a string is not a mailbox id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a mailbox id (expected `mbx-` followed by 32 hex digits)")]
pub struct InvalidMailboxId;

impl MailboxId {
    /// A fresh id with 128 bits from the OS CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = [0u8; HEX_DIGITS / 2];
        crate::random::fill_random_id(&mut bytes);
        Self(format!(
            "{PREFIX}{}",
            data_encoding::HEXLOWER.encode(&bytes)
        ))
    }

    /// Parses an id in any letter case; surrounding white space is ignored.
    pub fn parse(text: &str) -> Result<Self, InvalidMailboxId> {
        let text = text.trim();
        let canonical = text.to_ascii_lowercase();
        let hex = canonical.strip_prefix(PREFIX).ok_or(InvalidMailboxId)?;
        if hex.len() != HEX_DIGITS || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(InvalidMailboxId);
        }
        Ok(Self(canonical))
    }

    /// Parses `<id>@<domain>` when `domain` is the gateway's email domain (any letter case).
    /// Returns `None` for other domains and for local parts that are not mailbox ids.
    pub fn from_address(address: &str, email_domain: &str) -> Option<Self> {
        let (local, domain) = address.trim().rsplit_once('@')?;
        if !domain.eq_ignore_ascii_case(email_domain.trim_end_matches('.')) {
            return None;
        }
        Self::parse(local).ok()
    }

    /// The id as a string slice, always lowercase.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The journal address of this mailbox under `email_domain`.
    pub fn address(&self, email_domain: &str) -> String {
        format!("{}@{}", self.0, email_domain.to_ascii_lowercase())
    }
}

impl fmt::Display for MailboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for MailboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MailboxId({})", self.0)
    }
}

impl FromStr for MailboxId {
    type Err = InvalidMailboxId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Either a bare mailbox id or its full address, as people type them into the CLI or a POP3
/// login.
pub fn parse_id_or_address(text: &str) -> Result<MailboxId, InvalidMailboxId> {
    match text.trim().rsplit_once('@') {
        Some((local, _domain)) => MailboxId::parse(local),
        None => MailboxId::parse(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn generated_ids_are_canonical_and_distinct() {
        let a = MailboxId::generate();
        let b = MailboxId::generate();
        assert_ne!(a, b);
        assert_eq!(MailboxId::parse(a.as_str()).unwrap(), a);
        assert_eq!(a.as_str().len(), 4 + 32);
        assert!(a.as_str().starts_with("mbx-"));
    }

    #[test]
    fn matching_ignores_case() {
        let id = MailboxId::generate();
        let upper = id.as_str().to_ascii_uppercase();
        assert_eq!(MailboxId::parse(&upper).unwrap(), id);
        let address = format!("{upper}@Example.COM");
        assert_eq!(
            MailboxId::from_address(&address, "example.com"),
            Some(id.clone())
        );
        assert_eq!(MailboxId::from_address(&address, "example.org"), None);
        assert_eq!(parse_id_or_address(&address).unwrap(), id);
    }

    #[test]
    fn rejects_near_misses() {
        for bad in [
            "",
            "mbx-",
            "mbx-0123",
            "mbx-0123456789abcdef0123456789abcdeg",
            "mbx-0123456789abcdef0123456789abcdef0",
            "box-0123456789abcdef0123456789abcdef",
            "mbx-0123456789abcdef 123456789abcdef",
        ] {
            assert!(MailboxId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_accepts_only_canonical_shape(s in "\\PC{0,48}") {
            if let Ok(id) = MailboxId::parse(&s) {
                prop_assert_eq!(id.as_str(), s.trim().to_ascii_lowercase());
            }
        }
    }
}
