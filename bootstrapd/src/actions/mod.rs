//! The only code that changes the host: each step of a plan applied, re-checked, and
//! reported as a `Finding`.

pub mod host;
pub mod register;
pub mod runtime;
