//! What the early local stage (`bootstrapd local`) did on this boot: its own small record
//! beside the journal, `network.json`.
//!
//! A separate file, not a stage of the journal: the local stage runs before the main run has
//! fetched anything (no instance id yet, the journal's stages are per instance), on every
//! boot. The main run reads it ([`load_this_boot`]) and refuses to go on when it failed, so a
//! broken network-config is reported, not papered over by DHCP; `status` shows it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::journal::{STATE_DIR, current_boot_id, now};
use crate::fsutil::{HostRoot, write_atomic};

pub const NETWORK_FILE: &str = "network.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkState {
    /// Started and not finished: saved first, so a stage killed (its unit's timeout) is not
    /// mistaken for one that never ran.
    Running,
    /// No local datasource, or one without network-config: nothing done (files written on an
    /// earlier boot are kept: a cidata ISO is often removed after the first boot).
    Nothing,
    /// network-config applied (the files are as it says, changed or not).
    Done,
    /// network-config refused or the files could not be written: nothing was changed.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub state: NetworkState,
    /// The datasource the stage looked at, with its evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Where the network-config was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Paths (on the host) of the files bootstrapd manages now.
    #[serde(default)]
    pub files: Vec<String>,
    /// Of those, written on this boot (new or different).
    #[serde(default)]
    pub written: Vec<String>,
    /// Files of an earlier network-config removed on this boot.
    #[serde(default)]
    pub removed: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the early host step (`bootstrapd local-host`, after this stage) did, one line
    /// each: firewalld masked before it started, or why that could not be done.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub host: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    pub updated: u64,
}

impl NetworkRecord {
    pub fn new(state: NetworkState) -> Self {
        NetworkRecord {
            state,
            source: None,
            file: None,
            sha256: None,
            files: Vec::new(),
            written: Vec::new(),
            removed: Vec::new(),
            error: None,
            host: Vec::new(),
            boot_id: current_boot_id(),
            updated: now(),
        }
    }

    /// One line for `status` and the main run's notes.
    pub fn summary(&self) -> String {
        let from = self.file.as_deref().unwrap_or("network-config");
        match self.state {
            NetworkState::Nothing => match &self.source {
                Some(s) => format!("no network-config in the local datasource ({s})"),
                None => "no local datasource: no network-config".to_string(),
            },
            NetworkState::Done if self.files.is_empty() && self.removed.is_empty() => {
                format!("{from} configures no interface (`config: disabled`): no files")
            }
            NetworkState::Done if self.written.is_empty() && self.removed.is_empty() => format!(
                "{} file(s) from {from} already in place: {}",
                self.files.len(),
                self.files.join(", ")
            ),
            NetworkState::Done => format!(
                "from {from}: wrote {}; removed {}",
                list_or_none(&self.written),
                list_or_none(&self.removed)
            ),
            NetworkState::Running => {
                "started and never finished (killed, e.g. by its unit's timeout)".to_string()
            }
            NetworkState::Failed => {
                format!("nothing changed: {}", self.error.as_deref().unwrap_or("?"))
            }
        }
    }
}

fn list_or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(", ")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NetworkRecordError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a network record: {source}")]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub fn record_path(root: &HostRoot) -> PathBuf {
    root.path(STATE_DIR).join(NETWORK_FILE)
}

pub fn save(root: &HostRoot, rec: &NetworkRecord) -> Result<(), NetworkRecordError> {
    let path = record_path(root);
    let mut data = serde_json::to_vec_pretty(rec).map_err(|e| NetworkRecordError::Write {
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    data.push(b'\n');
    write_atomic(&path, &data, 0o600).map_err(|source| NetworkRecordError::Write { path, source })
}

/// The record, if the local stage ever ran.
pub fn load(root: &HostRoot) -> Result<Option<NetworkRecord>, NetworkRecordError> {
    let path = record_path(root);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(NetworkRecordError::Read { path, source }),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| NetworkRecordError::Corrupt { path, source })
}

/// The record of this boot's local stage; one of an earlier boot says nothing about this
/// one (the unit may since have been disabled).
pub fn load_this_boot(root: &HostRoot) -> Result<Option<NetworkRecord>, NetworkRecordError> {
    Ok(load(root)?.filter(|r| r.boot_id == current_boot_id()))
}
