//! Choosing the gateway for each routed subnet, and failing over (sans-IO).
//!
//! A sender probes every gateway that policy gives it, every [`PROBE_INTERVAL`]. A gateway is
//! *up* from its first acknowledgement until [`DEAD_AFTER`] passes without one. Each subnet uses
//! the gateway that came up first among those that advertise it, keeps it while it stays up and
//! keeps advertising the subnet, and otherwise moves to the best remaining one. When the first
//! gateway returns nothing moves back (no flapping), unless policy gives it a strictly higher
//! priority.
//!
//! The shell calls [`Selector::handle_message`] for each acknowledgement that arrives,
//! [`Selector::handle_timeout`] when [`Selector::poll_timeout`] says, sends what
//! [`Selector::poll_transmit`] returns, and applies what [`Selector::poll_event`] reports (the
//! subnet's allowed IPs and route move to the new gateway).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;
use serde::Serialize;

use crate::control::Message;

/// How often a sender probes each candidate gateway.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// A gateway that has not acknowledged a probe for this long is down. With probes every
/// [`PROBE_INTERVAL`] this is three lost in a row plus scheduling slack, which keeps failover
/// well under a second while one lost datagram does not trigger it.
pub const DEAD_AFTER: Duration = Duration::from_millis(350);
/// Probes remembered per gateway for round-trip times.
const OUTSTANDING: usize = 16;

/// One gateway that policy offers for a subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The gateway system's name.
    pub gateway: String,
    /// A higher priority is preferred and takes a subnet back when it returns; equal
    /// priorities never take a subnet from a working gateway.
    pub priority: u32,
}

/// Why a subnet uses the gateway it uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Reason {
    /// No gateway that advertises the subnet is up.
    NoGateway,
    /// It was the first gateway with which a connection was established.
    FirstConnected,
    /// The previous gateway stopped answering or stopped advertising the subnet.
    FailedOver {
        /// The previous gateway.
        from: String,
        /// When the move happened.
        #[serde(skip)]
        at: Option<Instant>,
    },
    /// It has a higher priority than the gateway used before.
    Priority {
        /// The previous gateway.
        from: String,
    },
}

/// A subnet changed gateway (or lost or got its first one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The subnet.
    pub subnet: Ipv4Net,
    /// The gateway used before, if any.
    pub from: Option<String>,
    /// The gateway used now, if any.
    pub to: Option<String>,
    /// Why.
    pub reason: Reason,
}

/// What status shows for one gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatewayState {
    /// Whether it answers probes.
    pub up: bool,
    /// The subnets it advertised last.
    pub advertised: BTreeSet<Ipv4Net>,
    /// The round-trip time of the last acknowledged probe.
    pub rtt: Option<Duration>,
    /// It answered before and is silent now.
    pub lost: bool,
}

/// What status shows for one routed subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubnetState {
    /// The gateway in use, if any.
    pub active: Option<String>,
    /// Why that one.
    pub reason: Reason,
    /// The gateways policy offers, in order.
    pub candidates: Vec<String>,
}

#[derive(Debug)]
struct Gateway {
    priority: u32,
    answered_once: bool,
    up_since: Option<Instant>,
    last_ack: Option<Instant>,
    advertised: BTreeSet<Ipv4Net>,
    outstanding: VecDeque<(u64, Instant)>,
    rtt: Option<Duration>,
}

#[derive(Debug)]
struct Subnet {
    candidates: Vec<Candidate>,
    active: Option<String>,
    reason: Reason,
}

/// The gateway selector of one sender.
#[derive(Debug, Default)]
pub struct Selector {
    gateways: BTreeMap<String, Gateway>,
    subnets: BTreeMap<Ipv4Net, Subnet>,
    next_probe: Option<Instant>,
    next_id: u64,
    transmits: VecDeque<(String, Message)>,
    events: VecDeque<Change>,
}

impl Selector {
    /// A selector with nothing to route.
    pub fn new() -> Self {
        Self::default()
    }

    /// A selector whose probe ids start after `first` (the shell passes a random number, so
    /// that ids cannot be guessed from the agent's start).
    pub fn with_first_probe_id(first: u64) -> Self {
        Self {
            next_id: first,
            ..Self::default()
        }
    }

    /// Sets the subnets to route and their candidate gateways (from the compiled policy view).
    /// Gateways that stay keep their state; subnets that stay keep their gateway if it is still
    /// a candidate. Call it at start and after every reload.
    pub fn set_plan(&mut self, plan: BTreeMap<Ipv4Net, Vec<Candidate>>, now: Instant) {
        let wanted: BTreeMap<&str, u32> = plan
            .values()
            .flatten()
            .map(|c| (c.gateway.as_str(), c.priority))
            .collect();
        self.gateways
            .retain(|name, _| wanted.contains_key(name.as_str()));
        for (name, priority) in &wanted {
            let gateway = self.gateways.entry((*name).to_owned()).or_insert(Gateway {
                priority: *priority,
                answered_once: false,
                up_since: None,
                last_ack: None,
                advertised: BTreeSet::new(),
                outstanding: VecDeque::new(),
                rtt: None,
            });
            gateway.priority = *priority;
        }
        let old = std::mem::take(&mut self.subnets);
        for (subnet, candidates) in plan {
            let (active, reason) = match old.get(&subnet) {
                Some(s)
                    if s.active
                        .as_ref()
                        .is_some_and(|a| candidates.iter().any(|c| &c.gateway == a)) =>
                {
                    (s.active.clone(), s.reason.clone())
                }
                _ => (None, Reason::NoGateway),
            };
            self.subnets.insert(
                subnet,
                Subnet {
                    candidates,
                    active,
                    reason,
                },
            );
        }
        for (subnet, gone) in old {
            if !self.subnets.contains_key(&subnet) && gone.active.is_some() {
                self.events.push_back(Change {
                    subnet,
                    from: gone.active,
                    to: None,
                    reason: Reason::NoGateway,
                });
            }
        }
        if self.next_probe.is_none() && !self.gateways.is_empty() {
            self.next_probe = Some(now);
        }
        self.recompute(now);
    }

    /// Handles a control message from `gateway` (identified by the overlay address it came from).
    pub fn handle_message(&mut self, gateway: &str, message: Message, now: Instant) {
        let Message::Ack { id, subnets } = message else {
            return;
        };
        let Some(gw) = self.gateways.get_mut(gateway) else {
            return;
        };
        if let Some(pos) = gw
            .outstanding
            .iter()
            .position(|(sent_id, _)| *sent_id == id)
        {
            let (_, sent) = gw.outstanding[pos];
            gw.rtt = Some(now.saturating_duration_since(sent));
            gw.outstanding.drain(..=pos);
        } else {
            // Not an answer to a probe of ours (or a very late one): it proves nothing.
            return;
        }
        gw.last_ack = Some(now);
        gw.answered_once = true;
        gw.up_since.get_or_insert(now);
        gw.advertised = subnets.into_iter().collect();
        self.recompute(now);
    }

    /// When [`Selector::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let deaths = self
            .gateways
            .values()
            .filter(|g| g.up_since.is_some())
            .filter_map(|g| g.last_ack.map(|t| t + DEAD_AFTER));
        self.next_probe.into_iter().chain(deaths).min()
    }

    /// Sends the probes that are due and marks silent gateways down.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.next_probe.is_some_and(|t| t <= now) {
            for (name, gw) in &mut self.gateways {
                self.next_id = self.next_id.wrapping_add(1);
                gw.outstanding.push_back((self.next_id, now));
                if gw.outstanding.len() > OUTSTANDING {
                    gw.outstanding.pop_front();
                }
                self.transmits
                    .push_back((name.clone(), Message::Probe { id: self.next_id }));
            }
            self.next_probe = (!self.gateways.is_empty()).then_some(now + PROBE_INTERVAL);
        }
        let mut changed = false;
        for gw in self.gateways.values_mut() {
            if gw.up_since.is_some() && gw.last_ack.is_some_and(|t| now >= t + DEAD_AFTER) {
                gw.up_since = None;
                gw.advertised.clear();
                gw.rtt = None;
                changed = true;
            }
        }
        if changed {
            self.recompute(now);
        }
    }

    /// The next probe to send: (gateway name, message).
    pub fn poll_transmit(&mut self) -> Option<(String, Message)> {
        self.transmits.pop_front()
    }

    /// The next change of a subnet's gateway.
    pub fn poll_event(&mut self) -> Option<Change> {
        self.events.pop_front()
    }

    /// The gateway `subnet` uses now.
    pub fn active(&self, subnet: &Ipv4Net) -> Option<&str> {
        self.subnets.get(subnet)?.active.as_deref()
    }

    /// Every routed subnet's state, for status.
    pub fn subnets(&self) -> BTreeMap<Ipv4Net, SubnetState> {
        self.subnets
            .iter()
            .map(|(net, s)| {
                (
                    *net,
                    SubnetState {
                        active: s.active.clone(),
                        reason: s.reason.clone(),
                        candidates: s.candidates.iter().map(|c| c.gateway.clone()).collect(),
                    },
                )
            })
            .collect()
    }

    /// Every gateway's state, for status.
    pub fn gateways(&self) -> BTreeMap<String, GatewayState> {
        self.gateways
            .iter()
            .map(|(name, g)| {
                (
                    name.clone(),
                    GatewayState {
                        up: g.up_since.is_some(),
                        advertised: g.advertised.clone(),
                        rtt: g.rtt,
                        lost: g.answered_once && g.up_since.is_none(),
                    },
                )
            })
            .collect()
    }

    fn recompute(&mut self, now: Instant) {
        let gateways = &self.gateways;
        let serves = |name: &str, subnet: &Ipv4Net| {
            gateways.get(name).is_some_and(|g| {
                g.up_since.is_some() && g.advertised.iter().any(|a| a.contains(subnet))
            })
        };
        for (subnet, state) in &mut self.subnets {
            let eligible: Vec<&Candidate> = state
                .candidates
                .iter()
                .filter(|c| serves(&c.gateway, subnet))
                .collect();
            // The best: highest priority, then the one that came up first, then policy order.
            let best = eligible.iter().copied().min_by_key(|c| {
                let up = gateways.get(&c.gateway).and_then(|g| g.up_since);
                (std::cmp::Reverse(c.priority), up)
            });
            let current = state.active.clone();
            let next = match (&current, best) {
                (Some(a), Some(b)) if serves(a, subnet) => {
                    let prio = |n: &str| {
                        state
                            .candidates
                            .iter()
                            .find(|c| c.gateway == n)
                            .map_or(0, |c| c.priority)
                    };
                    if b.gateway != *a && b.priority > prio(a) {
                        Some((b.gateway.clone(), Reason::Priority { from: a.clone() }))
                    } else {
                        None
                    }
                }
                (Some(a), Some(b)) => Some((
                    b.gateway.clone(),
                    Reason::FailedOver {
                        from: a.clone(),
                        at: Some(now),
                    },
                )),
                (None, Some(b)) => Some((b.gateway.clone(), Reason::FirstConnected)),
                (Some(_), None) => {
                    state.active = None;
                    state.reason = Reason::NoGateway;
                    self.events.push_back(Change {
                        subnet: *subnet,
                        from: current.clone(),
                        to: None,
                        reason: Reason::NoGateway,
                    });
                    None
                }
                (None, None) => None,
            };
            if let Some((to, reason)) = next {
                state.active = Some(to.clone());
                state.reason = reason.clone();
                self.events.push_back(Change {
                    subnet: *subnet,
                    from: current,
                    to: Some(to),
                    reason,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
