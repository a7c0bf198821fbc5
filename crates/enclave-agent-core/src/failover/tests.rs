//! The selector against simulated gateways on a virtual clock.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;

use super::*;
use crate::control::Message;

const LAN: &str = "192.168.77.0/24";

/// Simulated gateways: each answers probes after `rtt` while alive, with its subnets.
struct Sim {
    selector: Selector,
    now: Instant,
    alive: BTreeMap<String, bool>,
    serves: BTreeMap<String, Vec<Ipv4Net>>,
    rtt: BTreeMap<String, Duration>,
    in_flight: Vec<(Instant, String, Message)>,
    changes: Vec<Change>,
}

impl Sim {
    fn new(gateways: &[(&str, u32, u64)]) -> Self {
        let now = crate::test_clock_start();
        let lan: Ipv4Net = LAN.parse().unwrap();
        let mut sim = Sim {
            selector: Selector::new(),
            now,
            alive: BTreeMap::new(),
            serves: BTreeMap::new(),
            rtt: BTreeMap::new(),
            in_flight: Vec::new(),
            changes: Vec::new(),
        };
        let candidates = gateways
            .iter()
            .map(|(name, priority, rtt_ms)| {
                sim.alive.insert((*name).to_owned(), true);
                sim.serves.insert((*name).to_owned(), vec![lan]);
                sim.rtt
                    .insert((*name).to_owned(), Duration::from_millis(*rtt_ms));
                Candidate {
                    gateway: (*name).to_owned(),
                    priority: *priority,
                }
            })
            .collect();
        sim.selector
            .set_plan(BTreeMap::from([(lan, candidates)]), now);
        sim
    }

    /// Advances the virtual clock by `ms`, 1 ms at a time, delivering what is due.
    fn run(&mut self, ms: u64) {
        for _ in 0..ms {
            self.now += Duration::from_millis(1);
            if self.selector.poll_timeout().is_some_and(|t| t <= self.now) {
                self.selector.handle_timeout(self.now);
            }
            while let Some((gw, msg)) = self.selector.poll_transmit() {
                if let (true, Message::Probe { id }) = (self.alive[&gw], msg) {
                    let reply = Message::Ack {
                        id,
                        subnets: self.serves[&gw].clone(),
                    };
                    self.in_flight.push((self.now + self.rtt[&gw], gw, reply));
                }
            }
            let now = self.now;
            let (due, later): (Vec<_>, Vec<_>) =
                self.in_flight.drain(..).partition(|(t, _, _)| *t <= now);
            self.in_flight = later;
            for (_, gw, msg) in due {
                self.selector.handle_message(&gw, msg, now);
            }
            while let Some(change) = self.selector.poll_event() {
                self.changes.push(change);
            }
        }
    }

    fn active(&self) -> Option<&str> {
        self.selector.active(&LAN.parse().unwrap())
    }
}

#[test]
fn the_first_gateway_to_answer_is_used() {
    let mut sim = Sim::new(&[("gw-1", 0, 30), ("gw-2", 0, 5)]);
    sim.run(50);
    assert_eq!(sim.active(), Some("gw-2"));
    assert_eq!(sim.changes.len(), 1);
    assert_eq!(sim.changes[0].reason, Reason::FirstConnected);
}

#[test]
fn fails_over_within_a_second_and_does_not_flap_back() {
    let mut sim = Sim::new(&[("gw-1", 0, 2), ("gw-2", 0, 4)]);
    sim.run(500);
    assert_eq!(sim.active(), Some("gw-1"));

    sim.alive.insert("gw-1".into(), false);
    let died = sim.now;
    let mut moved_after = None;
    for step in 0..2000 {
        sim.run(1);
        if sim.active() == Some("gw-2") {
            moved_after = Some(step + 1);
            break;
        }
    }
    let moved_after = moved_after.expect("never failed over");
    assert!(moved_after < 1000, "failover took {moved_after} ms");
    assert!(sim.now - died >= DEAD_AFTER - PROBE_INTERVAL);
    let last = sim.changes.last().unwrap();
    assert_eq!(last.from.as_deref(), Some("gw-1"));
    assert!(matches!(&last.reason, Reason::FailedOver { from, .. } if from == "gw-1"));
    assert!(
        sim.selector.gateways()["gw-1"].lost,
        "gw-1 answered before and is silent now"
    );
    assert!(!sim.selector.gateways()["gw-2"].lost);

    // gw-1 returns: the subnet stays on gw-2.
    sim.alive.insert("gw-1".into(), true);
    sim.run(3000);
    assert_eq!(sim.active(), Some("gw-2"));
    assert!(sim.selector.gateways()["gw-1"].up);
    assert!(!sim.selector.gateways()["gw-1"].lost);
}

#[test]
fn a_higher_priority_takes_the_subnet_back() {
    let mut sim = Sim::new(&[("gw-1", 10, 20), ("gw-2", 0, 1)]);
    sim.run(10);
    assert_eq!(sim.active(), Some("gw-2"), "only gw-2 has answered yet");
    sim.run(100);
    assert_eq!(sim.active(), Some("gw-1"));
    assert!(
        matches!(&sim.changes.last().unwrap().reason, Reason::Priority { from } if from == "gw-2")
    );
}

#[test]
fn one_lost_probe_does_not_fail_over() {
    let mut sim = Sim::new(&[("gw-1", 0, 2), ("gw-2", 0, 4)]);
    sim.run(500);
    sim.alive.insert("gw-1".into(), false);
    sim.run(150); // one or two probes lost
    sim.alive.insert("gw-1".into(), true);
    sim.run(1000);
    assert_eq!(sim.active(), Some("gw-1"));
    assert_eq!(sim.changes.len(), 1, "{:?}", sim.changes);
}

#[test]
fn a_withdrawn_subnet_moves_and_a_lost_last_gateway_removes_it() {
    let mut sim = Sim::new(&[("gw-1", 0, 2), ("gw-2", 0, 4)]);
    sim.run(300);
    assert_eq!(sim.active(), Some("gw-1"));
    sim.serves.insert("gw-1".into(), Vec::new()); // its LAN link went down
    sim.run(300);
    assert_eq!(sim.active(), Some("gw-2"));
    sim.alive.insert("gw-2".into(), false);
    sim.run(1000);
    assert_eq!(sim.active(), None);
    let last = sim.changes.last().unwrap();
    assert_eq!(
        (last.from.as_deref(), last.to.as_deref()),
        (Some("gw-2"), None)
    );
}

#[test]
fn acks_that_answer_no_probe_prove_nothing() {
    let mut sim = Sim::new(&[("gw-1", 0, 2)]);
    sim.alive.insert("gw-1".into(), false);
    sim.run(500);
    let now = sim.now;
    sim.selector.handle_message(
        "gw-1",
        Message::Ack {
            id: 999_999,
            subnets: vec![LAN.parse().unwrap()],
        },
        now,
    );
    assert_eq!(sim.active(), None);
}
