//! [`Redacted`]: a field whose `Debug` prints `<redacted>` instead of its value, so that a
//! struct holding a secret (a token, a key, a password hash) can derive `Debug` and still
//! never show it in a log line or a panic message.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What `Debug` prints in place of a [`Redacted`] value.
pub const PLACEHOLDER: &str = "<redacted>";

/// A value that `Debug` never shows. It has no `Display`: to print or store it, ask for it
/// by name with [`Redacted::expose`] or [`Redacted::into_inner`]. Serde sees the bare value
/// (`#[serde(transparent)]`), so a field can become `Redacted` without changing its wire or
/// database form.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Redacted<T>(T);

impl<T> Redacted<T> {
    /// Wraps `value`.
    pub const fn new(value: T) -> Self {
        Self(value)
    }

    /// The value, for the one place that has to use it.
    pub fn expose(&self) -> &T {
        &self.0
    }

    /// The value, unwrapped.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> From<T> for Redacted<T> {
    fn from(value: T) -> Self {
        Self(value)
    }
}

impl<T> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PLACEHOLDER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Holder {
        name: &'static str,
        secret: Redacted<String>,
        maybe: Option<Redacted<String>>,
    }

    #[test]
    fn a_secret_never_appears_in_debug_output() {
        let holder = Holder {
            name: "admin",
            secret: Redacted::new("ent_s3cret".to_owned()),
            maybe: Some("ent_0ther".to_owned().into()),
        };
        for shown in [format!("{holder:?}"), format!("{holder:#?}")] {
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(!shown.contains("0ther"), "{shown}");
            assert!(shown.contains("admin"), "{shown}");
            assert_eq!(shown.matches(PLACEHOLDER).count(), 2, "{shown}");
        }
        // The values are all there, for whoever asks for them by name.
        assert_eq!(holder.name, "admin");
        assert_eq!(holder.secret.expose(), "ent_s3cret");
        assert_eq!(
            holder.maybe.map(Redacted::into_inner).as_deref(),
            Some("ent_0ther")
        );
        assert_eq!(holder.secret.expose().len(), 10);
    }

    #[test]
    fn serde_sees_the_bare_value() {
        let secret = Redacted::new("abc".to_owned());
        let json = serde_json::to_string(&secret).unwrap();
        assert_eq!(json, "\"abc\"");
        let back: Redacted<String> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, secret);
    }
}
