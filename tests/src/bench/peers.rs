//! `cargo xtask bench peers`: a gateway agent with 1,000 sender peers.
//!
//! The gateway (`enclave-gw run`, in namespace `gw`) has a network definition of 1,000 sender
//! systems, granted its LAN by a gateway policy. The senders are simulated by a load
//! generator in this process: one `enclave_wg::Device` per sender (the same sans-IO core the
//! agent runs, so every handshake is a real one), each with its own UDP socket on its own
//! underlay address, 250 senders in each of four namespaces (each namespace owns a /24 on its
//! loopback and the gateway routes it through that namespace). One thread per namespace
//! drives its 250 devices with `poll()`. A sender starts a handshake by sending one ICMP echo
//! to the gateway's overlay address; the handshake is complete when the gateway's response
//! arrives, and the queued echo then confirms the session on the gateway's side.
//!
//! Phases, one run:
//! 1. the gateway idle with 1,000 peers configured and no session: its RSS;
//! 2. first contact: all 1,000 senders start a handshake at once; how long until all are
//!    complete, and the agent's CPU seconds;
//! 3. sustained: for [`SUSTAIN`], every sender starts a new handshake (as a sender with a
//!    fresh configuration) as soon as its previous one completed, at most one per
//!    [`RESTART_INTERVAL`]; handshakes completed a second, and per CPU second of the agent
//!    (the figure per core: the load generator shares the machine's two cores with it);
//! 4. idle again with 1,000 sessions up: the agent's RSS;
//! 5. flood: one address floods the gateway's port with handshake initiations with a valid
//!    mac1 (`enclave_testkit::flood`) as fast as one thread can, and all 1,000 senders start a
//!    new handshake; the share that completes within [`FLOOD_WINDOW`], and how many cookie
//!    replies they needed (the gateway is under load, so each of them goes through the cookie
//!    path). The agent's highest RSS during the flood.
//!
//! `ENCLAVE_BENCH_BUILD=DIR` measures the binaries in DIR (say, release binaries measured by
//! a debug runner).
//!
//! The targets of issue 11 are printed beside the figures; the bench fails only when
//! something did not work (a handshake that never completes outside the flood, an agent that
//! stops), never on a figure.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{ensure, Context};
use blake2::{Blake2s256, Digest};
use enclave_netns::{Netns, SpawnOpts, TopologySpec};
use enclave_testkit::flood::{Flooder, INITIATION_LEN};

use super::idle::{cpu_ticks, gateway_definition, ticks_per_second};
use crate::agents::{prepare, start_with, status_json, write_definition, AgentFiles};
use crate::support::{GATEWAY_LAN, LAN_HOST, WG_PORT};
use crate::{Bench, Ctx};

pub(crate) const BENCH: Bench = Bench {
    name: "peers",
    about: "a gateway agent with 1,000 sender peers: handshakes/s (per core), RSS, cookie path under a flood",
    run: bench_peers,
};

/// Sender peers.
const PEERS: usize = 1000;
/// Namespaces the senders live in; each holds `PEERS / SENDER_NODES` of them.
const SENDER_NODES: usize = 4;
/// The gateway's underlay address.
const GW_UNDERLAY: Ipv4Addr = Ipv4Addr::new(10, 50, 0, 1);
/// The flooder's underlay address.
const FLOOD_UNDERLAY: Ipv4Addr = Ipv4Addr::new(10, 50, 0, 66);
/// The gateway's overlay address (as [`gateway_definition`] gives it).
const GW_OVERLAY: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
/// How long the agent is left alone before its RSS is read.
const SETTLE: Duration = Duration::from_secs(5);
/// How long the first contact of all senders may take before the bench gives up.
const FIRST_CONTACT_LIMIT: Duration = Duration::from_secs(90);
/// How long the sustained phase lasts.
const SUSTAIN: Duration = Duration::from_secs(10);
/// The shortest time between two handshakes a sender starts (the gateway refuses a peer's
/// initiations less than 20 ms apart, and the TAI64N timestamps it compares are coarse).
const RESTART_INTERVAL: Duration = Duration::from_millis(100);
/// How long the senders have to complete their handshakes under the flood.
const FLOOD_WINDOW: Duration = Duration::from_secs(20);
/// Distinct initiations the flooder cycles through.
const FLOOD_POOL: usize = 4096;
/// Targets from issue 11.
const RSS_TARGET_MB: f64 = 30.0;
const HANDSHAKES_PER_CORE_TARGET: f64 = 2000.0;

/// Sender `i`'s underlay address: namespace `s{n}` owns 10.51.n.0/24.
fn sender_underlay(i: usize) -> Ipv4Addr {
    let per = PEERS / SENDER_NODES;
    Ipv4Addr::new(10, 51, (i / per + 1) as u8, (i % per + 1) as u8)
}

/// Sender `i`'s overlay address.
fn sender_overlay(i: usize) -> Ipv4Addr {
    let per = PEERS / SENDER_NODES;
    Ipv4Addr::new(100, 64, (i / per + 1) as u8, (i % per + 1) as u8)
}

/// Sender `i`'s private key, derived from its number (the bench's own throwaway keys).
fn sender_private(i: usize) -> enclave_wg::PrivateKey {
    let digest: [u8; 32] = Blake2s256::digest(format!("enclave bench peers sender {i}")).into();
    enclave_wg::PrivateKey::from_bytes(digest)
}

/// The network definition: the gateway and `senders` sender systems.
fn definition(gw: &AgentFiles, senders: usize) -> String {
    let mut text = gateway_definition(&gw.public_key, &format!("{GW_UNDERLAY}:{WG_PORT}"));
    for i in 0..senders {
        text.push_str(&format!(
            "\n[[system]]\nname = \"sender-{i}\"\npublic_key = \"{}\"\naddress = \"{}\"\ntags = [\"users\"]\n",
            sender_private(i).public_key().to_base64(),
            sender_overlay(i)
        ));
    }
    text
}

fn topology() -> TopologySpec {
    let mut spec = TopologySpec::new("peers");
    let senders: Vec<String> = (1..=SENDER_NODES).map(|n| format!("s{n}")).collect();
    spec.node("gw").node("lan").node("f");
    for s in &senders {
        spec.node(s);
    }
    let mut wan = vec![("gw", "eth0"), ("f", "eth0")];
    wan.extend(senders.iter().map(|s| (s.as_str(), "eth0")));
    spec.segment("wan", &wan)
        .segment("lan", &[("gw", "lan0"), ("lan", "eth0")])
        .addr("gw", "eth0", &format!("{GW_UNDERLAY}/24"))
        .addr("gw", "lan0", &format!("{GATEWAY_LAN}/24"))
        .addr("lan", "eth0", &format!("{LAN_HOST}/24"))
        .addr("f", "eth0", &format!("{FLOOD_UNDERLAY}/24"));
    for (n, s) in senders.iter().enumerate() {
        let n = n + 1;
        // The whole /24 on the loopback is local, so each sender binds an address of its own;
        // the gateway reaches it through the namespace's one link address (four neighbours,
        // not a thousand).
        spec.addr(s, "eth0", &format!("10.50.0.{}/24", 10 + n))
            .addr(s, "lo", &format!("10.51.{n}.0/24"))
            .route("gw", &format!("10.51.{n}.0/24 via 10.50.0.{}", 10 + n));
    }
    spec
}

/// What the generator threads and the bench share.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    /// Every sender whose generation is below this starts a new handshake.
    generation: AtomicU64,
    /// Senders restart as soon as they completed (and RESTART_INTERVAL passed).
    continuous: AtomicBool,
    /// Handshakes completed (the gateway's response arrived).
    completed: AtomicU64,
    /// Handshakes started.
    started: AtomicU64,
    /// Cookie replies the senders received.
    cookie_replies: AtomicU64,
    /// Senders bound and ready.
    ready: AtomicU64,
    /// How long each handshake took (start to response), in seconds.
    latencies: Mutex<Vec<f64>>,
}

impl Shared {
    fn counts(&self) -> (u64, u64) {
        (
            self.completed.load(Ordering::Relaxed),
            self.cookie_replies.load(Ordering::Relaxed),
        )
    }

    fn take_latencies(&self) -> Vec<f64> {
        std::mem::take(&mut *self.latencies.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// One simulated sender.
struct Sender {
    device: enclave_wg::Device,
    socket: UdpSocket,
    gateway: enclave_wg::PeerConfig,
    /// The ICMP echo it sends to start a handshake.
    echo: Vec<u8>,
    generation: u64,
    in_flight: Option<Instant>,
    last_start: Option<Instant>,
}

impl Sender {
    fn new(i: usize, gateway: enclave_wg::PublicKey) -> anyhow::Result<Self> {
        let socket = UdpSocket::bind((sender_underlay(i), WG_PORT))
            .with_context(|| format!("sender {i} cannot bind {}", sender_underlay(i)))?;
        socket.set_nonblocking(true)?;
        let gateway = enclave_wg::PeerConfig {
            public_key: gateway,
            preshared_key: None,
            endpoint: Some(SocketAddr::new(IpAddr::V4(GW_UNDERLAY), WG_PORT)),
            allowed_ips: vec![format!("{GW_OVERLAY}/32").parse()?],
            persistent_keepalive: None,
        };
        let mut device =
            enclave_wg::Device::new(sender_private(i), rand_core::UnwrapErr(getrandom::SysRng));
        device.upsert_peer(gateway.clone());
        Ok(Self {
            device,
            socket,
            gateway,
            echo: icmp_echo(sender_overlay(i), GW_OVERLAY, i as u16),
            generation: 0,
            in_flight: None,
            last_start: None,
        })
    }

    /// Forgets the session (as a sender restarted with a fresh configuration would) and
    /// sends the echo, which starts a handshake.
    fn start(&mut self, now: Instant, shared: &Shared, out: &mut [u8]) {
        self.device.remove_peer(&self.gateway.public_key);
        self.device.upsert_peer(self.gateway.clone());
        let _ = self
            .device
            .encapsulate(&self.echo, now, SystemTime::now(), out);
        self.in_flight = Some(now);
        self.last_start = Some(now);
        shared.started.fetch_add(1, Ordering::Relaxed);
        self.flush(shared);
    }

    fn flush(&mut self, shared: &Shared) {
        while let Some(transmit) = self.device.poll_transmit() {
            let _ = self.socket.send_to(&transmit.payload, transmit.dst);
        }
        while let Some(event) = self.device.poll_event() {
            if let enclave_wg::Event::HandshakeCompleted { .. } = event {
                if let Some(started) = self.in_flight.take() {
                    shared.completed.fetch_add(1, Ordering::Relaxed);
                    shared
                        .latencies
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(started.elapsed().as_secs_f64());
                }
            }
        }
    }

    fn receive(&mut self, shared: &Shared, buf: &mut [u8], out: &mut [u8]) {
        while let Ok((len, from)) = self.socket.recv_from(buf) {
            if len == 64 && buf[0] == 3 {
                shared.cookie_replies.fetch_add(1, Ordering::Relaxed);
            }
            let _ =
                self.device
                    .decapsulate(from, &buf[..len], Instant::now(), SystemTime::now(), out);
            self.flush(shared);
        }
    }
}

/// A minimal IPv4 ICMP echo request from `src` to `dst`.
fn icmp_echo(src: Ipv4Addr, dst: Ipv4Addr, id: u16) -> Vec<u8> {
    let mut packet = vec![0u8; 28];
    packet[0] = 0x45;
    packet[2..4].copy_from_slice(&28u16.to_be_bytes());
    packet[8] = 64;
    packet[9] = 1;
    packet[12..16].copy_from_slice(&src.octets());
    packet[16..20].copy_from_slice(&dst.octets());
    let sum = checksum(&packet[..20]);
    packet[10..12].copy_from_slice(&sum.to_be_bytes());
    packet[20] = 8;
    packet[24..26].copy_from_slice(&id.to_be_bytes());
    packet[26..28].copy_from_slice(&1u16.to_be_bytes());
    let sum = checksum(&packet[20..]);
    packet[22..24].copy_from_slice(&sum.to_be_bytes());
    packet
}

/// The Internet checksum of `bytes` (even length).
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], pair[1]])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Drives senders `range` (inside their namespace) until told to stop.
fn generator(
    range: std::ops::Range<usize>,
    gateway: enclave_wg::PublicKey,
    shared: &Shared,
) -> anyhow::Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut senders = range
        .map(|i| Sender::new(i, gateway))
        .collect::<anyhow::Result<Vec<_>>>()?;
    shared
        .ready
        .fetch_add(senders.len() as u64, Ordering::Relaxed);
    let mut buf = vec![0u8; 2048];
    let mut out = vec![0u8; 2048];
    while !shared.stop.load(Ordering::Relaxed) {
        let generation = shared.generation.load(Ordering::Relaxed);
        let continuous = shared.continuous.load(Ordering::Relaxed);
        let now = Instant::now();
        for sender in &mut senders {
            let restart = continuous
                && sender.in_flight.is_none()
                && sender
                    .last_start
                    .is_none_or(|last| now.duration_since(last) >= RESTART_INTERVAL);
            if sender.generation < generation || restart {
                sender.generation = generation;
                sender.start(now, shared, &mut out);
            }
        }
        let next_timer = senders
            .iter()
            .filter_map(|s| s.device.poll_timeout())
            .min()
            .map_or(Duration::from_millis(20), |t| {
                t.saturating_duration_since(Instant::now())
            });
        let wait = next_timer.clamp(Duration::from_millis(1), Duration::from_millis(20));
        let readable: Vec<bool> = {
            let mut fds: Vec<PollFd<'_>> = senders
                .iter()
                .map(|s| PollFd::new(s.socket.as_fd(), PollFlags::POLLIN))
                .collect();
            let timeout =
                PollTimeout::try_from(wait.as_millis() as u64).unwrap_or(PollTimeout::ZERO);
            match poll(&mut fds, timeout) {
                Ok(_) => fds
                    .iter()
                    .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
                    .collect(),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        for (sender, readable) in senders.iter_mut().zip(readable) {
            if readable {
                sender.receive(shared, &mut buf, &mut out);
            }
        }
        let now = Instant::now();
        for sender in &mut senders {
            if sender.device.poll_timeout().is_some_and(|t| t <= now) {
                sender.device.handle_timeout(now, SystemTime::now());
                sender.flush(shared);
            }
        }
    }
    Ok(())
}

/// Floods `target` with valid-mac1 initiations until `stop`; returns how many were sent.
fn flood(
    stop: &AtomicBool,
    sent: &AtomicU64,
    responder: &[u8; 32],
    target: SocketAddr,
) -> anyhow::Result<()> {
    let socket = UdpSocket::bind((FLOOD_UNDERLAY, 0)).context("flooder socket")?;
    socket.set_nonblocking(true)?;
    let mut flooder = Flooder::new(responder, 0x5eed_0f1e_e7f1_00d0);
    let pool: Vec<[u8; INITIATION_LEN]> = (0..FLOOD_POOL).map(|_| flooder.initiation()).collect();
    let mut reply = [0u8; 128];
    let mut count = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for msg in &pool {
            // A full send buffer is the point of a flood: keep going.
            if socket.send_to(msg, target).is_ok() {
                count += 1;
            }
        }
        sent.store(count, Ordering::Relaxed);
        while socket.recv_from(&mut reply).is_ok() {}
    }
    Ok(())
}

/// The resident memory of a process, in MB: all of it (VmRSS), and its anonymous part
/// (RssAnon: heap and stacks; the rest is mostly the binary's pages).
#[derive(Debug, Clone, Copy)]
struct Rss {
    total: f64,
    anon: f64,
}

impl Rss {
    fn of(pid: u32) -> anyhow::Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| -> anyhow::Result<f64> {
            let kb: f64 = status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .with_context(|| format!("no {name} in /proc/{pid}/status"))?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()?;
            Ok(kb / 1024.0)
        };
        Ok(Self {
            total: field("VmRSS:")?,
            anon: field("RssAnon:")?,
        })
    }

    fn max(self, other: Self) -> Self {
        Self {
            total: self.total.max(other.total),
            anon: self.anon.max(other.anon),
        }
    }
}

impl std::fmt::Display for Rss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1} MB ({:.1} MB anonymous)", self.total, self.anon)
    }
}

/// The agent's CPU time in seconds.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    Ok(cpu_ticks(pid)? as f64 / ticks_per_second()?)
}

/// The CPU time of the calling process (the load generator and the flooder), in seconds.
fn own_cpu_seconds() -> anyhow::Result<f64> {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Ok(secs(usage.user_time()) + secs(usage.system_time()))
}

/// Waits until `done()` or `limit`; returns the time it took, or `None`.
fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if done() {
            return Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let at = ((values.len() - 1) as f64 * p).round() as usize;
    values[at]
}

/// Peers the gateway's status shows, and how many of them are up.
fn gateway_peers(ctx: &Ctx, ns: &Netns, files: &AgentFiles) -> anyhow::Result<(usize, usize)> {
    let status = status_json(ctx, ns, files)?;
    let peers = status["peers"].as_array().map_or(&[][..], Vec::as_slice);
    let up = peers.iter().filter(|p| p["state"] == "Up").count();
    Ok((peers.len(), up))
}

fn bench_peers(ctx: &Ctx) -> anyhow::Result<()> {
    let build;
    let ctx = match std::env::var_os("ENCLAVE_BENCH_BUILD") {
        Some(dir) => {
            build = Ctx::new(ctx.name(), ctx.log_dir().to_owned(), dir.into());
            &build
        }
        None => ctx,
    };
    println!("binaries: {}", ctx.bin("enclave-gw")?.display());
    let topo = ctx.topology(&topology())?;
    let gw = topo.ns("gw");
    let network = ctx.log_dir().join("network.toml");
    let files = prepare(ctx, gw, &network, "")?;
    write_definition(&network, &definition(&files, 0))?;
    let gateway_key = enclave_wg::PublicKey::from_base64(&files.public_key)?;

    let opts = SpawnOpts::default().env("ENCLAVE_TEST_VERBOSITY", "2");
    let mut agent = start_with(ctx, gw, &files, true, opts)?;
    let pid = agent.pid();
    std::thread::sleep(SETTLE);
    let rss_empty = Rss::of(pid)?;
    println!("gateway idle with no peer: RSS {rss_empty}");
    write_definition(&network, &definition(&files, PEERS))?;
    let configured = enclave_netns::wait_until(Duration::from_secs(30), || {
        gateway_peers(ctx, gw, &files).is_ok_and(|(peers, _)| peers == PEERS)
    });
    ensure!(
        configured,
        "the gateway never showed {PEERS} peers:\n{}",
        agent.log()
    );
    std::thread::sleep(SETTLE);
    let rss_configured = Rss::of(pid)?;
    println!("gateway idle with {PEERS} peers configured, no session: RSS {rss_configured}");

    let shared = Shared::default();
    let flood_stop = AtomicBool::new(false);
    let flood_sent = AtomicU64::new(0);
    let result = std::thread::scope(|scope| -> anyhow::Result<()> {
        let per = PEERS / SENDER_NODES;
        let mut generators = Vec::new();
        for n in 0..SENDER_NODES {
            let ns = topo.ns(&format!("s{}", n + 1));
            let shared = &shared;
            generators.push(scope.spawn(move || {
                let result = ns
                    .run_in(|| generator(n * per..(n + 1) * per, gateway_key, shared))
                    .map_err(anyhow::Error::from)
                    .and_then(|r| r);
                if result.is_err() {
                    shared.stop.store(true, Ordering::Relaxed);
                }
                result
            }));
        }
        let measured = (|| -> anyhow::Result<()> {
            let ready = wait_for(Duration::from_secs(30), || {
                shared.ready.load(Ordering::Relaxed) == PEERS as u64
                    || shared.stop.load(Ordering::Relaxed)
            });
            ensure!(
                ready.is_some() && !shared.stop.load(Ordering::Relaxed),
                "the load generator did not start"
            );
            measure(
                ctx,
                gw,
                &files,
                pid,
                &shared,
                &flood_stop,
                &flood_sent,
                &topo,
                &gateway_key,
                [rss_empty, rss_configured],
            )
        })();
        shared.stop.store(true, Ordering::Relaxed);
        flood_stop.store(true, Ordering::Relaxed);
        for generator in generators {
            generator
                .join()
                .map_err(|_| anyhow::anyhow!("a generator thread panicked"))??;
        }
        measured
    });
    ensure!(
        agent.is_running(),
        "the gateway agent stopped:\n{}",
        agent.log()
    );
    agent.stop();
    result
}

#[allow(clippy::too_many_arguments)]
fn measure(
    ctx: &Ctx,
    gw: &Netns,
    files: &AgentFiles,
    pid: u32,
    shared: &Shared,
    flood_stop: &AtomicBool,
    flood_sent: &AtomicU64,
    topo: &enclave_netns::Topology,
    gateway_key: &enclave_wg::PublicKey,
    [rss_empty, rss_configured]: [Rss; 2],
) -> anyhow::Result<()> {
    let peers = PEERS as u64;
    // First contact: every sender at once.
    let (cpu0, own0) = (cpu_seconds(pid)?, own_cpu_seconds()?);
    let (done0, cookies0) = shared.counts();
    shared.generation.store(1, Ordering::Relaxed);
    let took = wait_for(FIRST_CONTACT_LIMIT, || {
        shared.completed.load(Ordering::Relaxed) >= done0 + peers
    });
    let (cpu1, own1) = (cpu_seconds(pid)?, own_cpu_seconds()?);
    let (done1, cookies1) = shared.counts();
    let took = took.with_context(|| {
        format!(
            "only {} of {PEERS} first handshakes completed within {FIRST_CONTACT_LIMIT:?}",
            done1 - done0
        )
    })?;
    let mut latencies = shared.take_latencies();
    let first = Row {
        handshakes: done1 - done0,
        elapsed: took.as_secs_f64(),
        agent_cpu: cpu1 - cpu0,
        generator_cpu: own1 - own0,
        cookies: cookies1 - cookies0,
        median_ms: percentile(&mut latencies, 0.5) * 1000.0,
        p99_ms: percentile(&mut latencies, 0.99) * 1000.0,
    };
    // The gateway's side: every session confirmed by the sender's first transport packet.
    let confirmed = wait_for(Duration::from_secs(10), || {
        gateway_peers(ctx, gw, files).is_ok_and(|(_, up)| up == PEERS)
    });
    let (_, up) = gateway_peers(ctx, gw, files)?;
    ensure!(
        confirmed.is_some(),
        "the gateway shows {up} of {PEERS} peers up after every sender completed its handshake"
    );

    // Sustained: every sender again as soon as it may.
    let (cpu0, own0) = (cpu_seconds(pid)?, own_cpu_seconds()?);
    let (done0, cookies0) = shared.counts();
    let started = Instant::now();
    shared.continuous.store(true, Ordering::Relaxed);
    std::thread::sleep(SUSTAIN);
    let (done1, cookies1) = shared.counts();
    let elapsed = started.elapsed().as_secs_f64();
    let (cpu1, own1) = (cpu_seconds(pid)?, own_cpu_seconds()?);
    shared.continuous.store(false, Ordering::Relaxed);
    let mut latencies = shared.take_latencies();
    let sustained = Row {
        handshakes: done1 - done0,
        elapsed,
        agent_cpu: cpu1 - cpu0,
        generator_cpu: own1 - own0,
        cookies: cookies1 - cookies0,
        median_ms: percentile(&mut latencies, 0.5) * 1000.0,
        p99_ms: percentile(&mut latencies, 0.99) * 1000.0,
    };
    // Let the handshakes in flight finish, then idle.
    let in_flight =
        || shared.started.load(Ordering::Relaxed) - shared.completed.load(Ordering::Relaxed);
    let _ = wait_for(Duration::from_secs(15), || in_flight() == 0);
    std::thread::sleep(SETTLE);
    let (_, up) = gateway_peers(ctx, gw, files)?;
    let rss_sessions = Rss::of(pid)?;
    shared.take_latencies();

    // Flood: one address floods the gateway's port while every sender starts again.
    let f = topo.ns("f");
    let target = SocketAddr::new(IpAddr::V4(GW_UNDERLAY), WG_PORT);
    let flood_result = std::thread::scope(|scope| -> anyhow::Result<FloodRow> {
        let flooder = scope.spawn(|| {
            let result = f
                .run_in(|| flood(flood_stop, flood_sent, gateway_key.as_bytes(), target))
                .map_err(anyhow::Error::from)
                .and_then(|r| r);
            flood_stop.store(true, Ordering::Relaxed);
            result
        });
        let measured = (|| -> anyhow::Result<FloodRow> {
            let flooding = wait_for(Duration::from_secs(5), || {
                flood_sent.load(Ordering::Relaxed) >= 20_000 || flood_stop.load(Ordering::Relaxed)
            });
            ensure!(
                flooding.is_some() && !flood_stop.load(Ordering::Relaxed),
                "the flood did not start"
            );
            // Let the gateway go under load before the senders start.
            std::thread::sleep(Duration::from_millis(500));
            let sent0 = flood_sent.load(Ordering::Relaxed);
            let cpu0 = cpu_seconds(pid)?;
            let (done0, cookies0) = shared.counts();
            let started = Instant::now();
            shared.generation.store(2, Ordering::Relaxed);
            let mut rss_max = Rss::of(pid)?;
            let mut at = HashMap::new();
            while started.elapsed() < FLOOD_WINDOW {
                std::thread::sleep(Duration::from_millis(100));
                rss_max = rss_max.max(Rss::of(pid)?);
                let done = shared.completed.load(Ordering::Relaxed) - done0;
                for share in [50u64, 90, 100] {
                    if done * 100 >= share * peers {
                        at.entry(share).or_insert(started.elapsed().as_secs_f64());
                    }
                }
                if done >= peers {
                    break;
                }
            }
            let elapsed = started.elapsed().as_secs_f64();
            let (done1, cookies1) = shared.counts();
            let sent = flood_sent.load(Ordering::Relaxed) - sent0;
            Ok(FloodRow {
                completed: done1 - done0,
                cookies: cookies1 - cookies0,
                flood_rate: sent as f64 / elapsed,
                agent_cpu: cpu_seconds(pid)? - cpu0,
                elapsed,
                at,
                rss_max,
            })
        })();
        flood_stop.store(true, Ordering::Relaxed);
        flooder
            .join()
            .map_err(|_| anyhow::anyhow!("the flooder panicked"))??;
        measured
    })?;
    let mut latencies = shared.take_latencies();

    println!();
    println!(
        "{PEERS} sender peers in {SENDER_NODES} namespaces against one gateway agent (enclave-gw)"
    );
    println!(
        "{:<34} {:>10} {:>9} {:>12} {:>14} {:>13} {:>10} {:>10} {:>8}",
        "phase",
        "handshakes",
        "seconds",
        "handshakes/s",
        "agent CPU s",
        "per CPU s",
        "generator",
        "median ms",
        "p99 ms"
    );
    for (name, row) in [
        ("first contact, all at once", &first),
        ("sustained, each again at once", &sustained),
    ] {
        println!(
            "{name:<34} {:>10} {:>9.2} {:>12.0} {:>14.2} {:>13.0} {:>9.2}s {:>10.1} {:>8.1}",
            row.handshakes,
            row.elapsed,
            row.handshakes as f64 / row.elapsed,
            row.agent_cpu,
            row.handshakes as f64 / row.agent_cpu,
            row.generator_cpu,
            row.median_ms,
            row.p99_ms,
        );
        println!("{:<34} cookie replies to the senders: {}", "", row.cookies);
    }
    println!();
    println!("gateway RSS, no peer: {rss_empty}");
    println!("gateway RSS, {PEERS} peers configured, no session: {rss_configured}");
    println!("gateway RSS, {PEERS} peers after their handshakes ({up} up), idle: {rss_sessions}");
    println!(
        "gateway RSS, highest during the flood: {}",
        flood_result.rss_max
    );
    println!(
        "per peer: {:.1} KB configured, {:.1} KB with a session",
        (rss_configured.total - rss_empty.total) * 1024.0 / PEERS as f64,
        (rss_sessions.total - rss_empty.total) * 1024.0 / PEERS as f64
    );
    println!();
    let share = |s: u64| {
        flood_result
            .at
            .get(&s)
            .map_or("not reached".to_owned(), |t| format!("{t:.2} s"))
    };
    println!(
        "flood from one address, {:.0} valid-mac1 initiations/s: {} of {PEERS} senders ({:.1} %) completed a handshake within {:.1} s \
         (50 % after {}, 90 % after {}, all after {}); median {:.0} ms, p99 {:.0} ms; {} cookie replies to the senders; agent CPU {:.2} s",
        flood_result.flood_rate,
        flood_result.completed,
        flood_result.completed as f64 / PEERS as f64 * 100.0,
        flood_result.elapsed,
        share(50),
        share(90),
        share(100),
        percentile(&mut latencies, 0.5) * 1000.0,
        percentile(&mut latencies, 0.99) * 1000.0,
        flood_result.cookies,
        flood_result.agent_cpu,
    );
    println!();
    let per_core = sustained.handshakes as f64 / sustained.agent_cpu;
    println!(
        "targets (issue 11): RSS at idle with {PEERS} peers <= {RSS_TARGET_MB} MB: {:.1} and {:.1} MB ({}); \
         >= {HANDSHAKES_PER_CORE_TARGET} handshakes/s per core: {per_core:.0} ({:.2}x)",
        rss_configured.total,
        rss_sessions.total,
        if rss_configured.total.max(rss_sessions.total) <= RSS_TARGET_MB { "met" } else { "not met" },
        per_core / HANDSHAKES_PER_CORE_TARGET,
    );
    Ok(())
}

struct Row {
    handshakes: u64,
    elapsed: f64,
    agent_cpu: f64,
    generator_cpu: f64,
    cookies: u64,
    median_ms: f64,
    p99_ms: f64,
}

struct FloodRow {
    completed: u64,
    cookies: u64,
    flood_rate: f64,
    agent_cpu: f64,
    elapsed: f64,
    at: HashMap<u64, f64>,
    rss_max: Rss,
}
