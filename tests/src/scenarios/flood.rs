//! A handshake flood against our userspace tunnel: one source sends handshake initiations with a
//! valid mac1 as fast as it can (first plain, then with a valid mac2 from a cookie it fetched,
//! as a determined attacker would), while a legitimate peer must still complete a handshake
//! within 2 s and an established transfer must keep at least half its throughput.
//!
//! "Its throughput" is what the transfer keeps while the same flood goes to a closed port: on
//! this 2-core machine the flooder itself takes a core away from the tunnels and iperf3 (a
//! third or more of the throughput, whatever the target does with the packets), which no
//! receiver can help. So the control phase measures that cost, and a phase that floods our
//! tunnel must keep at least half of what the control kept, each measured against a run
//! without flood just before it.
//!
//! The flood only ever goes from the flooder's namespace to the target's underlay address, and
//! stops after a bounded time even if the scenario fails.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use base64::Engine as _;
use enclave_netns::{Netns, SpawnOpts, TopologySpec};
use enclave_testkit::flood::{mac1_of, Flooder, INITIATION_LEN};

use crate::support::{wg_configure, wg_keypair, write_key, WgPeer, WG_PORT};
use crate::{Ctx, Scenario};

pub fn scenarios() -> Vec<Scenario> {
    vec![Scenario {
        name: "dataplane-handshake-flood",
        about: "a valid-mac1 (then valid-mac2) initiation flood from one address: a legitimate handshake completes within 2 s, an established transfer keeps half its throughput",
        run: handshake_flood,
    }]
}

const IFACE: &str = "wg0";
/// Underlay: a and c are legitimate peers of b; f floods b.
const A_UNDERLAY: &str = "10.30.0.1";
const B_UNDERLAY: &str = "10.30.0.2";
const C_UNDERLAY: &str = "10.30.0.3";
const F_UNDERLAY: &str = "10.30.0.66";
const A_OVERLAY: Ipv4Addr = Ipv4Addr::new(100, 71, 0, 1);
const B_OVERLAY: Ipv4Addr = Ipv4Addr::new(100, 71, 0, 2);
const C_OVERLAY: Ipv4Addr = Ipv4Addr::new(100, 71, 0, 3);
/// The longest a flood phase lasts, whatever happens.
const FLOOD_LIMIT: Duration = Duration::from_secs(12);
/// Seconds of each iperf3 measurement.
const IPERF_SECONDS: &str = "4";
/// How long a legitimate handshake may take while the flood runs.
const HANDSHAKE_BUDGET: Duration = Duration::from_secs(2);
/// How many times a phase is measured before a throughput below half fails it.
const THROUGHPUT_ATTEMPTS: u32 = 2;
/// Distinct initiations the flooder cycles through.
const POOL: usize = 4096;

fn handshake_flood(ctx: &Ctx) -> anyhow::Result<()> {
    let mut spec = TopologySpec::new("dpfl");
    spec.node("a")
        .node("b")
        .node("c")
        .node("f")
        .segment(
            "lan",
            &[("a", "eth0"), ("b", "eth0"), ("c", "eth0"), ("f", "eth0")],
        )
        .addr("a", "eth0", &format!("{A_UNDERLAY}/24"))
        .addr("b", "eth0", &format!("{B_UNDERLAY}/24"))
        .addr("c", "eth0", &format!("{C_UNDERLAY}/24"))
        .addr("f", "eth0", &format!("{F_UNDERLAY}/24"));
    let topo = ctx.topology(&spec)?;
    let (a, b, c, f) = (topo.ns("a"), topo.ns("b"), topo.ns("c"), topo.ns("f"));

    let mut tunnels = Vec::new();
    for ns in [a, b, c] {
        tunnels.push(super::dataplane::start_ours(ctx, ns)?);
    }
    let keys: Vec<_> = [a, b, c]
        .iter()
        .map(|ns| wg_keypair(ns))
        .collect::<anyhow::Result<_>>()?;
    let files: Vec<_> = ["a", "b", "c"]
        .iter()
        .zip(&keys)
        .map(|(name, key)| write_key(ctx.log_dir(), &format!("{name}.key"), &key.private))
        .collect::<anyhow::Result<_>>()?;
    let b_endpoint = format!("{B_UNDERLAY}:{WG_PORT}");
    let to_b = |ns: &Netns, file, overlay: Ipv4Addr| {
        wg_configure(
            ns,
            IFACE,
            file,
            &format!("{overlay}/24"),
            &WgPeer {
                public_key: &keys[1].public,
                allowed_ips: &format!("{B_OVERLAY}/32"),
                endpoint: Some(b_endpoint.clone()),
            },
        )
    };
    to_b(a, &files[0], A_OVERLAY)?;
    to_b(c, &files[2], C_OVERLAY)?;
    wg_configure(
        b,
        IFACE,
        &files[1],
        &format!("{B_OVERLAY}/24"),
        &WgPeer {
            public_key: &keys[0].public,
            allowed_ips: &format!("{A_OVERLAY}/32"),
            endpoint: None,
        },
    )?;
    b.exec(&[
        "wg",
        "set",
        IFACE,
        "peer",
        &keys[2].public,
        "allowed-ips",
        &format!("{C_OVERLAY}/32"),
    ])?;
    let _iperf = b.spawn("iperf3-b", &["iperf3", "-s"], SpawnOpts::default())?;

    // The established session, and the throughput it has without a flood.
    let first = enclave_netns::try_wait_until(Duration::from_secs(10), || {
        a.ping_once(&B_OVERLAY.to_string())
    })?;
    ensure!(first, "a never reached b through the tunnel");

    let b_public = decode_key(&keys[1].public)?;
    let target: SocketAddr = format!("{B_UNDERLAY}:{WG_PORT}").parse()?;

    // A control: the same flood to a port where nothing listens, so that the kernel drops it;
    // what throughput it costs is the machine's (the flooder's CPU, the bridge), not ours.
    // Phase 1: valid mac1, no mac2. Phase 2: valid mac2 too, from a cookie the flooder fetched.
    // Each phase compares with a measurement without flood just before it, so that what else
    // the machine does at the time weighs on both alike.
    // Two cores carry the flooder, both tunnels and both iperf3 ends, and a noisy neighbour can
    // take a measurement below the line on its own: a phase whose throughput falls short is
    // measured once more, baseline included, and fails only when both attempts fall short.
    let mut passed = std::collections::BTreeSet::new();
    // What the control flood left of the throughput without flood (1.0 until it is measured).
    let mut control_kept = 1.0_f64;
    for (phase, attempt) in [Phase::ClosedPort, Phase::Mac1, Phase::Mac2]
        .into_iter()
        .flat_map(|phase| (1..=THROUGHPUT_ATTEMPTS).map(move |attempt| (phase, attempt)))
    {
        if passed.contains(&phase) {
            continue;
        }
        let baseline = iperf(a, &B_OVERLAY.to_string())?;
        let flood = Flood::default();
        let target = match phase {
            Phase::ClosedPort => SocketAddr::new(target.ip(), WG_PORT + 1),
            Phase::Mac1 | Phase::Mac2 => target,
        };
        let measured = std::thread::scope(|scope| -> anyhow::Result<Measured> {
            let flooder = scope.spawn(|| {
                f.run_in(|| {
                    run_flooder(&flood, phase, &b_public, target)
                        .inspect_err(|_| flood.failed.store(true, Ordering::Relaxed))
                })
            });
            let measured = (|| -> anyhow::Result<Measured> {
                flood.wait_started()?;
                // A legitimate peer that has no session with b: c, or c again after it forgot
                // its session (as a restarted peer would).
                if phase == Phase::Mac2 {
                    c.exec(&["wg", "set", IFACE, "peer", &keys[1].public, "remove"])?;
                    c.exec(&[
                        "wg",
                        "set",
                        IFACE,
                        "peer",
                        &keys[1].public,
                        "allowed-ips",
                        &format!("{B_OVERLAY}/32"),
                        "endpoint",
                        &b_endpoint,
                    ])?;
                }
                let handshake = match phase {
                    Phase::ClosedPort => None,
                    Phase::Mac1 | Phase::Mac2 => Some(first_reply(c, B_OVERLAY)?),
                };
                let throughput = iperf(a, &B_OVERLAY.to_string())?;
                Ok(Measured {
                    handshake,
                    throughput,
                })
            })();
            flood.stop.store(true, Ordering::Relaxed);
            let report = flooder
                .join()
                .map_err(|_| anyhow::anyhow!("the flooder panicked"))?
                .context("entering the flooder's namespace")?
                .context("flooding")?;
            let measured = measured?;
            let handshake = measured.handshake.map_or("-".to_owned(), |took| {
                format!("{:.0} ms", took.as_secs_f64() * 1000.0)
            });
            println!(
                "    {phase:?} flood: {} initiations sent ({:.0}/s), {} cookie replies back; \
                 c's first reply after {handshake}; a->b {:.0} Mbit/s = {:.0} % of the {:.0} \
                 Mbit/s just before without flood",
                report.sent,
                report.sent as f64 / report.elapsed.as_secs_f64(),
                report.cookie_replies,
                measured.throughput,
                measured.throughput / baseline * 100.0,
                baseline,
            );
            ensure!(
                report.sent > 10_000,
                "the flooder sent only {} initiations; it did not flood",
                report.sent
            );
            if phase == Phase::Mac1 {
                // Our positive control that the flood is valid-mac1 and puts b under load:
                // b answers some of it with cookie replies.
                ensure!(
                    report.cookie_replies > 0,
                    "b never answered the flood with a cookie reply: the flood's mac1 is wrong or b never went under load"
                );
            }
            Ok(measured)
        })?;
        let kept = measured.throughput / baseline;
        let Some(handshake) = measured.handshake else {
            control_kept = kept;
            passed.insert(phase);
            continue;
        };
        ensure!(
            handshake < HANDSHAKE_BUDGET,
            "during the {phase:?} flood c's handshake with b took {handshake:?} (at most {HANDSHAKE_BUDGET:?})"
        );
        if kept >= control_kept / 2.0 {
            passed.insert(phase);
            continue;
        }
        ensure!(
            attempt < THROUGHPUT_ATTEMPTS,
            "during the {phase:?} flood a->b kept {:.0} % of its throughput ({:.0} of {baseline:.0} Mbit/s), less than half of the {:.0} % the same flood to a closed port left, in each of {THROUGHPUT_ATTEMPTS} attempts",
            kept * 100.0,
            measured.throughput,
            control_kept * 100.0
        );
        println!("    less than half: measuring the {phase:?} phase once more");
    }
    for (name, process) in ["a", "b", "c"].iter().zip(tunnels.iter_mut()) {
        if !process.is_running() {
            bail!("the tunnel on {name} exited; log:\n{}", process.log());
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    ClosedPort,
    Mac1,
    Mac2,
}

struct Measured {
    handshake: Option<Duration>,
    throughput: f64,
}

/// What the flooder and the scenario share.
#[derive(Default)]
struct Flood {
    stop: AtomicBool,
    sent: AtomicU64,
    failed: AtomicBool,
}

impl Flood {
    /// Waits until the flood is under way (a few thousand initiations out), or fails.
    fn wait_started(&self) -> anyhow::Result<()> {
        let started = enclave_netns::wait_until(Duration::from_secs(5), || {
            self.sent.load(Ordering::Relaxed) >= 5_000 || self.failed.load(Ordering::Relaxed)
        });
        ensure!(
            started && !self.failed.load(Ordering::Relaxed),
            "the flood did not start"
        );
        Ok(())
    }
}

struct FloodReport {
    sent: u64,
    cookie_replies: u64,
    elapsed: Duration,
}

/// Floods `target` until told to stop or FLOOD_LIMIT passes. Runs inside the flooder's namespace.
fn run_flooder(
    flood: &Flood,
    phase: Phase,
    responder: &[u8; 32],
    target: SocketAddr,
) -> anyhow::Result<FloodReport> {
    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).context("flooder socket")?;
    socket.set_nonblocking(true)?;
    let mut flooder = Flooder::new(
        responder,
        0x5eed_f100_d5ee_d000 ^ u64::from(phase == Phase::Mac2),
    );
    let mut pool: Vec<[u8; INITIATION_LEN]> = (0..POOL).map(|_| flooder.initiation()).collect();
    // Which of our messages a cookie reply answers: by the sender index it echoes.
    let mac1_by_sender: HashMap<[u8; 4], [u8; 16]> = pool
        .iter()
        .map(|msg| {
            let mut sender = [0u8; 4];
            sender.copy_from_slice(&msg[4..8]);
            (sender, mac1_of(msg))
        })
        .collect();
    let started = Instant::now();
    let deadline = started + FLOOD_LIMIT;
    let mut sent = 0u64;
    let mut cookie_replies = 0u64;
    let mut reply = [0u8; 128];
    while !flood.stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        for msg in &pool {
            // A full send buffer is the point of a flood: keep going.
            if socket.send_to(msg, target).is_ok() {
                sent += 1;
            }
        }
        flood.sent.store(sent, Ordering::Relaxed);
        while let Ok((n, _)) = socket.recv_from(&mut reply) {
            if n != 64 || reply[0] != 3 {
                continue;
            }
            cookie_replies += 1;
            if phase == Phase::Mac2 && !flooder.has_cookie() {
                let mut sender = [0u8; 4];
                sender.copy_from_slice(&reply[4..8]);
                if let Some(mac1) = mac1_by_sender.get(&sender) {
                    let opened = flooder
                        .open_cookie(mac1, &reply[..n])
                        .context("a cookie reply did not decrypt with our mac1")?;
                    flooder.use_cookie(opened);
                    pool = (0..POOL).map(|_| flooder.initiation()).collect();
                }
            }
        }
    }
    if phase == Phase::Mac2 {
        ensure!(
            flooder.has_cookie(),
            "the flooder never got a cookie to make mac2 valid"
        );
    }
    Ok(FloodReport {
        sent,
        cookie_replies,
        elapsed: started.elapsed(),
    })
}

fn decode_key(base64: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(base64.trim())
        .context("a public key that is not base64")?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("a public key that is not 32 bytes"))
}

/// How long until `ns` gets its first ping reply from `dst` (the handshake included): pings
/// once a second-fraction until one is answered or the budget is spent twice over.
fn first_reply(ns: &Netns, dst: Ipv4Addr) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let dst = dst.to_string();
    while started.elapsed() < HANDSHAKE_BUDGET * 2 {
        let out = ns.exec_output(&["ping", "-n", "-c", "1", "-W", "1", &dst])?;
        if out.status.success() {
            return Ok(started.elapsed());
        }
    }
    bail!(
        "{} got no ping reply from {dst} within {:?}",
        ns.node(),
        HANDSHAKE_BUDGET * 2
    )
}

/// iperf3 TCP from `ns` to `dst` for IPERF_SECONDS: Mbit/s received. Tried up to three times
/// when the server was not ready (it serves one client at a time).
fn iperf(ns: &Netns, dst: &str) -> anyhow::Result<f64> {
    let mut last = None;
    for _ in 0..3 {
        match ns.exec(&["iperf3", "-c", dst, "-t", IPERF_SECONDS, "-J"]) {
            Ok(out) if !out.contains("\"error\"") => {
                let json: serde_json::Value =
                    serde_json::from_str(&out).context("iperf3 printed no JSON")?;
                return json["end"]["sum_received"]["bits_per_second"]
                    .as_f64()
                    .map(|bps| bps / 1e6)
                    .with_context(|| format!("no throughput in iperf3's answer: {out}"));
            }
            Ok(out) => last = Some(anyhow::anyhow!("iperf3 failed: {out}")),
            Err(e) => last = Some(e.into()),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("iperf3 did not run")))
}
