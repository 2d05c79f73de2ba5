//! The node address from the kernel's real routing state over rtnetlink, checked against the
//! source address the kernel picks for a UDP "connection" to the internet (no packet is sent).

use std::net::{IpAddr, UdpSocket};
use std::time::Duration;

use bootstrapd::facts::network::node_address;
use bootstrapd::fsutil::HostRoot;
use bootstrapd::system::netlink;

fn kernel_source_v4() -> Option<IpAddr> {
    let s = UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("1.1.1.1:53").ok()?;
    Some(s.local_addr().ok()?.ip())
}

#[tokio::test]
async fn node_address_is_the_default_route_source() {
    let handle = netlink::open(&HostRoot::default()).unwrap();
    let snap = netlink::snapshot(&handle).await.unwrap();
    let expected = kernel_source_v4();
    if snap.default_routes.is_empty() {
        // A machine without a default route must make node_address give up, boundedly.
        let err = node_address(&HostRoot::default(), Duration::from_secs(2))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no default route"), "{err}");
        assert_eq!(expected, None);
        return;
    }
    let got = node_address(&HostRoot::default(), Duration::from_secs(10))
        .await
        .unwrap();
    if let Some(e) = expected {
        assert_eq!(got, e);
    }
    assert!(snap.addresses.iter().any(|a| a.addr == got && a.global));
    assert!(!got.is_loopback());
}
