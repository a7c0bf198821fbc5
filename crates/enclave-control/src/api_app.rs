//! `POST /api/v1/app-devices` and `GET /api/v1/app-devices/{name}`: a device that runs an
//! official WireGuard app instead of our agent, and its `wg-quick` configuration
//! ([`crate::app_device`]). The key pair is made here, unless the administrator pasted the
//! public key; the private key is in exactly one answer, the one that made it, and is never
//! stored or logged.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::{Extension, Json};
use enclave_policy::Network;
use serde::Deserialize;
use serde_json::json;

use super::{refusal, run, state, unexpected, Admin, App, JsonBody, Reply2};
use crate::app_device;
use crate::core::{Command, Refusal, Reply};
use crate::definition;
use crate::model::State as Managed;
use crate::secret;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AddApp {
    name: String,
    #[serde(default)]
    tags: BTreeSet<String>,
    /// The public key the app made; without it the server makes the pair.
    #[serde(default)]
    public_key: Option<String>,
}

/// The validated network of `state`: the one the service remembers for its revision, or a
/// validation now.
fn network(app: &App, state: &Managed) -> Result<Arc<Network>, axum::response::Response> {
    if let Some(network) = app.service.validated(state.revision) {
        return Ok(network);
    }
    definition::validate(state)
        .map(|valid| Arc::new(valid.network))
        .map_err(|p| refusal(&Refusal::Invalid(p)))
}

pub(super) async fn add(
    State(app): State<App>,
    Extension(admin): Extension<Admin>,
    JsonBody(request): JsonBody<AddApp>,
) -> Reply2 {
    let pasted = request
        .public_key
        .map(|k| k.trim().to_owned())
        .filter(|k| !k.is_empty());
    let (private_key, public_key) = match pasted {
        Some(key) => (None, key),
        None => {
            let (private, public) = secret::wireguard_key_pair();
            (Some(private), public)
        }
    };
    let command = Command::AddAppDevice {
        name: request.name.trim().to_owned(),
        public_key,
        tags: request.tags,
        key_made_here: private_key.is_some(),
    };
    let outcome = run(&app, &admin, command).await?;
    let Reply::System(system) = &outcome.reply else {
        return Err(unexpected());
    };
    let network = match &outcome.network {
        Some(network) => Arc::clone(network),
        None => network(&app, &outcome.next)?,
    };
    let config = app_device::for_system(
        &outcome.next,
        &network,
        &system.name,
        private_key.as_ref().map(|k| k.as_str()),
    )
    .map_err(|r| refusal(&r))?;
    let mut value = json!({ "system": system, "config": config });
    if !outcome.warnings.is_empty() {
        value["warnings"] = json!(outcome.warnings);
    }
    Ok((StatusCode::CREATED, Json(value)).into_response())
}

pub(super) async fn config(State(app): State<App>, Path(name): Path<String>) -> Reply2 {
    let state = state(&app).await?;
    let network = network(&app, &state)?;
    let config = app_device::for_system(&state, &network, &name, None).map_err(|r| refusal(&r))?;
    Ok(Json(json!({ "config": config })).into_response())
}
