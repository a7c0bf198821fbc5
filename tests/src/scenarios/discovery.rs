//! Discovery on a real kernel: `enclave-gw discover --json` in a namespace with a veth, a
//! bridge, a TUN, our own tunnel, a down interface, link-local and secondary addresses,
//! and configured subnets that are routed, unreachable or directly connected.

use std::collections::BTreeSet;

use anyhow::{ensure, Context};
use enclave_netns::TopologySpec;

use crate::{Ctx, Scenario};

pub fn scenarios() -> Vec<Scenario> {
    vec![Scenario {
        name: "discovery-interfaces",
        about: "enclave-gw discover takes veth, bridge and secondary addresses; leaves TUN, our tunnel, down, loopback and link-local",
        run: discover_interfaces,
    }]
}

fn discover_interfaces(ctx: &Ctx) -> anyhow::Result<()> {
    let mut spec = TopologySpec::new("disc");
    spec.node("gw")
        .node("router")
        .link(("gw", "eth0"), ("router", "eth0"))
        .addr("gw", "eth0", "192.168.77.1/24")
        .addr("router", "eth0", "192.168.77.254/24");
    let topo = ctx.topology(&spec)?;
    let gw = topo.ns("gw");
    let sh = |script: &str| gw.exec(&["sh", "-euc", script]);
    sh("ip addr add 192.168.77.2/24 dev eth0
        ip addr add 10.5.0.1/16 dev eth0
        ip addr add 169.254.7.7/16 dev eth0
        ip link add br0 type bridge
        ip link set br0 up
        ip addr add 172.20.0.1/24 dev br0
        ip tuntap add dev tun9 mode tun
        ip link set tun9 up
        ip addr add 10.200.0.1/24 dev tun9
        ip tuntap add dev enctun0 mode tun
        ip link set enctun0 up
        ip addr add 100.64.0.1/10 dev enctun0
        ip link add vdown type veth peer name vdown-peer
        ip addr add 10.8.0.1/24 dev vdown
        ip route add 10.99.0.0/16 via 192.168.77.254
        ip route add blackhole 10.97.0.0/16
        ip route add unreachable 10.96.0.0/16")?;

    let gw_bin = ctx.bin("enclave-gw")?;
    let gw_bin = gw_bin.to_str().context("binary path is not UTF-8")?;
    let out = gw.exec_output(&[
        gw_bin,
        "discover",
        "--json",
        "--tunnel",
        "enctun0",
        "--subnet",
        "10.99.0.0/16",
        "--subnet",
        "10.98.0.0/16",
        "--subnet",
        "172.20.0.0/25",
        "--subnet",
        "10.97.0.0/16",
        "--subnet",
        "10.96.0.0/16",
    ])?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.code() == Some(1),
        "configured subnets are unreachable, so discover exits 1; got {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_str(&stdout).context("discover --json")?;
    let list = list.as_array().context("discover --json is not a list")?;

    // (source, interface, subnet, taken) for every entry.
    let got: BTreeSet<(String, String, String, bool)> = list
        .iter()
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap_or("-").to_string();
            (
                text("source"),
                text("interface"),
                text("subnet"),
                e["taken"].as_bool().unwrap_or(false),
            )
        })
        .collect();
    let want: BTreeSet<(String, String, String, bool)> = [
        ("interface", "lo", "127.0.0.0/8", false),
        ("interface", "eth0", "192.168.77.0/24", true),
        ("interface", "eth0", "10.5.0.0/16", true),
        ("interface", "eth0", "169.254.0.0/16", false),
        ("interface", "br0", "172.20.0.0/24", true),
        ("interface", "tun9", "10.200.0.0/24", false),
        ("interface", "enctun0", "100.64.0.0/10", false),
        ("interface", "vdown", "10.8.0.0/24", false),
        ("interface", "vdown-peer", "-", false),
        ("configured", "eth0", "10.99.0.0/16", true),
        ("configured", "-", "10.98.0.0/16", false),
        ("configured", "br0", "172.20.0.0/25", true),
        ("configured", "-", "10.97.0.0/16", false),
        ("configured", "-", "10.96.0.0/16", false),
    ]
    .into_iter()
    .map(|(s, i, n, t)| (s.to_string(), i.to_string(), n.to_string(), t))
    .collect();
    ensure!(
        got == want,
        "discover --json differs\n got: {got:#?}\nwant: {want:#?}\n{stdout}"
    );

    // Both eth0 addresses in 192.168.77.0/24 are listed, the second as secondary.
    let secondary = list
        .iter()
        .any(|e| e["address"] == "192.168.77.2" && e["secondary"] == true && e["taken"] == true);
    ensure!(secondary, "the secondary address is missing:\n{stdout}");

    // Every entry says why.
    let reason_of = |iface: &str, subnet: &str| -> String {
        list.iter()
            .find(|e| e["interface"] == iface && (subnet == "-" || e["subnet"] == subnet))
            .and_then(|e| e["reason"].as_str())
            .unwrap_or("")
            .to_string()
    };
    for (iface, subnet, needle) in [
        ("lo", "127.0.0.0/8", "loopback"),
        ("eth0", "169.254.0.0/16", "link-local"),
        ("br0", "172.20.0.0/24", "bridge"),
        ("tun9", "10.200.0.0/24", "TUN/TAP"),
        ("enctun0", "100.64.0.0/10", "our own tunnel"),
        ("vdown", "10.8.0.0/24", "down"),
        ("eth0", "10.99.0.0/16", "via 192.168.77.254"),
    ] {
        let reason = reason_of(iface, subnet);
        ensure!(
            reason.contains(needle),
            "{iface} {subnet}: reason {reason:?} does not say {needle:?}"
        );
    }
    let unreachable = list
        .iter()
        .find(|e| e["subnet"] == "10.98.0.0/16")
        .and_then(|e| e["reason"].as_str())
        .unwrap_or("");
    ensure!(
        unreachable.contains("no route"),
        "10.98.0.0/16: {unreachable:?}"
    );
    for (subnet, kind) in [
        ("10.97.0.0/16", "blackhole"),
        ("10.96.0.0/16", "unreachable"),
    ] {
        let reason = list
            .iter()
            .find(|e| e["subnet"] == subnet)
            .and_then(|e| e["reason"].as_str())
            .unwrap_or("");
        ensure!(reason.contains(kind), "{subnet}: {reason:?}");
    }

    // The table form says the same in words.
    let table = gw.exec_output(&[gw_bin, "discover", "--tunnel", "enctun0"])?;
    ensure!(table.status.success(), "discover without checks exits 0");
    let table = String::from_utf8_lossy(&table.stdout);
    ensure!(
        table
            .lines()
            .any(|l| l.starts_with("172.20.0.0/24") && l.contains("taken")),
        "table:\n{table}"
    );
    Ok(())
}
