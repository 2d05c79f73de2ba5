//! rke1 agent protocol: /v3/connect/register, /v3/connect, /v3/connect/config.

mod common;

use common::{TOKEN, eventually, node_params, params, server, tunnel};
use futures_util::StreamExt;
use rancher_test_server::{Config, Generation};

#[tokio::test]
async fn register_is_accepted_recorded_and_held_open() {
    let server = server(Config::default()).await;
    let p = node_params("node1", "10.0.0.5", true, true, false);
    let mut ws = tunnel(&server, "/v3/connect/register", Some(TOKEN), Some(&p))
        .await
        .expect("handshake accepted");

    let nodes = server.record();
    assert_eq!(nodes.len(), 1);
    let node = &nodes[0];
    assert_eq!(
        node.name, "m-164546f60261",
        "m- + md5(requestedHostname)[..12]"
    );
    assert_eq!(node.generation, Generation::Rke1);
    assert_eq!(node.roles, vec!["etcd", "controlplane"]);
    assert_eq!(node.address.as_deref(), Some("10.0.0.5"));
    assert_eq!(node.hostname.as_deref(), Some("node1"));
    assert_eq!(node.labels.get("env").map(String::as_str), Some("test"));
    assert_eq!(node.taints, vec!["k=v:NoSchedule"]);
    assert_eq!(node.connect_count, 1);

    eventually("tunnel counted as open", || {
        (server.active_tunnels() == 1).then_some(())
    })
    .await;
    // The server keeps the session alive with pings rather than closing it.
    let first = ws.next().await.expect("a frame").expect("no error");
    assert!(first.is_ping(), "expected a keepalive ping, got {first:?}");

    server.drop_tunnels();
    let mut closed = false;
    while let Some(frame) = ws.next().await {
        match frame {
            Ok(f) if f.is_close() => {
                closed = true;
                break;
            }
            Ok(_) => continue,
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "server closed the tunnel on drop_tunnels");
    server.shutdown();
}

#[tokio::test]
async fn repeated_registration_is_one_entry() {
    let server = server(Config::default()).await;
    let p = node_params("node2", "10.0.0.6", false, false, true);
    for _ in 0..3 {
        let ws = tunnel(&server, "/v3/connect/register", Some(TOKEN), Some(&p))
            .await
            .expect("accepted");
        drop(ws);
    }
    // A reconnect after registration goes to /v3/connect and counts too.
    tunnel(&server, "/v3/connect", Some(TOKEN), Some(&p))
        .await
        .expect("known node may connect");
    let nodes = server.record();
    assert_eq!(nodes.len(), 1, "registered once: {nodes:?}");
    assert_eq!(nodes[0].connect_count, 4);
    assert_eq!(nodes[0].roles, vec!["worker"]);
    server.shutdown();
}

#[tokio::test]
async fn missing_token_is_401_and_unknown_token_is_400() {
    let server = server(Config::default()).await;
    let p = node_params("node3", "10.0.0.7", true, false, false);

    let (status, body) = tunnel(&server, "/v3/connect/register", None, Some(&p))
        .await
        .expect_err("rejected");
    assert_eq!((status, body.as_str()), (401, "failed authentication"));

    let (status, body) = tunnel(&server, "/v3/connect/register", Some(""), Some(&p))
        .await
        .expect_err("rejected");
    assert_eq!((status, body.as_str()), (401, "failed authentication"));

    // Rancher's authorizer errors with "cluster not found" for an unknown token, and
    // remotedialer turns authorizer errors into 400.
    let (status, body) = tunnel(
        &server,
        "/v3/connect/register",
        Some("not-a-token"),
        Some(&p),
    )
    .await
    .expect_err("rejected");
    assert_eq!((status, body.as_str()), (400, "cluster not found"));
    assert!(server.record().is_empty());
    server.shutdown();
}

#[tokio::test]
async fn malformed_params_are_400() {
    let server = server(Config::default()).await;
    let cases: Vec<(Option<String>, &str)> = vec![
        (None, "invalid params JSON"),
        (Some("%%%".to_string()), "illegal base64"),
        (
            Some(params(&serde_json::json!({}))),
            "missing node or cluster registration info",
        ),
        (
            Some(params(
                &serde_json::json!({"node": {"requestedHostname": ""}}),
            )),
            "invalid input, hostname empty",
        ),
        (
            Some(params(
                &serde_json::json!({"node": {"requestedHostname": "n", "etcd": true}}),
            )),
            "invalid input, missing custom config",
        ),
        (
            Some(params(
                &serde_json::json!({"node": {"requestedHostname": "n",
                "customConfig": {"address": ""}}}),
            )),
            "invalid input, address empty",
        ),
        (
            Some(params(
                &serde_json::json!({"node": {"requestedHostname": "n", "worker": "yes"}}),
            )),
            "invalid params JSON",
        ),
    ];
    for (p, expected) in cases {
        let (status, body) = tunnel(&server, "/v3/connect/register", Some(TOKEN), p.as_deref())
            .await
            .expect_err("rejected");
        assert_eq!(status, 400, "params {p:?}");
        assert!(body.contains(expected), "params {p:?}: body {body:?}");
    }
    assert!(server.record().is_empty());
    server.shutdown();
}

#[tokio::test]
async fn connect_without_registration_is_400() {
    let server = server(Config::default()).await;
    let p = node_params("stranger", "10.0.0.8", true, false, false);
    let (status, body) = tunnel(&server, "/v3/connect", Some(TOKEN), Some(&p))
        .await
        .expect_err("rejected");
    assert_eq!(status, 400);
    assert!(body.contains("not found"), "{body}");
    server.shutdown();
}

#[tokio::test]
async fn plain_http_request_to_the_tunnel_is_400_after_auth() {
    let server = server(Config::default()).await;
    let p = node_params("node9", "10.0.0.9", true, false, false);
    let client = common::pinned(&server.ca_pem);
    let response = client
        .get(format!("{}/v3/connect/register", server.url))
        .header("X-API-Tunnel-Token", TOKEN)
        .header("X-API-Tunnel-Params", &p)
        .send()
        .await
        .expect("response");
    assert_eq!(response.status().as_u16(), 400, "no websocket upgrade");
    server.shutdown();
}

async fn config_status(server: &rancher_test_server::Server, token: Option<&str>, p: &str) -> u16 {
    let client = common::pinned(&server.ca_pem);
    let mut request = client
        .get(format!("{}/v3/connect/config", server.url))
        .header("X-API-Tunnel-Params", p);
    if let Some(token) = token {
        request = request.header("X-API-Tunnel-Token", token);
    }
    request.send().await.expect("response").status().as_u16()
}

#[tokio::test]
async fn node_config_statuses_follow_the_node_config_server() {
    let server = server(Config::default()).await;
    let p = node_params("node4", "10.0.0.4", true, true, true);
    assert_eq!(config_status(&server, None, &p).await, 401);
    assert_eq!(config_status(&server, Some("unknown"), &p).await, 500);
    assert_eq!(
        config_status(&server, Some(TOKEN), &p).await,
        500,
        "node not registered yet"
    );
    tunnel(&server, "/v3/connect/register", Some(TOKEN), Some(&p))
        .await
        .expect("register");
    assert_eq!(
        config_status(&server, Some(TOKEN), &p).await,
        503,
        "no plan yet: retry"
    );
    let cluster = params(&serde_json::json!({"cluster": {"address": "10.43.0.1:443",
        "token": "sa-token", "caCert": "Y2E="}}));
    assert_eq!(config_status(&server, Some(TOKEN), &cluster).await, 404);
    assert_eq!(
        server.record()[0].connect_count,
        1,
        "plan polls are not connections"
    );
    server.shutdown();

    let ready = common::server(Config {
        plan_ready: true,
        ..Config::default()
    })
    .await;
    tunnel(&ready, "/v3/connect/register", Some(TOKEN), Some(&p))
        .await
        .expect("register");
    let plan: serde_json::Value = common::pinned(&ready.ca_pem)
        .get(format!("{}/v3/connect/config", ready.url))
        .header("X-API-Tunnel-Token", TOKEN)
        .header("X-API-Tunnel-Params", &p)
        .send()
        .await
        .expect("response")
        .error_for_status()
        .expect("200")
        .json()
        .await
        .expect("json");
    assert_eq!(plan["clusterName"], "c-test");
    ready.shutdown();
}
