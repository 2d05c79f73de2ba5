//! Where the userdata comes from: one module per source, one entry point ([`fetch`]).
//!
//! Each source module detects itself from local evidence and fetches from the location it
//! found; what it is given comes from [`Options`], built once from bootstrapd.toml by
//! `AgentConfig::datasource_options` (this module knows nothing of the config file). A
//! detected source is a [`Source`]: its variant is the kind, its content the location, so
//! the two cannot disagree.
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
mod evidence;
mod local_file;
mod nocloud;
mod openstack;
mod tree;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::fsutil::HostRoot;
use crate::http::{HttpClient, HttpError, RetryPolicy, TlsTrust};
use evidence::Evidence;

pub use blockdev::{FsType, LabelledDevice, probe_label, probe_path};
pub use cmdline::KernelCmdline;
pub use cmdline_url::KernelUrl;
pub use ec2::Imds;
pub use local_file::BakedFile;
pub use nocloud::{Seed, SeedOverrides};
pub use openstack::Drive;

/// The datasources bootstrapd knows, by name: what bootstrapd.toml and the kernel command
/// line choose before anything is detected.
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

    /// The order in which sources are looked for when none is chosen.
    const DETECTION_ORDER: [DatasourceKind; 5] = [
        DatasourceKind::CmdlineUrl,
        DatasourceKind::Nocloud,
        DatasourceKind::Openstack,
        DatasourceKind::Ec2,
        DatasourceKind::LocalFile,
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

    /// Whether detecting this source reads block device labels.
    fn reads_devices(self) -> bool {
        matches!(self, DatasourceKind::Nocloud | DatasourceKind::Openstack)
    }

    /// What an explicit choice of this source lacked when nothing was found.
    fn missing(self) -> String {
        match self {
            DatasourceKind::Nocloud => "no NoCloud seed was found (no seed directory, no cidata \
                                        filesystem, no ds=nocloud;s=URL)"
                .into(),
            DatasourceKind::Openstack => "no config-2 filesystem was found".into(),
            DatasourceKind::CmdlineUrl => "the kernel command line has no bootstrapd.url=".into(),
            DatasourceKind::LocalFile => format!("{} does not exist", local_file::PATH),
            DatasourceKind::Ec2 | DatasourceKind::None => "nothing was found".into(),
        }
    }
}

impl std::fmt::Display for DatasourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the datasources are given, built once from bootstrapd.toml
/// (`AgentConfig::datasource_options`): the choice, the endpoints, and how to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// `datasource` in bootstrapd.toml; `bootstrapd.datasource=` on the kernel command line
    /// wins over it.
    pub choice: Option<DatasourceKind>,
    /// EC2's instance metadata service, used when DMI says EC2 (or EC2 is chosen).
    pub ec2: Imds,
    /// OpenStack's metadata service base URL, used when DMI says OpenStack and no config
    /// drive exists.
    pub openstack_metadata: String,
    pub fetch: FetchOptions,
}

/// How every source fetches: retries and timeouts for the network, and the size limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOptions {
    /// Backoff and overall deadline of one request: the network may not be up yet.
    pub retry: RetryPolicy,
    pub attempt_timeout: Duration,
    /// Largest userdata a source may deliver, refused before it is read whole.
    pub max_userdata_bytes: usize,
}

impl FetchOptions {
    /// The HTTP client for datasource requests. Metadata services are link-local and must
    /// not go through a proxy; seed URLs may need one.
    fn client(&self, link_local: bool) -> Result<HttpClient, DatasourceError> {
        let mut b = HttpClient::builder(TlsTrust::SystemRoots)
            .retry(self.retry)
            .attempt_timeout(self.attempt_timeout)
            .max_body(self.max_userdata_bytes);
        if link_local {
            b = b.no_proxy();
        }
        Ok(b.build()?)
    }
}

/// A datasource found on this machine, with where its data is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "location", rename_all = "snake_case")]
pub enum Source {
    Nocloud(Seed),
    Openstack(Drive),
    Ec2(Imds),
    CmdlineUrl(KernelUrl),
    LocalFile(BakedFile),
}

impl Source {
    pub fn kind(&self) -> DatasourceKind {
        match self {
            Source::Nocloud(_) => DatasourceKind::Nocloud,
            Source::Openstack(_) => DatasourceKind::Openstack,
            Source::Ec2(_) => DatasourceKind::Ec2,
            Source::CmdlineUrl(_) => DatasourceKind::CmdlineUrl,
            Source::LocalFile(_) => DatasourceKind::LocalFile,
        }
    }

    /// Fetches from this source; `None`: it had nothing after all (a seed directory whose
    /// files went away).
    async fn fetch(
        &self,
        root: &HostRoot,
        opts: &FetchOptions,
    ) -> Result<Option<Fetched>, DatasourceError> {
        let mut fetched = match self {
            Source::Nocloud(seed) => seed.fetch(root, opts).await?,
            Source::Openstack(drive) => Some(drive.fetch(root, opts).await?),
            Source::Ec2(imds) => Some(imds.fetch(opts).await?),
            Source::CmdlineUrl(url) => Some(url.fetch(root, opts).await?),
            Source::LocalFile(file) => Some(file.fetch(root, opts)?),
        };
        // Defence in depth: sources drop what they know to be secret, this catches the rest.
        if let Some(f) = &mut fetched {
            crate::secret::redact_json(&mut f.metadata);
        }
        Ok(fetched)
    }
}

/// A datasource that local evidence points at (for `bootstrapd query` and diagnostics).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    /// Chosen on the kernel command line or in bootstrapd.toml rather than detected.
    pub explicit: bool,
    /// Why this source was considered, for humans.
    pub evidence: String,
    #[serde(flatten)]
    pub source: Source,
}

impl Candidate {
    fn detected(evidence: impl Into<String>, source: Source) -> Self {
        Candidate {
            explicit: false,
            evidence: evidence.into(),
            source,
        }
    }

    pub fn kind(&self) -> DatasourceKind {
        self.source.kind()
    }
}

/// What delivered the userdata, as the journal (`datasource`), `status` and `query` name it:
/// a datasource by its name, or a file given on the command line (`plan`/`query --userdata`)
/// by its path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Origin {
    Datasource(DatasourceKind),
    File(PathBuf),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Datasource(kind) => kind.fmt(f),
            Origin::File(path) => path.display().fmt(f),
        }
    }
}

impl From<DatasourceKind> for Origin {
    fn from(kind: DatasourceKind) -> Self {
        Origin::Datasource(kind)
    }
}

/// Compares with the name as written (`"nocloud"`, a path).
impl PartialEq<&str> for Origin {
    fn eq(&self, other: &&str) -> bool {
        match self {
            Origin::Datasource(kind) => kind.name() == *other,
            Origin::File(path) => path.as_os_str() == *other,
        }
    }
}

/// What a datasource delivered.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fetched {
    pub source: Origin,
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
    #[error("{kind}: no instance id (no metadata id, /etc/machine-id is empty or missing)")]
    NoInstanceId { kind: DatasourceKind },
    #[error("{place}: {message}")]
    Invalid { place: String, message: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DatasourceError + '_ {
    move |source| DatasourceError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The datasources local evidence points at, best first. Explicit choice yields only that
/// source (or nothing for `none`). Reads only local files and block device superblocks.
pub fn detect(root: &HostRoot, opts: &Options) -> Vec<Candidate> {
    match try_detect(root, opts) {
        Ok(c) => c,
        Err(e) => {
            // An unknown or missing explicit choice; fetch reports it as an error.
            tracing::warn!(error = %e, "datasource detection");
            Vec::new()
        }
    }
}

fn try_detect(root: &HostRoot, opts: &Options) -> Result<Vec<Candidate>, DatasourceError> {
    let cmdline = KernelCmdline::read(root);
    let choice = match cmdline.get("bootstrapd.datasource") {
        Some(name) => Some(DatasourceKind::from_name(name).ok_or_else(|| {
            DatasourceError::UnknownDatasource {
                name: name.to_string(),
                origin: "the kernel command line (bootstrapd.datasource=)".into(),
            }
        })?),
        None => opts.choice,
    };
    let kinds = match &choice {
        Some(kind) => std::slice::from_ref(kind),
        None => &DatasourceKind::DETECTION_ORDER[..],
    };
    let devices = kinds.iter().any(|k| k.reads_devices());
    let ev = Evidence::read(root, cmdline, devices);
    let found = kinds
        .iter()
        .flat_map(|&kind| detect_kind(kind, root, opts, &ev, choice.is_some()));
    match choice {
        None | Some(DatasourceKind::None) => Ok(found.collect()),
        Some(kind) => {
            let chosen: Vec<Candidate> = found
                .map(|c| Candidate {
                    explicit: true,
                    ..c
                })
                .collect();
            if chosen.is_empty() {
                return Err(DatasourceError::Missing {
                    kind,
                    what: kind.missing(),
                });
            }
            Ok(chosen)
        }
    }
}

fn detect_kind(
    kind: DatasourceKind,
    root: &HostRoot,
    opts: &Options,
    ev: &Evidence,
    explicit: bool,
) -> Vec<Candidate> {
    match kind {
        DatasourceKind::CmdlineUrl => cmdline_url::detect(&ev.cmdline).into_iter().collect(),
        DatasourceKind::Nocloud => nocloud::detect(root, &ev.cmdline, &ev.dmi, &ev.devices),
        DatasourceKind::Openstack => {
            openstack::detect(&ev.devices, &ev.dmi, &opts.openstack_metadata)
        }
        DatasourceKind::Ec2 => ec2::detect(&ev.dmi, explicit, &opts.ec2)
            .into_iter()
            .collect(),
        DatasourceKind::LocalFile => local_file::detect(root).into_iter().collect(),
        DatasourceKind::None => Vec::new(),
    }
}

/// Fetches userdata from the best datasource (see the module documentation for the order).
/// `Ok(None)`: no datasource at all.
pub async fn fetch(root: &HostRoot, opts: &Options) -> Result<Option<Fetched>, DatasourceError> {
    // Detection reads device superblocks: blocking I/O, kept off the async workers.
    let candidates = {
        let (root, opts) = (root.clone(), opts.clone());
        tokio::task::spawn_blocking(move || try_detect(&root, &opts))
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
        tracing::info!(source = %c.kind(), evidence = %c.evidence, "trying datasource");
        match c.source.fetch(root, &opts.fetch).await {
            Ok(Some(f)) if !f.userdata.is_empty() => {
                tracing::info!(source = %f.source, instance_id = %f.instance_id, bytes = f.userdata.len(), signed = f.signature.is_some(), process_cpu_ms = crate::metrics::own_cpu_ms(), "userdata fetched");
                return Ok(Some(f));
            }
            Ok(Some(f)) => {
                tracing::info!(source = %f.source, "datasource has no userdata");
                first_empty.get_or_insert(f);
            }
            Ok(None) => tracing::info!(source = %c.kind(), "datasource had nothing after all"),
            Err(e) => {
                tracing::error!(source = %c.kind(), error = %e, "datasource failed");
                return Err(e);
            }
        }
    }
    Ok(first_empty)
}

/// The instance id for sources without one: `/etc/machine-id`, then the DMI product UUID.
fn fallback_instance_id(root: &HostRoot, kind: DatasourceKind) -> Result<String, DatasourceError> {
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
    Err(DatasourceError::NoInstanceId { kind })
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

/// Fetch options for unit tests: quick retries, the default size limit.
#[cfg(test)]
pub(crate) fn test_fetch_options() -> FetchOptions {
    FetchOptions {
        retry: RetryPolicy {
            initial: Duration::from_millis(5),
            max_delay: Duration::from_millis(20),
            deadline: Duration::from_secs(20),
            attempts: 60,
        },
        attempt_timeout: Duration::from_secs(10),
        max_userdata_bytes: crate::userdata::MAX_USERDATA_BYTES,
    }
}

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
                explicit: false,
                evidence: "e".into(),
                source: Source::Nocloud(Seed::Url {
                    url: "http://h/".into(),
                    overrides: SeedOverrides {
                        instance_id: Some("i".into()),
                        hostname: None,
                    },
                }),
            },
            Candidate {
                explicit: true,
                evidence: "e".into(),
                source: Source::Openstack(Drive::Device(LabelledDevice {
                    device: "/dev/sr0".into(),
                    label: "config-2".into(),
                    fstype: FsType::Iso9660,
                })),
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
