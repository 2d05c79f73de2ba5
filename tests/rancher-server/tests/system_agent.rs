//! rancher-system-agent protocol: GET /v3/connect/agent and the assets.

mod common;

use common::{TOKEN, pinned, server};
use rancher_test_server::{Config, Generation, Rules};

const CATTLE_ID: &str = "3f1c6a9f0b7e4d2a8c5e1b9d7f3a6c0e2b4d8f1a3c5e7b9d0f2a4c6e8b1d3f5";

fn agent_request(
    server: &rancher_test_server::Server,
    token: Option<&str>,
    id: Option<&str>,
) -> reqwest::RequestBuilder {
    let mut request = pinned(&server.ca_pem)
        .get(format!("{}/v3/connect/agent", server.url))
        .header("X-Cattle-Role-Etcd", "false")
        .header("X-Cattle-Role-Control-Plane", "false")
        .header("X-Cattle-Role-Worker", "true")
        .header("X-Cattle-Node-Name", "node5")
        .header("X-Cattle-Address", "10.0.0.5")
        .header("X-Cattle-Internal-Address", "192.168.1.5")
        .header("X-Cattle-Labels", "cattle.io/os=linux,rack=r1")
        .header("X-Cattle-Taints", "dedicated=ci:NoSchedule");
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    if let Some(id) = id {
        request = request.header("X-Cattle-Id", id);
    }
    request
}

#[tokio::test]
async fn accepted_request_returns_connection_info_and_is_recorded_once() {
    let server = server(Config::default()).await;
    let mut last = serde_json::Value::Null;
    for _ in 0..2 {
        let response = agent_request(&server, Some(TOKEN), Some(CATTLE_ID))
            .send()
            .await
            .expect("response");
        assert_eq!(response.status().as_u16(), 200);
        last = response.json().await.expect("json");
    }
    assert_eq!(last["namespace"], "fleet-default");
    let name = "custom-".to_string()
        + &{
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(CATTLE_ID.as_bytes()))[..12].to_string()
        };
    assert_eq!(last["secretName"], format!("{name}-machine-plan"));
    let kube_config = last["kubeConfig"].as_str().expect("kubeConfig string");
    assert!(kube_config.contains("certificate-authority-data:"));
    assert!(kube_config.contains(&format!("server: {}", server.url)));
    assert!(
        !kube_config.contains(TOKEN),
        "the registration token is not handed back"
    );

    let nodes = server.record();
    assert_eq!(nodes.len(), 1, "same X-Cattle-Id, one machine: {nodes:?}");
    let node = &nodes[0];
    assert_eq!(node.name, name);
    assert_eq!(node.generation, Generation::SystemAgent);
    assert_eq!(node.roles, vec!["worker"]);
    assert_eq!(node.hostname.as_deref(), Some("node5"));
    assert_eq!(node.address.as_deref(), Some("10.0.0.5"));
    assert_eq!(node.internal_address.as_deref(), Some("192.168.1.5"));
    assert_eq!(
        node.labels.get("cattle.io/os").map(String::as_str),
        Some("linux")
    );
    assert_eq!(node.taints, vec!["dedicated=ci:NoSchedule"]);
    assert_eq!(node.connect_count, 2);
    server.shutdown();
}

/// A reimaged node that comes back with a new X-Cattle-Id under the same name is a new
/// machine, as in Rancher: the machine is named after the id (`custom.go`
/// `machineRequestSecretName`), and the unmanaged-machine controller looks it up by that
/// name or the id's `rke.cattle.io/machine-id` label, never by the node name
/// (`pkg/controllers/capr/unmanaged/controller.go` `findMachine`).
#[tokio::test]
async fn a_new_cattle_id_under_the_same_node_name_is_a_second_machine() {
    let server = server(Config::default()).await;
    let other = "0".repeat(63);
    let mut plans = Vec::new();
    for id in [CATTLE_ID, &other, CATTLE_ID] {
        let response = agent_request(&server, Some(TOKEN), Some(id))
            .send()
            .await
            .expect("response");
        assert_eq!(response.status().as_u16(), 200);
        let info: serde_json::Value = response.json().await.expect("json");
        plans.push(info["secretName"].as_str().expect("secretName").to_string());
    }
    // The first id's plan secret is handed out again; the new id gets its own.
    assert_eq!(plans[0], plans[2]);
    assert_ne!(plans[0], plans[1]);
    let mut nodes = server.record();
    nodes.sort_by_key(|n| n.connect_count);
    assert_eq!(nodes.len(), 2, "two ids, two machines: {nodes:?}");
    assert!(nodes.iter().all(|n| n.hostname.as_deref() == Some("node5")));
    assert_eq!(
        nodes.iter().map(|n| n.connect_count).collect::<Vec<_>>(),
        [1, 2]
    );
    assert_eq!(format!("{}-machine-plan", nodes[1].name), plans[0]);
    server.shutdown();
}

/// Rancher 2.6 refusals; current rules are in current_rules.rs.
#[tokio::test]
async fn header_rules_of_the_config_server_2_6() {
    let server = server(Config {
        rules: Rules::V2_6,
        ..Default::default()
    })
    .await;
    let status = |r: reqwest::Response| r.status().as_u16();
    // No X-Cattle-Id: findSA returns nothing -> 401.
    assert_eq!(
        status(
            agent_request(&server, Some(TOKEN), None)
                .send()
                .await
                .expect("r")
        ),
        401
    );
    // No Authorization, a wrong token, or not a Bearer token -> 401.
    assert_eq!(
        status(
            agent_request(&server, None, Some(CATTLE_ID))
                .send()
                .await
                .expect("r")
        ),
        401
    );
    assert_eq!(
        status(
            agent_request(&server, Some("nope"), Some(CATTLE_ID))
                .send()
                .await
                .expect("r")
        ),
        401
    );
    let basic = pinned(&server.ca_pem)
        .get(format!("{}/v3/connect/agent", server.url))
        .header("Authorization", format!("Basic {TOKEN}"))
        .header("X-Cattle-Id", CATTLE_ID)
        .send()
        .await
        .expect("r");
    assert_eq!(status(basic), 401);
    assert!(server.record().is_empty());
    server.shutdown();
}

#[tokio::test]
async fn assets_are_served_and_absent_in_legacy_mode() {
    let server = server(Config::default()).await;
    let client = pinned(&server.ca_pem);
    for asset in [
        "rancher-system-agent-amd64",
        "rancher-system-agent-arm64",
        "system-agent-uninstall.sh",
    ] {
        let body = client
            .get(format!("{}/assets/{asset}", server.url))
            .send()
            .await
            .expect("response")
            .error_for_status()
            .expect("200")
            .text()
            .await
            .expect("body");
        assert!(
            body.starts_with("#!/bin/sh\n"),
            "{asset} is an executable script"
        );
    }
    let missing = client
        .get(format!("{}/assets/other", server.url))
        .send()
        .await
        .expect("response");
    assert_eq!(missing.status().as_u16(), 404);
    server.shutdown();

    let legacy = common::server(Config {
        legacy: true,
        ..Config::default()
    })
    .await;
    let client = pinned(&legacy.ca_pem);
    for path in [
        "/assets/rancher-system-agent-amd64",
        "/v3/connect/agent",
        "/cacerts",
    ] {
        let response = client
            .get(format!("{}{path}", legacy.url))
            .header("Authorization", format!("Bearer {TOKEN}"))
            .header("X-Cattle-Id", CATTLE_ID)
            .send()
            .await
            .expect("response");
        assert_eq!(
            response.status().as_u16(),
            404,
            "{path} does not exist before 2.6"
        );
    }
    legacy.shutdown();
}

#[tokio::test]
async fn the_served_agent_script_runs() {
    let server = server(Config::default()).await;
    let body = pinned(&server.ca_pem)
        .get(format!("{}/assets/rancher-system-agent-amd64", server.url))
        .send()
        .await
        .expect("response")
        .bytes()
        .await
        .expect("body");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rancher-system-agent");
    std::fs::write(&path, &body).expect("write");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = std::process::Command::new(&path)
        .arg("--version")
        .output()
        .expect("runs");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("rancher-system-agent version"));
    server.shutdown();
}
