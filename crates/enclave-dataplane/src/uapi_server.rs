//! Serving the UAPI on a unix socket, `<dir>/<interface>.sock`, as wireguard-go does.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::sys;
use crate::tunnel::Control;
use crate::uapi::{self, Operation, UapiError};

/// The longest line a client may send.
const MAX_LINE: u64 = 4096;
/// How long a client may take to send a request.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the server looks whether its socket file is gone when the kernel cannot tell it
/// (no inotify): the only timer of the accepting thread, and only then.
const FALLBACK_CHECK_MS: i32 = 1000;

/// Stops the accepting thread at once: a flag, and the eventfd its `poll` waits on.
#[derive(Debug)]
pub(crate) struct Stop {
    requested: AtomicBool,
    waker: sys::Waker,
}

impl Stop {
    fn new() -> io::Result<Stop> {
        Ok(Stop {
            requested: AtomicBool::new(false),
            waker: sys::Waker::new()?,
        })
    }

    /// Asks the accepting thread to stop; it wakes at once.
    pub(crate) fn request(&self) {
        self.requested.store(true, Ordering::Release);
        self.waker.wake();
    }

    fn requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }
}

/// The UAPI socket and the thread accepting on it.
#[derive(Debug)]
pub(crate) struct UapiServer {
    path: PathBuf,
    stop: Arc<Stop>,
    thread: Option<JoinHandle<()>>,
}

impl UapiServer {
    /// Binds `<dir>/<interface>.sock` (mode 0600) and starts accepting. The directory is made
    /// (mode 0755) if missing; an existing one is left as it is, whoever owns it. A stale
    /// socket file is replaced; a live one is an error.
    pub(crate) fn start(dir: &Path, interface: &str, control: Control) -> Result<UapiServer> {
        let path = dir.join(format!("{interface}.sock"));
        let socket_err = |source| Error::UapiSocket {
            path: path.clone(),
            source,
        };
        ensure_dir(dir).map_err(socket_err)?;
        if path.exists() {
            if UnixStream::connect(&path).is_ok() {
                return Err(Error::UapiInUse { path });
            }
            fs::remove_file(&path).map_err(socket_err)?;
        }
        let listener = UnixListener::bind(&path).map_err(socket_err)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(socket_err)?;
        listener.set_nonblocking(true).map_err(socket_err)?;
        let inode = fs::metadata(&path).map_err(socket_err)?.ino();
        let stop = Arc::new(Stop::new().map_err(socket_err)?);
        // The socket file deleted or replaced stops the tunnel, as in wireguard-go: inotify on
        // its directory says when to look, so an idle server never wakes.
        let watch = sys::DirWatch::new(dir)
            .inspect_err(|e| {
                tracing::debug!(error = %e, "no inotify on the UAPI directory; looking every second instead");
            })
            .ok();
        let thread = {
            let stop = stop.clone();
            let path = path.clone();
            std::thread::Builder::new()
                .name(format!("uapi-{interface}"))
                .spawn(move || accept_loop(listener, &path, inode, &stop, watch, control))
                .map_err(Error::Spawn)?
        };
        Ok(UapiServer {
            path,
            stop,
            thread: Some(thread),
        })
    }

    /// The socket's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// What stops the accepting thread.
    pub(crate) fn stop_flag(&self) -> Arc<Stop> {
        self.stop.clone()
    }

    /// Stops accepting and deletes the socket file (if it is still ours).
    pub(crate) fn stop(mut self) {
        self.stop.request();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for UapiServer {
    fn drop(&mut self) {
        self.stop.request();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Makes `dir` (and missing parents) with mode 0755 whatever the umask, as wireguard-go makes
/// its socket directory. A directory that already exists is not touched: it may belong to
/// someone else, who chose its mode. Returns whether we made it.
fn ensure_dir(dir: &Path) -> io::Result<bool> {
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)?;
        }
        Err(e) => return Err(e),
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    Ok(true)
}

fn accept_loop(
    listener: UnixListener,
    path: &Path,
    inode: u64,
    stop: &Stop,
    watch: Option<sys::DirWatch>,
    control: Control,
) {
    // Without a watch, the eventfd stands in for it in the poll set (and never fires there).
    let watch_fd = watch
        .as_ref()
        .map_or(stop.waker.as_raw_fd(), AsRawFd::as_raw_fd);
    let timeout = if watch.is_some() {
        -1
    } else {
        FALLBACK_CHECK_MS
    };
    while !stop.requested() {
        // The socket file deleted (or replaced) means: stop, as wireguard-go does.
        if fs::metadata(path).ok().map(|m| m.ino()) != Some(inode) {
            tracing::info!(path = %path.display(), "UAPI socket removed; stopping the tunnel");
            control.request_stop();
            return;
        }
        let fds = [stop.waker.as_raw_fd(), watch_fd, listener.as_raw_fd()];
        let readable = match sys::poll_readable(fds, timeout) {
            Ok(readable) => readable,
            Err(e) => {
                tracing::warn!(error = %e, "UAPI socket poll failed");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if readable[1] {
            if let Some(watch) = &watch {
                watch.drain();
            }
        }
        if !readable[2] {
            continue;
        }
        match listener.accept() {
            Ok((stream, _)) => {
                let control = control.clone();
                let spawned = std::thread::Builder::new()
                    .name("uapi-client".into())
                    .spawn(move || serve_client(stream, &control));
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "cannot serve a UAPI client");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => tracing::warn!(error = %e, "UAPI accept failed"),
        }
    }
    if fs::metadata(path).ok().map(|m| m.ino()) == Some(inode) {
        let _ = fs::remove_file(path);
    }
}

/// Reads one line (without its newline); `None` at end of stream or on a too long line.
fn read_line(reader: &mut impl BufRead) -> Option<String> {
    let mut line = String::new();
    match reader.take(MAX_LINE).read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => {
            if !line.ends_with('\n') {
                return None;
            }
            line.pop();
            Some(line)
        }
    }
}

fn serve_client(stream: UnixStream, control: &Control) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(CLIENT_TIMEOUT));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    // A client may send several requests on one connection.
    while let Some(first) = read_line(&mut reader) {
        let mut lines = std::iter::once(first).chain(std::iter::from_fn(|| read_line(&mut reader)));
        let reply = match request_lines(&mut lines) {
            Ok(request) => match answer_request(control, request) {
                Ok(reply) => reply,
                Err(()) => return,
            },
            Err(UapiError::UnknownOperation) => return,
            Err(e) => {
                tracing::debug!(error = %e, "UAPI request refused");
                let mut out = String::new();
                uapi::write_errno(&mut out, e.errno());
                out
            }
        };
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// A request read whole: the operation and, for `set=1`, its lines.
enum Request {
    Get,
    Set(std::result::Result<uapi::SetRequest, UapiError>),
}

/// Reads one request from `lines`; the lines of a `set=1` are read up to the blank line
/// even when one of them is wrong, so that the next request starts in the right place.
fn request_lines(
    lines: &mut impl Iterator<Item = String>,
) -> std::result::Result<Request, UapiError> {
    let first = lines.next().ok_or(UapiError::Unterminated)?;
    match uapi::parse_operation(&first).ok_or(UapiError::UnknownOperation)? {
        Operation::Get => match lines.next() {
            Some(blank) if blank.is_empty() => Ok(Request::Get),
            Some(_) => Err(UapiError::NotKeyValue { line: 1 }),
            None => Err(UapiError::Unterminated),
        },
        Operation::Set => {
            let mut body = Vec::new();
            loop {
                match lines.next() {
                    Some(line) if line.is_empty() => break,
                    Some(line) => body.push(line),
                    None => return Err(UapiError::Unterminated),
                }
            }
            Ok(Request::Set(uapi::parse_set(
                body.iter().map(String::as_str),
            )))
        }
    }
}

/// Runs a request against the loop; `Err` when the tunnel has stopped.
fn answer_request(control: &Control, request: Request) -> std::result::Result<String, ()> {
    match request {
        Request::Get => control.uapi_get().map_err(|_| ()),
        Request::Set(Ok(set)) => control.uapi_set(set).map_err(|_| ()),
        Request::Set(Err(e)) => {
            tracing::debug!(error = %e, "UAPI set refused");
            let mut out = String::new();
            uapi::write_errno(&mut out, e.errno());
            Ok(out)
        }
    }
}

/// Answers one request given as lines, as the socket would ([`crate::Tunnel::uapi`]).
pub(crate) fn answer<'a>(
    control: &Control,
    lines: &mut impl Iterator<Item = &'a str>,
) -> std::result::Result<String, UapiError> {
    let mut owned = lines.map(str::to_owned);
    let request = match request_lines(&mut owned) {
        Ok(request) => request,
        Err(UapiError::UnknownOperation) => return Err(UapiError::UnknownOperation),
        Err(e) => {
            let mut out = String::new();
            uapi::write_errno(&mut out, e.errno());
            return Ok(out);
        }
    };
    answer_request(control, request).map_err(|()| UapiError::Io)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of our own under the system's temporary directory, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Scratch {
            let path = std::env::temp_dir().join(format!(
                "enclave-uapi-{name}-{}-{:?}",
                std::process::id(),
                std::time::SystemTime::now()
            ));
            Scratch(path)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o7777
    }

    #[test]
    fn an_existing_directory_keeps_its_mode() {
        let scratch = Scratch::new("existing");
        fs::create_dir(&scratch.0).expect("mkdir");
        fs::set_permissions(&scratch.0, fs::Permissions::from_mode(0o700)).expect("chmod");
        assert!(!ensure_dir(&scratch.0).expect("ensure"));
        assert_eq!(mode(&scratch.0), 0o700);
    }

    #[test]
    fn a_directory_we_make_is_0755_with_its_parents() {
        let scratch = Scratch::new("made");
        let dir = scratch.0.join("run").join("wireguard");
        assert!(ensure_dir(&dir).expect("ensure"));
        assert_eq!(mode(&dir), 0o755);
        assert!(
            !ensure_dir(&dir).expect("again"),
            "the second time it exists"
        );
    }

    #[test]
    fn a_file_in_the_way_is_an_error() {
        let scratch = Scratch::new("file");
        fs::write(&scratch.0, b"not a directory").expect("write");
        assert!(ensure_dir(&scratch.0).is_err());
    }
}
