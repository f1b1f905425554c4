//! Generated passwords: mailboxes' and the administrator's.

use zeroize::Zeroizing;

use super::Secret;

/// Random bytes in a generated password: 160 bits, above the 128 the design requires.
const PASSWORD_BYTES: usize = 20;
/// Characters per group in the displayed form (`ABCD-EFGH-...`), for reading aloud and copying.
const GROUP: usize = 4;

/// A mailbox password. The canonical form (uppercase base32, no separators) is what the key
/// derivation sees, so people may type it in any case and with or without dashes or spaces.
/// The value is wiped from memory on drop and never printed by `Debug`.
#[derive(Clone, Debug)]
pub struct MailboxPassword(Secret<String>);

impl MailboxPassword {
    /// A fresh password from the OS CSPRNG.
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; PASSWORD_BYTES]);
        crate::random::fill_random(bytes.as_mut());
        Self(Secret::new(
            data_encoding::BASE32_NOPAD.encode(bytes.as_ref()),
        ))
    }

    /// What a person typed. Separators and case are normalised; anything else is kept, so a
    /// mistyped password simply fails to unseal.
    pub fn from_user_input(input: &str) -> Self {
        // Sized up front: a `collect` that grows would free copies of the password unwiped.
        let mut canonical = Zeroizing::new(String::with_capacity(input.len()));
        for c in input.chars() {
            if !c.is_whitespace() && c != '-' {
                canonical.push(c.to_ascii_uppercase());
            }
        }
        Self(canonical.into())
    }

    /// The grouped form shown to the administrator exactly once.
    pub fn reveal_for_display(&self) -> Zeroizing<String> {
        let password = self.0.expose();
        let mut shown = Zeroizing::new(String::with_capacity(
            password.len() + password.len() / GROUP,
        ));
        for (i, c) in password.chars().enumerate() {
            if i > 0 && i % GROUP == 0 {
                shown.push('-');
            }
            shown.push(c);
        }
        shown
    }

    pub(super) fn kdf_input(&self) -> &[u8] {
        self.0.expose().as_bytes()
    }
}

/// The administrator's password, as generated: 160 random bits in the grouped base32 form
/// of a mailbox password (`ABCD-EFGH-...`, an alphabet without 0/O or 1/I/L confusion). The
/// grouped form, dashes included, is the password: what is shown is what is typed or pasted.
/// Wiped from memory on drop and never printed by `Debug`.
#[derive(Clone, Debug)]
pub struct AdminPassword(Secret<String>);

impl AdminPassword {
    /// A fresh password from the OS CSPRNG.
    pub fn generate() -> Self {
        Self(MailboxPassword::generate().reveal_for_display().into())
    }

    /// The password, to show exactly once.
    pub fn reveal(&self) -> &str {
        self.0.expose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_passwords_have_enough_entropy_and_round_trip_through_display() {
        let password = MailboxPassword::generate();
        assert_eq!(
            password.kdf_input().len(),
            32,
            "160 bits as 32 base32 characters"
        );
        let shown = password.reveal_for_display();
        assert_eq!(shown.len(), 32 + 7);
        let typed = MailboxPassword::from_user_input(&shown.to_lowercase());
        assert_eq!(typed.kdf_input(), password.kdf_input());
        assert_ne!(
            MailboxPassword::generate().kdf_input(),
            password.kdf_input()
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let password = MailboxPassword::generate();
        let debug = format!("{password:?}");
        assert!(!debug.contains(std::str::from_utf8(password.kdf_input()).unwrap()));
    }

    #[test]
    fn admin_passwords_are_long_random_and_never_debug_printed() {
        let password = AdminPassword::generate();
        let shown = password.reveal();
        assert_eq!(shown.len(), 32 + 7, "160 bits as 8 groups of 4");
        assert!(shown
            .chars()
            .all(|c| c == '-' || c.is_ascii_uppercase() || ('2'..='7').contains(&c)));
        assert_ne!(AdminPassword::generate().reveal(), shown);
        assert!(!format!("{password:?}").contains(shown));
    }
}
