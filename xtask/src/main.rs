//! `cargo xtask`: the project's automation.
//!
//! - `cargo xtask ci` — everything CI checks: formatting, unused dependencies (cargo-machete),
//!   clippy, the documentation (`cargo doc`, warnings are errors), licences, bans, sources and
//!   advisories (against the RustSec snapshot in `shared/advisory-db`), unit tests, every fuzz
//!   target for [`fuzz::FUZZ_SECONDS`] each, and the privileged scenarios in network
//!   namespaces. Installs the system packages it needs when run as root (apt-get), and
//!   cargo-deny, cargo-machete and cargo-fuzz when they are missing.
//! - `cargo xtask machete` — the unused-dependency check alone.
//! - `cargo xtask advisories` — the advisories check alone.
//! - `cargo xtask fuzz [TARGET…]` — builds and runs the fuzz targets (`ENCLAVE_FUZZ_SECONDS`
//!   sets the time per target; 0 only replays the corpus).
//! - `cargo xtask netns-test [NAME…]` — builds the binaries and runs the privileged scenarios.
//! - `cargo xtask demo` — the live demo on this machine.
//! - `cargo xtask bench NAME` — benchmarks (`criterion`, or a namespace benchmark by name).
//! - `cargo xtask netns-clean` — removes namespaces left by runs that died.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context};

mod fuzz;
mod packages;
#[cfg(test)]
mod tidy;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("netns-test") => netns_test(&args[1..]),
        Some("fuzz") => fuzz::fuzz(&args[1..]),
        Some("advisories") => advisories(),
        Some("machete") => machete(),
        Some("demo") => demo(&args[1..]),
        Some("bench") => bench(&args[1..]),
        Some("netns-clean") => scenarios(&["clean"]),
        Some("install-deps") => packages::ensure_installed(),
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n\
                 commands:\n  \
                 ci                   fmt, machete, clippy, cargo-deny, unit tests, fuzzing, netns scenarios\n  \
                 fuzz [TARGET…]       build and run the fuzz targets (ENCLAVE_FUZZ_SECONDS each)\n  \
                 advisories           cargo deny --offline check advisories (RustSec snapshot)\n  \
                 machete              cargo machete: dependencies that no code uses\n  \
                 netns-test [NAME…]   build, then run the privileged scenarios (as root)\n  \
                 demo [--keep]        the live demo in network namespaces (as root); --keep\n                       \
                      keeps it running with its portal open to this host's browser\n  \
                 bench NAME           criterion | a namespace benchmark (see `bench list`)\n  \
                 netns-clean          remove namespaces left by runs that died\n  \
                 install-deps         install the system packages the tests need (as root)"
            );
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// Runs `cmd`, printing it first; a non-zero exit is an error.
fn run(step: &str, mut cmd: Command) -> anyhow::Result<()> {
    println!("==> {step}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {step}"))?;
    if !status.success() {
        bail!("{step} failed ({status})");
    }
    Ok(())
}

fn target_dir() -> PathBuf {
    // Relative to the workspace, as cargo takes it; joining keeps an absolute one as it is.
    root().join(
        std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| "target".into()),
    )
}

fn ci() -> anyhow::Result<()> {
    packages::ensure_installed()?;
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--", "--check"]);
    run("cargo fmt --check", fmt)?;
    machete()?;
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    run("cargo clippy --all-targets -- -D warnings", clippy)?;
    // The crates are meant to be embedded: their documentation builds without a warning
    // (broken or private links, missing docs where a crate asks for them).
    let mut doc = cargo();
    doc.args(["doc", "--workspace", "--no-deps"])
        .env("RUSTDOCFLAGS", "-D warnings");
    run("cargo doc --workspace --no-deps (warnings are errors)", doc)?;
    packages::ensure_cargo_deny()?;
    let mut deny = cargo();
    deny.args(["deny", "check", "licenses", "bans", "sources"]);
    run("cargo deny check licenses bans sources", deny)?;
    advisories()?;
    let mut test = cargo();
    test.args(["test", "--workspace"]);
    run("cargo test --workspace", test)?;
    examples()?;
    fuzz::fuzz(&[])?;
    netns_test(&[])
}

/// The examples that embedders reach for first, run (not only built): each checks what it
/// shows and exits non-zero when that does not hold.
/// `enclave-dataplane`'s `tunnel` needs root (a TUN device, in a network namespace of its own).
const EXAMPLES: &[(&str, &str)] = &[
    ("enclave-wg", "two_devices"),
    ("enclave-policy", "compile_and_explain"),
    ("enclave-filter", "one_way"),
    ("enclave-dataplane", "tunnel"),
];

fn examples() -> anyhow::Result<()> {
    for (package, example) in EXAMPLES {
        if *package == "enclave-dataplane" && !is_root() {
            println!("cargo run -p {package} --example {example}: not run (needs root)");
            continue;
        }
        let mut command = cargo();
        command.args(["run", "-q", "-p", package, "--example", example]);
        run(
            &format!("cargo run -p {package} --example {example}"),
            command,
        )?;
    }
    Ok(())
}

/// `cargo machete`: fails when a manifest declares a dependency that no code of its crate
/// names. A dependency used only where cargo-machete cannot see it (through a macro, a feature
/// or a `#[path]` module) goes into that crate's `[package.metadata.cargo-machete] ignored`
/// with a comment saying why.
fn machete() -> anyhow::Result<()> {
    packages::ensure_cargo_machete()?;
    // The binary itself, on the workspace's root: run as `cargo machete` from inside another
    // cargo command (cargo xtask), it takes its own subcommand name for the path to check.
    let mut machete = Command::new("cargo-machete");
    machete.arg(root());
    run("cargo machete", machete)
}

/// The variable `deny.toml` reads its `[advisories] db-path` from.
const ADVISORY_DB_VAR: &str = "ENCLAVE_ADVISORY_DB";

/// `cargo deny --offline check advisories` against the RustSec snapshot that travels with
/// the repository's shared files: CI cannot fetch the database. Any vulnerability fails;
/// unmaintained and unsound crates fail unless `deny.toml` lists them with a reason.
fn advisories() -> anyhow::Result<()> {
    let db_path = advisory_db()?;
    let mut deny = cargo();
    deny.env(ADVISORY_DB_VAR, &db_path)
        .args(["deny", "--offline", "check", "advisories"]);
    run(
        &format!(
            "cargo deny --offline check advisories (database {})",
            db_path.display()
        ),
        deny,
    )
}

/// Makes the snapshot usable with `shared/tools/advisory-db` and returns the `db-path` it
/// prints. `shared/` lies beside the repository (CI clones it next to a copy of shared/);
/// `ENCLAVE_SHARED` points elsewhere, e.g. from a worktree.
fn advisory_db() -> anyhow::Result<PathBuf> {
    let shared = match std::env::var_os("ENCLAVE_SHARED") {
        Some(dir) => PathBuf::from(dir),
        None => root()
            .parent()
            .context("the repository has no parent directory")?
            .join("shared"),
    };
    let tool = shared.join("tools").join("advisory-db");
    if !tool.is_file() {
        bail!(
            "cannot check advisories: {} is missing. CI expects the shared files beside the \
             repository ({}); elsewhere set ENCLAVE_SHARED to the shared directory",
            tool.display(),
            shared.display()
        );
    }
    let dir = target_dir().join("advisory-db");
    let out = Command::new(&tool)
        .arg(&dir)
        .output()
        .with_context(|| format!("cannot run {}", tool.display()))?;
    if !out.status.success() {
        bail!(
            "{} {} failed ({}): {}",
            tool.display(),
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let printed = String::from_utf8_lossy(&out.stdout);
    let db_path = printed
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .with_context(|| format!("{} printed no db-path", tool.display()))?;
    Ok(PathBuf::from(db_path))
}

fn build_binaries() -> anyhow::Result<()> {
    let mut build = cargo();
    build.args(["build", "--workspace", "--bins"]);
    run("cargo build --workspace --bins", build)
}

/// Runs the scenario runner built by [`build_binaries`].
fn scenarios(args: &[&str]) -> anyhow::Result<()> {
    let runner = target_dir().join("debug").join("enclave-scenarios");
    if !runner.is_file() {
        build_binaries()?;
    }
    let status = Command::new(&runner)
        .args(args)
        .status()
        .with_context(|| format!("cannot start {}", runner.display()))?;
    if !status.success() {
        bail!("enclave-scenarios {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Whether this process runs as root.
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn require_root(what: &str) -> anyhow::Result<()> {
    if !is_root() {
        bail!("`cargo xtask {what}` creates network namespaces and needs root: run `sudo -E cargo xtask {what}`");
    }
    Ok(())
}

fn netns_test(names: &[String]) -> anyhow::Result<()> {
    require_root("netns-test")?;
    packages::ensure_installed()?;
    build_binaries()?;
    let mut args = vec!["run"];
    args.extend(names.iter().map(String::as_str));
    scenarios(&args)
}

fn bench(args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        None | Some("list") => {
            println!("criterion      the criterion benchmarks of the library crates (cargo bench)");
            scenarios(&["list"])
        }
        Some("criterion") => {
            let mut bench = cargo();
            bench.args(["bench", "--workspace"]);
            run("cargo bench --workspace", bench)
        }
        Some(name) => {
            require_root("bench")?;
            packages::ensure_installed()?;
            let mut build = cargo();
            build.args(["build", "--release", "--workspace", "--bins"]);
            run("cargo build --release --workspace --bins", build)?;
            let runner = target_dir().join("release").join("enclave-scenarios");
            let status = Command::new(&runner)
                .args(["bench", name])
                .status()
                .with_context(|| format!("cannot start {}", runner.display()))?;
            if !status.success() {
                bail!("benchmark {name} failed ({status})");
            }
            Ok(())
        }
    }
}

fn demo(args: &[String]) -> anyhow::Result<()> {
    let keep = match args {
        [] => false,
        [flag] if flag == "--keep" => true,
        _ => bail!("usage: cargo xtask demo [--keep]"),
    };
    require_root("demo")?;
    packages::ensure_installed()?;
    build_binaries()?;
    // Ctrl-C goes to the whole foreground process group. The demo catches it and tears its
    // namespaces down; xtask ignores it so that it waits for that instead of returning first.
    // SAFETY: installing SIG_IGN for SIGINT has no preconditions; no handler code runs.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_IGN);
    }
    if keep {
        scenarios(&["demo", "--keep"])
    } else {
        scenarios(&["demo"])
    }
}
