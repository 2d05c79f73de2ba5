//! Fault campaign (issue 7): bootstrapd's real system-agent registration
//! (`actions::register`, mode system-agent, under a test `HostRoot`) and its real datasource
//! fetch (EC2 IMDSv2 and NoCloud-net on loopback) against servers that misbehave: 503 windows,
//! connection resets, slow replies, stalls beyond the attempt timeout, truncated and oversized
//! replies, and servers whose TLS chain is not the CA they publish.
//!
//! Each Rancher round puts a fault-injecting TLS front (this file) between bootstrapd and the
//! in-process Rancher test server. A front either holds a certificate from the test server's own
//! CA (a faithful but flaky proxy) or from a foreign CA (a man in the middle that relays the
//! real `/cacerts`, so the checksum matches what it serves but not what it presents). The test
//! server itself can also serve a decoy CA (`wrong_ca`).
//!
//! Invariants checked after all rounds:
//! - no request carrying the token (`Authorization` / `X-API-Tunnel-Token`) ever reached a
//!   server or front whose TLS chain is not the CA it publishes;
//! - no round against such a server registered;
//! - rounds without faults, and rounds with only a 503 window, always registered;
//! - every registration reported done is in the server's record, with its files written
//!   0600 below the round's root;
//! - every datasource fetch that succeeded returned exactly the served userdata (a truncated
//!   reply is never taken for userdata).
//!
//! The tally (outcome per scenario) is printed (`--nocapture`). Knobs, for
//! scripts/fault-campaign.sh: FAULT_CAMPAIGN_ROUNDS (Rancher rounds, default 48),
//! FAULT_CAMPAIGN_DS_ROUNDS (datasource rounds, default 40), FAULT_CAMPAIGN_SEED,
//! FAULT_CAMPAIGN_PARALLEL (default 16), FAULT_CAMPAIGN_DEADLINE_SECS (registration budget,
//! default 15), FAULT_CAMPAIGN_STALL_SECS (Rancher stall, default 25: beyond the budget, since
//! bootstrapd's Rancher attempt timeouts are 30 s and more; the full campaign uses 35 s with a
//! longer budget so that a stalled attempt is retried).

mod common;

use common::{SettingsBuilder, temp_root};

use std::collections::BTreeMap;
use std::future::Ready;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum_server::accept::Accept;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use bootstrapd::actions::register::{NodeIdentity, RegisterError, RegistrationRecord, register};
use bootstrapd::config::AgentConfig;
use bootstrapd::datasource::{self, DatasourceError, Fetched};
use bootstrapd::http::{Cause, HttpError};
use bootstrapd::rancher::cacerts::CaError;
use bootstrapd::rancher::system_agent::{self, SystemAgentError};
use bootstrapd::userdata::Settings;
use rancher_test_server::{Config, Server, ca};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;

const TOKEN: &str = "fc7q2w3e4r5t6y7u8i9o0pasdfghjklzxcvbnmqwertyuiopzz";

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

// --- fault injection -----------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    Pass,
    Unavailable,
    Slow,
    Stall,
    Truncate,
    Oversize,
    /// 302 to the same path on a plain-http server ([`FrontState::downgrade_to`]).
    Downgrade,
}

#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Relative weights of the per-request faults.
    pass: u32,
    unavailable: u32,
    slow: u32,
    stall: u32,
    truncate: u32,
    oversize: u32,
    /// Percentage of TCP connections reset before any byte.
    reset_percent: u32,
    /// Every request answers 503 for this long after the front starts.
    window_503: Duration,
    /// The very first request stalls (`stall_for`), whatever the weights say.
    stall_first: bool,
    stall_for: Duration,
    oversize_bytes: usize,
}

impl Plan {
    fn clean() -> Self {
        Plan {
            pass: 1,
            unavailable: 0,
            slow: 0,
            stall: 0,
            truncate: 0,
            oversize: 0,
            reset_percent: 0,
            window_503: Duration::ZERO,
            stall_first: false,
            stall_for: Duration::ZERO,
            oversize_bytes: 0,
        }
    }

    fn flaky(stall_for: Duration, oversize_bytes: usize) -> Self {
        Plan {
            pass: 70,
            unavailable: 10,
            slow: 8,
            stall: 1,
            truncate: 8,
            oversize: 1,
            reset_percent: 10,
            window_503: Duration::ZERO,
            stall_first: false,
            stall_for,
            oversize_bytes,
        }
    }
}

/// What a front relays to when it does not inject a fault.
enum Backend {
    /// A Rancher test server, verified against its CA.
    Rancher {
        base: String,
        client: reqwest::Client,
    },
    /// Fixed content (a metadata service): path -> body.
    Static(BTreeMap<String, Vec<u8>>),
}

struct FrontState {
    plan: Plan,
    rng: Mutex<fastrand::Rng>,
    started: Instant,
    backend: Backend,
    /// Every request that got past the TCP accept: path, fault, whether it carried a token.
    seen: Mutex<Vec<(String, Fault, bool)>>,
    resets: AtomicU64,
    stalled_once: AtomicBool,
    /// When set, every request after the CA fetch is redirected to this plain-http base.
    downgrade_to: std::sync::OnceLock<String>,
}

impl FrontState {
    fn draw(&self, path: &str) -> Fault {
        if self.started.elapsed() < self.plan.window_503 {
            return Fault::Unavailable;
        }
        if self.plan.stall_first && !self.stalled_once.swap(true, Ordering::SeqCst) {
            return Fault::Stall;
        }
        // The CA is proven over https first; everything after it leaves for plain http.
        if self.downgrade_to.get().is_some() && !path.contains("cacerts") {
            return Fault::Downgrade;
        }
        let p = &self.plan;
        // An oversized asset would be taken for the agent binary (bootstrapd allows 512 MiB
        // there, as the real binary is large); oversize targets the small replies.
        let oversize = if path.starts_with("/assets/") {
            0
        } else {
            p.oversize
        };
        let table = [
            (Fault::Pass, p.pass),
            (Fault::Unavailable, p.unavailable),
            (Fault::Slow, p.slow),
            (Fault::Stall, p.stall),
            (Fault::Truncate, p.truncate),
            (Fault::Oversize, oversize),
        ];
        let total: u32 = table.iter().map(|(_, w)| w).sum();
        let mut pick = lock(&self.rng).u32(0..total.max(1));
        for (fault, weight) in table {
            if pick < weight {
                return fault;
            }
            pick -= weight;
        }
        Fault::Pass
    }

    fn reset_now(&self) -> bool {
        self.plan.reset_percent > 0 && lock(&self.rng).u32(0..100) < self.plan.reset_percent
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Resets a share of the TCP connections before any byte, as a crashing proxy does.
#[derive(Clone)]
struct MaybeReset(Arc<FrontState>);

impl<S> Accept<TcpStream, S> for MaybeReset {
    type Stream = TcpStream;
    type Service = S;
    type Future = Ready<io::Result<(TcpStream, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        if self.0.reset_now() {
            self.0.resets.fetch_add(1, Ordering::Relaxed);
            let _ = stream.set_zero_linger();
            drop(stream);
            return std::future::ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "injected connection reset",
            )));
        }
        std::future::ready(Ok((stream, service)))
    }
}

async fn relay(st: &FrontState, req: Request) -> Response {
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    match &st.backend {
        Backend::Static(files) => {
            let path = req.uri().path();
            match files.get(path) {
                // The IMDSv2 token endpoint is a PUT; everything else a GET.
                Some(body) if req.method() == Method::GET || req.method() == Method::PUT => {
                    (StatusCode::OK, body.clone()).into_response()
                }
                Some(_) => StatusCode::METHOD_NOT_ALLOWED.into_response(),
                None => StatusCode::NOT_FOUND.into_response(),
            }
        }
        Backend::Rancher { base, client } => {
            let mut out = client.request(req.method().clone(), format!("{base}{path_and_query}"));
            for (name, value) in req.headers() {
                if name != header::HOST && name != header::CONTENT_LENGTH {
                    out = out.header(name, value);
                }
            }
            let reply = match out.send().await {
                Ok(r) => r,
                Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
            };
            let status = reply.status();
            let content_type = reply.headers().get(header::CONTENT_TYPE).cloned();
            let body = match reply.bytes().await {
                Ok(b) => b,
                Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
            };
            let mut resp = (status, body).into_response();
            if let Some(ct) = content_type {
                resp.headers_mut().insert(header::CONTENT_TYPE, ct);
            }
            resp
        }
    }
}

/// The reply announced whole (Content-Length) but cut in half: the connection ends mid-body.
async fn truncate(resp: Response) -> Response {
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let half = bytes.slice(..bytes.len() / 2);
    parts.headers.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(bytes.len().max(1)),
    );
    let stream = futures_util::stream::iter([
        Ok::<_, io::Error>(half),
        Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "injected truncation",
        )),
    ]);
    Response::from_parts(parts, Body::from_stream(stream))
}

/// More than any limit bootstrapd sets for the reply, sometimes announced (Content-Length),
/// sometimes streamed (chunked), which bootstrapd must stop reading at its limit.
fn oversize(bytes: usize, announced: bool) -> Response {
    if announced {
        return (StatusCode::OK, vec![b'x'; bytes]).into_response();
    }
    let chunk = axum::body::Bytes::from(vec![b'x'; 64 << 10]);
    let chunks = bytes.div_ceil(chunk.len());
    let stream =
        futures_util::stream::iter((0..chunks).map(move |_| Ok::<_, io::Error>(chunk.clone())));
    (StatusCode::OK, Body::from_stream(stream)).into_response()
}

async fn handle(State(st): State<Arc<FrontState>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let carried_token = [header::AUTHORIZATION.as_str(), "x-api-tunnel-token"]
        .iter()
        .any(|name| {
            req.headers()
                .get_all(*name)
                .iter()
                .any(|v| !v.as_bytes().trim_ascii().is_empty())
        });
    let fault = st.draw(&path);
    lock(&st.seen).push((path, fault, carried_token));
    match fault {
        Fault::Pass => relay(&st, req).await,
        Fault::Unavailable => {
            (StatusCode::SERVICE_UNAVAILABLE, "injected: unavailable").into_response()
        }
        Fault::Slow => {
            let ms = lock(&st.rng).u64(100..700);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            relay(&st, req).await
        }
        Fault::Stall => {
            tokio::time::sleep(st.plan.stall_for).await;
            relay(&st, req).await
        }
        Fault::Truncate => truncate(relay(&st, req).await).await,
        Fault::Downgrade => {
            let base = st.downgrade_to.get().cloned().unwrap_or_default();
            let to = match req.uri().path_and_query() {
                Some(pq) => format!("{base}{pq}"),
                None => base,
            };
            (StatusCode::FOUND, [(header::LOCATION, to)]).into_response()
        }
        Fault::Oversize => {
            let announced = lock(&st.rng).bool();
            oversize(st.plan.oversize_bytes, announced)
        }
    }
}

/// A running front: HTTPS with `tls` (cert, key PEM) or plain HTTP.
struct Front {
    url: String,
    state: Arc<FrontState>,
    handle: axum_server::Handle<std::net::SocketAddr>,
}

impl Front {
    fn start(plan: Plan, seed: u64, backend: Backend, tls: Option<(&str, &str)>) -> Front {
        let state = Arc::new(FrontState {
            plan,
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            started: Instant::now(),
            backend,
            seen: Mutex::new(Vec::new()),
            resets: AtomicU64::new(0),
            stalled_once: AtomicBool::new(false),
            downgrade_to: std::sync::OnceLock::new(),
        });
        let app = Router::new()
            .fallback(handle)
            .with_state(state.clone())
            .into_make_service();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local addr");
        let handle = axum_server::Handle::new();
        let server = axum_server::from_tcp(listener)
            .expect("server from listener")
            .handle(handle.clone());
        let reset = MaybeReset(state.clone());
        let url = match tls {
            Some((cert, key)) => {
                let acceptor = RustlsAcceptor::new(rustls_config(cert, key)).acceptor(reset);
                tokio::spawn(server.acceptor(acceptor).serve(app));
                format!("https://{addr}")
            }
            None => {
                tokio::spawn(server.acceptor(reset).serve(app));
                format!("http://{addr}")
            }
        };
        Front { url, state, handle }
    }

    fn token_requests(&self) -> usize {
        lock(&self.state.seen).iter().filter(|s| s.2).count()
    }

    fn faults(&self) -> Vec<Fault> {
        lock(&self.state.seen).iter().map(|s| s.1).collect()
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

fn rustls_config(cert_pem: &str, key_pem: &str) -> RustlsConfig {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("front certificate PEM");
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("front key PEM");
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("front certificate");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    RustlsConfig::from_config(Arc::new(config))
}

fn pinned_client(ca_pem: &str) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.expect("CA PEM"))
            .expect("CA usable as a root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .build()
        .expect("relay client")
}

// --- outcome classification ----------------------------------------------------------------

fn http_cause(e: &HttpError) -> &'static str {
    match e {
        HttpError::BodyTooLarge { .. } => "failed: oversized reply refused",
        HttpError::InsecureRedirect { .. } => "refused: redirect from https to plain http",
        HttpError::Exhausted {
            last: Cause::Timeout(_),
            ..
        } => "failed: budget spent in a stalled attempt",
        HttpError::Certificate { .. }
        | HttpError::Exhausted {
            last: Cause::Certificate(_),
            ..
        } => "refused: TLS chain not the pinned CA",
        HttpError::Exhausted {
            last: Cause::Transport(t),
            ..
        } if t.contains("certificate") || t.contains("UnknownIssuer") => {
            "refused: TLS chain not the pinned CA"
        }
        HttpError::Exhausted {
            last: Cause::Transport(_),
            ..
        } => "failed: transport errors until the budget ran out",
        HttpError::Exhausted {
            last: Cause::Status(_),
            ..
        } => "failed: error statuses until the budget ran out",
        _ => "failed: other HTTP error",
    }
}

/// The first `HttpError` in the chain (thiserror's `transparent` forwards `source()`).
fn find_http<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a HttpError> {
    let mut cur: Option<&'a (dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(h) = err.downcast_ref::<HttpError>() {
            return Some(h);
        }
        cur = err.source();
    }
    None
}

fn classify_register(r: &Result<RegistrationRecord, RegisterError>) -> String {
    match r {
        Ok(_) => "registered".into(),
        Err(RegisterError::SystemAgent(SystemAgentError::Ca(CaError::Mismatch { .. })))
        | Err(RegisterError::Ca(CaError::Mismatch { .. })) => {
            "refused: CA checksum mismatch".into()
        }
        Err(RegisterError::SystemAgent(SystemAgentError::ConnectionInfo { .. })) => {
            "failed: connection info not JSON".into()
        }
        // Certificate failures under the proven trust end fast with their own error.
        Err(RegisterError::SystemAgent(SystemAgentError::Untrusted { .. })) => {
            "refused: TLS chain not the pinned CA".into()
        }
        Err(RegisterError::SystemAgent(SystemAgentError::Ca(CaError::Setting { .. }))) => {
            "failed: cacerts setting not JSON".into()
        }
        Err(RegisterError::SystemAgent(SystemAgentError::Ca(CaError::Pem { .. }))) => {
            "failed: CA text not PEM".into()
        }
        Err(e) => match find_http(e) {
            Some(h) => http_cause(h).into(),
            // Some steps (healthz) keep the HTTP error as text, not as a source.
            None if e
                .to_string()
                .contains("refusing to leave https for plain http") =>
            {
                "refused: redirect from https to plain http".into()
            }
            None => format!("failed: {e}"),
        },
    }
}

fn classify_fetch(r: &Result<Option<Fetched>, DatasourceError>, expected: &[u8]) -> String {
    match r {
        Ok(Some(f)) if f.userdata == expected => "fetched intact".into(),
        Ok(Some(_)) => "CORRUPT: userdata differs from what was served".into(),
        Ok(None) => "nothing found".into(),
        Err(DatasourceError::Http(h)) => http_cause(h).into(),
        Err(DatasourceError::Parse { .. }) | Err(DatasourceError::Invalid { .. }) => {
            "failed: reply did not parse (oversized/garbage metadata)".into()
        }
        Err(DatasourceError::ImdsTokenRefused { .. }) => "failed: IMDS token refused".into(),
        Err(e) => format!("failed: {e}"),
    }
}

// --- Rancher rounds --------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Scenario {
    /// A front with no faults: must register.
    Control,
    /// Only a 503 window at the start: must register.
    Window503,
    /// A faithful front with random faults.
    Flaky,
    /// The first request (the unverified /cacerts fetch) stalls for FAULT_CAMPAIGN_STALL_SECS:
    /// registers when the stall ends before the budget (the attempt times out and is retried),
    /// else fails within the budget; never hangs.
    StallFirst,
    /// A front relaying a `wrong_ca` server (decoy CA on /cacerts): must never register.
    WrongCa,
    /// A front with a foreign certificate relaying the real /cacerts: must never register.
    Mitm,
    /// Straight to the `wrong_ca` server with the decoy's checksum: the decoy is pinned, the
    /// TLS chain then fails it; must never register.
    DecoyPinned,
    /// A faithful front that, once the CA is proven, redirects everything (install script,
    /// agent binary from /assets, the connect call) to a plain-http server: must never
    /// register, and nothing may reach the http server.
    Downgrade,
}

impl Scenario {
    /// True when whoever bootstrapd talks to presents a TLS chain from another CA than the one
    /// it publishes: nothing carrying the token may reach it.
    fn inconsistent(self) -> bool {
        matches!(
            self,
            Scenario::WrongCa | Scenario::Mitm | Scenario::DecoyPinned
        )
    }
}

struct Backends {
    good: Server,
    good_cert: (String, String),
    wrong: Server,
    wrong_cert: (String, String),
    /// A CA nobody published, for the man in the middle.
    foreign_cert: (String, String),
    decoy_checksum: String,
}

fn settings(url: &str, checksum: &str, deadline: u64) -> Settings {
    SettingsBuilder::system_agent(url)
        .token(TOKEN)
        .ca_checksum(Some(checksum.to_string()))
        .deadline(deadline)
        .build()
}

struct RancherRound {
    scenario: Scenario,
    outcome: String,
    /// Token-bearing requests that reached the front (or, for DecoyPinned, the server).
    token_requests: usize,
    faults: Vec<Fault>,
    resets: u64,
    machine: Option<String>,
    files_ok: bool,
    /// Requests that reached the plain-http server of a Downgrade round.
    plain_http_requests: usize,
}

fn private_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o777 == 0o600)
}

async fn rancher_round(
    b: Arc<Backends>,
    scenario: Scenario,
    index: usize,
    seed: u64,
    deadline: u64,
    stall_for: Duration,
) -> RancherRound {
    let (_dir, root) = temp_root();
    let node = NodeIdentity {
        node_name: format!("fc-{index}"),
        address: Some("10.0.2.15".into()),
        internal_address: None,
    };
    let flaky = Plan::flaky(stall_for, 5 << 20);
    let relay_to = |server: &Server| Backend::Rancher {
        base: server.url.clone(),
        client: pinned_client(&server.ca_pem),
    };
    let cert = |c: &(String, String)| (c.0.clone(), c.1.clone());
    let mut plain_http: Option<Front> = None;
    let (front, url, checksum) = match scenario {
        Scenario::DecoyPinned => (None, b.wrong.url.clone(), b.decoy_checksum.clone()),
        _ => {
            let (plan, backend, tls, checksum) = match scenario {
                Scenario::Control => (
                    Plan::clean(),
                    relay_to(&b.good),
                    cert(&b.good_cert),
                    &b.good.ca_checksum,
                ),
                Scenario::Window503 => (
                    Plan {
                        window_503: Duration::from_millis(500 + seed % 2500),
                        ..Plan::clean()
                    },
                    relay_to(&b.good),
                    cert(&b.good_cert),
                    &b.good.ca_checksum,
                ),
                Scenario::StallFirst => (
                    Plan {
                        stall_first: true,
                        stall_for,
                        ..Plan::clean()
                    },
                    relay_to(&b.good),
                    cert(&b.good_cert),
                    &b.good.ca_checksum,
                ),
                Scenario::Flaky | Scenario::Downgrade => (
                    if scenario == Scenario::Flaky {
                        flaky
                    } else {
                        Plan::clean()
                    },
                    relay_to(&b.good),
                    cert(&b.good_cert),
                    &b.good.ca_checksum,
                ),
                Scenario::WrongCa => (
                    flaky,
                    relay_to(&b.wrong),
                    cert(&b.wrong_cert),
                    &b.wrong.ca_checksum,
                ),
                Scenario::Mitm => (
                    flaky,
                    relay_to(&b.good),
                    cert(&b.foreign_cert),
                    &b.good.ca_checksum,
                ),
                Scenario::DecoyPinned => unreachable!("handled above"),
            };
            let front = Front::start(plan, seed, backend, Some((&tls.0, &tls.1)));
            if scenario == Scenario::Downgrade {
                let plain =
                    Front::start(Plan::clean(), seed, Backend::Static(BTreeMap::new()), None);
                let _ = front.state.downgrade_to.set(plain.url.clone());
                plain_http = Some(plain);
            }
            let url = front.url.clone();
            (Some(front), url, checksum.clone())
        }
    };
    let s = settings(&url, &checksum, deadline);
    let result = register(&root, &s, &node).await;
    let outcome = classify_register(&result);
    let machine = result
        .as_ref()
        .ok()
        .and_then(|r| r.system_agent.as_ref())
        .map(|sa| sa.machine_name.clone());
    let files_ok = private_file(&root.path(system_agent::CONNECTION_INFO_FILE))
        && private_file(&root.path(system_agent::CONFIG_FILE))
        && private_file(&root.path(system_agent::CATTLE_ID_FILE));
    let (token_requests, faults, resets) = match &front {
        Some(f) => (
            f.token_requests(),
            f.faults(),
            f.state.resets.load(Ordering::Relaxed),
        ),
        // Straight to the shared wrong_ca server: its own log is checked once at the end.
        None => (0, Vec::new(), 0),
    };
    let plain_http_requests = plain_http.map_or(0, |p| lock(&p.state.seen).len());
    RancherRound {
        scenario,
        outcome,
        token_requests,
        faults,
        resets,
        machine,
        files_ok,
        plain_http_requests,
    }
}

// --- datasource rounds -----------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum DsKind {
    Ec2,
    NocloudNet,
}

fn userdata_for(index: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(index as u64);
    let mut text = format!("#cloud-config\n# round {index}\nwrite_files:\n");
    while text.len() < 8 << 10 {
        let word: String = (0..24).map(|_| rng.alphanumeric()).collect();
        text.push_str(&format!("  - path: /tmp/{word}\n    content: {word}\n"));
    }
    text.into_bytes()
}

async fn datasource_round(
    kind: DsKind,
    index: usize,
    seed: u64,
) -> (DsKind, String, Vec<Fault>, u64) {
    let (_dir, root) = temp_root();
    let expected = userdata_for(index);
    let mut files = BTreeMap::new();
    match kind {
        DsKind::Ec2 => {
            files.insert("/latest/api/token".to_string(), b"imds-session".to_vec());
            files.insert(
                "/latest/meta-data/instance-id".to_string(),
                format!("i-{index:017x}").into_bytes(),
            );
            files.insert(
                "/latest/meta-data/local-hostname".to_string(),
                b"ip-10-0-0-5.ec2.internal".to_vec(),
            );
            files.insert("/latest/user-data".to_string(), expected.clone());
        }
        DsKind::NocloudNet => {
            files.insert(
                "/seed/meta-data".to_string(),
                format!("instance-id: iid-{index}\nlocal-hostname: fc-{index}\n").into_bytes(),
            );
            files.insert("/seed/user-data".to_string(), expected.clone());
        }
    }
    let plan = Plan {
        // Beyond the 400 ms attempt timeout below: the attempt is abandoned and retried.
        stall_for: Duration::from_millis(1500),
        stall: 4,
        ..Plan::flaky(Duration::ZERO, 96 << 10)
    };
    let front = Front::start(plan, seed, Backend::Static(files), None);
    let mut cfg = AgentConfig {
        max_userdata_bytes: 64 << 10,
        ..AgentConfig::default()
    };
    cfg.timeouts.attempt_ms = 400;
    cfg.timeouts.initial_backoff_ms = 20;
    cfg.timeouts.max_backoff_ms = 300;
    cfg.timeouts.datasource_deadline_ms = 10_000;
    cfg.timeouts.max_attempts = 1000;
    match kind {
        DsKind::Ec2 => {
            cfg.metadata.ec2 = front.url.clone();
            let dmi = root.path("/sys/class/dmi/id");
            std::fs::create_dir_all(&dmi).expect("dmi dir");
            std::fs::write(dmi.join("sys_vendor"), "Amazon EC2\n").expect("sys_vendor");
            std::fs::write(
                dmi.join("product_uuid"),
                "ec2e1916-9099-7caf-fd21-012345abcdef\n",
            )
            .expect("product_uuid");
        }
        DsKind::NocloudNet => {
            let cmdline = root.path("/proc/cmdline");
            std::fs::create_dir_all(cmdline.parent().expect("parent")).expect("proc dir");
            std::fs::write(
                cmdline,
                format!(
                    "root=/dev/vda ds=nocloud;s={}/seed/ console=ttyS0\n",
                    front.url
                ),
            )
            .expect("cmdline");
        }
    }
    let result = datasource::fetch(&root, &cfg.datasource_options()).await;
    (
        kind,
        classify_fetch(&result, &expected),
        front.faults(),
        front.state.resets.load(Ordering::Relaxed),
    )
}

// --- the campaign ----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_campaign() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rounds = env_u64("FAULT_CAMPAIGN_ROUNDS", 48) as usize;
    let ds_rounds = env_u64("FAULT_CAMPAIGN_DS_ROUNDS", 40) as usize;
    let seed = env_u64("FAULT_CAMPAIGN_SEED", fastrand::u64(..));
    let parallel = env_u64("FAULT_CAMPAIGN_PARALLEL", 16).max(1) as usize;
    let deadline = env_u64("FAULT_CAMPAIGN_DEADLINE_SECS", 15);
    let stall_for = Duration::from_secs(env_u64("FAULT_CAMPAIGN_STALL_SECS", 25));
    println!(
        "fault campaign: seed {seed} (FAULT_CAMPAIGN_SEED={seed} repeats the fault draws), \
         {rounds} Rancher rounds, {ds_rounds} datasource rounds, {parallel} at a time, \
         registration budget {deadline}s, Rancher stall {stall_for:?}"
    );

    let states = tempfile::tempdir().expect("tempdir");
    let sans = vec!["127.0.0.1".to_string(), "localhost".to_string()];
    let good_dir = states.path().join("good");
    let wrong_dir = states.path().join("wrong");
    let good = rancher_test_server::start(Config {
        tokens: vec![TOKEN.into()],
        state_dir: Some(good_dir.clone()),
        ..Default::default()
    })
    .await
    .expect("good server");
    let wrong = rancher_test_server::start(Config {
        tokens: vec![TOKEN.into()],
        state_dir: Some(wrong_dir.clone()),
        wrong_ca: true,
        ..Default::default()
    })
    .await
    .expect("wrong-CA server");
    // Fronts get leaves from the servers' own CAs (same CA, new leaf) or from a foreign one.
    let leaf = |a: ca::Authority| (a.server_cert_pem, a.server_key_pem);
    let good_cert = leaf(ca::load_or_create(Some(&good_dir), &sans).expect("good CA"));
    let wrong_cert = leaf(ca::load_or_create(Some(&wrong_dir), &sans).expect("wrong CA"));
    let foreign_cert = leaf(ca::load_or_create(None, &sans).expect("foreign CA"));
    let decoy_text = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .expect("client")
        .get(format!("{}/cacerts", wrong.url))
        .send()
        .await
        .expect("decoy /cacerts")
        .bytes()
        .await
        .expect("decoy body");
    let decoy_checksum = bootstrapd::rancher::cacerts::checksum(&decoy_text);
    assert_ne!(decoy_checksum, wrong.ca_checksum);
    let backends = Arc::new(Backends {
        good,
        good_cert,
        wrong,
        wrong_cert,
        foreign_cert,
        decoy_checksum,
    });

    // The scenario mix: mostly flaky fronts, a steady share of each adversary and control.
    let mix = [
        Scenario::Flaky,
        Scenario::Flaky,
        Scenario::Flaky,
        Scenario::Control,
        Scenario::Window503,
        Scenario::StallFirst,
        Scenario::WrongCa,
        Scenario::Mitm,
        Scenario::DecoyPinned,
        Scenario::Downgrade,
    ];
    let limit = Arc::new(tokio::sync::Semaphore::new(parallel));
    let mut rancher_tasks = tokio::task::JoinSet::new();
    for i in 0..rounds {
        let scenario = mix[i % mix.len()];
        let round_seed = seed
            .wrapping_add(i as u64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let b = backends.clone();
        let limit = limit.clone();
        rancher_tasks.spawn(async move {
            let _permit = limit.acquire_owned().await.expect("semaphore open");
            rancher_round(b, scenario, i, round_seed, deadline, stall_for).await
        });
    }
    let mut ds_tasks = tokio::task::JoinSet::new();
    for i in 0..ds_rounds {
        let kind = if i % 2 == 0 {
            DsKind::Ec2
        } else {
            DsKind::NocloudNet
        };
        let round_seed = seed
            .wrapping_add(1_000_003 + i as u64)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let limit = limit.clone();
        ds_tasks.spawn(async move {
            let _permit = limit.acquire_owned().await.expect("semaphore open");
            datasource_round(kind, i, round_seed).await
        });
    }
    let rancher_results: Vec<RancherRound> = rancher_tasks.join_all().await;
    let ds_results: Vec<(DsKind, String, Vec<Fault>, u64)> = ds_tasks.join_all().await;

    // --- tally ---
    let mut tally: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut fault_counts: BTreeMap<Fault, usize> = BTreeMap::new();
    let mut resets = 0;
    for r in &rancher_results {
        *tally
            .entry((format!("rancher {:?}", r.scenario), r.outcome.clone()))
            .or_default() += 1;
        for f in &r.faults {
            *fault_counts.entry(*f).or_default() += 1;
        }
        resets += r.resets;
    }
    let mut ds_fault_counts: BTreeMap<Fault, usize> = BTreeMap::new();
    let mut ds_resets = 0;
    for (kind, outcome, faults, resets) in &ds_results {
        for f in faults {
            *ds_fault_counts.entry(*f).or_default() += 1;
        }
        ds_resets += resets;
        *tally
            .entry((format!("datasource {kind:?}"), outcome.clone()))
            .or_default() += 1;
    }
    println!("\n{:<28} {:<52} {:>5}", "scenario", "outcome", "count");
    for ((scenario, outcome), n) in &tally {
        println!("{scenario:<28} {outcome:<52} {n:>5}");
    }
    println!("\nfaults injected on Rancher fronts: {fault_counts:?}, connection resets: {resets}");
    println!(
        "faults injected on metadata servers: {ds_fault_counts:?}, connection resets: {ds_resets}"
    );
    let registered = rancher_results
        .iter()
        .filter(|r| r.outcome == "registered")
        .count();
    let fetched = ds_results
        .iter()
        .filter(|(_, o, _, _)| o == "fetched intact")
        .count();
    println!(
        "registrations completed: {registered}/{rounds}; datasource fetches intact: {fetched}/{ds_rounds}"
    );

    // --- invariants ---
    let (wrong_log, wrong_dropped) = backends.wrong.requests();
    let wrong_token = wrong_log.iter().filter(|e| e.carried_token).count();
    println!(
        "wrong-CA server: {} requests, {} carrying the token",
        wrong_log.len() as u64 + wrong_dropped,
        wrong_token
    );
    assert_eq!(
        wrong_token, 0,
        "a request carrying the token reached the server whose CA did not match: {wrong_log:?}"
    );
    assert!(!backends.wrong.serves_its_tls_ca());
    assert!(backends.wrong.record().is_empty());
    let records = backends.good.record();
    for r in &rancher_results {
        if r.scenario.inconsistent() {
            assert_eq!(
                r.token_requests, 0,
                "{:?}: the token reached a front whose TLS chain is not the CA it serves",
                r.scenario
            );
            assert_ne!(
                r.outcome, "registered",
                "{:?} must never register",
                r.scenario
            );
        }
        if r.scenario == Scenario::Downgrade {
            assert_eq!(
                r.plain_http_requests, 0,
                "Downgrade: a request followed the redirect to plain http"
            );
            assert_eq!(r.outcome, "refused: redirect from https to plain http");
        }
        if matches!(r.scenario, Scenario::Control | Scenario::Window503) {
            assert_eq!(
                r.outcome, "registered",
                "{:?} (no faults besides a 503 window) did not register",
                r.scenario
            );
        }
        if r.outcome == "registered" {
            let machine = r
                .machine
                .as_deref()
                .expect("a registered round names its machine");
            assert!(
                records.iter().any(|n| n.name == machine),
                "registration of {machine} reported done but not on the server"
            );
            assert!(r.files_ok, "{machine}: agent files missing or not 0600");
        }
    }
    for (kind, outcome, _, _) in &ds_results {
        assert!(
            !outcome.starts_with("CORRUPT"),
            "datasource {kind:?}: {outcome}"
        );
        assert_ne!(
            outcome, "nothing found",
            "datasource {kind:?} found nothing"
        );
    }
    // The campaign is pointless if nothing ever gets through the flaky fronts.
    let flaky_done = rancher_results
        .iter()
        .filter(|r| r.scenario == Scenario::Flaky && r.outcome == "registered")
        .count();
    if rancher_results
        .iter()
        .any(|r| r.scenario == Scenario::Flaky)
    {
        assert!(flaky_done > 0, "no flaky round registered at all");
    }
    if ds_rounds > 0 {
        assert!(fetched > 0, "no datasource round fetched at all");
    }
    backends.good.shutdown();
    backends.wrong.shutdown();
}
