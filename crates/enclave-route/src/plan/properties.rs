//! Properties of the diff over arbitrary kernel states.

use super::*;
use proptest::prelude::*;

const TUN: u32 = 7;
const DR_TABLE: u32 = 0x4543;

fn pool() -> Vec<Ipv4Net> {
    [
        "10.1.0.0/16",
        "10.1.2.0/24",
        "10.2.0.0/16",
        "10.0.0.0/8",
        "192.168.77.0/24",
        "0.0.0.0/0",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect()
}

/// Routes through an interface (the tunnel, another one, a stale one) and `unreachable`
/// ones, ours and foreign, in main, another table and the default route's table.
fn kernel_route() -> impl Strategy<Value = KernelRoute> {
    (
        0..6usize,
        prop::sample::select(vec![TABLE_MAIN, 100, DR_TABLE]),
        prop::sample::select(vec![0u32, 10]),
        prop::sample::select(vec![Some(TUN), Some(2), Some(99), None]),
        prop::sample::select(vec![PROTOCOL_ENCLAVE, 2, 3, 4]),
    )
        .prop_map(|(i, table, metric, oif, protocol)| {
            let (kind, metric) = match oif {
                Some(_) => (RTN_UNICAST, metric),
                None => (
                    RTN_UNREACHABLE,
                    metric.max(KILL_SWITCH_METRIC * u32::from(metric == 10)),
                ),
            };
            KernelRoute {
                dst: pool()[i],
                table,
                metric,
                oif,
                gateway: None,
                protocol,
                kind,
                scope: 253,
            }
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

fn kernel_rule() -> impl Strategy<Value = KernelRule> {
    (
        prop::sample::select(vec![0x4542u32, 0x4543, 1000]),
        prop::sample::select(vec![TABLE_MAIN, DR_TABLE]),
        prop::sample::select(vec![PROTOCOL_ENCLAVE, 0, 3]),
        any::<bool>(),
    )
        .prop_map(|(priority, table, protocol, invert)| KernelRule {
            spec: RuleSpec {
                priority,
                table,
                fwmark: invert.then_some(0x4543),
                invert,
                suppress_prefixlen: (!invert).then_some(0),
            },
            protocol,
        })
}

/// `kernel` without one copy of each of `gone` (which must be there).
fn without<T: PartialEq + Clone>(kernel: &[T], gone: &[T]) -> Vec<T> {
    let mut after = kernel.to_vec();
    for g in gone {
        let at = after
            .iter()
            .position(|k| k == g)
            .expect("removes what exists");
        after.remove(at);
    }
    after
}

/// The kernel after carrying out `p`, the tunnel at `tunnel`.
fn carry_out(kernel: &[KernelRoute], p: &Plan, tunnel: Option<u32>) -> Vec<KernelRoute> {
    let mut after = without(kernel, &p.remove_routes);
    after.extend(
        p.add_unreachable
            .iter()
            .copied()
            .map(tests::unreachable_of_ours),
    );
    for r in &p.add_routes {
        let tunnel = tunnel.expect("no route through a missing tunnel is added");
        after.push(tests::ours_through(*r, tunnel));
    }
    after
}

fn carry_out_rules(kernel: &[KernelRule], p: &Plan) -> Vec<KernelRule> {
    let mut after = without(kernel, &p.remove_rules);
    after.extend(p.add_rules.iter().copied().map(tests::rule_of_ours));
    after
}

fn sorted<T: Ord + Clone>(v: impl Iterator<Item = T>) -> Vec<T> {
    let mut v: Vec<T> = v.collect();
    v.sort();
    v
}

proptest! {
    /// Whatever the kernel holds, with or without the tunnel: the plan removes only routes
    /// and rules of ours, never adds what the kernel would refuse as a duplicate, and once
    /// carried out there is nothing left to do; a wanted default route leaves its kill
    /// switch and both rules in place (fail closed) unless another program's route is
    /// where the kill switch would go; reset leaves nothing of ours.
    #[test]
    fn reconcile_touches_only_ours_fails_closed_and_converges(
        kernel in prop::collection::vec(kernel_route(), 0..12),
        rules in prop::collection::vec(kernel_rule(), 0..5),
        wanted in prop::collection::btree_set(wanted_route(), 0..6),
        default_route in any::<bool>(),
        tunnel in prop::sample::select(vec![Some(TUN), None]),
    ) {
        let wanted = wanted.into_iter().filter(|r| r.dst.prefix_len() > 0).collect();
        let desired = Desired {
            routes: wanted,
            default_route: default_route.then(DefaultRoute::default),
        };
        let p = plan(&desired, tunnel, &kernel, &rules);
        for r in &p.remove_routes {
            prop_assert_eq!(r.protocol, PROTOCOL_ENCLAVE);
        }
        for r in &p.remove_rules {
            prop_assert_eq!(r.protocol, PROTOCOL_ENCLAVE);
        }
        for r in &p.add_routes {
            prop_assert!(!kernel.iter().any(|k| k.dst == r.dst && k.table == r.table
                && k.metric == r.metric && k.oif == Some(TUN)),
                "would add a duplicate of {:?}", r);
        }
        for r in &p.add_unreachable {
            prop_assert!(!kernel.iter().any(|k| k.dst == r.dst && k.table == r.table
                && k.metric == r.metric && (k.protocol != PROTOCOL_ENCLAVE
                    || k.kind == RTN_UNREACHABLE)),
                "would add a duplicate of {:?}", r);
        }
        let after = carry_out(&kernel, &p, tunnel);
        let after_rules = carry_out_rules(&rules, &p);
        let foreign = |v: &[KernelRoute]| {
            sorted(v.iter().filter(|r| r.protocol != PROTOCOL_ENCLAVE).cloned())
        };
        prop_assert_eq!(foreign(&kernel), foreign(&after));
        let foreign_rules = |v: &[KernelRule]| {
            sorted(v.iter().filter(|r| r.protocol != PROTOCOL_ENCLAVE).copied())
        };
        prop_assert_eq!(foreign_rules(&rules), foreign_rules(&after_rules));
        let again = plan(&desired, tunnel, &after, &after_rules);
        prop_assert!(again.is_empty(), "not converged: {:?}", again);

        if let Some(ks) = desired.kill_switch() {
            let blocked_by_foreign = kernel.iter().any(|k| k.protocol != PROTOCOL_ENCLAVE
                && k.dst == ks.dst && k.table == ks.table && k.metric == ks.metric);
            let in_place = after.iter().any(|k| k.protocol == PROTOCOL_ENCLAVE
                && k.kind == RTN_UNREACHABLE && k.oif.is_none()
                && k.dst == ks.dst && k.table == ks.table && k.metric == ks.metric);
            prop_assert!(in_place || blocked_by_foreign, "no kill switch after {:?}", p);
            for rule in desired.rules() {
                prop_assert!(after_rules.iter().any(|r| r.protocol == PROTOCOL_ENCLAVE
                    && r.spec == rule), "rule {:?} missing after {:?}", rule, p);
            }
        }

        // Reset leaves none of ours, with or without the tunnel.
        let reset = plan(&Desired::default(), tunnel, &after, &after_rules);
        let cleared = carry_out(&after, &reset, tunnel);
        prop_assert!(cleared.iter().all(|r| r.protocol != PROTOCOL_ENCLAVE));
        let cleared_rules = carry_out_rules(&after_rules, &reset);
        prop_assert!(cleared_rules.iter().all(|r| r.protocol != PROTOCOL_ENCLAVE));
    }
}
