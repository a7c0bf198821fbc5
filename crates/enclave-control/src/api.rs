//! The HTTP JSON API, `/api/v1/`: it only translates between HTTP and the service.
//!
//! Every endpoint but `POST /api/v1/enrol` and `GET /api/v1/agent` (the agents' connection,
//! authenticated by their proof of key possession: [`crate::agents`]) needs
//! `Authorization: Bearer TOKEN` (an admin token); without a valid one the answer is a bare
//! `401`, also while the database is down (tokens are then checked against the last state
//! read). Failed tokens and enrolment keys
//! are rate-limited per source address ([`crate::limit`]). Errors are
//! `{"error": "…", "problems": [{"field", "message", "hint"}]}` with a status that says what
//! kind (400 malformed, 403 key refused, 404, 409 conflict, 422 refused by the rules, 429,
//! 503 database). See `docs/api.md`.
//!
//! The plumbing every handler shares is in one place: `authenticate` (the token and the
//! rate limit), `JsonBody` (a JSON body, or a 400 that says what was wrong), `execute`
//! (a command run as the authenticated admin, its refusal mapped to a status), and the
//! handler makers `on_name`, `on_name_with` and `on_body` for endpoints that only turn
//! a path and a body into a [`Command`]. Policies, tags and trust requirements share their
//! handlers through `Document`.

// Handlers return `Result<Response, Response>`: the error is the answer itself, made once per
// request on its way out; boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use enclave_policy::{Protocol, Timestamp};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::agents::{self, Hub, Seen};
use crate::core::{self, Command, Ctx, Edit, NewKey, Refusal, Reply, Write};
use crate::definition::{self, FieldProblem};
use crate::limit::Limiter;
use crate::model::{
    ApprovalMode, EnrolmentKey, ManagedSystem, PolicyDoc, State as Network, TagDoc, TrustDoc,
};
use crate::secret;
use crate::service::{self, Service};

/// Largest JSON body.
pub const MAX_BODY: usize = 256 * 1024;
/// Largest network definition accepted by import.
pub const MAX_DEFINITION: usize = 8 * 1024 * 1024;

/// The address a request came from (added by the server per connection).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The connection's TLS channel binding (zeros without TLS), added by the server per
/// connection: the agents' proof covers it.
#[derive(Debug, Clone, Copy)]
pub struct Channel(pub [u8; 32]);

/// Shared by every handler.
#[derive(Debug, Clone)]
pub struct App {
    service: Arc<Service>,
    hub: Arc<Hub>,
    limiter: Arc<Mutex<Limiter>>,
}

impl App {
    fn new(hub: Arc<Hub>) -> Self {
        Self {
            service: Arc::clone(hub.service()),
            hub,
            limiter: Arc::new(Mutex::new(Limiter::new())),
        }
    }

    /// The limiter. A panic elsewhere while it was held leaves its counts as they were, and
    /// they still count: a poisoned lock must not switch rate limiting off.
    fn limiter(&self) -> MutexGuard<'_, Limiter> {
        self.limiter.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `429` while `from` (or everyone together) has failed too often this minute.
    fn held_back(&self, from: IpAddr, clock: u64) -> Result<(), Response> {
        self.limiter().check(from, clock).map_err(too_many)
    }

    /// Counts a wrong token or enrolment key presented by `from`.
    fn failed(&self, from: IpAddr, clock: u64) {
        self.limiter().fail(from, clock);
    }
}

/// Who an authenticated request acts as, as the audit log names it (`token:NAME`).
#[derive(Debug, Clone)]
struct Admin {
    actor: String,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The clock of the rate limiter.
fn clock() -> u64 {
    u64::try_from(now()).unwrap_or(0)
}

fn source(peer: Option<&Extension<Peer>>) -> IpAddr {
    peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.0 .0.ip())
}

/// The API's router.
pub fn router(hub: Arc<Hub>) -> Router {
    routes(App::new(hub))
}

fn routes(app: App) -> Router {
    let admin = Router::new()
        .route("/keys", get(list_keys).post(create_key))
        .route(
            "/keys/{id}/revoke",
            post(on_name(|id| Command::RevokeKey { id })),
        )
        .route("/systems", get(list_systems))
        .route(
            "/systems/{name}",
            get(show_system)
                .patch(on_name_with(|name, edit| {
                    Ok(Command::UpdateSystem { name, edit })
                }))
                .delete(on_name(|name| Command::Delete { name })),
        )
        .route(
            "/systems/{name}/approve",
            post(on_name(|name| Command::Approve { name })),
        )
        .route(
            "/systems/{name}/revoke",
            post(on_name(|name| Command::Revoke { name })),
        )
        .route(
            "/systems/{name}/gateway",
            put(on_name_with(|name, Toggle { allowed }| {
                Ok(Command::SetGateway { name, allowed })
            })),
        )
        .route(
            "/subnets",
            get(list_subnets).post(on_body(StatusCode::OK, |r: SubnetRequest| {
                let subnet = r.subnet()?;
                Ok(Command::AddSubnet {
                    system: r.system,
                    subnet,
                })
            })),
        )
        .route(
            "/subnets/remove",
            post(on_body(StatusCode::OK, |r: SubnetRequest| {
                let subnet = r.subnet()?;
                Ok(Command::RemoveSubnet {
                    system: r.system,
                    subnet,
                })
            })),
        )
        .route(
            "/policies",
            get(list::<PolicyDoc>).post(create::<PolicyDoc>),
        )
        .route(
            "/policies/{name}",
            get(show_policy)
                .put(replace::<PolicyDoc>)
                .delete(remove::<PolicyDoc>),
        )
        .route("/tags", get(list::<TagDoc>).post(create::<TagDoc>))
        .route(
            "/tags/{name}",
            put(replace::<TagDoc>).delete(remove::<TagDoc>),
        )
        .route(
            "/trust-requirements",
            get(list::<TrustDoc>).post(create::<TrustDoc>),
        )
        .route(
            "/trust-requirements/{name}",
            put(replace::<TrustDoc>).delete(remove::<TrustDoc>),
        )
        .route("/app-devices", post(app_devices::add))
        .route("/app-devices/{name}", get(app_devices::config))
        .route("/explain", post(explain))
        .route("/audit", get(audit))
        .route("/network", get(network))
        .route(
            "/definition",
            get(export)
                .put(import)
                .layer(DefaultBodyLimit::max(MAX_DEFINITION)),
        )
        .route_layer(middleware::from_fn_with_state(app.clone(), authenticate));
    let api = Router::new()
        .route("/enrol", post(enrol))
        .route("/agent", get(upgrade::agent))
        .merge(admin)
        .layer(DefaultBodyLimit::max(MAX_BODY));
    Router::new()
        .nest("/api/v1", api)
        .fallback(|| async { failure(StatusCode::NOT_FOUND, "no such endpoint; see docs/api.md") })
        .with_state(app)
}

// ---- the plumbing every handler shares ----

/// The bare 401: no detail on why.
fn unauthorized() -> Response {
    let mut response = StatusCode::UNAUTHORIZED.into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn too_many(wait: u64) -> Response {
    let mut response = failure(
        StatusCode::TOO_MANY_REQUESTS,
        &format!("too many failed attempts from this address; try again in {wait} s"),
    );
    if let Ok(value) = HeaderValue::from_str(&wait.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// The admin routes' gate: the rate limit, then the token; the request goes on as [`Admin`].
async fn authenticate(
    State(app): State<App>,
    peer: Option<Extension<Peer>>,
    mut request: Request,
    next: Next,
) -> Response {
    let from = source(peer.as_ref());
    let clock = clock();
    if let Err(held) = app.held_back(from, clock) {
        return held;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(presented) = presented.filter(|t| t.len() <= 128) else {
        return unauthorized();
    };
    let hash = secret::hash(presented);
    // While the database is down, the tokens of the last state read still tell who is who:
    // a caller without a valid token learns nothing (not even that the database is down).
    let state = match app.service.state().await {
        Ok(state) => state,
        Err(e) => match app.service.cached().await {
            Some(state) => {
                tracing::debug!(error = %e, "checking a token against the last state read");
                state
            }
            None => {
                tracing::warn!(error = %e, "cannot check a token: the database is down");
                return unauthorized();
            }
        },
    };
    let admin = state
        .tokens
        .values()
        .find(|t| !t.revoked && secret::same(t.hash.expose(), &hash))
        .map(|t| Admin {
            actor: format!("token:{}", t.name),
        });
    match admin {
        Some(admin) => {
            request.extensions_mut().insert(admin);
            next.run(request).await
        }
        None => {
            app.failed(from, clock);
            tracing::info!(source = %from, "refused an admin request with a wrong token");
            unauthorized()
        }
    }
}

fn failure(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// The answer when the core replied with another kind of object than the handler asked for.
fn unexpected() -> Response {
    failure(StatusCode::INTERNAL_SERVER_ERROR, "unexpected reply")
}

fn refusal(refusal: &Refusal) -> Response {
    let status = match refusal {
        Refusal::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        Refusal::NotFound { .. } => StatusCode::NOT_FOUND,
        Refusal::Exists { .. } | Refusal::Stale { .. } | Refusal::KeyTaken(_) => {
            StatusCode::CONFLICT
        }
        Refusal::Key(_) => StatusCode::FORBIDDEN,
        Refusal::NoAddress(_) => StatusCode::INSUFFICIENT_STORAGE,
    };
    let mut body = json!({ "error": refusal.to_string() });
    if let Refusal::Invalid(problems) = refusal {
        body["problems"] = json!(problems);
    }
    (status, Json(body)).into_response()
}

/// A `422` naming the request's `field`.
fn bad(field: &str, message: String) -> Response {
    refusal(&core::problem(field, message))
}

fn service_failure(error: &service::Error) -> Response {
    match error {
        service::Error::Refused(r) => refusal(r),
        service::Error::Store(e) => {
            tracing::warn!(error = %e, source = ?std::error::Error::source(e), "store failed");
            failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is unavailable; nothing was changed. Try again later",
            )
        }
        service::Error::Busy => failure(StatusCode::SERVICE_UNAVAILABLE, &error.to_string()),
    }
}

/// Parses a JSON body with a message that says what was wrong where.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, Response> {
    serde_json::from_slice(bytes).map_err(|e| {
        failure(
            StatusCode::BAD_REQUEST,
            &format!("the request body is not what this endpoint takes: {e}"),
        )
    })
}

/// A JSON body as an extractor: within the route's size limit (else `413`), parsed by
/// [`body`] (else `400`).
struct JsonBody<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        body(&bytes).map(JsonBody)
    }
}

type Reply2 = Result<Response, Response>;

/// Runs `command` for the authenticated admin; a refusal or a store failure is the answer.
async fn run(app: &App, admin: &Admin, command: Command) -> Result<core::Outcome, Response> {
    let ctx = Ctx {
        actor: admin.actor.clone(),
        now: now(),
    };
    app.service
        .execute(command, &ctx)
        .await
        .map_err(|e| service_failure(&e))
}

/// Runs `command` and answers with the object it was about (and the validation's warnings).
async fn execute(app: &App, admin: &Admin, command: Command, status: StatusCode) -> Reply2 {
    let outcome = run(app, admin, command).await?;
    Ok(reply(&outcome, status))
}

fn reply(outcome: &core::Outcome, status: StatusCode) -> Response {
    let mut value = serde_json::to_value(&outcome.reply).unwrap_or_default();
    if !outcome.warnings.is_empty() {
        if let Some(object) = value.as_object_mut() {
            object.insert("warnings".into(), json!(outcome.warnings));
        }
    }
    (status, Json(value)).into_response()
}

async fn state(app: &App) -> Result<Arc<Network>, Response> {
    app.service.state().await.map_err(|e| service_failure(&e))
}

/// What the handler makers return: a boxed future of the answer.
type Handled = Pin<Box<dyn Future<Output = Reply2> + Send>>;

/// A handler for `POST`/`DELETE …/{name}` without a body: `make` turns the path's name into
/// the command.
fn on_name(
    make: fn(String) -> Command,
) -> impl Fn(State<App>, Extension<Admin>, Path<String>) -> Handled + Clone + Send + Sync + 'static
{
    move |State(app), Extension(admin), Path(name)| {
        Box::pin(async move { execute(&app, &admin, make(name), StatusCode::OK).await })
    }
}

/// A handler for `PUT`/`PATCH …/{name}` with a JSON body: `make` turns both into the command.
fn on_name_with<T: DeserializeOwned + Send + 'static>(
    make: fn(String, T) -> Result<Command, Response>,
) -> impl Fn(State<App>, Extension<Admin>, Path<String>, JsonBody<T>) -> Handled
       + Clone
       + Send
       + Sync
       + 'static {
    move |State(app), Extension(admin), Path(name), JsonBody(request)| {
        Box::pin(async move {
            let command = make(name, request)?;
            execute(&app, &admin, command, StatusCode::OK).await
        })
    }
}

/// A handler for `POST` with a JSON body: `make` turns it into the command.
fn on_body<T: DeserializeOwned + Send + 'static>(
    status: StatusCode,
    make: fn(T) -> Result<Command, Response>,
) -> impl Fn(State<App>, Extension<Admin>, JsonBody<T>) -> Handled + Clone + Send + Sync + 'static {
    move |State(app), Extension(admin), JsonBody(request)| {
        Box::pin(async move {
            let command = make(request)?;
            execute(&app, &admin, command, status).await
        })
    }
}

// ---- enrolment keys ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateKey {
    #[serde(default)]
    tags: std::collections::BTreeSet<String>,
    #[serde(default = "manual")]
    approval: ApprovalMode,
    #[serde(default)]
    uses: Option<u32>,
    /// A duration: `90s`, `30m`, `24h`, `7d`.
    #[serde(default)]
    expires: Option<String>,
    #[serde(default)]
    ephemeral: bool,
}

fn manual() -> ApprovalMode {
    ApprovalMode::Manual
}

/// Parses `90s`, `30m`, `24h`, `7d` (or plain seconds) into seconds, at most ten years.
pub fn parse_duration(text: &str) -> Option<i64> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, "s"),
    };
    let n: i64 = number.parse().ok()?;
    let seconds = n.checked_mul(match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    })?;
    (seconds > 0 && seconds <= 10 * 366 * 86_400).then_some(seconds)
}

#[derive(Serialize)]
struct KeyView {
    #[serde(flatten)]
    key: EnrolmentKey,
    /// `valid`, `revoked`, `expired` or `used up`.
    status: &'static str,
}

fn key_view(key: &EnrolmentKey, now: i64) -> KeyView {
    KeyView {
        key: key.clone(),
        status: match core::key_state(key, now) {
            Ok(()) => "valid",
            Err(core::KeyRefusal::Revoked) => "revoked",
            Err(core::KeyRefusal::Expired) => "expired",
            Err(_) => "used up",
        },
    }
}

async fn create_key(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    JsonBody(request): JsonBody<CreateKey>,
) -> Reply2 {
    let expires_at = match &request.expires {
        None => None,
        Some(text) => match parse_duration(text) {
            Some(seconds) => Some(now() + seconds),
            None => {
                return Err(refusal(&Refusal::Invalid(vec![FieldProblem {
                    severity: enclave_policy::Severity::Error,
                    field: "expires".into(),
                    message: format!("{text:?} is not a duration"),
                    hint: Some("write a number and a unit: 90s, 30m, 24h, 7d, 2w".into()),
                }])))
            }
        },
    };
    let made = secret::generate(secret::KEY_PREFIX);
    let command = Command::CreateKey(NewKey {
        id: made.id.clone(),
        hash: made.hash.expose().clone(),
        tags: request.tags,
        approval: request.approval,
        uses: request.uses,
        expires_at,
        ephemeral: request.ephemeral,
    });
    let outcome = run(&app, &admin, command).await?;
    let Reply::Key(key) = &outcome.reply else {
        return Err(unexpected());
    };
    // The only time the key itself is ever sent.
    let mut value = serde_json::to_value(key_view(key, now())).unwrap_or_default();
    value["key"] = json!(made.text);
    Ok((StatusCode::CREATED, Json(value)).into_response())
}

async fn list_keys(State(app): State<App>) -> Reply2 {
    let state = state(&app).await?;
    let now = now();
    let keys: Vec<KeyView> = state.keys.values().map(|k| key_view(k, now)).collect();
    Ok(Json(keys).into_response())
}

// ---- enrolment ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Enrol {
    key: String,
    public_key: String,
    #[serde(default)]
    hostname: Option<String>,
}

async fn enrol(State(app): State<App>, peer: Option<Extension<Peer>>, bytes: Bytes) -> Reply2 {
    let from = source(peer.as_ref());
    let clock = clock();
    // Before the body is even parsed: a held-back source learns nothing more.
    app.held_back(from, clock)?;
    let request: Enrol = body(&bytes)?;
    if request.key.len() > 128 || request.hostname.as_ref().is_some_and(|h| h.len() > 253) {
        return Err(failure(
            StatusCode::BAD_REQUEST,
            "the key (at most 128 characters) or hostname (at most 253) is too long",
        ));
    }
    let key_hash = secret::hash(request.key.trim());
    let ctx = Ctx {
        actor: format!("key:{}", &key_hash[..12]),
        now: now(),
    };
    let command = Command::Enrol {
        key_hash,
        public_key: request.public_key.trim().to_owned(),
        hostname: request.hostname,
    };
    match app.service.execute(command, &ctx).await {
        Ok(outcome) => {
            let Reply::System(system) = &outcome.reply else {
                return Err(unexpected());
            };
            let state = state(&app).await?;
            Ok((
                StatusCode::CREATED,
                Json(json!({
                    "system": system.name,
                    "address": system.address,
                    "overlay": state.settings.overlay,
                    "approval": system.approval,
                    "tags": system.tags,
                })),
            )
                .into_response())
        }
        Err(service::Error::Refused(Refusal::Key(why))) => {
            app.failed(from, clock);
            tracing::info!(source = %from, reason = %why, "refused an enrolment");
            Err(refusal(&Refusal::Key(why)))
        }
        Err(e) => Err(service_failure(&e)),
    }
}

// ---- systems ----

#[derive(Serialize)]
struct SystemView {
    #[serde(flatten)]
    system: ManagedSystem,
    /// The subnets this system serves as a gateway now (or would, once discovered).
    gateway_subnets: Vec<String>,
    /// The server holding its agent's connection (or that last held it).
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<String>,
    /// The underlay address that server sees.
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint_seen: Option<String>,
    /// Its agent, when connected to this server: what it reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    agent: Option<agents::AgentInfo>,
}

/// The subnets each gateway serves now, by system (one pass over all systems).
fn served(state: &Network) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut served: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for row in core::subnet_rows(state) {
        if row.state == "served" {
            served
                .entry(row.system)
                .or_default()
                .push(row.subnet.to_string());
        }
    }
    served
}

/// A system with where its agent is: connected and last seen are the agents' side's, not
/// the stored columns (which a commit never moves).
fn system_view(
    served: &std::collections::BTreeMap<String, Vec<String>>,
    seen: &std::collections::HashMap<String, Seen>,
    system: &ManagedSystem,
) -> SystemView {
    let mut shown = system.clone();
    let seen = seen.get(&system.public_key).cloned().unwrap_or_default();
    shown.connected = seen.connected;
    shown.last_seen = seen.last_seen.or(system.last_seen);
    SystemView {
        system: shown,
        gateway_subnets: served.get(&system.name).cloned().unwrap_or_default(),
        server: seen.server,
        endpoint_seen: seen.endpoint,
        agent: None,
    }
}

async fn list_systems(State(app): State<App>) -> Reply2 {
    let state = state(&app).await?;
    let served = served(&state);
    let seen = app.hub.seen().await;
    let systems: Vec<SystemView> = state
        .systems
        .values()
        .map(|s| system_view(&served, &seen, s))
        .collect();
    Ok(Json(systems).into_response())
}

async fn show_system(State(app): State<App>, Path(name): Path<String>) -> Reply2 {
    let state = state(&app).await?;
    match state.systems.get(&name) {
        Some(system) => {
            let mut view = system_view(&served(&state), &app.hub.seen().await, system);
            view.agent = app.hub.connected_here().remove(&name);
            Ok(Json(view).into_response())
        }
        None => Err(refusal(&Refusal::NotFound {
            what: "system",
            name,
        })),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Toggle {
    allowed: bool,
}

// ---- subnets ----

async fn list_subnets(State(app): State<App>) -> Reply2 {
    let state = state(&app).await?;
    Ok(Json(core::subnet_rows(&state)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubnetRequest {
    system: String,
    subnet: String,
}

impl SubnetRequest {
    /// The subnet, host bits clear.
    fn subnet(&self) -> Result<ipnet::Ipv4Net, Response> {
        core::parse_subnet("subnet", &self.subnet).map_err(|r| refusal(&r))
    }
}

// ---- policies, tags, trust requirements ----

/// A whole object of the definition that the API lists, creates, replaces (at the version
/// the client read) and deletes by name: a policy, a `[[tag]]` entry, a trust requirement.
trait Document: Edit + Serialize + DeserializeOwned + Send + Sync + 'static {}

impl<D: Edit + Serialize + DeserializeOwned + Send + Sync + 'static> Document for D {}

async fn list<D: Document>(State(app): State<App>) -> Reply2 {
    let state = state(&app).await?;
    Ok(Json(D::all(&state).values().collect::<Vec<_>>()).into_response())
}

async fn create<D: Document>(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    JsonBody(doc): JsonBody<D>,
) -> Reply2 {
    execute(&app, &admin, doc.put(Write::Create), StatusCode::CREATED).await
}

/// Replaces the object the path names; the body must carry the same name (renaming is
/// deleting and creating) and the `version` the client read.
async fn replace<D: Document>(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Path(name): Path<String>,
    JsonBody(doc): JsonBody<D>,
) -> Reply2 {
    if doc.name() != name {
        return Err(failure(
            StatusCode::BAD_REQUEST,
            &format!(
                "the body's name {:?} differs from the path's {name:?}; rename by deleting and \
                 creating",
                doc.name()
            ),
        ));
    }
    execute(&app, &admin, doc.put(Write::Update), StatusCode::OK).await
}

async fn remove<D: Document>(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Path(name): Path<String>,
) -> Reply2 {
    execute(&app, &admin, D::delete(name), StatusCode::OK).await
}

async fn show_policy(State(app): State<App>, Path(name): Path<String>) -> Reply2 {
    let state = state(&app).await?;
    match state.policies.get(&name) {
        Some(policy) => Ok(Json(policy).into_response()),
        None => Err(refusal(&Refusal::NotFound {
            what: "policy",
            name,
        })),
    }
}

// ---- import, export, explain, audit ----

async fn export(State(app): State<App>) -> Reply2 {
    let state = state(&app).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/toml; charset=utf-8")],
        definition::render(&state),
    )
        .into_response())
}

#[derive(Deserialize)]
struct ImportQuery {
    #[serde(default)]
    file: Option<String>,
}

async fn import(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    Query(query): Query<ImportQuery>,
    bytes: Bytes,
) -> Reply2 {
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return Err(failure(
            StatusCode::BAD_REQUEST,
            "the network definition is not UTF-8 text",
        ));
    };
    let file = query.file.unwrap_or_else(|| "network.toml".to_owned());
    let file: String = file.chars().filter(|c| !c.is_control()).take(200).collect();
    let imported = match definition::import(&file, text, now()) {
        Ok(imported) => imported,
        Err(diagnostics) => {
            let errors = diagnostics.iter().filter(|d| d.severity.is_error()).count();
            return Err((
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({
                    "error": format!(
                        "the network definition {file} is not valid ({})",
                        enclave_policy::plural(errors, "error")
                    ),
                    "diagnostics": diagnostics.iter().map(ToString::to_string).collect::<Vec<_>>(),
                })),
            )
                .into_response());
        }
    };
    let command = Command::Import(Box::new(imported));
    execute(&app, &admin, command, StatusCode::OK).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExplainRequest {
    from: String,
    /// `ADDR` or `ADDR:PORT`.
    to: String,
    #[serde(default)]
    proto: Option<String>,
    #[serde(default)]
    from_ip: Option<Ipv4Addr>,
    /// RFC 3339; now when absent.
    #[serde(default)]
    at: Option<String>,
}

async fn explain(State(app): State<App>, JsonBody(request): JsonBody<ExplainRequest>) -> Reply2 {
    let (to, port) = match request.to.split_once(':') {
        Some((addr, port)) => (
            addr,
            Some(
                port.parse::<u16>()
                    .map_err(|_| bad("to", format!("{port:?} is not a port (1-65535)")))?,
            ),
        ),
        None => (request.to.as_str(), None),
    };
    let to: Ipv4Addr = to
        .parse()
        .map_err(|_| bad("to", format!("{to:?} is not an IPv4 address")))?;
    let protocol = match request.proto.as_deref() {
        None => None,
        Some("any") => Some(Protocol::Any),
        Some("icmp") => Some(Protocol::Icmp),
        Some("tcp") => Some(Protocol::Tcp),
        Some("udp") => Some(Protocol::Udp),
        Some(other) => {
            return Err(bad(
                "proto",
                format!("{other:?} is not a protocol: any, icmp, tcp or udp"),
            ))
        }
    };
    let at = match request.at {
        None => Timestamp::now(),
        Some(text) => text
            .parse()
            .map_err(|_| bad("at", format!("{text:?} is not an RFC 3339 time")))?,
    };
    let state = state(&app).await?;
    let network = definition::validate(&state)
        .map_err(|p| refusal(&Refusal::Invalid(p)))?
        .network;
    let query = enclave_policy::Query {
        from: request.from,
        to,
        protocol,
        port,
        public_ip: request.from_ip,
        at,
    };
    match enclave_policy::explain(&network, &query) {
        Ok(answer) => {
            let mut value = serde_json::to_value(&answer).unwrap_or_default();
            value["text"] = json!(answer.to_string());
            Ok(Json(value).into_response())
        }
        Err(e) => Err(failure(StatusCode::NOT_FOUND, &e.to_string())),
    }
}

#[derive(Deserialize)]
struct AuditQuery {
    #[serde(default)]
    after: i64,
    #[serde(default = "hundred")]
    limit: u32,
}

fn hundred() -> u32 {
    100
}

async fn audit(State(app): State<App>, Query(query): Query<AuditQuery>) -> Reply2 {
    let entries = app
        .service
        .audit(query.after, query.limit.clamp(1, 1000))
        .await
        .map_err(|e| service_failure(&e))?;
    Ok(Json(entries).into_response())
}

async fn network(State(app): State<App>) -> Reply2 {
    let state = state(&app).await?;
    Ok(Json(json!({
        "revision": state.revision,
        "overlay": state.settings.overlay,
        "keepalive": state.settings.keepalive,
        "systems": state.systems.len(),
        "policies": state.policies.len(),
    }))
    .into_response())
}

#[path = "api_upgrade.rs"]
mod upgrade;

#[path = "api_app.rs"]
mod app_devices;

#[cfg(test)]
#[path = "api_tests.rs"]
mod tests;
