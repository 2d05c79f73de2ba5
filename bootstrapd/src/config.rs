//! The image's own configuration, `/etc/bootstrapd/bootstrapd.toml`.
//!
//! Written by whoever builds the image, not by the node's user, so it is strict: unknown
//! keys are errors (a typo must not silently fall back to a default). A missing file means
//! all defaults.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::datasource::{self, DatasourceKind, FetchOptions};
use crate::fsutil::HostRoot;
use crate::http::RetryPolicy;
use crate::userdata::MAX_USERDATA_BYTES;

pub const CONFIG_PATH: &str = "/etc/bootstrapd/bootstrapd.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Use only this datasource instead of detecting one. The kernel command line's
    /// `bootstrapd.datasource=` still wins over this.
    pub datasource: Option<DatasourceKind>,
    /// Allow EC2 IMDSv1 (no session token) when the token endpoint refuses. Off: IMDSv1 is
    /// what SSRF attacks against instances use, and every current EC2 region offers v2.
    pub imds_v1_fallback: bool,
    /// Largest userdata a datasource may deliver, in bytes: at most (and by default)
    /// [`MAX_USERDATA_BYTES`], the parser's limit, which holds whatever this says. A lower
    /// value refuses bigger userdata at the source, before it is read whole.
    pub max_userdata_bytes: usize,
    pub timeouts: Timeouts,
    pub metadata: MetadataUrls,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            datasource: None,
            imds_v1_fallback: false,
            max_userdata_bytes: MAX_USERDATA_BYTES,
            timeouts: Timeouts::default(),
            metadata: MetadataUrls::default(),
        }
    }
}

/// Network timing for datasources. Milliseconds, so tests can use short values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Overall budget for one metadata request including retries: the network may not be
    /// up yet when bootstrapd starts.
    pub datasource_deadline_ms: u64,
    /// Limit for one attempt.
    pub attempt_ms: u64,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    pub max_attempts: u32,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            datasource_deadline_ms: 120_000,
            attempt_ms: 10_000,
            initial_backoff_ms: 250,
            max_backoff_ms: 5_000,
            max_attempts: 60,
        }
    }
}

impl Timeouts {
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(self.initial_backoff_ms),
            max_delay: Duration::from_millis(self.max_backoff_ms),
            deadline: Duration::from_millis(self.datasource_deadline_ms),
            attempts: self.max_attempts,
            splay: Duration::ZERO,
        }
    }

    pub fn attempt(&self) -> Duration {
        Duration::from_millis(self.attempt_ms)
    }
}

/// Base URLs of metadata services; overridable so tests can point them at loopback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetadataUrls {
    pub ec2: String,
    pub openstack: String,
}

impl Default for MetadataUrls {
    fn default() -> Self {
        MetadataUrls {
            ec2: "http://169.254.169.254".into(),
            openstack: "http://169.254.169.254".into(),
        }
    }
}

impl AgentConfig {
    /// What the datasources are given: the choice, each metadata service's endpoint, and the
    /// retry, timeout and size limits every fetch keeps to.
    pub fn datasource_options(&self) -> datasource::Options {
        datasource::Options {
            choice: self.datasource,
            ec2: datasource::Imds {
                base: self.metadata.ec2.clone(),
                v1_fallback: self.imds_v1_fallback,
            },
            openstack_metadata: self.metadata.openstack.clone(),
            fetch: FetchOptions {
                retry: self.timeouts.retry_policy(),
                attempt_timeout: self.timeouts.attempt(),
                max_userdata_bytes: self.max_userdata_bytes,
            },
        }
    }

    /// Loads `/etc/bootstrapd/bootstrapd.toml` below `root`; a missing file gives defaults.
    pub fn load(root: &HostRoot) -> Result<Self, ConfigError> {
        Self::load_from(&root.path(CONFIG_PATH))
    }

    /// Loads `path`; a missing file gives defaults.
    pub fn load_from(path: &Path) -> Result<Self, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(path = %path.display(), "no agent config, using defaults");
                Ok(AgentConfig::default())
            }
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Parses TOML text; `path` only names the source in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let cfg: AgentConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: toml_message(text, &e),
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        if !(1..=MAX_USERDATA_BYTES).contains(&self.max_userdata_bytes) {
            return Err(invalid(format!(
                "max_userdata_bytes must be between 1 and {MAX_USERDATA_BYTES} (the userdata \
                 parser refuses more, whatever this says), not {}",
                self.max_userdata_bytes
            )));
        }
        let t = &self.timeouts;
        if t.attempt_ms == 0 || t.datasource_deadline_ms == 0 || t.max_attempts == 0 {
            return Err(invalid(
                "timeouts.attempt_ms, datasource_deadline_ms and max_attempts must be above 0"
                    .into(),
            ));
        }
        if t.initial_backoff_ms > t.max_backoff_ms {
            return Err(invalid(
                "timeouts.initial_backoff_ms must not exceed max_backoff_ms".into(),
            ));
        }
        for (key, url) in [
            ("metadata.ec2", &self.metadata.ec2),
            ("metadata.openstack", &self.metadata.openstack),
        ] {
            match url::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => return Err(invalid(format!("{key}: not an http(s) URL: {url:?}"))),
            }
        }
        Ok(())
    }
}

/// toml's message with the position as `line:col` (its own rendering is a multi-line
/// snippet, awkward in a journal line).
fn toml_message(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("{line}:{col}: {}", e.message())
        }
        None => e.message().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_gives_defaults() {
        let d = tempfile::tempdir().unwrap();
        let root = HostRoot::new(Some(d.path().into()));
        let cfg = AgentConfig::load(&root).unwrap();
        assert_eq!(cfg, AgentConfig::default());
        assert!(!cfg.imds_v1_fallback);
        assert_eq!(cfg.metadata.ec2, "http://169.254.169.254");
    }

    #[test]
    fn full_file_parses() {
        let text = r#"
datasource = "nocloud"
imds_v1_fallback = true
max_userdata_bytes = 1024
[timeouts]
datasource_deadline_ms = 5000
attempt_ms = 1000
initial_backoff_ms = 10
max_backoff_ms = 100
max_attempts = 3
[metadata]
ec2 = "http://127.0.0.1:8080"
"#;
        let cfg = AgentConfig::parse(text, Path::new("x.toml")).unwrap();
        assert_eq!(cfg.datasource, Some(DatasourceKind::Nocloud));
        assert!(cfg.imds_v1_fallback);
        assert_eq!(cfg.metadata.ec2, "http://127.0.0.1:8080");
        assert_eq!(cfg.metadata.openstack, "http://169.254.169.254");
        let p = cfg.timeouts.retry_policy();
        assert_eq!(p.attempts, 3);
        assert_eq!(p.max_delay, Duration::from_millis(100));
    }

    #[test]
    fn each_source_is_given_its_own_part_of_the_config() {
        let text = r#"
datasource = "ec2"
imds_v1_fallback = true
max_userdata_bytes = 4096
[timeouts]
attempt_ms = 1500
max_attempts = 7
[metadata]
ec2 = "http://127.0.0.1:1"
openstack = "http://127.0.0.1:2"
"#;
        let cfg = AgentConfig::parse(text, Path::new("x.toml")).unwrap();
        let o = cfg.datasource_options();
        assert_eq!(o.choice, Some(DatasourceKind::Ec2));
        assert_eq!(o.ec2.base, "http://127.0.0.1:1");
        assert!(o.ec2.v1_fallback);
        assert_eq!(o.openstack_metadata, "http://127.0.0.1:2");
        assert_eq!(o.fetch.max_userdata_bytes, 4096);
        assert_eq!(o.fetch.attempt_timeout, Duration::from_millis(1500));
        assert_eq!(o.fetch.retry, cfg.timeouts.retry_policy());
        assert_eq!(o.fetch.retry.attempts, 7);
    }

    #[test]
    fn unknown_key_is_an_error_with_file_and_position() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("bootstrapd.toml");
        std::fs::write(&p, "imds_v1_fallback = false\nimds_v1_fallbak = true\n").unwrap();
        let e = AgentConfig::load_from(&p).unwrap_err().to_string();
        assert!(e.contains("bootstrapd.toml"), "{e}");
        assert!(e.contains("2:1"), "{e}");
        assert!(e.contains("imds_v1_fallbak"), "{e}");
    }

    #[test]
    fn bad_values_are_errors() {
        let p = Path::new("b.toml");
        assert!(AgentConfig::parse("datasource = \"azure\"", p).is_err());
        assert!(AgentConfig::parse("[metadata]\nec2 = \"file:///x\"", p).is_err());
        assert!(AgentConfig::parse("[timeouts]\nattempt_ms = 0", p).is_err());
        assert!(AgentConfig::parse("[timeouts]\nfoo = 1", p).is_err());
    }
}
