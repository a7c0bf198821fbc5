//! `GET /api/v1/agent`: the upgrade to the agents' protocol (a part of [`crate::api`]).

use super::*;

/// `GET /api/v1/agent` with `Upgrade: enclave-agent/1`: answers `101` and hands the
/// connection to the agents' side, which authenticates the agent by its proof.
pub(super) async fn agent(
    State(app): State<App>,
    peer: Option<Extension<Peer>>,
    channel: Option<Extension<Channel>>,
    mut request: Request,
) -> Reply2 {
    let from = peer.map_or_else(
        || SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        |Extension(Peer(addr))| addr,
    );
    app.held_back(from.ip(), clock())?;
    let headers = request.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    let upgrade = enclave_control_proto::UPGRADE;
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, upgrade) {
        let mut response = failure(
            StatusCode::UPGRADE_REQUIRED,
            &format!(
                "this is the agents' connection: send Connection: Upgrade and Upgrade: {upgrade} \
                 (see docs/agent-protocol.md)"
            ),
        );
        response
            .headers_mut()
            .insert(header::UPGRADE, HeaderValue::from_static(upgrade));
        return Err(response);
    }
    let Some(on_upgrade) = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
    else {
        return Err(failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "this connection cannot be upgraded",
        ));
    };
    let Ok(permit) = app.hub.handshakes() else {
        return Err(failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many agents are connecting at once; try again in a few seconds",
        ));
    };
    let channel = channel.map_or([0; 32], |Extension(Channel(c))| c);
    let hub = Arc::clone(&app.hub);
    let limiter = app.clone();
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let failed = Box::new(move || limiter.failed(from.ip(), clock()));
                agents::stream::serve(
                    hub,
                    hyper_util::rt::TokioIo::new(upgraded),
                    from,
                    channel,
                    permit,
                    failed,
                )
                .await;
            }
            Err(e) => tracing::debug!(source = %from, error = %e, "the agent's upgrade failed"),
        }
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static(upgrade));
    Ok(response)
}
