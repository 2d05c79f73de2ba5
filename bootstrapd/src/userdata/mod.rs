//! Userdata: formats, the settings model, validation and the JSON schema.

pub mod settings;

pub use settings::*;
