//! The user allocwatch acts for, and creating that user's files safely.
//!
//! allocwatch runs as root (or with strong capabilities). Under `sudo`, the
//! files it keeps for the person who ran it (the dashboard's log) and the
//! Go toolchain it runs on their source tree (`--source`) are theirs: the
//! files are created with that user's filesystem identity (`setfsuid`, so
//! the kernel checks their permissions and they own what is created), and
//! the toolchain runs as that user. Every file is opened with `O_NOFOLLOW`:
//! a symlink planted at the path is refused, never followed.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Who allocwatch acts for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invoker {
    pub uid: u32,
    pub gid: u32,
    /// The user's name, from the password database.
    pub name: Option<String>,
    /// The user's home directory, from the password database.
    pub home: Option<PathBuf>,
    /// allocwatch runs as root through `sudo` for this (other) user.
    pub via_sudo: bool,
}

/// The invoking user: under `sudo` (`SUDO_UID`, `SUDO_GID`, while
/// allocwatch's effective user is root) the user who ran it, else
/// allocwatch's own user.
#[must_use]
pub fn invoker() -> Invoker {
    // SAFETY: geteuid and getegid have no preconditions.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let var = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u32>().ok());
    let (uid, gid, via_sudo) = match (var("SUDO_UID"), var("SUDO_GID")) {
        (Some(u), Some(g)) if euid == 0 && u != 0 => (u, g, true),
        _ => (euid, egid, false),
    };
    let (name, home) = passwd_entry(uid);
    Invoker {
        uid,
        gid,
        name,
        home,
        via_sudo,
    }
}

/// Name and home directory of `uid` in the password database.
fn passwd_entry(uid: u32) -> (Option<String>, Option<PathBuf>) {
    let mut buf = vec![0 as libc::c_char; 16 << 10];
    // SAFETY: an all-zero passwd is a valid out-parameter.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` outlives the reads below.
    let rc =
        unsafe { libc::getpwuid_r(uid, &raw mut pw, buf.as_mut_ptr(), buf.len(), &raw mut out) };
    if rc != 0 || out.is_null() {
        return (None, None);
    }
    let text = |p: *const libc::c_char| {
        // SAFETY: getpwuid_r filled `pw` with NUL-terminated strings in `buf`.
        (!p.is_null()).then(|| {
            unsafe { std::ffi::CStr::from_ptr(p) }
                .to_string_lossy()
                .into_owned()
        })
    };
    (text(pw.pw_name), text(pw.pw_dir).map(PathBuf::from))
}

impl Invoker {
    /// Where allocwatch keeps this user's logs: `$XDG_STATE_HOME/allocwatch`
    /// (an absolute `XDG_STATE_HOME`), else `~/.local/state/allocwatch` in
    /// the user's home; `None` without either.
    #[must_use]
    pub fn state_dir(&self) -> Option<PathBuf> {
        if let Some(x) = std::env::var_os("XDG_STATE_HOME").map(PathBuf::from)
            && x.is_absolute()
        {
            return Some(x.join("allocwatch"));
        }
        let home = self.home.as_ref().filter(|h| h.is_absolute())?;
        Some(home.join(".local/state/allocwatch"))
    }

    /// Runs `f` with this user's filesystem identity on this thread when
    /// allocwatch acts for another user (`setfsuid`/`setfsgid`): what `f`
    /// creates is theirs, and the kernel checks their permissions, not
    /// root's. Restored before returning.
    pub fn as_fs_user<T>(&self, f: impl FnOnce() -> T) -> T {
        if !self.via_sudo {
            return f();
        }
        // SAFETY: setfsgid/setfsuid change only this thread's filesystem
        // identity; they return the previous value.
        let (old_gid, old_uid) = unsafe { (libc::setfsgid(self.gid), libc::setfsuid(self.uid)) };
        let r = f();
        // SAFETY: as above, restoring the previous identity.
        unsafe {
            libc::setfsuid(old_uid as libc::uid_t);
            libc::setfsgid(old_gid as libc::gid_t);
        }
        r
    }
}

/// Creates `dir` and its missing parents with mode 0700 (as the caller's
/// filesystem identity).
///
/// # Errors
/// Why a directory could not be created.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Opens `path` for appending, creating it with mode 0600; never through
/// a symlink (`O_NOFOLLOW`), and only a regular file, a character device
/// (`/dev/null`) or a FIFO with a reader.
///
/// # Errors
/// A symlink or a non-regular file at `path`, or why it cannot be opened.
pub fn open_private_append(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is a symlink: not followed", path.display()),
                )
            } else {
                e
            }
        })?;
    let ft = f.metadata()?.file_type();
    if !(ft.is_file() || ft.is_char_device() || ft.is_fifo()) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is not a regular file, a character device or a FIFO",
                path.display()
            ),
        ));
    }
    // O_NONBLOCK only kept the open from waiting for a FIFO's reader.
    // SAFETY: fcntl on a file descriptor this function owns.
    unsafe {
        let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
    Ok(f)
}

/// A directory of allocwatch's own for `uid` under `parent` (a shared
/// place such as `/tmp`): `parent/NAME-UID`, created with mode 0700, or
/// reused only when it is a real directory (not a symlink) owned by `uid`
/// that nobody else can write to.
///
/// # Errors
/// Someone else's file or directory at that name, or why it cannot be made.
pub fn private_dir_in(parent: &Path, name: &str, uid: u32) -> io::Result<PathBuf> {
    let dir = parent.join(format!("{name}-{uid}"));
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(&dir)?;
    if !meta.file_type().is_dir() || meta.uid() != uid || meta.mode() & 0o022 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is not a private directory of uid {uid}: not used",
                dir.display()
            ),
        ));
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlink_is_never_opened() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        let link = dir.path().join("log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = open_private_append(&link).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        // A dangling one is not created through either.
        std::fs::remove_file(&target).unwrap();
        assert!(open_private_append(&link).is_err());
        assert!(!target.exists());
    }

    #[test]
    fn a_new_log_is_private_and_appended_to() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/allocwatch.log");
        create_private_dir(path.parent().unwrap()).unwrap();
        open_private_append(&path)
            .unwrap()
            .write_all(b"one\n")
            .unwrap();
        open_private_append(&path)
            .unwrap()
            .write_all(b"two\n")
            .unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\n");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }

    #[test]
    fn dev_null_is_a_log_and_a_fifo_needs_a_reader() {
        open_private_append(Path::new("/dev/null")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("log");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // No reader: refused at once rather than waiting.
        assert!(open_private_append(&fifo).is_err());
    }

    #[test]
    fn a_shared_private_dir_must_be_ours() {
        let parent = tempfile::tempdir().unwrap();
        // SAFETY: getuid has no preconditions.
        let me = unsafe { libc::getuid() };
        let d = private_dir_in(parent.path(), "cache", me).unwrap();
        assert_eq!(private_dir_in(parent.path(), "cache", me).unwrap(), d);
        // A planted symlink at the name is refused.
        let other = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(other.path(), parent.path().join(format!("x-{me}"))).unwrap();
        assert!(private_dir_in(parent.path(), "x", me).is_err());
        // So is a directory that others can write to.
        let open = parent.path().join(format!("y-{me}"));
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        assert!(private_dir_in(parent.path(), "y", me).is_err());
    }

    #[test]
    fn files_made_for_a_sudo_user_are_theirs() {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "run the tests as root");
        let dir = tempfile::tempdir().unwrap();
        std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
        let nobody = Invoker {
            uid: 65534,
            gid: 65534,
            name: None,
            home: None,
            via_sudo: true,
        };
        let log = dir.path().join("state/allocwatch.log");
        nobody
            .as_fs_user(|| {
                create_private_dir(log.parent().unwrap())?;
                open_private_append(&log)
            })
            .unwrap();
        let meta = std::fs::metadata(&log).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (65534, 65534));
        // Root's own directories are out of the user's reach.
        let root_only = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            root_only.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        let denied = nobody.as_fs_user(|| open_private_append(&root_only.path().join("x.log")));
        assert!(denied.is_err());
        // And this thread is root again afterwards.
        open_private_append(&root_only.path().join("y.log")).unwrap();
    }
}
