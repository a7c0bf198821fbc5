//! The store's conformance suite: the same cases run against SQLite by `cargo test` and
//! against PostgreSQL by the `control-postgres` scenario (`tests/src/scenarios/control.rs`).
//!
//! Each case gets the URL of a fresh, empty database from the caller and returns an error
//! when what it checks does not hold.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::core::{self, Change, Command, Ctx, NewKey, Reply, SystemEdit, Write};
use crate::definition;
use crate::model::{
    AclDoc, ApprovalMode, AuditEntry, DiscoveredSubnet, PolicyDoc, PolicyKind, TagDoc, TrustDoc,
};
use crate::service::{self, Service};
use crate::store::{self, SqlStore, Store};

/// A case's failure.
pub type Failure = String;
/// What a case returns.
pub type CaseResult = Result<(), Failure>;
/// A case: given the URL of a fresh, empty database.
pub type Case = fn(String) -> Pin<Box<dyn Future<Output = CaseResult> + Send>>;

/// Cases that need several servers on one database: PostgreSQL only (SQLite has one server).
pub fn postgres_cases() -> Vec<(&'static str, Case)> {
    crate::agent_suite::postgres_cases()
}

/// Every case, by name: the store's, then the agents' connections end to end
/// ([`crate::agent_suite`]).
pub fn cases() -> Vec<(&'static str, Case)> {
    let mut cases = store_cases();
    cases.extend(crate::agent_suite::cases());
    cases
}

/// A list of named cases: each `"name" => async_fn` becomes `("name", Case)`, the async fn
/// boxed.
macro_rules! named_cases {
    ($($name:literal => $case:path),* $(,)?) => {
        vec![$(($name, {
            let case: $crate::suite::Case = |url| Box::pin($case(url));
            case
        })),*]
    };
}
pub(crate) use named_cases;

fn store_cases() -> Vec<(&'static str, Case)> {
    named_cases![
        "migrates-from-empty" => migrates_from_empty,
        "upgrades-from-the-first-schema" => upgrades_from_the_first_schema,
        "every-operation-persists" => every_operation_persists,
        "failed-transaction-changes-nothing" => failed_transaction_changes_nothing,
        "concurrent-edits-never-lose-one-another" => concurrent_edits,
        "refused-enrolment-changes-nothing" => refused_enrolment_changes_nothing,
    ]
}

fn check(condition: bool, what: impl FnOnce() -> String) -> CaseResult {
    if condition {
        Ok(())
    } else {
        Err(what())
    }
}

fn e<E: std::fmt::Display>(context: &'static str) -> impl FnOnce(E) -> Failure {
    move |err| format!("{context}: {err}")
}

/// Every migration, in order: what a store has applied once it is open.
const MIGRATIONS: [i64; 5] = [1, 2, 3, 4, 5];

/// Checks that `store` has applied every migration; `when` says at which point of the case.
async fn all_migrated(store: &SqlStore, when: &str) -> CaseResult {
    let applied = store.migrations().await.map_err(e("reading migrations"))?;
    check(applied == MIGRATIONS, || {
        format!("{when}: applied migrations {applied:?}, expected {MIGRATIONS:?}")
    })
}

async fn open(url: &str) -> Result<SqlStore, Failure> {
    SqlStore::open(url).await.map_err(|err| {
        let mut text = format!("opening {}: {err}", store::redact(url));
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        text
    })
}

/// The [`open`] store and a service over it.
async fn open_service(url: &str) -> Result<(SqlStore, Service), Failure> {
    let store = open(url).await?;
    let service = Service::new(Arc::new(store.clone()));
    Ok((store, service))
}

/// The user guide's example network.
const EXAMPLE: &str = include_str!("../../../docs/examples/network.toml");

/// The command that imports [`EXAMPLE`].
fn import_example() -> Result<Command, Failure> {
    let imported =
        definition::import("network.toml", EXAMPLE, NOW).map_err(|d| format!("{d:?}"))?;
    Ok(Command::Import(Box::new(imported)))
}

const NOW: i64 = 1_800_000_000;
const KEY_A: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
const KEY_B: &str = "CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=";

fn ctx(actor: &str) -> Ctx {
    Ctx {
        actor: actor.into(),
        now: NOW,
    }
}

async fn migrates_from_empty(url: String) -> CaseResult {
    let store = open(&url).await?;
    all_migrated(&store, "a new database").await?;
    let state = store.load().await.map_err(e("loading"))?;
    check(state.revision == 0 && state.systems.is_empty(), || {
        format!("a new database holds {state:?}")
    })?;
    check(
        state.settings.overlay.to_string() == "100.64.0.0/10",
        || "the default overlay is not 100.64.0.0/10".into(),
    )?;
    store.close().await;
    // Opening again applies nothing twice and keeps the data.
    let again = open(&url).await?;
    all_migrated(&again, "after reopening").await?;
    again.close().await;
    Ok(())
}

/// A database made by the first release (schema version 1) is upgraded on open and keeps
/// its data.
async fn upgrades_from_the_first_schema(url: String) -> CaseResult {
    let (store, service) = open_service(&url).await?;
    service
        .execute(
            Command::CreateToken {
                id: "t1".into(),
                name: "alice".into(),
                hash: "token-hash".into(),
            },
            &ctx("cli"),
        )
        .await
        .map_err(e("a first change"))?;
    // Back to what version 1 left: no pre-shared keys, presence or portal accounts table, no
    // observed endpoints, migrations 2 to 5 not recorded.
    for statement in [
        "DROP TABLE preshared_keys",
        "DROP TABLE presence",
        "DROP TABLE portal_users",
        "ALTER TABLE systems DROP COLUMN observed_endpoint",
        "DELETE FROM _sqlx_migrations WHERE version >= 2",
    ] {
        sqlx::query(statement)
            .execute(&store.pool)
            .await
            .map_err(e("going back to version 1"))?;
    }
    check(
        store.migrations().await.map_err(e("migrations"))? == vec![1],
        || "the database is not at version 1".into(),
    )?;
    store.close().await;
    let upgraded = open(&url).await?;
    all_migrated(&upgraded, "after the upgrade").await?;
    let state = upgraded
        .load()
        .await
        .map_err(e("loading after the upgrade"))?;
    check(
        state.tokens.contains_key("t1") && state.revision == 1,
        || format!("the upgrade lost data: {state:?}"),
    )?;
    upgraded.close().await;
    Ok(())
}

fn policy() -> PolicyDoc {
    PolicyDoc {
        name: "users to the office".into(),
        kind: PolicyKind::Gateway,
        enabled: true,
        senders: vec!["users".into()],
        receivers: vec![],
        gateways: vec!["office-gw".into()],
        subnets: vec!["192.168.77.0/24".into()],
        filter: Some(vec!["192.168.77.20".into(), "192.168.77.21".into()]),
        acl: vec![AclDoc {
            protocol: "icmp".into(),
            ports: None,
            label: Some("ping".into()),
        }],
        trust: vec!["office-ip".into()],
        active_hours: None,
        version: 0,
    }
}

/// Runs `command`; then a fresh load of the store must equal the state the core computed.
async fn step(
    service: &Service,
    store: &SqlStore,
    command: Command,
) -> Result<core::Outcome, Failure> {
    let outcome = service
        .execute(command, &ctx("token:suite"))
        .await
        .map_err(|err| {
            format!(
                "{err}: {:?}",
                std::error::Error::source(&err).map(ToString::to_string)
            )
        })?;
    let loaded = store.load().await.map_err(e("loading"))?;
    check(loaded == *outcome.next, || {
        format!(
            "after {}, the stored state differs from the computed one:\nstored   {loaded:?}\ncomputed {:?}",
            outcome.audit.action, outcome.next
        )
    })?;
    Ok(outcome)
}

/// [`step`] for each command in turn.
async fn steps(
    service: &Service,
    store: &SqlStore,
    commands: impl IntoIterator<Item = Command>,
) -> CaseResult {
    for command in commands {
        step(service, store, command).await?;
    }
    Ok(())
}

async fn every_operation_persists(url: String) -> CaseResult {
    let (store, service) = open_service(&url).await?;
    step(&service, &store, import_example()?).await?;
    let exported = definition::render(&*service.state().await.map_err(e("state"))?);
    let original = enclave_policy::load("a", EXAMPLE).map_err(e("loading the example"))?;
    let round = enclave_policy::load("b", &exported).map_err(e("loading the export"))?;
    check(original.network == round.network, || {
        "the export after import is not the same network".into()
    })?;

    let enrolments =
        [(KEY_A, "new-laptop"), (KEY_B, "office-gw")].map(|(public_key, host)| Command::Enrol {
            key_hash: "key-hash".into(),
            public_key: public_key.into(),
            hostname: Some(host.into()),
        });
    let approvals = ["new-laptop", "office-gw"].map(|name| Command::Approve { name: name.into() });
    let credentials = [
        Command::CreateToken {
            id: "t1".into(),
            name: "alice".into(),
            hash: "token-hash".into(),
        },
        Command::CreateKey(NewKey {
            id: "k1".into(),
            hash: "key-hash".into(),
            tags: ["users".to_owned()].into(),
            approval: ApprovalMode::Manual,
            uses: Some(2),
            expires_at: Some(NOW + 3600),
            ephemeral: true,
        }),
    ];
    let gateway = Command::SetGateway {
        name: "office-gw".into(),
        allowed: true,
    };
    let joined = credentials
        .into_iter()
        .chain(enrolments)
        .chain(approvals)
        .chain([gateway]);
    steps(&service, &store, joined).await?;
    let mut found = BTreeMap::new();
    found.insert(
        "192.168.77.0/24".parse().map_err(e("cidr"))?,
        DiscoveredSubnet {
            interface: "eth1".into(),
            reason: "ethernet, up".into(),
        },
    );
    found.insert(
        "10.30.0.0/16".parse().map_err(e("cidr"))?,
        DiscoveredSubnet {
            interface: "eth2".into(),
            reason: "ethernet, up".into(),
        },
    );
    let subnets_and_trust = [
        Command::ReportDiscovered {
            system: "office-gw".into(),
            subnets: found,
        },
        Command::RemoveSubnet {
            system: "office-gw".into(),
            subnet: "10.30.0.0/16".parse().map_err(e("cidr"))?,
        },
        Command::AddSubnet {
            system: "office-gw".into(),
            subnet: "10.40.0.0/16".parse().map_err(e("cidr"))?,
        },
        Command::PutTrust {
            doc: TrustDoc {
                name: "office-ip".into(),
                kind: "public_ip".into(),
                allow: vec!["203.0.113.0/24".into()],
                block: vec![],
                version: 0,
            },
            write: Write::Create,
        },
    ];
    steps(&service, &store, subnets_and_trust).await?;
    let tag = step(
        &service,
        &store,
        Command::PutTag {
            doc: TagDoc {
                name: "users".into(),
                trust: vec![],
                version: 0,
            },
            write: Write::Create,
        },
    )
    .await?;
    let Reply::Tag(mut tag) = tag.reply else {
        return Err("a tag's reply is not the tag".into());
    };
    tag.trust = vec!["office-ip".into()];
    step(
        &service,
        &store,
        Command::PutTag {
            doc: tag,
            write: Write::Update,
        },
    )
    .await?;
    let created = step(
        &service,
        &store,
        Command::PutPolicy {
            doc: policy(),
            write: Write::Create,
        },
    )
    .await?;
    let Reply::Policy(mut doc) = created.reply else {
        return Err("a policy's reply is not the policy".into());
    };
    doc.enabled = false;
    step(
        &service,
        &store,
        Command::PutPolicy {
            doc: *doc,
            write: Write::Update,
        },
    )
    .await?;
    step(
        &service,
        &store,
        Command::UpdateSystem {
            name: "office-gw".into(),
            edit: SystemEdit {
                name: Some("menlo-office-gw".into()),
                tags: Some(["gateways".to_owned()].into()),
                enabled: Some(true),
                endpoint: Some("203.0.113.2:51820".into()),
                version: None,
            },
        },
    )
    .await?;
    // An observed endpoint is kept (its own column) apart from the one set by hand.
    let observed = step(
        &service,
        &store,
        Command::ObserveEndpoints {
            endpoints: [(
                "laptop".to_owned(),
                "198.51.100.7:51820".parse().map_err(e("an address"))?,
            )]
            .into(),
        },
    )
    .await?;
    check(
        observed.next.systems["laptop"].observed_endpoint.is_some()
            && observed.next.systems["laptop"].endpoint.is_none(),
        || {
            format!(
                "the laptop after ObserveEndpoints: {:?}",
                observed.next.systems["laptop"]
            )
        },
    )?;
    let deletions = [
        Command::DeletePolicy {
            name: "users to the office".into(),
        },
        Command::DeleteTag {
            name: "users".into(),
        },
        Command::DeleteTrust {
            name: "office-ip".into(),
        },
        Command::Revoke {
            name: "new-laptop".into(),
        },
        Command::Delete {
            name: "new-laptop".into(),
        },
        Command::RevokeKey { id: "k1".into() },
    ];
    steps(&service, &store, deletions).await?;

    let state = service.state().await.map_err(e("state"))?;
    let audit = store
        .audit(0, 1000)
        .await
        .map_err(e("reading the audit log"))?;
    check(audit.len() as i64 == state.revision, || {
        format!(
            "{} audit entries for revision {}",
            audit.len(),
            state.revision
        )
    })?;
    let revisions: Vec<i64> = audit.iter().map(|a| a.revision).collect();
    let expected: Vec<i64> = (1..=state.revision).collect();
    check(revisions == expected, || {
        format!("audit revisions {revisions:?}")
    })?;
    check(
        audit.iter().all(|a| a.actor == "token:suite") && audit[0].action == "definition.import",
        || format!("audit entries {audit:?}"),
    )?;
    let later = store
        .audit(state.revision - 2, 1000)
        .await
        .map_err(e("audit"))?;
    check(later.len() == 2, || {
        format!("audit after a revision: {later:?}")
    })?;
    store.close().await;
    Ok(())
}

async fn failed_transaction_changes_nothing(url: String) -> CaseResult {
    let (store, service) = open_service(&url).await?;
    service
        .execute(import_example()?, &ctx("cli"))
        .await
        .map_err(e("import"))?;
    let before = store.load().await.map_err(e("loading"))?;
    let audit_before = store.audit(0, 1000).await.map_err(e("audit"))?;

    // A commit whose last row breaks a constraint (two systems with one address; the core
    // never makes it, the database must refuse it): the rows before it must not stay.
    let laptop = before.systems["laptop"].clone();
    let mut twin = before.systems["contractor"].clone();
    twin.address = laptop.address;
    let mut renamed = laptop.clone();
    renamed.tags = ["changed".to_owned()].into();
    let changes = vec![
        Change::Settings(crate::model::Settings {
            overlay: "10.0.0.0/8".parse().map_err(e("cidr"))?,
            keepalive: 1,
        }),
        Change::DeletePolicy("users to servers".into()),
        Change::PutSystem(Box::new(renamed)),
        Change::PutSystem(Box::new(twin)),
    ];
    let entry = AuditEntry {
        revision: before.revision + 1,
        at: NOW,
        actor: "suite".into(),
        action: "broken".into(),
        target: String::new(),
        detail: String::new(),
    };
    let result = store
        .commit(before.revision, &changes, std::slice::from_ref(&entry))
        .await;
    check(matches!(result, Err(store::Error::Database { .. })), || {
        format!("a commit breaking a unique constraint returned {result:?}")
    })?;
    let after = store.load().await.map_err(e("loading"))?;
    check(after == before, || {
        "a failed commit left part of its changes behind".into()
    })?;
    let audit_after = store.audit(0, 1000).await.map_err(e("audit"))?;
    check(audit_after == audit_before, || {
        "a failed commit left an audit entry".into()
    })?;
    // And the store still works.
    service
        .execute(
            Command::Approve {
                name: "laptop".into(),
            },
            &ctx("cli"),
        )
        .await
        .map_err(e("a change after the failed commit"))?;
    store.close().await;
    Ok(())
}

async fn concurrent_edits(url: String) -> CaseResult {
    // Two stores on one database stand for two servers (or two administrators).
    let (one, first) = open_service(&url).await?;
    let (two, second) = open_service(&url).await?;
    first
        .execute(import_example()?, &ctx("token:a"))
        .await
        .map_err(e("import"))?;

    // Both compute a change on the same revision; the store takes the first and refuses the
    // second, which wrote nothing.
    let base = one.load().await.map_err(e("loading"))?;
    let a = core::apply(
        &base,
        Command::Revoke {
            name: "laptop".into(),
        },
        &ctx("token:a"),
    )
    .map_err(e("a's change"))?;
    let b = core::apply(
        &base,
        Command::Revoke {
            name: "contractor".into(),
        },
        &ctx("token:b"),
    )
    .map_err(e("b's change"))?;
    one.commit(base.revision, &a.changes, std::slice::from_ref(&a.audit))
        .await
        .map_err(e("a's commit"))?;
    let lost = two
        .commit(base.revision, &b.changes, std::slice::from_ref(&b.audit))
        .await;
    check(
        matches!(lost, Err(store::Error::Conflict { base: r }) if r == base.revision),
        || format!("a commit on a stale revision returned {lost:?}"),
    )?;
    let now = two.load().await.map_err(e("loading"))?;
    check(now == *a.next, || {
        "the refused commit changed something".into()
    })?;

    // Through the service, the second server's stale cache is noticed and its command is
    // judged again on the new state: both edits stay.
    let _ = second.state().await.map_err(e("state"))?;
    first
        .execute(
            Command::Approve {
                name: "laptop".into(),
            },
            &ctx("token:a"),
        )
        .await
        .map_err(e("approve on one"))?;
    second
        .execute(
            Command::Revoke {
                name: "contractor".into(),
            },
            &ctx("token:b"),
        )
        .await
        .map_err(e("revoke on two"))?;
    let state = first.state().await.map_err(e("state"))?;
    check(
        state.systems["laptop"].approval == crate::model::Approval::Approved
            && state.systems["contractor"].approval == crate::model::Approval::Revoked,
        || "an edit was lost between two servers".into(),
    )?;

    // Many edits at once from both: every one lands, none is lost.
    let mut tasks = Vec::new();
    let first = Arc::new(first);
    let second = Arc::new(second);
    for i in 0..10 {
        let service = if i % 2 == 0 {
            Arc::clone(&first)
        } else {
            Arc::clone(&second)
        };
        tasks.push(tokio::spawn(async move {
            let tag = format!("t{i}");
            service
                .execute(
                    Command::PutTag {
                        doc: TagDoc {
                            name: tag,
                            trust: vec![],
                            version: 0,
                        },
                        write: Write::Create,
                    },
                    &ctx("token:many"),
                )
                .await
        }));
    }
    for task in tasks {
        match task.await.map_err(e("joining"))? {
            Ok(_) => {}
            Err(service::Error::Busy) => return Err("an edit gave up as busy".into()),
            Err(err) => return Err(format!("an edit failed: {err}")),
        }
    }
    let state = second.state().await.map_err(e("state"))?;
    check(state.tags.len() == 11, || {
        format!(
            "{} tags after 10 concurrent creations (+1)",
            state.tags.len()
        )
    })?;
    one.close().await;
    two.close().await;
    Ok(())
}

async fn refused_enrolment_changes_nothing(url: String) -> CaseResult {
    let (store, service) = open_service(&url).await?;
    service
        .execute(
            Command::CreateKey(NewKey {
                id: "once".into(),
                hash: "once-hash".into(),
                tags: Default::default(),
                approval: ApprovalMode::Auto,
                uses: Some(1),
                expires_at: Some(NOW + 60),
                ephemeral: false,
            }),
            &ctx("cli"),
        )
        .await
        .map_err(e("creating a key"))?;
    let enrol = |hash: &str, key: &str| Command::Enrol {
        key_hash: hash.into(),
        public_key: key.into(),
        hostname: Some("h".into()),
    };
    service
        .execute(enrol("once-hash", KEY_A), &ctx("key:once"))
        .await
        .map_err(e("the first enrolment"))?;
    let before = store.load().await.map_err(e("loading"))?;
    let late = Ctx {
        actor: "key:once".into(),
        now: NOW + 61,
    };
    for (command, at) in [
        (enrol("once-hash", KEY_B), ctx("key:once")),
        (enrol("wrong-hash", KEY_B), ctx("key:wrong")),
        (enrol("once-hash", KEY_B), late),
    ] {
        let result = service.execute(command, &at).await;
        check(
            matches!(result, Err(service::Error::Refused(core::Refusal::Key(_)))),
            || format!("a used-up, wrong or expired key returned {result:?}"),
        )?;
    }
    let after = store.load().await.map_err(e("loading"))?;
    check(after == before, || {
        "a refused enrolment changed the state".into()
    })?;
    store.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs every case on a SQLite file of its own.
    #[test]
    fn the_suite_passes_on_sqlite() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir =
            std::env::temp_dir().join(format!("enclave-control-suite-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut failures = Vec::new();
        for (name, case) in cases() {
            let url = format!("sqlite://{}/{name}.db", dir.display());
            if let Err(failure) = runtime.block_on(case(url)) {
                failures.push(format!("{name}: {failure}"));
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(failures.is_empty(), "{failures:#?}");
    }
}
