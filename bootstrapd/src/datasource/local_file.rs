//! `/etc/bootstrapd/userdata.yaml` baked into the image: the last resort, for images built
//! for one purpose.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::error::DatasourceError;
use super::fetched::{
    FetchOptions, Fetched, MAX_SIGNATURE_BYTES, fallback_instance_id, read_limited,
};
use super::kind::DatasourceKind;
use crate::fsutil::HostRoot;

pub(super) const PATH: &str = "/etc/bootstrapd/userdata.yaml";

/// The baked-in userdata file (below the host root).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename = "file")]
pub struct BakedFile {
    pub path: PathBuf,
}

pub(super) fn detect(root: &HostRoot) -> Option<(String, BakedFile)> {
    let path = root.path(PATH);
    path.is_file()
        .then(|| (format!("{PATH} exists"), BakedFile { path }))
}

impl BakedFile {
    pub(super) fn fetch(
        &self,
        root: &HostRoot,
        opts: &FetchOptions,
    ) -> Result<Fetched, DatasourceError> {
        let path = &self.path;
        let userdata =
            read_limited(path, opts.max_userdata_bytes)?.ok_or_else(|| DatasourceError::Io {
                path: path.to_path_buf(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })?;
        let mut sig_name = path.as_os_str().to_owned();
        sig_name.push(".sig");
        let signature = read_limited(Path::new(&sig_name), MAX_SIGNATURE_BYTES)?;
        Ok(Fetched {
            source: DatasourceKind::LocalFile.into(),
            instance_id: fallback_instance_id(root, DatasourceKind::LocalFile)?,
            metadata: serde_json::json!({ "path": path.display().to_string() }),
            userdata,
            signature,
            hostname: None,
        })
    }
}
