//! TLS: a CA with a server certificate, and an HTTPS server presenting it.

/// A CA and a server certificate for 127.0.0.1 signed by it (Rancher's usual shape):
/// `(ca_pem, server_cert_pem, server_key_pem)`.
pub fn ca_and_server() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let srv_key = KeyPair::generate().unwrap();
    let srv_params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let srv_cert = srv_params.signed_by(&srv_key, &issuer).unwrap();
    (ca_cert.pem(), srv_cert.pem(), srv_key.serialize_pem())
}

/// Serves `app` over HTTPS with `cert`/`key` on a free port of 127.0.0.1, in the
/// background; returns its base URL (`https://127.0.0.1:PORT`).
pub async fn serve_tls(cert: &str, key: &str, app: axum::Router) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cfg = axum_server::tls_rustls::RustlsConfig::from_pem(
        cert.as_bytes().to_vec(),
        key.as_bytes().to_vec(),
    )
    .await
    .unwrap();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    l.set_nonblocking(true).unwrap();
    let server = axum_server::from_tcp_rustls(l, cfg).unwrap();
    tokio::spawn(async move { server.serve(app.into_make_service()).await.unwrap() });
    format!("https://{addr}")
}
