//! Every `POST` route of the portal refuses a form without its session's CSRF token, or
//! without a session, and changes nothing; the same form with both is then accepted (each
//! refusal's positive control). A new `POST` route belongs in [`walk_every_post_route`].

use super::*;

/// The harness, a signed-in session's cookie and its form token.
struct Walk {
    h: Harness,
    cookie: String,
    csrf: String,
}

impl Walk {
    fn state(&self) -> Arc<crate::model::State> {
        self.h
            .bench
            .runtime
            .block_on(self.h.portal.service.state())
            .unwrap()
    }

    fn revision(&self) -> i64 {
        self.state().revision
    }

    fn post(&self, path: &str, cookie: &str, pairs: &[(&str, &str)]) -> Answer {
        self.h.send(Method::POST, path, cookie, Some(encode(pairs)))
    }

    /// Posts `pairs` to `path` without the token, with a forged one and without a session:
    /// each refused with `403`, nothing changed, the session alive. Then with the token:
    /// answered with `status`, and the network changed if `changes`. Returns that answer.
    fn check(
        &self,
        path: &str,
        pairs: &[(&str, &str)],
        status: StatusCode,
        changes: bool,
    ) -> Answer {
        let before = self.revision();
        fn with<'a>(csrf: &'a str, pairs: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
            [("csrf", csrf)]
                .into_iter()
                .chain(pairs.iter().copied())
                .collect()
        }
        let refusals = [
            (self.post(path, &self.cookie, pairs), "no token"),
            (
                self.post(path, &self.cookie, &with("forged", pairs)),
                "a forged token",
            ),
            (self.post(path, "", &with(&self.csrf, pairs)), "no session"),
        ];
        for (refused, how) in refusals {
            assert_eq!(
                refused.status,
                StatusCode::FORBIDDEN,
                "POST {path} with {how}: {}",
                refused.text
            );
            let why = if how == "no session" {
                "You are not signed in"
            } else {
                "This form&#39;s security token is missing or wrong; nothing was changed."
            };
            assert!(
                refused.text.contains(why),
                "POST {path} with {how}: {}",
                refused.text
            );
            assert_eq!(self.revision(), before, "POST {path} with {how} changed it");
        }
        let page = self
            .h
            .send(Method::GET, "/portal/systems", &self.cookie, None);
        assert_eq!(
            page.status,
            StatusCode::OK,
            "the session ended at POST {path}"
        );

        let accepted = self.post(path, &self.cookie, &with(&self.csrf, pairs));
        assert_eq!(
            accepted.status, status,
            "POST {path} with the token: {}",
            accepted.text
        );
        assert_eq!(
            self.revision() > before,
            changes,
            "POST {path} with the token: the network changed, or not, unlike expected"
        );
        accepted
    }

    /// The version of policy `name` now, as a form field.
    fn policy_version(&self, name: &str) -> String {
        self.state().policies[name].version.to_string()
    }
}

/// A form posted with the token: where, what, the status of its answer, whether it changes
/// the network.
type Step<'a> = (&'a str, &'a [(&'a str, &'a str)], StatusCode, bool);

const SEE: StatusCode = StatusCode::SEE_OTHER;
const OK: StatusCode = StatusCode::OK;

#[test]
fn walk_every_post_route() {
    let h = Harness::new("csrf-walk");
    let (_, cookie) = h.sign_in(PASSWORD);
    let csrf = h.send(Method::GET, "/portal/systems", &cookie, None).csrf();
    let w = Walk { h, cookie, csrf };
    let walk = |steps: &[Step<'_>]| {
        for &(path, pairs, status, changes) in steps {
            w.check(path, pairs, status, changes);
        }
    };

    // Systems (the token is checked before the action is looked up), trust requirements,
    // tags.
    let lan = [("subnet", "192.168.77.0/24")];
    let other = [("subnet", "10.9.0.0/24")];
    walk(&[
        ("/portal/systems/laptop/approve", &[], SEE, true),
        (
            "/portal/systems/laptop/gateway",
            &[("allowed", "on")],
            SEE,
            true,
        ),
        ("/portal/systems/laptop/subnet-add", &other, SEE, true),
        ("/portal/systems/laptop/subnet-remove", &other, SEE, true),
        ("/portal/systems/laptop/subnet-add", &lan, SEE, true),
        (
            "/portal/systems/laptop/edit",
            &[("name", "laptop"), ("tags", "users")],
            SEE,
            true,
        ),
        (
            "/portal/systems/laptop/no-such-change",
            &[],
            StatusCode::NOT_FOUND,
            false,
        ),
        (
            "/portal/trust",
            &[("name", "office"), ("allow", "198.51.100.0/24")],
            SEE,
            true,
        ),
    ]);
    let version = w.state().trust_requirements["office"].version.to_string();
    walk(&[
        (
            "/portal/trust/office",
            &[("allow", "198.51.100.0/25"), ("version", &version)],
            SEE,
            true,
        ),
        (
            "/portal/tags",
            &[("name", "users"), ("trust-0", "office")],
            SEE,
            true,
        ),
        ("/portal/tags/users/delete", &[], OK, true),
        (
            "/portal/keys",
            &[("tags", "users"), ("approval", "manual")],
            OK,
            true,
        ),
    ]);
    let key = w
        .state()
        .keys
        .values()
        .find(|k| k.tags.contains("users"))
        .map(|k| k.id.clone());
    let revoke = format!("/portal/keys/{}/revoke", key.expect("the new key"));
    walk(&[(&revoke, &[], OK, true)]);

    // Policies, and their active hours (each edit at the version read).
    let mut policy = vec![
        ("kind", "gateway"),
        ("name", "csrf"),
        ("enabled", "on"),
        ("senders", "users"),
        ("gateways", "laptop"),
        ("subnets", "192.168.77.0/24"),
        ("acl-protocol-0", "any"),
    ];
    walk(&[("/portal/new-policy", &policy, SEE, true)]);
    let version = w.policy_version("csrf");
    walk(&[(
        "/portal/policies/csrf/enabled",
        &[("enabled", "off"), ("version", &version)],
        SEE,
        true,
    )]);
    let version = w.policy_version("csrf");
    let hours = [
        ("version", version.as_str()),
        ("day-mon", "on"),
        ("hours", "09:00-17:00"),
        ("zone", "UTC"),
    ];
    walk(&[("/portal/active-hours/csrf", &hours, SEE, true)]);
    let version = w.policy_version("csrf");
    policy.push(("version", &version));
    walk(&[
        ("/portal/policies/csrf/save", &policy, SEE, true),
        (
            "/portal/policies/csrf/no-such-change",
            &[],
            StatusCode::NOT_FOUND,
            false,
        ),
        ("/portal/policies/csrf/delete", &[], SEE, true),
        ("/portal/trust/office/delete", &[], OK, true),
    ]);

    // A device with the WireGuard app, and the download of its file with its private key.
    let phone = [("name", "phone"), ("tags", "users")];
    let added = w.check("/portal/app-devices", &phone, StatusCode::CREATED, true);
    let private_key = shown_private_key(&added.text);
    let download = [("private_key", private_key.as_str())];
    walk(&[("/portal/app-devices/phone/download", &download, OK, false)]);

    // Signing out: the refused forms left the session alive (see `check`); this one ends it.
    walk(&[("/portal/signout", &[], SEE, false)]);
    let page = w.h.send(Method::GET, "/portal/systems", &w.cookie, None);
    assert_eq!(page.status, SEE, "signed out");
}
