//! What can go wrong getting userdata; every error names the place (file, device or URL).

use std::path::{Path, PathBuf};

use super::kind::DatasourceKind;
use crate::http::HttpError;

#[derive(Debug, thiserror::Error)]
pub enum DatasourceError {
    #[error("reading {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: larger than the limit of {limit} bytes")]
    TooLarge { path: PathBuf, limit: usize },
    #[error("mounting {device} ({fstype}) read-only on {target}: {source}")]
    Mount {
        device: PathBuf,
        fstype: &'static str,
        target: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("{place}: {message}")]
    Parse { place: String, message: String },
    #[error("{place}: X-Bootstrapd-Signature is not valid base64")]
    Signature { place: String },
    #[error(
        "unknown datasource {name:?} in {origin} (known: nocloud, ec2, openstack, cmdline_url, local_file, none)"
    )]
    UnknownDatasource { name: String, origin: String },
    #[error("datasource {kind} was chosen explicitly, but {what}")]
    Missing { kind: DatasourceKind, what: String },
    #[error(
        "EC2 IMDSv2 session token refused by {url} (status {status}) and imds_v1_fallback is off"
    )]
    ImdsTokenRefused { url: String, status: u16 },
    #[error("{kind}: no instance id (no metadata id, /etc/machine-id is empty or missing)")]
    NoInstanceId { kind: DatasourceKind },
    #[error("{place}: {message}")]
    Invalid { place: String, message: String },
}

pub(super) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DatasourceError + '_ {
    move |source| DatasourceError::Io {
        path: path.to_path_buf(),
        source,
    }
}
