//! `cargo xtask bench control`: the control server with 10,000 enrolled systems and 10,000
//! connected agent streams, on SQLite and on PostgreSQL, printed side by side.
//!
//! Everything runs in one namespace of its own, over its loopback: `enclave-control run` (the
//! release build), and a load generator in this process that speaks the real protocol
//! (`enclave-control-proto`: TLS with the pinned fingerprint, the upgrade, the proof of key
//! possession) with a key pair of its own for every system. The network is the guide's shape:
//! two gateways of an office, every other system a sender tagged `users`, one gateway access
//! policy from `users` to the office subnet through both gateways.
//!
//! What it measures, for each store:
//! - enrolments per second (`POST /api/v1/enrol`, 32 at a time);
//! - how long 10,000 agents take to connect and hold their first view;
//! - server memory per connected agent (the growth of its resident set from before the agents
//!   connected to after, divided by their number);
//! - a one-system revoke: from the API call until both gateways hold a view without that
//!   system (its peers), p50 and p99 of [`REVOKES`] revokes;
//! - an edit that changes every view (the policy's ports): from the API call until each agent
//!   holds a view newer than before the edit; p50, p99 and the last agent, over [`EDITS`] edits.
//!
//! `ENCLAVE_BENCH_SYSTEMS=N` runs it with N senders instead of 10,000 (a quick look); N is at
//! least [`MIN_SYSTEMS`].

use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use base64::Engine as _;
use enclave_control::client::{Client, HttpMethod};
use enclave_control_proto::client::connect;
use enclave_control_proto::message::ServerMessage;
use enclave_control_proto::tls::Trust;
use enclave_netns::Netns;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use x25519_dalek::{PublicKey, StaticSecret};

use super::stats::percentile;
use crate::control_fixture::{ControlHost, Endpoint};
use crate::scenarios::control::Postgres;
use crate::{Bench, Ctx};

pub(crate) const BENCH: Bench = Bench {
    name: "control",
    about: "control server at 10,000 systems and streams, SQLite beside PostgreSQL: enrolments/s, revoke and edit fan-out, memory per agent",
    run: control,
};

/// The fewest senders `ENCLAVE_BENCH_SYSTEMS` may ask for: the revokes take up to half of
/// them, and at least one must be revoked.
const MIN_SYSTEMS: usize = 2;
/// One-system revokes measured (with fewer than twice as many senders, half of them).
const REVOKES: usize = 20;

/// The revokes measured with `n` senders: [`REVOKES`], or half of the senders when they are
/// fewer than twice that.
fn revokes(n: usize) -> usize {
    REVOKES.min(n / 2)
}
/// Every-view edits measured.
const EDITS: usize = 3;
/// Enrolments in flight at once.
const ENROL_CONCURRENCY: usize = 32;
/// Connection handshakes in flight at once.
const CONNECT_CONCURRENCY: usize = 64;
/// The policy whose ports the every-view edit changes.
const POLICY: &str = "users to the office";
const GATEWAYS: [&str; 2] = ["office-gw-1", "office-gw-2"];

/// The figures of one store.
#[derive(Debug, Default)]
struct Figures {
    enrolments_per_s: f64,
    connect_s: f64,
    memory_per_agent_kb: f64,
    revoke_ms: Vec<f64>,
    edit_p50_ms: Vec<f64>,
    edit_p99_ms: Vec<f64>,
    edit_all_ms: Vec<f64>,
}

fn control(ctx: &Ctx) -> anyhow::Result<()> {
    raise_fd_limit()?;
    let n = super::systems(MIN_SYSTEMS)?;
    println!(
        "control server bench: {n} senders + 2 gateways, {} revokes, {EDITS} every-view edits, per store",
        revokes(n)
    );
    let sqlite = run_store(ctx, "sqlite", n).context("on SQLite")?;
    let postgres = run_store(ctx, "postgres", n).context("on PostgreSQL")?;
    print_table(n, &[("SQLite", &sqlite), ("PostgreSQL", &postgres)]);
    Ok(())
}

/// Ten thousand streams in the server and as many in the generator (each a process of its
/// own, each with its own count of open files): lift the soft limit on
/// open files to the hard one (children, the server among them, inherit it).
fn raise_fd_limit() -> anyhow::Result<()> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("getrlimit")?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("setrlimit")?;
    ensure!(
        hard >= super::SYSTEMS as u64 + 1_000,
        "the hard limit on open files is {hard}: too few for {} streams",
        super::SYSTEMS
    );
    Ok(())
}

fn run_store(ctx: &Ctx, store: &str, n: usize) -> anyhow::Result<Figures> {
    println!("\n== {store}");
    let host = ControlHost::new(ctx, "cb")?;
    // Kept alive until the end of this store's run; dropped (stopped, removed) after the server.
    let postgres;
    let database = if store == "postgres" {
        postgres = Postgres::start(ctx)?;
        postgres.createdb("bench")?;
        postgres.url("bench")
    } else {
        host.sqlite()
    };
    let token = host.admin_token(&database, &["--name", "bench"])?;
    let server = host.start_server(&format!("control-{store}"), &database, 8443, &host.state())?;
    let admin = host.admin(&server, &token);
    let keys = Keys::generate(n);
    let file = host.dir().join("network.toml");
    std::fs::write(&file, keys.definition())?;
    admin.cli(&["import", file.to_str().context("path")?])?;
    let uses = n.to_string();
    let key = admin.create_key(&["--tags", "users", "--approval", "auto", "--uses", &uses])?;
    let pid = server.process.pid();
    let figures = run_load(host.ns(), &server.at, &token, &key, keys, pid)?;
    drop(server);
    Ok(figures)
}

/// A key pair for every system: the two gateways first, then the senders.
struct Keys {
    gateways: Vec<StaticSecret>,
    senders: Vec<StaticSecret>,
}

impl Keys {
    fn generate(n: usize) -> Self {
        let fresh = || StaticSecret::random_from_rng(&mut rand_core::UnwrapErr(getrandom::SysRng));
        Self {
            gateways: (0..GATEWAYS.len()).map(|_| fresh()).collect(),
            senders: (0..n).map(|_| fresh()).collect(),
        }
    }

    /// The network imported before the senders enrol: the two gateways and the policy.
    fn definition(&self) -> String {
        let mut text = String::from("[network]\noverlay = \"100.64.0.0/10\"\n\n");
        for (i, (name, key)) in GATEWAYS.iter().zip(&self.gateways).enumerate() {
            text.push_str(&format!(
                "[[system]]\nname = \"{name}\"\npublic_key = \"{}\"\naddress = \"100.127.255.{}\"\n\
                 tags = [\"gateways\"]\nendpoint = \"192.0.2.{}:51820\"\n\n[system.gateway]\n\
                 allowed = true\nsubnets = [\"192.168.77.0/24\"]\n\n",
                public(key),
                250 + i,
                1 + i
            ));
        }
        text.push_str(&format!(
            "[[gateway_policy]]\nname = \"{POLICY}\"\nsenders = [\"users\"]\n\
             gateways = [\"{}\", \"{}\"]\nsubnets = [\"192.168.77.0/24\"]\n\
             acl = [{{ protocol = \"tcp\", ports = 445 }}]\n",
            GATEWAYS[0], GATEWAYS[1]
        ));
        text
    }
}

fn public(secret: &StaticSecret) -> String {
    base64::engine::general_purpose::STANDARD.encode(PublicKey::from(secret).as_bytes())
}

/// What the generator knows of each connected agent.
struct Agent {
    /// The serial of the newest view received.
    serial: AtomicU64,
    /// When each serial arrived (only what the measurements need: the latest few).
    arrivals: Mutex<Vec<(u64, Instant)>>,
    /// For the gateways: the peers of each view, by serial.
    peers: Mutex<Vec<(u64, Instant, Vec<String>)>>,
    /// Whether the server said `revoked`.
    revoked: Mutex<Option<Instant>>,
}

impl Agent {
    fn new() -> Self {
        Self {
            serial: AtomicU64::new(0),
            arrivals: Mutex::new(Vec::new()),
            peers: Mutex::new(Vec::new()),
            revoked: Mutex::new(None),
        }
    }
}

fn run_load(
    ns: &Netns,
    at: &Endpoint,
    token: &str,
    key: &str,
    keys: Keys,
    server_pid: u32,
) -> anyhow::Result<Figures> {
    let trust = Trust::Fingerprint(enclave_control_proto::tls::parse_fingerprint(
        &at.fingerprint,
    )?);
    let url = at.url.clone();
    let token = token.to_owned();
    let key = key.to_owned();
    ns.run_in(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(load(url, trust, token, key, keys, server_pid))
    })?
}

async fn load(
    url: String,
    trust: Trust,
    token: String,
    key: String,
    keys: Keys,
    server_pid: u32,
) -> anyhow::Result<Figures> {
    let mut figures = Figures::default();
    let admin = Client::new(&url, Some(trust.clone()), Some(token))?;
    let n = keys.senders.len();

    // Enrolment.
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(ENROL_CONCURRENCY));
    let mut tasks = Vec::with_capacity(n);
    for (i, secret) in keys.senders.iter().enumerate() {
        let (url, trust, key, public) = (url.clone(), trust.clone(), key.clone(), public(secret));
        let gate = Arc::clone(&gate);
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await;
            let host = format!("host-{i}");
            enclave_control_proto::client::enrol(&url, Some(&trust), &key, &public, Some(&host))
                .await
                .map(|enrolled| enrolled.system)
        }));
    }
    let mut names = Vec::with_capacity(n);
    for task in tasks {
        names.push(task.await?.context("an enrolment failed")?);
    }
    figures.enrolments_per_s = n as f64 / started.elapsed().as_secs_f64();
    println!(
        "    {n} enrolments in {:.1} s ({:.0}/s)",
        started.elapsed().as_secs_f64(),
        figures.enrolments_per_s
    );

    // Connection.
    let before = rss_kb(server_pid)?;
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let connected = Arc::new(AtomicUsize::new(0));
    let secrets: Vec<(bool, StaticSecret)> = keys
        .gateways
        .into_iter()
        .map(|s| (true, s))
        .chain(keys.senders.into_iter().map(|s| (false, s)))
        .collect();
    let mut agents = Vec::with_capacity(secrets.len());
    let mut sessions = Vec::with_capacity(secrets.len());
    for (gateway, secret) in secrets {
        let agent = Arc::new(Agent::new());
        agents.push(Arc::clone(&agent));
        let (url, trust, gate, connected) = (
            url.clone(),
            trust.clone(),
            Arc::clone(&gate),
            Arc::clone(&connected),
        );
        sessions.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let mut session = connect(&url, Some(&trust), &secret, None).await?;
            drop(permit);
            connected.fetch_add(1, Ordering::Relaxed);
            loop {
                let message = session.recv().await?;
                let now = Instant::now();
                match message {
                    ServerMessage::View(update) => {
                        agent.serial.fetch_max(update.serial, Ordering::Relaxed);
                        let mut arrivals = agent.arrivals.lock().unwrap_or_else(|e| e.into_inner());
                        arrivals.push((update.serial, now));
                        if arrivals.len() > 8 {
                            arrivals.remove(0);
                        }
                        if gateway {
                            let peers = update.view.peers.keys().cloned().collect();
                            agent.peers.lock().unwrap_or_else(|e| e.into_inner()).push((
                                update.serial,
                                now,
                                peers,
                            ));
                        }
                    }
                    ServerMessage::Revoked(_) => {
                        *agent.revoked.lock().unwrap_or_else(|e| e.into_inner()) = Some(now);
                        return Ok::<_, anyhow::Error>(());
                    }
                    _ => {}
                }
            }
        }));
    }
    let total = agents.len();
    let all_viewed = wait_until(Duration::from_secs(600), || {
        agents.iter().all(|a| a.serial.load(Ordering::Relaxed) > 0)
    })
    .await;
    if !all_viewed {
        let failed: Vec<String> = sessions
            .iter()
            .filter(|s| s.is_finished())
            .take(3)
            .map(|_| "a session ended".to_owned())
            .collect();
        bail!(
            "after 600 s only {} of {total} agents connected and {} hold a view ({failed:?})",
            connected.load(Ordering::Relaxed),
            agents
                .iter()
                .filter(|a| a.serial.load(Ordering::Relaxed) > 0)
                .count()
        );
    }
    figures.connect_s = started.elapsed().as_secs_f64();
    // Let the server settle (buffers, reports) before reading its memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss_kb(server_pid)?;
    figures.memory_per_agent_kb = after.saturating_sub(before) as f64 / total as f64;
    println!(
        "    {total} agents connected and holding a view in {:.1} s; server memory {before} KB -> {after} KB",
        figures.connect_s
    );

    // One-system revokes: both gateways must drop the system.
    // At most half the senders, so that the edits below still change views.
    for (round, victim) in names.iter().take(revokes(n)).enumerate() {
        let started = Instant::now();
        let revoke = format!("/api/v1/systems/{victim}/revoke");
        send(&admin, HttpMethod::POST, &revoke, &json!({})).await?;
        let gone = |agent: &Agent| {
            agent
                .peers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .rev()
                .find(|(_, at, _)| *at >= started)
                .filter(|(_, _, peers)| !peers.contains(victim))
                .map(|(_, at, _)| *at)
        };
        let dropped = wait_until(Duration::from_secs(30), || {
            agents[..GATEWAYS.len()].iter().all(|g| gone(g).is_some())
        })
        .await;
        ensure!(
            dropped,
            "revoke {round}: a gateway still has {victim} as a peer after 30 s"
        );
        let last = agents[..GATEWAYS.len()]
            .iter()
            .filter_map(|g| gone(g))
            .max()
            .context("no arrival")?;
        figures
            .revoke_ms
            .push(last.duration_since(started).as_secs_f64() * 1e3);
    }
    println!(
        "    revoke -> both gateways: p50 {:.0} ms, p99 {:.0} ms",
        percentile(&figures.revoke_ms, 50.0),
        percentile(&figures.revoke_ms, 99.0)
    );

    // Every victim's agent is told it was revoked (its message may come after the gateways'
    // views): only then is the set of live agents known.
    let victims = &agents[GATEWAYS.len()..GATEWAYS.len() + revokes(n)];
    let told = wait_until(Duration::from_secs(30), || {
        victims.iter().all(|a| {
            a.revoked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some()
        })
    })
    .await;
    ensure!(told, "a revoked system's agent was not told within 30 s");

    // Edits that change every view: the policy's port.
    let live: Vec<&Arc<Agent>> = agents
        .iter()
        .filter(|a| {
            a.revoked
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_none()
        })
        .collect();
    let policy_path = format!("/api/v1/policies/{}", encode_path(POLICY));
    for edit in 0..EDITS {
        let mut policy = admin
            .request(HttpMethod::GET, &policy_path, None)
            .await?
            .json();
        policy["acl"] = json!([{ "protocol": "tcp", "ports": 1000 + edit }]);
        let before: Vec<u64> = live
            .iter()
            .map(|a| a.serial.load(Ordering::Relaxed))
            .collect();
        let started = Instant::now();
        send(&admin, HttpMethod::PUT, &policy_path, &policy).await?;
        let all = wait_until(Duration::from_secs(120), || {
            live.iter()
                .zip(&before)
                .all(|(a, b)| a.serial.load(Ordering::Relaxed) > *b)
        })
        .await;
        if !all {
            let late: Vec<usize> = live
                .iter()
                .zip(&before)
                .enumerate()
                .filter(|(_, (a, b))| a.serial.load(Ordering::Relaxed) <= **b)
                .map(|(i, _)| i)
                .collect();
            bail!(
                "edit {edit}: {} of {} agents got no new view within 120 s (first: {:?})",
                late.len(),
                live.len(),
                &late[..late.len().min(5)]
            );
        }
        let mut times: Vec<f64> = live
            .iter()
            .zip(&before)
            .filter_map(|(a, b)| {
                a.arrivals
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .find(|(serial, _)| serial > b)
                    .map(|(_, at)| at.duration_since(started).as_secs_f64() * 1e3)
            })
            .collect();
        times.sort_by(f64::total_cmp);
        figures.edit_p50_ms.push(percentile(&times, 50.0));
        figures.edit_p99_ms.push(percentile(&times, 99.0));
        figures
            .edit_all_ms
            .push(times.last().copied().unwrap_or(f64::NAN));
    }
    println!(
        "    every-view edit -> all {} agents: last agent after {:?} ms",
        live.len(),
        figures
            .edit_all_ms
            .iter()
            .map(|t| t.round())
            .collect::<Vec<_>>()
    );
    for session in sessions {
        session.abort();
    }
    Ok(figures)
}

/// `method path` with `body` as JSON, as the administrator: an error unless it succeeded.
async fn send(admin: &Client, method: HttpMethod, path: &str, body: &Value) -> anyhow::Result<()> {
    let body = body.to_string().into_bytes();
    let answer = admin
        .request(method.clone(), path, Some(("application/json", body)))
        .await?;
    ensure!(
        answer.status.is_success(),
        "{method} {path}: {} {}",
        answer.status,
        answer.json()
    );
    Ok(())
}

/// A path segment with spaces (the policy's name) for a URL.
fn encode_path(name: &str) -> String {
    name.replace(' ', "%20")
}

/// Polls `condition` every 5 ms until it holds or `timeout` passes; returns whether it held.
async fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    tokio::time::timeout(timeout, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .is_ok()
}

/// The resident set of `pid` in KB.
fn rss_kb(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS line")
}

impl Figures {
    /// This store's column of the table, in the order of [`rows`].
    fn column(&self) -> [String; 6] {
        let last_agent = self.edit_all_ms.iter().copied().fold(f64::NAN, f64::max);
        [
            format!("{:.0}", self.enrolments_per_s),
            format!("{:.1}", self.connect_s),
            format!("{:.1}", self.memory_per_agent_kb),
            p50_p99(&self.revoke_ms, &self.revoke_ms, 99.0),
            p50_p99(&self.edit_p50_ms, &self.edit_p99_ms, 50.0),
            format!("{last_agent:.0}"),
        ]
    }
}

/// The median of `p50s` and the `p`th percentile of `p99s`, in milliseconds: `P50 / P99`.
fn p50_p99(p50s: &[f64], p99s: &[f64], p: f64) -> String {
    format!("{:.0} / {:.0}", percentile(p50s, 50.0), percentile(p99s, p))
}

/// The table's rows, in the order of [`Figures::column`]: each one's title (with `n` senders)
/// and its goal.
fn rows(n: usize) -> [(String, &'static str); 6] {
    [
        ("enrolments per second".to_owned(), ""),
        (format!("{} agents connected, first view (s)", n + 2), ""),
        ("server memory per connected agent (KB)".to_owned(), "< 50"),
        (
            format!("revoke -> both peers, p50 / p99 (ms, {} runs)", revokes(n)),
            "p99 < 1000",
        ),
        (
            format!("every-view edit, agents' p50 / p99 (ms, median of {EDITS})"),
            "",
        ),
        (
            format!("every-view edit, last agent (ms, worst of {EDITS})"),
            "< 5000",
        ),
    ]
}

fn print_table(n: usize, stores: &[(&str, &Figures)]) {
    let columns: Vec<[String; 6]> = stores.iter().map(|(_, f)| f.column()).collect();
    println!();
    let mut header = format!("{:56}", "");
    for (name, _) in stores {
        header.push_str(&format!("{name:>14}"));
    }
    println!("{header}  goal");
    for (i, (title, goal)) in rows(n).iter().enumerate() {
        let mut line = format!("{title:56}");
        for column in &columns {
            line.push_str(&format!("{:>14}", column[i]));
        }
        println!("{line}  {goal}");
    }
}
