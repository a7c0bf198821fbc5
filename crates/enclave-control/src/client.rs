//! The administration CLI's client: one HTTP/1.1 request over TLS (server pinned by its
//! certificate's fingerprint, or a CA file) or plain HTTP, to the running server's API.

use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, StatusCode};

use enclave_control_proto::client::{self as proto, exchange, Target};
use enclave_control_proto::Redacted;

use crate::tls::{Mismatch, Trust};

pub use hyper::{Method as HttpMethod, StatusCode as HttpStatus};

/// How long one request may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Errors of the client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server URL is not `https://HOST:PORT` or `http://HOST:PORT`.
    #[error("{0:?} is not a server URL such as https://127.0.0.1:8443")]
    Url(String),
    /// An https URL without a fingerprint or CA.
    #[error(
        "the server's identity is not pinned: pass --fingerprint (printed by `enclave-control \
         run`) or --ca FILE"
    )]
    Unpinned,
    /// The TLS set-up failed.
    #[error("TLS set-up failed")]
    Tls(#[from] enclave_control_proto::tls::Error),
    /// The server presented another certificate than the pinned one.
    #[error(
        "the server at {url} is not the pinned one: its certificate has fingerprint {}, not {}",
        .pin.seen,
        .pin.pinned
    )]
    Mismatch {
        /// The URL.
        url: String,
        /// What it presented, and what was pinned.
        pin: Mismatch,
    },
    /// The server could not be reached.
    #[error("cannot reach the server at {url}")]
    Connect {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// HTTP failed.
    #[error("the HTTP exchange with {url} failed")]
    Http {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: hyper::Error,
    },
    /// The request could not be built (a bad path or header).
    #[error("bad request: {0}")]
    Request(String),
    /// The request took too long.
    #[error("the server at {0} did not answer within 30 s")]
    Timeout(String),
    /// Another failure of the connection (the agents' client has more kinds than a request
    /// can meet).
    #[error("the connection to the server failed")]
    Connection(#[source] proto::Error),
}

impl From<proto::Error> for Error {
    /// The agents' client opens the connection; this client words its errors for the CLI.
    fn from(error: proto::Error) -> Self {
        match error {
            proto::Error::Url(url) => Error::Url(url),
            proto::Error::Unpinned => Error::Unpinned,
            proto::Error::Tls(source) => Error::Tls(source),
            proto::Error::Unreachable { url, source } => Error::Connect { url, source },
            proto::Error::Mismatch { url, seen, pinned } => Error::Mismatch {
                url,
                pin: Mismatch { seen, pinned },
            },
            proto::Error::Http { url, source } => Error::Http { url, source },
            other => Error::Connection(other),
        }
    }
}

/// An API answer.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body (JSON, or TOML for the definition).
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON (`null` when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A client for one server. `Debug` does not print the token.
#[derive(Debug, Clone)]
pub struct Client {
    target: Target,
    token: Option<Redacted<String>>,
}

impl Client {
    /// A client for `url` (`https://HOST:PORT`; `http://` only for `--insecure-http`
    /// servers), trusting the server as `trust` says, sending `token`.
    ///
    /// # Errors
    /// A bad URL, no trust for https, or a bad CA file.
    pub fn new(url: &str, trust: Option<Trust>, token: Option<String>) -> Result<Self, Error> {
        Ok(Self {
            target: Target::new(url, trust.as_ref())?,
            token: token.map(Redacted::new),
        })
    }

    /// Sends one request to `path` (below the server, e.g. `/api/v1/systems`).
    ///
    /// # Errors
    /// The server could not be reached or the exchange failed; an HTTP error status is an
    /// [`Answer`], not an error.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<Answer, Error> {
        tokio::time::timeout(TIMEOUT, self.send(method, path, body))
            .await
            .map_err(|_| Error::Timeout(self.target.url().to_owned()))?
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<Answer, Error> {
        let io = self.target.open().await?;
        let mut request = self.target.request(method, path);
        if let Some(token) = &self.token {
            let token = token.expose();
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some((content_type, bytes)) => request
                .header(hyper::header::CONTENT_TYPE, content_type)
                .body(Full::new(Bytes::from(bytes))),
            None => request.body(Full::new(Bytes::new())),
        }
        .map_err(|e| Error::Request(e.to_string()))?;
        let (status, body) = exchange(io, request)
            .await
            .map_err(|source| self.target.http(source))?;
        Ok(Answer { status, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_never_shows_its_token() {
        let client =
            Client::new("http://127.0.0.1:8443", None, Some("ent_s3cret".to_owned())).unwrap();
        let shown = format!("{client:?}");
        assert!(!shown.contains("ent_s3cret"), "{shown}");
        assert!(shown.contains("127.0.0.1:8443"), "{shown}");
    }
}
