//! The protocol's time and message limits, named as in the WireGuard paper,
//! section 6.1 ("Preliminaries", table of constants), with their use
//! described in sections 6.2 to 6.5.

use std::time::Duration;

/// After this many messages on a session the initiator starts a new
/// handshake (section 6.2).
pub const REKEY_AFTER_MESSAGES: u64 = 1 << 60;
/// After this many messages a session is no longer used (section 6.2).
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);
/// After a session is this old, the initiator starts a new handshake when
/// it next sends (section 6.2).
pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
/// After a session is this old it is no longer used for sending or
/// receiving (section 6.2).
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);
/// How long to retry a handshake before giving up (section 6.4).
pub const REKEY_ATTEMPT_TIME: Duration = Duration::from_secs(90);
/// How long to wait for a handshake response before retrying (section
/// 6.4); each retry adds a random jitter of up to [`REKEY_TIMEOUT_JITTER`].
pub const REKEY_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound of the random jitter added to [`REKEY_TIMEOUT`] (as
/// wireguard-go and the Linux module do).
pub const REKEY_TIMEOUT_JITTER: Duration = Duration::from_millis(334);
/// Send a keepalive when data was received and nothing was sent for this
/// long (section 6.5).
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Minimum time between two accepted initiations from one peer (a flood
/// guard; wireguard-go's `HandshakeInitationRate`).
pub const INITIATION_MIN_INTERVAL: Duration = Duration::from_millis(20);
