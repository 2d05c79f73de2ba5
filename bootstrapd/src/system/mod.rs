//! (module being written)

pub mod netlink;
pub mod systemd;
pub mod docker;
pub mod packages;
