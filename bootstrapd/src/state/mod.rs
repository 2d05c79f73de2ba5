//! bootstrapd's own state: the stage journal under /var/lib/bootstrapd.
//!
//! The journal is the only record of what a run did. It is rewritten atomically after every
//! change (temp file, fsync, rename, fsync of the directory), so power loss at any instant
//! leaves the previous or the next journal, never a torn one.

pub mod journal;
pub mod network;

pub use journal::*;

// Their old paths: the footprint moved to `metrics` so that datasources and system clients
// measure without depending on the journal.
pub use crate::metrics::{Resources, cpu_ms_since, own_cpu_ms};
