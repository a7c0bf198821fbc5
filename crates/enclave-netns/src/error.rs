use std::path::PathBuf;

/// What went wrong in the test bench.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Namespaces need root.
    #[error(
        "the netns test bench needs root: run it as root (e.g. `sudo -E cargo xtask netns-test`)"
    )]
    NotRoot,
    /// A program the bench drives is not installed.
    #[error("`{tool}` is not installed; `cargo xtask ci` installs the test packages (as root)")]
    MissingTool {
        /// The program's name.
        tool: &'static str,
    },
    /// The kernel or the sandbox does not allow network namespaces.
    #[error("network namespaces are unavailable here (could not add one)")]
    NamespacesUnavailable {
        /// Why adding one failed.
        #[source]
        source: Box<Error>,
    },
    /// A topology description is inconsistent.
    #[error("bad topology: {0}")]
    BadTopology(String),
    /// A command could not be started at all.
    #[error("could not start `{command}`")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A command ran and failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on standard error, trimmed.
        stderr: String,
    },
    /// Entering a namespace failed.
    #[error("could not enter namespace {namespace}")]
    Enter {
        /// The namespace's name.
        namespace: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A probe ran and got no answer: the target refused, the network said it is unreachable,
    /// or nothing came back in time. The one error a "cannot reach" check expects; see
    /// [`Reached::reached`](crate::Reached::reached).
    #[error("{what}: no answer")]
    Unreachable {
        /// What was tried, and towards what.
        what: String,
        /// What the socket said (refused, unreachable, timed out).
        #[source]
        source: std::io::Error,
    },
    /// A probe program ran but did not probe: it is missing, was killed, or stopped with an
    /// error that is not an answer from the network (a bad argument, no permission for a raw
    /// socket). A probe that could not run is an error, never a "no".
    #[error(
        "could not probe: `{command}` did not run as a probe ({status}): {output}; \
         install the tool or fix the bench, this is not an answer from the network"
    )]
    ProbeTool {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed (standard error, then standard output), trimmed.
        output: String,
    },
    /// A probe or a wait of the bench failed for a reason other than the network's answer
    /// (a socket that could not be opened, a server that could not bind, a log line that never
    /// came).
    #[error("{what}")]
    Probe {
        /// What was tried, and towards what.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
    /// A file of the bench (log, runtime directory) could not be written.
    #[error("could not write {path}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether this is the network's "no" ([`Error::Unreachable`]) rather than a probe that
    /// could not run.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Unreachable { .. })
    }
}

/// The test bench's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
