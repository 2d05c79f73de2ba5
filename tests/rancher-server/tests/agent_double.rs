//! The rke1 agent double against the server, run as a real process.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{TOKEN, eventually, server};
use rancher_test_server::Config;
use tokio::process::{Child, Command};

fn agent(server: &rancher_test_server::Server, dir: &Path, token: &str, checksum: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rancher-agent-double"));
    cmd.env_clear()
        .current_dir(dir)
        .env("CATTLE_SERVER", &server.url)
        .env("CATTLE_TOKEN", token)
        .env("CATTLE_CA_CHECKSUM", checksum)
        .env("CATTLE_NODE_NAME", "double1")
        .env("CATTLE_ADDRESS", "10.0.0.21")
        .env("CATTLE_INTERNAL_ADDRESS", "192.168.0.21")
        .env("CATTLE_ROLE", ",etcd,worker,controlplane")
        .env("CATTLE_NODE_LABEL", ",zone=a")
        .env("CATTLE_NODE_TAINTS", "")
        .env("RANCHER_AGENT_DOUBLE_CA_FILE", dir.join("ssl/serverca"))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Waits for an agent that is expected to give up, returning (success, stderr).
async fn finish(child: Child) -> (bool, String) {
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("the agent gives up instead of retrying forever")
        .expect("wait");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test]
async fn registers_holds_and_reconnects() {
    let server = server(Config::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = agent(&server, dir.path(), TOKEN, &server.ca_checksum)
        .spawn()
        .expect("agent starts");

    let node = eventually("the agent registered", || {
        server.record().into_iter().next()
    })
    .await;
    assert_eq!(node.hostname.as_deref(), Some("double1"));
    assert_eq!(node.roles, vec!["etcd", "controlplane", "worker"]);
    assert_eq!(node.address.as_deref(), Some("10.0.0.21"));
    assert_eq!(node.internal_address.as_deref(), Some("192.168.0.21"));
    assert_eq!(node.labels.get("zone").map(String::as_str), Some("a"));
    eventually("the tunnel is held", || {
        (server.active_tunnels() == 1).then_some(())
    })
    .await;

    // The verified CA was pinned to the file the real agent uses.
    let pinned = std::fs::read_to_string(dir.path().join("ssl/serverca")).expect("CA file");
    assert_eq!(
        rancher_test_server::ca::ca_checksum(&pinned),
        server.ca_checksum
    );
    // onConnect marks the agent connected: it writes the file just after the upgrade that the
    // server already counts as a held tunnel, so the file may trail the count.
    let connected = dir.path().join("connected");
    eventually("onConnect marks the agent connected", || {
        connected.exists().then_some(())
    })
    .await;

    server.drop_tunnels();
    let again = eventually("the agent reconnected", || {
        server
            .record()
            .into_iter()
            .next()
            .filter(|n| n.connect_count >= 2)
    })
    .await;
    assert_eq!(server.record().len(), 1, "a reconnect is not a second node");
    assert_eq!(again.name, node.name);
    eventually("the tunnel is back", || {
        (server.active_tunnels() == 1).then_some(())
    })
    .await;
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "still running"
    );

    child.start_kill().expect("kill");
    let _ = child.wait().await;
    server.shutdown();
}

#[tokio::test]
async fn rejected_tokens_end_the_agent_with_a_message() {
    let server = server(Config::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");

    let child = agent(&server, dir.path(), "not-the-token", &server.ca_checksum)
        .spawn()
        .expect("spawn");
    let (ok, stderr) = finish(child).await;
    assert!(!ok);
    assert!(
        stderr.contains("400") && stderr.contains("not known to the server"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("not-the-token"),
        "the token is never printed"
    );

    let child = agent(&server, dir.path(), "", &server.ca_checksum)
        .spawn()
        .expect("spawn");
    let (ok, stderr) = finish(child).await;
    assert!(!ok);
    assert!(stderr.contains("401"), "{stderr}");
    assert!(server.record().is_empty());
    server.shutdown();
}

#[tokio::test]
async fn checksum_mismatch_stops_before_the_token_is_sent() {
    let server = server(Config::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let child = agent(&server, dir.path(), TOKEN, &"0".repeat(64))
        .spawn()
        .expect("spawn");
    let (ok, stderr) = finish(child).await;
    assert!(!ok);
    assert!(
        stderr.contains("does not match given --ca-checksum"),
        "{stderr}"
    );
    server.shutdown();

    // A server serving a CA other than its TLS chain's: the real checksum cannot match.
    let wrong = common::server(Config {
        wrong_ca: true,
        ..Config::default()
    })
    .await;
    let child = agent(&wrong, dir.path(), TOKEN, &wrong.ca_checksum)
        .spawn()
        .expect("spawn");
    let (ok, stderr) = finish(child).await;
    assert!(!ok);
    assert!(
        stderr.contains("does not match given --ca-checksum"),
        "{stderr}"
    );
    assert!(wrong.record().is_empty());
    assert!(!dir.path().join("ssl/serverca").exists(), "nothing pinned");
    wrong.shutdown();
}
