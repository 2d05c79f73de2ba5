//! The node's network readiness and address, and whether its hostname is usable.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::system::netlink::{self, NetSnapshot, NetlinkError};

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(
        "no default route with a global address after {secs} s (last seen: {default_routes} default route(s), {global} global address(es))"
    )]
    NotReady {
        secs: u64,
        default_routes: usize,
        global: usize,
    },
    #[error("rancher.{key}: {value:?} is neither an IP address nor an interface on this host")]
    NoInterface { key: &'static str, value: String },
    #[error("rancher.{key}: interface {value:?} has no IPv4 address")]
    NoIpv4 { key: &'static str, value: String },
}

/// The address `rancher.<key>` names: an IP as is, an interface name as its first IPv4
/// address, as system-agent's `install.sh` (`get_address`) resolves `--address eth1`.
pub async fn resolve_address(
    root: &crate::fsutil::HostRoot,
    key: &'static str,
    value: &str,
) -> Result<IpAddr, NetworkError> {
    if let Ok(ip) = value.parse::<IpAddr>() {
        return Ok(ip);
    }
    // An interface name is a question for the running system's network.
    root.system_service("netlink").map_err(NetlinkError::from)?;
    let no_interface = || NetworkError::NoInterface {
        key,
        value: value.to_string(),
    };
    if value.is_empty() || value.contains(['/', '\0']) || value.starts_with('.') {
        return Err(no_interface());
    }
    let index: u32 = std::fs::read_to_string(format!("/sys/class/net/{value}/ifindex"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .ok_or_else(no_interface)?;
    let snap = netlink::snapshot(&netlink::open(root)?).await?;
    first_ipv4(&snap, index).ok_or_else(|| NetworkError::NoIpv4 {
        key,
        value: value.to_string(),
    })
}

/// The first IPv4 address on interface `index` in `snap`.
pub fn first_ipv4(snap: &NetSnapshot, index: u32) -> Option<IpAddr> {
    snap.addresses
        .iter()
        .find(|a| a.ifindex == index && a.addr.is_ipv4())
        .map(|a| a.addr)
}

fn usable(a: &IpAddr) -> bool {
    !(a.is_loopback() || a.is_unspecified() || a.is_multicast())
}

/// The address to register the node with, from one snapshot: the kernel's source for a
/// packet to the internet, else the default route's preferred source, else the first global
/// address on the default route's interface. None while the network is not up.
pub fn pick_node_address(s: &NetSnapshot) -> Option<IpAddr> {
    let global = |a: &IpAddr| {
        s.addresses
            .iter()
            .any(|x| x.addr == *a && x.global && !x.unusable)
    };
    if s.default_routes.is_empty() {
        return None;
    }
    if let Some(src) = s.route_source.filter(|a| usable(a) && global(a)) {
        return Some(src);
    }
    let mut routes = s.default_routes.clone();
    // Lowest metric first, IPv4 before IPv6 at equal metric (Rancher's own scripts use the
    // IPv4 route to the internet).
    routes.sort_by_key(|r| (r.priority, r.gateway.is_some_and(|g| g.is_ipv6())));
    for r in &routes {
        if let Some(src) = r.pref_src.filter(|a| usable(a) && global(a)) {
            return Some(src);
        }
        if let Some(oif) = r.oif {
            let family_v6 = r.gateway.map(|g| g.is_ipv6());
            if let Some(a) = s.addresses.iter().find(|x| {
                x.ifindex == oif
                    && x.global
                    && !x.unusable
                    && usable(&x.addr)
                    && family_v6.is_none_or(|v6| x.addr.is_ipv6() == v6)
            }) {
                return Some(a.addr);
            }
        }
    }
    None
}

/// Waits (bounded) for a default route and a global address and returns the node address.
pub async fn node_address(
    root: &crate::fsutil::HostRoot,
    timeout: Duration,
) -> Result<IpAddr, NetworkError> {
    let handle = netlink::open(root)?;
    let start = Instant::now();
    loop {
        let snap = netlink::snapshot(&handle).await?;
        if let Some(a) = pick_node_address(&snap) {
            tracing::info!(address = %a, "node address from the default route");
            return Ok(a);
        }
        if start.elapsed() >= timeout {
            return Err(NetworkError::NotReady {
                secs: timeout.as_secs(),
                default_routes: snap.default_routes.len(),
                global: snap.addresses.iter().filter(|a| a.global).count(),
            });
        }
        tracing::debug!(
            default_routes = snap.default_routes.len(),
            "network not ready yet; waiting"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Why a hostname makes a poor node name, or None when it looks deliberate. RKE1 names
/// nodes from md5(hostname): image defaults and generated names collide across clones.
pub fn hostname_problem(name: &str) -> Option<String> {
    let short = name.split('.').next().unwrap_or(name).to_ascii_lowercase();
    if name.is_empty() {
        return Some("the hostname is empty".into());
    }
    const IMAGE_DEFAULTS: [&str; 12] = [
        "localhost",
        "debian",
        "ubuntu",
        "centos",
        "fedora",
        "rhel",
        "rocky",
        "almalinux",
        "opensuse",
        "sles",
        "archlinux",
        "raspberrypi",
    ];
    if IMAGE_DEFAULTS.contains(&short.as_str())
        || name.eq_ignore_ascii_case("localhost.localdomain")
    {
        return Some(format!("\"{name}\" is an image default"));
    }
    // AWS/GCE-style names derived from the DHCP address: unique, but they change with it.
    let ip_like = ["ip-", "host-"].iter().any(|p| {
        short.strip_prefix(p).is_some_and(|rest| {
            let parts: Vec<&str> = rest.split('-').collect();
            parts.len() == 4 && parts.iter().all(|p| p.parse::<u8>().is_ok())
        })
    });
    if ip_like {
        return Some(format!("\"{name}\" is derived from a DHCP address"));
    }
    // Random hex (container IDs, machine-id prefixes): 8 or more hex digits, with a digit.
    let hexish = short.len() >= 8
        && short.bytes().all(|b| b.is_ascii_hexdigit())
        && short.bytes().any(|b| b.is_ascii_digit());
    if hexish {
        return Some(format!("\"{name}\" looks generated (random hex)"));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::netlink::{DefaultRoute, IfAddress};

    fn addr(ifindex: u32, a: &str, global: bool) -> IfAddress {
        IfAddress {
            ifindex,
            addr: a.parse().unwrap(),
            prefix_len: 24,
            global,
            unusable: false,
        }
    }

    #[test]
    fn picks_route_source_then_pref_src_then_interface_address() {
        let mut s = NetSnapshot {
            default_routes: vec![DefaultRoute {
                gateway: Some("192.0.2.1".parse().unwrap()),
                oif: Some(2),
                pref_src: None,
                priority: 0,
            }],
            addresses: vec![
                addr(1, "127.0.0.1", false),
                addr(2, "fe80::1", false),
                addr(2, "192.0.2.10", true),
                addr(3, "198.51.100.7", true),
            ],
            route_source: None,
        };
        assert_eq!(pick_node_address(&s), Some("192.0.2.10".parse().unwrap()));
        s.default_routes[0].pref_src = Some("198.51.100.7".parse().unwrap());
        assert_eq!(pick_node_address(&s), Some("198.51.100.7".parse().unwrap()));
        s.route_source = Some("192.0.2.10".parse().unwrap());
        assert_eq!(pick_node_address(&s), Some("192.0.2.10".parse().unwrap()));
    }

    #[test]
    fn not_ready_without_default_route_or_global_address() {
        let mut s = NetSnapshot {
            default_routes: vec![],
            addresses: vec![addr(2, "192.0.2.10", true)],
            route_source: None,
        };
        assert_eq!(pick_node_address(&s), None);
        s.default_routes.push(DefaultRoute {
            gateway: Some("192.0.2.1".parse().unwrap()),
            oif: Some(2),
            pref_src: None,
            priority: 0,
        });
        s.addresses[0].unusable = true; // still tentative
        assert_eq!(pick_node_address(&s), None);
    }

    #[test]
    fn hostnames() {
        for bad in [
            "localhost",
            "localhost.localdomain",
            "debian",
            "ip-10-0-1-23",
            "ip-10-0-1-23.eu-west-1.compute.internal",
            "3f9a2c1b7d4e",
        ] {
            assert!(hostname_problem(bad).is_some(), "{bad}");
        }
        for good in ["node1", "etcd-2.lab.example", "worker-a", "deadbeef-web"] {
            assert_eq!(hostname_problem(good), None, "{good}");
        }
    }
}
