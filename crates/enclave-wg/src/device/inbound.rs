//! The inbound path: handshake messages, cookie replies and transport data.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Instant, SystemTime};

use x25519_dalek::StaticSecret;

use super::{ip_source_and_len, needs_last_minute_rekey, on_authenticated_sent, Device, Slot};
use crate::cookie::{mac1_valid, open_cookie_reply, seal_macs};
use crate::handshake::{accept_initiation, consume_response, create_response, receive_initiation};
use crate::keys::PublicKey;
use crate::messages::{
    cookie_reply, initiation, message_type, read_u32, response, transport, COOKIE_REPLY,
    INITIATION, RESPONSE, TRANSPORT,
};
use crate::peer::Peer;
use crate::session::{OpenError, Session};
use crate::timers::{INITIATION_MIN_INTERVAL, KEEPALIVE_TIMEOUT, REJECT_AFTER_TIME};
use crate::types::{Decapsulated, DropReason, Event};

/// Which of a peer's sessions a transport message is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Current,
    Previous,
    Next,
}

impl Device {
    /// Handles one datagram received from `from` on the UDP socket. A
    /// transport packet is decrypted into `out` (which needs
    /// `datagram.len()` bytes). Never panics, whatever the bytes.
    pub fn decapsulate(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
        wall: SystemTime,
        out: &mut [u8],
    ) -> Decapsulated {
        self.last_now = Some(now);
        match (message_type(datagram), datagram.len()) {
            (Some(TRANSPORT), len) if len >= transport::MIN_LEN => {
                self.handle_transport(from, datagram, now, wall, out)
            }
            (Some(INITIATION), initiation::LEN) => self.handle_initiation(from, datagram, now),
            (Some(RESPONSE), response::LEN) => self.handle_response(from, datagram, now, wall),
            (Some(COOKIE_REPLY), cookie_reply::LEN) => {
                self.handle_cookie_reply(datagram, now, wall)
            }
            _ => {
                tracing::trace!(
                    len = datagram.len(),
                    "dropping a datagram that is no WireGuard message"
                );
                Decapsulated::Dropped(DropReason::Malformed)
            }
        }
    }

    /// Checks mac1 and, under load, mac2 of a handshake message; queues a
    /// cookie reply when mac2 is missing. `Err` carries the drop reason.
    ///
    /// Under load each source address has two budgets
    /// ([`crate::ratelimit::HANDSHAKES_PER_SECOND`] each): one for messages
    /// whose mac2 proves the address (each may cost an X25519), one for cookie
    /// replies to messages without a valid mac2. A message that could only
    /// draw on a spent budget is dropped before any hashing: it would be
    /// dropped whatever its MACs. It still counts towards load: its source
    /// sent valid-mac1 messages within the last second (only those open a
    /// budget), and a flood that keeps coming keeps the device under load.
    fn check_macs(
        &mut self,
        from: SocketAddr,
        msg: &[u8],
        sender_at: usize,
        now: Instant,
    ) -> Result<(), DropReason> {
        let mut under_load = self.forced_under_load || self.load.under_load(now);
        // Senders without a cookie leave mac2 zero.
        let mac2_present = msg
            .get(msg.len().saturating_sub(16)..)
            .is_some_and(|mac2| mac2.iter().any(|&byte| byte != 0));
        if under_load {
            // Only messages with a valid mac2 from this address drain the mac2
            // budget, so a forged source cannot spend it for its owner.
            let spent = if mac2_present {
                !self.limiter.would_allow(from.ip(), now)
            } else {
                !self.cookie_limiter.would_allow(from.ip(), now)
            };
            if spent {
                self.load.record(now);
                tracing::trace!("under load: handshake message over its source's rate");
                return Err(DropReason::RateLimited);
            }
        }
        if !mac1_valid(msg, &self.own_mac_keys) {
            return Err(DropReason::BadMac1);
        }
        // Only messages with a valid mac1 put the device under load: anything
        // else costs one keyed hash and is gone.
        self.load.record(now);
        under_load = under_load || self.load.under_load(now);
        if !under_load {
            return Ok(());
        }
        let proven = mac2_present
            && self
                .cookie_checker
                .mac2_valid(msg, from, now, &mut *self.rng);
        if !proven {
            if !self.cookie_limiter.allow(from.ip(), now) {
                tracing::trace!("under load: no cookie reply, the source is over its rate");
                return Err(DropReason::RateLimited);
            }
            let sender = read_u32(msg, sender_at).unwrap_or(0);
            let reply = self.cookie_checker.reply(
                msg,
                sender,
                from,
                &self.own_mac_keys,
                now,
                &mut *self.rng,
            );
            tracing::trace!("under load: answering a handshake message with a cookie reply");
            self.transmits.push_back(crate::Transmit {
                dst: from,
                payload: reply.to_vec(),
            });
            return Err(DropReason::CookieRequired);
        }
        // mac2 proves the source address can receive: limit what it may
        // make us compute (an X25519 per initiation) per address.
        if !self.limiter.allow(from.ip(), now) {
            tracing::trace!("under load: handshake message over its source's rate");
            return Err(DropReason::RateLimited);
        }
        Ok(())
    }

    fn handle_initiation(&mut self, from: SocketAddr, msg: &[u8], now: Instant) -> Decapsulated {
        if let Err(reason) = self.check_macs(from, msg, initiation::SENDER, now) {
            return Decapsulated::Dropped(reason);
        }
        let Some(received) = receive_initiation(&self.identity, msg) else {
            return Decapsulated::Dropped(DropReason::HandshakeFailed);
        };
        let Some(&slot) = self.by_key.get(&PublicKey(received.remote_static)) else {
            tracing::debug!("handshake initiation from a key that is not a peer");
            return Decapsulated::Dropped(DropReason::UnknownPeer);
        };
        let Some(peer) = self.peers[slot].as_ref() else {
            return Decapsulated::Dropped(DropReason::HandshakeFailed);
        };
        let Some(accepted) = accept_initiation(&received, &peer.statics, msg) else {
            return Decapsulated::Dropped(DropReason::HandshakeFailed);
        };
        if peer
            .latest_timestamp
            .is_some_and(|latest| accepted.timestamp <= latest)
        {
            return Decapsulated::Dropped(DropReason::StaleTimestamp);
        }
        let flood = peer
            .last_initiation_received
            .is_some_and(|last| now.saturating_duration_since(last) < INITIATION_MIN_INTERVAL);
        if flood {
            return Decapsulated::Dropped(DropReason::StaleTimestamp);
        }
        let Some(remote_index) = read_u32(msg, initiation::SENDER) else {
            return Decapsulated::Dropped(DropReason::Malformed);
        };
        let local_index = self.new_index(slot);
        let ephemeral = StaticSecret::random_from_rng(&mut *self.rng);
        let Some(peer) = self.peers[slot].as_mut() else {
            return Decapsulated::Dropped(DropReason::HandshakeFailed);
        };
        let mut reply = [0u8; response::LEN];
        let Some(keys) = create_response(
            &accepted,
            &peer.statics,
            local_index,
            remote_index,
            ephemeral,
            &mut reply,
        ) else {
            self.indices.remove(&local_index);
            return Decapsulated::Dropped(DropReason::HandshakeFailed);
        };
        peer.latest_timestamp = Some(accepted.timestamp);
        peer.last_initiation_received = Some(now);
        peer.last_mac1 = Some(seal_macs(
            &mut reply,
            &peer.mac_keys,
            peer.fresh_cookie(now),
        ));
        let mut session = Session::new(&keys, local_index, remote_index, now, false);
        session.response_sent_to = Some(from);
        let old_next = peer.next.replace(session);
        peer.rx_bytes += msg.len() as u64;
        peer.tx_bytes += reply.len() as u64;
        on_authenticated_received(peer, now);
        on_authenticated_sent(peer, now);
        on_session_derived(peer, now);
        let key = peer.config.public_key;
        tracing::debug!(peer = %key, "answering a handshake initiation");
        self.release_session(old_next);
        // The response itself tests this address: no handshake of our own.
        self.roam(slot, from, None);
        self.transmits.push_back(crate::Transmit {
            dst: from,
            payload: reply.to_vec(),
        });
        Decapsulated::Consumed { peer: Some(key) }
    }

    fn handle_response(
        &mut self,
        from: SocketAddr,
        msg: &[u8],
        now: Instant,
        wall: SystemTime,
    ) -> Decapsulated {
        if let Err(reason) = self.check_macs(from, msg, response::SENDER, now) {
            return Decapsulated::Dropped(reason);
        }
        let (Some(receiver), Some(remote_index)) = (
            read_u32(msg, response::RECEIVER),
            read_u32(msg, response::SENDER),
        ) else {
            return Decapsulated::Dropped(DropReason::Malformed);
        };
        let Some((slot, peer)) = peer_by_index(&self.indices, &mut self.peers, receiver) else {
            return Decapsulated::Dropped(DropReason::UnknownSession);
        };
        let Some(pending) = peer
            .pending
            .as_ref()
            .filter(|pending| pending.local_index == receiver)
        else {
            return Decapsulated::Dropped(DropReason::UnknownSession);
        };
        let Some(keys) = consume_response(&pending.state, &self.identity, &peer.statics, msg)
        else {
            return Decapsulated::Dropped(DropReason::HandshakeFailed);
        };
        // The response answers an initiation sent to `sent_to`: that address has a return path.
        peer.proven_endpoint = Some(pending.sent_to);
        peer.pending = None;
        let session = Session::new(&keys, receiver, remote_index, now, true);
        let old_previous = std::mem::replace(&mut peer.previous, peer.current.replace(session));
        peer.rx_bytes += msg.len() as u64;
        on_handshake_complete(peer, wall);
        on_session_derived(peer, now);
        on_authenticated_received(peer, now);
        let key = peer.config.public_key;
        tracing::debug!(peer = %key, "handshake completed as initiator");
        self.events
            .push_back(Event::HandshakeCompleted { peer: key });
        self.release_session(old_previous);
        self.roam(slot, from, Some((now, wall)));
        self.flush_queue(slot, now, wall, true);
        Decapsulated::Consumed { peer: Some(key) }
    }

    fn handle_cookie_reply(&mut self, msg: &[u8], now: Instant, wall: SystemTime) -> Decapsulated {
        let Some(receiver) = read_u32(msg, cookie_reply::RECEIVER) else {
            return Decapsulated::Dropped(DropReason::Malformed);
        };
        let Some((slot, peer)) = peer_by_index(&self.indices, &mut self.peers, receiver) else {
            return Decapsulated::Dropped(DropReason::UnknownSession);
        };
        let Some(last_mac1) = peer.last_mac1 else {
            return Decapsulated::Dropped(DropReason::UnknownSession);
        };
        let Some(cookie) = open_cookie_reply(msg, &peer.mac_keys, &last_mac1) else {
            return Decapsulated::Dropped(DropReason::DecryptFailed);
        };
        peer.cookie = Some((cookie, now));
        let key = peer.config.public_key;
        tracing::debug!(peer = %key, "received a cookie");
        // The responder is under load and dropped our initiation: send it again
        // now, with mac2, rather than after REKEY_TIMEOUT, so that a handshake
        // under load takes two round trips, not five seconds. Once per
        // initiation, so cookie replies cannot make us send more than that.
        let resend = peer
            .pending
            .as_ref()
            .is_some_and(|pending| pending.local_index == receiver && !pending.after_cookie);
        if resend {
            self.send_initiation(slot, now, wall, true);
            if let Some(pending) = self.peers[slot].as_mut().and_then(|p| p.pending.as_mut()) {
                pending.after_cookie = true;
            }
        }
        Decapsulated::Consumed { peer: Some(key) }
    }

    fn handle_transport(
        &mut self,
        from: SocketAddr,
        msg: &[u8],
        now: Instant,
        wall: SystemTime,
        out: &mut [u8],
    ) -> Decapsulated {
        let Some(receiver) = read_u32(msg, transport::RECEIVER) else {
            return Decapsulated::Dropped(DropReason::Malformed);
        };
        let Some((slot, peer)) = peer_by_index(&self.indices, &mut self.peers, receiver) else {
            return Decapsulated::Dropped(DropReason::UnknownSession);
        };
        let is =
            |session: &Option<Session>| session.as_ref().is_some_and(|s| s.local_index == receiver);
        let which = if is(&peer.current) {
            Which::Current
        } else if is(&peer.previous) {
            Which::Previous
        } else if is(&peer.next) {
            Which::Next
        } else {
            return Decapsulated::Dropped(DropReason::UnknownSession);
        };
        let session = match which {
            Which::Current => peer.current.as_mut(),
            Which::Previous => peer.previous.as_mut(),
            Which::Next => peer.next.as_mut(),
        };
        let Some(session) = session else {
            return Decapsulated::Dropped(DropReason::UnknownSession);
        };
        let opened = if now.saturating_duration_since(session.created) >= REJECT_AFTER_TIME {
            Err(DropReason::SessionExpired)
        } else {
            session.open(msg, out).map_err(|e| match e {
                OpenError::Replay => DropReason::Replay,
                OpenError::Decrypt => DropReason::DecryptFailed,
                OpenError::BufferTooSmall => DropReason::BufferTooSmall,
                OpenError::Malformed => DropReason::Malformed,
            })
        };
        let plain_len = match opened {
            Ok(len) => len,
            Err(reason) => {
                peer.drops[reason as usize] += 1;
                return Decapsulated::Dropped(reason);
            }
        };
        // The message is authentic from here on.
        let key = peer.config.public_key;
        peer.rx_bytes += msg.len() as u64;
        peer.rx_packets += 1;
        on_authenticated_received(peer, now);
        let mut released = None;
        if which == Which::Next {
            let next = peer.next.take();
            // The initiator derived this session's keys from our response: the
            // address that response went to has a return path (key confirmation).
            if let Some(proven) = next.as_ref().and_then(|next| next.response_sent_to) {
                peer.proven_endpoint = Some(proven);
            }
            let superseded = match (&next, &peer.current) {
                (Some(next), Some(current)) => current.initiator && current.created > next.created,
                _ => false,
            };
            released = if superseded {
                // Both sides initiated at once and our own handshake finished
                // later: keep sending on ours, keep the peer's for receiving.
                std::mem::replace(&mut peer.previous, next)
            } else {
                let displaced = std::mem::replace(&mut peer.current, next);
                std::mem::replace(&mut peer.previous, displaced)
            };
            on_handshake_complete(peer, wall);
            tracing::debug!(peer = %key, "handshake completed as responder");
            self.events
                .push_back(Event::HandshakeCompleted { peer: key });
        }
        let last_minute = !peer.timers.sent_last_minute_handshake
            && peer
                .current
                .as_ref()
                .is_some_and(|current| needs_last_minute_rekey(current, now));
        if last_minute {
            peer.timers.sent_last_minute_handshake = true;
        }
        let result = if plain_len == 0 {
            tracing::trace!("received keepalive");
            Decapsulated::Consumed { peer: Some(key) }
        } else {
            let verdict = match ip_source_and_len(&out[..plain_len]) {
                None => Err(DropReason::Malformed),
                Some((source, len)) if self.routes.lookup(source) == Some(slot) => Ok(len),
                Some(_) => Err(DropReason::SourceNotAllowed),
            };
            match verdict {
                Ok(len) => {
                    on_data_received(peer, now);
                    tracing::trace!(len, "received a transport packet");
                    Decapsulated::Deliver { peer: key, len }
                }
                Err(reason) => {
                    peer.drops[reason as usize] += 1;
                    Decapsulated::Dropped(reason)
                }
            }
        };
        self.release_session(released);
        self.roam(slot, from, Some((now, wall)));
        if last_minute {
            self.send_initiation(slot, now, wall, false);
        }
        if which == Which::Next {
            self.flush_queue(slot, now, wall, false);
        }
        result
    }

    /// Roaming (paper, section 2.1): the endpoint follows the latest
    /// authenticated packet. The proven endpoint does not: a one-way packet
    /// says nothing about a return path, and its outer source can be forged.
    /// With `probe` (the clock), moving to an address that is not the proven
    /// one starts a handshake towards it (at most one per REKEY_TIMEOUT), so a
    /// peer that really moved has its new address proven within about one
    /// round trip.
    fn roam(&mut self, slot: Slot, from: SocketAddr, probe: Option<(Instant, SystemTime)>) {
        let Some(peer) = self.peers[slot].as_mut() else {
            return;
        };
        if peer.endpoint == Some(from) {
            return;
        }
        peer.endpoint = Some(from);
        let key = peer.config.public_key;
        let unproven = peer.endpoint_unproven();
        tracing::debug!(peer = %key, endpoint = %from, unproven, "peer endpoint changed");
        self.events.push_back(Event::EndpointChanged {
            peer: key,
            endpoint: from,
        });
        if let Some((now, wall)) = probe.filter(|_| unproven) {
            self.send_initiation(slot, now, wall, false);
        }
    }
}

/// The peer that owns the local index `receiver` (one of its sessions or its
/// pending initiation), and its slot. It takes the two tables rather than the
/// device, so that a caller holding the peer can still read the device's
/// other fields (our identity).
fn peer_by_index<'a>(
    indices: &HashMap<u32, Slot>,
    peers: &'a mut [Option<Peer>],
    receiver: u32,
) -> Option<(Slot, &'a mut Peer)> {
    let slot = *indices.get(&receiver)?;
    Some((slot, peers[slot].as_mut()?))
}

/// Any authenticated packet came in: the peer is alive, no need for the
/// "no answer to our data" handshake (section 6.5).
fn on_authenticated_received(peer: &mut Peer, now: Instant) {
    peer.timers.new_handshake = None;
    if let Some(interval) = peer.keepalive_interval() {
        peer.timers.persistent_keepalive = Some(now + interval);
    }
}

/// Data came in: answer within KEEPALIVE_TIMEOUT, with data or a keepalive (section 6.5).
fn on_data_received(peer: &mut Peer, now: Instant) {
    peer.timers
        .send_keepalive
        .get_or_insert(now + KEEPALIVE_TIMEOUT);
}

/// A new session exists: erase everything if no other follows within 3 × REJECT_AFTER_TIME.
fn on_session_derived(peer: &mut Peer, now: Instant) {
    peer.timers.zero_key_material = Some(now + REJECT_AFTER_TIME * 3);
}

/// A handshake completed: stop retrying.
fn on_handshake_complete(peer: &mut Peer, wall: SystemTime) {
    peer.timers.retransmit_handshake = None;
    peer.timers.attempt_started = None;
    peer.timers.sent_last_minute_handshake = false;
    peer.last_handshake = Some(wall);
}
