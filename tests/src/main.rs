//! `enclave-scenarios`: runs the privileged scenarios and benchmarks in network namespaces.
//!
//! Normally started by `cargo xtask netns-test [NAME…]` or `cargo xtask bench NAME`, which build
//! the binaries first; `cargo xtask demo` runs `enclave-scenarios demo`. Usage:
//! `enclave-scenarios list | run [NAME…] | bench NAME | demo [--keep] | clean`.
//!
//! `run` starts each scenario in a child process of its own (this program again, as
//! `run-one NAME LOG_DIR`), in a process group of its own: a scenario that does not finish in
//! time is killed with everything it started, and the namespaces named after the child's PID
//! are removed, before the next scenario starts.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use enclave_scenarios::{bench, scenarios, Ctx, NotRun, Scenario};

/// How long one scenario may take before the runner kills it, unless
/// `ENCLAVE_SCENARIO_TIMEOUT_SECS` says otherwise.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(600);

fn scenario_timeout() -> Duration {
    std::env::var("ENCLAVE_SCENARIO_TIMEOUT_SECS")
        .ok()
        .and_then(|secs| secs.parse().ok())
        .map_or(SCENARIO_TIMEOUT, Duration::from_secs)
}

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
        Some("run-one") => run_one_here(&args[1..]),
        Some("clean") => {
            let removed = enclave_netns::remove_stale();
            println!("removed {} namespaces left by dead runs", removed.len());
            for name in removed {
                println!("  {name}");
            }
            Ok(true)
        }
        Some("bench") => run_bench(&args[1..]),
        Some("demo") => demo(&args[1..]),
        _ => {
            eprintln!(
                "usage: enclave-scenarios list | run [NAME…] | bench NAME | demo [--keep] | clean"
            );
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
    println!(
        "running {} scenarios (logs in {})",
        selected.len(),
        root.display()
    );
    let (mut passed, mut failed, mut not_run) = (0, Vec::new(), Vec::new());
    for scenario in selected {
        let log_dir = root.join(scenario.name);
        std::fs::create_dir_all(&log_dir)?;
        let started = Instant::now();
        let outcome = run_child(scenario, &log_dir);
        let secs = started.elapsed().as_secs_f64();
        match outcome {
            Ok(Outcome::Passed) => {
                passed += 1;
                println!("scenario {:40} ok      {secs:6.1} s", scenario.name);
            }
            Ok(Outcome::NotRun(why)) => {
                println!("scenario {:40} {why}", scenario.name);
                not_run.push(scenario.name);
            }
            Err(err) => {
                println!("scenario {:40} FAILED  {secs:6.1} s", scenario.name);
                println!("    {err:#}");
                show_logs(&log_dir);
                failed.push(scenario.name);
            }
        }
    }
    if !not_run.is_empty() {
        println!("not run here: {}", not_run.join(", "));
    }
    if !failed.is_empty() {
        println!("failed: {}", failed.join(", "));
    }
    println!("{passed} passed, {} failed", failed.len());
    Ok(failed.is_empty())
}

/// The file in a scenario's log directory where its child process writes why it failed.
const OUTCOME_FILE: &str = "outcome.txt";
/// The file where it writes why it could not run here ([`NotRun`]).
const NOT_RUN_FILE: &str = "not-run.txt";

/// How one scenario ended.
enum Outcome {
    Passed,
    /// It cannot run on this machine, and says why.
    NotRun(String),
}

/// Runs one scenario in a child process (`run-one`) in a process group of its own, giving up
/// after [`scenario_timeout`]: then the whole group is killed, so nothing of the scenario runs
/// on while the next one starts. Either way, the namespaces the child made are removed.
fn run_child(scenario: Scenario, log_dir: &Path) -> anyhow::Result<Outcome> {
    use std::os::unix::process::CommandExt;

    let exe = std::env::current_exe().context("cannot find this program's path")?;
    let outcome = log_dir.join(OUTCOME_FILE);
    let not_run = log_dir.join(NOT_RUN_FILE);
    let _ = std::fs::remove_file(&outcome);
    let _ = std::fs::remove_file(&not_run);
    let mut child = std::process::Command::new(exe)
        .arg("run-one")
        .arg(scenario.name)
        .arg(log_dir)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start a child process for {}", scenario.name))?;
    let pid = child.id();
    let started = Instant::now();
    let timeout = scenario_timeout();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if started.elapsed() >= timeout {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if status.is_none() {
        // The child leads its group: SIGKILL to the group ends it and what it started.
        let group = nix::unistd::Pid::from_raw(-i32::try_from(pid)?);
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait();
    }
    let cleaned = enclave_netns::remove_of(pid);
    if !cleaned.is_empty() {
        println!(
            "    removed {} namespaces {} left: {}",
            cleaned.len(),
            scenario.name,
            cleaned.join(", ")
        );
    }
    let why = std::fs::read_to_string(&outcome).unwrap_or_default();
    match status {
        None => bail!(
            "did not finish within {} s; its process group was killed",
            timeout.as_secs()
        ),
        Some(status) if status.success() => match std::fs::read_to_string(&not_run) {
            Ok(why) => Ok(Outcome::NotRun(why.trim().to_owned())),
            Err(_) => Ok(Outcome::Passed),
        },
        Some(status) if why.is_empty() => {
            bail!("its process ended with {status} without saying why")
        }
        Some(_) => bail!("{}", why.trim_end()),
    }
}

/// `run-one NAME LOG_DIR`: runs one scenario in this process, turning a panic into an error;
/// writes why it failed to `LOG_DIR/outcome.txt` for the parent.
fn run_one_here(args: &[String]) -> anyhow::Result<bool> {
    let [name, log_dir] = args else {
        bail!("usage: enclave-scenarios run-one NAME LOG_DIR (started by `run`)");
    };
    let all = scenarios::all();
    let Some(scenario) = all.iter().find(|s| s.name == name) else {
        bail!("no scenario named {name:?}");
    };
    let log_dir = PathBuf::from(log_dir);
    let ctx = Ctx::new(scenario.name, log_dir.clone(), bin_dir()?);
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| (scenario.run)(&ctx)));
    let why = match outcome {
        Ok(Ok(())) => return Ok(true),
        Ok(Err(err)) if err.downcast_ref::<NotRun>().is_some() => {
            std::fs::write(log_dir.join(NOT_RUN_FILE), format!("{err}"))
                .with_context(|| format!("cannot write {}", log_dir.display()))?;
            return Ok(true);
        }
        Ok(Err(err)) => format!("{err:#}"),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "unknown panic".to_owned());
            format!("panicked: {message}")
        }
    };
    std::fs::write(log_dir.join(OUTCOME_FILE), &why)
        .with_context(|| format!("cannot write {}", log_dir.display()))?;
    Ok(false)
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
fn demo(args: &[String]) -> anyhow::Result<bool> {
    let keep = match args {
        [] => false,
        [flag] if flag == "--keep" => true,
        _ => bail!("usage: enclave-scenarios demo [--keep]"),
    };
    enclave_netns::preflight()?;
    enclave_netns::remove_stale();
    let log_dir = log_root()?.join("demo");
    std::fs::create_dir_all(&log_dir)?;
    enclave_scenarios::demo::run_with(&Ctx::new("demo", log_dir, bin_dir()?), keep)?;
    Ok(true)
}
