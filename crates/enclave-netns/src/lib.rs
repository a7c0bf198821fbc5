//! The network-namespace test bench.
//!
//! Privileged scenarios describe a topology with [`TopologySpec`] (namespaces, veth pairs,
//! bridged segments, addresses, routes, sysctls) and [`TopologySpec::build`] it into a
//! [`Topology`], an RAII handle that removes every namespace it made and ends every process it
//! started when it is dropped, also while a test panics. Programs run inside a namespace with
//! [`Netns::exec`] and [`Netns::spawn`], threads of the test's own (a server, a traffic
//! source) with [`Netns::start_thread`]; [`Netns::ping`], [`Netns::tcp_connect`],
//! [`Netns::udp_probe`] and [`Netns::echo_server`] are the probes a gateway test needs.
//!
//! A probe tells "unreachable" (it ran and the network gave no answer: [`Error::Unreachable`],
//! or a [`PingResult`] with nothing received) from "could not probe" (the tool is missing, was
//! killed or failed for another reason: any other error). A "cannot reach" check reads a probe
//! through [`Reached::reached`], so a broken probe fails the check instead of passing it.
//!
//! Names are unique per run: every namespace is called `enc-<pid>-<seq>-<tag>-<node>`, so two
//! runs at once never collide, and [`remove_stale`] can tell a dead run's leftovers from a live
//! one's. Interfaces are created directly inside their namespaces (`ip link add … netns …`), so
//! the bench never creates, changes or removes anything in the root namespace except the names
//! under `/run/netns` and an empty `/run/wireguard` mount point.
//!
//! The bench drives iproute2 (`ip`) and `sysctl`; it needs root.

#![warn(missing_docs)]

mod error;
mod netns;
mod probe;
mod process;
mod topology;

pub use error::{Error, Result};
pub use netns::Netns;
pub use probe::{EchoServer, PingResult, Reached};
pub use process::{Process, SpawnOpts};
pub use topology::{remove_of, remove_own, remove_stale, Topology, TopologySpec};

use std::time::{Duration, Instant};

/// Checks that this process can build topologies: it runs as root, `ip` is installed and a
/// network namespace can be made and removed. Says plainly what is missing otherwise.
pub fn preflight() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::NotRoot);
    }
    for tool in ["ip", "sysctl", "mount"] {
        if which(tool).is_none() {
            return Err(Error::MissingTool { tool });
        }
    }
    let probe = format!("enc-{}-preflight", std::process::id());
    netns::ip(&["netns", "add", &probe]).map_err(|e| Error::NamespacesUnavailable {
        source: Box::new(e),
    })?;
    netns::ip(&["netns", "delete", &probe])?;
    Ok(())
}

/// Polls `condition` every 20 ms until it holds or `timeout` passes; returns whether it held.
///
/// For conditions that have no event to wait on (a route that appears, a log line that is
/// written by another process).
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `condition` every 20 ms until it yields `Ok(true)` or `timeout` passes; returns
/// whether it held. An error (a probe that could not run) ends the wait at once and is
/// returned: a broken probe never reads as "not yet".
pub fn try_wait_until(
    timeout: Duration,
    mut condition: impl FnMut() -> Result<bool>,
) -> Result<bool> {
    let mut failure = None;
    let held = wait_until(timeout, || match condition() {
        Ok(held) => held,
        Err(err) => {
            failure = Some(err);
            true
        }
    });
    match failure {
        Some(err) => Err(err),
        None => Ok(held),
    }
}

/// The full path of `tool` on `PATH`, also looking in the sbin directories.
pub fn which(tool: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(Into::into))
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}
