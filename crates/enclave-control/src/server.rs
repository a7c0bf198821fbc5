//! The server's transport: a TCP listener, TLS (or plain HTTP when asked for), HTTP/1.1, and
//! the API router. Each connection gets the peer's address for rate limiting and its TLS
//! channel binding (for the agents' proof of key possession); connections may be upgraded to
//! the agents' protocol.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::{Extension, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use enclave_control_proto::proof::CHANNEL_EXPORTER_LABEL;

use crate::agents::Hub;
use crate::api::{self, Channel, Peer};

/// How long a client may take for its TLS handshake or a request's headers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the API and the agents' connections on `listener` until `shutdown` completes, then
/// shuts the hub down (recording that its agents left, closing their connections). `tls: None` is plain HTTP.
///
/// # Errors
/// Accepting connections failed.
pub async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let router =
        api::router(Arc::clone(&hub)).merge(crate::portal::router(Arc::clone(&hub), tls.is_some()));
    let acceptor = tls.map(TlsAcceptor::from);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => {
                hub.shutdown().await;
                return Ok(());
            }
        };
        let router = router.clone().layer(Extension(Peer(peer)));
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let mut channel = [0u8; 32];
                            if let Err(e) = tls.get_ref().1.export_keying_material(
                                &mut channel,
                                CHANNEL_EXPORTER_LABEL,
                                None,
                            ) {
                                tracing::debug!(%peer, error = %e, "no TLS channel binding");
                                return;
                            }
                            let router = router.layer(Extension(Channel(channel)));
                            connection(tls, router, peer).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
                None => {
                    let router = router.layer(Extension(Channel([0; 32])));
                    connection(stream, router, peer).await;
                }
            }
        });
    }
}

async fn connection<I>(io: I, router: Router, peer: SocketAddr)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HANDSHAKE_TIMEOUT)
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(router))
        .with_upgrades()
        .await;
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
