//! The administration CLI's client: one HTTP/1.1 request over TLS (server pinned by its
//! certificate's fingerprint, or a CA file) or plain HTTP, to the running server's API.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use enclave_control_proto::client::ServerUrl;

use crate::tls::{self, Trust};

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
        "the server at {url} is not the pinned one: its certificate has fingerprint {seen}, \
         not {pinned}"
    )]
    Mismatch {
        /// The URL.
        url: String,
        /// What it presented.
        seen: String,
        /// What was pinned.
        pinned: String,
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
    tls: Option<Arc<rustls::ClientConfig>>,
    host: String,
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
            Some(tls::client_config(&trust.ok_or(Error::Unpinned)?)?)
        } else {
            None
        };
        Ok(Self {
            tls,
            host: parsed.host,
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
        tokio::time::timeout(TIMEOUT, self.exchange(method, path, body))
            .await
            .map_err(|_| Error::Timeout(self.url.clone()))?
    }

    async fn exchange(
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
        match &self.tls {
            Some(config) => {
                let name = ServerName::try_from(self.host.clone())
                    .map_err(|_| Error::Url(self.url.clone()))?;
                let stream = tokio_rustls::TlsConnector::from(Arc::clone(config))
                    .connect(name, tcp)
                    .await
                    .map_err(
                        |source| match enclave_control_proto::tls::mismatch(&source) {
                            Some(m) => Error::Mismatch {
                                url: self.url.clone(),
                                seen: m.seen.clone(),
                                pinned: m.pinned.clone(),
                            },
                            None => connect(source),
                        },
                    )?;
                self.send(stream, request).await
            }
            None => self.send(tcp, request).await,
        }
    }

    async fn send<I>(&self, io: I, request: Request<Full<Bytes>>) -> Result<Answer, Error>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let http = |source| Error::Http {
            url: self.url.clone(),
            source,
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(http)?;
        let driver = tokio::spawn(connection);
        let response = sender.send_request(request).await.map_err(http)?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(http)?
            .to_bytes();
        driver.abort();
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
