//! systemd-hostnamed's D-Bus API (org.freedesktop.hostname1), never `hostnamectl`: the
//! static hostname (/etc/hostname) and the kernel's, set the way hostnamectl sets them.

use zbus::Connection;
use zbus::proxy::CacheProperties;

#[derive(Debug, thiserror::Error)]
pub enum HostnamedError {
    #[error("systemd-hostnamed {method}({name}) failed: {source}")]
    Call {
        method: &'static str,
        name: String,
        #[source]
        source: zbus::Error,
    },
    #[error("systemd-hostnamed reports {property} {got:?} after setting {want:?}")]
    NotSet {
        property: &'static str,
        got: String,
        want: String,
    },
}

#[zbus::proxy(
    interface = "org.freedesktop.hostname1",
    default_service = "org.freedesktop.hostname1",
    default_path = "/org/freedesktop/hostname1"
)]
pub trait Hostname1 {
    fn set_static_hostname(&self, hostname: &str, interactive: bool) -> zbus::Result<()>;
    fn set_hostname(&self, hostname: &str, interactive: bool) -> zbus::Result<()>;
    #[zbus(property)]
    fn static_hostname(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn hostname(&self) -> zbus::Result<String>;
}

/// Sets the static hostname, then the transient (kernel) one, and reads both back.
/// `interactive` is false: bootstrapd runs as root, with no one to answer a polkit prompt.
pub async fn set(conn: &Connection, name: &str) -> Result<(), HostnamedError> {
    let call = |method| {
        move |source| HostnamedError::Call {
            method,
            name: name.to_string(),
            source,
        }
    };
    // Uncached: the properties are read once, after the change.
    let proxy = Hostname1Proxy::builder(conn)
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .map_err(call("connect"))?;
    proxy
        .set_static_hostname(name, false)
        .await
        .map_err(call("SetStaticHostname"))?;
    proxy
        .set_hostname(name, false)
        .await
        .map_err(call("SetHostname"))?;
    let got = proxy
        .static_hostname()
        .await
        .map_err(call("Get StaticHostname"))?;
    check("StaticHostname", got, name)?;
    let got = proxy.hostname().await.map_err(call("Get Hostname"))?;
    check("Hostname", got, name)
}

fn check(property: &'static str, got: String, want: &str) -> Result<(), HostnamedError> {
    if got == want {
        Ok(())
    } else {
        Err(HostnamedError::NotSet {
            property,
            got,
            want: want.to_string(),
        })
    }
}
