//! Route and address probes over rtnetlink (the kernel's own interface; no `ip` parsing).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressScope};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType,
};
use rtnetlink::{Handle, RouteMessageBuilder};

use crate::fsutil::HostRoot;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("cannot open a netlink socket: {0}")]
    Open(#[source] std::io::Error),
    #[error(transparent)]
    NotLive(#[from] crate::fsutil::NotLiveSystem),
    #[error("netlink {what} failed: {source}")]
    Request {
        what: &'static str,
        #[source]
        source: rtnetlink::Error,
    },
}

/// A default route (destination prefix length 0) of the main table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultRoute {
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    pub pref_src: Option<IpAddr>,
    pub priority: u32,
}

/// An address on an interface, with what makes it usable as a node address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfAddress {
    pub ifindex: u32,
    pub addr: IpAddr,
    pub prefix_len: u8,
    /// Scope universe ("global" in `ip addr`).
    pub global: bool,
    /// Tentative (DAD not done), DAD-failed or deprecated: not to be announced.
    pub unusable: bool,
}

/// Everything the node-address choice needs, read in one go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetSnapshot {
    pub default_routes: Vec<DefaultRoute>,
    pub addresses: Vec<IfAddress>,
    /// The source the kernel picks for a packet to the internet (`ip route get`), when the
    /// lookup succeeds.
    pub route_source: Option<IpAddr>,
}

/// A public destination used only for the kernel's route lookup: nothing is sent.
const PROBE_V4: Ipv4Addr = Ipv4Addr::new(1, 1, 1, 1);
const PROBE_V6: Ipv6Addr = Ipv6Addr::new(0x2606, 0x4700, 0x4700, 0, 0, 0, 0, 0x1111);

fn route_addr(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn default_route(msg: &RouteMessage) -> Option<DefaultRoute> {
    // Tables above 255 only appear in RTA_TABLE; the header then says RT_TABLE_COMPAT.
    let table = msg
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(msg.header.table));
    // Only the main table's unicast default counts: a blackhole or a policy-routing table's
    // default is not where the node's traffic to the server goes by default.
    if msg.header.destination_prefix_length != 0
        || table != u32::from(RouteHeader::RT_TABLE_MAIN)
        || msg.header.kind != RouteType::Unicast
    {
        return None;
    }
    let mut r = DefaultRoute {
        gateway: None,
        oif: None,
        pref_src: None,
        priority: 0,
    };
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Gateway(a) => r.gateway = route_addr(a),
            RouteAttribute::PrefSource(a) => r.pref_src = route_addr(a),
            RouteAttribute::Oif(i) => r.oif = Some(*i),
            RouteAttribute::Priority(p) => r.priority = *p,
            _ => {}
        }
    }
    Some(r)
}

/// Opens a netlink connection; its driver runs on the current tokio runtime.
/// Opens rtnetlink, refused for a tree below `--root` (see [`HostRoot`]).
pub fn open(root: &HostRoot) -> Result<Handle, NetlinkError> {
    root.system_service("netlink")?;
    let (conn, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Open)?;
    tokio::spawn(conn);
    Ok(handle)
}

pub async fn snapshot(handle: &Handle) -> Result<NetSnapshot, NetlinkError> {
    let mut snap = NetSnapshot::default();
    for msg in [
        RouteMessageBuilder::<Ipv4Addr>::new().build(),
        RouteMessageBuilder::<Ipv6Addr>::new().build(),
    ] {
        let mut routes = handle.route().get(msg).execute();
        while let Some(route) = routes
            .try_next()
            .await
            .map_err(|source| NetlinkError::Request {
                what: "route dump",
                source,
            })?
        {
            if let Some(r) = default_route(&route) {
                snap.default_routes.push(r);
            }
        }
    }

    let mut addrs = handle.address().get().execute();
    while let Some(msg) = addrs
        .try_next()
        .await
        .map_err(|source| NetlinkError::Request {
            what: "address dump",
            source,
        })?
    {
        let mut local = None;
        let mut address = None;
        let mut flags = AddressFlags::empty();
        for attr in &msg.attributes {
            match attr {
                AddressAttribute::Local(a) => local = Some(*a),
                AddressAttribute::Address(a) => address = Some(*a),
                AddressAttribute::Flags(f) => flags = *f,
                _ => {}
            }
        }
        // IFA_LOCAL is the interface's own address on point-to-point links; IFA_ADDRESS the
        // peer there. Elsewhere both are the same.
        let Some(addr) = local.or(address) else {
            continue;
        };
        if !matches!(
            msg.header.family,
            AddressFamily::Inet | AddressFamily::Inet6
        ) {
            continue;
        }
        snap.addresses.push(IfAddress {
            ifindex: msg.header.index,
            addr,
            prefix_len: msg.header.prefix_len,
            global: msg.header.scope == AddressScope::Universe,
            unusable: flags.intersects(
                AddressFlags::Tentative | AddressFlags::Dadfailed | AddressFlags::Deprecated,
            ),
        });
    }

    snap.route_source = route_source(handle, IpAddr::V4(PROBE_V4)).await;
    if snap.route_source.is_none() {
        snap.route_source = route_source(handle, IpAddr::V6(PROBE_V6)).await;
    }
    Ok(snap)
}

/// The kernel's route lookup for `dest` (RTM_GETROUTE with a destination, like `ip route
/// get`): its preferred source. None when there is no route (ENETUNREACH) or no source.
pub async fn route_source(handle: &Handle, dest: IpAddr) -> Option<IpAddr> {
    let msg = match dest {
        IpAddr::V4(a) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(a, 32)
            .build(),
        IpAddr::V6(a) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(a, 128)
            .build(),
    };
    let mut replies = handle.route().get(msg).execute();
    match replies.try_next().await {
        Ok(Some(route)) => route.attributes.iter().find_map(|a| match a {
            RouteAttribute::PrefSource(s) => route_addr(s),
            _ => None,
        }),
        Ok(None) => None,
        Err(e) => {
            tracing::debug!(%dest, error = %e, "route lookup found no route");
            None
        }
    }
}
