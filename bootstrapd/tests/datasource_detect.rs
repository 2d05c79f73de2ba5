//! Detection order, explicit choice, the no-datasource case, NoCloud-net, cmdline_url and
//! the baked-in file, against real files in a `--root` tree and real HTTP servers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use bootstrapd::config::AgentConfig;
use bootstrapd::datasource::{self, DatasourceError, DatasourceKind, Seed, Source};
use bootstrapd::fsutil::HostRoot;

struct Root {
    _dir: tempfile::TempDir,
    root: HostRoot,
}

impl Root {
    fn new() -> Self {
        let d = tempfile::tempdir().unwrap();
        let root = HostRoot::new(Some(d.path().into()));
        Root { _dir: d, root }
    }

    fn write(&self, path: &str, data: impl AsRef<[u8]>) {
        let p = self.root.path(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
}

fn cfg() -> AgentConfig {
    let mut c = AgentConfig::default();
    c.timeouts.initial_backoff_ms = 5;
    c.timeouts.max_backoff_ms = 20;
    c.timeouts.datasource_deadline_ms = 20_000;
    c
}

/// Serves a NoCloud seed below /seed/ and a plain userdata file at /ud.
async fn seed_server(hits: Arc<AtomicUsize>) -> String {
    let app = Router::new()
        .route(
            "/seed/meta-data",
            get(|| async { "instance-id: iid-net-1\nlocal-hostname: netnode\n" }),
        )
        .route(
            "/seed/user-data",
            get(|| async {
                Response::builder()
                    .header("X-Bootstrapd-Signature", "c2lnbmF0dXJl")
                    .body(axum::body::Body::from("#cloud-config\nfrom: net\n"))
                    .unwrap()
            }),
        )
        .route("/ud", get(|| async { "from: url\n" }))
        .route(
            "/{*rest}",
            any(|State(h): State<Arc<AtomicUsize>>| async move {
                h.fetch_add(1, Ordering::SeqCst);
                StatusCode::NOT_FOUND.into_response()
            }),
        )
        .with_state(hits);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn nothing_found_means_none_without_network() {
    // A metadata service that counts requests: detection must not ask it anything.
    let hits = Arc::new(AtomicUsize::new(0));
    let base = seed_server(hits.clone()).await;
    let r = Root::new();
    r.write(
        "/proc/cmdline",
        "BOOT_IMAGE=/vmlinuz root=/dev/vda ro quiet\n",
    );
    r.write("/sys/class/dmi/id/sys_vendor", "QEMU\n");
    r.write(
        "/sys/class/dmi/id/product_name",
        "Standard PC (Q35 + ICH9, 2009)\n",
    );
    r.write("/etc/machine-id", "abc\n");
    let mut c = cfg();
    c.metadata.ec2 = base.clone();
    c.metadata.openstack = base;
    assert!(datasource::detect(&r.root, &c.datasource_options()).is_empty());
    assert!(
        datasource::fetch(&r.root, &c.datasource_options())
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    // An empty root (no /proc, no /sys) as well.
    let empty = Root::new();
    assert!(
        datasource::fetch(&empty.root, &c.datasource_options())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn nocloud_net_from_kernel_cmdline() {
    let base = seed_server(Arc::default()).await;
    let r = Root::new();
    r.write(
        "/proc/cmdline",
        format!("root=/dev/vda ds=nocloud;s={base}/seed/;h=override-host console=ttyS0\n"),
    );
    let cands = datasource::detect(&r.root, &cfg().datasource_options());
    assert_eq!(cands.len(), 1);
    assert_eq!(cands[0].kind(), DatasourceKind::Nocloud);
    assert!(matches!(cands[0].source, Source::Nocloud(Seed::Url { .. })));
    let f = datasource::fetch(&r.root, &cfg().datasource_options())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(f.source, "nocloud");
    assert_eq!(f.userdata, b"#cloud-config\nfrom: net\n");
    assert_eq!(f.signature.as_deref(), Some(&b"signature"[..]));
    assert_eq!(f.instance_id, "iid-net-1");
    assert_eq!(f.hostname.as_deref(), Some("override-host"));
    assert_eq!(f.metadata["local-hostname"], "netnode");
}

#[tokio::test]
async fn nocloud_net_from_dmi_serial_without_trailing_slash() {
    let base = seed_server(Arc::default()).await;
    let r = Root::new();
    r.write(
        "/sys/class/dmi/id/product_serial",
        format!("ds=nocloud-net;s={base}/seed\n"),
    );
    let f = datasource::fetch(&r.root, &cfg().datasource_options())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(f.instance_id, "iid-net-1");
    assert_eq!(f.hostname.as_deref(), Some("netnode"));
}

#[tokio::test]
async fn nocloud_net_seed_missing_is_an_error() {
    let base = seed_server(Arc::default()).await;
    let r = Root::new();
    r.write("/proc/cmdline", format!("ds=nocloud;s={base}/nothing/\n"));
    let err = datasource::fetch(&r.root, &cfg().datasource_options())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/nothing/"), "{err}");
}

#[tokio::test]
async fn order_of_detected_sources() {
    let base = seed_server(Arc::default()).await;
    let r = Root::new();
    r.write("/proc/cmdline", format!("bootstrapd.url={base}/ud\n"));
    r.write(
        "/var/lib/cloud/seed/nocloud/meta-data",
        "instance-id: seeded\n",
    );
    r.write("/var/lib/cloud/seed/nocloud/user-data", "from: seed\n");
    r.write("/etc/bootstrapd/userdata.yaml", "from: file\n");
    r.write("/sys/class/dmi/id/bios_vendor", "Amazon EC2\n");
    r.write("/etc/machine-id", "0f0f\n");
    let kinds: Vec<_> = datasource::detect(&r.root, &cfg().datasource_options())
        .into_iter()
        .map(|c| c.kind())
        .collect();
    assert_eq!(
        kinds,
        [
            DatasourceKind::CmdlineUrl,
            DatasourceKind::Nocloud,
            DatasourceKind::Ec2,
            DatasourceKind::LocalFile
        ]
    );
    let f = datasource::fetch(&r.root, &cfg().datasource_options())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(f.source, "cmdline_url");
    assert_eq!(f.userdata, b"from: url\n");
    assert_eq!(f.instance_id, "0f0f");
}

#[tokio::test]
async fn explicit_choice_wins_and_cmdline_beats_config() {
    let r = Root::new();
    r.write("/var/lib/cloud/seed/nocloud/user-data", "from: seed\n");
    r.write("/etc/bootstrapd/userdata.yaml", "from: file\n");
    r.write("/etc/bootstrapd/userdata.yaml.sig", [9u8, 9]);
    r.write("/etc/machine-id", "mid\n");

    let mut c = cfg();
    c.datasource = Some(DatasourceKind::LocalFile);
    let cands = datasource::detect(&r.root, &c.datasource_options());
    assert_eq!(cands.len(), 1);
    assert!(cands[0].explicit);
    let f = datasource::fetch(&r.root, &c.datasource_options())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(f.source, "local_file");
    assert_eq!(f.signature.as_deref(), Some(&[9u8, 9][..]));
    assert_eq!(f.instance_id, "mid");

    r.write("/proc/cmdline", "bootstrapd.datasource=nocloud\n");
    let f = datasource::fetch(&r.root, &c.datasource_options())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(f.source, "nocloud");
    assert_eq!(f.userdata, b"from: seed\n");
    assert_eq!(f.instance_id, "mid", "no meta-data: machine-id");

    r.write("/proc/cmdline", "bootstrapd.datasource=none\n");
    assert!(
        datasource::fetch(&r.root, &c.datasource_options())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn explicit_but_missing_and_unknown_names_are_errors() {
    let r = Root::new();
    r.write("/proc/cmdline", "bootstrapd.datasource=openstack\n");
    let err = datasource::fetch(&r.root, &cfg().datasource_options())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            DatasourceError::Missing {
                kind: DatasourceKind::Openstack,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("config-2"), "{err}");

    r.write("/proc/cmdline", "bootstrapd.datasource=azure\n");
    let err = datasource::fetch(&r.root, &cfg().datasource_options())
        .await
        .unwrap_err();
    assert!(
        matches!(err, DatasourceError::UnknownDatasource { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("azure"));
    assert!(datasource::detect(&r.root, &cfg().datasource_options()).is_empty());
}

#[tokio::test]
async fn cmdline_url_404_and_oversize_are_errors() {
    let base = seed_server(Arc::default()).await;
    let r = Root::new();
    r.write("/etc/machine-id", "m\n");
    r.write("/proc/cmdline", format!("bootstrapd.url={base}/missing\n"));
    let err = datasource::fetch(&r.root, &cfg().datasource_options())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");

    r.write("/proc/cmdline", format!("bootstrapd.url={base}/ud\n"));
    let mut c = cfg();
    c.max_userdata_bytes = 4;
    let err = datasource::fetch(&r.root, &c.datasource_options())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("larger than 4 bytes"), "{err}");
}

#[tokio::test]
async fn local_file_size_limit_and_missing_machine_id() {
    let r = Root::new();
    r.write("/etc/bootstrapd/userdata.yaml", "0123456789");
    let mut c = cfg();
    c.max_userdata_bytes = 5;
    let err = datasource::fetch(&r.root, &c.datasource_options())
        .await
        .unwrap_err();
    assert!(matches!(err, DatasourceError::TooLarge { .. }), "{err:?}");
    assert!(err.to_string().contains("userdata.yaml"), "{err}");

    let err = datasource::fetch(&r.root, &cfg().datasource_options())
        .await
        .unwrap_err();
    assert!(
        matches!(err, DatasourceError::NoInstanceId { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn nocloud_seedfrom_file_url() {
    let r = Root::new();
    r.write("/srv/seed/meta-data", "instance-id: file-seed\n");
    r.write("/srv/seed/user-data", "x: 1\n");
    r.write("/proc/cmdline", "ds=nocloud;s=file:///srv/seed/\n");
    let f = datasource::fetch(&r.root, &cfg().datasource_options())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(f.instance_id, "file-seed");
    assert_eq!(f.userdata, b"x: 1\n");
}

#[tokio::test]
async fn bad_meta_data_names_file_and_position() {
    let r = Root::new();
    r.write(
        "/var/lib/cloud/seed/nocloud/meta-data",
        "instance-id: a\n  bad: [\n",
    );
    r.write("/var/lib/cloud/seed/nocloud/user-data", "x");
    let err = datasource::fetch(&r.root, &cfg().datasource_options())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("seed/nocloud/meta-data"), "{text}");
    assert!(matches!(err, DatasourceError::Parse { .. }), "{err:?}");
}

/// One userdata size limit: by default a source delivers exactly what the parser accepts
/// (`userdata::MAX_USERDATA_BYTES`), and one byte more is refused at the source, before
/// parsing; bootstrapd.toml may lower the limit, never raise it.
#[tokio::test]
async fn userdata_size_limit_at_the_boundary() {
    let limit = bootstrapd::userdata::MAX_USERDATA_BYTES;
    let mut doc = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../configs/examples/worker.yaml"
    ))
    .unwrap();
    doc.push(b'#');
    doc.resize(limit, b'x');
    let r = Root::new();
    r.write("/etc/machine-id", "m\n");
    r.write("/etc/bootstrapd/userdata.yaml", &doc);
    let c = AgentConfig::default();
    assert_eq!(c.max_userdata_bytes, limit);
    let f = datasource::fetch(&r.root, &c.datasource_options())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(f.userdata.len(), limit);
    assert!(bootstrapd::userdata::parse(&f.userdata).is_ok());

    doc.push(b'x');
    r.write("/etc/bootstrapd/userdata.yaml", &doc);
    let err = datasource::fetch(&r.root, &c.datasource_options())
        .await
        .unwrap_err();
    assert!(matches!(err, DatasourceError::TooLarge { .. }), "{err:?}");
    assert!(
        err.to_string()
            .ends_with("userdata.yaml: larger than the limit of 1048576 bytes"),
        "{err}"
    );

    let toml = std::path::Path::new("bootstrapd.toml");
    let at = AgentConfig::parse(&format!("max_userdata_bytes = {limit}"), toml).unwrap();
    assert_eq!(at.max_userdata_bytes, limit);
    let e = AgentConfig::parse(&format!("max_userdata_bytes = {}", limit + 1), toml)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("bootstrapd.toml: max_userdata_bytes must be between 1 and 1048576"),
        "{e}"
    );
    assert!(AgentConfig::parse("max_userdata_bytes = 0", toml).is_err());
}
