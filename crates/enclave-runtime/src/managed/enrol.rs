//! Enrolment: the key pair is made here, on the host; only the public key goes to the server,
//! with the enrolment key; the private key is written (0600) only once the server has
//! accepted it, so a refused enrolment changes nothing on the host.
//!
//! `enclave-agent enrol` uses this, and so does an unattended first start
//! ([`enrol_if_needed`], `[control] enrolment_key_file`).

use std::path::{Path, PathBuf};

use enclave_control_proto::{Enrolled, Trust};
use enclave_wg::PrivateKey;
use zeroize::Zeroizing;

use crate::config::AgentConfig;

/// What can go wrong at enrolment.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A private key is there already.
    #[error("{} exists already: this host has a key (enrolled before?); keep it, or pass --replace-key to make a new one (the old key then stops working on the server)", path.display())]
    KeyExists {
        /// The key file.
        path: PathBuf,
    },
    /// The key's directory cannot hold a private key.
    #[error("cannot keep a private key in {}", dir.display())]
    KeyDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: enclave_statefile::Error,
    },
    /// Writing the key failed after the server accepted the enrolment.
    #[error("the server enrolled this system, but its private key could not be written to {}: fix that and enrol again with a new enrolment key", path.display())]
    WriteKey {
        /// The key file.
        path: PathBuf,
        /// Why.
        #[source]
        source: enclave_statefile::Error,
    },
    /// The enrolment key file cannot be read.
    #[error("cannot use the enrolment key file")]
    EnrolmentKey(#[source] crate::Error),
    /// The server refused or could not be reached.
    #[error("enrolment with {server} failed")]
    Server {
        /// The server.
        server: String,
        /// Why (the server's reason for a wrong, expired or used-up key).
        #[source]
        source: enclave_control_proto::Error,
    },
    /// A managed configuration without its private key, and no enrolment key to make one.
    #[error("{} does not exist: this host is not enrolled yet; run `enclave-agent enrol --server {server} --key …` (`enclave-gw enrol` on a gateway), or give [control] enrolment_key_file for an unattended first start", path.display())]
    NotEnrolled {
        /// The private key file.
        path: PathBuf,
        /// The server.
        server: String,
    },
    /// The configuration pins no server identity.
    #[error("[control] pins no server identity (fingerprint or ca_file)")]
    Unpinned,
    /// A tokio runtime could not be started.
    #[error("cannot start the enrolment's runtime")]
    Runtime(#[source] std::io::Error),
}

/// This host's name, as the kernel has it.
pub fn hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// The directory a key file goes into.
fn key_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// Judges `dir` as [`enclave_statefile::ensure_private_dir`] does when it exists, without
/// making it when it does not (that waits until there is something to write in it).
///
/// # Errors
/// The directory exists and is not private.
pub fn check_dir_if_present(dir: &Path, mode: u32) -> Result<(), enclave_statefile::Error> {
    if std::fs::symlink_metadata(dir).is_ok() {
        enclave_statefile::ensure_private_dir(dir, mode)
    } else {
        Ok(())
    }
}

/// Checks, before anything is sent, that a new key can be written at `path`: its directory,
/// if it exists, is private, and no key is there unless `replace`. Nothing is made.
///
/// # Errors
/// [`Error::KeyExists`] or [`Error::KeyDir`].
pub fn check_key_path(path: &Path, replace: bool) -> Result<(), Error> {
    let dir = key_dir(path);
    check_dir_if_present(dir, 0o700).map_err(|source| Error::KeyDir {
        dir: dir.to_owned(),
        source,
    })?;
    if !replace && std::fs::symlink_metadata(path).is_ok() {
        return Err(Error::KeyExists {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// Makes a key pair and enrols its public key with `enrolment_key`. Nothing is written.
///
/// # Errors
/// [`Error::Server`] with the server's reason.
pub async fn enrol(
    server: &str,
    trust: &Trust,
    enrolment_key: &str,
    hostname: Option<&str>,
) -> Result<(PrivateKey, Enrolled), Error> {
    let key = enclave_wg::keys::generate_private_key(rand_core::UnwrapErr(getrandom::SysRng));
    let public_key = key.public_key().to_base64();
    let enrolled = enclave_control_proto::enrol(
        server,
        Some(trust),
        enrolment_key.trim(),
        &public_key,
        hostname,
    )
    .await
    .map_err(|source| Error::Server {
        server: server.to_owned(),
        source,
    })?;
    Ok((key, enrolled))
}

/// [`enrol`] on a runtime of its own, for commands that have none.
///
/// # Errors
/// As [`enrol`], and [`Error::Runtime`].
pub fn enrol_blocking(
    server: &str,
    trust: &Trust,
    enrolment_key: &str,
    hostname: Option<&str>,
) -> Result<(PrivateKey, Enrolled), Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?
        .block_on(enrol(server, trust, enrolment_key, hostname))
}

/// Writes `key` at `path`, mode 0600, atomically (replacing a key there); its directory is
/// made (0700) when missing.
///
/// # Errors
/// [`Error::WriteKey`].
pub fn write_private_key(path: &Path, key: &PrivateKey) -> Result<(), Error> {
    let text = Zeroizing::new(format!("{}\n", key.to_base64()));
    let name = path.file_name().unwrap_or(path.as_os_str());
    let dir = key_dir(path);
    enclave_statefile::ensure_private_dir(dir, 0o700)
        .and_then(|()| enclave_statefile::write_atomic(dir, name, text.as_bytes(), 0o600))
        .map_err(|source| Error::WriteKey {
            path: path.to_owned(),
            source,
        })
}

/// Unattended enrolment on first start: when `config` is a managed one with an
/// `enrolment_key_file` and its `private_key_file` does not exist yet, makes the key, enrols
/// and writes the key. Returns what the server answered, or `None` when there was nothing
/// to do. Blocking (it runs its own small runtime): call it before the agent starts.
///
/// # Errors
/// As [`enrol`], an unreadable enrolment key file, and [`Error::NotEnrolled`] for a managed
/// configuration with neither a private key nor an enrolment key file.
pub fn enrol_if_needed(config: &AgentConfig) -> Result<Option<Enrolled>, Error> {
    let Some(control) = config.control() else {
        return Ok(None);
    };
    if std::fs::symlink_metadata(&config.private_key_file).is_ok() {
        return Ok(None);
    }
    let Some(key_file) = &control.enrolment_key_file else {
        return Err(Error::NotEnrolled {
            path: config.private_key_file.clone(),
            server: control.server.clone(),
        });
    };
    check_key_path(&config.private_key_file, false)?;
    let enrolment_key = crate::config::read_secret_file(key_file).map_err(Error::EnrolmentKey)?;
    let trust = super::trust(control).ok_or(Error::Unpinned)?;
    let hostname = control.hostname.clone().or_else(hostname);
    tracing::info!(server = %control.server, "not enrolled yet: enrolling with the enrolment key file");
    let (key, enrolled) =
        enrol_blocking(&control.server, &trust, &enrolment_key, hostname.as_deref())?;
    write_private_key(&config.private_key_file, &key)?;
    tracing::info!(
        system = %enrolled.system,
        address = %enrolled.address,
        approval = %enrolled.approval,
        "enrolled"
    );
    Ok(Some(enrolled))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_key_is_kept_unless_replacing_is_asked_for() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("enrol");
        let path = dir.join("keys").join("private.key");
        check_key_path(&path, false).unwrap();
        assert!(!dir.exists(), "checking made a directory");
        let key = enclave_wg::keys::generate_private_key(rand_core::UnwrapErr(getrandom::SysRng));
        write_private_key(&path, &key).unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let read = crate::config::read_private_key(&path).unwrap();
        assert_eq!(read.as_str(), key.to_base64());
        let err = check_key_path(&path, false).unwrap_err();
        assert!(err.to_string().contains("--replace-key"), "{err}");
        check_key_path(&path, true).unwrap();
    }

    #[test]
    fn a_managed_host_without_a_key_is_told_to_enrol() {
        let config = AgentConfig::parse(&format!(
            "private_key_file = \"/nonexistent/enclave/private.key\"\n[control]\nserver = \"https://h:1\"\nfingerprint = \"{}\"\n",
            "ab".repeat(32)
        ))
        .unwrap();
        let err = enrol_if_needed(&config).unwrap_err();
        assert!(
            err.to_string()
                .contains("not enrolled yet; run `enclave-agent enrol --server https://h:1"),
            "{err}"
        );
        // File mode has nothing to do with enrolment.
        let file_mode =
            AgentConfig::parse("private_key_file = \"/nonexistent/k\"\nnetwork_file = \"n\"\n")
                .unwrap();
        assert!(enrol_if_needed(&file_mode).unwrap().is_none());
    }
}
