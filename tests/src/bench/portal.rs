//! `cargo xtask bench portal`: how long the portal's pages take with 10,000 systems.
//!
//! One namespace, `enclave-control run` on its loopback with a network of 10,000 systems
//! (imported as a definition: two office gateways, senders tagged `users`, every tenth also
//! `laptops`, one gateway access policy), a portal account signed in through the real sign-in
//! form. Each page is fetched [`ROUNDS`] times over one kept-alive TLS connection by `curl`,
//! which says for each fetch when the request was sent and when the answer ended: the
//! difference is the server's time to make the page (the loopback adds microseconds). Printed
//! as p50 and the slowest, and as a share of the goal ([`GOAL_MS`]); nothing is asserted on
//! time. Every page's answer is checked first (status 200, the systems it must list).
//!
//! `ENCLAVE_BENCH_SYSTEMS=N` runs it with N systems instead of 10,000; N is at least
//! [`MIN_SYSTEMS`], and what each page is checked for follows N.

use std::path::Path;

use anyhow::{ensure, Context};
use enclave_netns::Netns;

use crate::control_fixture::{portal_account, ControlHost, Endpoint};
use crate::{Bench, Ctx};

pub(crate) const BENCH: Bench = Bench {
    name: "portal",
    about: "every portal page (the Systems page: first page, a search, a later page; a system's page; the others) with 10,000 systems: time to make each, against the 200 ms goal",
    run: portal,
};

/// The fewest systems `ENCLAVE_BENCH_SYSTEMS` may ask for: with 200 (198 senders) the
/// Systems page has four pages, the `laptops` search matches 20 of them, and the name search
/// for the last hundred senders leaves the first hundred out.
const MIN_SYSTEMS: usize = 200;
/// Systems on a page of the Systems page (the portal's `PAGE`).
const PAGE: usize = 50;
/// Fetches of each page.
const ROUNDS: usize = 20;
/// No page may take longer to make.
const GOAL_MS: f64 = 200.0;
const PASSWORD: &str = "bench password, long enough";

/// A 32-byte public key for system `i` (any 32 bytes are a key to the server).
fn key(i: usize) -> String {
    use base64::Engine as _;
    let mut bytes = [0x42u8; 32];
    bytes[..8].copy_from_slice(&(i as u64).to_be_bytes());
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The definition: two gateways, `n - 2` senders, one policy.
fn definition(n: usize) -> String {
    let mut text = String::from("[network]\noverlay = \"100.64.0.0/10\"\n\n");
    for (i, name) in ["office-gw-1", "office-gw-2"].iter().enumerate() {
        text.push_str(&format!(
            "[[system]]\nname = \"{name}\"\npublic_key = \"{}\"\naddress = \"100.127.255.{}\"\n\
             tags = [\"gateways\"]\n\n[system.gateway]\nallowed = true\n\
             subnets = [\"192.168.77.0/24\"]\n\n",
            key(usize::MAX - i),
            250 + i
        ));
    }
    for i in 0..n.saturating_sub(2) {
        let at = i + 1;
        let tags = if i % 10 == 0 {
            "\"users\", \"laptops\""
        } else {
            "\"users\""
        };
        text.push_str(&format!(
            "[[system]]\nname = \"host-{i:05}\"\npublic_key = \"{}\"\naddress = \"100.{}.{}.{}\"\n\
             tags = [{tags}]\n\n",
            key(i),
            64 + at / 65_536,
            at / 256 % 256,
            at % 256
        ));
    }
    text.push_str(
        "[[gateway_policy]]\nname = \"users to the office\"\nsenders = [\"users\"]\n\
         gateways = [\"office-gw-1\", \"office-gw-2\"]\nsubnets = [\"192.168.77.0/24\"]\n\
         acl = [{ protocol = \"any\" }]\n",
    );
    text
}

fn portal(ctx: &Ctx) -> anyhow::Result<()> {
    let n = super::systems(MIN_SYSTEMS)?;
    println!("portal bench: {n} systems, each page fetched {ROUNDS} times");
    let host = ControlHost::new(ctx, "pb")?;
    let ns = host.ns();
    let database = host.sqlite();
    let token = host.admin_token(&database, &["--name", "bench"])?;
    portal_account(ns, &host.bin, &database, ("bench", PASSWORD), host.dir())?;
    let server = host.start_server("control", &database, 8443, &host.state())?;
    let file = host.dir().join("network.toml");
    std::fs::write(&file, definition(n))?;
    let imported = std::time::Instant::now();
    host.admin(&server, &token)
        .cli(&["import", file.to_str().context("path")?])?;
    println!(
        "    imported {n} systems in {:.1} s",
        imported.elapsed().as_secs_f64()
    );

    let jar = host.dir().join("cookies");
    sign_in(ns, &server.at, &jar)?;
    let last_page = n.div_ceil(PAGE);
    let later = (last_page * 3 / 4).max(1);
    let target = format!("host-{:05}", n / 2);
    let laptops = laptops_line(n);
    let (prefix, first_found) = name_search(n);
    let pages = [
        (
            "Systems, first page".to_owned(),
            "/portal/systems".to_owned(),
            "host-00000".to_owned(),
        ),
        (
            "Systems, search \"laptops\"".to_owned(),
            "/portal/systems?q=laptops".to_owned(),
            laptops,
        ),
        (
            format!("Systems, search \"{prefix}\""),
            format!("/portal/systems?q={prefix}"),
            first_found,
        ),
        (
            format!("Systems, page {later} of {last_page}"),
            format!("/portal/systems?page={later}"),
            format!("Page {later} of {last_page}"),
        ),
        (
            format!("{target}'s page"),
            format!("/portal/systems/{target}"),
            "Allow this system to act as a gateway".to_owned(),
        ),
    ];
    // The other pages, whose size may also follow the number of systems (Explain lists them,
    // Tags counts them, a policy's form lists the gateways).
    let others = [
        ("Policies", "/portal/policies"),
        ("New gateway access policy", "/portal/new-policy"),
        ("Enrolment keys", "/portal/keys"),
        ("Tags", "/portal/tags"),
        ("Trust requirements", "/portal/trust"),
        ("Explain", "/portal/explain"),
        ("Activity", "/portal/activity"),
    ];
    let pages = pages.into_iter().chain(others.iter().map(|(title, path)| {
        (
            (*title).to_owned(),
            (*path).to_owned(),
            format!("<h1>{title}</h1>"),
        )
    }));
    println!(
        "\n    {:34} {:>9} {:>9} {:>12}",
        "page", "p50 ms", "max ms", "max / goal"
    );
    for (title, path, expect) in pages {
        let body = fetch(ns, &server.at, &jar, &path)?;
        ensure!(
            body.contains(&expect),
            "{path} does not say {expect:?}: {}",
            &body[..body.len().min(2000)]
        );
        let mut times = timed(ns, &server.at, &jar, &path)?;
        times.sort_by(f64::total_cmp);
        let p50 = times[times.len() / 2];
        let max = times[times.len() - 1];
        println!(
            "    {title:34} {p50:>9.1} {max:>9.1} {:>12.2}",
            max / GOAL_MS
        );
    }
    println!("\n    goal: every page made within {GOAL_MS:.0} ms (a ratio at or below 1.00)");
    drop(server);
    Ok(())
}

/// What the Systems page says of the search `laptops` with `n` systems: every tenth sender
/// is tagged `laptops`, and past one page the count shows which ones the page holds.
fn laptops_line(n: usize) -> String {
    let matched = (n - 2).div_ceil(10);
    if matched > PAGE {
        format!("1–{PAGE} of {matched} systems that match ({n} in all).")
    } else {
        format!("{matched} of {n} systems match.")
    }
}

/// A name search for the last hundred senders of `n` systems (`host-099` with 10,000: the 98
/// from `host-09900`), and the first of them, which the page must list.
fn name_search(n: usize) -> (String, String) {
    let hundred = (n - 3) / 100;
    (format!("host-{hundred:03}"), format!("host-{hundred:03}00"))
}

/// `curl` with the server's certificate accepted (the bench made it) and the cookie jar.
fn curl(jar: &str) -> Vec<&str> {
    vec!["curl", "-sS", "--insecure", "-c", jar, "-b", jar]
}

fn sign_in(ns: &Netns, at: &Endpoint, jar: &Path) -> anyhow::Result<()> {
    let jar = jar.to_str().context("path is not UTF-8")?;
    let url = format!("{}/portal/signin", at.url);
    let mut argv = curl(jar);
    argv.push(&url);
    let form = ns.exec(&argv)?;
    let csrf = form
        .split(r#"name="csrf" value=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .context("the sign-in form has no token")?;
    let fields = format!("csrf={csrf}&name=bench");
    let password = format!("password={PASSWORD}");
    let mut argv = curl(jar);
    argv.extend([
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url}",
        "--data",
        &fields,
        "--data-urlencode",
        &password,
        &url,
    ]);
    let answer = ns.exec(&argv)?;
    ensure!(
        answer.starts_with("303") && answer.ends_with("/portal/systems"),
        "signing in answered {answer:?}"
    );
    Ok(())
}

fn fetch(ns: &Netns, at: &Endpoint, jar: &Path, path: &str) -> anyhow::Result<String> {
    let jar = jar.to_str().context("path is not UTF-8")?;
    let url = format!("{}{path}", at.url);
    let mut argv = curl(jar);
    argv.extend(["--fail", &url]);
    Ok(ns.exec(&argv)?)
}

/// [`ROUNDS`] fetches of `path` on one connection: each one's time from the request sent to
/// the answer's end, in milliseconds.
fn timed(ns: &Netns, at: &Endpoint, jar: &Path, path: &str) -> anyhow::Result<Vec<f64>> {
    let jar = jar.to_str().context("path is not UTF-8")?;
    let url = format!("{}{path}", at.url);
    let mut argv = curl(jar);
    argv.extend(["-w", "%{http_code} %{time_pretransfer} %{time_total}\\n"]);
    for _ in 0..ROUNDS {
        argv.extend(["-o", "/dev/null", &url]);
    }
    let out = ns.exec(&argv)?;
    let mut times = Vec::new();
    for line in out.lines() {
        let mut fields = line.split_whitespace();
        let (Some(status), Some(sent), Some(done)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        ensure!(status == "200", "{path} answered {status}");
        let sent: f64 = sent.parse().context("curl's time")?;
        let done: f64 = done.parse().context("curl's time")?;
        times.push((done - sent) * 1000.0);
    }
    ensure!(
        times.len() == ROUNDS,
        "curl measured {} fetches of {path}, not {ROUNDS}: {out}",
        times.len()
    );
    Ok(times)
}
