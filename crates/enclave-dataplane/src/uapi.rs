//! The WireGuard cross-platform configuration protocol (<https://www.wireguard.com/xplatform/>),
//! without I/O: parsing a `set=1` body into a complete [`SetRequest`] that is validated before
//! anything is applied, applying it to an [`enclave_wg::Device`], and writing the `get=1`
//! answer in the same form as wireguard-go.
//!
//! The protocol is line based: `key=value` lines, a blank line ends a request, and every
//! answer ends with `errno=N` and a blank line, where `N` is 0 or a negated errno.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use enclave_wg::keys::{from_hex, to_hex};
use enclave_wg::{Device, PeerConfig, PeerInfo, PresharedKey, PrivateKey, PublicKey};
use ipnet::IpNet;

/// `-EIO`: the request could not be read or the answer could not be written.
pub const ERRNO_IO: i64 = -(libc::EIO as i64);
/// `-EPROTO`: a line that is not `key=value`, or an unknown operation.
pub const ERRNO_PROTOCOL: i64 = -(libc::EPROTO as i64);
/// `-EINVAL`: an unknown key or a value that does not parse.
pub const ERRNO_INVALID: i64 = -(libc::EINVAL as i64);
/// `-EADDRINUSE`: the listen port could not be bound.
pub const ERRNO_PORT_IN_USE: i64 = -(libc::EADDRINUSE as i64);

/// Why a UAPI request was refused. Nothing of a refused `set=1` is applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UapiError {
    /// A line is not of the form `key=value`.
    #[error("UAPI line {line} is not of the form key=value")]
    NotKeyValue {
        /// 1-based line number within the request body.
        line: usize,
    },
    /// A key the protocol does not know, in the device or the peer section.
    #[error("UAPI line {line}: unknown key {key:?}")]
    UnknownKey {
        /// 1-based line number within the request body.
        line: usize,
        /// The key.
        key: String,
    },
    /// A value that does not parse for its key.
    #[error("UAPI line {line}: invalid value for {key}")]
    InvalidValue {
        /// 1-based line number within the request body.
        line: usize,
        /// The key.
        key: &'static str,
    },
    /// A peer key (other than `public_key`) before the first `public_key`.
    #[error("UAPI line {line}: {key} comes before any public_key")]
    PeerKeyWithoutPeer {
        /// 1-based line number within the request body.
        line: usize,
        /// The key.
        key: &'static str,
    },
    /// The first line is neither `get=1` nor `set=1`.
    #[error("unknown UAPI operation (expected get=1 or set=1)")]
    UnknownOperation,
    /// The request body did not end with a blank line.
    #[error("the UAPI request ended without its blank line")]
    Unterminated,
    /// The listen port could not be bound.
    #[error("the UAPI listen port could not be bound")]
    PortInUse,
    /// The socket could not be read or written.
    #[error("the UAPI socket failed")]
    Io,
}

impl UapiError {
    /// The negated errno the protocol answers with.
    pub fn errno(&self) -> i64 {
        match self {
            UapiError::NotKeyValue { .. }
            | UapiError::Unterminated
            | UapiError::UnknownOperation => ERRNO_PROTOCOL,
            UapiError::UnknownKey { .. }
            | UapiError::InvalidValue { .. }
            | UapiError::PeerKeyWithoutPeer { .. } => ERRNO_INVALID,
            UapiError::PortInUse => ERRNO_PORT_IN_USE,
            UapiError::Io => ERRNO_IO,
        }
    }
}

/// A complete, validated `set=1` request.
#[derive(Debug, Default)]
pub struct SetRequest {
    /// `private_key=`: `Some(None)` for the all-zero key, which removes the key.
    pub private_key: Option<Option<PrivateKey>>,
    /// `listen_port=` (0: any port).
    pub listen_port: Option<u16>,
    /// `fwmark=` (0: none).
    pub fwmark: Option<u32>,
    /// `replace_peers=true`: remove every peer before the peer changes.
    pub replace_peers: bool,
    /// The peer sections, in order.
    pub peers: Vec<PeerChange>,
}

/// One peer section of a `set=1` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerChange {
    /// `public_key=`: the peer to change (created unless `update_only`).
    pub public_key: PublicKey,
    /// `remove=true`.
    pub remove: bool,
    /// `update_only=true`: change the peer only if it exists.
    pub update_only: bool,
    /// `preshared_key=`: `Some(None)` for the all-zero key, which removes it.
    pub preshared_key: Option<Option<PresharedKey>>,
    /// `endpoint=`.
    pub endpoint: Option<SocketAddr>,
    /// `persistent_keepalive_interval=` (0: off).
    pub persistent_keepalive: Option<u16>,
    /// `replace_allowed_ips=true`: drop the allowed IPs before adding these.
    pub replace_allowed_ips: bool,
    /// `allowed_ip=` lines, added in order.
    pub allowed_ips: Vec<IpNet>,
}

impl PeerChange {
    fn new(public_key: PublicKey) -> Self {
        Self {
            public_key,
            remove: false,
            update_only: false,
            preshared_key: None,
            endpoint: None,
            persistent_keepalive: None,
            replace_allowed_ips: false,
            allowed_ips: Vec::new(),
        }
    }
}

/// The operation a UAPI client asks for on its first line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `get=1`.
    Get,
    /// `set=1`.
    Set,
}

/// Parses the first line of a request (without its newline).
pub fn parse_operation(line: &str) -> Option<Operation> {
    match line {
        "get=1" => Some(Operation::Get),
        "set=1" => Some(Operation::Set),
        _ => None,
    }
}

fn key_32(value: &str) -> Option<[u8; 32]> {
    if value.len() != 64 {
        return None;
    }
    from_hex(value).ok()
}

fn flag_true(value: &str) -> bool {
    value == "true"
}

/// Parses the body of a `set=1` request: its lines up to (not including) the blank line.
/// Every line is checked before the request is returned, so a request either parses
/// completely or is refused as a whole.
pub fn parse_set<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<SetRequest, UapiError> {
    let mut request = SetRequest::default();
    for (index, raw) in lines.into_iter().enumerate() {
        let line = index + 1;
        let (key, value) = raw.split_once('=').ok_or(UapiError::NotKeyValue { line })?;
        let invalid = |key: &'static str| UapiError::InvalidValue { line, key };
        if key == "public_key" {
            let bytes = key_32(value).ok_or(invalid("public_key"))?;
            request.peers.push(PeerChange::new(PublicKey(bytes)));
            continue;
        }
        if let Some(peer) = request.peers.last_mut() {
            match key {
                "remove" if flag_true(value) => peer.remove = true,
                "remove" => return Err(invalid("remove")),
                "update_only" if flag_true(value) => peer.update_only = true,
                "update_only" => return Err(invalid("update_only")),
                "preshared_key" => {
                    let mut bytes = key_32(value).ok_or(invalid("preshared_key"))?;
                    let key = (bytes != [0; 32]).then(|| PresharedKey::from_bytes(bytes));
                    zeroize::Zeroize::zeroize(&mut bytes);
                    peer.preshared_key = Some(key);
                }
                "endpoint" => {
                    peer.endpoint = Some(value.parse().map_err(|_| invalid("endpoint"))?);
                }
                "persistent_keepalive_interval" => {
                    peer.persistent_keepalive = Some(
                        value
                            .parse()
                            .map_err(|_| invalid("persistent_keepalive_interval"))?,
                    );
                }
                "replace_allowed_ips" if flag_true(value) => peer.replace_allowed_ips = true,
                "replace_allowed_ips" => return Err(invalid("replace_allowed_ips")),
                "allowed_ip" => {
                    let net: IpNet = value.parse().map_err(|_| invalid("allowed_ip"))?;
                    peer.allowed_ips.push(net.trunc());
                }
                "protocol_version" if value == "1" => {}
                "protocol_version" => return Err(invalid("protocol_version")),
                other => {
                    return Err(UapiError::UnknownKey {
                        line,
                        key: other.to_owned(),
                    })
                }
            }
        } else {
            match key {
                "private_key" => {
                    let bytes = key_32(value).ok_or(invalid("private_key"))?;
                    request.private_key =
                        Some((bytes != [0; 32]).then(|| PrivateKey::from_bytes(bytes)));
                }
                "listen_port" => {
                    request.listen_port = Some(value.parse().map_err(|_| invalid("listen_port"))?);
                }
                "fwmark" => request.fwmark = Some(value.parse().map_err(|_| invalid("fwmark"))?),
                "replace_peers" if flag_true(value) => request.replace_peers = true,
                "replace_peers" => return Err(invalid("replace_peers")),
                "remove"
                | "update_only"
                | "preshared_key"
                | "endpoint"
                | "persistent_keepalive_interval"
                | "replace_allowed_ips"
                | "allowed_ip"
                | "protocol_version" => {
                    return Err(UapiError::PeerKeyWithoutPeer {
                        line,
                        key: peer_key_name(key),
                    })
                }
                other => {
                    return Err(UapiError::UnknownKey {
                        line,
                        key: other.to_owned(),
                    })
                }
            }
        }
    }
    Ok(request)
}

fn peer_key_name(key: &str) -> &'static str {
    match key {
        "remove" => "remove",
        "update_only" => "update_only",
        "preshared_key" => "preshared_key",
        "endpoint" => "endpoint",
        "persistent_keepalive_interval" => "persistent_keepalive_interval",
        "replace_allowed_ips" => "replace_allowed_ips",
        "allowed_ip" => "allowed_ip",
        _ => "protocol_version",
    }
}

impl SetRequest {
    /// Applies the key and peer changes to `device`, in protocol order: the private key,
    /// `replace_peers`, then each peer section. The listen port and fwmark belong to the
    /// socket and are the caller's to apply (before this, so that a port that cannot be bound
    /// refuses the whole request). `key` is the shell's copy of the private key (`None`: the
    /// device has none and must not use the placeholder it holds); the all-zero key removes
    /// it and `fresh_key` provides the placeholder.
    pub fn apply_to(
        &self,
        device: &mut Device,
        key: &mut Option<PrivateKey>,
        fresh_key: impl FnOnce() -> PrivateKey,
    ) {
        match &self.private_key {
            Some(Some(new)) => {
                device.set_private_key(new.clone());
                *key = Some(new.clone());
            }
            Some(None) => {
                // No key: keep nothing of the old one in use either.
                device.set_private_key(fresh_key());
                *key = None;
            }
            None => {}
        }
        if self.replace_peers {
            device.remove_all_peers();
        }
        for change in &self.peers {
            apply_peer(device, change);
        }
    }
}

fn apply_peer(device: &mut Device, change: &PeerChange) {
    let key = change.public_key;
    if key == device.public_key() {
        return;
    }
    if change.remove {
        device.remove_peer(&key);
        return;
    }
    let existing = device.peer(&key);
    if existing.is_none() && change.update_only {
        return;
    }
    let mut allowed_ips = match (&existing, change.replace_allowed_ips) {
        (Some(info), false) => info.allowed_ips.clone(),
        _ => Vec::new(),
    };
    for net in &change.allowed_ips {
        if !allowed_ips.contains(net) {
            allowed_ips.push(*net);
        }
    }
    let Some(info) = existing else {
        device.upsert_peer(PeerConfig {
            public_key: key,
            preshared_key: change.preshared_key.clone().flatten(),
            endpoint: change.endpoint,
            allowed_ips,
            persistent_keepalive: change.persistent_keepalive,
        });
        return;
    };
    // An existing peer changes only in what the section names, as in WireGuard: it keeps
    // its sessions, counters and learnt endpoint; `endpoint=` sets the current endpoint.
    // The peer exists (we just read it), so the setters cannot fail.
    if let Some(endpoint) = change.endpoint {
        let _ = device.set_endpoint(&key, Some(endpoint));
    }
    if let Some(preshared_key) = &change.preshared_key {
        if *preshared_key != info.preshared_key {
            let _ = device.set_preshared_key(&key, preshared_key.clone());
        }
    }
    if let Some(interval) = change.persistent_keepalive {
        if Some(interval) != info.persistent_keepalive {
            let _ = device.set_persistent_keepalive(&key, Some(interval));
        }
    }
    if allowed_ips != info.allowed_ips {
        let _ = device.set_allowed_ips(&key, allowed_ips);
    }
}

/// The device-wide values of a `get=1` answer.
#[derive(Debug, Clone, Copy)]
pub struct DeviceView<'a> {
    /// The private key, if one is set.
    pub private_key: Option<&'a PrivateKey>,
    /// The bound UDP port (0: not bound).
    pub listen_port: u16,
    /// The fwmark (0: none).
    pub fwmark: u32,
}

/// Writes a `get=1` answer as wireguard-go does, `errno=0` and the blank line included.
pub fn write_get(
    out: &mut String,
    device: DeviceView<'_>,
    peers: impl IntoIterator<Item = PeerInfo>,
) {
    if let Some(key) = device.private_key {
        if key.as_bytes() != &[0; 32] {
            let _ = writeln!(out, "private_key={}", to_hex(key.as_bytes()));
        }
    }
    if device.listen_port != 0 {
        let _ = writeln!(out, "listen_port={}", device.listen_port);
    }
    if device.fwmark != 0 {
        let _ = writeln!(out, "fwmark={}", device.fwmark);
    }
    for peer in peers {
        let _ = writeln!(out, "public_key={}", to_hex(peer.public_key.as_bytes()));
        let _ = writeln!(
            out,
            "preshared_key={}",
            to_hex(
                peer.preshared_key
                    .as_ref()
                    .map_or(&[0; 32], PresharedKey::as_bytes)
            )
        );
        out.push_str("protocol_version=1\n");
        if let Some(endpoint) = peer.endpoint {
            let _ = writeln!(out, "endpoint={endpoint}");
        }
        let since_epoch = peer
            .last_handshake
            .and_then(|t: SystemTime| t.duration_since(UNIX_EPOCH).ok())
            .unwrap_or_default();
        let _ = writeln!(out, "last_handshake_time_sec={}", since_epoch.as_secs());
        let _ = writeln!(
            out,
            "last_handshake_time_nsec={}",
            since_epoch.subsec_nanos()
        );
        let _ = writeln!(out, "tx_bytes={}", peer.tx_bytes);
        let _ = writeln!(out, "rx_bytes={}", peer.rx_bytes);
        let _ = writeln!(
            out,
            "persistent_keepalive_interval={}",
            peer.persistent_keepalive.unwrap_or(0)
        );
        for net in &peer.allowed_ips {
            let _ = writeln!(out, "allowed_ip={net}");
        }
    }
    write_errno(out, 0);
}

/// Writes the closing `errno=N` line and the blank line.
pub fn write_errno(out: &mut String, errno: i64) {
    let _ = write!(out, "errno={errno}\n\n");
}

#[cfg(test)]
mod tests;
