//! A device added by the administrator that runs an official WireGuard app instead of our
//! agent: a system like an enrolled one (an overlay address, tags, approved at once), marked
//! as an app device. The shell made its key pair (or the administrator pasted the public key);
//! only the public key comes here.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use crate::model::{Approval, ManagedSystem, State, APP_DEVICE};

use super::input::{allocate, check_name, check_tags, is_public_key};
use super::Ctx;
use super::{problem, targeted, Ran, Refusal, Reply, Touched};

/// Adds the app device `name` with `public_key` and `tags`. `key_made_here` only says, in the
/// audit log, whether the server made the key pair.
pub(super) fn add(
    next: &mut State,
    t: &mut Touched,
    name: String,
    public_key: &str,
    tags: BTreeSet<String>,
    key_made_here: bool,
    ctx: &Ctx,
) -> Result<Ran, Refusal> {
    check_name("name", &name)?;
    check_tags("tags", &tags)?;
    let public_key = public_key.trim();
    if !is_public_key(public_key) {
        return Err(problem(
            "public_key",
            "is not a WireGuard public key (base64 of 32 bytes, as the app shows it)",
        ));
    }
    if next.systems.contains_key(&name) {
        return Err(Refusal::Exists {
            what: "system",
            name,
        });
    }
    if let Some(s) = next.systems.values().find(|s| s.public_key == public_key) {
        return Err(Refusal::KeyTaken(s.name.clone()));
    }
    let used: BTreeSet<Ipv4Addr> = next.systems.values().map(|s| s.address).collect();
    let overlay = next.settings.overlay;
    let address = allocate(overlay, &used).ok_or(Refusal::NoAddress(overlay))?;
    let system = ManagedSystem {
        name: name.clone(),
        public_key: public_key.to_owned(),
        address,
        tags,
        endpoint: None,
        observed_endpoint: None,
        enabled: true,
        approval: Approval::Approved,
        gateway: None,
        discovered: BTreeMap::new(),
        ephemeral: false,
        enrolled_with: Some(APP_DEVICE.to_owned()),
        created_at: ctx.now,
        last_seen: None,
        connected: false,
        version: 0,
    };
    next.systems.insert(name.clone(), system.clone());
    t.systems.insert(name.clone());
    t.definition = true;
    // A new system with a fresh name, address and key, no endpoint and no gateway settings:
    // what the targeted check covers for an enrolment.
    t.targeted = Some(targeted::Targeted::Added(name.clone()));
    let made = if key_made_here {
        "key pair made by the server"
    } else {
        "public key pasted"
    };
    let detail = format!("WireGuard app, address {address}, {made}");
    Ok((
        "system.add-app",
        name,
        detail,
        Reply::System(Box::new(system)),
    ))
}
