//! The agents' connections end to end, in-process: real servers ([`crate::server::serve`])
//! over TLS on loopback with their self-signed certificates pinned, real agents' clients
//! ([`enclave_control_proto::connect`]), a real store. Part of the store's suite
//! ([`crate::suite`]): `cargo test` runs the cases on SQLite, the `control-postgres-store`
//! scenario on a throwaway PostgreSQL; [`postgres_cases`] need several servers on one
//! database and run only there.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use enclave_control_proto::frame::{FrameReader, FrameWriter};
use enclave_control_proto::message::{
    Ack, AgentMessage, Discovered, Hello, PeerReport, Proof, Report, ServerMessage,
};
use enclave_control_proto::proof::{self, Transcript, CHANNEL_EXPORTER_LABEL};
use enclave_control_proto::{Session, Trust};
use enclave_policy::View;
use getrandom::SysRng;
use rand_core::UnwrapErr;
use x25519_dalek::{PublicKey, StaticSecret};

use crate::agents::{Hub, Options};
use crate::client::{Client, HttpMethod, HttpStatus};
use crate::core::{Command, Ctx, NewKey, Write};
use crate::model::{AclDoc, ApprovalMode, PolicyDoc, PolicyKind};
use crate::service::Service;
use crate::store::SqlStore;
use crate::suite::{named_cases, Case, CaseResult, Failure};
use crate::{secret, server, tls};

/// Every case, by name.
pub fn cases() -> Vec<(&'static str, Case)> {
    named_cases![
        "agent-gets-its-view-and-every-change" => gets_its_view_and_every_change,
        "revoke-and-delete-cut-an-agent-off" => revoke_and_delete_cut_off,
        "an-agent-without-the-private-key-is-refused" => refusals::without_the_private_key,
        "a-pending-agent-waits-for-approval" => pending_waits,
        "an-ephemeral-system-goes-when-disconnected" => ephemeral_goes,
        "a-database-that-is-down-keeps-agents-and-tokens" => database_down,
        "unauthenticated-connections-are-bounded" => refusals::unauthenticated_bounded,
        "a-revoke-reaches-every-peer-within-a-second" => revoke_reaches_every_peer,
        "presence-of-a-dead-server-goes-stale" => presence_goes_stale,
        "an-agents-observed-endpoint-reaches-its-peers" => observed_endpoint_reaches_peers,
    ]
}

/// Cases that need several servers on one database (PostgreSQL).
pub fn postgres_cases() -> Vec<(&'static str, Case)> {
    named_cases!["an-edit-through-one-server-reaches-the-other" => two_servers]
}

/// How long any one step may take before the case fails.
const STEP: Duration = Duration::from_secs(5);

fn e<E: std::fmt::Display>(context: &'static str) -> impl FnOnce(E) -> Failure {
    move |err| format!("{context}: {err}")
}

fn check(condition: bool, what: impl FnOnce() -> String) -> CaseResult {
    if condition {
        Ok(())
    } else {
        Err(what())
    }
}

/// Looks with `probe` every `every` until what it checks holds (`Ok(Ok(()))`), for at most
/// `within`; then fails with what the last look said (`Ok(Err(what))`). A probe's own
/// failure (`Err`) ends the wait at once.
async fn eventually<F, Fut>(within: Duration, every: Duration, mut probe: F) -> CaseResult
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<CaseResult, Failure>>,
{
    let deadline = Instant::now() + within;
    loop {
        let Err(what) = probe().await? else {
            return Ok(());
        };
        check(Instant::now() < deadline, || what)?;
        tokio::time::sleep(every).await;
    }
}

fn ctx() -> Ctx {
    Ctx {
        actor: "test".into(),
        now: crate::agents::now(),
    }
}

/// One server on loopback, TLS with a self-signed certificate.
struct Server {
    url: String,
    trust: Trust,
    hub: Arc<Hub>,
    store: SqlStore,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.hub.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

async fn start(db: &str, name: &str, options: Options) -> Result<Server, Failure> {
    let store = SqlStore::open(db).await.map_err(e("opening the store"))?;
    let service = Arc::new(Service::new(Arc::new(store.clone())));
    let hub = Arc::new(Hub::new(
        service,
        Options {
            server: name.into(),
            ..options
        },
    ));
    hub.start().await;
    let dir = std::env::temp_dir().join(format!(
        "enclave-agent-suite-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let identity =
        tls::self_signed(&dir, &["127.0.0.1".into()]).map_err(e("making a certificate"))?;
    let trust = Trust::Fingerprint(
        tls::parse_fingerprint(&identity.fingerprint).map_err(e("the fingerprint"))?,
    );
    let config = tls::server_config(identity).map_err(e("the TLS configuration"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(e("binding"))?;
    let url = format!(
        "https://{}",
        listener.local_addr().map_err(e("the address"))?
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server::serve(
        listener,
        Arc::clone(&hub),
        Some(config),
        async {
            let _ = stopped.await;
        },
    ));
    Ok(Server {
        url,
        trust,
        hub,
        store,
        stop: Some(stop),
        dir,
    })
}

impl Server {
    fn service(&self) -> &Arc<Service> {
        self.hub.service()
    }

    async fn run(&self, command: Command) -> Result<(), Failure> {
        self.service()
            .execute(command, &ctx())
            .await
            .map(|_| ())
            .map_err(|err| format!("{err}"))
    }

    /// An enrolment key with `tags`; its text.
    async fn key(
        &self,
        tags: &[&str],
        approval: ApprovalMode,
        ephemeral: bool,
    ) -> Result<String, Failure> {
        Ok(
            create_key(self.service(), tags, approval, ephemeral, &ctx())
                .await?
                .text
                .into_inner(),
        )
    }

    /// The policy from `users` to `servers` (any protocol) and an automatic enrolment key for
    /// each tag: the users' key and the servers' key.
    async fn users_to_servers(&self) -> Result<(String, String), Failure> {
        self.run(Command::PutPolicy {
            doc: users_to_servers("any", 0),
            write: Write::Create,
        })
        .await?;
        Ok((
            self.key(&["users"], ApprovalMode::Auto, false).await?,
            self.key(&["servers"], ApprovalMode::Auto, false).await?,
        ))
    }

    /// An admin token's text.
    async fn token(&self) -> Result<String, Failure> {
        let made = secret::generate(secret::TOKEN_PREFIX);
        self.run(Command::CreateToken {
            id: made.id.clone(),
            name: "alice".into(),
            hash: made.hash.expose().clone(),
        })
        .await?;
        Ok(made.text.into_inner())
    }

    /// Enrols a new key pair through the API as `hostname`; the private key.
    async fn enrol(&self, key: &str, hostname: &str) -> Result<StaticSecret, Failure> {
        let private = StaticSecret::random_from_rng(&mut UnwrapErr(SysRng));
        let public = BASE64.encode(PublicKey::from(&private).as_bytes());
        let enrolled = enclave_control_proto::enrol(
            &self.url,
            Some(&self.trust),
            key,
            &public,
            Some(hostname),
        )
        .await
        .map_err(|err| format!("enrolling {hostname}: {}", chain(&err)))?;
        check(enrolled.system == hostname, || {
            format!("enrolled as {:?}, not {hostname:?}", enrolled.system)
        })?;
        Ok(private)
    }

    async fn connect(&self, private: &StaticSecret) -> Result<Session, Failure> {
        enclave_control_proto::connect(&self.url, Some(&self.trust), private, Some("host"))
            .await
            .map_err(|err| format!("connecting: {}", chain(&err)))
    }
}

/// Makes an enrolment key with `tags` (no use limit, no expiry) as `ctx` says; the key, its
/// text shown this once. Also a test fixture of the portal and of the managed agent
/// (enclave-runtime).
///
/// # Errors
/// The service refused the key.
pub async fn create_key(
    service: &Service,
    tags: &[&str],
    approval: ApprovalMode,
    ephemeral: bool,
    ctx: &Ctx,
) -> Result<secret::Secret, Failure> {
    let made = secret::generate(secret::KEY_PREFIX);
    service
        .execute(
            Command::CreateKey(NewKey {
                id: made.id.clone(),
                hash: made.hash.expose().clone(),
                tags: tags.iter().map(|t| (*t).to_owned()).collect(),
                approval,
                uses: None,
                expires_at: None,
                ephemeral,
            }),
            ctx,
        )
        .await
        .map_err(|err| format!("making an enrolment key: {err}"))?;
    Ok(made)
}

/// An error with its causes.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// A direct policy from `users` to `servers` with one ACL entry (`protocol`, all ports), at
/// `version` (0 to create it). Also the managed agent's test fixture (enclave-runtime).
pub fn users_to_servers(protocol: &str, version: i64) -> PolicyDoc {
    PolicyDoc {
        name: "users to servers".into(),
        kind: PolicyKind::Direct,
        enabled: true,
        senders: vec!["users".into()],
        receivers: vec!["servers".into()],
        gateways: vec![],
        subnets: vec![],
        filter: None,
        acl: vec![AclDoc {
            protocol: protocol.into(),
            ports: None,
            label: None,
        }],
        trust: vec![],
        active_hours: None,
        version,
    }
}

/// The next message within [`STEP`].
async fn next(session: &mut Session, what: &str) -> Result<ServerMessage, Failure> {
    tokio::time::timeout(STEP, session.recv())
        .await
        .map_err(|_| format!("no message within {STEP:?} while waiting for {what}"))?
        .map_err(|err| format!("waiting for {what}: {}", chain(&err)))
}

/// The next message, which must be a view; with its serial.
async fn next_view(session: &mut Session, what: &str) -> Result<(u64, View), Failure> {
    match next(session, what).await? {
        ServerMessage::View(update) => Ok((update.serial, *update.view)),
        other => Err(format!("waiting for {what}, got {other:?}")),
    }
}

/// A server with `laptop` (tag users) and `db` (tag servers) enrolled, connected, and holding
/// their first views, with a policy between them.
struct Pair {
    server: Server,
    laptop: Session,
    db: Session,
    laptop_key: StaticSecret,
    db_key: StaticSecret,
}

async fn pair(url: &str) -> Result<Pair, Failure> {
    pair_with(url, Options::default()).await
}

async fn pair_with(url: &str, options: Options) -> Result<Pair, Failure> {
    let server = start(url, "one", options).await?;
    let (users, servers) = server.users_to_servers().await?;
    let laptop_key = server.enrol(&users, "laptop").await?;
    let db_key = server.enrol(&servers, "db").await?;
    let mut laptop = server.connect(&laptop_key).await?;
    let mut db = server.connect(&db_key).await?;
    let (_, view) = next_view(&mut laptop, "the laptop's first view").await?;
    check(
        view.system == "laptop" && view.peers.contains_key("db"),
        || format!("the laptop's first view: {view:?}"),
    )?;
    let (_, view) = next_view(&mut db, "the db's first view").await?;
    check(view.peers.contains_key("laptop"), || {
        format!("the db's first view has peers {:?}", view.peers.keys())
    })?;
    Ok(Pair {
        server,
        laptop,
        db,
        laptop_key,
        db_key,
    })
}

async fn gets_its_view_and_every_change(url: String) -> CaseResult {
    let Pair {
        server,
        mut laptop,
        mut db,
        ..
    } = pair(&url).await?;
    let before = server.service().state().await.map_err(e("state"))?.revision;
    let version =
        server.service().state().await.map_err(e("state"))?.policies["users to servers"].version;
    let edited = Instant::now();
    server
        .run(Command::PutPolicy {
            doc: users_to_servers("icmp", version),
            write: Write::Update,
        })
        .await?;
    let (serial, view) = next_view(&mut laptop, "the laptop's view after the edit").await?;
    let took = edited.elapsed();
    check(serial > u64::try_from(before).unwrap_or(0), || {
        format!("the new view's serial {serial} is not above {before}")
    })?;
    let rules = format!("{:?}", view.peers["db"].outbound);
    check(rules.contains("Icmp") && !rules.contains("Any"), || {
        format!("the laptop's new rules towards db: {rules}")
    })?;
    check(took < Duration::from_secs(1), || {
        format!("the edit took {took:?} to reach the agent")
    })?;
    let (db_serial, _) = next_view(&mut db, "the db's view after the edit").await?;
    check(db_serial == serial, || {
        format!("serials {db_serial} and {serial}")
    })?;

    // Acknowledgements and reports reach the API; discovered subnets are recorded once.
    let mut peers = std::collections::BTreeMap::new();
    peers.insert(
        "db".to_owned(),
        PeerReport {
            state: "connected".into(),
            endpoint: Some("192.0.2.7:51820".into()),
            ..PeerReport::default()
        },
    );
    let mut discovered = std::collections::BTreeMap::new();
    discovered.insert(
        "192.168.77.0/24".parse().map_err(e("a subnet"))?,
        Discovered {
            interface: "eth1".into(),
            reason: "ethernet, up".into(),
        },
    );
    laptop
        .send(&AgentMessage::Ack(Ack { serial }))
        .await
        .map_err(e("acknowledging"))?;
    let report = Report {
        serial: Some(serial),
        listen_port: Some(51820),
        peers,
        discovered: Some(discovered),
        ..Report::default()
    };
    for _ in 0..3 {
        laptop
            .send(&AgentMessage::Report(Box::new(report.clone())))
            .await
            .map_err(e("reporting"))?;
    }
    eventually(STEP, Duration::from_millis(20), || async {
        let state = server.service().state().await.map_err(e("state"))?;
        let recorded = !state.systems["laptop"].discovered.is_empty();
        Ok(check(
            recorded && server.hub.applied("laptop") == Some(serial),
            || {
                format!(
                    "after {STEP:?}: discovered {:?}, applied {:?}",
                    state.systems["laptop"].discovered,
                    server.hub.applied("laptop")
                )
            },
        ))
    })
    .await?;
    let audit = server
        .service()
        .audit(0, 1000)
        .await
        .map_err(e("the audit log"))?;
    let reports = audit
        .iter()
        .filter(|a| a.action == "subnet.discovered")
        .count();
    check(reports == 1, || {
        format!("three identical reports made {reports} audit entries")
    })?;

    // `systems list` and `systems show` through the API.
    let token = server.token().await?;
    let client = Client::new(&server.url, Some(server.trust.clone()), Some(token))
        .map_err(e("the admin client"))?;
    let answer = client
        .request(HttpMethod::GET, "/api/v1/systems", None)
        .await
        .map_err(e("listing systems"))?;
    let list = answer.json();
    let laptop_row = list
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["name"] == "laptop"))
        .cloned()
        .unwrap_or_default();
    check(
        laptop_row["connected"] == true && laptop_row["last_seen"].is_i64(),
        || format!("systems list shows the laptop as {laptop_row}"),
    )?;
    check(laptop_row["server"] == "one", || {
        format!("the laptop's server: {}", laptop_row["server"])
    })?;
    let shown = client
        .request(HttpMethod::GET, "/api/v1/systems/laptop", None)
        .await
        .map_err(e("showing the laptop"))?
        .json();
    check(
        shown["agent"]["report"]["peers"]["db"]["state"] == "connected"
            && shown["agent"]["serial_applied"] == serial
            && shown["agent"]["endpoint"] == "127.0.0.1:51820",
        || format!("systems show laptop: {shown}"),
    )?;

    // Disconnected: not connected any more, last seen kept.
    drop(laptop);
    eventually(STEP, Duration::from_millis(20), || async {
        let seen = server.hub.seen().await;
        let key = &server.service().state().await.map_err(e("state"))?.systems["laptop"].public_key;
        let laptop = seen.get(key).cloned().unwrap_or_default();
        Ok(check(
            !laptop.connected && laptop.last_seen.is_some(),
            || format!("after the laptop left: {laptop:?}"),
        ))
    })
    .await?;
    drop(db);
    server.store.close().await;
    Ok(())
}

async fn revoke_and_delete_cut_off(url: String) -> CaseResult {
    let Pair {
        server,
        mut laptop,
        mut db,
        laptop_key,
        ..
    } = pair(&url).await?;
    let revoked_at = Instant::now();
    server
        .run(Command::Revoke {
            name: "laptop".into(),
        })
        .await?;
    let (_, view) = next_view(&mut db, "the db's view without the laptop").await?;
    let took = revoked_at.elapsed();
    check(!view.peers.contains_key("laptop"), || {
        format!(
            "after the revoke the db still has peers {:?}",
            view.peers.keys()
        )
    })?;
    println!("    revoke to the peer's new view: {} ms", took.as_millis());
    check(took < Duration::from_secs(1), || {
        format!("the revoke took {took:?} to reach the peer")
    })?;
    expect_cut_off(&mut laptop, "revoked").await?;

    // Approved again: the laptop reconnects and the db has it back. Then deleted: the same.
    server
        .run(Command::Approve {
            name: "laptop".into(),
        })
        .await?;
    let (_, view) = next_view(&mut db, "the db's view with the laptop back").await?;
    check(view.peers.contains_key("laptop"), || {
        "the approved laptop did not come back".into()
    })?;
    let mut laptop = server.connect(&laptop_key).await?;
    next_view(&mut laptop, "the laptop's view after approval").await?;
    let deleted_at = Instant::now();
    server
        .run(Command::Delete {
            name: "laptop".into(),
        })
        .await?;
    let (_, view) = next_view(&mut db, "the db's view without the deleted laptop").await?;
    let took = deleted_at.elapsed();
    check(
        !view.peers.contains_key("laptop") && took < Duration::from_secs(1),
        || {
            format!(
                "after the delete ({took:?}) the db has peers {:?}",
                view.peers.keys()
            )
        },
    )?;
    println!("    delete to the peer's new view: {} ms", took.as_millis());
    expect_cut_off(&mut laptop, "deleted").await?;
    // A deleted system's key is not let in again.
    match server.connect(&laptop_key).await {
        Err(failure) if failure.contains("not enrolled") => {}
        other => return Err(format!("the deleted laptop connecting again: {other:?}")),
    }
    drop(db);
    server.store.close().await;
    Ok(())
}

/// `revoked` with a reason containing `why`, then the server closes.
async fn expect_cut_off(session: &mut Session, why: &str) -> CaseResult {
    match next(session, "the revocation").await? {
        ServerMessage::Revoked(r) => check(r.reason.contains(why), || r.reason.clone())?,
        other => return Err(format!("a {why} agent got {other:?}")),
    }
    match tokio::time::timeout(STEP, session.recv()).await {
        Ok(Err(enclave_control_proto::Error::Closed)) => Ok(()),
        other => Err(format!("after revoked the connection gave {other:?}")),
    }
}

async fn presence_goes_stale(url: String) -> CaseResult {
    use crate::model::Presence;
    let server = start(&url, "one", Options::default()).await?;
    let now = crate::agents::now();
    let stale = i64::try_from(crate::agents::PRESENCE_STALE.as_secs()).unwrap_or(90);
    let row = |key: &str, connected: bool, last_seen: i64| Presence {
        public_key: key.into(),
        server: "elsewhere".into(),
        connected,
        last_seen,
        endpoint: Some("192.0.2.1".into()),
    };
    let rows = [
        row("fresh", true, now - 5),
        row("dead-server", true, now - stale - 5),
        row("left", false, now - 5),
    ];
    server
        .service()
        .store()
        .put_presence(&rows)
        .await
        .map_err(e("writing presence"))?;
    // Written again: replaced, not duplicated.
    server
        .service()
        .store()
        .put_presence(&rows[..1])
        .await
        .map_err(e("writing presence again"))?;
    let seen = server.hub.seen().await;
    let connected = |key: &str| seen.get(key).map(|s| s.connected);
    check(
        connected("fresh") == Some(true)
            && connected("dead-server") == Some(false)
            && connected("left") == Some(false),
        || format!("presence read back as {seen:?}"),
    )?;
    check(
        seen.get("dead-server").and_then(|s| s.last_seen) == Some(now - stale - 5)
            && seen.get("fresh").and_then(|s| s.server.clone()).as_deref() == Some("elsewhere"),
        || format!("presence read back as {seen:?}"),
    )?;
    let stored = server
        .service()
        .store()
        .presence()
        .await
        .map_err(e("reading presence"))?;
    check(stored.len() == 3, || {
        format!("{} rows stored", stored.len())
    })?;
    server.store.close().await;
    Ok(())
}

/// How many agents the fan-out case connects.
const FAN_OUT: usize = 40;

async fn revoke_reaches_every_peer(url: String) -> CaseResult {
    let server = start(&url, "one", Options::default()).await?;
    let (users, servers) = server.users_to_servers().await?;
    let laptop_key = server.enrol(&users, "laptop").await?;
    let mut keys = Vec::new();
    for i in 0..FAN_OUT {
        keys.push(server.enrol(&servers, &format!("server-{i}")).await?);
    }
    let mut laptop = server.connect(&laptop_key).await?;
    next_view(&mut laptop, "the laptop's first view").await?;
    let mut sessions = Vec::new();
    for key in &keys {
        let mut session = server.connect(key).await?;
        let (_, view) = next_view(&mut session, "a server's first view").await?;
        check(view.peers.contains_key("laptop"), || {
            format!("{} does not have the laptop", view.system)
        })?;
        sessions.push(session);
    }
    let revoked_at = Instant::now();
    server
        .run(Command::Revoke {
            name: "laptop".into(),
        })
        .await?;
    let waits = sessions.into_iter().map(|mut session| async move {
        let (_, view) = next_view(&mut session, "a view without the laptop").await?;
        check(!view.peers.contains_key("laptop"), || {
            format!("{} still has the laptop", view.system)
        })?;
        Ok::<_, Failure>(revoked_at.elapsed())
    });
    let mut times = Vec::new();
    for handle in waits.map(tokio::spawn).collect::<Vec<_>>() {
        times.push(handle.await.map_err(e("a waiting task"))??);
    }
    times.sort();
    let last = times.last().copied().unwrap_or_default();
    println!(
        "    revoke to every peer's new view ({FAN_OUT} peers): median {} ms, last {} ms",
        times[times.len() / 2].as_millis(),
        last.as_millis()
    );
    check(last < Duration::from_secs(1), || {
        format!("the last of {FAN_OUT} peers had its view after {last:?}")
    })?;
    expect_cut_off(&mut laptop, "revoked").await?;
    server.store.close().await;
    Ok(())
}

async fn pending_waits(url: String) -> CaseResult {
    let server = start(&url, "one", Options::default()).await?;
    let manual = server.key(&["users"], ApprovalMode::Manual, false).await?;
    let laptop = server.enrol(&manual, "laptop").await?;
    let mut session = server.connect(&laptop).await?;
    match next(&mut session, "pending").await? {
        ServerMessage::Pending(p) => check(p.system == "laptop", || format!("{p:?}"))?,
        other => return Err(format!("a pending system got {other:?}")),
    }
    server
        .run(Command::Approve {
            name: "laptop".into(),
        })
        .await?;
    let (_, view) = next_view(&mut session, "the view after approval").await?;
    check(view.system == "laptop" && view.enabled, || {
        format!("{view:?}")
    })?;
    server.store.close().await;
    Ok(())
}

async fn ephemeral_goes(url: String) -> CaseResult {
    let options = Options {
        ephemeral_after: Duration::from_secs(1),
        ..Options::default()
    };
    let server = start(&url, "one", options).await?;
    let ephemeral = server.key(&["users"], ApprovalMode::Auto, true).await?;
    let lasting = server.key(&["users"], ApprovalMode::Auto, false).await?;
    let ci = server.enrol(&ephemeral, "ci-runner").await?;
    let laptop = server.enrol(&lasting, "laptop").await?;
    let mut session = server.connect(&ci).await?;
    next_view(&mut session, "the ephemeral system's view").await?;
    let mut laptop_session = server.connect(&laptop).await?;
    next_view(&mut laptop_session, "the laptop's view").await?;
    drop(laptop_session);
    // Connected for longer than the limit: kept.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let state = server.service().state().await.map_err(e("state"))?;
    check(state.systems.contains_key("ci-runner"), || {
        "an ephemeral system was deleted while connected".into()
    })?;
    drop(session);
    eventually(
        Duration::from_secs(6),
        Duration::from_millis(100),
        || async {
            let state = server.service().state().await.map_err(e("state"))?;
            let gone = !state.systems.contains_key("ci-runner");
            if gone {
                check(state.systems.contains_key("laptop"), || {
                    "a system enrolled with a lasting key was deleted".into()
                })?;
            }
            Ok(check(gone, || {
                "the disconnected ephemeral system is still there after 6 s".into()
            }))
        },
    )
    .await?;
    let audit = server.service().audit(0, 1000).await.map_err(e("audit"))?;
    check(
        audit
            .iter()
            .any(|a| a.action == "system.delete" && a.actor == "server:ephemeral"),
        || "no audit entry for the ephemeral deletion".into(),
    )?;
    server.store.close().await;
    Ok(())
}

async fn database_down(url: String) -> CaseResult {
    let Pair {
        server,
        mut laptop,
        db,
        ..
    } = pair(&url).await?;
    let token = server.token().await?;
    let admin = Client::new(&server.url, Some(server.trust.clone()), Some(token))
        .map_err(e("the admin client"))?;
    let stranger = Client::new(
        &server.url,
        Some(server.trust.clone()),
        Some("ent_wrong".into()),
    )
    .map_err(e("a client"))?;
    let nobody =
        Client::new(&server.url, Some(server.trust.clone()), None).map_err(e("a client"))?;
    // The database goes away.
    server.store.close().await;
    for (who, client) in [("a wrong token", &stranger), ("no token", &nobody)] {
        let answer = client
            .request(HttpMethod::GET, "/api/v1/systems", None)
            .await
            .map_err(e("a request"))?;
        check(
            answer.status == HttpStatus::UNAUTHORIZED && answer.body.is_empty(),
            || {
                format!(
                    "{who} with the database down got {} {:?}",
                    answer.status, answer.body
                )
            },
        )?;
    }
    let body = serde_json::to_vec(&serde_json::json!({"allowed": true})).map_err(e("json"))?;
    let answer = admin
        .request(
            HttpMethod::PUT,
            "/api/v1/systems/db/gateway",
            Some(("application/json", body)),
        )
        .await
        .map_err(e("a write"))?;
    let text = String::from_utf8_lossy(&answer.body).into_owned();
    check(
        answer.status == HttpStatus::SERVICE_UNAVAILABLE && text.contains("database"),
        || {
            format!(
                "a write with the database down got {} {text}",
                answer.status
            )
        },
    )?;
    // The agent keeps its connection and its view: nothing arrives, nothing breaks.
    match tokio::time::timeout(Duration::from_millis(1500), laptop.recv()).await {
        Err(_) => {}
        Ok(other) => return Err(format!("with the database down the agent got {other:?}")),
    }
    laptop
        .send(&AgentMessage::Keepalive)
        .await
        .map_err(e("the agent's connection after the database went down"))?;
    check(server.hub.connected_here().contains_key("laptop"), || {
        "the laptop is no longer connected".into()
    })?;
    drop(db);
    Ok(())
}

async fn two_servers(url: String) -> CaseResult {
    let one = start(&url, "one", Options::default()).await?;
    let mut two = start(&url, "two", Options::default()).await?;
    let (users, servers) = one.users_to_servers().await?;
    let laptop_key = one.enrol(&users, "laptop").await?;
    let db_key = two.enrol(&servers, "db").await?;
    let mut laptop = two.connect(&laptop_key).await?;
    let mut db = one.connect(&db_key).await?;
    next_view(&mut laptop, "the laptop's first view (server two)").await?;
    next_view(&mut db, "the db's first view (server one)").await?;
    let version =
        one.service().state().await.map_err(e("state"))?.policies["users to servers"].version;
    let edited = Instant::now();
    one.run(Command::PutPolicy {
        doc: users_to_servers("icmp", version),
        write: Write::Update,
    })
    .await?;
    next_view(
        &mut laptop,
        "the laptop's view after an edit through server one",
    )
    .await?;
    let took = edited.elapsed();
    println!(
        "    edit through one server to an agent on the other: {} ms",
        took.as_millis()
    );
    check(took < Duration::from_secs(1), || {
        format!("the edit took {took:?} to reach the agent on the other server")
    })?;
    next_view(&mut db, "the db's view after the edit (server one)").await?;
    // A revoke through server two cuts off the db on server one, and the laptop drops it.
    let revoked_at = Instant::now();
    two.run(Command::Revoke { name: "db".into() }).await?;
    let (_, view) = next_view(&mut laptop, "the laptop's view without the db").await?;
    let took = revoked_at.elapsed();
    check(
        !view.peers.contains_key("db") && took < Duration::from_secs(1),
        || {
            format!(
                "after {took:?} the laptop has peers {:?}",
                view.peers.keys()
            )
        },
    )?;
    expect_cut_off(&mut db, "revoked").await?;
    // Each server sees where the other's agents are.
    let seen = one.hub.seen().await;
    let laptop_public = BASE64.encode(PublicKey::from(&laptop_key).as_bytes());
    let where_laptop = seen.get(&laptop_public).cloned().unwrap_or_default();
    check(
        where_laptop.connected && where_laptop.server.as_deref() == Some("two"),
        || format!("server one sees the laptop as {where_laptop:?}"),
    )?;
    // Server two stops: the laptop is cut (it reconnects elsewhere), and server one soon
    // sees it as not connected, without waiting for the row to go stale.
    if let Some(stop) = two.stop.take() {
        let _ = stop.send(());
    }
    match tokio::time::timeout(STEP, laptop.recv()).await {
        Ok(Err(_)) => {}
        other => return Err(format!("when its server stopped the laptop got {other:?}")),
    }
    eventually(STEP, Duration::from_millis(50), || async {
        let seen = one.hub.seen().await;
        let laptop = seen.get(&laptop_public).cloned().unwrap_or_default();
        Ok(check(
            !laptop.connected && laptop.last_seen.is_some(),
            || format!("after server two stopped, server one sees the laptop as {laptop:?}"),
        ))
    })
    .await?;
    one.store.close().await;
    two.store.close().await;
    Ok(())
}

#[path = "agent_suite_refusals.rs"]
mod refusals;

/// Sets `system`'s endpoint by hand (`""` clears it).
fn set_endpoint(system: &str, endpoint: &str) -> Command {
    Command::UpdateSystem {
        name: system.into(),
        edit: crate::core::SystemEdit {
            endpoint: Some(endpoint.into()),
            ..crate::core::SystemEdit::default()
        },
    }
}

/// `db` reports its WireGuard port: the laptop gets a view with db's endpoint (the address
/// the server saw, loopback here, with that port). An endpoint set by hand wins; db
/// reconnecting with another port is recorded (after the hold) and given once the one set by
/// hand is cleared.
async fn observed_endpoint_reaches_peers(url: String) -> CaseResult {
    let options = Options {
        endpoints_from_loopback: true,
        ..Options::default()
    };
    let Pair {
        server,
        mut laptop,
        mut db,
        db_key,
        ..
    } = pair_with(&url, options).await?;
    let report = |port: u16| {
        AgentMessage::Report(Box::new(Report {
            listen_port: Some(port),
            ..Report::default()
        }))
    };
    let db_key_text = {
        let state = server.service().state().await.map_err(e("state"))?;
        state.systems["db"].public_key.clone()
    };
    let endpoint_of_db = |view: &View| view.peers.get("db").and_then(|p| p.endpoint);
    let reported = Instant::now();
    db.send(&report(51820)).await.map_err(e("reporting"))?;
    let (_, view) = next_view(&mut laptop, "the laptop's view with db's endpoint").await?;
    let took = reported.elapsed();
    check(
        endpoint_of_db(&view) == Some("127.0.0.1:51820".parse().map_err(e("an address"))?),
        || {
            format!(
                "db's endpoint in the laptop's view: {:?}",
                endpoint_of_db(&view)
            )
        },
    )?;
    check(took < Duration::from_secs(2), || {
        format!("db's endpoint took {took:?} to reach the laptop")
    })?;

    // Set by hand: it wins.
    server.run(set_endpoint("db", "203.0.113.9:51820")).await?;
    let (_, view) = next_view(
        &mut laptop,
        "the laptop's view with db's endpoint set by hand",
    )
    .await?;
    check(
        endpoint_of_db(&view) == Some("203.0.113.9:51820".parse().map_err(e("an address"))?),
        || {
            format!(
                "db's endpoint set by hand, in the laptop's view: {:?}",
                endpoint_of_db(&view)
            )
        },
    )?;

    // db comes back on another port: recorded once the hold is over, while the endpoint
    // set by hand stands (so the laptop's view stays as it is).
    drop(db);
    let mut db = server.connect(&db_key).await?;
    let _ = next_view(&mut db, "db's view after reconnecting").await?;
    db.send(&report(51821)).await.map_err(e("reporting"))?;
    let wanted = Some("127.0.0.1:51821".parse().map_err(e("an address"))?);
    let within = crate::agents::endpoints::HOLD + STEP;
    eventually(within, Duration::from_millis(50), || async {
        let state = server.service().state().await.map_err(e("state"))?;
        let db = state.systems.values().find(|s| s.public_key == db_key_text);
        Ok(check(
            db.is_some_and(|s| s.observed_endpoint == wanted),
            || {
                format!(
                    "db's new port was not recorded: {:?}",
                    db.map(|s| s.observed_endpoint)
                )
            },
        ))
    })
    .await?;
    // Cleared by hand: the laptop's next view gives the observed endpoint of db's second
    // connection (had a view been sent while the one set by hand stood, it would come first).
    server.run(set_endpoint("db", "")).await?;
    let (_, view) = next_view(
        &mut laptop,
        "the laptop's view after the endpoint was cleared",
    )
    .await?;
    check(endpoint_of_db(&view) == wanted, || {
        format!(
            "db's endpoint in the laptop's view: {:?}",
            endpoint_of_db(&view)
        )
    })?;
    let audit = server
        .service()
        .audit(0, 1000)
        .await
        .map_err(e("the audit log"))?;
    let recorded: Vec<_> = audit
        .iter()
        .filter(|a| a.action == "system.endpoint_observed")
        .collect();
    check(
        recorded.len() == 2
            && recorded
                .iter()
                .all(|a| a.actor == "server:endpoints" && a.target == "db"),
        || format!("the audit entries of observed endpoints: {recorded:?}"),
    )?;
    drop(db);
    drop(laptop);
    server.store.close().await;
    Ok(())
}
