//! The managed source against the real control server, in-process: `enclave-control`'s
//! server over TLS on loopback (its self-signed certificate pinned by fingerprint), a real
//! SQLite store, and the agent's side as `enclave-agent` runs it: enrolment that makes the key
//! pair here, `managed::open` for the first view, then changes pushed by the server, the
//! acknowledgement and report it gets back, and a revocation.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use enclave_control::agent_suite::{create_key, users_to_servers};
use enclave_control::agents::{Hub, Options};
use enclave_control::core::{Command, Ctx, Write};
use enclave_control::model::ApprovalMode;
use enclave_control::service::Service;
use enclave_control::store::SqlStore;
use enclave_control::{server, tls};
use enclave_runtime::config::AgentConfig;
use enclave_runtime::managed::{self, enrol, last_view, Trust};
use enclave_runtime::source::SourceEvent;
use enclave_wg::PrivateKey;

/// How long one step may take.
const STEP: Duration = Duration::from_secs(10);

fn ctx() -> Ctx {
    Ctx {
        actor: "test".into(),
        now: i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap(),
    }
}

/// Writes the managed host `name` under `dir`: its private key and an `agent.toml` for the
/// server at `url` (pinned by `fingerprint`) with `extra` lines in its `[control]` section;
/// returns the loaded configuration.
fn managed_host(
    dir: &Path,
    name: &str,
    (url, fingerprint): (&str, &str),
    private: &PrivateKey,
    extra: &str,
) -> AgentConfig {
    let host = dir.join(name);
    enrol::write_private_key(&host.join("private.key"), private).unwrap();
    std::fs::write(
        host.join("agent.toml"),
        format!(
            "private_key_file = \"private.key\"\n{extra}[control]\nserver = \"{url}\"\nfingerprint = \"{fingerprint}\"\nstate_dir = \"state\"\n"
        ),
    )
    .unwrap();
    AgentConfig::load(&host.join("agent.toml")).unwrap()
}

async fn run(service: &Service, command: Command) {
    service.execute(command, &ctx()).await.unwrap();
}

async fn key(service: &Service, tags: &[&str]) -> String {
    key_with(service, tags, ApprovalMode::Auto).await
}

async fn key_with(service: &Service, tags: &[&str], approval: ApprovalMode) -> String {
    create_key(service, tags, approval, false, &ctx())
        .await
        .unwrap()
        .text
        .into_inner()
}

/// The first event that `pick` takes, passing over the others; panics with `what` when none
/// comes within [`STEP`] or the source ends.
async fn next_event<T>(
    events: &mut tokio::sync::mpsc::Receiver<SourceEvent>,
    what: &str,
    mut pick: impl FnMut(SourceEvent) -> Option<T>,
) -> T {
    loop {
        match tokio::time::timeout(STEP, events.recv()).await {
            Ok(Some(event)) => {
                if let Some(picked) = pick(event) {
                    return picked;
                }
            }
            other => panic!("{what}: {other:?}"),
        }
    }
}

/// Runs `enrol::enrol_if_needed` for `config` off the async workers, as the agent's start does.
async fn enrol_if_needed(
    config: &AgentConfig,
) -> Result<Option<enclave_control_proto::Enrolled>, enrol::Error> {
    let config = config.clone();
    tokio::task::spawn_blocking(move || enrol::enrol_if_needed(&config))
        .await
        .unwrap()
}

#[test]
fn a_managed_agent_enrols_gets_its_view_and_every_change_waits_while_pending_and_is_revoked() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    runtime.block_on(scenario(dir.path()));
}

async fn scenario(dir: &std::path::Path) {
    // The server.
    let store = SqlStore::open(&format!("sqlite://{}/control.db", dir.display()))
        .await
        .unwrap();
    let service = Arc::new(Service::new(Arc::new(store)));
    let hub = Arc::new(Hub::new(Arc::clone(&service), Options::default()));
    hub.start().await;
    let identity = tls::self_signed(&dir.join("tls"), &["127.0.0.1".into()]).unwrap();
    let fingerprint = identity.fingerprint.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server::serve(
        listener,
        Arc::clone(&hub),
        Some(tls::server_config(identity).unwrap()),
        async {
            let _ = stopped.await;
        },
    ));
    run(
        &service,
        Command::PutPolicy {
            doc: users_to_servers("any", 0),
            write: Write::Create,
        },
    )
    .await;
    let users = key(&service, &["users"]).await;
    let servers = key(&service, &["servers"]).await;

    // Enrol as `enclave-agent enrol` does: the key pair is made here.
    let trust =
        Trust::Fingerprint(enclave_runtime::config::parse_fingerprint(&fingerprint).unwrap());
    let (private, enrolled) = enrol::enrol(&url, &trust, &users, Some("laptop"))
        .await
        .unwrap();
    assert_eq!(
        (enrolled.system.as_str(), enrolled.approval.as_str()),
        ("laptop", "approved")
    );
    let config = managed_host(
        dir,
        "laptop",
        (&url, &fingerprint),
        &private,
        "listen_port = 51999\n",
    );
    let public_key = private.public_key().to_base64();

    // The first view: this system's, from the server, kept on disk.
    let (_reports, reports_rx) = tokio::sync::watch::channel(None);
    let (first, mut events) = tokio::time::timeout(STEP, managed::open(&config, reports_rx))
        .await
        .expect("no first view within 10 s")
        .unwrap()
        .expect("open gave up");
    assert_eq!(first.view.system, "laptop");
    assert_eq!(first.view.address, enrolled.address);
    assert!(first.view.peers.is_empty(), "{:?}", first.view.peers);
    assert!(first.origin.contains(&url), "{}", first.origin);
    let file = config.last_view_file().unwrap();
    let on_disk = last_view::load(&file, &public_key).unwrap().unwrap();
    assert_eq!(on_disk.view, first.view);

    // A change on the server (a receiver enrols) is pushed.
    let (_db_key, _) = enrol::enrol(&url, &trust, &servers, Some("db"))
        .await
        .unwrap();
    let pushed = next_event(
        &mut events,
        "no view with the new peer within 10 s",
        |event| match event {
            SourceEvent::Update(update) if update.view.peers.contains_key("db") => Some(update),
            _ => None,
        },
    )
    .await;
    let serial: u64 = pushed
        .origin
        .rsplit(' ')
        .next()
        .and_then(|s| s.parse().ok())
        .expect("the origin names the serial");
    assert!(serial > on_disk.serial, "{serial} after {}", on_disk.serial);
    let on_disk = last_view::load(&file, &public_key).unwrap().unwrap();
    assert_eq!((on_disk.serial, &on_disk.view), (serial, &pushed.view));

    // The server heard the acknowledgement and the report (with the port to reach us at).
    let mut heard = false;
    for _ in 0..100 {
        if let Some(info) = hub.connected_here().get("laptop") {
            heard = info.serial_applied == Some(serial)
                && info.report.as_ref().and_then(|r| r.listen_port) == Some(51999);
            if heard {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        heard,
        "the server did not hear the ack of {serial} and the report: {:?}",
        hub.connected_here().get("laptop")
    );

    // An unattended install: the first start enrols with the key file, once; a wrong key
    // writes nothing.
    let unattended = dir.join("unattended");
    std::fs::create_dir_all(&unattended).unwrap();
    let key_file = unattended.join("enrolment.key");
    let write_key_file = |text: &str| {
        std::fs::write(&key_file, text).unwrap();
        std::fs::set_permissions(
            &key_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
    };
    std::fs::write(
        unattended.join("agent.toml"),
        format!(
            "private_key_file = \"private.key\"\n[control]\nserver = \"{url}\"\nfingerprint = \"{fingerprint}\"\nenrolment_key_file = \"enrolment.key\"\nhostname = \"kiosk\"\n"
        ),
    )
    .unwrap();
    let unattended_config = AgentConfig::load(&unattended.join("agent.toml")).unwrap();
    write_key_file("enk_wrong\n");
    let refused = enrol_if_needed(&unattended_config).await.unwrap_err();
    let refused = format!(
        "{refused}: {}",
        std::error::Error::source(&refused).unwrap()
    );
    assert!(
        refused.contains("the enrolment key is not valid"),
        "{refused}"
    );
    assert!(
        !unattended.join("private.key").exists(),
        "a refused enrolment wrote a key"
    );
    write_key_file(&format!("{users}\n"));
    let enrolled = enrol_if_needed(&unattended_config)
        .await
        .unwrap()
        .expect("the first start did not enrol");
    assert_eq!(enrolled.system, "kiosk");
    assert!(unattended.join("private.key").exists());
    let again = enrol_if_needed(&unattended_config).await.unwrap();
    assert!(
        again.is_none(),
        "an enrolled host enrolled again: {again:?}"
    );

    // A system enrolled with a manual key waits for approval, then gets its view.
    let manual = key_with(&service, &["users"], ApprovalMode::Manual).await;
    let (private, enrolled) = enrol::enrol(&url, &trust, &manual, Some("visitor"))
        .await
        .unwrap();
    assert_eq!(enrolled.approval, "pending");
    let visitor_config = managed_host(dir, "visitor", (&url, &fingerprint), &private, "");
    let (_visitor_reports, visitor_rx) = tokio::sync::watch::channel(None);
    let waiting = tokio::spawn(async move { managed::open(&visitor_config, visitor_rx).await });
    // Connected and told it is pending (the server lists it connected), yet no view.
    let mut connected = false;
    for _ in 0..100 {
        connected = hub.connected_here().contains_key("visitor");
        if connected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(connected, "the pending system never connected");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        hub.connected_here()["visitor"].serial_sent.is_none() && !waiting.is_finished(),
        "a pending system got a view"
    );
    run(
        &service,
        Command::Approve {
            name: "visitor".into(),
        },
    )
    .await;
    let (first, _visitor_events) = tokio::time::timeout(STEP, waiting)
        .await
        .expect("no view within 10 s of the approval")
        .unwrap()
        .unwrap()
        .expect("open gave up");
    assert_eq!(first.view.system, "visitor");
    assert!(
        first.view.peers.contains_key("db"),
        "the approved visitor's view: {:?}",
        first.view.peers.keys()
    );

    // Revoked: the agent is told, and its last good view is gone.
    run(
        &service,
        Command::Revoke {
            name: "laptop".into(),
        },
    )
    .await;
    let reason = next_event(
        &mut events,
        "no revocation within 10 s",
        |event| match event {
            SourceEvent::Revoked(reason) => Some(reason),
            _ => None,
        },
    )
    .await;
    assert!(!reason.is_empty());
    assert!(!file.exists(), "the revoked system kept its last good view");

    // Approved again: back at its next attempt, with a view kept on disk again.
    run(
        &service,
        Command::Approve {
            name: "laptop".into(),
        },
    )
    .await;
    let update = next_event(
        &mut events,
        "no view within 10 s of the approval",
        |event| match event {
            SourceEvent::Update(update) => Some(update),
            SourceEvent::Revoked(again) => {
                panic!("the agent was told again that it is revoked: {again}")
            }
            _ => None,
        },
    )
    .await;
    assert_eq!(update.view.system, "laptop");
    assert!(file.exists(), "the readmitted system has no last good view");
    drop(events);
    let _ = stop.send(());
    hub.stop();
}
