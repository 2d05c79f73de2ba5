//! Where the userdata comes from: one module per source, one entry point ([`fetch`]).
//!
//! Each source module detects itself from local evidence and fetches from the location it
//! found; what it is given comes from [`Options`], built once from bootstrapd.toml by
//! `AgentConfig::datasource_options` (this module knows nothing of the config file). A
//! detected source is a [`Source`]: its variant is the kind, its content the location, so
//! the two cannot disagree. Imports run one way: this file uses the source modules, they use
//! what all of them share (`kind`, `error`, `fetched`, `tree`, `blockdev`), never this file.
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
mod error;
mod evidence;
mod fetched;
mod kind;
mod local_file;
mod network_config;
mod nocloud;
mod openstack;
mod tree;

use serde::Serialize;

use crate::fsutil::HostRoot;
use evidence::Evidence;

pub use error::DatasourceError;
pub use fetched::{FetchOptions, Fetched};
pub use kind::{DatasourceKind, Origin};

pub use blockdev::{FsType, LabelledDevice, probe_label, probe_path};
pub use cmdline::KernelCmdline;
pub use cmdline_url::KernelUrl;
pub use ec2::Imds;
pub use local_file::BakedFile;
pub use network_config::{
    LocalNetwork, SeedFile, first_local, local_network_config, seed_expected,
};
pub use nocloud::{Seed, SeedOverrides};
pub use openstack::Drive;

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
    pub async fn fetch(
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

/// The order in which sources are looked for when none is chosen.
const DETECTION_ORDER: [DatasourceKind; 5] = [
    DatasourceKind::CmdlineUrl,
    DatasourceKind::Nocloud,
    DatasourceKind::Openstack,
    DatasourceKind::Ec2,
    DatasourceKind::LocalFile,
];

/// Whether detecting this source reads block device labels.
fn reads_devices(kind: DatasourceKind) -> bool {
    matches!(kind, DatasourceKind::Nocloud | DatasourceKind::Openstack)
}

/// What an explicit choice of `kind` lacked when nothing was found.
fn missing(kind: DatasourceKind) -> String {
    match kind {
        DatasourceKind::Nocloud => "no NoCloud seed was found (no seed directory, no cidata \
                                    filesystem, no ds=nocloud;s=URL)"
            .into(),
        DatasourceKind::Openstack => "no config-2 filesystem was found".into(),
        DatasourceKind::CmdlineUrl => "the kernel command line has no bootstrapd.url=".into(),
        DatasourceKind::LocalFile => format!("{} does not exist", local_file::PATH),
        DatasourceKind::Ec2 | DatasourceKind::None => "nothing was found".into(),
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
        None => &DETECTION_ORDER[..],
    };
    let devices = kinds.iter().any(|&k| reads_devices(k));
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
                    what: missing(kind),
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
        DatasourceKind::CmdlineUrl => found(cmdline_url::detect(&ev.cmdline), Source::CmdlineUrl),
        DatasourceKind::Nocloud => found(
            nocloud::detect(root, &ev.cmdline, &ev.dmi, &ev.devices),
            Source::Nocloud,
        ),
        DatasourceKind::Openstack => found(
            openstack::detect(&ev.devices, &ev.dmi, &opts.openstack_metadata),
            Source::Openstack,
        ),
        DatasourceKind::Ec2 => found(ec2::detect(&ev.dmi, explicit, &opts.ec2), Source::Ec2),
        DatasourceKind::LocalFile => found(local_file::detect(root), Source::LocalFile),
        DatasourceKind::None => Vec::new(),
    }
}

/// A source module's findings (evidence, location) as candidates of its kind.
fn found<L>(
    found: impl IntoIterator<Item = (String, L)>,
    source: fn(L) -> Source,
) -> Vec<Candidate> {
    found
        .into_iter()
        .map(|(evidence, location)| Candidate::detected(evidence, source(location)))
        .collect()
}

/// [`try_detect`] on a blocking thread: detection reads device superblocks, blocking I/O kept
/// off the async workers.
async fn detect_off_the_workers(
    root: &HostRoot,
    opts: &Options,
) -> Result<Vec<Candidate>, DatasourceError> {
    let (root, opts) = (root.clone(), opts.clone());
    tokio::task::spawn_blocking(move || try_detect(&root, &opts))
        .await
        .map_err(|e| DatasourceError::Invalid {
            place: "datasource detection".into(),
            message: e.to_string(),
        })?
}

/// Fetches userdata from the best datasource (see the module documentation for the order).
/// `Ok(None)`: no datasource at all.
pub async fn fetch(root: &HostRoot, opts: &Options) -> Result<Option<Fetched>, DatasourceError> {
    let candidates = detect_off_the_workers(root, opts).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
