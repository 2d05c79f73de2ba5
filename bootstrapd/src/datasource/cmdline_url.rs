//! `bootstrapd.url=URL` on the kernel command line: PXE and edge installs where the boot
//! loader config is the only thing the operator controls.

use super::tree::SIGNATURE_HEADER;
use super::{
    DatasourceError, DatasourceKind, Fetched, decode_signature_header, fallback_instance_id,
    http_client,
};
use crate::config::AgentConfig;
use crate::fsutil::HostRoot;
use crate::http::{Method, Request};

pub(super) async fn fetch(
    url: &str,
    root: &HostRoot,
    cfg: &AgentConfig,
) -> Result<Fetched, DatasourceError> {
    let client = http_client(cfg, false)?;
    let req = Request::get(url)?;
    // A 404 is an error here, not "no userdata": the operator named this exact URL.
    let resp = client.send(&req).await?.error_for_status(&Method::GET)?;
    let signature = match resp.header(SIGNATURE_HEADER) {
        Some(v) => Some(decode_signature_header(v, &resp.url)?),
        None => None,
    };
    Ok(Fetched {
        source: DatasourceKind::CmdlineUrl.to_string(),
        instance_id: fallback_instance_id(root, "cmdline_url")?,
        metadata: serde_json::json!({ "url": resp.url }),
        userdata: resp.body,
        signature,
        hostname: None,
    })
}
