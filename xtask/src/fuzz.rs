//! Fuzzing in CI: every cargo-fuzz target of every `crates/*/fuzz` project runs for a bounded
//! time, starting from the corpus kept in the repository.
//!
//! The targets are built once per project with `cargo fuzz build` (AddressSanitizer, debug
//! assertions and overflow checks on) into `target/fuzz`, then the libFuzzer binaries run
//! directly, two at a time (the machine has two cores), each with a fresh scratch directory
//! first and the repository's corpus second: libFuzzer writes what it finds into the first
//! directory only, so a run never changes the working tree. A crash, a panic, a hang or a leak
//! fails the step with the target's name, the input that caused it, and how to reproduce it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long each target runs in CI.
pub const FUZZ_SECONDS: u64 = 30;
/// Overrides [`FUZZ_SECONDS`] (e.g. `ENCLAVE_FUZZ_SECONDS=5` locally); 0 only replays the
/// corpus.
const SECONDS_VAR: &str = "ENCLAVE_FUZZ_SECONDS";
/// How many targets run at once.
const JOBS: usize = 2;
/// An input that runs longer than this is a hang.
const INPUT_TIMEOUT_SECONDS: u64 = 20;

/// One fuzz target of one cargo-fuzz project.
#[derive(Debug, Clone)]
struct Target {
    /// The project directory, `crates/NAME/fuzz`.
    project: PathBuf,
    name: String,
}

/// The toolchain cargo-fuzz builds with: nightly when it is installed, otherwise the stable
/// one with `RUSTC_BOOTSTRAP=1` (a new machine has only one toolchain and cannot fetch another;
/// stable ships the sanitizer runtimes, and the flag lets it accept cargo-fuzz's `-Z` options).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Toolchain {
    Nightly,
    StableBootstrapped,
}

impl Toolchain {
    fn detect() -> Self {
        if std::env::var("ENCLAVE_FUZZ_TOOLCHAIN").as_deref() == Ok("stable") {
            return Toolchain::StableBootstrapped;
        }
        let nightly = Command::new("rustup")
            .args(["toolchain", "list"])
            .output()
            .map(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .any(|line| line.starts_with("nightly"))
            })
            .unwrap_or(false);
        if nightly {
            Toolchain::Nightly
        } else {
            Toolchain::StableBootstrapped
        }
    }

    /// `cargo` (the rustup proxy, not `$CARGO`, which is pinned to xtask's own toolchain).
    fn cargo(self) -> Command {
        let mut cmd = Command::new("cargo");
        // `cargo xtask` runs under cargo, which exports the toolchain it uses; cargo-fuzz
        // would call that cargo instead of the one chosen here.
        for var in [
            "CARGO",
            "RUSTC",
            "RUSTDOC",
            "RUSTUP_TOOLCHAIN",
            "RUSTC_WRAPPER",
        ] {
            cmd.env_remove(var);
        }
        match self {
            Toolchain::Nightly => {
                cmd.arg("+nightly");
            }
            Toolchain::StableBootstrapped => {
                cmd.arg("+stable").env("RUSTC_BOOTSTRAP", "1");
            }
        }
        cmd
    }

    /// How a person reruns a target with this toolchain.
    fn cargo_fuzz_text(self) -> &'static str {
        match self {
            Toolchain::Nightly => "cargo +nightly fuzz",
            Toolchain::StableBootstrapped => "RUSTC_BOOTSTRAP=1 cargo fuzz",
        }
    }

    fn rustc_host(self) -> anyhow::Result<String> {
        let toolchain = match self {
            Toolchain::Nightly => "+nightly",
            Toolchain::StableBootstrapped => "+stable",
        };
        let out = Command::new("rustc")
            .args([toolchain, "-vV"])
            .env_remove("RUSTUP_TOOLCHAIN")
            .output()
            .context("cannot run `rustc -vV`")?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|line| line.strip_prefix("host: ").map(str::to_owned))
            .context("`rustc -vV` printed no `host:` line")
    }
}

/// `cargo xtask fuzz [TARGET…]`: builds the fuzz targets and runs them (all, or those named).
pub fn fuzz(names: &[String]) -> anyhow::Result<()> {
    let started = Instant::now();
    let seconds = match std::env::var(SECONDS_VAR) {
        Ok(text) => text
            .parse::<u64>()
            .with_context(|| format!("{SECONDS_VAR}={text:?} is not a number of seconds"))?,
        Err(_) => FUZZ_SECONDS,
    };
    crate::packages::ensure_cargo_tool("fuzz", "cargo-fuzz")?;
    let toolchain = Toolchain::detect();
    if toolchain == Toolchain::StableBootstrapped {
        println!("==> no nightly toolchain: fuzzing with stable and RUSTC_BOOTSTRAP=1");
    }
    let host = toolchain.rustc_host()?;
    let mut targets = all_targets(toolchain)?;
    if !names.is_empty() {
        let known: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
        for name in names {
            if !known.contains(name) {
                bail!(
                    "no fuzz target {name}; the targets are: {}",
                    known.join(", ")
                );
            }
        }
        targets.retain(|t| names.contains(&t.name));
    }
    let target_dir = crate::target_dir().join("fuzz");
    let mut projects: Vec<&Path> = targets.iter().map(|t| t.project.as_path()).collect();
    projects.dedup();
    for project in projects {
        let mut build = toolchain.cargo();
        build
            .current_dir(crate::root())
            .args(["fuzz", "build", "--debug-assertions", "--fuzz-dir"])
            .arg(project)
            .arg("--target-dir")
            .arg(&target_dir)
            .args(["--target", &host]);
        crate::run(&format!("cargo fuzz build ({})", relative(project)), build)?;
    }
    let built = started.elapsed();

    let binaries = target_dir.join(&host).join("release");
    let runs = crate::target_dir().join("fuzz-runs");
    if runs.exists() {
        std::fs::remove_dir_all(&runs)
            .with_context(|| format!("cannot remove the previous runs in {}", runs.display()))?;
    }
    if seconds == 0 {
        println!(
            "==> replaying the corpora of {} fuzz targets",
            targets.len()
        );
    } else {
        println!(
            "==> running {} fuzz targets for {seconds} s each, {JOBS} at a time",
            targets.len()
        );
    }
    let mut failures = Vec::new();
    for batch in targets.chunks(JOBS) {
        let mut running = Vec::new();
        for target in batch {
            running.push((target, start(target, &binaries, &runs, seconds, toolchain)?));
        }
        for (target, run) in running {
            match run.finish() {
                Ok(summary) => println!("    {:<22} {summary}", target.name),
                Err(err) => {
                    println!("    {:<22} FAILED", target.name);
                    failures.push(format!("{err:#}"));
                }
            }
        }
    }
    println!(
        "==> fuzzing took {} s ({} s building, {} s running)",
        started.elapsed().as_secs(),
        built.as_secs(),
        (started.elapsed() - built).as_secs()
    );
    if !failures.is_empty() {
        bail!(
            "{} fuzz target(s) failed:\n\n{}",
            failures.len(),
            failures.join("\n\n")
        );
    }
    Ok(())
}

/// Every target of every `crates/*/fuzz` project, as `cargo fuzz list` names them.
fn all_targets(toolchain: Toolchain) -> anyhow::Result<Vec<Target>> {
    let mut targets = Vec::new();
    for project in projects()? {
        let out = toolchain
            .cargo()
            .current_dir(crate::root())
            .args(["fuzz", "list", "--fuzz-dir"])
            .arg(&project)
            .output()
            .context("cannot run `cargo fuzz list`")?;
        if !out.status.success() {
            bail!(
                "`cargo fuzz list --fuzz-dir {}` failed: {}",
                relative(&project),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        for name in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            targets.push(Target {
                project: project.clone(),
                name: name.to_owned(),
            });
        }
    }
    Ok(targets)
}

/// The cargo-fuzz projects: `crates/*/fuzz` with a `Cargo.toml`, in name order.
pub fn projects() -> anyhow::Result<Vec<PathBuf>> {
    let crates = crate::root().join("crates");
    let mut projects: Vec<PathBuf> = std::fs::read_dir(&crates)
        .with_context(|| format!("cannot list {}", crates.display()))?
        .flatten()
        .map(|entry| entry.path().join("fuzz"))
        .filter(|dir| dir.join("Cargo.toml").is_file())
        .collect();
    projects.sort();
    Ok(projects)
}

/// A target running in the background, its output going to a log file.
struct Run {
    target: Target,
    child: Child,
    log: PathBuf,
    artifacts: PathBuf,
    scratch: PathBuf,
    corpus: PathBuf,
    started: Instant,
    toolchain: Toolchain,
}

fn start(
    target: &Target,
    binaries: &Path,
    runs: &Path,
    seconds: u64,
    toolchain: Toolchain,
) -> anyhow::Result<Run> {
    let binary = binaries.join(&target.name);
    let corpus = target.project.join("corpus").join(&target.name);
    if !corpus.is_dir() {
        bail!(
            "fuzz target {} has no corpus: add a few meaningful inputs to {}",
            target.name,
            relative(&corpus)
        );
    }
    let dir = runs.join(&target.name);
    let (scratch, artifacts) = (dir.join("corpus"), dir.join("artifacts"));
    for d in [&scratch, &artifacts] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let log = dir.join("libfuzzer.log");
    let log_file =
        std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let mut cmd = Command::new(&binary);
    cmd.arg(&scratch).arg(&corpus);
    if seconds == 0 {
        cmd.arg("-runs=0");
    } else {
        cmd.arg(format!("-max_total_time={seconds}"));
    }
    cmd.arg(format!("-timeout={INPUT_TIMEOUT_SECONDS}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().context("cannot share the log file")?)
        .stderr(log_file);
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    Ok(Run {
        target: target.clone(),
        child,
        log,
        artifacts,
        scratch,
        corpus,
        started: Instant::now(),
        toolchain,
    })
}

impl Run {
    /// Waits for the target; on success says how much it ran, on failure what and where.
    fn finish(mut self) -> anyhow::Result<String> {
        let status = self
            .child
            .wait()
            .context("cannot wait for the fuzz target")?;
        let elapsed = self.started.elapsed();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let crash = artifact(&log, &self.artifacts);
        if status.success() && crash.is_none() {
            return Ok(summary(&log, elapsed, &self.corpus, &self.scratch));
        }
        // The panic message (if any) and libFuzzer's summary, without the long stack trace.
        let lines: Vec<&str> = log.lines().collect();
        let panic = lines
            .iter()
            .position(|line| line.contains("panicked at"))
            .map(|at| lines[at..lines.len().min(at + 3)].join("\n"))
            .unwrap_or_default();
        let summary_at = lines
            .iter()
            .position(|line| line.starts_with("SUMMARY:") || line.contains("ERROR: libFuzzer"))
            .unwrap_or(lines.len().saturating_sub(20));
        let tail = lines[summary_at..lines.len().min(summary_at + 12)].join("\n");
        let project = relative(&self.target.project);
        let reproduce = match &crash {
            Some(path) => format!(
                "input:  {}\nreproduce: {} run --fuzz-dir {project} {} {}",
                path.display(),
                self.toolchain.cargo_fuzz_text(),
                self.target.name,
                path.display()
            ),
            None => "no input was saved (see the log)".to_owned(),
        };
        bail!(
            "fuzz target {} of {project} failed ({status})\n{reproduce}\nlog:    {}\n\
             --- from the log ---\n{panic}\n{tail}",
            self.target.name,
            self.log.display(),
        )
    }
}

/// The input libFuzzer saved for a crash, leak or hang, if any.
fn artifact(log: &str, artifacts: &Path) -> Option<PathBuf> {
    let written = log.lines().find_map(|line| {
        line.split_once("Test unit written to ")
            .map(|(_, path)| PathBuf::from(path.trim()))
    });
    written.or_else(|| {
        std::fs::read_dir(artifacts)
            .ok()?
            .flatten()
            .map(|entry| entry.path())
            .next()
    })
}

/// `N runs in S s (E exec/s), corpus A → B inputs` from libFuzzer's final statistics.
fn summary(log: &str, elapsed: Duration, corpus: &Path, scratch: &Path) -> String {
    let stat = |name: &str| {
        log.lines().find_map(|line| {
            line.strip_prefix(&format!("stat::{name}:"))
                .map(|value| value.trim().to_owned())
        })
    };
    let count = |dir: &Path| std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0);
    // libFuzzer's last status line: `#N DONE cov: C ft: F corp: …`.
    let coverage = log
        .lines()
        .rev()
        .find_map(|line| {
            let (_, rest) = line.split_once("cov: ")?;
            let mut words = rest.split_whitespace();
            let cov = words.next()?;
            let ft = words.nth(1)?;
            Some(format!(", coverage {cov} edges {ft} features"))
        })
        .unwrap_or_default();
    format!(
        "{} runs in {} s ({} exec/s), corpus {} + {} new inputs{coverage}, peak RSS {} MB",
        stat("number_of_executed_units").unwrap_or_else(|| "?".into()),
        elapsed.as_secs(),
        stat("average_exec_per_sec").unwrap_or_else(|| "?".into()),
        count(corpus),
        count(scratch),
        stat("peak_rss_mb").unwrap_or_else(|| "?".into()),
    )
}

fn relative(path: &Path) -> String {
    path.strip_prefix(crate::root())
        .unwrap_or(path)
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The end of a real libFuzzer run (`-print_final_stats=1`).
    const DONE: &str = "\
#189531\tDONE   cov: 2325 ft: 3796 corp: 47/10203b lim: 1780 exec/s: 6113 rss: 188Mb
Done 189531 runs in 31 second(s)
stat::number_of_executed_units: 189531
stat::average_exec_per_sec:     6113
stat::new_units_added:          46
stat::slowest_unit_time_sec:    0
stat::peak_rss_mb:              188
";

    /// The end of a real crash report.
    const CRASH: &str = "\
thread '<unnamed>' (22308) panicked at fuzz_targets/decapsulate_session.rs:212:9:
B refused A's next message: Dropped(Malformed)
==22308== ERROR: libFuzzer: deadly signal
SUMMARY: libFuzzer: deadly signal
artifact_prefix='/t/artifacts/'; Test unit written to /t/artifacts/crash-0eac04493cd2
Base64: AABEAAAA
";

    #[test]
    fn a_run_is_summed_up_from_libfuzzers_final_statistics() {
        let text = summary(
            DONE,
            Duration::from_secs(31),
            Path::new("/nonexistent/a"),
            Path::new("/nonexistent/b"),
        );
        assert_eq!(
            text,
            "189531 runs in 31 s (6113 exec/s), corpus 0 + 0 new inputs, coverage 2325 edges \
             3796 features, peak RSS 188 MB"
        );
    }

    #[test]
    fn the_saved_input_of_a_crash_is_found_in_the_log() {
        assert_eq!(
            artifact(CRASH, Path::new("/nonexistent")),
            Some(PathBuf::from("/t/artifacts/crash-0eac04493cd2"))
        );
        assert_eq!(artifact(DONE, Path::new("/nonexistent")), None);
    }
}
