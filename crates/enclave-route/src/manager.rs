//! The route manager: reads the kernel's state, asks [`plan`] what to change, applies it.

use std::path::PathBuf;

use crate::netlink::Rtnl;
use crate::plan::{
    plan, Conflict, Desired, KernelRoute, Plan, RouteKind, PROTOCOL_ENCLAVE, RTN_UNREACHABLE,
};
use crate::state;
use crate::sysctl::{self, SRC_VALID_MARK};
use crate::{Error, Result};

/// How the route manager is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// The tunnel interface whose routes we manage.
    pub interface: String,
    /// A directory where the manager keeps what it must restore after a crash (the previous
    /// `src_valid_mark`, while a default route is wanted); created with mode 0700 when first
    /// needed. An existing one is never chmod-ed: it must be owned by root or by us and not
    /// writable by group or others, or saving fails with what to do. `None`
    /// keeps it in memory only: a `kill -9` then forgets it. The routes and rules themselves,
    /// the kill switch included, need no file: a new manager finds them in the kernel by
    /// [`PROTOCOL_ENCLAVE`](crate::PROTOCOL_ENCLAVE).
    pub state_dir: Option<PathBuf>,
}

/// What one reconcile did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Routes added.
    pub added: usize,
    /// Routes of ours removed.
    pub removed: usize,
    /// Rules added.
    pub rules_added: usize,
    /// Rules of ours removed.
    pub rules_removed: usize,
    /// Foreign routes in the way (reported, left alone).
    pub conflicts: Vec<Conflict>,
    /// False when the tunnel interface does not exist or is down: no route through it is
    /// installed then (a default route's rules and kill switch are).
    pub interface_present: bool,
    /// True when a default route is wanted and its kill switch is in place: while the tunnel
    /// is missing, traffic that would take the default route is refused.
    pub kill_switch: bool,
}

/// Keeps the tunnel interface's routes, rules and `src_valid_mark` as wanted.
#[derive(Debug)]
pub struct RouteManager {
    config: Config,
    rtnl: Rtnl,
    /// `src_valid_mark` before we changed it, when we did.
    saved_src_valid_mark: Option<String>,
    /// Whether the kernel's state was read once already (the first time tells what a previous
    /// run left).
    surveyed: bool,
}

const SAVED_FILE: &str = "src_valid_mark.saved";

impl RouteManager {
    /// Opens a netlink socket in the calling thread's namespace and picks up a previous run's
    /// saved state, if any.
    pub fn new(config: Config) -> Result<Self> {
        let rtnl = Rtnl::open()?;
        let mut manager = RouteManager {
            config,
            rtnl,
            saved_src_valid_mark: None,
            surveyed: false,
        };
        if let Some(path) = manager.state_path() {
            manager.saved_src_valid_mark = state::read(&path)?;
        }
        Ok(manager)
    }

    fn state_path(&self) -> Option<PathBuf> {
        self.config.state_dir.as_ref().map(|d| d.join(SAVED_FILE))
    }

    /// The diff between `desired` and the kernel, without changing anything.
    pub fn plan(&mut self, desired: &Desired) -> Result<Plan> {
        Ok(self.survey(desired)?.1)
    }

    /// Reads the tunnel's index, the routes and the rules, and diffs them against `desired`.
    fn survey(&mut self, desired: &Desired) -> Result<(Option<u32>, Plan)> {
        desired.check()?;
        let tunnel = self.rtnl.usable_link(&self.config.interface)?;
        let routes = self.rtnl.routes()?;
        let rules = self.rtnl.rules()?;
        if !self.surveyed {
            self.surveyed = true;
            let kill_switch = |r: &&KernelRoute| {
                r.protocol == PROTOCOL_ENCLAVE && r.kind == RTN_UNREACHABLE && r.oif.is_none()
            };
            if let Some(found) = routes.iter().find(kill_switch) {
                tracing::info!(
                    interface = %self.config.interface,
                    table = found.table,
                    "found the kill switch of a run that did not stop cleanly: traffic that would take the default route was refused meanwhile"
                );
            }
        }
        Ok((tunnel, plan(desired, tunnel, &routes, &rules)))
    }

    /// Brings routes, rules and `src_valid_mark` to `desired`: adds what is missing, removes
    /// what is ours and no longer wanted, reports conflicts and leaves foreign routes alone.
    ///
    /// A default route comes with its kill switch (see [`DefaultRoute`](crate::DefaultRoute)),
    /// installed first and removed last. When the tunnel interface is missing or down, the
    /// routes through it go (the kernel already dropped them) but a wanted default route's
    /// rules and kill switch stay, and are even put in place: unmarked traffic is refused, not
    /// sent in clear. The report says `interface_present: false`; call again when the
    /// interface is back.
    pub fn apply(&mut self, desired: &Desired) -> Result<Report> {
        let (tunnel, p) = self.survey(desired)?;
        let mut report = Report {
            interface_present: tunnel.is_some(),
            ..Report::default()
        };
        if desired.default_route.is_some() {
            self.set_src_valid_mark()?;
        }
        for route in &p.add_unreachable {
            self.rtnl.add_unreachable(route)?;
            report.added += 1;
        }
        // The rules are put in place even when a route through the tunnel could not be: with
        // the kill switch they block, and without them unmarked traffic would go in clear.
        let routed = self.add_tunnel_routes(&p, tunnel, &mut report);
        for rule in &p.add_rules {
            self.rtnl.add_rule(rule)?;
            report.rules_added += 1;
        }
        routed?;
        for rule in &p.remove_rules {
            if tolerate_gone(self.rtnl.delete_rule(rule))? {
                report.rules_removed += 1;
            }
        }
        for route in &p.remove_routes {
            if tolerate_gone(self.rtnl.delete_route(route))? {
                report.removed += 1;
            }
        }
        if desired.default_route.is_none() {
            self.restore_src_valid_mark()?;
        }
        report.kill_switch = desired.kill_switch().is_some_and(|ks| {
            !p.conflicts
                .iter()
                .any(|c| c.ours_kind == RouteKind::Unreachable && c.ours == ks)
        });
        if !p.conflicts.is_empty() {
            let names = self.rtnl.links()?;
            for c in &p.conflicts {
                let on = c.theirs.oif.and_then(|i| names.get(&i).cloned());
                tracing::warn!(
                    ours = %c.ours.dst,
                    theirs = %c.theirs.dst,
                    "{}",
                    c.describe(on.as_deref())
                );
            }
        }
        if report.kill_switch && tunnel.is_none() {
            tracing::warn!(
                interface = %self.config.interface,
                "the tunnel interface is missing or down: the kill switch refuses all traffic that would take the default route"
            );
        }
        report.conflicts = p.conflicts;
        tracing::debug!(
            added = report.added,
            removed = report.removed,
            rules_added = report.rules_added,
            rules_removed = report.rules_removed,
            kill_switch = report.kill_switch,
            "routes reconciled"
        );
        Ok(report)
    }

    /// Adds the plan's routes through the tunnel.
    fn add_tunnel_routes(
        &mut self,
        p: &Plan,
        tunnel: Option<u32>,
        report: &mut Report,
    ) -> Result<()> {
        let Some(oif) = tunnel else {
            return Ok(());
        };
        for route in &p.add_routes {
            match self.rtnl.add_route(route, oif) {
                Ok(()) => report.added += 1,
                // The interface vanished or went down between the dump and now.
                Err(Error::Kernel { source, .. })
                    if matches!(source.raw_os_error(), Some(libc::ENODEV | libc::ENETDOWN)) =>
                {
                    return Err(Error::InterfaceMissing {
                        name: self.config.interface.clone(),
                    })
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Removes every route and rule of ours, the kill switch included, and restores
    /// `src_valid_mark`. Works also when the tunnel interface is already gone. This is the
    /// clean stop: afterwards traffic takes the main table's routes again.
    pub fn reset(&mut self) -> Result<Report> {
        self.apply(&Desired::default())
    }

    fn set_src_valid_mark(&mut self) -> Result<()> {
        let current = sysctl::read(SRC_VALID_MARK)?;
        if self.saved_src_valid_mark.is_none() {
            if let Some(path) = self.state_path() {
                state::write(&path, &current)?;
            }
            self.saved_src_valid_mark = Some(current.clone());
        }
        if current != "1" {
            sysctl::write(SRC_VALID_MARK, "1")?;
        }
        Ok(())
    }

    fn restore_src_valid_mark(&mut self) -> Result<()> {
        let Some(saved) = self.saved_src_valid_mark.take() else {
            return Ok(());
        };
        if sysctl::read(SRC_VALID_MARK)? != saved {
            sysctl::write(SRC_VALID_MARK, &saved)?;
        }
        if let Some(path) = self.state_path() {
            state::remove(&path)?;
        }
        Ok(())
    }
}

/// A delete of something that is already gone (ESRCH, ENOENT, ENODEV) is not a failure.
fn tolerate_gone(r: Result<()>) -> Result<bool> {
    match r {
        Ok(()) => Ok(true),
        Err(Error::Kernel { source, .. })
            if matches!(
                source.raw_os_error(),
                Some(libc::ESRCH | libc::ENOENT | libc::ENODEV)
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(e),
    }
}
