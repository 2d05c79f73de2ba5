//! Runtime readiness and the runtime pipeline below a test root: the Engine API double on
//! `<root>/var/run/docker.sock` comes up late, and a host with Docker running is left alone.

mod common;

use common::SettingsBuilder;

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bootstrapd::facts::runtime::gather;
use bootstrapd::fsutil::HostRoot;
use bootstrapd::plan::Outcome;
use bootstrapd::plan::runtime::plan;
use bootstrapd::system::docker::{self, DockerError};
use bootstrapd::userdata::Settings;

fn tmp_root() -> (tempfile::TempDir, HostRoot) {
    let d = tempfile::Builder::new()
        .prefix("rt")
        .tempdir_in("/tmp")
        .unwrap();
    let r = HostRoot::new(Some(d.path().to_path_buf()));
    (d, r)
}

fn serve_engine(root: &HostRoot, version: &'static str) {
    let sock = root.path(docker::SOCKET);
    std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
    let l = tokio::net::UnixListener::bind(&sock).unwrap();
    let app = Router::new().fallback(get(move |req: axum::extract::Request| async move {
        let p = req.uri().path().to_string();
        if p.ends_with("/_ping") {
            "OK".to_string()
        } else if p.ends_with("/version") {
            format!(r#"{{"Version":"{version}","ApiVersion":"1.43"}}"#)
        } else {
            String::new()
        }
    }));
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
}

#[tokio::test]
async fn waits_for_an_engine_that_comes_up_late() {
    let (_d, root) = tmp_root();
    let r2 = root.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        serve_engine(&r2, "24.0.7");
    });
    let info = docker::wait_ready(&root, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(info.version, "24.0.7");
    assert_eq!(info.api_version, "1.43");
}

#[tokio::test]
async fn readiness_wait_is_bounded() {
    let (_d, root) = tmp_root();
    let err = docker::wait_ready(&root, Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(matches!(err, DockerError::NotReady { .. }), "{err}");
    assert!(err.to_string().contains("docker.sock"), "{err}");
}

fn settings() -> Settings {
    SettingsBuilder::rke1("https://rancher.lab")
        .token("t")
        .deadline(10)
        .build()
}

#[tokio::test]
async fn a_host_with_docker_running_needs_nothing() {
    let (_d, root) = tmp_root();
    std::fs::create_dir_all(root.path("/usr/bin")).unwrap();
    std::fs::write(root.path("/usr/bin/apt-get"), "").unwrap();
    std::fs::create_dir_all(root.path("/var/lib/dpkg")).unwrap();
    std::fs::write(
        root.path("/var/lib/dpkg/status"),
        "Package: docker.io\nStatus: install ok installed\nVersion: 20.10.24+dfsg1-1+b3\n",
    )
    .unwrap();
    std::fs::create_dir_all(root.path("/etc")).unwrap();
    std::fs::write(root.path("/etc/hostname"), "node4\n").unwrap();
    serve_engine(&root, "20.10.24+dfsg1");

    let facts = gather(&root, &settings(), None).await;
    assert_eq!(
        facts.engine.as_ref().map(|e| e.version.as_str()),
        Some("20.10.24+dfsg1")
    );
    let steps = plan(&settings(), &facts);
    assert!(steps.iter().all(|s| !s.changes()), "{steps:?}");
    let findings =
        bootstrapd::actions::apply_all(bootstrapd::actions::Target::quiet(&root, None), &steps)
            .await;
    assert!(
        findings.iter().all(|f| f.outcome == Outcome::Ok),
        "{findings:?}"
    );

    // A newer engine than RKE knows: a warning in RKE's words, nothing more.
    let (_d2, root2) = tmp_root();
    serve_engine(&root2, "27.3.1");
    let facts = gather(&root2, &settings(), None).await;
    let steps = plan(&settings(), &facts);
    let f = steps
        .iter()
        .map(|s| s.preview())
        .find(|f| f.step == "runtime.rke-docker-version")
        .unwrap();
    assert_eq!(f.outcome, Outcome::Warning);
    assert!(f.detail.starts_with(
        "Unsupported Docker version found [27.3.1] on host [unknown], supported versions are ["
    ));
}
