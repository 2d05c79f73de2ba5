//! Registration with a Rancher server: the CA checksum and pinning both agent generations
//! use, the RKE1 agent container (Rancher 2.0-2.6) and the system agent (Rancher >= 2.6).

pub mod agent_binary;
mod agent_error;
pub mod agent_paths;
pub mod cacerts;
pub mod cattle_id;
pub mod interlock;
pub mod rke1;
pub mod system_agent;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::http::{HttpClient, HttpClientBuilder, RetryPolicy, TlsTrust};
use crate::secret::Secret;
use crate::userdata::{ProxySettings, Role, Settings, Taint, TrustedCa};

/// How the node presents itself to Rancher (node command's `--node-name`, `--address`,
/// `--internal-address`). Addresses left out are worked out by the agent itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeIdentity {
    pub node_name: String,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub internal_address: Option<String>,
}

/// Everything a registration sends, borrowed from the settings and the node identity.
#[derive(Debug, Clone, Copy)]
pub struct Registration<'a> {
    pub server: &'a str,
    pub token: &'a Secret,
    pub ca_checksum: Option<&'a str>,
    pub roles: &'a [Role],
    pub node: &'a NodeIdentity,
    pub labels: &'a BTreeMap<String, String>,
    pub taints: &'a [Taint],
    /// `rancher.node_name` as the userdata sets it (system-agent mode sends only that).
    pub explicit_node_name: Option<&'a str>,
    /// `rancher.strict_verify`; `None`: learn the server's agent-tls-mode.
    pub strict_verify: Option<bool>,
    /// The userdata's CAs: trusted beside the system roots, never beside a pinned CA.
    pub trusted_ca: &'a [TrustedCa],
    /// The userdata's `proxy`: every request to the server goes through it, and the agent
    /// is given it.
    pub proxy: &'a ProxySettings,
}

impl<'a> Registration<'a> {
    pub fn new(settings: &'a Settings, node: &'a NodeIdentity) -> Self {
        let r = &settings.rancher;
        Registration {
            server: r.server.trim_end_matches('/'),
            token: &r.token,
            ca_checksum: r.ca_checksum.as_deref().filter(|c| !c.trim().is_empty()),
            roles: &settings.roles,
            node,
            labels: &r.labels,
            taints: &r.taints,
            explicit_node_name: r.node_name.as_deref(),
            strict_verify: r.strict_verify,
            trusted_ca: &settings.trusted_ca,
            proxy: &settings.proxy,
        }
    }
}

/// How long `/v3/connect/agent` may keep answering "machine not found by request" before
/// registration gives up with the token named as the likely cause. Ten minutes covers
/// Rancher and CAPI coming up after a restart (CAPI starts minutes after Rancher answers);
/// the registration deadline bounds it anyway.
pub const MACHINE_NOT_FOUND_WINDOW: Duration = Duration::from_secs(600);

/// Knobs of one registration that are not userdata: how long "machine not found" is
/// tolerated, and where progress worth showing in `bootstrapd status` goes.
#[derive(Clone, Copy)]
pub struct Tuning<'a> {
    pub not_found_window: Duration,
    pub progress: &'a (dyn Fn(&str) + Send + Sync),
}

impl Default for Tuning<'_> {
    fn default() -> Self {
        Tuning {
            not_found_window: MACHINE_NOT_FOUND_WINDOW,
            progress: &|_| {},
        }
    }
}

impl std::fmt::Debug for Tuning<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tuning")
            .field("not_found_window", &self.not_found_window)
            .finish_non_exhaustive()
    }
}

/// The overall time budget of a registration (`rancher.deadline_seconds`): every request
/// retries within what is left of it, never beyond.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    end: Instant,
    /// `rancher.splay_seconds`: the first retry's bound (http.rs `RetryPolicy::splay`).
    splay: Duration,
}

impl Deadline {
    pub fn after(budget: Duration) -> Self {
        Deadline {
            end: Instant::now() + budget,
            splay: Duration::ZERO,
        }
    }

    /// The splay spreads the retries, not the first contact: a node whose server answers at
    /// once registers at once, and a fleet that meets a server down or busy spreads its first
    /// retries uniformly over the splay, then backs off as usual.
    pub fn with_splay(self, splay: Duration) -> Self {
        Deadline { splay, ..self }
    }

    pub fn remaining(&self) -> Duration {
        self.end.saturating_duration_since(Instant::now())
    }

    /// Exponential backoff with full jitter (http.rs), bounded by what is left. The first
    /// retry's bound (the splay, at least 2 s) and the ceiling of 8 s keep a fleet booting at
    /// once under 3x the mean request rate while the server is down, after the second of its
    /// first contacts (measured by bench/'s `fleet`); 8 s also bounds the wait after the
    /// server is back.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_secs(2),
            max_delay: Duration::from_secs(8),
            // Never zero: one attempt is always made, even when the budget is spent.
            deadline: self.remaining().max(Duration::from_secs(1)),
            attempts: u32::MAX,
            splay: self.splay,
        }
    }
}

/// Consecutive certificate-verification failures after which a request to Rancher gives
/// up: the second rides out a server restarting mid-handshake; more would only repeat the
/// same verdict until the deadline.
pub const CERT_FAIL_ATTEMPTS: u32 = 2;

/// A verified-TLS client under `trust`, through the userdata's `proxy`, retrying within
/// `deadline`, failing fast on a certificate `trust` does not accept.
pub(crate) fn client(
    trust: &TlsTrust,
    proxy: &ProxySettings,
    deadline: &Deadline,
    attempt_timeout: Duration,
    max_body: usize,
) -> Result<HttpClient, crate::http::HttpError> {
    HttpClientBuilder::new(trust.clone())
        .proxy(proxy)
        .retry(deadline.retry_policy())
        .attempt_timeout(attempt_timeout)
        .max_body(max_body)
        .fail_fast_on_certificate(CERT_FAIL_ATTEMPTS)
        .build()
}

/// `server` joined with an absolute API path, keeping any path prefix the server URL has
/// (Rancher behind a path-routing proxy).
pub fn endpoint(server: &str, path: &str) -> String {
    format!(
        "{}/{}",
        server.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            endpoint("https://r.lab/", "/cacerts"),
            "https://r.lab/cacerts"
        );
        assert_eq!(
            endpoint("https://r.lab:8443/rancher", "v3/connect/agent"),
            "https://r.lab:8443/rancher/v3/connect/agent"
        );
    }

    #[test]
    fn the_splay_is_the_first_retrys_bound_not_a_wait_before_the_first_contact() {
        let d = Deadline::after(Duration::from_secs(900));
        assert_eq!(d.retry_policy().backoff_cap(0), Duration::from_secs(2));
        let p = d.with_splay(Duration::from_secs(4)).retry_policy();
        assert_eq!(p.backoff_cap(0), Duration::from_secs(4));
        assert_eq!(p.backoff_cap(1), Duration::from_secs(4));
        assert_eq!(p.backoff_cap(2), Duration::from_secs(8));
        assert_eq!(p.max_delay, Duration::from_secs(8));
    }
}
