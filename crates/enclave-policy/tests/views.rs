//! Compilation: a definition in, one system's view out (as the JSON the agent applies).

use enclave_policy::AddrEntry;
use expect_test::{expect, Expect};

const DEFINITION: &str = r#"
[network]
overlay = "100.64.0.0/10"
keepalive = 0

[[system]]
name = "sender"
public_key = "vTN8N6SXl8C/f4BwE2OKOmkFfGsPprd4XoDA5tqbHBM="
address = "100.64.0.11"
tags = ["users"]

[[system]]
name = "printer-gw"
public_key = "eTv6knpgaNhI2DhJE/HE1mmi4BxJ+kC2vh7+G+LkNm4="
address = "100.64.0.2"
endpoint = "192.0.2.2:51820"

[system.gateway]
allowed = true
subnets = ["192.168.77.0/24", "10.0.0.0/8"]
removed = ["172.17.0.0/16"]
priority = 20

[[system]]
name = "backup-gw"
public_key = "Dpsz5V3gaPJ36lA7rcRsHFcA3u9ZwBxPoYGfZfLalmU="
address = "100.64.0.3"

[system.gateway]
allowed = true
subnets = ["192.168.77.0/24"]
priority = 10

[[system]]
name = "off-gw"
public_key = "aKAmxc0wy4g+x3zH5u7zxGRJMi3QcmtyRuDsZhEGhTo="
address = "100.64.0.4"
enabled = false

[system.gateway]
allowed = true
subnets = ["192.168.77.0/24"]

[[trust_requirement]]
name = "office"
kind = "public_ip"
allow = ["198.51.100.0/24"]

[[gateway_policy]]
name = "printers"
senders = ["users"]
gateways = ["printer-gw", "backup-gw", "off-gw"]
subnets = ["192.168.77.0/24"]
filter = ["192.168.77.20-192.168.77.21", "192.168.77.128/30"]
acl = [{ protocol = "tcp", ports = "9100", label = "JetDirect" }]
trust = ["office"]

[[preshared_key]]
systems = ["sender", "printer-gw"]
file = "/etc/enclave/psk/sender--printer-gw.key"
"#;

/// The one place that calls the API for views.
fn compile(system: &str) -> enclave_policy::View {
    let loaded = enclave_policy::load("net.toml", DEFINITION).expect("valid definition");
    enclave_policy::compile(&loaded.network, system).expect("system exists")
}

fn check(system: &str, expect: Expect) {
    check_view(&compile(system), expect);
}

fn check_view(view: &enclave_policy::View, expect: Expect) {
    expect.assert_eq(&serde_json::to_string_pretty(view).expect("serialisable"));
}

#[test]
fn sender_view_has_ordered_candidates_and_filtered_rules() {
    let mut view = compile("sender");
    // The grant through backup-gw is the one through printer-gw (shown in full below) but for
    // the gateway that enforces it and the gateway address that its reachability rule opens.
    let peer = view.peers.get_mut("backup-gw").expect("peer");
    let through_backup = std::mem::take(&mut peer.outbound);
    let mut expected = view.peers["printer-gw"].outbound.clone();
    let grant = expected.get_mut("printers").expect("grant");
    grant.requirements.enforced_by = "backup-gw".into();
    grant.rules[1].destinations = vec![AddrEntry::Net("100.64.0.3/32".parse().expect("net"))];
    assert_eq!(through_backup, expected);
    check_view(
        &view,
        expect![[r#"
        {
          "system": "sender",
          "address": "100.64.0.11",
          "overlay": "100.64.0.0/10",
          "enabled": true,
          "peers": {
            "backup-gw": {
              "public_key": "Dpsz5V3gaPJ36lA7rcRsHFcA3u9ZwBxPoYGfZfLalmU=",
              "address": "100.64.0.3",
              "endpoint": null,
              "allowed_ips": [
                "100.64.0.3/32"
              ],
              "keepalive": null,
              "gateway_for": [
                "192.168.77.0/24"
              ],
              "inbound": {},
              "outbound": {}
            },
            "printer-gw": {
              "public_key": "eTv6knpgaNhI2DhJE/HE1mmi4BxJ+kC2vh7+G+LkNm4=",
              "address": "100.64.0.2",
              "endpoint": "192.0.2.2:51820",
              "allowed_ips": [
                "100.64.0.2/32"
              ],
              "keepalive": null,
              "preshared_key_file": "/etc/enclave/psk/sender--printer-gw.key",
              "gateway_for": [
                "192.168.77.0/24"
              ],
              "inbound": {},
              "outbound": {
                "printers": {
                  "kind": "gateway",
                  "rules": [
                    {
                      "protocol": "tcp",
                      "ports": {
                        "first": 9100,
                        "last": 9100
                      },
                      "sources": [
                        {
                          "net": "100.64.0.11/32"
                        }
                      ],
                      "destinations": [
                        {
                          "net": "192.168.77.128/30"
                        },
                        {
                          "range": {
                            "first": "192.168.77.20",
                            "last": "192.168.77.21"
                          }
                        }
                      ],
                      "label": "JetDirect"
                    },
                    {
                      "protocol": "icmp",
                      "ports": null,
                      "sources": [
                        {
                          "net": "100.64.0.11/32"
                        }
                      ],
                      "destinations": [
                        {
                          "net": "100.64.0.2/32"
                        }
                      ],
                      "label": "gateway reachability"
                    }
                  ],
                  "requirements": {
                    "sender": "sender",
                    "enforced_by": "printer-gw",
                    "policy_trust": [
                      "office"
                    ],
                    "via_tags": {
                      "users": []
                    },
                    "active_hours": null
                  }
                }
              }
            }
          },
          "routes": {
            "192.168.77.0/24": {
              "default_route": false,
              "candidates": [
                {
                  "gateway": "backup-gw",
                  "priority": 10
                },
                {
                  "gateway": "printer-gw",
                  "priority": 20
                }
              ],
              "policies": [
                "printers"
              ]
            }
          },
          "gateway": null,
          "trust_requirements": {
            "office": {
              "name": "office",
              "kind": {
                "kind": "public_ip",
                "allow": [
                  "198.51.100.0/24"
                ],
                "block": []
              }
            }
          }
        }"#]],
    );
}

#[test]
fn gateway_view_has_forward_and_snat_rules() {
    let mut view = compile("printer-gw");
    // The gateway enforces exactly the grants the sender holds for it (shown in the sender's
    // view above); the rest of the view is checked below without them.
    let inbound = std::mem::take(&mut view.peers.get_mut("sender").expect("peer").inbound);
    let sender = compile("sender");
    assert_eq!(inbound, sender.peers["printer-gw"].outbound);
    // And the same trust requirements as the sender's (shown in its view above).
    let trust_requirements = std::mem::take(&mut view.trust_requirements);
    assert_eq!(trust_requirements, sender.trust_requirements);
    check_view(
        &view,
        expect![[r#"
        {
          "system": "printer-gw",
          "address": "100.64.0.2",
          "overlay": "100.64.0.0/10",
          "enabled": true,
          "peers": {
            "sender": {
              "public_key": "vTN8N6SXl8C/f4BwE2OKOmkFfGsPprd4XoDA5tqbHBM=",
              "address": "100.64.0.11",
              "endpoint": null,
              "allowed_ips": [
                "100.64.0.11/32"
              ],
              "keepalive": null,
              "preshared_key_file": "/etc/enclave/psk/sender--printer-gw.key",
              "gateway_for": [],
              "inbound": {},
              "outbound": {}
            }
          },
          "routes": {},
          "gateway": {
            "auto_discover": true,
            "removed": [
              "172.17.0.0/16"
            ],
            "subnets": {
              "10.0.0.0/8": "manual",
              "192.168.77.0/24": "manual"
            },
            "forward": {
              "printers": {
                "senders": {
                  "sender": "100.64.0.11"
                },
                "destinations": [
                  {
                    "net": "192.168.77.128/30"
                  },
                  {
                    "range": {
                      "first": "192.168.77.20",
                      "last": "192.168.77.21"
                    }
                  }
                ],
                "acl": [
                  {
                    "protocol": "tcp",
                    "ports": {
                      "first": 9100,
                      "last": 9100
                    },
                    "label": "JetDirect"
                  }
                ]
              }
            },
            "snat": [
              {
                "source": "100.64.0.0/10",
                "destination": "10.0.0.0/8"
              },
              {
                "source": "100.64.0.0/10",
                "destination": "192.168.77.0/24"
              }
            ]
          },
          "trust_requirements": {}
        }"#]],
    );
}

#[test]
fn disabled_system_gets_nothing() {
    check(
        "off-gw",
        expect![[r#"
        {
          "system": "off-gw",
          "address": "100.64.0.4",
          "overlay": "100.64.0.0/10",
          "enabled": false,
          "peers": {},
          "routes": {},
          "gateway": null,
          "trust_requirements": {}
        }"#]],
    );
}

#[test]
fn unknown_system_is_an_error() {
    let loaded = enclave_policy::load("net.toml", DEFINITION).expect("valid definition");
    let err = enclave_policy::compile(&loaded.network, "nope").unwrap_err();
    expect![[r#"no system named "nope" in the network definition"#]].assert_eq(&err.to_string());
}

#[test]
fn status_acl_lines_read_like_the_seed() {
    let (sender, gateway) = (compile("sender"), compile("printer-gw"));
    let lines = format!(
        "{:?}\n{:?}",
        sender.peers["printer-gw"].acl_lines(),
        gateway.peers["sender"].acl_lines()
    );
    expect![[r#"
        ["allow [tcp 9100 \"JetDirect\"] from local -> peer", "allow [icmp \"gateway reachability\"] from local -> peer"]
        ["allow [tcp 9100 \"JetDirect\"] from peer -> local", "allow [icmp \"gateway reachability\"] from peer -> local"]"#]].assert_eq(&lines);
}

#[test]
fn views_round_trip_through_json() {
    let loaded = enclave_policy::load("net.toml", DEFINITION).expect("valid definition");
    for name in loaded.network.systems.keys() {
        let view = enclave_policy::compile(&loaded.network, name).expect("system exists");
        let json = serde_json::to_string(&view).expect("serialisable");
        let back: enclave_policy::View = serde_json::from_str(&json).expect("deserialisable");
        assert_eq!(back, view, "view of {name} changed through JSON");
    }
}

#[test]
fn preshared_key_file_is_given_only_to_the_two_systems_of_its_pair() {
    let loaded = enclave_policy::load("net.toml", DEFINITION).expect("valid definition");
    let mut out = String::new();
    for name in loaded.network.systems.keys() {
        let view = enclave_policy::compile(&loaded.network, name).expect("system exists");
        for (peer, p) in &view.peers {
            let file = p
                .preshared_key_file
                .as_ref()
                .map_or_else(|| "none".to_owned(), |f| f.display().to_string());
            out.push_str(&format!("{name} -> {peer}: {file}\n"));
        }
    }
    expect![[r#"
        backup-gw -> sender: none
        printer-gw -> sender: /etc/enclave/psk/sender--printer-gw.key
        sender -> backup-gw: none
        sender -> printer-gw: /etc/enclave/psk/sender--printer-gw.key
    "#]]
    .assert_eq(&out);
}
