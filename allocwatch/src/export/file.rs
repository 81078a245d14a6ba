//! Atomic output files.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A file written under a temporary name and renamed into place on `commit`.
pub struct AtomicFile {
    tmp: PathBuf,
    dest: PathBuf,
    out: Option<BufWriter<File>>,
}

fn parent_of(dest: &Path) -> &Path {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Checks, before any tracing starts, that `dest` can be created: its
/// directory exists and is writable, and `dest` is not a directory.
pub fn check_writable(dest: &Path) -> io::Result<()> {
    if dest.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::IsADirectory,
            format!("{} is a directory", dest.display()),
        ));
    }
    let f = AtomicFile::create(dest)?;
    f.abort();
    Ok(())
}

impl AtomicFile {
    pub fn create(dest: &Path) -> io::Result<Self> {
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
                        tmp,
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
            f.sync_all()?;
        }
        chown_to_sudo_user(&self.tmp);
        std::fs::rename(&self.tmp, &self.dest)?;
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
        chown_to_sudo_user(&self.tmp);
        if let Err(e) = std::fs::rename(&self.tmp, &self.dest) {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(e);
        }
        Ok((f, std::mem::take(&mut self.dest)))
    }

    /// Removes the temporary file.
    pub fn abort(mut self) {
        self.out.take();
        let _ = std::fs::remove_file(&self.tmp);
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.out.is_some() {
            self.out.take();
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// When allocwatch runs through sudo, files it writes belong to the user who ran sudo.
fn chown_to_sudo_user(path: &Path) {
    let (Some(uid), Some(gid)) = (
        std::env::var("SUDO_UID")
            .ok()
            .and_then(|v| v.parse::<u32>().ok()),
        std::env::var("SUDO_GID")
            .ok()
            .and_then(|v| v.parse::<u32>().ok()),
    ) else {
        return;
    };
    // lchown: should someone who can write to the directory swap the
    // temporary file for a symlink meanwhile, only the link changes owner.
    if let Err(e) = std::os::unix::fs::lchown(path, Some(uid), Some(gid)) {
        log::warn!("could not give {} to uid {uid}: {e}", path.display());
    }
}
