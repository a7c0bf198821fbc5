//! One agent's connection after the upgrade: the handshake (hello, challenge, proof), then
//! views pushed as the network changes, and the agent's reports and acknowledgements.
//!
//! Unauthenticated connections are bounded: each holds a permit of the hub's handshake
//! semaphore until its proof is accepted, and the whole handshake must end within
//! [`HANDSHAKE_TIMEOUT`]; before the proof a frame may be at most [`HELLO_LIMIT`] bytes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use enclave_control_proto::frame::{FrameReader, FrameWriter};
use enclave_control_proto::message::{AgentMessage, Challenge, Hello, Reason, ServerMessage};
use enclave_control_proto::proof::{self, Transcript};
use enclave_control_proto::{client, frame, negotiate, PROTOCOL_VERSIONS};
use getrandom::SysRng;
use rand_core::{Rng as _, UnwrapErr};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::time::Instant;
use x25519_dalek::{PublicKey, StaticSecret};

use super::{decide, key_bytes, Agent, Decision, Hub, Sent};
use crate::core::{Command, Ctx};
use crate::model::DiscoveredSubnet;

/// How long the hello, challenge and proof may take together.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest frame before the proof is accepted.
pub const HELLO_LIMIT: usize = 64 * 1024;

/// The largest frame from an authenticated agent (a report of a very large network).
pub const REPORT_LIMIT: usize = 4 * 1024 * 1024;

/// Longest host name and agent version kept.
const MAX_HOSTNAME: usize = 253;
const MAX_AGENT_VERSION: usize = 64;
/// Longest interface name or reason of a discovered subnet kept.
const MAX_TEXT: usize = 200;

/// Who the handshake found.
struct Authenticated {
    key: [u8; 32],
    system: String,
    hello: Hello,
}

/// Why a handshake ended without an agent.
enum Failed {
    /// Tell the agent why, then close.
    Refuse(String),
    /// The proof failed: tell the agent, count it against the source, close.
    Proof(String),
    /// The connection broke or timed out: nobody to tell.
    Gone(String),
}

/// Serves one upgraded connection from `from`. `channel` is the TLS channel binding (zeros
/// without TLS); `failed_proof` counts a failed proof against the source's rate limit.
pub(crate) async fn serve<I>(
    hub: Arc<Hub>,
    io: I,
    from: SocketAddr,
    channel: [u8; 32],
    permit: OwnedSemaphorePermit,
    failed_proof: Box<dyn Fn() + Send + Sync>,
) where
    I: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, write) = tokio::io::split(io);
    let mut reader = FrameReader::new(read, HELLO_LIMIT);
    let mut writer = FrameWriter::new(write);
    let handshake = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        handshake(&hub, &mut reader, &mut writer, channel),
    )
    .await
    .unwrap_or_else(|_| Err(Failed::Gone("the handshake timed out".into())));
    let reason = match handshake {
        Ok(auth) => return authenticated(hub, auth, reader, writer, from, permit).await,
        Err(Failed::Gone(why)) => {
            tracing::debug!(source = %from, %why, "an agent's handshake ended");
            return;
        }
        Err(Failed::Proof(reason)) => {
            failed_proof();
            reason
        }
        Err(Failed::Refuse(reason)) => reason,
    };
    tracing::info!(source = %from.ip(), %reason, "refused an agent");
    let _ = writer
        .write(&ServerMessage::Refused(Reason { reason }))
        .await;
    let _ = writer.shutdown().await;
}

/// The connection of an agent that proved its key.
async fn authenticated<R, W>(
    hub: Arc<Hub>,
    auth: Authenticated,
    mut reader: FrameReader<R>,
    writer: FrameWriter<W>,
    from: SocketAddr,
    permit: OwnedSemaphorePermit,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    drop(permit);
    reader.set_limit(REPORT_LIMIT);
    let hostname = auth
        .hello
        .hostname
        .map(|h| h.chars().take(MAX_HOSTNAME).collect());
    let agent_version = auth
        .hello
        .agent_version
        .chars()
        .take(MAX_AGENT_VERSION)
        .collect();
    let agent = hub.connected(auth.key, &auth.system, from, agent_version, hostname);
    tracing::info!(system = %auth.system, "agent connected");
    tracing::debug!(system = %auth.system, source = %from, "agent's address");
    let why = run(&hub, &agent, reader, writer).await;
    hub.disconnected(&agent);
    tracing::info!(system = %agent.live().system, %why, "agent disconnected");
}

async fn handshake<R, W>(
    hub: &Hub,
    reader: &mut FrameReader<R>,
    writer: &mut FrameWriter<W>,
    channel: [u8; 32],
) -> Result<Authenticated, Failed>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let gone = |e: frame::Error| Failed::Gone(e.to_string());
    let hello = match reader.read::<AgentMessage>().await {
        Ok(Some(AgentMessage::Hello(hello))) => hello,
        Ok(Some(_)) => return Err(Failed::Refuse("the first message must be a hello".into())),
        Ok(None) => return Err(Failed::Gone("closed before the hello".into())),
        Err(frame::Error::Json(_)) => {
            return Err(Failed::Refuse(
                "the hello is not valid JSON of this protocol".into(),
            ))
        }
        Err(e) => return Err(gone(e)),
    };
    let Some(version) = negotiate(PROTOCOL_VERSIONS, &hello.versions) else {
        return Err(Failed::Refuse(format!(
            "no common protocol version: this server speaks {PROTOCOL_VERSIONS:?}, the agent \
             offered {:?}",
            hello.versions.iter().take(16).collect::<Vec<_>>()
        )));
    };
    let Some(key) = key_bytes(&hello.public_key) else {
        return Err(Failed::Refuse(
            "the hello's public key is not 32 bytes of base64".into(),
        ));
    };
    let ephemeral = StaticSecret::random_from_rng(&mut UnwrapErr(SysRng));
    let mut nonce = [0u8; 32];
    UnwrapErr(SysRng).fill_bytes(&mut nonce);
    let transcript = Transcript {
        version,
        nonce,
        agent_public: key,
        server_ephemeral: PublicKey::from(&ephemeral).to_bytes(),
        channel,
    };
    writer
        .write(&ServerMessage::Challenge(Challenge {
            version,
            server_ephemeral: BASE64.encode(transcript.server_ephemeral),
            nonce: BASE64.encode(nonce),
        }))
        .await
        .map_err(gone)?;
    let mac = loop {
        match reader.read::<AgentMessage>().await {
            Ok(Some(AgentMessage::Proof(p))) => break p.mac,
            // A later agent may say more before its proof; this server does not know it.
            Ok(Some(AgentMessage::Unknown | AgentMessage::Keepalive)) => {}
            Ok(Some(_)) => {
                return Err(Failed::Refuse(
                    "the answer to the challenge must be a proof".into(),
                ))
            }
            Ok(None) => return Err(Failed::Gone("closed before the proof".into())),
            Err(frame::Error::Json(_)) => {
                return Err(Failed::Refuse(
                    "the proof is not valid JSON of this protocol".into(),
                ))
            }
            Err(e) => return Err(gone(e)),
        }
    };
    let mac = BASE64.decode(mac.trim()).unwrap_or_default();
    if !proof::verify(&ephemeral, &transcript, &mac) {
        return Err(Failed::Proof(
            "the proof of key possession failed: this agent does not hold the private key of \
             the public key it presented"
                .into(),
        ));
    }
    let Some(snapshot) = hub.current().await else {
        return Err(Failed::Refuse(
            "the server cannot read the network now; try again later".into(),
        ));
    };
    let Some(system) = snapshot.system_of(&key) else {
        return Err(Failed::Refuse(
            "this key is not enrolled on this server: enrol first (enclave-agent enrol)".into(),
        ));
    };
    Ok(Authenticated {
        key,
        system: system.to_owned(),
        hello,
    })
}

/// The connection's life after the handshake; returns why it ended.
async fn run<R, W>(
    hub: &Arc<Hub>,
    agent: &Arc<Agent>,
    reader: FrameReader<R>,
    mut writer: FrameWriter<W>,
) -> String
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    // Reading is not cancel-safe, so it has a task of its own.
    let (incoming, mut messages) = mpsc::channel(8);
    let reading = tokio::spawn(read_all(reader, incoming));
    let mut snapshots = hub.snapshot.subscribe();
    let mut stop = hub.stopping();
    let mut last: Option<Sent> = None;
    let mut last_sent = Instant::now();
    let mut last_heard = Instant::now();
    // The first push: whatever the current snapshot says.
    snapshots.mark_changed();
    let why = loop {
        let deadline = (last_sent + client::KEEPALIVE).min(last_heard + client::SILENCE);
        tokio::select! {
            _ = stop.changed() => break "the server stops".to_owned(),
            changed = snapshots.changed() => {
                if changed.is_err() {
                    break "the server stops".to_owned();
                }
                let Some(snapshot) = snapshots.borrow_and_update().clone() else { continue };
                match decide(&snapshot, &agent.key, last) {
                    Decision::Nothing => {}
                    Decision::Keep(sent) => last = Some(sent),
                    Decision::Send(message, sent) => {
                        if let Some(name) = snapshot.system_of(&agent.key) {
                            name.clone_into(&mut agent.live().system);
                        }
                        if let Err(e) = writer.write(&message).await {
                            break format!("sending failed: {e}");
                        }
                        if let ServerMessage::View(v) = &message {
                            agent.live().sent = Some(v.serial);
                        }
                        last = Some(sent);
                        last_sent = Instant::now();
                    }
                    Decision::View { frame, serial, sent } => {
                        if let Some(name) = snapshot.system_of(&agent.key) {
                            name.clone_into(&mut agent.live().system);
                        }
                        if let Err(e) = writer.write_frame(&frame).await {
                            break format!("sending failed: {e}");
                        }
                        agent.live().sent = Some(serial);
                        last = Some(sent);
                        last_sent = Instant::now();
                    }
                    Decision::Close(message) => {
                        let _ = writer.write(&message).await;
                        let _ = writer.shutdown().await;
                        break match message {
                            ServerMessage::Revoked(r) => r.reason,
                            _ => "closed".to_owned(),
                        };
                    }
                }
            }
            message = messages.recv() => match message {
                None => break "the connection ended".to_owned(),
                Some(Err(e)) => break e,
                Some(Ok(message)) => {
                    last_heard = Instant::now();
                    Hub::heard_from(agent);
                    handle(hub, agent, message);
                }
            },
            () = tokio::time::sleep_until(deadline) => {
                if last_heard.elapsed() >= client::SILENCE {
                    break format!("silent for {} s", client::SILENCE.as_secs());
                }
                if last_sent.elapsed() >= client::KEEPALIVE {
                    if let Err(e) = writer.write(&ServerMessage::Keepalive).await {
                        break format!("sending failed: {e}");
                    }
                    last_sent = Instant::now();
                }
            }
        }
    };
    reading.abort();
    why
}

async fn read_all<R: AsyncRead + Unpin>(
    mut reader: FrameReader<R>,
    incoming: mpsc::Sender<Result<AgentMessage, String>>,
) {
    loop {
        let message = match reader.read::<AgentMessage>().await {
            Ok(Some(message)) => Ok(message),
            Ok(None) => return,
            Err(e) => Err(format!("{e}")),
        };
        let end = message.is_err();
        if incoming.send(message).await.is_err() || end {
            return;
        }
    }
}

fn handle(hub: &Arc<Hub>, agent: &Arc<Agent>, message: AgentMessage) {
    match message {
        AgentMessage::Report(report) => {
            if let Some(port) = report.listen_port {
                hub.observe(agent, port);
            }
            let discovered = report.discovered.clone();
            hub.reported(agent, Arc::from(report));
            if let Some(found) = discovered {
                report_discovered(hub, agent, found);
            }
        }
        AgentMessage::Ack(ack) => agent.live().acked = Some(ack.serial),
        AgentMessage::Keepalive | AgentMessage::Unknown => {}
        AgentMessage::Hello(_) | AgentMessage::Proof(_) => {
            tracing::debug!("ignored a handshake message after the handshake");
        }
    }
}

/// Records a gateway's discovered subnets when they differ from what the network holds
/// (so the audit log gets an entry per change, not per report).
fn report_discovered(
    hub: &Arc<Hub>,
    agent: &Arc<Agent>,
    found: BTreeMap<ipnet::Ipv4Net, enclave_control_proto::message::Discovered>,
) {
    let subnets: BTreeMap<ipnet::Ipv4Net, DiscoveredSubnet> = found
        .into_iter()
        .take(crate::core::MAX_LIST)
        .map(|(net, d)| {
            let clip = |s: String| s.chars().take(MAX_TEXT).collect::<String>();
            (
                net.trunc(),
                DiscoveredSubnet {
                    interface: clip(d.interface),
                    reason: clip(d.reason),
                },
            )
        })
        .collect();
    let Some(snapshot) = hub.snapshot.borrow().clone() else {
        return;
    };
    let Some(name) = snapshot.system_of(&agent.key).map(str::to_owned) else {
        return;
    };
    if snapshot
        .state
        .systems
        .get(&name)
        .is_some_and(|s| s.discovered == subnets)
    {
        return;
    }
    {
        let mut live = agent.live();
        if live.discovered.as_ref() == Some(&subnets) {
            return;
        }
        live.discovered = Some(subnets.clone());
    }
    let hub = Arc::clone(hub);
    let agent = Arc::clone(agent);
    tokio::spawn(async move {
        // Judged again on the state of the moment: an identical report already committed
        // (by an earlier report in flight) writes nothing.
        if let Ok(state) = hub.service.state().await {
            if state
                .systems
                .get(&name)
                .is_none_or(|s| s.discovered == subnets)
            {
                return;
            }
        }
        let ctx = Ctx {
            actor: format!("agent:{name}"),
            now: super::now(),
        };
        let command = Command::ReportDiscovered {
            system: name.clone(),
            subnets,
        };
        if let Err(e) = hub.service.execute(command, &ctx).await {
            // Forget it, so that the next report tries again.
            agent.live().discovered = None;
            tracing::warn!(system = %name, error = %e, "cannot record discovered subnets; the next report tries again");
        }
    });
}
