//! The NoCloud `network-config` for the early local stage (`bootstrapd local`), read before
//! the network is up: only sources on this machine are asked (seed directories, a `cidata`
//! filesystem, the OpenStack config drive, the baked-in file), never a URL or a metadata
//! service.

use std::path::PathBuf;

use super::blockdev;
use super::error::DatasourceError;
use super::nocloud::Seed;
use super::openstack::Drive;
use super::tree::Tree;
use super::{Candidate, Options, Source, detect_off_the_workers};
use crate::fsutil::HostRoot;
use crate::network::{MAX_NETWORK_CONFIG_BYTES, SEED_FILE};

/// The local datasource the early stage looked at, and its network-config if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNetwork {
    /// Why this source was chosen (detection's evidence).
    pub evidence: String,
    pub file: Option<SeedFile>,
}

/// A file read from a seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedFile {
    /// Where it was read, for messages: a path, or the file on a device.
    pub place: String,
    pub data: Vec<u8>,
}

/// The first LOCAL datasource detection finds (in detection order, network sources
/// skipped) and its network-config. `Ok(None)`: no local datasource.
///
/// The OpenStack config drive's `network_data.json` is not read (not supported yet): a
/// config drive answers "no network-config".
pub async fn local_network_config(
    root: &HostRoot,
    opts: &Options,
) -> Result<Option<LocalNetwork>, DatasourceError> {
    let Some(c) = first_local(root, opts).await? else {
        return Ok(None);
    };
    let file = match &c.source {
        Source::Nocloud(Seed::Dir { path, .. }) => read_dir(path.clone()).await?,
        Source::Nocloud(Seed::Device(dev)) => {
            let mounted = blockdev::Mounted::mount(dev, root)?;
            // Named by the device: the mount point is gone once this returns.
            read_dir(PathBuf::from(mounted.path()))
                .await?
                .map(|f| SeedFile {
                    place: format!("{SEED_FILE} on {}", dev.device.display()),
                    ..f
                })
        }
        Source::LocalFile(f) => match f.path.parent() {
            Some(dir) => read_dir(dir.to_path_buf()).await?,
            None => None,
        },
        _ => None,
    };
    Ok(Some(LocalNetwork {
        evidence: c.evidence,
        file,
    }))
}

/// The first datasource detection finds that needs no network (a seed directory, a `cidata`
/// filesystem, the OpenStack config drive, the baked-in file); the early stages read only
/// these.
pub async fn first_local(
    root: &HostRoot,
    opts: &Options,
) -> Result<Option<Candidate>, DatasourceError> {
    let candidates = detect_off_the_workers(root, opts).await?;
    Ok(candidates.into_iter().find(|c| match &c.source {
        Source::Nocloud(Seed::Dir { .. } | Seed::Device(_))
        | Source::LocalFile(_)
        | Source::Openstack(Drive::Device(_)) => true,
        // Need the network: not for these stages.
        Source::Nocloud(Seed::Url { .. })
        | Source::Openstack(Drive::MetadataService { .. })
        | Source::Ec2(_)
        | Source::CmdlineUrl(_) => false,
    }))
}

/// `network-config` in a directory, never through a link ([`Tree::read`]).
async fn read_dir(dir: PathBuf) -> Result<Option<SeedFile>, DatasourceError> {
    let tree = Tree::Dir(dir);
    let blob = tree.read(SEED_FILE, MAX_NETWORK_CONFIG_BYTES).await?;
    Ok(blob.map(|b| SeedFile {
        place: tree.place(SEED_FILE),
        data: b.data,
    }))
}

/// Whether the kernel command line says a local NoCloud seed is there (`ds=nocloud` without a
/// URL, or `bootstrapd.datasource=nocloud`). When none is found yet, it may be a drive whose
/// driver udev is still loading: worth a short wait, which nothing else justifies.
pub fn seed_expected(root: &HostRoot) -> bool {
    let cmdline = super::KernelCmdline::read(root);
    let ds = cmdline
        .get("ds")
        .and_then(super::cmdline::parse_nocloud_ds)
        .is_some_and(|p| p.seedfrom.is_none_or(|s| s.starts_with("file://")));
    ds || cmdline.get("bootstrapd.datasource") == Some("nocloud")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_is_expected_only_when_the_command_line_names_a_local_one() {
        let d = tempfile::tempdir().unwrap();
        let root = HostRoot::new(Some(d.path().into()));
        std::fs::create_dir_all(root.path("/proc")).unwrap();
        let expect = |line: &str| {
            std::fs::write(root.path("/proc/cmdline"), line).unwrap();
            seed_expected(&root)
        };
        assert!(expect("root=/dev/vda ds=nocloud"));
        assert!(expect("ds=nocloud;i=iid-1"));
        assert!(expect("ds=nocloud;s=file:///seed/"));
        assert!(expect("bootstrapd.datasource=nocloud"));
        assert!(!expect("ds=nocloud;s=http://192.0.2.1/"));
        assert!(!expect("ds=ec2 bootstrapd.datasource=local_file"));
        assert!(!expect("root=/dev/vda"));
    }
}
