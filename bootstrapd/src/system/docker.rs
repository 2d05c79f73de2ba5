//! Docker Engine API client (bollard over /var/run/docker.sock) and daemon.json rendering.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::Docker;
use futures_util::StreamExt;
use serde_json::{Map, Value};
use tokio::io::AsyncReadExt;

use crate::fsutil::HostRoot;

pub const SOCKET: &str = "/var/run/docker.sock";
pub const DAEMON_JSON: &str = "/etc/docker/daemon.json";

#[derive(Debug, thiserror::Error)]
pub enum DockerError {
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
pub fn connect(root: &HostRoot) -> Result<Docker, DockerError> {
    let socket = socket_path(root);
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

/// `docker load` of an image archive (tar, tar.gz, tar.xz: the Engine decompresses),
/// streamed from disk so a large bundle is never held in memory.
pub async fn load_archive(docker: &Docker, path: &Path) -> Result<(), DockerError> {
    let load_err = |reason: String| DockerError::Load {
        path: path.to_path_buf(),
        reason,
    };
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| load_err(e.to_string()))?;
    let body = futures_util::stream::unfold(Some(file), |state| async move {
        let mut f = state?;
        let mut buf = vec![0u8; 1 << 20];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf.into()), Some(f)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    tracing::info!(path = %path.display(), "loading image archive");
    let opts = bollard::query_parameters::ImportImageOptions {
        quiet: true,
        ..Default::default()
    };
    let mut stream = docker.import_image_stream(opts, body, None);
    while let Some(item) = stream.next().await {
        item.map_err(|e| load_err(e.to_string()))?;
    }
    Ok(())
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
