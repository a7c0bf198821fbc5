use std::time::{Duration, UNIX_EPOCH};

use expect_test::{expect, Expect};

use super::*;

const PRIV: &str = "e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a";
const PEER1: &str = "b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33";
const PEER2: &str = "58402e695ba1772b1cc9309755f043251ea77fdcf10fbe63989ceb7e19321376";
const PSK: &str = "188515093e952f5f22e865cef3012e72f8b5f0b598ac0309d5dacce3b70fcf52";

fn device() -> Device {
    let key = PrivateKey::from_bytes(from_hex(PRIV).unwrap());
    Device::new(key, rand_core::UnwrapErr(getrandom::SysRng))
}

fn set(device: &mut Device, body: &str) -> Result<(), UapiError> {
    let request = parse_set(body.lines())?;
    let mut key = None;
    request.apply_to(device, &mut key, || PrivateKey::from_bytes([1; 32]));
    Ok(())
}

fn get(device: &Device) -> String {
    let mut out = String::new();
    write_get(
        &mut out,
        DeviceView {
            private_key: None,
            listen_port: 51820,
            fwmark: 0,
        },
        device.peers(),
    );
    out
}

fn check_get(device: &Device, expect: Expect) {
    expect.assert_eq(&get(device));
}

fn check_error(body: &str, expect: Expect) {
    let err = parse_set(body.lines()).expect_err("the request must be refused");
    expect.assert_eq(&format!("{} (errno={})", err, err.errno()));
}

#[test]
fn set_then_get_round_trips_as_wireguard_go_writes_it() {
    let mut d = device();
    set(
        &mut d,
        &format!(
            "listen_port=51820\nreplace_peers=true\npublic_key={PEER1}\npreshared_key={PSK}\n\
             endpoint=10.0.0.2:51820\npersistent_keepalive_interval=25\nreplace_allowed_ips=true\n\
             allowed_ip=10.10.0.0/16\nallowed_ip=192.168.77.5/24\npublic_key={PEER2}\n\
             endpoint=[fd00::2]:4000\nallowed_ip=fd00::/64\nprotocol_version=1"
        ),
    )
    .unwrap();
    check_get(
        &d,
        expect![[r#"
            listen_port=51820
            public_key=58402e695ba1772b1cc9309755f043251ea77fdcf10fbe63989ceb7e19321376
            preshared_key=0000000000000000000000000000000000000000000000000000000000000000
            protocol_version=1
            endpoint=[fd00::2]:4000
            last_handshake_time_sec=0
            last_handshake_time_nsec=0
            tx_bytes=0
            rx_bytes=0
            persistent_keepalive_interval=0
            allowed_ip=fd00::/64
            public_key=b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33
            preshared_key=188515093e952f5f22e865cef3012e72f8b5f0b598ac0309d5dacce3b70fcf52
            protocol_version=1
            endpoint=10.0.0.2:51820
            last_handshake_time_sec=0
            last_handshake_time_nsec=0
            tx_bytes=0
            rx_bytes=0
            persistent_keepalive_interval=25
            allowed_ip=10.10.0.0/16
            allowed_ip=192.168.77.0/24
            errno=0

        "#]],
    );
}

#[test]
fn updates_add_allowed_ips_remove_peers_and_honour_update_only() {
    let mut d = device();
    set(
        &mut d,
        &format!("public_key={PEER1}\nallowed_ip=10.1.0.0/24"),
    )
    .unwrap();
    set(
        &mut d,
        &format!(
            "public_key={PEER1}\nallowed_ip=10.2.0.0/24\nallowed_ip=10.1.0.0/24\n\
             public_key={PEER2}\nupdate_only=true\nallowed_ip=10.9.0.0/24"
        ),
    )
    .unwrap();
    let peers: Vec<_> = d.peers().collect();
    assert_eq!(peers.len(), 1, "update_only must not create a peer");
    assert_eq!(
        peers[0].allowed_ips,
        vec![
            "10.1.0.0/24".parse::<IpNet>().unwrap(),
            "10.2.0.0/24".parse().unwrap()
        ]
    );
    set(
        &mut d,
        &format!("public_key={PEER1}\nreplace_allowed_ips=true\nallowed_ip=10.3.0.0/24"),
    )
    .unwrap();
    assert_eq!(
        d.peers().next().unwrap().allowed_ips,
        vec!["10.3.0.0/24".parse::<IpNet>().unwrap()]
    );
    set(&mut d, &format!("public_key={PEER1}\nremove=true")).unwrap();
    assert_eq!(d.peers().count(), 0);
}

#[test]
fn the_zero_key_removes_keys() {
    let zero = "0".repeat(64);
    let request = parse_set([format!("private_key={zero}").as_str()]).unwrap();
    assert!(matches!(request.private_key, Some(None)));
    let mut d = device();
    set(&mut d, &format!("public_key={PEER1}\npreshared_key={PSK}")).unwrap();
    set(&mut d, &format!("public_key={PEER1}\npreshared_key={zero}")).unwrap();
    assert_eq!(d.peers().next().unwrap().preshared_key, None);
}

#[test]
fn handshake_time_and_counters_are_written_in_seconds_and_nanoseconds() {
    let mut out = String::new();
    let info = PeerInfo {
        public_key: PublicKey(from_hex(PEER1).unwrap()),
        preshared_key: None,
        endpoint: None,
        proven_endpoint: None,
        allowed_ips: vec![],
        persistent_keepalive: None,
        last_handshake: Some(UNIX_EPOCH + Duration::new(1_700_000_000, 123)),
        rx_bytes: 92,
        tx_bytes: 148,
        rx_packets: 1,
        tx_packets: 1,
        drops: Default::default(),
    };
    let key = PrivateKey::from_bytes(from_hex(PRIV).unwrap());
    write_get(
        &mut out,
        DeviceView {
            private_key: Some(&key),
            listen_port: 0,
            fwmark: 51820,
        },
        [info],
    );
    expect![[r#"
        private_key=e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a
        fwmark=51820
        public_key=b85996fecc9c7f1fc6d2572a76eda11d59bcd20be8e543b15ce4bd85a8e75a33
        preshared_key=0000000000000000000000000000000000000000000000000000000000000000
        protocol_version=1
        last_handshake_time_sec=1700000000
        last_handshake_time_nsec=123
        tx_bytes=148
        rx_bytes=92
        persistent_keepalive_interval=0
        errno=0

    "#]]
    .assert_eq(&out);
}

#[test]
fn malformed_requests_are_refused_with_their_errno() {
    check_error(
        "listen_port",
        expect!["UAPI line 1 is not of the form key=value (errno=-71)"],
    );
    check_error(
        "listen_port=65536",
        expect!["UAPI line 1: invalid value for listen_port (errno=-22)"],
    );
    check_error(
        "bogus=1",
        expect![[r#"UAPI line 1: unknown key "bogus" (errno=-22)"#]],
    );
    check_error(
        "allowed_ip=10.0.0.0/8",
        expect!["UAPI line 1: allowed_ip comes before any public_key (errno=-22)"],
    );
    check_error(
        &format!("public_key={PEER1}\nallowed_ip=10.0.0.0/33"),
        expect!["UAPI line 2: invalid value for allowed_ip (errno=-22)"],
    );
    check_error(
        &format!("public_key={PEER1}\nendpoint=nowhere"),
        expect!["UAPI line 2: invalid value for endpoint (errno=-22)"],
    );
    check_error(
        "public_key=abcd",
        expect!["UAPI line 1: invalid value for public_key (errno=-22)"],
    );
    check_error(
        &format!("public_key={PEER1}\nremove=false"),
        expect!["UAPI line 2: invalid value for remove (errno=-22)"],
    );
    check_error(
        &format!("public_key={PEER1}\nprotocol_version=2"),
        expect!["UAPI line 2: invalid value for protocol_version (errno=-22)"],
    );
    check_error(
        &format!("public_key={PEER1}\npersistent_keepalive_interval=-1"),
        expect!["UAPI line 2: invalid value for persistent_keepalive_interval (errno=-22)"],
    );
}

#[test]
fn a_refused_request_changes_nothing() {
    let mut d = device();
    set(
        &mut d,
        &format!("public_key={PEER1}\nallowed_ip=10.1.0.0/24"),
    )
    .unwrap();
    let before = get(&d);
    // The first peer section is valid, the second is not: nothing may be applied.
    let err = set(
        &mut d,
        &format!("replace_peers=true\npublic_key={PEER2}\nallowed_ip=10.2.0.0/24\npublic_key={PEER1}\nendpoint=bad"),
    )
    .unwrap_err();
    assert_eq!(err.errno(), ERRNO_INVALID);
    assert_eq!(get(&d), before);
}

#[test]
fn operations_are_recognised() {
    assert_eq!(parse_operation("get=1"), Some(Operation::Get));
    assert_eq!(parse_operation("set=1"), Some(Operation::Set));
    assert_eq!(parse_operation("get=2"), None);
}

#[test]
fn a_peer_section_changes_only_what_it_names() {
    let mut d = device();
    set(
        &mut d,
        &format!("public_key={PEER1}\nendpoint=192.0.2.1:51820\nallowed_ip=10.0.0.1/32"),
    )
    .unwrap();
    let key = PublicKey(from_hex(PEER1).unwrap());
    let endpoint = |d: &Device| d.peer(&key).and_then(|info| info.endpoint);
    // A section without `endpoint=` leaves the endpoint alone.
    set(
        &mut d,
        &format!("public_key={PEER1}\nallowed_ip=10.0.0.9/32"),
    )
    .unwrap();
    assert_eq!(endpoint(&d), Some("192.0.2.1:51820".parse().unwrap()));
    assert_eq!(d.peer(&key).unwrap().allowed_ips.len(), 2);
    // `endpoint=` sets the current endpoint, as in WireGuard.
    set(&mut d, &format!("public_key={PEER1}\nendpoint=192.0.2.7:1")).unwrap();
    assert_eq!(endpoint(&d), Some("192.0.2.7:1".parse().unwrap()));
}
