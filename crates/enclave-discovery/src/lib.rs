//! Subnet discovery: which local subnets a gateway can offer, and why each interface was taken
//! or left; and which configured subnets, not directly connected, it can really reach.
//!
//! [`classify`] and [`check_reachability`] are pure functions over plain values ([`Link`],
//! [`Address`], route lookups), tested without a kernel. [`discover`] and [`reachability`] are the
//! thin shell that feeds them from the calling thread's network namespace, through the route
//! crate's rtnetlink layer ([`enclave_route::Rtnl`]) and nl80211. [`render`] is what
//! `enclave-gw discover` prints, as a table or as JSON.
//!
//! The rules, from the product's guide: an interface is taken when it is up and is an ethernet
//! or wireless device (bridges, VLANs, bonds, macvlans and veths of them count); loopback,
//! TUN/TAP, WireGuard, dummy and other tunnels, and our own tunnel never count. Of a taken
//! interface, every IPv4 unicast address is offered as its subnet, secondary addresses included;
//! link-local 169.254.0.0/16, multicast, broadcast and loopback addresses are not.

#![warn(missing_docs)]

mod classify;
mod error;
mod netlink;
pub mod render;

pub use classify::{
    check_reachability, classify, Address, Choice, Discovery, InterfaceReport, Link, Offer,
    Reachability, RouteAnswer,
};
pub use error::{Error, Result};
pub use ipnet::Ipv4Net;
pub use netlink::{discover, reachability};
