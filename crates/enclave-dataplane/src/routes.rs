//! Which peer an outbound packet goes to, for the egress filter: the same longest-prefix
//! match over the peers' allowed IPs that the protocol core does, kept by the shell so that a
//! packet is filtered *before* the core sees it (a dropped packet must not start a handshake).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use enclave_wg::{PeerInfo, PublicKey};
use ipnet::IpNet;

/// Allowed IPs of every peer, longest prefix first. Empty when no peer is filtered, so that
/// a bare tunnel does no lookup at all.
#[derive(Debug, Default)]
pub(crate) struct EgressRoutes {
    routes: Vec<(IpNet, PublicKey)>,
}

impl EgressRoutes {
    /// Rebuilds from the peers; `filtered` says whether any peer has a filter.
    pub(crate) fn rebuild(&mut self, peers: impl Iterator<Item = PeerInfo>, filtered: bool) {
        self.routes.clear();
        if !filtered {
            return;
        }
        // Every peer's prefixes, filtered or not: an unfiltered peer's narrower prefix must
        // win over a filtered peer's broader one, as it does in the core.
        for peer in peers {
            for net in peer.allowed_ips {
                self.routes.push((net, peer.public_key));
            }
        }
        // A stable sort: equal prefixes keep the peers' (public key) order.
        self.routes
            .sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
    }

    /// Whether there is anything to look up.
    pub(crate) fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The peer whose allowed IPs hold the destination of the IP packet, if any.
    pub(crate) fn peer_for(&self, packet: &[u8]) -> Option<PublicKey> {
        let dst: IpAddr = match packet.first()? >> 4 {
            4 => {
                let b = packet.get(16..20)?;
                Ipv4Addr::new(b[0], b[1], b[2], b[3]).into()
            }
            6 => {
                let b: [u8; 16] = packet.get(24..40)?.try_into().ok()?;
                Ipv6Addr::from(b).into()
            }
            _ => return None,
        };
        self.routes
            .iter()
            .find(|(net, _)| net.contains(&dst))
            .map(|(_, key)| *key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(n: u8, nets: &[&str]) -> PeerInfo {
        PeerInfo {
            public_key: PublicKey([n; 32]),
            preshared_key: None,
            endpoint: None,
            proven_endpoint: None,
            allowed_ips: nets.iter().map(|s| s.parse().unwrap()).collect(),
            persistent_keepalive: None,
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
            rx_packets: 0,
            tx_packets: 0,
            drops: Default::default(),
        }
    }

    fn v4_to(dst: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0u8; 20];
        p[0] = 0x45;
        p[16..20].copy_from_slice(&dst);
        p
    }

    fn v6_to(dst: Ipv6Addr) -> Vec<u8> {
        let mut p = vec![0u8; 40];
        p[0] = 0x60;
        p[24..40].copy_from_slice(&dst.octets());
        p
    }

    #[test]
    fn longest_prefix_wins_whichever_peer_is_filtered() {
        let mut routes = EgressRoutes::default();
        let peers = [
            peer(1, &["0.0.0.0/0", "fd00::/8"]),
            peer(2, &["192.168.77.0/24"]),
            peer(3, &["192.168.77.20/32", "fd00::20/128"]),
        ];
        routes.rebuild(peers.iter().cloned(), true);
        assert_eq!(
            routes.peer_for(&v4_to([192, 168, 77, 20])),
            Some(PublicKey([3; 32]))
        );
        assert_eq!(
            routes.peer_for(&v4_to([192, 168, 77, 21])),
            Some(PublicKey([2; 32]))
        );
        assert_eq!(
            routes.peer_for(&v4_to([8, 8, 8, 8])),
            Some(PublicKey([1; 32]))
        );
        assert_eq!(
            routes.peer_for(&v6_to("fd00::20".parse().unwrap())),
            Some(PublicKey([3; 32]))
        );
        assert_eq!(
            routes.peer_for(&v6_to("fd00::21".parse().unwrap())),
            Some(PublicKey([1; 32]))
        );
        assert_eq!(routes.peer_for(&[0x45, 0, 0]), None);
        assert_eq!(routes.peer_for(&[]), None);
    }

    #[test]
    fn nothing_is_looked_up_without_filters() {
        let mut routes = EgressRoutes::default();
        routes.rebuild([peer(1, &["0.0.0.0/0"])].into_iter(), false);
        assert!(routes.is_empty());
        assert_eq!(routes.peer_for(&v4_to([1, 1, 1, 1])), None);
    }
}
