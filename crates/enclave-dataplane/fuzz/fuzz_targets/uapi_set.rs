//! Arbitrary text as the body of a UAPI `set=1`: parsing never panics, a refused request
//! carries a negative errno, and an accepted one applies to a device whose `get=1` answer is
//! well formed.
//!
//! Corpus (`corpus/uapi_set/`): `set=1` bodies as `wg set` sends them: a whole device and peer,
//! an IPv6 endpoint with `update_only`, a removal, cleared keys, two peers claiming one
//! network, and a refused value.

#![no_main]

use enclave_dataplane::uapi::{parse_set, write_get, DeviceView};
use enclave_testkit::TestRng;
use enclave_wg::{Device, PrivateKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match parse_set(text.lines()) {
        Err(e) => assert!(e.errno() < 0),
        Ok(request) => {
            let mut device = Device::new(PrivateKey::from_bytes([7; 32]), TestRng(1));
            let mut key = None;
            request.apply_to(&mut device, &mut key, || PrivateKey::from_bytes([9; 32]));
            let mut out = String::new();
            write_get(
                &mut out,
                DeviceView {
                    private_key: key.as_ref(),
                    listen_port: request.listen_port.unwrap_or(0),
                    fwmark: request.fwmark.unwrap_or(0),
                },
                device.peers(),
            );
            assert!(out.ends_with("errno=0\n\n"));
            for line in out.lines().filter(|l| !l.is_empty()) {
                assert!(line.contains('='), "get=1 wrote {line:?}");
            }
        }
    }
});
