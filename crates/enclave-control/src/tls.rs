//! The server's TLS identity: a certificate given by the administrator, or a self-signed one
//! made on first start and kept (so its fingerprint stays the same across restarts). The
//! client side (pinning the server by the SHA-256 fingerprint of its certificate, or a CA
//! file) is the agents' protocol crate's, [`enclave_control_proto::tls`], re-exported here.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::Arc;

pub use enclave_control_proto::tls::{
    client_config, connect, fingerprint, parse_fingerprint, provider, read_file, ConnectError,
    FileError, Mismatch, Trust,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Errors of the TLS set-up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written, or holds no usable PEM.
    #[error(transparent)]
    File(#[from] FileError),
    /// Making the self-signed certificate failed.
    #[error("could not make a self-signed certificate")]
    Generate(#[source] rcgen::Error),
    /// rustls refused the certificate and key.
    #[error("the certificate and key do not make a TLS configuration")]
    Config(#[source] rustls::Error),
}

/// The result type of this module.
pub type Result<T> = std::result::Result<T, Error>;

/// A certificate chain and its key, with the leaf's fingerprint.
#[derive(Debug)]
pub struct Identity {
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
    /// SHA-256 of the leaf, as `AB:CD:…` (what `openssl x509 -fingerprint -sha256` prints).
    pub fingerprint: String,
    /// Whether it was made just now.
    pub generated: bool,
}

/// Loads a PEM certificate chain and key.
///
/// # Errors
/// A file is missing or holds no usable PEM.
pub fn load(cert: &Path, key: &Path) -> Result<Identity> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read_file(cert)?)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| FileError::pem(cert, format!("not a PEM certificate chain: {e}")))?;
    let leaf = chain
        .first()
        .ok_or_else(|| FileError::pem(cert, "holds no certificate"))?;
    let fingerprint = fingerprint(leaf);
    let key = PrivateKeyDer::from_pem_slice(&read_file(key)?)
        .map_err(|e| FileError::pem(key, format!("not a PEM private key: {e}")))?;
    Ok(Identity {
        chain,
        key,
        fingerprint,
        generated: false,
    })
}

/// The certificate in `dir` (`tls.crt`, `tls.key`), made self-signed for `names` if missing.
/// The key file is written with mode 0600.
///
/// # Errors
/// The directory cannot be written, or the files are broken.
pub fn self_signed(dir: &Path, names: &[String]) -> Result<Identity> {
    let cert_path = dir.join("tls.crt");
    let key_path = dir.join("tls.key");
    if cert_path.exists() && key_path.exists() {
        return load(&cert_path, &key_path);
    }
    let made = rcgen::generate_simple_self_signed(names.to_vec()).map_err(Error::Generate)?;
    fs::create_dir_all(dir).map_err(FileError::io(dir, "cannot create the directory"))?;
    write_file(
        &key_path,
        made.signing_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_file(&cert_path, made.cert.pem().as_bytes(), 0o644)?;
    let mut identity = load(&cert_path, &key_path)?;
    identity.generated = true;
    Ok(identity)
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let file_error = |source| Error::from(FileError::io(path, "cannot write")(source));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(file_error)?;
    file.write_all(bytes).map_err(file_error)?;
    file.sync_all().map_err(file_error)
}

/// The server's rustls configuration (HTTP/1.1).
///
/// # Errors
/// rustls refused the certificate or key.
pub fn server_config(identity: Identity) -> Result<Arc<rustls::ServerConfig>> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(Error::Config)?
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)
        .map_err(Error::Config)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_self_signed_certificate_is_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("enclave-tls-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let first = self_signed(&dir, &["localhost".into()]).unwrap();
        assert!(first.generated);
        let mode = fs::metadata(dir.join("tls.key")).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let again = self_signed(&dir, &["localhost".into()]).unwrap();
        assert!(!again.generated);
        assert_eq!(first.fingerprint, again.fingerprint);
        assert_eq!(first.fingerprint, fingerprint(&again.chain[0]));
        server_config(again).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }
}
