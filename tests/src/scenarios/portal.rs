//! The portal in a real browser: headless Chromium driven through chromedriver's W3C
//! WebDriver HTTP API, against a real `enclave-control` in a namespace. chromedriver and
//! Chromium run inside the namespace (chromedriver listens on its loopback only); the
//! WebDriver calls are plain HTTP/1.1 made from a thread that entered the namespace.
//! Screenshots of each page are kept in the scenario's log directory.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use base64::Engine as _;
use enclave_netns::{Netns, SpawnOpts, TopologySpec};
use serde_json::{json, Value};

use super::control::{admin_token, cli, create_key, start_server};
use crate::control_fixture::enrol_request as enrol;
use crate::office::LAN;
use crate::{Ctx, Scenario};

/// The Enrolment keys, Tags, Trust requirements and Explain pages (with this module's browser).
#[path = "portal_admin.rs"]
pub(super) mod admin;

const KEY_A: &str = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=";
pub(crate) const PASSWORD: &str = "correct horse battery staple";
/// chromedriver's port, on the namespace's loopback.
pub(crate) const DRIVER_PORT: u16 = 9515;
/// The W3C name of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "portal-browser",
            about: "the portal in headless Chromium: a wrong password refused, sign in, Approve a pending system, allow it as a gateway, a bad subnet refused next to its field, Activity, a form without its CSRF token refused, sign out",
            run: browser,
        },
        Scenario {
            name: "portal-live",
            about: "the portal's Systems page left open in headless Chromium while the laptop's active gateway is killed -9: without a reload it shows the gateway disconnected and the laptop on the other gateway; the laptop's page shows since when, and its peers",
            run: live,
        },
    ]
}

/// One WebDriver session.
pub(crate) struct Browser<'a> {
    ns: &'a Netns,
    session: String,
    shots: PathBuf,
    base: String,
}

/// One HTTP/1.1 exchange with chromedriver, from inside `ns`: the status and the JSON.
fn driver(
    ns: &Netns,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Value)> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{DRIVER_PORT}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, body) = ns.run_in(move || -> anyhow::Result<(u16, Vec<u8>)> {
        let mut stream = TcpStream::connect(("127.0.0.1", DRIVER_PORT))?;
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        stream.write_all(request.as_bytes())?;
        // The head, then exactly Content-Length bytes (chromedriver may keep the connection).
        let mut answer = Vec::new();
        let mut buf = [0u8; 64 * 1024];
        let head_end = loop {
            if let Some(at) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let n = stream.read(&mut buf)?;
            ensure!(
                n > 0,
                "chromedriver closed the connection before its answer's head"
            );
            answer.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&answer[..head_end]).into_owned();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("chromedriver's answer has no status")?;
        let length = head.lines().find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())
                .flatten()
        });
        let mut body = answer.split_off(head_end);
        match length {
            Some(length) => {
                while body.len() < length {
                    let n = stream.read(&mut buf)?;
                    ensure!(n > 0, "chromedriver closed the connection mid-answer");
                    body.extend_from_slice(&buf[..n]);
                }
                body.truncate(length);
            }
            None => {
                stream.read_to_end(&mut body)?;
            }
        }
        Ok((status, body))
    })??;
    let json = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).with_context(|| {
            format!(
                "chromedriver's answer is not JSON: {}",
                String::from_utf8_lossy(&body)
            )
        })?
    };
    Ok((status, json))
}

impl<'a> Browser<'a> {
    pub(crate) fn start(ns: &'a Netns, shots: PathBuf, base: String) -> anyhow::Result<Self> {
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "browserName": "chrome",
            // The server's certificate is self-signed (pinned by fingerprint by our CLI).
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1200,900"],
            },
        }}});
        let (status, answer) = driver(ns, "POST", "/session", Some(&capabilities))?;
        ensure!(
            status == 200,
            "chromedriver made no session ({status}): {answer}"
        );
        let session = answer["value"]["sessionId"]
            .as_str()
            .context("no session id")?
            .to_owned();
        Ok(Self {
            ns,
            session,
            shots,
            base,
        })
    }

    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let path = format!("/session/{}{path}", self.session);
        let (status, answer) = driver(self.ns, method, &path, body.as_ref())?;
        ensure!(
            status == 200,
            "WebDriver {method} {path}: {status} {answer}"
        );
        Ok(answer["value"].clone())
    }

    pub(crate) fn open(&self, path: &str) -> anyhow::Result<()> {
        self.call(
            "POST",
            "/url",
            Some(json!({ "url": format!("{}{path}", self.base) })),
        )?;
        Ok(())
    }

    pub(crate) fn url(&self) -> anyhow::Result<String> {
        Ok(self
            .call("GET", "/url", None)?
            .as_str()
            .unwrap_or("")
            .to_owned())
    }

    /// The page's visible text.
    pub(crate) fn text(&self) -> anyhow::Result<String> {
        let body = self.find("body")?;
        Ok(self
            .call("GET", &format!("/element/{body}/text"), None)?
            .as_str()
            .unwrap_or("")
            .to_owned())
    }

    /// The page's text once it holds `needle` (a click's navigation may still be loading),
    /// or an error with the text it holds after 10 s.
    pub(crate) fn text_with(&self, needle: &str) -> anyhow::Result<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.text().unwrap_or_default();
            if text.contains(needle) {
                return Ok(text);
            }
            if std::time::Instant::now() > deadline {
                bail!("the page never said {needle:?}; it says:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the URL ends with `suffix`, as [`Self::text_with`].
    pub(crate) fn url_to(&self, suffix: &str) -> anyhow::Result<()> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let url = self.url().unwrap_or_default();
            if url.ends_with(suffix) {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                bail!("the browser is at {url}, not at …{suffix}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(crate) fn find(&self, css: &str) -> anyhow::Result<String> {
        let found = self
            .call(
                "POST",
                "/element",
                Some(json!({ "using": "css selector", "value": css })),
            )
            .with_context(|| format!("no element {css}"))?;
        Ok(found[ELEMENT].as_str().context("no element id")?.to_owned())
    }

    pub(crate) fn click(&self, css: &str) -> anyhow::Result<()> {
        let element = self.find(css)?;
        self.call(
            "POST",
            &format!("/element/{element}/click"),
            Some(json!({})),
        )?;
        Ok(())
    }

    pub(crate) fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let element = self.find(css)?;
        self.call(
            "POST",
            &format!("/element/{element}/clear"),
            Some(json!({})),
        )?;
        self.call(
            "POST",
            &format!("/element/{element}/value"),
            Some(json!({ "text": text })),
        )?;
        Ok(())
    }

    pub(crate) fn script(&self, script: &str) -> anyhow::Result<Value> {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": [] })),
        )
    }

    /// Sets the window's size in CSS pixels (400 wide: a phone; 1200: a laptop).
    pub(crate) fn window(&self, width: u32, height: u32) -> anyhow::Result<()> {
        self.call(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )?;
        Ok(())
    }

    /// How many pixels the page scrolls sideways at the window's width (0: it fits).
    pub(crate) fn sideways(&self) -> anyhow::Result<i64> {
        self.script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
        )?
        .as_i64()
        .context("the page's width is not a number")
    }

    /// Saves a screenshot as `NAME.png` in the log directory.
    pub(crate) fn shot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let png = self.call("GET", "/screenshot", None)?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().context("no screenshot")?)
            .context("the screenshot is not base64")?;
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        let _ = driver(
            self.ns,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
    }
}

/// `systems list --json`'s entry for `name`.
fn system(
    ns: &Netns,
    bin: &Path,
    server: &super::control::Endpoint,
    token: &str,
    name: &str,
) -> anyhow::Result<Value> {
    let out = cli(ns, bin, server, token, &["systems", "list", "--json"])?;
    let list: Value = serde_json::from_str(&out).context("systems list --json is not JSON")?;
    list.as_array()
        .and_then(|l| l.iter().find(|s| s["name"] == name))
        .cloned()
        .with_context(|| format!("no system {name} in {list}"))
}

/// An error unless Debian's Chromium and chromedriver are installed.
pub(crate) fn require_chromium() -> anyhow::Result<()> {
    for program in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        ensure!(
            Path::new(program).exists(),
            "{program} is missing: install Debian's chromium and chromium-driver (cargo xtask installs them as root)"
        );
    }
    Ok(())
}

/// `enclave-control admin user create alice` on `database` in `ns`, with `password` (written
/// to a file in `dir` for `--password-file`).
pub(crate) fn portal_account(
    ns: &Netns,
    bin: &Path,
    database: &str,
    dir: &Path,
    password: &str,
) -> anyhow::Result<()> {
    let password_file = dir.join("password");
    std::fs::write(&password_file, format!("{password}\n"))?;
    let made = ns.exec(&[
        bin.to_str().context("binary path is not UTF-8")?,
        "admin",
        "user",
        "create",
        "alice",
        "--database",
        database,
        "--password-file",
        password_file.to_str().context("path is not UTF-8")?,
    ])?;
    ensure!(
        made.contains("made portal account alice"),
        "user create printed {made:?}"
    );
    Ok(())
}

/// chromedriver in `ns`, on its loopback's [`DRIVER_PORT`], once it says it started.
pub(crate) fn start_chromedriver(ns: &Netns) -> anyhow::Result<enclave_netns::Process> {
    let mut process = ns.spawn(
        "chromedriver",
        &[
            "/usr/bin/chromedriver".to_owned(),
            format!("--port={DRIVER_PORT}"),
        ],
        SpawnOpts::default(),
    )?;
    process.wait_for_log("started successfully", Duration::from_secs(30))?;
    Ok(process)
}

fn browser(ctx: &Ctx) -> anyhow::Result<()> {
    require_chromium()?;
    let mut spec = TopologySpec::new("portal");
    spec.node("ctl");
    let topo = ctx.topology(&spec)?;
    let ns = topo.ns("ctl");
    let bin = ctx.bin("enclave-control")?;
    let dir = tempfile::tempdir().context("a temporary directory")?;
    let state = dir.path().join("state");
    let database = format!("sqlite://{}/control.db", state.display());

    // An admin token for checking through the CLI, and a portal account.
    let token = admin_token(ns, &bin, &database, &[])?;
    portal_account(ns, &bin, &database, dir.path(), PASSWORD)?;

    let server = start_server(ns, &bin, "control", &database, 8443, &state)?;
    let key = create_key(ns, &bin, &server.at, &token, &["--approval", "manual"])?;
    let (status, enrolled) = enrol(ns, &server.at, &key, KEY_A, Some("laptop"))?;
    ensure!(
        status == 201 && enrolled["approval"] == "pending",
        "{status} {enrolled}"
    );

    let _driver_process = start_chromedriver(ns)?;
    let shots = ctx.log_dir().to_path_buf();
    let b = Browser::start(ns, shots, server.at.url.clone())?;

    // Without a session, the portal sends the browser to sign in.
    b.open("/portal/systems")?;
    b.url_to("/portal/signin")?;
    b.shot("01-signin")?;

    // A wrong password: refused, no session.
    b.type_into("#name", "alice")?;
    b.type_into("#password", "not the password")?;
    b.click("#signin")?;
    b.text_with("Wrong name or password.")?;
    b.shot("02-wrong-password")?;
    b.open("/portal/systems")?;
    b.url_to("/portal/signin")?;

    // The right one: the Systems page with the pending laptop.
    b.type_into("#name", "alice")?;
    b.type_into("#password", PASSWORD)?;
    b.click("#signin")?;
    b.url_to("/portal/systems")?;
    let text = b.text_with("laptop")?;
    ensure!(
        text.contains("pending") && text.contains("100.64.0.1"),
        "the Systems page:\n{text}"
    );
    b.shot("03-systems-pending")?;

    // Approve.
    b.click("#approve-laptop")?;
    let text = b.text_with("approved")?;
    ensure!(!text.contains("pending"), "after Approve:\n{text}");
    let laptop = system(ns, &bin, &server.at, &token, "laptop")?;
    ensure!(laptop["approval"] == "approved", "the server says {laptop}");
    b.shot("04-systems-approved")?;
    // At a phone's width too.
    b.window(400, 800)?;
    b.open("/portal/systems/laptop")?;
    b.text_with("Allow this system to act as a gateway")?;
    b.shot("04-system-phone-width")?;
    // Wide tables scroll within their box; the page itself does not scroll sideways.
    let sideways = b.sideways()?;
    ensure!(
        sideways == 0,
        "the page is {sideways} px too wide for a phone"
    );
    b.window(1200, 900)?;

    // The details page: allow it to act as a gateway.
    b.open("/portal/systems/laptop")?;
    b.text_with("Allow this system to act as a gateway")?;
    b.click("#gateway-allowed")?;
    b.click("#save-gateway")?;
    b.text_with("approved Gateway")?;
    let laptop = system(ns, &bin, &server.at, &token, "laptop")?;
    ensure!(
        laptop["gateway"]["allowed"] == true,
        "the server says {laptop}"
    );
    b.shot("05-system-gateway")?;

    // A subnet with host bits set is refused next to its field; nothing changes.
    b.type_into("#subnet", "192.168.77.1/24")?;
    b.click("#add-subnet")?;
    b.text_with("has host bits set")?;
    let error = b.find("#subnet ~ .field-error")?;
    let message = b.call("GET", &format!("/element/{error}/text"), None)?;
    ensure!(
        message
            .as_str()
            .is_some_and(|m| m.contains("192.168.77.1/24 has host bits set")
                && m.contains("did you mean 192.168.77.0/24?")),
        "the field error says {message}"
    );
    b.script("document.querySelector('.field-error').scrollIntoView({block: 'center'});")?;
    b.shot("06-bad-subnet")?;
    // A good one is added.
    b.type_into("#subnet", "0.0.0.0/0")?;
    b.click("#add-subnet")?;
    b.text_with("0.0.0.0/0 added")?;
    let laptop = system(ns, &bin, &server.at, &token, "laptop")?;
    ensure!(
        laptop["gateway"]["subnets"]
            .as_array()
            .is_some_and(|s| s.iter().any(|x| x == "0.0.0.0/0")),
        "the server says {laptop}"
    );

    // A form posted without its CSRF token is refused, and changes nothing.
    b.open("/portal/systems/laptop")?;
    b.text_with("Allow this system to act as a gateway")?;
    b.script(
        "document.querySelectorAll('input[name=csrf]').forEach(e => e.remove()); \
         document.getElementById('gateway-allowed').checked = false;",
    )?;
    b.click("#save-gateway")?;
    b.text_with("security token is missing or wrong")?;
    b.shot("07-no-csrf-token")?;
    let laptop = system(ns, &bin, &server.at, &token, "laptop")?;
    ensure!(
        laptop["gateway"]["allowed"] == true,
        "a form without its token changed the server: {laptop}"
    );

    // Activity: the portal's changes, by user:alice.
    b.open("/portal/activity")?;
    let text = b.text_with("system.approve")?;
    ensure!(
        text.contains("user:alice") && text.contains("system.gateway"),
        "the Activity page:\n{text}"
    );
    b.shot("08-activity")?;

    // Sign out: the pages send the browser to sign in again.
    b.click("#signout")?;
    b.url_to("/portal/signin")?;
    b.open("/portal/systems")?;
    b.url_to("/portal/signin")?;
    b.shot("09-signed-out")?;
    drop(b);

    let log = server.process.log();
    if log.contains(PASSWORD) {
        bail!("the server's log holds the password");
    }
    Ok(())
}

/// The text of each element of `selectors` (empty when there is none) and whether the page
/// still carries `window.enclaveMarker` (set once; a reload would lose it).
fn texts(b: &Browser<'_>, selectors: &[&str]) -> anyhow::Result<(Vec<String>, bool)> {
    let list = serde_json::to_string(selectors)?;
    let answer = b.script(&format!(
        "return [{list}.map(s => {{ const e = document.querySelector(s); return e ? e.textContent : ''; }}), \
         window.enclaveMarker === 'kept'];"
    ))?;
    let texts = answer[0]
        .as_array()
        .context("no texts")?
        .iter()
        .map(|t| t.as_str().unwrap_or("").to_owned())
        .collect();
    Ok((texts, answer[1] == true))
}

fn live(ctx: &Ctx) -> anyhow::Result<()> {
    use super::control_managed::{active_gateway, Fixture, GATEWAYS};

    require_chromium()?;
    // The managed Menlo Park office: the laptop reaches the LAN through one of two gateways.
    let mut office = Fixture::start(ctx, "plv", 2)?;
    let dir = tempfile::tempdir().context("a temporary directory")?;
    portal_account(
        office.ns("ctl"),
        &office.control,
        &office.database,
        dir.path(),
        PASSWORD,
    )?;
    let first = active_gateway(&office).context("the laptop names no active gateway")?;
    let name_of = |node: &str| {
        GATEWAYS
            .iter()
            .find(|(n, _)| *n == node)
            .map(|(_, name)| *name)
            .unwrap_or("")
    };
    let other = if first == "gw1" { "gw2" } else { "gw1" };
    let (first_name, other_name) = (name_of(first), name_of(other));

    // Killed by its PID while the browser borrows the fixture's namespace.
    let first_pid = office.agent(first)?.pid();
    let _driver = start_chromedriver(office.ns("ctl"))?;
    let b = Browser::start(
        office.ns("ctl"),
        ctx.log_dir().to_path_buf(),
        office.server.at.url.clone(),
    )?;
    b.open("/portal/signin")?;
    b.type_into("#name", "alice")?;
    b.type_into("#password", PASSWORD)?;
    b.click("#signin")?;
    b.url_to("/portal/systems")?;

    // The Systems page: both gateways connected, the laptop on the first.
    let in_use = "#system-laptop .in-use";
    let first_presence = format!("#system-{first_name} .presence");
    let before = format!("{first_name} for {LAN}");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (t, _) = texts(&b, &[in_use, &first_presence])?;
        if t[0].contains(&before) && t[1].contains("connected") {
            break;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "the Systems page never showed the laptop on {first_name}: {t:?}\n{}",
            b.text()?
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = b.text()?;
    ensure!(
        text.contains("Gateway in use") && text.contains("Platform"),
        "the Systems page:\n{text}"
    );
    let status = b.script("return document.getElementById('live-status').textContent;")?;
    ensure!(
        status.as_str().is_some_and(|s| s.starts_with("Live")),
        "the page says no live updates: {status}"
    );
    b.shot("10-live-systems-before")?;

    // The page stays open; a reload would drop this marker. The keyboard focus is on the
    // laptop's link, inside the part that changes: it must stay there.
    b.script(
        "window.enclaveMarker = 'kept'; \
         document.querySelector('#system-laptop a').focus();",
    )?;
    let killed = std::time::Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(first_pid)?),
        nix::sys::signal::Signal::SIGKILL,
    )
    .with_context(|| format!("killing {first_name}'s agent"))?;
    let after = format!("{other_name} for {LAN}");
    let deadline = killed + Duration::from_secs(20);
    let shown = loop {
        let (t, kept) = texts(&b, &[in_use, &first_presence])?;
        ensure!(
            kept,
            "the page was reloaded: live updates must change it in place"
        );
        if t[0].contains(&after) && !t[1].contains("connected") {
            break killed.elapsed();
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "20 s after {first_name} was killed the open Systems page shows {t:?}; the laptop's status: {:?}",
            active_gateway(&office)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    ensure!(
        active_gateway(&office) == Some(other),
        "the page shows {other_name} but the laptop's status says {:?}",
        active_gateway(&office)
    );
    let focused = b.script(
        "const a = document.activeElement; \
         return a && a.closest('#system-laptop') ? a.getAttribute('href') : String(a && a.outerHTML);",
    )?;
    ensure!(
        focused == "/portal/systems/laptop",
        "the update moved the keyboard focus from the laptop's link to {focused}"
    );
    println!(
        "    the open Systems page showed the failover to {other_name} {:.2} s after {first_name} was killed -9, without a reload",
        shown.as_secs_f64()
    );
    b.script("document.getElementById('system-laptop').scrollIntoView({block: 'center'});")?;
    b.shot("11-live-systems-after-failover")?;

    // The laptop's page: the gateway in use since the failover, and its peers.
    b.open("/portal/systems/laptop")?;
    let text = b.text_with("Gateways in use")?;
    let (t, _) = texts(&b, &["#active-gateways tbody tr"])?;
    ensure!(
        t[0].contains(LAN) && t[0].contains(other_name) && t[0].contains(" UTC"),
        "the laptop's page shows {t:?} as the gateway in use:\n{text}"
    );
    ensure!(
        text.contains("Peers") && text.contains(other_name) && text.contains("connected"),
        "the laptop's page shows no peers:\n{text}"
    );
    b.shot("12-live-laptop")?;
    b.script("document.getElementById('peers').scrollIntoView();")?;
    b.shot("12-live-laptop-peers")?;

    // At a phone's width: nothing wider than the screen.
    b.window(400, 800)?;
    for (path, shot) in [
        ("/portal/systems/laptop", "13-live-laptop-phone"),
        ("/portal/systems", "14-live-systems-phone"),
    ] {
        b.open(path)?;
        b.text_with("laptop")?;
        let sideways = b.sideways()?;
        ensure!(
            sideways == 0,
            "{path} is {sideways} px too wide for a phone"
        );
        b.shot(shot)?;
    }
    drop(b);
    Ok(())
}
