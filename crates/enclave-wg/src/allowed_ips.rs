//! Cryptokey routing (WireGuard paper, section 2): allowed IPs with
//! longest-prefix match, used both to pick the peer for an outgoing packet
//! and to check the source of a decrypted incoming one.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;

/// A longest-prefix-match table from networks to values. One hash map per
/// prefix length in use, searched from the longest: a lookup costs one
/// probe per distinct prefix length.
#[derive(Debug, Clone)]
pub(crate) struct AllowedIps<T> {
    v4: Vec<(u8, HashMap<u32, T>)>,
    v6: Vec<(u8, HashMap<u128, T>)>,
}

impl<T: Copy + PartialEq> AllowedIps<T> {
    pub(crate) fn new() -> Self {
        Self {
            v4: Vec::new(),
            v6: Vec::new(),
        }
    }

    /// Routes `net` to `value`, replacing whoever had exactly this network.
    pub(crate) fn insert(&mut self, net: IpNet, value: T) {
        match net {
            IpNet::V4(net) => {
                let len = net.prefix_len();
                let key = u32::from(net.network());
                insert_at(&mut self.v4, len, key, value);
            }
            IpNet::V6(net) => {
                let len = net.prefix_len();
                let key = u128::from(net.network());
                insert_at(&mut self.v6, len, key, value);
            }
        }
    }

    /// Removes every network routed to `value`.
    pub(crate) fn remove_value(&mut self, value: T) {
        for (_, map) in &mut self.v4 {
            map.retain(|_, v| *v != value);
        }
        for (_, map) in &mut self.v6 {
            map.retain(|_, v| *v != value);
        }
        self.v4.retain(|(_, map)| !map.is_empty());
        self.v6.retain(|(_, map)| !map.is_empty());
    }

    /// The value of the longest prefix that contains `addr`.
    pub(crate) fn lookup(&self, addr: IpAddr) -> Option<T> {
        match addr {
            IpAddr::V4(addr) => {
                let bits = u32::from(addr);
                self.v4.iter().find_map(|(len, map)| {
                    let mask = u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
                    map.get(&(bits & mask)).copied()
                })
            }
            IpAddr::V6(addr) => {
                let bits = u128::from(addr);
                self.v6.iter().find_map(|(len, map)| {
                    let mask = u128::MAX.checked_shl(128 - u32::from(*len)).unwrap_or(0);
                    map.get(&(bits & mask)).copied()
                })
            }
        }
    }
}

fn insert_at<K: std::hash::Hash + Eq, T>(
    levels: &mut Vec<(u8, HashMap<K, T>)>,
    len: u8,
    key: K,
    value: T,
) {
    // Levels stay sorted by prefix length, longest first.
    let at = levels.partition_point(|(level, _)| *level > len);
    if levels.get(at).is_none_or(|(level, _)| *level != len) {
        levels.insert(at, (len, HashMap::new()));
    }
    levels[at].1.insert(key, value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net(text: &str) -> IpNet {
        text.parse().expect("network")
    }

    #[test]
    fn longest_prefix_wins_and_removal_works() {
        let mut table = AllowedIps::new();
        table.insert(net("0.0.0.0/0"), 1);
        table.insert(net("10.0.0.0/8"), 2);
        table.insert(net("10.1.2.0/24"), 3);
        table.insert(net("10.1.2.7/32"), 4);
        table.insert(net("fd00::/64"), 5);
        table.insert(net("10.1.2.99/24"), 6); // host bits ignored; replaces 3
        assert_eq!(table.lookup("10.1.2.7".parse().expect("ip")), Some(4));
        assert_eq!(table.lookup("10.1.2.8".parse().expect("ip")), Some(6));
        assert_eq!(table.lookup("10.9.9.9".parse().expect("ip")), Some(2));
        assert_eq!(table.lookup("192.0.2.1".parse().expect("ip")), Some(1));
        assert_eq!(table.lookup("fd00::1".parse().expect("ip")), Some(5));
        assert_eq!(table.lookup("fd01::1".parse().expect("ip")), None);
        table.remove_value(4);
        assert_eq!(table.lookup("10.1.2.7".parse().expect("ip")), Some(6));
        table.remove_value(1);
        assert_eq!(table.lookup("192.0.2.1".parse().expect("ip")), None);
    }

    proptest! {
        #[test]
        fn matches_a_linear_scan(
            routes in proptest::collection::vec((any::<u32>(), 0u8..=32, 0u8..4), 0..20),
            probes in proptest::collection::vec(any::<u32>(), 1..20),
        ) {
            let mut table = AllowedIps::new();
            let mut list: Vec<(ipnet::Ipv4Net, u8)> = Vec::new();
            for (addr, len, value) in routes {
                let route = ipnet::Ipv4Net::new(addr.into(), len).expect("valid prefix").trunc();
                table.insert(IpNet::V4(route), value);
                list.retain(|(existing, _)| *existing != route);
                list.push((route, value));
            }
            for probe in probes {
                let ip = std::net::Ipv4Addr::from(probe);
                let expected = list
                    .iter()
                    .filter(|(route, _)| route.contains(&ip))
                    .max_by_key(|(route, _)| route.prefix_len())
                    .map(|(_, value)| *value);
                prop_assert_eq!(table.lookup(IpAddr::V4(ip)), expected);
            }
        }
    }
}
