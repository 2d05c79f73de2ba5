//! Amazon EC2 instance metadata service, IMDSv2 (session tokens), as afterburn's `aws`
//! provider. IMDSv1 is only used when `imds_v1_fallback` allows it. Credentials
//! (`iam/security-credentials`) are never requested.

use serde::Serialize;

use super::error::DatasourceError;
use super::evidence::Dmi;
use super::fetched::{FetchOptions, Fetched, decode_signature_header, metadata_hostname};
use super::kind::DatasourceKind;
use super::tree::SIGNATURE_HEADER;
use crate::http::{HttpClient, HttpError, Request, Response, StatusCode};
use crate::secret::Secret;

const TOKEN_PATH: &str = "latest/api/token";
const TOKEN_TTL_HEADER: &str = "X-aws-ec2-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "X-aws-ec2-metadata-token";
/// Six hours, AWS's maximum; bootstrapd needs seconds, but a short TTL only adds refreshes.
const TOKEN_TTL: &str = "21600";
/// Metadata copied into [`Fetched::metadata`]; all harmless.
const META_KEYS: [&str; 5] = [
    "instance-id",
    "local-hostname",
    "instance-type",
    "placement/availability-zone",
    "local-ipv4",
];

/// The instance metadata service: where it answers and whether IMDSv1 may be used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename = "metadata_service")]
pub struct Imds {
    pub base: String,
    /// Allow IMDSv1 (no session token) when the token endpoint refuses.
    pub v1_fallback: bool,
}

/// A conversation with IMDS: the client and the session token.
struct Session {
    client: HttpClient,
    base: String,
    /// `None` in IMDSv1 mode.
    token: Option<Secret>,
    v1_fallback: bool,
}

pub(super) fn detect(dmi: &Dmi, explicit: bool, imds: &Imds) -> Option<(String, Imds)> {
    // An explicit choice needs no evidence: the operator knows better than DMI (and some
    // EC2-compatible clouds have none).
    let evidence = evidence(dmi).or_else(|| explicit.then(|| "chosen explicitly".to_string()))?;
    Some((evidence, imds.clone()))
}

/// EC2 identification as cloud-init's `identify_aws`: Nitro instances say "Amazon EC2" in
/// DMI, Xen instances have a UUID starting with "ec2".
fn evidence(dmi: &Dmi) -> Option<String> {
    for (name, v) in [
        ("sys_vendor", &dmi.sys_vendor),
        ("bios_vendor", &dmi.bios_vendor),
    ] {
        if v.as_deref() == Some("Amazon EC2") {
            return Some(format!("DMI {name} is \"Amazon EC2\""));
        }
    }
    for (name, v) in [
        ("product_uuid", &dmi.product_uuid),
        ("product_serial", &dmi.product_serial),
        ("/sys/hypervisor/uuid", &dmi.hypervisor_uuid),
    ] {
        if v.as_deref()
            .is_some_and(|u| u.to_ascii_lowercase().starts_with("ec2"))
        {
            return Some(format!("{name} starts with \"ec2\""));
        }
    }
    None
}

impl Imds {
    pub(super) async fn fetch(&self, opts: &FetchOptions) -> Result<Fetched, DatasourceError> {
        let mut session = Session {
            client: opts.client(true)?,
            base: self.base.trim_end_matches('/').to_string(),
            token: None,
            v1_fallback: self.v1_fallback,
        };
        session.fetch().await
    }
}

impl Session {
    async fn fetch(&mut self) -> Result<Fetched, DatasourceError> {
        self.refresh_token().await?;

        let mut metadata = serde_json::Map::new();
        for key in META_KEYS {
            if let Some(v) = self.get_text(&format!("latest/meta-data/{key}")).await? {
                metadata.insert(key.to_string(), serde_json::Value::String(v));
            }
        }
        let instance_id = metadata
            .get("instance-id")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .ok_or_else(|| DatasourceError::Invalid {
                place: self.url("latest/meta-data/instance-id"),
                message: "not found".into(),
            })?;
        let hostname = metadata_hostname(
            metadata
                .get("local-hostname")
                .and_then(|v| v.as_str())
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty()),
            &self.url("latest/meta-data/local-hostname"),
            "local-hostname",
        )?;

        let (userdata, signature) = match self.get("latest/user-data").await? {
            // No user-data configured for this instance.
            None => (Vec::new(), None),
            Some(resp) => {
                let sig = match resp.header(SIGNATURE_HEADER) {
                    Some(v) => Some(decode_signature_header(v, &resp.url)?),
                    None => None,
                };
                (resp.body, sig)
            }
        };
        Ok(Fetched {
            source: DatasourceKind::Ec2.into(),
            userdata,
            signature,
            metadata: serde_json::Value::Object(metadata),
            instance_id,
            hostname,
        })
    }
}

impl Session {
    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    async fn refresh_token(&mut self) -> Result<(), DatasourceError> {
        let url = self.url(TOKEN_PATH);
        let req = Request::put(&url)?.header(TOKEN_TTL_HEADER, TOKEN_TTL);
        let resp = self.client.send(&req).await?;
        if resp.status.is_success() {
            let token = String::from_utf8(resp.body)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .ok_or_else(|| DatasourceError::Invalid {
                    place: resp.url.clone(),
                    message: "empty or non-UTF-8 IMDSv2 token".into(),
                })?;
            self.token = Some(Secret::new(token));
            tracing::debug!(%url, "IMDSv2 session token obtained");
            return Ok(());
        }
        if self.v1_fallback {
            tracing::warn!(%url, status = resp.status.as_u16(), "IMDSv2 token refused, falling back to IMDSv1 (imds_v1_fallback = true)");
            self.token = None;
            return Ok(());
        }
        Err(DatasourceError::ImdsTokenRefused {
            url: resp.url,
            status: resp.status.as_u16(),
        })
    }

    fn request(&self, path: &str) -> Result<Request, HttpError> {
        let req = Request::get(&self.url(path))?;
        Ok(match &self.token {
            Some(t) => req.secret_header(TOKEN_HEADER, t),
            None => req,
        })
    }

    /// GET with one token refresh on 401 (the token expired or IMDS restarted). `None` on 404.
    async fn get(&mut self, path: &str) -> Result<Option<Response>, DatasourceError> {
        let mut resp = self.client.send(&self.request(path)?).await?;
        if resp.status == StatusCode::UNAUTHORIZED && self.token.is_some() {
            tracing::debug!(url = %resp.url, "IMDS answered 401, refreshing the session token");
            self.refresh_token().await?;
            resp = self.client.send(&self.request(path)?).await?;
        }
        if resp.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(Some(resp.error_for_status(&reqwest::Method::GET)?))
    }

    async fn get_text(&mut self, path: &str) -> Result<Option<String>, DatasourceError> {
        let Some(resp) = self.get(path).await? else {
            return Ok(None);
        };
        let text = String::from_utf8(resp.body).map_err(|_| DatasourceError::Invalid {
            place: resp.url.clone(),
            message: "not UTF-8".into(),
        })?;
        Ok(Some(text.trim().to_string()).filter(|s| !s.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec2_dmi_evidence() {
        let mut d = Dmi::default();
        assert!(evidence(&d).is_none());
        d.product_uuid = Some("EC2E1916-9099-7CAF-FD21-012345ABCDEF".into());
        assert!(evidence(&d).is_some());
        let d = Dmi {
            sys_vendor: Some("Amazon EC2".into()),
            ..Dmi::default()
        };
        assert!(evidence(&d).unwrap().contains("sys_vendor"));
        let d = Dmi {
            sys_vendor: Some("QEMU".into()),
            product_uuid: Some("4c4c4544-0000".into()),
            ..Dmi::default()
        };
        assert!(evidence(&d).is_none());
    }
}
