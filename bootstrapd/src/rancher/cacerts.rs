//! Rancher's CA: fetched unverified, trusted only when its sha256 equals the node command's
//! `--ca-checksum`, then pinned for every request that follows.
//!
//! Rancher >= 2.6 serves the `cacerts` setting at `GET /cacerts` (hash the body as is);
//! 2.0-2.5 only as JSON at `GET /v3/settings/cacerts` (hash `.value` + "\n", which is what
//! the agent's `jq -r .value > file; sha256sum file` computes). Both are tried, the modern
//! one first, and neither request carries anything secret.
//!
//! Without a checksum, system-agent mode asks `/cacerts` to prove itself as Rancher's
//! `pkg/cacerts/handler.go` allows: the request carries `Authorization: Bearer
//! base64(sha256(token))` (a hash, never the token) and a random `X-Cattle-Nonce`; a server
//! that knows the token answers `X-Cattle-Hash: base64(HMAC-SHA512(token, nonce 0x00 body
//! 0x00))`, which proves the body came from it. A right hash pins the CA, a wrong one is an
//! error, no hash (Rancher before the handler learnt it) leaves the system trust store.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Deadline, endpoint};
use crate::http::{
    HttpClientBuilder, HttpError, Request, Response, RetryPolicy, StatusCode, TlsTrust, Verdict,
};
use crate::secret::Secret;
use crate::userdata::ProxySettings;
use crate::userdata::{TrustedCa, trusted_ca_anchors};

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error(
        "CA checksum mismatch for {server}: configured cacerts checksum ({computed}) does not \
         match given --ca-checksum ({expected}); check the certificate configured at {url}. \
         Nothing carrying the token was sent"
    )]
    Mismatch {
        server: String,
        url: String,
        computed: String,
        expected: String,
    },
    #[error("ca_checksum {0:?} is not 64 hexadecimal characters (sha256)")]
    BadChecksum(String),
    #[error("fetching the CA from {server}: {source}")]
    Fetch {
        server: String,
        #[source]
        source: Box<HttpError>,
    },
    #[error("{url}: unexpected status {status} while fetching the CA")]
    Status { url: String, status: StatusCode },
    #[error("{url}: the cacerts setting is not valid JSON with a string `value`: {reason}")]
    Setting { url: String, reason: String },
    #[error("{url}: the CA text matches ca_checksum but holds no usable certificate: {reason}")]
    Pem { url: String, reason: String },
    #[error(
        "{url}: the X-Cattle-Hash of the CA does not match this registration token: the \
         answer did not come from a Rancher that knows the token (wrong server URL, or \
         interception). Nothing carrying the token was sent"
    )]
    HashMismatch { url: String },
    #[error("reading /dev/urandom for the X-Cattle-Nonce: {0}")]
    Nonce(#[source] std::io::Error),
}

/// Where the CA text came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CaSource {
    /// `GET /cacerts` (Rancher >= 2.6).
    Cacerts,
    /// `GET /v3/settings/cacerts` `.value` (Rancher 2.0-2.5).
    Setting,
    /// `GET /cacerts` proven by its `X-Cattle-Hash` (no checksum given).
    CacertsHmac,
}

/// How later requests verify the server.
#[derive(Debug, Clone)]
pub enum ServerTrust {
    /// Exactly Rancher's CA, whose checksum matched.
    Pinned {
        checksum: String,
        source: CaSource,
        /// The CA text as hashed (what the agent stores as its server CA).
        pem: String,
        tls: TlsTrust,
    },
    /// The system trust store: no checksum was given, or the server has no private CA.
    System { reason: String },
}

impl ServerTrust {
    /// The TLS trust of later requests: a pinned CA exactly (`trusted_ca` cannot widen a
    /// pin the checksum or the HMAC proved), else the system roots and `trusted_ca`.
    pub fn tls(&self, trusted_ca: &[TrustedCa]) -> TlsTrust {
        match self {
            ServerTrust::Pinned { tls, .. } => tls.clone(),
            ServerTrust::System { .. } => TlsTrust::system_and(trusted_ca_anchors(trusted_ca)),
        }
    }

    pub fn checksum(&self) -> Option<&str> {
        match self {
            ServerTrust::Pinned { checksum, .. } => Some(checksum),
            ServerTrust::System { .. } => None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            ServerTrust::Pinned {
                checksum, source, ..
            } => format!("pinned CA sha256 {checksum} (from {source:?})"),
            ServerTrust::System { reason } => format!("system trust store ({reason})"),
        }
    }
}

/// `lowercase_hex(sha256(text))`, as in the node command's `--ca-checksum`.
pub fn checksum(text: &[u8]) -> String {
    hex::encode(Sha256::digest(text))
}

/// The CA text the agents hash from the legacy setting's value.
pub fn setting_text(value: &str) -> String {
    format!("{value}\n")
}

fn normalise_expected(expected: &str) -> Result<String, CaError> {
    let e = expected.trim().to_ascii_lowercase();
    if e.len() == 64 && e.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(e)
    } else {
        Err(CaError::BadChecksum(expected.to_string()))
    }
}

/// `base64std(sha256(token))`: how `/cacerts` is told which token to key its HMAC with.
pub fn token_hash(token: &Secret) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(token.expose().as_bytes()))
}

/// HMAC-SHA512 (RFC 2104, block size 128) over the concatenation of `parts`.
fn hmac_sha512(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    use sha2::Sha512;
    const BLOCK: usize = 128;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..64].copy_from_slice(&Sha512::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.map(|x| x ^ b);
    let mut inner = Sha512::new();
    inner.update(pad(0x36));
    for p in parts {
        inner.update(p);
    }
    let mut outer = Sha512::new();
    outer.update(pad(0x5c));
    outer.update(inner.finalize());
    outer.finalize().to_vec()
}

/// `X-Cattle-Hash` as `pkg/cacerts/handler.go` computes it: base64std of HMAC-SHA512 keyed
/// with the token over `nonce 0x00 body 0x00`.
pub fn cacerts_hmac(token: &Secret, nonce: &str, body: &[u8]) -> String {
    use base64::Engine;
    let mac = hmac_sha512(
        token.expose().as_bytes(),
        &[nonce.as_bytes(), &[0], body, &[0]],
    );
    base64::engine::general_purpose::STANDARD.encode(mac)
}

/// Equality that takes the same time wherever the first difference is.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 32 random bytes, hex: the `X-Cattle-Nonce`.
fn new_nonce() -> Result<String, CaError> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(CaError::Nonce)?;
    Ok(hex::encode(bytes))
}

fn starting_server(r: &crate::http::Response) -> Verdict {
    // A starting Rancher answers 503 (or 502 from its ingress) for a while.
    if r.status.is_server_error() || r.status == StatusCode::TOO_MANY_REQUESTS {
        Verdict::Retry
    } else {
        Verdict::Accept
    }
}

/// GET `url` without verifying the server (the CA is what is being fetched; the caller proves
/// it by checksum or HMAC before trusting it), retried while the server starts. `prepare` adds
/// the request's headers.
async fn fetch_unverified(
    server: &str,
    url: &str,
    deadline: &Deadline,
    proxy: &ProxySettings,
    prepare: impl FnOnce(Request) -> Request,
) -> Result<Response, CaError> {
    let fetch_err = |source: HttpError| CaError::Fetch {
        server: server.to_string(),
        source: Box::new(source),
    };
    let client = HttpClientBuilder::insecure_for_cacerts_fetch()
        .proxy(proxy)
        .retry(deadline.retry_policy())
        .attempt_timeout(Duration::from_secs(30))
        .max_body(1 << 20)
        .build()
        .map_err(fetch_err)?;
    let req = prepare(Request::get(url).map_err(fetch_err)?);
    client
        .send_with(&req, starting_server)
        .await
        .map_err(fetch_err)
}

/// No checksum: asks `/cacerts` (unverified TLS) to authenticate itself with the token's
/// HMAC. Only the token's sha256 travels; the body is trusted only with a right hash.
async fn establish_by_hmac(
    server: &str,
    token: &Secret,
    deadline: &Deadline,
    proxy: &ProxySettings,
) -> Result<ServerTrust, CaError> {
    let url = endpoint(server, "/cacerts");
    let nonce = new_nonce()?;
    let resp = fetch_unverified(server, &url, deadline, proxy, |req| {
        req.header("X-Cattle-Nonce", nonce.clone()).secret_header(
            "Authorization",
            &Secret::new(format!("Bearer {}", token_hash(token))),
        )
    })
    .await?;
    let system = |reason: &str| ServerTrust::System {
        reason: reason.to_string(),
    };
    if resp.status == StatusCode::NOT_FOUND {
        return Ok(system("no ca_checksum given; the server has no /cacerts"));
    }
    if resp.status != StatusCode::OK {
        return Err(CaError::Status {
            url,
            status: resp.status,
        });
    }
    let Some(got) = resp.header("X-Cattle-Hash") else {
        tracing::warn!(%url, "no ca_checksum and no X-Cattle-Hash (Rancher before the authenticated /cacerts): using the system trust store");
        return Ok(system(
            "no ca_checksum given; the server does not authenticate /cacerts",
        ));
    };
    let want = cacerts_hmac(token, &nonce, &resp.body);
    if !constant_time_eq(got.trim().as_bytes(), want.as_bytes()) {
        return Err(CaError::HashMismatch { url });
    }
    let text = String::from_utf8_lossy(&resp.body).into_owned();
    if text.trim().is_empty() {
        return Ok(system(
            "no ca_checksum given; the server (X-Cattle-Hash verified) publishes no CA",
        ));
    }
    let tls = TlsTrust::pinned_pem(text.as_bytes()).map_err(|e| CaError::Pem {
        url,
        reason: e.to_string(),
    })?;
    let computed = checksum(text.as_bytes());
    tracing::info!(%server, checksum = %computed, "Rancher CA proven by X-Cattle-Hash; pinning it");
    Ok(ServerTrust::Pinned {
        checksum: computed,
        source: CaSource::CacertsHmac,
        pem: text,
        tls,
    })
}

/// Whether a CA proven by checksum is pinned, given whether the server's certificate also
/// verifies against the system store (`None`: that could not be told). As system-agent's
/// `install.sh` (`validate_ca_required`): a publicly trusted certificate needs no pin, so a
/// stale `cacerts` setting after a certificate migration cannot break registration. When in
/// doubt, pin.
pub fn pin_proven_ca(system_store_verifies: Option<bool>) -> bool {
    system_store_verifies != Some(true)
}

/// One request to `/healthz` under the system store (no secret in it): `Some(true)` when the
/// TLS handshake verified, `Some(false)` when the certificate was refused, `None` otherwise.
async fn system_store_verifies(server: &str, proxy: &ProxySettings) -> Option<bool> {
    let client = HttpClientBuilder::new(TlsTrust::SystemRoots)
        .proxy(proxy)
        .retry(RetryPolicy::once(Duration::from_secs(15)))
        .attempt_timeout(Duration::from_secs(15))
        .fail_fast_on_certificate(1)
        .max_body(1 << 16)
        .build()
        .ok()?;
    let req = Request::get(&endpoint(server, "/healthz")).ok()?;
    match client.send_with(&req, |_| Verdict::Accept).await {
        Ok(_) => Some(true),
        Err(HttpError::Certificate { .. }) => Some(false),
        Err(_) => None,
    }
}

/// The trust system-agent mode uses: with a checksum, the proven CA, unless the server's
/// certificate verifies against the system store anyway (then nothing is pinned); without
/// one, the CA the server proves by HMAC, else the system store.
pub async fn establish_system_agent(
    server: &str,
    expected: Option<&str>,
    token: &Secret,
    deadline: &Deadline,
    proxy: &ProxySettings,
) -> Result<ServerTrust, CaError> {
    if expected.is_none_or(|e| e.trim().is_empty()) {
        return establish_by_hmac(server, token, deadline, proxy).await;
    }
    let trust = establish(server, expected, deadline, proxy).await?;
    if let ServerTrust::Pinned { checksum, .. } = &trust {
        let verifies = system_store_verifies(server, proxy).await;
        if !pin_proven_ca(verifies) {
            tracing::info!(%server, %checksum, "ca_checksum matched and the server's certificate verifies against the system store: not pinning");
            return Ok(ServerTrust::System {
                reason: format!(
                    "ca_checksum {checksum} matched, and the certificate is publicly trusted"
                ),
            });
        }
    }
    Ok(trust)
}

/// One unverified fetch: `Ok(None)` when the endpoint does not exist (404) or the setting
/// is empty.
async fn fetch(
    server: &str,
    source: CaSource,
    deadline: &Deadline,
    proxy: &ProxySettings,
) -> Result<Option<String>, CaError> {
    let url = match source {
        CaSource::Cacerts | CaSource::CacertsHmac => endpoint(server, "/cacerts"),
        CaSource::Setting => endpoint(server, "/v3/settings/cacerts"),
    };
    let resp = fetch_unverified(server, &url, deadline, proxy, |req| req).await?;
    if resp.status == StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if resp.status != StatusCode::OK {
        return Err(CaError::Status {
            url,
            status: resp.status,
        });
    }
    let text = match source {
        CaSource::Cacerts | CaSource::CacertsHmac => {
            String::from_utf8_lossy(&resp.body).into_owned()
        }
        CaSource::Setting => {
            #[derive(Deserialize)]
            struct Setting {
                value: Option<String>,
            }
            let s: Setting = serde_json::from_slice(&resp.body).map_err(|e| CaError::Setting {
                url: url.clone(),
                reason: format!("line {} column {}: {e}", e.line(), e.column()),
            })?;
            match s.value {
                Some(v) if !v.trim().is_empty() => setting_text(&v),
                _ => String::new(),
            }
        }
    };
    Ok((!text.trim().is_empty()).then_some(text))
}

/// Decides how to trust `server`. With a checksum the CA is fetched without verification
/// and must hash to it; nothing else is sent to the server before that. Without one, or
/// when the server has no private CA, the system trust store applies (never "insecure").
pub async fn establish(
    server: &str,
    expected: Option<&str>,
    deadline: &Deadline,
    proxy: &ProxySettings,
) -> Result<ServerTrust, CaError> {
    let Some(expected) = expected.filter(|e| !e.trim().is_empty()) else {
        return Ok(ServerTrust::System {
            reason: "no ca_checksum given".into(),
        });
    };
    let expected = normalise_expected(expected)?;
    let mut seen: Vec<(String, String)> = Vec::new();
    for source in [CaSource::Cacerts, CaSource::Setting] {
        let Some(text) = fetch(server, source, deadline, proxy).await? else {
            continue;
        };
        let url = match source {
            CaSource::Cacerts | CaSource::CacertsHmac => endpoint(server, "/cacerts"),
            CaSource::Setting => endpoint(server, "/v3/settings/cacerts"),
        };
        let computed = checksum(text.as_bytes());
        if computed == expected {
            let tls = TlsTrust::pinned_pem(text.as_bytes()).map_err(|e| CaError::Pem {
                url,
                reason: e.to_string(),
            })?;
            tracing::info!(%server, checksum = %computed, ?source, "Rancher CA matches ca_checksum; pinning it");
            return Ok(ServerTrust::Pinned {
                checksum: computed,
                source,
                pem: text,
                tls,
            });
        }
        tracing::warn!(%url, %computed, %expected, "CA does not match ca_checksum");
        seen.push((url, computed));
    }
    match seen.into_iter().next() {
        Some((url, computed)) => Err(CaError::Mismatch {
            server: server.to_string(),
            url,
            computed,
            expected,
        }),
        None => {
            // Rancher leaves the setting empty when its certificate is publicly trusted.
            tracing::warn!(%server, "ca_checksum given but the server publishes no CA; using the system trust store");
            Ok(ServerTrust::System {
                reason: "the server's cacerts setting is empty".into(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_is_lowercase_hex_sha256() {
        assert_eq!(
            checksum(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(setting_text("PEM"), "PEM\n");
    }

    #[test]
    fn hmac_matches_a_reference_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            hex::encode(hmac_sha512(
                b"Jefe",
                &[b"what do ya want ", b"for nothing?"]
            )),
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554\
             9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
        );
        // RFC 4231 test case 6: a key longer than the block is hashed first.
        assert_eq!(
            hex::encode(hmac_sha512(
                &[0xaa; 131],
                &[b"Test Using Larger Than Block-Size Key - Hash Key First"]
            )),
            "80b24263c7c1a3ebb71493c1dd7be8b49b46d1f41b4aeec1121b013783f8f352\
             6b56d037e05f2598bd0fd2215d6a1e5295e64f73f63f0aec8b915a985d786598"
        );
        let token = Secret::new("Jefe");
        let a = cacerts_hmac(&token, "n", b"body");
        let b = cacerts_hmac(&token, "n", b"bodz");
        assert_ne!(a, b);
        assert_eq!(a, cacerts_hmac(&token, "n", b"body"));
        let long = Secret::new("k".repeat(200));
        assert_ne!(cacerts_hmac(&long, "n", b"body"), a);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn proven_ca_is_pinned_unless_the_system_store_verifies() {
        assert!(!pin_proven_ca(Some(true)));
        assert!(pin_proven_ca(Some(false)));
        assert!(pin_proven_ca(None));
    }

    #[test]
    fn expected_checksum_validation() {
        let good = "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD";
        assert_eq!(normalise_expected(good).unwrap(), good.to_ascii_lowercase());
        assert!(normalise_expected("abc").is_err());
        assert!(normalise_expected(&"g".repeat(64)).is_err());
    }
}
