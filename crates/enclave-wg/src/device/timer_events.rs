//! The per-peer timers of the WireGuard paper, section 6, fired by
//! [`Device::handle_timeout`].

use std::time::{Instant, SystemTime};

use super::{Device, Slot};
use crate::session::Session;
use crate::timers::{REJECT_AFTER_TIME, REKEY_ATTEMPT_TIME};
use crate::types::Event;

fn due(deadline: Option<Instant>, now: Instant) -> bool {
    deadline.is_some_and(|deadline| deadline <= now)
}

fn expired(session: &Option<Session>, now: Instant) -> bool {
    session
        .as_ref()
        .is_some_and(|session| now.saturating_duration_since(session.created) >= REJECT_AFTER_TIME)
}

impl Device {
    pub(super) fn peer_timers(&mut self, slot: Slot, now: Instant, wall: SystemTime) {
        let Some(peer) = self.peers[slot].as_mut() else {
            return;
        };
        let key = peer.config.public_key;

        // Sessions past REJECT_AFTER_TIME are gone (section 6.2).
        let mut dead = Vec::new();
        if expired(&peer.current, now) {
            dead.push(peer.current.take());
            self.events.push_back(Event::SessionExpired { peer: key });
            tracing::debug!(peer = %key, "session expired");
        }
        if expired(&peer.previous, now) {
            dead.push(peer.previous.take());
        }
        if expired(&peer.next, now) {
            dead.push(peer.next.take());
        }

        // Three times REJECT_AFTER_TIME without a new session: erase all keys.
        let zero = due(peer.timers.zero_key_material, now);
        if zero {
            peer.timers.zero_key_material = None;
            peer.queue.clear();
        }

        // Handshake retransmission, until REKEY_ATTEMPT_TIME (section 6.4).
        let mut retransmit = false;
        if due(peer.timers.retransmit_handshake, now) {
            peer.timers.retransmit_handshake = None;
            let started = peer.timers.attempt_started.unwrap_or(now);
            let current_alive = peer.sending_session(now).is_some();
            let wanted = peer.pending.is_some()
                || (!peer.queue.is_empty() && !current_alive)
                || peer.endpoint_unproven();
            if !wanted {
                peer.timers.attempt_started = None;
            } else if now.saturating_duration_since(started) >= REKEY_ATTEMPT_TIME {
                tracing::debug!(peer = %key, "handshake did not complete within REKEY_ATTEMPT_TIME");
                if let Some(pending) = peer.pending.take() {
                    self.indices.remove(&pending.local_index);
                }
                peer.timers.attempt_started = None;
                peer.queue.clear();
                self.events
                    .push_back(Event::HandshakeTimedOut { peer: key });
            } else {
                retransmit = true;
            }
        }

        let send_keepalive = due(peer.timers.send_keepalive, now);
        if send_keepalive {
            peer.timers.send_keepalive = None;
        }
        let new_handshake = due(peer.timers.new_handshake, now);
        if new_handshake {
            peer.timers.new_handshake = None;
        }
        let persistent = peer.timers.immediate || due(peer.timers.persistent_keepalive, now);
        if persistent {
            peer.timers.immediate = false;
            peer.timers.persistent_keepalive = None;
        }

        for session in dead {
            self.release_session(session);
        }
        if zero {
            tracing::debug!(peer = %key, "erasing key material");
            self.clear_sessions(slot);
            return;
        }
        if retransmit {
            self.send_initiation(slot, now, wall, true);
        }
        if new_handshake {
            self.send_initiation(slot, now, wall, false);
        }
        if send_keepalive || persistent {
            self.send_keepalive(slot, now, wall);
        }
    }
}
