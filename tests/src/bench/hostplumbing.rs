//! `cargo xtask bench hostplumbing`: the NAT manager's forward filter with 10,000 entries.
//!
//! In a namespace of its own, one grant whose destinations are 10,000 separate addresses
//! (no two adjacent, so none merge) is applied, applied again unchanged (only the read-back
//! runs), then re-applied with one address swapped for another, several rounds each. nftables keeps them as one interval set (20,000 set elements)
//! in one atomic batch; iptables has no sets and needs one rule per entry, written by one
//! `iptables-restore --noflush`. Every apply includes the read-back check. Also the sans-IO part
//! alone: deciding the ruleset (merging the intervals) for 10,000 entries.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::ensure;
use enclave_nat::{
    AddressSet, Flavor, ForwardGrant, IptablesBackend, NatBackend, NatPolicy, NftBackend,
    PortRange, Protocol, Ruleset, SnatRule,
};
use enclave_netns::{Netns, TopologySpec};

use super::stats::{ms, spread};
use crate::{Bench, Ctx};

pub(crate) const BENCH: Bench = Bench {
    name: "hostplumbing",
    about: "NAT manager: apply 10,000 filter entries atomically, then re-apply with one change",
    run: bench_hostplumbing,
};

const ENTRIES: u32 = 10_000;
const GOAL: Duration = Duration::from_millis(200);

/// 10,000 destinations `10.x.y.z`, every other address, with entry `changed` moved elsewhere.
fn policy(changed: Option<u32>) -> anyhow::Result<NatPolicy> {
    let mut destinations = AddressSet::new();
    for i in 0..ENTRIES {
        let host = if Some(i) == changed {
            0x0b00_0000 + i
        } else {
            0x0a00_0000 + 2 * i
        };
        destinations = destinations.net(enclave_nat::Ipv4Net::new(Ipv4Addr::from(host), 32)?);
    }
    Ok(NatPolicy {
        tunnel_interface: "enctun0".into(),
        overlay: "100.64.0.0/10".parse()?,
        snat: vec![SnatRule {
            egress_interface: "lan0".into(),
            to: "192.168.77.1".parse()?,
            source: "100.64.0.0/10".parse()?,
        }],
        grants: vec![ForwardGrant {
            sources: AddressSet::new().net("100.64.0.0/24".parse()?),
            destinations,
            protocol: Some(Protocol::Tcp),
            ports: Some(PortRange {
                first: 443,
                last: 443,
            }),
            label: "bench".into(),
        }],
        host: None,
    })
}

struct Row {
    backend: &'static str,
    phase: &'static str,
    rounds: usize,
    samples: Vec<Duration>,
}

/// Times `rounds` × (fresh apply, the same again, re-apply with one change, reset) with
/// `backend` inside `ns`.
fn measure(
    ns: &Netns,
    backend: &mut (dyn NatBackend + Send),
    rounds: usize,
    base: &NatPolicy,
    changed: &NatPolicy,
) -> anyhow::Result<[Vec<Duration>; 3]> {
    let mut out: [Vec<Duration>; 3] = Default::default();
    for _ in 0..rounds {
        let times = ns.run_in(|| -> enclave_nat::Result<[Duration; 3]> {
            let mut times = [Duration::ZERO; 3];
            for (slot, policy) in times.iter_mut().zip([base, base, changed]) {
                let start = Instant::now();
                backend.apply_policy(policy)?;
                *slot = start.elapsed();
            }
            backend.reset_policy()?;
            Ok(times)
        })??;
        for (samples, time) in out.iter_mut().zip(times) {
            samples.push(time);
        }
    }
    Ok(out)
}

fn rows_of(backend: &'static str, rounds: usize, samples: [Vec<Duration>; 3]) -> Vec<Row> {
    let [first, same, changed] = samples;
    vec![
        Row {
            backend,
            phase: "apply (fresh)",
            rounds,
            samples: first,
        },
        Row {
            backend,
            phase: "re-apply, unchanged",
            rounds,
            samples: same,
        },
        Row {
            backend,
            phase: "re-apply, 1 change",
            rounds,
            samples: changed,
        },
    ]
}

fn bench_hostplumbing(ctx: &Ctx) -> anyhow::Result<()> {
    let mut spec = TopologySpec::new("natbench");
    spec.node("gw");
    let topo = ctx.topology(&spec)?;
    let gw = topo.ns("gw");

    let base = policy(None)?;
    let changed = policy(Some(ENTRIES / 2))?;
    let mut rows = Vec::new();

    // The sans-IO part alone.
    let mut decide = Vec::new();
    for _ in 0..10 {
        let start = Instant::now();
        let ruleset = Ruleset::from_policy(&base);
        decide.push(start.elapsed());
        ensure!(
            ruleset.element_count() == 2 * ENTRIES as usize + 2,
            "the ruleset has {} set elements",
            ruleset.element_count()
        );
    }
    rows.push(Row {
        backend: "sans-IO",
        phase: "decide the ruleset",
        rounds: 10,
        samples: decide,
    });

    let mut nft = NftBackend::new();
    rows.extend(rows_of(
        "nftables",
        10,
        measure(gw, &mut nft, 10, &base, &changed)?,
    ));
    for flavor in [Flavor::Legacy, Flavor::Nft] {
        let mut ipt = IptablesBackend::new(flavor);
        let name = ipt.name();
        rows.extend(rows_of(name, 3, measure(gw, &mut ipt, 3, &base, &changed)?));
    }

    println!(
        "\nNAT manager, one grant with {ENTRIES} destination entries (read-back check included)\n"
    );
    println!(
        "{:<16} {:<22} {:>6} {:>10} {:>10} {:>10}",
        "backend", "phase", "rounds", "min ms", "median ms", "max ms"
    );
    println!("{}", "-".repeat(80));
    let mut nft_worst = 0.0_f64;
    for row in &rows {
        let samples: Vec<f64> = row.samples.iter().copied().map(ms).collect();
        let [min, median, max] = spread(&samples);
        if row.backend == "nftables" && row.phase != "re-apply, unchanged" {
            nft_worst = nft_worst.max(median);
        }
        println!(
            "{:<16} {:<22} {:>6} {:>10.2} {:>10.2} {:>10.2}",
            row.backend, row.phase, row.rounds, min, median, max
        );
    }
    println!(
        "\ngoal: an atomic apply of {ENTRIES} entries under {} ms with nftables: {} (median {:.2} ms)",
        GOAL.as_millis(),
        if nft_worst < ms(GOAL) { "met" } else { "NOT met" },
        nft_worst
    );
    Ok(())
}
