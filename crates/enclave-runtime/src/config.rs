//! The agent's own configuration file (`/etc/enclave/agent.toml` by default): where its key and
//! the network definition are, and how this host runs the overlay. What the network allows is
//! in the network definition, not here.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::{Error, Result};

/// The default path of the agent configuration.
pub const DEFAULT_PATH: &str = "/etc/enclave/agent.toml";

/// Which data plane carries the tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DataplaneBackend {
    /// Our own userspace WireGuard, with the per-peer packet filter in the data path.
    #[default]
    Userspace,
    /// An existing WireGuard implementation (the kernel module, or a userspace one such as
    /// wireguard-go) driven through its configuration interface; filtering is then done by
    /// nftables.
    External,
}

/// Which NAT backend a gateway uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum NatBackend {
    /// nftables where it works, iptables otherwise.
    #[default]
    Auto,
    /// nftables (a table of our own).
    Nftables,
    /// iptables (an `ENCLAVE` chain in the nat table), as the seed guide shows.
    Iptables,
}

/// The agent configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// The file with this system's private key (base64, as `wg genkey` and `enclave-agent
    /// keygen` write it). It must not be readable by group or others.
    pub private_key_file: PathBuf,
    /// The network definition shared by every agent.
    pub network_file: PathBuf,
    /// The tunnel interface's name.
    #[serde(default = "default_interface")]
    pub interface: String,
    /// The UDP port of the tunnel.
    #[serde(default = "default_listen_port")]
    pub listen_port: u16,
    /// Where the control socket (and, for our data plane, the UAPI socket) live.
    #[serde(default = "default_runtime_dir")]
    pub runtime_dir: PathBuf,
    /// The data plane.
    #[serde(default)]
    pub dataplane: DataplaneBackend,
    /// The directory of the WireGuard UAPI sockets (`<dir>/<interface>.sock`).
    #[serde(default = "default_uapi_dir")]
    pub uapi_dir: PathBuf,
    /// The NAT backend of a gateway.
    #[serde(default)]
    pub nat: NatBackend,
    /// The firewall mark of the tunnel's own UDP packets and the routing table of a default
    /// route through a gateway.
    #[serde(default = "default_fwmark")]
    pub fwmark: u32,
}

fn default_interface() -> String {
    "enclave0".to_owned()
}
fn default_listen_port() -> u16 {
    51820
}
fn default_runtime_dir() -> PathBuf {
    PathBuf::from("/run/enclave")
}
fn default_uapi_dir() -> PathBuf {
    PathBuf::from("/var/run/wireguard")
}
fn default_fwmark() -> u32 {
    0x4543
}

impl AgentConfig {
    /// Reads and checks the configuration at `path`. Relative paths inside it are taken from the
    /// file's directory.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Self::parse(&text).map_err(|message| Error::Config {
            path: path.to_owned(),
            message,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for file in [&mut config.private_key_file, &mut config.network_file] {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        }
        Ok(config)
    }

    /// Parses the text of a configuration; the error is the reader's message with its position.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let config: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        let bad_name = config.interface.is_empty()
            || config.interface.len() > 15
            || !config
                .interface
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if bad_name {
            return Err(format!(
                "interface {:?}: a Linux interface name has 1 to 15 letters, digits, '-', '_' or '.'",
                config.interface
            ));
        }
        // The mark doubles as the routing table of a default route and, minus one, as its
        // rules' priority: it must leave the kernel's own tables (253-255) and rules
        // (32766, 32767) alone.
        if config.fwmark < 2 || (253..=256).contains(&config.fwmark) || config.fwmark >= 32766 {
            return Err(format!(
                "fwmark {}: it is also the default route's routing table and rule priority, so it must be 2 to 32765 and not 253 to 256",
                config.fwmark
            ));
        }
        config.check_combinations()?;
        Ok(config)
    }

    /// Refuses settings that cannot work together, so that a gateway never starts half
    /// configured (say, forwarding with no filter because its rules were refused at apply time).
    fn check_combinations(&self) -> std::result::Result<(), String> {
        if self.dataplane == DataplaneBackend::External {
            if self.nat == NatBackend::Iptables {
                return Err(
                    "dataplane = \"external\" cannot be used with nat = \"iptables\": an external WireGuard does not filter, so the agent filters the tunnel's traffic with nftables, which the iptables backend cannot do; set nat = \"nftables\" (or leave nat out), or keep iptables with dataplane = \"userspace\"".to_owned(),
                );
            }
            if self.uapi_dir != default_uapi_dir() {
                return Err(format!(
                    "uapi_dir = {:?} cannot be used with dataplane = \"external\": an external WireGuard keeps its UAPI socket in {}; leave uapi_dir out, or use dataplane = \"userspace\" to serve the UAPI socket elsewhere",
                    self.uapi_dir.display().to_string(),
                    default_uapi_dir().display()
                ));
            }
        }
        Ok(())
    }

    /// The path of the control socket that `enclave-agent status` talks to.
    pub fn control_socket(&self) -> PathBuf {
        self.runtime_dir
            .join(format!("{}.control.sock", self.interface))
    }
}

/// Reads a private key file, refusing one that group or others may read. The text is wiped
/// from memory when the returned value is dropped.
pub fn read_private_key(path: &Path) -> Result<Zeroizing<String>> {
    read_secret_file(path)
}

/// Reads a secret file (a private or pre-shared key) through `enclave-statefile`: not through
/// a symbolic link, a regular file that group and others cannot read at all (judged on the
/// file opened, not on the path); trimmed, and wiped from memory when dropped.
pub fn read_secret_file(path: &Path) -> Result<Zeroizing<String>> {
    let bytes = enclave_statefile::read_secret(path).map_err(|source| Error::Secret {
        path: path.to_owned(),
        source,
    })?;
    let text = std::str::from_utf8(&bytes).map_err(|_| Error::SecretText {
        path: path.to_owned(),
    })?;
    let trimmed = text.trim();
    let mut out = Zeroizing::new(String::with_capacity(trimmed.len()));
    out.push_str(trimmed);
    Ok(out)
}

/// Decodes a 32-byte key from its base64 text into a buffer that is wiped when dropped.
pub fn decode_key(text: &str) -> Option<Zeroizing<[u8; 32]>> {
    use base64::Engine as _;
    // decode_slice wants room for its estimate (33 bytes for 44 characters).
    let mut buffer = Zeroizing::new([0u8; 48]);
    let len = base64::engine::general_purpose::STANDARD
        .decode_slice(text.trim(), &mut buffer[..])
        .ok()?;
    if len != 32 {
        return None;
    }
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&buffer[..32]);
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn defaults_fill_what_is_left_out() {
        let config = AgentConfig::parse(
            "private_key_file = \"key\"\nnetwork_file = \"/etc/enclave/network.toml\"\n",
        )
        .unwrap();
        assert_eq!(config.interface, "enclave0");
        assert_eq!(config.listen_port, 51820);
        assert_eq!(config.dataplane, DataplaneBackend::Userspace);
        assert_eq!(config.nat, NatBackend::Auto);
        assert_eq!(
            config.control_socket(),
            Path::new("/run/enclave/enclave0.control.sock")
        );
    }

    #[test]
    fn unknown_fields_and_bad_values_are_refused_with_their_position() {
        let err =
            AgentConfig::parse("private_key_file = \"k\"\nnetwork_file = \"n\"\nlisten_prot = 1\n")
                .unwrap_err();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("unknown field `listen_prot`"), "{err}");
        let err = AgentConfig::parse(
            "private_key_file = \"k\"\nnetwork_file = \"n\"\ninterface = \"much-too-long-name0\"\n",
        )
        .unwrap_err();
        assert!(err.contains("1 to 15"), "{err}");
        let err =
            AgentConfig::parse("private_key_file = \"k\"\nnetwork_file = \"n\"\nfwmark = 32766\n")
                .unwrap_err();
        assert!(err.contains("2 to 32765"), "{err}");
        let err =
            AgentConfig::parse("private_key_file = \"k\"\nnetwork_file = \"n\"\nnat = \"pf\"\n")
                .unwrap_err();
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn impossible_combinations_are_refused_when_loaded() {
        let parse = |extra: &str| {
            AgentConfig::parse(&format!(
                "private_key_file = \"k\"\nnetwork_file = \"n\"\n{extra}\n"
            ))
        };
        assert_eq!(
            parse("dataplane = \"external\"\nnat = \"iptables\"").unwrap_err(),
            "dataplane = \"external\" cannot be used with nat = \"iptables\": an external WireGuard does not filter, so the agent filters the tunnel's traffic with nftables, which the iptables backend cannot do; set nat = \"nftables\" (or leave nat out), or keep iptables with dataplane = \"userspace\""
        );
        assert_eq!(
            parse("dataplane = \"external\"\nuapi_dir = \"/run/elsewhere\"").unwrap_err(),
            "uapi_dir = \"/run/elsewhere\" cannot be used with dataplane = \"external\": an external WireGuard keeps its UAPI socket in /var/run/wireguard; leave uapi_dir out, or use dataplane = \"userspace\" to serve the UAPI socket elsewhere"
        );
        // Each half alone is fine, and so is the external data plane with nftables.
        for ok in [
            "dataplane = \"external\"",
            "dataplane = \"external\"\nnat = \"nftables\"",
            "dataplane = \"external\"\nuapi_dir = \"/var/run/wireguard\"",
            "nat = \"iptables\"",
            "uapi_dir = \"/run/elsewhere\"",
        ] {
            assert!(parse(ok).is_ok(), "{ok} was refused");
        }
    }

    #[test]
    fn a_readable_key_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("enclave-key-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("private.key");
        std::fs::write(&path, "c2VjcmV0\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_private_key(&path).unwrap_err();
        let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
        assert!(chain.contains("644"), "{chain}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_private_key(&path).unwrap().as_str(), "c2VjcmV0");
        // Not through a symbolic link.
        let link = dir.join("link.key");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(
            read_private_key(&link).is_err(),
            "a symbolic link was followed"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn keys_decode_from_base64_of_32_bytes_only() {
        let key = decode_key("YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE=\n").unwrap();
        assert_eq!(*key, [b'a'; 32]);
        assert!(decode_key("c2VjcmV0").is_none(), "6 bytes taken as a key");
        assert!(decode_key("not base64!").is_none());
        assert!(
            decode_key("YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYQ==").is_none(),
            "33 bytes taken as a key"
        );
    }
}
