//! The registry of privileged scenarios. Each module owns its scenarios and lists them in its
//! `scenarios()`; add a module here, nothing else.

use crate::Scenario;

mod access;
mod agent;
pub(crate) mod control;
mod control_managed;
mod control_wgapp;
mod dataplane;
mod discovery;
mod failover;
mod flood;
mod forwarding;
mod killswitch;
mod lifecycle;
mod nat;
mod offload;
mod portal;
mod portal_policies;
mod reference;
mod roaming;
mod routes;
mod trust;
mod userguide;

/// Every scenario, in the order `cargo xtask netns-test` runs them.
pub fn all() -> Vec<Scenario> {
    let mut all = Vec::new();
    all.extend(reference::scenarios());
    all.extend(dataplane::scenarios());
    all.extend(flood::scenarios());
    all.extend(offload::scenarios());
    all.extend(routes::scenarios());
    all.extend(nat::scenarios());
    all.extend(forwarding::scenarios());
    all.extend(discovery::scenarios());
    all.extend(agent::scenarios());
    all.extend(access::scenarios());
    all.extend(failover::scenarios());
    all.extend(lifecycle::scenarios());
    all.extend(killswitch::scenarios());
    all.extend(roaming::scenarios());
    all.extend(trust::scenarios());
    all.extend(control::scenarios());
    all.extend(control_managed::scenarios());
    all.extend(control_wgapp::scenarios());
    all.extend(userguide::scenarios());
    all.extend(portal::scenarios());
    all.extend(portal::admin::scenarios());
    all.extend(portal_policies::scenarios());
    // The README's main command, so that CI keeps it working.
    all.push(Scenario {
        name: "demo",
        about: "cargo xtask demo: the guide's steps with the control server, then traffic, status, counters and failover",
        run: crate::demo::run,
    });
    all
}
