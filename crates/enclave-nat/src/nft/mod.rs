//! The nftables backend: our own table `ip enclave`, replaced whole in one atomic batch.

mod msg;
mod netlink;

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::io;
use std::os::raw::c_char;

use nftnl::nftnl_sys as sys;
use nftnl::{Batch, Chain, ChainType, Hook, MsgType, NlMsg, Policy, ProtoFamily, Table};

use crate::model::{ChainKind, OtherForwarding, Ruleset, TABLE};
use crate::policy::NatPolicy;
use crate::{Error, NatBackend, Result};

use msg::{comment_from_udata, cstring, IntervalSet, OwnedRule};
use netlink::Socket;

/// A rule of ours as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleState {
    /// The chain it is in.
    pub chain: String,
    /// Its comment, which names it.
    pub comment: String,
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted.
    pub bytes: u64,
}

/// What the kernel holds in our table: rules in order, and the element count of every set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableState {
    /// The rules, in order.
    pub rules: Vec<RuleState>,
    /// Each set's number of elements.
    pub set_elements: BTreeMap<String, usize>,
}

/// Applies a [`NatPolicy`] as the nftables table `ip enclave`.
#[derive(Debug, Default)]
pub struct NftBackend {
    /// The ruleset of the last successful apply.
    applied: Option<Ruleset>,
}

/// A batch under construction that remembers what each message is, to name a rejected one.
struct TrackedBatch {
    batch: Batch,
    what: Vec<String>,
}

impl TrackedBatch {
    fn new() -> Self {
        TrackedBatch {
            batch: Batch::new(),
            what: Vec::new(),
        }
    }

    fn add(&mut self, msg: &impl NlMsg, kind: MsgType, what: impl Into<String>) {
        self.batch.add(msg, kind);
        self.what.push(what.into());
    }

    /// Sends the batch and fails with the first message the kernel refused.
    fn commit(self, socket: &Socket) -> Result<()> {
        let finalized = self.batch.finalize();
        let pages: Vec<&[u8]> = finalized.iter().collect();
        socket.send_batch(&pages)?;
        if self.what.is_empty() {
            return Ok(());
        }
        // `sequence_numbers` covers every message that asks for an answer: ours, plus the batch
        // begin and end markers on kernels that acknowledge them (6.10 and later).
        let acked = finalized.sequence_numbers();
        let first = first_message_seq(acked.clone(), self.what.len()).ok_or(
            Error::MalformedReply("the batch numbers its messages in an unexpected way"),
        )?;
        let mut acks = socket.collect_acks(acked.start, acked.end.saturating_sub(1))?;
        acks.sort_by_key(|a| a.seq);
        if let Some(bad) = acks.into_iter().find(|a| a.errno != 0) {
            let what = bad
                .seq
                .checked_sub(first)
                .and_then(|i| self.what.get(i as usize))
                .cloned()
                .unwrap_or_else(|| format!("the batch framing (message {})", bad.seq));
            return Err(Error::Rejected {
                what,
                extack: bad.message,
                source: io::Error::from_raw_os_error(bad.errno),
            });
        }
        Ok(())
    }
}

/// The sequence number of the first of `messages` messages in a batch whose acknowledged
/// sequence numbers are `acked` (sans-IO): the begin and end markers take one number each when
/// the kernel acknowledges them, none when it does not.
fn first_message_seq(acked: std::ops::Range<u32>, messages: usize) -> Option<u32> {
    let messages = u32::try_from(messages).ok()?;
    match acked.len().checked_sub(messages as usize)? {
        0 => Some(acked.start),
        2 => Some(acked.start + 1),
        _ => None,
    }
}

fn table() -> Table {
    Table::new(c"enclave", ProtoFamily::Ipv4)
}

impl NftBackend {
    /// A backend that has applied nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks that nftables answers in this namespace: a batch that creates (or keeps) nothing
    /// but an empty table add followed by its delete would change state, so only the batch
    /// support and a dump of our table are tried.
    pub fn probe() -> Result<()> {
        match nftnl::batch_is_supported() {
            Ok(true) => {}
            Ok(false) => {
                return Err(Error::NetlinkSocket(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "the kernel has no nf_tables batch support",
                )))
            }
            Err(_) => {
                return Err(Error::NetlinkSocket(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "libnftnl cannot talk to nf_tables",
                )))
            }
        }
        let socket = Socket::open()?;
        match dump_rules(&socket) {
            Ok(_) => Ok(()),
            // No table of ours yet: nftables itself works.
            Err(Error::NetlinkReceive(e)) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Puts `ruleset` in place as the whole content of our table, in one batch, unless the last
    /// one applied is the same and still there.
    pub fn apply_ruleset(&mut self, ruleset: &Ruleset) -> Result<()> {
        let socket = Socket::open()?;
        if self.applied.as_ref() == Some(ruleset) {
            // Idempotent: the same ruleset still in place is left alone (counters keep counting).
            match Self::check(&socket, ruleset) {
                Ok(()) => return Ok(()),
                Err(e) => tracing::warn!(error = %e, "our nftables table changed; replacing it"),
            }
        }
        let table = table();
        let mut batch = TrackedBatch::new();
        // Adding first makes the delete safe when the table does not exist yet.
        batch.add(&table, MsgType::Add, format!("table ip {TABLE}"));
        batch.add(&table, MsgType::Del, format!("table ip {TABLE} (delete)"));
        batch.add(&table, MsgType::Add, format!("table ip {TABLE}"));

        let mut set_ids = BTreeMap::new();
        let mut sets = Vec::new();
        for (i, spec) in ruleset.sets.iter().enumerate() {
            let id = i as u32 + 1;
            set_ids.insert(spec.name.clone(), id);
            sets.push((spec, IntervalSet::new(spec, id)?));
        }
        for (spec, set) in &sets {
            batch.add(set, MsgType::Add, format!("set {}", spec.name));
            let elements = set.element_messages()?;
            let mut part = 0;
            while elements.has_more() {
                part += 1;
                batch.add(
                    &elements,
                    MsgType::Add,
                    format!("elements of set {} (message {part})", spec.name),
                );
            }
        }

        let names: Vec<CString> = ruleset
            .chains
            .iter()
            .map(|c| cstring(c.name))
            .collect::<Result<_>>()?;
        let mut chains = Vec::new();
        for (spec, name) in ruleset.chains.iter().zip(&names) {
            let mut chain = Chain::new(name, &table);
            let (kind, hook, priority) = match spec.kind {
                ChainKind::NatPostrouting => (ChainType::Nat, Hook::PostRouting, 100),
                ChainKind::FilterForward => (ChainType::Filter, Hook::Forward, 0),
                ChainKind::FilterInput => (ChainType::Filter, Hook::In, 0),
                ChainKind::FilterOutput => (ChainType::Filter, Hook::Out, 0),
            };
            chain.set_hook(hook, priority);
            chain.set_type(kind);
            chain.set_policy(Policy::Accept);
            chains.push(chain);
        }
        for (spec, chain) in ruleset.chains.iter().zip(&chains) {
            batch.add(chain, MsgType::Add, format!("chain {}", spec.name));
        }
        for spec in &ruleset.chains {
            for rule in &spec.rules {
                let owned = OwnedRule::new(spec.name, rule, &set_ids)?;
                batch.add(
                    &owned,
                    MsgType::Add,
                    format!("rule \"{}\" in chain {} ({rule})", rule.comment, spec.name),
                );
            }
        }
        let messages = batch.what.len();
        batch.commit(&socket)?;
        self.applied = Some(ruleset.clone());
        Self::check(&socket, ruleset)?;
        tracing::debug!(
            messages,
            sets = ruleset.sets.len(),
            elements = ruleset.element_count(),
            "nftables table ip enclave replaced"
        );
        Ok(())
    }

    /// Compares what the kernel holds with `ruleset`.
    fn check(socket: &Socket, ruleset: &Ruleset) -> Result<()> {
        let state = read_table(socket, ruleset.sets.iter().map(|s| s.name.as_str()))?;
        let want: Vec<(&str, &str)> = ruleset
            .chains
            .iter()
            .flat_map(|c| c.rules.iter().map(move |r| (c.name, r.comment.as_str())))
            .collect();
        let have: Vec<(&str, &str)> = state
            .rules
            .iter()
            .map(|r| (r.chain.as_str(), r.comment.as_str()))
            .collect();
        if want != have {
            return Err(Error::ReadBack(format!(
                "table ip {TABLE} holds rules {have:?}, expected {want:?}"
            )));
        }
        for set in &ruleset.sets {
            let expected = set.element_count();
            let held = state.set_elements.get(&set.name).copied().unwrap_or(0);
            if held != expected {
                return Err(Error::ReadBack(format!(
                    "set {} holds {held} elements, expected {expected}",
                    set.name
                )));
            }
        }
        Ok(())
    }

    /// Reads our table back from the kernel (rules with their counters, set sizes).
    pub fn state(&self) -> Result<TableState> {
        let socket = Socket::open()?;
        let sets: Vec<&str> = self
            .applied
            .iter()
            .flat_map(|r| r.sets.iter().map(|s| s.name.as_str()))
            .collect();
        read_table(&socket, sets)
    }
}

impl NatBackend for NftBackend {
    fn name(&self) -> &'static str {
        "nftables"
    }

    fn apply(&mut self, policy: &NatPolicy, others: OtherForwarding) -> Result<()> {
        self.apply_ruleset(&Ruleset::for_gateway(policy, others))
    }

    fn rules(&self) -> Result<Vec<RuleState>> {
        let socket = Socket::open()?;
        match dump_rules(&socket) {
            Err(Error::NetlinkReceive(e)) if e.raw_os_error() == Some(libc::ENOENT) => {
                Ok(Vec::new())
            }
            other => other,
        }
    }

    fn reset_policy(&mut self) -> Result<()> {
        let socket = Socket::open()?;
        let table = table();
        let mut batch = TrackedBatch::new();
        batch.add(&table, MsgType::Add, format!("table ip {TABLE}"));
        batch.add(&table, MsgType::Del, format!("table ip {TABLE} (delete)"));
        batch.commit(&socket)?;
        self.applied = None;
        Ok(())
    }
}

fn read_table<'a>(socket: &Socket, sets: impl IntoIterator<Item = &'a str>) -> Result<TableState> {
    let rules = dump_rules(socket)?;
    let mut set_elements = BTreeMap::new();
    for set in sets {
        set_elements.insert(set.to_owned(), dump_set_size(socket, set)?);
    }
    Ok(TableState {
        rules,
        set_elements,
    })
}

/// A dump request for one object type, built by libnftnl.
fn request(kind: i32, payload: impl FnOnce(*mut libc::nlmsghdr)) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: the buffer is large enough for a header plus a table and set name.
    let len = unsafe {
        let header = sys::nftnl_nlmsg_build_hdr(
            buf.as_mut_ptr() as *mut c_char,
            kind as u16,
            libc::NFPROTO_IPV4 as u16,
            (libc::NLM_F_DUMP | libc::NLM_F_ACK) as u16,
            1,
        );
        payload(header);
        (*header).nlmsg_len as usize
    };
    buf.truncate(len);
    buf
}

fn dump_rules(socket: &Socket) -> Result<Vec<RuleState>> {
    let name = cstring(TABLE)?;
    let filter = OwnedRule::empty()?;
    // SAFETY: `filter` is live; the payload writer copies the table name into the request.
    let req = request(libc::NFT_MSG_GETRULE, |header| unsafe {
        sys::nftnl_rule_set_str(filter.as_ptr(), sys::NFTNL_RULE_TABLE as u16, name.as_ptr());
        sys::nftnl_rule_nlmsg_build_payload(header, filter.as_ptr());
    });
    let mut rules = Vec::new();
    for msg in socket.dump(&req)? {
        rules.push(parse_rule(&msg)?);
    }
    Ok(rules)
}

fn parse_rule(msg: &[u8]) -> Result<RuleState> {
    let owned = OwnedRule::empty()?;
    let rule = owned.as_ptr();
    // SAFETY: `msg` is one whole netlink message from the kernel; libnftnl validates its
    // attributes; every pointer read below belongs to `rule`, which `owned` frees.
    unsafe {
        if sys::nftnl_rule_nlmsg_parse(msg.as_ptr() as *const libc::nlmsghdr, rule) < 0 {
            return Err(Error::MalformedReply("a rule of our table does not parse"));
        }
        let chain = sys::nftnl_rule_get_str(rule, sys::NFTNL_RULE_CHAIN as u16);
        let chain = if chain.is_null() {
            String::new()
        } else {
            CStr::from_ptr(chain).to_string_lossy().into_owned()
        };
        let mut len = 0u32;
        let udata = sys::nftnl_rule_get_data(rule, sys::NFTNL_RULE_USERDATA as u16, &mut len);
        let comment = if udata.is_null() {
            String::new()
        } else {
            let bytes = std::slice::from_raw_parts(udata as *const u8, len as usize);
            comment_from_udata(bytes).unwrap_or_default()
        };
        let (mut packets, mut bytes) = (0, 0);
        let iter = sys::nftnl_expr_iter_create(rule);
        if !iter.is_null() {
            let mut expr = sys::nftnl_expr_iter_next(iter);
            while !expr.is_null() {
                let name = sys::nftnl_expr_get_str(expr, sys::NFTNL_EXPR_NAME as u16);
                if !name.is_null() && CStr::from_ptr(name).to_bytes() == b"counter" {
                    packets = sys::nftnl_expr_get_u64(expr, sys::NFTNL_EXPR_CTR_PACKETS as u16);
                    bytes = sys::nftnl_expr_get_u64(expr, sys::NFTNL_EXPR_CTR_BYTES as u16);
                }
                expr = sys::nftnl_expr_iter_next(iter);
            }
            sys::nftnl_expr_iter_destroy(iter);
        }
        Ok(RuleState {
            chain,
            comment,
            packets,
            bytes,
        })
    }
}

fn dump_set_size(socket: &Socket, set_name: &str) -> Result<usize> {
    let table = cstring(TABLE)?;
    let name = cstring(set_name)?;
    let owned = IntervalSet::empty()?;
    let set = owned.as_ptr();
    // SAFETY: `set` is live; libnftnl copies the names into the request.
    let req = request(libc::NFT_MSG_GETSETELEM, |header| unsafe {
        sys::nftnl_set_set_str(set, sys::NFTNL_SET_TABLE as u16, table.as_ptr());
        sys::nftnl_set_set_str(set, sys::NFTNL_SET_NAME as u16, name.as_ptr());
        sys::nftnl_set_set_u32(set, sys::NFTNL_SET_FAMILY as u16, libc::NFPROTO_IPV4 as u32);
        sys::nftnl_set_elems_nlmsg_build_payload(header, set);
    });
    socket.dump(&req).and_then(|msgs| {
        for msg in &msgs {
            // SAFETY: each is one whole message from the kernel; elements accumulate in `set`.
            if unsafe {
                sys::nftnl_set_elems_nlmsg_parse(msg.as_ptr() as *const libc::nlmsghdr, set)
            } < 0
            {
                return Err(Error::MalformedReply(
                    "an element list of our set does not parse",
                ));
            }
        }
        let mut count = 0;
        // SAFETY: the iterator walks the elements of the live set and is destroyed once.
        unsafe {
            let iter = sys::nftnl_set_elems_iter_create(set);
            if !iter.is_null() {
                while !sys::nftnl_set_elems_iter_next(iter).is_null() {
                    count += 1;
                }
                sys::nftnl_set_elems_iter_destroy(iter);
            }
        }
        Ok(count)
    })
}

#[cfg(test)]
mod tests {
    use super::first_message_seq;

    #[test]
    fn the_first_message_follows_an_acknowledged_begin_marker() {
        // Kernel 6.10 and later: begin (1), three messages (2..=4), end (5).
        assert_eq!(first_message_seq(1..6, 3), Some(2));
        // Older kernels: only the three messages ask for an answer.
        assert_eq!(first_message_seq(1..4, 3), Some(1));
        assert_eq!(first_message_seq(1..5, 3), None);
        assert_eq!(first_message_seq(1..2, 3), None);
    }
}
