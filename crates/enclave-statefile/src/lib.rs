//! Safe state and secret files for the agent.
//!
//! The agent keeps a few files of its own (learned state, a private key, a pre-shared key) in
//! directories such as `/var/lib/enclave` or `/run/enclave`, usually as root. A careless
//! `create_dir_all` + `chmod` + `fs::write` there lets whoever can write to that directory,
//! or plant a symbolic link in it, redirect our writes onto another file or feed us a key.
//! This crate is the one place that does that I/O carefully:
//!
//! - [`ensure_private_dir`] creates a directory with the mode asked for when it is missing. An
//!   existing one is **never** chmod-ed: it must be owned by root or by our effective uid and
//!   not writable by group or others, or the call fails with an error naming the path, its
//!   owner and mode, and what to do.
//! - [`write_atomic`] writes a file the crash-safe way: a new temporary file in the same
//!   (checked) directory, created with `O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC`, written and
//!   `fsync`-ed, then renamed over the target (a rename replaces a symbolic link at the target
//!   instead of following it), and the directory `fsync`-ed. Readers see the old file or the
//!   new one, never half of one, and no link planted at either name is ever followed.
//! - [`read_secret`] opens a secret with `O_NOFOLLOW`, refuses one that group or others may
//!   access (the fix is `chmod 600`), and returns it in a buffer that is zeroed when dropped.
//!
//! What it is not: not a general file-system layer, not portable beyond Unix (Linux is what we
//! test), and not a check of the whole path. The parents of the directories it is given are
//! trusted as the administrator set them up (`/var/lib`, `/run`); only the last component is
//! judged, and a symbolic link there is refused rather than followed.
//!
//! Everything goes through `rustix`'s `*at` calls on a directory descriptor that was opened
//! once and checked, so the directory we check is the directory we write into.

#![warn(missing_docs)]

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat, CWD};
use rustix::io::Errno;
use zeroize::Zeroizing;

#[cfg(test)]
mod tests;

/// The largest secret [`read_secret`] reads. Keys are tens of bytes; anything near this is
/// not a key file.
pub const MAX_SECRET_LEN: usize = 64 * 1024;

/// How many temporary names [`write_atomic`] tries before giving up.
const TEMP_ATTEMPTS: u32 = 16;

/// What can go wrong; each message names the path and says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The directory mode asked of [`ensure_private_dir`] would itself be unsafe.
    #[error(
        "mode {mode:04o} is not a mode for a private directory: it must give the owner rwx and \
         nobody else write (0700 or 0755)"
    )]
    DirModeInvalid {
        /// The mode.
        mode: u32,
    },
    /// The file mode asked of [`write_atomic`] has bits beyond the permission bits.
    #[error("mode {mode:04o} is not a file mode: only permission bits (at most 0777) are allowed")]
    FileModeInvalid {
        /// The mode.
        mode: u32,
    },
    /// The file name given to [`write_atomic`] is not one path component.
    #[error(
        "{name:?} is not a file name: give one path component (no `/`, not `.` or `..`, not \
         empty)"
    )]
    NameInvalid {
        /// The name.
        name: PathBuf,
    },
    /// Creating a missing directory (or its parents) failed.
    #[error("cannot create directory {path}")]
    CreateDir {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The directory exists but cannot be opened or examined.
    #[error("cannot open directory {path}")]
    OpenDir {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The last component of a directory path is a symbolic link.
    #[error(
        "{path} is a symbolic link; state directories are used only through their real path: \
         configure the directory it points to instead"
    )]
    DirIsSymlink {
        /// The path.
        path: PathBuf,
    },
    /// The path exists but is not a directory.
    #[error("{path} exists but is a {kind}, not a directory: move it away or choose another path")]
    NotADirectory {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// The directory belongs to someone who could replace our files in it.
    #[error(
        "directory {path} is owned by uid {owner} (mode {mode:04o}), not by root or by uid \
         {euid} that runs this program, so its owner could replace the files in it; it was left \
         as it is: `chown {euid} {path}` if it is meant for us, or choose another directory"
    )]
    DirNotOurs {
        /// The path.
        path: PathBuf,
        /// The owner's uid.
        owner: u32,
        /// The mode.
        mode: u32,
        /// The uid that runs this program.
        euid: u32,
    },
    /// The directory lets group or others replace our files in it.
    #[error(
        "directory {path} (owner uid {owner}, mode {mode:04o}) is writable by {who}, who could \
         replace the files in it; its mode was left as it is: `chmod go-w {path}` if it is meant \
         for us, or choose another directory"
    )]
    DirWritableByOthers {
        /// The path.
        path: PathBuf,
        /// The owner's uid.
        owner: u32,
        /// The mode.
        mode: u32,
        /// Who may write: group, others, or both.
        who: &'static str,
    },
    /// Every temporary name was taken (left over from crashed writers, or planted).
    #[error(
        "cannot create a temporary file for {path}: {attempts} names `.{name}.<pid>.<n>.tmp` \
         are taken; remove the stale `.{name}.*.tmp` files in that directory"
    )]
    TempNamesTaken {
        /// The path.
        path: PathBuf,
        /// The name.
        name: String,
        /// How many names were tried.
        attempts: u32,
    },
    /// Creating, writing, syncing or renaming the new file failed; the target is unchanged.
    #[error("cannot write {path} (the previous content, if any, is unchanged)")]
    Write {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The secret file is a symbolic link.
    #[error(
        "secret file {path} is a symbolic link; secrets are read only through their real path: \
         configure the file it points to instead"
    )]
    SecretIsSymlink {
        /// The path.
        path: PathBuf,
    },
    /// The secret file cannot be opened or read.
    #[error("cannot read secret file {path}")]
    ReadSecret {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The secret is not a regular file.
    #[error("secret file {path} is a {kind}, not a regular file")]
    SecretNotAFile {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// Group or others may access the secret.
    #[error(
        "secret file {path} has mode {mode:04o}: group or others may access it; run `chmod 600 \
         {path}` (and consider the secret exposed if others could read it)"
    )]
    SecretModeOpen {
        /// The path.
        path: PathBuf,
        /// The mode.
        mode: u32,
    },
    /// The secret file is far larger than any key.
    #[error("secret file {path} holds {len} bytes, more than the {max} a secret may have")]
    SecretTooLarge {
        /// The path.
        path: PathBuf,
        /// Its size.
        len: u64,
        /// The most a secret may have.
        max: usize,
    },
}

/// This crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Makes sure `path` is a directory only we (root or our effective uid) can change.
///
/// A missing directory is created with exactly `mode` (0700 or 0755; the umask does not narrow
/// it), missing parents with 0755. An existing one is never chmod-ed or chown-ed: it must be
/// owned by root or our effective uid and not writable by group or others, else
/// [`Error::DirNotOurs`] or [`Error::DirWritableByOthers`] say what to do. A symbolic link as
/// the last component is refused ([`Error::DirIsSymlink`]).
pub fn ensure_private_dir(path: &Path, mode: u32) -> Result<()> {
    if mode & 0o700 != 0o700 || mode & !0o755 != 0 {
        return Err(Error::DirModeInvalid { mode });
    }
    match rustix::fs::mkdirat(CWD, path, Mode::from_raw_mode(mode)) {
        Ok(()) => created_dir(path, mode),
        Err(Errno::EXIST) => check_dir(path, &open_dir(path)?).map(drop),
        Err(Errno::NOENT) => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(parent)
                    .map_err(|source| create_dir_error(parent, source))?;
            }
            match rustix::fs::mkdirat(CWD, path, Mode::from_raw_mode(mode)) {
                Ok(()) => created_dir(path, mode),
                Err(Errno::EXIST) => check_dir(path, &open_dir(path)?).map(drop),
                Err(source) => Err(create_dir_error(path, source.into())),
            }
        }
        Err(source) => Err(create_dir_error(path, source.into())),
    }
}

/// Finishes a directory that our `mkdir` just made: its mode becomes exactly `mode` (the
/// umask may have narrowed it), then it is judged like any other.
fn created_dir(path: &Path, mode: u32) -> Result<()> {
    let dir = open_dir(path)?;
    let stat = fstat(&dir).map_err(|source| open_dir_error(path, source))?;
    // Only if it is still the one we made: someone may have replaced it in between.
    if stat.st_uid == euid() {
        rustix::fs::fchmod(&dir, Mode::from_raw_mode(mode))
            .map_err(|source| create_dir_error(path, source.into()))?;
    }
    check_dir(path, &dir).map(drop)
}

/// Replaces `dir/name` with `bytes`, atomically, as a file of exactly `mode` (e.g. 0o600).
///
/// `dir` must pass the checks of [`ensure_private_dir`] (it is not created). The new content
/// goes to a fresh temporary file in `dir` (`O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC`, so nothing
/// existing at that name is opened or followed), is `fsync`-ed, renamed over `name` (a symbolic
/// link at `name` is replaced, not followed), and `dir` is `fsync`-ed. On failure the temporary
/// file is removed and `dir/name` keeps its previous content.
pub fn write_atomic(dir: &Path, name: &OsStr, bytes: &[u8], mode: u32) -> Result<()> {
    if mode & !0o777 != 0 {
        return Err(Error::FileModeInvalid { mode });
    }
    let raw = name.as_bytes();
    if raw.is_empty() || raw == b"." || raw == b".." || raw.contains(&b'/') || raw.contains(&0) {
        return Err(Error::NameInvalid { name: name.into() });
    }
    let dir_fd = open_dir(dir)?;
    check_dir(dir, &dir_fd)?;
    let target = dir.join(name);
    let write_error = |source: io::Error| Error::Write {
        path: target.clone(),
        source,
    };

    let (temp, file) = create_temp(&dir_fd, name, mode).map_err(|err| match err {
        TempError::Taken => Error::TempNamesTaken {
            path: target.clone(),
            name: name.to_string_lossy().into_owned(),
            attempts: TEMP_ATTEMPTS,
        },
        TempError::Io(source) => write_error(source),
    })?;
    let written = (|| -> io::Result<()> {
        let mut file = File::from(file);
        // The umask may have narrowed the mode at creation; the file is ours and new.
        rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        rustix::fs::renameat(&dir_fd, &temp, &dir_fd, name)?;
        Ok(())
    })();
    if let Err(source) = written {
        // Best effort: the temporary name is ours, and unlinkat never follows a link.
        let _ = rustix::fs::unlinkat(&dir_fd, &temp, AtFlags::empty());
        return Err(write_error(source));
    }
    rustix::fs::fsync(&dir_fd).map_err(|source| write_error(source.into()))
}

/// Reads a secret (a private or pre-shared key) into a buffer that is zeroed when dropped.
///
/// The file is opened with `O_NOFOLLOW` (a symbolic link is refused with
/// [`Error::SecretIsSymlink`]), must be a regular file, must give group and others no access
/// at all ([`Error::SecretModeOpen`] says `chmod 600`), and may hold at most
/// [`MAX_SECRET_LEN`] bytes. The bytes are returned as they are, newline included.
pub fn read_secret(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    let read_error = |source: io::Error| Error::ReadSecret {
        path: path.to_owned(),
        source,
    };
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
        Mode::empty(),
    )
    .map_err(|errno| match errno {
        Errno::LOOP => Error::SecretIsSymlink {
            path: path.to_owned(),
        },
        other => read_error(other.into()),
    })?;
    let stat = fstat(&fd).map_err(read_error)?;
    let kind = FileType::from_raw_mode(stat.st_mode);
    if kind != FileType::RegularFile {
        return Err(Error::SecretNotAFile {
            path: path.to_owned(),
            kind: kind_name(kind),
        });
    }
    let mode = stat.st_mode & 0o7777;
    if mode & 0o077 != 0 {
        return Err(Error::SecretModeOpen {
            path: path.to_owned(),
            mode,
        });
    }
    let len = u64::try_from(stat.st_size).unwrap_or(0);
    if len > MAX_SECRET_LEN as u64 {
        return Err(Error::SecretTooLarge {
            path: path.to_owned(),
            len,
            max: MAX_SECRET_LEN,
        });
    }
    read_all_zeroizing(File::from(fd), len as usize + 1).map_err(|err| match err {
        ReadError::TooLarge(len) => Error::SecretTooLarge {
            path: path.to_owned(),
            len,
            max: MAX_SECRET_LEN,
        },
        ReadError::Io(source) => read_error(source),
    })
}

enum ReadError {
    TooLarge(u64),
    Io(io::Error),
}

/// Reads to the end without ever leaving a copy behind: when the buffer must grow, the bytes
/// move to a bigger zeroizing buffer and the old one is zeroed as it drops.
fn read_all_zeroizing(mut file: File, capacity: usize) -> Result<Zeroizing<Vec<u8>>, ReadError> {
    let mut buf = Zeroizing::new(vec![0u8; capacity.max(64)]);
    let mut len = 0;
    loop {
        if len == buf.len() {
            if len > MAX_SECRET_LEN {
                return Err(ReadError::TooLarge(len as u64));
            }
            let mut bigger = Zeroizing::new(vec![0u8; (len * 2).min(MAX_SECRET_LEN + 1)]);
            bigger[..len].copy_from_slice(&buf[..len]);
            buf = bigger;
        }
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(ReadError::Io(err)),
        }
    }
    if len > MAX_SECRET_LEN {
        return Err(ReadError::TooLarge(len as u64));
    }
    // Shrinking in place keeps the allocation; the tail is zeroed before it is cut off.
    zeroize::Zeroize::zeroize(&mut buf[len..]);
    buf.truncate(len);
    Ok(buf)
}

enum TempError {
    Taken,
    Io(io::Error),
}

/// The temporary name for attempt `n` at writing `name`: hidden, and unique per process.
fn temp_name(name: &OsStr, n: u32) -> PathBuf {
    let mut temp = std::ffi::OsString::from(".");
    temp.push(name);
    temp.push(format!(".{}.{n}.tmp", std::process::id()));
    temp.into()
}

/// Creates a new temporary file in `dir` that nobody else has (or links to).
fn create_temp(
    dir: &OwnedFd,
    name: &OsStr,
    mode: u32,
) -> std::result::Result<(PathBuf, OwnedFd), TempError> {
    for n in 0..TEMP_ATTEMPTS {
        let temp = temp_name(name, n);
        match rustix::fs::openat(
            dir,
            &temp,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        ) {
            Ok(fd) => return Ok((temp, fd)),
            // Another writer's, a crashed writer's, or a planted link: never reuse it.
            Err(Errno::EXIST) => continue,
            Err(errno) => return Err(TempError::Io(errno.into())),
        }
    }
    Err(TempError::Taken)
}

fn open_dir(path: &Path) -> Result<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| {
        // Tell a link or a file apart from other failures, without following anything.
        match rustix::fs::statat(CWD, path, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => match FileType::from_raw_mode(stat.st_mode) {
                FileType::Symlink => Error::DirIsSymlink {
                    path: path.to_owned(),
                },
                FileType::Directory => open_dir_error(path, errno.into()),
                other => Error::NotADirectory {
                    path: path.to_owned(),
                    kind: kind_name(other),
                },
            },
            Err(_) => open_dir_error(path, errno.into()),
        }
    })
}

/// Judges an open directory: owned by root or us, and not writable by group or others.
fn check_dir(path: &Path, dir: &OwnedFd) -> Result<Stat> {
    let stat = fstat(dir).map_err(|source| open_dir_error(path, source))?;
    judge_dir(path, stat.st_uid, stat.st_mode & 0o7777, euid())?;
    Ok(stat)
}

/// The rule itself, apart from the system calls, so it can be tested for any owner.
fn judge_dir(path: &Path, owner: u32, mode: u32, euid: u32) -> Result<()> {
    if owner != 0 && owner != euid {
        return Err(Error::DirNotOurs {
            path: path.to_owned(),
            owner,
            mode,
            euid,
        });
    }
    let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (false, false) => return Ok(()),
        (true, false) => "its group",
        (false, true) => "everyone",
        (true, true) => "its group and everyone",
    };
    Err(Error::DirWritableByOthers {
        path: path.to_owned(),
        owner,
        mode,
        who,
    })
}

fn fstat(fd: impl AsFd) -> io::Result<Stat> {
    Ok(rustix::fs::fstat(fd)?)
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn kind_name(kind: FileType) -> &'static str {
    match kind {
        FileType::RegularFile => "regular file",
        FileType::Directory => "directory",
        FileType::Symlink => "symbolic link",
        FileType::Fifo => "named pipe",
        FileType::Socket => "socket",
        FileType::CharacterDevice => "character device",
        FileType::BlockDevice => "block device",
        _ => "file of unknown type",
    }
}

fn create_dir_error(path: &Path, source: io::Error) -> Error {
    Error::CreateDir {
        path: path.to_owned(),
        source,
    }
}

fn open_dir_error(path: &Path, source: io::Error) -> Error {
    Error::OpenDir {
        path: path.to_owned(),
        source,
    }
}
