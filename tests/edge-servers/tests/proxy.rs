//! test-proxy on loopback: absolute-form forwarding on a persistent, pipelined connection (as
//! apt uses it), CONNECT tunnels to a TLS server, the allow list, loopback-only targets, host
//! mapping, proxy authentication, and the request log.

mod common;

use std::path::PathBuf;

use common::{PASSWORD, USER, basic, log_lines, origin, read_response};
use edge_servers::proxy::{self, Proxy, ProxyConfig};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

async fn start_proxy(allow: &[(&str, u16)], credentials: bool, log: Option<PathBuf>) -> Proxy {
    proxy::start(ProxyConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        maps: vec![("10.0.2.2".into(), "127.0.0.1".into())],
        allow: allow.iter().map(|(h, p)| (h.to_string(), *p)).collect(),
        credentials: if credentials {
            vec![format!("{USER}:{PASSWORD}").into_bytes()]
        } else {
            Vec::new()
        },
        log,
    })
    .await
    .expect("proxy starts")
}

async fn connect(proxy: &Proxy) -> BufReader<TcpStream> {
    BufReader::new(
        TcpStream::connect(proxy.addr)
            .await
            .expect("connect to proxy"),
    )
}

#[tokio::test]
async fn pipelined_absolute_form_requests_are_answered_in_order_on_one_connection() {
    let origin = origin().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("proxy.jsonl");
    let proxy = start_proxy(&[("127.0.0.1", origin.port)], false, Some(log.clone())).await;
    let port = origin.port;
    let mut conn = connect(&proxy).await;
    // apt's way: several requests written at once, the guest naming the host 10.0.2.2.
    let requests = format!(
        "GET http://10.0.2.2:{port}/dists/bookworm/Release HTTP/1.1\r\nHost: 10.0.2.2:{port}\r\nUser-Agent: Debian APT-HTTP/1.3\r\n\r\n\
         GET http://10.0.2.2:{port}/pool/main/a.deb?token=secret-query HTTP/1.1\r\nHost: 10.0.2.2:{port}\r\n\r\n\
         POST http://10.0.2.2:{port}/upload HTTP/1.1\r\nHost: 10.0.2.2:{port}\r\nContent-Length: 4\r\n\r\nbody"
    );
    conn.write_all(requests.as_bytes()).await.expect("write");
    let first = read_response(&mut conn).await;
    let second = read_response(&mut conn).await;
    let third = read_response(&mut conn).await;
    assert_eq!(
        (first.status, first.body.as_slice()),
        (200, b"origin:/dists/bookworm/Release:".as_slice())
    );
    assert_eq!(second.body, b"origin:/pool/main/a.deb?token=secret-query:");
    assert_eq!(third.body, b"origin:/upload:body");
    // The origin answered HTTP/1.0 with a length: the client connection stays open.
    assert_eq!(first.header("connection"), Some("keep-alive"));
    assert_eq!(first.header("x-origin"), Some("yes"));

    // A chunked response passes through and keeps the connection too; one that ends at
    // close closes it.
    let more = format!(
        "GET http://10.0.2.2:{port}/chunked HTTP/1.1\r\nHost: 10.0.2.2:{port}\r\n\r\nGET http://10.0.2.2:{port}/eof HTTP/1.1\r\nHost: 10.0.2.2:{port}\r\n\r\n"
    );
    conn.write_all(more.as_bytes()).await.expect("write");
    let chunked = read_response(&mut conn).await;
    assert_eq!(
        (chunked.status, chunked.body.as_slice()),
        (200, b"hello world".as_slice())
    );
    assert_eq!(chunked.header("connection"), Some("keep-alive"));
    let eof = read_response(&mut conn).await;
    assert_eq!(
        (eof.body.as_slice(), eof.header("connection")),
        (b"until close".as_slice(), Some("close"))
    );

    let heads = origin.heads.lock().expect("lock").clone();
    assert_eq!(heads.len(), 5);
    assert!(
        heads[0].starts_with("GET /dists/bookworm/Release HTTP/1.1\r\n"),
        "{}",
        heads[0]
    );
    assert!(
        heads[0].contains(&format!("Host: 10.0.2.2:{port}\r\n")),
        "{}",
        heads[0]
    );
    assert!(heads[0].contains("Connection: close\r\n"), "{}", heads[0]);
    assert!(heads[1].starts_with("GET /pool/main/a.deb?token=secret-query HTTP/1.1\r\n"));

    drop(conn);
    proxy.wait_idle().await;
    let lines = log_lines(&log);
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0]["method"], "GET");
    assert_eq!(
        lines[0]["target"],
        format!("http://10.0.2.2:{port}/dists/bookworm/Release")
    );
    assert_eq!(lines[0]["upstream"], format!("127.0.0.1:{port}"));
    assert_eq!(lines[0]["status"], 200);
    assert_eq!(lines[0]["bytes"], 31);
    assert_eq!(lines[0]["auth_presented"], false);
    assert!(lines[0]["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    // Query strings can carry secrets: they are not logged.
    assert!(
        !std::fs::read_to_string(&log)
            .expect("log")
            .contains("secret-query")
    );
}

#[tokio::test]
async fn connect_tunnels_tls_to_a_mapped_allowed_target() {
    common::crypto();
    let dir = tempfile::tempdir().expect("tempdir");
    let issued = edge_servers::ca::issue(&["10.0.2.2".into(), "127.0.0.1".into()]).expect("CA");
    let registry = edge_servers::registry::start(edge_servers::registry::RegistryConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        images: Vec::new(),
        credentials: Vec::new(),
        tls: Some(
            edge_servers::ca::server_config(issued.cert_pem.as_bytes(), issued.key_pem.as_bytes())
                .expect("tls"),
        ),
        log: None,
    })
    .await
    .expect("registry");
    let origin = origin().await;
    let log = dir.path().join("proxy.jsonl");
    let proxy = start_proxy(
        &[
            ("127.0.0.1", registry.addr.port()),
            ("127.0.0.1", origin.port),
        ],
        false,
        Some(log.clone()),
    )
    .await;

    // As a guest sees it: the server is https://10.0.2.2:PORT, reachable only via the proxy.
    // The certificate names 10.0.2.2, so TLS verifies end to end through the tunnel.
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(format!("http://{}", proxy.addr)).expect("proxy url"))
        .tls_certs_only([reqwest::Certificate::from_pem(issued.ca_pem.as_bytes()).expect("CA")])
        .build()
        .expect("client");
    let port = registry.addr.port();
    let response = client
        .get(format!("https://10.0.2.2:{port}/v2/"))
        .send()
        .await
        .expect("through the tunnel");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
    // And plain http:// through the same client goes in absolute form.
    let plain = client
        .get(format!("http://10.0.2.2:{}/x", origin.port))
        .send()
        .await
        .expect("forwarded");
    assert_eq!(plain.text().await.expect("body"), "origin:/x:");
    drop(client);

    // A second, raw CONNECT: the 200 and then the tunnel's bytes.
    let mut conn = connect(&proxy).await;
    conn.write_all(format!("CONNECT 10.0.2.2:{} HTTP/1.1\r\nHost: 10.0.2.2:{}\r\n\r\nGET /raw HTTP/1.1\r\nHost: x\r\n\r\n", origin.port, origin.port).as_bytes()).await.expect("write");
    let established = read_response_head_only(&mut conn).await;
    assert!(established.starts_with("HTTP/1.1 200"), "{established}");
    let tunnelled = read_response(&mut conn).await;
    assert_eq!(tunnelled.body, b"origin:/raw:");

    drop(conn);
    proxy.wait_idle().await;
    let lines = log_lines(&log);
    let connects: Vec<_> = lines.iter().filter(|l| l["method"] == "CONNECT").collect();
    assert!(!connects.is_empty(), "{lines:?}");
    assert!(connects.iter().all(|l| {
        l["status"] == 200
            && l["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("10.0.2.2:"))
    }));
    // Each tunnel: one line when it opened, one with the byte counts when it closed.
    let phases: Vec<&str> = connects
        .iter()
        .map(|l| l["tunnel"].as_str().expect("tunnel phase"))
        .collect();
    let opened = phases.iter().filter(|p| **p == "open").count();
    assert_eq!(opened * 2, phases.len(), "{phases:?}");
    assert!(
        connects
            .iter()
            .filter(|l| l["tunnel"] == "closed")
            .all(|l| {
                l["bytes"].as_u64().is_some_and(|b| b > 0)
                    && l["bytes_up"].as_u64().is_some_and(|b| b > 0)
            })
    );
    // Other requests have no tunnel field.
    assert!(
        lines
            .iter()
            .filter(|l| l["method"] != "CONNECT")
            .all(|l| l.get("tunnel").is_none())
    );
}

/// The head of a response without a body (a CONNECT's 200), as text.
async fn read_response_head_only(conn: &mut BufReader<TcpStream>) -> String {
    use tokio::io::AsyncBufReadExt;
    let mut head = String::new();
    loop {
        let mut line = String::new();
        conn.read_line(&mut line).await.expect("line");
        head.push_str(&line);
        if line == "\r\n" || line.is_empty() {
            return head;
        }
    }
}

async fn status_of(proxy: &Proxy, request: &str) -> common::RawResponse {
    let mut conn = connect(proxy).await;
    conn.write_all(request.as_bytes()).await.expect("write");
    read_response(&mut conn).await
}

#[tokio::test]
async fn targets_outside_the_allow_list_or_loopback_are_refused_with_403() {
    let origin = origin().await;
    let never = listener_not_allowed();
    let other = never.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("proxy.jsonl");
    // 192.0.2.1 (TEST-NET-1) is allowed by name but not loopback: still refused, no connection.
    let proxy = start_proxy(
        &[
            ("127.0.0.1", origin.port),
            ("192.0.2.1", 80),
            ("localhost", origin.port),
        ],
        false,
        Some(log.clone()),
    )
    .await;
    let refused = [
        format!("CONNECT 127.0.0.1:{other} HTTP/1.1\r\n\r\n"),
        format!("GET http://10.0.2.2:{other}/ HTTP/1.1\r\nHost: x\r\n\r\n"),
        // Not mapped: 10.0.2.4 stays itself and is not allowed.
        format!(
            "GET http://10.0.2.4:{}/ HTTP/1.1\r\nHost: x\r\n\r\n",
            origin.port
        ),
        "CONNECT 192.0.2.1:80 HTTP/1.1\r\n\r\n".to_string(),
        "GET http://192.0.2.1/ HTTP/1.1\r\nHost: x\r\n\r\n".to_string(),
    ];
    for request in &refused {
        let response = status_of(&proxy, request).await;
        assert_eq!(response.status, 403, "{request}");
        assert_eq!(response.header("connection"), Some("close"));
    }
    // Malformed: an origin-form request and a CONNECT without a port.
    assert_eq!(
        status_of(&proxy, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .status,
        400
    );
    assert_eq!(
        status_of(&proxy, "CONNECT 127.0.0.1 HTTP/1.1\r\n\r\n")
            .await
            .status,
        400
    );
    // https:// in absolute form would need TLS from the proxy; clients use CONNECT instead.
    let https = format!("GET https://127.0.0.1:{}/ HTTP/1.1\r\n\r\n", origin.port);
    assert_eq!(status_of(&proxy, &https).await.status, 400);
    // localhost resolves to loopback only, so an allowed name works.
    let ok = status_of(
        &proxy,
        &format!(
            "GET http://localhost:{}/n HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            origin.port
        ),
    )
    .await;
    assert_eq!(
        (ok.status, ok.body.as_slice()),
        (200, b"origin:/n:".as_slice())
    );
    assert_eq!(
        origin.heads.lock().expect("lock").len(),
        1,
        "only the allowed request reached the origin"
    );
    let reached = never.accept().map(|_| ());
    assert!(
        reached
            .as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "a refused target was connected to: {reached:?}"
    );

    proxy.wait_idle().await;
    let lines = log_lines(&log);
    assert_eq!(
        lines.iter().filter(|l| l["status"] == 403).count(),
        refused.len()
    );
    assert!(
        lines
            .iter()
            .filter(|l| l["status"] == 403)
            .all(|l| l["upstream"].is_null())
    );
}

/// A loopback listener that must never be reached. Non-blocking: the kernel queues a
/// connection once its handshake completes, before the proxy could have answered, so an
/// `accept` at the end that finds nothing proves nothing connected.
fn listener_not_allowed() -> std::net::TcpListener {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("non-blocking");
    listener
}

#[tokio::test]
async fn proxy_authentication_is_required_when_configured() {
    let origin = origin().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("proxy.jsonl");
    let proxy = start_proxy(&[("127.0.0.1", origin.port)], true, Some(log.clone())).await;
    let port = origin.port;
    let request = |auth: Option<String>| {
        let auth = auth
            .map(|a| format!("Proxy-Authorization: {a}\r\n"))
            .unwrap_or_default();
        format!(
            "GET http://10.0.2.2:{port}/a HTTP/1.1\r\nHost: 10.0.2.2\r\n{auth}Connection: close\r\n\r\n"
        )
    };
    let none = status_of(&proxy, &request(None)).await;
    assert_eq!(none.status, 407);
    assert_eq!(
        none.header("proxy-authenticate"),
        Some("Basic realm=\"test-proxy\"")
    );
    let wrong = status_of(&proxy, &request(Some(basic(USER, "wrong")))).await;
    assert_eq!(wrong.status, 407);
    let connect_without = status_of(
        &proxy,
        &format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n"),
    )
    .await;
    assert_eq!(connect_without.status, 407);
    let good = status_of(&proxy, &request(Some(basic(USER, PASSWORD)))).await;
    assert_eq!(
        (good.status, good.body.as_slice()),
        (200, b"origin:/a:".as_slice())
    );
    // The credential stops at the proxy.
    let heads = origin.heads.lock().expect("lock").clone();
    assert_eq!(heads.len(), 1);
    assert!(
        !heads[0]
            .to_ascii_lowercase()
            .contains("proxy-authorization"),
        "{}",
        heads[0]
    );

    reqwest_with_credentials_in_the_url(&proxy, port).await;

    proxy.wait_idle().await;
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        !text.contains(PASSWORD) && !text.contains(&basic(USER, PASSWORD)[6..]),
        "{text}"
    );
    let lines = log_lines(&log);
    let presented: Vec<(bool, u64)> = lines
        .iter()
        .map(|l| {
            (
                l["auth_presented"].as_bool().expect("bool"),
                l["status"].as_u64().expect("status"),
            )
        })
        .collect();
    assert_eq!(
        presented,
        [
            (false, 407),
            (true, 407),
            (false, 407),
            (true, 200),
            (true, 200)
        ]
    );
}

/// reqwest with credentials in the proxy URL, as a node's proxy setting carries them.
async fn reqwest_with_credentials_in_the_url(proxy: &Proxy, port: u16) {
    common::crypto();
    let client = reqwest::Client::builder()
        .proxy(
            reqwest::Proxy::all(format!("http://{USER}:{PASSWORD}@{}", proxy.addr)).expect("proxy"),
        )
        .build()
        .expect("client");
    let body = client
        .get(format!("http://10.0.2.2:{port}/b"))
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("body");
    assert_eq!(body, "origin:/b:");
}

#[test]
fn the_binary_serves_with_its_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let auth = dir.path().join("proxy-auth");
    std::fs::write(&auth, format!("{USER}:{PASSWORD}\n")).expect("auth file");
    let log = dir.path().join("proxy.jsonl");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let origin = runtime.block_on(origin());
    let allow = format!("127.0.0.1:{}", origin.port);
    let child = common::spawn(
        env!("CARGO_BIN_EXE_test-proxy"),
        &[
            "--listen",
            "127.0.0.1:0",
            "--map",
            "10.0.2.2=127.0.0.1",
            "--allow",
            &allow,
            "--auth-file",
            auth.to_str().expect("path"),
            "--log",
            log.to_str().expect("path"),
        ],
        "auth:",
    );
    assert_eq!(child.stdout.last().map(String::as_str), Some("auth: basic"));
    let addr = child.url.trim_start_matches("http://").to_string();
    let response = runtime.block_on(async {
        let mut conn = BufReader::new(TcpStream::connect(&addr).await.expect("connect"));
        let request = format!(
            "GET http://10.0.2.2:{}/bin HTTP/1.1\r\nHost: 10.0.2.2\r\nProxy-Authorization: {}\r\nConnection: close\r\n\r\n",
            origin.port,
            basic(USER, PASSWORD)
        );
        conn.write_all(request.as_bytes()).await.expect("write");
        let response = read_response(&mut conn).await;
        // The proxy closes a `Connection: close` exchange after writing its log line.
        let mut rest = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut conn, &mut rest).await.expect("EOF");
        response
    });
    assert_eq!(
        (response.status, response.body.as_slice()),
        (200, b"origin:/bin:".as_slice())
    );
    drop(child);
    assert_eq!(log_lines(&log).len(), 1);

    // Without an --allow it does not start.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_test-proxy"))
        .args(["--listen", "127.0.0.1:0"])
        .stderr(std::process::Stdio::null())
        .status()
        .expect("runs");
    assert!(!status.success());
}

/// qemu's guestfwd runs `stdio-relay 127.0.0.1:PROXY` per guest connection: what goes in on
/// stdin reaches the proxy, the answers come out on stdout; the guest closing its side (stdin
/// EOF) still lets pipelined answers through, and the relay ends when the proxy closes.
#[test]
fn stdio_relay_carries_a_guest_connection_to_the_proxy() {
    use std::io::{Read, Write};
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let origin = runtime.block_on(origin());
    let proxy = runtime.block_on(start_proxy(&[("127.0.0.1", origin.port)], false, None));
    let relay = env!("CARGO_BIN_EXE_stdio-relay");
    let mut child = std::process::Command::new(relay)
        .arg(proxy.addr.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("relay runs");
    let port = origin.port;
    let requests = format!(
        "GET http://10.0.2.2:{port}/one HTTP/1.1\r\nHost: 10.0.2.2\r\n\r\nGET http://10.0.2.2:{port}/two HTTP/1.1\r\nHost: 10.0.2.2\r\n\r\n"
    );
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(requests.as_bytes()).expect("write");
    drop(stdin);
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read until the relay ends");
    assert!(child.wait().expect("exits").success());
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
    assert!(
        out.contains("origin:/one:") && out.contains("origin:/two:"),
        "{out}"
    );

    // Only loopback targets, and nothing without exactly one address.
    for args in [vec!["192.0.2.1:3128"], vec![], vec!["127.0.0.1"]] {
        let status = std::process::Command::new(relay)
            .args(&args)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("runs");
        assert_eq!(status.code(), Some(2), "{args:?}");
    }
}
