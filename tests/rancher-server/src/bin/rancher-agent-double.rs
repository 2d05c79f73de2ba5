//! `rancher-agent-double`: stands in for the `agent` binary of rancher/rancher-agent (node
//! mode, Rancher 2.6). The real `run.sh` entrypoint execs it with its environment; it then does
//! what `cmd/agent/main.go` + `pkg/agent/node/node.go` do up to a held tunnel:
//!
//! 1. with `CATTLE_CA_CHECKSUM`: fetch `/v3/settings/cacerts` without verification, hash the
//!    value with one trailing newline, refuse a mismatch; pin the CA in
//!    `/etc/kubernetes/ssl/certs/serverca` (written by run.sh, or here when missing);
//! 2. test the connection with the pinned CA;
//! 3. open `wss://SERVER/v3/connect/register` (or `/v3/connect` once `./connected` exists or
//!    `CATTLE_AGENT_CONNECT=true`) with `X-API-Tunnel-Token` and `X-API-Tunnel-Params`;
//! 4. hold the websocket, reconnecting with backoff when it drops.
//!
//! Unlike the real agent (which retries forever), a rejected registration (401, or 400 such as
//! "cluster not found" for an unknown token) ends the process with a non-zero status, so that
//! tests and operators see it at once. It does not serve remotedialer dials.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::{self, Message};

use rancher_test_server::env_proxy;

/// The agent's websocket, direct or through a CONNECT tunnel.
type WebSocket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const DEFAULT_CA_FILE: &str = "/etc/kubernetes/ssl/certs/serverca";
const DOCKER_SOCKET: &str = "/var/run/docker.sock";
const TUNNEL_TOKEN: &str = "X-API-Tunnel-Token";
const TUNNEL_PARAMS: &str = "X-API-Tunnel-Params";

/// The environment run.sh exports (names from rancher `package/run.sh`).
struct AgentEnv {
    server: String,
    /// Never printed.
    token: String,
    ca_checksum: String,
    node_name: String,
    address: String,
    internal_address: String,
    role: String,
    label: String,
    taints: String,
    agent_connect: bool,
    ca_file: PathBuf,
}

impl AgentEnv {
    fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).unwrap_or_default();
        AgentEnv {
            server: var("CATTLE_SERVER").trim_end_matches('/').to_string(),
            token: var("CATTLE_TOKEN"),
            ca_checksum: var("CATTLE_CA_CHECKSUM"),
            node_name: var("CATTLE_NODE_NAME"),
            address: var("CATTLE_ADDRESS"),
            internal_address: var("CATTLE_INTERNAL_ADDRESS"),
            role: var("CATTLE_ROLE"),
            label: var("CATTLE_NODE_LABEL"),
            taints: var("CATTLE_NODE_TAINTS"),
            agent_connect: var("CATTLE_AGENT_CONNECT") == "true",
            // Tests outside a container point this elsewhere; the image uses the real path.
            ca_file: std::env::var_os("RANCHER_AGENT_DOUBLE_CA_FILE")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CA_FILE)),
        }
    }
}

/// `split()` of `pkg/agent/node/node.go`.
fn split(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect()
}

/// `parseLabel()` of `pkg/agent/node/node.go`.
fn parse_label(s: &str) -> BTreeMap<String, String> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect()
}

/// `node.Params()`: the JSON that goes base64-encoded into X-API-Tunnel-Params.
fn params(env: &AgentEnv, docker_info: Option<serde_json::Value>) -> serde_json::Value {
    let roles = split(&env.role);
    let has = |r: &str| roles.iter().any(|x| x == r);
    let taints = split(&env.taints);
    let mut node = serde_json::json!({
        "customConfig": {
            "address": env.address,
            "internalAddress": env.internal_address,
            "roles": if roles.is_empty() { serde_json::Value::Null } else { serde_json::json!(roles) },
            "label": parse_label(&env.label),
            "taints": if taints.is_empty() { serde_json::Value::Null } else { serde_json::json!(taints) },
        },
        "etcd": has("etcd"),
        "controlPlane": has("controlplane"),
        "worker": has("worker"),
        "requestedHostname": env.node_name,
    });
    if let (Some(info), Some(obj)) = (docker_info, node.as_object_mut()) {
        obj.insert("dockerInfo".to_string(), info);
    }
    serde_json::json!({ "node": node })
}

/// What the checksum covers: the setting value with exactly one trailing newline.
fn checksum_of_setting(value: &str) -> String {
    let text = format!("{}\n", value.trim_end_matches('\n'));
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// A failure that ends the agent.
struct Fatal(String);

impl<E: std::fmt::Display> From<E> for Fatal {
    fn from(e: E) -> Self {
        Fatal(e.to_string())
    }
}

fn insecure_client() -> Result<reqwest::Client, Fatal> {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| Fatal(format!("building HTTP client: {e}")))
}

/// The CA check the agent makes before it trusts anything from the server.
async fn verify_ca_checksum(env: &AgentEnv) -> Result<String, Fatal> {
    let url = format!("{}/v3/settings/cacerts", env.server);
    let response = insecure_client()?
        .get(&url)
        .send()
        .await
        .map_err(|e| Fatal(format!("failed to get CA certificates from {url}: {e}")))?;
    if !response.status().is_success() {
        return Err(Fatal(format!(
            "failed to get CA certificates from {url}: {}",
            response.status()
        )));
    }
    let setting: serde_json::Value = response.json().await.map_err(|e| {
        Fatal(format!(
            "failed to parse CA certificates setting from {url}: {e}"
        ))
    })?;
    let value = setting
        .get("value")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    if value.is_empty() {
        return Err(Fatal(format!(
            "The environment variable CATTLE_CA_CHECKSUM is set but there is no CA certificate configured at {url}"
        )));
    }
    let calculated = checksum_of_setting(&value);
    if calculated != env.ca_checksum {
        return Err(Fatal(format!(
            "Configured cacerts checksum ({calculated}) does not match given --ca-checksum ({})\nPlease check if the correct certificate is configured at {url}",
            env.ca_checksum
        )));
    }
    Ok(format!("{}\n", value.trim_end_matches('\n')))
}

fn write_ca_file(path: &Path, pem: &str) -> Result<(), Fatal> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Fatal(format!("{}: {e}", dir.display())))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Fatal(format!("{}: {e}", path.display())))?;
    file.write_all(pem.as_bytes())
        .map_err(|e| Fatal(format!("{}: {e}", path.display())))
}

/// TLS config that trusts exactly the pinned CA, or the public roots when there is none.
fn tls_config(pinned_pem: Option<&str>) -> Result<Arc<rustls::ClientConfig>, Fatal> {
    let mut roots = rustls::RootCertStore::empty();
    match pinned_pem {
        Some(pem) => {
            let certs: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|e| Fatal(format!("unable to parse CA file: {e}")))?;
            if certs.is_empty() {
                return Err(Fatal("unable to parse CA file: no certificate".to_string()));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| Fatal(format!("unable to use CA certificate: {e}")))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// `Params()` adds `docker info` when the socket answers; a minimal HTTP/1.0 call is enough.
async fn docker_info() -> Option<serde_json::Value> {
    let call = async {
        let mut stream = tokio::net::UnixStream::connect(DOCKER_SOCKET).await.ok()?;
        stream
            .write_all(b"GET /info HTTP/1.0\r\nHost: docker\r\n\r\n")
            .await
            .ok()?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.ok()?;
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        serde_json::from_slice(&raw[split + 4..]).ok()
    };
    tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .ok()
        .flatten()
}

fn websocket_url(server: &str, connect: bool) -> Result<String, Fatal> {
    let parsed = reqwest::Url::parse(server)
        .map_err(|e| Fatal(format!("CATTLE_SERVER {server:?} is not a URL: {e}")))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| Fatal(format!("CATTLE_SERVER {server:?} has no host")))?;
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let authority = match parsed.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    };
    let mut url = format!("wss://{authority}/v3/connect");
    if !connect {
        url.push_str("/register");
    }
    Ok(url)
}

enum Outcome {
    /// The tunnel was up and then went away: reconnect.
    Dropped,
    /// Could not connect (network, 5xx): retry.
    Retry(String),
}

/// The websocket handshake, through `HTTPS_PROXY` when the environment names one for the
/// server (as remotedialer's default dialer does: rancher_test_server::env_proxy).
async fn dial(
    request: tungstenite::handshake::client::Request,
    tls: &Arc<rustls::ClientConfig>,
) -> Result<WebSocket, tungstenite::Error> {
    let connector = tokio_tungstenite::Connector::Rustls(tls.clone());
    let uri = request.uri();
    let host = uri
        .host()
        .unwrap_or("")
        .trim_matches(['[', ']'])
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let vars: Vec<(String, String)> = std::env::vars().collect();
    let Some(proxy) = env_proxy::https_proxy_for(&host, port, &vars) else {
        let (ws, _) =
            tokio_tungstenite::connect_async_tls_with_config(request, None, false, Some(connector))
                .await?;
        return Ok(ws);
    };
    let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
    let stream = env_proxy::connect_through(&proxy, &authority)
        .await
        .map_err(|e| tungstenite::Error::Io(std::io::Error::other(e)))?;
    tracing::info!(
        "Tunnelling to {authority} through proxy {}",
        proxy.authority
    );
    let (ws, _) =
        tokio_tungstenite::client_async_tls_with_config(request, stream, None, Some(connector))
            .await?;
    Ok(ws)
}

async fn connect_once(
    env: &AgentEnv,
    tls: &Arc<rustls::ClientConfig>,
    params_b64: &str,
) -> Result<Outcome, Fatal> {
    let connect = env.agent_connect || Path::new("connected").exists();
    let url = websocket_url(&env.server, connect)?;
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| Fatal(format!("{url}: {e}")))?;
    let token = HeaderValue::from_str(&env.token)
        .map_err(|_| Fatal("CATTLE_TOKEN contains characters not allowed in a header".into()))?;
    let params = HeaderValue::from_str(params_b64).map_err(|e| Fatal(e.to_string()))?;
    request.headers_mut().insert(TUNNEL_TOKEN, token);
    request.headers_mut().insert(TUNNEL_PARAMS, params);
    tracing::info!("Connecting to {url}");
    let ws = match dial(request, tls).await {
        Ok(ws) => ws,
        Err(tungstenite::Error::Http(response)) => {
            let status = response.status();
            let body = response
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).trim().to_string())
                .unwrap_or_default();
            return match status {
                StatusCode::UNAUTHORIZED => Err(Fatal(format!(
                    "{url} answered 401 Unauthorized ({body}): the server did not accept the registration token"
                ))),
                StatusCode::BAD_REQUEST => Err(Fatal(format!(
                    "{url} rejected the registration with 400 Bad Request: {body}{}",
                    if body.contains("cluster not found") {
                        " (the registration token is not known to the server)"
                    } else {
                        ""
                    }
                ))),
                _ => Ok(Outcome::Retry(format!("{url}: {status} {body}"))),
            };
        }
        Err(e) => return Ok(Outcome::Retry(format!("{url}: {e}"))),
    };
    // main.go's onConnect: later connections go to /v3/connect instead of registering again.
    if let Err(e) = std::fs::File::create("connected") {
        tracing::warn!("cannot create ./connected: {e}");
    }
    tracing::info!("Connected to {url}, holding the tunnel");
    let (mut write, mut read) = ws.split();
    let mut ping = tokio::time::interval(Duration::from_secs(15));
    ping.tick().await;
    loop {
        tokio::select! {
            message = read.next() => match message {
                None | Some(Ok(Message::Close(_))) => break,
                Some(Err(e)) => {
                    tracing::warn!("tunnel error: {e}");
                    break;
                }
                Some(Ok(Message::Ping(_))) => {
                    // tungstenite queued the pong; push it out now.
                    if write.flush().await.is_err() {
                        break;
                    }
                }
                Some(Ok(_)) => {}
            },
            _ = ping.tick() => {
                if write.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
        }
    }
    tracing::warn!("tunnel to {url} closed");
    Ok(Outcome::Dropped)
}

async fn run() -> Result<(), Fatal> {
    if std::env::var("CATTLE_CLUSTER").as_deref() == Ok("true")
        || std::env::var("CLUSTER_CLEANUP").as_deref() == Ok("true")
    {
        return Err(Fatal(
            "this double only implements the node agent (CATTLE_CLUSTER/CLUSTER_CLEANUP unsupported)".into(),
        ));
    }
    let env = AgentEnv::from_env();
    if env.server.is_empty() {
        return Err(Fatal("CATTLE_SERVER is empty".into()));
    }
    tracing::info!("Rancher agent double is starting (server {})", env.server);

    let pinned = if !env.ca_checksum.is_empty() {
        let pem = verify_ca_checksum(&env).await?;
        tracing::info!(
            "Value from {}/v3/settings/cacerts matches the CA checksum",
            env.server
        );
        if !env.ca_file.exists() {
            write_ca_file(&env.ca_file, &pem)?;
        }
        Some(
            std::fs::read_to_string(&env.ca_file)
                .map_err(|e| Fatal(format!("{}: {e}", env.ca_file.display())))?,
        )
    } else if env.ca_file.exists() {
        Some(
            std::fs::read_to_string(&env.ca_file)
                .map_err(|e| Fatal(format!("{}: {e}", env.ca_file.display())))?,
        )
    } else {
        None
    };
    let tls = tls_config(pinned.as_deref())?;

    // main.go tests the connection with the pinned CA; a certificate error is fatal there.
    let check = reqwest::Client::builder()
        .use_preconfigured_tls((*tls).clone())
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| Fatal(format!("building HTTP client: {e}")))?;
    if let Err(e) = check.get(&env.server).send().await {
        let chain = format!("{e:?}");
        if chain.contains("Certificate") || chain.contains("certificate") {
            return Err(Fatal(format!(
                "Could not securely connect to {}: the server certificate does not verify against the pinned CA ({e})",
                env.server
            )));
        }
        tracing::warn!("connection test to {} failed: {e}", env.server);
    }

    let info = docker_info().await;
    if info.is_none() {
        tracing::warn!("Error getting docker info from {DOCKER_SOCKET}; registering without it");
    }
    let params = params(&env, info);
    for (key, value) in params["node"].as_object().into_iter().flatten() {
        if key != "dockerInfo" {
            tracing::info!("Option {key}={value}");
        }
    }
    let params_b64 = base64::engine::general_purpose::STANDARD.encode(params.to_string());

    let mut backoff = Duration::from_secs(1);
    loop {
        match connect_once(&env, &tls, &params_b64).await? {
            Outcome::Dropped => backoff = Duration::from_secs(1),
            Outcome::Retry(why) => {
                tracing::warn!("registration failed, retrying: {why}");
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
        let jitter = Duration::from_millis(fastrand::u64(0..=250));
        tokio::time::sleep(backoff + jitter).await;
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ERROR: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(e) => {
                    eprintln!("ERROR: SIGTERM handler: {e}");
                    return ExitCode::FAILURE;
                }
            };
        tokio::select! {
            result = run() => match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(Fatal(message)) => {
                    eprintln!("ERROR: {message}");
                    ExitCode::FAILURE
                }
            },
            _ = term.recv() => ExitCode::SUCCESS,
            _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> AgentEnv {
        AgentEnv {
            server: "https://10.0.2.2:8443".into(),
            token: "secret".into(),
            ca_checksum: String::new(),
            node_name: "node1".into(),
            address: "10.0.0.5".into(),
            internal_address: String::new(),
            role: ",etcd,controlplane".into(),
            label: ",a=b,flag".into(),
            taints: ",k=v:NoSchedule".into(),
            agent_connect: false,
            ca_file: PathBuf::from("/nonexistent"),
        }
    }

    #[test]
    fn params_match_node_params() {
        let p = params(&env(), None);
        let node = &p["node"];
        assert_eq!(node["requestedHostname"], "node1");
        assert_eq!(node["etcd"], true);
        assert_eq!(node["controlPlane"], true);
        assert_eq!(node["worker"], false);
        assert_eq!(
            node["customConfig"]["roles"],
            serde_json::json!(["etcd", "controlplane"])
        );
        assert_eq!(node["customConfig"]["label"]["a"], "b");
        assert_eq!(node["customConfig"]["label"]["flag"], "");
        assert_eq!(
            node["customConfig"]["taints"],
            serde_json::json!(["k=v:NoSchedule"])
        );
        assert!(
            !p.to_string().contains("secret"),
            "the token never goes into params"
        );
    }

    #[test]
    fn websocket_url_registers_until_connected() {
        assert_eq!(
            websocket_url("https://10.0.2.2:8443", false).ok(),
            Some("wss://10.0.2.2:8443/v3/connect/register".to_string())
        );
        assert_eq!(
            websocket_url("https://rancher.example", true).ok(),
            Some("wss://rancher.example/v3/connect".to_string())
        );
        assert!(websocket_url("not a url", false).is_err());
    }

    #[test]
    fn checksum_ignores_extra_trailing_newlines() {
        assert_eq!(checksum_of_setting("abc"), checksum_of_setting("abc\n"));
        assert_eq!(
            checksum_of_setting("abc"),
            hex::encode(Sha256::digest(b"abc\n"))
        );
    }
}
