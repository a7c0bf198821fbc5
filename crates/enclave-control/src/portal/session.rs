//! Sessions of signed-in administrators, kept in this process's memory (a restart signs
//! everyone out), and their CSRF tokens.
//!
//! The cookie holds 256 random bits; the server keeps only their SHA-256. Each session has
//! its own CSRF token, put in every form and checked on every `POST`. The sign-in form, used
//! before there is a session, is covered by a second cookie whose value the form repeats.
//!
//! Handlers get their session through the extractors `SignedIn` (a page) and
//! `SignedInForm` (a posted form, with its CSRF token checked), which answer for them
//! when there is none.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse as _, Response};
use axum::Form;
use base64::Engine as _;
use getrandom::SysRng;
use rand_core::{Rng as _, UnwrapErr};
use serde::de::DeserializeOwned;

use super::{refused, see, Portal};
use crate::secret;

/// The session cookie's name.
pub const COOKIE: &str = "enclave_session";
/// The sign-in form's cookie.
pub const SIGNIN_COOKIE: &str = "enclave_signin";
/// How long a session lasts, seconds (also the cookie's `Max-Age`).
pub const LIFETIME: i64 = 8 * 3600;
/// Sessions kept at most; past it the oldest go.
const MAX_SESSIONS: usize = 10_000;

/// One signed-in administrator.
#[derive(Debug, Clone)]
pub struct Session {
    /// The account's name.
    pub user: String,
    /// The token every form of this session carries.
    pub csrf: String,
    /// When it ends (Unix seconds).
    pub expires: i64,
}

/// Sessions by the hash of their cookie.
#[derive(Debug, Default)]
pub struct Sessions {
    by_hash: Mutex<HashMap<String, Session>>,
}

/// 256 random bits, URL-safe base64.
pub fn random() -> String {
    let mut bytes = [0u8; 32];
    UnwrapErr(SysRng).fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl Sessions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.by_hash.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a session for `user`; returns the cookie's value.
    pub fn start(&self, user: &str, now: i64) -> String {
        let cookie = random();
        let mut map = self.map();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            secret::hash(&cookie),
            Session {
                user: user.to_owned(),
                csrf: random(),
                expires: now + LIFETIME,
            },
        );
        cookie
    }

    /// The live session of a cookie.
    pub fn get(&self, cookie: &str, now: i64) -> Option<Session> {
        let hash = secret::hash(cookie);
        let mut map = self.map();
        match map.get(&hash) {
            Some(s) if s.expires > now => Some(s.clone()),
            Some(_) => {
                map.remove(&hash);
                None
            }
            None => None,
        }
    }

    /// Ends a cookie's session.
    pub fn end(&self, cookie: &str) {
        self.map().remove(&secret::hash(cookie));
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key == name).then_some(value)
    })
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, `Secure` over TLS, for `max_age` seconds
/// (0 deletes it).
pub fn set_cookie(name: &str, value: &str, max_age: i64, tls: bool) -> String {
    let secure = if tls { "; Secure" } else { "" };
    format!("{name}={value}; Path=/portal; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

/// The signed-in administrator of a page; without a session the answer is the way to the
/// sign-in page.
#[derive(Debug)]
pub(super) struct SignedIn(pub(super) Session);

impl FromRequestParts<Portal> for SignedIn {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, portal: &Portal) -> Result<Self, Response> {
        match portal.session(&parts.headers) {
            Some((_, session)) => Ok(Self(session)),
            None => Err(see("/portal/signin")),
        }
    }
}

/// A posted form and its signed-in administrator: every `POST` handler but sign-in's takes
/// one, so no change is made without the session's CSRF token. The answer is the form's own
/// rejection when the body is not a form, else `403` without a session or without the
/// token.
#[derive(Debug)]
pub(super) struct SignedInForm<T = HashMap<String, String>>(pub(super) Session, pub(super) T);

/// A form's body as a handler reads it.
pub(super) trait Posted: DeserializeOwned + Send {
    /// Its `csrf` field (the last one, as for any field), `""` without one.
    fn csrf(&self) -> &str;
}

impl Posted for HashMap<String, String> {
    fn csrf(&self) -> &str {
        self.get("csrf").map_or("", String::as_str)
    }
}

/// Fields in order, a name perhaps repeated (check boxes).
impl Posted for Vec<(String, String)> {
    fn csrf(&self) -> &str {
        self.iter()
            .rev()
            .find(|(name, _)| name == "csrf")
            .map_or("", |(_, value)| value.as_str())
    }
}

impl<T: Posted> FromRequest<Portal> for SignedInForm<T> {
    type Rejection = Response;

    async fn from_request(request: Request, portal: &Portal) -> Result<Self, Response> {
        let headers = request.headers().clone();
        let Form(form) = Form::<T>::from_request(request, portal)
            .await
            .map_err(|rejection| rejection.into_response())?;
        let Some((_, session)) = portal.session(&headers) else {
            return Err(refused(
                "You are not signed in (or your session ended). Sign in again.",
            ));
        };
        if !secret::same(&secret::hash(form.csrf()), &secret::hash(&session.csrf)) {
            return Err(refused(
                "This form's security token is missing or wrong; nothing was changed. \
                 Reload the page and try again.",
            ));
        }
        Ok(Self(session, form))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_lives_until_it_expires_or_ends() {
        let sessions = Sessions::default();
        let cookie = sessions.start("alice", 1000);
        let session = sessions.get(&cookie, 1001).unwrap();
        assert_eq!(session.user, "alice");
        assert_eq!(session.csrf.len(), 43);
        assert!(sessions.get("forged", 1001).is_none());
        assert!(sessions.get(&cookie, 1000 + LIFETIME).is_none());
        let cookie = sessions.start("alice", 2000);
        sessions.end(&cookie);
        assert!(sessions.get(&cookie, 2001).is_none());
    }

    #[test]
    fn cookies_are_read_by_name_and_set_strict() {
        assert_eq!(cookie("a=1; enclave_session=xyz; b=2", COOKIE), Some("xyz"));
        assert_eq!(cookie("a=1", COOKIE), None);
        let set = set_cookie(COOKIE, "v", 60, true);
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict"));
        assert!(set.ends_with("; Secure"));
        assert!(!set_cookie(COOKIE, "v", 60, false).contains("Secure"));
    }
}
