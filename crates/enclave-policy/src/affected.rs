//! Which systems' views a change of the network can change, so that a control server compiles
//! only those after an edit instead of every view.
//!
//! [`affected`] compares two networks (before and after a change) and answers either
//! [`Affected::All`] or a set of system names. For every system outside the set, the view
//! [`crate::compile`] gives is the same on both networks. Why this holds:
//!
//! A system Y's view is a function of three things only: the network's settings, tags, trust
//! requirements, policies and pre-shared keys (here called the network-wide part); Y's own
//! entry; and the entries of the systems Y's policies can bring into its view. Those are, per
//! policy, regardless of whether the policy or the systems are enabled (the compiler filters
//! on that later, from the entries themselves):
//! - a direct policy, when Y carries one of its sender tags: every carrier of a receiver tag;
//!   when Y carries a receiver tag: every carrier of a sender tag;
//! - a gateway policy, when Y carries one of its sender tags: the gateways it names; when Y is
//!   one of the named gateways: every carrier of a sender tag.
//!
//! So:
//! - when the network-wide part differs, anything can change: [`Affected::All`] (pre-shared
//!   keys are the exception: they only touch the views of the systems they name);
//! - otherwise let C be the systems whose entries differ (added, removed or changed). Y's view
//!   can change only if Y is in C, or some X in C is (or was) among the systems Y's policies
//!   bring in. That relation is the one above read backwards ([`reach`]), evaluated on the
//!   network before (with X's old tags and names) and after (with its new ones); a system
//!   that enters or leaves Y's view is caught on the side where it is in it.
//!
//! The property test `incremental_views_match_compiling_all` (tests/invariants.rs) compiles
//! every view before and after random changes and checks each view that changed is in the set.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use imbl::ordmap::DiffItem;

use crate::model::{Network, System};

/// The systems whose views a change can have changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Affected {
    /// Any system's (the network-wide part changed).
    All,
    /// Only these systems' (by name); empty when the change cannot touch any view.
    Systems(BTreeSet<String>),
}

impl Affected {
    /// Whether the view of `system` can have changed.
    pub fn contains(&self, system: &str) -> bool {
        match self {
            Self::All => true,
            Self::Systems(names) => names.contains(system),
        }
    }
}

/// Which views can differ between `before` and `after` (see the module's documentation).
pub fn affected(before: &Network, after: &Network) -> Affected {
    if before.overlay != after.overlay
        || before.keepalive != after.keepalive
        || before.tags != after.tags
        || before.trust_requirements != after.trust_requirements
        || before.direct_policies != after.direct_policies
        || before.gateway_policies != after.gateway_policies
    {
        return Affected::All;
    }
    let mut out = BTreeSet::new();
    if before.preshared_keys != after.preshared_keys {
        // A pre-shared key only sets `preshared_key_file` on the views of its two systems;
        // which entry names a pair depends on the order, so every system either list names.
        for key in before.preshared_keys.iter().chain(&after.preshared_keys) {
            out.extend(key.systems.iter().cloned());
        }
    }
    let changed = changed_systems(before, after);
    if changed.is_empty() {
        return Affected::Systems(out);
    }
    let mut before_index = None;
    let mut after_index = None;
    for name in &changed {
        if let Some(system) = before.systems.get(name.as_str()) {
            reach(before, system, &mut before_index, &mut out);
        }
        if let Some(system) = after.systems.get(name.as_str()) {
            reach(after, system, &mut after_index, &mut out);
        }
    }
    out.extend(changed);
    Affected::Systems(out)
}

/// Like [`affected`], for networks shared behind `Arc`s: the same `Arc` changed nothing.
pub fn affected_shared(before: &Arc<Network>, after: &Arc<Network>) -> Affected {
    if Arc::ptr_eq(before, after) {
        return Affected::Systems(BTreeSet::new());
    }
    affected(before, after)
}

/// Names of the systems added, removed or changed (the persistent maps skip what they share).
fn changed_systems(before: &Network, after: &Network) -> Vec<String> {
    before
        .systems
        .diff(&after.systems)
        .map(|item| match item {
            DiffItem::Add(name, _) | DiffItem::Remove(name, _) => name.clone(),
            DiffItem::Update { new: (name, _), .. } => name.clone(),
        })
        .collect()
}

/// Systems by tag, enabled or not: who a policy's tags can bring into a view.
type TagIndex<'n> = HashMap<&'n str, Vec<&'n str>>;

fn tag_index(net: &Network) -> TagIndex<'_> {
    let mut by_tag: TagIndex<'_> = HashMap::new();
    for system in net.systems.values() {
        for tag in &system.tags {
            by_tag.entry(tag).or_default().push(&system.name);
        }
    }
    by_tag
}

/// Adds to `out` every system of `net` whose view can mention `x` (see the module's
/// documentation); `index` is built on first need.
fn reach<'n>(
    net: &'n Network,
    x: &System,
    index: &mut Option<TagIndex<'n>>,
    out: &mut BTreeSet<String>,
) {
    let mut carriers = |tags: &BTreeSet<String>, out: &mut BTreeSet<String>| {
        let index = index.get_or_insert_with(|| tag_index(net));
        for tag in tags {
            for name in index.get(tag.as_str()).into_iter().flatten() {
                out.insert((*name).to_owned());
            }
        }
    };
    for policy in net.direct_policies.values() {
        if !x.tags.is_disjoint(&policy.senders) {
            carriers(&policy.receivers, out);
        }
        if !x.tags.is_disjoint(&policy.receivers) {
            carriers(&policy.senders, out);
        }
    }
    for policy in net.gateway_policies.values() {
        if !x.tags.is_disjoint(&policy.senders) {
            out.extend(policy.gateways.iter().cloned());
        }
        if policy.gateways.contains(&x.name) {
            carriers(&policy.senders, out);
        }
    }
}
