//! The userspace data plane (`enclave-agent tunnel`) against wireguard-go and against itself:
//! handshakes both ways, pings both ways, bulk transfers with a hash check, roaming, `wg show`
//! on our UAPI, malformed UAPI requests, and garbage UDP.

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use enclave_netns::{Netns, Process, SpawnOpts, TopologySpec};

use crate::support::{self, configure_pair, start_wireguard_go, TunnelEnd, WG_PORT};
use crate::{Ctx, Scenario};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "dataplane-ours-initiates-to-wireguard-go",
            about: "our tunnel starts the handshake with wireguard-go: pings both ways, transfers both ways, wg show",
            run: ours_initiates,
        },
        Scenario {
            name: "dataplane-wireguard-go-initiates-to-ours",
            about: "wireguard-go starts the handshake with our tunnel, then roams to a new address mid-transfer",
            run: wireguard_go_initiates,
        },
        Scenario {
            name: "dataplane-ours-to-ours",
            about: "two of our tunnels: handshake, pings both ways, transfers both ways",
            run: ours_to_ours,
        },
        Scenario {
            name: "dataplane-uapi-malformed",
            about: "malformed UAPI requests get a non-zero errno and change nothing",
            run: uapi_malformed,
        },
        Scenario {
            name: "dataplane-lifecycle",
            about: "our tunnel ends cleanly when its interface or its UAPI socket file is deleted",
            run: lifecycle,
        },
        Scenario {
            name: "dataplane-garbage-udp",
            about: "garbage UDP to our port gets no reply, no crash, and the tunnel keeps working",
            run: garbage_udp,
        },
    ]
}

/// Underlay addresses of the two nodes.
pub(super) const A_UNDERLAY: &str = "10.20.0.1";
pub(super) const B_UNDERLAY: &str = "10.20.0.2";
/// The address node `a` moves to in the roaming test.
const A_ROAMED: &str = "10.20.0.11";
/// Overlay addresses.
pub(super) const A_OVERLAY: Ipv4Addr = Ipv4Addr::new(100, 70, 0, 1);
pub(super) const B_OVERLAY: Ipv4Addr = Ipv4Addr::new(100, 70, 0, 2);
/// Megabytes of each bulk transfer by default, as the issue asks (the data path is optimised
/// even in debug builds, see the root Cargo.toml); `ENCLAVE_TRANSFER_MB` overrides it.
const DEFAULT_TRANSFER_MB: usize = 100;
pub(super) const IFACE: &str = "wg0";

/// Bytes of each bulk transfer.
pub(super) fn transfer_bytes() -> usize {
    std::env::var("ENCLAVE_TRANSFER_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_TRANSFER_MB)
        << 20
}

/// Two nodes on one veth pair. Secondary addresses get promoted so that the roaming test can
/// move a node to a new address by deleting its old one.
pub(super) fn pair(tag: &str) -> TopologySpec {
    let mut spec = TopologySpec::new(tag);
    spec.node("a")
        .node("b")
        .link(("a", "eth0"), ("b", "eth0"))
        .addr("a", "eth0", &format!("{A_UNDERLAY}/24"))
        .addr("b", "eth0", &format!("{B_UNDERLAY}/24"))
        .sysctl("a", "net.ipv4.conf.all.promote_secondaries", "1")
        .sysctl("b", "net.ipv4.conf.all.promote_secondaries", "1");
    spec
}

/// Which implementation runs on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Impl {
    Ours,
    WireguardGo,
}

/// Starts `enclave-agent tunnel wg0` in `ns` and waits until `wg show` answers on it.
pub(super) fn start_ours(ctx: &Ctx, ns: &Netns) -> anyhow::Result<Process> {
    let agent = ctx.bin("enclave-agent")?;
    let process = ns.spawn(
        &format!("enclave-tunnel-{}", ns.node()),
        &[agent.to_string_lossy().as_ref(), "tunnel", IFACE],
        SpawnOpts::default().env("RUST_LOG", "debug"),
    )?;
    support::await_uapi(ns, process, IFACE, "enclave-agent tunnel")
}

fn start(ctx: &Ctx, ns: &Netns, which: Impl) -> anyhow::Result<Process> {
    match which {
        Impl::Ours => start_ours(ctx, ns),
        Impl::WireguardGo => start_wireguard_go(ns, IFACE),
    }
}

/// Two configured tunnels: `a` knows `b`'s endpoint (so `a` initiates), `b` does not.
struct Pair {
    topo: enclave_netns::Topology,
    a_process: Process,
    b_process: Process,
}

fn set_up(ctx: &Ctx, tag: &str, a: Impl, b: Impl) -> anyhow::Result<Pair> {
    let topo = ctx.topology(&pair(tag))?;
    let (na, nb) = (topo.ns("a"), topo.ns("b"));
    let a_process = start(ctx, na, a)?;
    let b_process = start(ctx, nb, b)?;
    configure_pair(
        ctx.log_dir(),
        IFACE,
        &TunnelEnd {
            ns: na,
            name: "a",
            address: format!("{A_OVERLAY}/24"),
            allowed_ips: format!("{A_OVERLAY}/32"),
            endpoint: None,
        },
        &TunnelEnd {
            ns: nb,
            name: "b",
            address: format!("{B_OVERLAY}/24"),
            allowed_ips: format!("{B_OVERLAY}/32"),
            endpoint: Some(format!("{B_UNDERLAY}:{WG_PORT}")),
        },
    )?;
    Ok(Pair {
        topo,
        a_process,
        b_process,
    })
}

impl Pair {
    fn a(&self) -> &Netns {
        self.topo.ns("a")
    }

    fn b(&self) -> &Netns {
        self.topo.ns("b")
    }

    /// Fails with both logs if either process died.
    fn check_alive(&mut self) -> anyhow::Result<()> {
        for (name, process) in [("a", &mut self.a_process), ("b", &mut self.b_process)] {
            if !process.is_running() {
                bail!("the tunnel on {name} exited; log:\n{}", process.log());
            }
        }
        Ok(())
    }
}

/// Pings `dst` from `ns`: the first reply may wait for the handshake, then all must come.
pub(super) fn ping_through(ns: &Netns, dst: Ipv4Addr) -> anyhow::Result<()> {
    let dst = dst.to_string();
    let first = enclave_netns::try_wait_until(Duration::from_secs(10), || ns.ping_once(&dst))?;
    ensure!(first, "{} never got a reply from {dst}", ns.node());
    let after = ns.ping(&dst, 5)?;
    ensure!(
        after.all_answered(),
        "pings from {} to {dst} were lost after the handshake:\n{}",
        ns.node(),
        after.output
    );
    Ok(())
}

/// A deterministic stream of bytes (xorshift64), so that both ends can hash what they saw.
struct Pattern(u64);

impl Pattern {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let bytes = self.0.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// Sends `transfer_bytes()` over TCP through the tunnel from `from` to `to` (listening on
/// `to_addr`) and checks that the receiver's hash equals the sender's. `during` runs on the
/// calling thread while the transfer is under way. Returns the throughput in Mbit/s.
pub(super) fn transfer(
    from: &Netns,
    to: &Netns,
    to_addr: Ipv4Addr,
    port: u16,
    during: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::scope(|scope| -> anyhow::Result<f64> {
        let receiver = scope.spawn(move || {
            to.run_in(move || -> anyhow::Result<(u64, usize)> {
                let listener = TcpListener::bind((to_addr, port)).context("cannot listen")?;
                listener.set_nonblocking(true)?;
                let _ = ready_tx.send(());
                let deadline = Instant::now() + Duration::from_secs(20);
                let mut stream = loop {
                    match listener.accept() {
                        Ok((stream, _)) => break stream,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            ensure!(Instant::now() < deadline, "no connection came");
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        Err(e) => return Err(e.into()),
                    }
                };
                stream.set_nonblocking(false)?;
                stream.set_read_timeout(Some(Duration::from_secs(60)))?;
                let mut hasher = DefaultHasher::new();
                let mut total = 0;
                let mut buf = vec![0u8; 1 << 16];
                loop {
                    let n = stream.read(&mut buf).context("the transfer stalled")?;
                    if n == 0 {
                        break;
                    }
                    hasher.write(&buf[..n]);
                    total += n;
                }
                Ok((hasher.finish(), total))
            })?
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .context("the receiver did not start listening")?;
        let sender = scope.spawn(move || {
            from.run_in(move || -> anyhow::Result<(u64, usize)> {
                let dst = SocketAddr::from((to_addr, port));
                let mut stream = TcpStream::connect_timeout(&dst, Duration::from_secs(10))
                    .with_context(|| format!("cannot connect to {dst} through the tunnel"))?;
                stream.set_write_timeout(Some(Duration::from_secs(60)))?;
                let mut pattern = Pattern(0x9e37_79b9_7f4a_7c15 ^ u64::from(port));
                let mut hasher = DefaultHasher::new();
                let mut buf = vec![0u8; 1 << 16];
                let mut sent = 0;
                let total = transfer_bytes();
                while sent < total {
                    let n = buf.len().min(total - sent);
                    pattern.fill(&mut buf[..n]);
                    stream
                        .write_all(&buf[..n])
                        .context("the transfer stalled")?;
                    hasher.write(&buf[..n]);
                    sent += n;
                }
                stream.shutdown(std::net::Shutdown::Write)?;
                Ok((hasher.finish(), sent))
            })?
        });
        let during_result = during();
        let sent = sender
            .join()
            .map_err(|_| anyhow::anyhow!("the sender panicked"))?
            .context("sending")?;
        let received = receiver
            .join()
            .map_err(|_| anyhow::anyhow!("the receiver panicked"))?
            .context("receiving")?;
        during_result?;
        ensure!(
            sent.1 == received.1,
            "sent {} bytes but {} arrived",
            sent.1,
            received.1
        );
        ensure!(
            sent.0 == received.0,
            "the received bytes differ from the sent ones"
        );
        let secs = started.elapsed().as_secs_f64();
        Ok(sent.1 as f64 * 8.0 / secs / 1e6)
    })
}

/// The `wg show IFACE DUMP-FIELD` value for the only peer.
fn wg_show_field(ns: &Netns, field: &str) -> anyhow::Result<Vec<String>> {
    let out = ns.exec(&["wg", "show", IFACE, field])?;
    let line = out.lines().next().context("wg show printed no peer")?;
    Ok(line.split_whitespace().skip(1).map(str::to_owned).collect())
}

/// `wg show` on our side reports a handshake and at least `bytes` received and sent.
fn check_wg_show(ns: &Netns, bytes: u64) -> anyhow::Result<()> {
    let handshake: u64 = wg_show_field(ns, "latest-handshakes")?
        .first()
        .and_then(|s| s.parse().ok())
        .context("no handshake time")?;
    ensure!(
        handshake > 0,
        "wg show reports no handshake on {}",
        ns.node()
    );
    let transfer = wg_show_field(ns, "transfer")?;
    let rx: u64 = transfer
        .first()
        .and_then(|s| s.parse().ok())
        .context("no rx")?;
    let tx: u64 = transfer
        .get(1)
        .and_then(|s| s.parse().ok())
        .context("no tx")?;
    ensure!(
        rx >= bytes && tx >= bytes,
        "wg show on {} reports rx {rx} and tx {tx}, expected at least {bytes} each",
        ns.node()
    );
    let human = ns.exec(&["wg", "show", IFACE])?;
    ensure!(
        human.contains("latest handshake:") && human.contains("transfer:"),
        "wg show lacks the handshake or transfer lines:\n{human}"
    );
    Ok(())
}

fn both_ways(p: &mut Pair, tag: &str) -> anyhow::Result<()> {
    ping_through(p.a(), B_OVERLAY)?;
    ping_through(p.b(), A_OVERLAY)?;
    let ab = transfer(p.a(), p.b(), B_OVERLAY, 5001, || Ok(()))?;
    let ba = transfer(p.b(), p.a(), A_OVERLAY, 5002, || Ok(()))?;
    let bytes = transfer_bytes();
    println!("    {tag}: {bytes} bytes a->b at {ab:.0} Mbit/s, b->a at {ba:.0} Mbit/s");
    p.check_alive()
}

fn ours_initiates(ctx: &Ctx) -> anyhow::Result<()> {
    let mut p = set_up(ctx, "dpoi", Impl::Ours, Impl::WireguardGo)?;
    both_ways(&mut p, "ours->wireguard-go")?;
    check_wg_show(p.a(), transfer_bytes() as u64)
}

fn wireguard_go_initiates(ctx: &Ctx) -> anyhow::Result<()> {
    let mut p = set_up(ctx, "dpwi", Impl::WireguardGo, Impl::Ours)?;
    both_ways(&mut p, "wireguard-go->ours")?;
    check_wg_show(p.b(), transfer_bytes() as u64)?;
    let endpoint = wg_show_field(p.b(), "endpoints")?;
    ensure!(
        endpoint.first().map(String::as_str) == Some(&format!("{A_UNDERLAY}:{WG_PORT}")),
        "our side learnt endpoint {endpoint:?}"
    );
    // Roaming: wireguard-go's node moves to a new address while it sends to us. wireguard-go
    // keeps sending from the source address it last used until that fails for 15 s; setting
    // the endpoint again drops that cached source at once, as a roaming client does when its
    // network changes. Our side must follow the new address from authenticated packets.
    let a = p.a();
    let b_public = a.exec(&["wg", "show", IFACE, "peers"])?.trim().to_owned();
    transfer(a, p.b(), B_OVERLAY, 5003, || {
        std::thread::sleep(Duration::from_millis(300));
        a.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{A_ROAMED}/24"),
            "dev",
            "eth0",
        ])?;
        a.exec(&[
            "ip",
            "addr",
            "del",
            &format!("{A_UNDERLAY}/24"),
            "dev",
            "eth0",
        ])?;
        let endpoint = format!("{B_UNDERLAY}:{WG_PORT}");
        a.exec(&["wg", "set", IFACE, "peer", &b_public, "endpoint", &endpoint])?;
        Ok(())
    })
    .context("the transfer across the roam failed")?;
    let endpoint = wg_show_field(p.b(), "endpoints")?;
    ensure!(
        endpoint.first().map(String::as_str) == Some(&format!("{A_ROAMED}:{WG_PORT}")),
        "after roaming our side still sends to {endpoint:?}"
    );
    // Our side must answer at the new address too.
    ping_through(p.b(), A_OVERLAY)?;
    p.check_alive()
}

fn ours_to_ours(ctx: &Ctx) -> anyhow::Result<()> {
    let mut p = set_up(ctx, "dpoo", Impl::Ours, Impl::Ours)?;
    both_ways(&mut p, "ours->ours")?;
    check_wg_show(p.a(), transfer_bytes() as u64)?;
    check_wg_show(p.b(), transfer_bytes() as u64)
}

/// Sends one request on a fresh connection to the UAPI socket and returns the answer.
fn uapi_request(socket: &Path, request: &str) -> anyhow::Result<String> {
    let mut stream = UnixStream::connect(socket)
        .with_context(|| format!("cannot connect to {}", socket.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(request.as_bytes())?;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // The answer ends with a blank line.
    while !answer.ends_with(b"\n\n") {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

fn uapi_malformed(ctx: &Ctx) -> anyhow::Result<()> {
    let mut p = set_up(ctx, "dpum", Impl::Ours, Impl::WireguardGo)?;
    ping_through(p.a(), B_OVERLAY)?;
    let socket = p.a().wireguard_dir().join(format!("{IFACE}.sock"));
    let showconf = || p.a().exec(&["wg", "showconf", IFACE]);
    let before = showconf()?;
    // The peer's key as the UAPI writes it (hex), from our own get=1.
    let got = uapi_request(&socket, "get=1\n\n")?;
    let peer_hex = got
        .lines()
        .find_map(|l| l.strip_prefix("public_key="))
        .with_context(|| format!("get=1 lists no peer: {got:?}"))?
        .to_owned();
    let malformed = [
        "set=1\nlisten_port=notaport\n\n".to_owned(),
        "set=1\nlisten_port=70000\n\n".to_owned(),
        "set=1\nno_equals_sign\n\n".to_owned(),
        "set=1\nunknown_key=1\n\n".to_owned(),
        "set=1\nallowed_ip=10.0.0.0/8\n\n".to_owned(),
        "set=1\nprivate_key=00ff\n\n".to_owned(),
        "set=1\npublic_key=zz\n\n".to_owned(),
        format!("set=1\nreplace_peers=true\npublic_key={peer_hex}\nallowed_ip=1.2.3.4/40\n\n"),
        format!("set=1\nreplace_peers=true\npublic_key={peer_hex}\nremove=maybe\n\n"),
        format!("set=1\npublic_key={peer_hex}\nreplace_allowed_ips=true\nendpoint=nowhere:x\n\n"),
        format!("set=1\npublic_key={peer_hex}\npersistent_keepalive_interval=-5\n\n"),
        format!("set=1\npublic_key={peer_hex}\nprotocol_version=2\n\n"),
        "get=1\nextra\n\n".to_owned(),
    ];
    for request in &malformed {
        let answer = uapi_request(&socket, request)?;
        let errno = answer
            .lines()
            .find_map(|l| l.strip_prefix("errno="))
            .with_context(|| format!("no errno in the answer to {request:?}: {answer:?}"))?;
        ensure!(
            errno != "0",
            "the malformed request {request:?} was accepted ({answer:?})"
        );
        ensure!(
            showconf()? == before,
            "the malformed request {request:?} changed the configuration"
        );
    }
    // An unknown operation closes the connection without an answer, as wireguard-go does.
    let answer = uapi_request(&socket, "delete=1\n\n")?;
    ensure!(answer.is_empty(), "an unknown operation got {answer:?}");
    // The tunnel still works and a well-formed set still applies.
    p.check_alive()?;
    ping_through(p.a(), B_OVERLAY)?;
    let answer = uapi_request(
        &socket,
        &format!("set=1\npublic_key={peer_hex}\npersistent_keepalive_interval=7\n\n"),
    )?;
    ensure!(answer == "errno=0\n\n", "a valid set got {answer:?}");
    let keepalive = wg_show_field(p.a(), "persistent-keepalive")?;
    ensure!(
        keepalive.first().map(String::as_str) == Some("7"),
        "the valid set did not apply: {keepalive:?}"
    );
    Ok(())
}

fn garbage_udp(ctx: &Ctx) -> anyhow::Result<()> {
    let mut p = set_up(ctx, "dpgu", Impl::WireguardGo, Impl::Ours)?;
    ping_through(p.a(), B_OVERLAY)?;
    // Datagrams of every WireGuard type and length class, filled with junk.
    let mut pattern = Pattern(7);
    let mut datagrams: Vec<Vec<u8>> = Vec::new();
    for len in [0usize, 1, 3, 4, 31, 32, 33, 64, 92, 148, 149, 1500, 2000] {
        for kind in [0u8, 1, 2, 3, 4, 5, 0xff] {
            let mut d = vec![0u8; len];
            pattern.fill(&mut d);
            if let Some(first) = d.first_mut() {
                *first = kind;
            }
            if len >= 4 {
                d[1..4].fill(0);
            }
            datagrams.push(d);
        }
    }
    let target: SocketAddr = format!("{B_UNDERLAY}:{WG_PORT}").parse()?;
    let replies = p.a().run_in(|| -> anyhow::Result<usize> {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        for d in &datagrams {
            socket.send_to(d, target)?;
        }
        socket.set_read_timeout(Some(Duration::from_millis(1500)))?;
        let mut buf = [0u8; 2048];
        let mut replies = 0;
        while socket.recv_from(&mut buf).is_ok() {
            replies += 1;
        }
        Ok(replies)
    })??;
    ensure!(
        replies == 0,
        "our tunnel answered {replies} garbage datagrams"
    );
    p.check_alive()?;
    ping_through(p.a(), B_OVERLAY)?;
    ping_through(p.b(), A_OVERLAY)?;
    Ok(())
}

/// Waits until `process` has exited and neither the interface nor the socket file is left.
fn check_gone(ns: &Netns, process: &mut Process, what: &str) -> anyhow::Result<()> {
    let socket = ns.wireguard_dir().join(format!("{IFACE}.sock"));
    let gone = enclave_netns::try_wait_until(Duration::from_secs(5), || {
        Ok(!process.is_running() && !socket.exists() && !ns.has_link(IFACE)?)
    })?;
    ensure!(
        gone,
        "after {what} the tunnel is still there (running: {}, socket: {}); log:\n{}",
        process.is_running(),
        socket.exists(),
        process.log()
    );
    Ok(())
}

fn lifecycle(ctx: &Ctx) -> anyhow::Result<()> {
    let topo = ctx.topology(&pair("dplc"))?;
    let a = topo.ns("a");
    let mut first = start_ours(ctx, a)?;
    a.exec(&["ip", "link", "del", IFACE])?;
    check_gone(a, &mut first, "deleting the interface")?;
    let mut second = start_ours(ctx, a)?;
    std::fs::remove_file(a.wireguard_dir().join(format!("{IFACE}.sock")))?;
    check_gone(a, &mut second, "deleting the UAPI socket file")?;
    Ok(())
}
