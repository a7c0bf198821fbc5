//! What the pages of enrolment keys, tags, trust requirements and explain share: a refused
//! form's problems shown next to the field they concern, what was typed kept, and notices.

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::Response;

use crate::core::{Command, Outcome, Refusal};
use crate::definition::FieldProblem;
use crate::service;

use super::pages::{esc, paragraph, FIELD_ERROR};
use super::session::Session;
use super::{error_at, field_problems, see, unavailable, Portal};

/// How a page is shown: a refused form's problems, what is said at its top, its status.
#[derive(Debug, Clone)]
pub(crate) struct View {
    /// The refused form's problems and what was typed.
    pub(crate) fields: Fields,
    /// HTML said above the page's content (a notice, the new key, an error).
    pub(crate) top: String,
    /// The answer's status.
    pub(crate) status: StatusCode,
}

impl Default for View {
    fn default() -> Self {
        Self {
            fields: Fields::default(),
            top: String::new(),
            status: StatusCode::OK,
        }
    }
}

impl View {
    /// A page with `top` (HTML) above its content.
    pub(crate) fn said(top: String) -> Self {
        Self {
            top,
            ..Self::default()
        }
    }

    /// A page that says what was done, and the validation's warnings.
    pub(crate) fn notice(done: &str, warnings: &[FieldProblem]) -> Self {
        Self::said(notice(done, warnings))
    }

    /// A page whose form was refused.
    pub(crate) fn refused(fields: Fields) -> Self {
        Self {
            fields,
            status: StatusCode::UNPROCESSABLE_ENTITY,
            ..Self::default()
        }
    }
}

/// What running a form's change came to.
pub(crate) enum Ran {
    /// It was done.
    Done(Box<Outcome>),
    /// It was refused: the page to show.
    Shown(View),
}

impl Ran {
    /// After a change that saves something: back to `to` when it was done and the
    /// validation has nothing to say, else the page again, saying `done` with the warnings,
    /// or with the refusal.
    pub(crate) fn saved(self, to: &str, done: &str) -> Result<View, Response> {
        match self {
            Self::Done(outcome) if outcome.warnings.is_empty() => Err(see(to)),
            Self::Done(outcome) => Ok(View::notice(done, &outcome.warnings)),
            Self::Shown(view) => Ok(view),
        }
    }
}

impl Portal {
    /// Runs the change of a form, with what was `typed` into it, as the session's user: done;
    /// refused, shown at the fields of form `form` (or at the top of the page for `None`);
    /// or, when the service failed, the answer.
    pub(super) async fn change(
        &self,
        session: &Session,
        command: Command,
        form: Option<&str>,
        typed: &HashMap<String, String>,
    ) -> Result<Ran, Response> {
        ran(self.run(session, command).await, form, typed)
    }

    /// Runs a `command` that removes something, from a form without fields (a delete button):
    /// the page to show again, saying `done`, or with the refusal at its top; or, when the
    /// service failed, the answer.
    pub(super) async fn remove(
        &self,
        session: &Session,
        command: Command,
        typed: &HashMap<String, String>,
        done: &str,
    ) -> Result<View, Response> {
        Ok(match self.change(session, command, None, typed).await? {
            Ran::Done(_) => View::notice(done, &[]),
            Ran::Shown(view) => view,
        })
    }
}

fn ran(
    result: Result<Outcome, service::Error>,
    form: Option<&str>,
    typed: &HashMap<String, String>,
) -> Result<Ran, Response> {
    match result {
        Ok(outcome) => Ok(Ran::Done(Box::new(outcome))),
        Err(service::Error::Refused(refusal)) => Ok(Ran::Shown(match form {
            Some(form) => View::refused(Fields::refused(form, &refusal, typed)),
            None => View {
                status: match refusal {
                    Refusal::NotFound { .. } => StatusCode::NOT_FOUND,
                    _ => StatusCode::UNPROCESSABLE_ENTITY,
                },
                ..View::said(format!(
                    r#"<p class="error" role="alert">{}</p>"#,
                    esc(&refusal.to_string())
                ))
            },
        })),
        Err(other) => Err(unavailable(&other)),
    }
}

/// A form's problems (errors of a refusal, or warnings of an accepted change) and what was
/// typed into it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Fields {
    /// Which form (a page may have several); problems show only in their own form.
    form: String,
    problems: Vec<FieldProblem>,
    typed: HashMap<String, String>,
}

/// The form field a problem's field names: its last part, without indices or quoted names.
/// `trust_requirements["a.b"].allow[0]` → `allow`, `tags[2]` → `tags`, `expires` → `expires`.
pub(crate) fn leaf(field: &str) -> String {
    let mut plain = String::with_capacity(field.len());
    let mut quoted = false;
    let mut escaped = false;
    for c in field.chars() {
        if quoted {
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '"') => quoted = false,
                _ => escaped = false,
            }
        } else if c == '"' {
            quoted = true;
        } else {
            plain.push(c);
        }
    }
    let last = plain.rsplit('.').next().unwrap_or("");
    last.split('[').next().unwrap_or("").to_owned()
}

impl Fields {
    /// The errors of `refusal`, for form `form`, with what was typed (less the CSRF token).
    pub(crate) fn refused(form: &str, refusal: &Refusal, typed: &HashMap<String, String>) -> Self {
        let mut typed = typed.clone();
        typed.remove("csrf");
        Self {
            form: form.to_owned(),
            problems: field_problems(refusal),
            typed,
        }
    }

    /// One error at `field` of form `form` (an input the portal checks itself).
    pub(crate) fn error(
        form: &str,
        field: &str,
        message: String,
        hint: Option<&str>,
        typed: &HashMap<String, String>,
    ) -> Self {
        let refusal = Refusal::Invalid(vec![error_at(field, message, hint)]);
        Self::refused(form, &refusal, typed)
    }

    /// Whether this is about form `form`.
    pub(crate) fn is(&self, form: &str) -> bool {
        self.form == form
    }

    /// The problems of form `form` at one of `names`, as HTML to put right after the field.
    pub(crate) fn at(&self, form: &str, names: &[&str]) -> String {
        self.render(form, |leaf| names.contains(&leaf))
    }

    /// The problems of form `form` at none of `known` (the form's fields): shown at its top.
    pub(crate) fn rest(&self, form: &str, known: &[&str]) -> String {
        self.render(form, |leaf| !known.contains(&leaf))
    }

    fn render(&self, form: &str, mine: impl Fn(&str) -> bool) -> String {
        if !self.is(form) {
            return String::new();
        }
        self.problems
            .iter()
            .filter(|p| mine(&leaf(&p.field)))
            .map(|p| paragraph(FIELD_ERROR, p))
            .collect()
    }

    /// What was typed into `name` of form `form`, else `default`.
    pub(crate) fn typed<'a>(&'a self, form: &str, name: &str, default: &'a str) -> &'a str {
        if self.is(form) {
            self.typed.get(name).map_or(default, String::as_str)
        } else {
            default
        }
    }

    /// Whether checkbox `name` of form `form` was ticked, else `default`.
    pub(crate) fn ticked(&self, form: &str, name: &str, default: bool) -> bool {
        if self.is(form) {
            self.typed.get(name).is_some_and(|v| v == "on")
        } else {
            default
        }
    }
}

/// A notice at the top of a page: what was done, and the validation's warnings.
pub(crate) fn notice(done: &str, warnings: &[FieldProblem]) -> String {
    let mut out = format!(r#"<p class="notice" role="status">{}</p>"#, esc(done));
    for w in warnings {
        out.push_str(&paragraph(
            r#"<p class="warning" role="status">Warning: "#,
            w,
        ));
    }
    out
}

/// Items typed one per line or separated by commas (tags, address ranges, hours).
pub(crate) fn items(text: &str) -> Vec<String> {
    text.split([',', '\n', '\r'])
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The text of form field `name`, trimmed.
pub(crate) fn field(form: &HashMap<String, String>, name: &str) -> String {
    form.get(name).map_or("", String::as_str).trim().to_owned()
}
