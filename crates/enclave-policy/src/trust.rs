//! Trust requirements and active hours: a pure function of (view, observed facts, time).

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::sync::OnceLock;

use ipnet::Ipv4Net;
use jiff::tz::TimeZoneDatabase;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::model::{ActiveHours, TrustKind, TrustRequirement, Weekday};
use crate::view::{Direction, Requirements, View};

/// What the agent has observed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// The observed public (underlay) address of systems, by name: for peers, the source
    /// address of their authenticated packets; for the local system, when it knows it.
    pub public_ips: BTreeMap<String, Ipv4Addr>,
}

/// Why a grant is suspended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "failure")]
pub enum TrustFailure {
    /// The sender's public address has not been observed yet.
    PublicIpUnknown {
        /// The requirement.
        requirement: String,
    },
    /// The sender's public address is not in any allowed range.
    PublicIpNotAllowed {
        /// The requirement.
        requirement: String,
        /// The observed address.
        address: Ipv4Addr,
    },
    /// The sender's public address is in a blocked range.
    PublicIpBlocked {
        /// The requirement.
        requirement: String,
        /// The observed address.
        address: Ipv4Addr,
        /// The blocked range it lies in.
        range: Ipv4Net,
    },
    /// A requirement the view does not define (cannot happen for a compiled view).
    MissingRequirement {
        /// The requirement.
        requirement: String,
    },
    /// Outside the policy's active hours.
    OutsideActiveHours {
        /// The local time in the policy's zone, `Mon 18:05`.
        local_time: String,
        /// The zone.
        zone: String,
    },
    /// The active hours name a zone the bundled time zone database does not know.
    UnknownTimeZone {
        /// The zone.
        zone: String,
    },
}

impl fmt::Display for TrustFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PublicIpUnknown { requirement } => write!(
                f,
                "trust requirement {requirement:?} failed: the sender's public address is unknown"
            ),
            Self::PublicIpNotAllowed {
                requirement,
                address,
            } => write!(
                f,
                "trust requirement {requirement:?} failed: public address {address} is not in an allowed range"
            ),
            Self::PublicIpBlocked {
                requirement,
                address,
                range,
            } => write!(
                f,
                "trust requirement {requirement:?} failed: public address {address} is in blocked range {range}"
            ),
            Self::MissingRequirement { requirement } => {
                write!(f, "trust requirement {requirement:?} is not defined")
            }
            Self::OutsideActiveHours { local_time, zone } => {
                write!(f, "outside active hours (it is {local_time} in {zone})")
            }
            Self::UnknownTimeZone { zone } => write!(f, "unknown time zone {zone:?}"),
        }
    }
}

/// The outcome of one grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum GrantOutcome {
    /// Its rules apply.
    Active,
    /// Its rules do not apply now.
    Suspended {
        /// The first failed requirement.
        reason: TrustFailure,
    },
}

/// One grant of a view, evaluated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantEvaluation {
    /// The peer.
    pub peer: String,
    /// The direction of the grant.
    pub direction: Direction,
    /// The granting policy.
    pub policy: String,
    /// Whether it applies.
    pub outcome: GrantOutcome,
}

/// Every grant of a view, evaluated, ordered by peer, direction and policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evaluation {
    /// The grants, ordered by peer, direction and policy (as [`evaluate`] gives them), each
    /// once: [`Evaluation::is_active`] searches them in that order.
    pub grants: Vec<GrantEvaluation>,
}

impl Evaluation {
    /// Whether the grant of `policy` with `peer` in `direction` applies now.
    ///
    /// A binary search: the agent asks once for each grant of its view, and a gateway with a
    /// thousand senders has a thousand grants.
    pub fn is_active(&self, peer: &str, direction: Direction, policy: &str) -> bool {
        self.outcome(peer, direction, policy) == Some(&GrantOutcome::Active)
    }

    /// The outcome of the grant of `policy` with `peer` in `direction`; `None` when the view
    /// has no such grant. A binary search, as for [`Evaluation::is_active`].
    pub fn outcome(&self, peer: &str, direction: Direction, policy: &str) -> Option<&GrantOutcome> {
        self.grants
            .binary_search_by(|g| {
                (g.peer.as_str(), g.direction, g.policy.as_str()).cmp(&(peer, direction, policy))
            })
            .ok()
            .map(|i| &self.grants[i].outcome)
    }
}

/// Evaluates every grant of `view` against what was observed, at `now`.
///
/// The enforcer of a grant (the receiver, or the gateway) treats an unobserved public address
/// as failing; the other side applies the rules to drop early and leaves that judgement to the
/// enforcer. Active hours are judged on both sides.
pub fn evaluate(view: &View, facts: &Facts, now: Timestamp) -> Evaluation {
    let mut grants = Vec::new();
    for (peer, peer_view) in &view.peers {
        for (direction, map) in [
            (Direction::Inbound, &peer_view.inbound),
            (Direction::Outbound, &peer_view.outbound),
        ] {
            for (policy, grant) in map {
                let reqs = &grant.requirements;
                let enforcing = reqs.enforced_by == view.system;
                let outcome = match check(
                    reqs,
                    &view.trust_requirements,
                    facts.public_ips.get(&reqs.sender).copied(),
                    enforcing,
                    now,
                ) {
                    Ok(()) => GrantOutcome::Active,
                    Err(reason) => GrantOutcome::Suspended { reason },
                };
                grants.push(GrantEvaluation {
                    peer: peer.clone(),
                    direction,
                    policy: policy.clone(),
                    outcome,
                });
            }
        }
    }
    Evaluation { grants }
}

/// Checks the requirements of one grant. `public_ip` is the sender's observed address.
pub(crate) fn check(
    reqs: &Requirements,
    defined: &BTreeMap<String, TrustRequirement>,
    public_ip: Option<Ipv4Addr>,
    enforcing: bool,
    now: Timestamp,
) -> Result<(), TrustFailure> {
    if let Some(hours) = &reqs.active_hours {
        check_hours(hours, now)?;
    }
    for name in &reqs.policy_trust {
        check_one(name, defined, public_ip, enforcing)?;
    }
    // The sender qualifies through any one of its matching tags.
    let mut first_failure = None;
    for names in reqs.via_tags.values() {
        match names
            .iter()
            .try_for_each(|name| check_one(name, defined, public_ip, enforcing))
        {
            Ok(()) => return Ok(()),
            Err(failure) => {
                first_failure.get_or_insert(failure);
            }
        }
    }
    first_failure.map_or(Ok(()), Err)
}

fn check_one(
    name: &str,
    defined: &BTreeMap<String, TrustRequirement>,
    public_ip: Option<Ipv4Addr>,
    enforcing: bool,
) -> Result<(), TrustFailure> {
    let requirement = name.to_owned();
    let Some(req) = defined.get(name) else {
        return Err(TrustFailure::MissingRequirement { requirement });
    };
    match &req.kind {
        TrustKind::PublicIp { allow, block } => {
            let Some(address) = public_ip else {
                return if enforcing {
                    Err(TrustFailure::PublicIpUnknown { requirement })
                } else {
                    Ok(())
                };
            };
            if let Some(range) = block.iter().find(|r| r.contains(&address)) {
                return Err(TrustFailure::PublicIpBlocked {
                    requirement,
                    address,
                    range: *range,
                });
            }
            if !allow.is_empty() && !allow.iter().any(|r| r.contains(&address)) {
                return Err(TrustFailure::PublicIpNotAllowed {
                    requirement,
                    address,
                });
            }
            Ok(())
        }
    }
}

fn zones() -> &'static TimeZoneDatabase {
    static DB: OnceLock<TimeZoneDatabase> = OnceLock::new();
    DB.get_or_init(TimeZoneDatabase::bundled)
}

/// Whether `now` falls in `hours`.
pub(crate) fn check_hours(hours: &ActiveHours, now: Timestamp) -> Result<(), TrustFailure> {
    let tz = zones()
        .get(&hours.zone)
        .map_err(|_| TrustFailure::UnknownTimeZone {
            zone: hours.zone.clone(),
        })?;
    let local = now.to_zoned_datetime(tz);
    let day = match local.weekday() {
        jiff::civil::Weekday::Monday => Weekday::Mon,
        jiff::civil::Weekday::Tuesday => Weekday::Tue,
        jiff::civil::Weekday::Wednesday => Weekday::Wed,
        jiff::civil::Weekday::Thursday => Weekday::Thu,
        jiff::civil::Weekday::Friday => Weekday::Fri,
        jiff::civil::Weekday::Saturday => Weekday::Sat,
        jiff::civil::Weekday::Sunday => Weekday::Sun,
    };
    let minute =
        u16::try_from(local.hour()).unwrap_or(0) * 60 + u16::try_from(local.minute()).unwrap_or(0);
    let inside = hours.days.contains(&day)
        && hours
            .windows
            .iter()
            .any(|w| w.start <= minute && minute < w.end);
    if inside {
        Ok(())
    } else {
        Err(TrustFailure::OutsideActiveHours {
            local_time: local.strftime("%a %H:%M").to_string(),
            zone: hours.zone.clone(),
        })
    }
}
