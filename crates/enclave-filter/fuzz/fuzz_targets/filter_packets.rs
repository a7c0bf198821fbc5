//! Arbitrary packets through a filter with permissive and empty rule sets: parsing and
//! connection tracking never panic, the table stays bounded, and with no rules nothing passes.
//!
//! Input: records of one byte (bits 0-6: the packet's length; bit 7: egress) and an IPv4
//! packet. Corpus (`corpus/filter_packets/`): an ICMP echo and its reply, a TCP handshake and
//! close, a SYN from the far side, a UDP query, its reply and an ICMP error quoting it, a
//! non-first fragment, an IPv6 header.

#![no_main]

use std::time::{Duration, Instant};

use enclave_filter::{
    AddrEntry, AllowRule, Direction, FilterConfig, FilterRules, PeerFilter, Protocol, Timeouts,
    Verdict,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let everything = AllowRule {
        protocol: Protocol::Any,
        ports: None,
        sources: vec![AddrEntry::Net("0.0.0.0/0".parse().unwrap())],
        destinations: vec![AddrEntry::Net("0.0.0.0/0".parse().unwrap())],
        label: None,
    };
    let config = FilterConfig {
        max_flows: 8,
        timeouts: Timeouts::default(),
    };
    let mut open = PeerFilter::new(
        FilterRules {
            ingress: vec![everything],
            egress: vec![],
        },
        config,
    );
    let mut closed = PeerFilter::new(FilterRules::default(), config);
    let mut now = Instant::now();
    // Records: one byte of length and direction, then the packet.
    let mut rest = data;
    while let Some((&head, tail)) = rest.split_first() {
        let len = usize::from(head & 0x7f).min(tail.len());
        let (packet, next) = tail.split_at(len);
        let direction = if head & 0x80 == 0 {
            Direction::Ingress
        } else {
            Direction::Egress
        };
        let _ = open.check(direction, packet, now);
        assert_ne!(closed.check(direction, packet, now), Verdict::Pass);
        assert!(open.flow_count() <= 8);
        now += Duration::from_secs(u64::from(head & 0x0f));
        rest = next;
    }
});
