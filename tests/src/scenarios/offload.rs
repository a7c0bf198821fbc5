//! The data plane's segmentation offloads (TUN TSO/USO with `virtio_net_hdr`s, receive
//! coalescing) against our own tunnel and wireguard-go, with the offloads on and forced off
//! (`ENCLAVE_OFFLOAD=off`): hash-checked TCP transfers both ways, UDP super-packets sent with
//! `UDP_SEGMENT` and checked datagram by datagram, large (fragmented) and tiny pings, exact
//! byte counters between our two ends, and the TUN devices' own packet counters to show
//! that super-packets were used when on and never when off; then the same upload and UDP
//! datagrams from a sender through a gateway (ours) with SNAT to a LAN host.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use enclave_netns::{Netns, Process, SpawnOpts};

use super::dataplane::{
    pair, ping_through, transfer, transfer_bytes, A_OVERLAY, A_UNDERLAY, B_OVERLAY, B_UNDERLAY,
    IFACE,
};
use crate::support::{
    configure_reference_tunnel, reference_topology, snat_to_lan, start_wireguard_go, wg_configure,
    wg_keypair, write_key, WgPeer, LAN_HOST, OVERLAY, WG_PORT,
};
use crate::{Ctx, Scenario};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "dataplane-offload",
            about: "TUN offloads on and forced off, ours<->ours and ours<->wireguard-go: hash-checked TCP both ways, UDP super-packets, pings, exact counters",
            run: offload,
        },
        Scenario {
            name: "dataplane-offload-fallbacks",
            about: "each offload absent on its own (a TUN without vnet headers, TSO without USO, no UDP GSO/GRO, ethtool -K off on the veth and on the TUN): logged, not used, and the same hash-checked transfers",
            run: fallbacks,
        },
    ]
}

/// One end of a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// Ours, with its offloads on or forced off, on one thread or with a thread per direction.
    Ours {
        offload: bool,
        two_threads: bool,
    },
    WireguardGo,
}

impl End {
    fn name(self) -> &'static str {
        match self {
            End::Ours {
                offload: true,
                two_threads: true,
            } => "ours (two threads)",
            End::Ours { offload: true, .. } => "ours",
            End::Ours { offload: false, .. } => "ours (offloads off)",
            End::WireguardGo => "wireguard-go",
        }
    }

    /// Whether this end reads super-packets from its TUN device and writes coalesced ones.
    fn offloads(self) -> bool {
        matches!(self, End::Ours { offload: true, .. })
    }
}

/// Payload bytes of a full TCP segment on a 1420-byte tunnel with timestamps (1420 - 20 - 32).
const MSS: usize = 1368;
/// UDP datagrams sent through the tunnel, and their payload size.
const DATAGRAMS: usize = 200;
const DATAGRAM_LEN: usize = 1200;
/// Datagrams per `send` with `UDP_SEGMENT`.
const PER_SEND: usize = 8;

fn start(ctx: &Ctx, ns: &Netns, end: End) -> anyhow::Result<Process> {
    let End::Ours {
        offload,
        two_threads,
    } = end
    else {
        return start_wireguard_go(ns, IFACE);
    };
    // The offloads it reported must be the ones asked for: all of them on this kernel.
    let wanted: &[&str] = if offload {
        &["vnet_hdr=true tso=true uso=true", "gso=true gro=true"]
    } else {
        &["vnet_hdr=false tso=false uso=false", "gso=false gro=false"]
    };
    let threads = if two_threads { "2" } else { "1" };
    start_ours(ctx, ns, if offload { "on" } else { "off" }, threads, wanted)
}

/// Starts `enclave-agent tunnel` in `ns` with `ENCLAVE_OFFLOAD=offload` and
/// `ENCLAVE_DATAPLANE_THREADS=threads`, and checks that its log reports each of `wanted` (the
/// offloads it got) and the threads asked for.
fn start_ours(
    ctx: &Ctx,
    ns: &Netns,
    offload: &str,
    threads: &str,
    wanted: &[&str],
) -> anyhow::Result<Process> {
    let agent = ctx.bin("enclave-agent")?;
    let mut process = ns.spawn(
        &format!("enclave-tunnel-{}", ns.name()),
        &[agent.to_string_lossy().as_ref(), "tunnel", IFACE],
        SpawnOpts::default()
            .env("RUST_LOG", "info")
            .env("ENCLAVE_OFFLOAD", offload)
            .env("ENCLAVE_DATAPLANE_THREADS", threads),
    )?;
    let socket = ns.wireguard_dir().join(format!("{IFACE}.sock"));
    let up = enclave_netns::wait_until(Duration::from_secs(10), || {
        socket.exists() && ns.exec(&["wg", "show", IFACE]).is_ok()
    });
    if !up {
        bail!(
            "enclave-agent tunnel did not come up in {} (running: {}); log:\n{}",
            ns.node(),
            process.is_running(),
            process.log()
        );
    }
    // The TUN device's queue is the one the data plane sets, not the kernel's 500, which
    // drops bursts of UDP at about 1 Gbit/s.
    let queue = tun_queue_len(ns)?;
    ensure!(
        queue == 1000,
        "the tunnel in {} has a TUN queue of {queue} packets, not 1000",
        ns.node()
    );
    let log = process.log();
    for wanted in wanted {
        ensure!(
            log.contains(wanted),
            "the tunnel in {} did not report {wanted}; log:\n{log}",
            ns.node()
        );
    }
    let threads_said = if threads == "2" {
        "data plane on two threads"
    } else {
        "data plane on one thread"
    };
    ensure!(
        enclave_netns::wait_until(Duration::from_secs(5), || process
            .log()
            .contains(threads_said)),
        "the tunnel in {} did not report \"{threads_said}\"; log:\n{}",
        ns.node(),
        process.log()
    );
    Ok(process)
}

/// Packets the TUN device `wg0` in `ns` has passed to its program (`tx`) or taken from it
/// (`rx`): a super-packet counts once.
fn tun_packets(ns: &Netns, direction: &str) -> anyhow::Result<u64> {
    link_packets(ns, IFACE, direction)
}

/// Packets `dev` in `ns` has sent (`tx`) or received (`rx`); a veth counts a UDP GSO
/// message once however many datagrams it carries.
fn link_packets(ns: &Netns, dev: &str, direction: &str) -> anyhow::Result<u64> {
    let out = ns.exec(&["ip", "-s", "-j", "link", "show", "dev", dev])?;
    let json: serde_json::Value = serde_json::from_str(&out).context("ip printed no JSON")?;
    json[0]["stats64"][direction]["packets"]
        .as_u64()
        .with_context(|| format!("no {direction} packets in {out}"))
}

/// The transmit queue length (`txqlen`) of the TUN device `wg0` in `ns`.
fn tun_queue_len(ns: &Netns) -> anyhow::Result<u64> {
    let out = ns.exec(&["ip", "-j", "link", "show", "dev", IFACE])?;
    let json: serde_json::Value = serde_json::from_str(&out).context("ip printed no JSON")?;
    json[0]["txqlen"]
        .as_u64()
        .with_context(|| format!("no txqlen in {out}"))
}

/// `wg show wg0 transfer` of the only peer: (received, sent) bytes.
fn wg_transfer(ns: &Netns) -> anyhow::Result<(u64, u64)> {
    let out = ns.exec(&["wg", "show", IFACE, "transfer"])?;
    let fields: Vec<u64> = out
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().context("wg show transfer printed no number"))
        .collect::<anyhow::Result<_>>()?;
    ensure!(fields.len() == 2, "unexpected wg show transfer: {out}");
    Ok((fields[0], fields[1]))
}

/// UDP datagrams the kernel dropped in `ns` for want of socket buffer.
fn udp_rcvbuf_errors(ns: &Netns) -> anyhow::Result<u64> {
    let snmp = ns.exec(&["cat", "/proc/net/snmp"])?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next(), udp.next());
    let (Some(names), Some(values)) = (names, values) else {
        bail!("no Udp lines in /proc/net/snmp");
    };
    let at = names
        .split_whitespace()
        .position(|n| n == "RcvbufErrors")
        .context("no RcvbufErrors in /proc/net/snmp")?;
    values
        .split_whitespace()
        .nth(at)
        .and_then(|v| v.parse().ok())
        .context("malformed /proc/net/snmp")
}

/// The datagram number `i`: its number, then bytes derived from it.
fn datagram(i: usize, buf: &mut [u8]) {
    buf[..4].copy_from_slice(&(i as u32).to_be_bytes());
    for (j, b) in buf[4..].iter_mut().enumerate() {
        *b = (i.wrapping_mul(131) ^ j.wrapping_mul(7)) as u8;
    }
}

/// Sends [`DATAGRAMS`] datagrams from `from` to `to_addr` through the tunnel, [`PER_SEND`] per
/// `send` with `UDP_SEGMENT` (so our TUN device reads UDP super-packets when USO is on), and
/// checks each one that arrives byte for byte. Returns how many arrived.
fn udp_segments(from: &Netns, to: &Netns, to_addr: std::net::Ipv4Addr) -> anyhow::Result<usize> {
    let port = 7001;
    let receiver = to.run_in(|| UdpSocket::bind((to_addr, port)))??;
    receiver.set_read_timeout(Some(Duration::from_secs(2)))?;
    // Room for every datagram: they are read only after all were sent.
    nix::sys::socket::setsockopt(
        &receiver,
        nix::sys::socket::sockopt::RcvBufForce,
        &(8 << 20),
    )
    .context("SO_RCVBUFFORCE")?;
    let dst = SocketAddr::from((to_addr, port));
    from.run_in(|| -> anyhow::Result<()> {
        let socket = UdpSocket::bind(("0.0.0.0", 0))?;
        nix::sys::socket::setsockopt(
            &socket,
            nix::sys::socket::sockopt::UdpGsoSegment,
            &(DATAGRAM_LEN as i32),
        )
        .context("UDP_SEGMENT")?;
        let mut buf = vec![0u8; DATAGRAM_LEN * PER_SEND];
        for first in (0..DATAGRAMS).step_by(PER_SEND) {
            for k in 0..PER_SEND {
                datagram(
                    first + k,
                    &mut buf[k * DATAGRAM_LEN..(k + 1) * DATAGRAM_LEN],
                );
            }
            socket.send_to(&buf, dst).context("send with UDP_SEGMENT")?;
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    })??;
    let mut seen = [false; DATAGRAMS];
    let mut buf = vec![0u8; 65_536];
    let mut expected = vec![0u8; DATAGRAM_LEN];
    loop {
        let n = match receiver.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => return Err(e.into()),
        };
        ensure!(n == DATAGRAM_LEN, "a datagram of {n} bytes arrived");
        let i = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        ensure!(i < DATAGRAMS, "datagram number {i} was never sent");
        datagram(i, &mut expected);
        ensure!(buf[..n] == expected[..], "datagram {i} arrived changed");
        ensure!(!seen[i], "datagram {i} arrived twice");
        seen[i] = true;
        if seen.iter().all(|s| *s) {
            break;
        }
    }
    Ok(seen.iter().filter(|s| **s).count())
}

/// Checks what a device of `end` in `ns` counted for `segments` full-sized segments going
/// `direction` (TUN "tx": read by the tunnel, "rx": written by it; "eth0 tx": sent to the
/// underlay): far fewer packets than segments with offloads (super-packets, GSO messages),
/// at least as many without.
fn check_tun_count(
    end: End,
    ns: &Netns,
    direction: &str,
    packets: u64,
    segments: u64,
) -> anyhow::Result<()> {
    if end == End::WireguardGo {
        return Ok(());
    }
    if end.offloads() {
        ensure!(
            packets * 2 < segments,
            "{} {direction}: {packets} TUN packets for {segments} segments: super-packets were not used",
            ns.node()
        );
    } else {
        ensure!(
            packets >= segments,
            "{} {direction}: {packets} TUN packets for {segments} segments with offloads off",
            ns.node()
        );
    }
    Ok(())
}

/// Gives the tunnels in `a` and `b` (of a [`pair`]) keys, addresses and each other as peer,
/// then checks that pings pass both ways: a first one (the handshake), then large ones
/// (which leave the kernel as fragments) and tiny ones; neither is a super-packet.
fn connect(ctx: &Ctx, tag: &str, a: &Netns, b: &Netns) -> anyhow::Result<()> {
    let a_keys = wg_keypair(a)?;
    let b_keys = wg_keypair(b)?;
    let a_key = write_key(ctx.log_dir(), &format!("{tag}-a.key"), &a_keys.private)?;
    let b_key = write_key(ctx.log_dir(), &format!("{tag}-b.key"), &b_keys.private)?;
    for (ns, key, own, peer, peer_overlay, peer_underlay) in [
        (a, &a_key, A_OVERLAY, &b_keys.public, B_OVERLAY, B_UNDERLAY),
        (b, &b_key, B_OVERLAY, &a_keys.public, A_OVERLAY, A_UNDERLAY),
    ] {
        wg_configure(
            ns,
            IFACE,
            key,
            &format!("{own}/24"),
            &WgPeer {
                public_key: peer,
                allowed_ips: &format!("{peer_overlay}/32"),
                endpoint: Some(format!("{peer_underlay}:{WG_PORT}")),
            },
        )?;
    }
    ping_through(a, B_OVERLAY)?;
    ping_through(b, A_OVERLAY)?;
    for (from, to) in [(a, B_OVERLAY), (b, A_OVERLAY)] {
        for size in ["8000", "1"] {
            let to = to.to_string();
            let out = from.exec_output(&[
                "ping", "-n", "-c", "3", "-i", "0.2", "-W", "2", "-s", size, &to,
            ])?;
            let ping = enclave_netns::PingResult::parse(&String::from_utf8_lossy(&out.stdout));
            ensure!(
                ping.all_answered(),
                "{}: {size}-byte pings to {to} were lost:\n{}",
                from.node(),
                ping.output
            );
        }
    }
    Ok(())
}

fn run_case(ctx: &Ctx, tag: &str, a_end: End, b_end: End) -> anyhow::Result<String> {
    let topo = ctx.topology(&pair(tag))?;
    let (a, b) = (topo.ns("a"), topo.ns("b"));
    let mut a_process = start(ctx, a, a_end)?;
    let mut b_process = start(ctx, b, b_end)?;
    connect(ctx, tag, a, b)?;
    let segments = (transfer_bytes() / MSS) as u64;
    let mut figures = Vec::new();
    for (from, from_end, to, to_end, to_addr, port) in [
        (a, a_end, b, b_end, B_OVERLAY, 5301),
        (b, b_end, a, a_end, A_OVERLAY, 5302),
    ] {
        let (sent_before, received_before) = (tun_packets(from, "tx")?, tun_packets(to, "rx")?);
        let wire_before = link_packets(from, "eth0", "tx")?;
        let mbps = transfer(from, to, to_addr, port, || Ok(()))?;
        let sent = tun_packets(from, "tx")? - sent_before;
        let received = tun_packets(to, "rx")? - received_before;
        let wire = link_packets(from, "eth0", "tx")? - wire_before;
        check_tun_count(from_end, from, "tx", sent, segments)?;
        check_tun_count(to_end, to, "rx", received, segments)?;
        // UDP GSO: the sealed datagrams of a super-packet leave as one message.
        check_tun_count(from_end, from, "eth0 tx", wire, segments)?;
        figures.push(format!(
            "{}->{}: {mbps:.0} Mbit/s, {sent} TUN reads, {wire} UDP sends and {received} TUN writes for {segments} segments",
            from.node(),
            to.node()
        ));
    }
    // UDP super-packets from a (always ours).
    let (before, written_before) = (tun_packets(a, "tx")?, tun_packets(b, "rx")?);
    let arrived = udp_segments(a, b, B_OVERLAY)?;
    let reads = tun_packets(a, "tx")? - before;
    let writes = tun_packets(b, "rx")? - written_before;
    ensure!(
        arrived == DATAGRAMS,
        "{arrived} of {DATAGRAMS} UDP datagrams sent with UDP_SEGMENT arrived"
    );
    check_tun_count(a_end, a, "tx", reads, DATAGRAMS as u64)?;
    // Received datagrams of one flow are written as USO super-packets.
    check_tun_count(b_end, b, "rx", writes, DATAGRAMS as u64)?;
    figures.push(format!(
        "UDP: {arrived}/{DATAGRAMS} datagrams intact, {reads} TUN reads, {writes} TUN writes"
    ));
    // Between our two ends every datagram one sends the other counts, byte for byte, unless
    // the kernel dropped some for want of socket buffer.
    if matches!(a_end, End::Ours { .. }) && matches!(b_end, End::Ours { .. }) {
        let stable = |ns: &Netns| -> anyhow::Result<(u64, u64)> {
            let mut last = wg_transfer(ns)?;
            for _ in 0..20 {
                std::thread::sleep(Duration::from_millis(100));
                let now = wg_transfer(ns)?;
                if now == last {
                    break;
                }
                last = now;
            }
            Ok(last)
        };
        let ((a_rx, a_tx), (b_rx, b_tx)) = (stable(a)?, stable(b)?);
        let drops = udp_rcvbuf_errors(a)? + udp_rcvbuf_errors(b)?;
        if drops == 0 {
            ensure!(
                a_tx == b_rx && b_tx == a_rx,
                "counters disagree: a sent {a_tx} and b received {b_rx}; b sent {b_tx} and a received {a_rx}"
            );
            figures.push(format!("counters exact: {a_tx} and {b_tx} bytes"));
        } else {
            figures.push(format!(
                "counters not compared: the kernel dropped {drops} datagrams for want of buffer"
            ));
        }
    }
    for (name, process) in [("a", &mut a_process), ("b", &mut b_process)] {
        ensure!(
            process.is_running(),
            "the tunnel on {name} exited; log:\n{}",
            process.log()
        );
        // The kernel took every UDP_SEGMENT send: no fallback to single datagrams.
        let log = process.log();
        ensure!(
            !log.contains("UDP GSO refused"),
            "the tunnel on {name} fell back from UDP GSO; log:\n{log}"
        );
    }
    Ok(figures.join("; "))
}

/// A sender and a gateway (both ours) with SNAT to a LAN host behind it: a hash-checked
/// upload and UDP super-packets to the LAN host, through the gateway's coalescing, its
/// forwarding and its SNAT.
fn run_gateway_case(ctx: &Ctx, tag: &str, end: End) -> anyhow::Result<String> {
    let topo = ctx.topology(&reference_topology(tag))?;
    let (sender, gw, lan) = (topo.ns("sender"), topo.ns("gw"), topo.ns("lan"));
    let mut sender_process = start(ctx, sender, end)?;
    let mut gw_process = start(ctx, gw, end)?;
    configure_reference_tunnel(ctx.log_dir(), tag, sender, gw)?;
    snat_to_lan(gw, "enclave-offload", Some(OVERLAY))?;
    let lan_host: std::net::Ipv4Addr = LAN_HOST.parse()?;
    ping_through(sender, lan_host)?;
    let segments = (transfer_bytes() / MSS) as u64;
    let (sent_before, written_before) = (tun_packets(sender, "tx")?, tun_packets(gw, "rx")?);
    let mbps = transfer(sender, lan, lan_host, 5303, || Ok(()))?;
    let sent = tun_packets(sender, "tx")? - sent_before;
    let written = tun_packets(gw, "rx")? - written_before;
    check_tun_count(end, sender, "tx", sent, segments)?;
    check_tun_count(end, gw, "rx", written, segments)?;
    let arrived = udp_segments(sender, lan, lan_host)?;
    ensure!(
        arrived == DATAGRAMS,
        "{arrived} of {DATAGRAMS} UDP datagrams sent with UDP_SEGMENT reached the LAN host"
    );
    for process in [&mut sender_process, &mut gw_process] {
        ensure!(
            process.is_running(),
            "a tunnel exited; log:\n{}",
            process.log()
        );
    }
    Ok(format!(
        "sender->LAN host: {mbps:.0} Mbit/s, {sent} TUN reads on the sender and {written} TUN \
         writes on the gateway for {segments} segments; UDP: {arrived}/{DATAGRAMS} intact"
    ))
}

fn offload(ctx: &Ctx) -> anyhow::Result<()> {
    let on = End::Ours {
        offload: true,
        two_threads: false,
    };
    let off = End::Ours {
        offload: false,
        two_threads: false,
    };
    let two = End::Ours {
        offload: true,
        two_threads: true,
    };
    let cases = [
        (on, on),
        (off, off),
        (on, off),
        (on, End::WireguardGo),
        (off, End::WireguardGo),
        (two, on),
        (two, End::WireguardGo),
    ];
    for (i, (a, b)) in cases.into_iter().enumerate() {
        let what = format!("{} <-> {}", a.name(), b.name());
        let figures = run_case(ctx, &format!("ofl{i}"), a, b).with_context(|| what.clone())?;
        println!("  {what}: {figures}");
    }
    for (i, end) in [on, off, two].into_iter().enumerate() {
        let what = format!("{} through a gateway with SNAT", end.name());
        let figures =
            run_gateway_case(ctx, &format!("oflgw{i}"), end).with_context(|| what.clone())?;
        println!("  {what}: {figures}");
    }
    Ok(())
}

/// One fallback: node a runs with one offload absent, b with all of them.
struct Fallback {
    name: &'static str,
    /// a's `ENCLAVE_OFFLOAD`.
    env: &'static str,
    /// What a's log must report.
    logged: [&'static str; 2],
    /// `ethtool -K` arguments (the device first) in a's namespace before the tunnel starts,
    /// in b's, and in a's once its TUN device exists.
    ethtool_a: &'static [&'static str],
    ethtool_b: &'static [&'static str],
    ethtool_a_tun: &'static [&'static str],
    /// a reads TCP from its TUN device as super-packets, and writes them.
    tcp_reads: bool,
    tcp_writes: bool,
    /// The same for UDP.
    udp_reads: bool,
    udp_writes: bool,
    /// a's sealed datagrams leave as UDP GSO messages (`None`: the veth cannot tell, since
    /// the kernel segments them in software before the device counts them).
    udp_gso: Option<bool>,
    /// The kernel refuses a's `UDP_SEGMENT` sends and a logs its fallback.
    gso_refused: bool,
}

const FALLBACKS: &[Fallback] = &[
    Fallback {
        name: "a TUN device without vnet headers (ENCLAVE_OFFLOAD=no-vnet-hdr)",
        env: "no-vnet-hdr",
        logged: ["vnet_hdr=false tso=false uso=false", "gso=true gro=true"],
        ethtool_a: &[],
        ethtool_b: &[],
        ethtool_a_tun: &[],
        tcp_reads: false,
        tcp_writes: false,
        udp_reads: false,
        udp_writes: false,
        udp_gso: Some(true),
        gso_refused: false,
    },
    Fallback {
        name: "TSO without USO, as before Linux 6.2 (ENCLAVE_OFFLOAD=no-uso)",
        env: "no-uso",
        logged: ["vnet_hdr=true tso=true uso=false", "gso=true gro=true"],
        ethtool_a: &[],
        ethtool_b: &[],
        ethtool_a_tun: &[],
        tcp_reads: true,
        tcp_writes: true,
        udp_reads: false,
        udp_writes: false,
        udp_gso: Some(true),
        gso_refused: false,
    },
    Fallback {
        name: "no UDP GSO or GRO (ENCLAVE_OFFLOAD=no-udp-gso,no-udp-gro)",
        env: "no-udp-gso,no-udp-gro",
        logged: ["vnet_hdr=true tso=true uso=true", "gso=false gro=false"],
        ethtool_a: &[],
        ethtool_b: &[],
        ethtool_a_tun: &[],
        tcp_reads: true,
        tcp_writes: true,
        udp_reads: true,
        udp_writes: true,
        udp_gso: Some(false),
        gso_refused: false,
    },
    Fallback {
        // Older kernels refused UDP_SEGMENT on a device without checksum offload (EIO); this
        // one checksums and segments in software, so the tunnel keeps sending GSO messages.
        name: "the underlay veth without checksum offload (ethtool -K eth0 tx off) and b's without GRO (gro off)",
        env: "on",
        logged: ["vnet_hdr=true tso=true uso=true", "gso=true gro=true"],
        ethtool_a: &["eth0", "tx", "off"],
        ethtool_b: &["eth0", "gro", "off"],
        ethtool_a_tun: &[],
        tcp_reads: true,
        tcp_writes: true,
        udp_reads: true,
        udp_writes: true,
        udp_gso: None,
        gso_refused: false,
    },
    Fallback {
        name: "the TUN device's segmentation turned off (ethtool -K wg0 tso off tx-udp-segmentation off)",
        env: "on",
        logged: ["vnet_hdr=true tso=true uso=true", "gso=true gro=true"],
        ethtool_a: &[],
        ethtool_b: &[],
        ethtool_a_tun: &[IFACE, "tso", "off", "tx-udp-segmentation", "off"],
        tcp_reads: false,
        tcp_writes: true,
        udp_reads: false,
        udp_writes: true,
        udp_gso: Some(true),
        gso_refused: false,
    },
];

/// `ethtool -K ARGS` in `ns` (nothing when `args` is empty).
fn ethtool(ns: &Netns, args: &[&str]) -> anyhow::Result<()> {
    if args.is_empty() {
        return Ok(());
    }
    let mut argv = vec!["ethtool", "-K"];
    argv.extend_from_slice(args);
    ns.exec(&argv)
        .with_context(|| format!("ethtool -K {} in {}", args.join(" "), ns.node()))?;
    Ok(())
}

/// Checks a count of a's: `packets` for `units` full-sized segments or datagrams, with the
/// offload that would batch them `used` or not.
fn check_batched(what: &str, used: bool, packets: u64, units: u64) -> anyhow::Result<()> {
    if used {
        ensure!(
            packets * 2 < units,
            "{what}: {packets} packets for {units}: the offload was not used"
        );
    } else {
        ensure!(
            packets >= units,
            "{what}: {packets} packets for {units}: an offload that is off was used"
        );
    }
    Ok(())
}

fn run_fallback(ctx: &Ctx, tag: &str, case: &Fallback) -> anyhow::Result<String> {
    let topo = ctx.topology(&pair(tag))?;
    let (a, b) = (topo.ns("a"), topo.ns("b"));
    ethtool(a, case.ethtool_a)?;
    ethtool(b, case.ethtool_b)?;
    let mut a_process = start_ours(ctx, a, case.env, "1", &case.logged)?;
    let mut b_process = start(
        ctx,
        b,
        End::Ours {
            offload: true,
            two_threads: false,
        },
    )?;
    // An ethtool change on a's TUN device, now that it exists.
    ethtool(a, case.ethtool_a_tun)?;
    connect(ctx, tag, a, b)?;
    let segments = (transfer_bytes() / MSS) as u64;
    // a -> b: a reads from its TUN device and sends; b -> a: a receives and writes.
    let (reads, wire) = (tun_packets(a, "tx")?, link_packets(a, "eth0", "tx")?);
    let up = transfer(a, b, B_OVERLAY, 5311, || Ok(()))?;
    let (reads, wire) = (
        tun_packets(a, "tx")? - reads,
        link_packets(a, "eth0", "tx")? - wire,
    );
    check_batched(
        "a's TCP reads from its TUN device",
        case.tcp_reads,
        reads,
        segments,
    )?;
    if let Some(gso) = case.udp_gso {
        check_batched("a's UDP sends of the TCP upload", gso, wire, segments)?;
    }
    let writes = tun_packets(a, "rx")?;
    let down = transfer(b, a, A_OVERLAY, 5312, || Ok(()))?;
    let writes = tun_packets(a, "rx")? - writes;
    check_batched(
        "a's TCP writes to its TUN device",
        case.tcp_writes,
        writes,
        segments,
    )?;
    // UDP super-packets both ways: a reads them from its TUN device, then writes them to it.
    let udp = |from: &Netns, to: &Netns, to_addr, direction, what, batched| {
        let before = tun_packets(a, direction)?;
        let arrived = udp_segments(from, to, to_addr)?;
        let packets = tun_packets(a, direction)? - before;
        ensure!(
            arrived == DATAGRAMS,
            "{arrived} of {DATAGRAMS} UDP datagrams {} sent with UDP_SEGMENT arrived",
            from.node()
        );
        check_batched(
            &format!("a's UDP {what} its TUN device"),
            batched,
            packets,
            DATAGRAMS as u64,
        )?;
        anyhow::Ok((arrived, packets))
    };
    let (arrived, udp_reads) = udp(a, b, B_OVERLAY, "tx", "reads from", case.udp_reads)?;
    let (arrived_back, udp_writes) = udp(b, a, A_OVERLAY, "rx", "writes to", case.udp_writes)?;
    for (name, process) in [("a", &mut a_process), ("b", &mut b_process)] {
        ensure!(
            process.is_running(),
            "the tunnel on {name} exited; log:\n{}",
            process.log()
        );
    }
    let refused = a_process.log().contains("UDP GSO refused");
    ensure!(
        refused == case.gso_refused,
        "a {} its fallback from UDP GSO; log:\n{}",
        if refused { "logged" } else { "never logged" },
        a_process.log()
    );
    ensure!(
        !b_process.log().contains("UDP GSO refused"),
        "b fell back from UDP GSO; log:\n{}",
        b_process.log()
    );
    Ok(format!(
        "a->b {up:.0} Mbit/s ({reads} TUN reads, {wire} UDP sends for {segments} segments), \
         b->a {down:.0} Mbit/s ({writes} TUN writes); UDP {arrived}+{arrived_back}/{DATAGRAMS} \
         intact ({udp_reads} TUN reads, {udp_writes} TUN writes)"
    ))
}

fn fallbacks(ctx: &Ctx) -> anyhow::Result<()> {
    ensure!(
        enclave_netns::which("ethtool").is_some(),
        "ethtool is not installed (cargo xtask netns-test installs it)"
    );
    for (i, case) in FALLBACKS.iter().enumerate() {
        let figures = run_fallback(ctx, &format!("oflfb{i}"), case).with_context(|| case.name)?;
        println!("  {}: {figures}", case.name);
    }
    Ok(())
}
