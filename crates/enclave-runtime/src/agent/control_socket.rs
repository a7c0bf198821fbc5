//! The control socket: `enclave-agent status` asks the running agent for its [`Status`] here.
//!
//! A Unix stream socket, mode 0600, that answers only root: the client writes one line
//! (`status`) and reads one JSON document.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::status::Status;
use crate::{Error, Result};

/// The status the agent last published, shared with the socket's thread.
pub type Shared = Arc<Mutex<Option<Status>>>;

/// The running control socket; removed when dropped.
#[derive(Debug)]
pub struct ControlSocket {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ControlSocket {
    /// Binds the socket at `path` (replacing a stale one) and serves `status` from `shared`.
    pub fn start(path: &Path, shared: Shared) -> Result<Self> {
        let io = |source| Error::ControlSocket {
            path: path.to_owned(),
            source,
        };
        // Only root may reach the socket: it lives in a directory of ours that nobody else
        // may enter or write to (an existing one is judged, never chmod-ed).
        if let Some(dir) = path.parent() {
            enclave_statefile::ensure_private_dir(dir, 0o700).map_err(|source| {
                Error::RuntimeDir {
                    path: dir.to_owned(),
                    source,
                }
            })?;
        }
        if UnixStream::connect(path).is_ok() {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                "another agent answers on this control socket (is one running already with this interface?)",
            )));
        }
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).map_err(io)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        listener.set_nonblocking(true).map_err(io)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("control-socket".into())
                .spawn(move || serve(&listener, &shared, &stop))
                .map_err(io)?
        };
        Ok(Self {
            path: path.to_owned(),
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve(listener: &UnixListener, shared: &Shared, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(err) = answer(stream, shared) {
                    tracing::debug!(error = %err, "control socket client failed");
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(err) => {
                tracing::warn!(error = %err, "control socket accept failed");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

fn answer(mut stream: UnixStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let creds = nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(std::io::Error::from)?;
    if creds.uid() != 0 {
        stream.write_all(
            b"{\"error\":\"permission denied: the control socket answers root only\"}\n",
        )?;
        return Ok(());
    }
    let mut line = String::new();
    BufReader::new((&stream).take(256)).read_line(&mut line)?;
    let reply = match line.trim() {
        "status" => {
            let status = shared.lock().unwrap_or_else(|e| e.into_inner()).clone();
            match status {
                Some(status) => serde_json::to_string(&status).map_err(std::io::Error::other)?,
                None => "{\"error\":\"the agent is starting\"}".to_owned(),
            }
        }
        other => serde_json::json!({ "error": format!("unknown request {other:?}") }).to_string(),
    };
    stream.write_all(reply.as_bytes())?;
    stream.write_all(b"\n")
}

/// Asks the agent behind `path` for its status.
pub fn query_status(path: &Path) -> Result<Status> {
    let io = |source| Error::ControlSocket {
        path: path.to_owned(),
        source,
    };
    let mut stream = UnixStream::connect(path).map_err(io)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(io)?;
    stream.write_all(b"status\n").map_err(io)?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).map_err(io)?;
    if let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(&reply) {
        if let Some(serde_json::Value::String(error)) = map.get("error") {
            return Err(Error::Agent {
                message: error.clone(),
            });
        }
    }
    serde_json::from_str(&reply).map_err(|e| Error::Agent {
        message: format!("unreadable answer: {e}"),
    })
}
