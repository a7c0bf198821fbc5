//! The last good view on disk: what a managed agent runs on while its control server cannot be
//! reached, across restarts too.
//!
//! One JSON file, `STATE_DIR/INTERFACE.view.json`, mode 0600 in a directory only we may change,
//! replaced atomically (`enclave-statefile`): a crash leaves the old view or the new one. It
//! names the public key it is for and the server it came from, so a file copied from another
//! system, or left by an earlier enrolment, is refused instead of applied; so is a file that
//! is not ours to trust (a symbolic link, readable by others, foreign owner) or not whole.

use std::io::Read as _;
use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use enclave_policy::View;
use serde::{Deserialize, Serialize};

/// The version of the file's layout.
const FORMAT: u32 = 1;
/// The largest file read: far above any view, far below trouble.
const MAX_LEN: u64 = 64 * 1024 * 1024;

/// A view as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastGood {
    /// The server's serial of this view.
    pub serial: u64,
    /// The server it came from.
    pub server: String,
    /// The view.
    pub view: View,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    format: u32,
    public_key: String,
    server: String,
    serial: u64,
    view: View,
}

/// What can go wrong with the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The directory or file could not be written safely.
    #[error("cannot keep the last good view in {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: enclave_statefile::Error,
    },
    /// The file could not be read.
    #[error("cannot read the last good view {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not one to trust.
    #[error("the last good view {} is not used: {why}", path.display())]
    Untrusted {
        /// The file.
        path: PathBuf,
        /// Why (mode, owner, kind, size).
        why: String,
    },
    /// The file is not a whole view of ours.
    #[error("the last good view {} is not used: it is damaged ({why})", path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What the reader said.
        why: String,
    },
    /// The file holds another system's view.
    #[error("the last good view {} is not used: it is for another key than this system's (left from an earlier enrolment, or copied from another host)", path.display())]
    Foreign {
        /// The file.
        path: PathBuf,
    },
}

fn dir_and_name(path: &Path) -> (&Path, &std::ffi::OsStr) {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    (dir, path.file_name().unwrap_or(path.as_os_str()))
}

/// Writes `last` as the last good view of the system with `public_key`, atomically, mode 0600;
/// the directory is made (0700) when missing.
pub fn save(path: &Path, public_key: &str, last: &LastGood) -> Result<(), Error> {
    let write = |source| Error::Write {
        path: path.to_owned(),
        source,
    };
    let (dir, name) = dir_and_name(path);
    enclave_statefile::ensure_private_dir(dir, 0o700).map_err(write)?;
    let file = File {
        format: FORMAT,
        public_key: public_key.to_owned(),
        server: last.server.clone(),
        serial: last.serial,
        view: last.view.clone(),
    };
    // A View always serialises (string keys, plain values).
    let bytes = serde_json::to_vec(&file).unwrap_or_default();
    enclave_statefile::write_atomic(dir, name, &bytes, 0o600).map_err(write)
}

/// Reads the last good view of the system with `public_key`: `None` when there is none.
pub fn load(path: &Path, public_key: &str) -> Result<Option<LastGood>, Error> {
    let untrusted = |why: String| Error::Untrusted {
        path: path.to_owned(),
        why,
    };
    let read = |source| Error::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) if err.raw_os_error() == Some(libc::ELOOP) => {
            return Err(untrusted("it is a symbolic link".to_owned()))
        }
        Err(err) => return Err(read(err)),
    };
    let meta = file.metadata().map_err(read)?;
    if !meta.is_file() {
        return Err(untrusted("it is not a regular file".to_owned()));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid && meta.uid() != 0 {
        return Err(untrusted(format!(
            "it is owned by uid {}, not by this agent",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(untrusted(format!(
            "its mode is {:04o}: group or others may read or change it",
            meta.mode() & 0o7777
        )));
    }
    if meta.len() > MAX_LEN {
        return Err(untrusted(format!("it holds {} bytes", meta.len())));
    }
    let mut bytes = Vec::new();
    (&mut file)
        .take(MAX_LEN + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    let stored: File = serde_json::from_slice(&bytes).map_err(|e| Error::Damaged {
        path: path.to_owned(),
        why: e.to_string(),
    })?;
    if stored.format != FORMAT {
        return Err(Error::Damaged {
            path: path.to_owned(),
            why: format!(
                "format {} (this agent reads format {FORMAT})",
                stored.format
            ),
        });
    }
    if stored.public_key != public_key {
        return Err(Error::Foreign {
            path: path.to_owned(),
        });
    }
    Ok(Some(LastGood {
        serial: stored.serial,
        server: stored.server,
        view: stored.view,
    }))
}

/// Removes the last good view (a revoked system must not come back on it).
pub fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    const KEY: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
    const OTHER: &str = "CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=";

    fn view() -> View {
        let text = "[network]\noverlay = \"100.64.0.0/10\"\n\n[[system]]\nname = \"laptop\"\npublic_key = \"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\"\naddress = \"100.64.0.11\"\ntags = [\"users\"]\n\n[[system]]\nname = \"gw\"\npublic_key = \"CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=\"\naddress = \"100.64.0.2\"\nendpoint = \"10.10.0.1:51820\"\ntags = [\"servers\"]\n\n[[direct_policy]]\nname = \"all\"\nsenders = [\"users\"]\nreceivers = [\"servers\"]\nacl = [{ protocol = \"any\" }]\n";
        let loaded = enclave_policy::load("test.toml", text).unwrap();
        enclave_policy::compile(&loaded.network, "laptop").unwrap()
    }

    /// A directory for the test's files, removed with it.
    fn scratch() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn last() -> LastGood {
        LastGood {
            serial: 42,
            server: "https://control.example.net:8443".to_owned(),
            view: view(),
        }
    }

    #[test]
    fn a_saved_view_reads_back_the_same_and_private() {
        let dir = scratch();
        let path = dir.path().join("state").join("enclave0.view.json");
        assert_eq!(load(&path, KEY).unwrap(), None, "nothing saved yet");
        save(&path, KEY, &last()).unwrap();
        assert_eq!(load(&path, KEY).unwrap(), Some(last()));
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let dir_mode = std::fs::metadata(path.parent().unwrap()).unwrap();
        assert_eq!(dir_mode.permissions().mode() & 0o777, 0o700);
        // A newer one replaces it.
        let mut newer = last();
        newer.serial = 43;
        newer.view.peers.clear();
        save(&path, KEY, &newer).unwrap();
        assert_eq!(load(&path, KEY).unwrap(), Some(newer));
        remove(&path).unwrap();
        assert_eq!(load(&path, KEY).unwrap(), None);
        remove(&path).unwrap();
    }

    #[test]
    fn a_damaged_file_is_refused() {
        let dir = scratch();
        let path = dir.path().join("enclave0.view.json");
        save(&path, KEY, &last()).unwrap();
        let whole = std::fs::read(&path).unwrap();
        // Cut short, as a disk that lied about fsync might leave it.
        std::fs::write(&path, &whole[..whole.len() / 2]).unwrap();
        let err = load(&path, KEY).unwrap_err();
        assert!(matches!(err, Error::Damaged { .. }), "{err}");
        assert!(err.to_string().contains("damaged"), "{err}");
        // Not JSON at all.
        std::fs::write(&path, b"\x00\x01garbage").unwrap();
        assert!(matches!(load(&path, KEY), Err(Error::Damaged { .. })));
        // Another layout version.
        let text = String::from_utf8(whole)
            .unwrap()
            .replace("\"format\":1", "\"format\":9");
        std::fs::write(&path, text).unwrap();
        let err = load(&path, KEY).unwrap_err();
        assert!(err.to_string().contains("format 9"), "{err}");
    }

    #[test]
    fn another_systems_view_is_refused() {
        let dir = scratch();
        let path = dir.path().join("enclave0.view.json");
        save(&path, OTHER, &last()).unwrap();
        let err = load(&path, KEY).unwrap_err();
        assert!(matches!(err, Error::Foreign { .. }), "{err}");
        // The same file is good for its own key (the refusal is about the key).
        assert_eq!(load(&path, OTHER).unwrap(), Some(last()));
    }

    #[test]
    fn a_file_others_may_change_or_a_link_is_refused() {
        let dir = scratch();
        let path = dir.path().join("enclave0.view.json");
        save(&path, KEY, &last()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load(&path, KEY).unwrap_err();
        assert!(err.to_string().contains("0644"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("link.view.json");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let err = load(&link, KEY).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(load(&path, KEY).unwrap().is_some());
    }
}
