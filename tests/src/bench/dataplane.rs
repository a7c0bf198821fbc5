//! `cargo xtask bench dataplane`: our userspace tunnel against raw veth, wireguard-go (and
//! boringtun-cli when it is installed) in the reference topology, sender ↔ gateway ↔ LAN
//! host, in one run.
//!
//! For each implementation, in fresh namespaces, interleaved over several runs (run 1 of
//! every implementation, then run 2 of every one, …): iperf3 TCP with 1 and 4 streams to the
//! gateway's overlay address and through the gateway (forwarding and SNAT) to the LAN host,
//! UDP goodput at < 2 % loss, the ping round trip, the TCP retransmits of the 1-stream test
//! and the CPU it cost. "raw" is the same topology with no tunnel: the same tests to the
//! gateway's underlay address, and to the LAN host routed through the gateway.
//!
//! Printed: per metric the median over the runs with the spread (lowest–highest), and the
//! ratios ours/wireguard-go and ours/raw as the median of the per-run ratios (each ratio is
//! taken between measurements a few seconds apart, which cancels much of the noise other
//! work on the machine makes).
//!
//! `ENCLAVE_BENCH_BASELINE=DIR` adds "ours-baseline", our tunnel from the `enclave-agent` in
//! DIR (say, release binaries of the commit before a change), measured in the same runs, and
//! the ratio ours/baseline. `ENCLAVE_BENCH_IMPLS=raw,ours,...` measures only the named
//! implementations (names as printed). `ENCLAVE_BENCH_PERF=DIR` records, with `perf record -g`
//! on both tunnel processes, the 1-stream TCP test and the UDP search of each run into DIR
//! (`IMPL-runN-tcp1.data`, `IMPL-runN-udp.data`).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use enclave_netns::{Netns, Process, SpawnOpts};

use crate::support::{
    configure_reference_tunnel, reference_topology, snat_to_lan, start_wireguard_go,
    GATEWAY_OVERLAY, GATEWAY_UNDERLAY, LAN_HOST, LAN_SUBNET,
};
use crate::{Bench, Ctx};

pub(crate) const BENCH: Bench = Bench {
    name: "dataplane",
    about: "raw veth, ours, wireguard-go (boringtun-cli if installed): TCP, UDP, RTT, CPU/GB",
    run: bench_dataplane,
};

/// Runs per implementation (medians are taken over these); `ENCLAVE_BENCH_RUNS` changes it.
const RUNS: usize = 3;
/// Seconds per iperf3 measurement.
const SECONDS: &str = "4";
/// Pings per RTT measurement.
const PINGS: &str = "50";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Impl {
    Raw,
    Ours,
    /// Ours with the TUN and UDP offloads forced off (`ENCLAVE_OFFLOAD=off`).
    OursNoOffload,
    /// Ours with a thread per direction (`ENCLAVE_DATAPLANE_THREADS=2`).
    OursTwoThreads,
    /// Ours from the build in `ENCLAVE_BENCH_BASELINE`.
    OursBaseline,
    WireguardGo,
    Boringtun,
}

impl Impl {
    fn name(self) -> &'static str {
        match self {
            Impl::Raw => "raw",
            Impl::Ours => "ours",
            Impl::OursNoOffload => "ours-no-offload",
            Impl::OursTwoThreads => "ours-two-threads",
            Impl::OursBaseline => "ours-baseline",
            Impl::WireguardGo => "wireguard-go",
            Impl::Boringtun => "boringtun",
        }
    }
}

/// The figures, in table order (throughput: higher is better; the rest: lower is better).
const METRICS: [&str; 9] = [
    "TCP 1 stream, overlay (Mbit/s)",
    "TCP 4 streams, overlay (Mbit/s)",
    "TCP 1 stream, via gateway (Mbit/s)",
    "TCP 4 streams, via gateway (Mbit/s)",
    "UDP goodput at <2% loss (Mbit/s)",
    "ping RTT, overlay (ms)",
    "TCP retransmits, 1 stream overlay",
    "tunnel CPU s per GB, 1 stream",
    "machine CPU s per GB, 1 stream",
];

/// Offered UDP rates (Mbit/s), tried in order until the loss reaches 2 %.
const UDP_RATES: [u32; 12] = [
    50, 100, 200, 300, 400, 600, 800, 1000, 1400, 2000, 3000, 5000,
];

fn start(ctx: &Ctx, ns: &Netns, which: Impl) -> anyhow::Result<Process> {
    let agent = || -> anyhow::Result<Vec<String>> {
        Ok(vec![
            ctx.bin("enclave-agent")?.to_string_lossy().into_owned(),
            "tunnel".into(),
            "wg0".into(),
        ])
    };
    let (label, argv, env): (String, Vec<String>, Vec<(&str, &str)>) = match which {
        Impl::Raw => bail!("raw veth has no tunnel to start"),
        Impl::WireguardGo => return start_wireguard_go(ns, "wg0"),
        Impl::Ours => (
            format!("enclave-tunnel-{}", ns.node()),
            agent()?,
            vec![("RUST_LOG", "warn")],
        ),
        Impl::OursNoOffload => (
            format!("enclave-tunnel-{}", ns.node()),
            agent()?,
            vec![("RUST_LOG", "warn"), ("ENCLAVE_OFFLOAD", "off")],
        ),
        Impl::OursTwoThreads => (
            format!("enclave-tunnel-{}", ns.node()),
            agent()?,
            vec![("RUST_LOG", "warn"), ("ENCLAVE_DATAPLANE_THREADS", "2")],
        ),
        Impl::OursBaseline => {
            let dir = std::env::var_os("ENCLAVE_BENCH_BASELINE")
                .context("ENCLAVE_BENCH_BASELINE is not set")?;
            let bin = std::path::Path::new(&dir).join("enclave-agent");
            anyhow::ensure!(bin.is_file(), "{} is not built", bin.display());
            (
                format!("enclave-baseline-{}", ns.node()),
                vec![
                    bin.to_string_lossy().into_owned(),
                    "tunnel".into(),
                    "wg0".into(),
                ],
                vec![("RUST_LOG", "warn")],
            )
        }
        Impl::Boringtun => (
            format!("boringtun-{}", ns.node()),
            vec![
                "boringtun-cli".into(),
                "--foreground".into(),
                "--disable-drop-privileges".into(),
                "wg0".into(),
            ],
            vec![("WG_SUDO", "1")],
        ),
    };
    let mut opts = SpawnOpts::default();
    for (k, v) in env {
        opts = opts.env(k, v);
    }
    let mut process = ns.spawn(&label, &argv, opts)?;
    let socket = ns.wireguard_dir().join("wg0.sock");
    let up = enclave_netns::wait_until(Duration::from_secs(10), || {
        socket.exists() && ns.exec(&["wg", "show", "wg0"]).is_ok()
    });
    if !up {
        bail!(
            "{} did not come up in {} (running: {}); log:\n{}",
            which.name(),
            ns.node(),
            process.is_running(),
            process.log()
        );
    }
    Ok(process)
}

/// Runs an iperf3 client, again up to twice when the server was not ready (it serves one
/// client at a time and sometimes resets the control connection right after a test).
fn iperf3_json(ns: &Netns, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let mut argv = vec!["iperf3"];
    argv.extend_from_slice(args);
    let mut last = None;
    for _ in 0..3 {
        match ns.exec(&argv) {
            Ok(out) if !out.contains("\"error\"") => {
                return serde_json::from_str(&out)
                    .with_context(|| format!("iperf3 printed no JSON: {out}"))
            }
            Ok(out) => last = Some(anyhow::anyhow!("iperf3 failed: {out}")),
            Err(e) => last = Some(e.into()),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("iperf3 did not run")))
}

/// One TCP measurement.
struct Tcp {
    mbps: f64,
    bytes: f64,
    retransmits: f64,
}

/// iperf3 client from `ns` to `dst` with `streams` parallel streams.
fn iperf(ns: &Netns, dst: &str, streams: u32) -> anyhow::Result<Tcp> {
    let streams = streams.to_string();
    let json = iperf3_json(ns, &["-c", dst, "-t", SECONDS, "-P", &streams, "-J"])?;
    let received = &json["end"]["sum_received"];
    let field = |v: &serde_json::Value, name: &str| {
        v[name]
            .as_f64()
            .with_context(|| format!("no {name} in iperf3's answer: {json}"))
    };
    Ok(Tcp {
        mbps: field(received, "bits_per_second")? / 1e6,
        bytes: field(received, "bytes")?,
        retransmits: field(&json["end"]["sum_sent"], "retransmits")?,
    })
}

/// iperf3 UDP from `ns` to `dst` at `mbps` offered: (goodput Mbit/s, lost fraction). The
/// socket buffers are 4 MiB: with iperf3's default the receiving iperf3's own socket overflows
/// first (its `UdpRcvbufErrors` grow while the tunnel delivers every packet), which would
/// measure iperf3 rather than the tunnel.
fn iperf_udp(ns: &Netns, dst: &str, mbps: u32) -> anyhow::Result<(f64, f64)> {
    let rate = format!("{mbps}M");
    let json = iperf3_json(
        ns,
        &[
            "-c", dst, "-u", "-b", &rate, "-l", "1350", "-w", "4M", "-t", "3", "-J",
        ],
    )?;
    let sum = &json["end"]["sum"];
    let lost = sum["lost_percent"]
        .as_f64()
        .with_context(|| format!("no loss in iperf3's answer: {json}"))?;
    let bps = sum["bits_per_second"].as_f64().unwrap_or(0.0);
    Ok((bps * (1.0 - lost / 100.0) / 1e6, lost / 100.0))
}

/// The loss (a fraction) at which an offered UDP rate no longer counts.
const UDP_LOSS_LIMIT: f64 = 0.02;

/// Halvings of the gap between the highest passing rate of [`UDP_RATES`] and the next one:
/// three leave a gap of an eighth of a step (75 Mbit/s between 1400 and 2000).
const UDP_BISECTIONS: u32 = 3;

/// The best goodput among the offered rates whose loss stays under 2 %. It climbs
/// [`UDP_RATES`] until two rates in a row lose more (one lossy rate on this shared machine is
/// often noise), then bisects between the highest passing rate and the next one up, so that
/// the figure is the tunnel's, not the ladder's step (every implementation alike).
fn udp_goodput(ns: &Netns, dst: &str) -> anyhow::Result<f64> {
    let mut best = 0.0f64;
    let mut passed = 0u32;
    let mut lossy_in_a_row = 0;
    for mbps in UDP_RATES {
        let (goodput, lost) = iperf_udp(ns, dst, mbps)?;
        if lost >= UDP_LOSS_LIMIT {
            lossy_in_a_row += 1;
            if lossy_in_a_row == 2 {
                break;
            }
            continue;
        }
        lossy_in_a_row = 0;
        passed = mbps;
        best = best.max(goodput);
    }
    let Some(&above) = UDP_RATES.iter().find(|&&r| r > passed) else {
        return Ok(best);
    };
    let (mut low, mut high) = (passed, above);
    for _ in 0..UDP_BISECTIONS {
        let mid = low + (high - low) / 2;
        let (goodput, lost) = iperf_udp(ns, dst, mid)?;
        if lost < UDP_LOSS_LIMIT {
            low = mid;
            best = best.max(goodput);
        } else {
            high = mid;
        }
    }
    Ok(best)
}

/// `perf record -g` on some processes while it lives; stopped (SIGINT, so it writes its
/// file) when dropped. Nothing when `ENCLAVE_BENCH_PERF` is not set or there is no process.
struct Profile(Option<std::process::Child>);

impl Profile {
    fn start(tunnels: &[Process], name: &str) -> anyhow::Result<Profile> {
        let Some(dir) = std::env::var_os("ENCLAVE_BENCH_PERF") else {
            return Ok(Profile(None));
        };
        if tunnels.is_empty() {
            return Ok(Profile(None));
        }
        let pids: Vec<String> = tunnels.iter().map(|p| p.pid().to_string()).collect();
        let out = std::path::Path::new(&dir).join(format!("{name}.data"));
        let child = std::process::Command::new("perf")
            .args(["record", "-q", "-g", "-o"])
            .arg(&out)
            .args(["-p", &pids.join(",")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("cannot run perf")?;
        // perf needs a moment to attach.
        std::thread::sleep(Duration::from_millis(300));
        Ok(Profile(Some(child)))
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            // The pid of a child of ours that has not been waited for yet.
            let _ = std::process::Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

/// Clock ticks per second of `/proc` CPU times.
fn clock_ticks() -> anyhow::Result<f64> {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .context("cannot run getconf")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("getconf CLK_TCK printed no number")
}

/// CPU seconds a process (all its threads) has used so far.
fn process_cpu(pid: u32, ticks: f64) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    // The fields after the command name (which is in brackets and may hold spaces): state is
    // the first, utime the twelfth, stime the thirteenth.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks_used: f64 = fields
        .get(11..13)
        .context("short /proc/PID/stat")?
        .iter()
        .map(|f| f.parse::<f64>().unwrap_or(0.0))
        .sum();
    Ok(ticks_used / ticks)
}

/// CPU seconds the whole machine has been busy so far (every core, all work).
fn machine_cpu(ticks: f64) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("cannot read /proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    // cpu user nice system idle iowait irq softirq steal …: busy is all but idle and iowait.
    let fields: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    let busy: f64 = fields
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4 && *i < 8)
        .map(|(_, v)| v)
        .sum();
    Ok(busy / ticks)
}

/// One implementation in fresh namespaces: all the figures, in [`METRICS`] order.
fn measure(ctx: &Ctx, which: Impl, run: usize, ticks: f64) -> anyhow::Result<Vec<f64>> {
    let topo = ctx.topology(&reference_topology(&format!("bdp{run}")))?;
    let (sender, gw, lan) = (topo.ns("sender"), topo.ns("gw"), topo.ns("lan"));
    let mut tunnels = Vec::new();
    let target = if which == Impl::Raw {
        sender.exec(&["ip", "route", "add", LAN_SUBNET, "via", GATEWAY_UNDERLAY])?;
        GATEWAY_UNDERLAY
    } else {
        tunnels.push(start(ctx, sender, which)?);
        tunnels.push(start(ctx, gw, which)?);
        configure_reference_tunnel(ctx.log_dir(), "bench", sender, gw)?;
        GATEWAY_OVERLAY
    };
    // Raw traffic comes from the sender's underlay address: every source is translated.
    snat_to_lan(gw, "enclave-bench", None)?;
    let _gw_iperf = gw.spawn("iperf3-gw", &["iperf3", "-s"], SpawnOpts::default())?;
    let _lan_iperf = lan.spawn("iperf3-lan", &["iperf3", "-s"], SpawnOpts::default())?;
    let handshake =
        enclave_netns::try_wait_until(Duration::from_secs(10), || sender.ping_once(target))?;
    anyhow::ensure!(handshake, "{}: no handshake", which.name());
    // The iperf3 servers are up once they accept a connection.
    for dst in [target, LAN_HOST] {
        let addr = format!("{dst}:5201").parse()?;
        let up = enclave_netns::try_wait_until(Duration::from_secs(5), || {
            enclave_netns::Reached::reached(sender.tcp_connect(addr, Duration::from_secs(1)))
        })?;
        anyhow::ensure!(up, "iperf3 server at {dst} did not come up");
    }
    let tunnel_cpu = || -> anyhow::Result<f64> {
        tunnels
            .iter()
            .map(|p| process_cpu(p.pid(), ticks))
            .sum::<anyhow::Result<f64>>()
    };
    let label = format!("{}-run{}", which.name(), run + 1);
    let profile = Profile::start(&tunnels, &format!("{label}-tcp1"))?;
    let (tunnel_before, machine_before) = (tunnel_cpu()?, machine_cpu(ticks)?);
    let one = iperf(sender, target, 1)?;
    let (tunnel_after, machine_after) = (tunnel_cpu()?, machine_cpu(ticks)?);
    drop(profile);
    let gb = one.bytes / 1e9;
    let mut figures = vec![
        one.mbps,
        iperf(sender, target, 4)?.mbps,
        iperf(sender, LAN_HOST, 1)?.mbps,
        iperf(sender, LAN_HOST, 4)?.mbps,
    ];
    let profile = Profile::start(&tunnels, &format!("{label}-udp"))?;
    figures.push(udp_goodput(sender, target)?);
    drop(profile);
    let out = sender.exec_output(&["ping", "-n", "-q", "-c", PINGS, "-i", "0.02", target])?;
    let ping = enclave_netns::PingResult::parse(&String::from_utf8_lossy(&out.stdout));
    figures.push(
        ping.avg_rtt_ms
            .with_context(|| format!("no RTT from ping:\n{}", ping.output))?,
    );
    figures.push(one.retransmits);
    figures.push((tunnel_after - tunnel_before) / gb);
    figures.push((machine_after - machine_before) / gb);
    Ok(figures)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// "median [lowest–highest]" of some values.
fn spread(values: &[f64], precision: usize) -> String {
    let mut v = values.to_vec();
    let m = median(&mut v);
    let (lo, hi) = (v[0], v[v.len() - 1]);
    format!("{m:.precision$} [{lo:.precision$}-{hi:.precision$}]")
}

fn bench_dataplane(ctx: &Ctx) -> anyhow::Result<()> {
    let runs = match std::env::var("ENCLAVE_BENCH_RUNS") {
        Ok(n) => n.parse().context("ENCLAVE_BENCH_RUNS must be a number")?,
        Err(_) => RUNS,
    };
    anyhow::ensure!(runs > 0, "ENCLAVE_BENCH_RUNS must be at least 1");
    let ticks = clock_ticks()?;
    let mut impls = vec![
        Impl::Raw,
        Impl::Ours,
        Impl::OursNoOffload,
        Impl::OursTwoThreads,
        Impl::WireguardGo,
    ];
    if std::env::var_os("ENCLAVE_BENCH_BASELINE").is_some() {
        impls.insert(2, Impl::OursBaseline);
    }
    if enclave_netns::which("boringtun-cli").is_some() {
        impls.push(Impl::Boringtun);
    } else {
        println!("boringtun-cli is not installed (`cargo install boringtun-cli`): not measured");
    }
    if let Ok(names) = std::env::var("ENCLAVE_BENCH_IMPLS") {
        let wanted: Vec<&str> = names.split(',').map(str::trim).collect();
        for name in &wanted {
            anyhow::ensure!(
                impls.iter().any(|i| i.name() == *name),
                "ENCLAVE_BENCH_IMPLS: {name} is not one of {}",
                impls
                    .iter()
                    .map(|i| i.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        impls.retain(|i| wanted.contains(&i.name()));
    }
    println!("columns: {}", METRICS.join(" | "));
    // samples[impl][run][metric]
    let mut samples: BTreeMap<Impl, Vec<Vec<f64>>> = BTreeMap::new();
    for run in 0..runs {
        for &which in &impls {
            let figures = measure(ctx, which, run, ticks)
                .with_context(|| format!("{} run {}", which.name(), run + 1))?;
            println!(
                "run {} {:16} {}",
                run + 1,
                which.name(),
                figures
                    .iter()
                    .map(|f| format!("{f:9.2}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            samples.entry(which).or_default().push(figures);
        }
    }
    println!();
    println!(
        "medians of {runs} interleaved runs [lowest-highest] ({SECONDS} s per iperf3 test, \
         {PINGS} pings); ratios are medians of the per-run ratios"
    );
    let ratios = [
        (Impl::Ours, Impl::WireguardGo, "ours/wg-go"),
        (Impl::Ours, Impl::Raw, "ours/raw"),
        (Impl::Ours, Impl::OursNoOffload, "ours/no-offload"),
        (Impl::OursTwoThreads, Impl::Ours, "two-threads/ours"),
        (Impl::Ours, Impl::OursBaseline, "ours/baseline"),
        (Impl::WireguardGo, Impl::Raw, "wg-go/raw"),
    ];
    let mut header = format!("{:36}", "");
    for which in &impls {
        header.push_str(&format!(" {:>24}", which.name()));
    }
    // Only the ratios between implementations that were measured.
    let ratios: Vec<_> = ratios
        .into_iter()
        .filter(|(a, b, _)| samples.contains_key(a) && samples.contains_key(b))
        .collect();
    for (_, _, name) in &ratios {
        header.push_str(&format!(" {name:>24}"));
    }
    println!("{header}");
    for (m, metric) in METRICS.iter().enumerate() {
        let of = |which: Impl| -> Vec<f64> { samples[&which].iter().map(|r| r[m]).collect() };
        let mut line = format!("{metric:36}");
        for &which in &impls {
            line.push_str(&format!(" {:>24}", spread(&of(which), 2)));
        }
        for &(a, b, _) in &ratios {
            let per_run: Vec<f64> = of(a)
                .iter()
                .zip(of(b))
                .filter(|(_, b)| *b != 0.0)
                .map(|(a, b)| a / b)
                .collect();
            let cell = if per_run.is_empty() {
                "-".to_owned()
            } else {
                spread(&per_run, 2)
            };
            line.push_str(&format!(" {cell:>24}"));
        }
        println!("{line}");
    }
    println!(
        "(throughput: higher is better; RTT, retransmits, CPU: lower is better. Tunnel CPU: \
         both tunnel processes; raw has none. Machine CPU counts every core and everything \
         running on them, other work included.)"
    );
    Ok(())
}
