//! A read-only Docker Registry HTTP API V2 server (the API the OCI Distribution Specification
//! standardised: opencontainers/distribution-spec `spec.md`, "Pull"), enough for
//! `docker pull`, containerd and skopeo to pull the images it was given:
//!
//! - `GET /v2/`: 200 `{}`, or 401 with `WWW-Authenticate: Basic realm="test-registry"` when
//!   Basic credentials are configured and the request lacks valid ones (the spec's
//!   "Determining support" endpoint; Docker's client reads the challenge from it first);
//! - `GET|HEAD /v2/<name>/manifests/<tag|digest>`: the schema 2 manifest with its
//!   `Content-Type` and `Docker-Content-Digest` (spec "Pulling manifests");
//! - `GET|HEAD /v2/<name>/blobs/<digest>`: config and layer blobs (spec "Pulling blobs");
//! - `GET /v2/<name>/tags/list`: the tags (spec "Listing tags"; `skopeo inspect` reads it);
//! - every refusal with the spec's error body `{"errors":[{"code":...,"message":...,"detail":...}]}`
//!   (spec "Error Codes": `UNAUTHORIZED` 401, `NAME_UNKNOWN`, `MANIFEST_UNKNOWN`,
//!   `BLOB_UNKNOWN` 404, `UNSUPPORTED` 405 for anything that writes).
//!
//! Every response carries `Docker-Distribution-API-Version: registry/2.0`, which Docker's client
//! expects from a V2 registry (distribution/distribution `docs/spec/api.md`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum_server::tls_rustls::RustlsConfig;
use serde_json::json;

use crate::Error;
use crate::archive::{Image, MANIFEST_V2};
use crate::jsonlog::JsonLog;

/// How the registry is set up.
pub struct RegistryConfig {
    pub listen: SocketAddr,
    pub images: Vec<Image>,
    /// Accepted `user:password` pairs; empty: anonymous pulls.
    pub credentials: Vec<Vec<u8>>,
    /// Serve HTTPS with this configuration instead of plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub log: Option<PathBuf>,
}

/// A running registry; dropping it shuts it down.
pub struct Registry {
    pub addr: SocketAddr,
    /// `http://` or `https://` and the listen address.
    pub url: String,
    handle: axum_server::Handle<SocketAddr>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

#[derive(Default)]
struct Repository {
    tags: BTreeMap<String, String>,
    manifests: BTreeMap<String, Bytes>,
    blobs: BTreeMap<String, Bytes>,
}

struct AppState {
    repositories: BTreeMap<String, Repository>,
    credentials: Vec<Vec<u8>>,
    log: JsonLog,
}

/// Binds and starts serving; returns once it listens.
pub async fn start(config: RegistryConfig) -> Result<Registry, Error> {
    let listen_err = |source| Error::Listen {
        addr: config.listen,
        source,
    };
    let listener = std::net::TcpListener::bind(config.listen).map_err(listen_err)?;
    listener.set_nonblocking(true).map_err(listen_err)?;
    let addr = listener.local_addr().map_err(listen_err)?;
    let mut repositories: BTreeMap<String, Repository> = BTreeMap::new();
    for image in config.images {
        let repository = repositories.entry(image.name).or_default();
        repository
            .tags
            .insert(image.tag, image.manifest_digest.clone());
        repository
            .manifests
            .insert(image.manifest_digest, image.manifest);
        repository.blobs.extend(image.blobs);
    }
    let state = Arc::new(AppState {
        repositories,
        credentials: config.credentials,
        log: JsonLog::open(config.log.as_deref())?,
    });
    let app = router(state);
    let handle = axum_server::Handle::new();
    let server = axum_server::from_tcp(listener)
        .map_err(listen_err)?
        .handle(handle.clone());
    let scheme = match config.tls {
        Some(tls) => {
            let server = server.acceptor(axum_server::tls_rustls::RustlsAcceptor::new(
                RustlsConfig::from_config(tls),
            ));
            tokio::spawn(async move {
                if let Err(e) = server.serve(app.into_make_service()).await {
                    eprintln!("test-registry: server stopped: {e}");
                }
            });
            "https"
        }
        None => {
            tokio::spawn(async move {
                if let Err(e) = server.serve(app.into_make_service()).await {
                    eprintln!("test-registry: server stopped: {e}");
                }
            });
            "http"
        }
    };
    Ok(Registry {
        addr,
        url: format!("{scheme}://{addr}"),
        handle,
    })
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v2", get(base).fallback(unsupported))
        .route("/v2/", get(base).fallback(unsupported))
        .route("/v2/{*rest}", get(content).fallback(unsupported))
        .fallback(unsupported)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// The distribution spec's error body.
fn error(status: StatusCode, code: &str, message: &str, detail: serde_json::Value) -> Response {
    let body = json!({"errors": [{"code": code, "message": message, "detail": detail}]});
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Authentication, the API version header and the request log, around every route.
async fn guard(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let presented = request.headers().get(header::AUTHORIZATION);
    let auth_presented = presented.is_some();
    let allowed = state.credentials.is_empty()
        || presented.is_some_and(|v| crate::credential_matches(v.as_bytes(), &state.credentials));
    let mut response = if allowed {
        next.run(request).await
    } else {
        let mut refused = error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "authentication required",
            serde_json::Value::Null,
        );
        refused.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"test-registry\""),
        );
        refused
    };
    response.headers_mut().insert(
        "docker-distribution-api-version",
        HeaderValue::from_static("registry/2.0"),
    );
    // The length hyper will send (Content-Length is only added after this layer).
    let bytes = response.body().size_hint().exact();
    state.log.write(json!({
        "method": method.as_str(),
        "path": path,
        "status": response.status().as_u16(),
        "bytes": bytes,
        "auth_presented": auth_presented,
    }));
    response
}

async fn base() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], "{}").into_response()
}

async fn unsupported(method: Method) -> Response {
    let status = if method == Method::GET || method == Method::HEAD {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::METHOD_NOT_ALLOWED
    };
    error(
        status,
        "UNSUPPORTED",
        "this registry is read-only and serves /v2/ pulls only",
        serde_json::Value::Null,
    )
}

/// `/v2/<name>/manifests/<reference>`, `/v2/<name>/blobs/<digest>` and
/// `/v2/<name>/tags/list`; `<name>` has slashes.
async fn content(State(state): State<Arc<AppState>>, Path(rest): Path<String>) -> Response {
    if let Some(name) = rest.strip_suffix("/tags/list") {
        // Spec "Listing tags" (skopeo inspect reads it); no pagination for a handful of tags.
        return match state.repositories.get(name) {
            Some(repository) => axum::Json(json!({
                "name": name,
                "tags": repository.tags.keys().collect::<Vec<_>>(),
            }))
            .into_response(),
            None => name_unknown(name),
        };
    }
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        let Some(repository) = state.repositories.get(name) else {
            return name_unknown(name);
        };
        let digest = if reference.starts_with("sha256:") {
            Some(reference.to_string())
        } else {
            repository.tags.get(reference).cloned()
        };
        return match digest.and_then(|d| repository.manifests.get(&d).map(|m| (d, m.clone()))) {
            Some((digest, manifest)) => found(MANIFEST_V2, &digest, manifest),
            None => error(
                StatusCode::NOT_FOUND,
                "MANIFEST_UNKNOWN",
                "manifest unknown",
                json!({"name": name, "reference": reference}),
            ),
        };
    }
    if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
        let Some(repository) = state.repositories.get(name) else {
            return name_unknown(name);
        };
        return match repository.blobs.get(digest) {
            Some(blob) => found("application/octet-stream", digest, blob.clone()),
            None => error(
                StatusCode::NOT_FOUND,
                "BLOB_UNKNOWN",
                "blob unknown to registry",
                json!({"digest": digest}),
            ),
        };
    }
    error(
        StatusCode::NOT_FOUND,
        "UNSUPPORTED",
        "unknown endpoint",
        serde_json::Value::Null,
    )
}

fn name_unknown(name: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "NAME_UNKNOWN",
        "repository name not known to registry",
        json!({"name": name}),
    )
}

/// A content response. For HEAD, axum drops the body after setting `Content-Length` from it,
/// so HEAD answers with the same length and digest as GET.
fn found(content_type: &'static str, digest: &str, body: Bytes) -> Response {
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(digest) {
        headers.insert("docker-content-digest", value);
    }
    response
}
