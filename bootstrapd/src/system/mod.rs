//! Thin clients of the system's own interfaces: systemd over D-Bus, the Docker Engine API,
//! package managers and rtnetlink. No policy here: `actions` decides, these only speak.

pub mod authorized_keys;
pub mod docker;
pub mod hostnamed;
pub mod image_ref;
pub mod netlink;
pub mod packages;
pub mod process;
pub mod proxy;
pub mod sysext;
pub mod systemd;
