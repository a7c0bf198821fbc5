//! The system packages the tests need, installed with apt-get when running as root.

use std::process::Command;

use anyhow::{bail, Context};

/// Debian packages the build and the privileged tests need.
pub const PACKAGES: &[&str] = &[
    "nftables",
    "iptables",
    "libnftnl-dev",
    "libmnl-dev",
    "pkg-config",
    "iproute2",
    "iputils-ping",
    "wireguard-go",
    "wireguard-tools",
    "tcpdump",
    // The offload fallback scenario turns a veth's and a TUN device's offloads off.
    "ethtool",
    "iperf3",
    "python3",
    "procps",
    "util-linux",
    // The control server's PostgreSQL scenarios start a throwaway cluster with its initdb/pg_ctl.
    "postgresql",
    // The portal's browser scenario drives headless Chromium through chromedriver.
    "chromium",
    "chromium-driver",
    // The WireGuard app device scenario reads the portal's QR code back with zbarimg.
    "zbar-tools",
];

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Installs the missing packages (as root), or says exactly how to (otherwise).
pub fn ensure_installed() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let command = format!(
        "apt-get update && apt-get install -y --no-install-recommends {}",
        missing.join(" ")
    );
    if !crate::is_root() {
        bail!(
            "missing system packages: {}; install them with\n  sudo sh -c '{command}'",
            missing.join(" ")
        );
    }
    println!("==> installing {}", missing.join(" "));
    let status = Command::new("sh")
        .args(["-c", &command])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("cannot run apt-get")?;
    if !status.success() {
        bail!("`{command}` failed ({status})");
    }
    Ok(())
}

/// Installs cargo-deny with `cargo install --locked` when `cargo deny` is missing.
pub fn ensure_cargo_deny() -> anyhow::Result<()> {
    ensure_cargo_tool("deny", "cargo-deny")
}

/// Installs cargo-machete with `cargo install --locked` when `cargo-machete --version` fails.
pub fn ensure_cargo_machete() -> anyhow::Result<()> {
    let mut probe = Command::new("cargo-machete");
    probe.arg("--version");
    ensure_tool(probe, "cargo-machete")
}

/// Installs `package` with `cargo install --locked` when `cargo SUBCOMMAND --version` fails.
pub fn ensure_cargo_tool(subcommand: &str, package: &str) -> anyhow::Result<()> {
    let mut probe = Command::new("cargo");
    probe.args([subcommand, "--version"]);
    ensure_tool(probe, package)
}

/// Installs `package` with `cargo install --locked` unless `probe` runs and succeeds.
fn ensure_tool(mut probe: Command, package: &str) -> anyhow::Result<()> {
    if probe.output().is_ok_and(|out| out.status.success()) {
        return Ok(());
    }
    install(package)
}

/// `cargo install --locked PACKAGE`.
fn install(package: &str) -> anyhow::Result<()> {
    crate::run(&format!("cargo install --locked {package}"), {
        let mut cmd = Command::new("cargo");
        cmd.args(["install", "--locked", package]);
        cmd
    })
}
