//! One error type at the edge, carrying the exit-code policy.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | anything else |
//! | 2 | usage error (bad flags, bad `--duration`, unwritable output path) |
//! | 3 | target problem (no such process, not a Go program, unsupported Go, unreadable binary) |
//! | 4 | environment problem (privileges, kernel features, BPF toolchain) |

use std::fmt;

/// Which exit code an error maps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Other = 1,
    Usage = 2,
    Target = 3,
    Environment = 4,
}

/// An error for the user: one `error:` line and an optional `hint:` line.
#[derive(Debug)]
pub struct AppError {
    pub kind: Kind,
    pub message: String,
    pub hint: Option<String>,
}

impl AppError {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        AppError {
            kind,
            message: message.into(),
            hint: None,
        }
    }
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Kind::Usage, message)
    }
    pub fn target(message: impl Into<String>) -> Self {
        Self::new(Kind::Target, message)
    }
    pub fn env(message: impl Into<String>) -> Self {
        Self::new(Kind::Environment, message)
    }
    pub fn other(message: impl Into<String>) -> Self {
        Self::new(Kind::Other, message)
    }
    #[must_use]
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    #[must_use]
    pub fn exit_code(&self) -> i32 {
        self.kind as i32
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for AppError {}

impl From<anyhow::Error> for AppError {
    fn from(e: anyhow::Error) -> Self {
        match e.downcast::<AppError>() {
            Ok(a) => a,
            Err(e) => AppError::other(format!("{e:#}")),
        }
    }
}

pub type Result<T> = std::result::Result<T, AppError>;
