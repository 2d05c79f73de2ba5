//! What the server saw: one entry per node identity, kept in memory and in a JSON file.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::Error;

/// Which registration protocol a node used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Generation {
    /// Rancher 2.0-2.6 rke1 agent: remotedialer websocket on `/v3/connect/register`.
    Rke1,
    /// Rancher >= 2.6 rancher-system-agent: `GET /v3/connect/agent`.
    SystemAgent,
}

impl Generation {
    pub fn as_str(self) -> &'static str {
        match self {
            Generation::Rke1 => "rke1",
            Generation::SystemAgent => "system-agent",
        }
    }
}

/// One node as the server recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// `m-<md5>` (rke1) or `custom-<sha256>` (system agent).
    pub name: String,
    pub generation: Generation,
    pub roles: Vec<String>,
    /// `None` when the node did not send it (no `X-Cattle-Address` header, empty rke1 field).
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub internal_address: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<String>,
    /// requestedHostname (rke1) or X-Cattle-Node-Name (system agent); `None` when not sent.
    #[serde(default)]
    pub hostname: Option<String>,
    /// RFC 3339, UTC.
    pub first_seen: String,
    pub last_seen: String,
    /// Accepted registrations/connections of this identity.
    pub connect_count: u64,
}

/// What one accepted request says about a node.
#[derive(Debug, Clone)]
pub struct Sighting {
    pub name: String,
    pub generation: Generation,
    pub roles: Vec<String>,
    pub address: Option<String>,
    pub internal_address: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<String>,
    pub hostname: Option<String>,
}

/// How a repeated sighting updates an existing entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    /// Rancher's rke1 `updateNode` only updates the role booleans; the custom config stays as
    /// created.
    RolesOnly,
    /// The system agent's machine request carries all headers again.
    Everything,
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
}

/// The records, de-duplicated by (generation, name), persisted on every change.
#[derive(Debug, Default)]
pub struct RecordStore {
    nodes: Vec<NodeRecord>,
    file: Option<PathBuf>,
}

impl RecordStore {
    /// Starts from the file's content when it exists, so a restarted server keeps its history.
    pub fn open(file: Option<PathBuf>) -> Result<Self, Error> {
        let nodes = match &file {
            Some(path) if path.exists() => read_records(path)?,
            _ => Vec::new(),
        };
        Ok(RecordStore { nodes, file })
    }

    pub fn nodes(&self) -> Vec<NodeRecord> {
        self.nodes.clone()
    }

    pub fn get(&self, generation: Generation, name: &str) -> Option<&NodeRecord> {
        self.nodes
            .iter()
            .find(|n| n.generation == generation && n.name == name)
    }

    /// Adds or updates the entry for this identity and rewrites the file.
    pub fn saw(&mut self, sighting: Sighting, update: Update) -> Result<NodeRecord, Error> {
        let now = now_rfc3339();
        let index = self
            .nodes
            .iter()
            .position(|n| n.generation == sighting.generation && n.name == sighting.name);
        let entry = match index {
            Some(i) => {
                let entry = &mut self.nodes[i];
                entry.roles = sighting.roles;
                if update == Update::Everything {
                    entry.address = sighting.address;
                    entry.internal_address = sighting.internal_address;
                    entry.labels = sighting.labels;
                    entry.taints = sighting.taints;
                    entry.hostname = sighting.hostname;
                }
                entry.last_seen = now;
                entry.connect_count += 1;
                entry.clone()
            }
            None => {
                let entry = NodeRecord {
                    name: sighting.name,
                    generation: sighting.generation,
                    roles: sighting.roles,
                    address: sighting.address,
                    internal_address: sighting.internal_address,
                    labels: sighting.labels,
                    taints: sighting.taints,
                    hostname: sighting.hostname,
                    first_seen: now.clone(),
                    last_seen: now,
                    connect_count: 1,
                };
                self.nodes.push(entry.clone());
                entry
            }
        };
        self.persist()?;
        Ok(entry)
    }

    /// Counts one more connection of a known entry (a `/v3/connect` reconnect).
    pub fn reconnected(&mut self, generation: Generation, name: &str) -> Result<(), Error> {
        if let Some(entry) = self
            .nodes
            .iter_mut()
            .find(|n| n.generation == generation && n.name == name)
        {
            entry.last_seen = now_rfc3339();
            entry.connect_count += 1;
        }
        self.persist()
    }

    fn persist(&self) -> Result<(), Error> {
        match &self.file {
            Some(path) => write_records(path, &self.nodes),
            None => Ok(()),
        }
    }
}

/// Reads a record file written by the server.
pub fn read_records(path: &Path) -> Result<Vec<NodeRecord>, Error> {
    let text = fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| Error::RecordFormat {
        path: path.to_path_buf(),
        source,
    })
}

/// Atomic replace: a reader never sees a half-written file.
fn write_records(path: &Path, nodes: &[NodeRecord]) -> Result<(), Error> {
    let io_err = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut data = serde_json::to_vec_pretty(nodes).map_err(|source| Error::RecordFormat {
        path: path.to_path_buf(),
        source,
    })?;
    data.push(b'\n');
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir).map_err(io_err)?;
    }
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "record".to_string());
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    let mut file = fs::File::create(&tmp).map_err(io_err)?;
    file.write_all(&data).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    fs::rename(&tmp, path).map_err(io_err)
}

/// The `table` subcommand's output.
pub fn format_table(nodes: &[NodeRecord]) -> String {
    let headers = [
        "NAME",
        "GEN",
        "ROLES",
        "HOSTNAME",
        "ADDRESS",
        "INTERNAL",
        "LABELS",
        "TAINTS",
        "FIRST SEEN",
        "LAST SEEN",
        "COUNT",
    ];
    let rows: Vec<[String; 11]> = nodes
        .iter()
        .map(|n| {
            let or_dash = |s: String| if s.is_empty() { "-".to_string() } else { s };
            let opt = |s: &Option<String>| or_dash(s.clone().unwrap_or_default());
            [
                n.name.clone(),
                n.generation.as_str().to_string(),
                or_dash(n.roles.join(",")),
                opt(&n.hostname),
                opt(&n.address),
                opt(&n.internal_address),
                or_dash(
                    n.labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(","),
                ),
                or_dash(n.taints.join(",")),
                n.first_seen.clone(),
                n.last_seen.clone(),
                n.connect_count.to_string(),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row.iter()) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sighting(name: &str, roles: &[&str], address: &str) -> Sighting {
        Sighting {
            name: name.to_string(),
            generation: Generation::Rke1,
            roles: roles.iter().map(|r| r.to_string()).collect(),
            address: Some(address.to_string()),
            internal_address: None,
            labels: BTreeMap::new(),
            taints: vec![],
            hostname: Some("node1".to_string()),
        }
    }

    #[test]
    fn repeated_registration_updates_one_entry_and_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("sub/nodes.json");
        let mut store = RecordStore::open(Some(file.clone())).expect("open");
        store
            .saw(sighting("m-1", &["etcd"], "10.0.0.1"), Update::RolesOnly)
            .expect("first");
        let second = store
            .saw(
                sighting("m-1", &["etcd", "worker"], "10.9.9.9"),
                Update::RolesOnly,
            )
            .expect("second");
        assert_eq!(second.connect_count, 2);
        assert_eq!(second.roles, vec!["etcd", "worker"]);
        assert_eq!(
            second.address.as_deref(),
            Some("10.0.0.1"),
            "rke1 keeps the created custom config"
        );
        let on_disk = read_records(&file).expect("read back");
        assert_eq!(on_disk.len(), 1);
        assert_eq!(on_disk[0], second);
        // A restarted server starts from the file.
        let reopened = RecordStore::open(Some(file)).expect("reopen");
        assert_eq!(reopened.nodes().len(), 1);
        let table = format_table(&reopened.nodes());
        assert!(table.starts_with("NAME"));
        assert!(table.contains("m-1") && table.contains("etcd,worker"));
    }

    #[test]
    fn same_name_in_two_generations_are_two_entries() {
        let mut store = RecordStore::open(None).expect("open");
        store
            .saw(sighting("x", &["etcd"], "a"), Update::RolesOnly)
            .expect("rke1");
        let mut other = sighting("x", &["etcd"], "a");
        other.generation = Generation::SystemAgent;
        store.saw(other, Update::Everything).expect("system agent");
        assert_eq!(store.nodes().len(), 2);
    }
}
