//! The portal: the administrators' web pages, served on the API's port under `/portal/`.
//!
//! Server-rendered HTML, one embedded style sheet and one small embedded script for live
//! updates (`live.rs`); nothing fetched from elsewhere, and every page works without the script. Like the API it only translates: every change is a [`Command`] run by the same
//! [`Service`], recorded in the audit log as `user:NAME`.
//!
//! Security: local accounts ([`users`], argon2id); a session cookie (HttpOnly,
//! SameSite=Strict, Secure over TLS, 8 hours); a CSRF token in every form, checked on every
//! `POST` ([`session`]); failed sign-ins rate-limited per source address ([`Limiter`]); pages
//! never cached and never framed. See `docs/portal.md`.

// Handlers return `Result<Response, Response>` ([`Answer`]): the error is the page itself.
#![allow(clippy::result_large_err)]

mod app_device;
mod explain;
mod fields;
mod keys;
mod live;
mod pages;
mod policies;
mod policy_form;
pub mod session;
mod tag_pages;
mod trust;
pub mod users;

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};

use crate::agents::Hub;
use crate::api::Peer;
use crate::core::{self, Command, Ctx, Refusal, SystemEdit};
use crate::definition::FieldProblem;
use crate::limit::Limiter;
use crate::model::State as Network;
use crate::secret;
use crate::service::{self, Service};
use fields::field;
use pages::{Flash, Problems};
use session::{Session, Sessions, SignedIn, SignedInForm};

/// Largest form body.
const MAX_FORM: usize = 16 * 1024;
/// Entries shown on the Activity page.
const ACTIVITY: u32 = 200;

/// What a handler answers: the page, or (`Err`) the answer that cuts it short: the way to
/// sign in, a refusal, "not found", "try again later", the redirect after a change.
type Answer = Result<Response, Response>;

/// Shared by every page.
#[derive(Debug, Clone)]
struct Portal {
    hub: Arc<Hub>,
    service: Arc<Service>,
    sessions: Arc<Sessions>,
    limiter: Arc<Mutex<Limiter>>,
    tls: bool,
    /// Open live streams (`live.rs`).
    streams: Arc<tokio::sync::Semaphore>,
}

/// The portal's router: `/portal/…`, and `/` sends browsers there. `tls` says whether it is
/// served over TLS (cookies are then `Secure`).
pub fn router(hub: Arc<Hub>, tls: bool) -> Router {
    let portal = Portal {
        service: Arc::clone(hub.service()),
        hub,
        sessions: Arc::new(Sessions::default()),
        limiter: Arc::new(Mutex::new(Limiter::new())),
        tls,
        streams: live::streams(),
    };
    routes_of(portal)
}

fn routes_of(portal: Portal) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/portal/systems") }))
        .route("/portal", get(|| async { Redirect::to("/portal/systems") }))
        .route(
            "/portal/",
            get(|| async { Redirect::to("/portal/systems") }),
        )
        .route("/portal/assets/portal.css", get(style))
        .route("/portal/assets/portal.js", get(live::script))
        .route("/portal/live", get(live::live))
        .route("/portal/signin", get(signin_page).post(signin))
        .route("/portal/signout", post(signout))
        .route("/portal/systems", get(systems))
        .route("/portal/systems/{name}", get(system))
        .route("/portal/systems/{name}/{action}", post(act))
        .route("/portal/activity", get(activity))
        .route("/portal/keys", get(keys::list).post(keys::create))
        .route("/portal/keys/{id}/revoke", post(keys::revoke))
        .route("/portal/tags", get(tag_pages::list).post(tag_pages::save))
        .route("/portal/tags/{name}", get(tag_pages::edit))
        .route("/portal/tags/{name}/delete", post(tag_pages::delete))
        .route("/portal/trust", get(trust::list).post(trust::create))
        .route("/portal/trust/{name}", get(trust::edit).post(trust::update))
        .route("/portal/trust/{name}/delete", post(trust::delete))
        .route(
            "/portal/active-hours/{policy}",
            get(trust::hours).post(trust::save_hours),
        )
        .route("/portal/explain", get(explain::page))
        .route("/portal/policies", get(policies::list))
        .route(
            "/portal/new-policy",
            get(policies::new_form).post(policies::create),
        )
        .route("/portal/policies/{name}", get(policies::edit_form))
        .route("/portal/policies/{name}/{action}", post(policies::act))
        .route(
            "/portal/app-devices",
            get(app_device::new_page).post(app_device::add),
        )
        .route("/portal/app-devices/{name}", get(app_device::show))
        .route(
            "/portal/app-devices/{name}/download",
            get(app_device::download).post(app_device::download_with_key),
        )
        .layer(DefaultBodyLimit::max(MAX_FORM))
        .with_state(portal)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn source(peer: Option<&Extension<Peer>>) -> IpAddr {
    peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.0 .0.ip())
}

/// An HTML answer that no cache keeps and no other site frames.
fn html(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `303 See Other` to `to` (after a form, the browser then GETs the page).
fn see(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// `404` with a page that says `text`.
fn not_found(text: &str) -> Response {
    html(StatusCode::NOT_FOUND, pages::message("Not found", text))
}

/// `404`: there is no `what` named `name`.
fn missing(what: &str, name: &str) -> Response {
    not_found(&format!("There is no {what} named {name:?}."))
}

async fn style() -> Response {
    asset(
        include_str!("../../assets/portal.css"),
        "text/css; charset=utf-8",
    )
}

/// An embedded file, as `content_type`, never sniffed as anything else.
fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// A path segment for a system's name (names are labels, but escape anyway).
fn segment(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

// ---- sessions ----

impl Portal {
    fn limiter(&self) -> std::sync::MutexGuard<'_, Limiter> {
        self.limiter.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The signed-in session of a request, with its cookie (handlers take [`SignedIn`] or
    /// [`SignedInForm`], which answer for them without one).
    fn session(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let cookies = headers.get(header::COOKIE)?.to_str().ok()?;
        let cookie = session::cookie(cookies, session::COOKIE)?;
        let session = self.sessions.get(cookie, now())?;
        Some((cookie.to_owned(), session))
    }

    /// The network as it is now, or the answer that the store is unavailable.
    async fn state(&self) -> Result<Arc<Network>, Response> {
        self.service.state().await.map_err(|e| unavailable(&e))
    }

    /// The validated network of `state`: the service's, else validated here.
    fn network(&self, state: &Network) -> Result<Arc<enclave_policy::Network>, Refusal> {
        if let Some(network) = self.service.validated(state.revision) {
            return Ok(network);
        }
        crate::definition::validate(state)
            .map(|valid| Arc::new(valid.network))
            .map_err(Refusal::Invalid)
    }

    /// Runs `command` as the session's user.
    async fn run(
        &self,
        session: &Session,
        command: Command,
    ) -> Result<core::Outcome, service::Error> {
        let ctx = Ctx {
            actor: format!("user:{}", session.user),
            now: now(),
        };
        self.service.execute(command, &ctx).await
    }
}

fn refused(message: &str) -> Response {
    html(StatusCode::FORBIDDEN, pages::message("Refused", message))
}

fn unavailable(error: &service::Error) -> Response {
    tracing::warn!(error = %error, "portal: the service failed");
    html(
        StatusCode::SERVICE_UNAVAILABLE,
        pages::message(
            "Try again later",
            "The database is unavailable or busy; nothing was changed.",
        ),
    )
}

// ---- sign-in ----

async fn signin_page(State(portal): State<Portal>, headers: HeaderMap) -> Response {
    if portal.session(&headers).is_some() {
        return see("/portal/systems");
    }
    signin_form(&portal, StatusCode::OK, "", None)
}

/// The sign-in form with a fresh token, repeated in its own cookie.
fn signin_form(portal: &Portal, status: StatusCode, name: &str, error: Option<&str>) -> Response {
    let token = session::random();
    let mut response = html(status, pages::signin(&token, name, error));
    if let Ok(value) = HeaderValue::from_str(&session::set_cookie(
        session::SIGNIN_COOKIE,
        &token,
        600,
        portal.tls,
    )) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

async fn signin(
    State(portal): State<Portal>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    // As sent, untrimmed: a password may begin or end with a space.
    let sent = |k: &str| form.get(k).map_or("", String::as_str).to_owned();
    let (name, password, token) = (sent("name"), sent("password"), sent("csrf"));
    let cookie = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| session::cookie(c, session::SIGNIN_COOKIE))
        .unwrap_or("");
    if token.is_empty() || !secret::same(&secret::hash(cookie), &secret::hash(&token)) {
        return refused(
            "This sign-in form's security token is missing or wrong. Reload the page and try again.",
        );
    }
    let from = source(peer.as_ref());
    let clock = u64::try_from(now()).unwrap_or(0);
    if let Err(wait) = portal.limiter().check(from, clock) {
        let mut response = signin_form(
            &portal,
            StatusCode::TOO_MANY_REQUESTS,
            &name,
            Some(&format!(
                "Too many failed sign-ins from your address; try again in {wait} s."
            )),
        );
        if let Ok(value) = HeaderValue::from_str(&wait.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    let user = match portal.service.store().portal_user(&name).await {
        Ok(user) => user,
        Err(e) => return unavailable(&service::Error::Store(e)),
    };
    // Off the async workers: argon2 takes tens of milliseconds on purpose (and the decoy is
    // hashed once, on first use).
    let hash = user.map(|u| u.password_hash.into_inner());
    let right = tokio::task::spawn_blocking(move || {
        users::verify(&password, hash.as_deref().unwrap_or_else(|| users::decoy()))
    })
    .await
    .unwrap_or(false);
    if !right {
        portal.limiter().fail(from, clock);
        tracing::info!(%from, "portal: a sign-in was refused");
        return signin_form(
            &portal,
            StatusCode::UNAUTHORIZED,
            &name,
            Some("Wrong name or password."),
        );
    }
    tracing::info!(user = %name, %from, "portal: signed in");
    let cookie = portal.sessions.start(&name, now());
    let mut response = see("/portal/systems");
    for value in [
        session::set_cookie(session::COOKIE, &cookie, session::LIFETIME, portal.tls),
        session::set_cookie(session::SIGNIN_COOKIE, "", 0, portal.tls),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

async fn signout(
    State(portal): State<Portal>,
    headers: HeaderMap,
    SignedInForm(session, _): SignedInForm,
) -> Response {
    if let Some((cookie, _)) = portal.session(&headers) {
        portal.sessions.end(&cookie);
    }
    tracing::info!(user = %session.user, "portal: signed out");
    let mut response = see("/portal/signin");
    if let Ok(value) =
        HeaderValue::from_str(&session::set_cookie(session::COOKIE, "", 0, portal.tls))
    {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

// ---- pages ----

async fn systems(
    State(portal): State<Portal>,
    Query(query): Query<HashMap<String, String>>,
    SignedIn(session): SignedIn,
) -> Answer {
    let q = query.get("q").map_or("", String::as_str);
    systems_page(&portal, &session, q, page_of(&query), None, StatusCode::OK).await
}

/// The `page` of a query (1 when absent or not a number).
fn page_of(query: &HashMap<String, String>) -> usize {
    query
        .get("page")
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(1)
}

async fn systems_page(
    portal: &Portal,
    session: &Session,
    q: &str,
    page: usize,
    flash: Option<Flash>,
    status: StatusCode,
) -> Answer {
    let state = portal.state().await?;
    let seen = portal.hub.seen().await;
    let listing = pages::Listing::of(&state, q, page);
    let names = listing.names();
    let agents = portal.hub.connected_here_of(&names);
    Ok(html(
        status,
        pages::systems(session, &listing, &seen, &agents, flash.as_ref()),
    ))
}

async fn system(
    State(portal): State<Portal>,
    Path(name): Path<String>,
    SignedIn(session): SignedIn,
) -> Answer {
    system_page(
        &portal,
        &session,
        &name,
        &Problems::default(),
        None,
        StatusCode::OK,
    )
    .await
}

async fn system_page(
    portal: &Portal,
    session: &Session,
    name: &str,
    problems: &Problems,
    flash: Option<Flash>,
    status: StatusCode,
) -> Answer {
    let state = portal.state().await?;
    let system = state
        .systems
        .get(name)
        .ok_or_else(|| missing("system", name))?;
    let seen = portal.hub.seen().await;
    let rows: Vec<core::SubnetRow> = core::subnet_rows(&state)
        .into_iter()
        .filter(|r| r.system == name)
        .collect();
    let agent = portal
        .hub
        .connected_here_of(&BTreeSet::from([name]))
        .remove(name);
    let shown = pages::Shown {
        seen: &seen,
        agent: agent.as_ref(),
    };
    Ok(html(
        status,
        pages::system(session, system, &shown, &rows, problems, flash.as_ref()),
    ))
}

async fn activity(State(portal): State<Portal>, SignedIn(session): SignedIn) -> Answer {
    let revision = portal.state().await?.revision;
    let after = (revision - i64::from(ACTIVITY)).max(0);
    let mut entries = portal
        .service
        .audit(after, ACTIVITY)
        .await
        .map_err(|e| unavailable(&e))?;
    entries.reverse();
    Ok(html(StatusCode::OK, pages::activity(&session, &entries)))
}

// ---- changes ----

/// Which form of a system's page a change came from (its errors are shown there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Which {
    /// Name and tags.
    Edit,
    /// The gateway toggle.
    Gateway,
    /// Add subnet.
    Subnet,
    /// A subnet's Remove, or Approve.
    Other,
}

/// Tags as typed: separated by commas or spaces.
fn tags(text: &str) -> BTreeSet<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

async fn act(
    State(portal): State<Portal>,
    Path((name, action)): Path<(String, String)>,
    SignedInForm(session, form): SignedInForm,
) -> Answer {
    let (which, command) = match action.as_str() {
        "approve" => (Which::Other, Ok(Command::Approve { name: name.clone() })),
        "edit" => {
            let new_name = field(&form, "name");
            let edit = SystemEdit {
                name: (new_name != name).then_some(new_name),
                tags: Some(tags(&field(&form, "tags"))),
                version: field(&form, "version").parse().ok(),
                ..SystemEdit::default()
            };
            (
                Which::Edit,
                Ok(Command::UpdateSystem {
                    name: name.clone(),
                    edit,
                }),
            )
        }
        "gateway" => (
            Which::Gateway,
            Ok(Command::SetGateway {
                name: name.clone(),
                allowed: form.get("allowed").is_some_and(|v| v == "on"),
            }),
        ),
        "subnet-add" => (
            Which::Subnet,
            core::parse_subnet("subnet", &field(&form, "subnet")).map(|subnet| {
                Command::AddSubnet {
                    system: name.clone(),
                    subnet,
                }
            }),
        ),
        "subnet-remove" => (
            Which::Other,
            core::parse_subnet("subnet", &field(&form, "subnet")).map(|subnet| {
                Command::RemoveSubnet {
                    system: name.clone(),
                    subnet,
                }
            }),
        ),
        _ => return Err(not_found("There is no such change.")),
    };
    let from_list = field(&form, "back") == "systems";
    let result = match command {
        Ok(command) => portal.run(&session, command).await,
        Err(refusal) => Err(service::Error::Refused(refusal)),
    };
    match result {
        Ok(outcome) => {
            let done = match &outcome.reply {
                core::Reply::System(s) => s.name.clone(),
                _ => name.clone(),
            };
            Ok(if from_list {
                see(&format!(
                    "/portal/systems?q={}&page={}",
                    segment(&field(&form, "q")),
                    field(&form, "page").parse::<usize>().unwrap_or(1)
                ))
            } else {
                see(&format!("/portal/systems/{}", segment(&done)))
            })
        }
        Err(service::Error::Refused(refusal)) => {
            let problems = Problems::of(which, &refusal, &form);
            if from_list {
                let flash = Flash::error(&refusal.to_string());
                systems_page(
                    &portal,
                    &session,
                    &field(&form, "q"),
                    field(&form, "page").parse().unwrap_or(1),
                    Some(flash),
                    StatusCode::UNPROCESSABLE_ENTITY,
                )
                .await
            } else {
                let flash = (which == Which::Other).then(|| Flash::error(&refusal.to_string()));
                system_page(
                    &portal,
                    &session,
                    &name,
                    &problems,
                    flash,
                    StatusCode::UNPROCESSABLE_ENTITY,
                )
                .await
            }
        }
        Err(other) => Err(unavailable(&other)),
    }
}

/// The problems of a refusal, for showing next to fields.
fn field_problems(refusal: &Refusal) -> Vec<FieldProblem> {
    match refusal {
        Refusal::Invalid(problems) => problems
            .iter()
            .filter(|p| p.severity == enclave_policy::Severity::Error)
            .cloned()
            .collect(),
        other => vec![error_at("", other.to_string(), None)],
    }
}

/// An error at form field `field` (`""`: the whole form).
fn error_at(field: &str, message: String, hint: Option<&str>) -> FieldProblem {
    FieldProblem {
        severity: enclave_policy::Severity::Error,
        field: field.to_owned(),
        message,
        hint: hint.map(str::to_owned),
    }
}

#[cfg(test)]
mod tests;
