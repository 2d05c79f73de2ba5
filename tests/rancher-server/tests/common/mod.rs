//! Helpers shared by the integration tests: pinned HTTPS clients and a raw tunnel handshake.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use rancher_test_server::{Config, Server};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

pub const TOKEN: &str = "kfx8b6c9gq4lwt2ntl7z5r5zkk2mdhc6tt6w9cxm8lm5m9h6wbbvp4";

pub async fn server(config: Config) -> Server {
    let config = Config {
        tokens: vec![TOKEN.to_string()],
        ..config
    };
    rancher_test_server::start(config)
        .await
        .expect("server starts")
}

fn roots(pem: &str) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        roots
            .add(cert.expect("CA PEM parses"))
            .expect("CA is usable");
    }
    roots
}

pub fn tls(ca_pem: &str) -> Arc<rustls::ClientConfig> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots(ca_pem))
            .with_no_client_auth(),
    )
}

/// A client that trusts exactly `ca_pem`.
pub fn pinned(ca_pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls((*tls(ca_pem)).clone())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// What fetching the CA looks like: no verification.
pub fn insecure() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

pub fn params(json: &serde_json::Value) -> String {
    base64::engine::general_purpose::STANDARD.encode(json.to_string())
}

pub fn node_params(hostname: &str, address: &str, etcd: bool, cp: bool, worker: bool) -> String {
    let mut roles = vec![];
    if etcd {
        roles.push("etcd");
    }
    if worker {
        roles.push("worker");
    }
    if cp {
        roles.push("controlplane");
    }
    params(&serde_json::json!({"node": {
        "customConfig": {"address": address, "internalAddress": "", "roles": roles,
                         "label": {"env": "test"}, "taints": ["k=v:NoSchedule"]},
        "etcd": etcd, "controlPlane": cp, "worker": worker, "requestedHostname": hostname,
    }}))
}

/// Outcome of a tunnel handshake: Ok(open websocket) or Err((status, body)).
pub type Tunnel =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn tunnel(
    server: &Server,
    path: &str,
    token: Option<&str>,
    params: Option<&str>,
) -> Result<Tunnel, (u16, String)> {
    let url = format!("{}{}", server.url.replacen("https://", "wss://", 1), path);
    let mut request = url.into_client_request().expect("request");
    if let Some(token) = token {
        request.headers_mut().insert(
            "X-API-Tunnel-Token",
            HeaderValue::from_str(token).expect("header"),
        );
    }
    if let Some(params) = params {
        request.headers_mut().insert(
            "X-API-Tunnel-Params",
            HeaderValue::from_str(params).expect("header"),
        );
    }
    let connector = tokio_tungstenite::Connector::Rustls(tls(&server.ca_pem));
    match tokio_tungstenite::connect_async_tls_with_config(request, None, false, Some(connector))
        .await
    {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Err((
            response.status().as_u16(),
            response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).to_string())
                .unwrap_or_default(),
        )),
        Err(e) => panic!("handshake failed below HTTP: {e}"),
    }
}

/// Polls `check` until it returns Some, failing after a generous deadline (not a timing test:
/// the deadline only keeps a broken build from hanging).
pub async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
