//! Trust requirements and active hours, evaluated on compiled views.

use std::collections::BTreeMap;

use enclave_policy::{Direction, Facts, GrantOutcome, Timestamp};
use expect_test::{expect, Expect};

mod common;

/// The one place that evaluates: renders every grant's outcome of `system`'s view.
fn check(system: &str, observed: &[(&str, &str)], at: &str, expect: Expect) {
    let network = common::example();
    let view = enclave_policy::compile(&network, system).expect("system exists");
    let facts = Facts {
        public_ips: observed
            .iter()
            .map(|(name, ip)| ((*name).to_owned(), ip.parse().expect("ip")))
            .collect::<BTreeMap<_, _>>(),
    };
    let now: Timestamp = at.parse().expect("RFC 3339 time");
    let evaluation = enclave_policy::evaluate(&view, &facts, now);
    let mut out = String::new();
    for g in &evaluation.grants {
        let direction = match g.direction {
            Direction::Inbound => "in ",
            Direction::Outbound => "out",
        };
        let outcome = match &g.outcome {
            GrantOutcome::Active => "active".to_owned(),
            GrantOutcome::Suspended { reason } => format!("suspended: {reason}"),
        };
        out.push_str(&format!(
            "{direction} {} {:?}: {outcome}\n",
            g.peer, g.policy
        ));
    }
    expect.assert_eq(&out);
}

#[test]
fn gateway_enforces_on_observed_addresses() {
    check(
        "menlo-gw-1",
        &[("laptop", "198.51.100.7"), ("contractor", "203.0.113.9")],
        "2026-11-25T18:00:00Z",
        expect![[r#"
            in  contractor "contractors to the file server": suspended: trust requirement "partner-offices" failed: public address 203.0.113.9 is not in an allowed range
            in  laptop "users to Menlo Park Office": active
        "#]],
    );
}

#[test]
fn gateway_suspends_unobserved_senders() {
    check(
        "menlo-gw-1",
        &[],
        "2026-11-25T18:00:00Z",
        expect![[r#"
            in  contractor "contractors to the file server": suspended: trust requirement "partner-offices" failed: the sender's public address is unknown
            in  laptop "users to Menlo Park Office": suspended: trust requirement "no-tor-exits" failed: the sender's public address is unknown
        "#]],
    );
}

#[test]
fn sender_leaves_public_ip_to_the_enforcer_but_judges_hours() {
    check(
        "laptop",
        &[],
        "2026-11-25T18:00:00Z",
        expect![[r#"
        out build-server "users to servers": active
        out egress-gw "users to the Internet": active
        out menlo-gw-1 "users to Menlo Park Office": active
        out menlo-gw-2 "users to Menlo Park Office": active
    "#]],
    );
    check(
        "laptop",
        &[],
        "2026-11-28T18:00:00Z",
        expect![[r#"
        out build-server "users to servers": active
        out egress-gw "users to the Internet": active
        out menlo-gw-1 "users to Menlo Park Office": suspended: outside active hours (it is Sat 10:00 in America/Los_Angeles)
        out menlo-gw-2 "users to Menlo Park Office": suspended: outside active hours (it is Sat 10:00 in America/Los_Angeles)
    "#]],
    );
}

#[test]
fn active_hours_follow_daylight_saving_time() {
    // 07:00-19:00 in Los Angeles: 14:30 UTC is 07:30 in summer (PDT) but 06:30 in winter.
    for (at, expect) in [
        (
            "2026-07-01T14:30:00Z",
            expect![[r#"
                in  contractor "contractors to the file server": suspended: trust requirement "partner-offices" failed: the sender's public address is unknown
                in  laptop "users to Menlo Park Office": active
            "#]],
        ),
        (
            "2026-12-02T14:30:00Z",
            expect![[r#"
                in  contractor "contractors to the file server": suspended: trust requirement "partner-offices" failed: the sender's public address is unknown
                in  laptop "users to Menlo Park Office": suspended: outside active hours (it is Wed 06:30 in America/Los_Angeles)
            "#]],
        ),
    ] {
        check("menlo-gw-1", &[("laptop", "198.51.100.7")], at, expect);
    }
}

/// `is_active` and `outcome` answer as a scan of every grant would, for each grant of every system's view
/// and for grants no view has (another peer, direction or policy), with the senders' addresses
/// observed and not, inside and outside active hours.
#[test]
fn is_active_and_outcome_answer_as_a_scan_of_the_grants() {
    let network = common::example();
    let observed = Facts {
        public_ips: [("laptop", "198.51.100.7"), ("contractor", "203.0.113.9")]
            .iter()
            .map(|(name, ip)| ((*name).to_owned(), ip.parse().expect("ip")))
            .collect(),
    };
    let (mut active, mut inactive) = (0, 0);
    for system in network.systems.keys() {
        let view = enclave_policy::compile(&network, system).expect("system exists");
        for facts in [Facts::default(), observed.clone()] {
            for at in ["2026-11-25T18:00:00Z", "2026-11-29T03:00:00Z"] {
                let now: Timestamp = at.parse().expect("RFC 3339 time");
                let evaluation = enclave_policy::evaluate(&view, &facts, now);
                let peers = view.peers.keys().map(String::as_str).chain(["", "nobody"]);
                let policies: Vec<&str> = evaluation
                    .grants
                    .iter()
                    .map(|g| g.policy.as_str())
                    .chain(["", "no such policy"])
                    .collect();
                for peer in peers {
                    for direction in [Direction::Inbound, Direction::Outbound] {
                        for &policy in &policies {
                            let found = evaluation.grants.iter().find(|g| {
                                g.peer == peer && g.direction == direction && g.policy == policy
                            });
                            let scan = found.is_some_and(|g| g.outcome == GrantOutcome::Active);
                            assert_eq!(
                                evaluation.is_active(peer, direction, policy),
                                scan,
                                "{system} at {at}: {peer} {direction:?} {policy:?}"
                            );
                            assert_eq!(
                                evaluation.outcome(peer, direction, policy),
                                found.map(|g| &g.outcome),
                                "{system} at {at}: {peer} {direction:?} {policy:?}"
                            );
                            if scan {
                                active += 1;
                            } else if found.is_some() {
                                inactive += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(active > 10, "{active} active grants");
    assert!(inactive > 3, "{inactive} suspended grants");
}
