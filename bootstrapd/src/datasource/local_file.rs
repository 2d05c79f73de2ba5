//! `/etc/bootstrapd/userdata.yaml` baked into the image: the last resort, for images built
//! for one purpose.

use std::path::Path;

use super::{
    DatasourceError, DatasourceKind, Fetched, MAX_SIGNATURE_BYTES, fallback_instance_id,
    read_limited,
};
use crate::config::AgentConfig;
use crate::fsutil::HostRoot;

pub(super) fn fetch(
    path: &Path,
    root: &HostRoot,
    cfg: &AgentConfig,
) -> Result<Fetched, DatasourceError> {
    let userdata =
        read_limited(path, cfg.max_userdata_bytes)?.ok_or_else(|| DatasourceError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })?;
    let mut sig_name = path.as_os_str().to_owned();
    sig_name.push(".sig");
    let signature = read_limited(Path::new(&sig_name), MAX_SIGNATURE_BYTES)?;
    Ok(Fetched {
        source: DatasourceKind::LocalFile.to_string(),
        instance_id: fallback_instance_id(root, "local_file")?,
        metadata: serde_json::json!({ "path": path.display().to_string() }),
        userdata,
        signature,
        hostname: None,
    })
}
