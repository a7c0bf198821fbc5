//! The diff on plain values: adds, keeps, removals, conflicts, the default route and its kill
//! switch.

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
    assert!(plan(&desired(&["10.1.2.3/16"]), Some(TUN), &kernel, &[]).is_empty());
}

#[test]
fn metric_and_table_are_part_of_a_route() {
    let kernel = vec![kroute("10.1.0.0/16", TABLE_MAIN, TUN, PROTOCOL_ENCLAVE)];
    let mut d = Desired::default();
    d.routes.insert(Route {
        metric: 50,
        ..Route::main(net("10.1.0.0/16"))
    });
    let p = plan(&d, Some(TUN), &kernel, &[]);
    assert_eq!(p.add_routes[0].metric, 50);
    assert_eq!(p.remove_routes, kernel);
}

#[test]
fn interface_gone_means_routes_through_it_go_and_nothing_is_added() {
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
    let p = plan(&desired(&["10.1.0.0/16"]), None, &kernel, &rules);
    assert!(p.add_routes.is_empty() && p.add_unreachable.is_empty() && p.add_rules.is_empty());
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
    // The kill switch comes with it, in the same table, behind it.
    assert_eq!(
        p.add_unreachable,
        vec![Route {
            dst: Ipv4Net::default(),
            table: 51820,
            metric: KILL_SWITCH_METRIC
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
    let ours: Vec<KernelRule> = d.rules().into_iter().map(rule_of_ours).collect();
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

fn with_default_route() -> Desired {
    Desired {
        routes: [Route::main(net("10.1.0.0/16"))].into_iter().collect(),
        default_route: Some(DefaultRoute::default()),
    }
}

/// The kernel's view of what `d` installs with the tunnel at `TUN`: the routes through
/// the tunnel (unless `crashed`: the kernel dropped them with the interface), the kill
/// switch and the rules.
fn installed(d: &Desired, crashed: bool) -> (Vec<KernelRoute>, Vec<KernelRule>) {
    let mut routes = Vec::new();
    if !crashed {
        routes.extend(d.all_routes().into_iter().map(|r| ours_through(r, TUN)));
    }
    routes.extend(d.kill_switch().map(unreachable_of_ours));
    (routes, d.rules().into_iter().map(rule_of_ours).collect())
}

/// Rule `spec` of ours, as the kernel lists it once installed.
pub(super) fn rule_of_ours(spec: RuleSpec) -> KernelRule {
    KernelRule {
        spec,
        protocol: PROTOCOL_ENCLAVE,
    }
}

/// Route `r` of ours through interface `oif`, as the kernel lists it once installed.
pub(super) fn ours_through(r: Route, oif: u32) -> KernelRoute {
    KernelRoute {
        dst: r.dst,
        table: r.table,
        metric: r.metric,
        oif: Some(oif),
        gateway: None,
        protocol: PROTOCOL_ENCLAVE,
        kind: RTN_UNICAST,
        scope: 253,
    }
}

/// The kill switch route `r` as the kernel lists it once installed.
pub(super) fn unreachable_of_ours(r: Route) -> KernelRoute {
    KernelRoute {
        dst: r.dst,
        table: r.table,
        metric: r.metric,
        oif: None,
        gateway: None,
        protocol: PROTOCOL_ENCLAVE,
        kind: RTN_UNREACHABLE,
        scope: 0,
    }
}

fn kill_switch_route() -> Route {
    Route {
        dst: Ipv4Net::default(),
        table: DefaultRoute::default().table,
        metric: KILL_SWITCH_METRIC,
    }
}

#[test]
fn kill_switch_is_added_with_the_default_route_and_only_with_it() {
    let d = with_default_route();
    assert_eq!(d.kill_switch(), Some(kill_switch_route()));
    let p = plan(&d, Some(TUN), &[], &[]);
    assert_eq!(p.add_unreachable, vec![kill_switch_route()]);
    assert_eq!(p.add_routes.len(), 2, "{p:?}");
    assert_eq!(p.add_rules.len(), 2, "{p:?}");
    // Without a default route, no kill switch: subnet routes alone never block anything.
    let p = plan(&desired(&["10.1.0.0/16"]), Some(TUN), &[], &[]);
    assert!(
        p.add_unreachable.is_empty() && p.add_rules.is_empty(),
        "{p:?}"
    );
}

#[test]
fn kill_switch_is_kept_across_reconciles() {
    let d = with_default_route();
    let (routes, rules) = installed(&d, false);
    assert!(plan(&d, Some(TUN), &routes, &rules).is_empty());
    // Another subnet comes and goes: the kill switch and the rules are not touched.
    let mut more = d.clone();
    more.routes.insert(Route::main(net("10.2.0.0/16")));
    let p = plan(&more, Some(TUN), &routes, &rules);
    assert_eq!(p.add_routes, vec![Route::main(net("10.2.0.0/16"))]);
    assert!(
        p.add_unreachable.is_empty() && p.remove_routes.is_empty() && p.remove_rules.is_empty()
    );
}

#[test]
fn after_a_crash_the_kill_switch_and_rules_stay_while_the_tunnel_is_missing() {
    // kill -9: the TUN vanished, and with it the routes through it; a manager that runs
    // now (without the tunnel) keeps the rest: unmarked traffic stays refused.
    let d = with_default_route();
    let (routes, rules) = installed(&d, true);
    let p = plan(&d, None, &routes, &rules);
    assert!(p.is_empty(), "{p:?}");
    // Even with nothing in place, a wanted default route without its tunnel blocks.
    let p = plan(&d, None, &[], &[]);
    assert_eq!(p.add_unreachable, vec![kill_switch_route()]);
    assert_eq!(p.add_rules.len(), 2);
    assert!(p.add_routes.is_empty());
}

#[test]
fn a_restarted_manager_replaces_the_tunnel_routes_and_duplicates_nothing() {
    let d = with_default_route();
    let (routes, rules) = installed(&d, true);
    let p = plan(&d, Some(TUN), &routes, &rules);
    assert_eq!(
        p.add_routes,
        vec![
            Route {
                dst: Ipv4Net::default(),
                table: DefaultRoute::default().table,
                metric: 0
            },
            Route::main(net("10.1.0.0/16")),
        ]
    );
    assert!(p.add_unreachable.is_empty() && p.add_rules.is_empty());
    assert!(p.remove_routes.is_empty() && p.remove_rules.is_empty());
    // Two kill switches of ours (say, made by hand with `ip route append`): one goes.
    let mut twice = routes.clone();
    twice.push(unreachable_of_ours(kill_switch_route()));
    let p = plan(&d, Some(TUN), &twice, &rules);
    assert!(p.add_unreachable.is_empty());
    assert_eq!(
        p.remove_routes,
        vec![unreachable_of_ours(kill_switch_route())]
    );
}

#[test]
fn reset_removes_the_kill_switch_last() {
    let d = with_default_route();
    let (routes, rules) = installed(&d, false);
    let p = plan(&Desired::default(), Some(TUN), &routes, &rules);
    assert_eq!(p.remove_rules, rules);
    assert_eq!(p.remove_routes.len(), 3, "{p:?}");
    assert_eq!(
        p.remove_routes.last(),
        Some(&unreachable_of_ours(kill_switch_route())),
        "the kill switch must go after the routes through the tunnel: {p:?}"
    );
    // Also when the tunnel is gone (reset after a crash).
    let (routes, rules) = installed(&d, true);
    let p = plan(&Desired::default(), None, &routes, &rules);
    assert_eq!(
        p.remove_routes,
        vec![unreachable_of_ours(kill_switch_route())]
    );
    assert_eq!(p.remove_rules, rules);
    assert!(p.add_unreachable.is_empty() && p.add_rules.is_empty());
}

#[test]
fn a_kill_switch_in_an_old_table_is_replaced() {
    let d = with_default_route();
    let mut old = kill_switch_route();
    old.table = 51820;
    let kernel = vec![unreachable_of_ours(old)];
    let p = plan(&d, None, &kernel, &[]);
    assert_eq!(p.add_unreachable, vec![kill_switch_route()]);
    assert_eq!(p.remove_routes, kernel);
}

#[test]
fn foreign_unreachable_routes_are_never_removed_and_only_a_duplicate_keeps_ours_out() {
    let d = with_default_route();
    let table = DefaultRoute::default().table;
    let mut theirs = unreachable_of_ours(kill_switch_route());
    theirs.protocol = 4;
    // Another program's route the kernel would take for a duplicate of ours: reported,
    // ours left out, theirs untouched.
    let p = plan(&d, None, std::slice::from_ref(&theirs), &[]);
    assert!(p.add_unreachable.is_empty() && p.remove_routes.is_empty());
    assert_eq!(p.conflicts.len(), 1);
    assert_eq!(
        (p.conflicts[0].ours_kind, p.conflicts[0].kind),
        (RouteKind::Unreachable, ConflictKind::Equal)
    );
    assert_eq!(
        p.conflicts[0].describe(None),
        format!("our kill switch (unreachable route) 0.0.0.0/0 (table {table}, metric 4294967295) is left out: another program's route to 0.0.0.0/0 of type 7 (protocol 4) is in the way")
    );
    // At another metric it is no conflict for the kill switch (which only fills the gap),
    // though it is one for the route through the tunnel.
    theirs.metric = 100;
    let p = plan(&d, Some(TUN), &[theirs], &[]);
    assert_eq!(p.add_unreachable, vec![kill_switch_route()]);
    assert!(p.conflicts.iter().all(|c| c.ours_kind == RouteKind::Tunnel));
    assert!(p.remove_routes.is_empty());
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
    let kernel: Vec<KernelRoute> = p.add_routes.iter().map(|r| ours_through(*r, TUN)).collect();
    assert!(plan(&d, Some(TUN), &kernel, &[]).is_empty());
}
