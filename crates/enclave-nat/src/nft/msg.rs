//! Netlink messages for our rules and interval sets, built with libnftnl through `nftnl-sys`.
//!
//! The `nftnl` crate (0.9) has no interval sets and no range expression, so rules and sets are
//! built here directly; its `Batch`, `Table` and `Chain` are used as they are. nftnl 0.9's
//! `Rule::set_comment` writes the same user-data TLV as [`comment_udata`], but only into its
//! own `Rule`, which cannot hold our range expression (and it aborts the process when out of
//! memory where we return [`Error::Alloc`]), so the comment stays ours too;
//! [`comment_from_udata`] reads it back for the counters.
//! Every unsafe call below hands libnftnl a pointer this module allocated and owns.

use std::collections::BTreeMap;
use std::ffi::{c_void, CString};
use std::net::Ipv4Addr;
use std::os::raw::c_char;

use nftnl::nftnl_sys as sys;
use nftnl::{MsgType, NlMsg};

use crate::model::{CtState, Match, RuleSpec, SetSpec, Verdict, TABLE};
use crate::{Error, Result};

const NFPROTO_IPV4: u32 = libc::NFPROTO_IPV4 as u32;
/// `ipv4_addr` in nft's data types (`TYPE_IPADDR`).
const KEY_TYPE_IPV4_ADDR: u32 = 7;
/// `NFTNL_UDATA_RULE_COMMENT`: the user-data TLV nft shows as `comment "…"`.
const UDATA_RULE_COMMENT: u8 = 0;
const IFNAMSIZ: usize = 16;

const CT_STATE_ESTABLISHED: u32 = 1 << 1;
const CT_STATE_RELATED: u32 = 1 << 2;
const CT_STATE_NEW: u32 = 1 << 3;

/// `ptr`, or [`Error::Alloc`] where libnftnl returned null (it could not allocate).
fn allocated<T>(ptr: *mut T) -> Result<*mut T> {
    if ptr.is_null() {
        Err(Error::Alloc)
    } else {
        Ok(ptr)
    }
}

/// One expression under construction; freed unless handed to a rule.
struct Expr(*mut sys::nftnl_expr);

impl Expr {
    fn new(name: &'static [u8]) -> Result<Expr> {
        // SAFETY: `name` is a NUL-terminated static string; a null return is handled.
        let ptr = unsafe { sys::nftnl_expr_alloc(name.as_ptr() as *const c_char) };
        Ok(Expr(allocated(ptr)?))
    }

    fn u32(self, attr: u32, value: u32) -> Expr {
        // SAFETY: `self.0` is a live expression owned by `self`.
        unsafe { sys::nftnl_expr_set_u32(self.0, attr as u16, value) };
        self
    }

    fn data(self, attr: u32, data: &[u8]) -> Expr {
        // SAFETY: libnftnl copies `data.len()` bytes from a valid slice into the live expression.
        unsafe {
            sys::nftnl_expr_set(
                self.0,
                attr as u16,
                data.as_ptr() as *const c_void,
                data.len() as u32,
            )
        };
        self
    }

    fn str(self, attr: u32, value: &CString) -> Expr {
        // SAFETY: libnftnl copies the NUL-terminated string into the live expression.
        unsafe { sys::nftnl_expr_set_str(self.0, attr as u16, value.as_ptr()) };
        self
    }
}

impl Drop for Expr {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: a non-null pointer here was never handed to a rule, so we still own it.
            unsafe { sys::nftnl_expr_free(self.0) };
        }
    }
}

const REG1: u32 = libc::NFT_REG_1 as u32;

fn meta(key: i32) -> Result<Expr> {
    Ok(Expr::new(b"meta\0")?
        .u32(sys::NFTNL_EXPR_META_KEY, key as u32)
        .u32(sys::NFTNL_EXPR_META_DREG, REG1))
}

fn cmp(op: i32, data: &[u8]) -> Result<Expr> {
    Ok(Expr::new(b"cmp\0")?
        .u32(sys::NFTNL_EXPR_CMP_SREG, REG1)
        .u32(sys::NFTNL_EXPR_CMP_OP, op as u32)
        .data(sys::NFTNL_EXPR_CMP_DATA, data))
}

fn payload(base: i32, offset: u32, len: u32) -> Result<Expr> {
    Ok(Expr::new(b"payload\0")?
        .u32(sys::NFTNL_EXPR_PAYLOAD_DREG, REG1)
        .u32(sys::NFTNL_EXPR_PAYLOAD_BASE, base as u32)
        .u32(sys::NFTNL_EXPR_PAYLOAD_OFFSET, offset)
        .u32(sys::NFTNL_EXPR_PAYLOAD_LEN, len))
}

fn bitwise(mask: &[u8]) -> Result<Expr> {
    let xor = vec![0u8; mask.len()];
    Ok(Expr::new(b"bitwise\0")?
        .u32(sys::NFTNL_EXPR_BITWISE_SREG, REG1)
        .u32(sys::NFTNL_EXPR_BITWISE_DREG, REG1)
        .u32(sys::NFTNL_EXPR_BITWISE_LEN, mask.len() as u32)
        .data(sys::NFTNL_EXPR_BITWISE_MASK, mask)
        .data(sys::NFTNL_EXPR_BITWISE_XOR, &xor))
}

fn interface_name(name: &str) -> Result<[u8; IFNAMSIZ]> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= IFNAMSIZ || bytes.contains(&0) {
        return Err(Error::InterfaceName(name.to_owned()));
    }
    let mut padded = [0u8; IFNAMSIZ];
    padded[..bytes.len()].copy_from_slice(bytes);
    Ok(padded)
}

/// The expressions of one match, in the order the kernel evaluates them.
fn match_exprs(m: &Match, set_ids: &BTreeMap<String, u32>) -> Result<Vec<Expr>> {
    let network = libc::NFT_PAYLOAD_NETWORK_HEADER;
    let eq = libc::NFT_CMP_EQ;
    Ok(match m {
        Match::IifName(name) => vec![
            meta(libc::NFT_META_IIFNAME)?,
            cmp(eq, &interface_name(name)?)?,
        ],
        Match::OifName(name) => vec![
            meta(libc::NFT_META_OIFNAME)?,
            cmp(eq, &interface_name(name)?)?,
        ],
        Match::IifNameNot(name) => vec![
            meta(libc::NFT_META_IIFNAME)?,
            cmp(libc::NFT_CMP_NEQ, &interface_name(name)?)?,
        ],
        Match::OifNameNot(name) => vec![
            meta(libc::NFT_META_OIFNAME)?,
            cmp(libc::NFT_CMP_NEQ, &interface_name(name)?)?,
        ],
        Match::Saddr(net) => {
            let mut exprs = vec![payload(network, 12, 4)?];
            if net.prefix_len() < 32 {
                exprs.push(bitwise(&net.netmask().octets())?);
            }
            exprs.push(cmp(eq, &net.network().octets())?);
            exprs
        }
        Match::SaddrInSet(set) => vec![payload(network, 12, 4)?, lookup(set, set_ids)?],
        Match::DaddrInSet(set) => vec![payload(network, 16, 4)?, lookup(set, set_ids)?],
        Match::L4Proto(proto) => vec![meta(libc::NFT_META_L4PROTO)?, cmp(eq, &[proto.number()])?],
        Match::Dport(_, ports) => {
            let load = payload(libc::NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2)?;
            if ports.first == ports.last {
                vec![load, cmp(eq, &ports.first.to_be_bytes())?]
            } else {
                let range = Expr::new(b"range\0")?
                    .u32(sys::NFTNL_EXPR_RANGE_SREG, REG1)
                    .u32(sys::NFTNL_EXPR_RANGE_OP, libc::NFT_RANGE_EQ as u32)
                    .data(sys::NFTNL_EXPR_RANGE_FROM_DATA, &ports.first.to_be_bytes())
                    .data(sys::NFTNL_EXPR_RANGE_TO_DATA, &ports.last.to_be_bytes());
                vec![load, range]
            }
        }
        Match::CtState(state) => {
            let mask = match state {
                CtState::NewEstablished => CT_STATE_NEW | CT_STATE_ESTABLISHED,
                CtState::EstablishedRelated => CT_STATE_ESTABLISHED | CT_STATE_RELATED,
                CtState::Related => CT_STATE_RELATED,
            };
            let ct = Expr::new(b"ct\0")?
                .u32(sys::NFTNL_EXPR_CT_KEY, libc::NFT_CT_STATE as u32)
                .u32(sys::NFTNL_EXPR_CT_DREG, REG1);
            vec![
                ct,
                bitwise(&mask.to_ne_bytes())?,
                cmp(libc::NFT_CMP_NEQ, &0u32.to_ne_bytes())?,
            ]
        }
    })
}

fn lookup(set: &str, set_ids: &BTreeMap<String, u32>) -> Result<Expr> {
    let id = set_ids
        .get(set)
        .copied()
        .ok_or_else(|| Error::UnknownSet(set.to_owned()))?;
    let name = cstring(set)?;
    Ok(Expr::new(b"lookup\0")?
        .u32(sys::NFTNL_EXPR_LOOKUP_SREG, REG1)
        .str(sys::NFTNL_EXPR_LOOKUP_SET, &name)
        .u32(sys::NFTNL_EXPR_LOOKUP_SET_ID, id))
}

fn verdict_exprs(verdict: Verdict) -> Result<Vec<Expr>> {
    let counter = Expr::new(b"counter\0")?;
    let immediate_verdict = |code: i32| -> Result<Expr> {
        Ok(Expr::new(b"immediate\0")?
            .u32(sys::NFTNL_EXPR_IMM_DREG, libc::NFT_REG_VERDICT as u32)
            .u32(sys::NFTNL_EXPR_IMM_VERDICT, code as u32))
    };
    Ok(match verdict {
        Verdict::Accept => vec![counter, immediate_verdict(libc::NF_ACCEPT)?],
        Verdict::Drop => vec![counter, immediate_verdict(libc::NF_DROP)?],
        Verdict::Snat(to) => {
            let load = Expr::new(b"immediate\0")?
                .u32(sys::NFTNL_EXPR_IMM_DREG, REG1)
                .data(sys::NFTNL_EXPR_IMM_DATA, &to.octets());
            let nat = Expr::new(b"nat\0")?
                .u32(sys::NFTNL_EXPR_NAT_TYPE, libc::NFT_NAT_SNAT as u32)
                .u32(sys::NFTNL_EXPR_NAT_FAMILY, NFPROTO_IPV4)
                .u32(sys::NFTNL_EXPR_NAT_REG_ADDR_MIN, REG1);
            vec![counter, load, nat]
        }
    })
}

/// `s` as a C string for libnftnl; a name with a NUL byte is an error.
pub(super) fn cstring(s: &str) -> Result<CString> {
    CString::new(s).map_err(|_| Error::InvalidName(s.to_owned()))
}

/// The user-data blob nft reads a rule's comment from: one TLV, NUL-terminated text.
pub(crate) fn comment_udata(comment: &str) -> Vec<u8> {
    let mut text: Vec<u8> = comment.bytes().filter(|b| *b != 0).take(254).collect();
    text.push(0);
    let mut udata = vec![UDATA_RULE_COMMENT, text.len() as u8];
    udata.extend_from_slice(&text);
    udata
}

/// Reads the comment back out of a rule's user data.
pub(crate) fn comment_from_udata(udata: &[u8]) -> Option<String> {
    let mut rest = udata;
    while rest.len() >= 2 {
        let (kind, len) = (rest[0], usize::from(rest[1]));
        let value = rest.get(2..2 + len)?;
        if kind == UDATA_RULE_COMMENT {
            let text = value.split(|b| *b == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        rest = &rest[2 + len..];
    }
    None
}

/// A rule of ours, ready to be written into a batch.
pub(crate) struct OwnedRule(*mut sys::nftnl_rule);

impl OwnedRule {
    /// A rule with nothing set: to fill in, or to parse a kernel message into.
    pub(crate) fn empty() -> Result<OwnedRule> {
        // SAFETY: plain allocation; a null return is handled.
        let ptr = unsafe { sys::nftnl_rule_alloc() };
        Ok(OwnedRule(allocated(ptr)?))
    }

    /// The live rule, owned by `self` (freed when it drops).
    pub(crate) fn as_ptr(&self) -> *mut sys::nftnl_rule {
        self.0
    }

    pub(crate) fn new(
        chain: &str,
        spec: &RuleSpec,
        set_ids: &BTreeMap<String, u32>,
    ) -> Result<OwnedRule> {
        let rule = OwnedRule::empty()?;
        let table = cstring(TABLE)?;
        let chain = cstring(chain)?;
        let udata = comment_udata(&spec.comment);
        // SAFETY: `rule.0` is live; libnftnl copies the strings and the user data.
        unsafe {
            sys::nftnl_rule_set_u32(rule.0, sys::NFTNL_RULE_FAMILY as u16, NFPROTO_IPV4);
            sys::nftnl_rule_set_str(rule.0, sys::NFTNL_RULE_TABLE as u16, table.as_ptr());
            sys::nftnl_rule_set_str(rule.0, sys::NFTNL_RULE_CHAIN as u16, chain.as_ptr());
            sys::nftnl_rule_set_data(
                rule.0,
                sys::NFTNL_RULE_USERDATA as u16,
                udata.as_ptr() as *const c_void,
                udata.len() as u32,
            );
        }
        let mut exprs = Vec::new();
        for m in &spec.matches {
            exprs.extend(match_exprs(m, set_ids)?);
        }
        exprs.extend(verdict_exprs(spec.verdict)?);
        for mut expr in exprs {
            let raw = std::mem::replace(&mut expr.0, std::ptr::null_mut());
            // SAFETY: the rule takes ownership of the expression; `expr` no longer frees it.
            unsafe { sys::nftnl_rule_add_expr(rule.0, raw) };
        }
        Ok(rule)
    }
}

impl Drop for OwnedRule {
    fn drop(&mut self) {
        // SAFETY: we own the rule and the expressions it holds.
        unsafe { sys::nftnl_rule_free(self.0) };
    }
}

/// Writes the netlink and nfnetlink headers of one IPv4 nftables message of type `kind` into
/// `buf` and returns the header, for a `nftnl_*_nlmsg_build_payload` to complete.
///
/// # Safety
/// `buf` must have room for one message of the maximum size (as a batch's buffer has).
unsafe fn ipv4_header(
    buf: *mut c_void,
    kind: libc::c_int,
    flags: libc::c_int,
    seq: u32,
) -> *mut libc::nlmsghdr {
    // SAFETY: the caller guarantees the room; nftnl writes only the headers.
    unsafe {
        sys::nftnl_nlmsg_build_hdr(
            buf as *mut c_char,
            kind as u16,
            NFPROTO_IPV4 as u16,
            flags as u16,
            seq,
        )
    }
}

// SAFETY: `write` builds exactly one NEWRULE message into the buffer the batch hands it.
unsafe impl NlMsg for OwnedRule {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, _msg_type: MsgType) {
        let flags = libc::NLM_F_CREATE | libc::NLM_F_APPEND | libc::NLM_F_EXCL | libc::NLM_F_ACK;
        // SAFETY: the batch guarantees `buf` has room for one message of the maximum size.
        unsafe {
            let header = ipv4_header(buf, libc::NFT_MSG_NEWRULE, flags, seq);
            sys::nftnl_rule_nlmsg_build_payload(header, self.0);
        }
    }
}

/// A named interval set of IPv4 addresses with its elements.
pub(crate) struct IntervalSet(*mut sys::nftnl_set);

impl IntervalSet {
    /// A set with nothing set: to fill in, or to parse kernel messages into.
    pub(crate) fn empty() -> Result<IntervalSet> {
        // SAFETY: plain allocation; a null return is handled.
        let ptr = unsafe { sys::nftnl_set_alloc() };
        Ok(IntervalSet(allocated(ptr)?))
    }

    /// The live set, owned by `self` (freed when it drops).
    pub(crate) fn as_ptr(&self) -> *mut sys::nftnl_set {
        self.0
    }

    pub(crate) fn new(spec: &SetSpec, id: u32) -> Result<IntervalSet> {
        let set = IntervalSet::empty()?;
        let table = cstring(TABLE)?;
        let name = cstring(&spec.name)?;
        // SAFETY: `set.0` is live; libnftnl copies the strings.
        unsafe {
            sys::nftnl_set_set_u32(set.0, sys::NFTNL_SET_FAMILY as u16, NFPROTO_IPV4);
            sys::nftnl_set_set_str(set.0, sys::NFTNL_SET_TABLE as u16, table.as_ptr());
            sys::nftnl_set_set_str(set.0, sys::NFTNL_SET_NAME as u16, name.as_ptr());
            sys::nftnl_set_set_u32(set.0, sys::NFTNL_SET_ID as u16, id);
            sys::nftnl_set_set_u32(
                set.0,
                sys::NFTNL_SET_FLAGS as u16,
                libc::NFT_SET_INTERVAL as u32,
            );
            sys::nftnl_set_set_u32(set.0, sys::NFTNL_SET_KEY_TYPE as u16, KEY_TYPE_IPV4_ADDR);
            sys::nftnl_set_set_u32(set.0, sys::NFTNL_SET_KEY_LEN as u16, 4);
        }
        for (first, last) in &spec.intervals {
            set.add_element(*first, false)?;
            if *last != Ipv4Addr::BROADCAST {
                set.add_element(Ipv4Addr::from(u32::from(*last) + 1), true)?;
            }
        }
        Ok(set)
    }

    fn add_element(&self, key: Ipv4Addr, interval_end: bool) -> Result<()> {
        // SAFETY: plain allocation; a null return is handled.
        let elem = allocated(unsafe { sys::nftnl_set_elem_alloc() })?;
        let octets = key.octets();
        // SAFETY: `elem` is live and ours until `nftnl_set_elem_add` hands it to the set.
        unsafe {
            sys::nftnl_set_elem_set(
                elem,
                sys::NFTNL_SET_ELEM_KEY as u16,
                octets.as_ptr() as *const c_void,
                4,
            );
            if interval_end {
                sys::nftnl_set_elem_set_u32(
                    elem,
                    sys::NFTNL_SET_ELEM_FLAGS as u16,
                    libc::NFT_SET_ELEM_INTERVAL_END as u32,
                );
            }
            sys::nftnl_set_elem_add(self.0, elem);
        }
        Ok(())
    }

    /// The element messages, as many as libnftnl needs to carry every element.
    pub(crate) fn element_messages(&self) -> Result<SetElements<'_>> {
        // SAFETY: the iterator borrows the live set, which outlives `SetElements`.
        let iter = allocated(unsafe { sys::nftnl_set_elems_iter_create(self.0) })?;
        Ok(SetElements {
            _set: self,
            iter,
            more: std::cell::Cell::new(true),
        })
    }
}

impl Drop for IntervalSet {
    fn drop(&mut self) {
        // SAFETY: we own the set and its elements.
        unsafe { sys::nftnl_set_free(self.0) };
    }
}

// SAFETY: `write` builds exactly one NEWSET message into the buffer the batch hands it.
unsafe impl NlMsg for IntervalSet {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, _msg_type: MsgType) {
        let flags = libc::NLM_F_CREATE | libc::NLM_F_ACK;
        // SAFETY: the batch guarantees `buf` has room for one message of the maximum size.
        unsafe {
            let header = ipv4_header(buf, libc::NFT_MSG_NEWSET, flags, seq);
            sys::nftnl_set_nlmsg_build_payload(header, self.0);
        }
    }
}

/// Writes the next NEWSETELEM message on each `write`; `has_more` says when all are written.
pub(crate) struct SetElements<'a> {
    _set: &'a IntervalSet,
    iter: *mut sys::nftnl_set_elems_iter,
    more: std::cell::Cell<bool>,
}

impl SetElements<'_> {
    pub(crate) fn has_more(&self) -> bool {
        // SAFETY: the iterator is live while `self` is.
        self.more.get() && unsafe { !sys::nftnl_set_elems_iter_cur(self.iter).is_null() }
    }
}

impl Drop for SetElements<'_> {
    fn drop(&mut self) {
        // SAFETY: we created the iterator and destroy it once.
        unsafe { sys::nftnl_set_elems_iter_destroy(self.iter) };
    }
}

// SAFETY: `write` builds exactly one NEWSETELEM message into the buffer the batch hands it.
unsafe impl NlMsg for SetElements<'_> {
    unsafe fn write(&self, buf: *mut c_void, seq: u32, _msg_type: MsgType) {
        let flags = libc::NLM_F_CREATE | libc::NLM_F_EXCL | libc::NLM_F_ACK;
        // SAFETY: the batch guarantees `buf` has room for one message of the maximum size; the
        // iterator stops adding elements before the message outgrows it.
        unsafe {
            let header = ipv4_header(buf, libc::NFT_MSG_NEWSETELEM, flags, seq);
            let rc = sys::nftnl_set_elems_nlmsg_build_payload_iter(header, self.iter);
            self.more.set(rc > 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_round_trip_through_user_data() {
        let udata = comment_udata("grant 0: web");
        assert_eq!(udata[0], UDATA_RULE_COMMENT);
        assert_eq!(usize::from(udata[1]), "grant 0: web".len() + 1);
        assert_eq!(comment_from_udata(&udata).as_deref(), Some("grant 0: web"));
        assert_eq!(comment_from_udata(&[5, 1]), None);
    }

    #[test]
    fn interface_names_are_padded_and_checked() {
        let padded = interface_name("lan0").unwrap();
        assert_eq!(&padded[..5], b"lan0\0");
        assert!(interface_name("a-name-too-long-for-linux").is_err());
        assert!(interface_name("").is_err());
    }
}
