//! CA checksum in both generations, and the fault injection switches.

mod common;

use std::time::Duration;

use common::{TOKEN, insecure, pinned, server};
use rancher_test_server::Config;
use sha2::{Digest, Sha256};

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

async fn fetch_cacerts(server: &rancher_test_server::Server) -> String {
    insecure()
        .get(format!("{}/cacerts", server.url))
        .send()
        .await
        .expect("response")
        .error_for_status()
        .expect("200")
        .text()
        .await
        .expect("body")
}

async fn fetch_setting(server: &rancher_test_server::Server) -> String {
    let setting: serde_json::Value = insecure()
        .get(format!("{}/v3/settings/cacerts", server.url))
        .send()
        .await
        .expect("response")
        .error_for_status()
        .expect("200")
        .json()
        .await
        .expect("json");
    assert_eq!(setting["type"], "setting");
    assert_eq!(setting["id"], "cacerts");
    setting["value"].as_str().expect("value string").to_string()
}

#[tokio::test]
async fn checksum_matches_in_both_generations() {
    let server = server(Config::default()).await;
    // >= 2.6: hash the /cacerts body as is.
    let body = fetch_cacerts(&server).await;
    assert!(body.ends_with("-----END CERTIFICATE-----\n"));
    assert_eq!(sha256_hex(body.as_bytes()), server.ca_checksum);
    // 2.0-2.5: the setting value has no trailing newline; append one, then hash.
    let value = fetch_setting(&server).await;
    assert!(!value.ends_with('\n'));
    assert_eq!(
        sha256_hex(format!("{value}\n").as_bytes()),
        server.ca_checksum
    );
    // And that CA really is the one in the TLS chain.
    let pong = pinned(&value)
        .get(format!("{}/ping", server.url))
        .send()
        .await
        .expect("TLS verifies against the served CA")
        .text()
        .await
        .expect("body");
    assert_eq!(pong, "pong");
    server.shutdown();

    let legacy = common::server(Config {
        legacy: true,
        ..Config::default()
    })
    .await;
    let value = fetch_setting(&legacy).await;
    assert_eq!(
        sha256_hex(format!("{value}\n").as_bytes()),
        legacy.ca_checksum
    );
    let status = insecure()
        .get(format!("{}/cacerts", legacy.url))
        .send()
        .await
        .expect("response")
        .status();
    assert_eq!(status.as_u16(), 404);
    legacy.shutdown();
}

#[tokio::test]
async fn wrong_ca_breaks_the_checksum_but_not_the_real_chain() {
    let server = server(Config {
        wrong_ca: true,
        ..Config::default()
    })
    .await;
    let body = fetch_cacerts(&server).await;
    assert_ne!(sha256_hex(body.as_bytes()), server.ca_checksum);
    let value = fetch_setting(&server).await;
    assert_ne!(
        sha256_hex(format!("{value}\n").as_bytes()),
        server.ca_checksum
    );
    // Pinning the served (decoy) CA fails; pinning the real one works.
    assert!(
        pinned(&value)
            .get(format!("{}/ping", server.url))
            .send()
            .await
            .is_err()
    );
    assert!(
        pinned(&server.ca_pem)
            .get(format!("{}/ping", server.url))
            .send()
            .await
            .is_ok()
    );
    server.shutdown();
}

#[tokio::test]
async fn state_dir_keeps_the_checksum_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        state_dir: Some(dir.path().to_path_buf()),
        ..Config::default()
    };
    let first = server(config.clone()).await;
    let checksum = first.ca_checksum.clone();
    let p = common::node_params("node7", "10.0.0.7", true, false, false);
    common::tunnel(&first, "/v3/connect/register", Some(TOKEN), Some(&p))
        .await
        .expect("register");
    first.shutdown();

    let second = server(config).await;
    assert_eq!(second.ca_checksum, checksum);
    assert_eq!(
        sha256_hex(fetch_cacerts(&second).await.as_bytes()),
        checksum
    );
    let ca_file = std::fs::read_to_string(dir.path().join("ca.pem")).expect("ca.pem written");
    assert_eq!(rancher_test_server::ca::ca_checksum(&ca_file), checksum);
    // The record file survives as well, so a re-registration is not a second node.
    common::tunnel(&second, "/v3/connect/register", Some(TOKEN), Some(&p))
        .await
        .expect("register again");
    let nodes = second.record();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].connect_count, 2);
    let on_disk = rancher_test_server::record::read_records(&dir.path().join("nodes.json"))
        .expect("record file");
    assert_eq!(on_disk, nodes);
    second.shutdown();
}

#[tokio::test]
async fn fail_503_window_then_service() {
    let server = server(Config {
        fail_503_for: Duration::from_secs(2),
        ..Config::default()
    })
    .await;
    let client = pinned(&server.ca_pem);
    let first = client
        .get(format!("{}/healthz", server.url))
        .send()
        .await
        .expect("response");
    assert_eq!(first.status().as_u16(), 503);
    // The test hook is never blocked.
    let hook = client
        .get(format!("{}/_test/record", server.url))
        .send()
        .await
        .expect("response");
    assert_eq!(hook.status().as_u16(), 200);
    let mut status = 503;
    for _ in 0..600 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = client
            .get(format!("{}/healthz", server.url))
            .send()
            .await
            .expect("response")
            .status()
            .as_u16();
        if status != 503 {
            break;
        }
    }
    assert_eq!(status, 200, "the window ends");
    server.shutdown();
}

#[tokio::test]
async fn reset_first_drops_connections_then_serves() {
    let server = server(Config {
        reset_first: 2,
        ..Config::default()
    })
    .await;
    let mut failures = 0;
    for _ in 0..2 {
        // A fresh client each time so no connection is reused.
        if pinned(&server.ca_pem)
            .get(format!("{}/ping", server.url))
            .send()
            .await
            .is_err()
        {
            failures += 1;
        }
    }
    assert_eq!(failures, 2);
    let pong = pinned(&server.ca_pem)
        .get(format!("{}/ping", server.url))
        .send()
        .await
        .expect("third connection served")
        .text()
        .await
        .expect("body");
    assert_eq!(pong, "pong");
    server.shutdown();
}

#[tokio::test]
async fn test_record_endpoint_and_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let record_file = dir.path().join("nodes.json");
    let server = server(Config {
        record_file: Some(record_file.clone()),
        ..Config::default()
    })
    .await;
    let p = common::node_params("node8", "10.0.0.8", false, true, true);
    common::tunnel(&server, "/v3/connect/register", Some(TOKEN), Some(&p))
        .await
        .expect("register");
    let json: serde_json::Value = pinned(&server.ca_pem)
        .get(format!("{}/_test/record", server.url))
        .send()
        .await
        .expect("response")
        .json()
        .await
        .expect("json");
    assert_eq!(
        json[0]["name"],
        "m-".to_string() + &hex::encode(md5_of("node8"))[..12]
    );
    assert_eq!(
        json[0]["roles"],
        serde_json::json!(["controlplane", "worker"])
    );
    server.shutdown();

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rancher-test-server"))
        .args(["table", "--record"])
        .arg(&record_file)
        .output()
        .expect("table runs");
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.lines().next().is_some_and(|l| l.starts_with("NAME")));
    assert!(
        table.contains("node8") && table.contains("controlplane,worker"),
        "{table}"
    );
}

fn md5_of(s: &str) -> Vec<u8> {
    use md5::Digest as _;
    md5::Md5::digest(s.as_bytes()).to_vec()
}
