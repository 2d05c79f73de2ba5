//! Fixtures shared by bootstrapd's integration tests: settings, TLS, temporary host roots.
//!
//! Each test crate includes this module and uses part of it; the rest would warn as dead
//! code in that crate.
#![allow(dead_code, unused_imports)]

mod roots;
mod settings;
mod tls;

pub use roots::temp_root;
pub use settings::SettingsBuilder;
pub use tls::{ca_and_server, serve_tls};
