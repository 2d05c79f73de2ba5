//! bootstrapd: a first-boot node bootstrap agent.
//!
//! Data flows one way: datasource -> userdata -> facts -> plan -> actions -> state.
//! Only `actions` (and `state`, which owns bootstrapd's own files) change the host.

pub mod actions;
pub mod cli;
pub mod config;
pub mod datasource;
pub mod facts;
pub mod findings;
pub mod fsutil;
pub mod http;
pub mod metrics;
pub mod network;
pub mod plan;
pub mod rancher;
pub mod secret;
pub mod signature;
pub mod state;
pub mod system;
pub mod userdata;
