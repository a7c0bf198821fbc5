//! `enclave-scenarios`: runs the privileged scenarios and benchmarks in network namespaces.
//!
//! Normally started by `cargo xtask netns-test [NAME…]` or `cargo xtask bench NAME`, which build
//! the binaries first; `cargo xtask demo` runs `enclave-scenarios demo`. Usage:
//! `enclave-scenarios list | run [NAME…] | bench NAME | demo | clean`.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use enclave_scenarios::{bench, scenarios, Ctx, Scenario};

/// How long one scenario may take before the runner gives up on it.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(600);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("list") => {
            for s in scenarios::all() {
                println!("{:32} {}", s.name, s.about);
            }
            for b in bench::all() {
                println!("bench {:26} {}", b.name, b.about);
            }
            Ok(true)
        }
        Some("run") => run(&args[1..]),
        Some("clean") => {
            let removed = enclave_netns::remove_stale();
            println!("removed {} namespaces left by dead runs", removed.len());
            for name in removed {
                println!("  {name}");
            }
            Ok(true)
        }
        Some("bench") => run_bench(&args[1..]),
        Some("demo") => demo(),
        _ => {
            eprintln!("usage: enclave-scenarios list | run [NAME…] | bench NAME | demo | clean");
            return ExitCode::from(2);
        }
    };
    let cleaned = enclave_netns::remove_own();
    if !cleaned.is_empty() {
        eprintln!("removed namespaces left by a scenario that could not unwind: {cleaned:?}");
    }
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("enclave-scenarios: error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn bin_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find this program's path")?;
    Ok(exe
        .parent()
        .context("this program's path has no directory")?
        .to_owned())
}

fn log_root() -> anyhow::Result<PathBuf> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let root = bin_dir()?
        .join("netns-logs")
        .join(format!("{stamp}-{}", std::process::id()));
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    Ok(root)
}

fn run(names: &[String]) -> anyhow::Result<bool> {
    enclave_netns::preflight()?;
    let stale = enclave_netns::remove_stale();
    if !stale.is_empty() {
        println!("removed {} namespaces left by dead runs", stale.len());
    }
    let all = scenarios::all();
    let selected: Vec<Scenario> = if names.is_empty() {
        all
    } else {
        let mut chosen = Vec::new();
        for name in names {
            match all.iter().find(|s| s.name == name) {
                Some(s) => chosen.push(*s),
                None => bail!(
                    "no scenario named {name:?}; `enclave-scenarios list` shows them: {}",
                    all.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
                ),
            }
        }
        chosen
    };
    let root = log_root()?;
    let bins = bin_dir()?;
    println!(
        "running {} scenarios (logs in {})",
        selected.len(),
        root.display()
    );
    let (mut passed, mut failed) = (0, Vec::new());
    for scenario in selected {
        let log_dir = root.join(scenario.name);
        std::fs::create_dir_all(&log_dir)?;
        let started = Instant::now();
        let outcome = run_one(
            scenario,
            Ctx::new(scenario.name, log_dir.clone(), bins.clone()),
        );
        let secs = started.elapsed().as_secs_f64();
        match outcome {
            Ok(()) => {
                passed += 1;
                println!("scenario {:40} ok      {secs:6.1} s", scenario.name);
            }
            Err(err) => {
                println!("scenario {:40} FAILED  {secs:6.1} s", scenario.name);
                println!("    {err:#}");
                show_logs(&log_dir);
                failed.push(scenario.name);
            }
        }
    }
    if !failed.is_empty() {
        println!("failed: {}", failed.join(", "));
    }
    println!("{passed} passed, {} failed", failed.len());
    Ok(failed.is_empty())
}

/// Runs one scenario on a thread of its own, turning a panic into an error and giving up after
/// [`SCENARIO_TIMEOUT`] (the process-wide clean-up then removes its namespaces).
fn run_one(scenario: Scenario, ctx: Ctx) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(scenario.name.to_owned())
        .spawn(move || {
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| (scenario.run)(&ctx)));
            let _ = tx.send(outcome);
        })?;
    match rx.recv_timeout(SCENARIO_TIMEOUT) {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "unknown panic".to_owned());
            bail!("panicked: {message}")
        }
        Err(_) => bail!("did not finish within {} s", SCENARIO_TIMEOUT.as_secs()),
    }
}

fn show_logs(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    // Only the process logs: the directory also holds private keys and configurations.
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        println!("    --- {} (last 30 lines) ---", path.display());
        for line in &lines[lines.len().saturating_sub(30)..] {
            println!("    | {line}");
        }
    }
}

fn run_bench(names: &[String]) -> anyhow::Result<bool> {
    let [name] = names else {
        bail!("usage: enclave-scenarios bench NAME");
    };
    let all = bench::all();
    let Some(bench) = all.iter().find(|b| b.name == name) else {
        bail!(
            "no namespace benchmark named {name:?}; there are: {}",
            all.iter().map(|b| b.name).collect::<Vec<_>>().join(", ")
        );
    };
    enclave_netns::preflight()?;
    let log_dir = log_root()?.join(bench.name);
    std::fs::create_dir_all(&log_dir)?;
    (bench.run)(&Ctx::new(bench.name, log_dir, bin_dir()?))?;
    Ok(true)
}

/// The live demo ([`enclave_scenarios::demo`]).
fn demo() -> anyhow::Result<bool> {
    enclave_netns::preflight()?;
    enclave_netns::remove_stale();
    let log_dir = log_root()?.join("demo");
    std::fs::create_dir_all(&log_dir)?;
    enclave_scenarios::demo::run(&Ctx::new("demo", log_dir, bin_dir()?))?;
    Ok(true)
}
