//! The `wg-quick` configuration of a device added with an official WireGuard app (Windows,
//! macOS, iOS, Android, or `wg-quick` itself) instead of our agent, made from the policy
//! engine's view of that system. Plain code over plain values: no I/O, no clock, no
//! randomness (the shell makes the key pair and passes the private key in, once).
//!
//! What the app can do is less than what our agent does, and the configuration says so:
//! - **One gateway per subnet.** WireGuard's cryptokey routing gives each address to one peer,
//!   and the app neither tests gateways nor moves a subnet to another: each granted subnet goes
//!   to its most preferred candidate (lowest priority, then name) among the gateways whose
//!   endpoint is known. No failover.
//! - **Peers it can reach.** The app only knows endpoints written in its file: a peer without
//!   a known endpoint, or with a pre-shared key (the server never holds those), is left out,
//!   with a note.
//! - **Nothing enforced on the device.** The gateways (and the receivers of direct policies)
//!   enforce subnet filters, ACLs, one way and trust requirements for it, as for any sender.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;

use enclave_control_proto::Redacted;
use enclave_policy::{Network, View};
use ipnet::Ipv4Net;
use serde::Serialize;

use crate::core::{problem, Refusal};
use crate::model::State;

/// A configuration made for an app device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppConfig {
    /// The `wg-quick` file, comments included. Holds the private key when one was given, so
    /// `Debug` does not print it.
    pub text: Redacted<String>,
    /// A name for the file: the tunnel's name in the apps and for `wg-quick` (at most 15 of
    /// `A-Z a-z 0-9 _ = + . -`), with `.conf`.
    pub file_name: String,
    /// Whether `text` holds the private key.
    pub private_key_included: bool,
    /// The peers written, in the file's order.
    pub peers: Vec<AppPeer>,
    /// What the app cannot have, or what left a peer out; also comments in `text`.
    pub notes: Vec<String>,
}

impl AppConfig {
    /// The file without its comments and blank lines: what a QR code carries (shorter, and
    /// the apps ignore comments anyway).
    pub fn compact(&self) -> String {
        let mut out = String::new();
        for line in self.text.expose().lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

/// One `[Peer]` of the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppPeer {
    /// The peer's system name.
    pub name: String,
    /// Its public key.
    pub public_key: String,
    /// Where the app reaches it.
    pub endpoint: SocketAddr,
    /// Its overlay address and the subnets this device sends through it.
    pub allowed_ips: BTreeSet<Ipv4Net>,
    /// The subnets (of `allowed_ips`) it is the gateway for.
    pub gateway_for: BTreeSet<Ipv4Net>,
    /// Persistent keepalive, seconds.
    pub keepalive: u16,
}

/// The tunnel name for `system`: what the apps and `wg-quick` accept as an interface name.
pub fn tunnel_name(system: &str) -> String {
    let name: String = system
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '=' | '+' | '.' | '-'))
        .take(15)
        .collect();
    if name.is_empty() {
        "enclave".to_owned()
    } else {
        name
    }
}

/// Renders the configuration of the app device whose compiled view is `view`, at `revision`
/// of the network. `private_key` is written into `[Interface]` when given (only when the server
/// made the key pair, once); otherwise a comment says where it comes from.
pub fn render(view: &View, revision: i64, private_key: Option<&str>) -> AppConfig {
    let mut notes = Vec::new();
    if !view.enabled {
        notes.push(format!(
            "{} is not approved or is switched off: it has no tunnels",
            view.system
        ));
    }
    let usable = |name: &str| {
        view.peers
            .get(name)
            .is_some_and(|p| p.endpoint.is_some() && p.preshared_key_file.is_none())
    };
    // Each route to the first candidate the app can reach.
    let mut routed: BTreeMap<&str, BTreeSet<Ipv4Net>> = BTreeMap::new();
    for (subnet, route) in &view.routes {
        let names: Vec<&str> = route
            .candidates
            .iter()
            .map(|c| c.gateway.as_str())
            .collect();
        match names.iter().position(|n| usable(n)) {
            Some(i) => {
                routed.entry(names[i]).or_default().insert(*subnet);
                let others: Vec<&str> = names
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, n)| *n)
                    .collect();
                if !others.is_empty() {
                    notes.push(format!(
                        "{subnet} goes through {} only: the app cannot fail over to {}",
                        names[i],
                        others.join(", ")
                    ));
                }
            }
            None => notes.push(format!(
                "{subnet} is granted but none of its gateways ({}) can be reached by the app",
                names.join(", ")
            )),
        }
    }
    let mut peers = Vec::new();
    for (name, peer) in &view.peers {
        let Some(endpoint) = peer.endpoint else {
            notes.push(format!(
                "{name} is left out: its endpoint is not known (set it with `enclave-control \
                 systems edit {name} --endpoint ADDRESS:PORT`)"
            ));
            continue;
        };
        if peer.preshared_key_file.is_some() {
            notes.push(format!(
                "{name} is left out: the network gives this pair a pre-shared key, which the \
                 server does not hold"
            ));
            continue;
        }
        let gateway_for = routed.remove(name.as_str()).unwrap_or_default();
        let mut allowed_ips = peer.allowed_ips.clone();
        allowed_ips.extend(gateway_for.iter().copied());
        peers.push(AppPeer {
            name: name.clone(),
            public_key: peer.public_key.clone(),
            endpoint,
            allowed_ips,
            gateway_for,
            keepalive: peer
                .keepalive
                .filter(|k| *k > 0)
                .unwrap_or(enclave_policy::DEFAULT_KEEPALIVE),
        });
    }
    let text = write_file(view, revision, private_key, &peers, &notes);
    AppConfig {
        text: text.into(),
        file_name: format!("{}.conf", tunnel_name(&view.system)),
        private_key_included: private_key.is_some(),
        peers,
        notes,
    }
}

fn write_file(
    view: &View,
    revision: i64,
    private_key: Option<&str>,
    peers: &[AppPeer],
    notes: &[String],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# {}: a device with the WireGuard app, configured by enclave-control (network revision {revision}).",
        view.system
    );
    out.push_str(
        "# The gateways enforce its policies. Get a new file after its policies or gateways change.\n",
    );
    for note in notes {
        let _ = writeln!(out, "# Note: {note}.");
    }
    out.push_str("\n[Interface]\n");
    match private_key {
        Some(key) => {
            let _ = writeln!(out, "PrivateKey = {key}");
        }
        None => out.push_str(
            "# PrivateKey = the private key of the pair the app made (the server never has it)\n",
        ),
    }
    let _ = writeln!(out, "Address = {}/32", view.address);
    for peer in peers {
        out.push('\n');
        if peer.gateway_for.is_empty() {
            let _ = writeln!(out, "# {}", peer.name);
        } else {
            let subnets: Vec<String> = peer.gateway_for.iter().map(ToString::to_string).collect();
            let _ = writeln!(out, "# {} (gateway for {})", peer.name, subnets.join(", "));
        }
        let allowed: Vec<String> = peer.allowed_ips.iter().map(ToString::to_string).collect();
        let _ = write!(
            out,
            "[Peer]\nPublicKey = {}\nEndpoint = {}\nAllowedIPs = {}\nPersistentKeepalive = {}\n",
            peer.public_key,
            peer.endpoint,
            allowed.join(", "),
            peer.keepalive
        );
    }
    out
}

/// The configuration of the app device `name` of `state`, whose definition validated to
/// `network`, with `private_key` when the server made the pair just now.
///
/// # Errors
/// No such system (`NotFound`), or it is not an app device (`Invalid`, field `name`: its
/// agent gets its configuration from the server).
pub fn for_system(
    state: &State,
    network: &Network,
    name: &str,
    private_key: Option<&str>,
) -> Result<AppConfig, Refusal> {
    let system = state.systems.get(name).ok_or_else(|| Refusal::NotFound {
        what: "system",
        name: name.to_owned(),
    })?;
    if !system.is_app_device() {
        return Err(problem(
            "name",
            format!(
                "{name} is not a device added with the WireGuard app: its agent gets its \
                 configuration from the server"
            ),
        ));
    }
    let view = enclave_policy::compile(network, name)
        .map_err(|e| problem("name", format!("cannot compile the view of {name}: {e}")))?;
    Ok(render(&view, state.revision, private_key))
}

/// The lines of a `wg-quick` file that `wg setconf` takes: `wg-quick`'s own keys (`Address`,
/// `DNS`, `MTU`, `Table`, `PreUp`, …) and comments left out.
pub fn setconf_text(wg_quick: &str) -> String {
    const WG_QUICK_ONLY: [&str; 9] = [
        "address",
        "dns",
        "mtu",
        "table",
        "preup",
        "postup",
        "predown",
        "postdown",
        "saveconfig",
    ];
    let mut out = String::new();
    for line in wg_quick.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let key = trimmed
            .split('=')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if trimmed.contains('=') && WG_QUICK_ONLY.contains(&key.as_str()) {
            continue;
        }
        out.push_str(trimmed);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;
