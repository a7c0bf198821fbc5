//! Pre-shared keys per pair of systems: the definition names a file (never the key); both
//! hosts keep it. Read like the private key (no symbolic link, a regular file of root or of
//! the agent's user that nobody else may read, one line of base64 of 32 bytes), kept in
//! buffers that are wiped when dropped, never logged.
//!
//! Fail closed: a peer whose key file is missing or bad gets no tunnel at all (it would
//! otherwise run without the key the administrator asked for); the other peers keep working,
//! and status says which peer was refused and why.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use zeroize::Zeroizing;

use crate::config::{decode_key, read_secret_file};
use crate::desired::DesiredPeer;

/// A pre-shared key, wiped when dropped.
pub type Psk = Zeroizing<[u8; 32]>;

/// The keys of the peers that have one, and the peers refused because theirs is unusable.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Keys by peer name.
    pub keys: BTreeMap<String, Psk>,
    /// Refused peers by name, with the reason (for status and logs; the key is not in it).
    pub refused: BTreeMap<String, String>,
}

/// Reads the key file of every peer that names one.
pub fn load(peers: &BTreeMap<String, DesiredPeer>) -> Loaded {
    let mut loaded = Loaded::default();
    for (name, peer) in peers {
        let Some(path) = &peer.preshared_key_file else {
            continue;
        };
        match read(path) {
            Ok(key) => {
                loaded.keys.insert(name.clone(), key);
            }
            Err(why) => {
                loaded.refused.insert(
                    name.clone(),
                    format!(
                        "peer {name} gets no tunnel: its pre-shared key file {} {why}",
                        path.display()
                    ),
                );
            }
        }
    }
    loaded
}

fn read(path: &Path) -> Result<Psk, String> {
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| format!("cannot be read ({e}); create it on both hosts with mode 0600"))?;
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != euid {
        return Err(format!(
            "belongs to uid {}, not to root or the agent's user: chown it",
            meta.uid()
        ));
    }
    let text = read_secret_file(path).map_err(|e| {
        let cause = std::error::Error::source(&e).map_or(String::new(), |c| format!(": {c}"));
        format!("is refused{cause}")
    })?;
    decode_key(&text).ok_or_else(|| {
        "does not hold a key (one line of base64 of 32 bytes, as `wg genpsk` prints)".to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn peer(file: Option<&Path>) -> DesiredPeer {
        DesiredPeer {
            public_key: String::new(),
            endpoint: None,
            allowed_ips: Default::default(),
            keepalive: None,
            preshared_key_file: file.map(Path::to_owned),
            inbound: Vec::new(),
            outbound: Vec::new(),
        }
    }

    #[test]
    fn a_bad_key_file_refuses_its_peer_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let write = |name: &str, text: &str, mode: u32| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        };
        let good = write(
            "good.psk",
            "YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE=\n",
            0o600,
        );
        let open = write(
            "open.psk",
            "YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE=\n",
            0o644,
        );
        let short = write("short.psk", "c2VjcmV0\n", 0o600);
        let peers = BTreeMap::from([
            ("a".to_owned(), peer(Some(&good))),
            ("b".to_owned(), peer(Some(&open))),
            ("c".to_owned(), peer(Some(&short))),
            ("d".to_owned(), peer(Some(&dir.join("missing.psk")))),
            ("e".to_owned(), peer(None)),
        ]);
        let loaded = load(&peers);
        assert_eq!(loaded.keys.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(*loaded.keys["a"], [b'a'; 32]);
        assert_eq!(loaded.refused.keys().collect::<Vec<_>>(), ["b", "c", "d"]);
        assert!(
            loaded.refused["b"].contains("644"),
            "{}",
            loaded.refused["b"]
        );
        assert!(loaded.refused["c"].contains("does not hold a key"));
        assert!(loaded.refused["d"].contains("cannot be read"));
        assert!(
            loaded.refused.values().all(|m| !m.contains("YWFh")),
            "a key in a message"
        );
    }
}
