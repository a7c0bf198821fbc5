//! The sans-IO core: what is wanted, what the kernel has, and the difference.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The route protocol id (`rtm_protocol`, `FRA_PROTOCOL`) that marks our routes and rules.
///
/// 0x45 (69, "E") is not assigned in iproute2's `rt_protos` nor used by the common routing
/// daemons (zebra 11, bird 12, dhcp 16, keepalived 18, babel 42, openr 99, bgp 186..eigrp 192).
/// `ip route show proto 69` lists what we made.
pub const PROTOCOL_ENCLAVE: u8 = 0x45;

/// The kernel's main routing table.
pub const TABLE_MAIN: u32 = 254;

/// `RTN_UNICAST`: an ordinary route.
const RTN_UNICAST: u8 = 1;

/// `RTN_UNREACHABLE`: the kernel refuses what matches with "no route to host".
pub(crate) const RTN_UNREACHABLE: u8 = 7;

/// The metric of the kill switch's `unreachable` default route: the worst there is, so that
/// any route through the tunnel in the same table wins while it exists.
pub const KILL_SWITCH_METRIC: u32 = u32::MAX;

/// One route through the tunnel interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Route {
    /// The destination.
    pub dst: Ipv4Net,
    /// The routing table (254 is main).
    pub table: u32,
    /// The route metric (`RTA_PRIORITY`).
    pub metric: u32,
}

impl Route {
    /// A route in the main table with metric 0.
    pub fn main(dst: Ipv4Net) -> Self {
        Route {
            dst: dst.trunc(),
            table: TABLE_MAIN,
            metric: 0,
        }
    }
}

/// The setting for a default route through the tunnel without a routing loop (wg-quick's way),
/// with a kill switch.
///
/// Besides the route through the tunnel, the table gets an `unreachable` default route of ours
/// at [`KILL_SWITCH_METRIC`]. It has no interface, so it stays when the tunnel interface
/// vanishes (the agent crashed): the rules keep sending unmarked traffic to the table, and the
/// table refuses it instead of letting it fall through to the main table's default route in
/// clear. Only a plan without the default route (a clean stop, `reset`) removes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultRoute {
    /// The mark the data plane puts on its own UDP socket (`SO_MARK`); marked packets skip the
    /// tunnel's table.
    pub fwmark: u32,
    /// The table of ours that holds the default route.
    pub table: u32,
    /// The priority of the `lookup main suppress_prefixlength 0` rule; the `not fwmark` rule
    /// takes the next one. Both must come before the kernel's `lookup main` rule (32766), or
    /// main's default route would always win.
    pub priority: u32,
}

impl Default for DefaultRoute {
    /// fwmark and table 0x4543 (17731), rules at priorities 17730 and 17731.
    fn default() -> Self {
        DefaultRoute {
            fwmark: 0x4543,
            table: 0x4543,
            priority: 0x4542,
        }
    }
}

/// Everything the route manager should have in place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    /// Routes through the tunnel interface.
    pub routes: BTreeSet<Route>,
    /// A default route through the tunnel, if wanted.
    pub default_route: Option<DefaultRoute>,
}

/// The priority of the kernel's default `lookup main` rule.
const RULE_PRIORITY_MAIN: u32 = 32766;

impl Desired {
    /// Refuses what cannot work: a plain route to 0.0.0.0/0 (it would loop the tunnel's own
    /// traffic), and default route rules that come after the main table's rule.
    pub fn check(&self) -> crate::Result<()> {
        if let Some(r) = self.routes.iter().find(|r| r.dst.prefix_len() == 0) {
            return Err(crate::Error::DefaultRouteAsPlainRoute { table: r.table });
        }
        if let Some(dr) = self.default_route {
            if dr.priority.saturating_add(1) >= RULE_PRIORITY_MAIN {
                return Err(crate::Error::DefaultRoutePriority {
                    priority: dr.priority,
                });
            }
        }
        Ok(())
    }

    /// Every route to install through the tunnel, the default route's one included,
    /// destinations truncated to their prefix (the kernel stores `10.1.2.3/16` as
    /// `10.1.0.0/16`).
    pub fn all_routes(&self) -> BTreeSet<Route> {
        let mut all: BTreeSet<Route> = self
            .routes
            .iter()
            .map(|r| Route {
                dst: r.dst.trunc(),
                ..*r
            })
            .collect();
        if let Some(dr) = self.default_route {
            all.insert(Route {
                dst: Ipv4Net::default(),
                table: dr.table,
                metric: 0,
            });
        }
        all
    }

    /// The kill switch: the `unreachable` default route in the default route's table, behind
    /// the route through the tunnel. Wanted whenever the default route is, tunnel or not.
    pub fn kill_switch(&self) -> Option<Route> {
        self.default_route.map(|dr| Route {
            dst: Ipv4Net::default(),
            table: dr.table,
            metric: KILL_SWITCH_METRIC,
        })
    }

    /// The policy rules to install. Wanted whenever the default route is, tunnel or not: with
    /// the kill switch they keep unmarked traffic away from the main table's default route.
    pub fn rules(&self) -> BTreeSet<RuleSpec> {
        let mut rules = BTreeSet::new();
        if let Some(dr) = self.default_route {
            rules.insert(RuleSpec {
                priority: dr.priority,
                table: TABLE_MAIN,
                fwmark: None,
                invert: false,
                suppress_prefixlen: Some(0),
            });
            rules.insert(RuleSpec {
                priority: dr.priority.saturating_add(1),
                table: dr.table,
                fwmark: Some(dr.fwmark),
                invert: true,
                suppress_prefixlen: None,
            });
        }
        rules
    }
}

/// A route as the kernel reports it (IPv4 only).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelRoute {
    /// Destination.
    pub dst: Ipv4Net,
    /// Table (`RTA_TABLE`, or `rtm_table`).
    pub table: u32,
    /// Metric (`RTA_PRIORITY`, 0 when absent).
    pub metric: u32,
    /// Output interface index, when it has one.
    pub oif: Option<u32>,
    /// Gateway, when it has one.
    pub gateway: Option<Ipv4Addr>,
    /// `rtm_protocol`.
    pub protocol: u8,
    /// `rtm_type` (1 unicast, 2 local, 3 broadcast, ...).
    pub kind: u8,
    /// `rtm_scope`.
    pub scope: u8,
}

/// A policy routing rule we want (all fields are matched exactly against the kernel's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RuleSpec {
    /// Rule priority.
    pub priority: u32,
    /// Table to look up.
    pub table: u32,
    /// fwmark to match (mask 0xffffffff).
    pub fwmark: Option<u32>,
    /// `not`: match packets that do NOT carry the mark.
    pub invert: bool,
    /// `suppress_prefixlength N`.
    pub suppress_prefixlen: Option<u32>,
}

/// A policy routing rule as the kernel reports it (IPv4 only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelRule {
    /// What it matches and where it goes.
    pub spec: RuleSpec,
    /// `FRA_PROTOCOL`.
    pub protocol: u8,
}

/// What a route of ours does with the packets it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteKind {
    /// Sends them into the tunnel interface (`RTN_UNICAST`, `dev TUNNEL`).
    Tunnel,
    /// Refuses them with "no route to host" (`RTN_UNREACHABLE`, no interface): the kill switch.
    Unreachable,
}

impl RouteKind {
    /// The kind of a route of ours as the kernel reports it, if it is one we make.
    fn of(route: &KernelRoute) -> Option<Self> {
        match route.kind {
            RTN_UNICAST => Some(RouteKind::Tunnel),
            RTN_UNREACHABLE => Some(RouteKind::Unreachable),
            _ => None,
        }
    }
}

/// Why a route of another program conflicts with one of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConflictKind {
    /// The same destination in the same table on another interface, or another program's
    /// identical route on the tunnel itself: we leave ours out.
    Equal,
    /// A more specific destination inside ours: that part goes elsewhere; ours is installed.
    MoreSpecific,
}

/// A foreign route in the way of one of ours.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Conflict {
    /// Our route.
    pub ours: Route,
    /// Whether ours goes through the tunnel or is the kill switch.
    pub ours_kind: RouteKind,
    /// The foreign route.
    pub theirs: KernelRoute,
    /// How they overlap.
    pub kind: ConflictKind,
}

impl Conflict {
    /// The conflict in one plain sentence; `interface` is the name of the foreign route's
    /// interface when known (its index is used otherwise).
    pub fn describe(&self, interface: Option<&str>) -> String {
        let on = match (interface, self.theirs.oif) {
            (Some(name), _) => format!("on {name}"),
            (None, Some(index)) => format!("on interface {index}"),
            (None, None) => format!("of type {}", self.theirs.kind),
        };
        let what = match self.ours_kind {
            RouteKind::Tunnel => "our route",
            RouteKind::Unreachable => "our kill switch (unreachable route)",
        };
        let ours = format!(
            "{what} {} (table {}, metric {})",
            self.ours.dst, self.ours.table, self.ours.metric
        );
        match self.kind {
            ConflictKind::Equal => format!(
                "{ours} is left out: another program's route to {} {on} (protocol {}) is in the way",
                self.theirs.dst, self.theirs.protocol
            ),
            ConflictKind::MoreSpecific => format!(
                "{ours} is installed, but the more specific route {} {on} (protocol {}) takes that part elsewhere",
                self.theirs.dst, self.theirs.protocol
            ),
        }
    }
}

/// What to do to get from the kernel's state to the wanted one.
///
/// Carried out in this order, so that unmarked traffic never finds the default route's table
/// empty while its rules are in place: `add_unreachable`, `add_routes`, `add_rules`, then
/// `remove_rules`, then `remove_routes` (the kill switch last).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Kill-switch (`unreachable`) routes to add, before anything else.
    pub add_unreachable: Vec<Route>,
    /// Routes through the tunnel to add, in order.
    pub add_routes: Vec<Route>,
    /// Routes of ours to remove, the kill switch after the routes through the tunnel.
    pub remove_routes: Vec<KernelRoute>,
    /// Rules to add.
    pub add_rules: Vec<RuleSpec>,
    /// Rules of ours to remove.
    pub remove_rules: Vec<KernelRule>,
    /// Foreign routes in the way; reported, left alone.
    pub conflicts: Vec<Conflict>,
}

impl Plan {
    /// Nothing to change.
    pub fn is_empty(&self) -> bool {
        self.add_unreachable.is_empty()
            && self.add_routes.is_empty()
            && self.remove_routes.is_empty()
            && self.add_rules.is_empty()
            && self.remove_rules.is_empty()
    }
}

/// How a foreign route `theirs` stands in the way of our wanted route `want` of kind `kind`,
/// if it does. `tunnel` is the tunnel's index.
fn conflict_kind(
    kind: RouteKind,
    want: &Route,
    theirs: &KernelRoute,
    tunnel: Option<u32>,
) -> Option<ConflictKind> {
    if theirs.table != want.table {
        return None;
    }
    match kind {
        // The kill switch is a last resort: it overrides nothing, it only fills the gap when
        // nothing else in the table matches. Only a foreign route the kernel would take for a
        // duplicate of it (same destination and metric) keeps it out.
        RouteKind::Unreachable => {
            (theirs.dst == want.dst && theirs.metric == want.metric).then_some(ConflictKind::Equal)
        }
        RouteKind::Tunnel => {
            if theirs.oif.is_some() && theirs.oif == tunnel {
                // Another program's identical route on our tunnel already does our route's
                // job, and the kernel would refuse ours as a duplicate: leave ours out, say so.
                return (theirs.dst == want.dst && theirs.metric == want.metric)
                    .then_some(ConflictKind::Equal);
            }
            // Only unicast, blackhole, unreachable and prohibit routes steer traffic we would
            // carry; local and broadcast entries live in the local table anyway.
            if !matches!(theirs.kind, 1 | 6 | 7 | 8) {
                return None;
            }
            if theirs.dst == want.dst {
                Some(ConflictKind::Equal)
            } else if want.dst.contains(&theirs.dst) && want.dst.prefix_len() > 0 {
                Some(ConflictKind::MoreSpecific)
            } else {
                None
            }
        }
    }
}

/// Diffs `desired` against the kernel's routes and rules.
///
/// `tunnel` is the tunnel interface's index, or `None` when it does not exist. Without it no
/// route through it can be added and every such route of ours is stale; but the default
/// route's kill switch and rules are wanted all the same, so that a vanished tunnel (a crashed
/// agent) never lets traffic meant for it out in clear. Ours are those with
/// `protocol == PROTOCOL_ENCLAVE`; nothing else is ever put in `remove_*`.
pub fn plan(
    desired: &Desired,
    tunnel: Option<u32>,
    routes: &[KernelRoute],
    rules: &[KernelRule],
) -> Plan {
    let mut out = Plan::default();
    let mut wanted: BTreeSet<(RouteKind, Route)> = BTreeSet::new();
    if tunnel.is_some() {
        wanted.extend(
            desired
                .all_routes()
                .into_iter()
                .map(|r| (RouteKind::Tunnel, r)),
        );
    }
    wanted.extend(desired.kill_switch().map(|r| (RouteKind::Unreachable, r)));
    let is_ours = |r: &KernelRoute| r.protocol == PROTOCOL_ENCLAVE;
    let identity = |r: &KernelRoute| {
        RouteKind::of(r).map(|kind| {
            let route = Route {
                dst: r.dst,
                table: r.table,
                metric: r.metric,
            };
            (kind, route)
        })
    };
    // Where a route of that kind must be: on the tunnel, or on no interface at all.
    let in_place = |kind: RouteKind, r: &KernelRoute| match kind {
        RouteKind::Tunnel => tunnel.is_some() && r.oif == tunnel,
        RouteKind::Unreachable => r.oif.is_none(),
    };

    // Ours, in place, exactly as wanted: keep. Every other route of ours goes. Removals are
    // tracked by position: the kernel can hold two identical routes of ours.
    let mut present = BTreeSet::new();
    let mut removed = BTreeSet::new();
    for (i, r) in routes.iter().enumerate().filter(|(_, r)| is_ours(r)) {
        if let Some(id) = identity(r) {
            if in_place(id.0, r) && wanted.contains(&id) && present.insert(id) {
                continue;
            }
        }
        removed.insert(i);
    }

    for (kind, want) in &wanted {
        let mut equal = false;
        for theirs in routes.iter().filter(|r| !is_ours(r)) {
            let Some(conflict) = conflict_kind(*kind, want, theirs, tunnel) else {
                continue;
            };
            equal |= conflict == ConflictKind::Equal;
            out.conflicts.push(Conflict {
                ours: *want,
                ours_kind: *kind,
                theirs: theirs.clone(),
                kind: conflict,
            });
        }
        if !equal && !present.contains(&(*kind, *want)) {
            match kind {
                RouteKind::Tunnel => out.add_routes.push(*want),
                RouteKind::Unreachable => out.add_unreachable.push(*want),
            }
        }
    }
    // A route of ours that a foreign equal route now shadows is not wanted any more.
    let left_out: BTreeSet<(RouteKind, Route)> = out
        .conflicts
        .iter()
        .filter(|c| c.kind == ConflictKind::Equal)
        .map(|c| (c.ours_kind, c.ours))
        .collect();
    for (i, r) in routes.iter().enumerate().filter(|(_, r)| is_ours(r)) {
        if identity(r).is_some_and(|id| left_out.contains(&id)) {
            removed.insert(i);
        }
    }
    out.remove_routes = removed.into_iter().map(|i| routes[i].clone()).collect();
    // The kill switch goes last: until the rules are gone it is what stands between unmarked
    // traffic and the main table's default route.
    out.remove_routes
        .sort_by_key(|r| (r.kind == RTN_UNREACHABLE, r.clone()));

    // Rules: wanted whenever the default route is, with or without the tunnel.
    let wanted_rules = desired.rules();
    let mut present_rules = BTreeSet::new();
    for rule in rules.iter().filter(|r| r.protocol == PROTOCOL_ENCLAVE) {
        if wanted_rules.contains(&rule.spec) && present_rules.insert(rule.spec) {
            continue;
        }
        out.remove_rules.push(*rule);
    }
    out.add_rules = wanted_rules
        .into_iter()
        .filter(|r| !present_rules.contains(r))
        .collect();
    out.conflicts.sort();
    out
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod properties;
