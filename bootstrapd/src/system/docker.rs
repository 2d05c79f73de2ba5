//! Docker Engine API client (bollard over /var/run/docker.sock) and daemon.json rendering.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::Docker;
use futures_util::StreamExt;
use serde_json::{Map, Value};

use crate::fsutil::HostRoot;
use crate::secret::Secret;
use crate::system::image_ref::DOCKER_HUB;
use crate::userdata::RegistryAuth;

pub const SOCKET: &str = "/var/run/docker.sock";
pub const DAEMON_JSON: &str = "/etc/docker/daemon.json";

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error(transparent)]
    NotLive(#[from] crate::fsutil::NotLiveSystem),
    #[error("Docker Engine API at {socket}: {source}")]
    Api {
        socket: PathBuf,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("Docker Engine API at {socket} did not answer ping within {waited:?}: {last}")]
    NotReady {
        socket: PathBuf,
        waited: Duration,
        last: String,
    },
    #[error("pulling image {image}: {source}")]
    Pull {
        image: String,
        #[source]
        source: bollard::errors::Error,
    },
    /// A pull with registry credentials; `reason` has had the credentials scrubbed out.
    #[error("pulling image {image} with the credentials for {registry}: {reason}")]
    PullWithAuth {
        image: String,
        registry: String,
        reason: String,
    },
    #[error("loading image archive {path}: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error(
        "{path}: not a JSON object ({reason}); fix or remove it so registry mirrors can be added"
    )]
    DaemonJson { path: PathBuf, reason: String },
}

/// What the Engine reports about itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EngineInfo {
    pub version: String,
    pub api_version: String,
}

pub fn socket_path(root: &HostRoot) -> PathBuf {
    root.path(SOCKET)
}

/// A client for the Engine below `root`. Fails at once when the socket does not exist.
///
/// Refused when the socket path leads out of a `--root` tree (a `var/run -> /run` symlink):
/// that would be the running system's Engine.
pub fn connect(root: &HostRoot) -> Result<Docker, DockerError> {
    let socket = socket_path(root);
    root.contained(&socket, "Docker Engine")?;
    Docker::connect_with_unix(&socket.to_string_lossy(), 120, bollard::API_DEFAULT_VERSION)
        .map_err(|source| DockerError::Api { socket, source })
}

/// Ping + version in one call, for probes.
pub async fn engine_info(root: &HostRoot) -> Result<EngineInfo, DockerError> {
    let socket = socket_path(root);
    let docker = connect(root)?;
    let api = |source| DockerError::Api {
        socket: socket.clone(),
        source,
    };
    docker.ping().await.map_err(api)?;
    let v = docker.version().await.map_err(api)?;
    Ok(EngineInfo {
        version: v.version.unwrap_or_default(),
        api_version: v.api_version.unwrap_or_default(),
    })
}

/// Waits until the Engine API answers ping (a just-started docker.service takes a moment to
/// create its socket), bounded by `timeout`.
pub async fn wait_ready(root: &HostRoot, timeout: Duration) -> Result<EngineInfo, DockerError> {
    let start = Instant::now();
    loop {
        match engine_info(root).await {
            Ok(info) => return Ok(info),
            Err(e) => {
                if start.elapsed() >= timeout {
                    return Err(DockerError::NotReady {
                        socket: socket_path(root),
                        waited: start.elapsed(),
                        last: e.to_string(),
                    });
                }
                tracing::debug!(error = %e, "Docker Engine not ready yet");
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Splits an image reference into repository and tag for the create-image (pull) call.
/// A `:` before the last `/` is a registry port, not a tag; digests stay in the repository.
pub fn split_image_ref(image: &str) -> (&str, &str) {
    if image.contains('@') {
        return (image, "");
    }
    let last_slash = image.rfind('/').map(|i| i + 1).unwrap_or(0);
    match image[last_slash..].rfind(':') {
        Some(i) => (&image[..last_slash + i], &image[last_slash + i + 1..]),
        None => (image, "latest"),
    }
}

pub async fn image_present(docker: &Docker, image: &str) -> bool {
    docker.inspect_image(image).await.is_ok()
}

pub async fn pull(docker: &Docker, image: &str) -> Result<(), DockerError> {
    let (repo, tag) = split_image_ref(image);
    let opts = bollard::query_parameters::CreateImageOptions {
        from_image: Some(repo.to_string()),
        tag: (!tag.is_empty()).then(|| tag.to_string()),
        ..Default::default()
    };
    tracing::info!(%image, "pulling image");
    let mut stream = docker.create_image(Some(opts), None, None);
    while let Some(item) = stream.next().await {
        item.map_err(|source| DockerError::Pull {
            image: image.to_string(),
            source,
        })?;
    }
    Ok(())
}

/// The X-Registry-Auth header's value for `auth` at `registry`: the AuthConfig JSON
/// (`username`/`password`, or `identitytoken`, and `serveraddress`), base64url-encoded with
/// padding. The Engine API docs say base64url (docs.docker.com/reference/api/engine,
/// "Authentication"), and dockerd decodes it with Go's `base64.URLEncoding` (moby
/// api/types/registry/authconfig.go `DecodeAuthConfig`), so `+` and `/` of standard base64
/// would lose the credentials.
pub fn registry_auth_header(auth: &RegistryAuth, registry: &str) -> Secret {
    use base64::Engine as _;
    // Docker's CLI names Docker Hub by its v1 index address.
    let server = if registry == DOCKER_HUB {
        "https://index.docker.io/v1/"
    } else {
        registry
    };
    let config = match auth {
        RegistryAuth::Basic { username, password } => serde_json::json!({
            "username": username,
            "password": password.expose(),
            "serveraddress": server,
        }),
        RegistryAuth::IdentityToken(t) => serde_json::json!({
            "identitytoken": t.expose(),
            "serveraddress": server,
        }),
    };
    Secret::new(base64::engine::general_purpose::URL_SAFE.encode(config.to_string()))
}

/// Pulls `image` with registry credentials: `POST /images/create` with the X-Registry-Auth
/// header written by hand. bollard's `create_image` takes credentials too, but (0.21)
/// encodes them with standard base64, which dockerd does not decode (see
/// [`registry_auth_header`]). The header and its decoded values are never logged, and the
/// Engine's answer is scrubbed of them before it goes into an error.
pub async fn pull_with_auth(
    socket: &Path,
    image: &str,
    registry: &str,
    auth: &RegistryAuth,
) -> Result<(), DockerError> {
    let header = registry_auth_header(auth, registry);
    let secrets: Vec<&Secret> = match auth {
        RegistryAuth::Basic { password, .. } => vec![password, &header],
        RegistryAuth::IdentityToken(t) => vec![t, &header],
    };
    let fail = |reason: String| DockerError::PullWithAuth {
        image: image.to_string(),
        registry: registry.to_string(),
        reason: crate::secret::scrub(&reason, &secrets),
    };
    let (repo, tag) = split_image_ref(image);
    // Built apart: the serializer is not Send and must not live across the await below.
    let query = {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("fromImage", repo);
        if !tag.is_empty() {
            q.append_pair("tag", tag);
        }
        q.finish()
    };
    let head = format!(
        "POST /images/create?{} HTTP/1.1\r\nHost: docker\r\nUser-Agent: bootstrapd\r\n\
         X-Registry-Auth: {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        query,
        header.expose()
    );
    tracing::info!(%image, %registry, kind = auth.describe(), "pulling image with registry credentials");
    let head = Secret::new(head);
    let socket_owned = socket.to_path_buf();
    let reply = tokio::task::spawn_blocking(move || exchange(&socket_owned, &head, PULL_REPLY_MAX))
        .await
        .map_err(|e| fail(e.to_string()))?
        .map_err(fail)?;
    check_load_reply(&reply).map_err(fail)
}

/// A pull's reply is a JSON progress line per layer update; a large image makes a few MB.
const PULL_REPLY_MAX: u64 = 64 << 20;

/// An I/O error's message with what was done to the Engine socket.
fn at_socket(socket: &Path) -> impl Fn(&str) -> Box<dyn FnOnce(std::io::Error) -> String> {
    let socket = socket.display().to_string();
    move |what: &str| {
        let what = format!("{what} {socket}");
        Box::new(move |e: std::io::Error| format!("{what}: {e}"))
    }
}

/// A blocking connection to the Engine socket, with the I/O timeouts of a load or pull.
fn engine_connection(socket: &Path) -> Result<std::os::unix::net::UnixStream, String> {
    let at = at_socket(socket);
    let conn = std::os::unix::net::UnixStream::connect(socket).map_err(at("connecting to"))?;
    conn.set_read_timeout(Some(LOAD_IO_TIMEOUT))
        .and_then(|()| conn.set_write_timeout(Some(LOAD_IO_TIMEOUT)))
        .map_err(at("configuring the connection to"))?;
    Ok(conn)
}

/// One request without a body (`head` ends the header) and its raw reply. Blocking.
fn exchange(socket: &Path, head: &Secret, limit: u64) -> Result<Vec<u8>, String> {
    use std::io::{Read, Write};
    let at = at_socket(socket);
    let mut conn = engine_connection(socket)?;
    conn.write_all(head.expose().as_bytes())
        .map_err(at("writing to"))?;
    let mut reply = Vec::new();
    conn.take(limit)
        .read_to_end(&mut reply)
        .map_err(at("reading the reply of"))?;
    Ok(reply)
}

/// `docker load` of an image archive (tar, tar.gz, tar.xz: the Engine decompresses) through
/// the Engine socket `socket`.
///
/// The archive goes from the page cache to the socket with sendfile(2), so it is never copied
/// through bootstrapd's memory: an HTTP client reads it in and writes it out again, and on a
/// small or emulated machine those copies were a third of the CPU bootstrapd spent on a whole
/// run (445 ms of 1.35 s for a 32 MiB archive under qemu TCG). That takes one request written
/// by hand: `POST /images/load`, unversioned so that any Engine takes it.
pub async fn load_archive(socket: &Path, path: &Path) -> Result<(), DockerError> {
    let load_err = |reason: String| DockerError::Load {
        path: path.to_path_buf(),
        reason,
    };
    tracing::info!(path = %path.display(), "loading image archive");
    let cpu_before = crate::metrics::own_cpu_ms();
    let started = Instant::now();
    let (socket_owned, path_owned) = (socket.to_path_buf(), path.to_path_buf());
    let reply = tokio::task::spawn_blocking(move || send_archive(&socket_owned, &path_owned))
        .await
        .map_err(|e| load_err(e.to_string()))?
        .map_err(load_err)?;
    check_load_reply(&reply).map_err(load_err)?;
    tracing::info!(
        path = %path.display(),
        wall_ms = started.elapsed().as_millis() as u64,
        cpu_ms = crate::metrics::cpu_ms_since(cpu_before),
        "image archive loaded"
    );
    Ok(())
}

/// How long the Engine may take to take the archive in, and then to answer: a
/// multi-gigabyte bundle on a slow disk takes minutes.
const LOAD_IO_TIMEOUT: Duration = Duration::from_secs(600);
/// The reply is a few JSON lines; more than this is not an Engine talking.
const LOAD_REPLY_MAX: u64 = 1 << 20;

/// Sends the request and the archive; the raw reply. Blocking.
fn send_archive(socket: &Path, path: &Path) -> Result<Vec<u8>, String> {
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    let at = at_socket(socket);
    let mut conn = engine_connection(socket)?;
    let head = format!(
        "POST /images/load?quiet=1 HTTP/1.1\r\nHost: docker\r\nUser-Agent: bootstrapd\r\n\
         Content-Type: application/x-tar\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).map_err(at("writing to"))?;
    let mut offset: i64 = 0;
    while (offset as u64) < len {
        let left = (len - offset as u64).min(1 << 30) as usize;
        match nix::sys::sendfile::sendfile(conn.as_fd(), file.as_fd(), Some(&mut offset), left) {
            Ok(0) => return Err(format!("the archive ended at byte {offset} of {len}")),
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("sending to {}: {e}", socket.display())),
        }
    }
    let mut reply = Vec::new();
    conn.take(LOAD_REPLY_MAX)
        .read_to_end(&mut reply)
        .map_err(at("reading the reply of"))?;
    Ok(reply)
}

/// Judges the Engine's reply to a load: an HTTP error, or an `error` in the JSON stream (a bad
/// archive is reported that way, under status 200).
fn check_load_reply(raw: &[u8]) -> Result<(), String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return Err(format!(
                "the Engine's reply ends inside its header ({} bytes)",
                raw.len()
            ));
        }
        Err(e) => return Err(format!("the Engine's reply is not HTTP: {e}")),
    };
    let chunked = resp.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("transfer-encoding")
            && String::from_utf8_lossy(h.value)
                .to_ascii_lowercase()
                .contains("chunked")
    });
    let code = resp.code.unwrap_or(0);
    let body = if chunked {
        dechunk(&raw[head_len..])?
    } else {
        raw[head_len..].to_vec()
    };
    let text = String::from_utf8_lossy(&body);
    let message = |v: &Value| {
        v.get("error")
            .or_else(|| v.get("errorDetail").and_then(|d| d.get("message")))
            .or_else(|| v.get("message"))
            .map(|m| {
                m.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| m.to_string())
            })
    };
    if !(200..300).contains(&code) {
        let why = serde_json::from_str::<Value>(text.trim())
            .ok()
            .and_then(|v| message(&v))
            .unwrap_or_else(|| text.trim().chars().take(300).collect());
        return Err(format!("the Engine answered HTTP {code}: {why}"));
    }
    for line in text.lines() {
        if let Ok(v) = serde_json::from_str::<Value>(line)
            && v.get("stream").is_none()
            && let Some(m) = message(&v)
        {
            return Err(m);
        }
    }
    Ok(())
}

/// The body of a chunked HTTP/1.1 message.
fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let cut = || "the Engine's chunked reply is cut short".to_string();
    let mut out = Vec::new();
    loop {
        let eol = rest.windows(2).position(|w| w == b"\r\n").ok_or_else(cut)?;
        let size_field = String::from_utf8_lossy(&rest[..eol]);
        let hex = size_field.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(hex, 16)
            .map_err(|_| format!("the Engine's chunked reply has a bad chunk size {hex:?}"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if rest.len() < size + 2 || &rest[size..size + 2] != b"\r\n" {
            return Err(cut());
        }
        out.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// daemon.json with `registry-mirrors` set to `mirrors`, other keys kept as they are.
/// `None` when the file needs no change (already equal, or nothing to set and no file).
pub fn render_daemon_json(
    path: &Path,
    existing: Option<&str>,
    mirrors: &[String],
) -> Result<Option<String>, DockerError> {
    let bad = |reason: String| DockerError::DaemonJson {
        path: path.to_path_buf(),
        reason,
    };
    let mut obj: Map<String, Value> = match existing.map(str::trim) {
        None | Some("") => {
            if mirrors.is_empty() {
                return Ok(None);
            }
            Map::new()
        }
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err(bad("top level is not an object".into())),
            Err(e) => return Err(bad(format!("line {} column {}: {e}", e.line(), e.column()))),
        },
    };
    let want = Value::Array(mirrors.iter().cloned().map(Value::String).collect());
    let current = obj.get("registry-mirrors");
    if current == Some(&want) || (current.is_none() && mirrors.is_empty()) {
        return Ok(None);
    }
    if mirrors.is_empty() {
        // The userdata is the authority on mirrors: an empty list removes old ones.
        obj.remove("registry-mirrors");
    } else {
        obj.insert("registry-mirrors".into(), want);
    }
    let mut text =
        serde_json::to_string_pretty(&Value::Object(obj)).map_err(|e| bad(e.to_string()))?;
    text.push('\n');
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_replies_are_judged_as_the_engine_means_them() {
        // dockerd streams the outcome, chunked, under 200 whatever happened.
        let chunked = |body: &str| {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                 Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                body.len()
            )
            .into_bytes()
        };
        let ok = chunked("{\"stream\":\"Loaded image: rancher/agent:v1\\n\"}\n");
        assert_eq!(check_load_reply(&ok), Ok(()));
        let bad = chunked(
            "{\"errorDetail\":{\"message\":\"unexpected EOF\"},\"error\":\"unexpected EOF\"}\n",
        );
        assert_eq!(check_load_reply(&bad), Err("unexpected EOF".to_string()));
        // Not chunked (a proxy, or an older Engine), and an HTTP error with its message.
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\n{\"stream\":\"\"}\n";
        assert_eq!(check_load_reply(plain), Ok(()));
        let refused = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 25\r\n\r\n\
                        {\"message\":\"disk full\"}\n";
        assert_eq!(
            check_load_reply(refused),
            Err("the Engine answered HTTP 500: disk full".to_string())
        );
        // Cut or garbled replies are errors, never a quiet success.
        let mut cut = chunked("{\"stream\":\"Loaded image: x\"}\n");
        cut.truncate(cut.len() - 12);
        assert!(check_load_reply(&cut).unwrap_err().contains("cut short"));
        let no_end = b"HTTP/1.1 200 OK\r\nContent-";
        assert!(check_load_reply(no_end).unwrap_err().contains("header"));
        let garbage = b"\x00\x01garbage\r\n\r\n";
        assert!(check_load_reply(garbage).unwrap_err().contains("not HTTP"));
        let bad_size = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nx\r\n0\r\n\r\n";
        assert!(
            check_load_reply(bad_size)
                .unwrap_err()
                .contains("bad chunk size")
        );
    }

    /// What dockerd does with the header: base64url (padded) decoded, then JSON.
    fn decode(header: &Secret) -> Value {
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::URL_SAFE
            .decode(header.expose())
            .expect("base64url");
        serde_json::from_slice(&raw).unwrap()
    }

    #[test]
    fn the_auth_header_is_base64url_json_as_the_engine_decodes_it() {
        // Bytes that standard base64 writes as `+` and `/`: `?>` and `?~` among them.
        let password = "p?>?~??/é";
        let h = registry_auth_header(
            &RegistryAuth::Basic {
                username: "agent".into(),
                password: Secret::new(password),
            },
            "10.0.2.2:5443",
        );
        assert!(!h.expose().contains(['+', '/']), "{}", h.expose());
        // The same JSON in standard base64 has them: what bollard would have sent.
        let json = decode(&h).to_string();
        use base64::Engine as _;
        let standard = base64::engine::general_purpose::STANDARD.encode(&json);
        assert!(standard.contains(['+', '/']), "{standard}");
        assert_eq!(
            decode(&h),
            serde_json::json!({
                "username": "agent",
                "password": password,
                "serveraddress": "10.0.2.2:5443",
            })
        );
        let t = registry_auth_header(
            &RegistryAuth::IdentityToken(Secret::new("refresh-token")),
            DOCKER_HUB,
        );
        assert_eq!(
            decode(&t),
            serde_json::json!({
                "identitytoken": "refresh-token",
                "serveraddress": "https://index.docker.io/v1/",
            })
        );
        assert_eq!(format!("{t:?}"), crate::secret::REDACTED);
    }

    #[test]
    fn image_refs() {
        assert_eq!(
            split_image_ref("rancher/rancher-agent:v2.6.14"),
            ("rancher/rancher-agent", "v2.6.14")
        );
        assert_eq!(
            split_image_ref("reg.lab:5000/rancher/rancher-agent"),
            ("reg.lab:5000/rancher/rancher-agent", "latest")
        );
        assert_eq!(
            split_image_ref("reg.lab:5000/rancher/rancher-agent:v2.7.1"),
            ("reg.lab:5000/rancher/rancher-agent", "v2.7.1")
        );
        assert_eq!(
            split_image_ref("busybox@sha256:abcd"),
            ("busybox@sha256:abcd", "")
        );
    }

    #[test]
    fn daemon_json() {
        let p = Path::new("/etc/docker/daemon.json");
        let m = vec!["https://mirror.lab".to_string()];
        assert_eq!(render_daemon_json(p, None, &[]).unwrap(), None);
        let fresh = render_daemon_json(p, None, &m).unwrap().unwrap();
        let v: Value = serde_json::from_str(&fresh).unwrap();
        assert_eq!(v["registry-mirrors"][0], "https://mirror.lab");
        // Already right: nothing to write.
        assert_eq!(render_daemon_json(p, Some(&fresh), &m).unwrap(), None);
        // Other keys survive.
        let merged = render_daemon_json(p, Some(r#"{"log-driver":"journald"}"#), &m)
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(&merged).unwrap();
        assert_eq!(v["log-driver"], "journald");
        assert_eq!(v["registry-mirrors"][0], "https://mirror.lab");
        // Empty list removes stale mirrors.
        let cleared = render_daemon_json(p, Some(&fresh), &[]).unwrap().unwrap();
        assert_eq!(cleared.trim(), "{}");
        let err = render_daemon_json(p, Some("{oops"), &m)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/etc/docker/daemon.json") && err.contains("line 1"),
            "{err}"
        );
        assert!(render_daemon_json(p, Some("[1]"), &m).is_err());
    }
}
