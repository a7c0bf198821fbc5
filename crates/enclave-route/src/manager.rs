//! The route manager: reads the kernel's state, asks [`plan`] what to change, applies it.

use std::path::PathBuf;

use crate::netlink::Rtnl;
use crate::plan::{plan, Conflict, Desired, Plan};
use crate::state;
use crate::sysctl::{self, SRC_VALID_MARK};
use crate::{Error, Result};

/// How the route manager is set up.
#[derive(Debug, Clone)]
pub struct Config {
    /// The tunnel interface whose routes we manage.
    pub interface: String,
    /// A directory where the manager keeps what it must restore after a crash (the previous
    /// `src_valid_mark`); created when first needed. `None` keeps it in memory only: a
    /// `kill -9` then forgets it.
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
    /// False when the tunnel interface does not exist or is down: nothing of ours is installed
    /// then.
    pub interface_present: bool,
}

/// Keeps the tunnel interface's routes, rules and `src_valid_mark` as wanted.
#[derive(Debug)]
pub struct RouteManager {
    config: Config,
    rtnl: Rtnl,
    /// `src_valid_mark` before we changed it, when we did.
    saved_src_valid_mark: Option<String>,
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
        Ok((tunnel, plan(desired, tunnel, &routes, &rules)))
    }

    /// Brings routes, rules and `src_valid_mark` to `desired`: adds what is missing, removes
    /// what is ours and no longer wanted, reports conflicts and leaves foreign routes alone.
    ///
    /// When the tunnel interface is missing or down, removes all of ours (the kernel already
    /// dropped the routes on it) and reports `interface_present: false`; call again when it is
    /// back.
    pub fn apply(&mut self, desired: &Desired) -> Result<Report> {
        let (tunnel, p) = self.survey(desired)?;
        let mut report = Report {
            interface_present: tunnel.is_some(),
            ..Report::default()
        };
        if desired.default_route.is_some() && tunnel.is_some() {
            self.set_src_valid_mark()?;
        }
        if let Some(oif) = tunnel {
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
            for rule in &p.add_rules {
                self.rtnl.add_rule(rule)?;
                report.rules_added += 1;
            }
        }
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
        if desired.default_route.is_none() || tunnel.is_none() {
            self.restore_src_valid_mark()?;
        }
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
        report.conflicts = p.conflicts;
        tracing::debug!(
            added = report.added,
            removed = report.removed,
            rules_added = report.rules_added,
            rules_removed = report.rules_removed,
            "routes reconciled"
        );
        Ok(report)
    }

    /// Removes every route and rule of ours and restores `src_valid_mark`. Works also when the
    /// tunnel interface is already gone.
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
