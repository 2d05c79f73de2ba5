//! Current Rancher (2.12+) rules of the system-agent endpoints; README.md cites the source of
//! each. The 2.6 refusals are in system_agent.rs.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use common::{TOKEN, insecure, pinned, server};
use hmac::{KeyInit, Mac};
use rancher_test_server::{AgentTlsMode, Config, Rules, Server};
use sha2::Digest;

const CATTLE_ID: &str = "9b2e4f6a8c0d1e3f5a7b9c1d3e5f7a9b";
const EXPIRED: &str = "expired-token-5v8x2q7w9z3m6n4k1j0h8g7f6d5s4a3p2o1i";
const MACHINE_NOT_FOUND: &str = "machine not found by request\n";

fn agent_request(
    server: &Server,
    authorization: Option<&str>,
    id: Option<&str>,
) -> reqwest::RequestBuilder {
    let mut request = pinned(&server.ca_pem)
        .get(format!("{}/v3/connect/agent", server.url))
        .header("X-Cattle-Role-Worker", "true")
        .header("X-Cattle-Node-Name", "node7");
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    if let Some(id) = id {
        request = request.header("X-Cattle-Id", id);
    }
    request
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

async fn status_and_body(request: reqwest::RequestBuilder) -> (u16, String) {
    let response = request.send().await.expect("response");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// base64std(sha256(token)): what an agent presents on /cacerts.
fn token_hash(token: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(token.as_bytes()))
}

/// The signature computed here, independently of the server's code.
fn expected_hmac(token: &str, nonce: &str, body: &[u8]) -> String {
    let mut mac = <hmac::Hmac<sha2::Sha512> as KeyInit>::new_from_slice(token.as_bytes())
        .expect("any key length");
    mac.update(nonce.as_bytes());
    mac.update(b"\0");
    mac.update(body);
    mac.update(b"\0");
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// (X-Cattle-Hash, body) of /cacerts with the given Authorization and nonce.
async fn cacerts(
    server: &Server,
    authorization: Option<&str>,
    nonce: Option<&str>,
) -> (Option<String>, Vec<u8>) {
    let mut request = insecure().get(format!("{}/cacerts", server.url));
    if let Some(value) = authorization {
        request = request.header("Authorization", value);
    }
    if let Some(nonce) = nonce {
        request = request.header("X-Cattle-Nonce", nonce);
    }
    let response = request
        .send()
        .await
        .expect("response")
        .error_for_status()
        .expect("200");
    let hash = response
        .headers()
        .get("X-Cattle-Hash")
        .map(|v| v.to_str().expect("ascii").to_string());
    (hash, response.bytes().await.expect("body").to_vec())
}

#[tokio::test]
async fn unknown_missing_and_expired_tokens_get_machine_not_found() {
    let server = rancher_test_server::start(Config {
        tokens: vec![TOKEN.to_string(), EXPIRED.to_string()],
        expired_tokens: vec![EXPIRED.to_string()],
        ..Default::default()
    })
    .await
    .expect("server starts");
    let wrong = bearer("nope");
    let expired = bearer(EXPIRED);
    let basic = format!("Basic {TOKEN}");
    for authorization in [
        Some(wrong.as_str()),
        Some(expired.as_str()),
        None,
        Some(basic.as_str()),
    ] {
        let response = agent_request(&server, authorization, Some(CATTLE_ID))
            .send()
            .await
            .expect("response");
        assert_eq!(response.status().as_u16(), 500, "{authorization:?}");
        assert_eq!(
            response.headers()["content-type"],
            "text/plain; charset=utf-8"
        );
        assert_eq!(response.text().await.expect("body"), MACHINE_NOT_FOUND);
    }
    // Without X-Cattle-Id findSA finds nothing to answer for: a bare 401.
    let (status, body) = status_and_body(agent_request(&server, Some(&bearer(TOKEN)), None)).await;
    assert_eq!((status, body.as_str()), (401, ""));
    assert!(server.record().is_empty(), "{:?}", server.record());
    let (status, _) = status_and_body(agent_request(
        &server,
        Some(&bearer(TOKEN)),
        Some(CATTLE_ID),
    ))
    .await;
    assert_eq!(status, 200, "the good token still works");
    server.shutdown();
}

#[tokio::test]
async fn a_starting_server_refuses_good_tokens_with_401_then_accepts_them() {
    let starting_for = Duration::from_secs(5);
    let server = server(Config {
        starting_for,
        ..Default::default()
    })
    .await;
    let good = bearer(TOKEN);
    let (first, body) = status_and_body(agent_request(&server, Some(&good), Some(CATTLE_ID))).await;
    assert_eq!(
        (first, body.as_str()),
        (401, ""),
        "a good token, refused while starting"
    );
    let (unknown, _) =
        status_and_body(agent_request(&server, Some("Bearer nope"), Some(CATTLE_ID))).await;
    let (entries, _) = server.requests();
    if entries.iter().all(|e| e.at < starting_for) {
        assert_eq!(
            unknown, 401,
            "before the caches sync even an unknown token gets 401"
        );
    }
    // Polls until the window is over; the bound only keeps a broken server from hanging the test.
    let mut polls = 0;
    loop {
        let (status, _) =
            status_and_body(agent_request(&server, Some(&good), Some(CATTLE_ID))).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 401);
        polls += 1;
        assert!(polls < 240, "still refused after the starting window");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (entries, _) = server.requests();
    for e in entries.iter().filter(|e| e.path == "/v3/connect/agent") {
        let expected = if e.at < starting_for { 401 } else { e.status };
        assert_eq!(e.status, expected, "{e:?}");
    }
    assert!(
        entries
            .iter()
            .any(|e| e.status == 200 && e.at >= starting_for)
    );
    assert_eq!(server.record().len(), 1);
    server.shutdown();
}

#[tokio::test]
async fn the_first_connect_of_a_machine_is_held() {
    let hold = Duration::from_secs(6);
    let server = server(Config {
        hold_first_connect: hold,
        ..Default::default()
    })
    .await;
    let request = agent_request(&server, Some(&bearer(TOKEN)), Some(CATTLE_ID));
    let sent = Instant::now();
    let first = tokio::spawn(async move { request.send().await.expect("response").status() });
    // Another request is answered while the first is held, and nothing is recorded yet.
    insecure()
        .get(format!("{}/ping", server.url))
        .send()
        .await
        .expect("ping")
        .error_for_status()
        .expect("pong");
    assert!(!first.is_finished(), "the first connect is still held");
    assert!(server.record().is_empty());
    assert_eq!(first.await.expect("task").as_u16(), 200);
    // A minimum the server must wait (the rule under test), not a speed measurement.
    assert!(sent.elapsed() >= hold, "answered only after the hold");
    assert_eq!(server.record().len(), 1);
    // The machine exists now: the next connect is not held again, and counts once more.
    let (status, _) = status_and_body(agent_request(
        &server,
        Some(&bearer(TOKEN)),
        Some(CATTLE_ID),
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(server.record()[0].connect_count, 2);
    server.shutdown();
}

#[tokio::test]
async fn cacerts_is_signed_for_a_known_token_hash_and_nonce_only() {
    let server = server(Config::default()).await;
    let hash = token_hash(TOKEN);
    let (signature, body) = cacerts(&server, Some(&bearer(&hash)), Some("nonce-1")).await;
    assert_eq!(body, format!("{}\n", server.ca_pem.trim_end()).into_bytes());
    assert_eq!(
        signature.as_deref(),
        Some(expected_hmac(TOKEN, "nonce-1", &body).as_str())
    );
    let (other_nonce, _) = cacerts(&server, Some(&bearer(&hash)), Some("nonce-2")).await;
    assert_ne!(other_nonce, signature, "the nonce is part of the signature");
    // A hash of no known token, the token itself instead of its hash, or no nonce: unsigned.
    let cases = [
        (Some(bearer(&token_hash("nope"))), Some("n")),
        (Some(bearer(TOKEN)), Some("n")),
        (Some(bearer(&hash)), None),
        (None, Some("n")),
    ];
    for (authorization, nonce) in cases {
        let (signature, _) = cacerts(&server, authorization.as_deref(), nonce).await;
        assert_eq!(signature, None, "{authorization:?} {nonce:?}");
    }
    server.shutdown();

    let old = server_with(Rules::V2_6, false).await;
    let (signature, _) = cacerts(&old, Some(&bearer(&hash)), Some("n")).await;
    assert_eq!(signature, None, "Rancher 2.6 does not sign /cacerts");
    old.shutdown();
}

async fn server_with(rules: Rules, wrong_ca: bool) -> Server {
    server(Config {
        rules,
        wrong_ca,
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn an_authentic_wrong_ca_still_fails_tls_verification() {
    let server = server_with(Rules::Current, true).await;
    let (signature, body) = cacerts(&server, Some(&bearer(&token_hash(TOKEN))), Some("n")).await;
    assert_eq!(
        signature.as_deref(),
        Some(expected_hmac(TOKEN, "n", &body).as_str()),
        "the signature covers the (wrong) CA that was served"
    );
    let served = String::from_utf8(body).expect("PEM text");
    assert_ne!(served.trim_end(), server.ca_pem.trim_end());
    let result = pinned(&served)
        .get(format!("{}/ping", server.url))
        .send()
        .await;
    assert!(
        result.is_err(),
        "the served CA did not sign the server certificate"
    );
    server.shutdown();
}

async fn install_script(server: &Server) -> reqwest::Response {
    pinned(&server.ca_pem)
        .get(format!("{}/system-agent-install.sh", server.url))
        .send()
        .await
        .expect("response")
}

#[tokio::test]
async fn the_install_script_preamble_carries_the_tls_mode() {
    for (mode, strict) in [
        (AgentTlsMode::Strict, "true"),
        (AgentTlsMode::SystemStore, "false"),
    ] {
        let server = server(Config {
            agent_tls_mode: mode,
            ..Default::default()
        })
        .await;
        let script = install_script(&server)
            .await
            .error_for_status()
            .expect("200");
        let script = script.text().await.expect("text");
        let lines: Vec<&str> = script.lines().collect();
        assert_eq!(lines[0], "#!/usr/bin/env sh");
        assert_eq!(lines[1], format!("STRICT_VERIFY=\"{strict}\""), "{mode:?}");
        assert!(lines.contains(&format!("CATTLE_SERVER={}", server.url).as_str()));
        assert!(
            lines.contains(
                &format!("CATTLE_AGENT_BINARY_BASE_URL=\"{}/assets\"", server.url).as_str()
            )
        );
        assert!(lines.contains(&format!("CATTLE_CA_CHECKSUM=\"{}\"", server.ca_checksum).as_str()));
        assert!(
            !script.contains(TOKEN),
            "the script is served without a token"
        );
        server.shutdown();
    }
    let old = server_with(Rules::V2_6, false).await;
    assert_eq!(install_script(&old).await.status().as_u16(), 404);
    old.shutdown();
}

#[tokio::test]
async fn the_request_log_keeps_header_names_and_the_record_keeps_what_was_sent() {
    let server = server(Config::default()).await;
    // No X-Cattle-Address and no X-Cattle-Internal-Address.
    let (status, _) = status_and_body(agent_request(
        &server,
        Some(&bearer(TOKEN)),
        Some(CATTLE_ID),
    ))
    .await;
    assert_eq!(status, 200);
    cacerts(&server, Some(&bearer(&token_hash(TOKEN))), Some("n")).await;
    let node = &server.record()[0];
    assert_eq!(node.hostname.as_deref(), Some("node7"));
    assert_eq!(
        (node.address.as_deref(), node.internal_address.as_deref()),
        (None, None)
    );

    let (entries, _) = server.requests();
    let agent = entries
        .iter()
        .find(|e| e.path == "/v3/connect/agent")
        .expect("logged");
    assert!(
        agent.sent("X-Cattle-Node-Name")
            && agent.sent("Authorization")
            && agent.sent("X-Cattle-Id")
    );
    assert!(!agent.sent("X-Cattle-Address") && !agent.sent("X-Cattle-Internal-Address"));
    let ca = entries
        .iter()
        .find(|e| e.path == "/cacerts")
        .expect("logged");
    assert!(ca.sent("X-Cattle-Nonce") && ca.carried_token);
    let log = serde_json::to_string(&entries).expect("json");
    assert!(
        !log.contains(TOKEN) && !log.contains(&token_hash(TOKEN)),
        "{log}"
    );
    server.shutdown();
}

/// The CLI flags reach the server: system-store mode, an expired-token file, 2.6 switch.
#[tokio::test]
async fn the_binary_takes_the_new_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tokens = dir.path().join("tokens");
    let expired = dir.path().join("expired");
    std::fs::write(&tokens, format!("{TOKEN}\n{EXPIRED}\n")).expect("token file");
    std::fs::write(&expired, format!("# rotated\n{EXPIRED}\n")).expect("expired file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rancher-test-server"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--rules",
            "current",
            "--agent-tls-mode",
            "system-store",
        ])
        .arg("--token-file")
        .arg(&tokens)
        .arg("--expired-token-file")
        .arg(&expired)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    // Kept open until the server is stopped, so that its later lines have a reader.
    let mut lines = BufReader::new(stdout).lines();
    let url = lines
        .by_ref()
        .map(|l| l.expect("line"))
        .find_map(|l| l.strip_prefix("url: ").map(str::to_string))
        .expect("url line");
    let client = insecure();
    let script = client
        .get(format!("{url}/system-agent-install.sh"))
        .send()
        .await
        .expect("script");
    assert!(
        script
            .text()
            .await
            .expect("text")
            .contains("STRICT_VERIFY=\"false\"")
    );
    let refused = client
        .get(format!("{url}/v3/connect/agent"))
        .header("Authorization", bearer(EXPIRED))
        .header("X-Cattle-Id", CATTLE_ID)
        .send()
        .await
        .expect("agent");
    assert_eq!(refused.status().as_u16(), 500);
    assert_eq!(refused.text().await.expect("body"), MACHINE_NOT_FOUND);
    child.kill().expect("kill the server this test started");
    child.wait().expect("reap");
    drop(lines);

    let bad = Command::new(env!("CARGO_BIN_EXE_rancher-test-server"))
        .args(["--rules", "2.7", "--token", "t"])
        .stderr(Stdio::piped())
        .output()
        .expect("run");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected current or 2.6"));
}

#[tokio::test]
async fn a_server_held_starting_by_a_file_refuses_until_the_file_is_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flag = dir.path().join("starting");
    std::fs::write(&flag, b"").expect("flag");
    let server = server(Config {
        starting_while: Some(flag.clone()),
        ..Default::default()
    })
    .await;
    let good = bearer(TOKEN);
    for _ in 0..2 {
        let (status, _) =
            status_and_body(agent_request(&server, Some(&good), Some(CATTLE_ID))).await;
        assert_eq!(status, 401, "a good token, refused while the file exists");
    }
    assert!(server.record().is_empty());
    std::fs::remove_file(&flag).expect("remove flag");
    let (status, _) = status_and_body(agent_request(&server, Some(&good), Some(CATTLE_ID))).await;
    assert_eq!(status, 200, "accepted once the file is gone");
    assert_eq!(server.record().len(), 1);
    server.shutdown();
}
