//! `trusted_ca` end to end: bootstrapd's own client trusts a server signed by a CA given
//! only through the userdata, and the prepare stage puts the CAs into a --root tree's trust
//! store with a stand-in for the distribution's tool (which records its runs).

mod common;

use common::{SettingsBuilder, ca_and_server, serve_tls, temp_root};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bootstrapd::actions::{Target, apply_all};
use bootstrapd::facts::host::gather;
use bootstrapd::fsutil::HostRoot;
use bootstrapd::http::{HttpClient, HttpError, Request, RetryPolicy, TlsTrust};
use bootstrapd::plan::prepare::plan;
use bootstrapd::plan::{Finding, Outcome};
use bootstrapd::userdata::{self, Settings, trusted_ca_anchors};

fn userdata_with_ca(pem: &str) -> Settings {
    let mut doc = String::from(
        "roles: [worker]\nrancher:\n  server: https://rancher.lab\n  token: t0k3n\ntrusted_ca:\n  - |\n",
    );
    for l in pem.lines() {
        doc.push_str(&format!("    {l}\n"));
    }
    userdata::parse(doc.as_bytes()).unwrap().settings
}

async fn get_with(trust: TlsTrust, url: &str) -> Result<u16, HttpError> {
    let client = HttpClient::builder(trust)
        .retry(RetryPolicy::once(Duration::from_secs(20)))
        .fail_fast_on_certificate(1)
        .build()
        .unwrap();
    let resp = client.send(&Request::get(url).unwrap()).await?;
    Ok(resp.status.as_u16())
}

#[tokio::test]
async fn the_client_trusts_the_userdatas_ca_beside_the_system_roots() {
    let (ca, cert, key) = ca_and_server();
    let url = serve_tls(
        &cert,
        &key,
        Router::new().route("/", get(|| async { "ok" })),
    )
    .await;
    let settings = userdata_with_ca(&ca);
    assert_eq!(settings.trusted_ca[0].count, 1);
    let with = TlsTrust::system_and(trusted_ca_anchors(&settings.trusted_ca));
    assert_eq!(get_with(with, &url).await.unwrap(), 200);
    let err = get_with(TlsTrust::SystemRoots, &url).await.unwrap_err();
    assert!(matches!(err, HttpError::Certificate { .. }), "{err}");
    // Nothing extra: the plain system roots.
    assert!(matches!(
        TlsTrust::system_and(Vec::new()),
        TlsTrust::SystemRoots
    ));
}

/// A stand-in for Debian's tool: records each run, and rebuilds the bundle from the
/// tree's local CAs as the real one does. `fail` makes it exit 1 with a message instead.
fn fake_tool(root: &Path, fail: bool) {
    let body = if fail {
        "echo 'E: cannot write /etc/ssl/certs' >&2\nexit 1\n"
    } else {
        "mkdir -p \"$root/etc/ssl/certs\"\n\
         cat \"$root\"/usr/local/share/ca-certificates/bootstrapd/*.crt \
         > \"$root/etc/ssl/certs/ca-certificates.crt\" 2>/dev/null || \
         : > \"$root/etc/ssl/certs/ca-certificates.crt\"\n"
    };
    let script = format!(
        "#!/bin/sh\nroot=\"$(cd \"$(dirname \"$0\")/../..\" && pwd)\"\necho ran >> \"$root/tool-runs\"\n{body}"
    );
    let tool = root.join("usr/sbin/update-ca-certificates");
    std::fs::create_dir_all(tool.parent().unwrap()).unwrap();
    std::fs::write(&tool, script).unwrap();
    std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A Debian tree: apt-get names the layout.
    std::fs::create_dir_all(root.join("usr/bin")).unwrap();
    std::fs::write(root.join("usr/bin/apt-get"), "").unwrap();
}

fn runs(root: &Path) -> usize {
    std::fs::read_to_string(root.join("tool-runs"))
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// The prepare stage's trusted-ca steps, planned from the tree and applied.
async fn apply_trust(root: &HostRoot, settings: &Settings) -> Vec<Finding> {
    let facts = gather(root, settings, None).await;
    let steps: Vec<_> = plan(settings, &facts)
        .into_iter()
        .filter(|s| s.step.starts_with("trusted-ca"))
        .collect();
    apply_all(Target::quiet(root, None), &steps).await
}

fn own_files(root: &Path) -> Vec<(String, u32)> {
    let dir = root.join("usr/local/share/ca-certificates/bootstrapd");
    let mut out: Vec<(String, u32)> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| {
                    let mode = e.metadata().unwrap().permissions().mode() & 0o7777;
                    (e.file_name().to_string_lossy().into_owned(), mode)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[tokio::test]
async fn the_store_is_written_once_the_tool_runs_once_and_leftovers_go() {
    let (dir, root) = temp_root();
    let root = root.with_live_system(true);
    fake_tool(dir.path(), false);
    let (a, b) = (ca_and_server().0, ca_and_server().0);
    let both = SettingsBuilder::rke1("https://rancher.lab")
        .trusted_ca(&format!("{a}{b}"))
        .build();

    let f = apply_trust(&root, &both).await;
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].outcome, Outcome::Changed, "{f:?}");
    assert!(f[0].detail.contains("ran `"), "{}", f[0].detail);
    assert_eq!(runs(dir.path()), 1);
    let files = own_files(dir.path());
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files[0].0.starts_with("bootstrapd-1-") && files[0].0.ends_with(".crt"));
    assert!(files[1].0.starts_with("bootstrapd-2-"));
    assert!(files.iter().all(|(_, m)| *m == 0o644), "{files:?}");

    // Second run: the same certificates change nothing and the tool does not run.
    let f = apply_trust(&root, &both).await;
    assert_eq!(f[0].outcome, Outcome::Ok, "{f:?}");
    assert!(f[0].detail.contains("sha256 "), "{}", f[0].detail);
    assert_eq!(runs(dir.path()), 1);

    // b leaves the userdata: its file goes and the store is rebuilt.
    let only_a = SettingsBuilder::rke1("https://rancher.lab")
        .trusted_ca(&a)
        .build();
    let f = apply_trust(&root, &only_a).await;
    assert_eq!(f[0].outcome, Outcome::Changed, "{f:?}");
    assert!(f[0].detail.contains("removed "), "{}", f[0].detail);
    assert_eq!(own_files(dir.path()).len(), 1);
    assert_eq!(runs(dir.path()), 2);
}

#[tokio::test]
async fn a_tree_without_the_live_system_gets_the_files_and_the_tool_runs_later() {
    let (dir, root) = temp_root();
    fake_tool(dir.path(), false);
    let s = SettingsBuilder::rke1("https://rancher.lab")
        .trusted_ca(&ca_and_server().0)
        .build();
    let f = apply_trust(&root, &s).await;
    assert_eq!(f[0].outcome, Outcome::Changed, "{f:?}");
    assert!(
        f[0].detail.contains("not run for a --root tree"),
        "{}",
        f[0].detail
    );
    assert_eq!((runs(dir.path()), own_files(dir.path()).len()), (0, 1));
    // First boot: the files are in place but not in the bundle, so the tool runs.
    let f = apply_trust(&root.with_live_system(true), &s).await;
    assert!(f[0].detail.starts_with("ran `"), "{}", f[0].detail);
    assert_eq!(runs(dir.path()), 1);
}

#[tokio::test]
async fn a_failing_tool_is_a_failed_step_naming_the_command_and_its_stderr() {
    let (dir, root) = temp_root();
    let root = root.with_live_system(true);
    fake_tool(dir.path(), true);
    let s = SettingsBuilder::rke1("https://rancher.lab")
        .trusted_ca(&ca_and_server().0)
        .build();
    let f = apply_trust(&root, &s).await;
    assert_eq!(f[0].outcome, Outcome::Failed, "{f:?}");
    assert!(
        f[0].detail
            .contains("usr/sbin/update-ca-certificates` exited with")
            && f[0].detail.contains("E: cannot write /etc/ssl/certs"),
        "{}",
        f[0].detail
    );
}

/// The apt key of a repository behind a private CA (`runtime.source.repo.key` as an https
/// URL): fetched when the userdata's `trusted_ca` holds the CA, refused without it.
#[tokio::test]
async fn the_apt_key_download_trusts_the_userdatas_ca() {
    use bootstrapd::plan::Step;
    use bootstrapd::plan::runtime::RuntimeAction;
    let (ca, cert, key) = ca_and_server();
    let url = serve_tls(
        &cert,
        &key,
        Router::new().route(
            "/key.gpg",
            get(|| async { b"\x99\x01\x0dbinarykey".to_vec() }),
        ),
    )
    .await;
    let step = Step {
        step: "runtime.repository-key",
        reason: "test",
        detail: String::new(),
        action: RuntimeAction::InstallAptKey {
            source: format!("{url}/key.gpg"),
            dest: "/etc/apt/keyrings/repo.gpg".into(),
        },
    };
    let settings = userdata_with_ca(&ca);
    let (d, root) = temp_root();
    let with_ca = Target {
        trusted_ca: &settings.trusted_ca,
        ..Target::quiet(&root, None)
    };
    let f = apply_all(with_ca, std::slice::from_ref(&step)).await;
    assert_eq!(f[0].outcome, Outcome::Changed, "{:?}", f[0]);
    let written = d.path().join("etc/apt/keyrings/repo.gpg");
    assert_eq!(std::fs::read(&written).unwrap(), b"\x99\x01\x0dbinarykey");
    std::fs::remove_file(&written).unwrap();
    let f = apply_all(Target::quiet(&root, None), &[step]).await;
    assert_eq!(f[0].outcome, Outcome::Failed, "{:?}", f[0]);
    assert!(f[0].detail.contains("certificate"), "{}", f[0].detail);
    assert!(!written.exists());
}
