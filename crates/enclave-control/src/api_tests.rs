//! The API in-process: the real router over a real SQLite store, requests without a socket.

use axum::body::Body;
use axum::http::{Method, Request};
use http_body_util::BodyExt as _;
use serde_json::Value;
use tower::ServiceExt as _;

use super::*;
use crate::testing::Bench;

const KEY_A: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
const KEY_B: &str = "CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=";
const KEY_C: &str = "CgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgoKCgo=";
const EXAMPLE: &str = include_str!("../../../docs/examples/network.toml");

struct Harness {
    app: App,
    router: Router,
    token: String,
    bench: Bench,
}

struct Answer {
    status: StatusCode,
    text: String,
    json: Value,
}

impl Harness {
    /// A server with one admin token (alice's).
    fn new(name: &str) -> Self {
        let bench = Bench::new("api", name);
        let token = secret::generate(secret::TOKEN_PREFIX);
        bench.execute(Command::CreateToken {
            id: token.id.clone(),
            name: "alice".into(),
            hash: token.hash.expose().clone(),
        });
        let app = App::new(Arc::clone(&bench.hub));
        Self {
            router: routes(app.clone()),
            app,
            token: token.text.into_inner(),
            bench,
        }
    }

    fn send(&self, request: Request<Body>) -> Answer {
        self.bench.block_on(async {
            let response = self.router.clone().oneshot(request).await.unwrap();
            let status = response.status();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            Answer { status, text, json }
        })
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        token: Option<&str>,
        peer: &str,
    ) -> Answer {
        let mut builder = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let mut request = builder
            .body(body.map_or(Body::empty(), |b| Body::from(b.to_string())))
            .unwrap();
        request
            .extensions_mut()
            .insert(Peer(format!("{peer}:40000").parse().unwrap()));
        self.send(request)
    }

    fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.request(method, path, body, Some(&self.token.clone()), "192.0.2.1")
    }

    fn enrol(&self, key: &str, public_key: &str, peer: &str) -> Answer {
        self.request(
            Method::POST,
            "/api/v1/enrol",
            Some(json!({ "key": key, "public_key": public_key, "hostname": "laptop" })),
            None,
            peer,
        )
    }

    /// `GET /api/v1/systems` with `token` from `peer`.
    fn systems_as(&self, token: Option<&str>, peer: &str) -> Answer {
        self.request(Method::GET, "/api/v1/systems", None, token, peer)
    }

    /// `POST /api/v1/keys` with `body`: the key (shown this once) and its id.
    fn create_key(&self, body: Value) -> (String, String) {
        let created = self.admin(Method::POST, "/api/v1/keys", Some(body));
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
        let field = |name: &str| created.json[name].as_str().unwrap().to_owned();
        (field("key"), field("id"))
    }

    /// `PUT /api/v1/definition{query}` with a TOML body.
    fn import(&self, query: &str, toml: &str) -> Answer {
        self.send(
            Request::builder()
                .method(Method::PUT)
                .uri(format!("/api/v1/definition{query}"))
                .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
                .body(Body::from(toml.to_owned()))
                .unwrap(),
        )
    }

    fn revision(&self) -> i64 {
        self.admin(Method::GET, "/api/v1/network", None).json["revision"]
            .as_i64()
            .unwrap()
    }
}

#[test]
fn requests_without_a_valid_token_get_a_bare_401() {
    let h = Harness::new("auth");
    for token in [None, Some("ent_wrong"), Some("")] {
        let answer = h.systems_as(token, "192.0.2.9");
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(answer.text, "", "a 401 says nothing");
    }
    let answer = h.request(
        Method::POST,
        "/api/v1/keys",
        Some(json!({})),
        None,
        "192.0.2.9",
    );
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    // The right token works.
    assert_eq!(
        h.admin(Method::GET, "/api/v1/systems", None).status,
        StatusCode::OK
    );
    // Guessing tokens is held back per source, even with the right token afterwards.
    for _ in 0..crate::limit::PER_SOURCE {
        h.systems_as(Some("ent_guess"), "192.0.2.66");
    }
    let held = h.systems_as(Some(h.token.as_str()), "192.0.2.66");
    assert_eq!(held.status, StatusCode::TOO_MANY_REQUESTS);
}

#[test]
fn the_agents_endpoint_wants_the_upgrade_and_no_token() {
    let h = Harness::new("upgrade");
    // No token is asked for; without the upgrade headers the answer says what to send.
    let plain = h.request(Method::GET, "/api/v1/agent", None, None, "192.0.2.30");
    assert_eq!(plain.status, StatusCode::UPGRADE_REQUIRED, "{}", plain.text);
    assert!(plain.text.contains("enclave-agent/1"), "{}", plain.text);
    // A source held back for failed guesses is held back here too.
    for _ in 0..crate::limit::PER_SOURCE {
        h.systems_as(Some("ent_guess"), "192.0.2.31");
    }
    let held = h.request(Method::GET, "/api/v1/agent", None, None, "192.0.2.31");
    assert_eq!(held.status, StatusCode::TOO_MANY_REQUESTS, "{}", held.text);
}

#[test]
fn a_poisoned_rate_limiter_still_holds_guessers_back() {
    let h = Harness::new("poison");
    for _ in 0..crate::limit::PER_SOURCE {
        h.systems_as(Some("ent_guess"), "192.0.2.77");
    }
    // A panic while the limiter is held poisons its lock.
    let limiter = Arc::clone(&h.app.limiter);
    let _ = std::thread::spawn(move || {
        let _held = limiter.lock().unwrap();
        panic!("poisoning the limiter on purpose");
    })
    .join();
    assert!(h.app.limiter.is_poisoned());
    let held = h.systems_as(Some(h.token.as_str()), "192.0.2.77");
    assert_eq!(held.status, StatusCode::TOO_MANY_REQUESTS, "{}", held.text);
    let held = h.enrol("enk_guess", KEY_A, "192.0.2.77");
    assert_eq!(held.status, StatusCode::TOO_MANY_REQUESTS, "{}", held.text);
    // Another source still gets through (positive control).
    assert_eq!(
        h.admin(Method::GET, "/api/v1/systems", None).status,
        StatusCode::OK
    );
}

#[test]
fn an_enrolment_key_is_shown_once_and_never_again() {
    let h = Harness::new("once");
    let created = h.admin(
        Method::POST,
        "/api/v1/keys",
        Some(json!({ "tags": ["users"], "approval": "auto", "uses": 2, "expires": "1h" })),
    );
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text);
    let key = created.json["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with("enk_"));
    assert_eq!(created.json["status"], "valid");
    assert!(created.json.get("hash").is_none());
    let id = created.json["id"].as_str().unwrap().to_owned();

    let listed = h.admin(Method::GET, "/api/v1/keys", None);
    assert!(
        !listed.text.contains(&key),
        "the key is listed: {}",
        listed.text
    );
    assert!(
        !listed.text.contains(&secret::hash(&key)),
        "its hash is listed"
    );
    assert_eq!(listed.json[0]["id"], id.as_str());
    assert_eq!(listed.json[0]["uses_allowed"], 2);
    let audit = h.admin(Method::GET, "/api/v1/audit", None);
    assert!(!audit.text.contains(&key), "the key is in the audit log");
    let revoked = h.admin(Method::POST, &format!("/api/v1/keys/{id}/revoke"), None);
    assert!(!revoked.text.contains(&key));
    assert_eq!(revoked.json["revoked"], true);
}

#[test]
fn enrolment_with_a_manual_key_waits_for_approval() {
    let h = Harness::new("enrol");
    let (key, _) = h.create_key(json!({ "tags": ["users"] }));
    let enrolled = h.enrol(&key, KEY_A, "198.51.100.7");
    assert_eq!(enrolled.status, StatusCode::CREATED, "{}", enrolled.text);
    assert_eq!(enrolled.json["system"], "laptop");
    assert_eq!(enrolled.json["address"], "100.64.0.1");
    assert_eq!(enrolled.json["approval"], "pending");
    assert_eq!(enrolled.json["overlay"], "100.64.0.0/10");

    let systems = h.admin(Method::GET, "/api/v1/systems", None);
    assert_eq!(systems.json[0]["approval"], "pending");
    let approved = h.admin(Method::POST, "/api/v1/systems/laptop/approve", None);
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.text);
    assert_eq!(approved.json["approval"], "approved");
    let audit = h.admin(Method::GET, "/api/v1/audit", None);
    let actions: Vec<&str> = audit
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "token.create",
            "key.create",
            "system.enrol",
            "system.approve"
        ]
    );
    assert_eq!(audit.json[3]["actor"], "token:alice");
    assert!(audit.json[2]["actor"].as_str().unwrap().starts_with("key:"));
}

#[test]
fn wrong_used_up_and_revoked_keys_are_refused_with_no_state_change() {
    let h = Harness::new("refused");
    let (key, id) = h.create_key(json!({ "approval": "auto", "uses": 1 }));
    assert_eq!(
        h.enrol(&key, KEY_A, "198.51.100.1").status,
        StatusCode::CREATED
    );
    let revision = h.revision();

    let used_up = h.enrol(&key, KEY_B, "198.51.100.1");
    assert_eq!(used_up.status, StatusCode::FORBIDDEN);
    assert_eq!(used_up.json["error"], "the enrolment key has no uses left");
    let wrong = h.enrol("enk_not-a-key", KEY_B, "198.51.100.1");
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    assert_eq!(wrong.json["error"], "the enrolment key is not valid");

    let (other_key, other_id) = h.create_key(json!({ "approval": "auto" }));
    h.admin(
        Method::POST,
        &format!("/api/v1/keys/{other_id}/revoke"),
        None,
    );
    let revision = revision + 2;
    let revoked = h.enrol(&other_key, KEY_C, "198.51.100.1");
    assert_eq!(revoked.status, StatusCode::FORBIDDEN);
    assert_eq!(revoked.json["error"], "the enrolment key was revoked");
    let (taken_key, _) = h.create_key(json!({ "approval": "auto" }));
    let again = h.enrol(&taken_key, KEY_A, "198.51.100.2");
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);
    assert_eq!(
        h.revision(),
        revision + 1,
        "a refused enrolment changed the state"
    );
    let keys = h.admin(Method::GET, "/api/v1/keys", None);
    let first = keys
        .json
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .unwrap();
    assert_eq!(first["uses"], 1);
    assert_eq!(first["status"], "used up");
}

#[test]
fn guessing_enrolment_keys_is_rate_limited() {
    let h = Harness::new("guess");
    let (key, _) = h.create_key(json!({ "approval": "auto" }));
    for i in 0..crate::limit::PER_SOURCE {
        let answer = h.enrol(&format!("enk_guess{i}"), KEY_A, "203.0.113.5");
        assert_eq!(answer.status, StatusCode::FORBIDDEN);
    }
    // Now even the right key is held back from that source...
    let held = h.enrol(&key, KEY_A, "203.0.113.5");
    assert_eq!(held.status, StatusCode::TOO_MANY_REQUESTS, "{}", held.text);
    assert!(held.json["error"]
        .as_str()
        .unwrap()
        .starts_with("too many failed attempts"));
    // ...but not from another.
    assert_eq!(
        h.enrol(&key, KEY_A, "203.0.113.6").status,
        StatusCode::CREATED
    );
}

#[test]
fn bad_inputs_are_refused_each_with_its_message() {
    let h = Harness::new("bad");
    let imported = h.import("", EXAMPLE);
    assert_eq!(imported.status, StatusCode::OK, "{}", imported.text);

    let cases: Vec<(Method, &str, Value, StatusCode, &str)> = vec![
        (
            Method::POST,
            "/api/v1/keys",
            json!({ "tags": ["users"], "approve": "auto" }),
            StatusCode::BAD_REQUEST,
            "the request body is not what this endpoint takes: unknown field `approve`",
        ),
        (
            Method::POST,
            "/api/v1/keys",
            json!({ "expires": "soon" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "the change was refused: expires: error: \"soon\" is not a duration",
        ),
        (
            Method::POST,
            "/api/v1/keys",
            json!({ "tags": ["no spaces"] }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "the change was refused: tags[0]: error: \"no spaces\" may hold only letters",
        ),
        (
            Method::POST,
            "/api/v1/subnets",
            json!({ "system": "menlo-gw-1", "subnet": "10.1.0.1/16" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "the change was refused: subnet: error: 10.1.0.1/16 has host bits set (hint: did you mean 10.1.0.0/16?)",
        ),
        (
            Method::POST,
            "/api/v1/subnets",
            json!({ "system": "menlo-gw-1", "subnet": "10.1.0.0/40" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "the change was refused: subnet: error: \"10.1.0.0/40\" is not an IPv4 CIDR",
        ),
        (
            Method::POST,
            "/api/v1/subnets",
            json!({ "system": "nobody", "subnet": "10.1.0.0/16" }),
            StatusCode::NOT_FOUND,
            "no system named \"nobody\"",
        ),
        (
            Method::POST,
            "/api/v1/policies",
            json!({
                "name": "to nowhere", "kind": "gateway", "senders": ["users"],
                "gateways": ["laptop"], "subnets": ["192.168.77.0/24"],
                "acl": [{ "protocol": "tcp", "ports": 70000 }]
            }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "the change was refused: policies[\"to nowhere\"].gateways[0]: error: system \"laptop\" is not allowed to act as a gateway",
        ),
        (
            Method::POST,
            "/api/v1/policies",
            json!({
                "name": "users to the office", "kind": "direct", "senders": ["users"],
                "receivers": ["servers"], "acl": [{ "protocol": "smtp" }]
            }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "the change was refused: policies[\"users to the office\"].acl[0]: error: unknown protocol",
        ),
        (
            Method::POST,
            "/api/v1/policies",
            json!({
                "name": "users to servers", "kind": "direct", "senders": ["users"],
                "receivers": ["servers"], "acl": [{ "protocol": "any" }]
            }),
            StatusCode::CONFLICT,
            "a policy named \"users to servers\" exists already",
        ),
        (
            Method::PUT,
            "/api/v1/systems/menlo-gw-1/gateway",
            json!({ "allowed": "yes" }),
            StatusCode::BAD_REQUEST,
            "the request body is not what this endpoint takes: invalid type: string \"yes\", expected a boolean",
        ),
        (
            Method::PATCH,
            "/api/v1/systems/laptop",
            json!({ "name": "menlo-gw-1" }),
            StatusCode::CONFLICT,
            "a system named \"menlo-gw-1\" exists already",
        ),
        (
            Method::POST,
            "/api/v1/explain",
            json!({ "from": "laptop", "to": "192.168.77.300" }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "the change was refused: to: error: \"192.168.77.300\" is not an IPv4 address",
        ),
        (
            Method::POST,
            "/api/v1/trust-requirements",
            json!({ "name": "x", "kind": "public_ip", "allow": ["1.2.3.4/33"] }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "the change was refused: trust_requirements[\"x\"].allow[0]: error:",
        ),
    ];
    let revision = h.revision();
    for (method, path, body, status, message) in cases {
        let answer = h.admin(method.clone(), path, Some(body.clone()));
        assert_eq!(
            answer.status, status,
            "{method} {path} {body}: {}",
            answer.text
        );
        let error = answer.json["error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with(message),
            "{method} {path} {body}:\n  got      {error}\n  expected {message}…"
        );
    }
    assert_eq!(h.revision(), revision, "a refused change changed the state");

    // Problems carry the field apart from the message, for forms.
    let answer = h.admin(
        Method::POST,
        "/api/v1/subnets",
        Some(json!({ "system": "menlo-gw-1", "subnet": "10.1.0.1/16" })),
    );
    assert_eq!(answer.json["problems"][0]["field"], "subnet");
    assert_eq!(
        answer.json["problems"][0]["hint"],
        "did you mean 10.1.0.0/16?"
    );

    // A body over the limit is refused before it is read whole.
    let big = json!({ "tags": vec!["x"; MAX_BODY / 2] });
    assert_eq!(
        h.admin(Method::POST, "/api/v1/keys", Some(big)).status,
        StatusCode::PAYLOAD_TOO_LARGE
    );
    // An unknown endpoint.
    assert_eq!(
        h.admin(Method::GET, "/api/v1/nothing", None).status,
        StatusCode::NOT_FOUND
    );
}

#[test]
fn policies_subnets_gateways_export_and_explain() {
    let h = Harness::new("flow");
    assert_eq!(h.import("?file=net.toml", EXAMPLE).status, StatusCode::OK);
    let broken = h.import("?file=net.toml", "[[system]]\nname = 1\n");
    assert_eq!(broken.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        broken.json["diagnostics"][0]
            .as_str()
            .unwrap()
            .starts_with("net.toml:2:8: error:"),
        "{}",
        broken.text
    );

    // The guide's steps 2-3 on the API: gateway toggle, subnets, a policy with a filter.
    let off = h.admin(
        Method::PUT,
        "/api/v1/systems/menlo-gw-2/gateway",
        Some(json!({ "allowed": false })),
    );
    assert_eq!(off.status, StatusCode::OK, "{}", off.text);
    assert_eq!(off.json["gateway"]["allowed"], false);
    // Policies still naming it are accepted, with a warning.
    assert!(
        off.json["warnings"][0]["message"]
            .as_str()
            .unwrap()
            .contains("switched off"),
        "{}",
        off.text
    );
    let added = h.admin(
        Method::POST,
        "/api/v1/subnets",
        Some(json!({ "system": "menlo-gw-1", "subnet": "0.0.0.0/0" })),
    );
    assert_eq!(added.status, StatusCode::OK, "{}", added.text);
    let subnets = h.admin(Method::GET, "/api/v1/subnets", None);
    assert!(subnets
        .json
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["system"] == "menlo-gw-1"
            && r["subnet"] == "0.0.0.0/0"
            && r["source"] == "added"));

    let policy = h.admin(
        Method::GET,
        "/api/v1/policies/users%20to%20Menlo%20Park%20Office",
        None,
    );
    assert_eq!(policy.status, StatusCode::OK, "{}", policy.text);
    let mut edited = policy.json.clone();
    edited["filter"] = json!(["192.168.77.20"]);
    let updated = h.admin(
        Method::PUT,
        "/api/v1/policies/users%20to%20Menlo%20Park%20Office",
        Some(edited.clone()),
    );
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.text);
    // The same edit again is made on an old version: refused, nothing lost.
    let stale = h.admin(
        Method::PUT,
        "/api/v1/policies/users%20to%20Menlo%20Park%20Office",
        Some(edited),
    );
    assert_eq!(stale.status, StatusCode::CONFLICT);
    assert!(stale.json["error"]
        .as_str()
        .unwrap()
        .contains("was changed by someone else"));

    let exported = h.admin(Method::GET, "/api/v1/definition", None);
    assert!(
        exported
            .text
            .contains("filter = [\n  \"192.168.77.20\",\n]"),
        "{}",
        exported.text
    );
    enclave_policy::load("exported.toml", &exported.text).unwrap();

    let explained = h.admin(
        Method::POST,
        "/api/v1/explain",
        Some(json!({ "from": "laptop", "to": "192.168.77.20:445", "proto": "tcp", "at": "2026-11-25T18:00:00Z" })),
    );
    assert_eq!(explained.status, StatusCode::OK, "{}", explained.text);
    assert!(explained.json["verdict"].is_string(), "{}", explained.text);
    assert!(explained.json["text"]
        .as_str()
        .unwrap()
        .contains("users to Menlo Park Office"));
    let unknown = h.admin(
        Method::POST,
        "/api/v1/explain",
        Some(json!({ "from": "nobody", "to": "10.0.0.1" })),
    );
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    // Deleting a gateway a policy routes through is refused, naming the policy.
    let refused = h.admin(Method::DELETE, "/api/v1/systems/menlo-gw-1", None);
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        refused.text
    );
    assert!(
        refused.json["problems"][0]["field"]
            .as_str()
            .unwrap()
            .starts_with("policies["),
        "{}",
        refused.text
    );
    let deleted = h.admin(Method::DELETE, "/api/v1/systems/contractor", None);
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.text);
}

#[test]
fn a_database_that_is_down_makes_requests_fail_clearly() {
    let h = Harness::new("down");
    assert_eq!(
        h.admin(Method::GET, "/api/v1/systems", None).status,
        StatusCode::OK
    );
    h.bench.block_on(h.bench.store.close());
    let answer = h.admin(Method::POST, "/api/v1/keys", Some(json!({})));
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.text
    );
    assert_eq!(
        answer.json["error"],
        "the database is unavailable; nothing was changed. Try again later"
    );
    let enrol = h.enrol("enk_x", KEY_A, "192.0.2.1");
    assert_eq!(
        enrol.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        enrol.text
    );
}

#[test]
fn an_app_device_gets_its_configuration_once_with_its_private_key() {
    let h = Harness::new("app-device");
    assert_eq!(h.import("", EXAMPLE).status, StatusCode::OK);
    let made = h.admin(
        Method::POST,
        "/api/v1/app-devices",
        Some(json!({ "name": "alice-phone", "tags": ["users"] })),
    );
    assert_eq!(made.status, StatusCode::CREATED, "{}", made.text);
    let system = &made.json["system"];
    assert_eq!(system["enrolled_with"], "wireguard-app");
    assert_eq!(system["approval"], "approved");
    let config = &made.json["config"];
    assert_eq!(config["private_key_included"], true);
    assert_eq!(config["file_name"], "alice-phone.conf");
    let text = config["text"].as_str().unwrap();
    // The private key in the file is the pair of the stored public key.
    let private = text
        .lines()
        .find_map(|l| l.strip_prefix("PrivateKey = "))
        .expect("a private key");
    assert_eq!(
        crate::secret::wireguard_public_key(private).as_deref(),
        system["public_key"].as_str()
    );
    // The office's subnet to its preferred gateway, the Internet to the egress gateway.
    assert!(
        text.contains(
            "Endpoint = 203.0.113.2:51820\nAllowedIPs = 100.64.0.2/32, 192.168.77.0/24\n"
        ),
        "{text}"
    );
    assert!(text.contains("0.0.0.0/0"), "{text}");
    // Never again: not in the system's record, the config endpoint, the export or the audit.
    let again = h.admin(Method::GET, "/api/v1/app-devices/alice-phone", None);
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    assert_eq!(again.json["config"]["private_key_included"], false);
    for path in [
        "/api/v1/app-devices/alice-phone",
        "/api/v1/systems/alice-phone",
        "/api/v1/definition",
        "/api/v1/audit",
    ] {
        let answer = h.admin(Method::GET, path, None);
        assert!(
            !answer.text.contains(private),
            "{path} shows the private key"
        );
    }
    let audit = h.admin(Method::GET, "/api/v1/audit", None).text;
    assert!(audit.contains("system.add-app"), "{audit}");
    // A pasted key: no private key in the file; a taken name or key is refused.
    let pasted = h.admin(
        Method::POST,
        "/api/v1/app-devices",
        Some(json!({ "name": "bob-laptop", "tags": ["users"], "public_key": KEY_C })),
    );
    assert_eq!(pasted.status, StatusCode::CREATED, "{}", pasted.text);
    assert_eq!(pasted.json["config"]["private_key_included"], false);
    assert!(!pasted.json["config"]["text"]
        .as_str()
        .unwrap()
        .contains("\nPrivateKey ="));
    let taken = h.admin(
        Method::POST,
        "/api/v1/app-devices",
        Some(json!({ "name": "carol-phone", "public_key": KEY_C })),
    );
    assert_eq!(taken.status, StatusCode::CONFLICT, "{}", taken.text);
    let bad = h.admin(
        Method::POST,
        "/api/v1/app-devices",
        Some(json!({ "name": "carol-phone", "public_key": "not a key" })),
    );
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", bad.text);
    assert_eq!(
        bad.json["problems"][0]["field"], "public_key",
        "{}",
        bad.text
    );
    // An enrolled system's agent configures itself: no app configuration for it.
    let agent = h.admin(Method::GET, "/api/v1/app-devices/laptop", None);
    assert_eq!(
        agent.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        agent.text
    );
    let missing = h.admin(Method::GET, "/api/v1/app-devices/nobody", None);
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{}", missing.text);
}
