//! System-agent registration against the project's Rancher test server
//! (`rancher-test-server`), which records the nodes it accepted the way Rancher names them.

mod common;

use common::{SettingsBuilder, temp_root};

use std::time::Duration;

use bootstrapd::actions::register::{NodeIdentity, RegisterError, register, register_with};
use bootstrapd::fsutil::HostRoot;
use bootstrapd::rancher::Tuning;
use bootstrapd::rancher::cacerts::CaError;
use bootstrapd::rancher::system_agent::SystemAgentError;
use bootstrapd::userdata::{Role, Settings};
use rancher_test_server::{Config, Generation, Rules, start};

const TOKEN: &str = "tsq2w3e4r5t6y7u8i9o0pasdfghjklzxcvbnmqwertyuiopas";

fn settings(url: &str, checksum: &str, roles: Vec<Role>, deadline: u64) -> Settings {
    SettingsBuilder::system_agent(url)
        .roles(&roles)
        .token(TOKEN)
        .ca_checksum(Some(checksum.to_string()))
        .label("cattle.io/os", "linux")
        .deadline(deadline)
        .build()
}

fn node(name: &str) -> NodeIdentity {
    NodeIdentity {
        node_name: name.into(),
        address: Some("10.0.2.15".into()),
        internal_address: Some("192.168.56.14".into()),
    }
}

#[tokio::test]
async fn registers_once_per_identity_with_its_roles() {
    let srv = start(Config {
        tokens: vec![TOKEN.into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let (_dir, root) = temp_root();
    let mut s = settings(&srv.url, &srv.ca_checksum, vec![Role::Worker], 60);
    // X-Cattle-Node-Name goes only when the userdata names the node (install.sh).
    s.rancher.node_name = Some("node4".into());

    let first = register(&root, &s, &node("node4")).await.unwrap();
    let second = register(&root, &s, &node("node4")).await.unwrap();
    let sa = first.system_agent.unwrap();
    assert_eq!(second.system_agent.unwrap().cattle_id, sa.cattle_id);

    let nodes = srv.record();
    assert_eq!(nodes.len(), 1, "one machine for two runs: {nodes:?}");
    let n = &nodes[0];
    assert_eq!(n.generation, Generation::SystemAgent);
    assert_eq!(n.name, sa.machine_name);
    assert_eq!(n.roles, vec!["worker"]);
    assert_eq!(n.hostname.as_deref(), Some("node4"));
    assert_eq!(n.address.as_deref(), Some("10.0.2.15"));
    assert_eq!(n.internal_address.as_deref(), Some("192.168.56.14"));
    assert_eq!(
        n.labels.get("cattle.io/os").map(String::as_str),
        Some("linux")
    );
    srv.shutdown();
}

#[tokio::test]
async fn a_starting_server_is_waited_for() {
    let srv = start(Config {
        tokens: vec![TOKEN.into()],
        fail_503_for: Duration::from_secs(2),
        ..Default::default()
    })
    .await
    .unwrap();
    let (_dir, root) = temp_root();
    let s = settings(
        &srv.url,
        &srv.ca_checksum,
        vec![Role::Etcd, Role::Controlplane],
        60,
    );
    register(&root, &s, &node("node1")).await.unwrap();
    let nodes = srv.record();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].roles, vec!["etcd", "controlplane"]);
    srv.shutdown();
}

#[tokio::test]
async fn a_node_that_comes_while_rancher_restarts_registers_once_when_it_is_ready() {
    // Current Rancher answers every /v3/connect/agent with 401 until its informers have synced
    // (pkg/capr/configserver/server.go); bootstrapd must keep trying, not take it as final.
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("starting");
    std::fs::write(&flag, b"").unwrap();
    let srv = start(Config {
        tokens: vec![TOKEN.into()],
        starting_while: Some(flag.clone()),
        ..Default::default()
    })
    .await
    .unwrap();
    let root = HostRoot::new(Some(dir.path().join("root")));
    let s = settings(&srv.url, &srv.ca_checksum, vec![Role::Worker], 120);
    let node = node("node4");
    let registering = register(&root, &s, &node);
    let release = async {
        // Ends the "starting" window once the node has been refused at least twice.
        loop {
            let (entries, _) = srv.requests();
            let refused = entries
                .iter()
                .filter(|e| e.path == "/v3/connect/agent" && e.status == 401)
                .count();
            if refused >= 2 {
                std::fs::remove_file(&flag).unwrap();
                return refused;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (result, refused) = tokio::join!(registering, release);
    result.unwrap();
    assert!(refused >= 2);
    let nodes = srv.record();
    assert_eq!(nodes.len(), 1, "{nodes:?}");
    assert_eq!(nodes[0].connect_count, 1, "registered exactly once");
    let (entries, _) = srv.requests();
    let connects: Vec<u16> = entries
        .iter()
        .filter(|e| e.path == "/v3/connect/agent")
        .map(|e| e.status)
        .collect();
    assert_eq!(connects.last(), Some(&200), "{connects:?}");
    assert_eq!(
        connects.iter().filter(|s| **s == 200).count(),
        1,
        "{connects:?}"
    );
    srv.shutdown();
}

#[tokio::test]
async fn a_wrong_ca_is_refused_before_anything_is_recorded() {
    let srv = start(Config {
        tokens: vec![TOKEN.into()],
        wrong_ca: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let (_dir, root) = temp_root();
    let s = settings(&srv.url, &srv.ca_checksum, vec![Role::Worker], 20);
    let err = register(&root, &s, &node("node5")).await.unwrap_err();
    assert!(
        matches!(
            err,
            RegisterError::SystemAgent(SystemAgentError::Ca(CaError::Mismatch { .. }))
        ),
        "{err}"
    );
    assert!(srv.record().is_empty());
    srv.shutdown();
}

#[tokio::test]
async fn an_unknown_token_ends_with_the_token_named() {
    let srv = start(Config {
        tokens: vec!["another-token".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let (_dir, root) = temp_root();
    let s = settings(&srv.url, &srv.ca_checksum, vec![Role::Worker], 60);
    // Current Rancher answers an unknown token with "500 machine not found by request",
    // which also happens while CAPI starts: retried for the window, then the token named.
    let tuning = Tuning {
        not_found_window: Duration::from_secs(1),
        ..Default::default()
    };
    let err = register_with(&root, &s, &node("node6"), &tuning)
        .await
        .unwrap_err();
    assert!(err.is_token_refused(), "{err}");
    assert!(
        err.to_string()
            .contains("does not know this registration token"),
        "{err}"
    );
    assert!(srv.record().is_empty());
    srv.shutdown();
}

#[tokio::test]
async fn an_unknown_token_under_the_2_6_rules_is_retried_until_the_deadline() {
    // Rancher 2.6 answers an unknown token with 401, which current Rancher also answers while
    // it starts: bootstrapd cannot tell the two apart, so it keeps trying until the deadline
    // and then names the last answer.
    let srv = start(Config {
        tokens: vec!["another-token".into()],
        rules: Rules::V2_6,
        ..Default::default()
    })
    .await
    .unwrap();
    let (_dir, root) = temp_root();
    let s = settings(&srv.url, &srv.ca_checksum, vec![Role::Worker], 4);
    let err = register(&root, &s, &node("node6")).await.unwrap_err();
    assert!(err.to_string().contains("401"), "{err}");
    assert!(!err.to_string().contains(TOKEN), "{err}");
    assert!(srv.record().is_empty());
    assert!(
        !root
            .path(bootstrapd::rancher::system_agent::CONNECTION_INFO_FILE)
            .exists()
    );
    srv.shutdown();
}
