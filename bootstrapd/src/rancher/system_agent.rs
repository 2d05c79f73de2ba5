//! Natively what Rancher's `system-agent-install.sh` does (Rancher >= 2.6 custom clusters):
//! pinned `/healthz`, agent binary and uninstall script from `/assets`, a persistent
//! `CATTLE_ID`, `GET /v3/connect/agent` for the connection info, config.yaml, the unit and
//! its env file. Starting the unit is left to the caller (systemd over D-Bus).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::agent_binary::{self, VerifiedBinary};
pub use super::agent_error::SystemAgentError;
use super::agent_error::io_err;
use super::agent_paths::AgentPaths;
use super::cacerts::{self, ServerTrust};
use super::cattle_id::{self, CattleIdChoice, CattleIdSource};
pub use super::cattle_id::{CATTLE_ID_FILE, machine_name, new_cattle_id};
use super::{Deadline, Registration, Tuning, client, endpoint};
use crate::fsutil::{HostRoot, write_atomic};
use crate::http::{Cause, HttpClient, HttpError, Request, Response, StatusCode, Verdict};
use crate::secret::Secret;
use crate::userdata::{ProxySettings, Role, Taint};

pub const CONFIG_DIR: &str = "/etc/rancher/agent";
pub const VAR_DIR: &str = "/var/lib/rancher/agent";
pub const CONFIG_FILE: &str = "/etc/rancher/agent/config.yaml";
pub const CONNECTION_INFO_FILE: &str = "/var/lib/rancher/agent/rancher2_connection_info.json";
pub const BINARY: &str = "/usr/local/bin/rancher-system-agent";
pub const UNINSTALL_SCRIPT: &str = "/usr/local/bin/rancher-system-agent-uninstall.sh";
pub const UNIT: &str = "rancher-system-agent.service";
pub const UNIT_FILE: &str = "/etc/systemd/system/rancher-system-agent.service";
/// A client to the Rancher server of `reg`: the proven `trust` (the userdata's CAs beside the
/// system roots only when nothing is pinned) and the userdata's proxy, with an attempt timeout
/// and a body limit.
fn server_client(
    reg: &Registration<'_>,
    trust: &ServerTrust,
    deadline: &Deadline,
    (attempt_timeout, max_body): (Duration, usize),
) -> Result<HttpClient, HttpError> {
    client(
        &trust.tls(reg.trusted_ca),
        reg.proxy,
        deadline,
        attempt_timeout,
        max_body,
    )
}

pub const ENV_FILE: &str = "/etc/systemd/system/rancher-system-agent.env";

/// Rancher's asset suffix for a Rust target architecture.
pub fn asset_arch(arch: &str) -> Result<&'static str, SystemAgentError> {
    match arch {
        "x86_64" | "amd64" => Ok("amd64"),
        "aarch64" | "arm64" => Ok("arm64"),
        other => Err(SystemAgentError::Arch(other.to_string())),
    }
}

/// The persisted CATTLE_ID, created (random) on first use. Reusing it is what keeps a
/// re-run from creating a second machine in Rancher (machine name: `custom-` +
/// sha256(id)[..12]).
pub fn load_or_create_cattle_id(root: &HostRoot) -> Result<(String, bool), SystemAgentError> {
    let choice = cattle_id::decide(root, &CattleIdSource::Random)?;
    persist_cattle_id(root, &choice)?;
    Ok((choice.id, choice.create))
}

/// Writes a new CATTLE_ID to the cattle-id file (0600, as install.sh's `umask 0177`).
fn persist_cattle_id(root: &HostRoot, choice: &CattleIdChoice) -> Result<(), SystemAgentError> {
    if !choice.create {
        return Ok(());
    }
    ensure_private_dir(root, CONFIG_DIR)?;
    let path = root.path(CATTLE_ID_FILE);
    write_atomic(&path, format!("{}\n", choice.id).as_bytes(), 0o600).map_err(io_err(path))
}

fn ensure_private_dir(root: &HostRoot, dir: &str) -> Result<(), SystemAgentError> {
    use std::os::unix::fs::PermissionsExt;
    let path = root.path(dir);
    crate::fsutil::create_dir_all_durable(&path).map_err(io_err(path.clone()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).map_err(io_err(path))
}

/// The headers of `GET /v3/connect/agent` other than `Authorization`, in the installer's
/// order. As system-agent's `install.sh` (`retrieve_connection_info`), node name and
/// addresses go only when the userdata sets them (`None` here): Rancher then takes the
/// agent's own view of the host. Other empty values are sent empty, as the installer does.
pub fn connect_headers(
    cattle_id: &str,
    roles: &[Role],
    node: &NodeHeaders<'_>,
    labels: &BTreeMap<String, String>,
    taints: &[Taint],
) -> Vec<(&'static str, String)> {
    let has = |r: Role| roles.contains(&r).to_string();
    let mut h = vec![
        ("X-Cattle-Id", cattle_id.to_string()),
        ("X-Cattle-Role-Etcd", has(Role::Etcd)),
        ("X-Cattle-Role-Control-Plane", has(Role::Controlplane)),
        ("X-Cattle-Role-Worker", has(Role::Worker)),
    ];
    let optional = [
        ("X-Cattle-Node-Name", node.node_name),
        ("X-Cattle-Address", node.address),
        ("X-Cattle-Internal-Address", node.internal_address),
    ];
    h.extend(
        optional
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v.to_string()))),
    );
    h.push(("X-Cattle-Labels", label_header(labels)));
    h.push((
        "X-Cattle-Taints",
        taints
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(","),
    ));
    h
}

/// What the node says of itself in the connect call; `None` is not sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeHeaders<'a> {
    pub node_name: Option<&'a str>,
    pub address: Option<&'a str>,
    pub internal_address: Option<&'a str>,
}

impl<'a> NodeHeaders<'a> {
    /// The userdata's node name (not the hostname fallback) and the node's addresses as
    /// resolved from the userdata (interface names already turned into addresses).
    pub fn of(reg: &Registration<'a>) -> Self {
        NodeHeaders {
            node_name: reg.explicit_node_name,
            address: reg.node.address.as_deref(),
            internal_address: reg.node.internal_address.as_deref(),
        }
    }
}

/// `k=v,k2=v2`, always with `cattle.io/os=linux`: Rancher's generated node command for Linux
/// nodes passes `--label 'cattle.io/os=linux'`, and the userdata need not repeat it.
pub fn label_header(labels: &BTreeMap<String, String>) -> String {
    let mut all = labels.clone();
    all.entry(OS_LABEL.to_string())
        .or_insert_with(|| "linux".to_string());
    all.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub const OS_LABEL: &str = "cattle.io/os";

/// /etc/rancher/agent/config.yaml with the installer's keys and default directories.
pub fn config_yaml() -> String {
    format!(
        "workDirectory: {VAR_DIR}/work\n\
         appliedPlanDirectory: {VAR_DIR}/applied\n\
         remoteEnabled: true\n\
         localEnabled: false\n\
         localPlanDirectory: {VAR_DIR}/plans\n\
         interlockDirectory: {VAR_DIR}/interlock\n\
         preserveWorkDirectory: false\n\
         connectionInfoFile: {CONNECTION_INFO_FILE}\n"
    )
}

/// The installer's unit, with the binary where bootstrapd puts it (`binary`, under
/// CATTLE_AGENT_BIN_PREFIX: see agent_paths.rs).
pub fn unit_file(binary: &str) -> String {
    format!(
        "[Unit]\n\
         Description=Rancher System Agent\n\
         Documentation=https://www.rancher.com\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         [Install]\n\
         WantedBy=multi-user.target\n\
         [Service]\n\
         EnvironmentFile=-/etc/default/rancher-system-agent\n\
         EnvironmentFile=-/etc/sysconfig/rancher-system-agent\n\
         EnvironmentFile=-{ENV_FILE}\n\
         Type=simple\n\
         Restart=always\n\
         RestartSec=5s\n\
         Environment=CATTLE_LOGLEVEL=info\n\
         Environment=CATTLE_AGENT_CONFIG={CONFIG_FILE}\n\
         ExecStart={binary} sentinel\n"
    )
}

/// The env file: `CATTLE_AGENT_STRICT_VERIFY`, which the agent reads to decide whether it
/// trusts only the CA in its connection info (install.sh writes it from
/// `CATTLE_AGENT_STRICT_VERIFY`/`STRICT_VERIFY`, default false), and the proxy variables.
///
/// rancher/system-agent's `install.sh` (`create_env_file`) copies `HTTP_PROXY`,
/// `HTTPS_PROXY` and `NO_PROXY` (any case) from its own environment into this file under a
/// `umask 0377`. The userdata's `proxy` takes their place when it sets a proxy: then the
/// environment's are left out (a lower-case one would otherwise still be read by whatever the
/// agent runs), and the userdata's are written as `HTTP_PROXY`, `HTTPS_PROXY` and
/// `NO_PROXY`, quoted for systemd's env-file parser.
pub fn env_file(vars: &[(String, String)], proxy: &ProxySettings, strict_verify: bool) -> String {
    let mut out = format!("CATTLE_AGENT_STRICT_VERIFY={strict_verify}\n");
    if proxy.has_proxy() {
        for (k, v) in crate::system::proxy::variables(proxy) {
            out.push_str(&format!("{k}={}\n", env_file_quote(v.expose())));
        }
        return out;
    }
    for (k, v) in vars {
        let upper = k.to_ascii_uppercase();
        if ["HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"].contains(&upper.as_str()) {
            out.push_str(&format!("{k}={v}\n"));
        }
    }
    out
}

/// `value` double-quoted for a systemd `EnvironmentFile=`: inside double quotes its parser
/// takes a backslash before `"`, `\`, `` ` `` and `$` as that character.
fn env_file_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        if matches!(c, '"' | '\\' | '`' | '$') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// What the installation did; no secret in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemAgentRecord {
    pub cattle_id: String,
    /// True when this run created the CATTLE_ID (first registration of this host).
    pub cattle_id_created: bool,
    /// The machine name Rancher gives this node.
    pub machine_name: String,
    pub connection_info_file: String,
    pub binary: String,
    /// `CATTLE_AGENT_STRICT_VERIFY` as written to the env file.
    #[serde(default)]
    pub strict_verify: bool,
    /// Where the binary came from (agent_binary.rs), and its checked sha256 if it was.
    #[serde(default)]
    pub binary_source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_sha256: Option<String>,
}

/// What Rancher answers `/v3/connect/agent` while no machine matches the request
/// (`pkg/capr/configserver/server.go`, `resolver.go`): an unknown, expired or rotated token,
/// or, for a while after a restart, a cluster object CAPI has not brought up yet.
pub const MACHINE_NOT_FOUND: &str = "machine not found by request";

fn is_machine_not_found(r: &Response) -> bool {
    r.status == StatusCode::INTERNAL_SERVER_ERROR
        && String::from_utf8_lossy(&r.body).contains(MACHINE_NOT_FOUND)
}

/// Maps a request error of `step`; a certificate the trust does not accept becomes
/// [`SystemAgentError::Untrusted`].
fn http_err(step: &'static str, trust: &ServerTrust) -> impl Fn(HttpError) -> SystemAgentError {
    let trust = trust.describe();
    move |source| match source {
        HttpError::Certificate { url, detail, .. } => SystemAgentError::Untrusted {
            url,
            trust: trust.clone(),
            detail,
        },
        source => SystemAgentError::Http {
            step,
            source: Box::new(source),
        },
    }
}

/// Whether the agent must verify strictly. The userdata's `rancher.strict_verify` wins;
/// else the server's `agent-tls-mode`, which Rancher writes as `STRICT_VERIFY="true|false"`
/// in the preamble it puts before `GET /system-agent-install.sh`
/// (`pkg/capr/installer/installer.go`, `LinuxInstallScript`); a server that says nothing
/// means false, as `install.sh`'s default. Fetched under the proven trust, without a token.
async fn strict_verify(
    reg: &Registration<'_>,
    http: &HttpClient,
    trust: &ServerTrust,
) -> Result<(bool, &'static str), SystemAgentError> {
    if let Some(v) = reg.strict_verify {
        return Ok((v, "rancher.strict_verify"));
    }
    let url = endpoint(reg.server, "/system-agent-install.sh");
    let err = http_err("agent-tls-mode", trust);
    let resp = http
        .send(&Request::get(&url).map_err(&err)?)
        .await
        .map_err(&err)?;
    if resp.status != StatusCode::OK {
        tracing::warn!(%url, status = resp.status.as_u16(), "no install script preamble: taking agent-tls-mode as system-store (not strict)");
        return Ok((false, "server silent"));
    }
    match strict_from_preamble(&String::from_utf8_lossy(&resp.body)) {
        Some(true) => Ok((true, "the server's agent-tls-mode is strict")),
        Some(false) => Ok((false, "the server's agent-tls-mode")),
        None => Ok((false, "server silent")),
    }
}

/// `STRICT_VERIFY` from the environment preamble of Rancher's install script: the lines
/// after the first shebang and before the script's own.
pub fn strict_from_preamble(script: &str) -> Option<bool> {
    let mut lines = script.lines();
    if !lines.next()?.starts_with("#!") {
        return None;
    }
    let mut found = None;
    for line in lines.take_while(|l| !l.starts_with("#!")) {
        let Some((k, v)) = line.trim().split_once('=') else {
            continue;
        };
        if k == "STRICT_VERIFY" || k == "CATTLE_AGENT_STRICT_VERIFY" {
            found = Some(v.trim_matches('"').eq_ignore_ascii_case("true"));
        }
    }
    found
}

/// `GET /v3/connect/agent` with the token, retried as current Rancher needs: 401 (its
/// informers are not synced yet), 503 (CAPI not up), other 5xx, 408, 429 and connection
/// errors until the deadline; "machine not found by request" until it has lasted
/// `tuning.not_found_window`, then [`SystemAgentError::UnknownToken`]. The server may hold
/// the request up to 120 s while it creates the machine, so one attempt may last 150 s.
async fn connect(
    reg: &Registration<'_>,
    trust: &ServerTrust,
    cattle_id: &str,
    deadline: &Deadline,
    tuning: &Tuning<'_>,
) -> Result<Response, SystemAgentError> {
    let url = endpoint(reg.server, "/v3/connect/agent");
    let err = http_err("connect", trust);
    let req = connect_request(reg, &url, cattle_id).map_err(&err)?;
    let http =
        server_client(reg, trust, deadline, (CONNECT_ATTEMPT_TIMEOUT, 4 << 20)).map_err(&err)?;
    let not_found_since = std::sync::Mutex::new(None);
    let result = http
        .send_with(&req, |r| connect_verdict(r, &url, &not_found_since, tuning))
        .await;
    let not_found_for = not_found_since
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .map(|t| t.elapsed().as_secs());
    let resp = match (result, not_found_for) {
        (Ok(r), Some(seconds)) if is_machine_not_found(&r) => {
            return Err(SystemAgentError::UnknownToken { url, seconds });
        }
        // The deadline ended the wait while the server still said "machine not found".
        (
            Err(HttpError::Exhausted {
                last: Cause::Status(StatusCode::INTERNAL_SERVER_ERROR),
                ..
            }),
            Some(seconds),
        ) => return Err(SystemAgentError::UnknownToken { url, seconds }),
        (r, _) => r.map_err(&err)?,
    };
    if resp.status != StatusCode::OK {
        return Err(SystemAgentError::Status {
            step: "connect",
            url,
            status: resp.status,
        });
    }
    Ok(resp)
}

/// The connect request: the token as a bearer secret, the node's identity in headers.
fn connect_request(
    reg: &Registration<'_>,
    url: &str,
    cattle_id: &str,
) -> Result<Request, HttpError> {
    let mut req = Request::get(url)?.secret_header(
        "Authorization",
        &Secret::new(format!("Bearer {}", reg.token.expose())),
    );
    let node = NodeHeaders::of(reg);
    for (name, value) in connect_headers(cattle_id, reg.roles, &node, reg.labels, reg.taints) {
        req = req.header(name, value);
    }
    Ok(req)
}

/// Whether a connect reply ends the wait (see [`connect`]). `not_found_since` is when the
/// server first answered "machine not found", kept across attempts.
fn connect_verdict(
    r: &Response,
    url: &str,
    not_found_since: &std::sync::Mutex<Option<std::time::Instant>>,
    tuning: &Tuning<'_>,
) -> Verdict {
    if r.status == StatusCode::OK {
        return Verdict::Accept;
    }
    if is_machine_not_found(r) {
        let first = *not_found_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(std::time::Instant::now);
        let waited = first.elapsed();
        let msg = format!(
            "Rancher answers \"{MACHINE_NOT_FOUND}\" (for {} s): the token may be wrong, \
             expired or rotated, or Rancher/CAPI is still starting; giving up after {} s",
            waited.as_secs(),
            tuning.not_found_window.as_secs()
        );
        tracing::warn!(%url, "{msg}");
        (tuning.progress)(&msg);
        return if waited >= tuning.not_found_window {
            Verdict::Accept
        } else {
            Verdict::Retry
        };
    }
    let transient = r.status.is_server_error()
        || r.status == StatusCode::UNAUTHORIZED
        || r.status == StatusCode::TOO_MANY_REQUESTS
        || r.status == StatusCode::REQUEST_TIMEOUT;
    if !transient {
        return Verdict::Accept;
    }
    (tuning.progress)(&format!(
        "Rancher is not ready to register nodes yet (status {}); retrying",
        r.status.as_u16()
    ));
    Verdict::Retry
}

/// The connect reply must be connection info the agent can use.
fn check_connection_info(url: &str, body: &[u8]) -> Result<(), SystemAgentError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ConnectionInfo {
        kube_config: String,
        namespace: String,
        secret_name: String,
    }
    let info: ConnectionInfo =
        serde_json::from_slice(body).map_err(|e| SystemAgentError::ConnectionInfo {
            url: url.to_string(),
            reason: format!("line {} column {}: {e}", e.line(), e.column()),
        })?;
    if info.kube_config.is_empty() || info.namespace.is_empty() || info.secret_name.is_empty() {
        return Err(SystemAgentError::ConnectionInfo {
            url: url.to_string(),
            reason: "kubeConfig, namespace or secretName is empty".into(),
        });
    }
    Ok(())
}

/// Per-attempt limit of the connect call: above the 120 s Rancher may hold it.
pub const CONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(150);

/// How the agent is installed: its paths, the binary when it does not come from
/// `<server>/assets` (already read and checked, see `agent_binary::fetch`), and where its
/// CATTLE_ID comes from.
#[derive(Debug, Clone, Default)]
pub struct AgentInstall {
    pub paths: AgentPaths,
    pub binary: Option<VerifiedBinary>,
    pub cattle_id: CattleIdSource,
}

/// Everything the installer does up to (not including) enabling and starting the unit.
pub async fn install_with(
    root: &HostRoot,
    reg: &Registration<'_>,
    deadline: &Deadline,
    how: &AgentInstall,
    tuning: &Tuning<'_>,
) -> Result<(SystemAgentRecord, ServerTrust), SystemAgentError> {
    let arch = asset_arch(std::env::consts::ARCH)?;
    // Which machine this host is, decided before anything is written or sent.
    let cattle = cattle_id::decide(root, &how.cattle_id)?;
    let (trust, strict) = prove_server(reg, deadline).await?;

    // 2. Binary and uninstall script.
    ensure_private_dir(root, VAR_DIR)?;
    ensure_private_dir(root, CONFIG_DIR)?;
    let (binary, binary_source) = install_binary(root, reg, arch, &trust, deadline, how).await?;

    // 3. CATTLE_ID.
    persist_cattle_id(root, &cattle)?;
    let (cattle_id, created) = (cattle.id, cattle.create);

    // 4. Connection info.
    let resp = connect(reg, &trust, &cattle_id, deadline, tuning).await?;
    check_connection_info(&endpoint(reg.server, "/v3/connect/agent"), &resp.body)?;
    let path = root.path(CONNECTION_INFO_FILE);
    write_atomic(&path, &resp.body, 0o600).map_err(io_err(path))?;

    // 5. Config, unit, env file.
    write_agent_files(root, &binary, &how.paths, strict, reg.proxy)?;

    Ok((
        SystemAgentRecord {
            machine_name: machine_name(&cattle_id),
            cattle_id,
            cattle_id_created: created,
            connection_info_file: CONNECTION_INFO_FILE.to_string(),
            strict_verify: strict,
            binary,
            binary_sha256: how.binary.as_ref().map(|b| b.sha256.clone()),
            binary_source,
        },
        trust,
    ))
}

/// Step 1: the CA proven (checksum, HMAC or system store), the server reachable under that
/// trust, and whether the agent verifies strictly: all before the token goes anywhere.
async fn prove_server(
    reg: &Registration<'_>,
    deadline: &Deadline,
) -> Result<(ServerTrust, bool), SystemAgentError> {
    let server = reg.server;
    let trust =
        cacerts::establish_system_agent(server, reg.ca_checksum, reg.token, deadline, reg.proxy)
            .await?;
    let http = |step| http_err(step, &trust);
    let pinned = matches!(trust, ServerTrust::Pinned { .. });
    if reg.strict_verify == Some(true) && !pinned {
        return Err(SystemAgentError::StrictWithoutCa {
            server: server.to_string(),
            why: "rancher.strict_verify".into(),
        });
    }
    // A certificate the proven trust does not accept fails after CERT_FAIL_ATTEMPTS
    // (rancher/mod.rs), not at the deadline.
    let small = server_client(reg, &trust, deadline, (Duration::from_secs(30), 1 << 20))
        .map_err(http("healthz"))?;
    let url = endpoint(server, "/healthz");
    let resp = small
        .send_with(&Request::get(&url).map_err(http("healthz"))?, |r| {
            if r.status == StatusCode::OK {
                Verdict::Accept
            } else {
                Verdict::Retry
            }
        })
        .await
        .map_err(http("healthz"))?;
    if resp.status != StatusCode::OK {
        return Err(SystemAgentError::Status {
            step: "healthz",
            url,
            status: resp.status,
        });
    }
    let (strict, why) = strict_verify(reg, &small, &trust).await?;
    if strict && !pinned {
        return Err(SystemAgentError::StrictWithoutCa {
            server: server.to_string(),
            why: why.to_string(),
        });
    }
    tracing::info!(strict, why, "agent TLS verification");
    Ok((trust, strict))
}

/// Step 2: the agent binary (checked source, or `<server>/assets`) and the uninstall script.
/// Returns the binary's path on the node and where it came from.
async fn install_binary(
    root: &HostRoot,
    reg: &Registration<'_>,
    arch: &str,
    trust: &ServerTrust,
    deadline: &Deadline,
    how: &AgentInstall,
) -> Result<(String, String), SystemAgentError> {
    let server = reg.server;
    let big = server_client(reg, trust, deadline, (Duration::from_secs(300), 512 << 20))
        .map_err(http_err("download", trust))?;
    let binary = how.paths.binary();
    let binary_source = match &how.binary {
        // Checked before anything was written (agent_binary::fetch); checked again as written.
        Some(b) => {
            agent_binary::install_checked(
                &root.path(&binary),
                &b.bytes,
                Some(&b.sha256),
                &b.source,
            )?;
            tracing::info!(source = %b.source, dest = %binary, sha256 = %b.sha256, "installed");
            b.source.clone()
        }
        None => {
            let url = endpoint(server, &format!("/assets/rancher-system-agent-{arch}"));
            let body = download_asset(&big, &url).await?;
            // No checksum for /assets, as in Rancher's installer (install.sh download_rancher_file).
            agent_binary::install_checked(&root.path(&binary), &body, None, &url)?;
            tracing::info!(%url, dest = %binary, bytes = body.len(), "downloaded");
            url
        }
    };
    let url = endpoint(server, "/assets/system-agent-uninstall.sh");
    let body = download_asset(&big, &url).await?;
    let script = how.paths.uninstall_script();
    let path = root.path(&script);
    write_atomic(&path, &body, 0o755).map_err(io_err(path))?;
    tracing::info!(%url, dest = %script, bytes = body.len(), "downloaded");
    Ok((binary, binary_source))
}

/// Step 5: `config.yaml`, the unit and its env file (proxy variables, strict verify, PATH).
fn write_agent_files(
    root: &HostRoot,
    binary: &str,
    paths: &AgentPaths,
    strict: bool,
    proxy: &ProxySettings,
) -> Result<(), SystemAgentError> {
    let path = root.path(CONFIG_FILE);
    write_atomic(&path, config_yaml().as_bytes(), 0o600).map_err(io_err(path))?;
    let path = root.path(UNIT_FILE);
    write_atomic(&path, unit_file(binary).as_bytes(), 0o644).map_err(io_err(path))?;
    let vars: Vec<(String, String)> = std::env::vars().collect();
    let path = root.path(ENV_FILE);
    let env = env_file(&vars, proxy, strict) + &paths.env_path_line(&vars);
    write_atomic(&path, env.as_bytes(), 0o600).map_err(io_err(path))
}

/// GET `url` from the server (under its CA) and the body, or the status as an error.
async fn download_asset(
    big: &crate::http::HttpClient,
    url: &str,
) -> Result<Vec<u8>, SystemAgentError> {
    let http = |source: HttpError| SystemAgentError::Http {
        step: "download",
        source: Box::new(source),
    };
    let resp = big
        .send(&Request::get(url).map_err(http)?)
        .await
        .map_err(http)?;
    if resp.status != StatusCode::OK {
        return Err(SystemAgentError::Status {
            step: "download",
            url: url.to_string(),
            status: resp.status,
        });
    }
    Ok(resp.body.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::userdata::TaintEffect;

    #[test]
    fn arch_mapping() {
        assert_eq!(asset_arch("x86_64").unwrap(), "amd64");
        assert_eq!(asset_arch("aarch64").unwrap(), "arm64");
        assert!(asset_arch("riscv64").is_err());
        assert!(
            asset_arch(std::env::consts::ARCH).is_ok()
                || cfg!(not(any(target_arch = "x86_64", target_arch = "aarch64")))
        );
    }

    #[test]
    fn cattle_id_shape_and_persistence() {
        let id = new_cattle_id().unwrap();
        assert_eq!(id.len(), 63);
        assert!(
            id.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        let d = tempfile::tempdir().unwrap();
        let root = HostRoot::new(Some(d.path().to_path_buf()));
        let (a, created_a) = load_or_create_cattle_id(&root).unwrap();
        let (b, created_b) = load_or_create_cattle_id(&root).unwrap();
        assert_eq!(a, b);
        assert!(created_a && !created_b);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(root.path(CATTLE_ID_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(root.path(CATTLE_ID_FILE), "not hex!\n").unwrap();
        assert!(load_or_create_cattle_id(&root).is_err());
    }

    #[test]
    fn headers() {
        let node = NodeHeaders {
            node_name: Some("node4"),
            address: Some("10.0.0.14"),
            internal_address: None,
        };
        let labels = BTreeMap::from([
            ("cattle.io/os".to_string(), "linux".to_string()),
            ("zone".to_string(), "a".to_string()),
        ]);
        let taints = vec![Taint {
            key: "dedicated".into(),
            value: "ci".into(),
            effect: TaintEffect::NoSchedule,
        }];
        let h = connect_headers("abc", &[Role::Worker], &node, &labels, &taints);
        let get = |n: &str| h.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("X-Cattle-Id"), Some("abc"));
        assert_eq!(get("X-Cattle-Role-Etcd"), Some("false"));
        assert_eq!(get("X-Cattle-Role-Control-Plane"), Some("false"));
        assert_eq!(get("X-Cattle-Role-Worker"), Some("true"));
        assert_eq!(get("X-Cattle-Node-Name"), Some("node4"));
        assert_eq!(get("X-Cattle-Address"), Some("10.0.0.14"));
        // Unset in the userdata: not sent at all, as install.sh.
        assert_eq!(get("X-Cattle-Internal-Address"), None);
        let none = connect_headers("abc", &[], &NodeHeaders::default(), &labels, &[]);
        assert!(none.iter().all(|(k, _)| !matches!(
            *k,
            "X-Cattle-Node-Name" | "X-Cattle-Address" | "X-Cattle-Internal-Address"
        )));
        assert_eq!(get("X-Cattle-Labels"), Some("cattle.io/os=linux,zone=a"));
        let only_zone = BTreeMap::from([("zone".to_string(), "b".to_string())]);
        assert_eq!(label_header(&only_zone), "cattle.io/os=linux,zone=b");
        assert_eq!(get("X-Cattle-Taints"), Some("dedicated=ci:NoSchedule"));
        assert!(
            h.iter()
                .all(|(k, _)| !k.eq_ignore_ascii_case("authorization"))
        );
    }

    #[test]
    fn strict_verify_from_the_install_script_preamble() {
        // The shape LinuxInstallScript serves: env lines, then Rancher's script.
        let script = "#!/usr/bin/env sh\nSTRICT_VERIFY=\"true\"\n\nCATTLE_SERVER=https://r\n\n#!/bin/sh\nSTRICT_VERIFY=false\n";
        assert_eq!(strict_from_preamble(script), Some(true));
        let relaxed = "#!/usr/bin/env sh\nSTRICT_VERIFY=\"false\"\n#!/bin/sh\n";
        assert_eq!(strict_from_preamble(relaxed), Some(false));
        // Rancher before agent-tls-mode: no line, and the script's own text does not count.
        assert_eq!(
            strict_from_preamble("#!/usr/bin/env sh\n\n#!/bin/sh\nSTRICT_VERIFY=true\n"),
            None
        );
        assert_eq!(strict_from_preamble("<html>"), None);
    }

    #[test]
    fn rendered_files() {
        let c = config_yaml();
        for key in [
            "workDirectory:",
            "appliedPlanDirectory:",
            "remoteEnabled: true",
            "localEnabled: false",
            "localPlanDirectory:",
            "interlockDirectory:",
            "preserveWorkDirectory: false",
            "connectionInfoFile: /var/lib/rancher/agent/rancher2_connection_info.json",
        ] {
            assert!(c.contains(key), "{key} missing from {c}");
        }
        assert!(
            unit_file(BINARY).contains("ExecStart=/usr/local/bin/rancher-system-agent sentinel")
        );
        let vars = [
            ("HTTPS_PROXY".into(), "http://p:3128".into()),
            ("no_proxy".into(), "10.0.0.0/8".into()),
            ("PATH".into(), "/bin".into()),
        ];
        let env = env_file(&vars, &ProxySettings::default(), false);
        assert_eq!(
            env,
            "CATTLE_AGENT_STRICT_VERIFY=false\nHTTPS_PROXY=http://p:3128\nno_proxy=10.0.0.0/8\n"
        );
        assert!(
            env_file(&[], &ProxySettings::default(), true)
                .starts_with("CATTLE_AGENT_STRICT_VERIFY=true\n")
        );
        assert_eq!(machine_name("x").len(), "custom-".len() + 12);
    }

    #[test]
    fn the_userdata_proxy_wins_over_the_environment_in_the_env_file() {
        let vars = [
            ("HTTPS_PROXY".into(), "http://env-proxy:3128".into()),
            ("http_proxy".into(), "http://env-proxy:3128".into()),
            ("no_proxy".into(), "10.0.0.0/8".into()),
        ];
        let proxy = ProxySettings {
            http: Some(Secret::new("http://u:p$w`@proxy.lab:3128/")),
            https: None,
            no_proxy: vec!["localhost".into(), ".svc".into()],
        };
        assert_eq!(
            env_file(&vars, &proxy, true),
            "CATTLE_AGENT_STRICT_VERIFY=true\n\
             HTTP_PROXY=\"http://u:p\\$w\\`@proxy.lab:3128/\"\n\
             NO_PROXY=\"localhost,.svc\"\n"
        );
        // A no_proxy list alone sets no proxy: the environment's variables stay.
        let only_list = ProxySettings {
            no_proxy: vec!["localhost".into()],
            ..Default::default()
        };
        assert!(env_file(&vars, &only_list, false).contains("HTTPS_PROXY=http://env-proxy:3128\n"));
    }
}
