//! `bootstrapd local` (the early stage) on a --root tree: a NoCloud seed's network-config
//! becomes systemd-networkd files; reruns change nothing; bad input changes nothing and is
//! reported with its line and column, by `local`, then by `run` and `status`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SEED: &str = "var/lib/cloud/seed/nocloud";
const NET: &str = "etc/systemd/network";

const STATIC: &str = "\
network:
  version: 2
  ethernets:
    nic0:
      match:
        macaddress: \"52:54:00:12:34:56\"
      dhcp4: false
      addresses: [10.0.2.50/24]
      gateway4: 10.0.2.2
      nameservers:
        addresses: [10.0.2.3]
";

/// The image's catch-all, which bootstrapd must never touch.
const IMAGE_DHCP: &str = "[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n";

struct Host {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Host {
    /// A root with a NoCloud seed directory (meta-data) and the image's 99-dhcp.network.
    fn new() -> Host {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        std::fs::create_dir_all(root.join(SEED)).unwrap();
        std::fs::write(root.join(SEED).join("meta-data"), "instance-id: i-net\n").unwrap();
        std::fs::create_dir_all(root.join(NET)).unwrap();
        std::fs::write(root.join(NET).join("99-dhcp.network"), IMAGE_DHCP).unwrap();
        Host { _dir: dir, root }
    }

    fn network_config(&self, text: &str) {
        std::fs::write(self.root.join(SEED).join("network-config"), text).unwrap();
    }

    fn bootstrapd(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_bootstrapd"))
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .env("BOOTSTRAPD_LOG", "error")
            .env_remove("INVOCATION_ID")
            .output()
            .unwrap()
    }

    fn net(&self, name: &str) -> PathBuf {
        self.root.join(NET).join(name)
    }

    /// Every file in /etc/systemd/network with its content, sorted.
    fn network_dir(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = std::fs::read_dir(self.root.join(NET))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = e.file_name().into_string().unwrap();
                (name, std::fs::read_to_string(e.path()).unwrap_or_default())
            })
            .collect();
        v.sort();
        v
    }

    fn record(&self) -> serde_json::Value {
        let p = self.root.join("var/lib/bootstrapd/network.json");
        serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn identity(p: &Path) -> (u64, i64, i64) {
    let m = std::fs::metadata(p).unwrap();
    (m.ino(), m.mtime(), m.mtime_nsec())
}

#[test]
fn seed_network_config_is_written_once_and_a_rerun_changes_nothing() {
    let h = Host::new();
    h.network_config(STATIC);
    let out = h.bootstrapd(&["local"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let file = h.net("10-bootstrapd-nic0.network");
    let body = std::fs::read_to_string(&file).unwrap();
    for line in [
        "MACAddress=52:54:00:12:34:56",
        "DHCP=no",
        "Address=10.0.2.50/24",
        "Gateway=10.0.2.2",
        "DNS=10.0.2.3",
    ] {
        assert!(body.lines().any(|l| l == line), "{line} missing:\n{body}");
    }
    assert!(body.starts_with("# written by bootstrapd from network-config, sha256 "));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    assert_eq!(
        std::fs::read_to_string(h.net("99-dhcp.network")).unwrap(),
        IMAGE_DHCP
    );
    let rec = h.record();
    assert_eq!(rec["state"], "done");
    assert_eq!(
        rec["written"][0],
        "/etc/systemd/network/10-bootstrapd-nic0.network"
    );

    let before = (h.network_dir(), identity(&file));
    let out = h.bootstrapd(&["local"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("already in place"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!((h.network_dir(), identity(&file)), before);
    assert_eq!(h.record()["written"], serde_json::json!([]));
}

#[test]
fn a_new_config_replaces_bootstrapds_files_only() {
    let h = Host::new();
    h.network_config(STATIC);
    assert_eq!(h.bootstrapd(&["local"]).status.code(), Some(0));
    // Named like ours but not ours: an operator's file.
    let manual = "[Match]\nName=eth9\n\n[Network]\nAddress=192.0.2.9/24\n";
    std::fs::write(h.net("10-bootstrapd-manual.network"), manual).unwrap();
    h.network_config("version: 2\nethernets:\n  eth1:\n    dhcp4: true\n");
    let out = h.bootstrapd(&["local"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let names: Vec<String> = h.network_dir().into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "10-bootstrapd-eth1.network",
            "10-bootstrapd-manual.network",
            "99-dhcp.network"
        ]
    );
    assert_eq!(
        std::fs::read_to_string(h.net("10-bootstrapd-manual.network")).unwrap(),
        manual
    );
    assert_eq!(
        h.record()["removed"][0],
        "/etc/systemd/network/10-bootstrapd-nic0.network"
    );

    // One of ours edited by hand is no longer ours: refused, nothing written.
    let eth1 = h.net("10-bootstrapd-eth1.network");
    let edited = std::fs::read_to_string(&eth1)
        .unwrap()
        .replace("DHCP=ipv4", "DHCP=no");
    std::fs::write(&eth1, &edited).unwrap();
    h.network_config(STATIC.replace("nic0", "eth1").as_str());
    let before = h.network_dir();
    let out = h.bootstrapd(&["local"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("was not written by bootstrapd"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(h.network_dir(), before);
}

#[test]
fn a_bad_network_config_writes_nothing_and_fails_local_run_and_status() {
    let h = Host::new();
    h.network_config(STATIC);
    assert_eq!(h.bootstrapd(&["local"]).status.code(), Some(0));
    let before = h.network_dir();
    h.network_config(
        &STATIC
            .replace("10.0.2.2", "10.0.2.x")
            .replace("dhcp4: false", "dhcp4: maybe"),
    );
    let out = h.bootstrapd(&["local"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    let place = h
        .root
        .join(SEED)
        .join("network-config")
        .display()
        .to_string();
    assert!(
        err.contains(&format!(
            "{place}:7:14: network.ethernets.nic0.dhcp4: expected `true` or `false`"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{place}:9:17: network.ethernets.nic0.gateway4: `10.0.2.x` is not an IPv4 address"
        )),
        "{err}"
    );
    assert_eq!(h.network_dir(), before);
    assert_eq!(h.record()["state"], "failed");

    // The main run does not go on over DHCP: it fails with the reason, before fetching.
    let out = h.bootstrapd(&["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let out = h.bootstrapd(&["status"]);
    assert_eq!(out.status.code(), Some(1));
    let status = text(&out.stdout);
    assert!(status.starts_with("status: failed\n"), "{status}");
    assert!(
        status.contains("error: the early local stage (bootstrapd local) failed"),
        "{status}"
    );
    assert!(
        status.contains("9:17: network.ethernets.nic0.gateway4"),
        "{status}"
    );
    assert!(
        status.contains("network (local stage): failed: nothing changed"),
        "{status}"
    );
}

#[test]
fn a_symlinked_network_config_is_refused() {
    let h = Host::new();
    let outside = h.root.join("outside-network-config");
    std::fs::write(&outside, STATIC).unwrap();
    std::os::unix::fs::symlink(&outside, h.root.join(SEED).join("network-config")).unwrap();
    let out = h.bootstrapd(&["local"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("symbolic link"),
        "{}",
        text(&out.stderr)
    );
    let names: Vec<String> = h.network_dir().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["99-dhcp.network"]);
}

#[test]
fn without_a_local_network_config_nothing_is_done_and_earlier_files_stay() {
    let h = Host::new();
    h.network_config(STATIC);
    assert_eq!(h.bootstrapd(&["local"]).status.code(), Some(0));
    let before = h.network_dir();
    // The cidata drive is often removed after the first boot: the files it gave stay.
    std::fs::remove_file(h.root.join(SEED).join("network-config")).unwrap();
    let out = h.bootstrapd(&["local"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains("no network-config in the local datasource"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(h.network_dir(), before);
    std::fs::remove_dir_all(h.root.join(SEED)).unwrap();
    let out = h.bootstrapd(&["local"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        text(&out.stdout).contains("no local datasource"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(h.record()["state"], "nothing");
    assert_eq!(h.network_dir(), before);
}

#[test]
fn a_seed_url_is_not_read_by_the_local_stage() {
    let h = Host::new();
    std::fs::remove_dir_all(h.root.join(SEED)).unwrap();
    std::fs::create_dir_all(h.root.join("proc")).unwrap();
    // An address nothing answers at: the stage must not even try it.
    std::fs::write(
        h.root.join("proc/cmdline"),
        "ds=nocloud;s=http://192.0.2.1/seed/\n",
    )
    .unwrap();
    let out = h.bootstrapd(&["local"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("no local datasource"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn validate_and_plan_show_the_network_files() {
    let h = Host::new();
    h.network_config(STATIC);
    let file = h.root.join(SEED).join("network-config");
    let out = h.bootstrapd(&["validate", "--network-config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("ok (network-config, 1 interface(s))"),
        "{stdout}"
    );
    assert!(
        stdout.contains("writes /etc/systemd/network/10-bootstrapd-nic0.network"),
        "{stdout}"
    );

    let bad = h.root.join("bad-network-config");
    std::fs::write(&bad, "network:\n  version: 1\n  config: []\n").unwrap();
    let out = h.bootstrapd(&["validate", "--network-config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stdout),
        format!(
            "{}:2:12: network.version: version 1 is not supported, use version 2 (netplan syntax: `ethernets`)\n",
            bad.display()
        )
    );

    let out = h.bootstrapd(&["plan"]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.lines().any(|l| l.starts_with("local")
            && l.contains("would-change")
            && l.contains("write /etc/systemd/network/10-bootstrapd-nic0.network")),
        "{stdout}"
    );
    assert_eq!(h.bootstrapd(&["local"]).status.code(), Some(0));
    let stdout = text(&h.bootstrapd(&["plan"]).stdout);
    assert!(
        stdout.lines().any(|l| l.starts_with("local")
            && l.contains(" ok ")
            && l.contains("in place: /etc/systemd/network/10-bootstrapd-nic0.network")),
        "{stdout}"
    );
}

#[test]
fn the_baked_in_network_config_beside_the_baked_userdata_is_read() {
    let h = Host::new();
    std::fs::remove_dir_all(h.root.join(SEED)).unwrap();
    let etc = h.root.join("etc/bootstrapd");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::write(etc.join("userdata.yaml"), "roles: [worker]\n").unwrap();
    std::fs::write(
        etc.join("network-config"),
        "version: 2\nethernets:\n  eth0: {dhcp4: true}\n",
    )
    .unwrap();
    let out = h.bootstrapd(&["local"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let body = std::fs::read_to_string(h.net("10-bootstrapd-eth0.network")).unwrap();
    assert!(
        body.contains("\nName=eth0\n") && body.contains("\nDHCP=ipv4\n"),
        "{body}"
    );
    assert!(
        h.record()["source"]
            .as_str()
            .unwrap()
            .contains("userdata.yaml")
    );
}

#[test]
fn the_shipped_example_is_valid() {
    let h = Host::new();
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/examples/network-config.yaml");
    let out = h.bootstrapd(&["validate", "--network-config", example.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("10-bootstrapd-uplink.network"), "{stdout}");
    assert!(stdout.contains("10-bootstrapd-eth1.network"), "{stdout}");
}

#[test]
fn the_main_run_notes_what_the_local_stage_did() {
    let h = Host::new();
    h.network_config(STATIC);
    // Userdata the validate stage refuses: the run ends there, after recording its notes.
    std::fs::write(h.root.join(SEED).join("user-data"), "roles: [worker]\n").unwrap();
    assert_eq!(h.bootstrapd(&["local"]).status.code(), Some(0));
    let out = h.bootstrapd(&["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let status = text(&h.bootstrapd(&["status"]).stdout);
    assert!(
        status.contains("note: network: from ")
            && status.contains("wrote /etc/systemd/network/10-bootstrapd-nic0.network"),
        "{status}"
    );
    assert!(
        status.contains("stage 2 of 5  validate  failed"),
        "{status}"
    );
    assert!(
        status.contains("network (local stage): ok: from "),
        "{status}"
    );
}

#[test]
fn a_local_stage_killed_before_it_finished_stops_the_main_run() {
    let h = Host::new();
    h.network_config(STATIC);
    assert_eq!(h.bootstrapd(&["local"]).status.code(), Some(0));
    // What a stage killed by its unit's timeout leaves: the record it saved first.
    let path = h.root.join("var/lib/bootstrapd/network.json");
    let mut rec = h.record();
    rec["state"] = "running".into();
    for k in ["written", "files", "removed"] {
        rec[k] = serde_json::json!([]);
    }
    std::fs::write(&path, serde_json::to_vec(&rec).unwrap()).unwrap();
    let out = h.bootstrapd(&["run"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    let status = text(&h.bootstrapd(&["status"]).stdout);
    assert!(status.contains("started and never finished"), "{status}");
    assert!(
        status.contains("network (local stage): unfinished"),
        "{status}"
    );
}
