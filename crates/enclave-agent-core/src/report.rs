//! What a managed agent tells its server: its status and, on a gateway, what discovery found,
//! turned into the protocol's report, and sent when something the administrator sees changes.
//!
//! Sans-IO: [`Reporter::observe`] takes the agent's latest report, [`Reporter::poll`] says
//! whether to send now, [`Reporter::poll_timeout`] when to ask again. A change of what the
//! portal shows (a peer's state or endpoint, the active gateway of a subnet, the discovered
//! subnets, the warnings, the serial in force) is sent at most once per [`MIN_INTERVAL`];
//! counters alone are refreshed every [`REFRESH`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use enclave_control_proto::message::{ActiveGateway, Discovered, PeerReport, Report};
use enclave_discovery::{Choice, Discovery};

use crate::status::Status;

/// What the agent publishes for its source to report (the runtime's `source::AgentReport`).
#[derive(Debug, Clone, PartialEq)]
pub struct AgentReport {
    /// The agent's status, as `enclave-agent status` shows it.
    pub status: Status,
    /// On a system whose view lets it act as a gateway: what discovery found last, with each
    /// interface's choice and reason. `None` elsewhere.
    pub discovered: Option<Discovery>,
}

/// The shortest time between two reports.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// How often a report is sent when only counters moved.
pub const REFRESH: Duration = Duration::from_secs(30);

/// The protocol's report of what the agent published.
pub fn build(agent: Option<&AgentReport>, serial: Option<u64>, listen_port: u16) -> Report {
    let mut report = Report {
        serial,
        listen_port: Some(listen_port),
        ..Report::default()
    };
    let Some(agent) = agent else {
        return report;
    };
    let status = &agent.status;
    report.peers = status
        .peers
        .iter()
        .map(|peer| {
            (
                peer.name.clone(),
                PeerReport {
                    state: peer.state.clone(),
                    endpoint: peer.endpoint.clone(),
                    last_activity_secs: peer.last_activity_secs,
                    rx_bytes: peer.rx_bytes,
                    tx_bytes: peer.tx_bytes,
                    rtt_ms: peer.rtt_ms,
                },
            )
        })
        .collect();
    report.active_gateways = status
        .routes
        .iter()
        .map(|route| {
            (
                route.subnet,
                ActiveGateway {
                    gateway: route.gateway.clone(),
                    reason: route.reason.clone(),
                },
            )
        })
        .collect();
    report.discovered = agent.discovered.as_ref().map(discovered);
    report.warnings = status.warnings.clone();
    report
}

/// The subnets discovery offered, each with its interface and why.
fn discovered(discovery: &Discovery) -> BTreeMap<ipnet::Ipv4Net, Discovered> {
    let mut out = BTreeMap::new();
    for iface in &discovery.interfaces {
        for offer in iface.addresses.iter().filter(|a| a.choice == Choice::Taken) {
            out.entry(offer.subnet).or_insert_with(|| Discovered {
                interface: iface.interface.clone(),
                reason: offer.reason.clone(),
            });
        }
    }
    out
}

/// The part of a report the administrator watches: everything but the counters.
fn significant(report: &Report) -> Report {
    let mut quiet = report.clone();
    for peer in quiet.peers.values_mut() {
        peer.last_activity_secs = None;
        peer.rx_bytes = 0;
        peer.tx_bytes = 0;
        peer.rtt_ms = None;
    }
    quiet
}

/// Decides when to send a report.
#[derive(Debug, Default)]
pub struct Reporter {
    /// The latest report, not sent yet, and when it was observed.
    latest: Option<(Report, Instant)>,
    /// What the last report sent showed, and when it went.
    sent: Option<(Report, Instant)>,
}

impl Reporter {
    /// A reporter for a new connection: the first report goes at once.
    pub fn new() -> Self {
        Self::default()
    }

    /// The agent's latest state, as of `now`.
    pub fn observe(&mut self, report: Report, now: Instant) {
        self.latest = Some((report, now));
    }

    /// When the latest report is to be sent: at once on a new connection, [`MIN_INTERVAL`]
    /// after the last one when something significant changed, [`REFRESH`] after it otherwise.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let (latest, observed) = self.latest.as_ref()?;
        let Some((shown, at)) = &self.sent else {
            return Some(*observed);
        };
        // A report still held is newer than the last one sent ([`Reporter::poll`] takes it).
        if significant(latest) == *shown {
            Some(*at + REFRESH)
        } else {
            Some(*at + MIN_INTERVAL)
        }
    }

    /// The report to send now, if one is due.
    pub fn poll(&mut self, now: Instant) -> Option<Report> {
        let due = self.poll_timeout()?;
        if now < due {
            return None;
        }
        let (report, _) = self.latest.take()?;
        self.sent = Some((significant(&report), now));
        Some(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{PeerStatus, RouteStatus};

    fn status(state: &str, rx: u64, gateway: Option<&str>) -> AgentReport {
        AgentReport {
            status: Status {
                system: "laptop".into(),
                interface: "enclave0".into(),
                address: "100.64.0.11".into(),
                gateway_for: vec![],
                peers: vec![PeerStatus {
                    name: "menlo-gw-1".into(),
                    state: state.into(),
                    public_key: "k".into(),
                    endpoint: Some("10.10.0.1:51820".into()),
                    last_activity_secs: Some(1.5),
                    rx_bytes: rx,
                    tx_bytes: rx,
                    rtt_ms: Some(0.4),
                    virtual_network: "100.64.0.0/10".into(),
                    virtual_address: "100.64.0.2".into(),
                    gateway_for: vec![],
                    acls: vec![],
                    drops: BTreeMap::new(),
                    default_route_excludes: BTreeMap::new(),
                }],
                routes: vec![RouteStatus {
                    subnet: "192.168.77.0/24".parse().unwrap(),
                    gateway: gateway.map(str::to_owned),
                    reason: "answered first".into(),
                }],
                warnings: vec![],
                definition_generation: 1,
                default_route_excludes: BTreeMap::new(),
            },
            discovered: None,
        }
    }

    #[test]
    fn a_report_carries_peers_active_gateways_and_the_listen_port() {
        let report = build(Some(&status("Up", 10, Some("menlo-gw-1"))), Some(7), 51820);
        assert_eq!(report.serial, Some(7));
        assert_eq!(report.listen_port, Some(51820));
        assert_eq!(report.peers["menlo-gw-1"].state, "Up");
        assert_eq!(
            report.peers["menlo-gw-1"].endpoint.as_deref(),
            Some("10.10.0.1:51820")
        );
        let subnet = "192.168.77.0/24".parse().unwrap();
        assert_eq!(
            report.active_gateways[&subnet].gateway.as_deref(),
            Some("menlo-gw-1")
        );
        assert_eq!(report.discovered, None);
        // Before the agent published anything: the listen port alone.
        let bare = build(None, None, 4242);
        assert_eq!(bare.listen_port, Some(4242));
        assert!(bare.peers.is_empty());
    }

    #[test]
    fn discovered_subnets_come_with_interface_and_reason() {
        use enclave_discovery::{InterfaceReport, Offer};
        let mut agent = status("Up", 1, None);
        agent.discovered = Some(Discovery {
            interfaces: vec![InterfaceReport {
                interface: "lan0".into(),
                choice: Choice::Taken,
                reason: "ethernet, up".into(),
                addresses: vec![
                    Offer {
                        subnet: "192.168.77.0/24".parse().unwrap(),
                        address: "192.168.77.1".parse().unwrap(),
                        secondary: false,
                        choice: Choice::Taken,
                        reason: "IPv4 unicast".into(),
                    },
                    Offer {
                        subnet: "169.254.0.0/16".parse().unwrap(),
                        address: "169.254.1.1".parse().unwrap(),
                        secondary: true,
                        choice: Choice::Left,
                        reason: "link-local".into(),
                    },
                ],
            }],
        });
        let report = build(Some(&agent), None, 51820);
        let found = report.discovered.unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        let lan = &found[&"192.168.77.0/24".parse().unwrap()];
        assert_eq!(
            (lan.interface.as_str(), lan.reason.as_str()),
            ("lan0", "IPv4 unicast")
        );
    }

    #[test]
    fn changes_go_out_at_most_once_a_second_and_counters_every_thirty() {
        let start = crate::test_clock_start();
        let mut reporter = Reporter::new();
        assert_eq!(reporter.poll(start), None, "nothing observed yet");
        reporter.observe(
            build(Some(&status("Up", 1, Some("menlo-gw-1"))), Some(1), 1),
            start,
        );
        assert!(
            reporter.poll(start).is_some(),
            "the first report goes at once"
        );
        assert_eq!(reporter.poll(start), None, "and only once");

        // Counters moved: not before 30 s.
        reporter.observe(
            build(Some(&status("Up", 500, Some("menlo-gw-1"))), Some(1), 1),
            start,
        );
        assert_eq!(reporter.poll_timeout(), Some(start + REFRESH));
        assert_eq!(reporter.poll(start + Duration::from_secs(5)), None);
        // The active gateway changed: due one second after the last report.
        reporter.observe(build(Some(&status("Up", 600, None)), Some(1), 1), start);
        assert_eq!(reporter.poll_timeout(), Some(start + MIN_INTERVAL));
        let sent = reporter.poll(start + Duration::from_secs(5)).unwrap();
        let subnet = "192.168.77.0/24".parse().unwrap();
        assert_eq!(sent.active_gateways[&subnet].gateway, None);
        assert_eq!(
            sent.peers["menlo-gw-1"].rx_bytes, 600,
            "the counters go along"
        );

        // A burst of changes within the second: held back, then the latest goes.
        let then = start + Duration::from_secs(5);
        reporter.observe(build(Some(&status("Down", 600, None)), Some(1), 1), then);
        assert_eq!(reporter.poll(then + Duration::from_millis(300)), None);
        reporter.observe(build(Some(&status("Down", 600, None)), Some(2), 1), then);
        let sent = reporter.poll(then + MIN_INTERVAL).unwrap();
        assert_eq!(sent.serial, Some(2));
        assert_eq!(sent.peers["menlo-gw-1"].state, "Down");
        assert_eq!(reporter.poll_timeout(), None, "nothing new");
        // The same state published again is refreshed after 30 s, not sooner.
        reporter.observe(build(Some(&status("Down", 600, None)), Some(2), 1), then);
        assert_eq!(reporter.poll_timeout(), Some(then + MIN_INTERVAL + REFRESH));
    }
}
