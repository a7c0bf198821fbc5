//! Checks of administrator and agent input, and the allocation of names and addresses.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use base64::Engine as _;
use enclave_policy::Severity;
use ipnet::Ipv4Net;

use crate::definition::FieldProblem;
use crate::model::{EnrolmentKey, UnixTime};

use super::{problem, KeyRefusal, Refusal};

/// Longest name of a system, tag or token.
pub const MAX_NAME: usize = 63;
/// Longest policy or trust requirement name.
pub const MAX_POLICY_NAME: usize = 100;
/// Most elements in one list field (tags, subnets, ACL entries, …).
pub const MAX_LIST: usize = 1024;

/// Checks a system, tag or token name: 1–63 of `a-z A-Z 0-9 - _ .`.
pub fn check_name(field: &str, name: &str) -> Result<(), Refusal> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(problem(
            field,
            format!("must be 1 to {MAX_NAME} characters long"),
        ));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(problem(
            field,
            format!("{name:?} may hold only letters, digits, '-', '_' and '.'"),
        ));
    }
    Ok(())
}

/// Checks a policy or trust requirement name: 1–100 printable characters.
pub fn check_label(field: &str, name: &str) -> Result<(), Refusal> {
    if name.trim().is_empty() || name.chars().count() > MAX_POLICY_NAME {
        return Err(problem(
            field,
            format!("must be 1 to {MAX_POLICY_NAME} characters long, not only spaces"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(problem(field, "must not hold control characters"));
    }
    Ok(())
}

pub(crate) fn check_list<T>(field: &str, list: &[T]) -> Result<(), Refusal> {
    if list.len() > MAX_LIST {
        return Err(problem(
            field,
            format!("holds {} entries; at most {MAX_LIST}", list.len()),
        ));
    }
    Ok(())
}

pub(crate) fn check_tags(field: &str, tags: &BTreeSet<String>) -> Result<(), Refusal> {
    check_list(field, &tags.iter().collect::<Vec<_>>())?;
    for (i, tag) in tags.iter().enumerate() {
        check_name(&format!("{field}[{i}]"), tag)?;
    }
    Ok(())
}

/// A subnet given by the administrator: host bits must be clear.
///
/// # Errors
/// The field and the fix (`did you mean 10.1.0.0/16?`).
pub fn parse_subnet(field: &str, text: &str) -> Result<Ipv4Net, Refusal> {
    let net: Ipv4Net = text.trim().parse().map_err(|_| {
        problem(
            field,
            format!("{text:?} is not an IPv4 CIDR such as 192.168.77.0/24"),
        )
    })?;
    if net.trunc() != net {
        return Err(host_bits(field, net));
    }
    Ok(net)
}

/// Whether `text` is a WireGuard public key (base64 of 32 bytes).
pub fn is_public_key(text: &str) -> bool {
    text.len() == 44
        && base64::engine::general_purpose::STANDARD
            .decode(text)
            .is_ok_and(|b| b.len() == 32)
}

/// The lowest free address of the overlay network (not its network or broadcast address).
pub fn allocate(overlay: Ipv4Net, used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let first = u32::from(overlay.network()).checked_add(1)?;
    let last = u32::from(overlay.broadcast()).checked_sub(1)?;
    let mut candidate = first;
    for addr in used.range(Ipv4Addr::from(first)..=Ipv4Addr::from(last)) {
        let addr = u32::from(*addr);
        if addr > candidate {
            break;
        }
        candidate = addr.checked_add(1)?;
    }
    (candidate <= last).then(|| Ipv4Addr::from(candidate))
}

/// A host name made into a unique system name: lower case, `a-z 0-9 -`, `-2`, `-3`… on a clash.
pub fn unique_name(hostname: Option<&str>, taken: &crate::model::Systems) -> String {
    let mut base: String = hostname
        .unwrap_or("")
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    base = base.trim_matches('-').chars().take(MAX_NAME - 6).collect();
    if base.is_empty() {
        base = "system".to_owned();
    }
    if !taken.contains_key(&base) {
        return base;
    }
    (2u32..)
        .map(|n| format!("{base}-{n}"))
        .find(|name| !taken.contains_key(name))
        .unwrap_or(base)
}

/// What a key would say to an enrolling agent now.
pub fn key_state(key: &EnrolmentKey, now: UnixTime) -> Result<(), KeyRefusal> {
    if key.revoked {
        Err(KeyRefusal::Revoked)
    } else if key.expires_at.is_some_and(|at| now >= at) {
        Err(KeyRefusal::Expired)
    } else if key.uses_allowed.is_some_and(|n| key.uses >= n) {
        Err(KeyRefusal::UsedUp)
    } else {
        Ok(())
    }
}

pub(crate) fn host_bits(field: &str, net: Ipv4Net) -> Refusal {
    Refusal::Invalid(vec![FieldProblem {
        severity: Severity::Error,
        field: field.to_owned(),
        message: format!("{net} has host bits set"),
        hint: Some(format!("did you mean {}?", net.trunc())),
    }])
}
