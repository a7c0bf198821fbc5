use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use crate::process::{Process, SpawnOpts};
use crate::{Error, Result};

/// One network namespace of a [`Topology`](crate::Topology): a node of the test network.
///
/// Every command run in it sees a private `/run/wireguard` (a directory of the topology's own,
/// bind-mounted in a mount namespace of the command's own), so that the UAPI sockets of two
/// WireGuard implementations on two nodes never collide, while `wg` and the daemon of one node
/// see the same sockets.
#[derive(Debug)]
pub struct Netns {
    pub(crate) node: String,
    pub(crate) name: String,
    pub(crate) wireguard_dir: PathBuf,
    pub(crate) log_dir: PathBuf,
    pub(crate) live_pids: Arc<Mutex<Vec<u32>>>,
}

impl Netns {
    /// The node's name in the topology (`"gw"`).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The namespace's full name, for `ip netns exec NAME` and `ip -n NAME`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The directory mounted at `/run/wireguard` for commands run in this namespace.
    pub fn wireguard_dir(&self) -> &Path {
        &self.wireguard_dir
    }

    /// The directory where this topology's process logs go.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// The command that runs `argv` inside the namespace.
    pub fn command<S: AsRef<OsStr>>(&self, argv: &[S]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, "sh", "-c"])
            .arg("mount --bind \"$0\" /run/wireguard || exit 97; exec \"$@\"")
            .arg(&self.wireguard_dir)
            .args(argv);
        cmd
    }

    /// Runs `argv` in the namespace to completion and returns its standard output; a non-zero
    /// exit is an error that carries the standard error.
    pub fn exec<S: AsRef<OsStr>>(&self, argv: &[S]) -> Result<String> {
        let output = self.exec_output(argv)?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(Error::Command {
                command: show(argv),
                status: output.status,
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            })
        }
    }

    /// Runs `argv` in the namespace to completion and returns whatever came of it.
    pub fn exec_output<S: AsRef<OsStr>>(&self, argv: &[S]) -> Result<Output> {
        self.command(argv).output().map_err(|source| Error::Spawn {
            command: show(argv),
            source,
        })
    }

    /// Starts `argv` in the namespace in the background. Its standard output and error go to
    /// `<log dir>/<label>.log`; the returned [`Process`] ends it by PID when dropped.
    pub fn spawn<S: AsRef<OsStr>>(
        &self,
        label: &str,
        argv: &[S],
        opts: SpawnOpts,
    ) -> Result<Process> {
        let mut cmd = self.command(argv);
        for (key, value) in &opts.env {
            cmd.env(key, value);
        }
        Process::start(
            cmd,
            label,
            &show(argv),
            &self.log_dir.join(format!("{label}.log")),
            Arc::clone(&self.live_pids),
        )
    }

    /// Runs `f` on a thread that has entered this network namespace: sockets it opens live in
    /// the namespace. Only the network namespace is entered.
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    enter(&self.name)?;
                    Ok(f())
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Starts a thread that enters this network namespace and runs `setup` there (say, binding
    /// the sockets it serves on), then `serve` with what `setup` made, for as long as `serve`
    /// runs. Returns once `setup` is done: with its error, or the error of entering the
    /// namespace, so that a server that could not start is an error here, never a silent
    /// thread. Only the network namespace is entered.
    pub fn start_thread<S, E>(
        &self,
        setup: impl FnOnce() -> std::result::Result<S, E> + Send + 'static,
        serve: impl FnOnce(S) + Send + 'static,
    ) -> std::result::Result<JoinHandle<()>, E>
    where
        E: From<Error> + Send + 'static,
    {
        let name = self.name.clone();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            match enter(&name).map_err(E::from).and_then(|()| setup()) {
                Ok(made) => {
                    let _ = ready_tx.send(Ok(()));
                    serve(made);
                }
                Err(err) => {
                    let _ = ready_tx.send(Err(err));
                }
            }
        });
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(thread),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(Error::Probe {
                what: format!("a thread in {} ended before it was ready", self.node),
                source: std::io::ErrorKind::Other.into(),
            }
            .into()),
        }
    }
}

/// Moves the calling thread into the network namespace `name`.
fn enter(name: &str) -> Result<()> {
    let failed = |source| Error::Enter {
        namespace: name.to_owned(),
        source,
    };
    let file = std::fs::File::open(format!("/run/netns/{name}")).map_err(failed)?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|errno| failed(errno.into()))
}

/// Runs `ip ARGS` in the root namespace (for `ip netns …` and `ip -n NS …`).
pub(crate) fn ip(args: &[&str]) -> Result<String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| Error::Spawn {
            command: format!("ip {}", args.join(" ")),
            source,
        })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(Error::Command {
            command: format!("ip {}", args.join(" ")),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}

pub(crate) fn show<S: AsRef<OsStr>>(argv: &[S]) -> String {
    argv.iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
