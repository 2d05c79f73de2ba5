//! Rancher's CA: fetched unverified, trusted only when its sha256 equals the node command's
//! `--ca-checksum`, then pinned for every request that follows.
//!
//! Rancher >= 2.6 serves the `cacerts` setting at `GET /cacerts` (hash the body as is);
//! 2.0-2.5 only as JSON at `GET /v3/settings/cacerts` (hash `.value` + "\n", which is what
//! the agent's `jq -r .value > file; sha256sum file` computes). Both are tried, the modern
//! one first, and neither request carries anything secret.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{Deadline, endpoint};
use crate::http::{HttpClientBuilder, HttpError, Request, StatusCode, TlsTrust, Verdict};

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
        source: HttpError,
    },
    #[error("{url}: unexpected status {status} while fetching the CA")]
    Status { url: String, status: StatusCode },
    #[error("{url}: the cacerts setting is not valid JSON with a string `value`: {reason}")]
    Setting { url: String, reason: String },
    #[error("{url}: the CA text matches ca_checksum but holds no usable certificate: {reason}")]
    Pem { url: String, reason: String },
}

/// Where the CA text came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CaSource {
    /// `GET /cacerts` (Rancher >= 2.6).
    Cacerts,
    /// `GET /v3/settings/cacerts` `.value` (Rancher 2.0-2.5).
    Setting,
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
    pub fn tls(&self) -> TlsTrust {
        match self {
            ServerTrust::Pinned { tls, .. } => tls.clone(),
            ServerTrust::System { .. } => TlsTrust::SystemRoots,
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

/// One unverified fetch: `Ok(None)` when the endpoint does not exist (404) or the setting
/// is empty.
async fn fetch(
    server: &str,
    source: CaSource,
    deadline: &Deadline,
) -> Result<Option<String>, CaError> {
    let url = match source {
        CaSource::Cacerts => endpoint(server, "/cacerts"),
        CaSource::Setting => endpoint(server, "/v3/settings/cacerts"),
    };
    let fetch_err = |source| CaError::Fetch {
        server: server.to_string(),
        source,
    };
    let client = HttpClientBuilder::insecure_for_cacerts_fetch()
        .retry(deadline.retry_policy())
        .attempt_timeout(Duration::from_secs(30))
        .max_body(1 << 20)
        .build()
        .map_err(fetch_err)?;
    let req = Request::get(&url).map_err(fetch_err)?;
    let resp = client
        .send_with(&req, |r| {
            // A starting Rancher answers 503 (or 502 from its ingress) for a while.
            if r.status.is_server_error() || r.status == StatusCode::TOO_MANY_REQUESTS {
                Verdict::Retry
            } else {
                Verdict::Accept
            }
        })
        .await
        .map_err(fetch_err)?;
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
        CaSource::Cacerts => String::from_utf8_lossy(&resp.body).into_owned(),
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
) -> Result<ServerTrust, CaError> {
    let Some(expected) = expected.filter(|e| !e.trim().is_empty()) else {
        return Ok(ServerTrust::System {
            reason: "no ca_checksum given".into(),
        });
    };
    let expected = normalise_expected(expected)?;
    let mut seen: Vec<(String, String)> = Vec::new();
    for source in [CaSource::Cacerts, CaSource::Setting] {
        let Some(text) = fetch(server, source, deadline).await? else {
            continue;
        };
        let url = match source {
            CaSource::Cacerts => endpoint(server, "/cacerts"),
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
    fn expected_checksum_validation() {
        let good = "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD";
        assert_eq!(normalise_expected(good).unwrap(), good.to_ascii_lowercase());
        assert!(normalise_expected("abc").is_err());
        assert!(normalise_expected(&"g".repeat(64)).is_err());
    }
}
