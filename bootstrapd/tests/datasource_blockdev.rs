//! NoCloud `cidata` and OpenStack `config-2` drives: real images (genisoimage, mkfs.vfat +
//! mcopy, mkfs.ext4) attached to loop devices, found by label and mounted by the code.
//!
//! Needs root, losetup and the image tools; without them the tests say so and stop. The
//! host kernel decides which filesystems can be mounted: where iso9660/vfat are missing
//! (as on this project's build machine) the test checks the clean failure instead.

use std::path::{Path, PathBuf};
use std::process::Command;

use bootstrapd::config::AgentConfig;
use bootstrapd::datasource::{self, DatasourceError, DatasourceKind, FsType, Seed, Source};
use bootstrapd::fsutil::HostRoot;

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn usable() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let tools = ["losetup", "genisoimage", "mkfs.vfat", "mcopy", "mkfs.ext4"]
        .iter()
        .all(|t| {
            Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .is_ok_and(|o| o.status.success())
        });
    if !(root && tools) {
        eprintln!("SKIP: needs root and losetup, genisoimage, mkfs.vfat, mcopy, mkfs.ext4");
    }
    root && tools
}

fn kernel_has(fs: &str) -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().last() == Some(fs))
}

/// A loop device, detached on drop.
struct Loop(String);

impl Loop {
    fn attach(image: &Path) -> Self {
        let out = Command::new("losetup")
            .args(["-f", "--show", "-r"])
            .arg(image)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Loop(String::from_utf8(out.stdout).unwrap().trim().to_string())
    }

    fn name(&self) -> &str {
        self.0.trim_start_matches("/dev/")
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// A host root whose /sys/class/block and /dev show exactly the given loop devices.
struct Root {
    dir: tempfile::TempDir,
    root: HostRoot,
}

impl Root {
    fn with_devices(loops: &[&Loop]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::new(Some(dir.path().into()));
        std::fs::create_dir_all(root.path("/dev")).unwrap();
        for l in loops {
            let sys = root.path("/sys/class/block").join(l.name());
            std::fs::create_dir_all(&sys).unwrap();
            let size =
                std::fs::read_to_string(format!("/sys/class/block/{}/size", l.name())).unwrap();
            std::fs::write(sys.join("size"), size).unwrap();
            std::os::unix::fs::symlink(&l.0, root.path("/dev").join(l.name())).unwrap();
        }
        std::fs::create_dir_all(root.path("/etc")).unwrap();
        std::fs::write(root.path("/etc/machine-id"), "machine\n").unwrap();
        Root { dir, root }
    }

    /// Nothing of ours is still mounted and no mount point is left behind.
    fn assert_clean(&self) {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let prefix = self.dir.path().to_string_lossy().to_string();
        assert!(!mounts.contains(&prefix), "still mounted:\n{mounts}");
        let run = self.root.path("/run/bootstrapd");
        if run.exists() {
            let left: Vec<_> = std::fs::read_dir(&run).unwrap().collect();
            assert!(left.is_empty(), "mount points left: {left:?}");
        }
    }
}

fn seed_dir(meta: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("meta-data"), meta).unwrap();
    std::fs::write(d.path().join("user-data"), "#cloud-config\nfrom: drive\n").unwrap();
    std::fs::write(d.path().join("user-data.sig"), "SIG").unwrap();
    d
}

fn iso_image(work: &Path, label: &str, content: &Path) -> PathBuf {
    let img = work.join(format!("{label}.iso"));
    run(Command::new("genisoimage")
        .args(["-quiet", "-V", label, "-r", "-J", "-o"])
        .arg(&img)
        .arg(content));
    img
}

fn vfat_image(work: &Path, label: &str, content: &Path) -> PathBuf {
    let img = work.join(format!("{label}.vfat"));
    run(Command::new("truncate").args(["-s", "2M"]).arg(&img));
    run(Command::new("mkfs.vfat").args(["-n", label]).arg(&img));
    for e in std::fs::read_dir(content).unwrap() {
        run(Command::new("mcopy")
            .arg("-i")
            .arg(&img)
            .arg(e.unwrap().path())
            .arg("::/"));
    }
    img
}

fn ext4_image(work: &Path, label: &str, content: &Path) -> PathBuf {
    let img = work.join(format!("{label}.ext4"));
    run(Command::new("truncate").args(["-s", "8M"]).arg(&img));
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", label, "-d"])
        .arg(content)
        .arg(&img));
    img
}

fn cfg() -> AgentConfig {
    AgentConfig::default()
}

async fn check_cidata(img: PathBuf, fstype: FsType, label: &str) {
    assert_eq!(
        datasource::probe_path(&img).unwrap(),
        Some((fstype, label.to_string())),
        "label read from the image file"
    );
    let lo = Loop::attach(&img);
    let r = Root::with_devices(&[&lo]);
    let cands = datasource::detect(&r.root, &cfg().datasource_options());
    assert_eq!(cands.len(), 1, "{cands:?}");
    assert_eq!(cands[0].kind(), DatasourceKind::Nocloud);
    match &cands[0].source {
        Source::Nocloud(Seed::Device(d)) => {
            assert_eq!(d.fstype, fstype);
            assert_eq!(d.label, label);
            assert!(d.device.ends_with(lo.name()));
        }
        other => panic!("{other:?}"),
    }
    let result = datasource::fetch(&r.root, &cfg().datasource_options()).await;
    if kernel_has(fstype.name()) {
        let f = result.unwrap().unwrap();
        assert_eq!(f.source, "nocloud");
        assert_eq!(f.instance_id, "iid-drive");
        assert_eq!(f.userdata, b"#cloud-config\nfrom: drive\n");
        assert_eq!(f.signature.as_deref(), Some(&b"SIG"[..]));
    } else {
        eprintln!(
            "kernel lacks {}: checking the mount failure path",
            fstype.name()
        );
        let err = result.unwrap_err();
        match &err {
            DatasourceError::Mount {
                device,
                fstype: t,
                source,
                ..
            } => {
                assert!(device.ends_with(lo.name()));
                assert_eq!(*t, fstype.name());
                assert_eq!(*source, nix::errno::Errno::ENODEV);
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains(fstype.name()), "{err}");
    }
    r.assert_clean();
}

#[tokio::test]
async fn cidata_iso9660() {
    if !usable() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let seed = seed_dir("instance-id: iid-drive\n");
    check_cidata(
        iso_image(work.path(), "cidata", seed.path()),
        FsType::Iso9660,
        "cidata",
    )
    .await;
}

#[tokio::test]
async fn cidata_vfat() {
    if !usable() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let seed = seed_dir("instance-id: iid-drive\n");
    check_cidata(
        vfat_image(work.path(), "CIDATA", seed.path()),
        FsType::Vfat,
        "CIDATA",
    )
    .await;
}

#[tokio::test]
async fn cidata_ext4_mounted_read_and_unmounted() {
    if !usable() {
        return;
    }
    assert!(kernel_has("ext4"), "this test needs ext4 in the kernel");
    let work = tempfile::tempdir().unwrap();
    let seed = seed_dir("instance-id: iid-drive\nlocal-hostname: drive-host\n");
    let img = ext4_image(work.path(), "cidata", seed.path());
    check_cidata(img.clone(), FsType::Ext, "cidata").await;

    // A second, unrelated filesystem is ignored; the labelled one is used.
    let other_dir = tempfile::tempdir().unwrap();
    let other = ext4_image(work.path(), "data", other_dir.path());
    let (lo1, lo2) = (Loop::attach(&other), Loop::attach(&img));
    let r = Root::with_devices(&[&lo1, &lo2]);
    let f = datasource::fetch(&r.root, &cfg().datasource_options())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(f.hostname.as_deref(), Some("drive-host"));
    r.assert_clean();
}

#[tokio::test]
async fn drive_is_unmounted_after_an_error() {
    if !usable() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let seed = seed_dir("instance-id: [unclosed\n");
    let lo = Loop::attach(&ext4_image(work.path(), "CIDATA", seed.path()));
    let r = Root::with_devices(&[&lo]);
    let err = datasource::fetch(&r.root, &cfg().datasource_options())
        .await
        .unwrap_err();
    assert!(matches!(err, DatasourceError::Parse { .. }), "{err:?}");
    assert!(err.to_string().contains("meta-data"), "{err}");
    r.assert_clean();
}

#[tokio::test]
async fn openstack_config_drive() {
    if !usable() {
        return;
    }
    let content = tempfile::tempdir().unwrap();
    let latest = content.path().join("openstack/latest");
    std::fs::create_dir_all(&latest).unwrap();
    std::fs::write(
        latest.join("meta_data.json"),
        r#"{"uuid":"83679162-1378-4288-a2d4-70e13ec132aa","hostname":"os-node","admin_pass":"hunter2"}"#,
    )
    .unwrap();
    std::fs::write(
        latest.join("user_data"),
        "#cloud-config\nfrom: config-drive\n",
    )
    .unwrap();
    std::fs::write(latest.join("user_data.sig"), "OSSIG").unwrap();
    let work = tempfile::tempdir().unwrap();

    // The usual config drive is ISO9660; check detection on it.
    let iso = Loop::attach(&iso_image(work.path(), "config-2", content.path()));
    let r = Root::with_devices(&[&iso]);
    let cands = datasource::detect(&r.root, &cfg().datasource_options());
    assert_eq!(cands.len(), 1, "{cands:?}");
    assert_eq!(cands[0].kind(), DatasourceKind::Openstack);
    drop(r);
    drop(iso);

    // Mounting and reading on ext4 (which every kernel here has).
    let lo = Loop::attach(&ext4_image(work.path(), "config-2", content.path()));
    let r = Root::with_devices(&[&lo]);
    let f = datasource::fetch(&r.root, &cfg().datasource_options())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(f.source, "openstack");
    assert_eq!(f.instance_id, "83679162-1378-4288-a2d4-70e13ec132aa");
    assert_eq!(f.hostname.as_deref(), Some("os-node"));
    assert_eq!(f.userdata, b"#cloud-config\nfrom: config-drive\n");
    assert_eq!(f.signature.as_deref(), Some(&b"OSSIG"[..]));
    assert!(!f.metadata.to_string().contains("hunter2"));
    r.assert_clean();
}
