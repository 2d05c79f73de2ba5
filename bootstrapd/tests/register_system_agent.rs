//! System-agent registration against a Rancher double on loopback TLS (own CA, separate
//! server certificate, as Rancher is usually set up). Every request the double receives is
//! logged so the tests can assert what was (and was not) sent.

mod common;

use common::{SettingsBuilder, ca_and_server, serve_tls, temp_root};
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bootstrapd::actions::register::{NodeIdentity, RegisterError, register, register_with};
use bootstrapd::fsutil::HostRoot;
use bootstrapd::rancher::cacerts::{self, CaError};
use bootstrapd::rancher::system_agent::{self, SystemAgentError};
use bootstrapd::rancher::{Deadline, Tuning, cacerts::ServerTrust};
use bootstrapd::secret::Secret;
use bootstrapd::userdata::{Role, Settings, Taint, TaintEffect};

const TOKEN: &str = "kt7b9x2mfqzl8tq6w4cxj5n2rxdvpg4ll5hqbv7s7dzkx9x2mfqz";

#[derive(Clone, Debug)]
struct Seen {
    path: String,
    headers: Vec<(String, String)>,
}

/// How `/cacerts` answers a request carrying `Authorization` and `X-Cattle-Nonce`.
#[derive(Clone, Copy, PartialEq)]
enum Hmac {
    /// As Rancher before pkg/cacerts/handler.go authenticated the CA: no X-Cattle-Hash.
    Absent,
    /// The right HMAC for TOKEN.
    Right,
    /// A hash that does not match (not the Rancher that knows the token).
    Wrong,
}

#[derive(Clone)]
struct Double {
    ca_pem: String,
    /// Serve the CA only through the legacy settings API (Rancher < 2.6).
    legacy_only: bool,
    /// Serve a CA other than the one that signed the server certificate (a stale cacerts
    /// setting after a certificate change, or an interceptor).
    stale_ca: bool,
    hmac: Hmac,
    /// The agent-tls-mode in the install script's preamble; None: no STRICT_VERIFY line.
    strict: Option<bool>,
    /// Answer this many /v3/connect/agent requests with `fail_status` and `fail_body` first.
    fail_first: usize,
    fail_status: StatusCode,
    fail_body: &'static str,
    connect_hits: Arc<AtomicUsize>,
    log: Arc<Mutex<Vec<Seen>>>,
}

impl Double {
    fn new(ca_pem: &str) -> Self {
        Double {
            ca_pem: ca_pem.to_string(),
            legacy_only: false,
            stale_ca: false,
            hmac: Hmac::Absent,
            strict: None,
            fail_first: 0,
            fail_status: StatusCode::SERVICE_UNAVAILABLE,
            fail_body: "not now",
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
        "/cacerts" if !d.legacy_only => {
            let mut resp = d.ca_pem.clone().into_response();
            let bearer = header("authorization");
            if let (Some(auth), Some(nonce)) = (bearer, header("x-cattle-nonce")) {
                // The handler keys the HMAC with the token whose hash the agent sent.
                let knows = auth == format!("Bearer {}", cacerts::token_hash(&Secret::new(TOKEN)));
                let hash = match d.hmac {
                    Hmac::Right if knows => Some(cacerts::cacerts_hmac(
                        &Secret::new(TOKEN),
                        &nonce,
                        d.ca_pem.as_bytes(),
                    )),
                    Hmac::Wrong => Some(cacerts::cacerts_hmac(
                        &Secret::new("another-token"),
                        &nonce,
                        d.ca_pem.as_bytes(),
                    )),
                    _ => None,
                };
                if let Some(h) = hash {
                    resp.headers_mut()
                        .insert("x-cattle-hash", h.parse().unwrap());
                }
            }
            resp
        }
        "/system-agent-install.sh" => {
            // Rancher's LinuxInstallScript: env preamble, then the script itself.
            let line = match d.strict {
                Some(v) => format!("STRICT_VERIFY=\"{v}\"\n"),
                None => String::new(),
            };
            format!("#!/usr/bin/env sh\n{line}\n#!/bin/sh\necho install\n").into_response()
        }
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
                return (d.fail_status, d.fail_body).into_response();
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

/// Starts the double; returns its URL and the CA PEM text it serves.
async fn start(configure: impl FnOnce(&mut Double)) -> (String, Double) {
    let (ca, cert, key) = ca_and_server();
    let mut d = Double::new(&ca);
    configure(&mut d);
    if d.stale_ca {
        d.ca_pem = ca_and_server().0;
    }
    let app = Router::new().fallback(handle).with_state(d.clone());
    (serve_tls(&cert, &key, app).await, d)
}

fn settings(server: &str, checksum: Option<String>, deadline: u64) -> Settings {
    SettingsBuilder::system_agent(server)
        .roles(&[Role::Etcd, Role::Controlplane])
        .token(TOKEN)
        .ca_checksum(checksum)
        .node_name("node1")
        .label("cattle.io/os", "linux")
        .label("rack", "r1")
        .taint(Taint {
            key: "dedicated".into(),
            value: "etcd".into(),
            effect: TaintEffect::NoSchedule,
        })
        .deadline(deadline)
        .build()
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

/// The token itself (not its sha256, which /cacerts may carry) in any header or the path.
fn carries_token(s: &Seen) -> bool {
    s.headers.iter().any(|(_, v)| v.contains(TOKEN)) || s.path.contains(TOKEN)
}

/// Every request before the first `/v3/connect/agent` is free of the token.
fn no_token_before_connect(seen: &[Seen]) {
    for s in seen.iter().take_while(|s| s.path != "/v3/connect/agent") {
        assert!(
            !carries_token(s),
            "token sent to {} before the CA was proven",
            s.path
        );
    }
}

#[tokio::test]
async fn registers_with_exact_headers_and_reuses_cattle_id() {
    let (url, d) = start(|_| {}).await;
    let sum = cacerts::checksum(d.ca_pem.as_bytes());
    let (_dir, root) = temp_root();
    let s = settings(&url, Some(sum.clone()), 60);

    let first = register(&root, &s, &node()).await.unwrap();
    assert_eq!(first.ca_checksum.as_deref(), Some(sum.as_str()));
    assert_eq!(serde_json::to_value(first.mode).unwrap(), "system-agent");
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
    assert_eq!(paths[2], "/system-agent-install.sh");
    assert!(paths[3].starts_with("/assets/rancher-system-agent-"));
    assert_eq!(paths[4], "/assets/system-agent-uninstall.sh");
    assert_eq!(paths[5], "/v3/connect/agent");
    assert_eq!(paths.len(), 6);
    for s in &d.seen()[..5] {
        assert!(!carries_token(s), "token sent to {}", s.path);
        assert!(
            s.headers.iter().all(|(k, _)| k != "authorization"),
            "with a checksum nothing before connect carries Authorization: {}",
            s.path
        );
    }

    let connect = d.seen()[5].clone();
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
    // The double's install script has no STRICT_VERIFY line: install.sh's default.
    assert!(
        std::fs::read_to_string(p(system_agent::ENV_FILE))
            .unwrap()
            .contains("CATTLE_AGENT_STRICT_VERIFY=false\n")
    );
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
    let (_dir, root) = temp_root();

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
async fn unauthorized_while_rancher_starts_is_retried_and_registers_once() {
    // Current Rancher answers 401 until its informers have synced: not a token verdict.
    let (url, d) = start(|d| {
        d.fail_first = 3;
        d.fail_status = StatusCode::UNAUTHORIZED;
    })
    .await;
    let sum = cacerts::checksum(d.ca_pem.as_bytes());
    let (_dir, root) = temp_root();
    let rec = register(&root, &settings(&url, Some(sum), 120), &node())
        .await
        .unwrap();
    assert_eq!(d.connect_hits.load(Ordering::SeqCst), 4);
    assert!(rec.system_agent.is_some());
    let connects = d
        .seen()
        .iter()
        .filter(|s| s.path == "/v3/connect/agent")
        .count();
    assert_eq!(connects, 4, "one registration: the retries and the success");
    no_token_before_connect(&d.seen());
}

#[tokio::test]
async fn machine_not_found_keeps_trying_then_names_the_token() {
    let (url, d) = start(|d| {
        d.fail_first = usize::MAX;
        d.fail_status = StatusCode::INTERNAL_SERVER_ERROR;
        d.fail_body = "machine not found by request\n";
    })
    .await;
    let sum = cacerts::checksum(d.ca_pem.as_bytes());
    let (_dir, root) = temp_root();
    let shown = Mutex::new(Vec::<String>::new());
    let progress = |m: &str| shown.lock().unwrap().push(m.to_string());
    let tuning = Tuning {
        not_found_window: std::time::Duration::from_secs(1),
        progress: &progress,
    };
    let err = register_with(&root, &settings(&url, Some(sum), 120), &node(), &tuning)
        .await
        .unwrap_err();
    assert!(err.is_token_refused(), "{err}");
    assert!(
        matches!(
            err,
            RegisterError::SystemAgent(SystemAgentError::UnknownToken { .. })
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("does not know this registration token"),
        "{msg}"
    );
    assert!(msg.contains("update rancher.token"), "{msg}");
    assert!(!msg.contains(TOKEN));
    // It kept trying before giving up, and said why while it did.
    assert!(d.connect_hits.load(Ordering::SeqCst) >= 2);
    let shown = shown.lock().unwrap();
    assert!(
        shown
            .iter()
            .any(|m| m.contains("machine not found by request")
                && m.contains("token may be wrong, expired or rotated")),
        "{shown:?}"
    );
    assert!(!root.path(system_agent::CONNECTION_INFO_FILE).exists());
}

#[tokio::test]
async fn machine_not_found_while_capi_starts_then_registers() {
    let (url, d) = start(|d| {
        d.fail_first = 2;
        d.fail_status = StatusCode::INTERNAL_SERVER_ERROR;
        d.fail_body = "machine not found by request\n";
    })
    .await;
    let sum = cacerts::checksum(d.ca_pem.as_bytes());
    let (_dir, root) = temp_root();
    register(&root, &settings(&url, Some(sum), 120), &node())
        .await
        .unwrap();
    assert_eq!(d.connect_hits.load(Ordering::SeqCst), 3);
    assert!(root.path(system_agent::CONNECTION_INFO_FILE).exists());
}

fn connect_header(d: &Double, name: &str) -> Option<String> {
    d.seen()
        .iter()
        .rfind(|s| s.path == "/v3/connect/agent")
        .unwrap()
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.clone())
}

#[tokio::test]
async fn node_name_and_addresses_only_when_the_userdata_sets_them() {
    let (url, d) = start(|_| {}).await;
    let sum = cacerts::checksum(d.ca_pem.as_bytes());
    let (_dir, root) = temp_root();
    let mut s = settings(&url, Some(sum), 60);
    s.rancher.node_name = None;
    // The hostname fallback is the record's name, not a header.
    let bare = NodeIdentity {
        node_name: "host-from-hostname".into(),
        address: None,
        internal_address: None,
    };
    register(&root, &s, &bare).await.unwrap();
    for h in [
        "x-cattle-node-name",
        "x-cattle-address",
        "x-cattle-internal-address",
    ] {
        assert_eq!(connect_header(&d, h), None, "{h} sent though unset");
    }
    register(
        &root,
        &settings(&url, s.rancher.ca_checksum.clone(), 60),
        &node(),
    )
    .await
    .unwrap();
    assert_eq!(
        connect_header(&d, "x-cattle-node-name").as_deref(),
        Some("node1")
    );
    assert_eq!(
        connect_header(&d, "x-cattle-address").as_deref(),
        Some("10.0.2.15")
    );
    assert_eq!(
        connect_header(&d, "x-cattle-internal-address").as_deref(),
        Some("192.168.56.11")
    );
}

#[tokio::test]
async fn interface_name_address_is_sent_as_its_ipv4() {
    use bootstrapd::facts::network::{NetworkError, resolve_address};
    // Loopback is the one interface every test host has.
    let lo = resolve_address(&HostRoot::default(), "internal_address", "lo")
        .await
        .unwrap();
    assert_eq!(lo.to_string(), "127.0.0.1");
    let err = resolve_address(&HostRoot::default(), "address", "nosuchif0")
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        NetworkError::NoInterface { key: "address", .. }
    ));
    assert!(err.to_string().contains("rancher.address"), "{err}");
    let (url, d) = start(|_| {}).await;
    let sum = cacerts::checksum(d.ca_pem.as_bytes());
    let (_dir, root) = temp_root();
    let n = NodeIdentity {
        node_name: "node1".into(),
        address: None,
        internal_address: Some(lo.to_string()),
    };
    register(&root, &settings(&url, Some(sum), 60), &n)
        .await
        .unwrap();
    assert_eq!(
        connect_header(&d, "x-cattle-internal-address").as_deref(),
        Some("127.0.0.1")
    );
}

fn env_text(root: &HostRoot) -> String {
    std::fs::read_to_string(root.path(system_agent::ENV_FILE)).unwrap()
}

#[tokio::test]
async fn strict_verify_from_the_server_and_from_the_override() {
    let (url, d) = start(|d| d.strict = Some(true)).await;
    let sum = cacerts::checksum(d.ca_pem.as_bytes());
    let (_dir, root) = temp_root();
    let rec = register(&root, &settings(&url, Some(sum.clone()), 60), &node())
        .await
        .unwrap();
    assert!(env_text(&root).contains("CATTLE_AGENT_STRICT_VERIFY=true\n"));
    assert!(rec.system_agent.unwrap().strict_verify);
    no_token_before_connect(&d.seen());

    // The userdata wins over the server, and is not asked of it.
    let mut s = settings(&url, Some(sum), 60);
    s.rancher.strict_verify = Some(false);
    let before = d.seen().len();
    register(&root, &s, &node()).await.unwrap();
    assert!(env_text(&root).contains("CATTLE_AGENT_STRICT_VERIFY=false\n"));
    assert!(
        d.seen()[before..]
            .iter()
            .all(|s| s.path != "/system-agent-install.sh")
    );
}

#[tokio::test]
async fn strict_without_a_proven_ca_is_an_error_before_any_token() {
    let (url, d) = start(|_| {}).await;
    let (_dir, root) = temp_root();
    let mut s = settings(&url, None, 60);
    s.rancher.strict_verify = Some(true);
    let err = register(&root, &s, &node()).await.unwrap_err();
    assert!(
        matches!(
            err,
            RegisterError::SystemAgent(SystemAgentError::StrictWithoutCa { .. })
        ),
        "{err}"
    );
    assert!(d.seen().iter().all(|s| !carries_token(s)));
    assert_eq!(d.connect_hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn hmac_proven_ca_is_pinned_and_the_token_follows_it() {
    let (url, d) = start(|d| d.hmac = Hmac::Right).await;
    let (_dir, root) = temp_root();
    let rec = register(&root, &settings(&url, None, 60), &node())
        .await
        .unwrap();
    assert_eq!(
        rec.ca_checksum.as_deref(),
        Some(cacerts::checksum(d.ca_pem.as_bytes()).as_str())
    );
    assert!(rec.trust.starts_with("pinned CA"), "{}", rec.trust);
    let seen = d.seen();
    assert_eq!(seen[0].path, "/cacerts");
    let auth = seen[0]
        .headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v.clone())
        .unwrap();
    assert_eq!(
        auth,
        format!("Bearer {}", cacerts::token_hash(&Secret::new(TOKEN)))
    );
    let nonce = seen[0]
        .headers
        .iter()
        .find(|(k, _)| k == "x-cattle-nonce")
        .map(|(_, v)| v.clone())
        .unwrap();
    assert!(nonce.len() >= 32, "at least 16 random bytes: {nonce}");
    no_token_before_connect(&seen);
    assert_eq!(d.connect_hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn wrong_hmac_is_an_error_and_no_token_goes_out() {
    let (url, d) = start(|d| d.hmac = Hmac::Wrong).await;
    let (_dir, root) = temp_root();
    let err = register(&root, &settings(&url, None, 60), &node())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RegisterError::SystemAgent(SystemAgentError::Ca(CaError::HashMismatch { .. }))
        ),
        "{err}"
    );
    assert!(d.seen().iter().all(|s| !carries_token(s)));
    assert!(d.seen().iter().all(|s| s.path == "/cacerts"));
    assert_eq!(d.connect_hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn stale_checksum_ca_fails_fast_without_the_token() {
    // /cacerts serves a CA (and the checksum is of it), but another CA signed the server's
    // certificate: the proven CA does not verify the server.
    let (url, d) = start(|d| d.stale_ca = true).await;
    let sum = cacerts::checksum(d.ca_pem.as_bytes());
    let (_dir, root) = temp_root();
    // A deadline far beyond the test's patience: only the fail-fast rule ends this.
    let err = register(&root, &settings(&url, Some(sum), 3600), &node())
        .await
        .unwrap_err();
    assert!(err.is_untrusted_server(), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("stale rancher.ca_checksum"), "{msg}");
    assert!(msg.contains("does not verify"), "{msg}");
    assert!(d.seen().iter().all(|s| !carries_token(s)));
    assert!(d.seen().iter().all(|s| s.path == "/cacerts"));
    assert_eq!(d.connect_hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn unavailable_is_retried_until_success() {
    let (url, d) = start(|d| {
        d.fail_first = 2;
        d.fail_status = StatusCode::SERVICE_UNAVAILABLE;
    })
    .await;
    let sum = cacerts::checksum(d.ca_pem.as_bytes());
    let (_dir, root) = temp_root();
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
        &Default::default(),
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
    let (_dir, root) = temp_root();
    register(&root, &settings(&url, Some(sum), 60), &node())
        .await
        .unwrap();
}

#[tokio::test]
async fn without_checksum_or_hmac_the_system_store_applies_never_insecure() {
    // An older Rancher: /cacerts answers without X-Cattle-Hash.
    let (url, d) = start(|d| d.hmac = Hmac::Absent).await;
    let (_dir, root) = temp_root();
    // The double's CA is in no public root program: verification must fail, and fast.
    let err = register(&root, &settings(&url, None, 3600), &node())
        .await
        .unwrap_err();
    assert!(err.is_untrusted_server(), "{err}");
    assert!(err.to_string().contains("system trust store"), "{err}");
    assert!(
        d.seen().iter().all(|s| !carries_token(s)),
        "an unverified server received the token"
    );
    assert_eq!(d.connect_hits.load(Ordering::SeqCst), 0);
}

/// `trusted_ca` widens the system store, never a checksum: a server whose CA the userdata
/// trusts but whose /cacerts does not hash to ca_checksum is refused before any token.
#[tokio::test]
async fn trusted_ca_does_not_override_a_wrong_checksum() {
    let (url, d) = start(|_| {}).await;
    let wrong = cacerts::checksum(ca_and_server().0.as_bytes());
    let (_dir, root) = temp_root();
    let mut s = settings(&url, Some(wrong), 30);
    s.trusted_ca = SettingsBuilder::system_agent(&url)
        .trusted_ca(&d.ca_pem)
        .build()
        .trusted_ca;
    let err = register(&root, &s, &node()).await.unwrap_err();
    assert!(
        matches!(
            err,
            RegisterError::SystemAgent(SystemAgentError::Ca(CaError::Mismatch { .. }))
        ),
        "{err}"
    );
    assert!(d.seen().iter().all(|s| !carries_token(s)));
    assert_eq!(d.connect_hits.load(Ordering::SeqCst), 0);
}

/// Without a checksum and without X-Cattle-Hash the system store applies, and with it the
/// userdata's CAs: a server signed by one is trusted (where it was refused without it).
#[tokio::test]
async fn without_checksum_the_system_store_takes_the_trusted_ca() {
    let (url, d) = start(|d| d.hmac = Hmac::Absent).await;
    let (_dir, root) = temp_root();
    let mut s = settings(&url, None, 60);
    s.trusted_ca = SettingsBuilder::system_agent(&url)
        .trusted_ca(&d.ca_pem)
        .build()
        .trusted_ca;
    let result = register(&root, &s, &node()).await;
    if let Err(e) = &result {
        assert!(!e.is_untrusted_server(), "{e}");
    }
    assert!(d.connect_hits.load(Ordering::SeqCst) >= 1, "{result:?}");
}
