//! Where the userdata comes from: one module per source, one entry point ([`fetch`]).
//!
//! Order (as in afterburn / bottlerocket early-boot-config, and cloud-init's NoCloud before
//! network sources):
//! 1. An explicit choice wins: `bootstrapd.datasource=NAME` on the kernel command line, else
//!    `datasource` in bootstrapd.toml. Only that source is tried.
//! 2. Otherwise sources are detected from LOCAL evidence only (kernel command line, seed
//!    directories, filesystem labels, DMI strings, files), in this order: `cmdline_url`,
//!    `nocloud`, `openstack`, `ec2`, `local_file`. A metadata service is never probed
//!    without evidence, so a machine with no datasource is answered in milliseconds.
//!
//! [`fetch`] tries the candidates in order. The first with non-empty userdata wins. A source
//! that exists but carries no userdata (EC2 without user-data) does not end the search, but
//! is returned when nothing later has userdata either, so its instance id is not lost. An
//! error ends the search: a source with evidence that fails is not papered over by a lower
//! priority fallback (the baked-in file), which would bootstrap the node with the wrong
//! configuration.

mod blockdev;
pub mod cmdline;
mod cmdline_url;
mod ec2;
mod local_file;
mod nocloud;
mod openstack;
mod tree;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::AgentConfig;
use crate::fsutil::HostRoot;
use crate::http::{HttpClient, HttpError, TlsTrust};

pub use blockdev::{FsType, LabelledDevice, probe_label, probe_path};
pub use cmdline::KernelCmdline;

/// The datasources bootstrapd knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatasourceKind {
    Nocloud,
    Ec2,
    Openstack,
    CmdlineUrl,
    LocalFile,
    /// Explicitly none: never look for userdata.
    None,
}

impl DatasourceKind {
    pub const ALL: [DatasourceKind; 6] = [
        DatasourceKind::Nocloud,
        DatasourceKind::Ec2,
        DatasourceKind::Openstack,
        DatasourceKind::CmdlineUrl,
        DatasourceKind::LocalFile,
        DatasourceKind::None,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DatasourceKind::Nocloud => "nocloud",
            DatasourceKind::Ec2 => "ec2",
            DatasourceKind::Openstack => "openstack",
            DatasourceKind::CmdlineUrl => "cmdline_url",
            DatasourceKind::LocalFile => "local_file",
            DatasourceKind::None => "none",
        }
    }

    /// Parses a name as written on the kernel command line or in bootstrapd.toml
    /// (`nocloud-net` is accepted as an alias of `nocloud`, `-` for `_`).
    pub fn from_name(name: &str) -> Option<Self> {
        let n = name.trim().to_ascii_lowercase().replace('-', "_");
        match n.as_str() {
            "nocloud_net" | "nocloudnet" => Some(DatasourceKind::Nocloud),
            "configdrive" | "config_drive" => Some(DatasourceKind::Openstack),
            _ => Self::ALL.into_iter().find(|k| k.name() == n),
        }
    }
}

impl std::fmt::Display for DatasourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a candidate's data would be read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Location {
    /// A directory holding `meta-data` / `user-data` (NoCloud seed dir, `s=file://`).
    SeedDir {
        path: PathBuf,
        #[serde(flatten)]
        overrides: SeedOverrides,
    },
    /// A labelled filesystem to mount read-only (NoCloud `cidata`, OpenStack `config-2`).
    Device(LabelledDevice),
    /// NoCloud-net seed URL (ends with `/`, or contains `%s` for the file name).
    SeedUrl {
        url: String,
        #[serde(flatten)]
        overrides: SeedOverrides,
    },
    /// A metadata service base URL (EC2 IMDS, OpenStack metadata service).
    MetadataService { base: String },
    /// The userdata URL itself (`bootstrapd.url=`).
    Url { url: String },
    /// The baked-in userdata file.
    File { path: PathBuf },
    /// Chosen explicitly but no evidence found: fetching reports what is missing.
    Missing { what: String },
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

/// A datasource that local evidence points at (for `bootstrapd query` and diagnostics).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    pub kind: DatasourceKind,
    /// Chosen on the kernel command line or in bootstrapd.toml rather than detected.
    pub explicit: bool,
    /// Why this source was considered, for humans.
    pub evidence: String,
    pub location: Location,
}

/// What a datasource delivered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fetched {
    /// The datasource name (`nocloud`, `ec2`, ...).
    pub source: String,
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
    #[error("{source_name}: no instance id (no metadata id, /etc/machine-id is empty or missing)")]
    NoInstanceId { source_name: String },
    #[error("{place}: {message}")]
    Invalid { place: String, message: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DatasourceError + '_ {
    move |source| DatasourceError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Everything detection looks at, read once.
struct Evidence {
    cmdline: KernelCmdline,
    dmi: Dmi,
    devices: Vec<LabelledDevice>,
}

#[derive(Debug, Default)]
struct Dmi {
    sys_vendor: Option<String>,
    bios_vendor: Option<String>,
    product_name: Option<String>,
    product_uuid: Option<String>,
    product_serial: Option<String>,
    chassis_asset_tag: Option<String>,
    hypervisor_uuid: Option<String>,
}

impl Dmi {
    fn read(root: &HostRoot) -> Self {
        let f = |p: &str| {
            std::fs::read_to_string(root.path(p))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        Dmi {
            sys_vendor: f("/sys/class/dmi/id/sys_vendor"),
            bios_vendor: f("/sys/class/dmi/id/bios_vendor"),
            product_name: f("/sys/class/dmi/id/product_name"),
            product_uuid: f("/sys/class/dmi/id/product_uuid"),
            product_serial: f("/sys/class/dmi/id/product_serial"),
            chassis_asset_tag: f("/sys/class/dmi/id/chassis_asset_tag"),
            hypervisor_uuid: f("/sys/hypervisor/uuid"),
        }
    }

    /// EC2 identification as cloud-init's `identify_aws`: Nitro instances say
    /// "Amazon EC2" in DMI, Xen instances have a UUID starting with "ec2".
    fn ec2_evidence(&self) -> Option<String> {
        for (name, v) in [
            ("sys_vendor", &self.sys_vendor),
            ("bios_vendor", &self.bios_vendor),
        ] {
            if v.as_deref() == Some("Amazon EC2") {
                return Some(format!("DMI {name} is \"Amazon EC2\""));
            }
        }
        for (name, v) in [
            ("product_uuid", &self.product_uuid),
            ("product_serial", &self.product_serial),
            ("/sys/hypervisor/uuid", &self.hypervisor_uuid),
        ] {
            if v.as_deref()
                .is_some_and(|u| u.to_ascii_lowercase().starts_with("ec2"))
            {
                return Some(format!("{name} starts with \"ec2\""));
            }
        }
        None
    }

    /// OpenStack identification as cloud-init's `detect_openstack`.
    fn openstack_evidence(&self) -> Option<String> {
        let product = self.product_name.as_deref().unwrap_or_default();
        if matches!(product, "OpenStack Nova" | "OpenStack Compute") {
            return Some(format!("DMI product_name is {product:?}"));
        }
        if self.chassis_asset_tag.as_deref() == Some("OpenStack Nova") {
            return Some("DMI chassis_asset_tag is \"OpenStack Nova\"".into());
        }
        if self
            .sys_vendor
            .as_deref()
            .is_some_and(|v| v.contains("OpenStack"))
        {
            return Some("DMI sys_vendor mentions OpenStack".into());
        }
        None
    }
}

const LOCAL_FILE: &str = "/etc/bootstrapd/userdata.yaml";

/// The datasources local evidence points at, best first. Explicit choice yields only that
/// source (or nothing for `none`). Reads only local files and block device superblocks.
pub fn detect(root: &HostRoot, cfg: &AgentConfig) -> Vec<Candidate> {
    match try_detect(root, cfg) {
        Ok(c) => c,
        Err(e) => {
            // Only an unknown explicit name lands here; fetch reports it as an error.
            tracing::warn!(error = %e, "datasource detection");
            Vec::new()
        }
    }
}

fn try_detect(root: &HostRoot, cfg: &AgentConfig) -> Result<Vec<Candidate>, DatasourceError> {
    let cmdline = KernelCmdline::read(root);
    let explicit = match cmdline.get("bootstrapd.datasource") {
        Some(name) => Some(DatasourceKind::from_name(name).ok_or_else(|| {
            DatasourceError::UnknownDatasource {
                name: name.to_string(),
                origin: "the kernel command line (bootstrapd.datasource=)".into(),
            }
        })?),
        None => cfg.datasource,
    };
    if explicit == Some(DatasourceKind::None) {
        return Ok(Vec::new());
    }
    let needs_devices = matches!(
        explicit,
        None | Some(DatasourceKind::Nocloud) | Some(DatasourceKind::Openstack)
    );
    let ev = Evidence {
        dmi: Dmi::read(root),
        devices: if needs_devices {
            blockdev::scan(root)
        } else {
            Vec::new()
        },
        cmdline,
    };
    let kinds: Vec<DatasourceKind> = match explicit {
        Some(k) => vec![k],
        None => vec![
            DatasourceKind::CmdlineUrl,
            DatasourceKind::Nocloud,
            DatasourceKind::Openstack,
            DatasourceKind::Ec2,
            DatasourceKind::LocalFile,
        ],
    };
    let mut out = Vec::new();
    for kind in kinds {
        let mut found = detect_kind(kind, root, cfg, &ev);
        if let Some(k) = explicit {
            if found.is_empty() {
                found.push(Candidate {
                    kind: k,
                    explicit: true,
                    evidence: "chosen explicitly".into(),
                    location: Location::Missing {
                        what: missing_what(k),
                    },
                });
            }
            for c in &mut found {
                c.explicit = true;
            }
        }
        out.extend(found);
    }
    Ok(out)
}

fn missing_what(kind: DatasourceKind) -> String {
    match kind {
        DatasourceKind::Nocloud => {
            "no NoCloud seed was found (no seed directory, no cidata filesystem, no ds=nocloud;s=URL)".into()
        }
        DatasourceKind::Openstack => "no config-2 filesystem was found".into(),
        DatasourceKind::CmdlineUrl => "the kernel command line has no bootstrapd.url=".into(),
        DatasourceKind::LocalFile => format!("{LOCAL_FILE} does not exist"),
        DatasourceKind::Ec2 | DatasourceKind::None => "nothing was found".into(),
    }
}

fn detect_kind(
    kind: DatasourceKind,
    root: &HostRoot,
    cfg: &AgentConfig,
    ev: &Evidence,
) -> Vec<Candidate> {
    let cand = |evidence: String, location: Location| Candidate {
        kind,
        explicit: false,
        evidence,
        location,
    };
    match kind {
        DatasourceKind::CmdlineUrl => ev
            .cmdline
            .get("bootstrapd.url")
            .map(|u| {
                vec![cand(
                    "bootstrapd.url= on the kernel command line".into(),
                    Location::Url { url: u.to_string() },
                )]
            })
            .unwrap_or_default(),
        DatasourceKind::Nocloud => nocloud::detect(root, &ev.cmdline, &ev.dmi, &ev.devices),
        DatasourceKind::Openstack => {
            let mut v: Vec<Candidate> = ev
                .devices
                .iter()
                .filter(|d| d.label.eq_ignore_ascii_case("config-2"))
                .map(|d| {
                    cand(
                        format!(
                            "{} filesystem labelled {:?} on {}",
                            d.fstype.name(),
                            d.label,
                            d.device.display()
                        ),
                        Location::Device(d.clone()),
                    )
                })
                .collect();
            if v.is_empty()
                && let Some(e) = ev.dmi.openstack_evidence()
            {
                v.push(cand(
                    e,
                    Location::MetadataService {
                        base: cfg.metadata.openstack.clone(),
                    },
                ));
            }
            v
        }
        DatasourceKind::Ec2 => {
            let evidence = ev.dmi.ec2_evidence();
            // An explicit choice needs no evidence: the operator knows better than DMI
            // (and some EC2-compatible clouds have none).
            let evidence = evidence.or_else(|| {
                (root_explicit(ev, cfg) == Some(DatasourceKind::Ec2))
                    .then(|| "chosen explicitly".to_string())
            });
            evidence
                .map(|e| {
                    vec![cand(
                        e,
                        Location::MetadataService {
                            base: cfg.metadata.ec2.clone(),
                        },
                    )]
                })
                .unwrap_or_default()
        }
        DatasourceKind::LocalFile => {
            let p = root.path(LOCAL_FILE);
            if p.is_file() {
                vec![cand(
                    format!("{LOCAL_FILE} exists"),
                    Location::File { path: p },
                )]
            } else {
                Vec::new()
            }
        }
        DatasourceKind::None => Vec::new(),
    }
}

fn root_explicit(ev: &Evidence, cfg: &AgentConfig) -> Option<DatasourceKind> {
    match ev.cmdline.get("bootstrapd.datasource") {
        Some(n) => DatasourceKind::from_name(n),
        None => cfg.datasource,
    }
}

/// Fetches userdata from the best datasource (see the module documentation for the order).
/// `Ok(None)`: no datasource at all.
pub async fn fetch(root: &HostRoot, cfg: &AgentConfig) -> Result<Option<Fetched>, DatasourceError> {
    // Detection reads device superblocks: blocking I/O, kept off the async workers.
    let candidates = {
        let (root, cfg) = (root.clone(), cfg.clone());
        tokio::task::spawn_blocking(move || try_detect(&root, &cfg))
            .await
            .map_err(|e| DatasourceError::Invalid {
                place: "datasource detection".into(),
                message: e.to_string(),
            })??
    };
    if candidates.is_empty() {
        tracing::info!("no datasource found");
        return Ok(None);
    }
    let mut first_empty: Option<Fetched> = None;
    for c in &candidates {
        tracing::info!(source = %c.kind, evidence = %c.evidence, "trying datasource");
        match fetch_one(c, root, cfg).await {
            Ok(Some(f)) if !f.userdata.is_empty() => {
                tracing::info!(source = %f.source, instance_id = %f.instance_id, bytes = f.userdata.len(), signed = f.signature.is_some(), process_cpu_ms = crate::metrics::own_cpu_ms(), "userdata fetched");
                return Ok(Some(f));
            }
            Ok(Some(f)) => {
                tracing::info!(source = %f.source, "datasource has no userdata");
                first_empty.get_or_insert(f);
            }
            Ok(None) => tracing::info!(source = %c.kind, "datasource had nothing after all"),
            Err(e) => {
                tracing::error!(source = %c.kind, error = %e, "datasource failed");
                return Err(e);
            }
        }
    }
    Ok(first_empty)
}

async fn fetch_one(
    c: &Candidate,
    root: &HostRoot,
    cfg: &AgentConfig,
) -> Result<Option<Fetched>, DatasourceError> {
    if let Location::Missing { what } = &c.location {
        return Err(DatasourceError::Missing {
            kind: c.kind,
            what: what.clone(),
        });
    }
    let mut fetched = match c.kind {
        DatasourceKind::Nocloud => nocloud::fetch(&c.location, root, cfg).await,
        DatasourceKind::Openstack => openstack::fetch(&c.location, root, cfg).await,
        DatasourceKind::Ec2 => match &c.location {
            Location::MetadataService { base } => ec2::fetch(base, cfg).await.map(Some),
            other => Err(unexpected(c.kind, other)),
        },
        DatasourceKind::CmdlineUrl => match &c.location {
            Location::Url { url } => cmdline_url::fetch(url, root, cfg).await.map(Some),
            other => Err(unexpected(c.kind, other)),
        },
        DatasourceKind::LocalFile => match &c.location {
            Location::File { path } => local_file::fetch(path, root, cfg).map(Some),
            other => Err(unexpected(c.kind, other)),
        },
        DatasourceKind::None => Ok(None),
    }?;
    // Defence in depth: sources drop what they know to be secret, this catches the rest.
    if let Some(f) = &mut fetched {
        crate::secret::redact_json(&mut f.metadata);
    }
    Ok(fetched)
}

fn unexpected(kind: DatasourceKind, loc: &Location) -> DatasourceError {
    DatasourceError::Invalid {
        place: kind.to_string(),
        message: format!("internal: unexpected location {loc:?}"),
    }
}

/// The HTTP client for datasource requests. Metadata services are link-local and must not
/// go through a proxy; seed URLs may need one.
fn http_client(cfg: &AgentConfig, link_local: bool) -> Result<HttpClient, DatasourceError> {
    let mut b = HttpClient::builder(TlsTrust::SystemRoots)
        .retry(cfg.timeouts.retry_policy())
        .attempt_timeout(cfg.timeouts.attempt())
        .max_body(cfg.max_userdata_bytes);
    if link_local {
        b = b.no_proxy();
    }
    Ok(b.build()?)
}

/// The instance id for sources without one: `/etc/machine-id`, then the DMI product UUID.
fn fallback_instance_id(root: &HostRoot, source: &str) -> Result<String, DatasourceError> {
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
    Err(DatasourceError::NoInstanceId {
        source_name: source.to_string(),
    })
}

/// Reads a whole file of at most `limit` bytes; `None` when it does not exist.
fn read_limited(path: &Path, limit: usize) -> Result<Option<Vec<u8>>, DatasourceError> {
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
pub(crate) fn metadata_hostname(
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
fn decode_signature_header(value: &str, place: &str) -> Result<Vec<u8>, DatasourceError> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|_| DatasourceError::Signature {
            place: place.to_string(),
        })
}

/// Largest accepted signature (an ed25519 signature is 64 bytes; armour and metadata make
/// it bigger, but never megabytes).
const MAX_SIGNATURE_BYTES: usize = 64 << 10;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip() {
        for k in DatasourceKind::ALL {
            assert_eq!(DatasourceKind::from_name(k.name()), Some(k));
        }
        assert_eq!(
            DatasourceKind::from_name("NoCloud-Net"),
            Some(DatasourceKind::Nocloud)
        );
        assert_eq!(
            DatasourceKind::from_name("cmdline-url"),
            Some(DatasourceKind::CmdlineUrl)
        );
        assert_eq!(DatasourceKind::from_name("azure"), None);
    }

    #[test]
    fn ec2_dmi_evidence() {
        let mut d = Dmi::default();
        assert!(d.ec2_evidence().is_none());
        d.product_uuid = Some("EC2E1916-9099-7CAF-FD21-012345ABCDEF".into());
        assert!(d.ec2_evidence().is_some());
        let d = Dmi {
            sys_vendor: Some("Amazon EC2".into()),
            ..Dmi::default()
        };
        assert!(d.ec2_evidence().unwrap().contains("sys_vendor"));
        let d = Dmi {
            sys_vendor: Some("QEMU".into()),
            product_uuid: Some("4c4c4544-0000".into()),
            ..Dmi::default()
        };
        assert!(d.ec2_evidence().is_none());
    }

    #[test]
    fn openstack_dmi_evidence() {
        let d = Dmi {
            product_name: Some("OpenStack Nova".into()),
            ..Dmi::default()
        };
        assert!(d.openstack_evidence().is_some());
        assert!(Dmi::default().openstack_evidence().is_none());
    }

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
    fn candidates_serialize_for_query_output() {
        let cands = vec![
            Candidate {
                kind: DatasourceKind::Nocloud,
                explicit: false,
                evidence: "e".into(),
                location: Location::SeedUrl {
                    url: "http://h/".into(),
                    overrides: SeedOverrides {
                        instance_id: Some("i".into()),
                        hostname: None,
                    },
                },
            },
            Candidate {
                kind: DatasourceKind::Openstack,
                explicit: true,
                evidence: "e".into(),
                location: Location::Device(LabelledDevice {
                    device: "/dev/sr0".into(),
                    label: "config-2".into(),
                    fstype: FsType::Iso9660,
                }),
            },
        ];
        let v = serde_json::to_value(&cands).unwrap();
        assert_eq!(v[0]["kind"], "nocloud");
        assert_eq!(v[0]["location"]["type"], "seed_url");
        assert_eq!(v[0]["location"]["instance_id"], "i");
        assert_eq!(v[1]["location"]["type"], "device");
        assert_eq!(v[1]["location"]["fstype"], "iso9660");
    }

    #[test]
    fn signature_header_decoding() {
        assert_eq!(decode_signature_header(" aGk= ", "x").unwrap(), b"hi");
        assert!(decode_signature_header("!!", "x").is_err());
    }
}
