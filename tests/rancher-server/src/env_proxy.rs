//! The proxy choice of Go's `http.ProxyFromEnvironment` (golang.org/x/net/http/httpproxy), for
//! the rke1 agent double's websocket: rancher/remotedialer `client.go` dials with
//! `websocket.Dialer{Proxy: http.ProxyFromEnvironment}` when the agent passes no dialer (rancher
//! `cmd/agent/main.go` passes nil), so the real agent tunnels `wss://` through `HTTPS_PROXY`
//! with a CONNECT. The double must do the same, or a node whose only way out is a proxy would
//! pass the e2e with an agent that could never have connected.

use std::net::IpAddr;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A proxy to CONNECT through: `host:port` and the Basic credentials of its URL, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyTarget {
    pub authority: String,
    /// `user:password`, never printed.
    pub credentials: Option<String>,
}

/// The proxy for an `https`/`wss` request to `host` from `vars` (name, value), or None for a
/// direct connection: `HTTPS_PROXY` (else `https_proxy`), unless `NO_PROXY` (else `no_proxy`)
/// matches or the host is loopback (httpproxy's `useProxy`).
pub fn https_proxy_for(host: &str, port: u16, vars: &[(String, String)]) -> Option<ProxyTarget> {
    let get = |upper: &str, lower: &str| {
        let find = |n: &str| vars.iter().find(|(k, v)| k == n && !v.is_empty());
        find(upper).or_else(|| find(lower)).map(|(_, v)| v.clone())
    };
    let proxy = get("HTTPS_PROXY", "https_proxy")?;
    let no_proxy = get("NO_PROXY", "no_proxy").unwrap_or_default();
    if host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()) {
        return None;
    }
    if no_proxy
        .split(',')
        .map(str::trim)
        .any(|e| no_proxy_matches(e, host, port))
    {
        return None;
    }
    parse_proxy_url(&proxy)
}

/// One `NO_PROXY` entry against the target: `*`, an IP, a CIDR, a host (with its subdomains) or
/// `.domain` (subdomains only), each optionally with `:port`.
fn no_proxy_matches(entry: &str, host: &str, port: u16) -> bool {
    if entry.is_empty() {
        return false;
    }
    if entry == "*" {
        return true;
    }
    if let Some((net, bits)) = entry.split_once('/') {
        return cidr_contains(net, bits, host);
    }
    let (name, entry_port) = match entry.rsplit_once(':') {
        Some((n, p)) if !n.contains(':') => (n, p.parse::<u16>().ok()),
        _ => (entry, None),
    };
    if entry_port.is_some_and(|p| p != port) {
        return false;
    }
    let name = name.to_ascii_lowercase();
    let host = host.to_ascii_lowercase();
    match name.strip_prefix('.') {
        Some(domain) => host.ends_with(&format!(".{domain}")),
        None => host == name || host.ends_with(&format!(".{name}")),
    }
}

fn cidr_contains(net: &str, bits: &str, host: &str) -> bool {
    let (Ok(net), Ok(bits), Ok(ip)) = (
        net.parse::<IpAddr>(),
        bits.parse::<u32>(),
        host.parse::<IpAddr>(),
    ) else {
        return false;
    };
    let (a, b, width) = match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => (u128::from(u32::from(n)), u128::from(u32::from(i)), 32),
        (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128),
        _ => return false,
    };
    if bits > width {
        return false;
    }
    let shift = width - bits;
    shift >= 128 || (a >> shift) == (b >> shift)
}

/// `http://[user:pass@]host[:port]` (a bare `host:port` as Go accepts it too).
fn parse_proxy_url(raw: &str) -> Option<ProxyTarget> {
    let with_scheme = if raw.contains("://") {
        raw.to_string()
    } else {
        format!("http://{raw}")
    };
    let url = reqwest::Url::parse(&with_scheme).ok()?;
    let host = url.host_str()?;
    let port = url.port_or_known_default().unwrap_or(80);
    let credentials = (!url.username().is_empty()).then(|| {
        let decode = |s: &str| percent_decode(s).unwrap_or_else(|| s.to_string());
        format!(
            "{}:{}",
            decode(url.username()),
            decode(url.password().unwrap_or(""))
        )
    });
    Some(ProxyTarget {
        authority: format!("{host}:{port}"),
        credentials,
    })
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A TCP stream to `target` (`host:port`) tunnelled through `proxy` with CONNECT: the same
/// request gorilla/websocket's proxy dialer sends.
pub async fn connect_through(proxy: &ProxyTarget, target: &str) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect(&proxy.authority)
        .await
        .map_err(|e| format!("proxy {}: {e}", proxy.authority))?;
    let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
    if let Some(c) = &proxy.credentials {
        let b64 = base64::engine::general_purpose::STANDARD.encode(c);
        request.push_str(&format!("Proxy-Authorization: Basic {b64}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("proxy {}: {e}", proxy.authority))?;
    let head = read_head(&mut stream).await?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        let line = head.lines().next().unwrap_or("").to_string();
        return Err(format!(
            "proxy {} refused CONNECT {target}: {line}",
            proxy.authority
        ));
    }
    Ok(stream)
}

/// The proxy's reply head, read byte by byte so nothing of the tunnel is consumed.
async fn read_head(stream: &mut TcpStream) -> Result<String, String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err("proxy reply head over 16 KiB".into());
        }
        let b = stream
            .read_u8()
            .await
            .map_err(|e| format!("reading the proxy's reply: {e}"))?;
        head.push(b);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn https_proxy_with_credentials_unless_no_proxy_or_loopback() {
        let v = vars(&[
            ("HTTPS_PROXY", "http://agent:p%40ss@10.0.2.100:3128"),
            ("NO_PROXY", "localhost,.svc,10.42.0.0/16,rancher.lab:443"),
        ]);
        let p = https_proxy_for("10.0.2.2", 8443, &v).expect("proxied");
        assert_eq!(p.authority, "10.0.2.100:3128");
        assert_eq!(p.credentials.as_deref(), Some("agent:p@ss"));
        assert_eq!(https_proxy_for("a.svc", 443, &v), None);
        assert_eq!(https_proxy_for("10.42.7.1", 443, &v), None);
        assert_eq!(https_proxy_for("rancher.lab", 443, &v), None);
        assert!(https_proxy_for("rancher.lab", 8443, &v).is_some());
        assert_eq!(https_proxy_for("127.0.0.1", 443, &v), None);
    }

    #[test]
    fn lower_case_names_and_no_proxy_star() {
        let v = vars(&[("https_proxy", "10.0.2.100:3128")]);
        let p = https_proxy_for("r.lab", 443, &v).expect("proxied");
        assert_eq!(p.authority, "10.0.2.100:3128");
        assert_eq!(p.credentials, None);
        let star = vars(&[("https_proxy", "10.0.2.100:3128"), ("no_proxy", "*")]);
        assert_eq!(https_proxy_for("r.lab", 443, &star), None);
        assert_eq!(https_proxy_for("r.lab", 443, &vars(&[])), None);
    }

    #[test]
    fn domain_entries_match_subdomains_and_the_name_itself() {
        assert!(no_proxy_matches("lab", "r.lab", 1));
        assert!(no_proxy_matches("r.lab", "r.lab", 1));
        assert!(!no_proxy_matches(".r.lab", "r.lab", 1));
        assert!(!no_proxy_matches("lab", "rlab", 1));
        assert!(no_proxy_matches("fd00::/8", "fd00::1", 1));
        assert!(!no_proxy_matches("10.0.0.0/8", "11.0.0.1", 1));
    }
}
