//! NoCloud and OpenStack lay their data out as files (`meta-data`, `user-data`,
//! `openstack/latest/user_data`), whether on a seed directory, a mounted drive or an HTTP
//! server. One reader for all three keeps the sources identical whatever the transport.

use std::path::PathBuf;

use url::Url;

use super::{DatasourceError, MAX_SIGNATURE_BYTES, decode_signature_header, read_limited};
use crate::http::{HttpClient, HttpError, Request, StatusCode, redact_url};

pub const SIGNATURE_HEADER: &str = "X-Bootstrapd-Signature";

pub enum Tree<'a> {
    Dir(PathBuf),
    Http {
        client: &'a HttpClient,
        /// Base URL; `%s` in it is replaced by the file name (cloud-init's convention),
        /// otherwise the name is appended.
        base: String,
    },
}

/// A file's content and, over HTTP, the signature its response carried.
pub struct Blob {
    pub data: Vec<u8>,
    pub header_signature: Option<Vec<u8>>,
}

impl Tree<'_> {
    /// Human-readable name of a file in this tree, for errors.
    pub fn place(&self, rel: &str) -> String {
        match self {
            Tree::Dir(d) => d.join(rel).display().to_string(),
            Tree::Http { base, .. } => match Url::parse(&join_url(base, rel)) {
                Ok(u) => redact_url(&u),
                Err(_) => rel.to_string(),
            },
        }
    }

    /// Reads `rel`; `None` when it does not exist (missing file, HTTP 404).
    pub async fn read(&self, rel: &str, limit: usize) -> Result<Option<Blob>, DatasourceError> {
        match self {
            Tree::Dir(d) => Ok(read_limited(&d.join(rel), limit)?.map(|data| Blob {
                data,
                header_signature: None,
            })),
            Tree::Http { client, base } => {
                let url = join_url(base, rel);
                let req = Request::get(&url)?;
                let resp = client.send(&req).await?;
                if resp.status == StatusCode::NOT_FOUND {
                    return Ok(None);
                }
                let resp = resp.error_for_status(req.method())?;
                let header_signature = match resp.header(SIGNATURE_HEADER) {
                    Some(v) => Some(decode_signature_header(v, &resp.url)?),
                    None => None,
                };
                if resp.body.len() > limit {
                    return Err(HttpError::BodyTooLarge {
                        method: req.method().clone(),
                        url: resp.url,
                        limit,
                    }
                    .into());
                }
                Ok(Some(Blob {
                    data: resp.body,
                    header_signature,
                }))
            }
        }
    }

    /// The userdata at `rel` with its signature: the response header, else the detached
    /// file `rel` + `.sig` next to it.
    pub async fn read_signed(
        &self,
        rel: &str,
        limit: usize,
    ) -> Result<Option<(Vec<u8>, Option<Vec<u8>>)>, DatasourceError> {
        let Some(blob) = self.read(rel, limit).await? else {
            return Ok(None);
        };
        let sig = match blob.header_signature {
            Some(s) => Some(s),
            None => self
                .read(&format!("{rel}.sig"), MAX_SIGNATURE_BYTES)
                .await?
                .map(|b| b.data),
        };
        Ok(Some((blob.data, sig)))
    }
}

fn join_url(base: &str, rel: &str) -> String {
    if base.contains("%s") {
        base.replace("%s", rel)
    } else if base.ends_with('/') {
        format!("{base}{rel}")
    } else {
        format!("{base}/{rel}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_joining() {
        assert_eq!(join_url("http://h/p/", "meta-data"), "http://h/p/meta-data");
        assert_eq!(join_url("http://h/p", "meta-data"), "http://h/p/meta-data");
        assert_eq!(
            join_url("http://h/seed?f=%s", "user-data"),
            "http://h/seed?f=user-data"
        );
    }
}
