use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::{wait_until, Error, Result};

/// Options of [`Netns::spawn`](crate::Netns::spawn).
#[derive(Debug, Clone, Default)]
pub struct SpawnOpts {
    /// Environment variables to set for the process.
    pub env: BTreeMap<String, String>,
}

impl SpawnOpts {
    /// Sets one environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.to_owned(), value.to_owned());
        self
    }
}

/// A background process in a namespace. Dropping it ends it: SIGTERM, then SIGKILL after
/// three seconds. Its output is in [`Process::log_path`].
#[derive(Debug)]
pub struct Process {
    label: String,
    command: String,
    child: Option<Child>,
    log_path: PathBuf,
    live_pids: Arc<Mutex<Vec<u32>>>,
}

impl Process {
    pub(crate) fn start(
        mut cmd: Command,
        label: &str,
        command: &str,
        log_path: &Path,
        live_pids: Arc<Mutex<Vec<u32>>>,
    ) -> Result<Self> {
        let file_error = |source| Error::File {
            path: log_path.to_owned(),
            source,
        };
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .map_err(file_error)?;
        let log2 = log.try_clone().map_err(file_error)?;
        cmd.stdin(Stdio::null()).stdout(log).stderr(log2);
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            command: command.to_owned(),
            source,
        })?;
        lock(&live_pids).push(child.id());
        Ok(Self {
            label: label.to_owned(),
            command: command.to_owned(),
            child: Some(child),
            log_path: log_path.to_owned(),
            live_pids,
        })
    }

    /// The process id (of the program itself: `ip netns exec` and the mount wrapper `exec` it).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The label given at spawn.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The file its standard output and error go to.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything it has printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits until its log contains `needle`; an error names the process and shows the log's end
    /// when it does not appear within `timeout` or the process exits first.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let mut exited = false;
        let found = wait_until(timeout, || {
            if self.log().contains(needle) {
                return true;
            }
            exited = !self.is_running();
            exited
        });
        if found && !exited {
            return Ok(());
        }
        if self.log().contains(needle) {
            return Ok(());
        }
        Err(Error::Probe {
            what: format!(
                "{} ({}) {} before printing {needle:?}; its log ends with:\n{}",
                self.label,
                self.command,
                if exited { "exited" } else { "timed out" },
                tail(&self.log(), 20)
            ),
            source: std::io::ErrorKind::TimedOut.into(),
        })
    }

    /// Sends SIGKILL and reaps it, as a crash would end it.
    pub fn kill9(&mut self) {
        self.signal_and_reap(Signal::SIGKILL, Duration::ZERO);
    }

    /// Sends SIGTERM, waits up to three seconds for it to exit, then SIGKILL. Returns its exit
    /// status when it could be read.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        self.signal_and_reap(Signal::SIGTERM, Duration::from_secs(3))
    }

    fn signal_and_reap(
        &mut self,
        signal: Signal,
        grace: Duration,
    ) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let pid = child.id();
        let mut status = child.try_wait().ok().flatten();
        if status.is_none() {
            let _ = kill(Pid::from_raw(pid as i32), signal);
            let deadline = Instant::now() + grace;
            while status.is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
                status = child.try_wait().ok().flatten();
            }
            if status.is_none() {
                let _ = child.kill();
                status = child.wait().ok();
            }
        }
        lock(&self.live_pids).retain(|p| *p != pid);
        status
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
