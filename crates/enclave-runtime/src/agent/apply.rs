//! Handing the desired state to the data plane, the route manager and the NAT manager, and
//! taking it back on stop.
//!
//! Each part is given only when it changed (or its last apply failed). The order fails closed:
//!
//! - with our data plane, the peers first (each carries its filter in the data path), then the
//!   NAT manager, which on a gateway installs the rules before it turns forwarding on;
//! - with the external data plane, the NAT manager first: it holds the only filter of the
//!   host's tunnel traffic, so the peers come after it;
//! - when the NAT policy cannot be applied, the agent resets the NAT manager (forwarding back
//!   as it was, our rules removed), says in its status and logs that the gateway does not
//!   forward, and, with the external data plane, gives the tunnel no peers (an unfiltered
//!   tunnel is worse than none); it tries again every [`RETRY_EVERY`];
//! - the routes last.
//!
//! On stop the tunnel goes first (no traffic enters any more), then the NAT manager (forwarding
//! restored, then its rules removed), then the routes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;

use super::Agent;
use crate::config::{DataplaneBackend, NatBackend};
use crate::desired::{desired, Desired, DesiredPeer};
use crate::{Error, Result};

/// How long a part whose apply failed waits before it is tried again.
pub(super) const RETRY_EVERY: Duration = Duration::from_secs(1);

impl Agent {
    /// Applies what changed since the last apply.
    pub(super) fn apply(&mut self) {
        let want = self.want();
        let old = self.applied.take();
        let retry: BTreeSet<&'static str> = std::mem::take(&mut self.failed);
        let changed = |part: &'static str, same: bool| !same || retry.contains(part);

        let external = self.config.dataplane == DataplaneBackend::External;
        let peers_changed = changed("peers", old.as_ref().map(|o| &o.peers) == Some(&want.peers));
        let nat_changed = changed("nat", old.as_ref().map(|o| &o.nat) == Some(&want.nat));

        // Our data plane filters in the data path: its peers go first (a sender's first
        // handshake is not ignored while the NAT rules are being written).
        if !external && peers_changed {
            self.give_peers(&want.peers);
        }
        let nat_failed = nat_changed && {
            match self.apply_nat(want.nat.as_ref()) {
                Ok(()) => {
                    if self.not_forwarding.take().is_some() {
                        tracing::info!("NAT rules applied");
                    }
                    false
                }
                Err(err) => {
                    self.nat_failed(&err);
                    true
                }
            }
        };
        // An external WireGuard filters nothing: its peers come after the host filter, and
        // without the filter it gets none (given again, in full, once the filter is in place).
        if external && nat_failed {
            self.give_peers(&BTreeMap::new());
            self.failed.insert("peers");
        } else if external && peers_changed {
            self.give_peers(&want.peers);
        }

        let routes_same = old
            .as_ref()
            .is_some_and(|o| o.routes == want.routes && o.default_route == want.default_route);
        if changed("routes", routes_same) {
            self.apply_routes(&want);
        }
        self.retry_at = (!self.failed.is_empty()).then(|| Instant::now() + RETRY_EVERY);
        self.applied = Some(want);
        self.applied_generation = self.definition_generation;
    }

    /// The desired state now.
    fn want(&self) -> Desired {
        let active: BTreeMap<Ipv4Net, String> = self
            .selector
            .subnets()
            .into_iter()
            .filter_map(|(net, s)| s.active.map(|a| (net, a)))
            .collect();
        let served = if self.acts_as_gateway() {
            self.served.clone()
        } else {
            BTreeMap::new()
        };
        let mut want = desired(
            &self.view,
            &self.config.interface,
            &active,
            &self.evaluation,
            &served,
        );
        if !self.acts_as_gateway() {
            want.nat = None;
        }
        if self.config.dataplane == DataplaneBackend::External {
            // An external WireGuard does not filter: the NAT manager's host filter does.
            let mut nat = want.nat.take().unwrap_or_else(|| enclave_nat::NatPolicy {
                tunnel_interface: self.config.interface.clone(),
                overlay: self.view.overlay,
                snat: Vec::new(),
                grants: Vec::new(),
                host: None,
            });
            nat.host = Some(crate::desired::host_filter(&want.peers));
            want.nat = Some(nat);
        }
        want
    }

    /// The NAT policy could not be applied: take back whatever the NAT manager had done, so that
    /// nothing forwards without its rules, and say so.
    fn nat_failed(&mut self, err: &Error) {
        self.failed.insert("nat");
        let cause = crate::error::chain(err);
        if let Some(mut nat) = self.nat.take() {
            if let Err(reset) = nat.reset_policy() {
                tracing::error!(error = %crate::error::chain(&Error::Nat(reset)), "could not reset the NAT manager after a failed apply");
            }
        }
        let text = if self.acts_as_gateway() {
            format!(
                "this gateway does not forward: its NAT and forwarding rules could not be applied ({cause}); forwarding is left as it was before the agent and is retried every {} s",
                RETRY_EVERY.as_secs()
            )
        } else {
            format!(
                "the host filter of the external data plane could not be applied ({cause}); the tunnel has no peers until it is, retried every {} s",
                RETRY_EVERY.as_secs()
            )
        };
        if self.not_forwarding.as_deref() != Some(text.as_str()) {
            tracing::error!("{text}");
        }
        self.not_forwarding = Some(text);
    }

    fn apply_routes(&mut self, want: &Desired) {
        let fwmark = self.config.fwmark;
        let desired_routes = enclave_route::Desired {
            routes: want
                .routes
                .iter()
                .map(|d| enclave_route::Route::main(*d))
                .collect(),
            default_route: want.default_route.then(|| enclave_route::DefaultRoute {
                fwmark,
                table: fwmark,
                priority: fwmark.saturating_sub(1),
            }),
        };
        match self.routes.apply(&desired_routes) {
            Ok(report) => {
                for conflict in &report.conflicts {
                    let text = format!("route conflict: {conflict:?}");
                    tracing::warn!("{text}");
                    self.warnings.push(text);
                }
            }
            Err(err) => {
                tracing::error!(error = %err, "routes could not be applied");
                self.failed.insert("routes");
            }
        }
    }

    /// Drops the sessions of gateways that do not answer, so that the next probe starts a new
    /// handshake with whatever answers at their endpoint now. Only those peers are touched: the
    /// others keep their sessions and learned endpoints.
    pub(super) fn reconnect_lost_gateways(&mut self) {
        let lost: BTreeSet<String> = self
            .selector
            .gateways()
            .into_iter()
            .filter(|(_, state)| !state.up)
            .map(|(name, _)| name)
            .collect();
        let Some(applied) = &self.applied else {
            return;
        };
        if self.failed.contains("peers") || self.failed.contains("nat") {
            return;
        }
        let peers: BTreeMap<String, DesiredPeer> = applied
            .peers
            .iter()
            .filter(|(name, _)| lost.contains(*name) && self.psks_ok(name))
            .map(|(name, peer)| (name.clone(), peer.clone()))
            .collect();
        if peers.is_empty() {
            return;
        }
        tracing::debug!(gateways = ?lost, "dropping the sessions of gateways that do not answer");
        let usable: BTreeMap<String, DesiredPeer> = applied
            .peers
            .iter()
            .filter(|(name, _)| self.psks_ok(name))
            .map(|(name, peer)| (name.clone(), peer.clone()))
            .collect();
        let Some(tunnel) = self.tunnel.as_mut() else {
            return;
        };
        if let Err(err) = tunnel.reset_sessions(&usable, &peers, &self.psks) {
            tracing::warn!(error = %err, "could not reset the sessions of lost gateways");
            self.failed.insert("peers");
        }
    }

    fn give_peers(&mut self, peers: &BTreeMap<String, DesiredPeer>) {
        if let Err(err) = self.set_peers(peers) {
            tracing::error!(error = %err, "data plane refused the peers");
            self.failed.insert("peers");
        }
    }

    /// Gives the data plane `peers` with their pre-shared keys; a peer whose key file is
    /// unusable is left out (no tunnel), said in status, and tried again at the next retry.
    fn set_peers(&mut self, peers: &BTreeMap<String, DesiredPeer>) -> Result<()> {
        let loaded = super::psk::load(peers);
        let usable: BTreeMap<String, DesiredPeer> = peers
            .iter()
            .filter(|(name, _)| !loaded.refused.contains_key(*name))
            .map(|(name, peer)| (name.clone(), peer.clone()))
            .collect();
        let refused = loaded.refused;
        if refused != self.refused_peers {
            for text in refused.values() {
                tracing::warn!("{text}");
            }
        }
        if !refused.is_empty() {
            self.failed.insert("peers");
        }
        self.refused_peers = refused;
        self.psks = loaded.keys;
        match self.tunnel.as_mut() {
            Some(tunnel) => tunnel.set_peers(&usable, &self.psks),
            None => Ok(()),
        }
    }

    /// Whether `peer` was given to the data plane (not refused for its pre-shared key).
    fn psks_ok(&self, peer: &str) -> bool {
        !self.refused_peers.contains_key(peer)
    }

    fn apply_nat(&mut self, want: Option<&enclave_nat::NatPolicy>) -> Result<()> {
        match want {
            Some(policy) => {
                if self.nat.is_none() {
                    let external = self.config.dataplane == DataplaneBackend::External;
                    let choice = match self.config.nat {
                        // The host filter of an external data plane is nftables only: no
                        // falling back to iptables, which could not filter it.
                        NatBackend::Auto if external => enclave_nat::BackendChoice::Nftables,
                        NatBackend::Auto => enclave_nat::BackendChoice::Auto,
                        NatBackend::Nftables => enclave_nat::BackendChoice::Nftables,
                        NatBackend::Iptables => enclave_nat::BackendChoice::Iptables(
                            enclave_nat::Flavor::detect().unwrap_or(enclave_nat::Flavor::Legacy),
                        ),
                    };
                    let state = self
                        .config
                        .runtime_dir
                        .join(format!("{}.forwarding", self.config.interface));
                    let manager =
                        enclave_nat::NatManager::new(choice, Some(state)).map_err(Error::Nat)?;
                    tracing::info!(backend = manager.backend_name(), "NAT manager enabled");
                    self.nat = Some(manager);
                }
                match self.nat.as_mut() {
                    Some(nat) => nat.apply_policy(policy).map_err(Error::Nat),
                    None => Ok(()),
                }
            }
            None => {
                if let Some(mut nat) = self.nat.take() {
                    nat.reset_policy().map_err(Error::Nat)?;
                    tracing::info!("NAT rules removed; forwarding restored");
                }
                Ok(())
            }
        }
    }

    /// Takes back everything the agent made, tunnel first.
    pub(super) fn shutdown(&mut self) {
        if let Some(tunnel) = self.tunnel.take() {
            tunnel.stop();
        }
        if let Some(mut nat) = self.nat.take() {
            if let Err(err) = nat.reset_policy() {
                tracing::error!(error = %crate::error::chain(&Error::Nat(err)), "could not remove the NAT rules");
            }
        }
        if let Err(err) = self.routes.reset() {
            tracing::error!(error = %err, "could not remove the routes");
        }
        tracing::info!("stopped; routes and rules of ours removed");
    }
}
