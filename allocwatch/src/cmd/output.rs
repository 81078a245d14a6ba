//! The one place where the commands open and write their outputs: files
//! checked before anything is attached and renamed into place whole, and
//! stdout (where a closed pipe is not an error).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{AppError, Result};
use crate::export::{AtomicFile, check_writable};

/// Why `path` cannot be created, in words: "No such file or directory" is
/// about the directory, so say which one.
fn write_error(path: &Path, e: &std::io::Error) -> String {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if e.kind() == std::io::ErrorKind::NotFound && !dir.exists() {
        format!("the directory {} does not exist", dir.display())
    } else {
        e.to_string()
    }
}

/// Opens the output of `flag` at `path` under a temporary name (checked
/// first: the error says what is wrong with the path).
pub fn create(path: &Path, flag: &str) -> Result<AtomicFile> {
    let fail = |e: &std::io::Error| {
        AppError::usage(format!(
            "cannot write {flag} {}: {}",
            path.display(),
            write_error(path, e)
        ))
        .hint("the directory must exist and be writable")
    };
    check_writable(path).map_err(|e| fail(&e))?;
    AtomicFile::create(path).map_err(|e| fail(&e))
}

/// Opens each given output; two at one path would overwrite each other.
pub fn create_all<const N: usize>(
    outputs: [(&str, Option<&Path>); N],
) -> Result<[Option<AtomicFile>; N]> {
    let given: Vec<(&str, &Path)> = outputs
        .iter()
        .filter_map(|&(flag, p)| p.map(|p| (flag, p)))
        .collect();
    for (i, (f1, p1)) in given.iter().enumerate() {
        if let Some((f2, _)) = given[i + 1..].iter().find(|(_, p2)| p1 == p2) {
            return Err(AppError::usage(format!(
                "{f1} and {f2} both write {}",
                p1.display()
            )));
        }
    }
    let mut files = [const { None }; N];
    for (slot, (flag, path)) in files.iter_mut().zip(outputs) {
        *slot = path.map(|p| create(p, flag)).transpose()?;
    }
    Ok(files)
}

/// Writes one whole-run output and renames it into place.
pub fn write<E: std::fmt::Display>(
    mut f: AtomicFile,
    write: impl FnOnce(&mut BufWriter<std::fs::File>) -> std::result::Result<(), E>,
) -> Result<PathBuf> {
    let dest = f.dest().to_path_buf();
    let err = |e: &dyn std::fmt::Display| {
        AppError::other(format!("cannot write {}: {e}", dest.display()))
    };
    write(f.writer()).map_err(|e| err(&e))?;
    f.commit().map_err(|e| err(&e))
}

/// Writes to stdout; a reader that went away (`| head`) is not an error.
pub fn print(write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match write(&mut out).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(AppError::other(format!("cannot write: {e}")))
        }
        _ => Ok(()),
    }
}
