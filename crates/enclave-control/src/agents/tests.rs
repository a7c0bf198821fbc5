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

#[test]
fn an_agent_gets_its_view_once_with_the_revision_as_serial() {
    let state = example();
    let (update, sent) = view_of(decide(&snapshot(&state), &key(LAPTOP), None));
    assert_eq!(update.view.system, "laptop");
    assert_eq!(update.serial, u64::try_from(state.revision).unwrap());
    assert!(update.view.peers.contains_key("menlo-gw-1"));
    assert!(matches!(
        decide(&snapshot(&state), &key(LAPTOP), Some(sent)),
        Decision::Nothing
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
    assert!(matches!(
        decide(&snapshot(&next), &key(LAPTOP), Some(sent)),
        Decision::Nothing
    ));
}

#[test]
fn revoking_a_system_closes_it_and_its_peers_get_views_without_it() {
    let state = example();
    let (_, laptop_sent) = view_of(decide(&snapshot(&state), &key(LAPTOP), None));
    let (_, gateway_sent) = view_of(decide(&snapshot(&state), &key(GATEWAY), None));
    let revoked = apply(
        &state,
        Command::Revoke {
            name: "laptop".into(),
        },
    );
    match decide(&snapshot(&revoked), &key(LAPTOP), Some(laptop_sent)) {
        Decision::Close(ServerMessage::Revoked(r)) => assert!(r.reason.contains("revoked")),
        other => panic!("{other:?}"),
    }
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
    let deleted = apply(
        &without_psk,
        Command::Delete {
            name: "laptop".into(),
        },
    );
    match decide(&snapshot(&deleted), &key(LAPTOP), Some(laptop_sent)) {
        Decision::Close(ServerMessage::Revoked(r)) => assert!(r.reason.contains("deleted")),
        other => panic!("{other:?}"),
    }
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
