//! `cargo xtask bench hostplumbing`: the NAT manager's forward filter with 10,000 entries.
//!
//! In a namespace of its own, one grant whose destinations are 10,000 separate addresses
//! (no two adjacent, so none merge) is applied, then re-applied with one address swapped for
//! another, several rounds each. nftables keeps them as one interval set (20,000 set elements)
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

use crate::{Bench, Ctx};

pub fn benches() -> Vec<Bench> {
    vec![Bench {
        name: "hostplumbing",
        about: "NAT manager: apply 10,000 filter entries atomically, then re-apply with one change",
        run: bench_hostplumbing,
    }]
}

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
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// min / median / max of the samples.
fn spread(samples: &mut [Duration]) -> (Duration, Duration, Duration) {
    samples.sort();
    (
        samples[0],
        samples[samples.len() / 2],
        samples[samples.len() - 1],
    )
}

struct Row {
    backend: &'static str,
    phase: &'static str,
    rounds: usize,
    samples: Vec<Duration>,
}

/// Times `rounds` × (fresh apply, re-apply with one change, reset) with `backend` inside `ns`.
fn measure(
    ns: &Netns,
    backend: &mut (dyn NatBackend + Send),
    rounds: usize,
    base: &NatPolicy,
    changed: &NatPolicy,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let (mut first, mut again) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (a, b) = ns.run_in(|| -> enclave_nat::Result<(Duration, Duration)> {
            let start = Instant::now();
            backend.apply_policy(base)?;
            let a = start.elapsed();
            let start = Instant::now();
            backend.apply_policy(changed)?;
            let b = start.elapsed();
            backend.reset_policy()?;
            Ok((a, b))
        })??;
        first.push(a);
        again.push(b);
    }
    Ok((first, again))
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
    let (first, again) = measure(gw, &mut nft, 10, &base, &changed)?;
    rows.push(Row {
        backend: "nftables",
        phase: "apply (fresh table)",
        rounds: 10,
        samples: first,
    });
    rows.push(Row {
        backend: "nftables",
        phase: "re-apply, 1 change",
        rounds: 10,
        samples: again,
    });

    for flavor in [Flavor::Legacy, Flavor::Nft] {
        let mut ipt = IptablesBackend::new(flavor);
        let name = ipt.name();
        let (first, again) = measure(gw, &mut ipt, 3, &base, &changed)?;
        rows.push(Row {
            backend: name,
            phase: "apply (fresh chains)",
            rounds: 3,
            samples: first,
        });
        rows.push(Row {
            backend: name,
            phase: "re-apply, 1 change",
            rounds: 3,
            samples: again,
        });
    }

    println!(
        "\nNAT manager, one grant with {ENTRIES} destination entries (read-back check included)\n"
    );
    println!(
        "{:<16} {:<22} {:>6} {:>10} {:>10} {:>10}",
        "backend", "phase", "rounds", "min ms", "median ms", "max ms"
    );
    println!("{}", "-".repeat(80));
    let mut nft_worst = Duration::ZERO;
    for row in &mut rows {
        let (min, median, max) = spread(&mut row.samples);
        if row.backend == "nftables" {
            nft_worst = nft_worst.max(median);
        }
        println!(
            "{:<16} {:<22} {:>6} {:>10.2} {:>10.2} {:>10.2}",
            row.backend,
            row.phase,
            row.rounds,
            ms(min),
            ms(median),
            ms(max)
        );
    }
    println!(
        "\ngoal: an atomic apply of {ENTRIES} entries under {} ms with nftables: {} (median {:.2} ms)",
        GOAL.as_millis(),
        if nft_worst < GOAL { "met" } else { "NOT met" },
        ms(nft_worst)
    );
    Ok(())
}
