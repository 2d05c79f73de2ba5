//! Host preparation against a real systemd (252 on Debian 12) over the real system bus, on
//! the machine the test runs on. It changes that machine (stops and masks firewalld, loads
//! modules, sets sysctls), so it only runs when asked: in the VM,
//! `host_live-* --ignored --test-threads=1`.

mod common;

use common::SettingsBuilder;

use std::time::Duration;

use bootstrapd::actions::{Target, apply_all};
use bootstrapd::facts::host::{FIREWALLD_UNIT, gather};
use bootstrapd::facts::network::node_address;
use bootstrapd::fsutil::HostRoot;
use bootstrapd::plan::Outcome;
use bootstrapd::plan::prepare::plan;
use bootstrapd::system::systemd::Systemd;
use bootstrapd::userdata::*;

fn settings() -> Settings {
    SettingsBuilder::rke1("https://rancher.example")
        .node_name("vm-node")
        .host(HostSettings {
            swap: SwapPolicy::Off,
            ..HostSettings::default()
        })
        .build()
}

#[tokio::test]
#[ignore = "changes the host: needs systemd as PID 1 and root; run in the VM"]
async fn unit_jobs_over_dbus() {
    let sd = Systemd::connect(&HostRoot::default())
        .await
        .expect("system bus");
    let missing = sd
        .unit_state("bootstrapd-no-such-unit.service")
        .await
        .unwrap();
    assert!(missing.is_not_found(), "{missing}");

    let st = sd.unit_state(FIREWALLD_UNIT).await.unwrap();
    eprintln!("firewalld at start: {st}");
    if st.is_masked() {
        sd.unmask(&[FIREWALLD_UNIT]).await.unwrap();
        sd.reload().await.unwrap();
    }
    sd.enable(&[FIREWALLD_UNIT]).await.unwrap();
    sd.reload().await.unwrap();
    sd.start_and_wait(FIREWALLD_UNIT).await.unwrap();
    let st = sd.unit_state(FIREWALLD_UNIT).await.unwrap();
    assert_eq!(st.active_state, "active", "{st}");
    assert_eq!(st.unit_file_state, "enabled", "{st}");

    sd.stop_and_wait(FIREWALLD_UNIT).await.unwrap();
    // Stopping a stopped unit is a job too, finished at once: must not hang or fail.
    sd.stop_and_wait(FIREWALLD_UNIT).await.unwrap();
    let st = sd.unit_state(FIREWALLD_UNIT).await.unwrap();
    assert_eq!(st.active_state, "inactive", "{st}");
    // Back to running and enabled for the preparation test.
    sd.start_and_wait(FIREWALLD_UNIT).await.unwrap();
}

#[tokio::test]
#[ignore = "changes the host: needs systemd as PID 1 and root; run in the VM"]
async fn prepare_live_host_then_nothing_to_do() {
    let sd = Systemd::connect(&HostRoot::default())
        .await
        .expect("system bus");
    let root = HostRoot::new(None);
    let s = settings();

    let facts = gather(&root, &s, Some(&sd)).await;
    eprintln!("facts: {}", serde_json::to_string(&facts).unwrap());
    assert!(facts.errors.is_empty(), "{:?}", facts.errors);
    let steps = plan(&s, &facts);
    let findings = apply_all(Target::quiet(&root, Some(&sd)), &steps).await;
    for f in &findings {
        eprintln!("first run: {f:?}");
    }
    assert!(!findings.iter().any(|f| f.outcome == Outcome::Failed));
    let st = sd.unit_state(FIREWALLD_UNIT).await.unwrap();
    assert!(!st.is_active() && st.is_masked(), "{st}");

    let facts = gather(&root, &s, Some(&sd)).await;
    let steps = plan(&s, &facts);
    let findings = apply_all(Target::quiet(&root, Some(&sd)), &steps).await;
    for f in &findings {
        eprintln!("second run: {f:?}");
        assert!(
            matches!(f.outcome, Outcome::Ok | Outcome::Skipped | Outcome::Warning),
            "second run changed or failed: {f:?}"
        );
    }
    let addr = node_address(&HostRoot::default(), Duration::from_secs(60))
        .await
        .unwrap();
    eprintln!("node address: {addr}");
}
