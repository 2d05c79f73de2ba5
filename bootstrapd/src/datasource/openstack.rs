//! OpenStack: the config drive (filesystem labelled `config-2`) or, with DMI evidence and
//! no drive, the metadata service. Both use the same layout below `openstack/latest/`.

use std::path::PathBuf;

use serde::Serialize;

use super::blockdev::{self, LabelledDevice};
use super::error::DatasourceError;
use super::evidence::Dmi;
use super::fetched::{FetchOptions, Fetched, metadata_hostname};
use super::kind::DatasourceKind;
use super::tree::Tree;
use crate::fsutil::HostRoot;
use crate::secret::REDACTED;

const META: &str = "openstack/latest/meta_data.json";
const USER: &str = "openstack/latest/user_data";
const MAX_META: usize = 1 << 20;
/// Keys of meta_data.json that are secrets: the instance's admin password and the seed
/// for the guest's random number generator.
const SECRET_KEYS: [&str; 2] = ["admin_pass", "random_seed"];

/// Where OpenStack's files are: a config drive, or the metadata service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Drive {
    /// A filesystem labelled `config-2`, mounted read-only.
    Device(LabelledDevice),
    /// The metadata service's base URL.
    MetadataService { base: String },
}

pub(super) fn detect(
    devices: &[LabelledDevice],
    dmi: &Dmi,
    metadata: &str,
) -> Vec<(String, Drive)> {
    let drives: Vec<(String, Drive)> = devices
        .iter()
        .filter(|d| d.label.eq_ignore_ascii_case("config-2"))
        .map(|d| {
            let evidence = format!(
                "{} filesystem labelled {:?} on {}",
                d.fstype.name(),
                d.label,
                d.device.display()
            );
            (evidence, Drive::Device(d.clone()))
        })
        .collect();
    if !drives.is_empty() {
        return drives;
    }
    evidence(dmi)
        .map(|e| {
            let base = metadata.to_string();
            (e, Drive::MetadataService { base })
        })
        .into_iter()
        .collect()
}

/// OpenStack identification as cloud-init's `detect_openstack`.
fn evidence(dmi: &Dmi) -> Option<String> {
    let product = dmi.product_name.as_deref().unwrap_or_default();
    if matches!(product, "OpenStack Nova" | "OpenStack Compute") {
        return Some(format!("DMI product_name is {product:?}"));
    }
    if dmi.chassis_asset_tag.as_deref() == Some("OpenStack Nova") {
        return Some("DMI chassis_asset_tag is \"OpenStack Nova\"".into());
    }
    if dmi
        .sys_vendor
        .as_deref()
        .is_some_and(|v| v.contains("OpenStack"))
    {
        return Some("DMI sys_vendor mentions OpenStack".into());
    }
    None
}

impl Drive {
    pub(super) async fn fetch(
        &self,
        root: &HostRoot,
        opts: &FetchOptions,
    ) -> Result<Fetched, DatasourceError> {
        match self {
            Drive::Device(dev) => {
                let mounted = blockdev::Mounted::mount(dev, root)?;
                let r = read(&Tree::Dir(PathBuf::from(mounted.path())), opts).await;
                drop(mounted);
                r
            }
            Drive::MetadataService { base } => {
                let client = opts.client(true)?;
                let tree = Tree::Http {
                    client: &client,
                    base: base.clone(),
                };
                read(&tree, opts).await
            }
        }
    }
}

async fn read(tree: &Tree<'_>, opts: &FetchOptions) -> Result<Fetched, DatasourceError> {
    let place = tree.place(META);
    let meta = tree
        .read(META, MAX_META)
        .await?
        .ok_or_else(|| DatasourceError::Invalid {
            place: place.clone(),
            message: "missing (not an OpenStack config drive or metadata service?)".into(),
        })?;
    let mut metadata: serde_json::Value =
        serde_json::from_slice(&meta.data).map_err(|e| DatasourceError::Parse {
            place: place.clone(),
            message: format!("{}:{}: {e}", e.line(), e.column()),
        })?;
    let Some(obj) = metadata.as_object_mut() else {
        return Err(DatasourceError::Parse {
            place,
            message: "not a JSON object".into(),
        });
    };
    for k in SECRET_KEYS {
        if let Some(v) = obj.get_mut(k) {
            *v = serde_json::Value::String(REDACTED.into());
        }
    }
    let field = |k: &str| {
        metadata
            .get(k)
            .and_then(|v| v.as_str())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let instance_id = field("uuid").ok_or_else(|| DatasourceError::Invalid {
        place: place.clone(),
        message: "no \"uuid\"".into(),
    })?;
    let key = if field("hostname").is_some() {
        "hostname"
    } else {
        "name"
    };
    let hostname = metadata_hostname(field(key), &place, key)?;
    let (userdata, signature) = tree
        .read_signed(USER, opts.max_userdata_bytes)
        .await?
        .unwrap_or_default();
    Ok(Fetched {
        source: DatasourceKind::Openstack.into(),
        userdata,
        signature,
        metadata,
        instance_id,
        hostname,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasource::fetched::test_fetch_options;

    #[tokio::test]
    async fn config_drive_tree_redacts_secrets() {
        let d = tempfile::tempdir().unwrap();
        let latest = d.path().join("openstack/latest");
        std::fs::create_dir_all(&latest).unwrap();
        std::fs::write(
            latest.join("meta_data.json"),
            r#"{"uuid":"8e1a-uuid","hostname":"node-1.novalocal","admin_pass":"hunter2","random_seed":"c2VlZA=="}"#,
        )
        .unwrap();
        std::fs::write(latest.join("user_data"), "#cloud-config\n").unwrap();
        std::fs::write(latest.join("user_data.sig"), "sig").unwrap();
        let f = read(&Tree::Dir(d.path().into()), &test_fetch_options())
            .await
            .unwrap();
        assert_eq!(f.instance_id, "8e1a-uuid");
        assert_eq!(f.hostname.as_deref(), Some("node-1.novalocal"));
        assert_eq!(f.signature.as_deref(), Some(&b"sig"[..]));
        let text = f.metadata.to_string();
        assert!(
            !text.contains("hunter2") && !text.contains("c2VlZA=="),
            "{text}"
        );
    }

    #[tokio::test]
    async fn config_drive_without_user_data_or_uuid() {
        let d = tempfile::tempdir().unwrap();
        let latest = d.path().join("openstack/latest");
        std::fs::create_dir_all(&latest).unwrap();
        std::fs::write(latest.join("meta_data.json"), r#"{"uuid":"u1"}"#).unwrap();
        let f = read(&Tree::Dir(d.path().into()), &test_fetch_options())
            .await
            .unwrap();
        assert!(f.userdata.is_empty() && f.signature.is_none());
        std::fs::write(latest.join("meta_data.json"), r#"{"name":"x"}"#).unwrap();
        let e = read(&Tree::Dir(d.path().into()), &test_fetch_options())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("meta_data.json") && e.contains("uuid"), "{e}");
    }

    #[tokio::test]
    async fn config_drive_hostname_must_be_a_node_name() {
        let d = tempfile::tempdir().unwrap();
        let latest = d.path().join("openstack/latest");
        std::fs::create_dir_all(&latest).unwrap();
        std::fs::write(
            latest.join("meta_data.json"),
            r#"{"uuid":"u1","hostname":"Evil Node/../../x"}"#,
        )
        .unwrap();
        let e = read(&Tree::Dir(d.path().into()), &test_fetch_options())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("meta_data.json: `hostname`: `evil node/../../x` is not a valid node name"),
            "{e}"
        );
    }

    #[test]
    fn openstack_dmi_evidence() {
        let d = Dmi {
            product_name: Some("OpenStack Nova".into()),
            ..Dmi::default()
        };
        assert!(evidence(&d).is_some());
        assert!(evidence(&Dmi::default()).is_none());
    }
}
