//! Pieces that several scenarios and benchmarks share: the reference topology, and a
//! wireguard-go interface configured with `wg`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use enclave_netns::{Netns, Process, SpawnOpts, TopologySpec};

/// The underlay address of the sender in the reference topology.
pub const SENDER_UNDERLAY: &str = "10.10.0.2";
/// The gateway's underlay address in the reference topology.
pub const GATEWAY_UNDERLAY: &str = "10.10.0.1";
/// The gateway's address on the LAN.
pub const GATEWAY_LAN: &str = "192.168.77.1";
/// The LAN host's address.
pub const LAN_HOST: &str = "192.168.77.10";
/// The LAN subnet behind the gateway.
pub const LAN_SUBNET: &str = "192.168.77.0/24";
/// The sender's overlay address.
pub const SENDER_OVERLAY: &str = "100.64.0.2";
/// The gateway's overlay address.
pub const GATEWAY_OVERLAY: &str = "100.64.0.1";
/// The overlay network.
pub const OVERLAY: &str = "100.64.0.0/10";
/// The UDP port both WireGuard ends listen on.
pub const WG_PORT: u16 = 51820;

/// A network definition for the reference topology run by our agents: the laptop (tag
/// `users`) and one gateway, reachable at [`GATEWAY_UNDERLAY`], that serves [`LAN_SUBNET`] to
/// `users` under the policy `policy` with the ACL entries `acl`.
#[derive(Debug, Clone, Copy)]
pub struct OneGateway<'a> {
    /// The laptop's public key.
    pub laptop_key: &'a str,
    /// The laptop's virtual address.
    pub laptop_address: &'a str,
    /// The gateway's system name.
    pub gateway: &'a str,
    /// The gateway's public key.
    pub gateway_key: &'a str,
    /// The gateway's virtual address.
    pub gateway_address: &'a str,
    /// The gateway policy's name.
    pub policy: &'a str,
    /// The policy's ACL entries, as TOML inline tables.
    pub acl: &'a str,
}

impl OneGateway<'_> {
    /// The definition's text.
    pub fn definition(&self) -> String {
        let OneGateway {
            laptop_key,
            laptop_address,
            gateway,
            gateway_key,
            gateway_address,
            policy,
            acl,
        } = self;
        format!(
            r#"[network]
overlay = "{OVERLAY}"

[[system]]
name = "laptop"
public_key = "{laptop_key}"
address = "{laptop_address}"
tags = ["users"]

[[system]]
name = "{gateway}"
public_key = "{gateway_key}"
address = "{gateway_address}"
endpoint = "{GATEWAY_UNDERLAY}:{WG_PORT}"

[system.gateway]
allowed = true
subnets = ["{LAN_SUBNET}"]

[[gateway_policy]]
name = "{policy}"
senders = ["users"]
gateways = ["{gateway}"]
subnets = ["{LAN_SUBNET}"]
acl = [{acl}]
"#
        )
    }
}

/// Whether IPv4 forwarding is on in `ns`.
pub fn forwarding(ns: &Netns) -> anyhow::Result<bool> {
    let value = ns.exec(&["cat", "/proc/sys/net/ipv4/ip_forward"])?;
    match value.trim() {
        "0" => Ok(false),
        "1" => Ok(true),
        other => anyhow::bail!("net.ipv4.ip_forward is {other:?}"),
    }
}

/// Turns IPv4 forwarding in `ns` on or off.
pub fn set_forwarding(ns: &Netns, on: bool) -> anyhow::Result<()> {
    let value = format!("net.ipv4.ip_forward={}", u8::from(on));
    ns.exec(&["sysctl", "-q", "-w", &value])?;
    Ok(())
}

/// The reference topology: `sender` ↔ `gw` over a veth pair (the underlay), and `gw` ↔ `lan`
/// on a bridged segment (the Menlo Park office LAN). The LAN host has no route to the overlay,
/// so only SNAT on the gateway lets it answer.
pub fn reference_topology(tag: &str) -> TopologySpec {
    let mut spec = reference_without_forwarding(tag);
    spec.sysctl("gw", "net.ipv4.ip_forward", "1");
    spec
}

/// [`reference_topology`] with forwarding left off on the gateway, as a fresh host has it.
pub fn reference_without_forwarding(tag: &str) -> TopologySpec {
    let mut spec = TopologySpec::new(tag);
    spec.node("sender")
        .node("gw")
        .node("lan")
        .link(("sender", "eth0"), ("gw", "eth0"))
        .segment("lan", &[("gw", "lan0"), ("lan", "eth0")])
        .addr("sender", "eth0", &format!("{SENDER_UNDERLAY}/24"))
        .addr("gw", "eth0", &format!("{GATEWAY_UNDERLAY}/24"))
        .addr("gw", "lan0", &format!("{GATEWAY_LAN}/24"))
        .addr("lan", "eth0", &format!("{LAN_HOST}/24"));
    spec
}

/// SNAT on the reference gateway, in an nftables table `table` of its own: what leaves for
/// the LAN (`lan0`) from `source` (from anywhere when `None`) leaves from [`GATEWAY_LAN`], so
/// that the LAN host, which has no route back, can answer. The rule counts what it translates.
pub fn snat_to_lan(gw: &Netns, table: &str, source: Option<&str>) -> anyhow::Result<()> {
    let source = source.map_or(String::new(), |net| format!("ip saddr {net} "));
    gw.exec(&[
        "nft",
        &format!(
            "add table ip {table}; \
             add chain ip {table} post {{ type nat hook postrouting priority srcnat; }}; \
             add rule ip {table} post oifname \"lan0\" {source}counter snat to {GATEWAY_LAN}"
        ),
    ])?;
    Ok(())
}

/// A WireGuard key pair made by `wg genkey` / `wg pubkey`, base64 as `wg` prints them.
#[derive(Debug, Clone)]
pub struct KeyPair {
    /// The private key.
    pub private: String,
    /// The public key.
    pub public: String,
}

/// Makes a key pair with `wg` inside `ns`.
pub fn wg_keypair(ns: &Netns) -> anyhow::Result<KeyPair> {
    let private = ns.exec(&["wg", "genkey"])?.trim().to_owned();
    let public = ns
        .exec(&[
            "sh",
            "-c",
            "printf '%s\\n' \"$1\" | wg pubkey",
            "sh",
            &private,
        ])?
        .trim()
        .to_owned();
    Ok(KeyPair { private, public })
}

/// Writes `key` to `dir/name` with mode 0600 and returns the path.
pub fn write_key(dir: &Path, name: &str, key: &str) -> anyhow::Result<std::path::PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join(name);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    writeln!(file, "{key}")?;
    Ok(path)
}

/// Connects over TCP from `ns` to the echo server at `to` (`(IP, PORT)`, waiting up to 3 s)
/// and checks that the server saw the connection come from the address `source` (compared as
/// an IP address, so that 10.0.0.1 is not taken for 10.0.0.12); `whom` names that address and
/// `server` the server in the error.
pub fn expect_tcp_source(
    ns: &Netns,
    (ip, port): (&str, u16),
    source: &str,
    whom: &str,
    server: &str,
) -> anyhow::Result<()> {
    let to = SocketAddr::new(ip.parse()?, port);
    let seen = ns.tcp_request(to, Duration::from_secs(3))?;
    let ip = seen.parse::<SocketAddr>().map(|addr| addr.ip().to_string());
    anyhow::ensure!(
        ip.as_deref() == Ok(source),
        "{server} saw the TCP connection come from {seen}, not from {whom} ({source})"
    );
    Ok(())
}

/// Pings `dst` `count` times from `ns` and fails unless every request is answered; the error
/// is `what` with ping's output.
pub fn expect_all_answered(ns: &Netns, dst: &str, count: u32, what: &str) -> anyhow::Result<()> {
    let ping = ns.ping(dst, count)?;
    anyhow::ensure!(ping.all_answered(), "{what}:\n{}", ping.output);
    Ok(())
}

/// Starts `wireguard-go -f IFACE` in `ns` and waits until its UAPI socket answers.
pub fn start_wireguard_go(ns: &Netns, iface: &str) -> anyhow::Result<Process> {
    let process = ns.spawn(
        &format!("wireguard-go-{}", ns.node()),
        &["wireguard-go", "-f", iface],
        SpawnOpts::default()
            .env("LOG_LEVEL", "debug")
            .env("WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD", "1"),
    )?;
    await_uapi(ns, process, iface, "wireguard-go")
}

/// Waits up to 10 s until the UAPI socket of `iface` in `ns` exists and `wg show` answers on
/// it, then hands `process` (which serves it, named `what` in the error) back.
pub fn await_uapi(
    ns: &Netns,
    mut process: Process,
    iface: &str,
    what: &str,
) -> anyhow::Result<Process> {
    let socket = ns.wireguard_dir().join(format!("{iface}.sock"));
    let up = enclave_netns::wait_until(Duration::from_secs(10), || {
        socket.exists() && ns.exec(&["wg", "show", iface]).is_ok()
    });
    if !up {
        let running = process.is_running();
        anyhow::bail!(
            "{what} did not bring up {iface} in {} within 10 s (running: {running}); log:\n{}",
            ns.node(),
            process.log()
        );
    }
    Ok(process)
}

/// One peer of a `wg set` command.
#[derive(Debug, Clone)]
pub struct WgPeer<'a> {
    /// The peer's public key (base64).
    pub public_key: &'a str,
    /// Comma-separated allowed IPs.
    pub allowed_ips: &'a str,
    /// `IP:PORT`, when this side should know where the peer is.
    pub endpoint: Option<String>,
}

/// Configures `iface` in `ns` with `wg set` (key, port, one peer), gives it `address` and brings
/// it up.
pub fn wg_configure(
    ns: &Netns,
    iface: &str,
    key_file: &Path,
    address: &str,
    peer: &WgPeer<'_>,
) -> anyhow::Result<()> {
    let port = WG_PORT.to_string();
    let key_file = key_file.to_string_lossy();
    let mut argv = vec![
        "wg",
        "set",
        iface,
        "listen-port",
        &port,
        "private-key",
        &key_file,
        "peer",
        peer.public_key,
        "allowed-ips",
        peer.allowed_ips,
    ];
    if let Some(endpoint) = &peer.endpoint {
        argv.extend(["endpoint", endpoint.as_str()]);
    }
    ns.exec(&argv)?;
    ns.exec(&["ip", "addr", "add", address, "dev", iface])?;
    ns.exec(&["ip", "link", "set", iface, "up"])?;
    Ok(())
}

/// One end of a tunnel that [`configure_pair`] sets up.
#[derive(Debug)]
pub struct TunnelEnd<'a> {
    /// Where it runs.
    pub ns: &'a Netns,
    /// Its private key is written as `NAME.key`.
    pub name: &'a str,
    /// Its tunnel address, with the prefix length.
    pub address: String,
    /// What the other end routes to it (the other end's allowed IPs for it).
    pub allowed_ips: String,
    /// Its `IP:PORT`, when the other end should know it (and so initiate).
    pub endpoint: Option<String>,
}

/// Configures `iface` (already running) at both ends with `wg`: fresh key pairs (the private
/// keys written to `dir`), each end the other's one peer.
pub fn configure_pair(
    dir: &Path,
    iface: &str,
    a: &TunnelEnd<'_>,
    b: &TunnelEnd<'_>,
) -> anyhow::Result<()> {
    let keys = (wg_keypair(a.ns)?, wg_keypair(b.ns)?);
    for (end, own, other, theirs) in [(a, &keys.0, b, &keys.1), (b, &keys.1, a, &keys.0)] {
        let key = write_key(dir, &format!("{}.key", end.name), &own.private)?;
        wg_configure(
            end.ns,
            iface,
            &key,
            &end.address,
            &WgPeer {
                public_key: &theirs.public,
                allowed_ips: &other.allowed_ips,
                endpoint: other.endpoint.clone(),
            },
        )?;
    }
    Ok(())
}

/// Configures the reference tunnel with `wg` on the `wg0` interfaces that already run in the
/// sender and the gateway (wireguard-go's or ours): fresh keys (written to `dir` as
/// `TAG-sender.key` and `TAG-gw.key`), each side the other's peer, the sender routing the LAN
/// into the tunnel.
pub fn configure_reference_tunnel(
    dir: &Path,
    tag: &str,
    sender: &Netns,
    gw: &Netns,
) -> anyhow::Result<()> {
    configure_pair(
        dir,
        "wg0",
        &TunnelEnd {
            ns: sender,
            name: &format!("{tag}-sender"),
            address: format!("{SENDER_OVERLAY}/10"),
            allowed_ips: format!("{SENDER_OVERLAY}/32"),
            endpoint: None,
        },
        &TunnelEnd {
            ns: gw,
            name: &format!("{tag}-gw"),
            address: format!("{GATEWAY_OVERLAY}/10"),
            allowed_ips: format!("{GATEWAY_OVERLAY}/32,{LAN_SUBNET}"),
            endpoint: Some(format!("{GATEWAY_UNDERLAY}:{WG_PORT}")),
        },
    )?;
    sender.exec(&["ip", "route", "add", LAN_SUBNET, "dev", "wg0"])?;
    Ok(())
}
