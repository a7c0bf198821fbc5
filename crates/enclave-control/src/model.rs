//! The managed network: the network definition's objects, plus what a managed network needs
//! (approval, enrolment keys, discovered subnets, last seen, admin tokens). Plain values.
//!
//! Policies, tags and trust requirements are kept in the shape of the network definition's
//! TOML tables (strings for CIDRs, filter entries, ports and hours), so the policy engine's
//! own loader parses and validates them: there is one set of rules, `policy check`'s.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};

use enclave_control_proto::Redacted;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// Seconds since the Unix epoch (UTC). The core never reads the clock; callers pass it.
pub type UnixTime = i64;

/// Systems by name, in name order. A persistent B-tree (`imbl::OrdMap`): a clone shares the
/// whole tree and a change copies only the path to the entry it changes, so the core, which
/// copies the state for every command, does not copy 10,000 systems to enrol one.
pub type Systems = imbl::OrdMap<String, ManagedSystem>;

/// The whole managed network at one revision.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct State {
    /// Bumped by every committed change; the store refuses a commit made on an older one.
    pub revision: i64,
    /// The `[network]` table.
    pub settings: Settings,
    /// Systems by name, in a persistent map: copying the state for a command shares every
    /// system it does not touch (see [`Systems`]).
    pub systems: Systems,
    /// Tags with trust requirements, by name.
    pub tags: BTreeMap<String, TagDoc>,
    /// Trust requirements by name.
    pub trust_requirements: BTreeMap<String, TrustDoc>,
    /// Direct and gateway access policies by name (one name space, as in the file).
    pub policies: BTreeMap<String, PolicyDoc>,
    /// `[[preshared_key]]` tables, in order: which pair of systems mixes the key of which file
    /// into its handshakes (the key itself is never in the definition, nor here).
    pub preshared_keys: Vec<PresharedKeyDoc>,
    /// Enrolment keys by id.
    pub keys: BTreeMap<String, EnrolmentKey>,
    /// Admin tokens by id.
    pub tokens: BTreeMap<String, AdminToken>,
}

/// The `[network]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// The overlay network; addresses are allocated from it.
    pub overlay: Ipv4Net,
    /// Persistent keepalive in seconds; 0 is off.
    pub keepalive: u16,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            overlay: Ipv4Net::new(Ipv4Addr::new(100, 64, 0, 0), 10).unwrap_or_default(),
            keepalive: enclave_policy::DEFAULT_KEEPALIVE,
        }
    }
}

/// Where a system stands with the administrator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Approval {
    /// Enrolled with a manual-approval key; no tunnel until approved.
    Pending,
    /// May have tunnels (when also enabled).
    Approved,
    /// Cut off by the administrator; kept for the record until deleted.
    Revoked,
}

impl Approval {
    /// The word used in lists and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Approval::Pending => "pending",
            Approval::Approved => "approved",
            Approval::Revoked => "revoked",
        }
    }

    /// Parses the stored word.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "pending" => Approval::Pending,
            "approved" => Approval::Approved,
            "revoked" => Approval::Revoked,
            _ => return None,
        })
    }
}

/// A gateway's settings: the seed's "Allow this system to act as a gateway" and its subnets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayDoc {
    /// The toggle.
    pub allowed: bool,
    /// Subnets added by hand (also not directly connected ones and `0.0.0.0/0`).
    pub subnets: BTreeSet<Ipv4Net>,
    /// Subnets removed by hand.
    pub removed: BTreeSet<Ipv4Net>,
    /// Whether discovered subnets are served.
    pub auto_discover: bool,
    /// Lower is preferred.
    pub priority: u32,
}

impl Default for GatewayDoc {
    fn default() -> Self {
        Self {
            allowed: false,
            subnets: BTreeSet::new(),
            removed: BTreeSet::new(),
            auto_discover: true,
            priority: enclave_policy::DEFAULT_PRIORITY,
        }
    }
}

/// A subnet a gateway's agent found on one of its interfaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveredSubnet {
    /// The interface it was found on.
    pub interface: String,
    /// Why it was taken (as `enclave-gw discover` says).
    pub reason: String,
}

/// One system, as the server knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedSystem {
    /// Unique name.
    pub name: String,
    /// WireGuard public key, base64. Unique.
    pub public_key: String,
    /// Overlay address, allocated by the server. Unique.
    pub address: Ipv4Addr,
    /// Tags.
    pub tags: BTreeSet<String>,
    /// Underlay endpoint set by the administrator (`systems edit --endpoint`, or the
    /// definition's `endpoint`). It always wins over [`ManagedSystem::observed_endpoint`].
    pub endpoint: Option<SocketAddr>,
    /// The underlay endpoint its agent was last observed at: the IPv4 address its connection
    /// to the server came from, with the WireGuard port the agent reported. Recorded by the
    /// agents' side; used in peers' views when `endpoint` is not set.
    #[serde(default)]
    pub observed_endpoint: Option<SocketAddr>,
    /// The definition's `enabled`: the administrator's switch, apart from approval.
    pub enabled: bool,
    /// Pending, approved or revoked. Only an approved and enabled system has tunnels.
    pub approval: Approval,
    /// Gateway settings, once the system was ever switched to act as one.
    pub gateway: Option<GatewayDoc>,
    /// Subnets the gateway's agent reported, by subnet.
    pub discovered: BTreeMap<Ipv4Net, DiscoveredSubnet>,
    /// Removed automatically when disconnected for long (filled by the agents' side).
    pub ephemeral: bool,
    /// The enrolment key it enrolled with (its id), if any; [`APP_DEVICE`] for a device added
    /// with the WireGuard app.
    pub enrolled_with: Option<String>,
    /// When it enrolled or was imported.
    pub created_at: UnixTime,
    /// When its agent was last heard from (filled by the agents' side).
    pub last_seen: Option<UnixTime>,
    /// Whether its agent holds a connection now (filled by the agents' side).
    pub connected: bool,
    /// The revision of its last change.
    pub version: i64,
}

/// The `enrolled_with` of a device added with the WireGuard app (no agent, no enrolment key;
/// an enrolment key's id is 12 hex digits, so it never reads like this).
pub const APP_DEVICE: &str = "wireguard-app";

impl ManagedSystem {
    /// Whether it is a device added with the WireGuard app: no agent of ours runs on it, the
    /// app is configured by hand from the configuration the server made.
    pub fn is_app_device(&self) -> bool {
        self.enrolled_with.as_deref() == Some(APP_DEVICE)
    }

    /// Whether the compiled definition gives this system tunnels.
    pub fn effective_enabled(&self) -> bool {
        self.enabled && self.approval == Approval::Approved
    }

    /// The endpoint peers are given: the one set by hand, else the observed one.
    pub fn effective_endpoint(&self) -> Option<SocketAddr> {
        self.endpoint.or(self.observed_endpoint)
    }
}

/// A `[[tag]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TagDoc {
    /// The tag.
    pub name: String,
    /// Names of trust requirements.
    #[serde(default)]
    pub trust: Vec<String>,
    /// The revision of its last change (ignored on input except as a precondition).
    #[serde(default)]
    pub version: i64,
}

/// A `[[trust_requirement]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustDoc {
    /// Unique name.
    pub name: String,
    /// `public_ip`.
    pub kind: String,
    /// CIDRs the sender's public address must lie in.
    #[serde(default)]
    pub allow: Vec<String>,
    /// CIDRs it must not lie in.
    #[serde(default)]
    pub block: Vec<String>,
    /// The revision of its last change.
    #[serde(default)]
    pub version: i64,
}

/// A `[[preshared_key]]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresharedKeyDoc {
    /// The two systems of the tunnel.
    pub systems: Vec<String>,
    /// Absolute path of the key file on both hosts.
    pub file: String,
}

/// An ACL entry as written: `{ protocol = "tcp", ports = 445, label = "SMB" }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclDoc {
    /// `any`, `icmp`, `tcp` or `udp`.
    pub protocol: String,
    /// A port (number) or `"A-B"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Ports>,
    /// Shown in status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// A port or a port range as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Ports {
    /// One port (any integer; the engine checks the range).
    One(i64),
    /// `"A-B"`.
    Range(String),
}

/// Active hours as written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoursDoc {
    /// `mon`..`sun`.
    pub days: Vec<String>,
    /// `HH:MM-HH:MM`.
    pub hours: Vec<String>,
    /// An IANA time zone.
    pub zone: String,
}

/// Which kind of policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    /// `[[direct_policy]]`: sender tags to receiver tags.
    Direct,
    /// `[[gateway_policy]]`: sender tags to subnets through gateways.
    Gateway,
}

/// A policy as written: the fields of a `[[direct_policy]]` or `[[gateway_policy]]` table,
/// plus its `kind` (and, in the API, its `version`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDoc {
    /// Unique among all policies.
    pub name: String,
    /// Direct or gateway.
    pub kind: PolicyKind,
    /// A disabled policy grants nothing.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Sender tags.
    pub senders: Vec<String>,
    /// Receiver tags (direct policies only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub receivers: Vec<String>,
    /// Gateway system names (gateway policies only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<String>,
    /// Destination subnets (gateway policies only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<String>,
    /// Subnet filter entries (gateway policies only): addresses, ranges, CIDRs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Vec<String>>,
    /// What senders may open.
    pub acl: Vec<AclDoc>,
    /// Trust requirements on the sender.
    #[serde(default)]
    pub trust: Vec<String>,
    /// When the policy is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_hours: Option<HoursDoc>,
    /// The revision of its last change.
    #[serde(default)]
    pub version: i64,
}

fn yes() -> bool {
    true
}

/// An object with a `version`: the revision of its last change.
pub trait Versioned: Clone {
    /// The revision of its last change.
    fn version(&self) -> i64;
    /// Records the revision of its last change.
    fn set_version(&mut self, version: i64);
}

/// A whole object of the definition, kept as written: a policy, a `[[tag]]` entry, a trust
/// requirement. Each kind is a map of the [`State`], by name.
pub trait Document: Versioned {
    /// What messages call one: `tag`, `trust requirement`, `policy`.
    const WHAT: &'static str;
    /// Its name.
    fn name(&self) -> &str;
    /// Every one of its kind in `state`, by name.
    fn all(state: &State) -> &BTreeMap<String, Self>;
    /// Every one of its kind in `state`, to change.
    fn all_mut(state: &mut State) -> &mut BTreeMap<String, Self>;
}

macro_rules! versioned {
    ($($t:ty),*) => {$(
        impl Versioned for $t {
            fn version(&self) -> i64 {
                self.version
            }
            fn set_version(&mut self, version: i64) {
                self.version = version;
            }
        }
    )*};
}
versioned!(ManagedSystem, TagDoc, TrustDoc, PolicyDoc);

macro_rules! document {
    ($($t:ty: $what:literal in $field:ident),*) => {$(
        impl Document for $t {
            const WHAT: &'static str = $what;
            fn name(&self) -> &str {
                &self.name
            }
            fn all(state: &State) -> &BTreeMap<String, Self> {
                &state.$field
            }
            fn all_mut(state: &mut State) -> &mut BTreeMap<String, Self> {
                &mut state.$field
            }
        }
    )*};
}
document!(
    TagDoc: "tag" in tags,
    TrustDoc: "trust requirement" in trust_requirements,
    PolicyDoc: "policy" in policies
);

/// Automatic or manual approval of the systems a key enrols.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalMode {
    /// Enrolled systems are approved at once.
    Auto,
    /// Enrolled systems wait as pending.
    Manual,
}

/// An enrolment key. The key itself is never stored: only its SHA-256, which `Debug` does not
/// print either (a hash of a short-lived key is still worth guessing against).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolmentKey {
    /// Short public id (lists, revoke).
    pub id: String,
    /// Hex SHA-256 of the key. Never leaves the server.
    #[serde(skip_serializing)]
    pub hash: Redacted<String>,
    /// Tags given to systems it enrols.
    pub tags: BTreeSet<String>,
    /// Approval of the systems it enrols.
    pub approval: ApprovalMode,
    /// How many systems it may enrol; `None` is unlimited.
    pub uses_allowed: Option<u32>,
    /// How many it has enrolled.
    pub uses: u32,
    /// When it stops working.
    pub expires_at: Option<UnixTime>,
    /// Systems it enrols are ephemeral.
    pub ephemeral: bool,
    /// Revoked by the administrator.
    pub revoked: bool,
    /// When it was made.
    pub created_at: UnixTime,
    /// Who made it.
    pub created_by: String,
}

/// An admin token. Only its SHA-256 is stored, and `Debug` does not print it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminToken {
    /// Short public id.
    pub id: String,
    /// A name for the audit log (who).
    pub name: String,
    /// Hex SHA-256 of the token.
    #[serde(skip_serializing)]
    pub hash: Redacted<String>,
    /// When it was made.
    pub created_at: UnixTime,
    /// Revoked tokens authenticate nothing.
    pub revoked: bool,
}

/// Where a system's agent is connected, as one server last wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// The agent's WireGuard public key.
    pub public_key: String,
    /// The server process holding (or last holding) its connection.
    pub server: String,
    /// Whether that server holds it now (stale when `last_seen` is old: that server died).
    pub connected: bool,
    /// When it was last heard from.
    pub last_seen: UnixTime,
    /// The underlay address the server saw (with the agent's WireGuard port, when reported).
    pub endpoint: Option<String>,
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// The revision the change made.
    pub revision: i64,
    /// When.
    pub at: UnixTime,
    /// Who: `token:NAME`, `key:ID` (an enrolment), `cli` (on the server host).
    pub actor: String,
    /// What: `system.approve`, `policy.update`, …
    pub action: String,
    /// On what (a name or id).
    pub target: String,
    /// Details, never a secret.
    pub detail: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_a_hash() {
        let mut state = State::default();
        state.keys.insert(
            "k1".into(),
            EnrolmentKey {
                id: "k1".into(),
                hash: Redacted::new("5ecre7key0hash".into()),
                tags: BTreeSet::new(),
                approval: ApprovalMode::Auto,
                uses_allowed: None,
                uses: 0,
                expires_at: None,
                ephemeral: false,
                revoked: false,
                created_at: 0,
                created_by: "cli".into(),
            },
        );
        state.tokens.insert(
            "t1".into(),
            AdminToken {
                id: "t1".into(),
                name: "alice".into(),
                hash: Redacted::new("5ecre7token0hash".into()),
                created_at: 0,
                revoked: false,
            },
        );
        let shown = format!("{state:?} {state:#?}");
        assert!(!shown.contains("5ecre7"), "{shown}");
        assert!(shown.contains("k1") && shown.contains("alice"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
