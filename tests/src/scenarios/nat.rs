//! NAT manager scenarios: the nftables and iptables backends on a real gateway namespace, with a
//! wireguard-go tunnel from a sender and a LAN host behind the gateway.
//!
//! The gateway's forward filter is the NAT manager's (granted: the sender to 192.168.77.10 on
//! TCP 7000-7010, and ICMP from the overlay to the LAN); 192.168.77.20 (a second address of
//! the LAN host) is not granted, and the LAN host has a route back to the overlay so that only
//! the filter stops it from opening connections to the sender.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use enclave_nat::{
    AddressSet, BackendChoice, Flavor, ForwardGrant, IptablesBackend, NatBackend, NatManager,
    NatPolicy, NftBackend, OtherForwarding, PortRange, Protocol, RuleState, Ruleset, SnatRule,
    Verdict,
};
use enclave_netns::{wait_until, EchoServer, Netns, Process, Reached, SpawnOpts, Topology};

use crate::agents::{prepare, start, write_definition};
use crate::support::{
    self, configure_reference_tunnel, reference_topology, start_wireguard_go, OneGateway,
    GATEWAY_LAN, GATEWAY_OVERLAY, LAN_HOST, LAN_SUBNET, OVERLAY, SENDER_OVERLAY,
};
use crate::{Ctx, Scenario};

/// A LAN address the policy does not grant (a second address of the LAN host).
const LAN_DENIED: &str = "192.168.77.20";
const GRANTED_PORT: u16 = 7000;
const OTHER_PORT: u16 = 7777;
const SENDER_PORT: u16 = 7001;
const SHORT: Duration = Duration::from_millis(800);

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "nat-nftables",
            about: "nft backend: ruleset content, SNAT, grants, one way, counters, forwarding, idempotence, clean reset",
            run: nat_nftables,
        },
        Scenario {
            name: "nat-iptables",
            about: "iptables-legacy and iptables-nft backends: the guide's Chain ENCLAVE view, SNAT, one way, clean reset",
            run: nat_iptables,
        },
        Scenario {
            name: "nat-restart",
            about: "a gateway killed without reset and started again: no duplicate rule, forwarding restored",
            run: nat_restart,
        },
        Scenario {
            name: "nat-gw-kill9",
            about: "enclave-gw killed with SIGKILL and started again: the same rules, no duplicate; a clean stop removes them and restores forwarding",
            run: nat_gw_kill9,
        },
        Scenario {
            name: "nat-rejected-batch",
            about: "a rule the kernel rejects fails the whole batch, names the rule, leaves the table as it was",
            run: nat_rejected_batch,
        },
    ]
}

/// The policy every scenario applies on the gateway.
fn policy() -> anyhow::Result<NatPolicy> {
    Ok(NatPolicy {
        tunnel_interface: "wg0".into(),
        overlay: OVERLAY.parse()?,
        snat: vec![SnatRule {
            egress_interface: "lan0".into(),
            to: GATEWAY_LAN.parse()?,
            source: OVERLAY.parse()?,
        }],
        grants: vec![
            ForwardGrant {
                sources: AddressSet::new().net(format!("{SENDER_OVERLAY}/32").parse()?),
                destinations: AddressSet::new().net(format!("{LAN_HOST}/32").parse()?),
                protocol: Some(Protocol::Tcp),
                ports: Some(PortRange {
                    first: GRANTED_PORT,
                    last: GRANTED_PORT + 10,
                }),
                label: "web".into(),
            },
            ForwardGrant {
                sources: AddressSet::new().net(OVERLAY.parse()?),
                destinations: AddressSet::new().net(LAN_SUBNET.parse()?),
                protocol: Some(Protocol::Icmp),
                ports: None,
                label: "ping".into(),
            },
        ],
        host: None,
    })
}

/// The reference topology with a wireguard-go tunnel up between sender and gateway, echo
/// servers on the LAN host and on the sender, and forwarding still as the namespace had it.
struct Gateway {
    topo: Topology,
    _wg: [Process; 2],
    _lan_echo: [EchoServer; 2],
    _sender_echo: EchoServer,
}

impl Gateway {
    fn build(ctx: &Ctx, tag: &str) -> anyhow::Result<Gateway> {
        let topo = ctx.topology(&reference_topology(tag))?;
        let (sender, gw, lan) = (topo.ns("sender"), topo.ns("gw"), topo.ns("lan"));
        let sender_wg = start_wireguard_go(sender, "wg0")?;
        let gw_wg = start_wireguard_go(gw, "wg0")?;
        configure_reference_tunnel(ctx.log_dir(), tag, sender, gw)?;
        lan.exec(&[
            "ip",
            "addr",
            "add",
            &format!("{LAN_DENIED}/24"),
            "dev",
            "eth0",
        ])?;
        lan.exec(&["ip", "route", "add", OVERLAY, "via", GATEWAY_LAN])?;
        let lan_echo = [lan.echo_server(GRANTED_PORT)?, lan.echo_server(OTHER_PORT)?];
        let sender_echo = sender.echo_server(SENDER_PORT)?;
        // The first packet starts the handshake.
        let warm = sender.ping(GATEWAY_OVERLAY, 3)?;
        ensure!(
            warm.received > 0,
            "the tunnel does not come up:\n{}",
            warm.output
        );
        Ok(Gateway {
            topo,
            _wg: [sender_wg, gw_wg],
            _lan_echo: lan_echo,
            _sender_echo: sender_echo,
        })
    }

    fn ns(&self, node: &str) -> &Netns {
        self.topo.ns(node)
    }

    fn set_forwarding(&self, on: bool) -> anyhow::Result<()> {
        support::set_forwarding(self.ns("gw"), on)
    }

    fn forwarding(&self) -> anyhow::Result<bool> {
        support::forwarding(self.ns("gw"))
    }

    /// What the sender and the LAN host can reach right now.
    fn reach(&self) -> anyhow::Result<Reach> {
        let (sender, lan) = (self.ns("sender"), self.ns("lan"));
        let addr = |ip: &str, port: u16| -> anyhow::Result<SocketAddr> {
            Ok(format!("{ip}:{port}").parse()?)
        };
        let connects = |from: &Netns, ip: &str, port: u16| -> anyhow::Result<bool> {
            Ok(from.tcp_connect(addr(ip, port)?, SHORT).reached()?)
        };
        Ok(Reach {
            // Each probe that could not run is an error, never a "no".
            granted_tcp: sender
                .tcp_request(addr(LAN_HOST, GRANTED_PORT)?, SHORT)
                .answer()?,
            granted_ping: sender.ping(LAN_HOST, 2)?.all_answered(),
            other_port: connects(sender, LAN_HOST, OTHER_PORT)?,
            denied_host: connects(sender, LAN_DENIED, GRANTED_PORT)?,
            udp: sender
                .udp_probe(addr(LAN_HOST, GRANTED_PORT)?, SHORT)
                .reached()?,
            lan_to_sender: connects(lan, SENDER_OVERLAY, SENDER_PORT)?,
        })
    }
}

/// Which connections went through.
#[derive(Debug)]
struct Reach {
    /// The source address the LAN host saw for the granted TCP connection.
    granted_tcp: Option<String>,
    granted_ping: bool,
    other_port: bool,
    denied_host: bool,
    udp: bool,
    lan_to_sender: bool,
}

impl Reach {
    /// What the policy allows: only the grants, SNATed, one way.
    fn check_enforced(&self) -> anyhow::Result<()> {
        let seen = self
            .granted_tcp
            .as_deref()
            .context("the granted TCP connection to the LAN host failed")?;
        ensure!(
            seen.starts_with(&format!("{GATEWAY_LAN}:")),
            "the LAN host saw the granted connection come from {seen}, not from the gateway's LAN address"
        );
        ensure!(self.granted_ping, "the granted ping to the LAN host failed");
        ensure!(
            !self.other_port,
            "a TCP port outside the grant was reachable"
        );
        ensure!(
            !self.denied_host,
            "a LAN address outside the grant was reachable"
        );
        ensure!(!self.udp, "UDP went through a TCP-only grant");
        ensure!(
            !self.lan_to_sender,
            "the LAN host opened a connection into the overlay"
        );
        Ok(())
    }

    /// What the policy without its ICMP grant allows.
    fn check_tcp_only(&self) -> anyhow::Result<()> {
        ensure!(
            self.granted_tcp.is_some(),
            "the granted TCP connection failed"
        );
        ensure!(
            !self.granted_ping,
            "ping went through after its grant was revoked"
        );
        ensure!(
            !self.lan_to_sender,
            "the LAN host opened a connection into the overlay"
        );
        Ok(())
    }

    /// Without any filter everything goes through (so the checks above can fail).
    fn check_open(&self) -> anyhow::Result<()> {
        ensure!(
            self.granted_tcp.is_some()
                && self.other_port
                && self.denied_host
                && self.udp
                && self.lan_to_sender,
            "without the NAT manager's filter the test network is not open: {self:?}"
        );
        Ok(())
    }
}

/// Checks that `rules` hold a rule with each of `comments` and that its counter moved.
fn counters_moved(rules: &[RuleState], comments: &[&str]) -> anyhow::Result<()> {
    for comment in comments {
        let rule = rules
            .iter()
            .find(|r| r.comment == *comment)
            .with_context(|| format!("no rule {comment:?} in {rules:?}"))?;
        ensure!(
            rule.packets > 0,
            "the counter of {comment:?} did not move: {rules:?}"
        );
    }
    Ok(())
}

/// `counter packets 12 bytes 1008` → `counter`, so a listing compares with [`Ruleset`]'s text.
fn strip_nft_counters(text: &str) -> String {
    let mut out = Vec::new();
    let mut words = text.split(' ').peekable();
    while let Some(word) = words.next() {
        out.push(word);
        if word.ends_with("counter") && words.peek() == Some(&"packets") {
            for _ in 0..4 {
                words.next();
            }
        }
    }
    out.join(" ")
}

/// `iptables-save` without its comments and with every `[packets:bytes]` zeroed.
fn strip_save(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match (l.starts_with(':'), l.rfind(" [")) {
            (true, Some(at)) => format!("{} [0:0]", &l[..at]),
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn in_gw<T: Send>(gw: &Netns, f: impl FnOnce() -> T + Send) -> anyhow::Result<T> {
    Ok(gw.run_in(f)?)
}

/// Another program's nftables table and iptables chain, which we must never touch.
fn install_foreign_rules(gw: &Netns) -> anyhow::Result<()> {
    gw.exec(&[
        "nft",
        "add table inet other; \
         add chain inet other foreign { type filter hook forward priority 10; policy accept; }; \
         add rule inet other foreign ip saddr 10.99.0.0/16 counter accept",
    ])?;
    Ok(())
}

fn nat_nftables(ctx: &Ctx) -> anyhow::Result<()> {
    let net = Gateway::build(ctx, "natnft")?;
    let gw = net.ns("gw");
    install_foreign_rules(gw)?;

    // With forwarding on and no filter, everything is reachable both ways.
    net.set_forwarding(true)?;
    net.reach()?.check_open()?;
    net.set_forwarding(false)?;
    let before = gw.exec(&["nft", "list", "ruleset"])?;

    let policy = policy()?;
    let mut manager = in_gw(gw, || NatManager::new(BackendChoice::Auto, None))??;
    ensure!(
        manager.backend_name() == "nftables",
        "auto chose {} where nftables works",
        manager.backend_name()
    );
    in_gw(gw, || manager.apply_policy(&policy))??;
    ensure!(net.forwarding()?, "forwarding is off after apply");

    let listed = gw.exec(&["nft", "list", "table", "ip", "enclave"])?;
    // Forwarding was off before: the table also drops what does not touch the tunnel.
    let expected = Ruleset::for_gateway(&policy, OtherForwarding::Dropped).to_string();
    ensure!(
        strip_nft_counters(&listed) == expected,
        "the kernel's table differs from the ruleset asked for:\n--- nft list\n{listed}\n--- expected\n{expected}"
    );

    net.reach()?.check_enforced()?;

    // Counters after the traffic: every kind of rule was hit.
    let backend_state = in_gw(gw, || {
        let mut nft = NftBackend::new();
        nft.apply(&policy, OtherForwarding::Dropped)?;
        nft.state()
    })??;
    // The re-apply above replaced the table (counters restart at zero); send traffic again.
    net.reach()?
        .check_enforced()
        .context("after applying the same policy again")?;
    let state = in_gw(gw, || NftBackend::new().state())??;
    let via_manager = in_gw(gw, || manager.rules())??;
    ensure!(
        via_manager == state.rules,
        "the manager reports other rules than the table holds: {via_manager:?}"
    );
    ensure!(
        backend_state.rules.len() == state.rules.len(),
        "apply twice changed the number of rules: {} then {}",
        backend_state.rules.len(),
        state.rules.len()
    );
    let listed_again = gw.exec(&["nft", "list", "table", "ip", "enclave"])?;
    ensure!(
        strip_nft_counters(&listed_again) == expected,
        "applying twice changed the table:\n{listed_again}"
    );
    counters_moved(
        &state.rules,
        &[
            "snat lan0 to 192.168.77.1",
            "grant 0: web",
            "grant 1: ping",
            "replies to the overlay",
            "drop the rest from the overlay",
            "one way: no new connections into the overlay",
        ],
    )?;
    println!("{listed_again}");

    // The manager applying the same policy again leaves the table alone: counters keep counting.
    in_gw(gw, || manager.apply_policy(&policy))??;
    let kept = in_gw(gw, || NftBackend::new().state())??;
    ensure!(
        kept.rules == state.rules,
        "re-applying the same policy replaced the table:\n{:?}\n{:?}",
        state.rules,
        kept.rules
    );

    // Revoking a grant stops its open flows too: a running ping (one conntrack entry, so
    // established after its first reply) gets no more replies once the ICMP grant is gone.
    let sender = net.ns("sender");
    let mut pinger = sender.spawn(
        "ping-revoked",
        &["ping", "-n", "-i", "0.2", LAN_HOST],
        SpawnOpts::default(),
    )?;
    pinger.wait_for_log("bytes from", Duration::from_secs(5))?;
    let mut revoked = policy.clone();
    revoked
        .grants
        .retain(|g| g.protocol != Some(Protocol::Icmp));
    in_gw(gw, || manager.apply_policy(&revoked))??;
    // A reply already on its way may still land.
    std::thread::sleep(Duration::from_millis(500));
    let replies = pinger.log().matches("bytes from").count();
    std::thread::sleep(Duration::from_millis(1500));
    let later = pinger.log().matches("bytes from").count();
    pinger.stop();
    ensure!(
        later == replies,
        "ping replies kept coming after the ICMP grant was revoked ({replies} then {later})"
    );
    net.reach()?
        .check_tcp_only()
        .context("after revoking the ICMP grant")?;

    in_gw(gw, || manager.reset_policy())??;
    ensure!(!net.forwarding()?, "forwarding was not restored to off");
    let after = gw.exec(&["nft", "list", "ruleset"])?;
    ensure!(
        strip_nft_counters(&after) == strip_nft_counters(&before),
        "reset did not leave the ruleset as before:\n--- before\n{before}\n--- after\n{after}"
    );
    ensure!(
        after.contains("table inet other"),
        "the other program's table is gone"
    );

    // A host that forwarded before us: nothing is added for its other interfaces, and reset
    // leaves forwarding on.
    net.set_forwarding(true)?;
    let mut manager = in_gw(gw, || NatManager::new(BackendChoice::Nftables, None))??;
    in_gw(gw, || manager.apply_policy(&policy))??;
    let listed = gw.exec(&["nft", "list", "table", "ip", "enclave"])?;
    let expected = Ruleset::for_gateway(&policy, OtherForwarding::Untouched).to_string();
    ensure!(
        strip_nft_counters(&listed) == expected,
        "on a host that forwarded, the table differs:\n--- nft list\n{listed}\n--- expected\n{expected}"
    );
    ensure!(
        !listed.contains(enclave_nat::OTHER_FORWARDING_COMMENT),
        "a host that forwarded got a drop for its other interfaces:\n{listed}"
    );
    in_gw(gw, || manager.reset_policy())??;
    ensure!(
        net.forwarding()?,
        "reset turned off the host's own forwarding"
    );
    Ok(())
}

fn nat_iptables(ctx: &Ctx) -> anyhow::Result<()> {
    let net = Gateway::build(ctx, "natipt")?;
    let gw = net.ns("gw");
    for flavor in [Flavor::Legacy, Flavor::Nft] {
        let bin = match flavor {
            Flavor::Legacy => "iptables-legacy",
            Flavor::Nft => "iptables-nft",
        };
        let save = format!("{bin}-save");
        // Another program's chain in the nat table, jumped to from POSTROUTING.
        gw.exec(&[bin, "-t", "nat", "-N", "OTHER"])?;
        gw.exec(&[bin, "-t", "nat", "-A", "POSTROUTING", "-j", "OTHER"])?;
        gw.exec(&[
            bin,
            "-t",
            "nat",
            "-A",
            "OTHER",
            "-s",
            "10.99.0.0/16",
            "-j",
            "MASQUERADE",
        ])?;
        // And another program's forward rule, added and (at the end) deleted.
        let other_forward = |op| {
            [
                bin,
                "-t",
                "filter",
                op,
                "FORWARD",
                "-s",
                "10.98.0.0/16",
                "-j",
                "ACCEPT",
            ]
        };
        gw.exec(&other_forward("-A"))?;

        net.set_forwarding(true)?;
        net.reach()?
            .check_open()
            .with_context(|| format!("before {bin}"))?;
        net.set_forwarding(false)?;
        let before = gw.exec(&[&save])?;

        let policy = policy()?;
        let mut manager = in_gw(gw, || {
            NatManager::new(BackendChoice::Iptables(flavor), None)
        })??;
        in_gw(gw, || manager.apply_policy(&policy))??;
        in_gw(gw, || manager.apply_policy(&policy))??; // twice: still one of everything
        ensure!(net.forwarding()?, "{bin}: forwarding is off after apply");
        net.reach()?
            .check_enforced()
            .with_context(|| bin.to_string())?;

        let view = gw.exec(&[bin, "-t", "nat", "-L", "-n", "-v"])?;
        println!("{bin} -t nat -L -n -v\n{view}");
        let chain = view
            .split("\n\n")
            .find(|block| block.starts_with("Chain ENCLAVE "))
            .with_context(|| format!("{bin}: no Chain ENCLAVE in\n{view}"))?;
        ensure!(
            chain.starts_with("Chain ENCLAVE (1 references)"),
            "{bin}: {chain}"
        );
        let snat = chain
            .lines()
            .find(|l| l.contains("SNAT"))
            .with_context(|| format!("{bin}: no SNAT rule in\n{chain}"))?;
        ensure!(
            snat.contains(&format!("to:{GATEWAY_LAN}")) && snat.contains("lan0"),
            "{bin}: the SNAT rule is not the guide's: {snat}"
        );
        let packets: u64 = snat
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        ensure!(packets > 0, "{bin}: the SNAT counter did not move: {snat}");
        let counted = in_gw(gw, || manager.rules())??;
        let web_and_ping = ["snat lan0 to 192.168.77.1", "grant 0: web", "grant 1: ping"];
        counters_moved(&counted, &web_and_ping).context(bin)?;
        let saved = gw.exec(&[&save])?;
        ensure!(
            saved.matches("-A POSTROUTING -j ENCLAVE").count() == 1
                && saved.matches("-A FORWARD -j ENCLAVE-FORWARD").count() == 1,
            "{bin}: applying twice did not leave exactly one jump each:\n{saved}"
        );

        in_gw(gw, || manager.reset_policy())??;
        ensure!(
            !net.forwarding()?,
            "{bin}: forwarding was not restored to off"
        );
        let after = gw.exec(&[&save])?;
        ensure!(
            strip_save(&after) == strip_save(&before),
            "{bin}: reset did not leave iptables as before:\n--- before\n{before}\n--- after\n{after}"
        );
        gw.exec(&[bin, "-t", "nat", "-D", "POSTROUTING", "-j", "OTHER"])?;
        gw.exec(&[bin, "-t", "nat", "-F", "OTHER"])?;
        gw.exec(&[bin, "-t", "nat", "-X", "OTHER"])?;
        gw.exec(&other_forward("-D"))?;
    }
    Ok(())
}

fn nat_restart(ctx: &Ctx) -> anyhow::Result<()> {
    let net = Gateway::build(ctx, "natrst")?;
    let gw = net.ns("gw");
    net.set_forwarding(false)?;
    let policy = policy()?;
    for choice in [
        BackendChoice::Nftables,
        BackendChoice::Iptables(Flavor::Legacy),
    ] {
        let state_file = ctx.log_dir().join(format!("forwarding-{choice:?}.state"));
        let listing = |choice: BackendChoice| -> anyhow::Result<String> {
            Ok(match choice {
                BackendChoice::Nftables => {
                    strip_nft_counters(&gw.exec(&["nft", "list", "table", "ip", "enclave"])?)
                }
                _ => strip_save(&gw.exec(&["iptables-legacy-save"])?),
            })
        };
        // The first run applies and dies without a reset (nothing of ours runs on SIGKILL).
        in_gw(gw, || -> enclave_nat::Result<()> {
            let mut manager = NatManager::new(choice, Some(state_file.clone()))?;
            manager.apply_policy(&policy)
        })??;
        let after_first = listing(choice)?;
        ensure!(
            net.forwarding()?,
            "{choice:?}: forwarding off after the first run"
        );
        // The second run starts over the leftovers.
        let mut second = in_gw(gw, || NatManager::new(choice, Some(state_file.clone())))??;
        in_gw(gw, || second.apply_policy(&policy))??;
        let after_second = listing(choice)?;
        ensure!(
            after_first == after_second,
            "{choice:?}: the restarted gateway changed the rules:\n--- first\n{after_first}\n--- second\n{after_second}"
        );
        net.reach()?.check_enforced()?;
        in_gw(gw, || second.reset_policy())??;
        ensure!(
            !net.forwarding()?,
            "{choice:?}: forwarding not restored to the value from before the first run"
        );
        ensure!(!state_file.exists(), "{choice:?}: the state file stayed");
    }
    Ok(())
}

fn nat_rejected_batch(ctx: &Ctx) -> anyhow::Result<()> {
    let mut spec = enclave_netns::TopologySpec::new("natrej");
    spec.node("gw");
    let topo = ctx.topology(&spec)?;
    let gw = topo.ns("gw");
    let policy = policy()?;
    let good = Ruleset::from_policy(&policy);
    let mut bad = good.clone();
    // SNAT in a filter chain: the kernel refuses it.
    let forward = bad
        .chains
        .iter_mut()
        .find(|c| c.name == enclave_nat::FORWARD_CHAIN)
        .context("no forward chain")?;
    let mut wrong = forward.rules[0].clone();
    wrong.verdict = Verdict::Snat(GATEWAY_LAN.parse()?);
    wrong.comment = "misplaced snat".into();
    forward.rules.insert(1, wrong);

    let (before, err) = in_gw(gw, || -> enclave_nat::Result<_> {
        let mut nft = NftBackend::new();
        nft.apply_ruleset(&good)?;
        let before = nft.state()?;
        Ok((before, nft.apply_ruleset(&bad).err()))
    })??;
    let Some(err) = err else {
        bail!("the kernel accepted SNAT in a filter chain");
    };
    let message = format!("{:#}", anyhow::Error::new(err));
    println!("rejected: {message}");
    ensure!(
        message.contains("misplaced snat"),
        "the error does not name the rejected rule: {message}"
    );
    let after = in_gw(gw, || NftBackend::new().state())??;
    // (A fresh backend does not know our set names; the listing below compares the sets.)
    ensure!(
        after.rules == before.rules,
        "the rejected batch changed the table:\n{before:?}\n{after:?}"
    );
    let listed = gw.exec(&["nft", "list", "table", "ip", "enclave"])?;
    ensure!(
        strip_nft_counters(&listed) == good.to_string(),
        "the table is not the last good one:\n{listed}"
    );

    // The iptables backend: a rule iptables-restore refuses (an interface name too long).
    let mut long = policy.clone();
    long.snat[0].egress_interface = "lan0-but-far-too-long".into();
    let (legacy_err, saved) = in_gw(gw, || {
        let mut ipt = IptablesBackend::new(Flavor::Legacy);
        let err = ipt.apply_policy(&long).err();
        let saved = std::process::Command::new("iptables-legacy-save").output();
        (err, saved)
    })?;
    let legacy_err =
        legacy_err.context("iptables-legacy accepted a 21-character interface name")?;
    let message = format!("{:#}", anyhow::Error::new(legacy_err));
    println!("iptables rejected: {message}");
    ensure!(
        message.contains("lan0-but-far-too-long -m comment"),
        "the iptables error does not name the rejected rule: {message}"
    );
    let saved = String::from_utf8_lossy(&saved?.stdout).into_owned();
    ensure!(
        !saved.contains("ENCLAVE"),
        "a rejected iptables apply left something of ours:\n{saved}"
    );

    // The manager: a refused apply leaves forwarding off, and says so.
    support::set_forwarding(gw, false)?;
    let refused = in_gw(gw, || {
        NatManager::new(BackendChoice::Iptables(Flavor::Legacy), None)
            .and_then(|mut m| m.apply_policy(&long))
            .err()
    })?
    .context("the NAT manager accepted a 21-character interface name")?;
    ensure!(
        !support::forwarding(gw)?,
        "a refused apply turned forwarding on"
    );
    // The error and its causes on one line.
    let message = format!("{:#}", anyhow::Error::new(refused));
    println!("manager refused: {message}");
    ensure!(
        message.contains("IPv4 forwarding was left as it was (off)"),
        "the manager's error does not say what became of forwarding: {message}"
    );
    Ok(())
}

/// A network definition in which `gw` serves the LAN to `laptop`.
fn gateway_definition(laptop_key: &str, gw_key: &str) -> String {
    OneGateway {
        laptop_key,
        laptop_address: SENDER_OVERLAY,
        gateway: "gw",
        gateway_key: gw_key,
        gateway_address: GATEWAY_OVERLAY,
        policy: "users to the LAN",
        acl: &format!(r#"{{ protocol = "tcp", ports = "{GRANTED_PORT}" }}"#),
    }
    .definition()
}

fn nat_gw_kill9(ctx: &Ctx) -> anyhow::Result<()> {
    for backend in ["nftables", "iptables"] {
        gw_kill9(ctx, backend).with_context(|| format!("with nat = {backend:?}"))?;
    }
    Ok(())
}

fn gw_kill9(ctx: &Ctx, backend: &str) -> anyhow::Result<()> {
    let spec = support::reference_without_forwarding(&format!("natk9{}", &backend[..3]));
    let topo = ctx.topology(&spec)?;
    let (sender, gw) = (topo.ns("sender"), topo.ns("gw"));
    let network = ctx.log_dir().join(format!("network-{backend}.toml"));
    let laptop = prepare(ctx, sender, &network, "")?;
    let gw_files = prepare(ctx, gw, &network, &format!("nat = {backend:?}"))?;
    write_definition(
        &network,
        &gateway_definition(&laptop.public_key, &gw_files.public_key),
    )?;
    ensure!(
        !support::forwarding(gw)?,
        "the topology should start without forwarding"
    );
    let listing = || -> String {
        let text = match backend {
            "nftables" => gw
                .exec(&["nft", "list", "table", "ip", "enclave"])
                .map(|t| strip_nft_counters(&t)),
            _ => gw.exec(&["iptables-save"]).map(|t| strip_save(&t)),
        };
        text.unwrap_or_default()
    };
    let has_snat = |text: &str| text.contains(GATEWAY_LAN) && text.contains("ENCLAVE");

    let mut first = start(ctx, gw, &gw_files, true)?;
    ensure!(
        wait_until(Duration::from_secs(10), || has_snat(&listing())),
        "enclave-gw put no SNAT in place:\n{}\n{}",
        listing(),
        first.log()
    );
    let applied = listing();
    first.kill9();
    ensure!(!first.is_running(), "enclave-gw survived SIGKILL");
    ensure!(
        listing() == applied,
        "the rules changed when enclave-gw was killed (nothing of it should run)"
    );

    let mut second = start(ctx, gw, &gw_files, true)?;
    let settled = wait_until(Duration::from_secs(10), || listing() == applied);
    let now = listing();
    ensure!(
        settled,
        "after the restart the rules differ:\n--- before SIGKILL\n{applied}\n--- after restart\n{now}"
    );
    if backend == "iptables" {
        ensure!(
            now.matches("-A POSTROUTING -j ENCLAVE").count() == 1
                && now.matches("-A FORWARD -j ENCLAVE-FORWARD").count() == 1,
            "duplicate jumps after the restart:\n{now}"
        );
    }
    ensure!(
        support::forwarding(gw)?,
        "forwarding is off while the gateway runs"
    );

    let code = second.stop().context("enclave-gw could not be reaped")?;
    ensure!(
        code.success(),
        "enclave-gw exited with {code}:\n{}",
        second.log()
    );
    let left = listing();
    ensure!(
        !left.contains("ENCLAVE"),
        "a clean stop left rules of ours:\n{left}"
    );
    ensure!(
        !support::forwarding(gw)?,
        "forwarding was not restored to its value from before the first (killed) run"
    );
    Ok(())
}
