//! The file source: this system's view from a network-definition file (file mode).
//!
//! [`open`] reads and validates the definition at once, so that a definition that cannot be
//! used stops the agent at start with its reason (not in the definition, invalid, unreadable).
//! From then on a task of its own watches the file and sends a [`SourceEvent`] for each change:
//!
//! - the file's directory is watched with inotify (the `notify` crate), not the file itself, so
//!   that an editor's write-to-a-temporary-file-and-rename and a replaced symbolic link in that
//!   directory are seen as well as a write in place;
//! - notifications are debounced (50 ms of quiet) and the file is read again only when its
//!   identity, size or modification time changed, so that a burst of writes is read once;
//! - SIGHUP reads it again whatever changed;
//! - a definition that fails (unreadable, invalid, this system no longer in it) is sent as a
//!   [`SourceEvent::Problem`]: the agent keeps the last good view in force and shows why.
//!
//! Where inotify cannot be had (the per-user limit of instances reached), the file is polled
//! every second instead, and a warning says so.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use enclave_policy::View;
use notify::Watcher;
use tokio::sync::mpsc;

use crate::source::{SourceEvent, Update};
use crate::{Error, Result};

/// How long the directory must stay quiet after a notification before the file is read.
const SETTLE: Duration = Duration::from_millis(50);
/// The longest a stream of notifications may put off reading the file.
const SETTLE_AT_MOST: Duration = Duration::from_millis(500);
/// How often the file is looked at when inotify cannot be used.
const POLL_FALLBACK: Duration = Duration::from_secs(1);
/// Events the agent has not taken yet; a full queue drops the oldest news, never the file's
/// state (the next read sends the definition as it is then).
const QUEUE: usize = 16;

/// Reads the definition at `path` and finds this system in it by `public_key`; then, in a task
/// of the current tokio runtime, watches it and sends every later change. Errors of this first
/// read are the caller's to report (the agent does not start).
pub fn open(path: &Path, public_key: &str) -> Result<(Update, mpsc::Receiver<SourceEvent>)> {
    let stamp = Stamp::of(path);
    let first = read(path, public_key)?;
    let (events, receiver) = mpsc::channel(QUEUE);
    let (wake, woken) = mpsc::unbounded_channel();
    let watcher = watch(path, wake)?;
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(Error::Signals)?;
    let watching = Watching {
        path: path.to_owned(),
        public_key: public_key.to_owned(),
        stamp,
        events,
        _watcher: watcher,
    };
    tokio::spawn(watching.run(woken, hangup));
    Ok((first, receiver))
}

/// What identifies one version of the file: a rename gives a new inode, a write a new size or
/// modification time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    device: u64,
    inode: u64,
    len: u64,
    modified: Option<SystemTime>,
}

impl Stamp {
    /// The stamp of the file `path` names now (following a symbolic link), `None` when it
    /// cannot be looked at.
    fn of(path: &Path) -> Option<Stamp> {
        let meta = std::fs::metadata(path).ok()?;
        Some(Stamp {
            device: meta.dev(),
            inode: meta.ino(),
            len: meta.len(),
            modified: meta.modified().ok(),
        })
    }
}

/// A watcher of some kind: inotify, or polling where inotify is refused.
enum Watch {
    Inotify(notify::RecommendedWatcher),
    Poll(notify::PollWatcher),
}

/// Watches the directories that hold `path` (and, for a symbolic link, its target): each
/// notification but a mere access wakes `wake`.
fn watch(path: &Path, wake: mpsc::UnboundedSender<()>) -> Result<Watch> {
    let handler = move |event: notify::Result<notify::Event>| {
        let news = match event {
            Ok(event) => !matches!(event.kind, notify::EventKind::Access(_)),
            // A lost event (an overflowed queue) is news too: look again.
            Err(_) => true,
        };
        if news {
            let _ = wake.send(());
        }
    };
    let mut dirs = vec![parent(path)];
    if let Ok(target) = std::fs::canonicalize(path) {
        let dir = parent(&target);
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    let io = |e: notify::Error| Error::Watch {
        path: path.to_owned(),
        source: std::io::Error::other(e.to_string()),
    };
    let mut watcher = match notify::recommended_watcher(handler.clone()) {
        Ok(watcher) => Watch::Inotify(watcher),
        Err(err) => {
            tracing::warn!(error = %err, file = %path.display(), "cannot watch the network definition with inotify; looking at it every {} s instead", POLL_FALLBACK.as_secs());
            let config = notify::Config::default().with_poll_interval(POLL_FALLBACK);
            Watch::Poll(notify::PollWatcher::new(handler, config).map_err(io)?)
        }
    };
    for dir in &dirs {
        let result = match &mut watcher {
            Watch::Inotify(w) => w.watch(dir, notify::RecursiveMode::NonRecursive),
            Watch::Poll(w) => w.watch(dir, notify::RecursiveMode::NonRecursive),
        };
        result.map_err(io)?;
    }
    Ok(watcher)
}

/// The directory of `path` (`.` for a bare file name).
fn parent(path: &Path) -> PathBuf {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// The watching task's state.
struct Watching {
    path: PathBuf,
    public_key: String,
    /// The stamp of the version read last.
    stamp: Option<Stamp>,
    events: mpsc::Sender<SourceEvent>,
    /// Kept for as long as the task runs: dropping it ends the watch.
    _watcher: Watch,
}

impl Watching {
    async fn run(
        mut self,
        mut woken: mpsc::UnboundedReceiver<()>,
        mut hangup: tokio::signal::unix::Signal,
    ) {
        loop {
            let forced = tokio::select! {
                woke = woken.recv() => {
                    if woke.is_none() {
                        return;
                    }
                    settle(&mut woken).await;
                    false
                }
                _ = hangup.recv() => true,
                // The agent is gone.
                () = self.events.closed() => return,
            };
            let stamp = Stamp::of(&self.path);
            if !forced && stamp == self.stamp {
                continue;
            }
            self.stamp = stamp;
            let event = match read(&self.path, &self.public_key) {
                Ok(update) => SourceEvent::Update(Box::new(update)),
                Err(err) => {
                    let text = format!(
                        "{}\nthe last good definition stays in force",
                        crate::error::chain(&err)
                    );
                    tracing::error!("{text}");
                    SourceEvent::Problem(text)
                }
            };
            if self.events.send(event).await.is_err() {
                return;
            }
        }
    }
}

/// Waits until no notification has come for [`SETTLE`], or [`SETTLE_AT_MOST`] passed.
async fn settle(woken: &mut mpsc::UnboundedReceiver<()>) {
    let deadline = tokio::time::Instant::now() + SETTLE_AT_MOST;
    loop {
        let quiet = tokio::time::Instant::now() + SETTLE;
        tokio::select! {
            woke = woken.recv() => if woke.is_none() { return },
            () = tokio::time::sleep_until(quiet.min(deadline)) => return,
        }
        if tokio::time::Instant::now() >= deadline {
            return;
        }
    }
}

/// Reads and validates the definition and compiles this system's view.
fn read(path: &Path, public_key: &str) -> Result<Update> {
    let (view, warnings) = load_view(path, public_key)?;
    Ok(Update {
        view,
        warnings,
        origin: format!("file {}", path.display()),
    })
}

/// Loads and validates the definition and finds this system in it by its public key.
fn load_view(path: &Path, public_key: &str) -> Result<(View, Vec<String>)> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    let loaded = enclave_policy::load(&path.display().to_string(), &text).map_err(|e| match e {
        enclave_policy::Error::Invalid { diagnostics, .. } => Error::Definition {
            path: path.to_owned(),
            diagnostics: diagnostics.iter().map(ToString::to_string).collect(),
        },
        other => Error::Policy(other),
    })?;
    let name = loaded
        .network
        .systems
        .values()
        .find(|s| s.public_key == public_key)
        .map(|s| s.name.clone())
        .ok_or_else(|| Error::NotInDefinition {
            path: path.to_owned(),
            public_key: public_key.to_owned(),
        })?;
    let view = enclave_policy::compile(&loaded.network, &name).map_err(Error::Policy)?;
    let warnings = loaded.warnings.iter().map(ToString::to_string).collect();
    Ok((view, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../docs/examples/network.toml");

    /// The example's public key of `system`.
    fn key_of(system: &str) -> String {
        let loaded = enclave_policy::load("network.toml", EXAMPLE).unwrap();
        loaded.network.systems[system].public_key.clone()
    }

    /// A directory for the test's files, removed with it, and where its `network.toml` goes.
    fn scratch() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("network.toml");
        (tmp, path)
    }

    /// A [`scratch`] directory whose `network.toml` is the example.
    fn with_example() -> (tempfile::TempDir, PathBuf) {
        let (tmp, path) = scratch();
        std::fs::write(&path, EXAMPLE).unwrap();
        (tmp, path)
    }

    async fn next(events: &mut mpsc::Receiver<SourceEvent>) -> SourceEvent {
        tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .expect("an event within 5 s")
            .expect("the source still runs")
    }

    #[tokio::test]
    async fn a_rename_over_the_file_is_seen_and_a_bad_edit_is_a_problem() {
        let (tmp, path) = with_example();
        let dir = tmp.path();
        let key = key_of("laptop");
        let (first, mut events) = open(&path, &key).unwrap();
        assert_eq!(first.view.system, "laptop");
        assert_eq!(first.origin, format!("file {}", path.display()));

        // An editor's save: a temporary file renamed over the definition. The laptop loses its
        // tags, which changes its view.
        let edited = EXAMPLE.replacen("tags = [\"users\"]", "tags = [\"nobody\"]", 1);
        assert_ne!(edited, EXAMPLE, "the example changed; fix the test's edit");
        let tmp = dir.join(".network.toml.swp");
        std::fs::write(&tmp, &edited).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        match next(&mut events).await {
            SourceEvent::Update(update) => {
                assert_eq!(update.view.system, "laptop");
                assert_ne!(update.view, first.view);
            }
            other => panic!("expected an update, got {other:?}"),
        }

        // A write in place that breaks the file: a problem that names the file.
        std::fs::write(&path, "this is not toml [").unwrap();
        match next(&mut events).await {
            SourceEvent::Problem(text) => {
                assert!(text.contains("network.toml"), "{text}");
                assert!(text.contains("last good definition stays"), "{text}");
            }
            other => panic!("expected a problem, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn other_files_in_the_directory_are_no_news() {
        let (tmp, path) = with_example();
        let dir = tmp.path();
        let (_, mut events) = open(&path, &key_of("laptop")).unwrap();
        // Reading the definition and writing a neighbour wake the watch, but the definition
        // did not change: nothing is sent.
        std::fs::write(dir.join("agent.toml"), "x").unwrap();
        let _ = std::fs::read_to_string(&path).unwrap();
        let quiet = tokio::time::timeout(Duration::from_millis(400), events.recv()).await;
        assert!(quiet.is_err(), "an event for no change: {quiet:?}");
        // A real change still comes through afterwards.
        std::fs::write(&path, format!("{EXAMPLE}\n# a comment\n")).unwrap();
        assert!(matches!(next(&mut events).await, SourceEvent::Update(_)));
    }

    #[test]
    fn the_first_read_fails_as_the_agent_start_must() {
        let (_tmp, path) = scratch();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let missing = open(&path, &key_of("laptop")).unwrap_err();
        assert!(matches!(missing, Error::Read { .. }), "{missing:?}");
        std::fs::write(&path, EXAMPLE).unwrap();
        let stranger = open(&path, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=").unwrap_err();
        assert!(
            matches!(stranger, Error::NotInDefinition { .. }),
            "{stranger:?}"
        );
    }
}
