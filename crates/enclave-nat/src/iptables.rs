//! The iptables-compat backend: chain `ENCLAVE` in the nat table, jumped to from POSTROUTING,
//! and chain `ENCLAVE-FORWARD` in the filter table, jumped to from the top of FORWARD; both
//! replaced whole by one `iptables-restore --noflush` per apply, which is atomic per table.
//!
//! Rendering the restore text and reading `iptables-save` are sans-IO; the shell only runs the
//! chosen binaries (`iptables-legacy*` or `iptables-nft*`).

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};

use crate::model::{OtherForwarding, FORWARD_CHAIN, NAT_CHAIN, OTHER_FORWARDING_COMMENT};
use crate::policy::{comment_text, interval_text, NatPolicy, Protocol};
use crate::{Error, NatBackend, Result, RuleState};

/// Which iptables the backend drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `iptables-legacy`, `iptables-legacy-restore`, `iptables-legacy-save` (x_tables).
    Legacy,
    /// `iptables-nft`, `iptables-nft-restore`, `iptables-nft-save` (nf_tables underneath).
    Nft,
}

impl Flavor {
    fn binary(self, tool: &str) -> String {
        match self {
            Flavor::Legacy => format!("iptables-legacy{tool}"),
            Flavor::Nft => format!("iptables-nft{tool}"),
        }
    }

    /// The flavor `iptables` itself is on this system (Debian's alternatives), else the first
    /// that answers.
    pub fn detect() -> Option<Flavor> {
        if let Ok(out) = Command::new("iptables").arg("--version").output() {
            let text = String::from_utf8_lossy(&out.stdout);
            if text.contains("nf_tables") {
                return Some(Flavor::Nft);
            }
            if text.contains("legacy") {
                return Some(Flavor::Legacy);
            }
        }
        [Flavor::Nft, Flavor::Legacy].into_iter().find(|f| {
            Command::new(f.binary(""))
                .args(["-w", "-t", "nat", "-S", "POSTROUTING"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        })
    }
}

/// What `iptables-save` shows of ours in one table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Presence {
    /// Our chain is declared.
    pub chain: bool,
    /// How many rules our chain holds.
    pub rules: usize,
    /// How many jumps to our chain the hook chain holds.
    pub jumps: usize,
}

/// Reads our chain out of `iptables-save -t TABLE` output (sans-IO).
pub fn presence(save: &str, chain: &str, hook: &str) -> Presence {
    let declared = format!(":{chain} ");
    let rule = format!("-A {chain} ");
    let jump = format!("-A {hook} -j {chain}");
    let mut p = Presence::default();
    for line in save.lines().map(str::trim_end) {
        if line.starts_with(&declared) {
            p.chain = true;
        } else if line.starts_with(&rule) {
            p.rules += 1;
        } else if line == jump {
            p.jumps += 1;
        }
    }
    p
}

fn quote(comment: &str) -> String {
    format!("\"{}\"", comment_text(comment))
}

fn address_args(
    flag: &str,
    range_flag: &str,
    first: std::net::Ipv4Addr,
    last: std::net::Ipv4Addr,
) -> String {
    let text = interval_text(first, last);
    if text.contains('-') {
        format!("-m iprange {range_flag} {text}")
    } else if text.contains('/') {
        format!("{flag} {text}")
    } else {
        format!("{flag} {text}/32")
    }
}

/// The nat-table restore text for `policy`, given what is there now.
pub fn render_nat(policy: &NatPolicy, now: Presence) -> String {
    let mut snat = policy.snat.clone();
    snat.sort();
    snat.dedup();
    let mut out = String::from("*nat\n");
    let _ = writeln!(out, ":{NAT_CHAIN} - [0:0]");
    for s in &snat {
        let _ = writeln!(
            out,
            "-A {NAT_CHAIN} -s {} -o {} -m comment --comment {} -j SNAT --to-source {}",
            s.source,
            s.egress_interface,
            quote(&format!("snat {} to {}", s.egress_interface, s.to)),
            s.to
        );
    }
    fix_jumps(&mut out, "POSTROUTING", NAT_CHAIN, now.jumps, false);
    out.push_str("COMMIT\n");
    out
}

/// The filter-table restore text for `policy`, given what is there now; `others` says whether
/// traffic forwarded between two other interfaces is dropped.
pub fn render_filter(policy: &NatPolicy, others: OtherForwarding, now: Presence) -> String {
    let tun = &policy.tunnel_interface;
    let mut out = String::from("*filter\n");
    let _ = writeln!(out, ":{FORWARD_CHAIN} - [0:0]");
    let _ = writeln!(
        out,
        "-A {FORWARD_CHAIN} -o {tun} -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment {} -j ACCEPT",
        quote("replies to the overlay")
    );
    let _ = writeln!(
        out,
        "-A {FORWARD_CHAIN} -i {tun} -m conntrack --ctstate RELATED -m comment --comment {} -j ACCEPT",
        quote("related from the overlay")
    );
    for (i, grant) in policy.grants.iter().enumerate() {
        let comment = quote(&format!("grant {i}: {}", grant.label));
        let proto = match (grant.protocol, grant.ports) {
            (None, _) => String::new(),
            (Some(Protocol::Icmp), _) | (Some(_), None) => {
                format!(
                    " -p {}",
                    grant.protocol.map(Protocol::name).unwrap_or_default()
                )
            }
            (Some(p), Some(ports)) => format!(
                " -p {0} -m {0} --dport {1}:{2}",
                p.name(),
                ports.first,
                ports.last
            ),
        };
        for (sa, sb) in grant.sources.intervals() {
            for (da, db) in grant.destinations.intervals() {
                let _ = writeln!(
                    out,
                    "-A {FORWARD_CHAIN} -i {tun} {} {}{proto} -m conntrack --ctstate NEW,ESTABLISHED -m comment --comment {comment} -j ACCEPT",
                    address_args("-s", "--src-range", sa, sb),
                    address_args("-d", "--dst-range", da, db),
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "-A {FORWARD_CHAIN} -i {tun} -m comment --comment {} -j DROP",
        quote("drop the rest from the overlay")
    );
    let _ = writeln!(
        out,
        "-A {FORWARD_CHAIN} -o {tun} -m comment --comment {} -j DROP",
        quote("one way: no new connections into the overlay")
    );
    if others == OtherForwarding::Dropped {
        let _ = writeln!(
            out,
            "-A {FORWARD_CHAIN} ! -i {tun} ! -o {tun} -m comment --comment {} -j DROP",
            quote(OTHER_FORWARDING_COMMENT)
        );
    }
    fix_jumps(&mut out, "FORWARD", FORWARD_CHAIN, now.jumps, true);
    out.push_str("COMMIT\n");
    out
}

/// Leaves exactly one jump from `hook` to `chain`.
fn fix_jumps(out: &mut String, hook: &str, chain: &str, jumps: usize, first: bool) {
    if jumps == 0 {
        if first {
            let _ = writeln!(out, "-I {hook} 1 -j {chain}");
        } else {
            let _ = writeln!(out, "-A {hook} -j {chain}");
        }
    }
    for _ in 1..jumps {
        let _ = writeln!(out, "-D {hook} -j {chain}");
    }
}

/// The restore text that removes our chain and every jump to it, if there is anything.
pub fn render_removal(table: &str, hook: &str, chain: &str, now: Presence) -> Option<String> {
    if !now.chain && now.jumps == 0 {
        return None;
    }
    let mut out = format!("*{table}\n");
    for _ in 0..now.jumps {
        let _ = writeln!(out, "-D {hook} -j {chain}");
    }
    if now.chain {
        let _ = writeln!(out, "-F {chain}");
        let _ = writeln!(out, "-X {chain}");
    }
    out.push_str("COMMIT\n");
    Some(out)
}

/// The restore text that puts `chain` (in `table`, jumped to from `hook`) back as `before` (an
/// `iptables-save -t TABLE` taken earlier) shows it, given what is there now: its rules as they
/// were, or no chain at all when it was not declared (sans-IO).
pub fn render_rollback(
    table: &str,
    hook: &str,
    chain: &str,
    before: &str,
    now: Presence,
) -> Option<String> {
    if !presence(before, chain, hook).chain {
        return render_removal(table, hook, chain, now);
    }
    let append = format!("-A {chain} ");
    let mut out = format!("*{table}\n:{chain} - [0:0]\n");
    for line in before.lines().map(str::trim_end) {
        if line.starts_with(&append) {
            out.push_str(line);
            out.push('\n');
        }
    }
    fix_jumps(&mut out, hook, chain, now.jumps, table == "filter");
    out.push_str("COMMIT\n");
    Some(out)
}

/// Applies a [`NatPolicy`] with iptables.
#[derive(Debug)]
pub struct IptablesBackend {
    flavor: Flavor,
    /// What the last successful apply put in place.
    applied: Option<(NatPolicy, OtherForwarding)>,
}

impl IptablesBackend {
    /// A backend driving the given flavor.
    pub fn new(flavor: Flavor) -> Self {
        IptablesBackend {
            flavor,
            applied: None,
        }
    }

    /// The flavor in use.
    pub fn flavor(&self) -> Flavor {
        self.flavor
    }

    fn save(&self, table: &str) -> Result<String> {
        self.save_with(&["-t", table])
    }

    fn save_with(&self, args: &[&str]) -> Result<String> {
        let program = self.flavor.binary("-save");
        let out = Command::new(&program)
            .args(args)
            .output()
            .map_err(|source| Error::Spawn {
                program: program.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(Error::Command {
                program,
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn restore(&self, text: &str) -> Result<()> {
        let program = self.flavor.binary("-restore");
        let mut child = Command::new(&program)
            .args(["-w", "--noflush"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| Error::Spawn {
                program: program.clone(),
                source,
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(text.as_bytes())
                .map_err(|source| Error::Spawn {
                    program: program.clone(),
                    source,
                })?;
        }
        let out = child.wait_with_output().map_err(|source| Error::Spawn {
            program: program.clone(),
            source,
        })?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        match failed_line(&stderr).and_then(|n| text.lines().nth(n.saturating_sub(1))) {
            Some(line) => Err(Error::RestoreRejected {
                program,
                line: line.to_owned(),
                stderr,
            }),
            None => Err(Error::Command {
                program,
                status: out.status,
                stderr,
            }),
        }
    }

    fn presence(&self, table: &str, chain: &str, hook: &str) -> Result<Presence> {
        Ok(presence(&self.save(table)?, chain, hook))
    }
}

/// The rules of `chain` in `iptables-save -c` output, with their counters and comments
/// (sans-IO).
pub fn counted_rules(save: &str, chain: &str) -> Vec<RuleState> {
    let append = format!("-A {chain} ");
    save.lines()
        .filter_map(|line| {
            let (counters, rule) = line.strip_prefix('[')?.split_once("] ")?;
            if !rule.starts_with(&append) {
                return None;
            }
            let (packets, bytes) = counters.split_once(':')?;
            let comment = rule
                .split_once("--comment ")
                .map(|(_, rest)| match rest.strip_prefix('"') {
                    Some(quoted) => quoted.split('"').next().unwrap_or_default(),
                    None => rest.split(' ').next().unwrap_or_default(),
                })
                .unwrap_or_default();
            Some(RuleState {
                chain: chain.to_owned(),
                comment: comment.to_owned(),
                packets: packets.parse().ok()?,
                bytes: bytes.parse().ok()?,
            })
        })
        .collect()
}

/// The line number in `line N failed` (nft flavor) or `Error occurred at line: N` (legacy)
/// (sans-IO).
pub fn failed_line(stderr: &str) -> Option<usize> {
    stderr.match_indices("line").find_map(|(at, _)| {
        let rest = stderr[at + 4..].trim_start_matches([':', ' ']);
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

impl NatBackend for IptablesBackend {
    fn name(&self) -> &'static str {
        match self.flavor {
            Flavor::Legacy => "iptables-legacy",
            Flavor::Nft => "iptables-nft",
        }
    }

    fn apply(&mut self, policy: &NatPolicy, others: OtherForwarding) -> Result<()> {
        if policy.host.is_some() {
            return Err(Error::HostFilterUnsupported {
                backend: self.name(),
            });
        }
        let nat_before = self.save("nat")?;
        let nat_now = presence(&nat_before, NAT_CHAIN, "POSTROUTING");
        let filter_now = self.presence("filter", FORWARD_CHAIN, "FORWARD")?;
        let nat = render_nat(policy, nat_now);
        let filter = render_filter(policy, others, filter_now);
        let in_place = |text: &str, now: Presence, chain: &str, hook: &str| {
            now.chain && now.jumps == 1 && now.rules == presence(text, chain, hook).rules
        };
        let wanted = (policy.clone(), others);
        if self.applied.as_ref() == Some(&wanted)
            && in_place(&nat, nat_now, NAT_CHAIN, "POSTROUTING")
            && in_place(&filter, filter_now, FORWARD_CHAIN, "FORWARD")
        {
            // Idempotent: the same policy still in place is left alone.
            return Ok(());
        }
        self.applied = None;
        self.restore(&nat)?;
        if let Err(e) = self.restore(&filter) {
            // The filter table is as it was (a restore is atomic per table): whatever filtered
            // before (our previous rules, or a crashed run's) keeps filtering. Put the nat
            // table back as it was too, rather than removing our rules, which would leave
            // forwarding without a filter.
            let now = self.presence("nat", NAT_CHAIN, "POSTROUTING");
            if let Some(text) = now
                .ok()
                .and_then(|now| render_rollback("nat", "POSTROUTING", NAT_CHAIN, &nat_before, now))
            {
                if let Err(rollback) = self.restore(&text) {
                    tracing::warn!(error = %rollback, "could not put the nat table back as it was");
                }
            }
            return Err(e);
        }
        // Read back: exactly the rules we rendered, and one jump each.
        for (table, chain, hook, text) in [
            ("nat", NAT_CHAIN, "POSTROUTING", &nat),
            ("filter", FORWARD_CHAIN, "FORWARD", &filter),
        ] {
            let want = presence(text, chain, hook).rules;
            let have = self.presence(table, chain, hook)?;
            if have.rules != want || have.jumps != 1 || !have.chain {
                return Err(Error::ReadBack(format!(
                    "{table} table: chain {chain} has {} rules (expected {want}) and {} jumps from {hook} (expected 1)",
                    have.rules, have.jumps
                )));
            }
        }
        self.applied = Some(wanted);
        Ok(())
    }

    fn rules(&self) -> Result<Vec<RuleState>> {
        let mut rules = counted_rules(&self.save_with(&["-c", "-t", "nat"])?, NAT_CHAIN);
        rules.extend(counted_rules(
            &self.save_with(&["-c", "-t", "filter"])?,
            FORWARD_CHAIN,
        ));
        Ok(rules)
    }

    fn reset_policy(&mut self) -> Result<()> {
        for (table, chain, hook) in [
            ("nat", NAT_CHAIN, "POSTROUTING"),
            ("filter", FORWARD_CHAIN, "FORWARD"),
        ] {
            let now = self.presence(table, chain, hook)?;
            if let Some(text) = render_removal(table, hook, chain, now) {
                self.restore(&text)?;
            }
        }
        self.applied = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::web_grant;
    use expect_test::expect;

    /// The sample gateway with a grant that uses a range, a port range and a label that
    /// needs quoting.
    fn policy() -> NatPolicy {
        NatPolicy {
            grants: vec![web_grant("192.168.77.22".parse().unwrap(), "web \"x\"")],
            ..NatPolicy::sample()
        }
    }

    #[test]
    fn first_apply_adds_the_jumps() {
        let nat = render_nat(&policy(), Presence::default());
        expect![[r#"
            *nat
            :ENCLAVE - [0:0]
            -A ENCLAVE -s 100.64.0.0/10 -o lan0 -m comment --comment "snat lan0 to 192.168.77.1" -j SNAT --to-source 192.168.77.1
            -A POSTROUTING -j ENCLAVE
            COMMIT
        "#]]
        .assert_eq(&nat);
        let filter = render_filter(&policy(), OtherForwarding::Untouched, Presence::default());
        expect![[r#"
            *filter
            :ENCLAVE-FORWARD - [0:0]
            -A ENCLAVE-FORWARD -o enclave0 -m conntrack --ctstate RELATED,ESTABLISHED -m comment --comment "replies to the overlay" -j ACCEPT
            -A ENCLAVE-FORWARD -i enclave0 -m conntrack --ctstate RELATED -m comment --comment "related from the overlay" -j ACCEPT
            -A ENCLAVE-FORWARD -i enclave0 -s 100.64.0.11/32 -m iprange --dst-range 192.168.77.20-192.168.77.22 -p tcp -m tcp --dport 80:443 -m conntrack --ctstate NEW,ESTABLISHED -m comment --comment "grant 0: web 'x'" -j ACCEPT
            -A ENCLAVE-FORWARD -i enclave0 -s 100.64.0.11/32 -d 192.168.78.0/24 -p tcp -m tcp --dport 80:443 -m conntrack --ctstate NEW,ESTABLISHED -m comment --comment "grant 0: web 'x'" -j ACCEPT
            -A ENCLAVE-FORWARD -i enclave0 -m comment --comment "drop the rest from the overlay" -j DROP
            -A ENCLAVE-FORWARD -o enclave0 -m comment --comment "one way: no new connections into the overlay" -j DROP
            -I FORWARD 1 -j ENCLAVE-FORWARD
            COMMIT
        "#]]
        .assert_eq(&filter);
    }

    #[test]
    fn a_host_that_did_not_forward_gets_a_drop_for_other_forwarding() {
        let untouched = render_filter(&policy(), OtherForwarding::Untouched, Presence::default());
        let dropped = render_filter(&policy(), OtherForwarding::Dropped, Presence::default());
        let added: Vec<&str> = dropped
            .lines()
            .filter(|l| !untouched.lines().any(|u| u == *l))
            .collect();
        expect![[r#"
            [
                "-A ENCLAVE-FORWARD ! -i enclave0 ! -o enclave0 -m comment --comment \"not via the tunnel: the host did not forward before enclave turned forwarding on\" -j DROP",
            ]
        "#]]
        .assert_debug_eq(&added);
        // It comes after the tunnel's rules and before the jump.
        let at = |needle: &str| dropped.find(needle).unwrap();
        assert!(at("! -i enclave0") > at("one way"));
        assert!(at("! -i enclave0") < at("-I FORWARD 1"));
    }

    #[test]
    fn a_failed_apply_puts_our_nat_chain_back_as_it_was() {
        let before = "*nat\n:POSTROUTING ACCEPT [0:0]\n:ENCLAVE - [0:0]\n-A POSTROUTING -j ENCLAVE\n-A ENCLAVE -s 100.64.0.0/10 -o lan0 -m comment --comment \"snat lan0 to 192.168.77.1\" -j SNAT --to-source 192.168.77.1\nCOMMIT\n";
        let now = Presence {
            chain: true,
            rules: 3,
            jumps: 1,
        };
        expect![[r#"
            *nat
            :ENCLAVE - [0:0]
            -A ENCLAVE -s 100.64.0.0/10 -o lan0 -m comment --comment "snat lan0 to 192.168.77.1" -j SNAT --to-source 192.168.77.1
            COMMIT
        "#]]
        .assert_eq(&render_rollback("nat", "POSTROUTING", "ENCLAVE", before, now).unwrap());
        // Nothing of ours before: the rollback removes the chain and its jump.
        assert_eq!(
            render_rollback("nat", "POSTROUTING", "ENCLAVE", "*nat\nCOMMIT\n", now).unwrap(),
            "*nat\n-D POSTROUTING -j ENCLAVE\n-F ENCLAVE\n-X ENCLAVE\nCOMMIT\n"
        );
    }

    #[test]
    fn reapply_keeps_one_jump() {
        let one = Presence {
            chain: true,
            rules: 1,
            jumps: 1,
        };
        assert!(!render_nat(&policy(), one).contains("POSTROUTING"));
        let three = Presence {
            chain: true,
            rules: 1,
            jumps: 3,
        };
        let text = render_nat(&policy(), three);
        assert_eq!(text.matches("-D POSTROUTING -j ENCLAVE\n").count(), 2);
    }

    #[test]
    fn presence_reads_iptables_save() {
        let save = "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [3:180]\n:ENCLAVE - [0:0]\n:OTHER - [0:0]\n-A POSTROUTING -j OTHER\n-A POSTROUTING -j ENCLAVE\n-A ENCLAVE -s 100.64.0.0/10 -o lan0 -j SNAT --to-source 192.168.77.1\n-A ENCLAVE-X -j ACCEPT\nCOMMIT\n";
        assert_eq!(
            presence(save, "ENCLAVE", "POSTROUTING"),
            Presence {
                chain: true,
                rules: 1,
                jumps: 1
            }
        );
        assert_eq!(
            presence("*nat\nCOMMIT\n", "ENCLAVE", "POSTROUTING"),
            Presence::default()
        );
    }

    #[test]
    fn removal_deletes_jumps_then_the_chain() {
        let now = Presence {
            chain: true,
            rules: 4,
            jumps: 1,
        };
        assert_eq!(
            render_removal("nat", "POSTROUTING", "ENCLAVE", now).unwrap(),
            "*nat\n-D POSTROUTING -j ENCLAVE\n-F ENCLAVE\n-X ENCLAVE\nCOMMIT\n"
        );
        assert_eq!(
            render_removal("nat", "POSTROUTING", "ENCLAVE", Presence::default()),
            None
        );
    }

    #[test]
    fn counters_are_read_from_iptables_save_c() {
        let save = "*nat\n:POSTROUTING ACCEPT [9:540]\n:ENCLAVE - [0:0]\n[9:540] -A POSTROUTING -j ENCLAVE\n[2:144] -A ENCLAVE -s 100.64.0.0/10 -o lan0 -m comment --comment \"snat lan0 to 192.168.77.1\" -j SNAT --to-source 192.168.77.1\n[1:60] -A ENCLAVE -o lan1 -m comment --comment plain -j SNAT --to-source 10.0.0.1\n[5:5] -A ENCLAVE-X -j ACCEPT\nCOMMIT\n";
        let rules = counted_rules(save, "ENCLAVE");
        assert_eq!(
            rules,
            vec![
                RuleState {
                    chain: "ENCLAVE".into(),
                    comment: "snat lan0 to 192.168.77.1".into(),
                    packets: 2,
                    bytes: 144
                },
                RuleState {
                    chain: "ENCLAVE".into(),
                    comment: "plain".into(),
                    packets: 1,
                    bytes: 60
                },
            ]
        );
    }

    #[test]
    fn failed_line_is_found_in_the_message() {
        assert_eq!(failed_line("iptables-restore: line 3 failed"), Some(3));
        assert_eq!(
            failed_line("interface name `x' must be shorter\nError occurred at line: 4\nTry"),
            Some(4)
        );
        assert_eq!(
            failed_line("iptables-restore v1.8.9 (nf_tables): something"),
            None
        );
    }
}
