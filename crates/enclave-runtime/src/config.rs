//! The agent's own configuration file (`/etc/enclave/agent.toml` by default): where its key and
//! its view come from (a network-definition file, or a control server), and how this host runs
//! the overlay. What the network allows is in the network definition or on the server, not here.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use zeroize::Zeroizing;

use crate::{Error, Result};

/// The default path of the agent configuration.
pub const DEFAULT_PATH: &str = "/etc/enclave/agent.toml";

/// The default directory of a managed agent's state (its last good view).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/enclave";

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

/// Where the agent's view comes from: exactly one of the two.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ViewSource {
    /// File mode: the network definition shared by every agent (`network_file`).
    File(PathBuf),
    /// Managed mode: a control server (the `[control]` section).
    Control(ControlConfig),
}

/// The `[control]` section: the control server of a managed agent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlConfig {
    /// The server, `https://HOST:PORT`.
    pub server: String,
    /// The SHA-256 fingerprint of the server's certificate (64 hex digits, colons allowed), as
    /// `enclave-control run` prints it. Exactly one of this and `ca_file`.
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// A PEM file of the CA that signed the server's certificate, instead of a fingerprint.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Where the agent keeps its last good view (`INTERFACE.view.json`, mode 0600), so that it
    /// keeps running on it while the server cannot be reached.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// For unattended installs: a file holding an enrolment key, used once, on the first
    /// start, when `private_key_file` does not exist yet (the agent then makes the key,
    /// enrols and goes on). Ignored once the system is enrolled.
    #[serde(default)]
    pub enrolment_key_file: Option<PathBuf>,
    /// The name to ask for at enrolment (the host name when left out).
    #[serde(default)]
    pub hostname: Option<String>,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from(DEFAULT_STATE_DIR)
}

impl ControlConfig {
    /// The pinned fingerprint as 32 bytes, if one is given (checked when loaded).
    pub fn fingerprint_bytes(&self) -> Option<[u8; 32]> {
        self.fingerprint.as_deref().and_then(parse_fingerprint)
    }

    fn check(&self) -> std::result::Result<(), String> {
        let valid_url = self.server.strip_prefix("https://").is_some_and(|rest| {
            !rest.is_empty()
                && !rest.contains('/')
                && rest
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
        });
        if !valid_url {
            return Err(format!(
                "[control] server = {:?}: give the control server as https://HOST:PORT (a managed agent speaks TLS only)",
                self.server
            ));
        }
        match (&self.fingerprint, &self.ca_file) {
            (Some(_), Some(_)) => Err(
                "[control] has both fingerprint and ca_file: the server's identity is pinned one way; keep one of them".to_owned(),
            ),
            (None, None) => Err(
                "[control] needs the server's identity: fingerprint = \"AB:CD:…\" (printed by `enclave-control run`) or ca_file = \"/path/to/ca.pem\"".to_owned(),
            ),
            (Some(fingerprint), None) if parse_fingerprint(fingerprint).is_none() => Err(format!(
                "[control] fingerprint = {fingerprint:?} is not a SHA-256 fingerprint: 64 hex digits, colons allowed, as `enclave-control run` prints it"
            )),
            _ => Ok(()),
        }
    }
}

/// A SHA-256 fingerprint from hex with or without colons, any case, an optional `sha256:`
/// prefix.
pub fn parse_fingerprint(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    let text = text
        .strip_prefix("sha256:")
        .or_else(|| text.strip_prefix("SHA256:"))
        .unwrap_or(text);
    let clean: Vec<u8> = text.bytes().filter(|b| *b != b':').collect();
    if clean.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(clean.chunks(2)) {
        *byte = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// The agent configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The file with this system's private key (base64, as `wg genkey` and `enclave-agent
    /// keygen` write it). It must not be readable by group or others.
    pub private_key_file: PathBuf,
    /// Where this system's view comes from.
    pub source: ViewSource,
    /// The tunnel interface's name.
    pub interface: String,
    /// The UDP port of the tunnel.
    pub listen_port: u16,
    /// Where the control socket (and, for our data plane, the UAPI socket) live.
    pub runtime_dir: PathBuf,
    /// The data plane.
    pub dataplane: DataplaneBackend,
    /// The directory of the WireGuard UAPI sockets (`<dir>/<interface>.sock`).
    pub uapi_dir: PathBuf,
    /// The NAT backend of a gateway.
    pub nat: NatBackend,
    /// The firewall mark of the tunnel's own UDP packets and the routing table of a default
    /// route through a gateway.
    pub fwmark: u32,
}

/// The file as written: `network_file` and `[control]` are both optional here, and
/// [`AgentConfig::parse`] insists on exactly one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    private_key_file: PathBuf,
    #[serde(default)]
    network_file: Option<PathBuf>,
    #[serde(default)]
    control: Option<ControlConfig>,
    #[serde(default = "default_interface")]
    interface: String,
    #[serde(default = "default_listen_port")]
    listen_port: u16,
    #[serde(default = "default_runtime_dir")]
    runtime_dir: PathBuf,
    #[serde(default)]
    dataplane: DataplaneBackend,
    #[serde(default = "default_uapi_dir")]
    uapi_dir: PathBuf,
    #[serde(default)]
    nat: NatBackend,
    #[serde(default = "default_fwmark")]
    fwmark: u32,
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
        let absolute = |file: &mut PathBuf| {
            if file.is_relative() {
                *file = base.join(&*file);
            }
        };
        absolute(&mut config.private_key_file);
        match &mut config.source {
            ViewSource::File(network_file) => absolute(network_file),
            ViewSource::Control(control) => {
                absolute(&mut control.state_dir);
                for file in [&mut control.ca_file, &mut control.enrolment_key_file]
                    .into_iter()
                    .flatten()
                {
                    absolute(file);
                }
            }
        }
        Ok(config)
    }

    /// Parses the text of a configuration; the error is the reader's message with its position.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        let source = match (raw.network_file, raw.control) {
            (Some(network_file), None) => ViewSource::File(network_file),
            (None, Some(control)) => {
                control.check()?;
                ViewSource::Control(control)
            }
            (Some(_), Some(_)) => {
                return Err("network_file and [control] are both given: an agent takes its view from one place; keep network_file for file mode, or the [control] section for a control server".to_owned());
            }
            (None, None) => {
                return Err("where does this system's view come from? give network_file (a network definition, file mode) or a [control] section (a control server; `enclave-agent enrol` writes one)".to_owned());
            }
        };
        let config = Self {
            private_key_file: raw.private_key_file,
            source,
            interface: raw.interface,
            listen_port: raw.listen_port,
            runtime_dir: raw.runtime_dir,
            dataplane: raw.dataplane,
            uapi_dir: raw.uapi_dir,
            nat: raw.nat,
            fwmark: raw.fwmark,
        };
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

    /// The network definition of an agent in file mode; `None` in managed mode.
    pub fn network_file(&self) -> Option<&Path> {
        match &self.source {
            ViewSource::File(path) => Some(path),
            ViewSource::Control(_) => None,
        }
    }

    /// The `[control]` section of a managed agent; `None` in file mode.
    pub fn control(&self) -> Option<&ControlConfig> {
        match &self.source {
            ViewSource::File(_) => None,
            ViewSource::Control(control) => Some(control),
        }
    }

    /// Where a managed agent keeps its last good view: `INTERFACE.view.json` in the state
    /// directory; `None` in file mode.
    pub fn last_view_file(&self) -> Option<PathBuf> {
        self.control().map(|control| {
            control
                .state_dir
                .join(format!("{}.view.json", self.interface))
        })
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

    const FINGERPRINT: &str = "D0:5F:75:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:36:86";

    #[test]
    fn file_mode_configurations_read_as_before() {
        let config = AgentConfig::parse(
            "private_key_file = \"k\"\nnetwork_file = \"/etc/enclave/network.toml\"\n",
        )
        .unwrap();
        assert_eq!(
            config.source,
            ViewSource::File(PathBuf::from("/etc/enclave/network.toml"))
        );
        assert_eq!(
            config.network_file(),
            Some(Path::new("/etc/enclave/network.toml"))
        );
        assert!(config.control().is_none());
        assert!(config.last_view_file().is_none());
    }

    #[test]
    fn a_control_section_makes_a_managed_agent() {
        let config = AgentConfig::parse(&format!(
            "private_key_file = \"k\"\ninterface = \"enc1\"\n[control]\nserver = \"https://control.example.net:8443\"\nfingerprint = \"{FINGERPRINT}\"\n"
        ))
        .unwrap();
        let control = config.control().unwrap();
        assert_eq!(control.server, "https://control.example.net:8443");
        assert_eq!(control.fingerprint_bytes().unwrap()[0], 0xd0);
        assert_eq!(control.fingerprint_bytes().unwrap()[31], 0x86);
        assert_eq!(control.state_dir, Path::new(DEFAULT_STATE_DIR));
        assert!(config.network_file().is_none());
        assert_eq!(
            config.last_view_file().unwrap(),
            Path::new("/var/lib/enclave/enc1.view.json")
        );
        // A CA file instead of a fingerprint, and unattended enrolment.
        let config = AgentConfig::parse(
            "private_key_file = \"k\"\n[control]\nserver = \"https://10.0.0.1:8443\"\nca_file = \"ca.pem\"\nenrolment_key_file = \"enrol.key\"\nstate_dir = \"/srv/enclave\"\n",
        )
        .unwrap();
        let control = config.control().unwrap();
        assert_eq!(control.ca_file.as_deref(), Some(Path::new("ca.pem")));
        assert!(control.fingerprint_bytes().is_none());
        assert_eq!(
            control.enrolment_key_file.as_deref(),
            Some(Path::new("enrol.key"))
        );
    }

    #[test]
    fn exactly_one_source_is_required() {
        let both = AgentConfig::parse(&format!(
            "private_key_file = \"k\"\nnetwork_file = \"n\"\n[control]\nserver = \"https://h:1\"\nfingerprint = \"{FINGERPRINT}\"\n"
        ))
        .unwrap_err();
        assert_eq!(
            both,
            "network_file and [control] are both given: an agent takes its view from one place; keep network_file for file mode, or the [control] section for a control server"
        );
        let neither = AgentConfig::parse("private_key_file = \"k\"\n").unwrap_err();
        assert_eq!(
            neither,
            "where does this system's view come from? give network_file (a network definition, file mode) or a [control] section (a control server; `enclave-agent enrol` writes one)"
        );
    }

    #[test]
    fn a_control_section_is_checked() {
        let parse = |section: &str| {
            AgentConfig::parse(&format!("private_key_file = \"k\"\n[control]\n{section}\n"))
        };
        let pinned = format!("fingerprint = \"{FINGERPRINT}\"");
        for url in [
            "http://h:8443",
            "https://h",
            "https://h:port",
            "https://h:8443/api",
            "h:8443",
        ] {
            let err = parse(&format!("server = \"{url}\"\n{pinned}")).unwrap_err();
            assert!(err.contains("https://HOST:PORT"), "{url}: {err}");
        }
        assert_eq!(
            parse("server = \"https://h:1\"").unwrap_err(),
            "[control] needs the server's identity: fingerprint = \"AB:CD:…\" (printed by `enclave-control run`) or ca_file = \"/path/to/ca.pem\""
        );
        assert_eq!(
            parse(&format!("server = \"https://h:1\"\n{pinned}\nca_file = \"ca.pem\"")).unwrap_err(),
            "[control] has both fingerprint and ca_file: the server's identity is pinned one way; keep one of them"
        );
        let err = parse("server = \"https://h:1\"\nfingerprint = \"AB:CD\"").unwrap_err();
        assert!(err.contains("is not a SHA-256 fingerprint"), "{err}");
        let err = parse(&format!(
            "server = \"https://h:1\"\n{pinned}\nsevrer = \"x\""
        ))
        .unwrap_err();
        assert!(err.contains("unknown field `sevrer`"), "{err}");
    }

    #[test]
    fn relative_paths_of_a_managed_agent_are_taken_from_its_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let path = dir.join("agent.toml");
        std::fs::write(
            &path,
            "private_key_file = \"private.key\"\n[control]\nserver = \"https://h:1\"\nca_file = \"ca.pem\"\nstate_dir = \"state\"\nenrolment_key_file = \"enrol.key\"\n",
        )
        .unwrap();
        let config = AgentConfig::load(&path).unwrap();
        let control = config.control().unwrap();
        assert_eq!(config.private_key_file, dir.join("private.key"));
        assert_eq!(
            control.ca_file.as_deref(),
            Some(dir.join("ca.pem").as_path())
        );
        assert_eq!(control.state_dir, dir.join("state"));
        assert_eq!(
            control.enrolment_key_file.as_deref(),
            Some(dir.join("enrol.key").as_path())
        );
    }

    #[test]
    fn fingerprints_parse_in_the_forms_people_paste() {
        let colons = "AB:".repeat(31) + "AB";
        assert_eq!(parse_fingerprint(&colons), Some([0xab; 32]));
        assert_eq!(
            parse_fingerprint(&format!("sha256:{}", "ab".repeat(32))),
            Some([0xab; 32])
        );
        assert_eq!(parse_fingerprint("AB:CD"), None);
        assert_eq!(parse_fingerprint(&"zz".repeat(32)), None);
        assert_eq!(parse_fingerprint(&"é".repeat(32)), None);
    }

    #[test]
    fn a_readable_key_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
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
