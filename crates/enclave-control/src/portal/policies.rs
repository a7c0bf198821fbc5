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
use axum::http::StatusCode;
use axum::response::Response;

use super::policy_form::{self, Draft};
use super::session::{Session, SignedIn, SignedInForm};
use super::{
    error_at, field_problems, html, missing, not_found, see, segment, unavailable, Answer, Portal,
};
use crate::core::{self, Command, Refusal, Write};
use crate::definition::FieldProblem;
use crate::model::{PolicyDoc, PolicyKind, State as Network};
use crate::service;

/// A form's fields in order; a name may repeat (check boxes).
type Fields = Vec<(String, String)>;

/// The last value of each field, for single fields.
fn singles(fields: &Fields) -> HashMap<String, String> {
    fields.iter().cloned().collect()
}

/// Policy `name` of `state`, or `404`.
pub(super) fn stored<'a>(state: &'a Network, name: &str) -> Result<&'a PolicyDoc, Response> {
    state
        .policies
        .get(name)
        .ok_or_else(|| missing("policy", name))
}

/// `GET /portal/policies`.
pub(super) async fn list(State(portal): State<Portal>, SignedIn(session): SignedIn) -> Answer {
    list_page(&portal, &session, None, StatusCode::OK).await
}

async fn list_page(
    portal: &Portal,
    session: &Session,
    error: Option<&str>,
    status: StatusCode,
) -> Answer {
    let state = portal.state().await?;
    Ok(html(status, policy_form::list(session, &state, error)))
}

/// `GET /portal/new-policy?kind=gateway|direct`.
pub(super) async fn new_form(
    State(portal): State<Portal>,
    Query(query): Query<HashMap<String, String>>,
    SignedIn(session): SignedIn,
) -> Answer {
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
    Path(name): Path<String>,
    SignedIn(session): SignedIn,
) -> Answer {
    let state = portal.state().await?;
    let doc = stored(&state, &name)?;
    Ok(html(
        StatusCode::OK,
        policy_form::form(&session, &state, &Draft::of(doc), &[], &[]),
    ))
}

async fn form_page(
    portal: &Portal,
    session: &Session,
    draft: &Draft,
    errors: &[FieldProblem],
    warnings: &[FieldProblem],
    status: StatusCode,
) -> Answer {
    let state = portal.state().await?;
    Ok(html(
        status,
        policy_form::form(session, &state, draft, errors, warnings),
    ))
}

/// `POST /portal/new-policy`: creates the policy of the form.
pub(super) async fn create(
    State(portal): State<Portal>,
    SignedInForm(session, fields): SignedInForm<Fields>,
) -> Answer {
    let draft = Draft::read(&fields, None);
    save(&portal, &session, draft, Write::Create).await
}

/// `POST /portal/policies/{name}/{action}`: `save` (the form), `enabled` (the list's switch),
/// `delete`.
pub(super) async fn act(
    State(portal): State<Portal>,
    Path((name, action)): Path<(String, String)>,
    SignedInForm(session, fields): SignedInForm<Fields>,
) -> Answer {
    let one = singles(&fields);
    let version = one.get("version").and_then(|v| v.trim().parse().ok());
    match action.as_str() {
        "save" => {
            let state = portal.state().await?;
            let current = state.policies.get(&name).ok_or_else(|| {
                not_found(&format!(
                    "There is no policy named {name:?} (any more): it was deleted."
                ))
            })?;
            // The kind and name are the policy's (renaming is making a new one).
            let mut draft = Draft::read(&fields, Some(current.kind));
            draft.name.clone_from(&name);
            draft.stored = true;
            save(&portal, &session, draft, Write::Update).await
        }
        "enabled" => {
            let state = portal.state().await?;
            let current = stored(&state, &name)?;
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
        _ => Err(not_found("There is no such change.")),
    }
}

/// Runs a change made from the list (or a policy's Delete): back to the list, with the
/// refusal at its top.
async fn from_list(portal: &Portal, session: &Session, command: Command) -> Answer {
    match portal.run(session, command).await {
        Ok(_) => Ok(see("/portal/policies")),
        Err(service::Error::Refused(refusal)) => {
            list_page(
                portal,
                session,
                Some(&refused_text(&refusal)),
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
        Err(other) => Err(unavailable(&other)),
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
async fn save(portal: &Portal, session: &Session, draft: Draft, write: Write) -> Answer {
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
                return Ok(see("/portal/policies"));
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
                Refusal::Invalid(_) => field_problems(&refusal),
                Refusal::Exists { .. } => vec![error_at(
                    "name",
                    format!(
                        "a policy named {:?} exists already: choose another name",
                        doc.name
                    ),
                    None,
                )],
                other => vec![error_at("", refused_text(other), None)],
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
        Err(other) => Err(unavailable(&other)),
    }
}

/// The path of a policy's page.
pub(super) fn path(name: &str) -> String {
    format!("/portal/policies/{}", segment(name))
}
