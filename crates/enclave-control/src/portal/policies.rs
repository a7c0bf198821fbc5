//! The Policies pages: the list of gateway access and direct access policies with their
//! enable/disable switch, and the form that creates or edits one (sender tags, gateways and
//! subnets or receiver tags, subnet filtering, ACLs, trust requirements, active hours).
//!
//! The form is read into a [`Draft`]: the text as typed, so a refused form is shown again as
//! it was. The draft becomes a [`PolicyDoc`] and goes through [`Command::PutPolicy`], the
//! command the API runs; its refusal's problems are shown next to their fields
//! ([`policy_form::slot`]). Edits carry the `version` read: a stale one is refused.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Form;

use super::policy_form::{self, Draft};
use super::session::Session;
use super::{html, pages, see, segment, unavailable, Portal};
use crate::core::{self, Command, Refusal, Write};
use crate::definition::FieldProblem;
use crate::model::{PolicyDoc, PolicyKind};
use crate::service;

/// A form's fields in order; a name may repeat (check boxes).
type Fields = Vec<(String, String)>;

/// The last value of each field, for the CSRF check and single fields.
fn singles(fields: &Fields) -> HashMap<String, String> {
    fields.iter().cloned().collect()
}

fn not_found(what: &str) -> Response {
    html(StatusCode::NOT_FOUND, pages::message("Not found", what))
}

/// `GET /portal/policies`.
pub(super) async fn list(State(portal): State<Portal>, headers: HeaderMap) -> Response {
    let session = match portal.page(&headers) {
        Ok(s) => s,
        Err(to) => return to,
    };
    list_page(&portal, &session, None, StatusCode::OK).await
}

async fn list_page(
    portal: &Portal,
    session: &Session,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    match portal.service.state().await {
        Ok(state) => html(status, policy_form::list(session, &state, error)),
        Err(e) => unavailable(&e),
    }
}

/// `GET /portal/new-policy?kind=gateway|direct`.
pub(super) async fn new_form(
    State(portal): State<Portal>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let session = match portal.page(&headers) {
        Ok(s) => s,
        Err(to) => return to,
    };
    let kind = match query.get("kind").map(String::as_str) {
        Some("direct") => PolicyKind::Direct,
        _ => PolicyKind::Gateway,
    };
    form_page(
        &portal,
        &session,
        &Draft::new(kind),
        &[],
        &[],
        StatusCode::OK,
    )
    .await
}

/// `GET /portal/policies/{name}`.
pub(super) async fn edit_form(
    State(portal): State<Portal>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let session = match portal.page(&headers) {
        Ok(s) => s,
        Err(to) => return to,
    };
    let state = match portal.service.state().await {
        Ok(state) => state,
        Err(e) => return unavailable(&e),
    };
    let Some(doc) = state.policies.get(&name) else {
        return not_found(&format!("There is no policy named {name:?}."));
    };
    html(
        StatusCode::OK,
        policy_form::form(&session, &state, &Draft::of(doc), &[], &[]),
    )
}

async fn form_page(
    portal: &Portal,
    session: &Session,
    draft: &Draft,
    errors: &[FieldProblem],
    warnings: &[FieldProblem],
    status: StatusCode,
) -> Response {
    match portal.service.state().await {
        Ok(state) => html(
            status,
            policy_form::form(session, &state, draft, errors, warnings),
        ),
        Err(e) => unavailable(&e),
    }
}

/// `POST /portal/new-policy`: creates the policy of the form.
pub(super) async fn create(
    State(portal): State<Portal>,
    headers: HeaderMap,
    Form(fields): Form<Fields>,
) -> Response {
    let session = match portal.form(&headers, &singles(&fields)) {
        Ok(s) => s,
        Err(refusal) => return refusal,
    };
    let draft = Draft::read(&fields, None);
    save(&portal, &session, draft, Write::Create).await
}

/// `POST /portal/policies/{name}/{action}`: `save` (the form), `enabled` (the list's switch),
/// `delete`.
pub(super) async fn act(
    State(portal): State<Portal>,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
    Form(fields): Form<Fields>,
) -> Response {
    let one = singles(&fields);
    let session = match portal.form(&headers, &one) {
        Ok(s) => s,
        Err(refusal) => return refusal,
    };
    let version = one.get("version").and_then(|v| v.trim().parse().ok());
    match action.as_str() {
        "save" => {
            let state = match portal.service.state().await {
                Ok(state) => state,
                Err(e) => return unavailable(&e),
            };
            let Some(current) = state.policies.get(&name) else {
                return not_found(&format!(
                    "There is no policy named {name:?} (any more): it was deleted."
                ));
            };
            // The kind and name are the policy's (renaming is making a new one).
            let mut draft = Draft::read(&fields, Some(current.kind));
            draft.name.clone_from(&name);
            draft.stored = true;
            save(&portal, &session, draft, Write::Update).await
        }
        "enabled" => {
            let state = match portal.service.state().await {
                Ok(state) => state,
                Err(e) => return unavailable(&e),
            };
            let Some(current) = state.policies.get(&name) else {
                return not_found(&format!("There is no policy named {name:?}."));
            };
            let doc = PolicyDoc {
                enabled: one.get("enabled").is_some_and(|v| v == "on"),
                version: version.unwrap_or(-1),
                ..current.clone()
            };
            let command = Command::PutPolicy {
                doc,
                write: Write::Update,
            };
            from_list(&portal, &session, command).await
        }
        "delete" => {
            let command = Command::DeletePolicy { name: name.clone() };
            from_list(&portal, &session, command).await
        }
        _ => not_found("There is no such change."),
    }
}

/// Runs a change made from the list (or a policy's Delete): back to the list, with the
/// refusal at its top.
async fn from_list(portal: &Portal, session: &Session, command: Command) -> Response {
    match portal.run(session, command).await {
        Ok(_) => see("/portal/policies"),
        Err(service::Error::Refused(refusal)) => {
            list_page(
                portal,
                session,
                Some(&refused_text(&refusal)),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(other) => unavailable(&other),
    }
}

/// A refusal in a sentence for the top of a page.
fn refused_text(refusal: &Refusal) -> String {
    match refusal {
        Refusal::Stale { name, .. } => format!(
            "Policy {name:?} was changed by someone else since you opened this page; nothing \
             was changed. Reload the page and make your change again."
        ),
        other => {
            let text = other.to_string();
            let mut chars = text.chars();
            chars.next().map_or(text.clone(), |first| {
                first.to_uppercase().chain(chars).collect::<String>() + "."
            })
        }
    }
}

/// Runs the draft as a create or an update; on success goes to the list (or, when the
/// validation warns about this policy, shows the form with the warnings), else shows the
/// form again with each problem next to its field.
async fn save(portal: &Portal, session: &Session, draft: Draft, write: Write) -> Response {
    let doc = draft.doc().0;
    let command = Command::PutPolicy {
        doc: doc.clone(),
        write,
    };
    match portal.run(session, command).await {
        Ok(outcome) => {
            let prefix = format!("policies[{:?}]", doc.name);
            let warnings: Vec<FieldProblem> = outcome
                .warnings
                .into_iter()
                .filter(|w| w.field.starts_with(&prefix))
                .collect();
            if warnings.is_empty() {
                return see("/portal/policies");
            }
            // Saved, with warnings: the form as saved, at its new version.
            let saved = match &outcome.reply {
                core::Reply::Policy(p) => Draft::of(p),
                _ => draft,
            };
            form_page(portal, session, &saved, &[], &warnings, StatusCode::OK).await
        }
        Err(service::Error::Refused(refusal)) => {
            let errors = match &refusal {
                Refusal::Invalid(problems) => problems
                    .iter()
                    .filter(|p| p.severity == enclave_policy::Severity::Error)
                    .cloned()
                    .collect(),
                Refusal::Exists { .. } => vec![FieldProblem {
                    severity: enclave_policy::Severity::Error,
                    field: "name".to_owned(),
                    message: format!(
                        "a policy named {:?} exists already: choose another name",
                        doc.name
                    ),
                    hint: None,
                }],
                other => vec![FieldProblem {
                    severity: enclave_policy::Severity::Error,
                    field: String::new(),
                    message: refused_text(other),
                    hint: None,
                }],
            };
            form_page(
                portal,
                session,
                &draft,
                &errors,
                &[],
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(other) => unavailable(&other),
    }
}

/// The path of a policy's page.
pub(super) fn path(name: &str) -> String {
    format!("/portal/policies/{}", segment(name))
}
