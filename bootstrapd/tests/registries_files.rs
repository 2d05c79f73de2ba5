//! `registries` in mode system-agent, the runtime stage below a test root: RKE2's and K3s's
//! registries.yaml written 0600 (they hold the password), containerd's hosts.toml per
//! mirrored registry, nothing to do on the next run, and bootstrapd's own files removed
//! once the userdata drops the key (the operator's left alone).

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use bootstrapd::actions::{Target, apply_all};
use bootstrapd::facts::runtime::gather;
use bootstrapd::fsutil::HostRoot;
use bootstrapd::plan::runtime::plan;
use bootstrapd::plan::{Finding, Outcome};
use bootstrapd::secret::Secret;
use bootstrapd::userdata::{
    RegistryAuth, RegistryConfig, RegistryMirror, RegistrySettings, Settings,
};
use common::SettingsBuilder;

const PASSWORD: &str = "s3cret-registry-pw";

fn settings(registries: RegistrySettings) -> Settings {
    let mut s = SettingsBuilder::system_agent("https://rancher.lab").build();
    s.registries = registries;
    s
}

fn registries() -> RegistrySettings {
    RegistrySettings {
        mirrors: BTreeMap::from([
            (
                "docker.io".to_string(),
                RegistryMirror {
                    endpoint: vec!["https://mirror.lab:5000".into()],
                },
            ),
            (
                "10.0.2.2:5443".to_string(),
                RegistryMirror {
                    endpoint: vec!["http://10.0.2.2:5001".into()],
                },
            ),
        ]),
        configs: BTreeMap::from([(
            "10.0.2.2:5443".to_string(),
            RegistryConfig {
                auth: Some(RegistryAuth::Basic {
                    username: "agent".into(),
                    password: Secret::new(PASSWORD),
                }),
            },
        )]),
    }
}

async fn run(root: &HostRoot, s: &Settings) -> Vec<Finding> {
    let facts = gather(root, s, None).await;
    let steps = plan(s, &facts);
    let previews: Vec<Finding> = steps.iter().map(|st| st.preview()).collect();
    let shown = format!("{previews:?}{}", serde_json::to_string(&steps).unwrap());
    assert!(!shown.contains(PASSWORD), "the plan shows the password");
    let findings = apply_all(Target::quiet(root, None), &steps).await;
    let journaled = serde_json::to_string(&findings).unwrap();
    assert!(
        !journaled.contains(PASSWORD),
        "a finding holds the password"
    );
    findings
}

fn mode(root: &HostRoot, path: &str) -> u32 {
    std::fs::metadata(root.path(path))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

#[tokio::test]
async fn registries_yaml_and_hosts_toml_are_written_kept_and_removed() {
    let d = tempfile::tempdir().unwrap();
    let root = HostRoot::new(Some(d.path().to_path_buf()));
    // The operator's own hosts.toml for a registry the userdata does not name.
    let theirs = "/etc/containerd/certs.d/quay.io/hosts.toml";
    std::fs::create_dir_all(root.path(theirs).parent().unwrap()).unwrap();
    std::fs::write(root.path(theirs), "server = \"https://quay.io\"\n").unwrap();

    let s = settings(registries());
    let first = run(&root, &s).await;
    let changed: Vec<&str> = first
        .iter()
        .filter(|f| f.outcome == Outcome::Changed)
        .map(|f| f.step.as_str())
        .collect();
    assert_eq!(
        changed,
        [
            "registries.rke2",
            "registries.k3s",
            "registries.containerd",
            "registries.containerd"
        ],
        "{first:?}"
    );
    for path in [
        "/etc/rancher/rke2/registries.yaml",
        "/etc/rancher/k3s/registries.yaml",
    ] {
        assert_eq!(mode(&root, path), 0o600, "{path}");
        let text = std::fs::read_to_string(root.path(path)).unwrap();
        let json = text.split_once('\n').unwrap().1;
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["configs"]["10.0.2.2:5443"]["auth"]["password"], PASSWORD);
        assert_eq!(
            v["mirrors"]["docker.io"]["endpoint"][0],
            "https://mirror.lab:5000"
        );
    }
    let hub =
        std::fs::read_to_string(root.path("/etc/containerd/certs.d/docker.io/hosts.toml")).unwrap();
    assert!(
        hub.contains("server = \"https://registry-1.docker.io\""),
        "{hub}"
    );
    assert!(hub.contains("[host.\"https://mirror.lab:5000\"]"), "{hub}");
    let lab =
        std::fs::read_to_string(root.path("/etc/containerd/certs.d/10.0.2.2:5443/hosts.toml"))
            .unwrap();
    assert!(!lab.contains(PASSWORD) && !lab.contains("agent"), "{lab}");

    // Nothing to do the second time.
    let second = run(&root, &s).await;
    assert!(
        second
            .iter()
            .filter(|f| f.step.starts_with("registries"))
            .all(|f| f.outcome == Outcome::Ok),
        "{second:?}"
    );

    // The key gone: bootstrapd's files go, with their directories; the operator's stays.
    let third = run(&root, &settings(RegistrySettings::default())).await;
    assert_eq!(
        third
            .iter()
            .filter(|f| f.outcome == Outcome::Changed)
            .count(),
        4,
        "{third:?}"
    );
    for gone in [
        "/etc/rancher/rke2/registries.yaml",
        "/etc/rancher/k3s/registries.yaml",
        "/etc/containerd/certs.d/docker.io",
        "/etc/containerd/certs.d/10.0.2.2:5443",
    ] {
        assert!(!root.path(gone).exists(), "{gone}");
    }
    assert!(root.path(theirs).exists());
}
