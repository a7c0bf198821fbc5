//! A device with the WireGuard app as a sender: `enclave-control systems add-app` makes its
//! key pair and its `wg-quick` file, and `wireguard-go` (Debian's, standing in for the apps)
//! is configured from that file alone. The managed gateway, which knows the device only as a
//! peer of its view, enforces the policy's subnet filter for it and drops the device once it is
//! revoked: the app itself enforces nothing.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use enclave_netns::{wait_until, Netns, PingResult, SpawnOpts, TopologySpec};
use serde_json::{json, Value};

use crate::agents::{start_with, status_json};
use crate::control_fixture::{self, admin_token, start_server_on, Admin, KEY_A, KEY_B};
use crate::office::{self, DC1, DC2, GW_LAN, GW_UNDERLAY, LAN, LAPTOP_UNDERLAY, PRINTER};
use crate::portal_fixture::Portal;
use crate::support::start_wireguard_go;
use crate::{Ctx, Scenario};

pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "control-wgapp",
            about: "a device added with `enclave-control systems add-app` runs wireguard-go configured from the wg-quick file the server made: it reaches 192.168.77.20, which its policy's filter allows, while the gateway drops its packets to 192.168.77.10 (which the gateway itself reaches); a public-IP trust requirement the gateway judges on its observed address takes access away and gives it back; the LAN cannot open connections to it; revoked, it loses 192.168.77.20 too",
            run,
        },
        Scenario {
            name: "portal-wgapp",
            about: "the portal in headless Chromium: Add a device with the WireGuard app, a bad public key refused next to its field, the configuration shown once with its private key as text, download and QR code (AllowedIPs exactly the policy's subnet; the QR code read back by zbarimg is the file), later without the key; screenshots",
            run: portal,
        },
    ]
}

/// The server's underlay address.
const SERVER: &str = "10.10.0.100";
/// The device's tunnel interface.
const IFACE: &str = "wg0";

/// Pings `dst` from `ns` once (waiting `wait` seconds): the parsed result.
fn ping(ns: &Netns, dst: &str, count: &str, wait: &str) -> anyhow::Result<PingResult> {
    let argv = ["ping", "-n", "-c", count, "-W", wait, dst];
    let output = ns.exec_output(&argv)?;
    Ok(PingResult::from_output(&argv.join(" "), &output)?)
}

/// Pings `dst` from `ns` until it answers, within `timeout`: how long it took.
fn until_answered(ns: &Netns, dst: &str, timeout: Duration) -> anyhow::Result<Duration> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if ping(ns, dst, "1", "0.3")?.received > 0 {
            return Ok(started.elapsed());
        }
    }
    bail!("{dst} never answered within {timeout:?}")
}

/// The bytes the device's interface has sent to all its peers (`wg show IFACE transfer`).
fn sent(ns: &Netns) -> anyhow::Result<u64> {
    let shown = ns.exec(&["wg", "show", IFACE, "transfer"])?;
    let mut total = 0;
    for line in shown.lines() {
        let tx = line
            .split_whitespace()
            .nth(2)
            .with_context(|| format!("`wg show {IFACE} transfer` printed {line:?}"))?;
        total += tx.parse::<u64>()?;
    }
    Ok(total)
}

/// The value of `key = value` lines of a wg-quick file, in order.
fn values<'t>(file: &'t str, key: &str) -> Vec<&'t str> {
    file.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case(key))
        .map(|(_, v)| v.trim())
        .collect()
}

fn has_peer(status: &Value, peer: &str) -> bool {
    status["peers"]
        .as_array()
        .is_some_and(|peers| peers.iter().any(|p| p["name"] == peer))
}

/// Configures the device's `wireguard-go` from `conf` as `wg-quick` would on Linux: `wg
/// setconf` with the lines only `wg-quick` reads left out, then the address and a route per
/// allowed IP set with `ip`.
fn configure_app(ns: &Netns, conf: &str, dir: &Path) -> anyhow::Result<()> {
    let setconf = dir.join("phone-setconf.conf");
    std::fs::write(&setconf, enclave_control::app_device::setconf_text(conf))?;
    ns.exec(&[
        "wg".as_ref(),
        "setconf".as_ref(),
        IFACE.as_ref(),
        setconf.as_os_str(),
    ])?;
    for address in values(conf, "Address") {
        for address in address.split(',') {
            ns.exec(&["ip", "addr", "add", address.trim(), "dev", IFACE])?;
        }
    }
    ns.exec(&["ip", "link", "set", IFACE, "up"])?;
    for allowed in values(conf, "AllowedIPs") {
        for net in allowed.split(',') {
            ns.exec(&["ip", "route", "replace", net.trim(), "dev", IFACE])?;
        }
    }
    Ok(())
}

fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let mut spec = TopologySpec::new("wgapp");
    spec.node("ctl")
        .node("phone")
        .node("gw1")
        .node("lan")
        .addr("ctl", "eth0", &format!("{SERVER}/24"))
        .addr("phone", "eth0", &format!("{LAPTOP_UNDERLAY}/24"))
        .addr("gw1", "eth0", &format!("{}/24", GW_UNDERLAY[0]))
        .addr("gw1", "lan0", &format!("{}/24", GW_LAN[0]))
        .addr("lan", "eth0", &format!("{PRINTER}/24"))
        .addr("lan", "eth0", &format!("{DC1}/24"))
        .segment(
            "wan",
            &[("ctl", "eth0"), ("phone", "eth0"), ("gw1", "eth0")],
        )
        .segment("lan", &[("lan", "eth0"), ("gw1", "lan0")]);
    let topo = ctx.topology(&spec)?;
    let (ctl, phone, gw) = (topo.ns("ctl"), topo.ns("phone"), topo.ns("gw1"));

    // The server, an admin token, and the gateway enrolled with a key and running.
    let control = ctx.bin("enclave-control")?;
    let state = ctx.log_dir().join("control-state");
    std::fs::create_dir_all(&state)?;
    let database = format!("sqlite://{}/control.db", state.display());
    let token = admin_token(ctl, &control, &database, &[])?;
    let server = start_server_on(
        ctl,
        &control,
        "enclave-control",
        &database,
        (SERVER, 8443),
        &state,
        &["-v"],
    )?;
    let admin = Admin {
        ns: ctl,
        bin: &control,
        at: &server.at,
        token: &token,
    };
    let key = admin.create_key(&["--tags", "gateways", "--approval", "auto"])?;
    let enrolled = control_fixture::enrol(ctx, gw, true, &server.at, &key, "menlo-gw-1")?;
    let endpoint = format!("{}:51820", GW_UNDERLAY[0]);
    admin.cli(&["systems", "edit", "menlo-gw-1", "--endpoint", &endpoint])?;
    let _gateway = start_with(ctx, gw, &enrolled.files, true, SpawnOpts::default())?;
    admin.cli(&["systems", "gateway", "menlo-gw-1", "on"])?;
    let discovered = wait_until(Duration::from_secs(10), || {
        admin
            .cli(&["subnets", "list", "--json"])
            .is_ok_and(|t| t.contains(LAN) && t.contains("lan0"))
    });
    ensure!(
        discovered,
        "the gateway's {LAN} did not reach the server within 10 s"
    );

    // The guide's policy with a subnet filter: users may reach 192.168.77.20 only.
    admin
        .api(
            "POST",
            "/api/v1/policies",
            &json!({
                "name": "users to Menlo Park Office",
                "kind": "gateway",
                "senders": ["users"],
                "gateways": ["menlo-gw-1"],
                "subnets": [LAN],
                "filter": [DC1],
                "acl": [{ "protocol": "any" }],
            }),
            201,
        )
        .context("creating the policy")?;

    // The device, added by the administrator; its file is all the app gets.
    let file = ctx.log_dir().join("phone.conf");
    let file_arg = file.to_str().context("path is not UTF-8")?;
    admin.cli(&[
        "systems", "add-app", "phone", "--tags", "users", "-o", file_arg,
    ])?;
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file)?.permissions());
    ensure!(
        mode & 0o777 == 0o600,
        "the file has mode {:o}",
        mode & 0o777
    );
    let conf = std::fs::read_to_string(&file)?;
    let expected_peer = format!("Endpoint = {endpoint}\nAllowedIPs = ");
    ensure!(
        values(&conf, "PrivateKey").len() == 1 && conf.contains(&expected_peer),
        "the configuration lacks its private key or the gateway:\n{conf}"
    );
    let allowed = values(&conf, "AllowedIPs");
    ensure!(
        allowed.len() == 1 && allowed[0].ends_with(&format!(", {LAN}")),
        "AllowedIPs should be the gateway's overlay address and exactly {LAN}: {allowed:?}"
    );
    // A second look gives the same file without the private key, which the server never kept.
    let again = admin.cli(&["systems", "app-config", "phone"])?;
    ensure!(
        values(&again, "PrivateKey").is_empty() && again.contains(&expected_peer),
        "app-config printed:\n{again}"
    );
    let private_key = values(&conf, "PrivateKey")[0];
    ensure!(
        !server.process.log().contains(private_key),
        "the server logged the private key"
    );

    // wireguard-go as the app, configured from that file only.
    let mut app = start_wireguard_go(phone, IFACE)?;
    configure_app(phone, &conf, ctx.log_dir())?;

    // The positive control: the allowed address answers through the gateway.
    let took = until_answered(phone, DC1, Duration::from_secs(15)).with_context(|| {
        format!(
            "wg show: {}\nwireguard-go log:\n{}",
            phone.exec(&["wg", "show"]).unwrap_or_default(),
            app.log()
        )
    })?;
    println!(
        "    the app reaches {DC1} {:.2} s after it was configured",
        took.as_secs_f64()
    );
    let gateway_status = status_json(ctx, gw, &enrolled.files)?;
    ensure!(
        has_peer(&gateway_status, "phone"),
        "the gateway has no peer named phone: {gateway_status}"
    );

    // The filtered address: it exists (the gateway reaches it), the app's packets to it go
    // into the tunnel, and the gateway drops them.
    let from_gateway = ping(gw, PRINTER, "1", "2")?;
    ensure!(
        from_gateway.received == 1,
        "positive control: the gateway itself does not reach {PRINTER}: {}",
        from_gateway.output
    );
    let before = sent(phone)?;
    let filtered = ping(phone, PRINTER, "3", "1")?;
    let tunnelled = sent(phone)? - before;
    ensure!(
        filtered.transmitted == 3 && filtered.received == 0,
        "the app reached {PRINTER}, which the policy's filter leaves out: {}",
        filtered.output
    );
    ensure!(
        tunnelled >= 3 * 84,
        "the app's pings to {PRINTER} did not go into the tunnel ({tunnelled} bytes sent)"
    );
    let allowed_again = ping(phone, DC1, "1", "2")?;
    ensure!(
        allowed_again.received == 1,
        "positive control after the filtered probe: {DC1} no longer answers: {}",
        allowed_again.output
    );
    println!(
        "    {PRINTER} dropped by the gateway ({tunnelled} bytes went into the tunnel), {DC1} answered"
    );

    // A trust requirement on the policy, judged by the gateway on the app's observed public
    // address (10.10.0.2): outside the allowed range the app loses access, inside it has it.
    let trust = admin.api(
        "POST",
        "/api/v1/trust-requirements",
        &json!({ "name": "office-ip", "kind": "public_ip", "allow": ["198.51.100.0/24"] }),
        201,
    )?;
    let policy_path = "/api/v1/policies/users%20to%20Menlo%20Park%20Office";
    let mut policy = admin.api("GET", policy_path, &Value::Null, 200)?;
    policy["trust"] = json!(["office-ip"]);
    admin.api("PUT", policy_path, &policy, 200)?;
    let denied = wait_until(Duration::from_secs(5), || {
        ping(phone, DC1, "1", "0.3").is_ok_and(|p| p.received == 0)
    });
    ensure!(
        denied,
        "the app still reaches {DC1} 5 s after its policy required 198.51.100.0/24"
    );
    admin.api(
        "PUT",
        "/api/v1/trust-requirements/office-ip",
        &json!({ "name": "office-ip", "kind": "public_ip", "allow": [format!("{LAPTOP_UNDERLAY}/32")],
                 "version": trust["version"] }),
        200,
    )?;
    let back = until_answered(phone, DC1, Duration::from_secs(5))
        .with_context(|| format!("the app does not reach {DC1} once its address is allowed"))?;
    println!(
        "    trust requirement: denied outside 198.51.100.0/24, allowed again {:.2} s after {LAPTOP_UNDERLAY}/32 was",
        back.as_secs_f64()
    );

    // One way: the LAN cannot open a connection to the app, even with a route to the
    // overlay through the gateway; the app's own pings above were answered.
    let lan = topo.ns("lan");
    lan.exec(&["ip", "route", "add", "100.64.0.0/10", "via", GW_LAN[0]])?;
    let app_address = values(&conf, "Address")[0]
        .split('/')
        .next()
        .context("no address")?
        .to_owned();
    let inbound = ping(lan, &app_address, "2", "1")?;
    ensure!(
        inbound.transmitted == 2 && inbound.received == 0,
        "a LAN device reached the app at {app_address}: {}",
        inbound.output
    );

    // Revoked, the device loses its tunnel at the gateway; its own configuration is unchanged.
    let revoked = Instant::now();
    admin.cli(&["systems", "revoke", "phone"])?;
    let cut = wait_until(Duration::from_secs(5), || {
        ping(phone, DC1, "1", "0.3").is_ok_and(|p| p.received == 0)
            && status_json(ctx, gw, &enrolled.files).is_ok_and(|s| !has_peer(&s, "phone"))
    });
    ensure!(cut, "the revoked app still reaches {DC1} after 5 s");
    println!(
        "    revoked: the gateway dropped the app within {:.2} s",
        revoked.elapsed().as_secs_f64()
    );
    app.stop();
    Ok(())
}

/// The office of the file-mode scenarios (the laptop, and menlo-gw-1 with a known endpoint
/// serving the LAN to `users`) with the guide's subnet filter, for the portal scenario, which
/// runs no agent: any 32 bytes are a key.
fn office() -> String {
    let policy = format!("filter = [\"{DC1}-{DC2}\"]\nacl = [{{ protocol = \"any\" }}]");
    office::definition(1, "\"users\"", &policy, "")
        .replace("KEY(laptop)", KEY_A)
        .replace("KEY(menlo-gw-1)", KEY_B)
}

/// The portal's pages for a device with the WireGuard app, in headless Chromium.
fn portal(ctx: &Ctx) -> anyhow::Result<()> {
    let portal = Portal::start(ctx, "wgapp-portal")?;
    let admin = portal.admin();
    let definition = portal.host.dir().join("office.toml");
    std::fs::write(&definition, office())?;
    admin.cli(&["import", definition.to_str().context("path is not UTF-8")?])?;
    let b = portal.signed_in(ctx)?;

    // Systems → Add a device with the WireGuard app.
    b.click("#add-app-device")?;
    b.text_with("instead of the Enclave agent")?;
    b.shot("wgapp-01-form")?;

    // A pasted key that is not one is refused next to its field.
    b.submit(
        &[
            ("#app-name", "alice-phone"),
            ("#app-tags", "users"),
            ("#app-key", "not-a-key"),
        ],
        "#add-app",
    )?;
    b.field_error("app-key", &["is not a WireGuard public key"])?;
    b.shot("wgapp-02-bad-key")?;

    // The server makes the pair: the file as text, a download and a QR code, once.
    b.submit(&[("#app-key", "")], "#add-app")?;
    b.text_with("shown only now")?;
    b.find("#download")?;
    let config = b.text_of("#config")?;
    ensure!(
        config.contains("Address = 100.64.0.1/32")
            && config.contains("Endpoint = 10.10.0.1:51820")
            && config.contains("AllowedIPs = 100.64.0.2/32, 192.168.77.0/24"),
        "the configuration on the page:\n{config}"
    );
    let private_key = values(&config, "PrivateKey")
        .first()
        .copied()
        .context("no private key on the page")?
        .to_owned();
    b.shot("wgapp-03-config")?;
    // The QR code, as the browser draws it, reads back as the file (without its comments).
    let qr_file = b.shot_of("#qr svg", "wgapp-qr")?;
    let decoded = std::process::Command::new("zbarimg")
        .args(["--raw", "-q"])
        .arg(&qr_file)
        .output()
        .context("running zbarimg (Debian's zbar-tools)")?;
    ensure!(
        decoded.status.success(),
        "zbarimg read no QR code from {} ({})",
        qr_file.display(),
        decoded.status
    );
    let decoded = String::from_utf8_lossy(&decoded.stdout);
    let compact: Vec<&str> = config
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    ensure!(
        decoded.trim().lines().collect::<Vec<_>>() == compact,
        "the QR code reads:\n{decoded}\nthe file without comments is:\n{}",
        compact.join("\n")
    );
    let shown = admin.cli(&["systems", "show", "alice-phone"])?;
    ensure!(
        shown.contains("\"wireguard-app\"") && !shown.contains(&private_key),
        "systems show alice-phone:\n{shown}"
    );
    // At a phone's width, the page does not scroll sideways.
    b.window(400, 900)?;
    b.fits_width("the configuration's page")?;
    b.shot("wgapp-04-config-phone-width")?;
    b.window(1200, 900)?;

    // Later, from the system's page: the file without the key, no QR code.
    b.open("/portal/systems/alice-phone")?;
    b.click("#app-config")?;
    b.text_with("The private key is not in this file")?;
    let later = b.text_of("#config")?;
    ensure!(
        values(&later, "PrivateKey").is_empty() && later.contains("192.168.77.0/24"),
        "the configuration later:\n{later}"
    );
    ensure!(!b.has("#qr"), "a QR code without the private key");
    b.shot("wgapp-05-config-later")?;
    drop(b);
    ensure!(
        !portal.server.process.log().contains(&private_key),
        "the server logged the private key"
    );
    Ok(())
}
