//! allocwatch: live heap-allocation and `sync.Pool` tracing for running Go
//! programs, with eBPF uprobes.
//!
//! Data flows one way: Go binary ([`gobin`]) → probe plan ([`plan`]) →
//! probes and ring buffer ([`probe`]) → aggregation ([`stats`], symbolized
//! by [`symbolize`]) → the dashboard ([`tui`]) and files ([`export`]).
//! [`session`] runs that chain for one process; [`runloop`] drives one or
//! several sessions; [`cmd`] holds the commands built on them.

pub mod budget;
pub mod cli;
pub mod cmd;
pub mod envcheck;
pub mod error;
pub mod escape;
pub mod export;
pub mod format;
pub mod gobin;
pub mod plan;
pub mod probe;
pub mod progress;
pub mod runloop;
pub mod session;
pub mod stats;
pub mod symbolize;
pub mod target;
pub mod tui;
pub mod user;
pub mod weak_cache;
