//! The system trust store as `trusted_ca` needs it: which distribution tool manages it, the
//! CA files bootstrapd put there, the certificates the tool last extracted, and whether
//! Docker started before that.
//!
//! The layouts, each the distribution's documented way to add a local CA:
//! - Debian/Ubuntu (`update-ca-certificates(8)`): `*.crt` files below
//!   `/usr/local/share/ca-certificates` (subdirectories included, `find -L`), one certificate
//!   per file; the tool rebuilds `/etc/ssl/certs/ca-certificates.crt`. It reads only that
//!   directory and `/etc/ca-certificates.conf` (names below the read-only
//!   `/usr/share/ca-certificates`), so with `/usr/local` read-only there is no place it
//!   reads on every run (`--localcertsdir` holds for that one run: the next package upgrade
//!   would rebuild the bundle without the CA); the plan refuses instead.
//! - RHEL family (`update-ca-trust(8)`): `/etc/pki/ca-trust/source/anchors`, then
//!   `update-ca-trust extract` writes `/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem`.
//! - SUSE (`update-ca-certificates(8)` of SUSE's p11-kit based ca-certificates):
//!   `/etc/pki/trust/anchors`, bundle `/var/lib/ca-certificates/ca-bundle.pem`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::SystemTime;

use serde::Serialize;

use super::{ProbeArea, ProbeFailures, read_optional, usr_local};
use crate::fsutil::HostRoot;
use crate::system::packages::{self, PackageManager};
use crate::system::systemd::Systemd;
use crate::userdata::ca;

/// The prefix of every CA file bootstrapd writes (the RHEL and SUSE directories are shared).
pub const FILE_PREFIX: &str = "bootstrapd-";
/// Docker's unit: its daemon reads the system roots once, when it first needs them.
pub const DOCKER_UNIT: &str = "docker.service";

/// Which distribution tool manages the trust store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TrustStore {
    Debian,
    Rhel,
    Suse,
}

impl TrustStore {
    /// The store of the distribution family whose package manager the host has.
    pub fn for_manager(pm: PackageManager) -> TrustStore {
        match pm {
            PackageManager::Apt => TrustStore::Debian,
            PackageManager::Dnf | PackageManager::Yum => TrustStore::Rhel,
            PackageManager::Zypper => TrustStore::Suse,
        }
    }

    /// The directory bootstrapd's CA files go to.
    pub fn dir(self) -> &'static str {
        match self {
            // A directory of its own: everything in it is bootstrapd's.
            TrustStore::Debian => "/usr/local/share/ca-certificates/bootstrapd",
            TrustStore::Rhel => "/etc/pki/ca-trust/source/anchors",
            TrustStore::Suse => "/etc/pki/trust/anchors",
        }
    }

    /// The tool and its arguments.
    pub fn tool(self) -> (&'static str, &'static [&'static str]) {
        match self {
            TrustStore::Debian | TrustStore::Suse => ("update-ca-certificates", &[]),
            TrustStore::Rhel => ("update-ca-trust", &["extract"]),
        }
    }

    /// The PEM bundle the tool writes, which TLS clients (Docker's Go among them) read.
    pub fn bundle(self) -> &'static str {
        match self {
            TrustStore::Debian => "/etc/ssl/certs/ca-certificates.crt",
            TrustStore::Rhel => "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
            TrustStore::Suse => "/var/lib/ca-certificates/ca-bundle.pem",
        }
    }

    /// The package that ships the tool.
    pub fn package(self) -> &'static str {
        match self {
            TrustStore::Debian | TrustStore::Suse => "ca-certificates",
            TrustStore::Rhel => "ca-certificates (update-ca-trust)",
        }
    }
}

/// When Docker's daemon last started, as systemd tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DockerRun {
    pub active: bool,
    pub since: Option<SystemTime>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct TrustFacts {
    /// None: no package manager, so no known distribution family.
    pub store: Option<TrustStore>,
    /// The store's tool as a host path, when installed.
    pub tool: Option<String>,
    /// `/usr/local` is mounted read-only (Debian's tool reads only below it).
    pub usr_local_read_only: bool,
    /// bootstrapd's CA files in the store's directory: file name -> content.
    pub files: BTreeMap<String, String>,
    /// sha256 fingerprints of the certificates in the bundle the tool last wrote.
    pub bundle: BTreeSet<String>,
    /// When that bundle was last written.
    pub bundle_written: Option<SystemTime>,
    /// Docker's daemon; None when systemd was not asked or has no Docker unit.
    pub docker: Option<DockerRun>,
}

/// Reads what `trusted_ca` plans with. `wanted` says whether the userdata has any CA:
/// without one only bootstrapd's leftover files matter.
pub async fn gather(
    root: &HostRoot,
    systemd: Option<&Systemd>,
    wanted: bool,
    errors: &mut ProbeFailures,
) -> TrustFacts {
    let mut f = TrustFacts {
        store: packages::detect(root).map(TrustStore::for_manager),
        ..TrustFacts::default()
    };
    let Some(store) = f.store else {
        return f;
    };
    f.tool = packages::find_program(root, store.tool().0);
    match usr_local::probe(root) {
        Ok(u) => f.usr_local_read_only = u.read_only,
        Err(e) => errors.record(ProbeArea::TrustStore, e),
    }
    match own_files(root, store) {
        Ok(files) => f.files = files,
        Err(e) => errors.record(ProbeArea::TrustStore, e),
    }
    if !wanted && f.files.is_empty() {
        return f;
    }
    let bundle = root.path(store.bundle());
    match read_optional(&bundle) {
        Ok(text) => f.bundle = fingerprints(text.as_deref().unwrap_or("")),
        Err(e) => errors.record(ProbeArea::TrustStore, e),
    }
    f.bundle_written = std::fs::metadata(&bundle).and_then(|m| m.modified()).ok();
    if let Some(sd) = systemd {
        f.docker = docker_run(sd).await;
    }
    f
}

/// bootstrapd's `*.crt` files in the store's directory.
fn own_files(root: &HostRoot, store: TrustStore) -> std::io::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let entries = match std::fs::read_dir(root.path(store.dir())) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(FILE_PREFIX) && name.ends_with(".crt") {
            out.insert(name, std::fs::read_to_string(entry.path())?);
        }
    }
    Ok(out)
}

/// The fingerprints of the certificates in a PEM bundle; blocks that do not decode are
/// skipped (the bundle is the tool's, not ours to judge).
pub fn fingerprints(text: &str) -> BTreeSet<String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(text.as_bytes())
        .filter_map(Result::ok)
        .map(|c| ca::fingerprint(&c))
        .collect()
}

async fn docker_run(sd: &Systemd) -> Option<DockerRun> {
    let state = sd.unit_state(DOCKER_UNIT).await.ok()?;
    if state.is_not_found() {
        return None;
    }
    let since = sd.active_since(DOCKER_UNIT).await.ok().flatten();
    Some(DockerRun {
        active: state.is_active(),
        since,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn gathers_the_layout_the_files_and_the_bundle_under_a_root() {
        let d = tempfile::tempdir().unwrap();
        let root = HostRoot::new(Some(d.path().to_path_buf()));
        let w = |p: &str, c: &str| {
            let path = root.path(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, c).unwrap();
        };
        let mut errors = ProbeFailures::default();
        assert_eq!(gather(&root, None, true, &mut errors).await.store, None);
        w("/usr/bin/dnf", "");
        w("/usr/bin/update-ca-trust", "");
        let pem = ca::tests::ca_pem("lab");
        let anchors = TrustStore::Rhel.dir();
        w(&format!("{anchors}/bootstrapd-1-abc.crt"), &pem);
        w(&format!("{anchors}/someone-else.crt"), "x");
        w(TrustStore::Rhel.bundle(), &format!("# lab\n{pem}"));
        let f = gather(&root, None, true, &mut errors).await;
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(f.store, Some(TrustStore::Rhel));
        assert_eq!(f.tool.as_deref(), Some("/usr/bin/update-ca-trust"));
        assert_eq!(f.files.keys().collect::<Vec<_>>(), ["bootstrapd-1-abc.crt"]);
        let fp = ca::fingerprint(&ca::certificates(&pem)[0]);
        assert_eq!(f.bundle, BTreeSet::from([fp]));
        assert!(f.bundle_written.is_some() && !f.usr_local_read_only);
    }
}
