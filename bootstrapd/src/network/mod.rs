//! Static network from a NoCloud `network-config` (netplan version 2, the `ethernets`
//! subset), rendered as systemd-networkd `.network` files.
//!
//! Parsing ([`parse`]) is strict like the userdata: every problem of a document is reported at
//! once with its line and column, on the same spanned YAML tree. Rendering ([`render`]) is a
//! pure function from the parsed config to file names and contents; writing them under the
//! host root, idempotently and without touching files bootstrapd did not write, is
//! [`crate::actions::network`].

mod parse;
mod render;

use std::fmt;
use std::net::IpAddr;

pub use parse::parse;
pub use render::{HEADER_PREFIX, RenderedFile, file_prefix, is_ours, render};

use crate::userdata::Problem;

/// A network-config larger than this is refused before parsing. Real ones are a few hundred
/// bytes; the cap keeps an untrusted seed from feeding the parser megabytes.
pub const MAX_NETWORK_CONFIG_BYTES: usize = 256 << 10;

/// A network-config file given on the command line (`validate`, `plan`), read up to one byte
/// past [`MAX_NETWORK_CONFIG_BYTES`]: enough for [`parse`] to refuse it, without reading a
/// huge file whole.
pub fn read_file(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_NETWORK_CONFIG_BYTES as u64 + 1)
        .read_to_end(&mut buf)?;
    Ok(buf)
}

/// The file name cloud-init reads next to `user-data` and `meta-data` in a NoCloud seed.
pub const SEED_FILE: &str = "network-config";

/// A validated network-config: what bootstrapd will configure.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NetworkConfig {
    /// In document order. Empty for `config: disabled` (cloud-init's "leave the network
    /// alone"): bootstrapd then writes nothing and removes what it wrote before.
    pub ethernets: Vec<Ethernet>,
}

/// One `ethernets` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ethernet {
    /// The netplan ID: the interface name when there is no `match`, else only a label (it
    /// names the file).
    pub id: String,
    /// `match.name`, or the ID when there is no `match`; may hold globs (`en*`).
    pub match_name: Option<String>,
    /// `match.macaddress`, lowercased.
    pub match_mac: Option<String>,
    pub dhcp4: bool,
    pub dhcp6: bool,
    /// netplan's `optional`: boot does not wait for this link (networkd's
    /// `RequiredForOnline=no`).
    pub optional: bool,
    /// `ADDRESS/PREFIX`, as written (checked).
    pub addresses: Vec<String>,
    /// `gateway4` and `gateway6` (deprecated in netplan, still common).
    pub gateways: Vec<IpAddr>,
    pub routes: Vec<Route>,
    pub nameservers: Vec<IpAddr>,
    pub search: Vec<String>,
    pub mtu: Option<u32>,
}

/// One `routes` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `NETWORK/PREFIX`; `to: default` is `0.0.0.0/0` or `::/0` after the family of `via`.
    pub to: String,
    pub via: IpAddr,
    pub metric: Option<u32>,
}

/// Why a network-config was refused: every problem, in document order, each with its line
/// and column (the same lines `bootstrapd validate` prints for userdata).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct NetworkConfigError {
    pub problems: Vec<Problem>,
}

impl NetworkConfigError {
    fn whole(message: impl Into<String>) -> Self {
        NetworkConfigError {
            problems: vec![Problem {
                line: 0,
                column: 0,
                path: String::new(),
                message: message.into(),
            }],
        }
    }
}

impl fmt::Display for NetworkConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
