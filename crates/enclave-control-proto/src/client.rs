//! The agent's side: enrolment, and the long-lived connection.
//!
//! [`connect`] opens TCP, TLS (the server pinned as [`Trust`] says), sends
//! `GET /api/v1/agent` with `Upgrade: enclave-agent/1`, and on `101 Switching Protocols` runs
//! the hello, challenge and proof. It returns a [`Session`] once the server has accepted the
//! proof; a refusal is [`Error::Refused`] with the server's reason. The [`Session`] splits
//! into a [`Reader`] (views, pending, revoked) and a [`Writer`] (reports, acks), so an agent
//! can report while it waits for the next view. The reader answers the server's keepalives
//! itself and fails with [`Error::Silent`] when the server has said nothing for
//! [`SILENCE`]: an agent only has to keep calling [`Reader::recv`].

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::{header, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use ipnet::Ipv4Net;
use rustls::pki_types::ServerName;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use x25519_dalek::{PublicKey, StaticSecret};

use crate::frame::{self, FrameReader, FrameWriter, MAX_FRAME};
use crate::message::{AgentMessage, Challenge, Hello, Proof, ServerMessage};
use crate::proof::{self, Transcript, CHANNEL_EXPORTER_LABEL};
use crate::tls::{self, Trust};
use crate::{AGENT_PATH, ENROL_PATH, PROTOCOL_VERSIONS, UPGRADE};

/// How long connecting, TLS, the upgrade and the proof may take together; and one enrolment.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// The server sends a keepalive after this long without another message (and so does the
/// agent, answering it).
pub const KEEPALIVE: Duration = Duration::from_secs(15);

/// A side that has heard nothing for this long considers the connection dead.
pub const SILENCE: Duration = Duration::from_secs(45);

/// Errors of the agent's client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server URL is not `https://HOST:PORT` (or `http://HOST:PORT`).
    #[error("{0:?} is not a server URL such as https://control.example.net:8443")]
    Url(String),
    /// An https URL without a fingerprint or CA.
    #[error(
        "the server's identity is not pinned: give its certificate fingerprint (printed by \
         `enclave-control run`) or a CA file"
    )]
    Unpinned,
    /// The TLS set-up failed (a bad CA file).
    #[error("TLS set-up failed")]
    Tls(#[from] tls::Error),
    /// The server could not be reached, or TLS failed for another reason than the pin.
    #[error("cannot reach the server at {url}")]
    Unreachable {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The server presented another certificate than the pinned one.
    #[error(
        "the server at {url} is not the pinned one: its certificate has fingerprint {seen}, \
         not {pinned}; if the server's certificate was replaced on purpose, enrol again or pin \
         the new fingerprint"
    )]
    Mismatch {
        /// The URL.
        url: String,
        /// What it presented.
        seen: String,
        /// What was pinned.
        pinned: String,
    },
    /// The HTTP exchange failed.
    #[error("the HTTP exchange with {url} failed")]
    Http {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: hyper::Error,
    },
    /// The server answered with an HTTP error (too many attempts, an older server without
    /// the agents' endpoint, a database that is down).
    #[error("the server at {url} answered {status}: {message}")]
    Status {
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The server's `error`, or the status's reason.
        message: String,
    },
    /// The server refused: an unknown or revoked key, a failed proof, a wrong enrolment key.
    #[error("the server refused: {reason}")]
    Refused {
        /// The server's reason.
        reason: String,
    },
    /// The server broke the protocol.
    #[error("the server broke the protocol: {0}")]
    Protocol(String),
    /// Reading or writing a message failed.
    #[error("the connection to the server failed")]
    Frame(#[from] frame::Error),
    /// The connection ended.
    #[error("the server closed the connection")]
    Closed,
    /// Nothing arrived for [`SILENCE`].
    #[error("the server said nothing for {} s", SILENCE.as_secs())]
    Silent,
    /// Connecting or the handshake took longer than [`HANDSHAKE_TIMEOUT`].
    #[error(
        "the server at {url} did not complete the handshake within {} s",
        HANDSHAKE_TIMEOUT.as_secs()
    )]
    Timeout {
        /// The URL.
        url: String,
    },
}

/// The result type of the client.
pub type Result<T> = std::result::Result<T, Error>;

/// What a server answers to an enrolment: what the agent writes into its managed
/// configuration (beside the server's URL and pin, which it already has).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrolled {
    /// The system's name on the server.
    pub system: String,
    /// Its overlay address.
    pub address: Ipv4Addr,
    /// The overlay network.
    pub overlay: Ipv4Net,
    /// `approved` or `pending` (waits for an administrator).
    pub approval: String,
    /// The tags it got from its key.
    #[serde(default)]
    pub tags: Vec<String>,
}

/// Registers `public_key` (base64) with `enrolment_key`.
///
/// # Errors
/// The server is unreachable or not the pinned one, or refused ([`Error::Refused`] with its
/// reason: a wrong, expired or used-up key; a key already enrolled).
pub async fn enrol(
    url: &str,
    trust: Option<&Trust>,
    enrolment_key: &str,
    public_key: &str,
    hostname: Option<&str>,
) -> Result<Enrolled> {
    let target = Target::new(url, trust)?;
    let body = serde_json::json!({
        "key": enrolment_key,
        "public_key": public_key,
        "hostname": hostname,
    });
    let enrolment = async {
        let io = target.open().await?;
        let request = target
            .request(Method::POST, ENROL_PATH)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| Error::Protocol(e.to_string()))?;
        exchange(io, request).await.map_err(|e| target.http(e))
    };
    let (status, bytes) = tokio::time::timeout(HANDSHAKE_TIMEOUT, enrolment)
        .await
        .map_err(|_| Error::Timeout {
            url: target.url.clone(),
        })??;
    if status == StatusCode::CREATED || status == StatusCode::OK {
        return serde_json::from_slice(&bytes)
            .map_err(|e| Error::Protocol(format!("the enrolment answer is not understood: {e}")));
    }
    let message = error_text(status, &bytes);
    if status == StatusCode::FORBIDDEN || status == StatusCode::CONFLICT {
        Err(Error::Refused { reason: message })
    } else {
        Err(Error::Status {
            url: target.url,
            status: status.as_u16(),
            message,
        })
    }
}

/// Sends `request` over `io` as one HTTP/1.1 exchange: the answer's status and whole body.
///
/// # Errors
/// The HTTP exchange failed.
pub async fn exchange<I>(
    io: I,
    request: Request<Full<Bytes>>,
) -> std::result::Result<(StatusCode, Bytes), hyper::Error>
where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    let driver = tokio::spawn(connection);
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    driver.abort();
    Ok((status, body))
}

/// The server's `{"error": …}`, or the status's reason.
fn error_text(status: StatusCode, bytes: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_owned())
}

/// Opens the agent's connection and proves it holds `private_key`.
///
/// # Errors
/// Unreachable, not the pinned server, refused (with the server's reason), or a protocol
/// violation.
pub async fn connect(
    url: &str,
    trust: Option<&Trust>,
    private_key: &StaticSecret,
    hostname: Option<&str>,
) -> Result<Session> {
    let target = Target::new(url, trust)?;
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&target, private_key, hostname))
        .await
        .map_err(|_| Error::Timeout {
            url: target.url.clone(),
        })?
}

async fn handshake(
    target: &Target,
    private_key: &StaticSecret,
    hostname: Option<&str>,
) -> Result<Session> {
    let (io, channel) = target.open_bound().await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| target.http(e))?;
    let driver = tokio::spawn(connection.with_upgrades());
    let request = target
        .request(Method::GET, AGENT_PATH)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, UPGRADE)
        .body(Full::new(Bytes::new()))
        .map_err(|e| Error::Protocol(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| target.http(e))?;
    let status = response.status();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        let bytes = response
            .into_body()
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
            .unwrap_or_default();
        driver.abort();
        return Err(Error::Status {
            url: target.url.clone(),
            status: status.as_u16(),
            message: error_text(status, &bytes),
        });
    }
    let upgraded = hyper::upgrade::on(response)
        .await
        .map_err(|e| target.http(e))?;
    // The connection task ends by itself once the upgrade is handed over.
    drop(driver);
    let (read, write) = tokio::io::split(TokioIo::new(upgraded));
    let mut reader = FrameReader::new(read, MAX_FRAME);
    let mut writer = FrameWriter::new(write);

    let public = PublicKey::from(private_key);
    writer
        .write(&AgentMessage::Hello(Hello {
            versions: PROTOCOL_VERSIONS.to_vec(),
            public_key: BASE64.encode(public.as_bytes()),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            hostname: hostname.map(str::to_owned),
        }))
        .await?;
    let challenge = match next(&mut reader).await? {
        ServerMessage::Challenge(challenge) => challenge,
        ServerMessage::Refused(r) => return Err(Error::Refused { reason: r.reason }),
        other => {
            return Err(Error::Protocol(format!(
                "expected a challenge, got {}",
                kind(&other)
            )))
        }
    };
    let transcript = transcript(&challenge, public.to_bytes(), channel)?;
    let mac = proof::prove(private_key, &transcript);
    writer
        .write(&AgentMessage::Proof(Proof {
            mac: BASE64.encode(mac),
        }))
        .await?;
    let first = match next(&mut reader).await? {
        ServerMessage::Refused(r) => return Err(Error::Refused { reason: r.reason }),
        ServerMessage::Challenge(_) => {
            return Err(Error::Protocol("a second challenge".into()));
        }
        first => first,
    };
    let writer = Writer {
        frames: Arc::new(Mutex::new(writer)),
    };
    Ok(Session {
        reader: Reader {
            frames: reader,
            first: Some(first),
            answer: writer.clone(),
        },
        writer,
        version: challenge.version,
    })
}

/// The next message that is not a keepalive or of an unknown type, during the handshake.
async fn next<R: AsyncRead + Unpin>(reader: &mut FrameReader<R>) -> Result<ServerMessage> {
    loop {
        match reader.read::<ServerMessage>().await? {
            None => return Err(Error::Closed),
            Some(ServerMessage::Keepalive | ServerMessage::Unknown) => {}
            Some(message) => return Ok(message),
        }
    }
}

fn kind(message: &ServerMessage) -> &'static str {
    match message {
        ServerMessage::Challenge(_) => "challenge",
        ServerMessage::Pending(_) => "pending",
        ServerMessage::View(_) => "view",
        ServerMessage::Revoked(_) => "revoked",
        ServerMessage::Refused(_) => "refused",
        ServerMessage::Keepalive => "keepalive",
        ServerMessage::Unknown => "an unknown message",
    }
}

fn transcript(
    challenge: &Challenge,
    agent_public: [u8; 32],
    channel: [u8; 32],
) -> Result<Transcript> {
    if !PROTOCOL_VERSIONS.contains(&challenge.version) {
        return Err(Error::Protocol(format!(
            "the server chose version {}, which this agent did not offer",
            challenge.version
        )));
    }
    let bytes32 = |what: &str, text: &str| -> Result<[u8; 32]> {
        BASE64
            .decode(text)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| {
                Error::Protocol(format!("the challenge's {what} is not 32 bytes of base64"))
            })
    };
    Ok(Transcript {
        version: challenge.version,
        nonce: bytes32("nonce", &challenge.nonce)?,
        agent_public,
        server_ephemeral: bytes32("server_ephemeral", &challenge.server_ephemeral)?,
        channel,
    })
}

/// A server URL, `https://HOST:PORT` or `http://HOST:PORT`, split into what a client needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl {
    /// `https`.
    pub https: bool,
    /// The host, without the brackets of an IPv6 address (for the TLS name and the connect).
    pub host: String,
    /// `HOST:PORT` as written (for the `Host` header and the connect).
    pub authority: String,
}

impl ServerUrl {
    /// Parses `url` (surrounding white space and a trailing `/` allowed); `None` when it is
    /// not a scheme, a host and a port, with no path.
    pub fn parse(url: &str) -> Option<ServerUrl> {
        let url = url.trim().trim_end_matches('/');
        let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else {
            (false, url.strip_prefix("http://")?)
        };
        if rest.contains('/') {
            return None;
        }
        match rest.rsplit_once(':') {
            Some((host, port)) if port.parse::<u16>().is_ok() && !host.is_empty() => {
                Some(ServerUrl {
                    https,
                    host: host
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_owned(),
                    authority: rest.to_owned(),
                })
            }
            _ => None,
        }
    }

    /// The host as TLS names the server (a DNS name or an IP address); `None` when it is
    /// neither.
    pub fn server_name(&self) -> Option<ServerName<'static>> {
        ServerName::try_from(self.host.clone()).ok()
    }
}

/// The byte stream under a request: TLS over TCP, or TCP.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// The upgraded connection.
type Stream = TokioIo<hyper::upgrade::Upgraded>;

/// A server to talk to: its URL, parsed, and the TLS configuration that pins it. The agent's
/// [`enrol`] and [`connect`] use it, and so does the administration CLI's client.
#[derive(Debug, Clone)]
pub struct Target {
    /// With https: the configuration that pins the server, and its name.
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    authority: String,
    url: String,
}

impl Target {
    /// A server at `url` (`https://HOST:PORT`, or `http://HOST:PORT`), trusted as `trust`
    /// says.
    ///
    /// # Errors
    /// [`Error::Url`] for a bad URL, [`Error::Unpinned`] for https without `trust`,
    /// [`Error::Tls`] for a bad CA file.
    pub fn new(url: &str, trust: Option<&Trust>) -> Result<Self> {
        let url = url.trim().trim_end_matches('/');
        let parsed = ServerUrl::parse(url).ok_or_else(|| Error::Url(url.to_owned()))?;
        let tls = if parsed.https {
            let config = tls::client_config(trust.ok_or(Error::Unpinned)?)?;
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
        })
    }

    /// The URL, as errors name the server.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// [`Error::Http`] for this server.
    pub fn http(&self, source: hyper::Error) -> Error {
        Error::Http {
            url: self.url.clone(),
            source,
        }
    }

    /// A request to `path` (below the server) with the `Host` header set.
    pub fn request(&self, method: Method, path: &str) -> hyper::http::request::Builder {
        Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.authority)
    }

    /// TCP, then TLS when the URL is https.
    ///
    /// # Errors
    /// [`Error::Unreachable`], or [`Error::Mismatch`] when the server is not the pinned one.
    pub async fn open(&self) -> Result<Box<dyn Io>> {
        let tcp = self.tcp().await?;
        Ok(match &self.tls {
            Some((config, name)) => Box::new(self.tls(config, name, tcp).await?),
            None => Box::new(tcp),
        })
    }

    /// [`Target::open`], with the TLS channel binding (zeros without TLS).
    async fn open_bound(&self) -> Result<(Box<dyn Io>, [u8; 32])> {
        let tcp = self.tcp().await?;
        let Some((config, name)) = &self.tls else {
            return Ok((Box::new(tcp), [0; 32]));
        };
        let stream = self.tls(config, name, tcp).await?;
        let mut channel = [0u8; 32];
        stream
            .get_ref()
            .1
            .export_keying_material(&mut channel, CHANNEL_EXPORTER_LABEL, None)
            .map_err(|e| Error::Protocol(format!("no TLS channel binding: {e}")))?;
        Ok((Box::new(stream), channel))
    }

    async fn tcp(&self) -> Result<TcpStream> {
        let tcp = TcpStream::connect(&self.authority)
            .await
            .map_err(|source| self.unreachable(source))?;
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }

    async fn tls(
        &self,
        config: &Arc<rustls::ClientConfig>,
        name: &ServerName<'static>,
        tcp: TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
        tls::connect(config, name, tcp)
            .await
            .map_err(|error| match error {
                tls::ConnectError::Mismatch(m) => Error::Mismatch {
                    url: self.url.clone(),
                    seen: m.seen,
                    pinned: m.pinned,
                },
                tls::ConnectError::Io(source) => self.unreachable(source),
            })
    }

    fn unreachable(&self, source: std::io::Error) -> Error {
        Error::Unreachable {
            url: self.url.clone(),
            source,
        }
    }
}

/// An authenticated connection to the server.
#[derive(Debug)]
pub struct Session {
    reader: Reader,
    writer: Writer,
    version: u32,
}

impl Session {
    /// The protocol version in use.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The next message from the server (see [`Reader::recv`]).
    ///
    /// # Errors
    /// As [`Reader::recv`].
    pub async fn recv(&mut self) -> Result<ServerMessage> {
        self.reader.recv().await
    }

    /// Sends a message to the server.
    ///
    /// # Errors
    /// The connection failed.
    pub async fn send(&mut self, message: &AgentMessage) -> Result<()> {
        self.writer.send(message).await
    }

    /// The two directions, to use from two tasks.
    pub fn split(self) -> (Reader, Writer) {
        (self.reader, self.writer)
    }
}

/// The receiving half.
#[derive(Debug)]
pub struct Reader {
    frames: FrameReader<ReadHalf<Stream>>,
    first: Option<ServerMessage>,
    answer: Writer,
}

impl Reader {
    /// The next message: [`ServerMessage::View`], [`ServerMessage::Pending`], or
    /// [`ServerMessage::Revoked`] (after which the server closes). Keepalives are answered
    /// here and messages of unknown types skipped; neither is returned.
    ///
    /// # Errors
    /// [`Error::Closed`] when the server closed the connection, [`Error::Silent`] when it said
    /// nothing for [`SILENCE`], [`Error::Refused`] when it refused us, or a failed
    /// connection.
    pub async fn recv(&mut self) -> Result<ServerMessage> {
        if let Some(first) = self.first.take() {
            return Ok(first);
        }
        loop {
            let read = tokio::time::timeout(SILENCE, self.frames.read::<ServerMessage>())
                .await
                .map_err(|_| Error::Silent)??;
            match read {
                None => return Err(Error::Closed),
                Some(ServerMessage::Keepalive) => {
                    self.answer.send(&AgentMessage::Keepalive).await?;
                }
                Some(ServerMessage::Unknown) => {
                    tracing::debug!("ignored a message of a type this agent does not know");
                }
                Some(ServerMessage::Refused(r)) => return Err(Error::Refused { reason: r.reason }),
                Some(ServerMessage::Challenge(_)) => {
                    return Err(Error::Protocol("a challenge after the handshake".into()))
                }
                Some(message) => return Ok(message),
            }
        }
    }
}

/// The sending half; clones share the connection.
#[derive(Debug, Clone)]
pub struct Writer {
    frames: Arc<Mutex<FrameWriter<WriteHalf<Stream>>>>,
}

impl Writer {
    /// Sends a message.
    ///
    /// # Errors
    /// The connection failed.
    pub async fn send(&self, message: &AgentMessage) -> Result<()> {
        self.frames.lock().await.write(message).await?;
        Ok(())
    }

    /// Closes the sending direction; the server then ends the connection.
    ///
    /// # Errors
    /// The connection failed.
    pub async fn close(&self) -> Result<()> {
        self.frames.lock().await.shutdown().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_are_a_scheme_a_host_and_a_port() {
        let parsed = ServerUrl::parse(" https://[fd00::1]:8443/ ").unwrap();
        assert!(parsed.https);
        assert_eq!(parsed.host, "fd00::1");
        assert_eq!(parsed.authority, "[fd00::1]:8443");
        let plain = ServerUrl::parse("http://127.0.0.1:80").unwrap();
        assert!(!plain.https);
        assert_eq!(plain.authority, "127.0.0.1:80");
        for bad in [
            "ftp://h:1",
            "https://h",
            "https://:8443",
            "https://h:99999",
            "https://h:8443/api",
            "h:8443",
            "",
        ] {
            assert_eq!(ServerUrl::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn urls_are_checked_before_anything_is_sent() {
        for bad in [
            "control:8443",
            "https://",
            "http://host",
            "http://host:x",
            "http://h:1/p",
        ] {
            assert!(
                matches!(Target::new(bad, None), Err(Error::Url(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            Target::new("https://host:8443", None),
            Err(Error::Unpinned)
        ));
        let target =
            Target::new("https://[::1]:8443/", Some(&Trust::Fingerprint([1; 32]))).unwrap();
        let name = target.tls.map(|(_, name)| name);
        assert_eq!(name, Some(ServerName::try_from("::1").unwrap()));
        assert_eq!(target.authority, "[::1]:8443");
    }

    #[test]
    fn a_challenge_that_is_not_32_bytes_or_another_version_is_a_violation() {
        let good = Challenge {
            version: 1,
            server_ephemeral: BASE64.encode([1u8; 32]),
            nonce: BASE64.encode([2u8; 32]),
        };
        assert!(transcript(&good, [0; 32], [0; 32]).is_ok());
        let short = Challenge {
            nonce: BASE64.encode([2u8; 31]),
            ..good.clone()
        };
        assert!(matches!(
            transcript(&short, [0; 32], [0; 32]),
            Err(Error::Protocol(_))
        ));
        let later = Challenge {
            version: 99,
            ..good
        };
        assert!(matches!(
            transcript(&later, [0; 32], [0; 32]),
            Err(Error::Protocol(_))
        ));
    }
}
