//! The HTTP JSON API, `/api/v1/`: it only translates between HTTP and the service.
//!
//! Every endpoint but `POST /api/v1/enrol` needs `Authorization: Bearer TOKEN` (an admin
//! token); without a valid one the answer is a bare `401`. Failed tokens and enrolment keys
//! are rate-limited per source address ([`crate::limit`]). Errors are
//! `{"error": "…", "problems": [{"field", "message", "hint"}]}` with a status that says what
//! kind (400 malformed, 403 key refused, 404, 409 conflict, 422 refused by the rules, 429,
//! 503 database). See `docs/api.md`.

// Handlers return `Result<Response, Response>`: the error is the answer itself, made once per
// request on its way out; boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use enclave_policy::{Protocol, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::core::{self, Command, Ctx, NewKey, Refusal, Reply, SystemEdit, Write};
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

/// Shared by every handler.
#[derive(Debug, Clone)]
pub struct App {
    service: Arc<Service>,
    limiter: Arc<Mutex<Limiter>>,
}

/// Who an authenticated request acts as (the token's name).
#[derive(Debug, Clone)]
struct Admin(String);

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn source(peer: Option<&Extension<Peer>>) -> IpAddr {
    peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.0 .0.ip())
}

/// The API's router.
pub fn router(service: Arc<Service>) -> Router {
    let app = App {
        service,
        limiter: Arc::new(Mutex::new(Limiter::new())),
    };
    let admin = Router::new()
        .route("/keys", get(list_keys).post(create_key))
        .route("/keys/{id}/revoke", post(revoke_key))
        .route("/systems", get(list_systems))
        .route(
            "/systems/{name}",
            get(show_system).patch(update_system).delete(delete_system),
        )
        .route("/systems/{name}/approve", post(approve_system))
        .route("/systems/{name}/revoke", post(revoke_system))
        .route("/systems/{name}/gateway", put(set_gateway))
        .route("/subnets", get(list_subnets).post(add_subnet))
        .route("/subnets/remove", post(remove_subnet))
        .route("/policies", get(list_policies).post(create_policy))
        .route(
            "/policies/{name}",
            get(show_policy).put(update_policy).delete(delete_policy),
        )
        .route("/tags", get(list_tags).post(create_tag))
        .route("/tags/{name}", put(update_tag).delete(delete_tag))
        .route("/trust-requirements", get(list_trust).post(create_trust))
        .route(
            "/trust-requirements/{name}",
            put(update_trust).delete(delete_trust),
        )
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
        .merge(admin)
        .layer(DefaultBodyLimit::max(MAX_BODY));
    Router::new()
        .nest("/api/v1", api)
        .fallback(|| async { failure(StatusCode::NOT_FOUND, "no such endpoint; see docs/api.md") })
        .with_state(app)
}

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

async fn authenticate(
    State(app): State<App>,
    peer: Option<Extension<Peer>>,
    mut request: Request,
    next: Next,
) -> Response {
    let from = source(peer.as_ref());
    let clock = u64::try_from(now()).unwrap_or(0);
    if let Err(wait) = app
        .limiter
        .lock()
        .map_or(Ok(()), |mut l| l.check(from, clock))
    {
        return too_many(wait);
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
    let state = match app.service.state().await {
        Ok(state) => state,
        Err(e) => return service_failure(&e),
    };
    let admin = state
        .tokens
        .values()
        .find(|t| !t.revoked && secret::same(&t.hash, &hash))
        .map(|t| t.name.clone());
    match admin {
        Some(name) => {
            request.extensions_mut().insert(Admin(name));
            next.run(request).await
        }
        None => {
            if let Ok(mut limiter) = app.limiter.lock() {
                limiter.fail(from, clock);
            }
            tracing::info!(source = %from, "refused an admin request with a wrong token");
            unauthorized()
        }
    }
}

fn failure(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
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
fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, Response> {
    serde_json::from_slice(bytes).map_err(|e| {
        failure(
            StatusCode::BAD_REQUEST,
            &format!("the request body is not what this endpoint takes: {e}"),
        )
    })
}

type Reply2 = Result<Response, Response>;

async fn run(app: &App, command: Command, actor: String) -> Result<core::Outcome, Response> {
    let ctx = Ctx { actor, now: now() };
    app.service
        .execute(command, &ctx)
        .await
        .map_err(|e| service_failure(&e))
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
    Extension(Admin(who)): Extension<Admin>,
    bytes: Bytes,
) -> Reply2 {
    let request: CreateKey = body(&bytes)?;
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
        hash: made.hash.clone(),
        tags: request.tags,
        approval: request.approval,
        uses: request.uses,
        expires_at,
        ephemeral: request.ephemeral,
    });
    let outcome = run(&app, command, format!("token:{who}")).await?;
    let Reply::Key(key) = &outcome.reply else {
        return Err(failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "unexpected reply",
        ));
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

async fn revoke_key(
    State(app): State<App>,
    Extension(Admin(who)): Extension<Admin>,
    Path(id): Path<String>,
) -> Reply2 {
    let outcome = run(&app, Command::RevokeKey { id }, format!("token:{who}")).await?;
    Ok(reply(&outcome, StatusCode::OK))
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
    let clock = u64::try_from(now()).unwrap_or(0);
    if let Err(wait) = app
        .limiter
        .lock()
        .map_or(Ok(()), |mut l| l.check(from, clock))
    {
        return Err(too_many(wait));
    }
    let request: Enrol = body(&bytes)?;
    if request.key.len() > 128 || request.hostname.as_ref().is_some_and(|h| h.len() > 253) {
        return Err(failure(
            StatusCode::BAD_REQUEST,
            "the key (at most 128 characters) or hostname (at most 253) is too long",
        ));
    }
    let command = Command::Enrol {
        key_hash: secret::hash(request.key.trim()),
        public_key: request.public_key.trim().to_owned(),
        hostname: request.hostname,
    };
    let key_id = secret::hash(request.key.trim())[..12].to_owned();
    let ctx = Ctx {
        actor: format!("key:{key_id}"),
        now: now(),
    };
    match app.service.execute(command, &ctx).await {
        Ok(outcome) => {
            let Reply::System(system) = &outcome.reply else {
                return Err(failure(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "unexpected reply",
                ));
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
            if let Ok(mut limiter) = app.limiter.lock() {
                limiter.fail(from, clock);
            }
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

fn system_view(
    served: &std::collections::BTreeMap<String, Vec<String>>,
    system: &ManagedSystem,
) -> SystemView {
    SystemView {
        system: system.clone(),
        gateway_subnets: served.get(&system.name).cloned().unwrap_or_default(),
    }
}

async fn list_systems(State(app): State<App>) -> Reply2 {
    let state = state(&app).await?;
    let served = served(&state);
    let systems: Vec<SystemView> = state
        .systems
        .values()
        .map(|s| system_view(&served, s))
        .collect();
    Ok(Json(systems).into_response())
}

async fn show_system(State(app): State<App>, Path(name): Path<String>) -> Reply2 {
    let state = state(&app).await?;
    match state.systems.get(&name) {
        Some(system) => Ok(Json(system_view(&served(&state), system)).into_response()),
        None => Err(refusal(&Refusal::NotFound {
            what: "system",
            name,
        })),
    }
}

async fn simple(app: &App, who: &str, command: Command, status: StatusCode) -> Reply2 {
    let outcome = run(app, command, format!("token:{who}")).await?;
    Ok(reply(&outcome, status))
}

async fn update_system(
    State(app): State<App>,
    Extension(Admin(who)): Extension<Admin>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Reply2 {
    let edit: SystemEdit = body(&bytes)?;
    simple(
        &app,
        &who,
        Command::UpdateSystem { name, edit },
        StatusCode::OK,
    )
    .await
}

async fn delete_system(
    State(app): State<App>,
    Extension(Admin(who)): Extension<Admin>,
    Path(name): Path<String>,
) -> Reply2 {
    simple(&app, &who, Command::Delete { name }, StatusCode::OK).await
}

async fn approve_system(
    State(app): State<App>,
    Extension(Admin(who)): Extension<Admin>,
    Path(name): Path<String>,
) -> Reply2 {
    simple(&app, &who, Command::Approve { name }, StatusCode::OK).await
}

async fn revoke_system(
    State(app): State<App>,
    Extension(Admin(who)): Extension<Admin>,
    Path(name): Path<String>,
) -> Reply2 {
    simple(&app, &who, Command::Revoke { name }, StatusCode::OK).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Toggle {
    allowed: bool,
}

async fn set_gateway(
    State(app): State<App>,
    Extension(Admin(who)): Extension<Admin>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Reply2 {
    let Toggle { allowed } = body(&bytes)?;
    simple(
        &app,
        &who,
        Command::SetGateway { name, allowed },
        StatusCode::OK,
    )
    .await
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

async fn add_subnet(
    State(app): State<App>,
    Extension(Admin(who)): Extension<Admin>,
    bytes: Bytes,
) -> Reply2 {
    let request: SubnetRequest = body(&bytes)?;
    let subnet = core::parse_subnet("subnet", &request.subnet).map_err(|r| refusal(&r))?;
    let command = Command::AddSubnet {
        system: request.system,
        subnet,
    };
    simple(&app, &who, command, StatusCode::OK).await
}

async fn remove_subnet(
    State(app): State<App>,
    Extension(Admin(who)): Extension<Admin>,
    bytes: Bytes,
) -> Reply2 {
    let request: SubnetRequest = body(&bytes)?;
    let subnet = core::parse_subnet("subnet", &request.subnet).map_err(|r| refusal(&r))?;
    let command = Command::RemoveSubnet {
        system: request.system,
        subnet,
    };
    simple(&app, &who, command, StatusCode::OK).await
}

// ---- policies, tags, trust requirements ----

async fn list_policies(State(app): State<App>) -> Reply2 {
    let state = state(&app).await?;
    Ok(Json(state.policies.values().collect::<Vec<_>>()).into_response())
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

fn same_name(path: &str, body: &str) -> Result<(), Response> {
    if path == body {
        Ok(())
    } else {
        Err(failure(
            StatusCode::BAD_REQUEST,
            &format!(
                "the body's name {body:?} differs from the path's {path:?}; rename by \
                 deleting and creating"
            ),
        ))
    }
}

async fn create_policy(
    State(app): State<App>,
    Extension(Admin(who)): Extension<Admin>,
    bytes: Bytes,
) -> Reply2 {
    let doc: PolicyDoc = body(&bytes)?;
    let command = Command::PutPolicy {
        doc,
        write: Write::Create,
    };
    simple(&app, &who, command, StatusCode::CREATED).await
}

async fn update_policy(
    State(app): State<App>,
    Extension(Admin(who)): Extension<Admin>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Reply2 {
    let doc: PolicyDoc = body(&bytes)?;
    same_name(&name, &doc.name)?;
    let command = Command::PutPolicy {
        doc,
        write: Write::Update,
    };
    simple(&app, &who, command, StatusCode::OK).await
}

async fn delete_policy(
    State(app): State<App>,
    Extension(Admin(who)): Extension<Admin>,
    Path(name): Path<String>,
) -> Reply2 {
    simple(&app, &who, Command::DeletePolicy { name }, StatusCode::OK).await
}

async fn list_tags(State(app): State<App>) -> Reply2 {
    let state = state(&app).await?;
    Ok(Json(state.tags.values().collect::<Vec<_>>()).into_response())
}

async fn create_tag(
    State(app): State<App>,
    Extension(Admin(who)): Extension<Admin>,
    bytes: Bytes,
) -> Reply2 {
    let doc: TagDoc = body(&bytes)?;
    let command = Command::PutTag {
        doc,
        write: Write::Create,
    };
    simple(&app, &who, command, StatusCode::CREATED).await
}

async fn update_tag(
    State(app): State<App>,
    Extension(Admin(who)): Extension<Admin>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Reply2 {
    let doc: TagDoc = body(&bytes)?;
    same_name(&name, &doc.name)?;
    let command = Command::PutTag {
        doc,
        write: Write::Update,
    };
    simple(&app, &who, command, StatusCode::OK).await
}

async fn delete_tag(
    State(app): State<App>,
    Extension(Admin(who)): Extension<Admin>,
    Path(name): Path<String>,
) -> Reply2 {
    simple(&app, &who, Command::DeleteTag { name }, StatusCode::OK).await
}

async fn list_trust(State(app): State<App>) -> Reply2 {
    let state = state(&app).await?;
    Ok(Json(state.trust_requirements.values().collect::<Vec<_>>()).into_response())
}

async fn create_trust(
    State(app): State<App>,
    Extension(Admin(who)): Extension<Admin>,
    bytes: Bytes,
) -> Reply2 {
    let doc: TrustDoc = body(&bytes)?;
    let command = Command::PutTrust {
        doc,
        write: Write::Create,
    };
    simple(&app, &who, command, StatusCode::CREATED).await
}

async fn update_trust(
    State(app): State<App>,
    Extension(Admin(who)): Extension<Admin>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Reply2 {
    let doc: TrustDoc = body(&bytes)?;
    same_name(&name, &doc.name)?;
    let command = Command::PutTrust {
        doc,
        write: Write::Update,
    };
    simple(&app, &who, command, StatusCode::OK).await
}

async fn delete_trust(
    State(app): State<App>,
    Extension(Admin(who)): Extension<Admin>,
    Path(name): Path<String>,
) -> Reply2 {
    simple(&app, &who, Command::DeleteTrust { name }, StatusCode::OK).await
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
    Extension(Admin(who)): Extension<Admin>,
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
    simple(&app, &who, command, StatusCode::OK).await
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

fn bad(field: &str, message: String) -> Response {
    refusal(&Refusal::Invalid(vec![FieldProblem {
        severity: enclave_policy::Severity::Error,
        field: field.to_owned(),
        message,
        hint: None,
    }]))
}

async fn explain(State(app): State<App>, bytes: Bytes) -> Reply2 {
    let request: ExplainRequest = body(&bytes)?;
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

#[cfg(test)]
#[path = "api_tests.rs"]
mod tests;
