//! The state file that outlives a crash: `src_valid_mark` from before we changed it.
//!
//! It exists exactly while a default route (and so its kill switch) is wanted: written before
//! the sysctl is changed, removed after it is restored. A manager that finds it at start knows
//! the value to restore, even after `kill -9`. It is written as a new file renamed into place,
//! so a crash in the middle of a write never leaves a torn value behind, and never through a
//! symbolic link.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::{Error, Result};

fn state_error(path: &Path) -> impl Fn(io::Error) -> Error + '_ {
    move |source| Error::State {
        path: path.display().to_string(),
        source,
    }
}

/// A sysctl value as we save it: a plain unsigned number.
fn is_value(text: &str) -> bool {
    !text.is_empty() && text.len() <= 10 && text.bytes().all(|b| b.is_ascii_digit())
}

/// Reads the saved value. `Ok(None)` when there is none; an error when the file is there but
/// cannot be read or does not hold a number (say what to do about it).
pub(crate) fn read(path: &Path) -> Result<Option<String>> {
    let text = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .and_then(io::read_to_string)
    {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(state_error(path)(e)),
    };
    let value = text.trim();
    if !is_value(value) {
        return Err(state_error(path)(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "it holds {value:?}, not a saved src_valid_mark; remove it (and set net.ipv4.conf.all.src_valid_mark by hand if needed)"
            ),
        )));
    }
    Ok(Some(value.to_string()))
}

/// Writes `value` into `path`: a new file next to it, synced, then renamed over it. The
/// directory is created when missing.
pub(crate) fn write(path: &Path, value: &str) -> Result<()> {
    let err = state_error(path);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(&err)?;
    }
    let tmp = path.with_extension("new");
    // A leftover of a write cut short by a crash.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(&err)?;
    file.write_all(format!("{value}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(&err)?;
    fs::rename(&tmp, path).map_err(&err)
}

/// Removes the saved value; a missing file is fine.
pub(crate) fn remove(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(state_error(path)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A directory of this test's own under the system's temporary directory, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("enclave-route-state-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_saved_value_survives_and_goes() {
        let scratch = Scratch::new("roundtrip");
        let path = scratch.0.join("routes").join("src_valid_mark.saved");
        assert_eq!(read(&path).unwrap(), None);
        write(&path, "0").unwrap();
        assert_eq!(read(&path).unwrap().as_deref(), Some("0"));
        // A temporary file left by a write cut short does not stop the next one.
        fs::write(path.with_extension("new"), "1").unwrap();
        write(&path, "1").unwrap();
        assert_eq!(read(&path).unwrap().as_deref(), Some("1"));
        assert!(!path.with_extension("new").exists());
        remove(&path).unwrap();
        remove(&path).unwrap();
        assert_eq!(read(&path).unwrap(), None);
    }

    #[test]
    fn a_damaged_file_is_refused_with_what_to_do() {
        let scratch = Scratch::new("damaged");
        fs::create_dir_all(&scratch.0).unwrap();
        let path = scratch.0.join("src_valid_mark.saved");
        for bad in ["", "yes", "-1", "1 2"] {
            fs::write(&path, bad).unwrap();
            let err = read(&path).unwrap_err();
            let cause = std::error::Error::source(&err).unwrap().to_string();
            assert!(
                err.to_string().contains("src_valid_mark.saved") && cause.contains("remove it"),
                "{bad:?}: {err}: {cause}"
            );
        }
    }

    #[test]
    fn symbolic_links_are_not_followed() {
        let scratch = Scratch::new("symlink");
        fs::create_dir_all(&scratch.0).unwrap();
        let target = scratch.0.join("elsewhere");
        fs::write(&target, "0").unwrap();
        let path = scratch.0.join("src_valid_mark.saved");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(read(&path).is_err());
        std::os::unix::fs::symlink(&target, path.with_extension("new")).unwrap();
        // The leftover link is removed, not written through.
        write(&path, "1").unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "0");
        assert_eq!(read(&path).unwrap().as_deref(), Some("1"));
    }
}
