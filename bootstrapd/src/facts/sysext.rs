//! What the host has of a system extension runtime (`runtime.source.sysext`, or an offline
//! bundle's `sysext/NAME.raw`): the tools, the host's release, whether /usr is read-only, the
//! image already placed under /var/lib/extensions (its sha256), and whether it is merged.
//! Read-only: the placed image is hashed, never changed.

use std::io::Read;
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{ProbeArea, ProbeFailures, read_optional, usr_local};
use crate::fsutil::HostRoot;
use crate::system::sysext::{
    EXTENSIONS_DIR, HostRelease, MOUNT_TOOL, SYSEXT_TOOL, image_name, merged_release_path,
    systemd_architecture,
};
use crate::system::systemd::{Systemd, UnitState};
use crate::userdata::{RuntimeSource, Settings};

/// The extension images' directory inside an offline bundle, with `SHA256SUMS` beside them.
pub const BUNDLE_DIR: &str = "sysext";
/// The unit bootstrapd writes so that a reboot starts the extension's units (see
/// plan/sysext.rs).
pub const BOOT_UNIT: &str = "bootstrapd-sysext.service";
pub const BOOT_UNIT_PATH: &str = "/etc/systemd/system/bootstrapd-sysext.service";

/// The image the runtime comes from, wherever the userdata or the bundle named it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SysextImage {
    /// A URL or a host path; serialised (journal, `plan --json`) and shown redacted, since a
    /// URL may carry a mirror's password or a signed query.
    #[serde(serialize_with = "redacted")]
    pub location: String,
    pub is_url: bool,
    pub sha256: String,
    /// The extension's name (`docker` for `docker.raw`).
    pub name: String,
}

fn redacted<S: serde::Serializer>(location: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::secret::redact_urls(location))
}

impl SysextImage {
    /// The location as logs and `plan` show it.
    pub fn shown(&self) -> String {
        crate::secret::redact_urls(&self.location)
    }

    /// Where bootstrapd places it.
    pub fn dest(&self) -> String {
        format!("{EXTENSIONS_DIR}/{}.raw", self.name)
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SysextFacts {
    pub image: Option<SysextImage>,
    /// systemd-sysext and mount are there.
    pub tools: bool,
    pub usr_read_only: bool,
    pub host: HostRelease,
    /// sha256 of the image already at [`SysextImage::dest`].
    pub placed_sha256: Option<String>,
    /// The merged /usr holds the extension's release file.
    pub merged: bool,
    pub sysext_unit: Option<UnitState>,
    pub boot_unit: Option<UnitState>,
    /// Content of [`BOOT_UNIT_PATH`].
    pub boot_unit_file: Option<String>,
    pub errors: ProbeFailures,
}

pub async fn gather(
    root: &HostRoot,
    settings: &Settings,
    systemd: Option<&Systemd>,
) -> SysextFacts {
    let mut f = SysextFacts {
        tools: root.path(SYSEXT_TOOL).exists() && root.path(MOUNT_TOOL).exists(),
        ..SysextFacts::default()
    };
    match usr_local::probe_at(root, "/usr") {
        Ok(u) => f.usr_read_only = u.read_only,
        Err(e) => f.errors.record(ProbeArea::Sysext, e),
    }
    f.image = match resolve(root, &settings.runtime.source) {
        Ok(image) => image,
        Err(e) => {
            f.errors.record(ProbeArea::Sysext, e);
            None
        }
    };
    let Some(image) = f.image.clone() else {
        return f;
    };
    match read_optional(&root.path("/etc/os-release")) {
        Ok(text) => {
            let text = text.unwrap_or_default();
            f.host = HostRelease::from_os_release(&text, systemd_architecture());
        }
        Err(e) => f.errors.record(ProbeArea::Sysext, e),
    }
    match sha256_of(&root.path(image.dest())) {
        Ok(sum) => f.placed_sha256 = sum,
        Err(e) => f.errors.record(ProbeArea::Sysext, e),
    }
    f.merged = root.path(merged_release_path(&image.name)).is_file();
    boot_units(&mut f, root, systemd).await;
    f
}

async fn boot_units(f: &mut SysextFacts, root: &HostRoot, systemd: Option<&Systemd>) {
    match read_optional(&root.path(BOOT_UNIT_PATH)) {
        Ok(c) => f.boot_unit_file = c,
        Err(e) => f.errors.record(ProbeArea::Sysext, e),
    }
    if let Some(sd) = systemd {
        f.sysext_unit = sd.unit_state(crate::system::sysext::SYSEXT_UNIT).await.ok();
        f.boot_unit = sd.unit_state(BOOT_UNIT).await.ok();
    }
}

/// The userdata's image, else the offline bundle's `sysext/NAME.raw` (exactly one, with its
/// line in `sysext/SHA256SUMS`), else none.
pub fn resolve(root: &HostRoot, source: &RuntimeSource) -> Result<Option<SysextImage>, String> {
    match source {
        RuntimeSource::Sysext(s) => Ok(Some(SysextImage {
            location: s.location().to_string(),
            is_url: s.url.is_some(),
            sha256: s.sha256.to_ascii_lowercase(),
            name: image_name(s.location())?,
        })),
        RuntimeSource::Offline(o) => from_bundle(root, &o.path),
        _ => Ok(None),
    }
}

fn from_bundle(root: &HostRoot, bundle: &str) -> Result<Option<SysextImage>, String> {
    let dir = Path::new(bundle).join(BUNDLE_DIR);
    let images = match super::bundle_package_files(root, &dir.to_string_lossy(), "raw") {
        Ok(images) => images,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let image = match images.as_slice() {
        [] => return Ok(None),
        [one] => one.clone(),
        more => {
            return Err(format!(
                "{}: {} extension images ({}); the runtime comes from exactly one",
                dir.display(),
                more.len(),
                more.join(", ")
            ));
        }
    };
    let file = image.rsplit('/').next().unwrap_or_default().to_string();
    let sums_path = dir.join(crate::rancher::agent_binary::BUNDLE_SUMS);
    let sums = std::fs::read_to_string(root.path(&sums_path)).map_err(|e| {
        format!(
            "{}: {e} (the bundle's extension needs its sha256 there)",
            sums_path.display()
        )
    })?;
    let sha256 = crate::rancher::agent_binary::sum_for(&sums, &file).ok_or_else(|| {
        format!(
            "{}: no line for {file} (the bundle's extension needs its sha256 there)",
            sums_path.display()
        )
    })?;
    Ok(Some(SysextImage {
        name: image_name(&image)?,
        location: image,
        is_url: false,
        sha256,
    }))
}

/// sha256 of a file, streamed (an extension image is tens of MiB); None when it is absent.
pub fn sha256_of(path: &Path) -> Result<Option<String>, String> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(Some(hex::encode(hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::userdata::{OfflineSource, SysextSource};

    fn root() -> (tempfile::TempDir, HostRoot) {
        let d = tempfile::tempdir().unwrap();
        let root = HostRoot::new(Some(d.path().to_path_buf()));
        (d, root)
    }

    fn write(root: &HostRoot, path: &str, data: &[u8]) {
        let p = root.path(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }

    #[test]
    fn the_userdata_image_is_named_after_its_file() {
        let (_d, root) = root();
        let src = RuntimeSource::Sysext(SysextSource {
            url: Some("https://m.lab/ext/docker.raw".into()),
            path: None,
            sha256: "AB".repeat(32),
        });
        let image = resolve(&root, &src).unwrap().unwrap();
        assert_eq!(image.name, "docker");
        assert_eq!(image.sha256, "ab".repeat(32));
        assert_eq!(image.dest(), "/var/lib/extensions/docker.raw");
        assert!(image.is_url);
        assert_eq!(resolve(&root, &RuntimeSource::Distro).unwrap(), None);
    }

    #[test]
    fn a_bundle_image_needs_its_sum_and_must_be_alone() {
        let (_d, root) = root();
        let src = RuntimeSource::Offline(OfflineSource { path: "/b".into() });
        assert_eq!(resolve(&root, &src).unwrap(), None);
        write(&root, "/b/sysext/docker.raw", b"image");
        let e = resolve(&root, &src).unwrap_err();
        assert!(e.contains("SHA256SUMS"), "{e}");
        let sum = "cd".repeat(32);
        write(
            &root,
            "/b/sysext/SHA256SUMS",
            format!("{sum}  docker.raw\n").as_bytes(),
        );
        let image = resolve(&root, &src).unwrap().unwrap();
        assert_eq!(
            (image.location.as_str(), image.sha256.as_str()),
            ("/b/sysext/docker.raw", sum.as_str())
        );
        write(&root, "/b/sysext/other.raw", b"image");
        assert!(resolve(&root, &src).unwrap_err().contains("exactly one"));
    }

    #[tokio::test]
    async fn placed_and_merged_are_read_from_the_tree() {
        let (_d, root) = root();
        let settings = Settings {
            runtime: crate::userdata::RuntimeSettings {
                source: RuntimeSource::Sysext(SysextSource {
                    url: None,
                    path: Some("/images/docker.raw".into()),
                    sha256: "00".repeat(32),
                }),
                ..Default::default()
            },
            ..Settings::rke1_worker()
        };
        write(&root, "/etc/os-release", b"ID=debian\nVERSION_ID=\"12\"\n");
        let f = gather(&root, &settings, None).await;
        assert!(f.errors.is_empty(), "{:?}", f.errors);
        assert_eq!((f.placed_sha256.clone(), f.merged), (None, false));
        assert_eq!(f.host.version_id.as_deref(), Some("12"));
        write(&root, "/var/lib/extensions/docker.raw", b"abc");
        write(
            &root,
            "/usr/lib/extension-release.d/extension-release.docker",
            b"ID=debian\n",
        );
        let f = gather(&root, &settings, None).await;
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(f.placed_sha256.as_deref(), Some(abc));
        assert!(f.merged && !f.usr_read_only);
    }
}
