//! `cargo xtask bench routes`: reconcile 1,000 routes on a TUN in a namespace.
//!
//! Phases, each timed over several rounds: install 1,000 routes on an empty table; reconcile
//! again with nothing to change (three dumps and a diff); reconcile with one route swapped for
//! another; reset (remove all 1,000). Also the sans-IO diff alone, 1,000 wanted against 1,000
//! present.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::ensure;
use enclave_netns::TopologySpec;
use enclave_route::{
    plan, Config, Desired, Ipv4Net, KernelRoute, Report, Route, RouteManager, PROTOCOL_ENCLAVE,
};

use super::stats::{ms, spread};
use crate::support::start_wireguard_go;
use crate::{Bench, Ctx};

pub(crate) const BENCH: Bench = Bench {
    name: "routes",
    about: "reconcile 1,000 routes on the tunnel: install, no-op, one change, reset",
    run: bench_routes,
};

const ROUTES: u32 = 1000;
const ROUNDS: usize = 5;

fn wanted(skip: Option<u32>, extra: Option<u32>) -> Desired {
    let mut d = Desired::default();
    for i in (0..ROUTES).filter(|i| Some(*i) != skip).chain(extra) {
        let dst = Ipv4Net::new(Ipv4Addr::from(0x0a00_0000 | (i << 8)), 24)
            .expect("a /24 is a valid prefix");
        d.routes.insert(Route::main(dst));
    }
    d
}

fn stats(samples: &[Duration]) -> String {
    let samples: Vec<f64> = samples.iter().copied().map(ms).collect();
    let [min, median, max] = spread(&samples);
    format!("min {min:8.2} ms   median {median:8.2} ms   max {max:8.2} ms")
}

fn bench_routes(ctx: &Ctx) -> anyhow::Result<()> {
    let mut spec = TopologySpec::new("rtbench");
    spec.node("gw");
    let topo = ctx.topology(&spec)?;
    let gw = topo.ns("gw");
    // The tunnel: a TUN held open by wireguard-go (no peers).
    let _tunnel = start_wireguard_go(gw, "enctun0")?;
    gw.exec(&["ip", "link", "set", "enctun0", "up"])?;
    let cfg = Config {
        interface: "enctun0".to_string(),
        state_dir: None,
    };
    let full = wanted(None, None);
    let swapped = wanted(Some(500), Some(ROUTES));

    let timed = |desired: &Desired| -> anyhow::Result<(Duration, Report)> {
        // A fresh manager each time, inside the namespace (its socket and sysctls live there).
        let (elapsed, report) = gw.run_in(|| -> enclave_route::Result<(Duration, Report)> {
            let started = Instant::now();
            let report = RouteManager::new(cfg.clone())?.apply(desired)?;
            Ok((started.elapsed(), report))
        })??;
        Ok((elapsed, report))
    };
    let (mut install, mut noop, mut one, mut reset) = (vec![], vec![], vec![], vec![]);
    for _ in 0..ROUNDS {
        let (t, r) = timed(&full)?;
        ensure!(r.added == ROUTES as usize, "install: {r:?}");
        install.push(t);
        let (t, r) = timed(&full)?;
        ensure!(r.added == 0 && r.removed == 0, "no-op: {r:?}");
        noop.push(t);
        let (t, r) = timed(&swapped)?;
        ensure!(r.added == 1 && r.removed == 1, "one change: {r:?}");
        one.push(t);
        let (t, r) = timed(&Desired::default())?;
        ensure!(r.removed == ROUTES as usize, "reset: {r:?}");
        reset.push(t);
    }

    // The diff alone: 1,000 wanted against the same 1,000 present.
    let present: Vec<KernelRoute> = full
        .routes
        .iter()
        .map(|r| KernelRoute {
            dst: r.dst,
            table: r.table,
            metric: r.metric,
            oif: Some(2),
            gateway: None,
            protocol: PROTOCOL_ENCLAVE,
            kind: 1,
            scope: 253,
        })
        .collect();
    let mut diff = Vec::new();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let p = plan(&full, Some(2), &present, &[]);
        diff.push(started.elapsed());
        ensure!(p.is_empty(), "the diff of equal sets is not empty");
    }

    println!("routes: {ROUTES} routes on a TUN in a namespace, {ROUNDS} rounds (one manager per reconcile, as a restarted agent)");
    for (label, samples) in [
        (format!("install {ROUTES}"), &install),
        ("no-op reconcile".to_string(), &noop),
        ("one route swapped".to_string(), &one),
        (format!("reset (remove {ROUTES})"), &reset),
        ("diff only (sans-IO)".to_string(), &diff),
    ] {
        println!("  {label:<22} {}", stats(samples));
    }
    Ok(())
}
