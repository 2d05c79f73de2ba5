//! `bootstrapd.url=URL` on the kernel command line: PXE and edge installs where the boot
//! loader config is the only thing the operator controls.

use serde::Serialize;

use super::cmdline::KernelCmdline;
use super::error::DatasourceError;
use super::fetched::{FetchOptions, Fetched, decode_signature_header, fallback_instance_id};
use super::kind::DatasourceKind;
use super::tree::SIGNATURE_HEADER;
use crate::fsutil::HostRoot;
use crate::http::{Method, Request};

/// The userdata URL itself, as the kernel command line gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename = "url")]
pub struct KernelUrl {
    pub url: String,
}

pub(super) fn detect(cmdline: &KernelCmdline) -> Option<(String, KernelUrl)> {
    let url = cmdline.get("bootstrapd.url")?.to_string();
    Some((
        "bootstrapd.url= on the kernel command line".into(),
        KernelUrl { url },
    ))
}

impl KernelUrl {
    pub(super) async fn fetch(
        &self,
        root: &HostRoot,
        opts: &FetchOptions,
    ) -> Result<Fetched, DatasourceError> {
        let client = opts.client(false)?;
        let req = Request::get(&self.url)?;
        // A 404 is an error here, not "no userdata": the operator named this exact URL.
        let resp = client.send(&req).await?.error_for_status(&Method::GET)?;
        let signature = match resp.header(SIGNATURE_HEADER) {
            Some(v) => Some(decode_signature_header(v, &resp.url)?),
            None => None,
        };
        Ok(Fetched {
            source: DatasourceKind::CmdlineUrl.into(),
            instance_id: fallback_instance_id(root, DatasourceKind::CmdlineUrl)?,
            metadata: serde_json::json!({ "url": resp.url }),
            userdata: resp.body,
            signature,
            hostname: None,
        })
    }
}
