//! Arbitrary bytes from the network into a device that knows one peer.
//! The first byte chooses whether the device is under load.

#![no_main]

use enclave_wg::Decapsulated;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, datagram)) = data.split_first() else {
        return;
    };
    let mut device = common::device(2, 1, common::A_ADDR);
    device.set_under_load(flags & 1 == 1);
    let (now, wall) = common::clocks();
    let mut out = vec![0u8; datagram.len()];
    let outcome = device.decapsulate(common::addr(common::A_ADDR), datagram, now, wall, &mut out);
    // Without the peer's private key nothing can authenticate.
    assert!(matches!(outcome, Decapsulated::Dropped(_)), "{outcome:?}");
    while device.poll_transmit().is_some() {}
    device.handle_timeout(now, wall);
});
