//! The runtimes' proxy drop-ins applied to a --root tree: written 0600 with the proxy in
//! both cases, journaled without the password, kept on a second run, removed once the
//! userdata sets no proxy (an operator's own drop-in is left alone).

mod common;

use common::{SettingsBuilder, temp_root};

use std::os::unix::fs::PermissionsExt;

use bootstrapd::actions::{Target, apply_all};
use bootstrapd::facts::runtime::gather;
use bootstrapd::fsutil::HostRoot;
use bootstrapd::plan::runtime::plan;
use bootstrapd::plan::{Finding, Outcome};
use bootstrapd::secret::Secret;
use bootstrapd::state::{Stage, Store};
use bootstrapd::system::proxy::{CONTAINERD_DROPIN, DOCKER_DROPIN};
use bootstrapd::userdata::{ProxySettings, Settings};

const PASSWORD: &str = "hunter2";

fn with_proxy() -> Settings {
    SettingsBuilder::rke1("https://rancher.example")
        .proxy(ProxySettings {
            http: Some(Secret::new(format!(
                "http://agent:{PASSWORD}@10.0.2.2:3128/"
            ))),
            https: Some(Secret::new("http://10.0.2.2:3128/")),
            no_proxy: vec!["localhost".into(), "10.42.0.0/16".into()],
        })
        .build()
}

/// The runtime plan's proxy steps applied below `root`, and what `plan` would have shown.
async fn apply(root: &HostRoot, settings: &Settings) -> (Vec<Finding>, Vec<Finding>) {
    let facts = gather(root, settings, None).await;
    let steps: Vec<_> = plan(settings, &facts)
        .into_iter()
        .filter(|s| s.step.starts_with("runtime.proxy-"))
        .collect();
    let preview = steps.iter().map(|s| s.preview()).collect();
    let applied = apply_all(
        Target::quiet(root, None).with_proxy(&settings.proxy),
        &steps,
    )
    .await;
    (preview, applied)
}

fn outcomes(findings: &[Finding]) -> Vec<(String, Outcome)> {
    findings
        .iter()
        .map(|f| (f.step.clone(), f.outcome))
        .collect()
}

#[tokio::test]
async fn drop_ins_are_private_journaled_without_credentials_and_removed_when_unset() {
    let (dir, root) = temp_root();
    // apt-get present: the runtime plan gets as far as installing.
    std::fs::create_dir_all(root.path("/usr/bin")).unwrap();
    std::fs::write(root.path("/usr/bin/apt-get"), "").unwrap();
    let settings = with_proxy();

    let (preview, applied) = apply(&root, &settings).await;
    assert_eq!(
        outcomes(&preview),
        [
            ("runtime.proxy-docker".into(), Outcome::WouldChange),
            ("runtime.proxy-containerd".into(), Outcome::WouldChange),
        ]
    );
    assert_eq!(
        outcomes(&applied),
        [
            ("runtime.proxy-docker".into(), Outcome::Changed),
            ("runtime.proxy-containerd".into(), Outcome::Changed),
        ]
    );
    for path in [DOCKER_DROPIN, CONTAINERD_DROPIN] {
        let p = root.path(path);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{path}");
        let text = std::fs::read_to_string(&p).unwrap();
        let expect = format!(
            "[Service]\n\
             Environment=\"HTTP_PROXY=http://agent:{PASSWORD}@10.0.2.2:3128/\"\n\
             Environment=\"http_proxy=http://agent:{PASSWORD}@10.0.2.2:3128/\"\n\
             Environment=\"HTTPS_PROXY=http://10.0.2.2:3128/\"\n\
             Environment=\"https_proxy=http://10.0.2.2:3128/\"\n\
             Environment=\"NO_PROXY=localhost,10.42.0.0/16\"\n\
             Environment=\"no_proxy=localhost,10.42.0.0/16\"\n"
        );
        assert!(text.ends_with(&expect), "{path}:\n{text}");
    }

    // What `plan` shows and what the journal keeps: the URL redacted, never the password.
    let mut store = Store::open(&root).unwrap();
    store.begin("i-1", "local", "sha").unwrap();
    store.start_stage(Stage::Runtime).unwrap();
    store
        .finish_stage(Stage::Runtime, applied.clone(), None)
        .unwrap();
    let journal = std::fs::read_to_string(store.path()).unwrap();
    let shown = format!("{preview:?}{applied:?}");
    for text in [&journal, &shown] {
        assert!(!text.contains(PASSWORD), "{text}");
    }
    assert!(
        preview[0]
            .detail
            .contains("http://agent:redacted@10.0.2.2:3128/")
    );
    assert!(journal.contains("runtime.proxy-docker"));

    // Second run: as required, nothing changes.
    let (_, again) = apply(&root, &settings).await;
    assert!(again.iter().all(|f| f.outcome == Outcome::Ok), "{again:?}");

    // The proxy is gone from the userdata: bootstrapd's drop-ins go, an operator's stays.
    let own = "[Service]\nEnvironment=HTTP_PROXY=http://mine:3128\n";
    std::fs::write(root.path(CONTAINERD_DROPIN), own).unwrap();
    let plain = SettingsBuilder::rke1("https://rancher.example").build();
    let (preview, removed) = apply(&root, &plain).await;
    assert!(
        preview[0]
            .detail
            .starts_with(&format!("remove {DOCKER_DROPIN}"))
    );
    assert_eq!(
        outcomes(&removed),
        [
            ("runtime.proxy-docker".into(), Outcome::Changed),
            ("runtime.proxy-containerd".into(), Outcome::Ok),
        ]
    );
    assert!(!root.path(DOCKER_DROPIN).exists());
    assert_eq!(
        std::fs::read_to_string(root.path(CONTAINERD_DROPIN)).unwrap(),
        own
    );
    drop(dir);
}
