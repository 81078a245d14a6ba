//! Writing recordings to files: CSV tables of sites and pools.
//!
//! Files are written to a temporary file created with `O_EXCL` in the
//! destination directory and renamed into place, so a reader never sees a
//! half-written file and a pre-planted symlink is never followed.

pub mod csv;
mod file;

pub use file::{AtomicFile, check_writable};
