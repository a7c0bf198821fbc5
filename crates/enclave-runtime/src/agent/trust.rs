//! The facts trust requirements are judged on.
//!
//! A peer's public (underlay) address counts only when it is *proven*: the data plane reports
//! the address that completed a handshake (`proven_endpoint`: it has shown a return path), and
//! the address is taken only while the peer's current endpoint is that same address. A peer
//! that roams to a new address is judged unknown (its grants suspended) until the data plane
//! has proven the new one: the core starts a handshake towards a roamed endpoint by itself, so
//! a real roam is proven within a round trip, while an outer source forged on one-way traffic
//! never is.
//!
//! An external WireGuard (wireguard-go, the kernel) reports only the latest source address,
//! which one authenticated packet with a forged outer source moves, and the agent sees it only
//! when it looks: a handshake from the real address followed by a forged source fits between
//! two looks. So with the external data plane no public address is ever taken as proven: grants
//! with a public-IP requirement that this system enforces stay suspended, and status says why.
//!
//! When to judge again ([`next_judgement`]): the outcome is a function of the view, the facts
//! and the time. The view changes by events; the facts are in the data plane's counters, which
//! say nothing by themselves when a handshake proves a new address, so a view with public-IP
//! requirements has them read every [`FACTS_EVERY`] (only such a view: the others never need
//! them); active hours are minutes of local time in zones whose offsets are whole minutes, so
//! their outcome can change only when a minute of UTC begins, and that is when they are judged.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use enclave_policy::{Facts, TrustKind, View};

use super::report::PeerCounters;

/// The facts for `evaluate`: the proven public addresses of the peers, by name.
pub fn facts(counters: &BTreeMap<String, PeerCounters>, external: bool) -> Facts {
    let mut facts = Facts::default();
    if external {
        return facts;
    }
    for (name, peer) in counters {
        let current = peer
            .endpoint
            .as_deref()
            .and_then(|e| e.parse::<SocketAddr>().ok());
        if let (Some(current), Some(proven)) = (current, peer.proven_endpoint) {
            if let (true, IpAddr::V4(ip)) = (current == proven, proven.ip()) {
                facts.public_ips.insert(name.clone(), ip);
            }
        }
    }
    facts
}

/// How often the counters are read for the facts of a view with public-IP requirements: a
/// roamed sender's grants are suspended within this (the product's goal is a second).
pub const FACTS_EVERY: Duration = Duration::from_millis(200);
/// How long after a minute begins active hours are judged (the wall clock and the timer that
/// wakes the agent are not exactly in step).
const HOURS_SLACK: Duration = Duration::from_millis(20);

/// Whether any grant of `view` depends on a public-IP requirement (whichever side enforces it:
/// a known blocked address fails on both sides).
pub fn needs_facts(view: &View) -> bool {
    let public_ip = |name: &String| {
        view.trust_requirements
            .get(name)
            .is_some_and(|r| matches!(r.kind, TrustKind::PublicIp { .. }))
    };
    grants(view).any(|reqs| {
        reqs.policy_trust.iter().any(public_ip) || reqs.via_tags.values().flatten().any(public_ip)
    })
}

/// Whether any grant of `view` has active hours.
pub fn has_active_hours(view: &View) -> bool {
    grants(view).any(|reqs| reqs.active_hours.is_some())
}

fn grants(view: &View) -> impl Iterator<Item = &enclave_policy::Requirements> {
    view.peers
        .values()
        .flat_map(|peer| peer.inbound.values().chain(peer.outbound.values()))
        .map(|grant| &grant.requirements)
}

/// How long from `wall` until the judgement of `view` can change by itself: [`FACTS_EVERY`]
/// when it needs facts that the data plane does not announce (and this data plane proves
/// them), the next minute when it has active hours; `None` when only events can change it.
pub fn next_judgement(view: &View, external: bool, wall: SystemTime) -> Option<Duration> {
    let facts = (!external && needs_facts(view)).then_some(FACTS_EVERY);
    let hours = has_active_hours(view).then(|| until_next_minute(wall) + HOURS_SLACK);
    facts.into_iter().chain(hours).min()
}

/// The time from `wall` to the start of the next minute of UTC.
fn until_next_minute(wall: SystemTime) -> Duration {
    let since = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    let into_minute = Duration::from_nanos((since.as_nanos() % 60_000_000_000) as u64);
    Duration::from_secs(60) - into_minute
}

/// With the external data plane: a warning naming the grants this system enforces that need a
/// public-IP requirement, which stay suspended.
pub fn external_warning(view: &View) -> Option<String> {
    let public_ip = |name: &String| {
        view.trust_requirements
            .get(name)
            .is_some_and(|r| matches!(r.kind, TrustKind::PublicIp { .. }))
    };
    let mut policies = std::collections::BTreeSet::new();
    for peer in view.peers.values() {
        for (policy, grant) in peer.inbound.iter().chain(&peer.outbound) {
            let reqs = &grant.requirements;
            if reqs.enforced_by != view.system {
                continue;
            }
            let needs = reqs.policy_trust.iter().any(public_ip)
                || reqs.via_tags.values().flatten().any(public_ip);
            if needs {
                policies.insert(policy.clone());
            }
        }
    }
    if policies.is_empty() {
        return None;
    }
    Some(format!(
        "public-IP trust requirements cannot be judged with dataplane = \"external\" (an external WireGuard does not prove a sender's address), so the grants of {} stay suspended on this system; use dataplane = \"userspace\" here to enforce them",
        policies.into_iter().collect::<Vec<_>>().join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(endpoint: Option<&str>, proven: Option<&str>) -> PeerCounters {
        PeerCounters {
            endpoint: endpoint.map(str::to_owned),
            proven_endpoint: proven.map(|p| p.parse().unwrap()),
            ..PeerCounters::default()
        }
    }

    #[test]
    fn only_a_proven_current_address_is_a_fact() {
        let counters = BTreeMap::from([
            // Proven and current: judged.
            (
                "a".to_owned(),
                peer(Some("198.51.100.7:51820"), Some("198.51.100.7:51820")),
            ),
            // Roamed to an unproven address (say, a forged outer source): unknown.
            (
                "b".to_owned(),
                peer(Some("198.51.100.8:51820"), Some("203.0.113.9:51820")),
            ),
            // Seen, never proven: unknown.
            ("c".to_owned(), peer(Some("198.51.100.9:51820"), None)),
            ("d".to_owned(), peer(None, None)),
        ]);
        let facts = facts(&counters, false);
        assert_eq!(
            facts.public_ips,
            BTreeMap::from([("a".to_owned(), "198.51.100.7".parse().unwrap())])
        );
        // The external data plane proves nothing.
        assert!(super::facts(&counters, true).public_ips.is_empty());
    }

    #[test]
    fn the_next_judgement_is_due_when_its_inputs_can_change() {
        const EXAMPLE: &str = include_str!("../../../../docs/examples/network.toml");
        let loaded = enclave_policy::load("network.toml", EXAMPLE).unwrap();
        // The gateway enforces a public-IP requirement and active hours: facts every
        // FACTS_EVERY with our data plane, the next minute with an external one.
        let gateway = enclave_policy::compile(&loaded.network, "menlo-gw-1").unwrap();
        assert!(needs_facts(&gateway) && has_active_hours(&gateway));
        let wall = UNIX_EPOCH + Duration::from_secs(1_800_000_000) + Duration::from_millis(59_500);
        assert_eq!(next_judgement(&gateway, false, wall), Some(FACTS_EVERY));
        assert_eq!(
            next_judgement(&gateway, true, wall),
            Some(Duration::from_millis(500) + HOURS_SLACK)
        );
        // The build server has neither: only events change its judgement.
        let server = enclave_policy::compile(&loaded.network, "build-server").unwrap();
        assert!(!has_active_hours(&server) && !needs_facts(&server));
        assert_eq!(next_judgement(&server, false, wall), None);
        // On a minute's first instant, the next minute is a whole minute away.
        let on = UNIX_EPOCH + Duration::from_secs(60 * 30_000_000);
        assert_eq!(until_next_minute(on), Duration::from_secs(60));
    }

    #[test]
    fn the_external_data_plane_names_the_grants_it_cannot_judge() {
        const EXAMPLE: &str = include_str!("../../../../docs/examples/network.toml");
        let loaded = enclave_policy::load("network.toml", EXAMPLE).unwrap();
        // The gateway enforces the contractors' public-IP requirement (a tag requirement).
        let gateway = enclave_policy::compile(&loaded.network, "menlo-gw-1").unwrap();
        let warning = external_warning(&gateway).expect("the gateway enforces one");
        assert!(
            warning.contains("contractors to the file server"),
            "{warning}"
        );
        assert!(warning.contains("dataplane = \"userspace\""), "{warning}");
        // The laptop enforces none (the gateway judges its traffic).
        let laptop = enclave_policy::compile(&loaded.network, "laptop").unwrap();
        assert_eq!(external_warning(&laptop), None);
    }
}
