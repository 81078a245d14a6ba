//! Atomic output files.
//!
//! A regular file (or a new one) is written under a temporary name and
//! renamed into place, so a reader never sees half of it. A character
//! device or a FIFO (`/dev/null`, `/dev/stdout`, a named pipe) is written
//! directly instead: renaming over it would replace the device node itself
//! (as root, `--csv /dev/null` would leave a regular file at `/dev/null`).
//! Anything else that is not a regular file is refused.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A file written under a temporary name and renamed into place on
/// `commit`, or a device or FIFO written directly.
pub struct AtomicFile {
    /// The temporary file; `None` when writing to a device or FIFO.
    tmp: Option<PathBuf>,
    dest: PathBuf,
    out: Option<BufWriter<File>>,
}

/// How an output path is written.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    /// Absent, a regular file or a symlink to anything but a device or FIFO
    /// (the link itself is replaced, never followed): temporary file and
    /// rename.
    Replace,
    /// A character device or a FIFO (also through a symlink, as
    /// `/dev/stdout`): opened for writing as it is, never created.
    Stream,
}

fn kind_of(dest: &Path) -> io::Result<Kind> {
    let meta = match std::fs::symlink_metadata(dest) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Kind::Replace),
        Err(e) => return Err(e),
    };
    let ft = if meta.file_type().is_symlink() {
        match std::fs::metadata(dest) {
            Ok(target) if is_stream(&target.file_type()) => return Ok(Kind::Stream),
            _ => return Ok(Kind::Replace),
        }
    } else {
        meta.file_type()
    };
    if ft.is_file() {
        Ok(Kind::Replace)
    } else if is_stream(&ft) {
        Ok(Kind::Stream)
    } else if ft.is_dir() {
        Err(io::Error::new(
            io::ErrorKind::IsADirectory,
            format!("{} is a directory", dest.display()),
        ))
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is not a regular file, a character device or a FIFO (a block device or a socket): not written",
                dest.display()
            ),
        ))
    }
}

fn is_stream(ft: &std::fs::FileType) -> bool {
    ft.is_char_device() || ft.is_fifo()
}

fn parent_of(dest: &Path) -> &Path {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Checks, before any tracing starts, that `dest` can be created: its
/// directory exists and is writable, and `dest` is not a directory; or that
/// it is a device or FIFO allocwatch may write to (checked without opening
/// it: opening a FIFO waits for its reader).
pub fn check_writable(dest: &Path) -> io::Result<()> {
    if kind_of(dest)? == Kind::Stream {
        let path = std::ffi::CString::new(dest.as_os_str().as_encoded_bytes())
            .map_err(io::Error::other)?;
        // SAFETY: a NUL-terminated path; access has no other preconditions.
        if unsafe { libc::access(path.as_ptr(), libc::W_OK) } != 0 {
            return Err(io::Error::last_os_error());
        }
        return Ok(());
    }
    let f = AtomicFile::create(dest)?;
    f.abort();
    Ok(())
}

impl AtomicFile {
    pub fn create(dest: &Path) -> io::Result<Self> {
        if kind_of(dest)? == Kind::Stream {
            // No O_CREAT and no O_TRUNC: only an existing device or FIFO.
            let f = OpenOptions::new().write(true).open(dest)?;
            return Ok(AtomicFile {
                tmp: None,
                dest: dest.to_path_buf(),
                out: Some(BufWriter::new(f)),
            });
        }
        let dir = parent_of(dest);
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut last = None;
        for attempt in 0..16u32 {
            let tmp = dir.join(format!(".{name}.{}.{attempt}.tmp", std::process::id()));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&tmp)
            {
                Ok(f) => {
                    return Ok(AtomicFile {
                        tmp: Some(tmp),
                        dest: dest.to_path_buf(),
                        out: Some(BufWriter::new(f)),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no temporary name available")))
    }

    /// The final path.
    #[must_use]
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// The writer.
    ///
    /// # Panics
    /// Never: the writer exists until `commit` or `abort` consume `self`.
    pub fn writer(&mut self) -> &mut BufWriter<File> {
        self.out.as_mut().expect("writer present until commit")
    }

    /// Flushes, syncs and renames the file into place; when run through sudo
    /// the file is given to the invoking user.
    pub fn commit(mut self) -> io::Result<PathBuf> {
        if let Some(mut w) = self.out.take() {
            w.flush()?;
            let f = w.into_inner().map_err(io::IntoInnerError::into_error)?;
            if self.tmp.is_some() {
                f.sync_all()?;
            }
        }
        if let Some(tmp) = self.tmp.take() {
            chown_to_sudo_user(&tmp);
            std::fs::rename(&tmp, &self.dest)?;
        }
        Ok(std::mem::take(&mut self.dest))
    }

    /// Renames the file, as written so far, into place now and hands over
    /// the open file: for outputs written progressively (`record
    /// --interval`), whose every flushed write is then at the final path at
    /// once and survives allocwatch being killed. When run through sudo the
    /// file is given to the invoking user.
    pub fn publish(mut self) -> io::Result<(File, PathBuf)> {
        let f = match self.out.take() {
            Some(w) => w.into_inner().map_err(io::IntoInnerError::into_error)?,
            None => return Err(io::Error::other("output already closed")),
        };
        if let Some(tmp) = self.tmp.take() {
            chown_to_sudo_user(&tmp);
            if let Err(e) = std::fs::rename(&tmp, &self.dest) {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        }
        Ok((f, std::mem::take(&mut self.dest)))
    }

    /// Removes the temporary file (a device or FIFO keeps what it got).
    pub fn abort(mut self) {
        self.out.take();
        if let Some(tmp) = self.tmp.take() {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.out.take().is_some()
            && let Some(tmp) = self.tmp.take()
        {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// When allocwatch runs through sudo, files it writes belong to the user who
/// ran sudo ([`crate::user::invoker`]).
fn chown_to_sudo_user(path: &Path) {
    let user = crate::user::invoker();
    if !user.via_sudo {
        return;
    }
    // lchown: should someone who can write to the directory swap the
    // temporary file for a symlink meanwhile, only the link changes owner.
    if let Err(e) = std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid)) {
        log::warn!("could not give {} to uid {}: {e}", path.display(), user.uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;
    use std::os::unix::fs::FileTypeExt;

    fn mknod(path: &Path, mode: libc::mode_t, major: u32, minor: u32) -> bool {
        let c = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        unsafe { libc::mknod(c.as_ptr(), mode | 0o600, libc::makedev(major, minor)) == 0 }
    }

    fn write(dest: &Path, text: &str) -> io::Result<PathBuf> {
        let mut f = AtomicFile::create(dest)?;
        f.writer().write_all(text.as_bytes())?;
        f.commit()
    }

    #[test]
    fn a_character_device_is_written_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let null = dir.path().join("null");
        assert!(
            mknod(&null, libc::S_IFCHR, 1, 3),
            "mknod needs CAP_MKNOD: run the tests as root"
        );
        check_writable(&null).unwrap();
        write(&null, "a,b\n").unwrap();
        assert!(
            std::fs::symlink_metadata(&null)
                .unwrap()
                .file_type()
                .is_char_device()
        );
        // Through a symlink, as /dev/stdout: the link stays a link.
        let link = dir.path().join("stdout");
        std::os::unix::fs::symlink(&null, &link).unwrap();
        write(&link, "a,b\n").unwrap();
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            2,
            "no temporary file left"
        );
    }

    #[test]
    fn a_fifo_gets_the_whole_output() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("out.csv");
        let c = CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // Checking does not open it (that would wait for a reader).
        check_writable(&fifo).unwrap();
        let path = fifo.clone();
        let reader = std::thread::spawn(move || std::fs::read_to_string(path).unwrap());
        write(&fifo, "x,y\n1,2\n").unwrap();
        assert_eq!(reader.join().unwrap(), "x,y\n1,2\n");
        assert!(
            std::fs::symlink_metadata(&fifo)
                .unwrap()
                .file_type()
                .is_fifo()
        );
    }

    #[test]
    fn a_block_device_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        // A loop device minor no system has: nothing could be written anyway.
        let blk = dir.path().join("disk");
        assert!(
            mknod(&blk, libc::S_IFBLK, 7, 1_000_000),
            "mknod needs CAP_MKNOD: run the tests as root"
        );
        let e = check_writable(&blk).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        assert!(AtomicFile::create(&blk).is_err());
        assert!(
            std::fs::symlink_metadata(&blk)
                .unwrap()
                .file_type()
                .is_block_device()
        );
    }

    #[test]
    fn a_symlink_to_a_regular_file_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        let link = dir.path().join("out.csv");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        write(&link, "new").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert!(
            std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_file()
        );
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "new");
    }
}
