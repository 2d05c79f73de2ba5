//! Carries out the system extension steps (plan/sysext.rs): place the image once its sha256
//! and extension-release are proven, merge it, and make every boot merge it and start its
//! units.
//!
//! A placement goes through a temp file beside the image, so an interrupted run leaves either
//! the old image or none, never a partial one under the name systemd-sysext reads; the next
//! run removes the temp file and starts over. A merge is `systemd-sysext refresh`, which
//! unmerges and merges again as a whole, so an interrupted one is redone by the next run.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::actions::{StepFailure, Target};
use crate::facts::sysext::SysextImage;
use crate::fsutil::{HostRoot, create_dir_all_durable, write_atomic};
use crate::plan::Outcome;
use crate::plan::runtime::RuntimeAction;
use crate::rancher::{Deadline, client};
use crate::system::process::{CommandSpec, last_line, run};
use crate::system::sysext::{
    EXTENSIONS_DIR, HostRelease, SYSEXT_TOOL, merged_release_path, parse_release,
    read_image_release, release_fits,
};
use crate::system::systemd::Systemd;
use crate::userdata::trusted_ca_anchors;

type StepResult = crate::actions::StepResult<(Outcome, String)>;

/// Bound of one image download: an engine's extension is tens of MiB.
const DOWNLOAD_BUDGET: Duration = Duration::from_secs(600);
const MAX_IMAGE: usize = 1 << 30;

/// The extension's steps (the runtime stage's `apply_one` hands them here).
pub(crate) async fn apply(target: Target<'_>, action: &RuntimeAction) -> StepResult {
    let (root, systemd) = (target.root, target.systemd);
    match action {
        RuntimeAction::PlaceSysext { image, host } => place(target, image, host).await,
        RuntimeAction::MergeSysext { name } => merge(root, name).await,
        RuntimeAction::SysextOnBoot {
            path,
            content,
            units,
        } => on_boot(root, systemd, path, content, units).await,
        // Never the action's Debug form: a PlaceSysext's URL may carry a password.
        _ => Err(StepFailure::new(
            "not a system extension step".into(),
            "report this as a bug".into(),
        )),
    }
}

fn io_fail(what: &str, path: &Path, e: impl std::fmt::Display) -> StepFailure {
    StepFailure::new(
        format!("{what} {}: {e}", path.display()),
        format!("check {EXTENSIONS_DIR} (space, permissions) and run again"),
    )
}

/// The image into place: a leftover temp file goes first, then the copy or download into a new
/// one, the sha256 and the extension-release checks, and the rename.
async fn place(target: Target<'_>, image: &SysextImage, host: &HostRelease) -> StepResult {
    let root = target.root;
    let dir = root.path(EXTENSIONS_DIR);
    create_dir_all_durable(&dir).map_err(|e| io_fail("creating", &dir, e))?;
    let tmp = dir.join(format!(".{}.raw.bootstrapd-tmp", image.name));
    let leftover = tmp.exists();
    let _ = std::fs::remove_file(&tmp);
    let result = fill_and_check(target, image, host, &tmp).await;
    let release = match result {
        Ok(release) => release,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
    };
    let dest = root.path(image.dest());
    std::fs::rename(&tmp, &dest).map_err(|e| io_fail("renaming into", &dest, e))?;
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_fail("syncing", &dir, e))?;
    let note = if leftover {
        " (an interrupted placement's temp file was removed first)"
    } else {
        ""
    };
    Ok((
        Outcome::Changed,
        format!(
            "placed {} from {} (sha256 {}; {release}){note}",
            image.dest(),
            image.shown(),
            &image.sha256[..12.min(image.sha256.len())]
        ),
    ))
}

/// Writes the image to `tmp`, checks its sha256, then its extension-release against the host;
/// returns what the release says, for the step's detail.
async fn fill_and_check(
    target: Target<'_>,
    image: &SysextImage,
    host: &HostRelease,
    tmp: &Path,
) -> Result<String, StepFailure> {
    let actual = if image.is_url {
        download(target, image, tmp).await?
    } else {
        let src = target.root.path(&image.location);
        let mut file = std::fs::File::open(&src).map_err(|e| io_fail("reading", &src, e))?;
        write_hashed(tmp, &mut file)?
    };
    if !actual.eq_ignore_ascii_case(&image.sha256) {
        return Err(StepFailure::new(
            format!(
                "system extension from {}: sha256 {actual} does not match the expected {}; \
                 nothing was placed",
                image.shown(),
                image.sha256
            ),
            "give the image's sha256 in runtime.source.sysext.sha256 (sha256sum NAME.raw)".into(),
        ));
    }
    let scratch = tmp.with_extension("mnt");
    let text = read_image_release(
        &tmp.to_string_lossy(),
        &image.name,
        &scratch.to_string_lossy(),
    )
    .await
    .map_err(|e| {
        StepFailure::new(
            format!("reading the image's extension-release: {e}"),
            "check that the image is a systemd-sysext image (squashfs or erofs with usr/)".into(),
        )
    })?;
    let Some(text) = text else {
        return Err(StepFailure::new(
            format!(
                "the image {} holds no {}; systemd-sysext would skip it; nothing was placed",
                image.shown(),
                merged_release_path(&image.name)
            ),
            "build the image with its extension-release file (scripts/build-sysext.sh)".into(),
        ));
    };
    let release = parse_release(&text);
    release_fits(&image.name, &release, host).map_err(|e| {
        StepFailure::new(
            format!("{e}; nothing was placed"),
            "build the extension for this host's ID, VERSION_ID and architecture, or with ID=_any"
                .into(),
        )
    })?;
    let shown: Vec<String> = ["ID", "VERSION_ID", "ARCHITECTURE"]
        .iter()
        .filter_map(|k| release.get(*k).map(|v| format!("{k}={v}")))
        .collect();
    Ok(format!(
        "extension-release {} fits {}",
        shown.join(" "),
        host.describe()
    ))
}

/// The URL's body streamed into a new `tmp` and hashed as it is written: trusted through the
/// checksum, over the system roots and the userdata's `trusted_ca`, through the userdata's
/// proxy; no token is ever sent there.
async fn download(
    target: Target<'_>,
    image: &SysextImage,
    tmp: &Path,
) -> Result<String, StepFailure> {
    let fail = |e: String| {
        StepFailure::new(
            format!(
                "downloading the system extension from {}: {e}",
                image.shown()
            ),
            "check the URL, the network and the proxy".into(),
        )
    };
    let file = create_new(tmp)?;
    let sink = crate::http::Sink::new(file, tmp.to_string_lossy());
    let trust = crate::http::TlsTrust::system_and(trusted_ca_anchors(target.trusted_ca));
    let deadline = Deadline::after(DOWNLOAD_BUDGET);
    let c = client(&trust, target.proxy, &deadline, DOWNLOAD_BUDGET, MAX_IMAGE)
        .map_err(|e| fail(crate::secret::redact_urls(&e.to_string())))?;
    let req = crate::http::Request::get(&image.location).map_err(|e| fail(e.to_string()))?;
    let resp = c
        .download_into(&req, &sink)
        .await
        .map_err(|e| fail(crate::secret::redact_urls(&e.to_string())))?;
    if resp.status != crate::http::StatusCode::OK {
        return Err(fail(format!("status {}", resp.status)));
    }
    sync(tmp)?;
    Ok(sink.sha256_hex())
}

fn sync(tmp: &Path) -> Result<(), StepFailure> {
    std::fs::File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_fail("syncing", tmp, e))
}

fn create_new(tmp: &Path) -> Result<std::fs::File, StepFailure> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(tmp)
        .map_err(|e| io_fail("creating", tmp, e))
}

/// Copies `src` into a new `tmp` (0644, as systemd-sysext's images), hashing what is written,
/// and syncs it.
fn write_hashed(tmp: &Path, src: &mut dyn Read) -> Result<String, StepFailure> {
    let mut f = create_new(tmp)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = src
            .read(&mut buf)
            .map_err(|e| io_fail("reading the image for", tmp, e))?;
        if n == 0 {
            break;
        }
        f.write_all(&buf[..n])
            .map_err(|e| io_fail("writing", tmp, e))?;
        hasher.update(&buf[..n]);
    }
    sync(tmp)?;
    Ok(hex::encode(hasher.finalize()))
}

async fn tool(program: &str, args: &[&str]) -> Result<String, StepFailure> {
    let spec = CommandSpec::new(program, args);
    let out = run(&spec, Duration::from_secs(180)).await.map_err(|e| {
        StepFailure::new(
            e.to_string(),
            format!("check that {program} runs on this host"),
        )
    })?;
    if out.status.success() {
        Ok(out.stderr)
    } else {
        Err(StepFailure::new(
            format!(
                "`{spec}` failed ({}): {}",
                out.status,
                last_line(&out.stderr)
            ),
            "see `journalctl -b` for systemd-sysext's own messages".into(),
        ))
    }
}

fn need_systemd(systemd: Option<&Systemd>) -> Result<&Systemd, StepFailure> {
    systemd.ok_or_else(|| {
        StepFailure::new(
            "systemd is not reachable over D-Bus".into(),
            "run bootstrapd under systemd with the system bus up".into(),
        )
    })
}

/// `systemd-sysext refresh`, then the merged /usr must show the extension; systemd-sysusers
/// for the groups it declares. The daemon-reload systemd 252 needs after a merge is the boot
/// step's, which the plan puts after every merge (`plan::sysext`).
async fn merge(root: &HostRoot, name: &str) -> StepResult {
    let said = tool(SYSEXT_TOOL, &["refresh"]).await?;
    let release = root.path(merged_release_path(name));
    if !release.is_file() {
        return Err(StepFailure::new(
            format!(
                "systemd-sysext refresh did not merge {name}: {} is absent ({})",
                merged_release_path(name),
                last_line(&said)
            ),
            format!("run `systemd-sysext status` and check {EXTENSIONS_DIR}/{name}.raw"),
        ));
    }
    tool("systemd-sysusers", &[]).await?;
    Ok((
        Outcome::Changed,
        format!("merged {name} into /usr (systemd-sysext refresh), ran systemd-sysusers"),
    ))
}

/// The boot unit written, the units enabled, and systemd reloaded.
async fn on_boot(
    root: &HostRoot,
    systemd: Option<&Systemd>,
    path: &str,
    content: &str,
    units: &[String],
) -> StepResult {
    let sd = need_systemd(systemd)?;
    let real: PathBuf = root.path(path);
    write_atomic(&real, content.as_bytes(), 0o644).map_err(|e| io_fail("writing", &real, e))?;
    let fail = |what: &str, e: crate::system::systemd::SystemdError| {
        StepFailure::new(
            format!("{what}: {e}"),
            "check `systemctl status systemd-sysext`".into(),
        )
    };
    let names: Vec<&str> = units.iter().map(String::as_str).collect();
    sd.enable(&names).await.map_err(|e| fail("enabling", e))?;
    // One reload for the merge before and the enablement: systemd learns the merged units and
    // the new unit file, and the units' UnitFileState (cached until a reload) says enabled.
    sd.reload()
        .await
        .map_err(|e| fail("reloading systemd", e))?;
    Ok((
        Outcome::Changed,
        format!(
            "wrote {path}; enabled {}; reloaded systemd",
            names.join(", ")
        ),
    ))
}
