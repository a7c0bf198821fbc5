//! The portal in-process: the real router over a real SQLite store, requests without a socket.

use axum::body::Body;
use axum::http::{Method, Request};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

use super::*;
use crate::agents;
use crate::core::NewKey;
use crate::model::ApprovalMode;
use crate::store::{SqlStore, Store as _};

const KEY_A: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
const PASSWORD: &str = "a long enough password";

struct Harness {
    router: Router,
    portal: Portal,
    dir: std::path::PathBuf,
    runtime: tokio::runtime::Runtime,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Answer {
    fn cookie(&self, name: &str) -> Option<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| {
                let (pair, _) = v.split_once(';')?;
                let (key, value) = pair.split_once('=')?;
                (key == name).then(|| value.to_owned())
            })
    }

    /// The value of the first hidden `csrf` field.
    fn csrf(&self) -> String {
        let at = self
            .text
            .find(r#"name="csrf" value=""#)
            .expect("a csrf field")
            + 19;
        self.text[at..].split('"').next().unwrap().to_owned()
    }
}

fn encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let v: String = v
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() {
                        char::from(b).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

impl Harness {
    /// A server with account `alice` and one system, `laptop`, pending approval.
    fn new(name: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = std::env::temp_dir().join(format!(
            "enclave-control-portal-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let url = format!("sqlite://{}/control.db", dir.display());
        let hub = runtime.block_on(async {
            let store = SqlStore::open(&url).await.unwrap();
            store
                .put_portal_user(&users::User {
                    name: "alice".into(),
                    password_hash: users::hash(PASSWORD).unwrap(),
                    created_at: now(),
                })
                .await
                .unwrap();
            let service = Arc::new(Service::new(Arc::new(store)));
            let ctx = Ctx {
                actor: "cli".into(),
                now: now(),
            };
            let key = secret::generate(secret::KEY_PREFIX);
            service
                .execute(
                    Command::CreateKey(NewKey {
                        id: key.id.clone(),
                        hash: key.hash.clone(),
                        tags: BTreeSet::new(),
                        approval: ApprovalMode::Manual,
                        uses: None,
                        expires_at: None,
                        ephemeral: false,
                    }),
                    &ctx,
                )
                .await
                .unwrap();
            service
                .execute(
                    Command::Enrol {
                        key_hash: key.hash,
                        public_key: KEY_A.into(),
                        hostname: Some("laptop".into()),
                    },
                    &ctx,
                )
                .await
                .unwrap();
            Arc::new(Hub::new(service, agents::Options::default()))
        });
        let portal = Portal {
            service: Arc::clone(hub.service()),
            hub,
            sessions: Arc::new(Sessions::default()),
            limiter: Arc::new(Mutex::new(Limiter::new())),
            tls: true,
        };
        Self {
            router: routes_of(portal.clone()),
            portal,
            dir,
            runtime,
        }
    }

    fn send(&self, method: Method, path: &str, cookies: &str, form: Option<String>) -> Answer {
        let mut request = Request::builder().method(method).uri(path);
        if !cookies.is_empty() {
            request = request.header(header::COOKIE, cookies);
        }
        let body = match form {
            Some(form) => {
                request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                Body::from(form)
            }
            None => Body::empty(),
        };
        let router = self.router.clone();
        self.runtime.block_on(async move {
            let response = router.oneshot(request.body(body).unwrap()).await.unwrap();
            let status = response.status();
            let headers = response.headers().clone();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            Answer {
                status,
                headers,
                text: String::from_utf8_lossy(&bytes).into_owned(),
            }
        })
    }

    /// Signs in with `password`: the answer and the session cookie header to send after.
    fn sign_in(&self, password: &str) -> (Answer, String) {
        let form = self.send(Method::GET, "/portal/signin", "", None);
        let token = form.cookie(session::SIGNIN_COOKIE).unwrap();
        let answer = self.send(
            Method::POST,
            "/portal/signin",
            &format!("{}={token}", session::SIGNIN_COOKIE),
            Some(encode(&[
                ("csrf", &token),
                ("name", "alice"),
                ("password", password),
            ])),
        );
        let cookie = answer
            .cookie(session::COOKIE)
            .map(|c| format!("{}={c}", session::COOKIE))
            .unwrap_or_default();
        (answer, cookie)
    }
}

#[test]
fn pages_need_a_session_and_a_wrong_password_gets_none() {
    let h = Harness::new("signin");
    let page = h.send(Method::GET, "/portal/systems", "", None);
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.headers[header::LOCATION], "/portal/signin");
    let forged = h.send(
        Method::GET,
        "/portal/systems",
        "enclave_session=forged",
        None,
    );
    assert_eq!(forged.status, StatusCode::SEE_OTHER);

    let (wrong, cookie) = h.sign_in("not the password");
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(
        wrong.text.contains("Wrong name or password."),
        "{}",
        wrong.text
    );
    assert!(cookie.is_empty());

    let (right, cookie) = h.sign_in(PASSWORD);
    assert_eq!(right.status, StatusCode::SEE_OTHER, "{}", right.text);
    let set = right.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Secure"));
    let page = h.send(Method::GET, "/portal/systems", &cookie, None);
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("laptop") && page.text.contains("pending"));
    assert!(page.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));

    // Signed out, the cookie opens nothing.
    let csrf = page.csrf();
    let out = h.send(
        Method::POST,
        "/portal/signout",
        &cookie,
        Some(encode(&[("csrf", &csrf)])),
    );
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    let page = h.send(Method::GET, "/portal/systems", &cookie, None);
    assert_eq!(page.status, StatusCode::SEE_OTHER);
}

#[test]
fn a_sign_in_form_without_its_token_is_refused() {
    let h = Harness::new("signin-csrf");
    let answer = h.send(
        Method::POST,
        "/portal/signin",
        "",
        Some(encode(&[("name", "alice"), ("password", PASSWORD)])),
    );
    assert_eq!(answer.status, StatusCode::FORBIDDEN);
    assert!(answer.cookie(session::COOKIE).is_none());
}

#[test]
fn sign_in_is_refused_after_too_many_failures_even_with_the_right_password() {
    let h = Harness::new("limit");
    {
        // Failing through the form would take PER_SOURCE argon2 runs; one wrong password is
        // shown counted above, here what matters is what the count does.
        let mut limiter = h.portal.limiter();
        for _ in 0..crate::limit::PER_SOURCE {
            limiter.fail(
                IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                u64::try_from(now()).unwrap(),
            );
        }
    }
    let (answer, cookie) = h.sign_in(PASSWORD);
    assert_eq!(
        answer.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        answer.text
    );
    assert!(answer.headers.contains_key(header::RETRY_AFTER));
    assert!(cookie.is_empty());
}

#[test]
fn changes_need_the_forms_token_and_are_audited_as_the_user() {
    let h = Harness::new("changes");
    let (_, cookie) = h.sign_in(PASSWORD);
    let page = h.send(Method::GET, "/portal/systems/laptop", &cookie, None);
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("Allow this system to act as a gateway"));
    let csrf = page.csrf();

    // Without the token, or with another, nothing happens.
    for form in [encode(&[]), encode(&[("csrf", "forged")])] {
        let refused = h.send(
            Method::POST,
            "/portal/systems/laptop/approve",
            &cookie,
            Some(form),
        );
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
    }
    // Without a session either.
    let refused = h.send(
        Method::POST,
        "/portal/systems/laptop/approve",
        "",
        Some(encode(&[("csrf", &csrf)])),
    );
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let state = h.runtime.block_on(h.portal.service.state()).unwrap();
    assert_eq!(
        state.systems["laptop"].approval,
        crate::model::Approval::Pending
    );

    let approved = h.send(
        Method::POST,
        "/portal/systems/laptop/approve",
        &cookie,
        Some(encode(&[("csrf", &csrf)])),
    );
    assert_eq!(approved.status, StatusCode::SEE_OTHER, "{}", approved.text);
    let gateway = h.send(
        Method::POST,
        "/portal/systems/laptop/gateway",
        &cookie,
        Some(encode(&[("csrf", &csrf), ("allowed", "on")])),
    );
    assert_eq!(gateway.status, StatusCode::SEE_OTHER, "{}", gateway.text);
    let added = h.send(
        Method::POST,
        "/portal/systems/laptop/subnet-add",
        &cookie,
        Some(encode(&[("csrf", &csrf), ("subnet", "0.0.0.0/0")])),
    );
    assert_eq!(added.status, StatusCode::SEE_OTHER, "{}", added.text);
    let state = h.runtime.block_on(h.portal.service.state()).unwrap();
    let laptop = &state.systems["laptop"];
    assert_eq!(laptop.approval, crate::model::Approval::Approved);
    let gw = laptop.gateway.as_ref().unwrap();
    assert!(gw.allowed);
    assert!(gw.subnets.contains(&"0.0.0.0/0".parse().unwrap()));

    // A bad subnet is refused next to its field, and what was typed stays.
    let bad = h.send(
        Method::POST,
        "/portal/systems/laptop/subnet-add",
        &cookie,
        Some(encode(&[("csrf", &csrf), ("subnet", "192.168.77.1/24")])),
    );
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let error_at = bad.text.find("field-error").expect("a field error");
    let field_at = bad.text.find(r#"id="subnet""#).unwrap();
    assert!(error_at > field_at, "the error follows its field");
    assert!(bad.text.contains(r#"value="192.168.77.1/24""#));

    // Renamed and retagged; the page moves with the name.
    let edited = h.send(
        Method::POST,
        "/portal/systems/laptop/edit",
        &cookie,
        Some(encode(&[
            ("csrf", &csrf),
            ("name", "gw-a"),
            ("tags", "gw, office"),
        ])),
    );
    assert_eq!(edited.status, StatusCode::SEE_OTHER, "{}", edited.text);
    assert_eq!(edited.headers[header::LOCATION], "/portal/systems/gw-a");

    let activity = h.send(Method::GET, "/portal/activity", &cookie, None);
    assert_eq!(activity.status, StatusCode::OK);
    assert_eq!(
        activity.text.matches("user:alice").count(),
        4,
        "{}",
        activity.text
    );
    let entries = h.runtime.block_on(h.portal.service.audit(0, 100)).unwrap();
    assert!(entries
        .iter()
        .any(|e| e.actor == "user:alice" && e.action == "system.approve"));
}

#[test]
fn text_is_escaped_and_times_are_civil() {
    assert_eq!(
        pages::esc(r#"<a href="x">'&"#),
        "&lt;a href=&quot;x&quot;&gt;&#39;&amp;"
    );
    assert_eq!(pages::utc(0), "1970-01-01 00:00 UTC");
    assert_eq!(pages::utc(1_709_210_096), "2024-02-29 12:34 UTC");
    assert_eq!(
        tags("gw, office  lab,,"),
        ["gw", "lab", "office"].map(String::from).into()
    );
}

#[test]
fn the_filter_keeps_matching_systems_and_a_bad_tag_is_shown_at_the_tags() {
    let h = Harness::new("filter");
    let (_, cookie) = h.sign_in(PASSWORD);
    let all = h.send(Method::GET, "/portal/systems", &cookie, None);
    assert!(all.text.contains(">laptop</a>"));
    let pending = h.send(Method::GET, "/portal/systems?q=pending", &cookie, None);
    assert!(pending.text.contains(">laptop</a>"), "{}", pending.text);
    let none = h.send(Method::GET, "/portal/systems?q=gateway", &cookie, None);
    assert!(!none.text.contains(">laptop</a>") && none.text.contains("No system matches."));

    let csrf = all.csrf();
    let bad = h.send(
        Method::POST,
        "/portal/systems/laptop/edit",
        &cookie,
        Some(encode(&[
            ("csrf", &csrf),
            ("name", "laptop"),
            ("tags", "ok, <bad>"),
        ])),
    );
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.text);
    let tags_at = bad.text.find(r#"id="edit-tags""#).unwrap();
    let error_at = bad.text.find("field-error").expect("a field error");
    assert!(error_at > tags_at, "the error follows the tags field");
    // What was typed comes back, escaped.
    assert!(bad.text.contains("ok, &lt;bad&gt;"), "{}", bad.text);
    assert!(!bad.text.contains("<bad>"));
}

/// The private key on an app device's page (`PrivateKey = …` in its configuration).
fn shown_private_key(page: &str) -> String {
    let at = page
        .find("PrivateKey = ")
        .expect("a private key on the page")
        + 13;
    page[at..].split('\n').next().unwrap().trim().to_owned()
}

#[test]
fn an_app_device_gets_its_configuration_text_download_and_qr_code_once() {
    let h = Harness::new("app-device");
    let (_, cookie) = h.sign_in(PASSWORD);
    let systems = h.send(Method::GET, "/portal/systems", &cookie, None);
    assert!(systems.text.contains(r#"href="/portal/app-devices""#));
    let form = h.send(Method::GET, "/portal/app-devices", &cookie, None);
    assert_eq!(form.status, StatusCode::OK);
    let csrf = form.csrf();

    // Without the CSRF token nothing is added.
    let forged = h.send(
        Method::POST,
        "/portal/app-devices",
        &cookie,
        Some(encode(&[("name", "phone"), ("tags", "users")])),
    );
    assert_eq!(forged.status, StatusCode::FORBIDDEN);

    // A bad public key is refused next to its field, with what was typed.
    let refused = h.send(
        Method::POST,
        "/portal/app-devices",
        &cookie,
        Some(encode(&[
            ("csrf", &csrf),
            ("name", "phone"),
            ("tags", "users"),
            ("public_key", "nonsense"),
        ])),
    );
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let key_field = refused.text.find(r#"id="app-key""#).unwrap();
    let error = refused.text.find("is not a WireGuard public key").unwrap();
    assert!(error > key_field, "the error is not after the key's field");
    assert!(refused.text.contains(r#"value="nonsense""#));

    // The server makes the pair: the page shows the file, the QR code and the download once.
    let made = h.send(
        Method::POST,
        "/portal/app-devices",
        &cookie,
        Some(encode(&[
            ("csrf", &csrf),
            ("name", "phone"),
            ("tags", "users"),
        ])),
    );
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.text);
    assert!(made.text.contains(r#"id="shown-once""#));
    assert!(made.text.contains(r#"<svg role="img""#), "no QR code");
    assert!(
        made.text.contains("Address = 100.64.0.2/32"),
        "{}",
        made.text
    );
    let private_key = shown_private_key(&made.text);
    let phone = h
        .runtime
        .block_on(h.portal.service.state())
        .unwrap()
        .systems["phone"]
        .clone();
    assert!(phone.is_app_device());
    assert_eq!(
        secret::wireguard_public_key(&private_key).as_deref(),
        Some(phone.public_key.as_str())
    );

    // The download posts the key back once; a wrong key gets nothing.
    let download = h.send(
        Method::POST,
        "/portal/app-devices/phone/download",
        &cookie,
        Some(encode(&[("csrf", &csrf), ("private_key", &private_key)])),
    );
    assert_eq!(download.status, StatusCode::OK);
    assert_eq!(
        download.headers[header::CONTENT_DISPOSITION],
        "attachment; filename=\"phone.conf\""
    );
    assert!(download
        .text
        .contains(&format!("PrivateKey = {private_key}\n")));
    let (other, _) = secret::wireguard_key_pair();
    let wrong = h.send(
        Method::POST,
        "/portal/app-devices/phone/download",
        &cookie,
        Some(encode(&[("csrf", &csrf), ("private_key", &other)])),
    );
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!wrong.text.contains("PrivateKey"));

    // Later: the file without the key, from the system's page; no QR code.
    let page = h.send(Method::GET, "/portal/systems/phone", &cookie, None);
    assert!(page.text.contains(r#"href="/portal/app-devices/phone""#));
    let later = h.send(Method::GET, "/portal/app-devices/phone", &cookie, None);
    assert_eq!(later.status, StatusCode::OK);
    assert!(!later.text.contains(&private_key));
    assert!(!later.text.contains("<svg"));
    let file = h.send(
        Method::GET,
        "/portal/app-devices/phone/download",
        &cookie,
        None,
    );
    assert_eq!(file.status, StatusCode::OK);
    assert!(file.text.contains("[Interface]") && !file.text.contains(&private_key));
    // An enrolled system has no app configuration; pages need a session.
    let laptop = h.send(Method::GET, "/portal/app-devices/laptop", &cookie, None);
    assert_eq!(laptop.status, StatusCode::UNPROCESSABLE_ENTITY);
    let anonymous = h.send(Method::GET, "/portal/app-devices/phone/download", "", None);
    assert_eq!(anonymous.status, StatusCode::SEE_OTHER);
}
