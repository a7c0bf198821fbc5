//! Segmentation and coalescing, checked against an independent (slow, obvious) checksum.

use std::net::Ipv4Addr;
use std::time::Instant;

use enclave_filter::{
    AddrEntry, AllowRule, Direction, FilterConfig, FilterRules, PeerFilter, Protocol, Verdict,
};
use proptest::prelude::*;

use super::*;

/// The Internet checksum the long way: 16-bit words, a pseudo-header built as bytes.
fn naive_sum(bytes: &[u8]) -> u32 {
    let mut acc: u32 = 0;
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        acc += u32::from(word);
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

/// Whether the transport checksum of a whole IP packet verifies (and, for IPv4, the
/// header checksum).
fn checksums_ok(p: &[u8]) -> bool {
    let (ip_len, proto, mut pseudo) = if p[0] >> 4 == 4 {
        let ip_len = usize::from(p[0] & 0xf) * 4;
        if naive_sum(&p[..ip_len]) != 0xffff {
            return false;
        }
        (ip_len, p[9], p[12..20].to_vec())
    } else {
        (40, p[6], p[8..40].to_vec())
    };
    let l4 = (p.len() - ip_len) as u32;
    if p[0] >> 4 == 4 {
        pseudo.extend_from_slice(&[0, proto]);
        pseudo.extend_from_slice(&(l4 as u16).to_be_bytes());
    } else {
        pseudo.extend_from_slice(&l4.to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, proto]);
    }
    pseudo.extend_from_slice(&p[ip_len..]);
    naive_sum(&pseudo) == 0xffff
}

const SRC4: [u8; 4] = [100, 64, 0, 2];
const DST4: [u8; 4] = [192, 168, 77, 10];

/// An IP packet with a TCP (flags given) or UDP header and `payload`, checksums valid.
fn packet(v6: bool, tcp: bool, seq: u32, flags: u8, dst4: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let l4_len = if tcp { 32 } else { 8 };
    let ip_len = if v6 { 40 } else { 20 };
    let total = ip_len + l4_len + payload.len();
    let mut p = vec![0u8; total];
    let proto = if tcp { PROTO_TCP } else { PROTO_UDP };
    if v6 {
        p[0] = 0x60;
        p[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
        p[6] = proto;
        p[7] = 64;
        p[8..24].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        p[24..40].copy_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    } else {
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
        p[6] = 0x40; // DF
        p[8] = 64;
        p[9] = proto;
        p[12..16].copy_from_slice(&SRC4);
        p[16..20].copy_from_slice(&dst4);
    }
    let t = ip_len;
    p[t..t + 2].copy_from_slice(&40000u16.to_be_bytes());
    p[t + 2..t + 4].copy_from_slice(&5201u16.to_be_bytes());
    if tcp {
        p[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
        p[t + 8..t + 12].copy_from_slice(&777u32.to_be_bytes());
        p[t + 12] = 8 << 4;
        p[t + 13] = flags;
        p[t + 14..t + 16].copy_from_slice(&512u16.to_be_bytes());
        // NOP NOP timestamps.
        p[t + 20..t + 32].copy_from_slice(&[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 7]);
    } else {
        p[t + 4..t + 6].copy_from_slice(&((total - t) as u16).to_be_bytes());
    }
    p[t + l4_len..].copy_from_slice(payload);
    let layout = Layout::of(&p).unwrap();
    if !v6 {
        set_ipv4_checksum(&mut p, 20);
    }
    layout.set_transport_checksum(&mut p);
    p
}

/// The super-packet the kernel would hand over for `payload` in segments of `gso` bytes.
fn super_packet(
    v6: bool,
    tcp: bool,
    seq: u32,
    flags: u8,
    payload: &[u8],
    gso: u16,
) -> (VnetHdr, Vec<u8>) {
    let mut p = packet(v6, tcp, seq, flags, DST4, payload);
    let layout = Layout::of(&p).unwrap();
    // As the kernel leaves it: only the pseudo-header sum in the checksum field.
    let at = layout.csum_at();
    let partial = fold(pseudo_sum(&p, layout.proto, p.len() - layout.ip_len));
    p[at..at + 2].copy_from_slice(&partial.to_be_bytes());
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: match (tcp, v6) {
            (true, false) => GSO_TCPV4,
            (true, true) => GSO_TCPV6,
            (false, _) => GSO_UDP_L4,
        },
        hdr_len: layout.hdr_len as u16,
        gso_size: gso,
        csum_start: layout.ip_len as u16,
        csum_offset: if tcp { 16 } else { 6 },
    };
    (hdr, p)
}

fn split(hdr: VnetHdr, p: &[u8]) -> Vec<Vec<u8>> {
    let mut segments = Segments::new(hdr, p).unwrap();
    let mut out = vec![0u8; MAX_PACKET];
    let mut all = Vec::new();
    while let Some(n) = segments.next_into(&mut out) {
        all.push(out[..n].to_vec());
    }
    all
}

fn coalesce(packets: &[Vec<u8>]) -> Vec<(VnetHdr, Vec<u8>)> {
    coalesce_with(false, packets)
}

fn coalesce_with(udp: bool, packets: &[Vec<u8>]) -> Vec<(VnetHdr, Vec<u8>)> {
    let mut c = Coalescer::new();
    c.set_udp(udp);
    let mut out = Vec::new();
    let mut emit =
        |h: &[u8; VNET_HDR_LEN], p: &[u8]| out.push((VnetHdr::parse(h).unwrap(), p.to_vec()));
    for p in packets {
        c.push(p, &mut emit);
    }
    c.flush(&mut emit);
    out
}

/// What the kernel does with a coalesced packet marked `F_NEEDS_CSUM`: complete it.
fn completed(hdr: &VnetHdr, p: &[u8]) -> Vec<u8> {
    let mut p = p.to_vec();
    complete_checksum(hdr, &mut p).unwrap();
    p
}

#[test]
fn header_round_trips() {
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV6,
        hdr_len: 72,
        gso_size: 1380,
        csum_start: 40,
        csum_offset: 16,
    };
    assert_eq!(VnetHdr::parse(&hdr.encode()), Some(hdr));
    assert_eq!(VnetHdr::parse(&[0; 9]), None);
}

#[test]
fn checksum_matches_rfc_1071_example() {
    // RFC 1071 section 3: these bytes sum to 0xddf2.
    let bytes = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
    assert_eq!(fold(sum(&bytes, 0)), 0xddf2);
    assert_eq!(
        fold(sum(&bytes[..7], 0)),
        fold(u64::from(naive_sum(&bytes[..7])))
    );
}

#[test]
fn checksum_matches_the_long_way_at_every_length_and_alignment() {
    // Random bytes, and all ones (the most carries), every length up to a few blocks of
    // lanes, from odd and even starting offsets, and a full-size packet.
    let random: Vec<u8> = (0..65_600u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let ones = vec![0xffu8; 65_600];
    for data in [&random, &ones] {
        for start in 0..5 {
            for len in (0..300).chain([1399, 1400, 1401, 65_535]) {
                let bytes = &data[start..start + len];
                for acc in [0u64, 0x1_2345, 0xffff_ffff] {
                    let want = fold(acc + u64::from(naive_sum(bytes)));
                    let got = fold(sum(bytes, acc));
                    assert_eq!(got, want, "start {start} len {len} acc {acc:#x}");
                }
            }
        }
    }
}

#[test]
fn tcp_v4_super_packet_splits_into_valid_segments() {
    let payload: Vec<u8> = (0..4000u32).map(|i| (i * 7) as u8).collect();
    let (hdr, p) = super_packet(
        false,
        true,
        0xffff_fc00,
        TCP_ACK | TCP_PSH | TCP_FIN,
        &payload,
        1380,
    );
    let segs = split(hdr, &p);
    assert_eq!(segs.len(), 3);
    let mut joined = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        assert!(checksums_ok(s), "segment {i} has a bad checksum");
        assert_eq!(usize::from(u16::from_be_bytes([s[2], s[3]])), s.len());
        assert_eq!(u16::from_be_bytes([s[4], s[5]]), 0x1234 + i as u16);
        let seq = u32::from_be_bytes([s[24], s[25], s[26], s[27]]);
        assert_eq!(seq, 0xffff_fc00u32.wrapping_add(1380 * i as u32));
        let flags = s[33];
        let last = i == 2;
        assert_eq!(
            flags & (TCP_PSH | TCP_FIN) != 0,
            last,
            "segment {i} flags {flags:#x}"
        );
        assert!(s.len() <= 52 + 1380);
        joined.extend_from_slice(&s[52..]);
    }
    assert_eq!(joined, payload);
}

#[test]
fn udp_super_packets_split_with_their_own_lengths() {
    for v6 in [false, true] {
        let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let (hdr, p) = super_packet(v6, false, 0, 0, &payload, 1200);
        let segs = split(hdr, &p);
        assert_eq!(segs.len(), 3);
        let ip = if v6 { 40 } else { 20 };
        for s in &segs {
            assert!(checksums_ok(s));
            assert_eq!(
                usize::from(u16::from_be_bytes([s[ip + 4], s[ip + 5]])),
                s.len() - ip
            );
        }
        assert_eq!(segs[2].len(), ip + 8 + 600);
    }
}

#[test]
fn a_plain_packet_needing_a_checksum_gets_it() {
    let mut p = packet(false, false, 0, 0, DST4, b"hello");
    let partial = fold(pseudo_sum(&p, PROTO_UDP, 13));
    p[26..28].copy_from_slice(&partial.to_be_bytes());
    assert!(!checksums_ok(&p));
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        csum_start: 20,
        csum_offset: 6,
        ..VnetHdr::default()
    };
    complete_checksum(&hdr, &mut p).unwrap();
    assert!(checksums_ok(&p));
    let short = VnetHdr {
        csum_start: 30,
        ..hdr
    };
    assert_eq!(
        Segments::new(short, &p[..31]).err(),
        Some(OffloadError::Malformed)
    );
}

#[test]
fn malformed_super_packets_are_refused() {
    let (hdr, p) = super_packet(false, true, 1, TCP_ACK, &[0; 3000], 1000);
    assert_eq!(
        Segments::new(hdr, &p[..30]).err(),
        Some(OffloadError::Malformed)
    );
    let zero = VnetHdr { gso_size: 0, ..hdr };
    assert_eq!(Segments::new(zero, &p).err(), Some(OffloadError::Malformed));
    let wrong = VnetHdr {
        gso_type: GSO_TCPV6,
        ..hdr
    };
    assert_eq!(
        Segments::new(wrong, &p).err(),
        Some(OffloadError::Malformed)
    );
    let ecn = VnetHdr {
        gso_type: GSO_TCPV4 | 0x80,
        ..hdr
    };
    assert_eq!(
        Segments::new(ecn, &p).err(),
        Some(OffloadError::Unsupported)
    );
    assert_eq!(Segments::new(hdr, &[]).err(), Some(OffloadError::Malformed));
}

#[test]
fn consecutive_segments_coalesce_and_other_packets_pass_in_flow_order() {
    let data: Vec<u8> = (0..2760u32).map(|i| i as u8).collect();
    let a = packet(false, true, 1000, TCP_ACK, DST4, &data[..1380]);
    let b = packet(false, true, 2380, TCP_ACK, DST4, &data[1380..]);
    let fin = packet(false, true, 3760, TCP_ACK | TCP_FIN, DST4, &[]);
    let udp = packet(false, false, 0, 0, DST4, b"dns");
    let out = coalesce(&[a.clone(), udp.clone(), b, fin.clone()]);
    assert_eq!(out.len(), 3);
    // The UDP packet overtakes the open TCP super-packet: another flow.
    assert_eq!(out[0], (VnetHdr::default(), udp));
    let (hdr, sp) = &out[1];
    assert_eq!(hdr.gso_type, GSO_TCPV4);
    assert_eq!(hdr.gso_size, 1380);
    assert_eq!(hdr.hdr_len, 52);
    assert_eq!(&sp[52..], &data[..]);
    assert!(checksums_ok(&completed(hdr, sp)));
    // The FIN comes after the data of its flow.
    assert_eq!(out[2], (VnetHdr::default(), fin));
    // One segment alone goes out as it came.
    assert_eq!(
        coalesce(std::slice::from_ref(&a)),
        vec![(VnetHdr::default(), a)]
    );
}

#[test]
fn gaps_bad_checksums_and_changed_headers_are_not_coalesced() {
    let a = packet(false, true, 1000, TCP_ACK, DST4, &[1; 100]);
    let gap = packet(false, true, 1200, TCP_ACK, DST4, &[2; 100]);
    assert_eq!(coalesce(&[a.clone(), gap.clone()]).len(), 2);
    let mut bad = packet(false, true, 1100, TCP_ACK, DST4, &[3; 100]);
    bad[60] ^= 0xff;
    let out = coalesce(&[a.clone(), bad.clone()]);
    assert_eq!(
        out[1],
        (VnetHdr::default(), bad),
        "a corrupt segment passes untouched"
    );
    let mut window = packet(false, true, 1100, TCP_ACK, DST4, &[3; 100]);
    window[34] = 9;
    Layout::of(&window)
        .unwrap()
        .set_transport_checksum(&mut window);
    assert_eq!(coalesce(&[a.clone(), window]).len(), 2);
    let longer = packet(false, true, 1100, TCP_ACK, DST4, &[4; 200]);
    assert_eq!(coalesce(&[a, longer]).len(), 2);
}

#[test]
fn udp_datagrams_coalesce_only_when_asked_and_keep_their_boundaries() {
    let d = |n: usize, fill: u8| packet(false, false, 0, 0, DST4, &vec![fill; n]);
    let run = [d(1200, 1), d(1200, 2), d(700, 3), d(1200, 4)];
    // Without USO every datagram passes as it came.
    let plain = coalesce(&run);
    assert_eq!(plain.len(), 4);
    assert!(plain.iter().all(|(h, _)| *h == VnetHdr::default()));
    // With it: the first three (the shorter third ends the run), then the fourth alone.
    let out = coalesce_with(true, &run);
    assert_eq!(out.len(), 2);
    let (hdr, sp) = &out[0];
    assert_eq!(hdr.gso_type, GSO_UDP_L4);
    assert_eq!((hdr.gso_size, hdr.hdr_len, hdr.csum_offset), (1200, 28, 6));
    assert!(checksums_ok(&completed(hdr, sp)));
    // Split again, the datagrams are the ones that came (the IPv4 identification aside,
    // which the kernel numbers anew).
    let segs = split(*hdr, sp);
    assert_eq!(segs.len(), 3);
    for (s, r) in segs.iter().zip(&run) {
        assert!(s[20..] == r[20..], "a datagram changed");
    }
    assert_eq!(out[1], (VnetHdr::default(), run[3].clone()));
    // A corrupt datagram is not vouched for.
    let mut bad = d(1200, 5);
    bad[40] ^= 1;
    assert_eq!(coalesce_with(true, &[d(1200, 1), bad]).len(), 2);
}

#[test]
fn every_segment_of_a_super_packet_meets_the_filter() {
    let allowed = Ipv4Addr::new(192, 168, 77, 10);
    let rules = FilterRules {
        ingress: vec![],
        egress: vec![AllowRule {
            protocol: Protocol::Tcp,
            ports: None,
            sources: vec![AddrEntry::Net(Ipv4Addr::from(SRC4).into())],
            destinations: vec![AddrEntry::Net(allowed.into())],
            label: None,
        }],
    };
    let mut filter = PeerFilter::new(rules, FilterConfig::default());
    let now = Instant::now();
    let payload = vec![5u8; 10_000];
    let mut verdicts = |dst: [u8; 4]| {
        let mut p = packet(false, true, 1, TCP_ACK, dst, &payload);
        let layout = Layout::of(&p).unwrap();
        let at = layout.csum_at();
        let partial = fold(pseudo_sum(&p, PROTO_TCP, p.len() - 20));
        p[at..at + 2].copy_from_slice(&partial.to_be_bytes());
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 52,
            gso_size: 1368,
            csum_start: 20,
            csum_offset: 16,
        };
        split(hdr, &p)
            .iter()
            .map(|s| filter.check(Direction::Egress, s, now))
            .collect::<Vec<_>>()
    };
    let denied = verdicts([192, 168, 77, 99]);
    assert_eq!(denied.len(), 8);
    assert!(
        denied.iter().all(|v| matches!(v, Verdict::Drop(_))),
        "{denied:?}"
    );
    // The positive control: the same super-packet to the allowed host passes whole.
    let passed = verdicts(allowed.octets());
    assert_eq!(passed, vec![Verdict::Pass; 8]);
    assert_eq!(filter.stats().dropped.total(), 8);
}

/// What coalescing the kernel's super-packet `p`, split into `segs`, must give back: one
/// super-packet, the same as the kernel's but for its completed checksum, which (when there
/// were several segments) splits into `segs` again. Returns its header.
fn rebuilt_as_the_kernels(
    out: &[(VnetHdr, Vec<u8>)],
    p: &[u8],
    segs: &[Vec<u8>],
) -> Result<VnetHdr, TestCaseError> {
    prop_assert_eq!(out.len(), 1);
    let (h, sp) = &out[0];
    let sp = completed(h, sp);
    prop_assert!(checksums_ok(&sp));
    let at = Layout::of(p).unwrap().csum_at();
    prop_assert_eq!(&sp[..at], &p[..at]);
    prop_assert_eq!(&sp[at + 2..], &p[at + 2..]);
    if segs.len() > 1 {
        prop_assert_eq!(split(*h, &out[0].1), segs);
    }
    Ok(*h)
}

proptest! {
    #[test]
    fn split_then_coalesce_round_trips(
        v6 in any::<bool>(),
        len in 1usize..60_000,
        gso in 536u16..=1440,
        seq in any::<u32>(),
        psh in any::<bool>(),
        seed in any::<u8>(),
    ) {
        let payload: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        let flags = TCP_ACK | if psh { TCP_PSH } else { 0 };
        let (hdr, p) = super_packet(v6, true, seq, flags, &payload, gso);
        let segs = split(hdr, &p);
        prop_assert_eq!(segs.len(), len.div_ceil(usize::from(gso)));
        let hl = usize::from(hdr.hdr_len);
        for s in &segs {
            prop_assert!(checksums_ok(s));
            prop_assert!(s.len() <= hl + usize::from(gso));
        }
        let out = coalesce(&segs);
        let h = rebuilt_as_the_kernels(&out, &p, &segs)?;
        prop_assert_eq!(&out[0].1[hl..], &payload[..]);
        if segs.len() > 1 {
            prop_assert_eq!(h.gso_size, gso);
        }
    }

    #[test]
    fn udp_split_then_coalesce_round_trips(
        v6 in any::<bool>(),
        len in 1usize..60_000,
        gso in 64u16..=1440,
    ) {
        let payload: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        let (hdr, p) = super_packet(v6, false, 0, 0, &payload, gso);
        let segs = split(hdr, &p);
        // Each segment is a datagram of its own, with a valid checksum, carrying its part.
        let hl = if v6 { 48 } else { 28 };
        let mut joined = Vec::new();
        for s in &segs {
            prop_assert!(checksums_ok(s));
            joined.extend_from_slice(&s[hl..]);
        }
        prop_assert_eq!(joined, payload);
        let out = coalesce_with(true, &segs);
        let h = rebuilt_as_the_kernels(&out, &p, &segs)?;
        if segs.len() > 1 {
            prop_assert_eq!(h.gso_type, GSO_UDP_L4);
        }
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), hdr in proptest::collection::vec(any::<u8>(), 10)) {
        let hdr = VnetHdr::parse(&hdr).unwrap();
        if let Ok(mut s) = Segments::new(hdr, &bytes) {
            let mut out = vec![0u8; MAX_PACKET];
            let mut n = 0;
            while s.next_into(&mut out).is_some() {
                n += 1;
                prop_assert!(n <= bytes.len() + 1);
            }
        }
        let mut c = Coalescer::new();
        let mut count = 0;
        c.push(&bytes, &mut |_, _| count += 1);
        c.flush(&mut |_, _| count += 1);
        prop_assert_eq!(count, 1);
    }
}
