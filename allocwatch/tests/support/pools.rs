//! What the pool fixtures (`pools`, `poolsgc`, `pgo`, …) report about their
//! `sync.Pool`s on their `result` line.

use serde::Deserialize;

/// One pool's operations as the fixture counted them, in all (`pools`) or
/// from one calling function (`callsites`: `func`, `line`).
#[derive(Debug, Deserialize)]
pub struct PoolCount {
    pub pool: String,
    pub new_func: String,
    pub gets: u64,
    pub misses: u64,
    pub nil_returns: u64,
    pub puts: u64,
    #[serde(default)]
    pub func: String,
    #[serde(default)]
    pub line: u32,
    /// Whether `New` was called from a `Get` inlined into the caller (`pgo`).
    #[serde(default)]
    pub get_inlined: Option<bool>,
}
