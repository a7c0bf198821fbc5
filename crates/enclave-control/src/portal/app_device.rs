//! "Add a device with the WireGuard app": a form (name, tags, and the public key if the app
//! made the pair), then the device's `wg-quick` configuration as text, as a `.conf` download
//! and as a QR code for the mobile apps ([`crate::app_device`]).
//!
//! The private key, when the server made the pair, is on the one page that answers the form:
//! never stored, never logged. The download button on that page posts it back once (with the
//! form's CSRF token); the server checks that it is the pair of the device's public key and
//! answers the file, so the key is never in a URL, a cookie or a cache. Later visits show the
//! file without it.

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use qrcode::render::svg;
use qrcode::{EcLevel, QrCode};

use super::fields::field;
use super::pages::{esc, layout, FIELD_ERROR};
use super::session::{Session, SignedIn, SignedInForm};
use super::{field_problems, html, segment, tags, unavailable, Answer, Portal};
use crate::app_device::{self, AppConfig};
use crate::core::{Command, Refusal, Reply};
use crate::model::State as Managed;
use crate::secret;
use crate::service;

/// The QR code of `text` as an SVG element (no XML declaration: it goes inside the page), or
/// `None` when the text is too long for a QR code.
pub(crate) fn qr_svg(text: &str) -> Option<String> {
    let code = QrCode::with_error_correction_level(text.as_bytes(), EcLevel::L).ok()?;
    let image = code
        .render::<svg::Color<'_>>()
        .min_dimensions(288, 288)
        .quiet_zone(true)
        .build();
    let start = image.find("<svg")?;
    Some(image[start..].replacen(
        "<svg ",
        r#"<svg role="img" aria-label="QR code of the configuration" "#,
        1,
    ))
}

/// The form, with what was typed and the problems of a refused attempt.
fn form_page(
    session: &Session,
    typed: &HashMap<String, String>,
    refusal: Option<&Refusal>,
) -> String {
    let typed = |k: &str| esc(typed.get(k).map_or("", String::as_str));
    let mut problems = refusal.map(field_problems).unwrap_or_default();
    // A taken name or key is that field's problem.
    let owner = match refusal {
        Some(Refusal::Exists { .. }) => "name",
        Some(Refusal::KeyTaken(_)) => "public_key",
        _ => "",
    };
    for p in problems.iter_mut().filter(|p| p.field.is_empty()) {
        owner.clone_into(&mut p.field);
    }
    let at = |fields: &[&str]| {
        let mut out = String::new();
        for p in &problems {
            let field = p.field.split(['[', '.']).next().unwrap_or_default();
            let mine = if fields.is_empty() {
                !["name", "tags", "public_key"].contains(&field)
            } else {
                fields.contains(&field)
            };
            if mine {
                let _ = write!(out, "{FIELD_ERROR}{}</p>", esc(&p.message));
            }
        }
        out
    };
    layout(
        Some(session),
        "Add a device with the WireGuard app",
        &format!(
            r#"<p><a href="/portal/systems">← Systems</a></p>
<p>For a phone, tablet or computer that runs the official WireGuard app (Windows, macOS, iOS, Android) instead of the Enclave agent. It gets an overlay address and tags like an enrolled system, and a configuration with the gateways its policies let it use. The gateways enforce its policies; the app enforces nothing.</p>
{other_errors}<form class="card" method="post" action="/portal/app-devices">
<input type="hidden" name="csrf" value="{csrf}">
<label for="app-name">Name</label>
<input id="app-name" name="name" required value="{name}" placeholder="alice-phone">
{name_errors}
<label for="app-tags">Tags <span class="hint">(separated by commas; policies select senders by tag)</span></label>
<input id="app-tags" name="tags" value="{tags}" placeholder="users">
{tag_errors}
<label for="app-key">Public key <span class="hint">(optional: leave empty and the server makes the key pair; paste the app's public key if the app made it)</span></label>
<input id="app-key" name="public_key" value="{key}" autocomplete="off" spellcheck="false">
{key_errors}
<button type="submit" class="primary" id="add-app">Add device</button>
</form>"#,
            csrf = esc(&session.csrf),
            name = typed("name"),
            tags = typed("tags"),
            key = typed("public_key"),
            name_errors = at(&["name"]),
            tag_errors = at(&["tags"]),
            key_errors = at(&["public_key"]),
            other_errors = at(&[]),
        ),
    )
}

/// The page of a device's configuration; `private_key` only on the answer that made it.
fn config_page(
    session: &Session,
    name: &str,
    config: &AppConfig,
    private_key: Option<&str>,
) -> String {
    let path = segment(name);
    let csrf = esc(&session.csrf);
    let (notice, download, qr) = match private_key {
        Some(key) => (
            r#"<p class="error" role="status" id="shown-once">This configuration holds the device's private key. It is shown only now: the server does not keep it. Scan the QR code or download the file before you leave this page.</p>"#.to_owned(),
            format!(
                r#"<form method="post" action="/portal/app-devices/{path}/download"><input type="hidden" name="csrf" value="{csrf}"><input type="hidden" name="private_key" value="{key}"><button type="submit" id="download">Download {file}</button></form>"#,
                key = esc(key),
                file = esc(&config.file_name),
            ),
            match qr_svg(&config.compact()) {
                Some(svg) => format!(
                    r#"<section class="card"><h2>Scan with the WireGuard app</h2><div class="qr" id="qr">{svg}</div><p class="hint">In the mobile app: <strong>+</strong>, then <strong>Create from QR code</strong>.</p></section>"#
                ),
                None => r#"<section class="card"><h2>Scan with the WireGuard app</h2><p class="error">The configuration is too long for a QR code: use the file.</p></section>"#.to_owned(),
            },
        ),
        None => (
            r#"<p class="hint">The private key is not in this file: the server does not keep it. Add it to the file (the device's own, or the one shown when the device was added), or add the device again to get a new key pair and a QR code.</p>"#.to_owned(),
            format!(
                r#"<p><a href="/portal/app-devices/{path}/download" id="download" download="{file}">Download {file}</a></p>"#,
                file = esc(&config.file_name),
            ),
            String::new(),
        ),
    };
    let mut notes = String::new();
    for note in &config.notes {
        let _ = write!(notes, "<li>{}</li>", esc(note));
    }
    layout(
        Some(session),
        &format!("{name}: WireGuard app configuration"),
        &format!(
            r#"<p><a href="/portal/systems/{path}">← {title}</a></p>
{notice}
{qr}<section class="card"><h2>Configuration file</h2>
{download}
<pre class="config" id="config">{text}</pre>
</section>
<section class="card"><h2>What this device cannot have</h2>
<ul>{notes}<li>No failover: the app sends each subnet to one gateway, the most preferred one it can reach when the file was made. If that gateway stops, get a new file.</li><li>Changes do not reach it: after its policies, tags or gateways change, open this page again and import the new file.</li></ul>
</section>"#,
            title = esc(name),
            text = esc(config.text.expose()),
        ),
    )
}

/// `GET /portal/app-devices`: the form.
pub(crate) async fn new_page(SignedIn(session): SignedIn) -> Response {
    html(StatusCode::OK, form_page(&session, &HashMap::new(), None))
}

/// `POST /portal/app-devices`: adds the device and shows its configuration.
pub(crate) async fn add(
    State(portal): State<Portal>,
    SignedInForm(session, form): SignedInForm,
) -> Answer {
    let pasted = field(&form, "public_key");
    let (private_key, public_key) = if pasted.is_empty() {
        let (private, public) = secret::wireguard_key_pair();
        (Some(private), public)
    } else {
        (None, pasted)
    };
    let command = Command::AddAppDevice {
        name: field(&form, "name"),
        public_key,
        tags: tags(&field(&form, "tags")),
        key_made_here: private_key.is_some(),
    };
    let outcome = match portal.run(&session, command).await {
        Ok(outcome) => outcome,
        Err(service::Error::Refused(refusal)) => {
            let mut typed = form.clone();
            typed.remove("csrf");
            return Ok(html(
                StatusCode::UNPROCESSABLE_ENTITY,
                form_page(&session, &typed, Some(&refusal)),
            ));
        }
        Err(other) => return Err(unavailable(&other)),
    };
    let Reply::System(system) = &outcome.reply else {
        return Err(unavailable(&service::Error::Busy));
    };
    let key = private_key.as_ref().map(|k| k.as_str());
    let config = outcome
        .network
        .clone()
        .map_or_else(|| portal.network(&outcome.next), Ok)
        .and_then(|network| app_device::for_system(&outcome.next, &network, &system.name, key));
    Ok(match config {
        Ok(config) => html(
            StatusCode::CREATED,
            config_page(&session, &system.name, &config, key),
        ),
        Err(refusal) => html(
            StatusCode::UNPROCESSABLE_ENTITY,
            form_page(&session, &HashMap::new(), Some(&refusal)),
        ),
    })
}

/// The configuration of `name` in `state`, with `private_key` (else without one).
fn config_of(
    portal: &Portal,
    state: &Managed,
    name: &str,
    private_key: Option<&str>,
) -> Result<AppConfig, Response> {
    portal
        .network(state)
        .and_then(|network| app_device::for_system(state, &network, name, private_key))
        .map_err(|refusal| not_shown(&refusal))
}

fn not_shown(refusal: &Refusal) -> Response {
    let status = match refusal {
        Refusal::NotFound { .. } => StatusCode::NOT_FOUND,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    html(
        status,
        super::pages::message("No WireGuard app configuration", &refusal.to_string()),
    )
}

/// `GET /portal/app-devices/{name}`: the configuration as it is now, without the private key.
pub(crate) async fn show(
    State(portal): State<Portal>,
    Path(name): Path<String>,
    SignedIn(session): SignedIn,
) -> Answer {
    let state = portal.state().await?;
    let config = config_of(&portal, &state, &name, None)?;
    Ok(html(
        StatusCode::OK,
        config_page(&session, &name, &config, None),
    ))
}

/// The file as a download: the pages' headers (never cached, no sniffing), as plain text.
fn attachment(config: &AppConfig) -> Response {
    let mut response = html(StatusCode::OK, config.text.expose().clone());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    // The file name is a tunnel name: `A-Z a-z 0-9 _ = + . -` only, nothing to quote.
    if let Ok(value) =
        HeaderValue::from_str(&format!("attachment; filename=\"{}\"", config.file_name))
    {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// `GET /portal/app-devices/{name}/download`: the file without the private key.
pub(crate) async fn download(
    State(portal): State<Portal>,
    Path(name): Path<String>,
    _: SignedIn,
) -> Answer {
    let state = portal.state().await?;
    let config = config_of(&portal, &state, &name, None)?;
    Ok(attachment(&config))
}

/// `POST /portal/app-devices/{name}/download`: the file with the private key the page that
/// added the device holds, once it is checked to be the pair of the device's public key.
pub(crate) async fn download_with_key(
    State(portal): State<Portal>,
    Path(name): Path<String>,
    SignedInForm(_, form): SignedInForm,
) -> Answer {
    let state = portal.state().await?;
    let private_key = form.get("private_key").map_or("", String::as_str);
    let matches = state.systems.get(&name).is_some_and(|s| {
        secret::wireguard_public_key(private_key).is_some_and(|public| public == s.public_key)
    });
    if !matches {
        return Err(html(
            StatusCode::UNPROCESSABLE_ENTITY,
            super::pages::message(
                "Not downloaded",
                "This private key is not the one of this device; nothing was sent.",
            ),
        ));
    }
    let config = config_of(&portal, &state, &name, Some(private_key))?;
    Ok(attachment(&config))
}

#[cfg(test)]
mod tests {
    use super::qr_svg;

    #[test]
    fn the_qr_code_is_an_svg_element_for_the_page() {
        let svg = qr_svg("[Interface]\nPrivateKey = x\n").expect("a QR code");
        assert!(svg.starts_with(r#"<svg role="img" aria-label="#), "{svg}");
        assert!(svg.ends_with("</svg>") && !svg.contains("<?xml"), "{svg}");
        assert!(svg.contains(r##"<path fill="#000" d="M"##), "{svg}");
        // Longer than a QR code holds (2,953 bytes at the lowest correction level).
        assert_eq!(qr_svg(&"x".repeat(3000)), None);
    }
}
