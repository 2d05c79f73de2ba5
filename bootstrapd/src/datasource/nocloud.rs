//! cloud-init's NoCloud: `meta-data` (YAML) and `user-data` from a seed directory, a
//! filesystem labelled `cidata`, or a URL (`ds=nocloud;s=http://...` on the kernel command
//! line or in the DMI serial number; NoCloud-net).

use std::path::PathBuf;

use serde::Serialize;

use super::blockdev::{self, LabelledDevice};
use super::cmdline::{KernelCmdline, NocloudParam, find_ds_in_serial, parse_nocloud_ds};
use super::error::DatasourceError;
use super::evidence::Dmi;
use super::fetched::{FetchOptions, Fetched, fallback_instance_id, metadata_hostname};
use super::kind::DatasourceKind;
use super::tree::Tree;
use crate::fsutil::HostRoot;

const SEED_DIRS: [&str; 2] = [
    "/var/lib/cloud/seed/nocloud",
    "/var/lib/cloud/seed/nocloud-net",
];
const MAX_META_DATA: usize = 1 << 20;

/// Where a NoCloud seed is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Seed {
    /// A directory holding `meta-data` / `user-data` (seed directory, `s=file://`).
    #[serde(rename = "seed_dir")]
    Dir {
        path: PathBuf,
        #[serde(flatten)]
        overrides: SeedOverrides,
    },
    /// NoCloud-net seed URL (ends with `/`, or contains `%s` for the file name).
    #[serde(rename = "seed_url")]
    Url {
        url: String,
        #[serde(flatten)]
        overrides: SeedOverrides,
    },
    /// A filesystem labelled `cidata`, mounted read-only.
    Device(LabelledDevice),
}

/// NoCloud `i=` / `h=` from the kernel command line or DMI serial, which override
/// meta-data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SeedOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
}

pub(super) fn detect(
    root: &HostRoot,
    cmdline: &KernelCmdline,
    dmi: &Dmi,
    devices: &[LabelledDevice],
) -> Vec<(String, Seed)> {
    let cand = |evidence: String, seed: Seed| (evidence, seed);
    let mut out = Vec::new();

    let from_cmdline = cmdline.get("ds").and_then(parse_nocloud_ds);
    let from_serial = dmi.product_serial.as_deref().and_then(find_ds_in_serial);
    let param: Option<(NocloudParam, &str)> = from_cmdline
        .map(|p| (p, "kernel command line"))
        .or(from_serial.map(|p| (p, "DMI product_serial")));
    let overrides = param
        .as_ref()
        .map(|(p, _)| SeedOverrides {
            instance_id: p.instance_id.clone(),
            hostname: p.hostname.clone(),
        })
        .unwrap_or_default();

    if let Some((p, origin)) = &param
        && let Some(seed) = &p.seedfrom
    {
        if let Some(path) = seed.strip_prefix("file://") {
            out.push(cand(
                format!("ds=nocloud seedfrom {seed} on the {origin}"),
                Seed::Dir {
                    path: root.path(path),
                    overrides: overrides.clone(),
                },
            ));
        } else {
            out.push(cand(
                format!("ds=nocloud with a seed URL on the {origin}"),
                Seed::Url {
                    url: seed.clone(),
                    overrides: overrides.clone(),
                },
            ));
        }
    }

    for dir in SEED_DIRS {
        let p = root.path(dir);
        if p.join("user-data").is_file() || p.join("meta-data").is_file() {
            out.push(cand(
                format!("seed directory {dir}"),
                Seed::Dir {
                    path: p,
                    overrides: overrides.clone(),
                },
            ));
        }
    }

    for d in devices
        .iter()
        .filter(|d| d.label.eq_ignore_ascii_case("cidata"))
    {
        out.push(cand(
            format!(
                "{} filesystem labelled {:?} on {}",
                d.fstype.name(),
                d.label,
                d.device.display()
            ),
            Seed::Device(d.clone()),
        ));
    }
    out
}

impl Seed {
    /// `None`: a seed directory without meta-data and user-data.
    pub(super) async fn fetch(
        &self,
        root: &HostRoot,
        opts: &FetchOptions,
    ) -> Result<Option<Fetched>, DatasourceError> {
        match self {
            Seed::Dir { path, overrides } => {
                read_seed(&Tree::Dir(path.clone()), overrides, root, opts).await
            }
            Seed::Url { url, overrides } => {
                let client = opts.client(false)?;
                let tree = Tree::Http {
                    client: &client,
                    base: url.clone(),
                };
                match read_seed(&tree, overrides, root, opts).await? {
                    Some(f) => Ok(Some(f)),
                    // The operator pointed us at this URL: an empty seed is a mistake to report.
                    None => Err(DatasourceError::Invalid {
                        place: tree.place(""),
                        message: "neither meta-data nor user-data exists below the seed URL".into(),
                    }),
                }
            }
            Seed::Device(dev) => {
                let mounted = blockdev::Mounted::mount(dev, root)?;
                let tree = Tree::Dir(PathBuf::from(mounted.path()));
                let r = read_seed(&tree, &SeedOverrides::default(), root, opts).await;
                drop(mounted);
                r
            }
        }
    }
}

async fn read_seed(
    tree: &Tree<'_>,
    overrides: &SeedOverrides,
    root: &HostRoot,
    opts: &FetchOptions,
) -> Result<Option<Fetched>, DatasourceError> {
    let meta = tree.read("meta-data", MAX_META_DATA).await?;
    let user = tree
        .read_signed("user-data", opts.max_userdata_bytes)
        .await?;
    if meta.is_none() && user.is_none() {
        return Ok(None);
    }
    let metadata = match &meta {
        Some(b) => parse_meta_data(&b.data, &tree.place("meta-data"))?,
        None => serde_json::Value::Object(Default::default()),
    };
    let str_field = |k: &str| {
        metadata
            .get(k)
            .and_then(|v| match v {
                serde_json::Value::String(s) => Some(s.trim().to_string()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .filter(|s| !s.is_empty())
    };
    let instance_id = match overrides
        .instance_id
        .clone()
        .or_else(|| str_field("instance-id"))
    {
        Some(id) => id,
        None => fallback_instance_id(root, DatasourceKind::Nocloud)?,
    };
    let hostname = match &overrides.hostname {
        Some(h) => metadata_hostname(Some(h.clone()), "ds=nocloud", "h")?,
        None => {
            let key = ["local-hostname", "hostname"]
                .into_iter()
                .find(|k| str_field(k).is_some())
                .unwrap_or("local-hostname");
            metadata_hostname(str_field(key), &tree.place("meta-data"), key)?
        }
    };
    let (userdata, signature) = user.unwrap_or_default();
    Ok(Some(Fetched {
        source: DatasourceKind::Nocloud.into(),
        userdata,
        signature,
        metadata,
        instance_id,
        hostname,
    }))
}

/// meta-data is YAML (JSON is YAML too); an empty file is an empty mapping.
pub(super) fn parse_meta_data(
    data: &[u8],
    place: &str,
) -> Result<serde_json::Value, DatasourceError> {
    let text = std::str::from_utf8(data).map_err(|e| DatasourceError::Parse {
        place: place.to_string(),
        message: format!("not UTF-8: {e}"),
    })?;
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Object(Default::default()));
    }
    let v: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|e| DatasourceError::Parse {
            place: place.to_string(),
            message: first_line(&e.to_string()),
        })?;
    match v {
        serde_json::Value::Object(_) => Ok(v),
        serde_json::Value::Null => Ok(serde_json::Value::Object(Default::default())),
        _ => Err(DatasourceError::Parse {
            place: place.to_string(),
            message: "meta-data must be a mapping".into(),
        }),
    }
}

/// serde-saphyr renders a multi-line source snippet after the `line N column M: message`
/// line; the journal gets the first line only (the snippet would also echo the file).
fn first_line(msg: &str) -> String {
    let line = msg.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasource::fetched::test_fetch_options;

    #[test]
    fn meta_data_yaml_and_json() {
        let v = parse_meta_data(b"instance-id: iid-1\nlocal-hostname: n1\n", "m").unwrap();
        assert_eq!(v["instance-id"], "iid-1");
        let v = parse_meta_data(br#"{"instance-id": "iid-2"}"#, "m").unwrap();
        assert_eq!(v["instance-id"], "iid-2");
        assert!(
            parse_meta_data(b"", "m")
                .unwrap()
                .as_object()
                .unwrap()
                .is_empty()
        );
        let e = parse_meta_data(b"a: [1,\n", "seed/meta-data")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("seed/meta-data: line 1 column 4"), "{e}");
        assert!(!e.contains('\n'), "{e}");
        assert!(parse_meta_data(b"- a\n- b\n", "m").is_err());
    }

    #[tokio::test]
    async fn seed_dir_with_signature_and_overrides() {
        let d = tempfile::tempdir().unwrap();
        let root = HostRoot::new(Some(d.path().into()));
        let seed = root.path(SEED_DIRS[0]);
        std::fs::create_dir_all(&seed).unwrap();
        std::fs::write(
            seed.join("meta-data"),
            "instance-id: iid-abc\nlocal-hostname: n1\n",
        )
        .unwrap();
        std::fs::write(seed.join("user-data"), "#cloud-config\n").unwrap();
        std::fs::write(seed.join("user-data.sig"), [1u8, 2, 3]).unwrap();
        let cands = detect(&root, &KernelCmdline::default(), &Dmi::default(), &[]);
        assert_eq!(cands.len(), 1);
        let opts = test_fetch_options();
        let f = cands[0].1.fetch(&root, &opts).await.unwrap().unwrap();
        assert_eq!(f.instance_id, "iid-abc");
        assert_eq!(f.hostname.as_deref(), Some("n1"));
        assert_eq!(f.userdata, b"#cloud-config\n");
        assert_eq!(f.signature.as_deref(), Some(&[1u8, 2, 3][..]));

        let cmd = KernelCmdline::parse("ds=nocloud;i=from-cmdline;h=host2");
        let cands = detect(&root, &cmd, &Dmi::default(), &[]);
        let f = cands[0].1.fetch(&root, &opts).await.unwrap().unwrap();
        assert_eq!(f.instance_id, "from-cmdline");
        assert_eq!(f.hostname.as_deref(), Some("host2"));
    }

    #[tokio::test]
    async fn seed_without_instance_id_uses_machine_id() {
        let d = tempfile::tempdir().unwrap();
        let root = HostRoot::new(Some(d.path().into()));
        let seed = root.path(SEED_DIRS[1]);
        std::fs::create_dir_all(&seed).unwrap();
        std::fs::write(seed.join("user-data"), "x").unwrap();
        std::fs::create_dir_all(root.path("/etc")).unwrap();
        std::fs::write(root.path("/etc/machine-id"), "0123abcd\n").unwrap();
        let loc = Seed::Dir {
            path: seed,
            overrides: SeedOverrides::default(),
        };
        let f = loc
            .fetch(&root, &test_fetch_options())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(f.instance_id, "0123abcd");
        assert!(f.signature.is_none());
    }

    #[tokio::test]
    async fn metadata_hostnames_are_node_names_or_refused() {
        let d = tempfile::tempdir().unwrap();
        let root = HostRoot::new(Some(d.path().into()));
        let seed = root.path(SEED_DIRS[0]);
        std::fs::create_dir_all(&seed).unwrap();
        std::fs::write(seed.join("user-data"), "#cloud-config\n").unwrap();
        let opts = test_fetch_options();
        let fetch_with = |meta: &'static str, cmdline: &'static str| {
            let (root, seed, opts) = (&root, seed.clone(), &opts);
            async move {
                std::fs::write(seed.join("meta-data"), meta).unwrap();
                let cands = detect(root, &KernelCmdline::parse(cmdline), &Dmi::default(), &[]);
                cands[0].1.fetch(root, opts).await
            }
        };
        // Case and a final dot are DNS spelling, not a different name.
        let f = fetch_with("instance-id: i\nlocal-hostname: Node-1.Example.com.\n", "")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(f.hostname.as_deref(), Some("node-1.example.com"));
        // What reached the agent's --node-name before: refused, naming the file and key.
        let e = fetch_with(
            "instance-id: i\nlocal-hostname: \"Evil Node/../../x\"\n",
            "",
        )
        .await
        .unwrap_err()
        .to_string();
        let place = seed.join("meta-data").display().to_string();
        assert!(
            e.starts_with(&format!("{place}: `local-hostname`: ")),
            "{e}"
        );
        assert!(e.contains("is not a valid node name"), "{e}");
        let e = fetch_with("instance-id: i\nhostname: a_b\n", "")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`hostname`: `a_b` is not a valid node name"),
            "{e}"
        );
        let e = fetch_with("instance-id: i\n", "ds=nocloud;h=x/../y")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("ds=nocloud: `h`: "), "{e}");
    }
}
