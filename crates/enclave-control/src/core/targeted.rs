//! The targeted check: what an enrolment or an approval change can break, checked against the
//! network of the revision before, instead of rendering and validating the whole definition
//! (an O(systems) text round trip, about 0.4 s at 10,000 systems).
//!
//! Why it is equivalent to the full validation (the rules of `policy check`) for these
//! commands, given that the network before validated (the caller passes its validated network,
//! never one it did not validate):
//! - Flipping a system's approval changes only its `enabled` in the definition. No error of the
//!   validation depends on a system's `enabled`: it only decides which systems carry tags
//!   (`carriers`), and that only feeds warnings ("grants nothing", default route notes). So the
//!   definition stays valid; the new network is the old one with that flag changed.
//! - An enrolment adds one system and changes nothing else in the definition (the key's use
//!   count is not part of it). The errors a system can cause are its own: an empty name, a name
//!   taken, a public key that is not a WireGuard key or is taken, an address outside the
//!   overlay's usable addresses or taken, an empty tag name, an endpoint that does not parse,
//!   a bad gateway subnet. Every other rule (policies naming gateways, pre-shared keys naming
//!   systems, tags, trust requirements) only looks up systems that already validated, and
//!   adding a system cannot remove one. An enrolled system has no endpoint and no gateway
//!   settings; its other fields are checked here by the validator's own rules.
//!
//! Whenever the check is not sure (a field it does not check, a system missing from the old
//! network) it answers `None` and the caller runs the full validation, which also words every
//! refusal. The check never refuses on its own. What it skips is the warnings: a targeted
//! change reports none. `tests::targeted_check_matches_full_validation` runs both on a table
//! of cases and compares the networks.

use std::sync::Arc;

use base64::Engine as _;
use enclave_policy::{Network, System};

use crate::model::State;

/// What a command changed, when it changed the definition in a way the targeted check covers.
#[derive(Debug, Clone)]
pub(crate) enum Targeted {
    /// A new system (an enrolment).
    Added(String),
    /// A system's approval flipped.
    Approval(String),
    /// These systems' endpoints (as peers are given them) changed.
    Endpoints(Vec<String>),
}

/// The network after the change, if the targeted check can vouch that the full validation of
/// `next` accepts it and gives this network; `None` to run the full validation.
pub(crate) fn check(before: &Network, next: &State, change: &Targeted) -> Option<Arc<Network>> {
    match change {
        Targeted::Approval(name) => {
            let system = next.systems.get(name)?;
            let mut network = before.clone();
            network.systems.get_mut(name)?.enabled = system.effective_enabled();
            Some(Arc::new(network))
        }
        // The validator only parses an endpoint; a `SocketAddr` rendered parses back to
        // itself, so the definition stays valid and only these endpoints change.
        Targeted::Endpoints(names) => {
            let mut network = before.clone();
            for name in names {
                let system = next.systems.get(name)?;
                network.systems.get_mut(name)?.endpoint = system.effective_endpoint();
            }
            Some(Arc::new(network))
        }
        Targeted::Added(name) => {
            let system = next.systems.get(name)?;
            if before.systems.contains_key(name)
                || name.trim().is_empty()
                || system.endpoint.is_some()
                || system.gateway.is_some()
                || system.tags.iter().any(|t| t.trim().is_empty())
                || next.settings.overlay != before.overlay
            {
                return None;
            }
            // The validator trims the key before decoding and comparing it.
            let key = system.public_key.trim();
            let decoded = base64::engine::general_purpose::STANDARD.decode(key).ok()?;
            let overlay = before.overlay;
            let address = system.address;
            if decoded.len() != 32
                || !overlay.contains(&address)
                || address == overlay.network()
                || address == overlay.broadcast()
                || before
                    .systems
                    .values()
                    .any(|s| s.public_key == key || s.address == address)
            {
                return None;
            }
            let mut network = before.clone();
            network.systems.insert(
                name.clone(),
                System {
                    name: name.clone(),
                    public_key: key.to_owned(),
                    address,
                    tags: system.tags.clone(),
                    endpoint: None,
                    enabled: system.effective_enabled(),
                    gateway: None,
                },
            );
            Some(Arc::new(network))
        }
    }
}
