//! The portal's administrator accounts: a name and an argon2id hash of the password (PHC
//! string: algorithm, parameters and salt travel with the hash), kept in the store's
//! `portal_users` table. Made on the server host with `enclave-control admin user create`.

use argon2::{Argon2, PasswordHasher as _, PasswordVerifier as _};
use enclave_control_proto::Redacted;
use getrandom::SysRng;
use sqlx::{AnyPool, Row as _};

use crate::store::{db, Result};

/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 10;
/// Longest password accepted (hashing is work; a megabyte of password is an attack).
pub const MAX_PASSWORD: usize = 1024;

/// A portal account. `Debug` does not print the hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The name, as the audit log shows it (`user:NAME`).
    pub name: String,
    /// argon2id PHC string.
    pub password_hash: Redacted<String>,
    /// When it was made.
    pub created_at: i64,
}

/// Why a password cannot be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// Too short.
    #[error("the password is too short: use at least {MIN_PASSWORD} characters")]
    Short,
    /// Too long.
    #[error("the password is too long: use at most {MAX_PASSWORD} bytes")]
    Long,
    /// The hasher failed (it should not).
    #[error("the password could not be hashed")]
    Hash,
}

/// Hashes `password` with argon2id (the crate's defaults: 19 MiB, 2 passes, 1 lane, as
/// OWASP recommends) and a fresh random salt.
///
/// # Errors
/// The password is too short or too long.
pub fn hash(password: &str) -> std::result::Result<String, PasswordError> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(PasswordError::Short);
    }
    if password.len() > MAX_PASSWORD {
        return Err(PasswordError::Long);
    }
    // A 16-byte salt from the OS (an OS that cannot give randomness fails the hash, no panic).
    Argon2::default()
        .hash_password_with_rng(&mut SysRng, password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|_| PasswordError::Hash)
}

/// Whether `password` matches the PHC string `hash` (false also when `hash` does not parse).
/// Slow on purpose: call it off the async workers.
pub fn verify(password: &str, hash: &str) -> bool {
    if password.len() > MAX_PASSWORD {
        return false;
    }
    // The parameters and the salt come from the PHC string, so hashes made with other
    // parameters (or by argon2 0.5) still verify.
    Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok()
}

/// A hash no password matches, verified for unknown names so that a wrong name costs as much
/// time as a wrong password.
pub fn decoy() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash("no account has this password").unwrap_or_default())
}

pub(crate) async fn read(pool: &AnyPool, name: &str) -> Result<Option<User>> {
    let row =
        sqlx::query("SELECT name, password_hash, created_at FROM portal_users WHERE name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await
            .map_err(db("reading a portal account"))?;
    row.map(|r| {
        Ok(User {
            name: r.try_get("name").map_err(db("reading a portal account"))?,
            password_hash: Redacted::new(
                r.try_get("password_hash")
                    .map_err(db("reading a portal account"))?,
            ),
            created_at: r
                .try_get("created_at")
                .map_err(db("reading a portal account"))?,
        })
    })
    .transpose()
}

pub(crate) async fn write(pool: &AnyPool, user: &User) -> Result<()> {
    sqlx::query(
        "INSERT INTO portal_users (name, password_hash, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET password_hash = excluded.password_hash",
    )
    .bind(&user.name)
    .bind(user.password_hash.expose())
    .bind(user.created_at)
    .execute(pool)
    .await
    .map_err(db("writing a portal account"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_against_its_argon2id_hash_and_no_other() {
        let hashed = hash("correct horse battery").unwrap();
        assert!(hashed.starts_with("$argon2id$"), "{hashed}");
        assert!(verify("correct horse battery", &hashed));
        assert!(!verify("correct horse batterY", &hashed));
        assert!(!verify("correct horse battery", "not a hash"));
        assert!(!verify("correct horse battery", decoy()));
        // Salted: the same password hashes differently each time.
        assert_ne!(hashed, hash("correct horse battery").unwrap());
        assert_eq!(hash("short"), Err(PasswordError::Short));
    }

    /// `hash("correct horse battery")` as made by argon2 0.5.3 (before the upgrade to 0.6):
    /// accounts made then must still sign in.
    const ARGON2_0_5_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$XazYnBsw/XrLaB8Q9kAkfw$\
                                   YmF4H9TzORGFGlru6u08Y0V2s2eKcPj2fDxjjwT5tf4";

    #[test]
    fn a_hash_made_by_argon2_0_5_still_verifies() {
        assert!(verify("correct horse battery", ARGON2_0_5_HASH));
        assert!(!verify("correct horse batterY", ARGON2_0_5_HASH));
    }

    #[test]
    fn debug_never_prints_the_password_hash() {
        let user = User {
            name: "alice".into(),
            password_hash: ARGON2_0_5_HASH.to_owned().into(),
            created_at: 0,
        };
        let shown = format!("{user:?} {user:#?}");
        assert!(!shown.contains("argon2"), "{shown}");
        assert!(shown.contains("alice"), "{shown}");
    }
}
