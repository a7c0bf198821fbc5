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

/// The setting for a default route through the tunnel without a routing loop (wg-quick's way).
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

    /// Every route to install, the default route's one included, destinations truncated to
    /// their prefix (the kernel stores `10.1.2.3/16` as `10.1.0.0/16`).
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

    /// The policy rules to install.
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
        let ours = format!(
            "our route {} (table {}, metric {})",
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Routes to add, in order.
    pub add_routes: Vec<Route>,
    /// Routes of ours to remove.
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
        self.add_routes.is_empty()
            && self.remove_routes.is_empty()
            && self.add_rules.is_empty()
            && self.remove_rules.is_empty()
    }
}

/// Diffs `desired` against the kernel's routes and rules.
///
/// `tunnel` is the tunnel interface's index, or `None` when it does not exist (then no route can
/// be added, and every route of ours is stale). Ours are those with `protocol == PROTOCOL_ENCLAVE`;
/// nothing else is ever put in `remove_*`.
pub fn plan(
    desired: &Desired,
    tunnel: Option<u32>,
    routes: &[KernelRoute],
    rules: &[KernelRule],
) -> Plan {
    let mut out = Plan::default();
    let wanted = match tunnel {
        Some(_) => desired.all_routes(),
        None => BTreeSet::new(),
    };
    let is_ours = |r: &KernelRoute| r.protocol == PROTOCOL_ENCLAVE && r.kind == RTN_UNICAST;
    let key = |r: &KernelRoute| Route {
        dst: r.dst,
        table: r.table,
        metric: r.metric,
    };

    // Ours, on the tunnel, exactly as wanted: keep. Every other route of ours goes. Removals
    // are tracked by position: the kernel can hold two identical routes of ours.
    let mut present = BTreeSet::new();
    let mut removed = BTreeSet::new();
    for (i, r) in routes.iter().enumerate().filter(|(_, r)| is_ours(r)) {
        let k = key(r);
        if tunnel.is_some() && r.oif == tunnel && wanted.contains(&k) && present.insert(k) {
            continue;
        }
        removed.insert(i);
    }

    for want in &wanted {
        let mut equal = false;
        for theirs in routes.iter().filter(|r| !is_ours(r)) {
            if theirs.table != want.table {
                continue;
            }
            if theirs.oif.is_some() && theirs.oif == tunnel {
                // Another program's identical route on our tunnel already does our route's job,
                // and the kernel would refuse ours as a duplicate: leave ours out, say so.
                if theirs.dst == want.dst && theirs.metric == want.metric {
                    equal = true;
                    out.conflicts.push(Conflict {
                        ours: *want,
                        theirs: theirs.clone(),
                        kind: ConflictKind::Equal,
                    });
                }
                continue;
            }
            // Only unicast, blackhole, unreachable and prohibit routes steer traffic we would
            // carry; local and broadcast entries live in the local table anyway.
            if !matches!(theirs.kind, 1 | 6 | 7 | 8) {
                continue;
            }
            let kind = if theirs.dst == want.dst {
                equal = true;
                ConflictKind::Equal
            } else if want.dst.contains(&theirs.dst) && want.dst.prefix_len() > 0 {
                ConflictKind::MoreSpecific
            } else {
                continue;
            };
            out.conflicts.push(Conflict {
                ours: *want,
                theirs: theirs.clone(),
                kind,
            });
        }
        if !equal && !present.contains(want) {
            out.add_routes.push(*want);
        }
    }
    // A route of ours that a foreign equal route now shadows is not wanted any more.
    let left_out: BTreeSet<Route> = out
        .conflicts
        .iter()
        .filter(|c| c.kind == ConflictKind::Equal)
        .map(|c| c.ours)
        .collect();
    for (i, r) in routes.iter().enumerate().filter(|(_, r)| is_ours(r)) {
        if left_out.contains(&key(r)) {
            removed.insert(i);
        }
    }
    out.remove_routes = removed.into_iter().map(|i| routes[i].clone()).collect();

    // Rules: only when the tunnel exists do we want any.
    let wanted_rules = match tunnel {
        Some(_) => desired.rules(),
        None => BTreeSet::new(),
    };
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
    out.remove_routes.sort();
    out.conflicts.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TUN: u32 = 7;
    const ETH: u32 = 2;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn kroute(dst: &str, table: u32, oif: u32, protocol: u8) -> KernelRoute {
        KernelRoute {
            dst: net(dst),
            table,
            metric: 0,
            oif: Some(oif),
            gateway: None,
            protocol,
            kind: RTN_UNICAST,
            scope: 0,
        }
    }

    fn desired(routes: &[&str]) -> Desired {
        Desired {
            routes: routes.iter().map(|r| Route::main(net(r))).collect(),
            default_route: None,
        }
    }

    #[test]
    fn adds_missing_routes_on_an_empty_table() {
        let p = plan(
            &desired(&["10.1.0.0/16", "10.2.0.0/16"]),
            Some(TUN),
            &[],
            &[],
        );
        assert_eq!(
            p.add_routes,
            vec![
                Route::main(net("10.1.0.0/16")),
                Route::main(net("10.2.0.0/16"))
            ]
        );
        assert!(p.remove_routes.is_empty() && p.conflicts.is_empty());
    }

    #[test]
    fn keeps_present_routes_and_removes_ours_no_longer_wanted() {
        let kernel = vec![
            kroute("10.1.0.0/16", TABLE_MAIN, TUN, PROTOCOL_ENCLAVE),
            kroute("10.9.0.0/16", TABLE_MAIN, TUN, PROTOCOL_ENCLAVE),
        ];
        let p = plan(&desired(&["10.1.0.0/16"]), Some(TUN), &kernel, &[]);
        assert!(p.add_routes.is_empty());
        assert_eq!(p.remove_routes, vec![kernel[1].clone()]);
    }

    #[test]
    fn never_removes_foreign_routes_even_on_the_tunnel() {
        let kernel = vec![
            kroute("10.9.0.0/16", TABLE_MAIN, TUN, 4), // `ip route add ... proto static`
            kroute("10.8.0.0/16", TABLE_MAIN, TUN, 3), // boot
        ];
        let p = plan(&Desired::default(), Some(TUN), &kernel, &[]);
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn removes_duplicates_of_ours_and_ours_on_a_stale_interface() {
        let kernel = vec![
            kroute("10.1.0.0/16", TABLE_MAIN, TUN, PROTOCOL_ENCLAVE),
            kroute("10.1.0.0/16", TABLE_MAIN, TUN, PROTOCOL_ENCLAVE),
            kroute("10.2.0.0/16", TABLE_MAIN, 99, PROTOCOL_ENCLAVE),
        ];
        let p = plan(
            &desired(&["10.1.0.0/16", "10.2.0.0/16"]),
            Some(TUN),
            &kernel,
            &[],
        );
        assert_eq!(p.add_routes, vec![Route::main(net("10.2.0.0/16"))]);
        assert_eq!(p.remove_routes, vec![kernel[0].clone(), kernel[2].clone()]);
    }

    #[test]
    fn what_cannot_work_is_refused_with_a_reason() {
        let mut d = desired(&["0.0.0.0/0"]);
        assert_eq!(
            d.check().unwrap_err().to_string(),
            "a route to 0.0.0.0/0 in table 254 would loop the tunnel's own traffic: use the DefaultRoute setting instead"
        );
        d.routes.clear();
        d.default_route = Some(DefaultRoute {
            fwmark: 51820,
            table: 51820,
            priority: 51820,
        });
        assert_eq!(
            d.check().unwrap_err().to_string(),
            "the default route's rules at priorities 51820 and 51821 must come before the main table's rule (32766): choose a priority below 32765"
        );
        d.default_route = Some(DefaultRoute::default());
        assert!(d.check().is_ok());
    }

    #[test]
    fn destinations_are_compared_by_their_prefix() {
        let kernel = vec![kroute("10.1.0.0/16", TABLE_MAIN, TUN, PROTOCOL_ENCLAVE)];
        let mut d = Desired::default();
        d.routes.insert(Route {
            dst: net("10.1.2.3/16"),
            table: TABLE_MAIN,
            metric: 0,
        });
        assert!(plan(&d, Some(TUN), &kernel, &[]).is_empty());
    }

    #[test]
    fn metric_and_table_are_part_of_a_route() {
        let kernel = vec![kroute("10.1.0.0/16", TABLE_MAIN, TUN, PROTOCOL_ENCLAVE)];
        let mut d = Desired::default();
        d.routes.insert(Route {
            dst: net("10.1.0.0/16"),
            table: TABLE_MAIN,
            metric: 50,
        });
        let p = plan(&d, Some(TUN), &kernel, &[]);
        assert_eq!(p.add_routes[0].metric, 50);
        assert_eq!(p.remove_routes, kernel);
    }

    #[test]
    fn interface_gone_means_everything_of_ours_goes_and_nothing_is_added() {
        let kernel = vec![kroute("10.1.0.0/16", TABLE_MAIN, TUN, PROTOCOL_ENCLAVE)];
        let rules = vec![KernelRule {
            spec: RuleSpec {
                priority: 1,
                table: 5,
                fwmark: Some(5),
                invert: true,
                suppress_prefixlen: None,
            },
            protocol: PROTOCOL_ENCLAVE,
        }];
        let mut d = desired(&["10.1.0.0/16"]);
        d.default_route = Some(DefaultRoute::default());
        let p = plan(&d, None, &kernel, &rules);
        assert!(p.add_routes.is_empty() && p.add_rules.is_empty());
        assert_eq!(p.remove_routes, kernel);
        assert_eq!(p.remove_rules, rules);
    }

    #[test]
    fn equal_foreign_route_is_reported_and_ours_left_out() {
        let kernel = vec![kroute("192.168.77.0/24", TABLE_MAIN, ETH, 2)];
        let p = plan(&desired(&["192.168.77.0/24"]), Some(TUN), &kernel, &[]);
        assert!(p.add_routes.is_empty());
        assert_eq!(p.conflicts.len(), 1);
        assert_eq!(p.conflicts[0].kind, ConflictKind::Equal);
        assert_eq!(p.conflicts[0].theirs, kernel[0]);
    }

    #[test]
    fn a_route_of_ours_shadowed_later_by_an_equal_foreign_one_is_withdrawn() {
        let kernel = vec![
            kroute("192.168.77.0/24", TABLE_MAIN, TUN, PROTOCOL_ENCLAVE),
            kroute("192.168.77.0/24", TABLE_MAIN, ETH, 2),
        ];
        let p = plan(&desired(&["192.168.77.0/24"]), Some(TUN), &kernel, &[]);
        assert_eq!(p.remove_routes, vec![kernel[0].clone()]);
        assert!(p.add_routes.is_empty());
    }

    #[test]
    fn conflicts_read_as_plain_sentences() {
        let kernel = vec![
            kroute("192.168.77.0/24", TABLE_MAIN, ETH, 2),
            kroute("10.1.2.0/24", TABLE_MAIN, ETH, 4),
        ];
        let p = plan(
            &desired(&["192.168.77.0/24", "10.1.0.0/16"]),
            Some(TUN),
            &kernel,
            &[],
        );
        let text: Vec<String> = p
            .conflicts
            .iter()
            .map(|c| c.describe(Some("eth0")))
            .collect();
        assert_eq!(
            text,
            [
                "our route 10.1.0.0/16 (table 254, metric 0) is installed, but the more specific route 10.1.2.0/24 on eth0 (protocol 4) takes that part elsewhere",
                "our route 192.168.77.0/24 (table 254, metric 0) is left out: another program's route to 192.168.77.0/24 on eth0 (protocol 2) is in the way",
            ]
        );
        assert!(p.conflicts[0].describe(None).contains("on interface 2"));
    }

    #[test]
    fn more_specific_foreign_route_is_reported_and_ours_installed() {
        let kernel = vec![
            kroute("10.1.2.0/24", TABLE_MAIN, ETH, 4),
            kroute("10.0.0.0/8", TABLE_MAIN, ETH, 4), // less specific: no conflict
            kroute("10.1.3.0/24", 100, ETH, 4),       // other table: no conflict
            kroute("10.1.4.0/24", TABLE_MAIN, TUN, 4), // on the tunnel: not a conflict
        ];
        let p = plan(&desired(&["10.1.0.0/16"]), Some(TUN), &kernel, &[]);
        assert_eq!(p.add_routes, vec![Route::main(net("10.1.0.0/16"))]);
        assert_eq!(p.conflicts.len(), 1);
        assert_eq!(p.conflicts[0].theirs.dst, net("10.1.2.0/24"));
        assert_eq!(p.conflicts[0].kind, ConflictKind::MoreSpecific);
    }

    #[test]
    fn an_identical_foreign_route_on_the_tunnel_is_left_alone_and_ours_not_added() {
        let kernel = vec![kroute("10.1.0.0/16", TABLE_MAIN, TUN, 3)];
        let p = plan(&desired(&["10.1.0.0/16"]), Some(TUN), &kernel, &[]);
        assert!(p.add_routes.is_empty() && p.remove_routes.is_empty());
        assert_eq!(p.conflicts.len(), 1);
        assert_eq!(p.conflicts[0].kind, ConflictKind::Equal);
    }

    #[test]
    fn local_and_broadcast_entries_are_not_conflicts() {
        let mut local = kroute("10.1.0.1/32", TABLE_MAIN, ETH, 2);
        local.kind = 2;
        let p = plan(&desired(&["10.1.0.0/16"]), Some(TUN), &[local], &[]);
        assert!(p.conflicts.is_empty());
    }

    #[test]
    fn default_route_goes_into_our_table_with_two_rules() {
        let dr = DefaultRoute {
            fwmark: 51820,
            table: 51820,
            priority: 32000,
        };
        let d = Desired {
            routes: BTreeSet::new(),
            default_route: Some(dr),
        };
        // The main table's default route is not a conflict: it lives in another table.
        let kernel = vec![kroute("0.0.0.0/0", TABLE_MAIN, ETH, 3)];
        let p = plan(&d, Some(TUN), &kernel, &[]);
        assert_eq!(
            p.add_routes,
            vec![Route {
                dst: Ipv4Net::default(),
                table: 51820,
                metric: 0
            }]
        );
        assert!(p.conflicts.is_empty());
        assert_eq!(
            p.add_rules,
            vec![
                RuleSpec {
                    priority: 32000,
                    table: TABLE_MAIN,
                    fwmark: None,
                    invert: false,
                    suppress_prefixlen: Some(0)
                },
                RuleSpec {
                    priority: 32001,
                    table: 51820,
                    fwmark: Some(51820),
                    invert: true,
                    suppress_prefixlen: None
                },
            ]
        );
    }

    #[test]
    fn rules_already_present_are_kept_foreign_rules_untouched() {
        let d = Desired {
            routes: BTreeSet::new(),
            default_route: Some(DefaultRoute::default()),
        };
        let ours: Vec<KernelRule> = d
            .rules()
            .into_iter()
            .map(|spec| KernelRule {
                spec,
                protocol: PROTOCOL_ENCLAVE,
            })
            .collect();
        let mut rules = ours.clone();
        // Someone else's identical-looking rule (wg-quick's, say) is never touched.
        rules.push(KernelRule {
            spec: ours[0].spec,
            protocol: 3,
        });
        let p = plan(&d, Some(TUN), &[], &rules);
        assert!(p.add_rules.is_empty() && p.remove_rules.is_empty());
        // Dropping the default route removes exactly our two rules.
        let p = plan(&Desired::default(), Some(TUN), &[], &rules);
        assert_eq!(p.remove_rules, ours);
    }

    #[test]
    fn reconcile_of_a_thousand_routes_is_idempotent() {
        let mut d = Desired::default();
        for i in 0..1000u32 {
            let dst = Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 | (i << 8)), 24).unwrap();
            d.routes.insert(Route::main(dst));
        }
        let p = plan(&d, Some(TUN), &[], &[]);
        assert_eq!(p.add_routes.len(), 1000);
        let kernel: Vec<KernelRoute> = p
            .add_routes
            .iter()
            .map(|r| KernelRoute {
                dst: r.dst,
                table: r.table,
                metric: r.metric,
                oif: Some(TUN),
                gateway: None,
                protocol: PROTOCOL_ENCLAVE,
                kind: RTN_UNICAST,
                scope: 253,
            })
            .collect();
        assert!(plan(&d, Some(TUN), &kernel, &[]).is_empty());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    const TUN: u32 = 7;

    fn pool() -> Vec<Ipv4Net> {
        [
            "10.1.0.0/16",
            "10.1.2.0/24",
            "10.2.0.0/16",
            "10.0.0.0/8",
            "192.168.77.0/24",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect()
    }

    fn kernel_route() -> impl Strategy<Value = KernelRoute> {
        (
            0..5usize,
            prop::sample::select(vec![TABLE_MAIN, 100]),
            prop::sample::select(vec![0u32, 10]),
            prop::sample::select(vec![TUN, 2, 99]),
            prop::sample::select(vec![PROTOCOL_ENCLAVE, 2, 3, 4]),
        )
            .prop_map(|(i, table, metric, oif, protocol)| KernelRoute {
                dst: pool()[i],
                table,
                metric,
                oif: Some(oif),
                gateway: None,
                protocol,
                kind: RTN_UNICAST,
                scope: 253,
            })
    }

    fn wanted_route() -> impl Strategy<Value = Route> {
        (
            0..5usize,
            prop::sample::select(vec![TABLE_MAIN, 100]),
            prop::sample::select(vec![0u32, 10]),
        )
            .prop_map(|(i, table, metric)| Route {
                dst: pool()[i],
                table,
                metric,
            })
    }

    /// The kernel after carrying out `p`.
    fn carry_out(kernel: &[KernelRoute], p: &Plan) -> Vec<KernelRoute> {
        let mut after: Vec<KernelRoute> = kernel.to_vec();
        for gone in &p.remove_routes {
            let at = after
                .iter()
                .position(|r| r == gone)
                .expect("removes what exists");
            after.remove(at);
        }
        for r in &p.add_routes {
            after.push(KernelRoute {
                dst: r.dst,
                table: r.table,
                metric: r.metric,
                oif: Some(TUN),
                gateway: None,
                protocol: PROTOCOL_ENCLAVE,
                kind: RTN_UNICAST,
                scope: 253,
            });
        }
        after
    }

    proptest! {
        /// Whatever the kernel holds: the plan removes only routes of ours, never adds what the
        /// kernel would refuse as a duplicate, and once carried out there is nothing left to do.
        #[test]
        fn reconcile_touches_only_ours_and_converges(
            kernel in prop::collection::vec(kernel_route(), 0..12),
            wanted in prop::collection::btree_set(wanted_route(), 0..6),
        ) {
            let desired = Desired { routes: wanted, default_route: None };
            let p = plan(&desired, Some(TUN), &kernel, &[]);
            for r in &p.remove_routes {
                prop_assert_eq!(r.protocol, PROTOCOL_ENCLAVE);
            }
            for r in &p.add_routes {
                prop_assert!(!kernel.iter().any(|k| k.dst == r.dst && k.table == r.table
                    && k.metric == r.metric && k.oif == Some(TUN)),
                    "would add a duplicate of {:?}", r);
            }
            let after = carry_out(&kernel, &p);
            let foreign = |v: &[KernelRoute]| -> Vec<KernelRoute> {
                let mut f: Vec<KernelRoute> =
                    v.iter().filter(|r| r.protocol != PROTOCOL_ENCLAVE).cloned().collect();
                f.sort();
                f
            };
            prop_assert_eq!(foreign(&kernel), foreign(&after));
            let again = plan(&desired, Some(TUN), &after, &[]);
            prop_assert!(again.is_empty(), "not converged: {:?}", again);
            // Reset leaves none of ours.
            let reset = plan(&Desired::default(), Some(TUN), &after, &[]);
            let cleared = carry_out(&after, &reset);
            prop_assert!(cleared.iter().all(|r| r.protocol != PROTOCOL_ENCLAVE));
        }
    }
}
