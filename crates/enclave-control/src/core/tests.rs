//! The core on plain values: no database, no clock, no randomness.

use super::*;
use crate::definition::FieldProblem;
use crate::model::{DiscoveredSubnet, UnixTime};
use crate::testing::smb_policy;
use base64::Engine as _;
use ipnet::Ipv4Net;

const NOW: UnixTime = 1_800_000_000;
const KEY_A: &str = "vTN8N6SXl8C/f4BwE2OKOmkFfGsPprd4XoDA5tqbHBM=";
const KEY_B: &str = "eTv6knpgaNhI2DhJE/HE1mmi4BxJ+kC2vh7+G+LkNm4=";
const KEY_C: &str = "CEMqAMWgN0Gj9dLMVm1nPJkTnr1CcWbmTaZUYNVH8kA=";

fn ctx() -> Ctx {
    Ctx {
        actor: "token:alice".into(),
        now: NOW,
    }
}

/// Applies and returns the next state (panics on refusal: the test expected success).
fn ok(state: &State, command: Command) -> (State, Outcome) {
    let outcome = apply(state, command, &ctx()).unwrap_or_else(|e| panic!("refused: {e}"));
    (State::clone(&outcome.next), outcome)
}

fn refused(state: &State, command: Command) -> Refusal {
    match apply(state, command, &ctx()) {
        Ok(_) => panic!("the command was accepted"),
        Err(refusal) => refusal,
    }
}

fn key(id: &str, approval: ApprovalMode, uses: Option<u32>, expires: Option<i64>) -> Command {
    Command::CreateKey(NewKey {
        id: id.into(),
        hash: format!("hash-of-{id}"),
        tags: ["users".to_owned()].into(),
        approval,
        uses,
        expires_at: expires,
        ephemeral: false,
    })
}

fn enrol(id: &str, public_key: &str, hostname: &str) -> Command {
    Command::Enrol {
        key_hash: format!("hash-of-{id}"),
        public_key: public_key.into(),
        hostname: Some(hostname.into()),
    }
}

fn with_keys() -> State {
    let state = State::default();
    let (state, _) = ok(&state, key("auto", ApprovalMode::Auto, None, None));
    let (state, _) = ok(&state, key("manual", ApprovalMode::Manual, Some(1), None));
    state
}

/// [`smb_policy`] to the range 192.168.77.20-21.
fn gateway_policy(name: &str, gateway: &str, subnet: &str) -> PolicyDoc {
    PolicyDoc {
        filter: Some(vec!["192.168.77.20-192.168.77.21".into()]),
        ..smb_policy(name, gateway, subnet)
    }
}

/// The problems of an [`Refusal::Invalid`] (panics on another refusal).
fn invalid(refusal: Refusal) -> Vec<FieldProblem> {
    match refusal {
        Refusal::Invalid(problems) => problems,
        other => panic!("refused, but not as invalid: {other:?}"),
    }
}

fn set_gateway(name: &str, allowed: bool) -> Command {
    Command::SetGateway {
        name: name.into(),
        allowed,
    }
}

fn add_subnet(system: &str, subnet: &str) -> Command {
    Command::AddSubnet {
        system: system.into(),
        subnet: subnet.parse().unwrap(),
    }
}

fn remove_subnet(system: &str, subnet: &str) -> Command {
    Command::RemoveSubnet {
        system: system.into(),
        subnet: subnet.parse().unwrap(),
    }
}

fn create(doc: PolicyDoc) -> Command {
    Command::PutPolicy {
        doc,
        write: Write::Create,
    }
}

fn update(doc: PolicyDoc) -> Command {
    Command::PutPolicy {
        doc,
        write: Write::Update,
    }
}

fn approve(name: &str) -> Command {
    Command::Approve { name: name.into() }
}

fn delete(name: &str) -> Command {
    Command::Delete { name: name.into() }
}

fn edit(name: &str, edit: SystemEdit) -> Command {
    Command::UpdateSystem {
        name: name.into(),
        edit,
    }
}

fn rename(name: &str, new_name: &str) -> Command {
    edit(
        name,
        SystemEdit {
            name: Some(new_name.into()),
            ..SystemEdit::default()
        },
    )
}

/// docs/examples/network.toml, imported.
fn example() -> Imported {
    let text = include_str!("../../../../docs/examples/network.toml");
    definition::import("network.toml", text, NOW).unwrap()
}

/// A laptop (auto key) and a gateway serving 192.168.77.0/24 by hand.
fn office() -> State {
    let state = with_keys();
    let (state, _) = ok(&state, enrol("auto", KEY_A, "laptop"));
    let (state, _) = ok(&state, enrol("auto", KEY_B, "office-gw"));
    let (state, _) = ok(&state, set_gateway("office-gw", true));
    let (state, _) = ok(&state, add_subnet("office-gw", "192.168.77.0/24"));
    state
}

/// [`office`] with the gateway policy "office" to its subnet.
fn office_with_policy() -> (State, Outcome) {
    ok(
        &office(),
        create(gateway_policy("office", "office-gw", "192.168.77.0/24")),
    )
}

#[test]
fn an_auto_key_enrols_an_approved_system_with_the_lowest_free_address() {
    let state = with_keys();
    let (state, outcome) = ok(&state, enrol("auto", KEY_A, "Laptop.local"));
    let laptop = &state.systems["laptop-local"];
    assert_eq!(laptop.address, Ipv4Addr::new(100, 64, 0, 1));
    assert_eq!(laptop.approval, Approval::Approved);
    assert_eq!(laptop.tags, ["users".to_owned()].into());
    assert_eq!(laptop.enrolled_with.as_deref(), Some("auto"));
    assert_eq!(state.keys["auto"].uses, 1);
    assert_eq!(outcome.audit.action, "system.enrol");
    assert_eq!(outcome.audit.actor, "token:alice");
    assert_eq!(outcome.audit.revision, state.revision);
    // The key's row and the system's row are what the store writes.
    assert_eq!(outcome.changes.len(), 2);

    let (state, _) = ok(&state, enrol("auto", KEY_B, "Laptop.local"));
    let second = &state.systems["laptop-local-2"];
    assert_eq!(second.address, Ipv4Addr::new(100, 64, 0, 2));
}

#[test]
fn a_manual_key_leaves_the_system_pending_until_approved() {
    let state = with_keys();
    let (state, _) = ok(&state, enrol("manual", KEY_A, "laptop"));
    assert_eq!(state.systems["laptop"].approval, Approval::Pending);
    assert!(!state.systems["laptop"].effective_enabled());
    let exported = definition::render(&state);
    assert!(exported.contains("# pending approval"), "{exported}");
    let (state, outcome) = ok(&state, approve("laptop"));
    assert_eq!(state.systems["laptop"].approval, Approval::Approved);
    assert_eq!(outcome.audit.action, "system.approve");
}

#[test]
fn wrong_expired_revoked_and_used_up_keys_are_refused() {
    let state = with_keys();
    assert_eq!(
        refused(&state, enrol("nope", KEY_A, "x")),
        Refusal::Key(KeyRefusal::Unknown)
    );
    let (used, _) = ok(&state, enrol("manual", KEY_A, "x"));
    assert_eq!(
        refused(&used, enrol("manual", KEY_B, "y")),
        Refusal::Key(KeyRefusal::UsedUp)
    );
    let (expiring, _) = ok(
        &state,
        key("soon", ApprovalMode::Auto, None, Some(NOW + 60)),
    );
    let later = Ctx {
        actor: "key:soon".into(),
        now: NOW + 60,
    };
    assert_eq!(
        apply(&expiring, enrol("soon", KEY_A, "x"), &later).unwrap_err(),
        Refusal::Key(KeyRefusal::Expired)
    );
    let (revoked, _) = ok(&state, Command::RevokeKey { id: "auto".into() });
    assert_eq!(
        refused(&revoked, enrol("auto", KEY_A, "x")),
        Refusal::Key(KeyRefusal::Revoked)
    );
}

#[test]
fn a_bad_or_taken_public_key_is_refused() {
    let state = with_keys();
    let problems = invalid(refused(&state, enrol("auto", "not a key", "x")));
    assert_eq!(problems[0].field, "public_key");
    let (state, _) = ok(&state, enrol("auto", KEY_A, "laptop"));
    assert_eq!(
        refused(&state, enrol("auto", KEY_A, "again")),
        Refusal::KeyTaken("laptop".into())
    );
}

#[test]
fn keys_need_a_future_expiry_a_use_and_good_tags() {
    let state = State::default();
    let p = invalid(refused(&state, key("k", ApprovalMode::Auto, Some(0), None)));
    assert_eq!(p[0].field, "uses");
    let p = invalid(refused(
        &state,
        key("k", ApprovalMode::Auto, None, Some(NOW)),
    ));
    assert_eq!(p[0].field, "expires");
    let mut bad_tag = key("k", ApprovalMode::Auto, None, None);
    if let Command::CreateKey(new) = &mut bad_tag {
        new.tags = ["bad tag!".to_owned()].into();
    }
    let p = invalid(refused(&state, bad_tag));
    assert_eq!(p[0].field, "tags[0]");
}

#[test]
fn a_gateway_policy_is_validated_by_the_rules_of_policy_check() {
    let (state, outcome) = office_with_policy();
    assert!(outcome.warnings.is_empty(), "{:?}", outcome.warnings);
    let network = definition::validate(&state).unwrap().network;
    let view = enclave_policy::compile(&network, "laptop").unwrap();
    assert!(view
        .routes
        .contains_key(&"192.168.77.0/24".parse().unwrap()));

    // A subnet the gateway does not offer, and a gateway that does not exist: each named.
    let mut doc = gateway_policy("elsewhere", "office-gw", "10.9.0.0/16");
    doc.gateways.push("nobody".into());
    let problems = invalid(refused(&state, create(doc)));
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert!(
        fields.contains(&r#"policies["elsewhere"].gateways[1]"#),
        "{problems:#?}"
    );
    let nobody = problems
        .iter()
        .find(|p| p.field == r#"policies["elsewhere"].gateways[1]"#)
        .unwrap();
    assert_eq!(nobody.message, r#"no system named "nobody""#);
    // The filter entry outside the subnets is named too.
    assert!(
        fields.contains(&r#"policies["elsewhere"].filter[0]"#),
        "{problems:#?}"
    );
}

#[test]
fn a_subnet_with_host_bits_is_refused_with_the_fix() {
    let Err(Refusal::Invalid(problems)) = parse_subnet("subnet", "10.1.0.1/16") else {
        panic!()
    };
    assert_eq!(problems[0].message, "10.1.0.1/16 has host bits set");
    assert_eq!(
        problems[0].hint.as_deref(),
        Some("did you mean 10.1.0.0/16?")
    );
    assert!(parse_subnet("subnet", "10.1.0.0/33").is_err());
    assert_eq!(
        parse_subnet("subnet", "0.0.0.0/0").unwrap(),
        "0.0.0.0/0".parse().unwrap()
    );
}

#[test]
fn deleting_a_gateway_a_policy_uses_is_refused_naming_the_policy() {
    let (state, _) = office_with_policy();
    let problems = invalid(refused(&state, delete("office-gw")));
    assert_eq!(problems[0].field, r#"policies["office"].gateways[0]"#);
    // Removing the only subnet the policy routes is refused the same way.
    let problems = invalid(refused(
        &state,
        remove_subnet("office-gw", "192.168.77.0/24"),
    ));
    assert_eq!(problems[0].field, r#"policies["office"].subnets[0]"#);
    assert!(problems[0].message.contains("not offered"), "{problems:#?}");
}

#[test]
fn an_update_made_on_an_old_version_is_refused() {
    let (state, created) = office_with_policy();
    let Reply::Policy(read) = created.reply else {
        panic!()
    };
    assert_eq!(read.version, state.revision);
    // Alice updates from what she read; Bob, from the same read, is refused afterwards.
    let mut alice = (*read).clone();
    alice.enabled = false;
    let (state, _) = ok(&state, update(alice));
    let mut bob = (*read).clone();
    bob.senders = vec!["admins".into()];
    let refusal = refused(&state, update(bob));
    assert!(matches!(refusal, Refusal::Stale { .. }), "{refusal:?}");
    assert_eq!(
        refused(
            &state,
            create(gateway_policy("office", "office-gw", "192.168.77.0/24"))
        ),
        Refusal::Exists {
            what: "policy",
            name: "office".into()
        }
    );
}

#[test]
fn subnets_are_discovered_removed_and_added() {
    let state = office();
    let mut found = BTreeMap::new();
    found.insert(
        "10.20.0.0/16".parse().unwrap(),
        DiscoveredSubnet {
            interface: "eth1".into(),
            reason: "ethernet, up, IPv4 unicast".into(),
        },
    );
    let (state, _) = ok(
        &state,
        Command::ReportDiscovered {
            system: "office-gw".into(),
            subnets: found,
        },
    );
    let (state, _) = ok(&state, remove_subnet("office-gw", "10.20.0.0/16"));
    let (state, _) = ok(&state, add_subnet("office-gw", "0.0.0.0/0"));
    let rows: Vec<(String, String, String)> = subnet_rows(&state)
        .into_iter()
        .map(|r| (r.subnet.to_string(), r.source, r.state))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("10.20.0.0/16".into(), "discovered".into(), "removed".into()),
            ("0.0.0.0/0".into(), "added".into(), "served".into()),
            ("192.168.77.0/24".into(), "added".into(), "served".into()),
        ]
    );
    // Adding a removed subnet brings it back.
    let (state, _) = ok(&state, add_subnet("office-gw", "10.20.0.0/16"));
    assert!(state.systems["office-gw"]
        .gateway
        .as_ref()
        .unwrap()
        .removed
        .is_empty());
    // A subnet the gateway neither found nor was given (with discovery off) is not there.
    let mut off = state.clone();
    off.systems
        .get_mut("office-gw")
        .unwrap()
        .gateway
        .as_mut()
        .unwrap()
        .auto_discover = false;
    assert!(matches!(
        refused(&off, remove_subnet("office-gw", "172.16.0.0/12")),
        Refusal::NotFound { .. }
    ));
}

#[test]
fn renaming_a_gateway_carries_its_policies_along() {
    let (state, _) = office_with_policy();
    let (state, outcome) = ok(&state, rename("office-gw", "menlo-gw"));
    assert_eq!(
        state.policies["office"].gateways,
        vec!["menlo-gw".to_owned()]
    );
    assert!(state.systems.contains_key("menlo-gw"));
    assert!(!state.systems.contains_key("office-gw"));
    assert!(outcome
        .changes
        .contains(&Change::DeleteSystem("office-gw".into())));
    // A stale edit of a system is refused.
    let refusal = refused(
        &state,
        edit(
            "menlo-gw",
            SystemEdit {
                enabled: Some(false),
                version: Some(1),
                ..SystemEdit::default()
            },
        ),
    );
    assert!(matches!(refusal, Refusal::Stale { .. }), "{refusal:?}");
}

#[test]
fn the_example_definition_imports_exports_and_imports_the_same() {
    let text = include_str!("../../../../docs/examples/network.toml");
    let imported = example();
    assert_eq!(imported.systems.len(), 6);
    let (state, outcome) = ok(
        &State::default(),
        Command::Import(Box::new(imported.clone())),
    );
    assert_eq!(outcome.audit.action, "definition.import");
    let exported = definition::render(&state);
    let again = definition::import("exported.toml", &exported, NOW).unwrap();
    assert_eq!(again.systems, imported.systems);
    assert_eq!(again.policies, imported.policies);
    assert_eq!(again.tags, imported.tags);
    assert_eq!(again.trust_requirements, imported.trust_requirements);
    assert_eq!(again.settings, imported.settings);
    // Both mean the same network to the policy engine.
    let original = enclave_policy::load("a", text).unwrap().network;
    let round = enclave_policy::load("b", &exported).unwrap().network;
    assert_eq!(original, round);
}

#[test]
fn a_broken_file_is_refused_with_file_line_and_column() {
    let text = "[[system]]\nname = \"a\"\npublic_key = \"x\"\naddress = \"100.64.0.1\"\n";
    let diagnostics = definition::import("net.toml", text, NOW).unwrap_err();
    assert_eq!(
        diagnostics[0].to_string(),
        "net.toml:3:14: error: public key of system \"a\" is not a WireGuard key\n  \
         hint: a key is 32 bytes in base64 (44 characters), as `enclave-agent keygen` prints"
    );
}

#[test]
fn import_keeps_what_only_the_server_knows() {
    let state = with_keys();
    let (state, _) = ok(&state, enrol("manual", KEY_C, "laptop"));
    let exported = definition::render(&state);
    let imported = definition::import("x", &exported, NOW).unwrap();
    let (state, _) = ok(&state, Command::Import(Box::new(imported)));
    let laptop = &state.systems["laptop"];
    assert_eq!(laptop.approval, Approval::Pending);
    assert_eq!(laptop.enrolled_with.as_deref(), Some("manual"));
    assert_eq!(state.keys.len(), 2);
    // Exported as disabled because pending; once approved it has tunnels.
    let (state, _) = ok(&state, approve("laptop"));
    assert!(state.systems["laptop"].effective_enabled());
}

#[test]
fn addresses_are_allocated_from_the_overlay_skipping_used_ones() {
    let net: Ipv4Net = "10.0.0.0/30".parse().unwrap();
    let mut used = BTreeSet::new();
    assert_eq!(allocate(net, &used), Some(Ipv4Addr::new(10, 0, 0, 1)));
    used.insert(Ipv4Addr::new(10, 0, 0, 1));
    assert_eq!(allocate(net, &used), Some(Ipv4Addr::new(10, 0, 0, 2)));
    used.insert(Ipv4Addr::new(10, 0, 0, 2));
    assert_eq!(allocate(net, &used), None);
    // A gap is filled first.
    let used: BTreeSet<_> = [Ipv4Addr::new(100, 64, 0, 2)].into();
    assert_eq!(
        allocate("100.64.0.0/10".parse().unwrap(), &used),
        Some(Ipv4Addr::new(100, 64, 0, 1))
    );
}

#[test]
fn names_are_checked_and_made_unique() {
    assert!(check_name("name", "office-gw.1").is_ok());
    assert!(check_name("name", "").is_err());
    assert!(check_name("name", "a b").is_err());
    assert!(check_name("name", &"x".repeat(64)).is_err());
    assert!(check_label("name", "users to the office").is_ok());
    assert!(check_label("name", "bad\nname").is_err());
    assert_eq!(unique_name(None, &Default::default()), "system");
    assert_eq!(unique_name(Some("--"), &Default::default()), "system");
}

#[test]
fn the_gateway_toggle_keeps_its_settings() {
    let (state, _) = ok(&office(), set_gateway("office-gw", false));
    let gateway = state.systems["office-gw"].gateway.clone().unwrap();
    assert!(!gateway.allowed);
    assert!(gateway
        .subnets
        .contains(&"192.168.77.0/24".parse().unwrap()));
    let rows = subnet_rows(&state);
    assert_eq!(rows[0].state, "gateway off");
}

#[test]
fn pre_shared_keys_follow_a_rename_and_hold_their_systems() {
    let imported = example();
    assert_eq!(imported.preshared_keys.len(), 1);
    let (state, _) = ok(&State::default(), Command::Import(Box::new(imported)));
    let (state, outcome) = ok(&state, rename("laptop", "alice-laptop"));
    assert_eq!(
        state.preshared_keys[0].systems,
        ["alice-laptop", "menlo-gw-1"]
    );
    assert!(outcome
        .changes
        .contains(&Change::PresharedKeys(state.preshared_keys.clone())));
    let problems = invalid(refused(&state, delete("alice-laptop")));
    assert!(
        problems
            .iter()
            .any(|p| p.field.starts_with("preshared_keys[0].systems")),
        "{problems:#?}"
    );
}

#[test]
fn a_gateways_endpoint_is_set_cleared_and_a_bad_one_refused_by_field() {
    let state = office();
    let endpoint = |text: &str| {
        edit(
            "office-gw",
            SystemEdit {
                endpoint: Some(text.into()),
                ..SystemEdit::default()
            },
        )
    };
    let (set, outcome) = ok(&state, endpoint("203.0.113.2:51820"));
    assert_eq!(
        set.systems["office-gw"].endpoint,
        Some("203.0.113.2:51820".parse().unwrap())
    );
    assert!(outcome.audit.detail.contains("endpoint 203.0.113.2:51820"));
    assert!(definition::render(&set).contains("endpoint = \"203.0.113.2:51820\""));

    let (cleared, _) = ok(&set, endpoint(""));
    assert_eq!(cleared.systems["office-gw"].endpoint, None);

    match refused(&set, endpoint("203.0.113.2")) {
        Refusal::Invalid(problems) => {
            assert_eq!(problems[0].field, "endpoint");
            assert!(problems[0].message.contains("ADDRESS:PORT"), "{problems:?}");
        }
        other => panic!("expected a field problem, got {other:?}"),
    }
}

#[test]
fn a_revoked_admin_token_is_marked_and_an_unknown_one_refused() {
    let (state, _) = ok(
        &State::default(),
        Command::CreateToken {
            id: "t1".into(),
            name: "alice".into(),
            hash: "00".repeat(32),
        },
    );
    assert!(!state.tokens["t1"].revoked);
    let (revoked, outcome) = ok(&state, Command::RevokeToken { id: "t1".into() });
    assert!(revoked.tokens["t1"].revoked);
    assert_eq!(outcome.audit.action, "token.revoke");
    assert_eq!(outcome.changes.len(), 1, "the token's row is written");
    assert!(matches!(
        refused(&state, Command::RevokeToken { id: "nope".into() }),
        Refusal::NotFound { .. }
    ));
}

/// The targeted check of enrolments and approval changes (see `targeted`) against the full
/// validation, on every combination of a new system's fields a faulty enrolment could produce
/// (names, keys and addresses taken or malformed, empty tags, an endpoint, gateway settings):
/// whenever the targeted check vouches for a change, the full validation accepts it and gives
/// the same network; whenever the full validation refuses, the targeted check does not vouch.
#[test]
fn targeted_check_matches_full_validation() {
    let (base, _) = office_with_policy();
    let before = definition::validate(&base).expect("valid").network;
    let overlay = base.settings.overlay;
    let laptop = base.systems["laptop"].clone();
    let short_key = base64::engine::general_purpose::STANDARD.encode([7u8; 31]);
    let names = ["newcomer", "laptop", "", "  "];
    let keys = [
        KEY_C.to_owned(),
        laptop.public_key.clone(),
        format!(" {KEY_C} "),
        "not a key".to_owned(),
        short_key,
    ];
    let addresses = [
        "100.64.0.77".parse().unwrap(),
        laptop.address,
        overlay.network(),
        overlay.broadcast(),
        "10.9.9.9".parse().unwrap(),
    ];
    let tags: [&[&str]; 3] = [&["users"], &[""], &["users", " "]];
    let (mut vouched, mut refused) = (0, 0);
    for name in names {
        for key in &keys {
            for address in addresses {
                for tag_set in tags {
                    for endpoint in [None, Some("192.0.2.9:51820".parse().unwrap())] {
                        for gateway in [None, Some(GatewayDoc::default())] {
                            let mut next = base.clone();
                            let mut system = laptop.clone();
                            system.name = name.to_owned();
                            system.public_key = key.clone();
                            system.address = address;
                            system.tags = tag_set.iter().map(|t| (*t).to_owned()).collect();
                            system.endpoint = endpoint;
                            system.gateway = gateway;
                            next.systems.insert(name.to_owned(), system);
                            let change = targeted::Targeted::Added(name.to_owned());
                            let quick = targeted::check(&before, &next, &change);
                            let full = definition::validate(&next);
                            let case =
                                format!("{name:?} {key:?} {address} {tag_set:?} {endpoint:?}");
                            match (quick, full) {
                                (Some(quick), Ok(full)) => {
                                    assert_eq!(*quick, full.network, "{case}");
                                    vouched += 1;
                                }
                                (Some(_), Err(problems)) => {
                                    panic!("vouched for {case}, refused: {problems:?}")
                                }
                                (None, Err(_)) => refused += 1,
                                (None, Ok(_)) => {}
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(vouched >= 1, "the targeted check vouched for nothing");
    assert!(refused > 1000, "only {refused} cases were refused");

    // Approval changes, for every system (the gateway too) and every approval.
    for name in base.systems.keys() {
        for approval in [Approval::Approved, Approval::Pending, Approval::Revoked] {
            let mut next = base.clone();
            next.systems.get_mut(name).expect("there").approval = approval;
            let change = targeted::Targeted::Approval(name.clone());
            let quick = targeted::check(&before, &next, &change).expect("vouched");
            let full = definition::validate(&next).expect("valid");
            assert_eq!(*quick, full.network, "{name} {approval:?}");
        }
    }
}

/// Enrolments, approvals and revokes through `apply_on` (given the network before) commit
/// what `apply` (the full validation) commits, and give the network it gives.
#[test]
fn enrolments_and_approvals_on_a_validated_network_commit_what_full_validation_commits() {
    let (mut state, _) = office_with_policy();
    let keys = [KEY_C, "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="];
    let commands = [
        enrol("auto", keys[0], "laptop"),
        enrol("manual", keys[1], "desk"),
        enrol("auto", KEY_A, "again"),
        approve("desk"),
        Command::Revoke {
            name: "laptop".into(),
        },
        Command::Revoke {
            name: "office-gw".into(),
        },
        approve("office-gw"),
        approve("nobody"),
    ];
    let mut accepted = 0;
    for command in commands {
        let before = definition::validate(&state).expect("valid").network;
        let full = apply(&state, command.clone(), &ctx());
        let quick = apply_on(&state, Some(&before), command, &ctx());
        match (full, quick) {
            (Ok(full), Ok(quick)) => {
                assert_eq!(full.next, quick.next);
                assert_eq!(full.changes.len(), quick.changes.len());
                assert_eq!(full.network, quick.network);
                assert_eq!(
                    quick.network.as_deref(),
                    Some(&definition::validate(&quick.next).expect("valid").network)
                );
                state = State::clone(&full.next);
                accepted += 1;
            }
            (Err(full), Err(quick)) => assert_eq!(full.to_string(), quick.to_string()),
            (full, quick) => panic!("full {:?} vs targeted {:?}", full.err(), quick.err()),
        }
    }
    assert_eq!(accepted, 6);
}
