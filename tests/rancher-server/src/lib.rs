//! A Rancher server double for bootstrapd's tests.
//!
//! It speaks both registration protocols the way the real server does (see README.md for the
//! Rancher source behind each rule): the rke1 agent's remotedialer websocket
//! (`/v3/connect/register`, `/v3/connect`, `/v3/connect/config`) and the rancher-system-agent's
//! `/v3/connect/agent`, behind TLS from its own CA. It records every node it accepted, once per
//! identity, and can inject faults (503 window, slow replies, connection resets, a wrong CA).
//!
//! In-process use:
//!
//! ```no_run
//! # async fn demo() -> Result<(), rancher_test_server::Error> {
//! let server = rancher_test_server::start(rancher_test_server::Config {
//!     tokens: vec!["token-abc".into()],
//!     ..Default::default()
//! })
//! .await?;
//! println!("{} {}", server.url, server.ca_checksum);
//! let nodes = server.record();
//! server.shutdown();
//! # Ok(()) }
//! ```

pub mod ca;
pub mod env_proxy;
pub mod protocol;
pub mod record;
pub mod requests;
mod server;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use record::{Generation, NodeRecord};
pub use requests::RequestEntry;
pub use server::{Server, start};

/// The handle `start` returns (the same type under the name the brief uses).
pub type ServerHandle = Server;

/// How to run the server. `Default` is an ephemeral server on 127.0.0.1 with a random port.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Known cluster registration tokens. Never logged.
    pub tokens: Vec<String>,
    /// Where the CA (ca.pem, ca-key.pem) lives so that it survives restarts; `None`: ephemeral.
    pub state_dir: Option<PathBuf>,
    /// Node record file; `None` with a state dir means `<state_dir>/nodes.json`.
    pub record_file: Option<PathBuf>,
    /// Subject alternative names besides localhost, 127.0.0.1 and 10.0.2.2.
    pub extra_sans: Vec<String>,
    /// Every API call answers 503 during this long after start.
    pub fail_503_for: Duration,
    /// Every reply is delayed by this much.
    pub slow: Duration,
    /// Serve a different CA on /cacerts and /v3/settings/cacerts than the one in the TLS chain.
    pub wrong_ca: bool,
    /// Drop this many TCP connections right after accept (before TLS).
    pub reset_first: u32,
    /// Rancher 2.0-2.5: no /cacerts, no system-agent endpoints.
    pub legacy: bool,
    /// `/v3/connect/config` answers 200 with an (empty) node plan instead of 503.
    pub plan_ready: bool,
    /// Which Rancher the system-agent endpoints model (README.md lists each rule and its source).
    pub rules: Rules,
    /// Current rules: `/v3/connect/agent` answers 401 during this long after start, even for a
    /// good token, as Rancher's config server does until its informers have synced.
    pub starting_for: Duration,
    /// Current rules: `/v3/connect/agent` also answers 401 while this file exists, so that a
    /// test can hold the server "starting" exactly as long as it needs (the VM e2e test).
    pub starting_while: Option<std::path::PathBuf>,
    /// The first accepted `/v3/connect/agent` of a machine is held this long before the answer
    /// (Rancher waits for the custom machine to be created; it gives up after 120 s).
    pub hold_first_connect: Duration,
    /// The `agent-tls-mode` setting, written into `/system-agent-install.sh` as `STRICT_VERIFY`.
    pub agent_tls_mode: AgentTlsMode,
    /// Tokens past their `expiresAt`: treated as unknown everywhere. Never logged.
    pub expired_tokens: Vec<String>,
}

/// The rule set the system-agent endpoints follow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Rules {
    /// Rancher 2.12 and later (rancher-system-agent v0.13+): an unknown token is a 500
    /// "machine not found by request", `/cacerts` signs its body, the install script is served.
    #[default]
    Current,
    /// Rancher 2.6: every refusal on `/v3/connect/agent` is a bare 401, no `X-Cattle-Hash`.
    V2_6,
}

impl std::str::FromStr for Rules {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "current" => Ok(Rules::Current),
            "2.6" => Ok(Rules::V2_6),
            other => Err(format!("rules {other:?}: expected current or 2.6")),
        }
    }
}

/// Rancher's `agent-tls-mode` setting (`pkg/settings/setting.go`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AgentTlsMode {
    /// `strict`: the default of new installs since Rancher 2.9; `STRICT_VERIFY="true"`.
    #[default]
    Strict,
    /// `system-store`: `STRICT_VERIFY="false"`.
    SystemStore,
}

impl AgentTlsMode {
    /// The setting's value as Rancher spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentTlsMode::Strict => "strict",
            AgentTlsMode::SystemStore => "system-store",
        }
    }
}

impl std::str::FromStr for AgentTlsMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "strict" => Ok(AgentTlsMode::Strict),
            "system-store" => Ok(AgentTlsMode::SystemStore),
            other => Err(format!(
                "agent-tls-mode {other:?}: expected strict or system-store"
            )),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tokens: Vec::new(),
            state_dir: None,
            record_file: None,
            extra_sans: Vec::new(),
            fail_503_for: Duration::ZERO,
            slow: Duration::ZERO,
            wrong_ca: false,
            reset_first: 0,
            legacy: false,
            plan_ready: false,
            rules: Rules::default(),
            starting_for: Duration::ZERO,
            starting_while: None,
            hold_first_connect: Duration::ZERO,
            agent_tls_mode: AgentTlsMode::default(),
            expired_tokens: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("certificate generation: {0}")]
    Certificate(#[source] rcgen::Error),
    #[error("CA key {path}: {source}")]
    CaKey {
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("record file {path}: {source}")]
    RecordFormat {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}
