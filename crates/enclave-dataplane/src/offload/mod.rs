//! Segmentation offloads of the TUN device, sans-IO: the `virtio_net_hdr` that precedes every
//! packet on a TUN device opened with `IFF_VNET_HDR`, splitting the kernel's TCP and UDP
//! super-packets (TSO, USO) into packets of at most the MTU with correct headers and
//! checksums, and coalescing the received packets of one TCP flow back into super-packets
//! (GRO) before they are written to the TUN device.
//!
//! Nothing here touches the kernel or allocates per packet: [`Segments`] writes each packet
//! into a buffer the caller gives, [`Coalescer`] owns a few fixed buffers and hands its
//! output to a callback.
//!
//! References: `include/uapi/linux/virtio_net.h` (the header), RFC 1071 (the Internet
//! checksum), RFC 9293 section 3.1 (the TCP pseudo-header), RFC 8200 section 8.1 (the IPv6
//! pseudo-header).

/// Length of the `virtio_net_hdr` the TUN device reads and writes in front of each packet.
pub const VNET_HDR_LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum at `csum_start + csum_offset` holds only the
/// pseudo-header sum; the rest is still to be added.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_UDP_L4` (USO).
pub const GSO_UDP_L4: u8 = 5;

/// The largest IP packet.
const MAX_PACKET: usize = 65_535;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const TCP_CWR: u8 = 0x80;

/// The `virtio_net_hdr` (legacy layout, the machine's byte order, as the TUN device uses it
/// unless told otherwise).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// `F_NEEDS_CSUM` or 0.
    pub flags: u8,
    /// `GSO_*`.
    pub gso_type: u8,
    /// Length of the headers (IP and transport) of a super-packet.
    pub hdr_len: u16,
    /// Payload bytes per segment of a super-packet.
    pub gso_size: u16,
    /// Where the checksummed part starts (the transport header).
    pub csum_start: u16,
    /// Where the checksum field is, from `csum_start`.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Reads a header from the first [`VNET_HDR_LEN`] bytes.
    pub fn parse(bytes: &[u8]) -> Option<VnetHdr> {
        let b = bytes.get(..VNET_HDR_LEN)?;
        let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }

    /// The header's bytes.
    pub fn encode(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }
}

/// Why a packet from the TUN device could not be taken apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffloadError {
    /// The IP or transport header is cut short or inconsistent.
    Malformed,
    /// A segmentation type or IP layout we do not split (IPv6 extension headers, ECN TSO).
    Unsupported,
}

/// The one's complement sum of `data` (big-endian 16-bit words, an odd last byte padded
/// with zero) added to `acc`, unfolded.
///
/// This is on the data path for every byte (splitting, coalescing), so it sums 32-bit words
/// in their native byte order into sixteen 64-bit lanes, which the compiler turns into vector
/// adds: a 32-bit word is congruent to the sum of its two halves modulo 0xffff, and the one's
/// complement sum of byte-swapped words is the byte-swapped sum (RFC 1071, section 2), so
/// the folded native sum, swapped back, is the big-endian sum. About three times the speed
/// of a word at a time in big-endian order.
pub fn sum(data: &[u8], acc: u64) -> u64 {
    const LANES: usize = 16;
    let mut blocks = data.chunks_exact(4 * LANES);
    let mut lanes = [0u64; LANES];
    for block in &mut blocks {
        for (lane, word) in lanes.iter_mut().zip(block.chunks_exact(4)) {
            *lane += u64::from(u32::from_ne_bytes([word[0], word[1], word[2], word[3]]));
        }
    }
    // Each lane holds at most 1024 words of a 64 KB packet: no lane or total overflows.
    let mut total: u64 = lanes.iter().sum();
    let rest = blocks.remainder();
    let mut words = rest.chunks_exact(4);
    for word in &mut words {
        total += u64::from(u32::from_ne_bytes([word[0], word[1], word[2], word[3]]));
    }
    let tail = words.remainder();
    let mut last = [0u8; 4];
    last[..tail.len()].copy_from_slice(tail);
    total += u64::from(u32::from_ne_bytes(last));
    // Back to big-endian words: a swap on a little-endian machine, nothing on a big one.
    acc + u64::from(fold(total).to_be())
}

/// Folds a sum to 16 bits (not complemented).
pub fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The pseudo-header sum of a transport segment of `len` bytes of protocol `proto` in the
/// IP packet `ip` (whose addresses it takes).
fn pseudo_sum(ip: &[u8], proto: u8, len: usize) -> u64 {
    if ip[0] >> 4 == 4 {
        sum(&ip[12..20], u64::from(proto) + len as u64)
    } else {
        sum(&ip[8..40], u64::from(proto) + len as u64)
    }
}

/// Writes the IPv4 header checksum of `ip[..header_len]`.
fn set_ipv4_checksum(ip: &mut [u8], header_len: usize) {
    ip[10..12].fill(0);
    let c = !fold(sum(&ip[..header_len], 0));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
}

/// The layout of an IP packet carrying TCP or UDP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    v6: bool,
    /// IP header length (transport header starts here).
    ip_len: usize,
    proto: u8,
    /// IP header plus transport header.
    hdr_len: usize,
}

impl Layout {
    /// The layout of `p`, a whole IP packet (its length is the buffer's), when it carries
    /// TCP or UDP without IPv6 extension headers or IPv4 fragmentation.
    fn of(p: &[u8]) -> Result<Layout, OffloadError> {
        let (v6, ip_len, proto) = match p.first().map(|b| b >> 4) {
            Some(4) => {
                let ip_len = usize::from(p[0] & 0x0f) * 4;
                if ip_len < 20 || p.len() < ip_len {
                    return Err(OffloadError::Malformed);
                }
                // More fragments or a fragment offset: not a whole transport segment.
                if u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0 {
                    return Err(OffloadError::Unsupported);
                }
                (false, ip_len, p[9])
            }
            Some(6) => {
                if p.len() < 40 {
                    return Err(OffloadError::Malformed);
                }
                (true, 40, p[6])
            }
            _ => return Err(OffloadError::Malformed),
        };
        let l4_len = match proto {
            PROTO_TCP => {
                let off = p.get(ip_len + 12).ok_or(OffloadError::Malformed)?;
                usize::from(off >> 4) * 4
            }
            PROTO_UDP => 8,
            _ => return Err(OffloadError::Unsupported),
        };
        if l4_len < 8 || (proto == PROTO_TCP && l4_len < 20) || p.len() < ip_len + l4_len {
            return Err(OffloadError::Malformed);
        }
        Ok(Layout {
            v6,
            ip_len,
            proto,
            hdr_len: ip_len + l4_len,
        })
    }

    /// Offset of the transport checksum field.
    fn csum_at(&self) -> usize {
        self.ip_len + if self.proto == PROTO_TCP { 16 } else { 6 }
    }

    /// Writes the IP length fields for a packet of `total` bytes.
    fn set_ip_length(&self, p: &mut [u8], total: usize) {
        if self.v6 {
            p[4..6].copy_from_slice(&((total - 40) as u16).to_be_bytes());
        } else {
            p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        }
    }

    /// Writes the full transport checksum of the packet `p` (all of it).
    fn set_transport_checksum(&self, p: &mut [u8]) {
        let at = self.csum_at();
        p[at..at + 2].fill(0);
        let l4 = p.len() - self.ip_len;
        let mut c = !fold(sum(&p[self.ip_len..], pseudo_sum(p, self.proto, l4)));
        if self.proto == PROTO_UDP && c == 0 {
            // RFC 768: a computed zero is sent as all ones (zero means "no checksum").
            c = 0xffff;
        }
        p[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
}

/// Completes the checksum of a packet the kernel handed over with `F_NEEDS_CSUM` and no
/// segmentation: the field at `csum_start + csum_offset` holds the pseudo-header sum, to
/// which the sum of everything from `csum_start` is added.
pub fn complete_checksum(hdr: &VnetHdr, packet: &mut [u8]) -> Result<(), OffloadError> {
    if hdr.flags & F_NEEDS_CSUM == 0 {
        return Ok(());
    }
    let start = usize::from(hdr.csum_start);
    let at = start + usize::from(hdr.csum_offset);
    if at + 2 > packet.len() {
        return Err(OffloadError::Malformed);
    }
    let c = !fold(sum(&packet[start..], 0));
    packet[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// The packets a TUN read (header and packet) stands for, written one at a time into a
/// buffer of the caller's: the packet itself (checksum completed) when it is not a
/// super-packet, else its segments of `gso_size` payload bytes each, with their own IP
/// lengths, IPv4 identifications and header checksums, TCP sequence numbers and flags (FIN
/// and PSH on the last segment only, CWR on the first only) or UDP lengths, and transport
/// checksums.
#[derive(Debug)]
pub struct Segments<'a> {
    packet: &'a [u8],
    hdr: VnetHdr,
    layout: Option<Layout>,
    gso_size: usize,
    /// Payload offset of the next segment (from the end of the headers).
    offset: usize,
    index: u16,
    done: bool,
}

impl<'a> Segments<'a> {
    /// Checks `packet` against `hdr` (as read from the TUN device).
    pub fn new(hdr: VnetHdr, packet: &'a [u8]) -> Result<Segments<'a>, OffloadError> {
        let (layout, gso_size) = match hdr.gso_type {
            GSO_NONE => {
                if hdr.flags & F_NEEDS_CSUM != 0
                    && usize::from(hdr.csum_start) + usize::from(hdr.csum_offset) + 2 > packet.len()
                {
                    return Err(OffloadError::Malformed);
                }
                (None, 0)
            }
            GSO_TCPV4 | GSO_TCPV6 | GSO_UDP_L4 => {
                let layout = Layout::of(packet)?;
                let wanted = match hdr.gso_type {
                    GSO_TCPV4 => (false, PROTO_TCP),
                    GSO_TCPV6 => (true, PROTO_TCP),
                    _ => (layout.v6, PROTO_UDP),
                };
                if (layout.v6, layout.proto) != wanted || hdr.gso_size == 0 {
                    return Err(OffloadError::Malformed);
                }
                (Some(layout), usize::from(hdr.gso_size))
            }
            _ => return Err(OffloadError::Unsupported),
        };
        Ok(Segments {
            packet,
            hdr,
            layout,
            gso_size,
            offset: 0,
            index: 0,
            done: false,
        })
    }

    /// Writes the next packet into `out` (at least as long as the packet plus the
    /// headers: the MTU, or 65,535 bytes for a packet that is not a super-packet) and
    /// returns its length; `None` when all have been written.
    pub fn next_into(&mut self, out: &mut [u8]) -> Option<usize> {
        if self.done {
            return None;
        }
        let Some(layout) = self.layout else {
            self.done = true;
            let p = self.packet;
            let out = out.get_mut(..p.len())?;
            out.copy_from_slice(p);
            complete_checksum(&self.hdr, out).ok()?;
            return Some(p.len());
        };
        let hl = layout.hdr_len;
        let payload = &self.packet[hl..];
        let start = self.offset;
        let end = (start + self.gso_size).min(payload.len());
        let first = self.index == 0;
        let last = end == payload.len();
        let total = hl + (end - start);
        let out = out.get_mut(..total)?;
        out[..hl].copy_from_slice(&self.packet[..hl]);
        out[hl..].copy_from_slice(&payload[start..end]);
        layout.set_ip_length(out, total);
        if !layout.v6 {
            let id = u16::from_be_bytes([out[4], out[5]]).wrapping_add(self.index);
            out[4..6].copy_from_slice(&id.to_be_bytes());
            set_ipv4_checksum(out, layout.ip_len);
        }
        let t = layout.ip_len;
        if layout.proto == PROTO_TCP {
            let seq = u32::from_be_bytes([out[t + 4], out[t + 5], out[t + 6], out[t + 7]])
                .wrapping_add(start as u32);
            out[t + 4..t + 8].copy_from_slice(&seq.to_be_bytes());
            if !last {
                out[t + 13] &= !(TCP_FIN | TCP_PSH);
            }
            if !first {
                out[t + 13] &= !TCP_CWR;
            }
        } else {
            out[t + 4..t + 6].copy_from_slice(&((total - t) as u16).to_be_bytes());
        }
        layout.set_transport_checksum(out);
        self.offset = end;
        self.index = self.index.wrapping_add(1);
        self.done = last;
        Some(total)
    }
}

/// The flow a TCP or UDP packet belongs to: protocol, addresses and ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct FlowKey {
    proto: u8,
    addrs: [u8; 32],
    ports: [u8; 4],
}

impl FlowKey {
    fn of(p: &[u8], layout: &Layout) -> FlowKey {
        let mut key = FlowKey {
            proto: layout.proto,
            ..FlowKey::default()
        };
        let a = if layout.v6 { &p[8..40] } else { &p[12..20] };
        key.addrs[..a.len()].copy_from_slice(a);
        key.ports
            .copy_from_slice(&p[layout.ip_len..layout.ip_len + 4]);
        key
    }
}

/// One super-packet being built.
#[derive(Debug)]
struct Slot {
    buf: Box<[u8]>,
    len: usize,
    open: bool,
    key: FlowKey,
    layout: Layout,
    /// Payload bytes of the first segment: every later one but the last has as many.
    seg_size: usize,
    segments: usize,
    next_seq: u32,
    /// No more segments may follow (a shorter one or PSH came).
    closed: bool,
}

/// Most flows coalesced at a time.
const SLOTS: usize = 8;

/// Coalesces consecutive in-order TCP segments of a flow (same headers but for lengths,
/// identification, sequence number and checksums; ACK with or without PSH; valid checksums;
/// all segments as long as the first but the last) into super-packets for a TUN device with
/// `IFF_VNET_HDR`, the way Linux GRO does; with [`Coalescer::set_udp`], UDP datagrams of a
/// flow too. Anything else passes through unchanged, after the super-packet of its own flow
/// if one is open, so no flow is reordered.
#[derive(Debug)]
pub struct Coalescer {
    slots: Vec<Slot>,
    /// Also coalesce UDP datagrams (for a TUN device that takes USO super-packets).
    udp: bool,
    /// The slot to give up next when all are open.
    victim: usize,
}

impl Default for Coalescer {
    fn default() -> Self {
        Coalescer::new()
    }
}

/// A TCP segment that may join a super-packet.
struct Candidate {
    layout: Layout,
    key: FlowKey,
    seq: u32,
    payload: usize,
    psh: bool,
}

impl Coalescer {
    /// A coalescer with its buffers (allocated once).
    pub fn new() -> Coalescer {
        let slots = (0..SLOTS)
            .map(|_| Slot {
                buf: vec![0u8; MAX_PACKET].into_boxed_slice(),
                len: 0,
                open: false,
                key: FlowKey::default(),
                layout: Layout {
                    v6: false,
                    ip_len: 0,
                    proto: 0,
                    hdr_len: 0,
                },
                seg_size: 0,
                segments: 0,
                next_seq: 0,
                closed: false,
            })
            .collect();
        Coalescer {
            slots,
            udp: false,
            victim: 0,
        }
    }

    /// Also coalesces consecutive UDP datagrams of one flow, all as long as the first but a
    /// shorter last one, into USO super-packets (`GSO_UDP_L4`): only for a TUN device that
    /// has USO, since the kernel splits them back at the same boundaries.
    pub fn set_udp(&mut self, on: bool) {
        self.udp = on;
    }

    /// Takes one IP packet; calls `emit(header, packet)` for what is ready to be written
    /// (maybe nothing yet). Call [`Coalescer::flush`] at the end of each batch.
    pub fn push(&mut self, packet: &[u8], emit: &mut dyn FnMut(&[u8; VNET_HDR_LEN], &[u8])) {
        let plain = VnetHdr::default().encode();
        let Some(c) = candidate(packet, self.udp) else {
            // Keep a flow in order: its open super-packet goes first.
            if let Ok(layout) = Layout::of(packet) {
                let key = FlowKey::of(packet, &layout);
                if let Some(i) = self.find(&key) {
                    self.emit_slot(i, emit);
                }
            }
            emit(&plain, packet);
            return;
        };
        if let Some(i) = self.find(&c.key) {
            if self.append(i, packet, &c) {
                return;
            }
            self.emit_slot(i, emit);
            self.start(i, packet, &c);
            return;
        }
        let i = match self.slots.iter().position(|s| !s.open) {
            Some(i) => i,
            None => {
                let i = self.victim;
                self.victim = (self.victim + 1) % SLOTS;
                self.emit_slot(i, emit);
                i
            }
        };
        self.start(i, packet, &c);
    }

    /// Emits every open super-packet.
    pub fn flush(&mut self, emit: &mut dyn FnMut(&[u8; VNET_HDR_LEN], &[u8])) {
        for i in 0..SLOTS {
            self.emit_slot(i, emit);
        }
    }

    fn find(&self, key: &FlowKey) -> Option<usize> {
        self.slots.iter().position(|s| s.open && s.key == *key)
    }

    fn start(&mut self, i: usize, packet: &[u8], c: &Candidate) {
        let slot = &mut self.slots[i];
        slot.buf[..packet.len()].copy_from_slice(packet);
        slot.len = packet.len();
        slot.open = true;
        slot.key = c.key;
        slot.layout = c.layout;
        slot.seg_size = c.payload;
        slot.segments = 1;
        slot.next_seq = c.seq.wrapping_add(c.payload as u32);
        slot.closed = c.psh;
    }

    /// Appends `packet`'s payload to slot `i` when it continues it; false when it cannot.
    fn append(&mut self, i: usize, packet: &[u8], c: &Candidate) -> bool {
        let slot = &mut self.slots[i];
        if slot.closed
            || c.layout != slot.layout
            || (c.layout.proto == PROTO_TCP && c.seq != slot.next_seq)
            || c.payload > slot.seg_size
            || slot.len + c.payload > MAX_PACKET
            || !same_headers(&slot.buf[..slot.layout.hdr_len], packet, &c.layout)
        {
            return false;
        }
        let hl = c.layout.hdr_len;
        slot.buf[slot.len..slot.len + c.payload].copy_from_slice(&packet[hl..]);
        slot.len += c.payload;
        slot.segments += 1;
        slot.next_seq = c.seq.wrapping_add(c.payload as u32);
        if c.psh {
            slot.buf[c.layout.ip_len + 13] |= TCP_PSH;
        }
        slot.closed = c.psh || c.payload < slot.seg_size;
        true
    }

    fn emit_slot(&mut self, i: usize, emit: &mut dyn FnMut(&[u8; VNET_HDR_LEN], &[u8])) {
        let slot = &mut self.slots[i];
        if !slot.open {
            return;
        }
        slot.open = false;
        let p = &mut slot.buf[..slot.len];
        if slot.segments == 1 {
            // As it came, checksums and all.
            emit(&VnetHdr::default().encode(), p);
            return;
        }
        let layout = slot.layout;
        layout.set_ip_length(p, slot.len);
        if !layout.v6 {
            set_ipv4_checksum(p, layout.ip_len);
        }
        let l4_len = slot.len - layout.ip_len;
        let udp = layout.proto == PROTO_UDP;
        if udp {
            let t = layout.ip_len;
            p[t + 4..t + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        }
        // The kernel completes the checksum: the field holds the pseudo-header sum only.
        let at = layout.csum_at();
        let partial = fold(pseudo_sum(p, layout.proto, l4_len));
        p[at..at + 2].copy_from_slice(&partial.to_be_bytes());
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: match (udp, layout.v6) {
                (true, _) => GSO_UDP_L4,
                (false, true) => GSO_TCPV6,
                (false, false) => GSO_TCPV4,
            },
            hdr_len: layout.hdr_len as u16,
            gso_size: slot.seg_size as u16,
            csum_start: layout.ip_len as u16,
            csum_offset: (at - layout.ip_len) as u16,
        };
        emit(&hdr.encode(), p);
    }
}

/// A TCP segment with data, only ACK (and maybe PSH) set, or (with `udp`) a UDP datagram
/// with data; no IPv4 options, a consistent length and a valid checksum.
fn candidate(p: &[u8], udp: bool) -> Option<Candidate> {
    let layout = Layout::of(p).ok()?;
    if (!layout.v6 && layout.ip_len != 20) || (layout.proto == PROTO_UDP && !udp) {
        return None;
    }
    let ip_total = if layout.v6 {
        40 + usize::from(u16::from_be_bytes([p[4], p[5]]))
    } else {
        usize::from(u16::from_be_bytes([p[2], p[3]]))
    };
    if ip_total != p.len() {
        return None;
    }
    let t = layout.ip_len;
    let payload = p.len() - layout.hdr_len;
    if payload == 0 {
        return None;
    }
    if layout.proto == PROTO_UDP {
        if usize::from(u16::from_be_bytes([p[t + 4], p[t + 5]])) != p.len() - t {
            return None;
        }
        // An IPv4 datagram without a checksum has none to vouch for; any other must verify.
        let unchecked = !layout.v6 && p[t + 6..t + 8] == [0, 0];
        if !unchecked && fold(sum(&p[t..], pseudo_sum(p, PROTO_UDP, p.len() - t))) != 0xffff {
            return None;
        }
        return Some(Candidate {
            key: FlowKey::of(p, &layout),
            seq: 0,
            payload,
            psh: false,
            layout,
        });
    }
    let flags = p[t + 13];
    if flags & TCP_ACK == 0 || flags & !(TCP_ACK | TCP_PSH) != 0 {
        return None;
    }
    // Never vouch for a checksum the sender got wrong: the super-packet's is recomputed.
    if fold(sum(&p[t..], pseudo_sum(p, PROTO_TCP, p.len() - t))) != 0xffff {
        return None;
    }
    Some(Candidate {
        key: FlowKey::of(p, &layout),
        seq: u32::from_be_bytes([p[t + 4], p[t + 5], p[t + 6], p[t + 7]]),
        payload,
        psh: flags & TCP_PSH != 0,
        layout,
    })
}

/// Whether two segments' headers agree on everything but the IP length, IPv4
/// identification and header checksum, and for TCP the sequence number, PSH and the
/// checksum, for UDP the length and the checksum.
fn same_headers(a: &[u8], b: &[u8], layout: &Layout) -> bool {
    let t = layout.ip_len;
    let ip_same = if layout.v6 {
        a[..4] == b[..4] && a[6..40] == b[6..40]
    } else {
        a[..2] == b[..2] && a[6..10] == b[6..10] && a[12..20] == b[12..20]
    };
    if layout.proto == PROTO_UDP {
        return ip_same && a[t..t + 4] == b[t..t + 4];
    }
    ip_same
        && a[t..t + 4] == b[t..t + 4]
        && a[t + 8..t + 13] == b[t + 8..t + 13]
        && (a[t + 13] & !TCP_PSH) == (b[t + 13] & !TCP_PSH)
        && a[t + 14..t + 16] == b[t + 14..t + 16]
        && a[t + 18..layout.hdr_len] == b[t + 18..layout.hdr_len]
}

#[cfg(test)]
mod tests;
