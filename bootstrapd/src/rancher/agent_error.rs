//! What the system-agent registration fails with, apart from its steps (system_agent.rs) and
//! the CATTLE_ID decision (cattle_id.rs), so both use it without importing each other.

use std::path::PathBuf;

use super::agent_binary::AgentBinaryError;
use super::cacerts::CaError;
use crate::http::{HttpError, StatusCode};

#[derive(Debug, thiserror::Error)]
pub enum SystemAgentError {
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error("{step}: {source}")]
    Http {
        step: &'static str,
        #[source]
        source: Box<HttpError>,
    },
    #[error("{url}: status {status} ({step})")]
    Status {
        step: &'static str,
        url: String,
        status: StatusCode,
    },
    /// `500 machine not found by request` for longer than the window: Rancher's answer
    /// (`pkg/capr/configserver/server.go`) when no machine or cluster matches the token.
    #[error(
        "{url}: the server does not know this registration token (wrong, expired or rotated): \
         it answered \"machine not found by request\" for {seconds} s. Take the current \
         registration command from Rancher (cluster > Registration) and update rancher.token"
    )]
    UnknownToken { url: String, seconds: u64 },
    /// The server's certificate does not verify under the proven trust.
    #[error(
        "{url}: the server's certificate does not verify against {trust}; likely a stale \
         rancher.ca_checksum after a certificate change, a wrong rancher.server URL, or TLS \
         interception on the way. Nothing carrying the token was sent ({detail})"
    )]
    Untrusted {
        url: String,
        trust: String,
        detail: String,
    },
    #[error(
        "{server}: strict TLS verification ({why}) needs a proven CA, but there is neither a \
         rancher.ca_checksum nor a CA proven by X-Cattle-Hash; set rancher.ca_checksum from \
         the registration command. Nothing carrying the token was sent"
    )]
    StrictWithoutCa { server: String, why: String },
    #[error("{url}: the reply is not the expected connection info JSON: {reason}")]
    ConnectionInfo { url: String, reason: String },
    #[error("no rancher-system-agent build for architecture {0:?} (Rancher ships amd64 and arm64)")]
    Arch(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `value` as the file held it, cut and with token-shaped words masked: a file that is not a
    /// cattle id may hold anything.
    #[error("{path}: invalid cattle id \"{value}\" (expected 63 hexadecimal characters)")]
    CattleId { path: PathBuf, value: String },
    #[error(
        "rancher.system_agent.machine_id is instance_id, but the datasource gave no instance id"
    )]
    NoInstanceId,
    /// The disk's cattle-id file names another machine than the userdata asks for.
    #[error(
        "{path} holds CATTLE_ID {file_id} (machine {file_machine}), but {from} asks for \
         machine {wanted_machine}: this disk was registered as {file_machine} already. Not \
         registering, neither as {file_machine} against the userdata nor as a second machine \
         for this host"
    )]
    CattleIdConflict {
        path: PathBuf,
        file_id: String,
        file_machine: String,
        wanted_machine: String,
        from: String,
    },
    #[error(transparent)]
    AgentBinary(Box<AgentBinaryError>),
}

impl From<AgentBinaryError> for SystemAgentError {
    fn from(e: AgentBinaryError) -> Self {
        SystemAgentError::AgentBinary(Box::new(e))
    }
}

pub(super) fn io_err(path: PathBuf) -> impl FnOnce(std::io::Error) -> SystemAgentError {
    move |source| SystemAgentError::Io { path, source }
}
