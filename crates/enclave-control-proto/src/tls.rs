//! How a client trusts the control server: the SHA-256 fingerprint of its certificate,
//! pinned (what `enclave-control run` prints, and what travels with an enrolment), or a CA
//! file. The pinned verifier still checks the handshake's signatures with the pinned
//! certificate's key, so only the holder of that key can answer.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring, CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, OtherError, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::client::TlsStream;

/// Errors of the TLS set-up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The CA file cannot be read, or holds no certificate or a broken one.
    #[error(transparent)]
    File(#[from] FileError),
    /// rustls refused the configuration.
    #[error("the TLS configuration was refused")]
    Config(#[source] rustls::Error),
    /// A fingerprint that is not 32 hex bytes.
    #[error("{0:?} is not a SHA-256 fingerprint (64 hex digits, colons allowed)")]
    Fingerprint(String),
}

/// A TLS file (a CA, a certificate chain, a private key) that cannot be read or written, or
/// holds no usable PEM. The client's CA file and the server's certificate and key fail alike.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file (or its directory) could not be read or written.
    #[error("{}: {what}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What we were doing: `cannot read`, `cannot write`, ….
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no certificate or key, or a broken one.
    #[error("{}: {what}", .path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        what: String,
    },
}

impl FileError {
    /// [`FileError::Io`] for `path` while doing `what`.
    pub fn io(path: &Path, what: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_owned();
        move |source| FileError::Io { path, what, source }
    }

    /// [`FileError::Pem`] for `path`: `what` is wrong.
    pub fn pem(path: &Path, what: impl Into<String>) -> Self {
        FileError::Pem {
            path: path.to_owned(),
            what: what.into(),
        }
    }
}

/// The bytes of a TLS file.
///
/// # Errors
/// [`FileError::Io`] (`cannot read`).
pub fn read_file(path: &Path) -> std::result::Result<Vec<u8>, FileError> {
    std::fs::read(path).map_err(FileError::io(path, "cannot read"))
}

/// The result type of this module.
pub type Result<T> = std::result::Result<T, Error>;

/// The crypto provider we use everywhere (ring: no C toolchain beyond cc, well kept).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// `AB:CD:…` of a DER certificate (what `openssl x509 -fingerprint -sha256` prints).
pub fn fingerprint(der: &[u8]) -> String {
    hex_colons(&Sha256::digest(der))
}

fn hex_colons(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A fingerprint as 32 bytes, from hex with or without colons, any case, an optional
/// `sha256:` prefix.
///
/// # Errors
/// [`Error::Fingerprint`].
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32]> {
    let clean: String = text
        .trim()
        .trim_start_matches("sha256:")
        .trim_start_matches("SHA256:")
        .chars()
        .filter(|c| *c != ':')
        .collect();
    let bad = || Error::Fingerprint(text.to_owned());
    if clean.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(clean.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
            .map_err(|_| bad())?;
    }
    Ok(out)
}

/// How the client trusts the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The SHA-256 fingerprint of its certificate.
    Fingerprint([u8; 32]),
    /// A CA certificate file (PEM).
    Ca(PathBuf),
}

/// The server presented another certificate than the pinned one. Carried inside the rustls
/// error so the client can say so plainly ([`connect`] takes it out).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the server's certificate has fingerprint {seen}, not the pinned {pinned}")]
pub struct Mismatch {
    /// What the server presented, `AB:CD:…`.
    pub seen: String,
    /// What was pinned, `AB:CD:…`.
    pub pinned: String,
}

/// Why TLS to the server did not open.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The server presented another certificate than the pinned one.
    #[error(transparent)]
    Mismatch(Mismatch),
    /// The connection or the handshake failed for another reason.
    #[error("the TLS handshake failed")]
    Io(#[source] std::io::Error),
}

/// Opens TLS over `io` to the server `name`, trusting it as `config` ([`client_config`])
/// says.
///
/// # Errors
/// [`ConnectError::Mismatch`] when the server is not the pinned one, else
/// [`ConnectError::Io`].
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    config: &Arc<rustls::ClientConfig>,
    name: &ServerName<'static>,
    io: S,
) -> std::result::Result<TlsStream<S>, ConnectError> {
    tokio_rustls::TlsConnector::from(Arc::clone(config))
        .connect(name.clone(), io)
        .await
        .map_err(|error| match mismatch(&error) {
            Some(m) => ConnectError::Mismatch(m.clone()),
            None => ConnectError::Io(error),
        })
}

/// The [`Mismatch`] inside an error from a TLS handshake, if that is why it failed.
fn mismatch<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Mismatch> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(rustls::Error::InvalidCertificate(CertificateError::Other(other))) =
            error.downcast_ref::<rustls::Error>()
        {
            return other.0.downcast_ref::<Mismatch>();
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                cause = Some(inner);
                continue;
            }
        }
        cause = error.source();
    }
    None
}

/// Accepts exactly the server certificate whose SHA-256 is pinned; its handshake signatures
/// are still verified.
#[derive(Debug)]
struct Pinned {
    fingerprint: [u8; 32],
    /// The provider's signature algorithms, which check the handshake's signatures.
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let seen: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if seen == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(Mismatch {
                    seen: hex_colons(&seen),
                    pinned: hex_colons(&self.fingerprint),
                })),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The client's rustls configuration (HTTP/1.1).
///
/// # Errors
/// The CA file is unreadable or holds no certificate.
pub fn client_config(trust: &Trust) -> Result<Arc<rustls::ClientConfig>> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(Error::Config)?;
    let mut config = match trust {
        Trust::Fingerprint(fingerprint) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                fingerprint: *fingerprint,
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
        Trust::Ca(path) => {
            let bytes = read_file(path)?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&bytes) {
                let cert =
                    cert.map_err(|e| FileError::pem(path, format!("not a PEM certificate: {e}")))?;
                roots.add(cert).map_err(Error::Config)?;
            }
            if roots.is_empty() {
                return Err(FileError::pem(path, "holds no certificate").into());
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_in_the_forms_people_paste() {
        let colons = "AB:".repeat(31) + "AB";
        assert_eq!(parse_fingerprint(&colons).unwrap(), [0xab; 32]);
        assert_eq!(
            parse_fingerprint(&format!("sha256:{}", "ab".repeat(32))).unwrap(),
            [0xab; 32]
        );
        assert!(parse_fingerprint("AB:CD").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn a_mismatch_is_found_inside_the_io_error_tls_gives() {
        let rustls_error = rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(
            Arc::new(Mismatch {
                seen: "AA".into(),
                pinned: "BB".into(),
            }),
        )));
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, rustls_error);
        let found = mismatch(&io).expect("a mismatch");
        assert_eq!(found.seen, "AA");
        let other = std::io::Error::new(std::io::ErrorKind::InvalidData, "something else");
        assert!(mismatch(&other).is_none());
    }

    #[test]
    fn a_ca_file_that_is_missing_or_holds_no_certificate_is_named_in_the_error() {
        let dir = std::env::temp_dir().join(format!("enclave-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let error = client_config(&Trust::Ca(missing.clone())).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("{}: cannot read", missing.display())
        );
        assert!(std::error::Error::source(&error).is_some_and(|s| s.is::<std::io::Error>()));
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no PEM here\n").unwrap();
        let error = client_config(&Trust::Ca(empty.clone())).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("{}: holds no certificate", empty.display())
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
