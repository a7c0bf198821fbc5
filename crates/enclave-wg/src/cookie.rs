//! MAC1, MAC2 and cookie replies: the WireGuard paper, section 5.4.4 and 5.4.7.
//!
//! mac1 proves the sender knows our public key; mac2 proves it can receive
//! at its source address. Under load a responder only processes handshake
//! messages with a valid mac2 and answers the others with a cookie reply.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand_core::Rng;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::crypto::{hash, mac, xaead_open, xaead_seal};
use crate::keys::PublicKey;
use crate::messages::{cookie_reply, COOKIE_REPLY};

/// Label hashed with a public key into the mac1 key.
pub(crate) const LABEL_MAC1: &[u8] = b"mac1----";
/// Label hashed with a public key into the cookie encryption key.
pub(crate) const LABEL_COOKIE: &[u8] = b"cookie--";
/// How long a cookie secret, and a received cookie, stays valid (paper, section 6.1).
pub(crate) const COOKIE_REFRESH_TIME: Duration = Duration::from_secs(120);

/// The mac1 and cookie keys that belong to one public key.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct MacKeys {
    /// `HASH(LABEL_MAC1 || S_pub)`.
    mac1: [u8; 32],
    /// `HASH(LABEL_COOKIE || S_pub)`.
    cookie: [u8; 32],
}

impl MacKeys {
    pub(crate) fn new(public: &PublicKey) -> Self {
        Self {
            mac1: hash(&[LABEL_MAC1, &public.0]),
            cookie: hash(&[LABEL_COOKIE, &public.0]),
        }
    }
}

/// Fills in mac1 (keyed for the receiver) and mac2 (with the receiver's
/// cookie, when we hold a fresh one) at the end of a handshake message.
/// Returns mac1, which a cookie reply to this message will be bound to.
pub(crate) fn seal_macs(msg: &mut [u8], receiver: &MacKeys, cookie: Option<&[u8; 16]>) -> [u8; 16] {
    let mac1_at = msg.len() - 32;
    let mac2_at = msg.len() - 16;
    let mac1 = mac(&receiver.mac1, &msg[..mac1_at]);
    msg[mac1_at..mac2_at].copy_from_slice(&mac1);
    let mac2 = cookie
        .map(|cookie| mac(cookie, &msg[..mac2_at]))
        .unwrap_or([0; 16]);
    msg[mac2_at..].copy_from_slice(&mac2);
    mac1
}

/// Whether a handshake message carries a valid mac1 for us.
pub(crate) fn mac1_valid(msg: &[u8], own: &MacKeys) -> bool {
    let Some(mac1_at) = msg.len().checked_sub(32) else {
        return false;
    };
    constant_time_eq(
        &mac(&own.mac1, &msg[..mac1_at]),
        &msg[mac1_at..mac1_at + 16],
    )
}

/// Compares a computed MAC with a received one in constant time (`subtle`),
/// so that how long the comparison takes says nothing about how many of the
/// leading bytes were right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// The responder's side: a secret that changes every two minutes, cookies
/// derived from it and a sender's address, and cookie replies.
pub(crate) struct CookieChecker {
    secret: [u8; 32],
    secret_born: Option<Instant>,
}

impl Drop for CookieChecker {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

impl CookieChecker {
    pub(crate) fn new() -> Self {
        Self {
            secret: [0; 32],
            secret_born: None,
        }
    }

    /// `MAC(R_m, A_m)` for the address `from`, renewing `R_m` when it is
    /// older than COOKIE_REFRESH_TIME.
    fn cookie(&mut self, from: SocketAddr, now: Instant, rng: &mut dyn Rng) -> [u8; 16] {
        let fresh = self
            .secret_born
            .is_some_and(|born| now.saturating_duration_since(born) < COOKIE_REFRESH_TIME);
        if !fresh {
            rng.fill_bytes(&mut self.secret);
            self.secret_born = Some(now);
        }
        let mut address = [0u8; 18];
        let used = match from.ip() {
            std::net::IpAddr::V4(ip) => {
                address[..4].copy_from_slice(&ip.octets());
                4
            }
            std::net::IpAddr::V6(ip) => {
                address[..16].copy_from_slice(&ip.octets());
                16
            }
        };
        address[used..used + 2].copy_from_slice(&from.port().to_be_bytes());
        mac(&self.secret, &address[..used + 2])
    }

    /// Whether a handshake message from `from` carries a valid mac2.
    pub(crate) fn mac2_valid(
        &mut self,
        msg: &[u8],
        from: SocketAddr,
        now: Instant,
        rng: &mut dyn Rng,
    ) -> bool {
        let Some(mac2_at) = msg.len().checked_sub(16) else {
            return false;
        };
        let cookie = self.cookie(from, now, rng);
        constant_time_eq(&mac(&cookie, &msg[..mac2_at]), &msg[mac2_at..])
    }

    /// The cookie reply to a handshake message from `from` whose sender index is `sender`.
    pub(crate) fn reply(
        &mut self,
        msg: &[u8],
        sender: u32,
        from: SocketAddr,
        own: &MacKeys,
        now: Instant,
        rng: &mut dyn Rng,
    ) -> [u8; cookie_reply::LEN] {
        let cookie = self.cookie(from, now, rng);
        let mac1_at = msg.len().saturating_sub(32);
        let mac1 = msg.get(mac1_at..mac1_at + 16).unwrap_or(&[]);
        let mut reply = [0u8; cookie_reply::LEN];
        reply[..4].copy_from_slice(&COOKIE_REPLY.to_le_bytes());
        reply[cookie_reply::RECEIVER..cookie_reply::NONCE].copy_from_slice(&sender.to_le_bytes());
        let mut nonce = [0u8; 24];
        rng.fill_bytes(&mut nonce);
        reply[cookie_reply::NONCE..cookie_reply::COOKIE].copy_from_slice(&nonce);
        let sealed = &mut reply[cookie_reply::COOKIE..];
        sealed[..16].copy_from_slice(&cookie);
        xaead_seal(&own.cookie, &nonce, sealed, mac1);
        reply
    }
}

/// Decrypts a cookie reply from the peer whose keys are `peer`, bound to
/// the mac1 we last sent it.
pub(crate) fn open_cookie_reply(
    reply: &[u8],
    peer: &MacKeys,
    last_mac1: &[u8; 16],
) -> Option<[u8; 16]> {
    if reply.len() != cookie_reply::LEN {
        return None;
    }
    let mut nonce = [0u8; 24];
    nonce.copy_from_slice(&reply[cookie_reply::NONCE..cookie_reply::COOKIE]);
    let mut sealed = [0u8; 32];
    sealed.copy_from_slice(&reply[cookie_reply::COOKIE..]);
    if !xaead_open(&peer.cookie, &nonce, &mut sealed, last_mac1) {
        return None;
    }
    let mut cookie = [0u8; 16];
    cookie.copy_from_slice(&sealed[..16]);
    sealed.zeroize();
    Some(cookie)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_round_trip_makes_mac2_valid() {
        let responder = PublicKey([3; 32]);
        let keys = MacKeys::new(&responder);
        let mut checker = CookieChecker::new();
        let mut rng = enclave_testkit::TestRng(4);
        let now = crate::test_clock_start();
        let from: SocketAddr = "192.0.2.1:51820".parse().expect("address");

        let mut msg = [7u8; 148];
        let mac1 = seal_macs(&mut msg, &keys, None);
        assert!(mac1_valid(&msg, &keys));
        assert!(!checker.mac2_valid(&msg, from, now, &mut rng));

        let reply = checker.reply(&msg, 42, from, &keys, now, &mut rng);
        assert_eq!(
            crate::messages::read_u32(&reply, cookie_reply::RECEIVER),
            Some(42)
        );
        assert!(
            open_cookie_reply(&reply, &keys, &[0; 16]).is_none(),
            "bound to mac1"
        );
        let cookie = open_cookie_reply(&reply, &keys, &mac1).expect("cookie decrypts");

        seal_macs(&mut msg, &keys, Some(&cookie));
        assert!(checker.mac2_valid(&msg, from, now, &mut rng));
        let elsewhere: SocketAddr = "192.0.2.1:51821".parse().expect("address");
        assert!(
            !checker.mac2_valid(&msg, elsewhere, now, &mut rng),
            "cookie is per address"
        );
        let later = now + COOKIE_REFRESH_TIME;
        assert!(
            !checker.mac2_valid(&msg, from, later, &mut rng),
            "secret rotated"
        );
    }

    #[test]
    fn mac1_rejects_tampering() {
        let keys = MacKeys::new(&PublicKey([3; 32]));
        let mut msg = [7u8; 92];
        seal_macs(&mut msg, &keys, None);
        msg[10] ^= 1;
        assert!(!mac1_valid(&msg, &keys));
        assert!(!mac1_valid(&[0u8; 10], &keys));
    }
}
