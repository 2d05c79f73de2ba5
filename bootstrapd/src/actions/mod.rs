//! (module being written)
pub mod host;
pub mod register;
pub mod runtime;
