//! `proxy:` of the userdata, apart from the other settings: the HTTP client and the package
//! managers (below the userdata in the layering) take it, and must not depend on the rest of
//! the userdata module, which depends on them.

use schemars::JsonSchema;
use serde::Serialize;

use crate::secret::Secret;
use crate::userdata::schema;

/// `proxy:`. The URLs are secrets: a proxy URL may carry `user:password@`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProxySettings {
    /// Proxy for http:// targets: `http(s)://[user:password@]host[:port]`, no path, query or
    /// fragment.
    #[serde(default)]
    #[schemars(schema_with = "schema::proxy_url")]
    pub http: Option<Secret>,
    /// Proxy for https:// targets (same form).
    #[serde(default)]
    #[schemars(schema_with = "schema::proxy_url")]
    pub https: Option<Secret>,
    /// Hosts reached directly: host names, `.domain` (the domain and its subdomains), `*`,
    /// IP addresses and CIDRs.
    #[serde(default)]
    #[schemars(inner(pattern(schema::NO_PROXY_ENTRY)), extend("uniqueItems" = true))]
    pub no_proxy: Vec<String>,
}

impl ProxySettings {
    /// No proxy asked for: bootstrapd and everything it configures behave as without the key.
    pub fn is_empty(&self) -> bool {
        self.http.is_none() && self.https.is_none() && self.no_proxy.is_empty()
    }

    /// True when a proxy URL is set (a `no_proxy` list alone changes nothing).
    pub fn has_proxy(&self) -> bool {
        self.http.is_some() || self.https.is_some()
    }

    /// `no_proxy` as the `NO_PROXY` variable spells it (comma-separated).
    pub fn no_proxy_list(&self) -> String {
        self.no_proxy.join(",")
    }

    /// The settings fit for logs, `plan` and the journal: each URL with its password
    /// replaced by `redacted`, as `rancher/agent_binary.rs` shows URLs.
    pub fn redacted(&self) -> String {
        let url = |s: &Secret| match url::Url::parse(s.expose()) {
            Ok(u) => crate::secret::redact_url(&u),
            // Validated URLs always parse; anything else is not shown at all.
            Err(_) => crate::secret::REDACTED.to_string(),
        };
        let mut parts = Vec::new();
        if let Some(h) = &self.http {
            parts.push(format!("http {}", url(h)));
        }
        if let Some(h) = &self.https {
            parts.push(format!("https {}", url(h)));
        }
        if !self.no_proxy.is_empty() {
            parts.push(format!("no_proxy {}", self.no_proxy_list()));
        }
        if parts.is_empty() {
            "no proxy".to_string()
        } else {
            parts.join(", ")
        }
    }
}
