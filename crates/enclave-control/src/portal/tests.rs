//! The portal in-process: the real router over a real SQLite store, requests without a socket.

use axum::body::Body;
use axum::http::{Method, Request};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

use super::*;
use crate::agent_suite::create_key;
use crate::agents;
use crate::model::ApprovalMode;
use crate::store::Store as _;
use crate::testing::{self, Bench};

/// The pages of enrolment keys, tags, trust requirements and explain.
#[path = "admin_tests.rs"]
mod admin;
/// Every `POST` route without the form's token.
#[path = "csrf_tests.rs"]
mod csrf;

const KEY_A: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
const PASSWORD: &str = "a long enough password";

struct Harness {
    router: Router,
    portal: Portal,
    bench: Bench,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Answer {
    /// The answer, once its status is `status` (its text is shown when not).
    fn expect_status(self, status: StatusCode) -> Self {
        assert_eq!(self.status, status, "{}", self.text);
        self
    }

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

    /// The text of the page's first field error, which must come after the element with `id`.
    fn error_after(&self, id: &str) -> String {
        let field_at = self
            .text
            .find(&format!(r#"id="{id}""#))
            .unwrap_or_else(|| panic!("no #{id} in {}", self.text));
        let error_at = self.text.find("field-error").expect("a field error");
        assert!(error_at > field_at, "the error comes before #{id}");
        let rest = &self.text[error_at..];
        rest[..rest.find("</p>").unwrap()].to_owned()
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
        let bench = Bench::new("portal", name);
        bench
            .block_on(bench.store.put_portal_user(&users::User {
                name: "alice".into(),
                password_hash: users::hash(PASSWORD).unwrap().into(),
                created_at: now(),
            }))
            .unwrap();
        let portal = Portal {
            service: Arc::clone(bench.service()),
            hub: Arc::clone(&bench.hub),
            sessions: Arc::new(Sessions::default()),
            limiter: Arc::new(Mutex::new(Limiter::new())),
            tls: true,
            streams: live::streams(),
        };
        let h = Self {
            router: routes_of(portal.clone()),
            portal,
            bench,
        };
        let key = h.key(ApprovalMode::Manual);
        h.execute(Command::Enrol {
            key_hash: key.hash.into_inner(),
            public_key: KEY_A.into(),
            hostname: Some("laptop".into()),
        });
        h
    }

    /// An enrolment key without tags, limits or expiry, made on the server host.
    fn key(&self, approval: ApprovalMode) -> secret::Secret {
        self.bench
            .block_on(create_key(
                self.bench.service(),
                &[],
                approval,
                false,
                &testing::cli(),
            ))
            .unwrap()
    }

    /// Runs `command` as the server host would.
    fn execute(&self, command: Command) -> crate::core::Outcome {
        self.bench.execute(command)
    }

    fn state(&self) -> Arc<crate::model::State> {
        self.bench.block_on(self.portal.service.state()).unwrap()
    }

    fn audit(&self) -> Vec<crate::model::AuditEntry> {
        self.bench
            .block_on(self.portal.service.audit(0, 100))
            .unwrap()
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
        self.bench.block_on(async move {
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

    fn post(&self, path: &str, cookie: &str, pairs: &[(&str, &str)]) -> Answer {
        self.send(Method::POST, path, cookie, Some(encode(pairs)))
    }

    /// Posts `pairs` to `path` as a form that must be refused (422) with a field error after
    /// the element with `id` that says `error`: the answer, to check what else it shows.
    fn refused(
        &self,
        path: &str,
        cookie: &str,
        pairs: &[(&str, &str)],
        id: &str,
        error: &str,
    ) -> Answer {
        let answer = self
            .post(path, cookie, pairs)
            .expect_status(StatusCode::UNPROCESSABLE_ENTITY);
        let shown = answer.error_after(id);
        assert!(
            shown.contains(error),
            "{path}: the error after #{id} is {shown:?}, not {error:?}"
        );
        answer
    }

    fn get(&self, path: &str, cookie: &str) -> Answer {
        self.send(Method::GET, path, cookie, None)
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
    let page = h
        .get("/portal/systems", "")
        .expect_status(StatusCode::SEE_OTHER);
    assert_eq!(page.headers[header::LOCATION], "/portal/signin");
    h.get("/portal/systems", "enclave_session=forged")
        .expect_status(StatusCode::SEE_OTHER);

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
    let page = h
        .get("/portal/systems", &cookie)
        .expect_status(StatusCode::OK);
    assert!(page.text.contains("laptop") && page.text.contains("pending"));
    assert!(page.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));

    // Signed out, the cookie opens nothing.
    let csrf = page.csrf();
    h.post("/portal/signout", &cookie, &[("csrf", &csrf)])
        .expect_status(StatusCode::SEE_OTHER);
    h.get("/portal/systems", &cookie)
        .expect_status(StatusCode::SEE_OTHER);
}

#[test]
fn a_sign_in_form_without_its_token_is_refused() {
    let h = Harness::new("signin-csrf");
    let answer = h
        .post(
            "/portal/signin",
            "",
            &[("name", "alice"), ("password", PASSWORD)],
        )
        .expect_status(StatusCode::FORBIDDEN);
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
    let page = h
        .get("/portal/systems/laptop", &cookie)
        .expect_status(StatusCode::OK);
    assert!(page.text.contains("Allow this system to act as a gateway"));
    let csrf = page.csrf();

    // Without the token, or with another, nothing happens.
    for form in [encode(&[]), encode(&[("csrf", "forged")])] {
        h.send(
            Method::POST,
            "/portal/systems/laptop/approve",
            &cookie,
            Some(form),
        )
        .expect_status(StatusCode::FORBIDDEN);
    }
    // Without a session either.
    h.post("/portal/systems/laptop/approve", "", &[("csrf", &csrf)])
        .expect_status(StatusCode::FORBIDDEN);
    let state = h.state();
    assert_eq!(
        state.systems["laptop"].approval,
        crate::model::Approval::Pending
    );

    for (path, fields) in [
        ("/portal/systems/laptop/approve", None),
        ("/portal/systems/laptop/gateway", Some(("allowed", "on"))),
        (
            "/portal/systems/laptop/subnet-add",
            Some(("subnet", "0.0.0.0/0")),
        ),
    ] {
        let form: Vec<_> = [("csrf", csrf.as_str())]
            .into_iter()
            .chain(fields)
            .collect();
        let done = h.post(path, &cookie, &form);
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{path}: {}", done.text);
    }
    let state = h.state();
    let laptop = &state.systems["laptop"];
    assert_eq!(laptop.approval, crate::model::Approval::Approved);
    let gw = laptop.gateway.as_ref().unwrap();
    assert!(gw.allowed);
    assert!(gw.subnets.contains(&"0.0.0.0/0".parse().unwrap()));

    // A bad subnet is refused next to its field, and what was typed stays.
    let bad = h.refused(
        "/portal/systems/laptop/subnet-add",
        &cookie,
        &[("csrf", &csrf), ("subnet", "192.168.77.1/24")],
        "subnet",
        "192.168.77.1/24 has host bits set",
    );
    assert!(bad.text.contains(r#"value="192.168.77.1/24""#));

    // Renamed and retagged; the page moves with the name.
    let edited = h
        .post(
            "/portal/systems/laptop/edit",
            &cookie,
            &[("csrf", &csrf), ("name", "gw-a"), ("tags", "gw, office")],
        )
        .expect_status(StatusCode::SEE_OTHER);
    assert_eq!(edited.headers[header::LOCATION], "/portal/systems/gw-a");

    let activity = h
        .get("/portal/activity", &cookie)
        .expect_status(StatusCode::OK);
    assert_eq!(
        activity.text.matches("user:alice").count(),
        4,
        "{}",
        activity.text
    );
    let entries = h.audit();
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
    assert_eq!(pages::utc_seconds(1_709_210_096), "2024-02-29 12:34:56 UTC");
    assert_eq!(
        pages::without_age("failed over from menlo-gw-1 0.9 s ago"),
        "failed over from menlo-gw-1"
    );
    assert_eq!(
        pages::without_age("first gateway connected"),
        "first gateway connected"
    );
    assert_eq!(pages::without_age("was ok s ago"), "was ok s ago");
    assert_eq!(
        tags("gw, office  lab,,"),
        ["gw", "lab", "office"].map(String::from).into()
    );
}

#[test]
fn the_filter_keeps_matching_systems_and_a_bad_tag_is_shown_at_the_tags() {
    let h = Harness::new("filter");
    let (_, cookie) = h.sign_in(PASSWORD);
    let all = h.get("/portal/systems", &cookie);
    assert!(all.text.contains(">laptop</a>"));
    let pending = h.get("/portal/systems?q=pending", &cookie);
    assert!(pending.text.contains(">laptop</a>"), "{}", pending.text);
    assert!(all.text.contains("1 system."), "{}", all.text);
    let none = h.get("/portal/systems?q=gateway", &cookie);
    assert!(!none.text.contains(">laptop</a>") && none.text.contains("No system matches."));
    assert!(none.text.contains("0 of 1 system match."), "{}", none.text);

    let csrf = all.csrf();
    let bad = h.refused(
        "/portal/systems/laptop/edit",
        &cookie,
        &[("csrf", &csrf), ("name", "laptop"), ("tags", "ok, <bad>")],
        "edit-tags",
        "may hold only letters",
    );
    // What was typed comes back, escaped.
    assert!(bad.text.contains("ok, &lt;bad&gt;"), "{}", bad.text);
    assert!(!bad.text.contains("<bad>"));
}

use base64::Engine as _;

/// A distinct public key for system number `n`.
fn key_of(n: u32) -> String {
    let mut bytes = [7u8; 32];
    bytes[..4].copy_from_slice(&n.to_be_bytes());
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl Harness {
    /// Enrols `count` more systems, `host-0000`, `host-0001`, … (approved at once).
    fn enrol_many(&self, count: u32) {
        let key = self.key(ApprovalMode::Auto);
        for n in 0..count {
            self.execute(Command::Enrol {
                key_hash: key.hash.expose().clone(),
                public_key: key_of(n + 1),
                hostname: Some(format!("host-{n:04}")),
            });
        }
    }
}

#[test]
fn the_systems_page_is_paginated_and_the_filter_keeps_its_page_links() {
    let h = Harness::new("pages");
    h.enrol_many(120);
    let (_, cookie) = h.sign_in(PASSWORD);
    let first = h.get("/portal/systems", &cookie);
    assert!(
        first.text.contains("1–50 of 121 systems."),
        "{}",
        first.text
    );
    assert!(first.text.contains("Page 1 of 3"));
    assert!(first.text.contains(">host-0000</a>") && !first.text.contains(">host-0050</a>"));
    assert!(first.text.contains(r#"href="/portal/systems?page=2""#));
    let last = h.get("/portal/systems?page=3", &cookie);
    assert!(
        last.text.contains("101–121 of 121 systems."),
        "{}",
        last.text
    );
    assert!(last.text.contains(">laptop</a>") && !last.text.contains("Next →"));
    // Past the last page: the last page; not a number: the first.
    let past = h.get("/portal/systems?page=99", &cookie);
    assert!(past.text.contains("Page 3 of 3"));
    let junk = h.get("/portal/systems?page=x", &cookie);
    assert!(junk.text.contains("Page 1 of 3"));
    // A filter counts what matches and its links keep it.
    let some = h.get("/portal/systems?q=host-00", &cookie);
    assert!(
        some.text
            .contains("1–50 of 100 systems that match (121 in all)."),
        "{}",
        some.text
    );
    assert!(some
        .text
        .contains(r#"href="/portal/systems?q=host-00&amp;page=2""#));
    // The page is a live one: the script and where it fetches the page again.
    assert!(first
        .text
        .contains(r#"<script src="/portal/assets/portal.js" defer>"#));
    assert!(first
        .text
        .contains(r#"data-live-src="/portal/systems?page=1""#));
}

#[test]
fn the_script_is_served_and_allowed_by_the_content_security_policy_only_from_here() {
    let h = Harness::new("script");
    let (_, cookie) = h.sign_in(PASSWORD);
    let page = h.get("/portal/systems", &cookie);
    let csp = page.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
    assert!(csp.contains("connect-src 'self'") && !csp.contains("unsafe"));
    let script = h
        .get("/portal/assets/portal.js", "")
        .expect_status(StatusCode::OK);
    assert!(script.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
    assert!(script.text.contains("new EventSource(\"/portal/live\")"));
}

/// Reads the live stream's frames until one holds `needle`; the text read so far.
async fn read_until(body: &mut Body, needle: &str) -> String {
    let mut text = String::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                text.push_str(&String::from_utf8_lossy(&data));
                if text.contains(needle) {
                    return true;
                }
            }
        }
        false
    };
    let found = tokio::time::timeout(std::time::Duration::from_secs(5), read).await;
    assert_eq!(
        found,
        Ok(true),
        "the stream never said {needle:?}: {text:?}"
    );
    text
}

#[test]
fn the_live_stream_needs_a_session_tells_of_agents_and_ends_with_it() {
    use enclave_control_proto::message::{ActiveGateway, PeerReport, Report};

    let h = Harness::new("live");
    h.get("/portal/live", "")
        .expect_status(StatusCode::UNAUTHORIZED);
    h.get("/portal/live", &format!("{}=forged", session::COOKIE))
        .expect_status(StatusCode::UNAUTHORIZED);

    let (_, cookie) = h.sign_in(PASSWORD);
    let router = h.router.clone();
    let hub = Arc::clone(&h.portal.hub);
    let sessions = Arc::clone(&h.portal.sessions);
    let page = h.bench.block_on(async move {
        let request = Request::get("/portal/live")
            .header(header::COOKIE, &cookie)
            .body(Body::empty())
            .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/event-stream"
        );
        let mut body = response.into_body();

        // The laptop's agent connects: a change.
        let key = agents::key_bytes(KEY_A).unwrap();
        let agent = hub.connected(
            key,
            "laptop",
            "192.0.2.7:40000".parse().unwrap(),
            "1.2.3".into(),
            Some("laptop.example".into()),
        );
        read_until(&mut body, "event: change").await;

        // It reports a gateway in use: a change, and the pages show it.
        let mut report = Report::default();
        report.active_gateways.insert(
            "192.168.77.0/24".parse().unwrap(),
            ActiveGateway {
                gateway: Some("menlo-gw-2".into()),
                reason: "the first to answer".into(),
            },
        );
        report.peers.insert(
            "menlo-gw-2".into(),
            PeerReport {
                state: "Up".into(),
                rx_bytes: 2048,
                ..PeerReport::default()
            },
        );
        let mut changes = hub.changes();
        changes.borrow_and_update();
        hub.reported(&agent, Arc::new(report.clone()));
        assert!(changes.has_changed().unwrap());
        let subnet: ipnet::Ipv4Net = "192.168.77.0/24".parse().unwrap();
        let since = hub.connected_here()["laptop"].active_since[&subnet];
        read_until(&mut body, "event: change").await;
        // Only counters moved: no change to show.
        changes.borrow_and_update();
        report.peers.get_mut("menlo-gw-2").unwrap().rx_bytes = 4096;
        hub.reported(&agent, Arc::new(report));
        assert!(!changes.has_changed().unwrap());
        // The same gateway: since when is kept.
        assert_eq!(hub.connected_here()["laptop"].active_since[&subnet], since);

        let request = |path: &str| {
            Request::get(path)
                .header(header::COOKIE, &cookie)
                .body(Body::empty())
                .unwrap()
        };
        let mut pages = Vec::new();
        for path in ["/portal/systems", "/portal/systems/laptop"] {
            let answer = router.clone().oneshot(request(path)).await.unwrap();
            let bytes = answer.into_body().collect().await.unwrap().to_bytes();
            pages.push(String::from_utf8_lossy(&bytes).into_owned());
        }

        // Signed out: the stream says so at the next change, and ends.
        let session = session::cookie(&cookie, session::COOKIE)
            .unwrap()
            .to_owned();
        sessions.end(&session);
        hub.disconnected(&agent);
        read_until(&mut body, "event: signedout").await;
        let end = tokio::time::timeout(std::time::Duration::from_secs(5), body.frame()).await;
        assert!(matches!(end, Ok(None)), "the stream did not end");
        pages
    });
    let (list, details) = (&page[0], &page[1]);
    assert!(
        list.contains("laptop.example") && list.contains("agent 1.2.3"),
        "{list}"
    );
    assert!(list.contains(">menlo-gw-2</a> for <code>192.168.77.0/24</code>"));
    assert!(list.contains(r#"<span class="badge ok">connected</span>"#));
    assert!(details.contains("<h2>Gateways in use</h2>"));
    assert!(details.contains("the first to answer"), "{details}");
    assert!(details.contains(&pages::utc(now())[..10]));
    assert!(details.contains("4.0 KiB in"), "{details}");
    assert!(details.contains(r#"id="peers" data-live"#));
    assert!(
        details.contains(r#"<span class="badge ok">Up</span>"#),
        "{details}"
    );
}
mod policies;
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
    let systems = h.get("/portal/systems", &cookie);
    assert!(systems.text.contains(r#"href="/portal/app-devices""#));
    let form = h
        .get("/portal/app-devices", &cookie)
        .expect_status(StatusCode::OK);
    let csrf = form.csrf();

    // Without the CSRF token nothing is added.
    h.post(
        "/portal/app-devices",
        &cookie,
        &[("name", "phone"), ("tags", "users")],
    )
    .expect_status(StatusCode::FORBIDDEN);

    // A bad public key is refused next to its field, with what was typed.
    let refused = h.refused(
        "/portal/app-devices",
        &cookie,
        &[
            ("csrf", &csrf),
            ("name", "phone"),
            ("tags", "users"),
            ("public_key", "nonsense"),
        ],
        "app-key",
        "is not a WireGuard public key",
    );
    assert!(refused.text.contains(r#"value="nonsense""#));

    // The server makes the pair: the page shows the file, the QR code and the download once.
    let made = h
        .post(
            "/portal/app-devices",
            &cookie,
            &[("csrf", &csrf), ("name", "phone"), ("tags", "users")],
        )
        .expect_status(StatusCode::CREATED);
    assert!(made.text.contains(r#"id="shown-once""#));
    assert!(made.text.contains(r#"<svg role="img""#), "no QR code");
    assert!(
        made.text.contains("Address = 100.64.0.2/32"),
        "{}",
        made.text
    );
    let private_key = shown_private_key(&made.text);
    let phone = h.state().systems["phone"].clone();
    assert!(phone.is_app_device());
    assert_eq!(
        secret::wireguard_public_key(&private_key).as_deref(),
        Some(phone.public_key.as_str())
    );

    // The download posts the key back once; a wrong key gets nothing.
    let download = h
        .post(
            "/portal/app-devices/phone/download",
            &cookie,
            &[("csrf", &csrf), ("private_key", &private_key)],
        )
        .expect_status(StatusCode::OK);
    assert_eq!(
        download.headers[header::CONTENT_DISPOSITION],
        "attachment; filename=\"phone.conf\""
    );
    assert!(download
        .text
        .contains(&format!("PrivateKey = {private_key}\n")));
    let (other, _) = secret::wireguard_key_pair();
    let wrong = h
        .post(
            "/portal/app-devices/phone/download",
            &cookie,
            &[("csrf", &csrf), ("private_key", &other)],
        )
        .expect_status(StatusCode::UNPROCESSABLE_ENTITY);
    assert!(!wrong.text.contains("PrivateKey"));

    // Later: the file without the key, from the system's page; no QR code.
    let page = h.get("/portal/systems/phone", &cookie);
    assert!(page.text.contains(r#"href="/portal/app-devices/phone""#));
    let later = h
        .get("/portal/app-devices/phone", &cookie)
        .expect_status(StatusCode::OK);
    assert!(!later.text.contains(&private_key));
    assert!(!later.text.contains("<svg"));
    let file = h
        .get("/portal/app-devices/phone/download", &cookie)
        .expect_status(StatusCode::OK);
    assert!(file.text.contains("[Interface]") && !file.text.contains(&private_key));
    // An enrolled system has no app configuration; pages need a session.
    h.get("/portal/app-devices/laptop", &cookie)
        .expect_status(StatusCode::UNPROCESSABLE_ENTITY);
    h.get("/portal/app-devices/phone/download", "")
        .expect_status(StatusCode::SEE_OTHER);
}
