//! test-registry on loopback: Basic auth on /v2/, a pull's round trip (manifest digest = sha256
//! of the served bytes, every blob's digest, the config's diff_ids = sha256 of the gunzipped
//! layers, the layer tar byte for byte), HEAD, the distribution spec's 404 error bodies, both
//! `docker save` layouts, TLS, and the binary with gen-ca.

mod common;

use std::io::Read;
use std::path::Path;

use common::{PASSWORD, USER, basic, direct, layer_tar, log_lines, sha256_hex};
use edge_servers::archive;
use edge_servers::registry::{self, Registry, RegistryConfig};
use reqwest::StatusCode;

const TAG: &str = "rancher/rancher-agent:v2.6.14";

fn layers() -> Vec<Vec<u8>> {
    vec![
        layer_tar(&[
            ("bin/busybox", b"\x7fELF busybox".as_slice()),
            ("usr/bin/agent", b"\x7fELF agent"),
        ]),
        layer_tar(&[(
            "usr/bin/entrypoint.sh",
            b"#!/bin/bash\nexec tini -- agent\n".as_slice(),
        )]),
    ]
}

async fn start(archive_path: &Path, auth: bool, log: Option<std::path::PathBuf>) -> Registry {
    registry::start(RegistryConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        images: vec![archive::load(TAG, archive_path).expect("archive loads")],
        credentials: if auth {
            vec![format!("{USER}:{PASSWORD}").into_bytes()]
        } else {
            Vec::new()
        },
        tls: None,
        log,
    })
    .await
    .expect("registry starts")
}

#[tokio::test]
async fn v2_asks_for_basic_auth_then_answers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let archive_path = common::legacy_archive(dir.path(), "agent.tar", TAG, &layers());
    let log = dir.path().join("registry.jsonl");
    let registry = start(&archive_path, true, Some(log.clone())).await;
    let client = direct();
    let url = format!("{}/v2/", registry.url);

    let anonymous = client.get(&url).send().await.expect("sent");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        anonymous.headers()["www-authenticate"],
        "Basic realm=\"test-registry\""
    );
    assert_eq!(
        anonymous.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
    let body: serde_json::Value = anonymous.json().await.expect("error JSON");
    assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED");

    let wrong = client
        .get(&url)
        .header("authorization", basic(USER, "nope"))
        .send()
        .await
        .expect("sent");
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    // Content is guarded too, not only /v2/.
    let manifest = client
        .get(format!(
            "{}/v2/rancher/rancher-agent/manifests/v2.6.14",
            registry.url
        ))
        .send()
        .await
        .expect("sent");
    assert_eq!(manifest.status(), StatusCode::UNAUTHORIZED);

    let good = client
        .get(&url)
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .expect("sent");
    assert_eq!(good.status(), StatusCode::OK);
    assert_eq!(
        good.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );
    assert_eq!(good.text().await.expect("body"), "{}");

    drop(registry);
    check_auth_log(&log);
}

/// The log of `v2_asks_for_basic_auth_then_answers`: whether auth was presented, never what.
fn check_auth_log(log: &Path) {
    let text = std::fs::read_to_string(log).expect("log");
    assert!(
        !text.contains(PASSWORD) && !text.contains(&basic(USER, PASSWORD)[6..]),
        "{text}"
    );
    let seen: Vec<(String, u64, bool)> = log_lines(log)
        .iter()
        .map(|l| {
            (
                l["path"].as_str().expect("path").to_string(),
                l["status"].as_u64().expect("status"),
                l["auth_presented"].as_bool().expect("bool"),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("/v2/".to_string(), 401, false),
            ("/v2/".to_string(), 401, true),
            (
                "/v2/rancher/rancher-agent/manifests/v2.6.14".to_string(),
                401,
                false
            ),
            ("/v2/".to_string(), 200, true),
        ]
    );
}

/// Pulls `TAG` as a client does and checks every digest, size and diff_id on the way; returns
/// the gunzipped layers.
async fn pull_and_verify(base: &str, client: &reqwest::Client) -> Vec<Vec<u8>> {
    let auth = |r: reqwest::RequestBuilder| r.basic_auth(USER, Some(PASSWORD));
    let manifest_url = format!("{base}/v2/rancher/rancher-agent/manifests/v2.6.14");
    let response = auth(client.get(&manifest_url))
        .header("accept", archive::MANIFEST_V2)
        .send()
        .await
        .expect("manifest");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], archive::MANIFEST_V2);
    let digest = response.headers()["docker-content-digest"]
        .to_str()
        .expect("digest")
        .to_string();
    let bytes = response.bytes().await.expect("manifest bytes");
    assert_eq!(digest, format!("sha256:{}", sha256_hex(&bytes)));

    // The same bytes by digest, and HEAD with the same length and digest.
    let by_digest = auth(client.get(format!(
        "{base}/v2/rancher/rancher-agent/manifests/{digest}"
    )))
    .send()
    .await
    .expect("by digest");
    assert_eq!(by_digest.bytes().await.expect("bytes"), bytes);
    let head = auth(client.head(&manifest_url)).send().await.expect("HEAD");
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(
        head.headers()["content-length"],
        bytes.len().to_string().as_str()
    );
    assert_eq!(head.headers()["docker-content-digest"], digest.as_str());
    assert!(head.bytes().await.expect("no body").is_empty());

    let manifest: serde_json::Value = serde_json::from_slice(&bytes).expect("manifest JSON");
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["mediaType"], archive::MANIFEST_V2);
    assert_eq!(manifest["config"]["mediaType"], archive::CONFIG_V1);
    let config = fetch_blob(base, client, &manifest["config"]).await;
    let config: serde_json::Value = serde_json::from_slice(&config).expect("config JSON");
    let diff_ids = config["rootfs"]["diff_ids"]
        .as_array()
        .expect("diff_ids")
        .clone();
    let descriptors = manifest["layers"].as_array().expect("layers").clone();
    assert_eq!(descriptors.len(), diff_ids.len());
    let mut tars = Vec::new();
    for (descriptor, diff_id) in descriptors.iter().zip(&diff_ids) {
        assert_eq!(descriptor["mediaType"], archive::LAYER_TAR_GZIP);
        let gz = fetch_blob(base, client, descriptor).await;
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(gz.as_slice())
            .read_to_end(&mut tar)
            .expect("gunzip");
        assert_eq!(
            diff_id.as_str().expect("diff_id"),
            format!("sha256:{}", sha256_hex(&tar))
        );
        tars.push(tar);
    }
    tars
}

/// GETs and HEADs the blob of a descriptor, checking size and digest.
async fn fetch_blob(
    base: &str,
    client: &reqwest::Client,
    descriptor: &serde_json::Value,
) -> Vec<u8> {
    let digest = descriptor["digest"].as_str().expect("digest");
    let url = format!("{base}/v2/rancher/rancher-agent/blobs/{digest}");
    let response = client
        .get(&url)
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .expect("blob");
    assert_eq!(response.status(), StatusCode::OK, "{url}");
    assert_eq!(response.headers()["docker-content-digest"], digest);
    let bytes = response.bytes().await.expect("blob bytes").to_vec();
    assert_eq!(Some(bytes.len() as u64), descriptor["size"].as_u64());
    assert_eq!(format!("sha256:{}", sha256_hex(&bytes)), digest);
    let head = client
        .head(&url)
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .expect("HEAD blob");
    assert_eq!(
        head.headers()["content-length"],
        bytes.len().to_string().as_str()
    );
    bytes
}

#[tokio::test]
async fn a_pull_round_trips_the_archive_of_build_agent_image() {
    let dir = tempfile::tempdir().expect("tempdir");
    let layers = layers();
    let archive_path = common::legacy_archive(dir.path(), "agent.tar", TAG, &layers);
    let registry = start(&archive_path, true, None).await;
    let pulled = pull_and_verify(&registry.url, &direct()).await;
    assert_eq!(pulled, layers, "the layers come back byte for byte");
    // The served config is the archive's own file, byte for byte.
    let config = common::config_json(TAG, &layers);
    let image = archive::load(TAG, &archive_path).expect("loads");
    assert_eq!(
        image
            .blobs
            .get(&format!("sha256:{}", sha256_hex(&config)))
            .map(|b| b.to_vec()),
        Some(config)
    );
}

#[tokio::test]
async fn docker_25_archives_with_blobs_and_symlinks_load_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let layers = layers();
    let archive_path = common::oci_style_archive(dir.path(), "agent-oci.tar", TAG, &layers);
    let registry = start(&archive_path, true, None).await;
    assert_eq!(pull_and_verify(&registry.url, &direct()).await, layers);
}

#[tokio::test]
async fn unknown_names_tags_and_blobs_are_404_with_the_spec_error_body() {
    let dir = tempfile::tempdir().expect("tempdir");
    let archive_path = common::legacy_archive(dir.path(), "agent.tar", TAG, &layers());
    let registry = start(&archive_path, false, None).await;
    let client = direct();
    let zero = format!("sha256:{}", "0".repeat(64));
    let cases = [
        (
            "/v2/rancher/rancher-agent/manifests/v9.9.9".to_string(),
            "MANIFEST_UNKNOWN",
        ),
        (
            format!("/v2/rancher/rancher-agent/manifests/{zero}"),
            "MANIFEST_UNKNOWN",
        ),
        (
            "/v2/rancher/other/manifests/v2.6.14".to_string(),
            "NAME_UNKNOWN",
        ),
        (
            format!("/v2/rancher/rancher-agent/blobs/{zero}"),
            "BLOB_UNKNOWN",
        ),
        ("/v2/rancher/other/tags/list".to_string(), "NAME_UNKNOWN"),
        (
            "/v2/rancher/rancher-agent/referrers/x".to_string(),
            "UNSUPPORTED",
        ),
    ];
    for (path, code) in cases {
        let response = client
            .get(format!("{}{path}", registry.url))
            .send()
            .await
            .expect("sent");
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(response.headers()["content-type"], "application/json");
        let body: serde_json::Value = response.json().await.expect("JSON");
        assert_eq!(body["errors"][0]["code"], code, "{path}");
        assert!(body["errors"][0]["message"].is_string());
    }
    let tags: serde_json::Value = client
        .get(format!(
            "{}/v2/rancher/rancher-agent/tags/list",
            registry.url
        ))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("tags JSON");
    assert_eq!(
        tags,
        serde_json::json!({"name": "rancher/rancher-agent", "tags": ["v2.6.14"]})
    );
    // Anonymous access when no credentials are configured, and nothing can be written.
    assert_eq!(
        client
            .get(format!("{}/v2/", registry.url))
            .send()
            .await
            .expect("sent")
            .status(),
        StatusCode::OK
    );
    let put = client
        .put(format!(
            "{}/v2/rancher/rancher-agent/manifests/v2.6.14",
            registry.url
        ))
        .body("{}")
        .send()
        .await
        .expect("sent");
    assert_eq!(put.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body: serde_json::Value = put.json().await.expect("JSON");
    assert_eq!(body["errors"][0]["code"], "UNSUPPORTED");
}

#[test]
fn archives_that_do_not_hold_the_image_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let layers = layers();
    let single = common::legacy_archive(dir.path(), "one.tar", TAG, &layers);
    // A single-image archive can be served under another name.
    let renamed = archive::load("mirror/agent:test", &single).expect("single image, any name");
    assert_eq!(
        (renamed.name.as_str(), renamed.tag.as_str()),
        ("mirror/agent", "test")
    );

    // Of several images, the one tagged so is picked; an unknown tag names the ones there are.
    let other = vec![layer_tar(&[("etc/other", b"other".as_slice())])];
    let two = common::legacy_archive_of(
        dir.path(),
        "two.tar",
        &[
            (TAG, common::config_json(TAG, &layers), layers.clone()),
            (
                "other/image:v1",
                common::config_json("other/image:v1", &other),
                other.clone(),
            ),
        ],
    );
    let picked = archive::load("other/image:v1", &two).expect("picked by tag");
    assert_eq!(picked.blobs.len(), 2, "its config and its one layer");
    let err = archive::load("rancher/rancher-agent:v9", &two)
        .map(|_| ())
        .expect_err("no such tag");
    assert!(
        err.to_string()
            .contains("none is tagged rancher/rancher-agent:v9"),
        "{err}"
    );
    assert!(err.to_string().contains("other/image:v1"), "{err}");

    // A config whose diff_ids do not match the layers is not served at all.
    let mismatched = common::legacy_archive_of(
        dir.path(),
        "bad.tar",
        &[(TAG, common::config_json(TAG, &other), layers.clone())],
    );
    let err = archive::load(TAG, &mismatched)
        .map(|_| ())
        .expect_err("diff_ids mismatch");
    assert!(
        err.to_string().contains("diff_ids") || err.to_string().contains("diff_id"),
        "{err}"
    );

    let not_tar = dir.path().join("not.tar");
    std::fs::write(&not_tar, b"not an archive").expect("write");
    assert!(archive::load(TAG, &not_tar).is_err());
    let missing = archive::load(TAG, &dir.path().join("missing.tar"))
        .map(|_| ())
        .expect_err("missing file");
    assert!(missing.to_string().contains("missing.tar"), "{missing}");
}

#[test]
fn the_binary_generates_a_ca_and_serves_https_with_auth() {
    let dir = tempfile::tempdir().expect("tempdir");
    let archive_path = common::legacy_archive(dir.path(), "agent.tar", TAG, &layers());
    let tls = dir.path().join("tls");
    let gen_ca = std::process::Command::new(env!("CARGO_BIN_EXE_test-registry"))
        .args([
            "gen-ca",
            "--dir",
            tls.to_str().expect("path"),
            "--san",
            "10.0.2.2",
            "--san",
            "127.0.0.1",
        ])
        .output()
        .expect("gen-ca runs");
    assert!(
        gen_ca.status.success(),
        "{}",
        String::from_utf8_lossy(&gen_ca.stderr)
    );
    let users = dir.path().join("htpasswd");
    std::fs::write(&users, format!("{USER}:{PASSWORD}\n")).expect("htpasswd");
    let log = dir.path().join("registry.jsonl");
    let image = format!("{TAG}={}", archive_path.display());
    let cert = tls.join("server.pem");
    let key = tls.join("server-key.pem");
    let child = common::spawn(
        env!("CARGO_BIN_EXE_test-registry"),
        &[
            "--listen",
            "127.0.0.1:0",
            "--image",
            &image,
            "--htpasswd-file",
            users.to_str().expect("p"),
            "--tls-cert",
            cert.to_str().expect("p"),
            "--tls-key",
            key.to_str().expect("p"),
            "--log",
            log.to_str().expect("p"),
        ],
        "image:",
    );
    assert!(child.url.starts_with("https://127.0.0.1:"), "{}", child.url);
    assert!(
        child.stdout.iter().any(|l| l == "auth: basic"),
        "{:?}",
        child.stdout
    );

    common::crypto();
    let ca = std::fs::read(tls.join("ca.pem")).expect("ca.pem");
    let client = reqwest::Client::builder()
        .no_proxy()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca).expect("CA")])
        .build()
        .expect("client");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let anonymous = client
            .get(format!("{}/v2/", child.url))
            .send()
            .await
            .expect("TLS verifies with the generated CA");
        assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
        pull_and_verify(&child.url, &client).await;
    });
    drop(child);
    let lines = log_lines(&log);
    assert!(lines.len() >= 7, "{lines:?}");
    assert!(lines.iter().any(|l| l["method"] == "GET"
        && l["path"].as_str().is_some_and(|p| p.contains("/blobs/"))
        && l["bytes"].as_u64().is_some_and(|b| b > 0)));
}
