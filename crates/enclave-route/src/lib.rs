//! Route manager: keeps the routes of the tunnel interface as they are wanted, over netlink.
//!
//! The caller hands in plain values: a set of [`Route`]s (destination, table, metric) that must
//! point at the tunnel interface, and optionally a [`DefaultRoute`] setting. The manager knows
//! nothing of policies or gateways.
//!
//! - Every route and rule it creates carries the route protocol id [`PROTOCOL_ENCLAVE`] (0x45,
//!   69, unused in iproute2's `rt_protos`), so a restarted agent finds exactly its own and never
//!   touches another program's.
//! - [`plan`] is the sans-IO core: it diffs what is wanted against what the kernel has and says
//!   what to add, what to remove and which foreign routes conflict. [`RouteManager`] is the thin
//!   netlink shell around it.
//! - A default route is installed the way wg-quick does it: the route `0.0.0.0/0` goes into a
//!   table of ours; a rule `not fwmark MARK lookup TABLE` sends everything that is not the data
//!   plane's own (marked) UDP there; a rule `lookup main suppress_prefixlength 0` in front lets
//!   the main table's more specific routes (the LAN) win; `net.ipv4.conf.all.src_valid_mark` is
//!   set to 1 and its previous value restored on stop.
//! - The default route comes with a kill switch: an `unreachable` default route of ours in the
//!   same table, at the worst metric. When the agent dies and its TUN device with it, the
//!   kernel drops the route through the tunnel, but the rules and the kill switch stay:
//!   traffic that took the default route is refused ("no route to host") instead of falling
//!   through to the main table's default route in clear. A restarted manager finds and keeps
//!   them; only `reset` (a clean stop) removes them.
//! - Conflicts (an equal or more specific route in the same table on another interface) are
//!   reported, never fought: an equal foreign route makes us leave ours out.
//!
//! Architecture invariant: this crate does not know what a policy is; it is given routes.

mod error;
mod manager;
mod monitor;
mod netlink;
mod plan;
mod socket;
mod state;
mod sysctl;

pub use error::{Error, Result};
pub use ipnet::Ipv4Net;
pub use manager::{Config, Report, RouteManager};
pub use monitor::{Changes, Monitor};
pub use netlink::{Interface, InterfaceAddress, RouteLookup, Rtnl};
pub use plan::{
    plan, Conflict, ConflictKind, DefaultRoute, Desired, KernelRoute, KernelRule, Plan, Route,
    RouteKind, RuleSpec, KILL_SWITCH_METRIC, PROTOCOL_ENCLAVE, TABLE_MAIN,
};
pub use socket::set_fwmark;
