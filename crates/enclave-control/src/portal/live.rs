//! Live updates: `GET /portal/live`, a stream of server-sent events for a signed-in session,
//! and the one small script (`/portal/assets/portal.js`) that listens to it.
//!
//! The stream says only *that* something may have changed (`event: change`): an agent
//! connected, disconnected or reported something the portal shows, or the network moved to
//! a new revision; and, every [`RECHECK`], in case an agent held by another server changed
//! (its presence reaches this server through the store). The script then fetches the page
//! again and replaces the parts marked `data-live` whose content differs, keeping the focus.
//! Pages work the same without the script; it only saves a reload.
//!
//! The stream checks the session when it starts and before every event; once the session
//! ended it sends `event: signedout` and closes. At most [`MAX_STREAMS`] are open at once.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::{now, Portal};

/// Live streams open at once, for all sessions together (each holds a connection).
pub(crate) const MAX_STREAMS: usize = 256;
/// Changes closer together than this make one event.
const COALESCE: Duration = Duration::from_millis(500);
/// An event at least this often, for what only the store knows (agents of other servers).
const RECHECK: Duration = Duration::from_secs(30);
/// A comment this often keeps proxies from closing an idle stream.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// The limit on open streams.
pub(crate) fn streams() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(MAX_STREAMS))
}

/// The script, as embedded.
pub(crate) async fn script() -> Response {
    super::asset(
        include_str!("../../assets/portal.js"),
        "text/javascript; charset=utf-8",
    )
}

/// What one stream holds between events.
struct Stream {
    portal: Portal,
    cookie: String,
    changes: watch::Receiver<u64>,
    ended: bool,
    _permit: OwnedSemaphorePermit,
}

/// `GET /portal/live`: `401` without a session (a browser's `EventSource` then stops
/// trying), `503` when too many streams are open, else the stream.
pub(crate) async fn live(State(portal): State<Portal>, headers: HeaderMap) -> Response {
    let Some((cookie, _)) = portal.session(&headers) else {
        return (StatusCode::UNAUTHORIZED, "not signed in").into_response();
    };
    let Ok(permit) = Arc::clone(&portal.streams).try_acquire_owned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many live pages open").into_response();
    };
    let mut changes = portal.hub.changes();
    changes.borrow_and_update();
    let stream = Stream {
        portal,
        cookie,
        changes,
        ended: false,
        _permit: permit,
    };
    let events = futures_util::stream::unfold(stream, |mut stream| async move {
        let event = stream.next().await?;
        Some((Ok::<Event, Infallible>(event), stream))
    });
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEPALIVE))
        .into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

impl Stream {
    /// The next event, or `None` to close.
    async fn next(&mut self) -> Option<Event> {
        if self.ended {
            return None;
        }
        tokio::select! {
            changed = self.changes.changed() => changed.ok()?,
            () = tokio::time::sleep(RECHECK) => {}
        }
        // Let a burst (an agent's report, then the commit of its discovered subnets) settle.
        tokio::time::sleep(COALESCE).await;
        let revision = *self.changes.borrow_and_update();
        if self.portal.sessions.get(&self.cookie, now()).is_none() {
            self.ended = true;
            return Some(Event::default().event("signedout").data("signed out"));
        }
        Some(Event::default().event("change").data(revision.to_string()))
    }
}
