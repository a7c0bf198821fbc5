//! The administration CLI's client: one HTTP/1.1 request over TLS (server pinned by its
//! certificate's fingerprint, or a CA file) or plain HTTP, to the running server's API.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use enclave_control_proto::client::{exchange, ServerUrl};

use crate::tls::{self, ConnectError, Mismatch, Trust};

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

/// A client for one server.
#[derive(Clone)]
pub struct Client {
    /// With https: the configuration that pins the server, and its name.
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    authority: String,
    url: String,
    token: Option<String>,
}

impl std::fmt::Debug for Client {
    /// Everything but the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.url)
            .field("tls", &self.tls.is_some())
            .field("token", &self.token.as_ref().map(|_| "***"))
            .finish()
    }
}

impl Client {
    /// A client for `url` (`https://HOST:PORT`; `http://` only for `--insecure-http`
    /// servers), trusting the server as `trust` says, sending `token`.
    ///
    /// # Errors
    /// A bad URL, no trust for https, or a bad CA file.
    pub fn new(url: &str, trust: Option<Trust>, token: Option<String>) -> Result<Self, Error> {
        let url = url.trim_end_matches('/');
        let parsed = ServerUrl::parse(url).ok_or_else(|| Error::Url(url.to_owned()))?;
        let tls = if parsed.https {
            let config = tls::client_config(&trust.ok_or(Error::Unpinned)?)?;
            let name = parsed
                .server_name()
                .ok_or_else(|| Error::Url(url.to_owned()))?;
            Some((config, name))
        } else {
            None
        };
        Ok(Self {
            tls,
            authority: parsed.authority,
            url: url.to_owned(),
            token,
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
            .map_err(|_| Error::Timeout(self.url.clone()))?
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<Answer, Error> {
        let connect = |source| Error::Connect {
            url: self.url.clone(),
            source,
        };
        let tcp = TcpStream::connect(&self.authority).await.map_err(connect)?;
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.authority);
        if let Some(token) = &self.token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some((content_type, bytes)) => request
                .header(hyper::header::CONTENT_TYPE, content_type)
                .body(Full::new(Bytes::from(bytes))),
            None => request.body(Full::new(Bytes::new())),
        }
        .map_err(|e| Error::Request(e.to_string()))?;
        let (status, body) = match &self.tls {
            Some((config, name)) => {
                let stream =
                    tls::connect(config, name, tcp)
                        .await
                        .map_err(|error| match error {
                            ConnectError::Mismatch(pin) => Error::Mismatch {
                                url: self.url.clone(),
                                pin,
                            },
                            ConnectError::Io(source) => connect(source),
                        })?;
                exchange(stream, request).await
            }
            None => exchange(tcp, request).await,
        }
        .map_err(|source| Error::Http {
            url: self.url.clone(),
            source,
        })?;
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
