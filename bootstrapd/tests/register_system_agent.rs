//! System-agent registration against a Rancher double on loopback TLS (own CA, separate
//! server certificate, as Rancher is usually set up). Every request the double receives is
//! logged so the tests can assert what was (and was not) sent.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bootstrapd::actions::register::{NodeIdentity, RegisterError, register};
use bootstrapd::fsutil::HostRoot;
use bootstrapd::rancher::cacerts::{self, CaError};
use bootstrapd::rancher::system_agent;
use bootstrapd::rancher::{Deadline, cacerts::ServerTrust};
use bootstrapd::secret::Secret;
use bootstrapd::userdata::{RancherSettings, RegistrationMode, Role, Settings, Taint, TaintEffect};

const TOKEN: &str = "kt7b9x2mfqzl8tq6w4cxj5n2rxdvpg4ll5hqbv7s7dzkx9x2mfqz";

#[derive(Clone, Debug)]
struct Seen {
    path: String,
    headers: Vec<(String, String)>,
}

#[derive(Clone)]
struct Double {
    ca_pem: String,
    /// Serve the CA only through the legacy settings API (Rancher < 2.6).
    legacy_only: bool,
    /// Answer this many /v3/connect/agent requests with `fail_status` first.
    fail_first: usize,
    fail_status: StatusCode,
    connect_hits: Arc<AtomicUsize>,
    log: Arc<Mutex<Vec<Seen>>>,
}

impl Double {
    fn new(ca_pem: &str) -> Self {
        Double {
            ca_pem: ca_pem.to_string(),
            legacy_only: false,
            fail_first: 0,
            fail_status: StatusCode::SERVICE_UNAVAILABLE,
            connect_hits: Arc::default(),
            log: Arc::default(),
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }
}

async fn handle(State(d): State<Double>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    d.log.lock().unwrap().push(Seen {
        path: path.clone(),
        headers: headers.clone(),
    });
    let header = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    match path.as_str() {
        "/cacerts" if !d.legacy_only => d.ca_pem.clone().into_response(),
        "/v3/settings/cacerts" => {
            // The setting's value has no trailing newline; agents add one before hashing.
            let v = d.ca_pem.trim_end_matches('\n');
            axum::Json(serde_json::json!({"id": "cacerts", "value": v})).into_response()
        }
        "/healthz" => "ok".into_response(),
        p if p.starts_with("/assets/rancher-system-agent-") => {
            b"\x7fELF fake agent binary".to_vec().into_response()
        }
        "/assets/system-agent-uninstall.sh" => "#!/bin/sh\necho uninstall\n".into_response(),
        "/v3/connect/agent" => {
            let n = d.connect_hits.fetch_add(1, Ordering::SeqCst);
            if n < d.fail_first {
                return (d.fail_status, "not now").into_response();
            }
            if header("authorization").as_deref() != Some(&format!("Bearer {TOKEN}")) {
                return (StatusCode::UNAUTHORIZED, "unauthorized").into_response();
            }
            axum::Json(serde_json::json!({
                "namespace": "fleet-default",
                "secretName": "custom-0123456789ab-machine-plan",
                "kubeConfig": "apiVersion: v1\nkind: Config\n",
            }))
            .into_response()
        }
        _ => (StatusCode::NOT_FOUND, "404 page not found").into_response(),
    }
}

fn ca_and_server() -> (String, String, String) {
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

/// Starts the double; returns its URL and the CA PEM text it serves.
async fn start(configure: impl FnOnce(&mut Double)) -> (String, Double) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (ca, cert, key) = ca_and_server();
    let mut d = Double::new(&ca);
    configure(&mut d);
    let cfg = axum_server::tls_rustls::RustlsConfig::from_pem(cert.into_bytes(), key.into_bytes())
        .await
        .unwrap();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    l.set_nonblocking(true).unwrap();
    let server = axum_server::from_tcp_rustls(l, cfg).unwrap();
    let app = Router::new().fallback(handle).with_state(d.clone());
    tokio::spawn(async move { server.serve(app.into_make_service()).await.unwrap() });
    (format!("https://{addr}"), d)
}

fn settings(server: &str, checksum: Option<String>, deadline: u64) -> Settings {
    Settings {
        roles: vec![Role::Etcd, Role::Controlplane],
        rancher: RancherSettings {
            server: server.to_string(),
            token: Secret::new(TOKEN),
            ca_checksum: checksum,
            mode: RegistrationMode::SystemAgent,
            agent_image: String::new(),
            node_name: None,
            address: None,
            internal_address: None,
            labels: BTreeMap::from([
                ("cattle.io/os".to_string(), "linux".to_string()),
                ("rack".to_string(), "r1".to_string()),
            ]),
            taints: vec![Taint {
                key: "dedicated".into(),
                value: "etcd".into(),
                effect: TaintEffect::NoSchedule,
            }],
            deadline_seconds: deadline,
            splay_seconds: 0,
            system_agent: Default::default(),
        },
        runtime: Default::default(),
        host: Default::default(),
    }
}

fn node() -> NodeIdentity {
    NodeIdentity {
        node_name: "node1".into(),
        address: Some("10.0.2.15".into()),
        internal_address: Some("192.168.56.11".into()),
    }
}

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn carries_token(s: &Seen) -> bool {
    s.headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("authorization") || v.contains(TOKEN))
        || s.path.contains(TOKEN)
}

#[tokio::test]
async fn registers_with_exact_headers_and_reuses_cattle_id() {
    let (url, d) = start(|_| {}).await;
    let sum = cacerts::checksum(d.ca_pem.as_bytes());
    let dir = tempfile::tempdir().unwrap();
    let root = HostRoot::new(Some(dir.path().to_path_buf()));
    let s = settings(&url, Some(sum.clone()), 60);

    let first = register(&root, &s, &node()).await.unwrap();
    assert_eq!(first.ca_checksum.as_deref(), Some(sum.as_str()));
    assert_eq!(first.mode, "system-agent");
    assert_eq!(first.roles, vec!["etcd", "controlplane"]);
    let sa = first.system_agent.clone().unwrap();
    assert!(sa.cattle_id_created);
    assert_eq!(sa.cattle_id.len(), 63);
    assert!(sa.machine_name.starts_with("custom-"));
    // The record goes to the journal: it must not hold the token.
    assert!(!serde_json::to_string(&first).unwrap().contains(TOKEN));

    // The order the installer uses: CA, health, assets, then the token-bearing call.
    let paths: Vec<String> = d.seen().iter().map(|s| s.path.clone()).collect();
    assert_eq!(paths[0], "/cacerts");
    assert_eq!(paths[1], "/healthz");
    assert!(paths[2].starts_with("/assets/rancher-system-agent-"));
    assert_eq!(paths[3], "/assets/system-agent-uninstall.sh");
    assert_eq!(paths[4], "/v3/connect/agent");
    assert_eq!(paths.len(), 5);
    for s in &d.seen()[..4] {
        assert!(!carries_token(s), "token sent to {}", s.path);
    }

    let connect = d.seen()[4].clone();
    let h = |n: &str| {
        connect
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("header {n} missing"))
            .to_string()
    };
    assert_eq!(h("authorization"), format!("Bearer {TOKEN}"));
    assert_eq!(h("x-cattle-id"), sa.cattle_id);
    assert_eq!(h("x-cattle-role-etcd"), "true");
    assert_eq!(h("x-cattle-role-control-plane"), "true");
    assert_eq!(h("x-cattle-role-worker"), "false");
    assert_eq!(h("x-cattle-node-name"), "node1");
    assert_eq!(h("x-cattle-address"), "10.0.2.15");
    assert_eq!(h("x-cattle-internal-address"), "192.168.56.11");
    assert_eq!(h("x-cattle-labels"), "cattle.io/os=linux,rack=r1");
    assert_eq!(h("x-cattle-taints"), "dedicated=etcd:NoSchedule");

    // Files as the installer leaves them.
    let p = |h: &str| root.path(h);
    let info = std::fs::read_to_string(p(system_agent::CONNECTION_INFO_FILE)).unwrap();
    assert!(info.contains("fleet-default"));
    assert_eq!(mode(&p(system_agent::CONNECTION_INFO_FILE)), 0o600);
    assert_eq!(mode(&p(system_agent::CONFIG_FILE)), 0o600);
    assert_eq!(mode(&p(system_agent::CATTLE_ID_FILE)), 0o600);
    assert_eq!(mode(&p(system_agent::ENV_FILE)), 0o600);
    assert_eq!(mode(&p(system_agent::BINARY)), 0o755);
    assert_eq!(mode(&p(system_agent::UNINSTALL_SCRIPT)), 0o755);
    assert_eq!(mode(&p(system_agent::VAR_DIR)), 0o700);
    assert_eq!(
        std::fs::read(p(system_agent::BINARY)).unwrap(),
        b"\x7fELF fake agent binary"
    );
    assert!(
        std::fs::read_to_string(p(system_agent::UNIT_FILE))
            .unwrap()
            .contains("ExecStart=/usr/local/bin/rancher-system-agent sentinel")
    );
    assert!(
        std::fs::read_to_string(p(system_agent::CONFIG_FILE))
            .unwrap()
            .contains("connectionInfoFile: /var/lib/rancher/agent/rancher2_connection_info.json")
    );
    let svc = first
        .findings
        .iter()
        .find(|f| f.step == "register.service")
        .unwrap();
    assert_eq!(svc.outcome, bootstrapd::plan::Outcome::Skipped);

    // A second run presents the same CATTLE_ID: Rancher sees the same machine.
    let second = register(&root, &s, &node()).await.unwrap();
    let sa2 = second.system_agent.unwrap();
    assert_eq!(sa2.cattle_id, sa.cattle_id);
    assert!(!sa2.cattle_id_created);
    let ids: Vec<String> = d
        .seen()
        .iter()
        .filter(|s| s.path == "/v3/connect/agent")
        .map(|s| {
            s.headers
                .iter()
                .find(|(k, _)| k == "x-cattle-id")
                .unwrap()
                .1
                .clone()
        })
        .collect();
    assert_eq!(ids, vec![sa.cattle_id.clone(), sa.cattle_id]);
}

#[tokio::test]
async fn wrong_checksum_sends_no_token() {
    let (url, d) = start(|_| {}).await;
    let (other_ca, _, _) = ca_and_server();
    let wrong = cacerts::checksum(other_ca.as_bytes());
    let right = cacerts::checksum(d.ca_pem.as_bytes());
    let dir = tempfile::tempdir().unwrap();
    let root = HostRoot::new(Some(dir.path().to_path_buf()));

    let err = register(&root, &settings(&url, Some(wrong.clone()), 30), &node())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            err,
            RegisterError::SystemAgent(bootstrapd::rancher::system_agent::SystemAgentError::Ca(
                CaError::Mismatch { .. }
            ))
        ),
        "{msg}"
    );
    assert!(
        msg.contains(&wrong) && msg.contains(&right),
        "both checksums: {msg}"
    );
    assert!(!msg.contains(TOKEN));
    let seen = d.seen();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|s| !carries_token(s)),
        "a token-bearing request reached the server: {seen:?}"
    );
    assert!(
        seen.iter()
            .all(|s| s.path == "/cacerts" || s.path == "/v3/settings/cacerts"),
        "only the CA may be fetched: {seen:?}"
    );
    assert_eq!(d.connect_hits.load(Ordering::SeqCst), 0);
    assert!(!root.path(system_agent::CATTLE_ID_FILE).exists());
}

#[tokio::test]
async fn token_refused_is_not_retried() {
    let (url, d) = start(|d| {
        d.fail_first = 1000;
        d.fail_status = StatusCode::UNAUTHORIZED;
    })
    .await;
    let sum = cacerts::checksum(d.ca_pem.as_bytes());
    let dir = tempfile::tempdir().unwrap();
    let root = HostRoot::new(Some(dir.path().to_path_buf()));
    let err = register(&root, &settings(&url, Some(sum), 60), &node())
        .await
        .unwrap_err();
    assert!(err.is_token_refused(), "{err}");
    assert!(err.to_string().contains("refused the registration token"));
    assert!(!err.to_string().contains(TOKEN));
    assert_eq!(d.connect_hits.load(Ordering::SeqCst), 1);
    assert!(!root.path(system_agent::CONNECTION_INFO_FILE).exists());
}

#[tokio::test]
async fn unavailable_is_retried_until_success() {
    let (url, d) = start(|d| {
        d.fail_first = 2;
        d.fail_status = StatusCode::SERVICE_UNAVAILABLE;
    })
    .await;
    let sum = cacerts::checksum(d.ca_pem.as_bytes());
    let dir = tempfile::tempdir().unwrap();
    let root = HostRoot::new(Some(dir.path().to_path_buf()));
    let rec = register(&root, &settings(&url, Some(sum), 120), &node())
        .await
        .unwrap();
    assert_eq!(d.connect_hits.load(Ordering::SeqCst), 3);
    assert!(rec.system_agent.is_some());
    assert!(root.path(system_agent::CONNECTION_INFO_FILE).exists());
}

#[tokio::test]
async fn legacy_settings_endpoint_is_hashed_with_newline_and_pinned() {
    let (url, d) = start(|d| d.legacy_only = true).await;
    // The node command's checksum: sha256 of the setting value plus "\n".
    let value = d.ca_pem.trim_end_matches('\n');
    let sum = cacerts::checksum(format!("{value}\n").as_bytes());
    let trust = cacerts::establish(
        &url,
        Some(&sum),
        &Deadline::after(std::time::Duration::from_secs(30)),
    )
    .await
    .unwrap();
    match &trust {
        ServerTrust::Pinned {
            source, checksum, ..
        } => {
            assert_eq!(*source, cacerts::CaSource::Setting);
            assert_eq!(checksum, &sum);
        }
        other => panic!("expected a pinned CA, got {other:?}"),
    }
    // The pinned CA verifies the server.
    let dir = tempfile::tempdir().unwrap();
    let root = HostRoot::new(Some(dir.path().to_path_buf()));
    register(&root, &settings(&url, Some(sum), 60), &node())
        .await
        .unwrap();
}

#[tokio::test]
async fn without_checksum_the_system_store_applies_never_insecure() {
    let (url, d) = start(|_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let root = HostRoot::new(Some(dir.path().to_path_buf()));
    // The double's CA is in no public root program: verification must fail.
    let err = register(&root, &settings(&url, None, 3), &node())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RegisterError::SystemAgent(system_agent::SystemAgentError::Http {
                step: "healthz",
                ..
            })
        ),
        "{err}"
    );
    assert!(
        d.seen().iter().all(|s| !carries_token(s)),
        "an unverified server received the token"
    );
    assert_eq!(d.connect_hits.load(Ordering::SeqCst), 0);
}
