//! The system extension's placement below a test root, with real squashfs images (mksquashfs)
//! mounted read-only through a loop device to read their extension-release (root, as CI runs):
//! the sha256 and the release are checked before anything is placed, and a second run finds it
//! in place.

mod common;

use std::path::Path;
use std::process::Command;

use bootstrapd::actions::{Target, apply_all};
use bootstrapd::facts::runtime::gather;
use bootstrapd::fsutil::HostRoot;
use bootstrapd::plan::Outcome;
use bootstrapd::plan::runtime::{RuntimeAction, RuntimeStep, plan};
use bootstrapd::userdata::{RuntimeSource, Settings, SysextSource};
use sha2::{Digest, Sha256};

/// A squashfs extension image at `out` whose extension-release.docker is `release` (None:
/// the image has none).
fn image(out: &Path, release: Option<&str>) -> String {
    let tree = out.with_extension("tree");
    let rel = tree.join("usr/lib/extension-release.d");
    std::fs::create_dir_all(&rel).unwrap();
    std::fs::create_dir_all(tree.join("usr/bin")).unwrap();
    std::fs::write(tree.join("usr/bin/dockerd"), b"#!/bin/sh\n").unwrap();
    if let Some(text) = release {
        std::fs::write(rel.join("extension-release.docker"), text).unwrap();
    }
    let st = Command::new("mksquashfs")
        .arg(&tree)
        .arg(out)
        .args(["-quiet", "-no-progress", "-noappend", "-all-root"])
        .status()
        .expect("mksquashfs (squashfs-tools, which scripts/install-deps.sh installs)");
    assert!(st.success());
    hex::encode(Sha256::digest(std::fs::read(out).unwrap()))
}

fn settings(path: &str, sha256: &str) -> Settings {
    let mut s = common::SettingsBuilder::rke1("https://rancher.example").build();
    s.runtime.source = RuntimeSource::Sysext(SysextSource {
        url: None,
        path: Some(path.into()),
        sha256: sha256.into(),
    });
    s
}

fn root() -> (tempfile::TempDir, HostRoot) {
    let d = tempfile::Builder::new()
        .prefix("sysext")
        .tempdir_in("/tmp")
        .unwrap();
    let root = HostRoot::new(Some(d.path().to_path_buf()));
    std::fs::create_dir_all(root.path("/etc")).unwrap();
    std::fs::write(
        root.path("/etc/os-release"),
        "ID=debian\nVERSION_ID=\"12\"\n",
    )
    .unwrap();
    for tool in ["/usr/bin/systemd-sysext", "/usr/bin/mount"] {
        std::fs::create_dir_all(root.path("/usr/bin")).unwrap();
        std::fs::write(root.path(tool), b"").unwrap();
    }
    (d, root)
}

async fn place_step(root: &HostRoot, s: &Settings) -> RuntimeStep {
    let facts = gather(root, s, None).await;
    let steps = plan(s, &facts);
    steps
        .into_iter()
        .find(|st| st.step == "runtime.sysext-place")
        .unwrap_or_else(|| panic!("no place step for {:?}", s.runtime.source))
}

/// Nothing but the image is left in /var/lib/extensions: no temp file, no mount point.
fn extensions(root: &HostRoot) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.path("/var/lib/extensions"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn an_image_that_fits_is_placed_once() {
    let (_d, root) = root();
    std::fs::create_dir_all(root.path("/images")).unwrap();
    let sum = image(
        &root.path("/images/docker.raw"),
        Some("ID=debian\nVERSION_ID=12\nARCHITECTURE=_any\n"),
    );
    let s = settings("/images/docker.raw", &sum);
    // An interrupted earlier placement left its temp file.
    std::fs::create_dir_all(root.path("/var/lib/extensions")).unwrap();
    std::fs::write(
        root.path("/var/lib/extensions/.docker.raw.bootstrapd-tmp"),
        b"partial",
    )
    .unwrap();
    let step = place_step(&root, &s).await;
    assert!(
        matches!(step.action, RuntimeAction::PlaceSysext { .. }),
        "{step:?}"
    );
    let f = apply_all(Target::quiet(&root, None), &[step]).await;
    assert_eq!(f[0].outcome, Outcome::Changed, "{f:?}");
    assert!(
        f[0].detail.contains("ID=debian VERSION_ID=12") && f[0].detail.contains("interrupted"),
        "{}",
        f[0].detail
    );
    assert_eq!(extensions(&root), ["docker.raw"]);
    assert_eq!(
        std::fs::read(root.path("/var/lib/extensions/docker.raw")).unwrap(),
        std::fs::read(root.path("/images/docker.raw")).unwrap()
    );
    let again = place_step(&root, &s).await;
    assert_eq!(again.preview().outcome, Outcome::Ok, "{again:?}");
}

#[tokio::test]
async fn a_wrong_sum_or_release_places_nothing() {
    let (_d, root) = root();
    std::fs::create_dir_all(root.path("/images")).unwrap();
    let good = image(&root.path("/images/docker.raw"), Some("ID=_any\n"));
    let cases = [
        ("/images/docker.raw", "0".repeat(64), "does not match"),
        (
            "/images/old/docker.raw",
            image_at(&root, "old", Some("ID=debian\nVERSION_ID=11\n")),
            "VERSION_ID=11",
        ),
        (
            "/images/arm/docker.raw",
            image_at(&root, "arm", Some("ID=_any\nARCHITECTURE=arm64\n")),
            "ARCHITECTURE=arm64",
        ),
        (
            "/images/none/docker.raw",
            image_at(&root, "none", None),
            "holds no",
        ),
    ];
    assert_eq!(good.len(), 64);
    for (path, sum, said) in cases {
        let step = place_step(&root, &settings(path, &sum)).await;
        let f = apply_all(Target::quiet(&root, None), &[step]).await;
        assert_eq!(f[0].outcome, Outcome::Failed, "{path}: {f:?}");
        assert!(
            f[0].detail.contains(said) && f[0].detail.contains("nothing was placed"),
            "{path}: {}",
            f[0].detail
        );
        assert!(
            extensions(&root).is_empty(),
            "{path}: {:?}",
            extensions(&root)
        );
    }
}

fn image_at(root: &HostRoot, dir: &str, release: Option<&str>) -> String {
    let d = root.path(format!("/images/{dir}"));
    std::fs::create_dir_all(&d).unwrap();
    image(&d.join("docker.raw"), release)
}

/// By URL: streamed from a loopback server into the temp file, then checked like a path.
#[tokio::test]
async fn an_image_by_url_is_streamed_and_checked() {
    let (_d, root) = root();
    let dir = tempfile::tempdir().unwrap();
    let sum = image(&dir.path().join("docker.raw"), Some("ID=_any\n"));
    let bytes = std::fs::read(dir.path().join("docker.raw")).unwrap();
    let app = axum::Router::new().route(
        "/ext/docker.raw",
        axum::routing::get(move || {
            let b = bytes.clone();
            async move { b }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    let mut s = settings("/unused.raw", &sum);
    s.runtime.source = RuntimeSource::Sysext(SysextSource {
        url: Some(format!("http://{addr}/ext/docker.raw")),
        path: None,
        sha256: sum.clone(),
    });
    let step = place_step(&root, &s).await;
    let f = apply_all(Target::quiet(&root, None), &[step]).await;
    assert_eq!(f[0].outcome, Outcome::Changed, "{f:?}");
    assert_eq!(extensions(&root), ["docker.raw"]);
    assert_eq!(
        bootstrapd::facts::sysext::sha256_of(&root.path("/var/lib/extensions/docker.raw")).unwrap(),
        Some(sum)
    );
}
