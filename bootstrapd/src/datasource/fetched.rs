//! What every source is given (fetch options) and delivers ([`Fetched`]), and the reading and
//! checking they share.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::error::DatasourceError;
use super::error::io_err;
use super::kind::{DatasourceKind, Origin};
use crate::fsutil::HostRoot;
use crate::http::{HttpClient, RetryPolicy, TlsTrust};

/// How every source fetches: retries and timeouts for the network, and the size limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOptions {
    /// Backoff and overall deadline of one request: the network may not be up yet.
    pub retry: RetryPolicy,
    pub attempt_timeout: Duration,
    /// Largest userdata a source may deliver, refused before it is read whole.
    pub max_userdata_bytes: usize,
}

impl FetchOptions {
    /// The HTTP client for datasource requests. Metadata services are link-local and must
    /// not go through a proxy; seed URLs may need one.
    pub(super) fn client(&self, link_local: bool) -> Result<HttpClient, DatasourceError> {
        let mut b = HttpClient::builder(TlsTrust::SystemRoots)
            .retry(self.retry)
            .attempt_timeout(self.attempt_timeout)
            .max_body(self.max_userdata_bytes);
        if link_local {
            b = b.no_proxy();
        }
        Ok(b.build()?)
    }
}

/// What a datasource delivered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fetched {
    pub source: Origin,
    /// Raw userdata, possibly empty (the source exists but has none).
    pub userdata: Vec<u8>,
    /// Detached signature: the bytes of `user-data.sig` / `userdata.yaml.sig` /
    /// `user_data.sig` as they are, or the base64-decoded `X-Bootstrapd-Signature` header.
    /// Not verified here.
    pub signature: Option<Vec<u8>>,
    /// Source metadata without secrets (EC2 credentials are never fetched, OpenStack's
    /// `admin_pass` and `random_seed` are redacted).
    pub metadata: serde_json::Value,
    pub instance_id: String,
    pub hostname: Option<String>,
}

/// The instance id for sources without one: `/etc/machine-id`, then the DMI product UUID.
pub(super) fn fallback_instance_id(
    root: &HostRoot,
    kind: DatasourceKind,
) -> Result<String, DatasourceError> {
    for p in ["/etc/machine-id", "/sys/class/dmi/id/product_uuid"] {
        let path = root.path(p);
        match std::fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() && s.trim() != "uninitialized" => {
                return Ok(s.trim().to_string());
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {}
            Err(source) => return Err(DatasourceError::Io { path, source }),
        }
    }
    Err(DatasourceError::NoInstanceId { kind })
}

/// Reads a whole file of at most `limit` bytes; `None` when it does not exist.
pub(super) fn read_limited(path: &Path, limit: usize) -> Result<Option<Vec<u8>>, DatasourceError> {
    use std::io::Read;
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(DatasourceError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let mut buf = Vec::new();
    f.take(limit as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(io_err(path))?;
    if buf.len() > limit {
        return Err(DatasourceError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(Some(buf))
}

/// A node name taken from metadata (`local-hostname`, OpenStack `hostname`, `h=`), checked
/// as `rancher.node_name` is: it reaches the rke1 agent's `--node-name` when the userdata
/// names none. DNS names are case-insensitive, so it is lowercased first, and a fully
/// qualified name's final dot is dropped; anything else that is not a DNS name is refused
/// here, before any stage changes the host, with the file (or source) and key.
pub(super) fn metadata_hostname(
    raw: Option<String>,
    place: &str,
    key: &str,
) -> Result<Option<String>, DatasourceError> {
    let Some(raw) = raw else {
        return Ok(None);
    };
    let name = raw.to_ascii_lowercase();
    let name = name.strip_suffix('.').unwrap_or(&name).to_string();
    match crate::userdata::check_node_name(&name) {
        Ok(()) => Ok(Some(name)),
        Err(why) => Err(DatasourceError::Invalid {
            place: place.to_string(),
            message: format!("`{key}`: {why}"),
        }),
    }
}

/// Decodes an `X-Bootstrapd-Signature` header value.
pub(super) fn decode_signature_header(
    value: &str,
    place: &str,
) -> Result<Vec<u8>, DatasourceError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|_| DatasourceError::Signature {
            place: place.to_string(),
        })
}

/// Largest accepted signature (an ed25519 signature is 64 bytes; armour and metadata make
/// it bigger, but never megabytes).
pub(super) const MAX_SIGNATURE_BYTES: usize = 64 << 10;

/// Fetch options for unit tests: quick retries, the default size limit.
#[cfg(test)]
pub(crate) fn test_fetch_options() -> FetchOptions {
    FetchOptions {
        retry: RetryPolicy {
            initial: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            deadline: Duration::from_secs(20),
            attempts: 60,
            splay: Duration::ZERO,
        },
        attempt_timeout: Duration::from_secs(10),
        max_userdata_bytes: crate::userdata::MAX_USERDATA_BYTES,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_limited_enforces_limit() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        std::fs::write(&p, b"12345").unwrap();
        assert_eq!(read_limited(&p, 5).unwrap().unwrap(), b"12345");
        assert!(matches!(
            read_limited(&p, 4),
            Err(DatasourceError::TooLarge { .. })
        ));
        assert!(read_limited(&d.path().join("nope"), 4).unwrap().is_none());
    }

    #[test]
    fn signature_header_decoding() {
        assert_eq!(decode_signature_header(" aGk= ", "x").unwrap(), b"hi");
        assert!(decode_signature_header("!!", "x").is_err());
    }
}
