//! The configuration of an app device, made through the core from a network definition: which
//! peers, which allowed IPs, which notes.

use super::*;
use crate::core::{apply, Command, Ctx};
use crate::definition;
use crate::model::State;

const PHONE_KEY: &str = "vTN8N6SXl8C/f4BwE2OKOmkFfGsPprd4XoDA5tqbHBM=";
const PRIVATE: &str = "QGLpbrZ1Iv6ZKTrT6E0SEmtk2RPgKAjZs9mV5NRykGM=";

/// Two gateways of the office serve 192.168.77.0/24 (gw-2 preferred by priority), a third
/// serves 10.1.0.0/16 but its endpoint is not known; `users` may reach the office's two
/// addresses and the third's subnet; a server has a direct policy towards it from users.
const NETWORK: &str = r#"
[network]
overlay = "100.64.0.0/10"
keepalive = 20

[[system]]
name = "menlo-gw-1"
public_key = "eTv6knpgaNhI2DhJE/HE1mmi4BxJ+kC2vh7+G+LkNm4="
address = "100.64.0.1"
tags = ["gateways"]
endpoint = "203.0.113.1:51820"
[system.gateway]
allowed = true
subnets = ["192.168.77.0/24"]

[[system]]
name = "menlo-gw-2"
public_key = "CEMqAMWgN0Gj9dLMVm1nPJkTnr1CcWbmTaZUYNVH8kA="
address = "100.64.0.2"
tags = ["gateways"]
endpoint = "203.0.113.2:51820"
[system.gateway]
allowed = true
subnets = ["192.168.77.0/24"]
priority = 10

[[system]]
name = "lab-gw"
public_key = "aJ5GBAlcC3Oc5xJ6eWhm5fU5h0m6Ht9ICW4JQ0rLh3M="
address = "100.64.0.3"
tags = ["gateways"]
[system.gateway]
allowed = true
subnets = ["10.1.0.0/16"]

[[system]]
name = "build-server"
public_key = "2LcWN1XvR1M8hq9m0B0z0+4lJ5n5oY3m5m2o1uS3W1o="
address = "100.64.0.20"
tags = ["servers"]
endpoint = "203.0.113.20:51820"

[[gateway_policy]]
name = "users to the office"
senders = ["users"]
gateways = ["menlo-gw-1", "menlo-gw-2"]
subnets = ["192.168.77.0/24"]
filter = ["192.168.77.20-192.168.77.21"]
acl = [{ protocol = "any" }]

[[gateway_policy]]
name = "users to the lab"
senders = ["users"]
gateways = ["lab-gw"]
subnets = ["10.1.0.0/16"]
acl = [{ protocol = "tcp", ports = 22 }]

[[direct_policy]]
name = "users to servers"
senders = ["users"]
receivers = ["servers"]
acl = [{ protocol = "tcp", ports = 443 }]
"#;

fn ctx() -> Ctx {
    Ctx {
        actor: "token:alice".into(),
        now: 1_800_000_000,
    }
}

/// The network imported, then the app device `phone` added with `tags`: its configuration.
fn phone(tags: &[&str], private_key: Option<&str>) -> AppConfig {
    phone_then(tags, private_key, None)
}

/// As [`phone`], with `then` applied after adding it.
fn phone_then(tags: &[&str], private_key: Option<&str>, then: Option<Command>) -> AppConfig {
    let imported = definition::import("network.toml", NETWORK, 1_800_000_000)
        .unwrap_or_else(|d| panic!("the test network is not valid: {d:?}"));
    let state = apply(
        &State::default(),
        Command::Import(Box::new(imported)),
        &ctx(),
    )
    .unwrap_or_else(|e| panic!("import refused: {e}"))
    .next;
    let command = Command::AddAppDevice {
        name: "phone".into(),
        public_key: PHONE_KEY.into(),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        key_made_here: private_key.is_some(),
    };
    let mut outcome = apply(&state, command, &ctx()).unwrap_or_else(|e| panic!("refused: {e}"));
    if let Some(then) = then {
        outcome = apply(&outcome.next, then, &ctx()).unwrap_or_else(|e| panic!("refused: {e}"));
    }
    let network = outcome.network.expect("the definition changed");
    let view = enclave_policy::compile(&network, "phone").expect("a view");
    render(&view, outcome.next.revision, private_key)
}

#[test]
fn a_sender_gets_its_gateways_with_exactly_the_granted_subnets() {
    let config = phone(&["users"], Some(PRIVATE));
    let expected = format!(
        "\
# phone: a device with the WireGuard app, configured by enclave-control (network revision 2).
# The gateways enforce its policies. Get a new file after its policies or gateways change.
# Note: 10.1.0.0/16 is granted but none of its gateways (lab-gw) can be reached by the app.
# Note: 192.168.77.0/24 goes through menlo-gw-2 only: the app cannot fail over to menlo-gw-1.
# Note: lab-gw is left out: its endpoint is not known (set it with `enclave-control systems edit lab-gw --endpoint ADDRESS:PORT`).

[Interface]
PrivateKey = {PRIVATE}
Address = 100.64.0.4/32

# build-server
[Peer]
PublicKey = 2LcWN1XvR1M8hq9m0B0z0+4lJ5n5oY3m5m2o1uS3W1o=
Endpoint = 203.0.113.20:51820
AllowedIPs = 100.64.0.20/32
PersistentKeepalive = 20

# menlo-gw-1
[Peer]
PublicKey = eTv6knpgaNhI2DhJE/HE1mmi4BxJ+kC2vh7+G+LkNm4=
Endpoint = 203.0.113.1:51820
AllowedIPs = 100.64.0.1/32
PersistentKeepalive = 20

# menlo-gw-2 (gateway for 192.168.77.0/24)
[Peer]
PublicKey = CEMqAMWgN0Gj9dLMVm1nPJkTnr1CcWbmTaZUYNVH8kA=
Endpoint = 203.0.113.2:51820
AllowedIPs = 100.64.0.2/32, 192.168.77.0/24
PersistentKeepalive = 20
"
    );
    assert_eq!(config.text.expose(), &expected);
    assert_eq!(config.file_name, "phone.conf");
    assert!(config.private_key_included);
    assert_eq!(config.notes.len(), 3, "{:?}", config.notes);
}

#[test]
fn without_a_private_key_the_file_says_where_it_comes_from() {
    let config = phone(&["users"], None);
    assert!(!config.private_key_included);
    assert!(
        !config.text.expose().contains("\nPrivateKey ="),
        "{}",
        config.text.expose()
    );
    assert!(
        config
            .text
            .expose()
            .contains("# PrivateKey = the private key of the pair the app made"),
        "{}",
        config.text.expose()
    );
}

#[test]
fn a_device_no_policy_grants_gets_no_peer() {
    let config = phone(&["visitors"], Some(PRIVATE));
    assert!(config.peers.is_empty(), "{:?}", config.peers);
    assert!(
        !config.text.expose().contains("[Peer]"),
        "{}",
        config.text.expose()
    );
    assert!(config.text.expose().contains("Address = 100.64.0.4/32"));
}

#[test]
fn debug_never_shows_the_private_key() {
    let config = phone(&["users"], Some(PRIVATE));
    let shown = format!("{config:?}");
    assert!(!shown.contains(PRIVATE), "{shown}");
    assert!(shown.contains("menlo-gw-2"), "{shown}");
}

#[test]
fn compact_keeps_only_what_the_apps_read() {
    let config = phone(&["users"], Some(PRIVATE));
    let compact = config.compact();
    assert!(!compact.contains('#'), "{compact}");
    assert!(
        compact.starts_with("[Interface]\nPrivateKey = "),
        "{compact}"
    );
    assert_eq!(compact.matches("[Peer]").count(), 3, "{compact}");
}

#[test]
fn setconf_text_leaves_out_what_only_wg_quick_reads() {
    let file = "# a comment\n[Interface]\nPrivateKey = abc=\nAddress = 100.64.0.4/32\nDNS = 1.1.1.1\nMTU=1380\n\n[Peer]\nPublicKey = def=\nAllowedIPs = 10.0.0.0/8\n  PersistentKeepalive = 25\n";
    assert_eq!(
        setconf_text(file),
        "[Interface]\nPrivateKey = abc=\n[Peer]\nPublicKey = def=\nAllowedIPs = 10.0.0.0/8\nPersistentKeepalive = 25\n"
    );
}

#[test]
fn tunnel_names_are_interface_names() {
    assert_eq!(tunnel_name("phone"), "phone");
    assert_eq!(tunnel_name("alice_s-iphone.home.lan"), "alice_s-iphone.");
    assert_eq!(tunnel_name("!!!"), "enclave");
}

#[test]
fn the_key_pair_is_a_wireguard_pair() {
    let (private, public) = crate::secret::wireguard_key_pair();
    assert!(crate::core::is_public_key(&public), "{public}");
    assert_eq!(
        crate::secret::wireguard_public_key(&private).as_deref(),
        Some(public.as_str())
    );
    let (other, _) = crate::secret::wireguard_key_pair();
    assert_ne!(*private, *other);
    assert_eq!(crate::secret::wireguard_public_key("not a key"), None);
}

#[test]
fn a_revoked_device_gets_no_peer_and_a_note_saying_why() {
    let granted = phone(&["users"], None);
    assert_eq!(
        granted.peers.len(),
        3,
        "positive control: {:?}",
        granted.peers
    );
    let revoked = phone_then(
        &["users"],
        None,
        Some(Command::Revoke {
            name: "phone".into(),
        }),
    );
    assert!(revoked.peers.is_empty(), "{:?}", revoked.peers);
    assert_eq!(
        revoked.notes,
        ["phone is not approved or is switched off: it has no tunnels"]
    );
}
