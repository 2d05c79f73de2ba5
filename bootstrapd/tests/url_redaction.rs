//! Every URL in every error chain is redacted: a presigned userdata URL's query
//! (`X-Amz-Signature=...`) must reach neither stderr/journald, nor the journal's error, nor
//! sd_notify's `STATUS=` (which any local user reads through `systemctl status`).

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

const SIG: &str = "SIGSECRET0123456789abcdef";

/// A loopback port nobody listens on: the fetch fails with reqwest's own error text, which
/// carries the whole URL.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn a_presigned_url_never_reaches_logs_journal_or_notify_status() {
    let d = tempfile::Builder::new()
        .prefix("ur")
        .tempdir_in("/tmp")
        .unwrap();
    let root = d.path();
    let url = format!(
        "http://127.0.0.1:{}/user-data?X-Amz-Credential=AKIAEXAMPLE&X-Amz-Signature={SIG}",
        closed_port()
    );
    std::fs::create_dir_all(root.join("proc")).unwrap();
    std::fs::write(
        root.join("proc/cmdline"),
        format!("quiet bootstrapd.url={url}\n"),
    )
    .unwrap();
    std::fs::create_dir_all(root.join("etc/bootstrapd")).unwrap();
    std::fs::write(
        root.join("etc/machine-id"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    std::fs::write(
        root.join("etc/bootstrapd/bootstrapd.toml"),
        "[timeouts]\ndatasource_deadline_ms = 3000\nattempt_ms = 1000\n\
         initial_backoff_ms = 10\nmax_backoff_ms = 50\nmax_attempts = 2\n",
    )
    .unwrap();
    let sock_path = root.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bootstrapd"))
        .arg("--root")
        .arg(root)
        .arg("run")
        .env("NOTIFY_SOCKET", &sock_path)
        .env("BOOTSTRAPD_LOG", "debug")
        .env_remove("INVOCATION_ID")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut notes = String::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = sock.recv(&mut buf) {
        notes.push_str(&String::from_utf8_lossy(&buf[..n]));
        notes.push('\n');
    }
    let journal =
        std::fs::read_to_string(root.join("var/lib/bootstrapd/state.json")).unwrap_or_default();

    // The failure itself is reported, with the place it came from.
    assert!(
        stderr.contains("127.0.0.1"),
        "stderr names no URL:\n{stderr}"
    );
    assert!(notes.contains("STATUS="), "no sd_notify status: {notes:?}");
    for (place, text) in [
        ("stderr", &stderr),
        ("STATUS", &notes),
        ("journal", &journal),
    ] {
        assert!(
            !text.contains(SIG),
            "{place} carries the signature:\n{text}"
        );
        assert!(
            !text.contains("AKIAEXAMPLE"),
            "{place} carries the credential:\n{text}"
        );
    }
}
