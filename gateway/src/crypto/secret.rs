//! [`Secret`]: a credential in memory, wiped on drop and never printed, so a `tracing`
//! field or a `{:?}` holding a login cannot leak its password.

use std::fmt;

use zeroize::{Zeroize, Zeroizing};

/// A password or token: `Debug` shows `<redacted>`, the memory is zeroed on drop, and the
/// value is only reachable through [`Secret::expose`], which a reader has to notice.
#[derive(Clone, Default)]
pub struct Secret<T: Zeroize>(Zeroizing<T>);

impl<T: Zeroize> Secret<T> {
    pub fn new(value: impl Into<T>) -> Self {
        Self(Zeroizing::new(value.into()))
    }

    /// The value, for the one place that needs it (a KDF, an upstream login, a comparison).
    pub fn expose(&self) -> &T {
        &self.0
    }
}

/// Takes over a value already in a wiping buffer, without an unwiped copy.
impl<T: Zeroize> From<Zeroizing<T>> for Secret<T> {
    fn from(value: Zeroizing<T>) -> Self {
        Self(value)
    }
}

impl<T: Zeroize> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    #[allow(dead_code)] // read through Debug only
    struct Login {
        user: String,
        password: Secret<String>,
    }

    #[test]
    fn debug_never_shows_the_value() {
        let login = Login {
            user: "jdoe".into(),
            password: Secret::new("hunter2"),
        };
        let shown = format!("{login:?} {login:#?}");
        assert!(shown.contains("jdoe"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        assert_eq!(login.password.expose(), "hunter2");
    }
}
