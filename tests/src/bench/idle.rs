//! `cargo xtask bench agent-idle`: the CPU an idle agent uses, with 100 peers in its view.
//!
//! One system, `host`, in the reference topology's gateway namespace, is granted to 100 peers
//! by a direct access policy and serves its LAN to them through a gateway access policy. Its
//! agent runs as `enclave-agent` (a receiver with 100 peers) and then as `enclave-gw` (a
//! gateway with 100 senders, discovering its interfaces). Each is left alone for
//! [`SETTLE`], then its CPU time (utime + stime of the whole process, every thread, from
//! `/proc/PID/stat`) is read over [`WINDOW`] and printed as a share of one core, with each
//! thread's share and wake-ups a second (its voluntary context switches) beside it: the
//! agent's own thread, the data plane's packet thread, the UAPI server, the file watcher.
//! The goal, [`GOAL_PERCENT`], is for the whole process; a run over it fails after its table.
//!
//! The peers are systems of the definition (keys, addresses, endpoints in the sender's
//! namespace) answered by real WireGuard responders: one `enclave_wg::Device` per peer, each on
//! its own UDP port in the sender's namespace, in threads of this process (whose CPU is not
//! counted). They answer the agent's handshakes and keepalives as a live peer does, so the
//! agent's tunnels are up and idle, with the network's persistent keepalive (25 s) running, as
//! on a real network. A peer that never answers is not idle: the data plane retries its
//! handshake every 5 s, which is what an earlier version of this bench measured. 100 more
//! agents on a 2-core machine would measure themselves.
//!
//! `ENCLAVE_BENCH_BASELINE=DIR` measures the binaries in DIR too (`enclave-agent` and
//! `enclave-gw` built from another commit), in the same run, for a before/after table;
//! `ENCLAVE_BENCH_BUILD=DIR` measures the binaries in DIR instead of the runner's own (say,
//! release binaries measured by a debug runner).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use blake2::{Blake2s256, Digest};
use enclave_netns::Netns;

use crate::agents::{prepare, start, write_definition, AgentFiles};
use crate::support::{
    reference_without_forwarding, GATEWAY_UNDERLAY, LAN_SUBNET, OVERLAY, SENDER_UNDERLAY,
};
use crate::{Bench, Ctx};

pub(crate) const BENCH: Bench = Bench {
    name: "agent-idle",
    about: "CPU share of one core used by an idle agent and an idle gateway with 100 peers",
    run: idle,
};

/// Peers in the view.
const PEERS: usize = 100;
/// How long the agent is left alone before the measurement.
const SETTLE: Duration = Duration::from_secs(5);
/// How long the measurement lasts.
const WINDOW: Duration = Duration::from_secs(30);
/// The goal: a tenth of a percent of one core.
const GOAL_PERCENT: f64 = 0.1;

/// Peer `i`'s private key, derived from its number (the bench's own throwaway keys): its
/// responder holds it, so the agent's handshakes with it complete.
fn peer_private(i: usize) -> enclave_wg::PrivateKey {
    let digest: [u8; 32] = Blake2s256::digest(format!("enclave agent-idle peer {i}")).into();
    enclave_wg::PrivateKey::from_bytes(digest)
}

/// Peer `i`'s public key, base64, as the definition names it.
fn peer_key(i: usize) -> String {
    peer_private(i).public_key().to_base64()
}

/// The first UDP port of the peers' responders (peer `i` listens on `PEER_PORT_BASE + i`).
const PEER_PORT_BASE: u16 = 52000;

/// The peers' WireGuard responders, running in the sender's namespace until dropped.
struct Responders {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Responders {
    /// Starts a responder for each peer in `ns`, each knowing the host (public key
    /// `host_key`) at `host_endpoint` with the host's virtual address as its allowed IP.
    fn start(
        ns: &Netns,
        host_key: &str,
        host_endpoint: std::net::SocketAddr,
    ) -> anyhow::Result<Self> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let host = enclave_wg::PublicKey::from_base64(host_key)?;
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for i in 1..=PEERS {
            let stop = std::sync::Arc::clone(&stop);
            let port = PEER_PORT_BASE + u16::try_from(i)?;
            let bind = move || -> anyhow::Result<_> {
                Ok(std::net::UdpSocket::bind((SENDER_UNDERLAY, port))?)
            };
            let respond = move |socket: std::net::UdpSocket| {
                let mut device = enclave_wg::Device::new(
                    peer_private(i),
                    rand_core::UnwrapErr(getrandom::SysRng),
                );
                device.upsert_peer(enclave_wg::PeerConfig {
                    public_key: host,
                    preshared_key: None,
                    endpoint: Some(host_endpoint),
                    allowed_ips: vec!["100.64.0.1/32".parse().expect("a prefix")],
                    persistent_keepalive: None,
                });
                let mut buf = vec![0u8; 2048];
                let mut out = vec![0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    let wait = device
                        .poll_timeout()
                        .map_or(Duration::from_millis(200), |t| {
                            t.saturating_duration_since(now)
                        })
                        .clamp(Duration::from_millis(1), Duration::from_millis(200));
                    let _ = socket.set_read_timeout(Some(wait));
                    if let Ok((len, from)) = socket.recv_from(&mut buf) {
                        let _ = device.decapsulate(
                            from,
                            &buf[..len],
                            Instant::now(),
                            std::time::SystemTime::now(),
                            &mut out,
                        );
                    }
                    let now = Instant::now();
                    if device.poll_timeout().is_some_and(|t| t <= now) {
                        device.handle_timeout(now, std::time::SystemTime::now());
                    }
                    while let Some(transmit) = device.poll_transmit() {
                        let _ = socket.send_to(&transmit.payload, transmit.dst);
                    }
                    while device.poll_event().is_some() {}
                }
            };
            let thread = ns
                .start_thread(bind, respond)
                .with_context(|| format!("the responder of peer {i} cannot listen on {port}"))?;
            threads.push(thread);
        }
        Ok(Self { stop, threads })
    }
}

impl Drop for Responders {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// The head of a network definition with one system, `host` (tag `servers`, overlay address
/// 100.64.0.1, reachable at `endpoint`), that serves its LAN to the `users` by a gateway
/// policy and takes ICMP and SSH from them by a direct policy. The users follow.
pub(super) fn gateway_definition(host_key: &str, endpoint: &str) -> String {
    format!(
        r#"[network]
overlay = "{OVERLAY}"

[[system]]
name = "host"
public_key = "{host_key}"
address = "100.64.0.1"
tags = ["servers"]
endpoint = "{endpoint}"

[system.gateway]
allowed = true
subnets = ["{LAN_SUBNET}"]

[[direct_policy]]
name = "users to servers"
senders = ["users"]
receivers = ["servers"]
acl = [{{ protocol = "icmp" }}, {{ protocol = "tcp", ports = 22, label = "SSH" }}]

[[gateway_policy]]
name = "users to the office"
senders = ["users"]
gateways = ["host"]
subnets = ["{LAN_SUBNET}"]
acl = [{{ protocol = "any" }}]
"#
    )
}

fn definition(host: &AgentFiles) -> String {
    let mut text = gateway_definition(&host.public_key, &format!("{GATEWAY_UNDERLAY}:51820"));
    for i in 1..=PEERS {
        text.push_str(&format!(
            "\n[[system]]\nname = \"peer-{i}\"\npublic_key = \"{}\"\naddress = \"100.64.1.{i}\"\ntags = [\"users\"]\nendpoint = \"{SENDER_UNDERLAY}:{}\"\n",
            peer_key(i),
            usize::from(PEER_PORT_BASE) + i
        ));
    }
    text
}

/// Clock ticks a second (`sysconf(_SC_CLK_TCK)`), the unit of utime and stime.
pub(super) fn ticks_per_second() -> anyhow::Result<f64> {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?
        .context("the system does not say its clock tick")?;
    Ok(ticks as f64)
}

/// utime + stime of process `pid`, in clock ticks.
pub(super) fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    cpu_ticks_of(&format!("/proc/{pid}/stat"))
}

/// utime + stime in a `stat` file of procfs (a process's or a thread's), in clock ticks.
fn cpu_ticks_of(path: &str) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    // The command name is in parentheses and may hold spaces: count fields after its end.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("no command name in /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5) are utime and stime; `rest` starts at field 3.
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

/// What one thread (or the threads of one name) used: CPU time in clock ticks, and how often
/// it went to sleep (`voluntary_ctxt_switches`: each is a wake-up when it sleeps again).
#[derive(Debug, Clone, Copy, Default)]
struct Use {
    ticks: u64,
    sleeps: u64,
}

/// The voluntary context switches in a `status` file of procfs.
fn sleeps_of(path: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .context("no voluntary_ctxt_switches")?
        .trim()
        .parse()
        .context("voluntary_ctxt_switches is not a number")
}

/// Each thread's share of a core and wake-ups a second, by thread name.
type ByThread = BTreeMap<String, (f64, f64)>;

/// What each thread of process `pid` used, by thread name (threads of one name added up).
fn thread_ticks(pid: u32) -> anyhow::Result<BTreeMap<String, Use>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let task = entry?.file_name();
        let Some(tid) = task.to_str().and_then(|t| t.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(name) = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")) else {
            continue;
        };
        let Ok(ticks) = cpu_ticks_of(&format!("/proc/{pid}/task/{tid}/stat")) else {
            continue;
        };
        let Ok(sleeps) = sleeps_of(&format!("/proc/{pid}/task/{tid}/status")) else {
            continue;
        };
        let entry: &mut Use = out.entry(name.trim().to_owned()).or_default();
        entry.ticks += ticks;
        entry.sleeps += sleeps;
    }
    Ok(out)
}

/// One measurement: the agent of `files` from `ctx`'s binaries, as a gateway or not. Returns
/// the process's share of a core and each thread's (by name).
fn measure(
    ctx: &Ctx,
    ns: &Netns,
    files: &AgentFiles,
    gateway: bool,
) -> anyhow::Result<(f64, ByThread)> {
    let mut agent = start(ctx, ns, files, gateway)?;
    std::thread::sleep(SETTLE);
    anyhow::ensure!(
        agent.is_running(),
        "the agent stopped while settling:\n{}",
        agent.log()
    );
    let pid = agent.pid();
    let before = cpu_ticks(pid)?;
    let threads_before = thread_ticks(pid)?;
    let started = Instant::now();
    std::thread::sleep(WINDOW);
    let after = cpu_ticks(pid)?;
    let threads_after = thread_ticks(pid)?;
    let elapsed = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        agent.is_running(),
        "the agent stopped while measured:\n{}",
        agent.log()
    );
    let agent_bin = ctx.bin("enclave-agent")?;
    let json = ns.exec(&[
        agent_bin.to_string_lossy().as_ref(),
        "status",
        "-c",
        files.config.to_string_lossy().as_ref(),
        "--json",
    ])?;
    let status: serde_json::Value = serde_json::from_str(&json)?;
    let peers = status["peers"].as_array().map_or(0, Vec::len);
    anyhow::ensure!(
        peers == PEERS,
        "the agent shows {peers} peers, not {PEERS}:\n{json}"
    );
    // Idle means connected and quiet: every tunnel must be up (its peer answered).
    let up = status["peers"].as_array().map_or(0, |peers| {
        peers.iter().filter(|p| p["state"] == "Up").count()
    });
    anyhow::ensure!(
        up == PEERS,
        "only {up} of {PEERS} tunnels are up: the measurement would include handshake retries"
    );
    agent.stop();
    let tick = ticks_per_second()?;
    let share = |ticks: u64| ticks as f64 / tick / elapsed * 100.0;
    let threads = threads_after
        .iter()
        .map(|(name, after)| {
            let before = threads_before.get(name).copied().unwrap_or_default();
            let spent = after.ticks.saturating_sub(before.ticks);
            let wakeups = after.sleeps.saturating_sub(before.sleeps) as f64 / elapsed;
            (name.clone(), (share(spent), wakeups))
        })
        .collect();
    Ok((share(after - before), threads))
}

fn idle(ctx: &Ctx) -> anyhow::Result<()> {
    let topo = ctx.topology(&reference_without_forwarding("idle"))?;
    let ns = topo.ns("gw");
    let network = ctx.log_dir().join("network.toml");
    let files = prepare(ctx, ns, &network, "")?;
    write_definition(&network, &definition(&files))?;
    let _responders = Responders::start(
        topo.ns("sender"),
        &files.public_key,
        format!("{GATEWAY_UNDERLAY}:51820").parse()?,
    )?;

    let ours = match std::env::var_os("ENCLAVE_BENCH_BUILD") {
        Some(dir) => dir.into(),
        None => ctx
            .bin("enclave-agent")?
            .parent()
            .context("the binaries' directory")?
            .to_owned(),
    };
    let mut builds = vec![(format!("this build ({})", ours.display()), ours)];
    if let Ok(dir) = std::env::var("ENCLAVE_BENCH_BASELINE") {
        builds.push((format!("baseline ({dir})"), dir.into()));
    }
    let mut rows = Vec::new();
    for (n, (label, bin_dir)) in builds.iter().enumerate() {
        let build = Ctx::new(
            ctx.name(),
            ctx.log_dir().join(format!("build{n}")),
            bin_dir.clone(),
        );
        std::fs::create_dir_all(build.log_dir())?;
        for gateway in [false, true] {
            let role = crate::agents::program(gateway);
            let (percent, threads) = measure(&build, ns, &files, gateway)
                .with_context(|| format!("{role} of {label}"))?;
            println!("{role:<14} {label}: {percent:.3} % of one core");
            for (thread, (share, wakeups)) in &threads {
                println!("    thread {thread:<16} {share:>7.3} % {wakeups:>8.1} wake-ups/s");
            }
            rows.push((role, label.clone(), percent));
        }
    }
    println!();
    println!(
        "idle CPU with {PEERS} peers, {} s after {} s of settling (utime + stime, all threads)",
        WINDOW.as_secs(),
        SETTLE.as_secs()
    );
    println!("{:<14} {:<44} {:>12}", "binary", "build", "% of a core");
    for (role, label, percent) in &rows {
        println!("{role:<14} {label:<44} {percent:>12.3}");
    }
    println!();
    println!("goal: at most {GOAL_PERCENT} % of one core for this build");
    let over: Vec<String> = rows
        .iter()
        .filter(|(_, label, percent)| label.starts_with("this build") && *percent > GOAL_PERCENT)
        .map(|(role, _, percent)| format!("{role} {percent:.3} %"))
        .collect();
    anyhow::ensure!(over.is_empty(), "over the goal: {}", over.join(", "));
    Ok(())
}
