//! The registration protocols, as pure functions: header names, what the server accepts, and
//! how it names nodes. Each rule cites the Rancher source it follows.

use std::collections::BTreeMap;

use base64::Engine;
use hmac::{KeyInit, Mac};
use md5::Md5;
use serde::Deserialize;
use sha2::{Digest, Sha256, Sha512};

/// rke1 agent headers (rancher `pkg/tunnelserver/tunnel.go`, `cmd/agent/main.go`).
pub const TUNNEL_TOKEN: &str = "X-API-Tunnel-Token";
pub const TUNNEL_PARAMS: &str = "X-API-Tunnel-Params";

/// System-agent headers (rancher `pkg/capr/configserver/custom.go`, system-agent `install.sh`).
pub const CATTLE_ID: &str = "X-Cattle-Id";
pub const CATTLE_HEADER_PREFIX: &str = "x-cattle-";

/// `customConfig` of a node as the agent sends it (`pkg/agent/node/node.go` `Params()`).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CustomConfig {
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub internal_address: String,
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    #[serde(default)]
    pub label: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub taints: Option<Vec<String>>,
}

/// The `node` object of the tunnel params (norman `client.Node`, the fields the server reads).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TunnelNode {
    #[serde(default)]
    pub custom_config: Option<CustomConfig>,
    #[serde(default)]
    pub etcd: bool,
    #[serde(default)]
    pub control_plane: bool,
    #[serde(default)]
    pub worker: bool,
    #[serde(default)]
    pub requested_hostname: String,
    #[serde(default)]
    pub docker_info: Option<serde_json::Value>,
}

impl TunnelNode {
    /// Roles in Rancher's spelling, from the spec booleans the server stores (`updateNode`).
    pub fn roles(&self) -> Vec<String> {
        let mut roles = Vec::new();
        if self.etcd {
            roles.push("etcd".to_string());
        }
        if self.control_plane {
            roles.push("controlplane".to_string());
        }
        if self.worker {
            roles.push("worker".to_string());
        }
        roles
    }
}

/// The `cluster` object sent by cattle-cluster-agent.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TunnelCluster {
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub token: String,
    #[serde(default)]
    pub ca_cert: String,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct TunnelInput {
    #[serde(default)]
    pub node: Option<TunnelNode>,
    #[serde(default)]
    pub cluster: Option<TunnelCluster>,
}

/// Decodes and checks `X-API-Tunnel-Params` exactly as `Authorizer.readInput` does
/// (`pkg/tunnelserver/tunnel.go`): strict standard base64, JSON, then the emptiness checks.
/// The error text is what Rancher writes in the 400 body.
pub fn read_tunnel_input(params: &str) -> Result<TunnelInput, String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(params)
        .map_err(|e| format!("illegal base64 data: {e}"))?;
    let input: TunnelInput =
        serde_json::from_slice(&bytes).map_err(|e| format!("invalid params JSON: {e}"))?;
    if input.node.is_none() && input.cluster.is_none() {
        return Err("missing node or cluster registration info".to_string());
    }
    if let Some(node) = &input.node
        && node.requested_hostname.is_empty()
    {
        return Err("invalid input, hostname empty".to_string());
    }
    if let Some(cluster) = &input.cluster {
        if cluster.address.is_empty() {
            return Err("invalid input, address empty".to_string());
        }
        if cluster.token.is_empty() {
            return Err("invalid input, token empty".to_string());
        }
        if cluster.ca_cert.is_empty() {
            return Err("invalid input, caCert empty".to_string());
        }
    }
    Ok(input)
}

/// The checks `createNode` makes before it creates a node on first registration.
pub fn check_new_node(node: &TunnelNode) -> Result<&CustomConfig, String> {
    let custom = node
        .custom_config
        .as_ref()
        .ok_or_else(|| "invalid input, missing custom config".to_string())?;
    if custom.address.is_empty() {
        return Err("invalid input, address empty".to_string());
    }
    Ok(custom)
}

/// rke1 node name: `m-` + first 12 hex of md5(requestedHostname) (`machineName`).
pub fn rke1_node_name(requested_hostname: &str) -> String {
    let digest = Md5::digest(requested_hostname.as_bytes());
    format!("m-{}", &hex::encode(digest)[..12])
}

/// System-agent machine name: `custom-` + first 12 hex of sha256(X-Cattle-Id)
/// (`machineRequestSecretName`, `pkg/capr/configserver/custom.go`).
pub fn custom_machine_name(cattle_id: &str) -> String {
    let digest = Sha256::digest(cattle_id.as_bytes());
    format!("custom-{}", &hex::encode(digest)[..12])
}

/// norman `convert.ToBool` on a header value: `true`/`1`, any case.
pub fn header_bool(value: Option<&str>) -> bool {
    value
        .map(|v| {
            let v = v.trim().to_ascii_lowercase();
            v == "true" || v == "1"
        })
        .unwrap_or(false)
}

/// `X-Cattle-Labels: k=v,k2=v2` as the custom machine controller splits it (`kv.Split` on `=`,
/// empty keys skipped).
pub fn parse_labels(value: &str) -> BTreeMap<String, String> {
    value
        .split(',')
        .filter_map(|part| {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let k = k.trim();
            (!k.is_empty()).then(|| (k.to_string(), v.trim().to_string()))
        })
        .collect()
}

/// Comma-separated list with empty items dropped (agent `split()` and the taints header).
pub fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The bearer token as the config server reads it: `strings.TrimPrefix(h, "Bearer ")`.
pub fn bearer_token(authorization: Option<&str>) -> &str {
    let value = authorization.unwrap_or("");
    value.strip_prefix("Bearer ").unwrap_or(value)
}

/// `/cacerts` request header carrying the agent's nonce (rancher `pkg/cacerts/handler.go`).
pub const CATTLE_NONCE: &str = "X-Cattle-Nonce";
/// `/cacerts` reply header carrying the HMAC (rancher `pkg/cacerts/handler.go`).
pub const CATTLE_HASH: &str = "X-Cattle-Hash";

/// What an agent presents as `Authorization: Bearer` on `/cacerts`: standard base64 of the
/// token's sha256 (`hashToken`, rancher `pkg/cacerts/handler.go`).
pub fn token_hash(token: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(token.as_bytes()))
}

/// `X-Cattle-Hash`: standard base64 of HMAC-SHA512 keyed with the token over
/// `nonce || 0x00 || body || 0x00` (rancher `pkg/cacerts/handler.go`).
pub fn cacerts_hmac(token: &str, nonce: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length, so this never fails.
    let mut mac = <hmac::Hmac<Sha512> as KeyInit>::new_from_slice(token.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(nonce.as_bytes());
    mac.update(&[0]);
    mac.update(body);
    mac.update(&[0]);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// `/system-agent-install.sh` as rancher `pkg/capr/installer/installer.go`
/// (`LinuxInstallScript`, called with no token and no extra env by `installer/server.go`) lays
/// it out: the `STRICT_VERIFY` env line from `agent-tls-mode`, the binary base URL (the server
/// serves `/assets`), `CATTLE_SERVER` (unquoted), `CATTLE_CA_CHECKSUM`, an empty token line,
/// then the script body.
pub fn install_script(server: &str, ca_checksum: &str, strict: bool, body: &str) -> String {
    format!(
        "#!/usr/bin/env sh\nSTRICT_VERIFY=\"{strict}\"\n\nCATTLE_AGENT_BINARY_BASE_URL=\"{server}/assets\"\nCATTLE_SERVER={server}\nCATTLE_CA_CHECKSUM=\"{ca_checksum}\"\n\n\n{body}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(json: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(json)
    }

    #[test]
    fn accepts_the_params_the_real_agent_sends() {
        let json = r#"{"node":{"customConfig":{"address":"10.0.0.5","internalAddress":"",
            "roles":["etcd","controlplane"],"label":{"a":"b"},"taints":null},
            "etcd":true,"controlPlane":true,"worker":false,"requestedHostname":"node1"}}"#;
        let input = read_tunnel_input(&encode(json)).expect("valid params");
        let node = input.node.expect("node");
        assert_eq!(node.roles(), vec!["etcd", "controlplane"]);
        assert_eq!(node.requested_hostname, "node1");
        let custom = check_new_node(&node).expect("creatable");
        assert_eq!(custom.address, "10.0.0.5");
        assert_eq!(
            custom
                .label
                .as_ref()
                .and_then(|l| l.get("a"))
                .map(String::as_str),
            Some("b")
        );
    }

    #[test]
    fn rejects_what_read_input_rejects() {
        assert!(read_tunnel_input("%%%not base64").is_err());
        assert!(read_tunnel_input(&encode("not json")).is_err());
        assert_eq!(
            read_tunnel_input(&encode("{}")),
            Err("missing node or cluster registration info".to_string())
        );
        assert_eq!(
            read_tunnel_input(&encode(r#"{"node":{"requestedHostname":""}}"#)),
            Err("invalid input, hostname empty".to_string())
        );
        assert_eq!(
            read_tunnel_input(&encode(r#"{"cluster":{"address":"a:1","token":"t"}}"#)),
            Err("invalid input, caCert empty".to_string())
        );
        // A type mismatch is a JSON error in Go as well.
        assert!(
            read_tunnel_input(&encode(
                r#"{"node":{"etcd":"yes","requestedHostname":"x"}}"#
            ))
            .is_err()
        );
    }

    #[test]
    fn new_node_needs_custom_config_and_address() {
        let mut node = TunnelNode {
            requested_hostname: "n".into(),
            ..Default::default()
        };
        assert_eq!(
            check_new_node(&node).err(),
            Some("invalid input, missing custom config".to_string())
        );
        node.custom_config = Some(CustomConfig::default());
        assert_eq!(
            check_new_node(&node).err(),
            Some("invalid input, address empty".to_string())
        );
    }

    #[test]
    fn names_follow_rancher() {
        // md5("node1") = 164546f60261c7e4be0c5f5f9aaeec86
        assert_eq!(rke1_node_name("node1"), "m-164546f60261");
        // sha256("abc") = ba7816bf8f01cfea...
        assert_eq!(custom_machine_name("abc"), "custom-ba7816bf8f01");
    }

    #[test]
    fn cacerts_signature_matches_an_independent_computation() {
        // Expected values from Python's hashlib/hmac over the same inputs.
        assert_eq!(
            token_hash("token-abc"),
            "CWFXsznPQZ28DI3vSfwr6STcEw+6zfp7h5vuCjB4zsQ="
        );
        let body = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert_eq!(
            cacerts_hmac("token-abc", "n0nce", body),
            "hnUPgOaUrld1I0hU3t4BLspi+H6Hc67mE1FDL3PVcdRBd/eIBFAvt0UDrVxXaydLQxoc9DBE0VQVT2vnGcvaTg=="
        );
    }

    #[test]
    fn install_script_layout() {
        let script = install_script("https://h:1", "abc", false, "# body");
        assert_eq!(
            script,
            "#!/usr/bin/env sh\nSTRICT_VERIFY=\"false\"\n\nCATTLE_AGENT_BINARY_BASE_URL=\"https://h:1/assets\"\nCATTLE_SERVER=https://h:1\nCATTLE_CA_CHECKSUM=\"abc\"\n\n\n# body\n"
        );
    }

    #[test]
    fn header_helpers() {
        assert!(header_bool(Some("true")));
        assert!(header_bool(Some("TRUE")));
        assert!(!header_bool(Some("yes")));
        assert!(!header_bool(None));
        let labels = parse_labels("cattle.io/os=linux,,a=b=c,flag");
        assert_eq!(
            labels.get("cattle.io/os").map(String::as_str),
            Some("linux")
        );
        assert_eq!(labels.get("a").map(String::as_str), Some("b=c"));
        assert_eq!(labels.get("flag").map(String::as_str), Some(""));
        assert_eq!(split_list(",etcd,,worker"), vec!["etcd", "worker"]);
        assert_eq!(bearer_token(Some("Bearer abc")), "abc");
        assert_eq!(bearer_token(Some("Basic abc")), "Basic abc");
        assert_eq!(bearer_token(None), "");
    }
}
