//! The messages, version 1. Each is one JSON object whose `type` says which (snake_case).
//!
//! Extension rules (`docs/agent-protocol.md`): a receiver ignores a message whose `type` it
//! does not know ([`AgentMessage::Unknown`], [`ServerMessage::Unknown`]) and fields it does not
//! know; a new field is optional (`#[serde(default)]`) so older senders stay valid. A change
//! that an older peer must not misread gets a new protocol version, negotiated in the hello.

use std::collections::BTreeMap;

use enclave_policy::View;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// What the agent sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AgentMessage {
    /// The first message: who the agent says it is and what it speaks.
    Hello(Hello),
    /// The answer to [`ServerMessage::Challenge`].
    Proof(Proof),
    /// The agent's state, for the administrator. Sent after each view is applied and when
    /// something the server shows changes (a peer's state, the active gateway of a subnet,
    /// discovered subnets); at most about once a second.
    Report(Box<Report>),
    /// The view of this serial is applied.
    Ack(Ack),
    /// Nothing to say; the connection is alive.
    Keepalive,
    /// A message of a later version that this side does not know; ignored.
    #[serde(other)]
    Unknown,
}

/// What the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The answer to [`AgentMessage::Hello`]: prove you hold the private key.
    Challenge(Challenge),
    /// The system exists but waits for an administrator's approval; a view follows when it
    /// is approved, on the same connection.
    Pending(Pending),
    /// This system's compiled view; replaces any earlier one with a lower serial.
    View(ViewUpdate),
    /// The system was revoked or deleted: drop every peer, route and NAT rule. The server
    /// closes the connection after it.
    Revoked(Reason),
    /// The connection is refused (unknown key, failed proof, no common version, a protocol
    /// violation). The server closes the connection after it.
    Refused(Reason),
    /// Nothing to say; the connection is alive.
    Keepalive,
    /// A message of a later version that this side does not know; ignored.
    #[serde(other)]
    Unknown,
}

/// The agent's first message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol versions the agent speaks.
    pub versions: Vec<u32>,
    /// Its WireGuard public key, base64 (the one it enrolled with).
    pub public_key: String,
    /// The agent's software version, for the administrator.
    #[serde(default)]
    pub agent_version: String,
    /// The host's name, for the administrator.
    #[serde(default)]
    pub hostname: Option<String>,
}

/// The server's challenge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// The protocol version the server chose from the hello's list.
    pub version: u32,
    /// A fresh X25519 public key, base64, used for this connection only.
    pub server_ephemeral: String,
    /// 32 random bytes, base64.
    pub nonce: String,
}

/// The agent's proof of possession.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    /// [`crate::proof::prove`]'s MAC, base64.
    pub mac: String,
}

/// A view is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The serial of the applied view.
    pub serial: u64,
}

/// The system waits for approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The system's name on the server.
    pub system: String,
    /// What to tell the user.
    pub message: String,
}

/// A view and its serial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ViewUpdate {
    /// Increases with every change of the network (the server's revision); a view whose
    /// serial is not above the last applied one is stale and ignored.
    pub serial: u64,
    /// The compiled view, as `enclave-agent policy view` prints it.
    pub view: Box<View>,
}

/// Why the server revoked or refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// For the user; never holds a secret.
    pub reason: String,
}

/// The agent's state, for the administrator.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The serial of the view in force.
    #[serde(default)]
    pub serial: Option<u64>,
    /// The UDP port its WireGuard listens on (the server sees the address).
    #[serde(default)]
    pub listen_port: Option<u16>,
    /// Its peers, by name.
    #[serde(default)]
    pub peers: BTreeMap<String, PeerReport>,
    /// Which gateway carries each routed subnet now, and why.
    #[serde(default)]
    pub active_gateways: BTreeMap<Ipv4Net, ActiveGateway>,
    /// On a gateway: the subnets discovery found (the whole set, each time). `None` where the
    /// agent does not discover (not a gateway).
    #[serde(default)]
    pub discovered: Option<BTreeMap<Ipv4Net, Discovered>>,
    /// Warnings shown in its status.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// One peer, as `enclave-agent status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerReport {
    /// `connected`, `handshaking`, `idle`, … (as status prints it).
    pub state: String,
    /// The endpoint in use.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Seconds since the last handshake or packet.
    #[serde(default)]
    pub last_activity_secs: Option<f64>,
    /// Bytes received.
    #[serde(default)]
    pub rx_bytes: u64,
    /// Bytes sent.
    #[serde(default)]
    pub tx_bytes: u64,
    /// Round-trip time of the control probes, for gateways.
    #[serde(default)]
    pub rtt_ms: Option<f64>,
}

/// The gateway chosen for one subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveGateway {
    /// The gateway's name; `None` when no candidate works.
    pub gateway: Option<String>,
    /// Why (as status prints it).
    #[serde(default)]
    pub reason: String,
}

/// A subnet discovery found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discovered {
    /// The interface it was found on.
    pub interface: String,
    /// Why it was taken (as `enclave-gw discover` says).
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_tagged_by_type_in_snake_case() {
        let text = serde_json::to_string(&AgentMessage::Ack(Ack { serial: 7 })).unwrap();
        assert_eq!(text, r#"{"type":"ack","serial":7}"#);
        let text = serde_json::to_string(&ServerMessage::Keepalive).unwrap();
        assert_eq!(text, r#"{"type":"keepalive"}"#);
        let hello: AgentMessage = serde_json::from_str(
            r#"{"type":"hello","versions":[1],"public_key":"k","agent_version":"0.1"}"#,
        )
        .unwrap();
        assert!(matches!(hello, AgentMessage::Hello(h) if h.hostname.is_none()));
    }

    #[test]
    fn unknown_types_and_fields_are_ignored() {
        let later: ServerMessage =
            serde_json::from_str(r#"{"type":"relay_token","token":"x","ttl":60}"#).unwrap();
        assert_eq!(later, ServerMessage::Unknown);
        let later: AgentMessage =
            serde_json::from_str(r#"{"type":"endpoint_candidates","candidates":[]}"#).unwrap();
        assert_eq!(later, AgentMessage::Unknown);
        let extended: ServerMessage =
            serde_json::from_str(r#"{"type":"refused","reason":"no","retry_after":30}"#).unwrap();
        assert_eq!(
            extended,
            ServerMessage::Refused(Reason {
                reason: "no".into()
            })
        );
        let report: AgentMessage = serde_json::from_str(r#"{"type":"report"}"#).unwrap();
        assert_eq!(report, AgentMessage::Report(Box::default()));
    }

    #[test]
    fn a_message_without_a_type_is_an_error() {
        assert!(serde_json::from_str::<AgentMessage>(r#"{"serial":1}"#).is_err());
        assert!(serde_json::from_str::<ServerMessage>(r#"{"type":"view"}"#).is_err());
    }
}
