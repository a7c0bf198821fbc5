//! Observed endpoints: the agents' side tells where agents were seen, the core records each on
//! its system. Peers' views then carry it for systems without an endpoint set by hand.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::{problem, targeted::Targeted, Ran, Refusal, Reply, Touched};
use crate::model::State;

/// How many systems an audit entry names before it only counts the rest.
const NAMED_IN_AUDIT: usize = 20;

/// Records `endpoints` on their systems. Systems gone meanwhile are skipped, and so are
/// endpoints already recorded; refused when nothing is left to record.
pub(super) fn observe(
    next: &mut State,
    t: &mut Touched,
    endpoints: BTreeMap<String, SocketAddr>,
) -> Result<Ran, Refusal> {
    let mut recorded = Vec::new();
    let mut moved = Vec::new();
    for (name, endpoint) in endpoints {
        let Some(system) = next.systems.get_mut(&name) else {
            continue;
        };
        if system.observed_endpoint == Some(endpoint) {
            continue;
        }
        let before = system.effective_endpoint();
        system.observed_endpoint = Some(endpoint);
        if system.effective_endpoint() != before {
            moved.push(name.clone());
        }
        recorded.push(format!("{name} {endpoint}"));
        t.systems.insert(name);
    }
    if recorded.is_empty() {
        return Err(problem(
            "endpoints",
            "no system's observed endpoint changed: nothing to record",
        ));
    }
    // A system whose endpoint is set by hand gives its peers that one: their views stay.
    if !moved.is_empty() {
        t.definition = true;
        t.targeted = Some(Targeted::Endpoints(moved));
    }
    let target = match t.systems.iter().next() {
        Some(name) if t.systems.len() == 1 => name.clone(),
        _ => format!("{} systems", t.systems.len()),
    };
    let mut detail = recorded
        .iter()
        .take(NAMED_IN_AUDIT)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if recorded.len() > NAMED_IN_AUDIT {
        detail.push_str(&format!(" and {} more", recorded.len() - NAMED_IN_AUDIT));
    }
    let reply = Reply::Done {
        done: format!("recorded {} observed endpoints", recorded.len()),
    };
    Ok(("system.endpoint_observed", target, detail, reply))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::core::{apply, Command, Ctx};
    use crate::definition;

    fn ctx() -> Ctx {
        Ctx {
            actor: "server:endpoints".into(),
            now: 1_800_000_000,
        }
    }

    fn at(text: &str) -> SocketAddr {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    /// docs/examples/network.toml, imported: `laptop` has no endpoint, `menlo-gw-1` has
    /// 203.0.113.2:51820 set by hand.
    fn example() -> State {
        let text = include_str!("../../../../docs/examples/network.toml");
        let imported = definition::import("network.toml", text, 0).expect("the example loads");
        let outcome = apply(
            &State::default(),
            Command::Import(Box::new(imported)),
            &ctx(),
        )
        .expect("import");
        State::clone(&outcome.next)
    }

    fn observe(endpoints: &[(&str, &str)]) -> Command {
        Command::ObserveEndpoints {
            endpoints: endpoints
                .iter()
                .map(|(name, endpoint)| ((*name).to_owned(), at(endpoint)))
                .collect(),
        }
    }

    /// Asserts that the view of `of` gives its peer `peer` the endpoint `expect`.
    #[track_caller]
    fn assert_endpoint(network: &enclave_policy::Network, of: &str, peer: &str, expect: &str) {
        let view = enclave_policy::compile(network, of).expect("a view");
        assert_eq!(
            view.peers[peer].endpoint,
            Some(at(expect)),
            "{of}'s view of {peer}"
        );
    }

    #[test]
    fn an_observed_endpoint_reaches_peers_unless_one_is_set_by_hand() {
        let state = example();
        assert_eq!(state.systems["laptop"].endpoint, None);
        let outcome = apply(
            &state,
            observe(&[
                ("laptop", "198.51.100.7:51820"),
                ("menlo-gw-1", "198.51.100.8:51820"),
                ("gone-meanwhile", "198.51.100.9:51820"),
            ]),
            &ctx(),
        )
        .expect("recorded");
        let next = &outcome.next;
        assert_eq!(
            next.systems["laptop"].observed_endpoint,
            Some(at("198.51.100.7:51820"))
        );
        assert_eq!(
            next.systems["menlo-gw-1"].observed_endpoint,
            Some(at("198.51.100.8:51820"))
        );
        let network = outcome
            .network
            .expect("the laptop's endpoint changed the definition");
        // The gateway is given the laptop's observed endpoint; the laptop the gateway's set
        // by hand, not the observed one.
        assert_endpoint(&network, "menlo-gw-1", "laptop", "198.51.100.7:51820");
        assert_endpoint(&network, "laptop", "menlo-gw-1", "203.0.113.2:51820");
        // The targeted check gives what the full validation gives.
        let full = definition::validate(next).expect("valid").network;
        assert_eq!(*network, full);
        assert_eq!(outcome.audit.action, "system.endpoint_observed");
        assert_eq!(outcome.audit.actor, "server:endpoints");
        assert_eq!(outcome.audit.target, "2 systems");
        assert!(
            outcome.audit.detail.contains("laptop 198.51.100.7:51820")
                && outcome
                    .audit
                    .detail
                    .contains("menlo-gw-1 198.51.100.8:51820"),
            "{}",
            outcome.audit.detail
        );
        assert_eq!(outcome.changes.len(), 2, "the two systems' rows");

        // The same again records nothing.
        let again = apply(next, observe(&[("laptop", "198.51.100.7:51820")]), &ctx());
        assert!(matches!(again, Err(Refusal::Invalid(_))), "{again:?}");

        // Moved: the gateway's view follows.
        let moved =
            apply(next, observe(&[("laptop", "198.51.100.70:51821")]), &ctx()).expect("recorded");
        assert_eq!(moved.audit.target, "laptop");
        let network = moved.network.expect("changed");
        assert_endpoint(&network, "menlo-gw-1", "laptop", "198.51.100.70:51821");
    }

    #[test]
    fn an_endpoint_set_by_hand_leaves_views_alone_when_another_is_observed() {
        let state = example();
        let outcome = apply(
            &state,
            observe(&[("menlo-gw-1", "198.51.100.8:51820")]),
            &ctx(),
        )
        .expect("recorded");
        assert!(outcome.network.is_none(), "no view can change");
        // Cleared by hand: the observed one is given from then on.
        let cleared = apply(
            &outcome.next,
            Command::UpdateSystem {
                name: "menlo-gw-1".into(),
                edit: crate::core::SystemEdit {
                    endpoint: Some(String::new()),
                    ..crate::core::SystemEdit::default()
                },
            },
            &ctx(),
        )
        .expect("cleared");
        let network = cleared.network.expect("changed");
        assert_endpoint(&network, "laptop", "menlo-gw-1", "198.51.100.8:51820");
    }

    #[test]
    fn export_and_import_keep_an_observed_endpoint_observed() {
        let state = example();
        let outcome =
            apply(&state, observe(&[("laptop", "198.51.100.7:51820")]), &ctx()).expect("recorded");
        let text = definition::render(&outcome.next);
        assert!(
            text.contains("# endpoint observed by the server")
                && text.contains("endpoint = \"198.51.100.7:51820\""),
            "{text}"
        );
        // Read back unchanged: still observed, the hand-set ones still set by hand.
        let imported = definition::import("export.toml", &text, 0).expect("the export loads");
        let back =
            apply(&outcome.next, Command::Import(Box::new(imported)), &ctx()).expect("imported");
        let laptop = &back.next.systems["laptop"];
        assert_eq!(laptop.endpoint, None);
        assert_eq!(laptop.observed_endpoint, Some(at("198.51.100.7:51820")));
        assert_eq!(
            back.next.systems["menlo-gw-1"].endpoint,
            Some(at("203.0.113.2:51820"))
        );
        // An administrator who writes another endpoint sets it by hand.
        let edited = text.replace("198.51.100.7:51820", "203.0.113.77:51820");
        let imported = definition::import("edited.toml", &edited, 0).expect("loads");
        let back =
            apply(&outcome.next, Command::Import(Box::new(imported)), &ctx()).expect("imported");
        let laptop = &back.next.systems["laptop"];
        assert_eq!(laptop.endpoint, Some(at("203.0.113.77:51820")));
        assert_eq!(laptop.observed_endpoint, Some(at("198.51.100.7:51820")));
        let network = Arc::new(definition::validate(&back.next).expect("valid").network);
        assert_endpoint(&network, "menlo-gw-1", "laptop", "203.0.113.77:51820");
    }
}
