//! The agents' suite, the refusals: a client that does not hold the key it claims, a proof
//! for another connection, an unpinned server, too many handshakes, too many failed proofs.
//! Handshakes made by hand, since the agent's client only proves keys it holds.

use super::*;

type Raw = hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>;

/// A connection upgraded by hand: its frames and its channel binding.
type Upgraded = (
    FrameReader<tokio::io::ReadHalf<Raw>>,
    FrameWriter<tokio::io::WriteHalf<Raw>>,
    [u8; 32],
);

/// Opens the agents' connection by hand: TLS, the upgrade. (The client of
/// `enclave-control-proto` only proves keys it holds.)
async fn raw_upgrade(server: &Server) -> Result<Upgraded, Failure> {
    try_upgrade(server)
        .await?
        .map_err(|status| format!("the upgrade was answered {status}"))
}

/// As [`raw_upgrade`], or the status that refused the upgrade.
async fn try_upgrade(server: &Server) -> Result<Result<Upgraded, HttpStatus>, Failure> {
    use http_body_util::Full;
    let authority = server.url.trim_start_matches("https://").to_owned();
    let tcp = tokio::net::TcpStream::connect(&authority)
        .await
        .map_err(e("connecting"))?;
    let config = enclave_control_proto::tls::client_config(&server.trust).map_err(e("TLS"))?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").map_err(e("a name"))?;
    let stream = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(e("TLS handshake"))?;
    let mut channel = [0u8; 32];
    stream
        .get_ref()
        .1
        .export_keying_material(&mut channel, CHANNEL_EXPORTER_LABEL, None)
        .map_err(e("the channel binding"))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(e("HTTP"))?;
    tokio::spawn(connection.with_upgrades());
    let request = hyper::Request::get(enclave_control_proto::AGENT_PATH)
        .header(hyper::header::HOST, &authority)
        .header(hyper::header::CONNECTION, "Upgrade")
        .header(hyper::header::UPGRADE, enclave_control_proto::UPGRADE)
        .body(Full::new(hyper::body::Bytes::new()))
        .map_err(e("the request"))?;
    let response = sender.send_request(request).await.map_err(e("upgrading"))?;
    if response.status() != HttpStatus::SWITCHING_PROTOCOLS {
        return Ok(Err(response.status()));
    }
    let upgraded = hyper::upgrade::on(response)
        .await
        .map_err(e("the upgrade"))?;
    let (read, write) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
    Ok(Ok((
        FrameReader::new(read, 1 << 20),
        FrameWriter::new(write),
        channel,
    )))
}

pub(super) async fn unauthenticated_bounded(url: String) -> CaseResult {
    let options = Options {
        max_handshakes: 1,
        ..Options::default()
    };
    let server = start(&url, "one", options).await?;
    // One connection in its handshake (it says nothing) takes the only place.
    let first = raw_upgrade(&server).await?;
    match try_upgrade(&server).await? {
        Err(status) if status == HttpStatus::SERVICE_UNAVAILABLE => {}
        Err(status) => return Err(format!("a second handshake got {status}, not 503")),
        Ok(_) => return Err("a second handshake was let in beside the first".into()),
    }
    // When it goes, the place is free again.
    drop(first);
    eventually(STEP, Duration::from_millis(20), || async {
        Ok(match try_upgrade(&server).await? {
            Ok(_) => Ok(()),
            Err(status) => Err(format!(
                "after the first left, handshakes still get {status}"
            )),
        })
    })
    .await?;
    // Failed proofs count against the source: ten, then 429 before any handshake.
    let users = server.key(&["users"], ApprovalMode::Auto, false).await?;
    let laptop = server.enrol(&users, "laptop").await?;
    let claimed = PublicKey::from(&laptop).to_bytes();
    let impostor = StaticSecret::random_from_rng(&mut UnwrapErr(SysRng));
    for attempt in 1..=10 {
        match claim(&server, claimed, &impostor, None).await? {
            ServerMessage::Refused(_) => {}
            other => return Err(format!("impostor attempt {attempt} got {other:?}")),
        }
    }
    match try_upgrade(&server).await? {
        Err(status) if status == HttpStatus::TOO_MANY_REQUESTS => {}
        other => {
            return Err(format!(
                "after ten failed proofs the upgrade got {:?}",
                other.map(|_| "101")
            ))
        }
    }
    server.store.close().await;
    Ok(())
}

/// Claims `claimed` (an enrolled key it does not hold) and proves with `held`; the server's
/// answer to the proof.
async fn claim(
    server: &Server,
    claimed: [u8; 32],
    held: &StaticSecret,
    channel_override: Option<[u8; 32]>,
) -> Result<ServerMessage, Failure> {
    let (mut reader, mut writer, channel) = raw_upgrade(server).await?;
    writer
        .write(&AgentMessage::Hello(Hello {
            versions: vec![1],
            public_key: BASE64.encode(claimed),
            agent_version: "test".into(),
            hostname: None,
        }))
        .await
        .map_err(e("hello"))?;
    let challenge = match reader
        .read::<ServerMessage>()
        .await
        .map_err(e("challenge"))?
    {
        Some(ServerMessage::Challenge(c)) => c,
        other => return Err(format!("expected a challenge, got {other:?}")),
    };
    let bytes = |text: &str| -> Result<[u8; 32], Failure> {
        BASE64
            .decode(text)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| format!("{text:?} is not 32 bytes"))
    };
    let transcript = Transcript {
        version: challenge.version,
        nonce: bytes(&challenge.nonce)?,
        agent_public: claimed,
        server_ephemeral: bytes(&challenge.server_ephemeral)?,
        channel: channel_override.unwrap_or(channel),
    };
    let mac = proof::prove(held, &transcript);
    writer
        .write(&AgentMessage::Proof(Proof {
            mac: BASE64.encode(mac),
        }))
        .await
        .map_err(e("proof"))?;
    let answer = tokio::time::timeout(STEP, reader.read::<ServerMessage>())
        .await
        .map_err(|_| "no answer to the proof".to_owned())?
        .map_err(e("the answer to the proof"))?
        .ok_or("the server closed without an answer")?;
    // After a refusal the server closes.
    if matches!(answer, ServerMessage::Refused(_)) {
        let end = tokio::time::timeout(STEP, reader.read::<ServerMessage>()).await;
        check(matches!(end, Ok(Ok(None))), || {
            format!("after refusing, the connection gave {end:?}")
        })?;
    }
    Ok(answer)
}

pub(super) async fn without_the_private_key(url: String) -> CaseResult {
    let server = start(&url, "one", Options::default()).await?;
    let users = server.key(&["users"], ApprovalMode::Auto, false).await?;
    let laptop = server.enrol(&users, "laptop").await?;
    let claimed = PublicKey::from(&laptop).to_bytes();
    let impostor = StaticSecret::random_from_rng(&mut UnwrapErr(SysRng));
    match claim(&server, claimed, &impostor, None).await? {
        ServerMessage::Refused(r) => {
            check(r.reason.contains("does not hold"), || r.reason.clone())?
        }
        other => return Err(format!("an impostor got {other:?}")),
    }
    // The real key, but a proof made for another TLS connection: refused too.
    match claim(&server, claimed, &laptop, Some([0; 32])).await? {
        ServerMessage::Refused(r) => {
            check(r.reason.contains("does not hold"), || r.reason.clone())?
        }
        other => return Err(format!("a proof for another connection got {other:?}")),
    }
    // The positive control: the same hand-made handshake with the key held is accepted.
    match claim(&server, claimed, &laptop, None).await? {
        ServerMessage::View(update) => check(update.view.system == "laptop", || {
            format!("the laptop got the view of {}", update.view.system)
        })?,
        other => return Err(format!("the laptop proving its own key got {other:?}")),
    }
    // The agent refuses a server that is not the pinned one, and says so.
    let elsewhere = Trust::Fingerprint([0xAB; 32]);
    match enclave_control_proto::connect(&server.url, Some(&elsewhere), &laptop, None).await {
        Err(enclave_control_proto::Error::Mismatch { pinned, .. }) => {
            check(pinned.starts_with("AB:AB"), || pinned.clone())?;
        }
        other => return Err(format!("connecting to an unpinned server: {other:?}")),
    }
    // A key that is not enrolled, proven: refused, and the agent's client says why.
    match server.connect(&impostor).await {
        Err(failure) if failure.contains("not enrolled") => {}
        other => return Err(format!("an unenrolled key connecting: {other:?}")),
    }
    server.store.close().await;
    Ok(())
}
