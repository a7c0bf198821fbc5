//! IPv4 forwarding in the current network namespace, with its previous value remembered so that
//! a reset puts it back, also after a crash when a state file is given.
//!
//! The state file is written with `enclave-statefile`: its directory must be ours (created 0700
//! when missing, never chmod-ed when it exists), the value goes to a new file renamed into
//! place, and no symbolic link at the file's path is followed, neither when writing nor when
//! reading.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The sysctl we turn on.
pub const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Turns forwarding on and remembers what it was.
#[derive(Debug)]
pub struct Forwarding {
    sysctl: PathBuf,
    /// Where the value found before our first change is kept across restarts.
    state_file: Option<PathBuf>,
    /// The value found before our first change (from the state file after a crash), once known.
    previous: Option<bool>,
}

fn parse(path: &str, text: &str) -> Result<bool> {
    match text.trim() {
        "0" => Ok(false),
        "1" => Ok(true),
        other => Err(Error::SysctlValue {
            path: path.to_owned(),
            value: other.to_owned(),
        }),
    }
}

impl Forwarding {
    /// Manages `/proc/sys/net/ipv4/ip_forward`; `state_file` (optional) survives a crash.
    pub fn new(state_file: Option<PathBuf>) -> Self {
        Forwarding::at(PathBuf::from(IP_FORWARD), state_file)
    }

    /// Manages the sysctl file `sysctl` (tests give a plain file).
    pub fn at(sysctl: PathBuf, state_file: Option<PathBuf>) -> Self {
        Forwarding {
            sysctl,
            state_file,
            previous: None,
        }
    }

    /// Whether the host forwarded before we first turned forwarding on: the value a crashed run
    /// left in the state file, else the value now. Changes nothing.
    pub fn before(&mut self) -> Result<bool> {
        if let Some(previous) = self.previous {
            return Ok(previous);
        }
        let previous = match self.saved()? {
            Some(saved) => saved,
            None => self.read()?,
        };
        self.previous = Some(previous);
        Ok(previous)
    }

    fn read(&self) -> Result<bool> {
        let path = self.sysctl.display().to_string();
        let text = fs::read_to_string(&self.sysctl).map_err(|source| Error::SysctlRead {
            path: path.clone(),
            source,
        })?;
        parse(&path, &text)
    }

    fn write(&self, on: bool) -> Result<()> {
        fs::write(&self.sysctl, if on { "1\n" } else { "0\n" }).map_err(|source| {
            Error::SysctlWrite {
                path: self.sysctl.display().to_string(),
                source,
            }
        })
    }

    /// The sysctl file this manages, for messages.
    pub fn sysctl_path(&self) -> String {
        self.sysctl.display().to_string()
    }

    /// Whether forwarding is on now.
    pub fn is_enabled(&self) -> Result<bool> {
        self.read()
    }

    /// Turns forwarding on. The value found first (or the one a crashed run left in the state
    /// file) is what [`Forwarding::restore`] puts back; it is in the state file before the
    /// sysctl changes.
    pub fn enable(&mut self) -> Result<()> {
        let previous = self.before()?;
        if self.saved()?.is_none() {
            self.save(previous)?;
        }
        if !self.read()? {
            self.write(true)?;
            tracing::info!("IPv4 forwarding enabled");
        }
        Ok(())
    }

    /// Puts back the value found before [`Forwarding::enable`]; nothing when we changed nothing.
    pub fn restore(&mut self) -> Result<()> {
        let previous = match self.previous {
            Some(p) => Some(p),
            None => self.saved()?,
        };
        if let Some(previous) = previous {
            if self.read()? != previous {
                self.write(previous)?;
                tracing::info!(enabled = previous, "IPv4 forwarding restored");
            }
        }
        self.previous = None;
        if let Some(path) = &self.state_file {
            // unlink removes a symbolic link there, never what it points to.
            match fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(state_file_error(path, source)),
            }
        }
        Ok(())
    }

    fn saved(&self) -> Result<Option<bool>> {
        let Some(path) = &self.state_file else {
            return Ok(None);
        };
        let text = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .and_then(io::read_to_string);
        match text {
            Ok(text) => parse(&path.display().to_string(), &text).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(state_file_error(path, source)),
        }
    }

    fn save(&self, value: bool) -> Result<()> {
        let Some(path) = &self.state_file else {
            return Ok(());
        };
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(state_file_error(
                path,
                io::Error::new(io::ErrorKind::InvalidInput, "not a file path"),
            ));
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let text: &[u8] = if value { b"1\n" } else { b"0\n" };
        enclave_statefile::ensure_private_dir(dir, 0o700)
            .and_then(|()| enclave_statefile::write_atomic(dir, name, text, 0o600))
            .map_err(|e| state_file_error(path, io::Error::other(e)))
    }
}

fn state_file_error(path: &Path, source: io::Error) -> Error {
    Error::StateFile {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of this test's own, removed when the returned guard is dropped.
    fn scratch(name: &str) -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix(&format!("enclave-nat-{name}-"))
            .tempdir()
            .unwrap()
    }

    /// Forwarding with its sysctl file and state file in `dir`, the sysctl holding `value`.
    fn at(dir: &Path, value: &str) -> Forwarding {
        fs::write(dir.join("ip_forward"), value).unwrap();
        restarted(dir)
    }

    /// Forwarding as a new process finds it in `dir`.
    fn restarted(dir: &Path) -> Forwarding {
        Forwarding {
            sysctl: dir.join("ip_forward"),
            state_file: Some(dir.join("state")),
            previous: None,
        }
    }

    /// What the sysctl file in `dir` holds.
    fn sysctl(dir: &Path) -> String {
        fs::read_to_string(dir.join("ip_forward")).unwrap()
    }

    #[test]
    fn enable_then_restore_puts_the_old_value_back() {
        let tmp = scratch("restore");
        let dir = tmp.path();
        let mut f = at(dir, "0\n");
        f.enable().unwrap();
        assert_eq!(sysctl(dir), "1\n");
        f.restore().unwrap();
        assert_eq!(sysctl(dir), "0\n");
        assert!(!dir.join("state").exists());
    }

    #[test]
    fn a_restart_after_a_crash_restores_the_value_from_before_the_crash() {
        let tmp = scratch("crash");
        let dir = tmp.path();
        let mut first = at(dir, "0\n");
        first.enable().unwrap();
        drop(first); // a crash: nothing restored
        let mut second = restarted(dir);
        second.enable().unwrap();
        second.restore().unwrap();
        assert_eq!(sysctl(dir), "0\n");
    }

    #[test]
    fn a_symbolic_link_at_the_state_file_is_not_followed() {
        let tmp = scratch("symlink");
        let dir = tmp.path();
        let target = dir.join("elsewhere");
        fs::write(&target, "1\n").unwrap();
        let state = dir.join("state");
        std::os::unix::fs::symlink(&target, &state).unwrap();
        let mut f = at(dir, "0\n");
        // Not read through: the link's "1" is not taken for a saved value; enabling fails,
        // names the file and changes nothing.
        let err = f.enable().unwrap_err().to_string();
        assert!(err.contains(&state.display().to_string()), "{err}");
        assert_eq!(sysctl(dir), "0\n");
        // Not written through: the link is replaced by the file.
        f.save(false).unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "1\n");
        assert!(!fs::symlink_metadata(&state).unwrap().is_symlink());
        assert_eq!(fs::read_to_string(&state).unwrap(), "0\n");
    }

    #[test]
    fn a_strange_value_is_refused() {
        let tmp = scratch("strange");
        let dir = tmp.path();
        let mut f = at(dir, "2\n");
        let err = f.enable().unwrap_err().to_string();
        assert!(err.ends_with("holds \"2\", not 0 or 1"), "{err}");
    }
}
