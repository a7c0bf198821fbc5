//! The state file that outlives a crash: `src_valid_mark` from before we changed it.
//!
//! It exists exactly while a default route (and so its kill switch) is wanted: written before
//! the sysctl is changed, removed after it is restored. A manager that finds it at start knows
//! the value to restore, even after `kill -9`. Writing goes through `enclave-statefile`: the
//! directory must be ours (created 0700 when missing, never chmod-ed when it exists), and the
//! value goes to a new file renamed into place, so a crash in the middle of a write never
//! leaves a torn value behind and no symbolic link at the file's path is ever followed. Reading
//! does not follow one either.

use std::fs::{self, OpenOptions};
use std::io;
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
/// cannot be read (a symbolic link is not followed) or does not hold a number (say what to do
/// about it).
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

/// Writes `value` into `path` (mode 0600) with `enclave_statefile::write_atomic`; the
/// directory is created (0700) when missing, and refused when someone else could change it.
pub(crate) fn write(path: &Path, value: &str) -> Result<()> {
    let err = state_error(path);
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a file path: give the state directory, the manager names the file",
        )));
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    enclave_statefile::ensure_private_dir(dir, 0o700)
        .and_then(|()| {
            enclave_statefile::write_atomic(dir, name, format!("{value}\n").as_bytes(), 0o600)
        })
        .map_err(|e| err(io::Error::other(e)))
}

/// Removes the saved value; a missing file is fine. A symbolic link there is removed, not
/// followed.
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
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    /// A path of this test's own inside a temporary directory (removed on drop); the path
    /// itself does not exist yet.
    struct Scratch(
        PathBuf,
        #[allow(dead_code, reason = "kept for its Drop")] tempfile::TempDir,
    );

    impl Scratch {
        fn new(name: &str) -> Self {
            let tmp = tempfile::Builder::new()
                .prefix(&format!("enclave-route-state-{name}-"))
                .tempdir()
                .unwrap();
            Scratch(tmp.path().join("scratch"), tmp)
        }
    }

    #[test]
    fn a_saved_value_survives_and_goes() {
        let scratch = Scratch::new("roundtrip");
        let path = scratch.0.join("routes").join("src_valid_mark.saved");
        assert_eq!(read(&path).unwrap(), None);
        write(&path, "0").unwrap();
        assert_eq!(read(&path).unwrap().as_deref(), Some("0"));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        write(&path, "1").unwrap();
        assert_eq!(read(&path).unwrap().as_deref(), Some("1"));
        // Nothing but the file itself is left in the directory.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("src_valid_mark.saved")]);
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
    fn a_symbolic_link_at_the_state_file_is_not_followed() {
        let scratch = Scratch::new("symlink");
        fs::create_dir_all(&scratch.0).unwrap();
        let target = scratch.0.join("elsewhere");
        fs::write(&target, "0").unwrap();
        let path = scratch.0.join("src_valid_mark.saved");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        // Not read through...
        let err = read(&path).unwrap_err();
        assert!(err.to_string().contains("src_valid_mark.saved"), "{err}");
        // ...nor written through: the link is replaced by the file.
        write(&path, "1").unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "0");
        assert!(!fs::symlink_metadata(&path).unwrap().is_symlink());
        assert_eq!(read(&path).unwrap().as_deref(), Some("1"));
    }

    #[test]
    fn a_state_directory_others_may_write_is_refused_and_left_as_it_is() {
        let scratch = Scratch::new("opendir");
        let dir = scratch.0.join("routes");
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let path = dir.join("src_valid_mark.saved");
        let err = write(&path, "0").unwrap_err();
        let cause = std::error::Error::source(&err).unwrap().to_string();
        assert!(
            err.to_string().contains("src_valid_mark.saved") && cause.contains("chmod go-w"),
            "{err}: {cause}"
        );
        assert!(!path.exists());
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o777
        );
    }
}
