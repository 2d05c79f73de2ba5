//! systemd system extensions (systemd-sysext): where the images go, what an image is called,
//! and whether an image's extension-release fits the host. Pure, apart from the one function
//! that mounts an image to read its extension-release.
//!
//! The rules are systemd's own (`extension_release_validate` in systemd v252's
//! `src/shared/extension-release.c`), so that bootstrapd refuses, before anything is placed,
//! exactly the images `systemd-sysext refresh` would skip with only a log line.

use std::collections::BTreeMap;
use std::time::Duration;

use super::process::{CommandSpec, run};

/// Where bootstrapd places extension images: persistent, read by `systemd-sysext` at every
/// boot (its search path: /etc/extensions, /run/extensions, /var/lib/extensions).
pub const EXTENSIONS_DIR: &str = "/var/lib/extensions";
/// Inside a merged /usr, one file per merged extension (`extension-release.NAME`).
pub const MERGED_RELEASE_DIR: &str = "/usr/lib/extension-release.d";
pub const SYSEXT_TOOL: &str = "/usr/bin/systemd-sysext";
pub const MOUNT_TOOL: &str = "/usr/bin/mount";
pub const UMOUNT_TOOL: &str = "/usr/bin/umount";
pub const SYSEXT_UNIT: &str = "systemd-sysext.service";

/// The extension's name from its image's file name (`docker.raw` -> `docker`): systemd matches
/// the image's `extension-release.NAME` against it and skips an image whose names differ.
pub fn image_name(location: &str) -> Result<String, String> {
    let file = location
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    let file = file.split(['?', '#']).next().unwrap_or_default();
    let Some(name) = file.strip_suffix(".raw") else {
        return Err(format!(
            "the image's file name must end in `.raw` (systemd-sysext's name for a disk \
             image), found `{}`",
            file.escape_debug()
        ));
    };
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "_.-".contains(c);
    if name.is_empty() || name.starts_with('.') || !name.chars().all(ok_char) {
        return Err(format!(
            "the image's name `{}` must be letters, digits, `_`, `.` and `-`, not starting \
             with `.`",
            name.escape_debug()
        ));
    }
    Ok(name.to_string())
}

/// The path of the merged extension's release file in /usr.
pub fn merged_release_path(name: &str) -> String {
    format!("{MERGED_RELEASE_DIR}/extension-release.{name}")
}

/// An os-release or extension-release file: `KEY=value` lines, values optionally quoted.
pub fn parse_release(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let unquoted = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            (k.trim().to_string(), unquoted.to_string())
        })
        .collect()
}

/// What systemd-sysext compares an extension with.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct HostRelease {
    pub id: String,
    pub version_id: Option<String>,
    pub sysext_level: Option<String>,
    /// systemd's architecture name (`x86-64`, `arm64`).
    pub architecture: String,
}

impl HostRelease {
    pub fn from_os_release(text: &str, architecture: &str) -> Self {
        let mut f = parse_release(text);
        let mut take = |k: &str| f.remove(k).filter(|v| !v.is_empty());
        HostRelease {
            id: take("ID").unwrap_or_else(|| "linux".into()),
            version_id: take("VERSION_ID"),
            sysext_level: take("SYSEXT_LEVEL"),
            architecture: architecture.to_string(),
        }
    }

    pub fn describe(&self) -> String {
        let version = self.version_id.as_deref().unwrap_or("(no VERSION_ID)");
        format!("{} {version} {}", self.id, self.architecture)
    }
}

/// systemd's name of this build's architecture (`uname -m` differs: x86_64, aarch64).
pub fn systemd_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x86-64",
        "aarch64" => "arm64",
        "x86" => "x86",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "powerpc64" => "ppc64-le",
        "s390x" => "s390x",
        other => other,
    }
}

/// Whether the extension fits the host, as systemd v252 decides: `ID=_any` fits every host;
/// else the IDs must match, then SYSEXT_LEVEL when both have one, else VERSION_ID when the
/// host has one; an ARCHITECTURE other than `_any` must be the host's.
pub fn release_fits(
    name: &str,
    ext: &BTreeMap<String, String>,
    host: &HostRelease,
) -> Result<(), String> {
    let get = |k: &str| ext.get(k).map(String::as_str).filter(|v| !v.is_empty());
    if let Some(arch) = get("ARCHITECTURE")
        && arch != "_any"
        && arch != host.architecture
    {
        return Err(format!(
            "extension {name} is built for ARCHITECTURE={arch}, this host is {}",
            host.architecture
        ));
    }
    let Some(id) = get("ID") else {
        return Err(format!("extension-release.{name} has no ID="));
    };
    if id == "_any" {
        return Ok(());
    }
    if id != host.id {
        return Err(format!(
            "extension {name} is for ID={id}, this host is ID={}",
            host.id
        ));
    }
    if let (Some(h), Some(e)) = (host.sysext_level.as_deref(), get("SYSEXT_LEVEL")) {
        return if h == e {
            Ok(())
        } else {
            Err(format!(
                "extension {name} has SYSEXT_LEVEL={e}, this host {h}"
            ))
        };
    }
    match (host.version_id.as_deref(), get("VERSION_ID")) {
        (None, _) => Ok(()),
        (Some(_), None) => Err(format!("extension-release.{name} has no VERSION_ID=")),
        (Some(h), Some(e)) if h == e => Ok(()),
        (Some(h), Some(e)) => Err(format!(
            "extension {name} is for VERSION_ID={e}, this host is VERSION_ID={h}"
        )),
    }
}

/// The image's `extension-release.NAME`, read out of the image: mounted read-only (a loop
/// device, the filesystem found by mount: squashfs or erofs) on `scratch`, an empty directory,
/// and unmounted again whatever happened. None: the image has none. (Debian 12's systemd
/// package has no systemd-dissect, so mount does it.)
pub async fn read_image_release(
    image: &str,
    name: &str,
    scratch: &str,
) -> Result<Option<String>, String> {
    std::fs::create_dir_all(scratch).map_err(|e| format!("{scratch}: {e}"))?;
    let mount = CommandSpec::new(
        MOUNT_TOOL,
        &["-o", "ro,loop,nodev,nosuid,noexec", image, scratch],
    );
    let out = run(&mount, Duration::from_secs(60))
        .await
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        let _ = std::fs::remove_dir(scratch);
        return Err(format!(
            "{mount}: {}",
            super::process::last_line(&out.stderr)
        ));
    }
    let inner = format!("{scratch}{}", merged_release_path(name));
    let read = std::fs::read_to_string(&inner);
    let umount = CommandSpec::new(UMOUNT_TOOL, &["-d", scratch]);
    let unmounted = run(&umount, Duration::from_secs(60)).await;
    let _ = std::fs::remove_dir(scratch);
    match unmounted {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return Err(format!(
                "{umount}: {}",
                super::process::last_line(&o.stderr)
            ));
        }
        Err(e) => return Err(e.to_string()),
    }
    match read {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{inner}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostRelease {
        HostRelease::from_os_release(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\n",
            "x86-64",
        )
    }

    fn ext(text: &str) -> BTreeMap<String, String> {
        parse_release(text)
    }

    #[test]
    fn names_come_from_the_file_name() {
        assert_eq!(image_name("/images/docker.raw").unwrap(), "docker");
        assert_eq!(
            image_name("https://m.lab/x/docker-24.0.raw?sig=1").unwrap(),
            "docker-24.0"
        );
        assert!(
            image_name("/images/docker.img")
                .unwrap_err()
                .contains(".raw")
        );
        assert!(image_name("/images/.raw").is_err());
        assert!(image_name("/images/do cker.raw").is_err());
    }

    #[test]
    fn releases_fit_as_systemd_252_decides() {
        let h = host();
        assert_eq!(h.version_id.as_deref(), Some("12"));
        assert!(
            release_fits(
                "d",
                &ext("ID=debian\nVERSION_ID=12\nARCHITECTURE=x86-64"),
                &h
            )
            .is_ok()
        );
        assert!(release_fits("d", &ext("ID=_any\nARCHITECTURE=_any"), &h).is_ok());
        assert!(release_fits("d", &ext("ID=_any"), &h).is_ok());
        let e = release_fits("d", &ext("ID=debian\nVERSION_ID=11"), &h).unwrap_err();
        assert!(
            e.contains("VERSION_ID=11") && e.contains("VERSION_ID=12"),
            "{e}"
        );
        let e = release_fits("d", &ext("ID=fedora\nVERSION_ID=12"), &h).unwrap_err();
        assert!(e.contains("ID=fedora"), "{e}");
        let e = release_fits("d", &ext("ID=_any\nARCHITECTURE=arm64"), &h).unwrap_err();
        assert!(e.contains("arm64") && e.contains("x86-64"), "{e}");
        assert!(
            release_fits("d", &ext("ID=debian"), &h)
                .unwrap_err()
                .contains("VERSION_ID")
        );
        assert!(
            release_fits("d", &ext("VERSION_ID=12"), &h)
                .unwrap_err()
                .contains("no ID")
        );
        // A rolling host (no VERSION_ID) takes any version of its own ID.
        let rolling = HostRelease::from_os_release("ID=arch\n", "x86-64");
        assert!(release_fits("d", &ext("ID=arch\nVERSION_ID=1"), &rolling).is_ok());
        // SYSEXT_LEVEL, when both have one, wins over VERSION_ID.
        let leveled =
            HostRelease::from_os_release("ID=flatcar\nVERSION_ID=3\nSYSEXT_LEVEL=1.0", "x86-64");
        assert!(
            release_fits(
                "d",
                &ext("ID=flatcar\nSYSEXT_LEVEL=1.0\nVERSION_ID=9"),
                &leveled
            )
            .is_ok()
        );
        assert!(release_fits("d", &ext("ID=flatcar\nSYSEXT_LEVEL=2.0"), &leveled).is_err());
    }
}
