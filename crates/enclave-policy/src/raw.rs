//! The network definition as written: TOML deserialised with positions, nothing checked yet.

use serde::Deserialize;
use toml::Spanned;

pub(crate) type S<T> = Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDefinition {
    pub(crate) network: Option<S<RawNetwork>>,
    #[serde(default)]
    pub(crate) system: Vec<S<RawSystem>>,
    #[serde(default)]
    pub(crate) tag: Vec<S<RawTag>>,
    #[serde(default)]
    pub(crate) trust_requirement: Vec<S<RawTrust>>,
    #[serde(default)]
    pub(crate) direct_policy: Vec<S<RawDirectPolicy>>,
    #[serde(default)]
    pub(crate) gateway_policy: Vec<S<RawGatewayPolicy>>,
    #[serde(default)]
    pub(crate) preshared_key: Vec<S<RawPresharedKey>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNetwork {
    pub(crate) overlay: Option<S<String>>,
    pub(crate) keepalive: Option<S<u16>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSystem {
    pub(crate) name: S<String>,
    pub(crate) public_key: S<String>,
    pub(crate) address: S<String>,
    #[serde(default)]
    pub(crate) tags: Vec<S<String>>,
    pub(crate) endpoint: Option<S<String>>,
    pub(crate) enabled: Option<bool>,
    pub(crate) gateway: Option<S<RawGateway>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGateway {
    pub(crate) allowed: bool,
    #[serde(default)]
    pub(crate) subnets: Vec<S<String>>,
    #[serde(default)]
    pub(crate) removed: Vec<S<String>>,
    pub(crate) auto_discover: Option<bool>,
    pub(crate) priority: Option<S<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTag {
    pub(crate) name: S<String>,
    #[serde(default)]
    pub(crate) trust: Vec<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTrust {
    pub(crate) name: S<String>,
    pub(crate) kind: S<String>,
    #[serde(default)]
    pub(crate) allow: Vec<S<String>>,
    #[serde(default)]
    pub(crate) block: Vec<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAcl {
    pub(crate) protocol: S<String>,
    pub(crate) ports: Option<S<toml::Value>>,
    pub(crate) label: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawActiveHours {
    pub(crate) days: Vec<S<String>>,
    pub(crate) hours: Vec<S<String>>,
    pub(crate) zone: S<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDirectPolicy {
    pub(crate) name: S<String>,
    pub(crate) enabled: Option<bool>,
    pub(crate) senders: S<Vec<S<String>>>,
    pub(crate) receivers: S<Vec<S<String>>>,
    pub(crate) acl: S<Vec<S<RawAcl>>>,
    #[serde(default)]
    pub(crate) trust: Vec<S<String>>,
    pub(crate) active_hours: Option<S<RawActiveHours>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGatewayPolicy {
    pub(crate) name: S<String>,
    pub(crate) enabled: Option<bool>,
    pub(crate) senders: S<Vec<S<String>>>,
    pub(crate) gateways: S<Vec<S<String>>>,
    pub(crate) subnets: S<Vec<S<String>>>,
    pub(crate) filter: Option<S<Vec<S<String>>>>,
    pub(crate) acl: S<Vec<S<RawAcl>>>,
    #[serde(default)]
    pub(crate) trust: Vec<S<String>>,
    pub(crate) active_hours: Option<S<RawActiveHours>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPresharedKey {
    pub(crate) systems: S<Vec<S<String>>>,
    pub(crate) file: S<String>,
}
