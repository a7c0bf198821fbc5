//! NAT manager: on a gateway, turns IPv4 forwarding on and owns the SNAT and forward-filter
//! rules, given as a plain [`NatPolicy`] value.
//!
//! The shape is Mullvad's firewall: a policy value, [`NatBackend::apply_policy`] and
//! [`NatBackend::reset_policy`], two backends behind the trait.
//!
//! - [`NftBackend`] keeps everything in one table of ours, `ip enclave`, replaced whole in one
//!   atomic netlink batch (add, delete, add the table, then its sets, chains and rules): a NAT
//!   chain `ENCLAVE` (postrouting) with `snat to` the gateway's LAN address, and a forward chain
//!   `ENCLAVE-FORWARD` that accepts new connections only from granted overlay sources to granted
//!   destinations, accepts established/related traffic and drops the rest from the tunnel and
//!   every new connection into it (one way). Address lists are interval sets. Every rule has a
//!   counter and a comment naming it; a rule the kernel rejects fails the whole batch with the
//!   kernel's reason and the rule named.
//! - [`IptablesBackend`] keeps chain `ENCLAVE` in the nat table (jumped to from POSTROUTING) and
//!   `ENCLAVE-FORWARD` in the filter table (jumped to from FORWARD), each table written by one
//!   `iptables-restore --noflush`, with iptables-legacy or iptables-nft.
//! - [`Ruleset`] is the sans-IO core: the table's content decided from the policy, printable in
//!   `nft list` syntax.
//!
//! Both backends read back what they applied and compare it with what they asked for, and reset
//! removes only what is ours. [`NatManager`] picks a backend ([`BackendChoice::Auto`]: nftables
//! when it answers, else iptables) and handles forwarding, failing closed: the rules go in before
//! forwarding is turned on and come out after it is put back; when the host did not forward
//! before us, the forward chain drops whatever is forwarded without touching the tunnel
//! ([`OtherForwarding`]), so that only tunnel traffic is forwarded because of us, also while the
//! agent is down after a crash.
//!
//! Architecture invariant: this crate knows nftables and iptables, and nothing of policies.

#![warn(missing_docs)]

mod error;
mod forwarding;
mod iptables;
mod model;
mod nft;
mod policy;

use std::fmt;
use std::path::PathBuf;

pub use error::{Error, Result};
pub use forwarding::{Forwarding, IP_FORWARD};
/// The network type the policy uses, re-exported so that callers need no `ipnet` of their own.
pub use ipnet::Ipv4Net;
pub use iptables::{Flavor, IptablesBackend};
pub use model::{
    ChainKind, ChainSpec, CtState, Match, OtherForwarding, RuleSpec, Ruleset, SetSpec, Verdict,
    FORWARD_CHAIN, HOST_INPUT_CHAIN, HOST_OUTPUT_CHAIN, NAT_CHAIN, OTHER_FORWARDING_COMMENT, TABLE,
};
pub use nft::{NftBackend, RuleState, TableState};
pub use policy::{
    AddressEntry, AddressSet, ForwardGrant, HostFilter, NatPolicy, PortRange, Protocol, SnatRule,
};

/// A way of putting a [`NatPolicy`] into the kernel.
pub trait NatBackend: fmt::Debug + Send + Sync {
    /// `nftables`, `iptables-legacy` or `iptables-nft`.
    fn name(&self) -> &'static str;
    /// Makes the kernel hold exactly what `policy` says, with `others` deciding what becomes of
    /// forwarded traffic that does not touch the tunnel, replacing what we applied before;
    /// applying the same twice changes nothing. Fails without leaving a partial state: what
    /// was applied before stays in force.
    fn apply(&mut self, policy: &NatPolicy, others: OtherForwarding) -> Result<()>;
    /// [`NatBackend::apply`] on a host that forwarded before us: nothing is added for traffic
    /// between its other interfaces. [`NatManager`] picks the right [`OtherForwarding`] itself.
    fn apply_policy(&mut self, policy: &NatPolicy) -> Result<()> {
        self.apply(policy, OtherForwarding::Untouched)
    }
    /// Removes everything of ours, and nothing else.
    fn reset_policy(&mut self) -> Result<()>;
    /// The rules of ours the kernel holds, chain by chain in order, with their counters (the
    /// guide's troubleshooting: "check that the pkts and bytes counters are incrementing").
    fn rules(&self) -> Result<Vec<RuleState>>;
}

/// Which backend [`NatManager`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// nftables when it answers in this namespace, else the system's iptables.
    #[default]
    Auto,
    /// nftables, through netlink.
    Nftables,
    /// The system's `iptables-restore` of this flavour.
    Iptables(Flavor),
}

/// Forwarding plus one backend.
#[derive(Debug)]
pub struct NatManager {
    backend: Box<dyn NatBackend>,
    forwarding: Forwarding,
}

impl NatManager {
    /// Picks the backend. `state_file` keeps the forwarding value found before our change, so
    /// that a run after a crash still restores it.
    pub fn new(choice: BackendChoice, state_file: Option<PathBuf>) -> Result<NatManager> {
        let backend: Box<dyn NatBackend> = match choice {
            BackendChoice::Nftables => Box::new(NftBackend::new()),
            BackendChoice::Iptables(flavor) => Box::new(IptablesBackend::new(flavor)),
            BackendChoice::Auto => match NftBackend::probe() {
                Ok(()) => Box::new(NftBackend::new()),
                Err(nft) => {
                    tracing::info!(error = %nft, "nftables unusable, falling back to iptables");
                    let flavor = Flavor::detect().ok_or_else(|| Error::NoBackend {
                        nft: nft.to_string(),
                    })?;
                    Box::new(IptablesBackend::new(flavor))
                }
            },
        };
        tracing::debug!(backend = backend.name(), "NAT backend chosen");
        Ok(NatManager::with_backend(
            backend,
            Forwarding::new(state_file),
        ))
    }

    /// A manager over the given backend and forwarding (tests give fakes of both).
    pub fn with_backend(backend: Box<dyn NatBackend>, forwarding: Forwarding) -> NatManager {
        NatManager {
            backend,
            forwarding,
        }
    }

    /// The backend in use.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Applies `policy`, failing closed.
    ///
    /// When `policy` forwards anything (a gateway): the rules first, forwarding last. When the
    /// host did not forward before us, the forward chain also drops whatever is forwarded
    /// between two interfaces that are not the tunnel ([`OtherForwarding::Dropped`]); when it
    /// did, nothing is added for them. If the rules fail, forwarding is left exactly as it was
    /// ([`Error::RulesNotApplied`] says so).
    ///
    /// When it forwards nothing (only the host filter of an external data plane): forwarding
    /// goes back to what it was first, then the rules are applied.
    pub fn apply_policy(&mut self, policy: &NatPolicy) -> Result<()> {
        if !policy.forwards() {
            self.forwarding.restore()?;
            return self.backend.apply(policy, OtherForwarding::Untouched);
        }
        let others = if self.forwarding.before()? {
            OtherForwarding::Untouched
        } else {
            OtherForwarding::Dropped
        };
        if let Err(source) = self.backend.apply(policy, others) {
            return Err(Error::RulesNotApplied {
                backend: self.backend.name(),
                forwarding_on: self.forwarding.is_enabled().ok(),
                source: Box::new(source),
            });
        }
        self.forwarding.enable()
    }

    /// The rules of ours the kernel holds, with their counters.
    pub fn rules(&self) -> Result<Vec<RuleState>> {
        self.backend.rules()
    }

    /// Puts forwarding back as it was, then removes our rules (a clean stop, or the host is no
    /// longer a gateway). If forwarding cannot be put back, the rules stay, so that nothing is
    /// forwarded without them ([`Error::RestoreFirst`]).
    pub fn reset_policy(&mut self) -> Result<()> {
        if let Err(source) = self.forwarding.restore() {
            return Err(Error::RestoreFirst {
                backend: self.backend.name(),
                path: self.forwarding.sysctl_path(),
                source: Box::new(source),
            });
        }
        self.backend.reset_policy()
    }
}

#[cfg(test)]
mod tests;
