//! The EC2 datasource against a real IMDS imitation on loopback (IMDSv2 token flow).

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use bootstrapd::config::AgentConfig;
use bootstrapd::datasource::{self, DatasourceError, DatasourceKind};
use bootstrapd::fsutil::HostRoot;

#[derive(Default)]
struct Imds {
    /// Token endpoint disabled: an IMDSv1-only service.
    v1_only: bool,
    userdata: Option<Vec<u8>>,
    /// Answer user-data with 503 this many times first.
    userdata_503: u32,
    /// Invalidate the token after its first use (as after an IMDS restart).
    expire_after_first_use: bool,
    valid_token: Option<String>,
    tokens_issued: u32,
    /// Every request: "METHOD path token-or-dash".
    log: Vec<String>,
}

type Shared = Arc<Mutex<Imds>>;

async fn token(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let mut s = s.lock().unwrap();
    s.log.push("PUT token".into());
    if s.v1_only {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    if headers
        .get("x-aws-ec2-metadata-token-ttl-seconds")
        .is_none()
    {
        return StatusCode::BAD_REQUEST.into_response();
    }
    s.tokens_issued += 1;
    let t = format!("tok-{}", s.tokens_issued);
    s.valid_token = Some(t.clone());
    t.into_response()
}

fn authorize(s: &mut Imds, headers: &HeaderMap, path: &str) -> Result<(), StatusCode> {
    let tok = headers
        .get("x-aws-ec2-metadata-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    s.log
        .push(format!("GET {path} {}", tok.as_deref().unwrap_or("-")));
    if s.v1_only {
        return Ok(());
    }
    if tok.is_none() || tok != s.valid_token {
        return Err(StatusCode::UNAUTHORIZED);
    }
    if s.expire_after_first_use {
        s.expire_after_first_use = false;
        s.valid_token = None;
    }
    Ok(())
}

async fn meta(State(s): State<Shared>, Path(key): Path<String>, headers: HeaderMap) -> Response {
    let mut s = s.lock().unwrap();
    if let Err(r) = authorize(&mut s, &headers, &format!("meta-data/{key}")) {
        return r.into_response();
    }
    match key.as_str() {
        "instance-id" => "i-0123456789abcdef0".into_response(),
        "local-hostname" => "ip-10-0-0-5.ec2.internal".into_response(),
        "instance-type" => "m5.large".into_response(),
        "placement/availability-zone" => "us-east-1a".into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn userdata(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let mut s = s.lock().unwrap();
    if let Err(r) = authorize(&mut s, &headers, "user-data") {
        return r.into_response();
    }
    if s.userdata_503 > 0 {
        s.userdata_503 -= 1;
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    match &s.userdata {
        Some(u) => u.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn start(imds: Imds) -> (Shared, String) {
    let shared: Shared = Arc::new(Mutex::new(imds));
    let app = Router::new()
        .route("/latest/api/token", put(token))
        .route("/latest/meta-data/{*key}", get(meta))
        .route("/latest/user-data", get(userdata))
        .with_state(shared.clone());
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (shared, format!("http://{addr}"))
}

/// A host root that looks like a Nitro EC2 instance.
fn ec2_root() -> (tempfile::TempDir, HostRoot) {
    let d = tempfile::tempdir().unwrap();
    let root = HostRoot::new(Some(d.path().into()));
    let dmi = root.path("/sys/class/dmi/id");
    std::fs::create_dir_all(&dmi).unwrap();
    std::fs::write(dmi.join("sys_vendor"), "Amazon EC2\n").unwrap();
    std::fs::write(
        dmi.join("product_uuid"),
        "ec2e1916-9099-7caf-fd21-012345abcdef\n",
    )
    .unwrap();
    (d, root)
}

fn cfg(base: &str) -> AgentConfig {
    let mut c = AgentConfig::default();
    c.metadata.ec2 = base.to_string();
    c.timeouts.initial_backoff_ms = 5;
    c.timeouts.max_backoff_ms = 20;
    c.timeouts.datasource_deadline_ms = 20_000;
    c
}

#[tokio::test]
async fn imdsv2_token_flow() {
    let (imds, base) = start(Imds {
        userdata: Some(b"#cloud-config\nhostname: n1\n".to_vec()),
        ..Imds::default()
    })
    .await;
    let (_d, root) = ec2_root();
    let cands = datasource::detect(&root, &cfg(&base).datasource_options());
    assert_eq!(cands.len(), 1);
    assert_eq!(cands[0].kind(), DatasourceKind::Ec2);
    assert!(
        cands[0].evidence.contains("Amazon EC2"),
        "{}",
        cands[0].evidence
    );

    let f = datasource::fetch(&root, &cfg(&base).datasource_options())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(f.source, "ec2");
    assert_eq!(f.instance_id, "i-0123456789abcdef0");
    assert_eq!(f.hostname.as_deref(), Some("ip-10-0-0-5.ec2.internal"));
    assert_eq!(f.userdata, b"#cloud-config\nhostname: n1\n");
    assert_eq!(f.metadata["instance-type"], "m5.large");
    assert_eq!(f.metadata["placement/availability-zone"], "us-east-1a");
    assert!(
        f.metadata.get("local-ipv4").is_none(),
        "404 keys are left out"
    );
    assert!(f.signature.is_none());

    let s = imds.lock().unwrap();
    assert_eq!(s.tokens_issued, 1);
    assert_eq!(s.log[0], "PUT token");
    for line in &s.log[1..] {
        assert!(line.ends_with(" tok-1"), "request without token: {line}");
        assert!(
            !line.contains("iam"),
            "credentials must not be fetched: {line}"
        );
    }
}

#[tokio::test]
async fn token_is_refreshed_on_401() {
    let (imds, base) = start(Imds {
        userdata: Some(b"ud".to_vec()),
        expire_after_first_use: true,
        ..Imds::default()
    })
    .await;
    let (_d, root) = ec2_root();
    let f = datasource::fetch(&root, &cfg(&base).datasource_options())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(f.userdata, b"ud");
    assert_eq!(f.instance_id, "i-0123456789abcdef0");
    let s = imds.lock().unwrap();
    assert_eq!(s.tokens_issued, 2);
    assert!(s.log.iter().any(|l| l.ends_with(" tok-2")));
}

#[tokio::test]
async fn user_data_503_is_retried() {
    let (imds, base) = start(Imds {
        userdata: Some(b"after-503".to_vec()),
        userdata_503: 3,
        ..Imds::default()
    })
    .await;
    let (_d, root) = ec2_root();
    let f = datasource::fetch(&root, &cfg(&base).datasource_options())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(f.userdata, b"after-503");
    let s = imds.lock().unwrap();
    let ud = s
        .log
        .iter()
        .filter(|l| l.starts_with("GET user-data"))
        .count();
    assert_eq!(ud, 4);
}

#[tokio::test]
async fn imdsv1_is_refused_unless_allowed() {
    let (imds, base) = start(Imds {
        v1_only: true,
        userdata: Some(b"v1 data".to_vec()),
        ..Imds::default()
    })
    .await;
    let (_d, root) = ec2_root();
    let err = datasource::fetch(&root, &cfg(&base).datasource_options())
        .await
        .unwrap_err();
    assert!(
        matches!(err, DatasourceError::ImdsTokenRefused { status: 405, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("imds_v1_fallback"), "{err}");
    assert!(
        !imds
            .lock()
            .unwrap()
            .log
            .iter()
            .any(|l| l.starts_with("GET")),
        "no v1 request may be made when the fallback is off"
    );

    let mut c = cfg(&base);
    c.imds_v1_fallback = true;
    let f = datasource::fetch(&root, &c.datasource_options())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(f.userdata, b"v1 data");
    assert_eq!(f.instance_id, "i-0123456789abcdef0");
}

#[tokio::test]
async fn no_user_data_is_empty_userdata_with_instance_id() {
    let (_imds, base) = start(Imds::default()).await;
    let (_d, root) = ec2_root();
    let f = datasource::fetch(&root, &cfg(&base).datasource_options())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(f.source, "ec2");
    assert!(f.userdata.is_empty());
    assert_eq!(f.instance_id, "i-0123456789abcdef0");

    // A baked-in file with content is preferred over EC2's empty user-data.
    std::fs::create_dir_all(root.path("/etc/bootstrapd")).unwrap();
    std::fs::write(root.path("/etc/bootstrapd/userdata.yaml"), "baked: true\n").unwrap();
    std::fs::write(root.path("/etc/machine-id"), "m-id\n").unwrap();
    let f = datasource::fetch(&root, &cfg(&base).datasource_options())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(f.source, "local_file");
    assert_eq!(f.userdata, b"baked: true\n");
}

#[tokio::test]
async fn explicit_ec2_needs_no_dmi_evidence() {
    let (_imds, base) = start(Imds {
        userdata: Some(b"x".to_vec()),
        ..Imds::default()
    })
    .await;
    let d = tempfile::tempdir().unwrap();
    let root = HostRoot::new(Some(d.path().into()));
    std::fs::create_dir_all(root.path("/proc")).unwrap();
    std::fs::write(
        root.path("/proc/cmdline"),
        "quiet bootstrapd.datasource=ec2\n",
    )
    .unwrap();
    let cands = datasource::detect(&root, &cfg(&base).datasource_options());
    assert_eq!(cands.len(), 1);
    assert!(cands[0].explicit);
    let f = datasource::fetch(&root, &cfg(&base).datasource_options())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(f.userdata, b"x");
}
