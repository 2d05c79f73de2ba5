//! systemd-networkd files from a [`NetworkConfig`]: a pure function, so the exact text is
//! tested without a host.

use std::fmt::Write;

use sha2::{Digest, Sha256};

use super::{Ethernet, NetworkConfig};

/// The first line of every file bootstrapd writes, followed by the sha256 of the rest of the
/// file. A file with this line whose hash still matches is bootstrapd's to rewrite or remove;
/// any other file (the image's, the operator's, or ours edited by hand) is never touched.
pub const HEADER_PREFIX: &str = "# written by bootstrapd from network-config, sha256 ";

/// `10-` sorts before the image's `99-dhcp.network` (networkd uses the first file, in
/// lexical order, whose `[Match]` fits a link), so a configured interface is not also given
/// DHCP by the catch-all.
pub fn file_prefix() -> &'static str {
    "10-bootstrapd-"
}

/// One file to write below /etc/systemd/network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    pub name: String,
    pub contents: String,
}

/// The `.network` file of every interface, in document order.
pub fn render(config: &NetworkConfig) -> Vec<RenderedFile> {
    config
        .ethernets
        .iter()
        .map(|e| {
            let body = body(e);
            let digest = hex::encode(Sha256::digest(body.as_bytes()));
            RenderedFile {
                name: format!("{}{}.network", file_prefix(), e.id),
                contents: format!("{HEADER_PREFIX}{digest}\n{body}"),
            }
        })
        .collect()
}

/// The text after the header line. `writeln!` to a String cannot fail.
fn body(e: &Ethernet) -> String {
    let mut s = format!(
        "# Interface `{}` of the seed's network-config: edit that, not this file (bootstrapd\n\
         # rewrites or removes it at boot).\n[Match]\n",
        e.id
    );
    if let Some(n) = &e.match_name {
        let _ = writeln!(s, "Name={n}");
    }
    if let Some(m) = &e.match_mac {
        let _ = writeln!(s, "MACAddress={m}");
    }
    if e.mtu.is_some() || e.optional {
        s.push_str("\n[Link]\n");
        if let Some(mtu) = e.mtu {
            let _ = writeln!(s, "MTUBytes={mtu}");
        }
        if e.optional {
            s.push_str("RequiredForOnline=no\n");
        }
    }
    let dhcp = match (e.dhcp4, e.dhcp6) {
        (true, true) => "yes",
        (true, false) => "ipv4",
        (false, true) => "ipv6",
        (false, false) => "no",
    };
    let _ = write!(s, "\n[Network]\nDHCP={dhcp}\n");
    for a in &e.addresses {
        let _ = writeln!(s, "Address={a}");
    }
    for g in &e.gateways {
        let _ = writeln!(s, "Gateway={g}");
    }
    for d in &e.nameservers {
        let _ = writeln!(s, "DNS={d}");
    }
    if !e.search.is_empty() {
        let _ = writeln!(s, "Domains={}", e.search.join(" "));
    }
    for r in &e.routes {
        let _ = write!(s, "\n[Route]\nDestination={}\nGateway={}\n", r.to, r.via);
        if let Some(m) = r.metric {
            let _ = writeln!(s, "Metric={m}");
        }
    }
    s
}

/// Whether `contents` is a file bootstrapd wrote and nobody edited since.
pub fn is_ours(contents: &str) -> bool {
    let Some((first, rest)) = contents.split_once('\n') else {
        return false;
    };
    match first.strip_prefix(HEADER_PREFIX) {
        Some(digest) => digest == hex::encode(Sha256::digest(rest.as_bytes())),
        None => false,
    }
}
