//! `cargo xtask bench dataplane`: our userspace tunnel against wireguard-go (and boringtun-cli
//! when it is installed) in the reference topology, sender ↔ gateway ↔ LAN host, in one run.
//!
//! For each implementation, in fresh namespaces, interleaved over several runs: iperf3 TCP with
//! 1 and 4 streams to the gateway's overlay address and through the gateway (forwarding and
//! SNAT) to the LAN host, and the ping round trip to the gateway's overlay address. Medians are
//! printed as a table with ratios against wireguard-go.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context};
use enclave_netns::{Netns, Process, SpawnOpts};

use crate::support::{
    configure_reference_tunnel, reference_topology, start_wireguard_go, GATEWAY_LAN,
    GATEWAY_OVERLAY, LAN_HOST, OVERLAY,
};
use crate::{Bench, Ctx};

pub fn benches() -> Vec<Bench> {
    vec![Bench {
        name: "dataplane",
        about: "ours vs wireguard-go (and boringtun-cli if installed): iperf3 TCP 1/4 streams, ping RTT",
        run: bench_dataplane,
    }]
}

/// Runs per implementation (medians are taken over these).
const RUNS: usize = 3;
/// Seconds per iperf3 measurement.
const SECONDS: &str = "4";
/// Pings per RTT measurement.
const PINGS: &str = "50";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Impl {
    Ours,
    WireguardGo,
    Boringtun,
}

impl Impl {
    fn name(self) -> &'static str {
        match self {
            Impl::Ours => "ours",
            Impl::WireguardGo => "wireguard-go",
            Impl::Boringtun => "boringtun",
        }
    }
}

/// The figures, in table order (throughput: higher is better; RTT: lower is better).
const METRICS: [&str; 6] = [
    "TCP 1 stream, overlay (Mbit/s)",
    "TCP 4 streams, overlay (Mbit/s)",
    "TCP 1 stream, via gateway (Mbit/s)",
    "TCP 4 streams, via gateway (Mbit/s)",
    "UDP goodput at <2% loss (Mbit/s)",
    "ping RTT, overlay (ms)",
];

/// Offered UDP rates (Mbit/s), tried in order until the loss reaches 2 %.
const UDP_RATES: [u32; 9] = [50, 100, 200, 300, 400, 600, 800, 1000, 1400];

fn start(ctx: &Ctx, ns: &Netns, which: Impl) -> anyhow::Result<Process> {
    let (label, argv, env): (String, Vec<String>, Vec<(&str, &str)>) = match which {
        Impl::WireguardGo => return start_wireguard_go(ns, "wg0"),
        Impl::Ours => (
            format!("enclave-tunnel-{}", ns.node()),
            vec![
                ctx.bin("enclave-agent")?.to_string_lossy().into_owned(),
                "tunnel".into(),
                "wg0".into(),
            ],
            vec![("RUST_LOG", "warn")],
        ),
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
fn iperf3_json(ns: &Netns, args: &[&str]) -> anyhow::Result<String> {
    let mut argv = vec!["iperf3"];
    argv.extend_from_slice(args);
    let mut last = None;
    for _ in 0..3 {
        match ns.exec(&argv) {
            Ok(out) if !out.contains("\"error\"") => return Ok(out),
            Ok(out) => last = Some(anyhow::anyhow!("iperf3 failed: {out}")),
            Err(e) => last = Some(e.into()),
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("iperf3 did not run")))
}

/// iperf3 client from `ns` to `dst` with `streams` parallel streams; Mbit/s received.
fn iperf(ns: &Netns, dst: &str, streams: u32) -> anyhow::Result<f64> {
    let streams = streams.to_string();
    let out = iperf3_json(ns, &["-c", dst, "-t", SECONDS, "-P", &streams, "-J"])?;
    let json: serde_json::Value = serde_json::from_str(&out).context("iperf3 printed no JSON")?;
    let bps = json["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .with_context(|| format!("no throughput in iperf3's answer: {out}"))?;
    Ok(bps / 1e6)
}

/// iperf3 UDP from `ns` to `dst` at `mbps` offered: (goodput Mbit/s, lost fraction). The
/// socket buffers are 4 MiB: with iperf3's default the receiving iperf3's own socket overflows
/// first (its `UdpRcvbufErrors` grow while the tunnel delivers every packet), which would
/// measure iperf3 rather than the tunnel.
fn iperf_udp(ns: &Netns, dst: &str, mbps: u32) -> anyhow::Result<(f64, f64)> {
    let rate = format!("{mbps}M");
    let out = iperf3_json(
        ns,
        &[
            "-c", dst, "-u", "-b", &rate, "-l", "1350", "-w", "4M", "-t", "3", "-J",
        ],
    )?;
    let json: serde_json::Value = serde_json::from_str(&out).context("iperf3 printed no JSON")?;
    let sum = &json["end"]["sum"];
    let lost = sum["lost_percent"]
        .as_f64()
        .with_context(|| format!("no loss in iperf3's answer: {out}"))?;
    let bps = sum["bits_per_second"].as_f64().unwrap_or(0.0);
    Ok((bps * (1.0 - lost / 100.0) / 1e6, lost / 100.0))
}

/// The best goodput among the offered rates whose loss stays under 2 %.
fn udp_goodput(ns: &Netns, dst: &str) -> anyhow::Result<f64> {
    let mut best = 0.0f64;
    for mbps in UDP_RATES {
        let (goodput, lost) = iperf_udp(ns, dst, mbps)?;
        if lost >= 0.02 {
            break;
        }
        best = best.max(goodput);
    }
    Ok(best)
}

/// One implementation in fresh namespaces: all the figures, in [`METRICS`] order.
fn measure(ctx: &Ctx, which: Impl, run: usize) -> anyhow::Result<Vec<f64>> {
    let topo = ctx.topology(&reference_topology(&format!("bdp{run}")))?;
    let (sender, gw, lan) = (topo.ns("sender"), topo.ns("gw"), topo.ns("lan"));
    let _sender_wg = start(ctx, sender, which)?;
    let _gw_wg = start(ctx, gw, which)?;
    configure_reference_tunnel(ctx.log_dir(), "bench", sender, gw)?;
    gw.exec(&[
        "nft",
        &format!(
            "add table ip enclave-bench; \
             add chain ip enclave-bench post {{ type nat hook postrouting priority srcnat; }}; \
             add rule ip enclave-bench post oifname \"lan0\" ip saddr {OVERLAY} snat to {GATEWAY_LAN}"
        ),
    ])?;
    let _gw_iperf = gw.spawn("iperf3-gw", &["iperf3", "-s"], SpawnOpts::default())?;
    let _lan_iperf = lan.spawn("iperf3-lan", &["iperf3", "-s"], SpawnOpts::default())?;
    let handshake = enclave_netns::try_wait_until(Duration::from_secs(10), || {
        sender.ping_once(GATEWAY_OVERLAY)
    })?;
    anyhow::ensure!(handshake, "{}: no handshake", which.name());
    // The iperf3 servers are up once they accept a connection.
    for dst in [GATEWAY_OVERLAY, LAN_HOST] {
        let addr = format!("{dst}:5201").parse()?;
        let up = enclave_netns::try_wait_until(Duration::from_secs(5), || {
            enclave_netns::Reached::reached(sender.tcp_connect(addr, Duration::from_secs(1)))
        })?;
        anyhow::ensure!(up, "iperf3 server at {dst} did not come up");
    }
    let mut figures = vec![
        iperf(sender, GATEWAY_OVERLAY, 1)?,
        iperf(sender, GATEWAY_OVERLAY, 4)?,
        iperf(sender, LAN_HOST, 1)?,
        iperf(sender, LAN_HOST, 4)?,
        udp_goodput(sender, GATEWAY_OVERLAY)?,
    ];
    let out = sender.exec_output(&[
        "ping",
        "-n",
        "-q",
        "-c",
        PINGS,
        "-i",
        "0.02",
        GATEWAY_OVERLAY,
    ])?;
    let ping = enclave_netns::PingResult::parse(&String::from_utf8_lossy(&out.stdout));
    figures.push(
        ping.avg_rtt_ms
            .with_context(|| format!("no RTT from ping:\n{}", ping.output))?,
    );
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

fn bench_dataplane(ctx: &Ctx) -> anyhow::Result<()> {
    let mut impls = vec![Impl::Ours, Impl::WireguardGo];
    if enclave_netns::which("boringtun-cli").is_some() {
        impls.push(Impl::Boringtun);
    } else {
        println!("boringtun-cli is not installed: measuring ours and wireguard-go only");
    }
    let mut samples: BTreeMap<Impl, Vec<Vec<f64>>> = BTreeMap::new();
    for run in 0..RUNS {
        for &which in &impls {
            let figures = measure(ctx, which, run)
                .with_context(|| format!("{} run {}", which.name(), run + 1))?;
            println!(
                "run {} {:13} {}",
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
    let medians: BTreeMap<Impl, Vec<f64>> = samples
        .iter()
        .map(|(which, runs)| {
            let per_metric = (0..METRICS.len())
                .map(|m| median(&mut runs.iter().map(|r| r[m]).collect::<Vec<_>>()))
                .collect();
            (*which, per_metric)
        })
        .collect();
    println!();
    println!("medians of {RUNS} runs ({SECONDS} s per iperf3 run, {PINGS} pings)");
    let mut header = format!("{:38}", "");
    for which in &impls {
        header.push_str(&format!(" {:>13}", which.name()));
    }
    for which in impls.iter().filter(|w| **w != Impl::WireguardGo) {
        header.push_str(&format!(" {:>17}", format!("{}/wg-go", which.name())));
    }
    println!("{header}");
    for (m, label) in METRICS.iter().enumerate() {
        let mut line = format!("{label:38}");
        for which in &impls {
            line.push_str(&format!(" {:>13.2}", medians[which][m]));
        }
        let base = medians[&Impl::WireguardGo][m];
        for which in impls.iter().filter(|w| **w != Impl::WireguardGo) {
            line.push_str(&format!(" {:>17.2}", medians[which][m] / base));
        }
        println!("{line}");
    }
    Ok(())
}
