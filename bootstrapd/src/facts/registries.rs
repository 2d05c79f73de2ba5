//! The registry configuration files bootstrapd manages, as they are now: RKE2's and K3s's
//! registries.yaml and containerd's `certs.d/<host>/hosts.toml`.
//!
//! Only a digest, the mode and whether bootstrapd wrote the file are kept: registries.yaml
//! holds passwords, and facts are printed and logged.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::fsutil::HostRoot;

pub const RKE2_REGISTRIES: &str = "/etc/rancher/rke2/registries.yaml";
pub const K3S_REGISTRIES: &str = "/etc/rancher/k3s/registries.yaml";
/// containerd's hosts directory (containerd docs/hosts.md: `config_path`).
pub const CERTS_D: &str = "/etc/containerd/certs.d";
/// The first line of every file bootstrapd writes here: a file without it is the
/// operator's, and bootstrapd never removes it.
pub const MARKER: &str = "# Written by bootstrapd from the userdata's `registries`";

/// One file as it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileState {
    /// Starts with [`MARKER`].
    pub ours: bool,
    /// sha256 of the content, hex.
    pub sha256: String,
    /// Permission bits.
    pub mode: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RegistryFacts {
    /// Host path -> what is there; absent files are not listed.
    pub files: BTreeMap<String, FileState>,
    /// Files or directories that could not be read.
    pub errors: Vec<String>,
}

pub fn digest(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The hosts.toml path for a host directory name.
pub fn hosts_toml(dir: &str) -> String {
    format!("{CERTS_D}/{dir}/hosts.toml")
}

pub fn gather(root: &HostRoot) -> RegistryFacts {
    let mut f = RegistryFacts::default();
    let mut paths = vec![RKE2_REGISTRIES.to_string(), K3S_REGISTRIES.to_string()];
    match std::fs::read_dir(root.path(CERTS_D)) {
        Ok(entries) => {
            for e in entries.flatten() {
                if e.path().is_dir() {
                    paths.push(hosts_toml(&e.file_name().to_string_lossy()));
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => f.errors.push(format!("{CERTS_D}: {e}")),
    }
    for path in paths {
        match read(root, &path) {
            Ok(Some(state)) => {
                f.files.insert(path, state);
            }
            Ok(None) => {}
            Err(e) => f.errors.push(format!("{path}: {e}")),
        }
    }
    f
}

fn read(root: &HostRoot, path: &str) -> std::io::Result<Option<FileState>> {
    let p = root.path(path);
    let data = match std::fs::read(&p) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mode = std::fs::metadata(&p)?.permissions().mode() & 0o7777;
    Ok(Some(FileState {
        ours: data.starts_with(MARKER.as_bytes()),
        sha256: digest(&data),
        mode,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_known_by_digest_mode_and_marker_only() {
        let d = tempfile::tempdir().unwrap();
        let root = HostRoot::new(Some(d.path().to_path_buf()));
        let rke2 = root.path(RKE2_REGISTRIES);
        std::fs::create_dir_all(rke2.parent().unwrap()).unwrap();
        let ours = format!("{MARKER}\n{{\"configs\":{{}}}}\n");
        crate::fsutil::write_atomic(&rke2, ours.as_bytes(), 0o600).unwrap();
        let theirs = root.path(hosts_toml("registry.lab:5000"));
        std::fs::create_dir_all(theirs.parent().unwrap()).unwrap();
        std::fs::write(&theirs, "server = \"https://registry.lab:5000\"\n").unwrap();
        let f = gather(&root);
        assert!(f.errors.is_empty(), "{:?}", f.errors);
        assert_eq!(
            f.files[RKE2_REGISTRIES],
            FileState {
                ours: true,
                sha256: digest(ours.as_bytes()),
                mode: 0o600
            }
        );
        assert!(!f.files[&hosts_toml("registry.lab:5000")].ours);
        assert!(!f.files.contains_key(K3S_REGISTRIES));
        // Nothing of the content is kept: the serialised facts hold no password.
        assert!(!serde_json::to_string(&f).unwrap().contains("configs"));
    }
}
