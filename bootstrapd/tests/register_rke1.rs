//! RKE1 registration: the CA check against a Rancher double on loopback TLS, then the agent
//! container through a Docker Engine API double listening on `<root>/var/run/docker.sock`.
//! The Engine double keeps containers and images in memory and records every call.

mod common;

use common::{SettingsBuilder, ca_and_server, serve_tls};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bootstrapd::actions::register::{NodeIdentity, RegisterError, register};
use bootstrapd::fsutil::HostRoot;
use bootstrapd::rancher::cacerts;
use bootstrapd::rancher::rke1::SERVER_LABEL;
use bootstrapd::secret::Secret;
use bootstrapd::userdata::{
    OfflineSource, RegistryAuth, RegistryConfig, Role, RuntimeSource, Settings,
};
use serde_json::{Value, json};

const TOKEN: &str = "rke1tokenq8w7e6r5t4y3u2i1o0pzlxkcjvhbgnfmdsa9876543";
const IMAGE: &str = "rancher/rancher-agent:v2.6.14";

// ---------------------------------------------------------------- Rancher double (CA only)

/// A Rancher 2.5-style server: only the legacy settings endpoint serves the CA.
async fn rancher() -> (String, String, Arc<Mutex<Vec<String>>>) {
    let (ca, cert, key) = ca_and_server();
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let value = ca.trim_end_matches('\n').to_string();
    let log2 = log.clone();
    let app = Router::new().fallback(move |req: Request| {
        let log = log2.clone();
        let value = value.clone();
        async move {
            log.lock().unwrap().push(req.uri().path().to_string());
            if req.uri().path() == "/v3/settings/cacerts" {
                axum::Json(json!({"id": "cacerts", "value": value})).into_response()
            } else {
                (StatusCode::NOT_FOUND, "404 page not found").into_response()
            }
        }
    });
    (serve_tls(&cert, &key, app).await, ca, log)
}

// ---------------------------------------------------------------- Docker Engine double

#[derive(Default)]
struct Engine {
    images: Vec<String>,
    /// id -> (create body, running)
    containers: BTreeMap<String, (Value, bool)>,
    calls: Vec<String>,
    creates: Vec<Value>,
    pulls: Vec<String>,
    loads: usize,
    /// The bodies of the image loads, as received.
    loaded: Vec<Bytes>,
    /// Started containers exit at once (as run.sh does on a bad option or CA).
    crash_on_start: bool,
    /// What the agent's log says, when not the default line with the current token.
    log_line: Option<String>,
    removed: Vec<String>,
    /// Each pull's X-Registry-Auth header, as received (None: the pull sent none).
    pull_auths: Vec<Option<String>>,
}

type Shared = Arc<Mutex<Engine>>;

/// Strips bollard's `/v1.xx` prefix.
fn api_path(p: &str) -> String {
    if let Some(rest) = p.strip_prefix("/v")
        && let Some(i) = rest.find('/')
        && rest[..i].chars().all(|c| c.is_ascii_digit() || c == '.')
    {
        return rest[i..].to_string();
    }
    p.to_string()
}

fn query(req: &Request) -> HashMap<String, String> {
    url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

async fn engine(State(e): State<Shared>, req: Request) -> Response {
    let method = req.method().clone();
    let path = api_path(req.uri().path());
    let q = query(&req);
    let registry_auth = req
        .headers()
        .get("x-registry-auth")
        .map(|v| v.to_str().unwrap().to_string());
    let body: Bytes = axum::body::to_bytes(req.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let mut e = e.lock().unwrap();
    e.calls.push(format!("{method} {path}"));
    match (method, path.as_str()) {
        (Method::GET | Method::HEAD, "/_ping") => "OK".into_response(),
        (Method::GET, "/version") => {
            axum::Json(json!({"Version": "24.0.7", "ApiVersion": "1.43"})).into_response()
        }
        (Method::GET, "/containers/json") => {
            let filters: Value = q
                .get("filters")
                .map(|f| serde_json::from_str(f).unwrap())
                .unwrap_or(json!({}));
            let wanted: Vec<String> = filters["label"]
                .as_array()
                .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
                .unwrap_or_default();
            let list: Vec<Value> = e
                .containers
                .iter()
                .filter(|(_, (body, _))| {
                    wanted.iter().all(|w| {
                        let (k, v) = w.split_once('=').unwrap();
                        body["Labels"][k].as_str() == Some(v)
                    })
                })
                .map(|(id, (body, running))| {
                    json!({
                        "Id": id,
                        "Image": body["Image"],
                        "Labels": body["Labels"],
                        "State": if *running { "running" } else { "exited" },
                    })
                })
                .collect();
            axum::Json(Value::Array(list)).into_response()
        }
        (Method::POST, "/containers/create") => {
            let v: Value = serde_json::from_slice(&body).unwrap();
            let image = v["Image"].as_str().unwrap_or("").to_string();
            if !e.images.contains(&image) {
                return (
                    StatusCode::NOT_FOUND,
                    axum::Json(json!({"message": format!("No such image: {image}")})),
                )
                    .into_response();
            }
            let id = format!("{:064x}", e.creates.len() + 0xabc);
            e.creates.push(v.clone());
            e.containers.insert(id.clone(), (v, false));
            axum::Json(json!({"Id": id, "Warnings": []})).into_response()
        }
        (Method::POST, p) if p.starts_with("/containers/") && p.ends_with("/start") => {
            let id = p
                .trim_start_matches("/containers/")
                .trim_end_matches("/start")
                .to_string();
            let crash = e.crash_on_start;
            match e.containers.get_mut(&id) {
                Some(c) => {
                    c.1 = !crash;
                    StatusCode::NO_CONTENT.into_response()
                }
                None => StatusCode::NOT_FOUND.into_response(),
            }
        }
        (Method::GET, p) if p.starts_with("/containers/") && p.ends_with("/json") => {
            let id = p
                .trim_start_matches("/containers/")
                .trim_end_matches("/json")
                .to_string();
            match e.containers.get(&id) {
                Some((body, running)) => axum::Json(json!({
                    "Id": id,
                    "Config": {"Image": body["Image"], "Cmd": body["Cmd"], "Env": body["Env"]},
                    "RestartCount": 0,
                    "State": {
                        "Status": if *running { "running" } else { "exited" },
                        "Running": running,
                        "Restarting": false,
                        "ExitCode": if *running { 0 } else { 1 },
                    },
                }))
                .into_response(),
                None => StatusCode::NOT_FOUND.into_response(),
            }
        }
        (Method::GET, p) if p.starts_with("/containers/") && p.ends_with("/logs") => {
            // Docker's multiplexed stream: 8-byte header (stream 2 = stderr, size), payload.
            let line = e.log_line.clone().unwrap_or_else(|| {
                format!("ERROR: Configured cacerts checksum does not match; token was {TOKEN}\n")
            });
            let mut frame = vec![2u8, 0, 0, 0];
            frame.extend_from_slice(&(line.len() as u32).to_be_bytes());
            frame.extend_from_slice(line.as_bytes());
            (
                [("content-type", "application/vnd.docker.multiplexed-stream")],
                frame,
            )
                .into_response()
        }
        (Method::DELETE, p) if p.starts_with("/containers/") => {
            let id = p.trim_start_matches("/containers/").to_string();
            match e.containers.remove(&id) {
                Some(_) => {
                    e.removed.push(id);
                    StatusCode::NO_CONTENT.into_response()
                }
                None => StatusCode::NOT_FOUND.into_response(),
            }
        }
        (Method::GET, p) if p.starts_with("/images/") && p.ends_with("/json") => {
            let name = p.trim_start_matches("/images/").trim_end_matches("/json");
            if e.images.iter().any(|i| i == name) {
                axum::Json(json!({"Id": "sha256:1"})).into_response()
            } else {
                (
                    StatusCode::NOT_FOUND,
                    axum::Json(json!({"message": "no such image"})),
                )
                    .into_response()
            }
        }
        (Method::POST, "/images/create") => {
            let image = format!(
                "{}:{}",
                q.get("fromImage").cloned().unwrap_or_default(),
                q.get("tag").cloned().unwrap_or_default()
            );
            e.pulls.push(image.clone());
            e.pull_auths.push(registry_auth);
            e.images.push(image);
            "{\"status\":\"Downloaded newer image\"}\n".into_response()
        }
        (Method::POST, "/images/load") => {
            // The archive's contents stand for the agent image.
            assert!(!body.is_empty(), "empty image archive streamed");
            e.loads += 1;
            e.loaded.push(body.clone());
            e.images.push(IMAGE.to_string());
            "{\"stream\":\"Loaded image: rancher/rancher-agent:v2.6.14\\n\"}\n".into_response()
        }
        _ => (StatusCode::NOT_FOUND, "unknown endpoint").into_response(),
    }
}

fn start_engine(root: &HostRoot) -> Shared {
    let sock = root.path("/var/run/docker.sock");
    std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
    let l = tokio::net::UnixListener::bind(&sock).unwrap();
    let shared: Shared = Arc::default();
    let app = Router::new().fallback(engine).with_state(shared.clone());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    shared
}

fn settings(server: &str, checksum: Option<String>) -> Settings {
    SettingsBuilder::rke1(server)
        .roles(&[Role::Etcd, Role::Controlplane, Role::Worker])
        .token(TOKEN)
        .ca_checksum(checksum)
        .agent_image(IMAGE)
        .label("zone", "lab")
        .deadline(30)
        .build()
}

fn node() -> NodeIdentity {
    NodeIdentity {
        node_name: "node1".into(),
        address: Some("192.168.56.11".into()),
        internal_address: None,
    }
}

fn tmp_root() -> (tempfile::TempDir, HostRoot) {
    // Unix socket paths are limited to 108 bytes: keep the root short.
    let d = tempfile::Builder::new()
        .prefix("r1")
        .tempdir_in("/tmp")
        .unwrap();
    let r = HostRoot::new(Some(d.path().to_path_buf()));
    (d, r)
}

#[tokio::test]
async fn creates_the_agent_once_with_the_token_only_in_its_environment() {
    let (url, ca, rlog) = rancher().await;
    let sum = cacerts::checksum(format!("{}\n", ca.trim_end_matches('\n')).as_bytes());
    let (_d, root) = tmp_root();
    let eng = start_engine(&root);
    let s = settings(&url, Some(sum.clone()));

    let first = register(&root, &s, &node()).await.unwrap();
    let r = first.rke1.clone().unwrap();
    assert!(r.created && r.started);
    assert_eq!(r.image_source, "pulled");
    assert_eq!(first.ca_checksum.as_deref(), Some(sum.as_str()));
    assert!(!serde_json::to_string(&first).unwrap().contains(TOKEN));
    // The CA was checked (legacy endpoint after /cacerts answered 404) before Docker was asked.
    assert_eq!(
        rlog.lock().unwrap().clone(),
        vec!["/cacerts", "/v3/settings/cacerts"]
    );

    {
        let e = eng.lock().unwrap();
        assert_eq!(e.pulls, vec![IMAGE.to_string()]);
        assert_eq!(e.creates.len(), 1);
        let c = &e.creates[0];
        assert_eq!(c["Image"], IMAGE);
        let cmd: Vec<&str> = c["Cmd"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            cmd.join(" "),
            format!(
                "--server {url} --ca-checksum {sum} --etcd --controlplane --worker \
                 --node-name node1 --address 192.168.56.11 --label zone=lab"
            )
        );
        assert!(cmd.iter().all(|a| !a.contains(TOKEN)), "token in argv");
        assert_eq!(c["Env"], json!([format!("CATTLE_TOKEN={TOKEN}")]));
        assert_eq!(c["HostConfig"]["Privileged"], true);
        assert_eq!(c["HostConfig"]["NetworkMode"], "host");
        assert_eq!(c["HostConfig"]["RestartPolicy"]["Name"], "unless-stopped");
        assert_eq!(
            c["HostConfig"]["Binds"],
            json!(["/etc/kubernetes:/etc/kubernetes", "/var/run:/var/run"])
        );
        assert_eq!(c["Labels"][SERVER_LABEL], url.as_str());
        assert!(e.containers.values().all(|(_, running)| *running));
    }

    // Second run: found by its label, nothing created twice.
    let second = register(&root, &s, &node()).await.unwrap();
    let r2 = second.rke1.unwrap();
    assert!(!r2.created && !r2.started);
    assert_eq!(r2.container_id, r.container_id);
    let e = eng.lock().unwrap();
    assert_eq!(e.creates.len(), 1);
    assert_eq!(e.pulls.len(), 1);
}

#[tokio::test]
async fn a_stopped_agent_is_started_not_recreated() {
    let (url, ca, _) = rancher().await;
    let sum = cacerts::checksum(format!("{}\n", ca.trim_end_matches('\n')).as_bytes());
    let (_d, root) = tmp_root();
    let eng = start_engine(&root);
    let id = "f".repeat(64);
    // Exactly what this userdata wants: image, arguments and token.
    let cmd = format!(
        "--server {url} --ca-checksum {sum} --etcd --controlplane --worker --node-name node1 \
         --address 192.168.56.11 --label zone=lab"
    );
    eng.lock().unwrap().containers.insert(
        id.clone(),
        (
            json!({"Image": IMAGE, "Labels": {SERVER_LABEL: url.clone()},
                   "Cmd": cmd.split(' ').collect::<Vec<_>>(),
                   "Env": [format!("CATTLE_TOKEN={TOKEN}")]}),
            false,
        ),
    );
    let rec = register(&root, &settings(&url, Some(sum)), &node())
        .await
        .unwrap();
    let r = rec.rke1.unwrap();
    assert_eq!(r.container_id, id);
    assert!(!r.created && r.started);
    let e = eng.lock().unwrap();
    assert!(e.creates.is_empty());
    assert!(e.containers[&id].1, "container was not started");
    assert!(e.calls.contains(&format!("POST /containers/{id}/start")));
}

#[tokio::test]
async fn wrong_checksum_changes_nothing_in_docker() {
    let (url, _ca, _) = rancher().await;
    let (other, _, _) = ca_and_server();
    let (_d, root) = tmp_root();
    let eng = start_engine(&root);
    let err = register(
        &root,
        &settings(&url, Some(cacerts::checksum(other.as_bytes()))),
        &node(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, RegisterError::Ca(_)), "{err}");
    assert!(
        err.to_string()
            .contains("does not match given --ca-checksum")
    );
    // Only questions (is there an agent? is the image there?) may reach the Engine while the
    // server is checked: no pull, no container, no token.
    let e = eng.lock().unwrap();
    assert!(
        e.calls.iter().all(|c| c.starts_with("GET ")),
        "the Engine was changed despite a checksum mismatch: {:?}",
        e.calls
    );
    assert!(e.creates.is_empty() && e.pulls.is_empty());
}

#[tokio::test]
async fn a_bundle_loads_while_the_server_is_checked_but_a_wrong_server_gets_no_container() {
    let (url, _ca, _) = rancher().await;
    let (other, _, _) = ca_and_server();
    let (_d, root) = tmp_root();
    let eng = start_engine(&root);
    std::fs::create_dir_all(root.path("/opt/bundle")).unwrap();
    std::fs::write(root.path("/opt/bundle/rancher-agent.tar"), b"archive").unwrap();
    let mut s = settings(&url, Some(cacerts::checksum(other.as_bytes())));
    s.runtime.source = RuntimeSource::Offline(OfflineSource {
        path: "/opt/bundle".into(),
    });
    let err = register(&root, &s, &node()).await.unwrap_err();
    assert!(matches!(err, RegisterError::Ca(_)), "{err}");
    let e = eng.lock().unwrap();
    assert_eq!(e.loads, 1, "the local archive is loaded during the check");
    assert!(e.creates.is_empty() && e.pulls.is_empty(), "{:?}", e.calls);
}

#[tokio::test]
async fn offline_bundle_image_is_loaded_instead_of_pulled() {
    let (url, ca, _) = rancher().await;
    let sum = cacerts::checksum(format!("{}\n", ca.trim_end_matches('\n')).as_bytes());
    let (_d, root) = tmp_root();
    let eng = start_engine(&root);
    std::fs::create_dir_all(root.path("/opt/bundle")).unwrap();
    // Not a whole number of the loader's chunks, and no two chunks alike: the Engine must get
    // the archive exactly, whatever the loader does with its buffer between chunks.
    let archive: Vec<u8> = (0..(3 << 20) + 4321u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(root.path("/opt/bundle/rancher-agent.tar"), &archive).unwrap();
    let mut s = settings(&url, Some(sum));
    s.runtime.source = RuntimeSource::Offline(OfflineSource {
        path: "/opt/bundle".into(),
    });
    let rec = register(&root, &s, &node()).await.unwrap();
    let r = rec.rke1.unwrap();
    assert!(r.image_source.starts_with("loaded "), "{}", r.image_source);
    let e = eng.lock().unwrap();
    assert_eq!(e.loads, 1);
    assert!(
        e.loaded[0][..] == archive[..],
        "the archive arrived altered"
    );
    assert!(e.pulls.is_empty());
    assert_eq!(e.creates.len(), 1);
}

#[tokio::test]
async fn an_agent_that_exits_is_reported_with_its_log_and_no_token() {
    let (url, ca, _) = rancher().await;
    let sum = cacerts::checksum(format!("{}\n", ca.trim_end_matches('\n')).as_bytes());
    let (_d, root) = tmp_root();
    let eng = start_engine(&root);
    eng.lock().unwrap().crash_on_start = true;
    let err = register(&root, &settings(&url, Some(sum)), &node())
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("does not stay up"), "{msg}");
    assert!(msg.contains("exit code 1"), "{msg}");
    assert!(
        msg.contains("Configured cacerts checksum does not match"),
        "{msg}"
    );
    assert!(msg.contains("<redacted>") && !msg.contains(TOKEN), "{msg}");
}

const NEW_TOKEN: &str = "rke1newtokenzx9c8v7b6n5m4l3k2j1h0gfdsaqwertyuiop123456";

/// The userdata is corrected (token, roles, labels, image): the agent an earlier run created
/// with the old values is replaced, not restarted with them.
#[tokio::test]
async fn a_changed_token_roles_or_image_recreates_the_agent() {
    let (url, ca, _) = rancher().await;
    let sum = cacerts::checksum(format!("{}\n", ca.trim_end_matches('\n')).as_bytes());
    let (_d, root) = tmp_root();
    let eng = start_engine(&root);
    let first = register(&root, &settings(&url, Some(sum.clone())), &node())
        .await
        .unwrap()
        .rke1
        .unwrap();
    assert!(first.created);

    let mut s = settings(&url, Some(sum.clone()));
    s.rancher.token = Secret::new(NEW_TOKEN);
    s.roles = vec![Role::Worker];
    let second = register(&root, &s, &node()).await.unwrap();
    let r = second.rke1.clone().unwrap();
    assert!(r.created && r.started, "{r:?}");
    assert_ne!(r.container_id, first.container_id);
    assert!(!serde_json::to_string(&second).unwrap().contains(NEW_TOKEN));
    {
        let e = eng.lock().unwrap();
        assert_eq!(e.removed, vec![first.container_id.clone()]);
        assert_eq!(e.containers.len(), 1, "exactly one agent container");
        let (body, running) = e.containers.values().next().unwrap();
        assert!(*running);
        assert_eq!(body["Env"], json!([format!("CATTLE_TOKEN={NEW_TOKEN}")]));
        let cmd = body["Cmd"].to_string();
        assert!(
            cmd.contains("\"--worker\"") && !cmd.contains("--etcd"),
            "{cmd}"
        );
    }

    // Same userdata again: kept as it is.
    let third = register(&root, &s, &node()).await.unwrap().rke1.unwrap();
    assert!(!third.created && !third.started);
    assert_eq!(third.container_id, r.container_id);

    // A new agent image: pulled, and the container recreated on it.
    s.rancher.agent_image = "rancher/rancher-agent:v2.6.15".into();
    let fourth = register(&root, &s, &node()).await.unwrap().rke1.unwrap();
    assert!(fourth.created, "{fourth:?}");
    assert_eq!(fourth.image, "rancher/rancher-agent:v2.6.15");
    let e = eng.lock().unwrap();
    assert!(
        e.pulls
            .contains(&"rancher/rancher-agent:v2.6.15".to_string())
    );
    assert_eq!(e.containers.len(), 1);
    assert_eq!(
        e.containers.values().next().unwrap().0["Image"],
        "rancher/rancher-agent:v2.6.15"
    );
}

/// The agent's log may quote a token the userdata no longer holds (an earlier, rotated
/// one): no token-shaped value reaches the error, the journal or `status`.
#[tokio::test]
async fn an_old_token_in_the_agent_log_is_scrubbed() {
    let (url, ca, _) = rancher().await;
    let sum = cacerts::checksum(format!("{}\n", ca.trim_end_matches('\n')).as_bytes());
    let (_d, root) = tmp_root();
    let eng = start_engine(&root);
    const OLD: &str = "oldtokenq8w7e6r5t4y3u2i1o0pzlxkcjvhbgnfmdsa98765432xyz";
    {
        let mut e = eng.lock().unwrap();
        e.crash_on_start = true;
        e.log_line = Some(format!(
            "level=fatal msg=\"token {OLD} rejected\" CATTLE_TOKEN=short-1 image sha256:{}\n",
            "ab12".repeat(16)
        ));
    }
    let msg = register(&root, &settings(&url, Some(sum)), &node())
        .await
        .unwrap_err()
        .to_string();
    assert!(!msg.contains(OLD), "{msg}");
    assert!(!msg.contains("short-1"), "{msg}");
    assert!(msg.contains("token <redacted> rejected"), "{msg}");
    // Digests and checksums (hex) are not tokens: they stay readable.
    assert!(msg.contains(&"ab12".repeat(16)), "{msg}");
}

/// What dockerd does with X-Registry-Auth: base64url (RFC 4648 section 5) then JSON.
fn decode_registry_auth(header: &str) -> Value {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(header)
        .unwrap_or_else(|e| panic!("not base64url: {e}"));
    serde_json::from_slice(&raw).unwrap()
}

fn with_registry(mut s: Settings, host: &str, auth: RegistryAuth) -> Settings {
    s.registries
        .configs
        .insert(host.to_string(), RegistryConfig { auth: Some(auth) });
    s
}

#[tokio::test]
async fn the_agent_image_comes_from_the_default_registry_with_its_credentials() {
    let (url, ca, _) = rancher().await;
    let sum = cacerts::checksum(format!("{}\n", ca.trim_end_matches('\n')).as_bytes());
    let (_d, root) = tmp_root();
    let eng = start_engine(&root);
    // `?>` and `?~` are where standard base64 and base64url differ.
    let password = "p?>?~??/s3cret";
    let mut s = with_registry(
        settings(&url, Some(sum)),
        "10.0.2.2:5443",
        RegistryAuth::Basic {
            username: "agent".into(),
            password: Secret::new(password),
        },
    );
    s.rancher.system_default_registry = Some("10.0.2.2:5443".into());
    let rec = register(&root, &s, &node()).await.unwrap();
    let r = rec.rke1.clone().unwrap();
    let want = format!("10.0.2.2:5443/{IMAGE}");
    assert_eq!(r.image, want);
    assert_eq!(
        r.image_source,
        "pulled with the username and password for 10.0.2.2:5443"
    );
    // Neither the record (the journal's) nor its findings hold the password.
    assert!(!serde_json::to_string(&rec).unwrap().contains("s3cret"));
    let e = eng.lock().unwrap();
    assert_eq!(e.pulls, vec![want.clone()]);
    assert_eq!(e.creates[0]["Image"], want.as_str());
    let header = e.pull_auths[0]
        .as_deref()
        .expect("an X-Registry-Auth header");
    assert_eq!(
        decode_registry_auth(header),
        json!({"username": "agent", "password": password, "serveraddress": "10.0.2.2:5443"})
    );
}

#[tokio::test]
async fn credentials_for_another_registry_are_not_sent() {
    let (url, ca, _) = rancher().await;
    let sum = cacerts::checksum(format!("{}\n", ca.trim_end_matches('\n')).as_bytes());
    let (_d, root) = tmp_root();
    let eng = start_engine(&root);
    // The image is on Docker Hub; the only credentials are another registry's.
    let s = with_registry(
        settings(&url, Some(sum)),
        "registry.lab:5000",
        RegistryAuth::IdentityToken(Secret::new("refresh-token-xyz")),
    );
    let rec = register(&root, &s, &node()).await.unwrap();
    assert_eq!(rec.rke1.unwrap().image_source, "pulled");
    let e = eng.lock().unwrap();
    assert_eq!(e.pulls, vec![IMAGE.to_string()]);
    assert_eq!(e.pull_auths, vec![None]);
}

#[tokio::test]
async fn docker_hub_credentials_go_with_a_docker_hub_image() {
    let (url, ca, _) = rancher().await;
    let sum = cacerts::checksum(format!("{}\n", ca.trim_end_matches('\n')).as_bytes());
    let (_d, root) = tmp_root();
    let eng = start_engine(&root);
    let s = with_registry(
        settings(&url, Some(sum)),
        "docker.io",
        RegistryAuth::IdentityToken(Secret::new("hub-refresh-token")),
    );
    register(&root, &s, &node()).await.unwrap();
    let e = eng.lock().unwrap();
    let header = e.pull_auths[0]
        .as_deref()
        .expect("an X-Registry-Auth header");
    assert_eq!(
        decode_registry_auth(header),
        json!({"identitytoken": "hub-refresh-token", "serveraddress": "https://index.docker.io/v1/"})
    );
}
