//! `docs-user-guide`: the commands that docs/user-guide.md shows, run against real agents, so
//! that the guide cannot drift from the product.
//!
//! The guide marks the transcripts this scenario runs with a fenced block whose info string is
//! `text scenario`. In such a block, a line `[NODE]# COMMAND` runs COMMAND (through `sh -c`) on
//! the system NODE of the guide (`laptop`, `menlo-gw-1`, `menlo-gw-2`, `egress-gw`); a command
//! may go on over lines that end with `\`. The lines after it, up to the next command, are
//! output it must print, in that order (other lines may come between them); in them `…`
//! stands for any text within the line, and blank lines are ignored. The command must exit 0,
//! unless it ends with a comment `# exit N`. Unmarked blocks (`sh`, `toml`, plain `text`) are
//! not run.
//!
//! The systems are the guide's, built in namespaces: the laptop on a home network behind a
//! router (`isp`), the three gateways on the router's other side with the public addresses the
//! guide gives them (203.0.113.2–4), the office LAN 192.168.77.0/24 with the printer (.10) and
//! the two domain controllers (.20, .21) behind the Menlo Park gateways, and an Internet host
//! (198.51.100.10) behind the router. Every command runs in a mount namespace of its own where
//! that system's own directories are mounted on `/etc/enclave` and `/run/enclave`, so the
//! guide's paths (`/etc/enclave/agent.toml`, `/etc/enclave/network.toml`) and defaults hold as
//! written. The network definition is the guide's: the laptop tagged `users`, the office policy
//! with its subnet filter and ACL (Subnet filtering), the Internet through `egress-gw`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use enclave_netns::{wait_until, Netns, Process, SpawnOpts, Topology, TopologySpec};

use crate::{Ctx, Scenario};

pub fn scenarios() -> Vec<Scenario> {
    vec![Scenario {
        name: "docs-user-guide",
        about: "every command docs/user-guide.md marks as `text scenario` runs on the guide's systems and prints what the guide quotes",
        run: user_guide,
    }]
}

/// The guide, as it is in this tree.
const GUIDE: &str = include_str!("../../../docs/user-guide.md");
/// The workspace root: commands run there, so the guide's `docs/examples/network.toml` is found.
const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// The guide's systems that run an agent: (node, whether it is a gateway).
const AGENTS: [(&str, bool); 4] = [
    ("menlo-gw-1", true),
    ("menlo-gw-2", true),
    ("egress-gw", true),
    ("laptop", false),
];

/// One command of a marked transcript.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Step {
    /// The guide's line of the command.
    line: usize,
    /// The system it runs on.
    node: String,
    /// The command, continuation lines joined.
    command: String,
    /// The exit status it must have.
    status: i32,
    /// Output lines it must print, in order (`…` matches any text).
    expect: Vec<String>,
}

/// The marked transcripts of `guide`, in order.
fn transcripts(guide: &str) -> anyhow::Result<Vec<Step>> {
    let mut steps: Vec<Step> = Vec::new();
    let mut in_block = false;
    let mut marked = false;
    let mut pending: Option<Step> = None;
    for (i, raw) in guide.lines().enumerate() {
        let number = i + 1;
        let line = raw.trim();
        if let Some(info) = line.strip_prefix("```") {
            if in_block {
                steps.extend(pending.take());
                in_block = false;
            } else {
                in_block = true;
                let mut words = info.split_whitespace();
                marked = words.next().is_some() && words.any(|w| w == "scenario");
            }
            continue;
        }
        if !in_block || !marked {
            continue;
        }
        if let Some(step) = pending.as_mut().filter(|s| s.command.ends_with('\\')) {
            step.command.pop();
            step.command.push(' ');
            step.command.push_str(line);
            if !step.command.ends_with('\\') {
                step.status = exit_status(&step.command);
            }
            continue;
        }
        if let Some((node, command)) = line
            .strip_prefix('[')
            .and_then(|rest| rest.split_once("]# "))
        {
            steps.extend(pending.take());
            pending = Some(Step {
                line: number,
                node: node.to_owned(),
                command: command.trim().to_owned(),
                status: exit_status(command),
                expect: Vec::new(),
            });
        } else if !line.is_empty() {
            match pending.as_mut() {
                Some(step) => step.expect.push(line.to_owned()),
                None => bail!(
                    "docs/user-guide.md:{number}: a `scenario` block must start with a command \
                     `[NODE]# …`, not {line:?}"
                ),
            }
        }
    }
    ensure!(!in_block, "docs/user-guide.md: a code block is not closed");
    Ok(steps)
}

/// The exit status a command must have: `N` when it ends with `# exit N`, else 0.
fn exit_status(command: &str) -> i32 {
    command
        .rsplit_once("# exit ")
        .and_then(|(_, n)| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Whether `line` matches `pattern`, in which `…` stands for any text.
fn matches(pattern: &str, line: &str) -> bool {
    let pieces: Vec<&str> = pattern.split('…').collect();
    let (first, rest) = pieces.split_first().unwrap_or((&"", &[]));
    let Some(mut left) = line.strip_prefix(first) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return left.is_empty();
    };
    for piece in middle {
        match left.find(piece) {
            Some(at) => left = &left[at + piece.len()..],
            None => return false,
        }
    }
    left.ends_with(last)
}

/// The expected lines that `output` does not print in order (each after the one before).
fn missing(expect: &[String], output: &str) -> Vec<String> {
    let mut lines = output.lines().map(str::trim);
    let mut missing = Vec::new();
    for pattern in expect {
        // A line not found does not consume the output: the next one is looked for from the
        // same place.
        let mut probe = lines.clone();
        if probe.any(|line| matches(pattern, line)) {
            lines = probe;
        } else {
            missing.push(pattern.clone());
        }
    }
    missing
}

/// The guide's systems in namespaces, and each one's `/etc/enclave` and `/run/enclave`.
struct Guide<'c> {
    ctx: &'c Ctx,
    agents: Vec<Process>,
    topo: Topology,
    root: PathBuf,
}

impl Guide<'_> {
    fn ns(&self, node: &str) -> &Netns {
        self.topo.ns(node)
    }

    fn etc(&self, node: &str) -> PathBuf {
        self.root.join(node).join("etc")
    }

    /// The argv that runs `command` through `sh -c` on `node`, with the system's own
    /// `/etc/enclave` and `/run/enclave`, our binaries first on `PATH`, in the workspace.
    fn argv(&self, node: &str, command: &str) -> anyhow::Result<Vec<String>> {
        let bin = self
            .ctx
            .bin("enclave-agent")?
            .parent()
            .context("the binaries' directory")?
            .to_string_lossy()
            .into_owned();
        let own = self.root.join(node);
        Ok(vec![
            "sh".into(),
            "-c".into(),
            "mount --bind \"$1\" /etc/enclave && mount --bind \"$2\" /run/enclave \
             && cd \"$3\" && PATH=\"$4:$PATH\" && exec sh -c \"$5\""
                .into(),
            "guide".into(),
            own.join("etc").to_string_lossy().into_owned(),
            own.join("run").to_string_lossy().into_owned(),
            WORKSPACE.into(),
            bin,
            command.into(),
        ])
    }

    /// Runs `command` on `node`; returns its exit status and output (standard output, then
    /// standard error).
    fn run(&self, node: &str, command: &str) -> anyhow::Result<(i32, String)> {
        let output = self.ns(node).exec_output(&self.argv(node, command)?)?;
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        Ok((output.status.code().unwrap_or(-1), text))
    }

    /// Runs `command` on `node`, which must succeed; returns its standard output and error.
    fn must(&self, node: &str, command: &str) -> anyhow::Result<String> {
        let (status, out) = self.run(node, command)?;
        ensure!(status == 0, "[{node}]# {command} exited {status}:\n{out}");
        Ok(out)
    }
}

/// `/etc/enclave` and `/run/enclave` as empty mount points in the root namespace (nothing is
/// ever mounted on them there); the ones this run created are removed again.
struct MountPoints(Vec<&'static str>);

impl MountPoints {
    fn ensure() -> anyhow::Result<Self> {
        let mut made = Vec::new();
        for dir in ["/etc/enclave", "/run/enclave"] {
            if !Path::new(dir).exists() {
                std::fs::create_dir(dir).with_context(|| format!("cannot create {dir}"))?;
                made.push(dir);
            }
        }
        Ok(Self(made))
    }
}

impl Drop for MountPoints {
    fn drop(&mut self) {
        for dir in &self.0 {
            // Only when empty: a real installation may have appeared meanwhile.
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn topology() -> TopologySpec {
    let mut spec = TopologySpec::new("guide");
    for node in [
        "laptop",
        "isp",
        "menlo-gw-1",
        "menlo-gw-2",
        "egress-gw",
        "lan",
        "inet",
    ] {
        spec.node(node);
    }
    spec.link(("laptop", "eth0"), ("isp", "home0"))
        .link(("isp", "inet0"), ("inet", "eth0"))
        .segment(
            "wan",
            &[
                ("isp", "wan0"),
                ("menlo-gw-1", "eth0"),
                ("menlo-gw-2", "eth0"),
                ("egress-gw", "eth0"),
            ],
        )
        .segment(
            "lan",
            &[
                ("menlo-gw-1", "lan0"),
                ("menlo-gw-2", "lan0"),
                ("lan", "eth0"),
            ],
        )
        .addr("laptop", "eth0", "192.168.1.100/24")
        .addr("isp", "home0", "192.168.1.1/24")
        .addr("isp", "wan0", "203.0.113.1/24")
        .addr("isp", "inet0", "198.51.100.1/24")
        .addr("inet", "eth0", "198.51.100.10/24")
        .addr("menlo-gw-1", "eth0", "203.0.113.2/24")
        .addr("menlo-gw-2", "eth0", "203.0.113.3/24")
        .addr("egress-gw", "eth0", "203.0.113.4/24")
        .addr("menlo-gw-1", "lan0", "192.168.77.1/24")
        .addr("menlo-gw-2", "lan0", "192.168.77.2/24")
        .addr("lan", "eth0", "192.168.77.10/24")
        .addr("lan", "eth0", "192.168.77.20/24")
        .addr("lan", "eth0", "192.168.77.21/24")
        .sysctl("isp", "net.ipv4.ip_forward", "1")
        .route("laptop", "default via 192.168.1.1")
        .route("inet", "default via 198.51.100.1")
        // A subnet behind a router on the office LAN, for `discover --subnet`.
        .route("menlo-gw-1", "10.99.0.0/16 via 192.168.77.254");
    for gw in ["menlo-gw-1", "menlo-gw-2", "egress-gw"] {
        spec.route(gw, "default via 203.0.113.1");
    }
    spec
}

/// The guide's definition; `KEY(name)` is replaced by the system's public key.
const DEFINITION: &str = r#"[network]
overlay = "100.64.0.0/10"

[[system]]
name = "laptop"
public_key = "KEY(laptop)"
address = "100.64.0.11"
tags = ["users"]

[[system]]
name = "menlo-gw-1"
public_key = "KEY(menlo-gw-1)"
address = "100.64.0.2"
endpoint = "203.0.113.2:51820"

[system.gateway]
allowed = true
priority = 10

[[system]]
name = "menlo-gw-2"
public_key = "KEY(menlo-gw-2)"
address = "100.64.0.3"
endpoint = "203.0.113.3:51820"

[system.gateway]
allowed = true

[[system]]
name = "egress-gw"
public_key = "KEY(egress-gw)"
address = "100.64.0.4"
endpoint = "203.0.113.4:51820"

[system.gateway]
allowed = true
subnets = ["0.0.0.0/0"]
auto_discover = false

[[gateway_policy]]
name = "users to Menlo Park Office"
senders = ["users"]
gateways = ["menlo-gw-1", "menlo-gw-2"]
subnets = ["192.168.77.0/24"]
filter = ["192.168.77.20-192.168.77.21"]
acl = [{ protocol = "icmp" }, { protocol = "tcp", ports = 445, label = "SMB" }]

[[gateway_policy]]
name = "users to the Internet"
senders = ["users"]
gateways = ["egress-gw"]
subnets = ["0.0.0.0/0"]
acl = [{ protocol = "any" }]
"#;

fn user_guide(ctx: &Ctx) -> anyhow::Result<()> {
    let steps = transcripts(GUIDE)?;
    ensure!(
        steps.len() >= 10,
        "docs/user-guide.md marks only {} commands as `text scenario`",
        steps.len()
    );
    let _mount_points = MountPoints::ensure()?;
    let topo = ctx.topology(&topology())?;
    let root = ctx.log_dir().join("systems");
    let mut guide = Guide {
        ctx,
        agents: Vec::new(),
        topo,
        root,
    };
    let outcome = setup(&mut guide)
        .and_then(|()| play(&guide, &steps))
        .and_then(|()| counters(&guide));
    // Stop the agents cleanly (each removes what it made) before the topology goes.
    for agent in &mut guide.agents {
        agent.stop();
    }
    outcome
}

/// Step 1 and 2 of the guide on every system: a key, `agent.toml`, the definition, the agents.
fn setup(guide: &mut Guide<'_>) -> anyhow::Result<()> {
    let mut definition = DEFINITION.to_owned();
    for (node, _) in AGENTS {
        for dir in ["etc", "run"] {
            std::fs::create_dir_all(guide.root.join(node).join(dir))?;
        }
        let key = guide.must(node, "enclave-agent keygen /etc/enclave/private.key")?;
        definition = definition.replace(&format!("KEY({node})"), key.trim());
        std::fs::write(
            guide.etc(node).join("agent.toml"),
            "private_key_file = \"/etc/enclave/private.key\"\n\
             network_file     = \"/etc/enclave/network.toml\"\n",
        )?;
    }
    for (node, _) in AGENTS {
        std::fs::write(guide.etc(node).join("network.toml"), &definition)?;
    }
    guide.must(
        "laptop",
        "enclave-agent policy check /etc/enclave/network.toml",
    )?;
    for (node, gateway) in AGENTS {
        let program = crate::agents::program(gateway);
        let argv = guide.argv(node, &format!("{program} run -v 3"))?;
        let process =
            guide
                .ns(node)
                .spawn(&format!("{program}-{node}"), &argv, SpawnOpts::default())?;
        guide.agents.push(process);
        let up = wait_until(Duration::from_secs(10), || {
            guide
                .run(node, "enclave-agent status --json")
                .is_ok_and(|(s, _)| s == 0)
        });
        if !up {
            let log = guide.agents.last().map(Process::log).unwrap_or_default();
            bail!("{program} on {node} did not answer status within 10 s; log:\n{log}");
        }
    }
    // The guide's Testing section: give every gateway time to answer (about a second).
    let ready = wait_until(Duration::from_secs(10), || {
        guide
            .run("laptop", "enclave-agent status")
            .is_ok_and(|(_, out)| {
                out.contains("192.168.77.0/24 via menlo-gw-1")
                    && out.contains("0.0.0.0/0 via egress-gw")
            })
    });
    if !ready {
        let (_, status) = guide.run("laptop", "enclave-agent status")?;
        bail!("the laptop did not route through menlo-gw-1 and egress-gw within 10 s:\n{status}");
    }
    Ok(())
}

/// Runs every marked command and checks its exit status and output; reports every one that
/// does not do what the guide shows, with its line.
fn play(guide: &Guide<'_>, steps: &[Step]) -> anyhow::Result<()> {
    let mut wrong = Vec::new();
    for step in steps {
        ensure!(
            AGENTS.iter().any(|(node, _)| *node == step.node),
            "docs/user-guide.md:{}: no system {:?} in the guide's scenario",
            step.line,
            step.node
        );
        let (status, output) = guide.run(&step.node, &step.command)?;
        println!(
            "  docs/user-guide.md:{} [{}]# {} -> exit {status}",
            step.line, step.node, step.command
        );
        for line in output.lines() {
            println!("      {line}");
        }
        let missing = missing(&step.expect, &output);
        if status != step.status || !missing.is_empty() {
            wrong.push(format!(
                "docs/user-guide.md:{}: [{}]# {}\n  exit {status} (the guide wants {})\n  \
                 lines the guide quotes that it did not print:\n{}\n  it printed:\n{}",
                step.line,
                step.node,
                step.command,
                step.status,
                missing
                    .iter()
                    .map(|l| format!("    {l}"))
                    .collect::<Vec<_>>()
                    .join("\n"),
                output
                    .lines()
                    .map(|l| format!("    {l}"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            ));
        }
    }
    if !wrong.is_empty() {
        bail!(
            "{} of {} commands of the user guide do not do what it shows:\n\n{}",
            wrong.len(),
            steps.len(),
            wrong.join("\n\n")
        );
    }
    Ok(())
}

/// The packets counted by the rule of `nft list table ip enclave` whose comment starts with
/// `comment`.
fn rule_packets(listing: &str, comment: &str) -> Option<u64> {
    let line = listing
        .lines()
        .find(|l| l.contains(&format!("comment \"{comment}")))?;
    let (_, rest) = line.split_once("counter packets ")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// The guide's step 8: a new connection moves the SNAT rule's counter by one, whatever its
/// length, and the grant's counter by each of its packets.
fn counters(guide: &Guide<'_>) -> anyhow::Result<()> {
    let list = || guide.must("menlo-gw-1", "nft list table ip enclave");
    let before = list()?;
    guide.must("laptop", "ping -n -c 3 -i 0.2 -W 1 192.168.77.20")?;
    let after = list()?;
    let moved = |comment: &str| -> anyhow::Result<u64> {
        let (was, is) = (
            rule_packets(&before, comment),
            rule_packets(&after, comment),
        );
        match (was, is) {
            (Some(was), Some(is)) => Ok(is - was),
            _ => bail!("no rule {comment:?} with a counter in:\n{after}"),
        }
    };
    let (snat, grant) = (moved("snat lan0")?, moved("grant 0")?);
    ensure!(
        snat == 1 && grant >= 3,
        "one ping of 3 requests moved the SNAT counter by {snat} (the guide says 1: a \
         connection's first packet) and the grant's by {grant} (at least 3):\n{after}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_marked_transcripts_only() {
        let guide = "\
```sh
enclave-agent status
```

```text scenario
[laptop]# enclave-agent policy explain net.toml --from laptop \\
      --to 192.168.77.10 # exit 1
denied: laptop -> 192.168.77.10

[menlo-gw-1]# enclave-gw status
System: menlo-gw-1 (…)
```
";
        let steps = transcripts(guide).unwrap();
        assert_eq!(
            steps,
            vec![
                Step {
                    line: 6,
                    node: "laptop".into(),
                    command: "enclave-agent policy explain net.toml --from laptop  \
                              --to 192.168.77.10 # exit 1"
                        .into(),
                    status: 1,
                    expect: vec!["denied: laptop -> 192.168.77.10".into()],
                },
                Step {
                    line: 10,
                    node: "menlo-gw-1".into(),
                    command: "enclave-gw status".into(),
                    status: 0,
                    expect: vec!["System: menlo-gw-1 (…)".into()],
                },
            ]
        );
    }

    #[test]
    fn a_marked_block_must_start_with_a_command() {
        let err = transcripts("```text scenario\noutput\n```\n").unwrap_err();
        assert!(err.to_string().contains(":2:"), "{err}");
    }

    #[test]
    fn ellipsis_matches_any_text_within_a_line() {
        assert!(matches("a … c", "a b c"));
        assert!(matches(
            "Last activity . . . : … seconds ago",
            "Last activity . . . : 0.01 seconds ago"
        ));
        assert!(!matches("a … c", "a b d"));
        assert!(!matches("exact", "exact and more"));
        assert!(matches("…", "anything"));
    }

    #[test]
    fn expected_lines_appear_in_order() {
        let out = "one\n  two  \nthree\n";
        assert!(missing(&["one".into(), "three".into()], out).is_empty());
        assert_eq!(
            missing(&["three".into(), "one".into()], out),
            vec!["one".to_owned()]
        );
        assert_eq!(
            missing(&["four".into(), "two".into()], out),
            vec!["four".to_owned()]
        );
    }

    /// The guide in this tree parses, and marks commands only for the guide's systems.
    #[test]
    fn the_user_guide_parses() {
        let steps = transcripts(GUIDE).unwrap();
        for step in &steps {
            assert!(
                AGENTS.iter().any(|(node, _)| *node == step.node),
                "line {}: {:?}",
                step.line,
                step.node
            );
        }
    }
}
