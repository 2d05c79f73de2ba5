//! Where the rancher-system-agent binary comes from, and installing it only once its sha256
//! matches.
//!
//! Rancher's generated installer downloads the binary from `<server>/assets/` with no
//! checksum (`CATTLE_AGENT_BINARY_BASE_URL`, set by `pkg/capr/installer/installer.go`;
//! `download_rancher_file` in rancher/system-agent `install.sh`), and `install.sh` also takes
//! a URL (`CATTLE_AGENT_BINARY_URL`) or a local file (`CATTLE_AGENT_BINARY_LOCAL_LOCATION`),
//! again unchecked. bootstrapd keeps `<server>/assets` as the default, unchecked as there,
//! and for the other sources requires a sha256 and checks it before the host is touched:
//!
//! * `rancher.system_agent.binary: {url: http(s)://..., sha256: <64 hex>}`;
//! * `rancher.system_agent.binary: {path: /..., sha256: <64 hex>}`;
//! * the runtime offline bundle (`runtime.source.offline.path`) when it holds
//!   `system-agent/rancher-system-agent-<arch>` with its line in `system-agent/SHA256SUMS`
//!   (`sha256sum` format, as the system-agent releases' `sha256sum-<arch>.txt`).

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{Deadline, client};
use crate::fsutil::HostRoot;
use crate::http::{HttpError, Request, StatusCode, TlsTrust, redact_url};
use crate::userdata::{ProxySettings, RuntimeSource, Settings};

/// The agent's directory inside an offline bundle.
pub const BUNDLE_DIR: &str = "system-agent";
/// Checksums of the bundle's agent files, `sha256sum` format.
pub const BUNDLE_SUMS: &str = "SHA256SUMS";

#[derive(Debug, thiserror::Error)]
pub enum AgentBinaryError {
    #[error(
        "rancher-system-agent from {source_desc}: sha256 {actual} does not match the expected \
         {expected}; nothing was installed"
    )]
    Mismatch {
        source_desc: String,
        expected: String,
        actual: String,
    },
    #[error("rancher-system-agent from {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: Box<HttpError>,
    },
    #[error("rancher-system-agent from {url}: status {status}")]
    Status { url: String, status: StatusCode },
    #[error("{path}: no line for {name} (the offline bundle's agent needs its sha256 there)")]
    BundleSum { path: PathBuf, name: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> AgentBinaryError + '_ {
    move |source| AgentBinaryError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Where the binary comes from; every source but `Assets` carries the sha256 it must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BinarySource {
    /// `<server>/assets/rancher-system-agent-<arch>`, under the pinned CA (Rancher's default).
    Assets,
    Url {
        url: String,
        sha256: String,
    },
    /// A host path (userdata `path`, or the offline bundle's file).
    File {
        path: String,
        sha256: String,
    },
}

impl BinarySource {
    pub fn describe(&self) -> String {
        match self {
            BinarySource::Assets => "<server>/assets (Rancher's default, no checksum)".into(),
            // The URL may carry a mirror's password or a signed query: never in logs/journal.
            BinarySource::Url { url, .. } => redacted(url),
            BinarySource::File { path, .. } => path.clone(),
        }
    }
}

/// The binary, read and checked, not yet written anywhere.
#[derive(Clone)]
pub struct VerifiedBinary {
    pub bytes: Vec<u8>,
    pub sha256: String,
    pub source: String,
}

impl std::fmt::Debug for VerifiedBinary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedBinary")
            .field("bytes", &self.bytes.len())
            .field("sha256", &self.sha256)
            .field("source", &self.source)
            .finish()
    }
}

/// The source the settings and the offline bundle give: userdata first, then the bundle,
/// then Rancher's `/assets`.
pub fn resolve(
    root: &HostRoot,
    settings: &Settings,
    arch: &str,
) -> Result<BinarySource, AgentBinaryError> {
    if let Some(b) = &settings.rancher.system_agent.binary {
        let sha256 = b.sha256.to_ascii_lowercase();
        return Ok(match (&b.url, &b.path) {
            (Some(url), _) => BinarySource::Url {
                url: url.clone(),
                sha256,
            },
            (None, Some(path)) => BinarySource::File {
                path: path.clone(),
                sha256,
            },
            // validate.rs requires exactly one of the two.
            (None, None) => BinarySource::Assets,
        });
    }
    if let RuntimeSource::Offline(o) = &settings.runtime.source {
        return from_bundle(root, &o.path, arch);
    }
    Ok(BinarySource::Assets)
}

/// The bundle's agent for `arch`, if it has one (host path, checksum from `SHA256SUMS`).
pub fn from_bundle(
    root: &HostRoot,
    bundle: &str,
    arch: &str,
) -> Result<BinarySource, AgentBinaryError> {
    let name = format!("rancher-system-agent-{arch}");
    let dir = Path::new(bundle).join(BUNDLE_DIR);
    if !root.path(dir.join(&name)).is_file() {
        return Ok(BinarySource::Assets);
    }
    let sums_path = root.path(dir.join(BUNDLE_SUMS));
    let sums = std::fs::read_to_string(&sums_path).map_err(io_err(&sums_path))?;
    let sha256 = sum_for(&sums, &name).ok_or(AgentBinaryError::BundleSum {
        path: sums_path,
        name: name.clone(),
    })?;
    Ok(BinarySource::File {
        path: dir.join(name).to_string_lossy().into_owned(),
        sha256,
    })
}

/// The sha256 of `file` in a `sha256sum`-format list (text or `*binary` mode), lower case.
pub fn sum_for(sums: &str, file: &str) -> Option<String> {
    sums.lines()
        .filter_map(|l| l.split_once(char::is_whitespace))
        .find(|(_, f)| f.trim().trim_start_matches('*') == file)
        .map(|(sum, _)| sum.trim().to_ascii_lowercase())
        .filter(|s| s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Reads or downloads the binary and checks its sha256; writes nothing. None for `Assets`,
/// which `system_agent::install_with` downloads under the server's CA.
pub async fn fetch(
    root: &HostRoot,
    source: &BinarySource,
    trust: &TlsTrust,
    deadline: &Deadline,
    proxy: &ProxySettings,
) -> Result<Option<VerifiedBinary>, AgentBinaryError> {
    let (bytes, expected) = match source {
        BinarySource::Assets => return Ok(None),
        BinarySource::File { path, sha256 } => {
            let p = root.path(path);
            (std::fs::read(&p).map_err(io_err(&p))?, sha256)
        }
        BinarySource::Url { url, sha256 } => (download(url, trust, deadline, proxy).await?, sha256),
    };
    let actual = hex::encode(Sha256::digest(&bytes));
    check(&source.describe(), expected, &actual)?;
    Ok(Some(VerifiedBinary {
        bytes,
        sha256: actual,
        source: source.describe(),
    }))
}

fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => redact_url(&u),
        Err(_) => url.split(['@', '?', '#']).next().unwrap_or_default().into(),
    }
}

/// The URL is trusted through the checksum, not the transport: the system roots (and the
/// userdata's `trusted_ca`, in `trust`) for https, plain http allowed (a mirror inside the
/// air gap), and no token is ever sent there. Through the userdata's proxy, if any.
async fn download(
    url: &str,
    trust: &TlsTrust,
    deadline: &Deadline,
    proxy: &ProxySettings,
) -> Result<Vec<u8>, AgentBinaryError> {
    let http = |source: HttpError| AgentBinaryError::Http {
        url: redacted(url),
        source: Box::new(source),
    };
    let c = client(trust, proxy, deadline, Duration::from_secs(300), 512 << 20).map_err(http)?;
    let resp = c
        .send(&Request::get(url).map_err(http)?)
        .await
        .map_err(http)?;
    if resp.status != StatusCode::OK {
        return Err(AgentBinaryError::Status {
            url: redacted(url),
            status: resp.status,
        });
    }
    Ok(resp.body.to_vec())
}

fn check(source_desc: &str, expected: &str, actual: &str) -> Result<(), AgentBinaryError> {
    if expected.eq_ignore_ascii_case(actual) {
        Ok(())
    } else {
        Err(AgentBinaryError::Mismatch {
            source_desc: source_desc.to_string(),
            expected: expected.to_ascii_lowercase(),
            actual: actual.to_string(),
        })
    }
}

/// Writes `bytes` to `dest` through a temp file in the same directory, hashing what is
/// written; only when the hash matches `expected` (if any) is it fsynced and renamed over
/// `dest`. A mismatch removes the temp file and leaves `dest` as it was.
pub fn install_checked(
    dest: &Path,
    bytes: &[u8],
    expected: Option<&str>,
    source_desc: &str,
) -> Result<(), AgentBinaryError> {
    let dir = dest.parent().unwrap_or(Path::new("/"));
    crate::fsutil::create_dir_all_durable(dir).map_err(io_err(dir))?;
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = write_hashed(&tmp, bytes).and_then(|actual| {
        if let Some(e) = expected {
            check(source_desc, e, &actual)?;
        }
        std::fs::rename(&tmp, dest).map_err(io_err(dest))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_hashed(tmp: &Path, bytes: &[u8]) -> Result<String, AgentBinaryError> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o755)
        .open(tmp)
        .map_err(io_err(tmp))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o755))
        .map_err(io_err(tmp))?;
    let mut hasher = Sha256::new();
    for chunk in bytes.chunks(1 << 20) {
        f.write_all(chunk).map_err(io_err(tmp))?;
        hasher.update(chunk);
    }
    f.sync_all().map_err(io_err(tmp))?;
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(b: &[u8]) -> String {
        hex::encode(Sha256::digest(b))
    }

    #[test]
    fn install_checked_renames_only_on_match() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("bin/rancher-system-agent");
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::write(&dest, b"old").unwrap();
        let err = install_checked(&dest, b"new", Some(&sha(b"other")), "/b/x").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/b/x") && msg.contains(&sha(b"new")) && msg.contains(&sha(b"other")));
        assert_eq!(std::fs::read(&dest).unwrap(), b"old");
        assert_eq!(
            std::fs::read_dir(dest.parent().unwrap()).unwrap().count(),
            1
        );
        install_checked(&dest, b"new", Some(&sha(b"new").to_uppercase()), "/b/x").unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"new");
        let mode = std::fs::metadata(&dest).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
    }

    #[test]
    fn url_sources_are_described_without_credentials() {
        let s = BinarySource::Url {
            url: "https://user:pw@mirror.lab/agent?sig=abc".into(),
            sha256: sha(b""),
        };
        let d = s.describe();
        assert!(!d.contains("pw") && !d.contains("sig=abc"), "{d}");
        assert!(
            d.starts_with("https://user:redacted@mirror.lab/agent"),
            "{d}"
        );
    }

    #[test]
    fn bundle_layout() {
        let d = tempfile::tempdir().unwrap();
        let root = HostRoot::new(Some(d.path().to_path_buf()));
        let dir = root.path("/opt/bundle/system-agent");
        assert_eq!(
            from_bundle(&root, "/opt/bundle", "amd64").unwrap(),
            BinarySource::Assets
        );
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("rancher-system-agent-amd64"), b"agent").unwrap();
        assert!(matches!(
            from_bundle(&root, "/opt/bundle", "amd64"),
            Err(AgentBinaryError::Io { .. })
        ));
        std::fs::write(
            dir.join(BUNDLE_SUMS),
            format!("{}  rancher-system-agent-arm64\n", sha(b"x")),
        )
        .unwrap();
        assert!(matches!(
            from_bundle(&root, "/opt/bundle", "amd64"),
            Err(AgentBinaryError::BundleSum { .. })
        ));
        std::fs::write(
            dir.join(BUNDLE_SUMS),
            format!("{} *rancher-system-agent-amd64\n", sha(b"agent")),
        )
        .unwrap();
        assert_eq!(
            from_bundle(&root, "/opt/bundle", "amd64").unwrap(),
            BinarySource::File {
                path: "/opt/bundle/system-agent/rancher-system-agent-amd64".into(),
                sha256: sha(b"agent"),
            }
        );
    }
}
