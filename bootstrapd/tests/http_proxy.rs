//! bootstrapd's own HTTP through the userdata's `proxy`: a tiny forward proxy on loopback
//! (absolute-form GET and CONNECT) records what reaches it; the credentials in the proxy URL
//! must arrive as `Proxy-Authorization`, and a `no_proxy` host must bypass it.

mod common;

use common::{ca_and_server, serve_tls};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use base64::Engine as _;
use bootstrapd::http::{HttpClientBuilder, Request, RetryPolicy, TlsTrust};
use bootstrapd::rancher::Deadline;
use bootstrapd::rancher::agent_binary::{self, BinarySource};
use bootstrapd::rancher::cacerts::{self, ServerTrust};
use bootstrapd::secret::Secret;
use bootstrapd::userdata::ProxySettings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What reached a server: the request line and the `Proxy-Authorization` value, if any.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

const USER: &str = "agent";
const PASSWORD: &str = "hunter2";

/// Reads up to the end of the request head; returns it and what came after it.
async fn read_head(s: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return Some((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 64 << 10 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Only loopback targets: the test must never reach anything else.
fn loopback(target: &str) -> SocketAddr {
    let addr: SocketAddr = target.parse().expect("host:port");
    assert!(addr.ip().is_loopback(), "the proxy was asked for {target}");
    addr
}

/// A forward proxy: CONNECT is tunnelled, an absolute-form request is sent on with
/// `Connection: close` and its whole answer relayed (then the client connection closes, so
/// no second request can slip by unrecorded). Requests without the right credentials get 407.
async fn start_proxy() -> (SocketAddr, Seen) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(proxy_one(s, record.clone()));
        }
    });
    (addr, seen)
}

async fn proxy_one(mut client: TcpStream, seen: Seen) {
    let Some((head, rest)) = read_head(&mut client).await else {
        return;
    };
    let line = head.lines().next().unwrap_or_default().to_string();
    let auth = header(&head, "proxy-authorization").map(str::to_string);
    seen.lock().unwrap().push((line.clone(), auth.clone()));
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"))
    );
    if auth.as_deref() != Some(want.as_str()) {
        let _ = client
            .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await;
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method == "CONNECT" {
        let mut up = TcpStream::connect(loopback(target)).await.unwrap();
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .unwrap();
        up.write_all(&rest).await.unwrap();
        let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
        return;
    }
    let url = url::Url::parse(target).expect("absolute-form request target");
    let origin = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap());
    let mut up = TcpStream::connect(loopback(&origin)).await.unwrap();
    let mut fwd = format!("{method} {} HTTP/1.1\r\n", url.path());
    for l in head.lines().skip(1).filter(|l| !l.is_empty()) {
        let name = l.split(':').next().unwrap_or("").to_ascii_lowercase();
        if !name.starts_with("proxy-") && name != "connection" {
            fwd.push_str(l);
            fwd.push_str("\r\n");
        }
    }
    fwd.push_str("Connection: close\r\n\r\n");
    up.write_all(fwd.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    up.read_to_end(&mut answer).await.unwrap();
    let _ = client.write_all(&answer).await;
    let _ = client.shutdown().await;
}

/// A plain HTTP server on `ip` answering every request with `body`, recording request lines.
async fn start_origin(ip: &str, body: &'static [u8]) -> (SocketAddr, Seen) {
    let l = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen: Seen = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let Some((head, _)) = read_head(&mut s).await else {
                    return;
                };
                let line = head.lines().next().unwrap_or_default().to_string();
                record.lock().unwrap().push((line, None));
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.write_all(body).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, seen)
}

fn settings(proxy: SocketAddr, no_proxy: &[&str]) -> ProxySettings {
    let url = format!("http://{USER}:{PASSWORD}@{proxy}/");
    ProxySettings {
        http: Some(Secret::new(url.clone())),
        https: Some(Secret::new(url)),
        no_proxy: no_proxy.iter().map(|s| s.to_string()).collect(),
    }
}

fn lines(seen: &Seen) -> Vec<String> {
    seen.lock()
        .unwrap()
        .iter()
        .map(|(l, _)| l.clone())
        .collect()
}

#[tokio::test]
async fn requests_go_through_the_userdata_proxy_with_its_credentials_unless_no_proxy() {
    let (proxy, via) = start_proxy().await;
    let (far, far_seen) = start_origin("127.0.0.1", b"far").await;
    // Another loopback address, named in no_proxy.
    let (near, near_seen) = start_origin("127.0.0.3", b"near").await;
    let p = settings(proxy, &["127.0.0.3", ".internal.lab"]);
    let client = HttpClientBuilder::new(TlsTrust::SystemRoots)
        .proxy(&p)
        .retry(RetryPolicy::once(Duration::from_secs(30)))
        .build()
        .unwrap();

    let r = client
        .send(&Request::get(&format!("http://{far}/v3/hello")).unwrap())
        .await
        .unwrap();
    assert_eq!((r.status.as_u16(), r.body.as_slice()), (200, &b"far"[..]));
    let seen = via.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].0, format!("GET http://{far}/v3/hello HTTP/1.1"));
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    assert_eq!(
        seen[0].1.as_deref(),
        Some(format!("Basic {basic}").as_str())
    );
    assert_eq!(lines(&far_seen), ["GET /v3/hello HTTP/1.1"]);

    // no_proxy: straight to the server, the proxy sees nothing.
    let r = client
        .send(&Request::get(&format!("http://{near}/direct")).unwrap())
        .await
        .unwrap();
    assert_eq!(r.body, b"near");
    assert_eq!(lines(&near_seen), ["GET /direct HTTP/1.1"]);
    assert_eq!(via.lock().unwrap().len(), 1);

    // A client made direct (the metadata services') ignores the userdata's proxy.
    let direct = HttpClientBuilder::new(TlsTrust::SystemRoots)
        .no_proxy()
        .proxy(&p)
        .retry(RetryPolicy::once(Duration::from_secs(30)))
        .build()
        .unwrap();
    let r = direct
        .send(&Request::get(&format!("http://{far}/meta")).unwrap())
        .await
        .unwrap();
    assert_eq!(r.body, b"far");
    assert_eq!(via.lock().unwrap().len(), 1);
    assert_eq!(lines(&far_seen).last().unwrap(), "GET /meta HTTP/1.1");
}

#[tokio::test]
async fn a_wrong_password_is_refused_by_the_proxy_and_never_shown() {
    let (proxy, via) = start_proxy().await;
    let (far, far_seen) = start_origin("127.0.0.1", b"far").await;
    let p = ProxySettings {
        http: Some(Secret::new(format!("http://{USER}:wr0ng-pa55@{proxy}/"))),
        ..Default::default()
    };
    let client = HttpClientBuilder::new(TlsTrust::SystemRoots)
        .proxy(&p)
        .retry(RetryPolicy::once(Duration::from_secs(30)))
        .build()
        .unwrap();
    let r = client
        .send(&Request::get(&format!("http://{far}/x")).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status.as_u16(), 407);
    assert_eq!(via.lock().unwrap().len(), 1);
    assert!(far_seen.lock().unwrap().is_empty());
    assert!(!format!("{client:?}").contains("wr0ng-pa55"));
}

/// Rancher's CA is fetched through the proxy (a CONNECT tunnel, TLS inside it), and so is
/// an agent binary from a URL.
#[tokio::test]
async fn rancher_requests_and_the_agent_binary_download_use_the_proxy() {
    let (proxy, via) = start_proxy().await;
    let (ca, cert, key) = ca_and_server();
    let ca_body = ca.clone();
    let app = Router::new().route("/cacerts", get(move || async move { ca_body }));
    let server = serve_tls(&cert, &key, app).await;
    let p = settings(proxy, &[]);
    let deadline = Deadline::after(Duration::from_secs(60));

    let trust = cacerts::establish(
        &server,
        Some(&cacerts::checksum(ca.as_bytes())),
        &deadline,
        &p,
    )
    .await
    .unwrap();
    assert!(matches!(trust, ServerTrust::Pinned { .. }), "{trust:?}");
    let authority = server.trim_start_matches("https://");
    let seen = via.lock().unwrap().clone();
    assert!(!seen.is_empty());
    for (line, auth) in &seen {
        assert_eq!(line, &format!("CONNECT {authority} HTTP/1.1"));
        assert!(auth.as_deref().is_some_and(|a| a.starts_with("Basic ")));
    }

    let (far, far_seen) = start_origin("127.0.0.1", b"agent-binary").await;
    let d = tempfile::tempdir().unwrap();
    let root = bootstrapd::fsutil::HostRoot::new(Some(d.path().to_path_buf()));
    let source = BinarySource::Url {
        url: format!("http://{far}/rancher-system-agent-amd64"),
        sha256: cacerts::checksum(b"agent-binary"),
    };
    let got = agent_binary::fetch(&root, &source, &TlsTrust::SystemRoots, &deadline, &p)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.bytes, b"agent-binary");
    assert_eq!(
        lines(&via).last().unwrap(),
        &format!("GET http://{far}/rancher-system-agent-amd64 HTTP/1.1")
    );
    assert_eq!(
        lines(&far_seen),
        ["GET /rancher-system-agent-amd64 HTTP/1.1"]
    );
}
