//! A device added by the administrator that runs an official WireGuard app instead of our
//! agent: a system like an enrolled one (an overlay address, tags, approved at once), marked
//! as an app device. The shell made its key pair (or the administrator pasted the public key);
//! only the public key comes here.

use std::collections::BTreeSet;

use crate::model::{Approval, State, APP_DEVICE};

use super::input::{check_name, check_tags, is_public_key};
use super::Ctx;
use super::{join, problem, Ran, Refusal, Reply, Touched};

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
    let system = join(
        next,
        t,
        name.clone(),
        public_key,
        tags,
        Approval::Approved,
        false,
        APP_DEVICE.to_owned(),
        ctx,
    )?;
    let address = system.address;
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
