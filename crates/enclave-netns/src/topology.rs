use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::netns::{ip, Netns};
use crate::process::lock;
use crate::{Error, Result};

/// Every namespace of this bench is named `enc-<pid>-…`.
const PREFIX: &str = "enc-";

static NEXT_TOPOLOGY: AtomicU32 = AtomicU32::new(0);

/// One end of a link: (node, interface name inside that node).
pub type End<'a> = (&'a str, &'a str);

/// The description of a test network. Build it with [`TopologySpec::build`].
#[derive(Debug, Clone, Default)]
pub struct TopologySpec {
    tag: String,
    nodes: Vec<String>,
    links: Vec<[(String, String); 2]>,
    segments: Vec<(String, Vec<(String, String)>)>,
    addrs: Vec<(String, String, String)>,
    routes: Vec<(String, String)>,
    sysctls: Vec<(String, String, String)>,
}

impl TopologySpec {
    /// A new, empty topology. `tag` goes into the namespaces' names (keep it short).
    pub fn new(tag: &str) -> Self {
        Self {
            tag: tag
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .take(12)
                .collect(),
            ..Self::default()
        }
    }

    /// Adds a node: one network namespace.
    pub fn node(&mut self, node: &str) -> &mut Self {
        self.nodes.push(node.to_owned());
        self
    }

    /// Adds a veth pair between two nodes, each end made directly inside its namespace.
    pub fn link(&mut self, a: End<'_>, b: End<'_>) -> &mut Self {
        self.links.push([own(a), own(b)]);
        self
    }

    /// Adds a shared segment: a bridge (in a namespace of its own) with one veth port per member.
    pub fn segment(&mut self, name: &str, members: &[End<'_>]) -> &mut Self {
        self.segments
            .push((name.to_owned(), members.iter().copied().map(own).collect()));
        self
    }

    /// Adds an address (`10.0.0.1/24`) to an interface of a node.
    pub fn addr(&mut self, node: &str, interface: &str, cidr: &str) -> &mut Self {
        self.addrs
            .push((node.to_owned(), interface.to_owned(), cidr.to_owned()));
        self
    }

    /// Adds a route to a node, in `ip route add` words (`default via 192.168.77.1`).
    pub fn route(&mut self, node: &str, route: &str) -> &mut Self {
        self.routes.push((node.to_owned(), route.to_owned()));
        self
    }

    /// Sets a sysctl inside a node's namespace (`net.ipv4.ip_forward`, `1`).
    pub fn sysctl(&mut self, node: &str, key: &str, value: &str) -> &mut Self {
        self.sysctls
            .push((node.to_owned(), key.to_owned(), value.to_owned()));
        self
    }

    fn check(&self) -> Result<()> {
        let mut nodes = BTreeSet::new();
        for node in &self.nodes {
            if node.is_empty() || !node.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(Error::BadTopology(format!(
                    "node name {node:?} must be letters, digits and '-'"
                )));
            }
            if !nodes.insert(node.as_str()) {
                return Err(Error::BadTopology(format!(
                    "node {node:?} is declared twice"
                )));
            }
        }
        let known = |node: &str| {
            if nodes.contains(node) {
                Ok(())
            } else {
                Err(Error::BadTopology(format!("node {node:?} is not declared")))
            }
        };
        let mut interfaces = BTreeSet::new();
        let ends = self
            .links
            .iter()
            .flatten()
            .chain(self.segments.iter().flat_map(|(_, members)| members));
        for (node, interface) in ends {
            known(node)?;
            if interface.is_empty() || interface.len() > 15 {
                return Err(Error::BadTopology(format!(
                    "interface name {interface:?} must have 1 to 15 characters"
                )));
            }
            if !interfaces.insert((node, interface)) {
                return Err(Error::BadTopology(format!(
                    "interface {interface} of node {node} is used twice"
                )));
            }
        }
        for (node, _, _) in &self.addrs {
            known(node)?;
        }
        for (node, _) in &self.routes {
            known(node)?;
        }
        for (node, _, _) in &self.sysctls {
            known(node)?;
        }
        Ok(())
    }

    /// Creates the namespaces, links, addresses, routes and sysctls. Process logs go under
    /// `log_dir`. On error, whatever was already made is removed before returning.
    pub fn build(&self, log_dir: &Path) -> Result<Topology> {
        self.check()?;
        let seq = NEXT_TOPOLOGY.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("{PREFIX}{}-{seq}-{}", std::process::id(), self.tag);
        let runtime_dir = std::env::temp_dir().join(&prefix);
        let mut topo = Topology {
            nodes: Vec::new(),
            hidden: Vec::new(),
            runtime_dir: runtime_dir.clone(),
            live_pids: Arc::new(Mutex::new(Vec::new())),
        };
        std::fs::create_dir_all(log_dir).map_err(|source| Error::File {
            path: log_dir.to_owned(),
            source,
        })?;
        // /run/wireguard must exist as a mount point for the per-node private directories.
        for dir in [Path::new("/run/wireguard"), runtime_dir.as_path()] {
            std::fs::create_dir_all(dir).map_err(|source| Error::File {
                path: dir.to_owned(),
                source,
            })?;
        }

        for node in &self.nodes {
            let name = format!("{prefix}-{node}");
            ip(&["netns", "add", &name])?;
            let wireguard_dir = runtime_dir.join(node).join("wireguard");
            topo.nodes.push(Netns {
                node: node.clone(),
                name: name.clone(),
                wireguard_dir: wireguard_dir.clone(),
                log_dir: log_dir.to_owned(),
                live_pids: Arc::clone(&topo.live_pids),
            });
            std::fs::create_dir_all(&wireguard_dir).map_err(|source| Error::File {
                path: wireguard_dir,
                source,
            })?;
            ip(&["-n", &name, "link", "set", "lo", "up"])?;
        }

        let mut up: Vec<(String, String)> = Vec::new();
        for [(a, ia), (b, ib)] in &self.links {
            let (na, nb) = (topo.ns(a).name.clone(), topo.ns(b).name.clone());
            ip(&[
                "-n", &na, "link", "add", ia, "type", "veth", "peer", "name", ib, "netns", &nb,
            ])?;
            up.push((na, ia.clone()));
            up.push((nb, ib.clone()));
        }
        for (i, (segment, members)) in self.segments.iter().enumerate() {
            let switch = format!("{prefix}-sw{i}");
            ip(&["netns", "add", &switch])?;
            topo.hidden.push(switch.clone());
            ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
            ip(&["-n", &switch, "link", "set", "br0", "up"])?;
            for (j, (node, interface)) in members.iter().enumerate() {
                let port = format!("{}{j}", &segment.chars().take(8).collect::<String>());
                let target = topo.ns(node).name.clone();
                ip(&[
                    "-n", &switch, "link", "add", &port, "type", "veth", "peer", "name", interface,
                    "netns", &target,
                ])?;
                ip(&["-n", &switch, "link", "set", &port, "master", "br0", "up"])?;
                up.push((target, interface.clone()));
            }
        }
        for (node, interface, cidr) in &self.addrs {
            let ns = topo.ns(node).name.clone();
            ip(&["-n", &ns, "addr", "add", cidr, "dev", interface])?;
        }
        for (ns, interface) in &up {
            ip(&["-n", ns, "link", "set", interface, "up"])?;
        }
        for (node, key, value) in &self.sysctls {
            topo.ns(node)
                .exec(&["sysctl", "-qw", &format!("{key}={value}")])?;
        }
        for (node, route) in &self.routes {
            let ns = topo.ns(node).name.clone();
            let mut args = vec!["-n", ns.as_str(), "route", "add"];
            args.extend(route.split_whitespace());
            ip(&args)?;
        }
        Ok(topo)
    }
}

fn own((node, interface): End<'_>) -> (String, String) {
    (node.to_owned(), interface.to_owned())
}

/// A built test network. Dropping it ends the processes started in it that are still running
/// and removes its namespaces and runtime directory.
#[derive(Debug)]
pub struct Topology {
    nodes: Vec<Netns>,
    hidden: Vec<String>,
    runtime_dir: PathBuf,
    live_pids: Arc<Mutex<Vec<u32>>>,
}

impl Topology {
    /// The namespace of `node`.
    ///
    /// # Panics
    /// When the topology has no such node: that is a mistake in the test, not in what it tests.
    pub fn ns(&self, node: &str) -> &Netns {
        self.nodes
            .iter()
            .find(|ns| ns.node == node)
            .unwrap_or_else(|| panic!("topology has no node {node:?}"))
    }

    /// Every node's namespace, in declaration order.
    pub fn nodes(&self) -> &[Netns] {
        &self.nodes
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Processes whose `Process` handle is still alive elsewhere are ours and unreaped, so
        // their PIDs cannot have been reused.
        for pid in lock(&self.live_pids).iter() {
            let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
        }
        let names = self.nodes.iter().map(|ns| ns.name.clone());
        for name in names.chain(self.hidden.iter().cloned()) {
            let _ = ip(&["netns", "delete", &name]);
        }
        let _ = std::fs::remove_dir_all(&self.runtime_dir);
    }
}

/// Removes the namespaces left by runs of this bench whose process is gone (a run that was
/// killed before it could clean up), ending the processes still inside them. Returns their names.
pub fn remove_stale() -> Vec<String> {
    remove_matching(|pid| !Path::new(&format!("/proc/{pid}")).exists())
}

/// Removes every namespace this process made that still exists, ending the processes inside.
/// A last resort for a runner whose scenario hung and could not unwind.
pub fn remove_own() -> Vec<String> {
    let me = std::process::id();
    remove_matching(|pid| pid == me)
}

/// Removes the namespaces made by the process `pid` (a runner's child that ran one scenario
/// and was killed or exited), ending the processes still inside them. Returns their names.
pub fn remove_of(pid: u32) -> Vec<String> {
    remove_matching(|owner| owner == pid)
}

fn remove_matching(select: impl Fn(u32) -> bool) -> Vec<String> {
    let Ok(list) = ip(&["netns", "list"]) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for line in list.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !select(pid) {
            continue;
        }
        if let Ok(pids) = ip(&["netns", "pids", name]) {
            for pid in pids
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
        if ip(&["netns", "delete", name]).is_ok() {
            removed.push(name.to_owned());
        }
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(name));
    }
    removed
}
