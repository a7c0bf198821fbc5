//! The `subnets list` view of every gateway's subnets.

use std::collections::BTreeSet;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::model::State;

/// One row of `subnets list`: a gateway's subnet, where it comes from and whether it is served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetRow {
    /// The gateway.
    pub system: String,
    /// The subnet.
    pub subnet: Ipv4Net,
    /// `discovered` or `added`.
    pub source: String,
    /// The interface it was discovered on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Why discovery took it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `served`, `removed`, or `gateway off`.
    pub state: String,
}

/// Every gateway's subnets: discovered ones (served or removed) and added ones.
pub fn subnet_rows(state: &State) -> Vec<SubnetRow> {
    let mut rows = Vec::new();
    for system in state.systems.values() {
        let gateway = system.gateway.clone().unwrap_or_default();
        let served = |subnet: &Ipv4Net| {
            if gateway.removed.contains(subnet) {
                "removed"
            } else if !gateway.allowed || !system.effective_enabled() {
                "gateway off"
            } else {
                "served"
            }
        };
        let mut seen = BTreeSet::new();
        for (subnet, found) in &system.discovered {
            seen.insert(*subnet);
            let added = gateway.subnets.contains(subnet);
            let state = if !added && !gateway.auto_discover {
                "not served (auto_discover off)"
            } else {
                served(subnet)
            };
            rows.push(SubnetRow {
                system: system.name.clone(),
                subnet: *subnet,
                source: if added {
                    "discovered, added"
                } else {
                    "discovered"
                }
                .to_owned(),
                interface: Some(found.interface.clone()),
                reason: Some(found.reason.clone()),
                state: state.to_owned(),
            });
        }
        for subnet in gateway.subnets.iter().filter(|s| !seen.contains(s)) {
            rows.push(SubnetRow {
                system: system.name.clone(),
                subnet: *subnet,
                source: "added".to_owned(),
                interface: None,
                reason: None,
                state: served(subnet).to_owned(),
            });
        }
        for subnet in gateway.removed.iter().filter(|s| !seen.contains(s)) {
            rows.push(SubnetRow {
                system: system.name.clone(),
                subnet: *subnet,
                source: "removed by hand".to_owned(),
                interface: None,
                reason: None,
                state: "removed".to_owned(),
            });
        }
    }
    rows
}
