//! The portal in a real browser, as the browser scenarios drive it: headless Chromium through
//! chromedriver's W3C WebDriver HTTP API, against a real `enclave-control` in a namespace.
//! chromedriver and Chromium run inside the namespace (chromedriver listens on its loopback
//! only); the WebDriver calls are plain HTTP/1.1 made from a thread that entered the namespace.
//! Screenshots are kept in the scenario's log directory.
//!
//! [`Browser`] has one method per thing a person does on a page (open it, fill a form and send
//! it, read a field's error); [`Portal`] is the set-up the scenarios without agents share.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context};
use base64::Engine as _;
use enclave_netns::{Netns, Process, SpawnOpts};
use serde_json::{json, Value};

use crate::control_fixture::{portal_account, Admin, ControlHost, Server};
use crate::Ctx;

/// The portal account's name.
pub const USER: &str = "alice";
/// Its password.
pub const PASSWORD: &str = "correct horse battery staple";
/// chromedriver's port, on the namespace's loopback.
const DRIVER_PORT: u16 = 9515;
/// The W3C name of an element reference.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long a page may take to show what a step waits for.
const PAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// An error unless Debian's Chromium and chromedriver are installed.
pub fn require_chromium() -> anyhow::Result<()> {
    for program in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        ensure!(
            Path::new(program).exists(),
            "{program} is missing: install Debian's chromium and chromium-driver (cargo xtask installs them as root)"
        );
    }
    Ok(())
}

/// A server with a portal account ([`USER`], [`PASSWORD`]) and an admin token, on SQLite in a
/// namespace of its own: where the browser scenarios without agents start.
#[derive(Debug)]
pub struct Portal {
    /// The server (stopped first, then the namespace goes).
    pub server: Server,
    /// An admin token, for checking through the CLI and the API what the pages did.
    pub token: String,
    /// The namespace and the server's state.
    pub host: ControlHost,
}

impl Portal {
    /// Makes the account and the token on a new database, then starts the server on port 8443.
    pub fn start(ctx: &Ctx, tag: &str) -> anyhow::Result<Self> {
        require_chromium()?;
        let host = ControlHost::new(ctx, tag)?;
        let database = host.sqlite();
        let token = host.admin_token(&database, &[])?;
        portal_account(
            host.ns(),
            &host.bin,
            &database,
            (USER, PASSWORD),
            host.dir(),
        )?;
        let server = host.start_server("control", &database, 8443, &host.state())?;
        Ok(Self {
            server,
            token,
            host,
        })
    }

    /// The namespace.
    pub fn ns(&self) -> &Netns {
        self.host.ns()
    }

    /// The CLI and the API with the admin token.
    pub fn admin(&self) -> Admin<'_> {
        self.host.admin(&self.server, &self.token)
    }

    /// A browser on the portal, not signed in.
    pub fn browser(&self, ctx: &Ctx) -> anyhow::Result<Browser<'_>> {
        Browser::start(ctx, self.ns(), &self.server.at.url)
    }

    /// A browser on the portal, signed in ([`Browser::sign_in`]).
    pub fn signed_in(&self, ctx: &Ctx) -> anyhow::Result<Browser<'_>> {
        let b = self.browser(ctx)?;
        b.sign_in()?;
        Ok(b)
    }
}

/// An error if `server`'s log holds the portal password.
pub fn no_password_logged(server: &Server) -> anyhow::Result<()> {
    ensure!(
        !server.process.log().contains(PASSWORD),
        "the server's log holds the password"
    );
    Ok(())
}

/// One WebDriver session, with the chromedriver it runs in (ended after the session).
#[derive(Debug)]
pub struct Browser<'a> {
    ns: &'a Netns,
    session: String,
    shots: PathBuf,
    base: String,
    _chromedriver: Process,
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

/// Tries `attempt` every 100 ms until it succeeds or [`PAGE_TIMEOUT`] has passed: its value, or
/// what it last saw.
fn poll<T, Seen>(mut attempt: impl FnMut() -> Result<T, Seen>) -> Result<T, Seen> {
    let deadline = Instant::now() + PAGE_TIMEOUT;
    loop {
        match attempt() {
            Err(seen) if Instant::now() > deadline => return Err(seen),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
            done => return done,
        }
    }
}

impl<'a> Browser<'a> {
    /// Starts chromedriver in `ns` and a session in it, for pages under `base`; screenshots go
    /// to the scenario's log directory.
    pub fn start(ctx: &Ctx, ns: &'a Netns, base: &str) -> anyhow::Result<Self> {
        let mut chromedriver = ns.spawn(
            "chromedriver",
            &[
                "/usr/bin/chromedriver".to_owned(),
                format!("--port={DRIVER_PORT}"),
            ],
            SpawnOpts::default(),
        )?;
        chromedriver.wait_for_log("started successfully", Duration::from_secs(30))?;
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
            shots: ctx.log_dir().to_path_buf(),
            base: base.to_owned(),
            _chromedriver: chromedriver,
        })
    }

    /// [`Self::start`], then [`Self::sign_in`].
    pub fn signed_in(ctx: &Ctx, ns: &'a Netns, base: &str) -> anyhow::Result<Self> {
        let b = Self::start(ctx, ns, base)?;
        b.sign_in()?;
        Ok(b)
    }

    /// One WebDriver command of this session: its value.
    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let path = format!("/session/{}{path}", self.session);
        let (status, answer) = driver(self.ns, method, &path, body.as_ref())?;
        ensure!(
            status == 200,
            "WebDriver {method} {path}: {status} {answer}"
        );
        Ok(answer["value"].clone())
    }

    /// Goes to `path` under the server's URL.
    pub fn open(&self, path: &str) -> anyhow::Result<()> {
        self.call(
            "POST",
            "/url",
            Some(json!({ "url": format!("{}{path}", self.base) })),
        )?;
        Ok(())
    }

    /// [`Self::open`], then [`Self::text_with_all`].
    pub fn visit(&self, path: &str, says: &[&str]) -> anyhow::Result<String> {
        self.open(path)?;
        self.text_with_all(says)
    }

    /// Opens the Activity page and waits until it lists every one of `entries` (actions,
    /// actors): its text.
    pub fn activity(&self, entries: &[&str]) -> anyhow::Result<String> {
        self.visit("/portal/activity", entries)
    }

    /// The URL the browser is at.
    pub fn url(&self) -> anyhow::Result<String> {
        Ok(self
            .call("GET", "/url", None)?
            .as_str()
            .unwrap_or("")
            .to_owned())
    }

    /// The page's visible text.
    pub fn text(&self) -> anyhow::Result<String> {
        self.text_of("body")
    }

    /// The visible text of the element `css`.
    pub fn text_of(&self, css: &str) -> anyhow::Result<String> {
        let text = self.on_element(css, "text", None)?;
        Ok(text.as_str().unwrap_or("").to_owned())
    }

    /// The page's text once it holds `needle` (a click's navigation may still be loading),
    /// or an error with the text it holds after 10 s.
    pub fn text_with(&self, needle: &str) -> anyhow::Result<String> {
        self.text_with_all(&[needle])
    }

    /// [`Self::text_with`] for every one of `needles`; the error names the page and what it
    /// lacks.
    pub fn text_with_all(&self, needles: &[&str]) -> anyhow::Result<String> {
        poll(|| {
            let text = self.text().unwrap_or_default();
            if needles.iter().all(|n| text.contains(n)) {
                Ok(text)
            } else {
                Err(text)
            }
        })
        .map_err(|text| {
            let missing: Vec<&str> = needles
                .iter()
                .copied()
                .filter(|n| !text.contains(n))
                .collect();
            anyhow!(
                "the page {} never said {missing:?}; it says:\n{text}",
                self.url().unwrap_or_default()
            )
        })
    }

    /// Waits until the URL ends with `suffix`, as [`Self::text_with`].
    pub fn url_to(&self, suffix: &str) -> anyhow::Result<()> {
        poll(|| {
            let url = self.url().unwrap_or_default();
            if url.ends_with(suffix) {
                Ok(())
            } else {
                Err(url)
            }
        })
        .map_err(|url| anyhow!("the browser is at {url}, not at …{suffix}"))
    }

    /// The WebDriver reference of the first element `css` selects, waiting for it as
    /// [`Self::text_with`] waits for text (a page under load may still be rendering); the
    /// error names the page the browser is at and what it says.
    pub fn find(&self, css: &str) -> anyhow::Result<String> {
        poll(|| self.find_now(css)).map_err(|error| {
            anyhow!(
                "no element {css} on {} ({error:#}); the page says:\n{}",
                self.url().unwrap_or_default(),
                self.text().unwrap_or_default()
            )
        })
    }

    /// Whether the page has an element `css` selects now, without waiting (for checks that
    /// something is absent).
    pub fn has(&self, css: &str) -> bool {
        self.find_now(css).is_ok()
    }

    fn find_now(&self, css: &str) -> anyhow::Result<String> {
        let found = self.call(
            "POST",
            "/element",
            Some(json!({ "using": "css selector", "value": css })),
        )?;
        Ok(found[ELEMENT].as_str().context("no element id")?.to_owned())
    }

    /// The WebDriver command `command` (`click`, `clear`, `value`, `text`, `screenshot`) on
    /// the first element `css` selects: its value. A `GET` without `body`, else a `POST`.
    fn on_element(&self, css: &str, command: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let element = self.find(css)?;
        let method = if body.is_some() { "POST" } else { "GET" };
        self.call(method, &format!("/element/{element}/{command}"), body)
    }

    /// Clicks the element `css`.
    pub fn click(&self, css: &str) -> anyhow::Result<()> {
        self.on_element(css, "click", Some(json!({})))?;
        Ok(())
    }

    /// Empties the field `css` and types `text` into it.
    pub fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
        self.on_element(css, "clear", Some(json!({})))?;
        self.on_element(css, "value", Some(json!({ "text": text })))?;
        Ok(())
    }

    /// Fills a form: each `(field, text)` of `fields` typed in, in order; then clicks `button`.
    pub fn submit(&self, fields: &[(&str, &str)], button: &str) -> anyhow::Result<()> {
        for (field, text) in fields {
            self.type_into(field, text)?;
        }
        self.click(button)
    }

    /// Sends the sign-in form (on the page) as [`USER`] with `password`.
    pub fn sign_in_with(&self, password: &str) -> anyhow::Result<()> {
        self.submit(&[("#name", USER), ("#password", password)], "#signin")
    }

    /// Signs in as [`USER`] with [`PASSWORD`] from the sign-in page: the browser ends on the
    /// Systems page.
    pub fn sign_in(&self) -> anyhow::Result<()> {
        self.open("/portal/signin")?;
        self.sign_in_with(PASSWORD)?;
        self.url_to("/portal/systems")
    }

    /// Chooses `value` in the `select` with id `id`.
    pub fn select(&self, id: &str, value: &str) -> anyhow::Result<()> {
        self.script_with(
            "document.getElementById(arguments[0]).value = arguments[1];",
            json!([id, value]),
        )?;
        Ok(())
    }

    /// The value of the form field with id `id`.
    pub fn value_of(&self, id: &str) -> anyhow::Result<String> {
        let value = self.script_with(
            "return document.getElementById(arguments[0]).value;",
            json!([id]),
        )?;
        Ok(value.as_str().unwrap_or("").to_owned())
    }

    /// Waits until the error next to the field `#id` (the first `.field-error` after it in
    /// its form) says every one of `says`, then scrolls it to the middle of the window (a
    /// screenshot taken next shows it): its text.
    pub fn field_error(&self, id: &str, says: &[&str]) -> anyhow::Result<String> {
        let css = format!("#{id} ~ .field-error");
        let error = poll(|| {
            let error = self.text_of(&css).unwrap_or_default();
            if says.iter().all(|s| error.contains(s)) {
                Ok(error)
            } else {
                Err(error)
            }
        })
        .map_err(|error| anyhow!("the error next to #{id} says {error:?}, not {says:?}"))?;
        self.script_with(
            "document.querySelector(arguments[0]).scrollIntoView({block: 'center'});",
            json!([css]),
        )?;
        Ok(error)
    }

    /// Runs `script` in the page: what it returns.
    pub fn script(&self, script: &str) -> anyhow::Result<Value> {
        self.script_with(script, json!([]))
    }

    /// Runs `script` in the page with `args` (a JSON array) as its `arguments`: what it
    /// returns.
    pub fn script_with(&self, script: &str, args: Value) -> anyhow::Result<Value> {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// Sets the window's size in CSS pixels (400 wide: a phone; 1200: a laptop).
    pub fn window(&self, width: u32, height: u32) -> anyhow::Result<()> {
        self.call(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )?;
        Ok(())
    }

    /// An error unless the page fits the window's width: wide tables scroll within their
    /// box, the page itself does not scroll sideways. The error names `page`, by how many
    /// pixels it is too wide, and what sticks out.
    pub fn fits_width(&self, page: &str) -> anyhow::Result<()> {
        let sideways = self
            .script(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            )?
            .as_i64()
            .context("the page's width is not a number")?;
        if sideways == 0 {
            return Ok(());
        }
        let wide = self.script(
            "return [...document.querySelectorAll('body *')]
               .filter(e => e.getBoundingClientRect().right > document.documentElement.clientWidth
                            && !e.closest('.table'))
               .map(e => e.tagName + '.' + e.className).slice(0, 5);",
        )?;
        bail!("{page} is {sideways} px too wide for a phone; too wide: {wide}")
    }

    /// Saves a screenshot as `NAME.png` in the log directory.
    pub fn shot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let png = self.call("GET", "/screenshot", None)?;
        self.save_png(&png, name)
    }

    /// Saves a screenshot of the element `css` alone as `NAME.png` in the log directory.
    pub fn shot_of(&self, css: &str, name: &str) -> anyhow::Result<PathBuf> {
        let png = self.on_element(css, "screenshot", None)?;
        self.save_png(&png, name)
    }

    fn save_png(&self, png: &Value, name: &str) -> anyhow::Result<PathBuf> {
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
