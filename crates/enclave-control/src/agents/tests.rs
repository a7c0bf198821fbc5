//! What an agent is sent as the network changes: [`decide`] on snapshots made by the core.

use super::*;
use crate::core::{self, Ctx};
use enclave_control_proto::message::ViewUpdate;

const EXAMPLE: &str = include_str!("../../../../docs/examples/network.toml");
const LAPTOP: &str = "vTN8N6SXl8C/f4BwE2OKOmkFfGsPprd4XoDA5tqbHBM=";
const GATEWAY: &str = "eTv6knpgaNhI2DhJE/HE1mmi4BxJ+kC2vh7+G+LkNm4=";

fn ctx() -> Ctx {
    Ctx {
        actor: "test".into(),
        now: 1_800_000_000,
    }
}

fn apply(state: &State, command: Command) -> State {
    State::clone(&core::apply(state, command, &ctx()).unwrap().next)
}

fn example() -> State {
    let imported = definition::import("network.toml", EXAMPLE, 0).unwrap();
    apply(&State::default(), Command::Import(Box::new(imported)))
}

fn snapshot(state: &State) -> Snapshot {
    Snapshot::new(Arc::new(state.clone()))
}

fn key(text: &str) -> [u8; 32] {
    key_bytes(text).unwrap()
}

/// The view sent, and what to remember.
fn view_of(decision: Decision) -> (ViewUpdate, Sent) {
    match decision {
        Decision::View {
            frame,
            serial,
            sent,
        } => match serde_json::from_slice(&frame).expect("the frame is JSON") {
            ServerMessage::View(update) => {
                assert_eq!(update.serial, serial);
                // The frame is what serialising the message gives.
                let message = ServerMessage::View(update.clone());
                assert_eq!(serde_json::to_vec(&message).unwrap(), frame);
                (update, sent)
            }
            other => panic!("expected a view, got {other:?}"),
        },
        other => panic!("expected a view, got {other:?}"),
    }
}

/// `command` applied to `state`, which must close the laptop, connected with `sent`, with a
/// reason that says `why`: the state after.
fn laptop_closed(state: &State, command: Command, sent: Sent, why: &str) -> State {
    let next = apply(state, command);
    match decide(&snapshot(&next), &key(LAPTOP), Some(sent)) {
        Decision::Close(ServerMessage::Revoked(r)) => {
            assert!(
                r.reason.contains(why),
                "closed for {:?}, not {why}",
                r.reason
            );
        }
        other => panic!("not closed ({why}): {other:?}"),
    }
    next
}

#[test]
fn an_agent_gets_its_view_once_with_the_revision_as_serial() {
    let state = example();
    let (update, sent) = view_of(decide(&snapshot(&state), &key(LAPTOP), None));
    assert_eq!(update.view.system, "laptop");
    assert_eq!(update.serial, u64::try_from(state.revision).unwrap());
    assert!(update.view.peers.contains_key("menlo-gw-1"));
    assert!(matches!(
        decide(&snapshot(&state), &key(LAPTOP), Some(sent)),
        Decision::Keep(kept) if kept == sent
    ));
}

#[test]
fn a_change_that_leaves_a_view_alone_sends_nothing_to_that_agent() {
    let state = example();
    let (_, sent) = view_of(decide(&snapshot(&state), &key(LAPTOP), None));
    // A new enrolment key moves the revision but changes no view.
    let next = apply(
        &state,
        Command::CreateKey(core::NewKey {
            id: "k".into(),
            hash: "h".into(),
            tags: Default::default(),
            approval: crate::model::ApprovalMode::Auto,
            uses: None,
            expires_at: None,
            ephemeral: false,
        }),
    );
    assert!(next.revision > state.revision);
    // Compiled and compared (the snapshot knows nothing of the step)...
    assert!(matches!(
        decide(&snapshot(&next), &key(LAPTOP), Some(sent)),
        Decision::Keep(Sent::View { at, .. }) if at == next.revision
    ));
    // ... or known unchanged without compiling (it does).
    let mut following = snapshot(&next);
    following.follows(&snapshot(&state));
    assert!(following.unchanged_since("laptop", state.revision));
    assert!(matches!(
        decide(&following, &key(LAPTOP), Some(sent)),
        Decision::Keep(Sent::View { at, .. }) if at == next.revision
    ));
}

#[test]
fn revoking_a_system_closes_it_and_its_peers_get_views_without_it() {
    let state = example();
    let (_, laptop_sent) = view_of(decide(&snapshot(&state), &key(LAPTOP), None));
    let (_, gateway_sent) = view_of(decide(&snapshot(&state), &key(GATEWAY), None));
    let revoke = Command::Revoke {
        name: "laptop".into(),
    };
    let revoked = laptop_closed(&state, revoke, laptop_sent, "revoked");
    let (update, _) = view_of(decide(
        &snapshot(&revoked),
        &key(GATEWAY),
        Some(gateway_sent),
    ));
    assert!(
        !update.view.peers.contains_key("laptop"),
        "{:?}",
        update.view.peers.keys()
    );
    assert_eq!(update.serial, u64::try_from(revoked.revision).unwrap());

    // (The example's pre-shared key names the laptop; a key must go before its system.)
    let mut without_psk = state.clone();
    without_psk.preshared_keys.clear();
    let delete = Command::Delete {
        name: "laptop".into(),
    };
    laptop_closed(&without_psk, delete, laptop_sent, "deleted");
}

#[test]
fn a_pending_system_is_told_once_and_gets_its_view_when_approved() {
    let mut state = example();
    let laptop = state.systems.get_mut("laptop").unwrap();
    laptop.approval = Approval::Pending;
    let (message, sent) = match decide(&snapshot(&state), &key(LAPTOP), None) {
        Decision::Send(message, sent) => (message, sent),
        other => panic!("{other:?}"),
    };
    assert!(matches!(message, ServerMessage::Pending(p) if p.system == "laptop"));
    assert!(matches!(
        decide(&snapshot(&state), &key(LAPTOP), Some(sent)),
        Decision::Nothing
    ));
    let approved = apply(
        &state,
        Command::Approve {
            name: "laptop".into(),
        },
    );
    let (update, _) = view_of(decide(&snapshot(&approved), &key(LAPTOP), Some(sent)));
    assert!(update.view.enabled);
}

#[test]
fn an_unknown_key_is_not_a_system() {
    let state = example();
    assert!(snapshot(&state).system_of(&[7; 32]).is_none());
    assert_eq!(snapshot(&state).system_of(&key(LAPTOP)), Some("laptop"));
}

/// The hash of the view a decision sends or keeps; `None` for anything else.
fn view_hash(decision: &Decision) -> Option<[u8; 32]> {
    match decision {
        Decision::View {
            sent: Sent::View { hash, .. },
            ..
        }
        | Decision::Keep(Sent::View { hash, .. }) => Some(*hash),
        _ => None,
    }
}

#[test]
fn views_kept_without_compiling_are_the_views_a_full_compile_gives() {
    let mut state = example();
    let keys: Vec<[u8; 32]> = state.systems.values().map(|s| key(&s.public_key)).collect();
    let mut previous = snapshot(&state);
    let mut last: Vec<Option<Sent>> = keys
        .iter()
        .map(|k| match decide(&previous, k, None) {
            Decision::View { sent, .. } | Decision::Send(_, sent) => Some(sent),
            _ => None,
        })
        .collect();
    let edit = |name: &str, edit: core::SystemEdit| Command::UpdateSystem {
        name: name.into(),
        edit,
    };
    let commands = [
        Command::Revoke {
            name: "contractor".into(),
        },
        edit(
            "build-server",
            core::SystemEdit {
                endpoint: Some("203.0.113.21:51820".into()),
                ..Default::default()
            },
        ),
        edit(
            "laptop",
            core::SystemEdit {
                tags: Some(["users".to_owned(), "servers".to_owned()].into()),
                ..Default::default()
            },
        ),
        Command::Approve {
            name: "contractor".into(),
        },
        Command::AddSubnet {
            system: "menlo-gw-2".into(),
            subnet: "192.168.78.0/24".parse().unwrap(),
        },
        Command::SetGateway {
            name: "egress-gw".into(),
            allowed: false,
        },
        edit(
            "build-server",
            core::SystemEdit {
                name: Some("builder".into()),
                ..Default::default()
            },
        ),
        Command::Revoke {
            name: "menlo-gw-1".into(),
        },
    ];
    let mut skipped = 0;
    for command in commands {
        let what = format!("{command:?}");
        let next = apply(&state, command);
        let following = Snapshot::following(&previous, Arc::new(next.clone()), None);
        // Its keys, updated from the snapshot before, are the ones a snapshot of its own has.
        assert_eq!(following.by_key, snapshot(&next).by_key, "after {what}");
        for (k, last) in keys.iter().zip(&mut last) {
            let name = following.system_of(k).unwrap().to_owned();
            if following.unchanged_since(&name, state.revision) {
                skipped += 1;
            }
            let full = decide(&snapshot(&next), k, None);
            let incremental = decide(&following, k, *last);
            match (&full, &incremental) {
                (Decision::Close(_), Decision::Close(_)) => *last = None,
                _ => {
                    assert_eq!(
                        view_hash(&full),
                        view_hash(&incremental),
                        "{name} after {what}: {incremental:?}"
                    );
                    match incremental {
                        Decision::View { sent, .. } | Decision::Keep(sent) => *last = Some(sent),
                        _ => {}
                    }
                }
            }
        }
        state = next;
        previous = following;
    }
    // Most views were known unchanged: each edit touches a system and its peers only.
    assert!(skipped > 0);
}
