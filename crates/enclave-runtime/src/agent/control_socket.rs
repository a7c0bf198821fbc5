//! The control socket: `enclave-agent status` asks the running agent for its [`Status`] here.
//!
//! A Unix stream socket, mode 0600, that answers only root: the client writes one line
//! (`status`) and reads one JSON document. It is served by tasks of the agent's tokio runtime:
//! the listener wakes only when a client connects, and each question goes to the agent's loop,
//! which reads the data plane's counters then and answers with the status of that moment.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, oneshot};

use crate::status::Status;
use crate::{Error, Result};

/// How long a client may take to send its question.
const ASK_WITHIN: Duration = Duration::from_secs(2);
/// How long the agent's loop may take to answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);
/// Questions waiting for the agent's loop.
const QUEUE: usize = 8;

/// A question for the agent's loop: where to send the status.
pub type Question = oneshot::Sender<Status>;

/// The running control socket; removed when dropped.
#[derive(Debug)]
pub struct ControlSocket {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl ControlSocket {
    /// Binds the socket at `path` (replacing a stale one) in the current tokio runtime. The
    /// questions come out of the receiver it returns; the agent's loop answers each.
    pub fn start(path: &Path) -> Result<(Self, mpsc::Receiver<Question>)> {
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
        let listener = tokio::net::UnixListener::bind(path).map_err(io)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        let (questions, receiver) = mpsc::channel(QUEUE);
        let task = tokio::spawn(serve(listener, questions));
        Ok((
            Self {
                path: path.to_owned(),
                task,
            },
            receiver,
        ))
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn serve(listener: tokio::net::UnixListener, questions: mpsc::Sender<Question>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let questions = questions.clone();
                tokio::spawn(async move {
                    if let Err(err) = answer(stream, &questions).await {
                        tracing::debug!(error = %err, "control socket client failed");
                    }
                });
            }
            Err(err) => {
                // Out of descriptors, say: give the system a moment rather than spin.
                tracing::warn!(error = %err, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

async fn answer(
    mut stream: tokio::net::UnixStream,
    questions: &mpsc::Sender<Question>,
) -> std::io::Result<()> {
    let creds = stream.peer_cred()?;
    if creds.uid() != 0 {
        stream
            .write_all(b"{\"error\":\"permission denied: the control socket answers root only\"}\n")
            .await?;
        return Ok(());
    }
    let mut line = String::new();
    {
        let mut reader = BufReader::new((&mut stream).take(256));
        tokio::time::timeout(ASK_WITHIN, reader.read_line(&mut line))
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    }
    let reply = match line.trim() {
        "status" => {
            let (ask, reply) = oneshot::channel();
            let status = match questions.send(ask).await {
                Ok(()) => tokio::time::timeout(ANSWER_WITHIN, reply)
                    .await
                    .ok()
                    .and_then(Result::ok),
                Err(_) => None,
            };
            match status {
                Some(status) => serde_json::to_string(&status).map_err(std::io::Error::other)?,
                None => "{\"error\":\"the agent did not answer (is it stopping?)\"}".to_owned(),
            }
        }
        other => serde_json::json!({ "error": format!("unknown request {other:?}") }).to_string(),
    };
    stream.write_all(reply.as_bytes()).await?;
    stream.write_all(b"\n").await
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
