//! The HTTP side: routes, fault injection, and the running-server handle.

use std::collections::BTreeMap;
use std::future::Ready;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{
    Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum_server::accept::Accept;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::protocol::{self, CATTLE_HASH, CATTLE_NONCE, TUNNEL_PARAMS, TUNNEL_TOKEN};
use crate::record::{Generation, NodeRecord, RecordStore, Sighting, Update};
use crate::requests::{RequestEntry, RequestLog, registration_header_names};
use crate::{AgentTlsMode, Config, Error, Rules, ca};

/// A running server. Dropping it does not stop it; call [`Server::shutdown`].
pub struct Server {
    /// `https://<listen address>` (a wildcard listen address is shown as 127.0.0.1).
    pub url: String,
    pub addr: SocketAddr,
    /// The CA that signed the TLS certificate (PEM).
    pub ca_pem: String,
    /// `--ca-checksum` for that CA, as Rancher computes it.
    pub ca_checksum: String,
    state: Arc<AppState>,
    handle: axum_server::Handle<SocketAddr>,
    shutdown_tx: watch::Sender<bool>,
    kick_tx: watch::Sender<u64>,
}

impl Server {
    /// Every node accepted so far, one entry per identity.
    pub fn record(&self) -> Vec<NodeRecord> {
        self.state.records().nodes()
    }

    /// Open rke1 tunnel websockets right now.
    pub fn active_tunnels(&self) -> usize {
        self.state.active_tunnels.load(Ordering::SeqCst)
    }

    /// Closes every open tunnel (the agents are expected to reconnect).
    pub fn drop_tunnels(&self) {
        self.kick_tx.send_modify(|n| *n += 1);
    }

    /// Every request answered so far, in arrival order, and how many more were answered
    /// after the log filled up.
    pub fn requests(&self) -> (Vec<RequestEntry>, u64) {
        self.state.requests.snapshot()
    }

    /// False with `wrong_ca`: `/cacerts` then serves a CA other than the one that signed the
    /// TLS certificate, and nothing carrying a token may ever reach this server.
    pub fn serves_its_tls_ca(&self) -> bool {
        !self.state.wrong_ca
    }

    /// Stops accepting, closes tunnels and open connections.
    pub fn shutdown(&self) {
        let _ = self.shutdown_tx.send(true);
        self.handle.shutdown();
    }
}

struct AppState {
    tokens: Vec<String>,
    /// Tokens past `expiresAt`: refused like unknown ones.
    expired_tokens: Vec<String>,
    rules: Rules,
    starting_for: Duration,
    starting_while: Option<std::path::PathBuf>,
    hold_first_connect: Duration,
    agent_tls_mode: AgentTlsMode,
    /// `CATTLE_CA_CHECKSUM` of the install script: over the served setting, as Rancher's
    /// `systemtemplate.CAChecksum` reads the same `cacerts` setting that `/cacerts` serves.
    served_checksum: String,
    /// The cacerts setting as served (no trailing newline); not the real CA with --wrong-ca.
    served_setting: String,
    url: String,
    legacy: bool,
    plan_ready: bool,
    started: Instant,
    fail_503_for: Duration,
    slow: Duration,
    records: Mutex<RecordStore>,
    active_tunnels: AtomicUsize,
    shutdown_rx: watch::Receiver<bool>,
    kick_rx: watch::Receiver<u64>,
    /// Mixed into service-account tokens handed to system agents.
    nonce: String,
    requests: RequestLog,
    wrong_ca: bool,
}

impl AppState {
    fn records(&self) -> MutexGuard<'_, RecordStore> {
        // A panic while holding the lock leaves consistent data (every update is one push or
        // field assignment), so a poisoned lock is still usable.
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Known and not expired.
    fn known_token(&self, token: &str) -> bool {
        !token.is_empty()
            && self.tokens.iter().any(|t| t == token)
            && !self.expired_tokens.iter().any(|t| t == token)
    }

    fn saw(&self, sighting: Sighting, update: Update) -> Result<NodeRecord, String> {
        self.records()
            .saw(sighting, update)
            .map_err(|e| format!("recording node: {e}"))
    }
}

/// Starts the server and returns once it listens.
pub async fn start(config: Config) -> Result<Server, Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();

    let listener = std::net::TcpListener::bind(config.listen).map_err(|source| Error::Listen {
        addr: config.listen,
        source,
    })?;
    let addr = listener.local_addr().map_err(|source| Error::Listen {
        addr: config.listen,
        source,
    })?;
    let shown_ip: IpAddr = if addr.ip().is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        addr.ip()
    };
    let url = format!("https://{}", SocketAddr::new(shown_ip, addr.port()));

    let mut sans: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "10.0.2.2".into()];
    for extra in config
        .extra_sans
        .iter()
        .cloned()
        .chain([shown_ip.to_string()])
    {
        if !sans.contains(&extra) {
            sans.push(extra);
        }
    }
    let authority = ca::load_or_create(config.state_dir.as_deref(), &sans)?;
    let ca_checksum = ca::ca_checksum(&authority.ca_pem);
    let served_setting = if config.wrong_ca {
        ca::setting_value(&ca::decoy_ca_pem()?)
    } else {
        ca::setting_value(&authority.ca_pem)
    };

    let record_file = config
        .record_file
        .clone()
        .or_else(|| config.state_dir.as_ref().map(|d| d.join("nodes.json")));
    let records = RecordStore::open(record_file)?;

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (kick_tx, kick_rx) = watch::channel(0u64);
    let state = Arc::new(app_state(
        &config,
        url.clone(),
        served_setting,
        records,
        shutdown_rx,
        kick_rx,
    ));

    let tls = rustls_config(&authority)?;
    let handle = axum_server::Handle::new();
    let acceptor = RustlsAcceptor::new(tls).acceptor(ResetFirst {
        remaining: Arc::new(AtomicU32::new(config.reset_first)),
    });
    let server = axum_server::from_tcp(listener)
        .map_err(|source| Error::Listen {
            addr: config.listen,
            source,
        })?
        .acceptor(acceptor)
        .handle(handle.clone());
    let app = router(state.clone());
    tokio::spawn(async move {
        if let Err(e) = server.serve(app.into_make_service()).await {
            tracing::error!(error = %e, "server stopped");
        }
    });
    tracing::info!(%url, %ca_checksum, "rancher-test-server listening");

    Ok(Server {
        url,
        addr,
        ca_pem: authority.ca_pem,
        ca_checksum,
        state,
        handle,
        shutdown_tx,
        kick_tx,
    })
}

/// The shared state of the handlers, from the configuration and what `start` prepared.
fn app_state(
    config: &Config,
    url: String,
    served_setting: String,
    records: RecordStore,
    shutdown_rx: watch::Receiver<bool>,
    kick_rx: watch::Receiver<u64>,
) -> AppState {
    AppState {
        tokens: config.tokens.clone(),
        expired_tokens: config.expired_tokens.clone(),
        rules: config.rules,
        starting_for: config.starting_for,
        starting_while: config.starting_while.clone(),
        hold_first_connect: config.hold_first_connect,
        agent_tls_mode: config.agent_tls_mode,
        served_checksum: ca::ca_checksum(&served_setting),
        served_setting,
        url,
        legacy: config.legacy,
        plan_ready: config.plan_ready,
        started: Instant::now(),
        fail_503_for: config.fail_503_for,
        slow: config.slow,
        records: Mutex::new(records),
        active_tunnels: AtomicUsize::new(0),
        shutdown_rx,
        kick_rx,
        nonce: format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)),
        requests: RequestLog::default(),
        wrong_ca: config.wrong_ca,
    }
}

fn rustls_config(authority: &ca::Authority) -> Result<RustlsConfig, Error> {
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(authority.server_cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| Error::Tls(format!("server certificate PEM: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(authority.server_key_pem.as_bytes())
        .map_err(|e| Error::Tls(format!("server key PEM: {e}")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| Error::Tls(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(RustlsConfig::from_config(Arc::new(config)))
}

/// Drops the first N connections with a TCP reset, before any TLS byte.
#[derive(Clone)]
struct ResetFirst {
    remaining: Arc<AtomicU32>,
}

impl<S> Accept<TcpStream, S> for ResetFirst {
    type Stream = TcpStream;
    type Service = S;
    type Future = Ready<io::Result<(TcpStream, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let take = self
            .remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if take {
            tracing::info!("fault injection: resetting a connection");
            // Zero linger turns the close into an RST, which is what a crashing proxy looks like.
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

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/ping", get(|| async { "pong" }))
        .route("/healthz", get(|| async { "ok" }))
        .route("/cacerts", get(cacerts))
        .route("/v3/settings/cacerts", get(settings_cacerts))
        .route("/v3/connect/register", get(tunnel_register))
        .route("/v3/connect", get(tunnel_connect))
        .route("/v3/connect/config", get(connect_config))
        .route("/v3/connect/agent", get(connect_agent))
        .route("/system-agent-install.sh", get(install_script))
        .route("/assets/{file}", get(assets))
        .route("/_test/record", get(test_record))
        .fallback(|| async { (StatusCode::NOT_FOUND, "404 page not found") })
        .layer(middleware::from_fn_with_state(state.clone(), faults))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_request,
        ))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// One line per request; the path only, never headers or query (they may carry tokens).
async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let response = next.run(req).await;
    tracing::info!(%method, %path, status = response.status().as_u16(), "request");
    response
}

/// Outside the fault injection, so injected 503s and delays are recorded too.
async fn record_request(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let at = state.started.elapsed();
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let carried_token = [header::AUTHORIZATION.as_str(), TUNNEL_TOKEN]
        .iter()
        .any(|name| {
            req.headers()
                .get_all(*name)
                .iter()
                .any(|v| !v.as_bytes().trim_ascii().is_empty())
        });
    let sent_headers = registration_header_names(req.headers().keys().map(|k| k.as_str()));
    let response = next.run(req).await;
    state.requests.push(RequestEntry {
        at,
        method,
        path,
        status: response.status().as_u16(),
        carried_token,
        sent_headers,
    });
    response
}

async fn faults(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if !state.slow.is_zero() {
        tokio::time::sleep(state.slow).await;
    }
    if !req.uri().path().starts_with("/_test/") && state.started.elapsed() < state.fail_503_for {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "fault injection: service unavailable",
        )
            .into_response();
    }
    next.run(req).await
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (status, body.into()).into_response()
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// Rancher >= 2.6 `/cacerts`: the setting with its trailing newline, as text; under current
/// rules signed with `X-Cattle-Hash` (rancher `pkg/cacerts/handler.go`).
async fn cacerts(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if state.legacy {
        return text(StatusCode::NOT_FOUND, "404 page not found");
    }
    let body = format!("{}\n", state.served_setting);
    let hash = match state.rules {
        Rules::Current => cacerts_hash(&state, &headers, body.as_bytes()),
        Rules::V2_6 => None,
    };
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    if let Some(value) = hash.and_then(|h| HeaderValue::from_str(&h).ok()) {
        response.headers_mut().insert(CATTLE_HASH, value);
    }
    response
}

/// The HMAC only when both a nonce and the hash of a known token came (`handler.go`): with
/// `wrong_ca` it covers the wrong CA, which is what was served.
fn cacerts_hash(state: &AppState, headers: &HeaderMap, body: &[u8]) -> Option<String> {
    let nonce = header_str(headers, CATTLE_NONCE);
    let presented = protocol::bearer_token(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    );
    if nonce.is_empty() || presented.is_empty() {
        return None;
    }
    let token = state
        .tokens
        .iter()
        .filter(|t| state.known_token(t))
        .find(|t| protocol::token_hash(t) == presented)?;
    Some(protocol::cacerts_hmac(token, nonce, body))
}

/// The norman `setting` resource; `value` has no trailing newline, as in real Rancher.
async fn settings_cacerts(State(state): State<Arc<AppState>>) -> Response {
    let self_link = format!("{}/v3/settings/cacerts", state.url);
    let body = serde_json::json!({
        "actions": {},
        "baseType": "setting",
        "created": "2024-01-01T00:00:00Z",
        "createdTS": 1_704_067_200_000u64,
        "creatorId": null,
        "customized": false,
        "default": "",
        "id": "cacerts",
        "links": {"remove": self_link, "self": self_link, "update": self_link},
        "name": "cacerts",
        "source": "",
        "type": "setting",
        "uuid": "7f5f0e4c-0000-4000-8000-000000000001",
        "value": state.served_setting,
    });
    json_response(StatusCode::OK, &body)
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut text = serde_json::to_string_pretty(body).unwrap_or_else(|_| "{}".to_string());
    text.push('\n');
    let mut response = (status, text).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Which endpoint is authorising a tunnel request; it changes what an unknown node means.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TunnelPath {
    Register,
    Connect,
    Config,
}

enum TunnelAuth {
    /// remotedialer: `authed == false` with no error → 401 "failed authentication".
    Unauthenticated,
    /// The authorizer returned an error → 400 on the tunnel, 500 on /v3/connect/config.
    Failed(String),
    Node(String),
    Cluster,
}

/// `Authorizer.Authorize` (`pkg/tunnelserver/mcmauthorizer/tunnel.go`).
fn authorize_tunnel(state: &AppState, headers: &HeaderMap, path: TunnelPath) -> TunnelAuth {
    let token = header_str(headers, TUNNEL_TOKEN);
    if token.is_empty() {
        return TunnelAuth::Unauthenticated;
    }
    if !state.known_token(token) {
        // getClusterByToken's error surfaces as a 400 "cluster not found" (not a 401): Rancher
        // logs "Failed to handle tunnel request ...: response 400: cluster not found".
        return TunnelAuth::Failed("cluster not found".to_string());
    }
    let input = match protocol::read_tunnel_input(header_str(headers, TUNNEL_PARAMS)) {
        Ok(input) => input,
        Err(e) => return TunnelAuth::Failed(e),
    };
    let Some(node) = input.node else {
        return TunnelAuth::Cluster;
    };
    let name = protocol::rke1_node_name(&node.requested_hostname);
    let known = state.records().get(Generation::Rke1, &name).is_some();
    match (path, known) {
        (TunnelPath::Register, false) => {
            let custom = match protocol::check_new_node(&node) {
                Ok(custom) => custom.clone(),
                Err(e) => return TunnelAuth::Failed(e),
            };
            let sighting = Sighting {
                name: name.clone(),
                generation: Generation::Rke1,
                roles: node.roles(),
                address: Some(custom.address),
                // The agent sends "" for "not given" in this JSON field.
                internal_address: Some(custom.internal_address).filter(|a| !a.is_empty()),
                labels: custom.label.unwrap_or_default(),
                taints: custom.taints.unwrap_or_default(),
                hostname: Some(node.requested_hostname.clone()),
            };
            if let Err(e) = state.saw(sighting, Update::RolesOnly) {
                return TunnelAuth::Failed(e);
            }
        }
        (TunnelPath::Register, true) => {
            let sighting = Sighting {
                name: name.clone(),
                generation: Generation::Rke1,
                roles: node.roles(),
                address: None,
                internal_address: None,
                labels: BTreeMap::new(),
                taints: Vec::new(),
                hostname: Some(node.requested_hostname.clone()),
            };
            if let Err(e) = state.saw(sighting, Update::RolesOnly) {
                return TunnelAuth::Failed(e);
            }
        }
        (TunnelPath::Connect, true) => {
            if let Err(e) = state.records().reconnected(Generation::Rke1, &name) {
                return TunnelAuth::Failed(format!("recording node: {e}"));
            }
        }
        (TunnelPath::Config, true) => {}
        (TunnelPath::Connect | TunnelPath::Config, false) => {
            return TunnelAuth::Failed(format!("nodes.management.cattle.io \"{name}\" not found"));
        }
    }
    TunnelAuth::Node(name)
}

async fn tunnel_register(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    tunnel(state, headers, ws, TunnelPath::Register)
}

async fn tunnel_connect(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    tunnel(state, headers, ws, TunnelPath::Connect)
}

/// remotedialer `Server.ServeHTTP`: authorise first (error → 400, not authed → 401), then
/// upgrade (failure → 400).
fn tunnel(
    state: Arc<AppState>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    path: TunnelPath,
) -> Response {
    let key = match authorize_tunnel(&state, &headers, path) {
        TunnelAuth::Unauthenticated => {
            return text(StatusCode::UNAUTHORIZED, "failed authentication");
        }
        TunnelAuth::Failed(e) => return text(StatusCode::BAD_REQUEST, e),
        TunnelAuth::Node(name) => format!("c-test:{name}"),
        TunnelAuth::Cluster => "c-test".to_string(),
    };
    match ws {
        Ok(upgrade) => upgrade.on_upgrade(move |socket| tunnel_session(socket, state, key)),
        Err(e) => text(
            StatusCode::BAD_REQUEST,
            format!("Error during upgrade for host [{key}]: {e}"),
        ),
    }
}

/// Holds the session like remotedialer: pings the agent, ends when it goes, when the server
/// stops, or when a test asks for all tunnels to drop.
async fn tunnel_session(mut socket: WebSocket, state: Arc<AppState>, key: String) {
    state.active_tunnels.fetch_add(1, Ordering::SeqCst);
    tracing::info!(%key, "tunnel session up");
    let mut shutdown = state.shutdown_rx.clone();
    let mut kick = state.kick_rx.clone();
    kick.mark_unchanged();
    let mut ping = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            message = socket.recv() => match message {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break,
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
            _ = shutdown.changed() => break,
            _ = kick.changed() => break,
        }
    }
    let _ = socket.send(Message::Close(None)).await;
    state.active_tunnels.fetch_sub(1, Ordering::SeqCst);
    tracing::info!(%key, "tunnel session closed");
}

/// rke1 node plan (`pkg/rkenodeconfigserver/nodeserver.go`): 404 continue without a plan,
/// 5xx retry later.
async fn connect_config(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    match authorize_tunnel(&state, &headers, TunnelPath::Config) {
        TunnelAuth::Unauthenticated => StatusCode::UNAUTHORIZED.into_response(),
        TunnelAuth::Failed(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e),
        TunnelAuth::Cluster => StatusCode::NOT_FOUND.into_response(),
        TunnelAuth::Node(_) if !state.plan_ready => {
            // The node has no NodeConfig until the cluster provisions it.
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        TunnelAuth::Node(_) => json_response(
            StatusCode::OK,
            &serde_json::json!({"clusterName": "c-test", "processes": {}, "files": [], "certs": ""}),
        ),
    }
}

/// rancher-system-agent connection info: rancher `pkg/capr/configserver/server.go`
/// (`ServeHTTP`, `findSA`, `connectAgent`) and `custom.go` (`findMachineByClusterToken`).
async fn connect_agent(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if state.legacy {
        return text(StatusCode::NOT_FOUND, "404 page not found");
    }
    if let Some(refusal) = refuse_agent(&state, &headers) {
        return refusal;
    }
    let name = protocol::custom_machine_name(header_str(&headers, protocol::CATTLE_ID));
    if let Some(timeout) = hold_first_connect(&state, &name).await {
        return timeout;
    }
    if let Err(e) = state.saw(agent_sighting(&headers, &name), Update::Everything) {
        return text(StatusCode::INTERNAL_SERVER_ERROR, e);
    }
    connection_info(&state, &headers, &name)
}

impl AppState {
    /// Whether the config server still answers as before its informers synced.
    fn starting(&self) -> bool {
        self.started.elapsed() < self.starting_for
            || self.starting_while.as_deref().is_some_and(|p| p.exists())
    }
}

/// The refusals of `ServeHTTP`/`findSA`, in their order; `None` lets the request through.
fn refuse_agent(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    let current = state.rules == Rules::Current;
    // server.go: while the secrets or cluster-token informers have not synced, a bare 401
    // for everyone, good token or not.
    if current && state.starting() {
        return Some(StatusCode::UNAUTHORIZED.into_response());
    }
    // findSA returns no secret without X-Cattle-Id: a bare 401 (2.6 and current alike).
    if header_str(headers, protocol::CATTLE_ID).is_empty() {
        return Some(StatusCode::UNAUTHORIZED.into_response());
    }
    let token = protocol::bearer_token(
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    );
    if state.known_token(token) {
        return None;
    }
    Some(if current {
        // Neither a provisioning SA nor a cluster token matched (missing, wrong, expired or
        // rotated away): findSA's error goes through http.Error as a 500.
        go_http_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "machine not found by request",
        )
    } else {
        StatusCode::UNAUTHORIZED.into_response()
    })
}

/// Go's `http.Error`: the message plus a newline, as UTF-8 text, with nosniff.
fn go_http_error(status: StatusCode, message: &str) -> Response {
    let mut response = (status, format!("{message}\n")).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// `custom.go` `waitReady` watches the machine request secret with `TimeoutSeconds: 120`.
const MACHINE_WAIT_LIMIT: Duration = Duration::from_secs(120);

/// The first accepted request of a machine waits while Rancher creates the custom machine
/// (`findMachineByClusterToken` -> `waitReady`); past the watch timeout findSA's error is a 500.
async fn hold_first_connect(state: &AppState, name: &str) -> Option<Response> {
    let known = state.records().get(Generation::SystemAgent, name).is_some();
    if state.hold_first_connect.is_zero() || known {
        return None;
    }
    if state.hold_first_connect > MACHINE_WAIT_LIMIT {
        tokio::time::sleep(MACHINE_WAIT_LIMIT).await;
        let message = format!("timeout waiting for fleet-default/{name} to be ready");
        return Some(go_http_error(StatusCode::INTERNAL_SERVER_ERROR, &message));
    }
    tokio::time::sleep(state.hold_first_connect).await;
    None
}

/// What the machine request secret records (`dataFromHeaders`): every `X-Cattle-*` header the
/// node sent; a header it did not send stays `None`.
fn agent_sighting(headers: &HeaderMap, name: &str) -> Sighting {
    let cattle = |suffix: &str| {
        headers
            .get(format!("{}{suffix}", protocol::CATTLE_HEADER_PREFIX))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut roles = Vec::new();
    for (header_name, role) in [
        ("role-etcd", "etcd"),
        ("role-control-plane", "controlplane"),
        ("role-worker", "worker"),
    ] {
        if protocol::header_bool(cattle(header_name).as_deref()) {
            roles.push(role.to_string());
        }
    }
    Sighting {
        name: name.to_string(),
        generation: Generation::SystemAgent,
        roles,
        address: cattle("address"),
        internal_address: cattle("internal-address"),
        labels: protocol::parse_labels(&cattle("labels").unwrap_or_default()),
        taints: protocol::split_list(&cattle("taints").unwrap_or_default()),
        hostname: cattle("node-name"),
    }
}

/// The server URL a node used: `https://<Host>`, or the listen URL without a Host header.
fn request_server(state: &AppState, headers: &HeaderMap) -> String {
    match headers.get(header::HOST).and_then(|v| v.to_str().ok()) {
        Some(host) if !host.is_empty() => format!("https://{host}"),
        _ => state.url.clone(),
    }
}

/// `connectAgent`: namespace, plan secret name and a kubeconfig with a service-account token.
fn connection_info(state: &AppState, headers: &HeaderMap, name: &str) -> Response {
    let server = request_server(state, headers);
    let sa_token = hex::encode(Sha256::digest(format!("{}:{name}", state.nonce).as_bytes()));
    let ca_data =
        base64::engine::general_purpose::STANDARD.encode(format!("{}\n", state.served_setting));
    let kube_config = format!(
        "apiVersion: v1\nclusters:\n- cluster:\n    certificate-authority-data: {ca_data}\n    server: {server}\n  name: agent\ncontexts:\n- context:\n    cluster: agent\n    user: agent\n  name: agent\ncurrent-context: agent\nkind: Config\npreferences: {{}}\nusers:\n- name: agent\n  user:\n    token: {sa_token}\n"
    );
    json_response(
        StatusCode::OK,
        &serde_json::json!({
            "namespace": "fleet-default",
            "secretName": format!("{name}-machine-plan"),
            "kubeConfig": kube_config,
        }),
    )
}

/// Stands in for rancher/system-agent's `install.sh`, which this project does not ship.
const INSTALL_SCRIPT_BODY: &str =
    "# rancher-test-server: the body of rancher/system-agent install.sh is not served here.";

/// `GET /system-agent-install.sh` (rancher `pkg/capr/installer/server.go`, `installer.go`):
/// current rules only; Rancher 2.6 predates `agent-tls-mode`, and the 2.6 double never served it.
async fn install_script(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if state.legacy || state.rules == Rules::V2_6 {
        return text(StatusCode::NOT_FOUND, "404 page not found");
    }
    let strict = state.agent_tls_mode == AgentTlsMode::Strict;
    let script = protocol::install_script(
        &request_server(&state, &headers),
        &state.served_checksum,
        strict,
        INSTALL_SCRIPT_BODY,
    );
    let mut response = script.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

const AGENT_SCRIPT: &str = r#"#!/bin/sh
# Stand-in for rancher-system-agent served by rancher-test-server (not the real agent).
set -e
case "$1" in
  --version|-v) echo "rancher-system-agent version v0.3.6-test (rancher-test-server, ARCH)"; exit 0 ;;
  sentinel|"")
    config="${CATTLE_AGENT_CONFIG:-/etc/rancher/agent/config.yaml}"
    if [ ! -r "$config" ]; then
      echo "rancher-system-agent: cannot read config $config" >&2
      exit 1
    fi
    info=$(sed -n 's/^connectionInfoFile: *//p' "$config")
    if [ -n "$info" ] && [ ! -r "$info" ]; then
      echo "rancher-system-agent: cannot read connection info $info" >&2
      exit 1
    fi
    echo "rancher-system-agent (test stand-in): config $config, watching for plans"
    while :; do sleep 3600; done
    ;;
  *) echo "rancher-system-agent: unknown command $1" >&2; exit 1 ;;
esac
"#;

const UNINSTALL_SCRIPT: &str = r#"#!/bin/sh
# system-agent-uninstall.sh served by rancher-test-server.
set -e
if command -v systemctl >/dev/null 2>&1; then
  systemctl stop rancher-system-agent 2>/dev/null || true
  systemctl disable rancher-system-agent 2>/dev/null || true
fi
rm -f /etc/systemd/system/rancher-system-agent.service /etc/systemd/system/rancher-system-agent.env
rm -f /usr/local/bin/rancher-system-agent
rm -rf /etc/rancher/agent /var/lib/rancher/agent
if command -v systemctl >/dev/null 2>&1; then systemctl daemon-reload 2>/dev/null || true; fi
echo "rancher-system-agent uninstalled"
"#;

async fn assets(
    State(state): State<Arc<AppState>>,
    axum::extract::Path(file): axum::extract::Path<String>,
) -> Response {
    if state.legacy {
        return text(StatusCode::NOT_FOUND, "404 page not found");
    }
    let body = match file.as_str() {
        "rancher-system-agent-amd64" => AGENT_SCRIPT.replace("ARCH", "amd64"),
        "rancher-system-agent-arm64" => AGENT_SCRIPT.replace("ARCH", "arm64"),
        "system-agent-uninstall.sh" => UNINSTALL_SCRIPT.to_string(),
        _ => return text(StatusCode::NOT_FOUND, "404 page not found"),
    };
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    response
}

async fn test_record(State(state): State<Arc<AppState>>) -> Response {
    let nodes = state.records().nodes();
    match serde_json::to_value(nodes) {
        Ok(value) => json_response(StatusCode::OK, &value),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}
