//! The agent's own configuration file (`/etc/enclave/agent.toml` by default): where its key and
//! the network definition are, and how this host runs the overlay. What the network allows is
//! in the network definition, not here.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

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
        Ok(config)
    }

    /// The path of the control socket that `enclave-agent status` talks to.
    pub fn control_socket(&self) -> PathBuf {
        self.runtime_dir
            .join(format!("{}.control.sock", self.interface))
    }
}

/// Reads a private key file, refusing one that group or others may read.
pub fn read_private_key(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::KeyPermissions {
            path: path.to_owned(),
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    Ok(text.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn a_readable_key_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("enclave-key-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("private.key");
        std::fs::write(&path, "c2VjcmV0\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_private_key(&path).unwrap_err();
        assert!(err.to_string().contains("0644"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_private_key(&path).unwrap(), "c2VjcmV0");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
