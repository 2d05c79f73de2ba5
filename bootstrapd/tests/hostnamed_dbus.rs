//! The hostname is set through org.freedesktop.hostname1 over a real D-Bus daemon: a private
//! `dbus-daemon --session` (this machine's system bus and hostnamed are left alone), on which
//! a small mock answers the hostname1 calls and records them.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use zbus::Variant;
use zbus::message::Type;
use zbus::{Connection, MessageStream};

use bootstrapd::system::hostnamed::{self, HostnamedError};

/// A private bus; the daemon is killed when dropped.
struct Bus {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bus() -> Bus {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("unix:path={}", dir.path().join("bus").display());
    let mut child = Command::new("dbus-daemon")
        .args(["--session", "--nofork", "--print-address=1", "--address"])
        .arg(&listen)
        .stdout(Stdio::piped())
        .spawn()
        .expect("dbus-daemon (package dbus-daemon or dbus) must be installed");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    Bus {
        child,
        address: line.trim().to_string(),
        _dir: dir,
    }
}

async fn connect(bus: &Bus) -> Connection {
    zbus::connection::Builder::address(bus.address.as_str())
        .build()
        .await
        .unwrap()
}

/// How the mock behaves.
#[derive(Clone, Copy)]
enum Mock {
    /// Like hostnamed: both names take the value set.
    Obliging,
    /// Answers the calls but keeps its static hostname (a name hostnamed could not write).
    Stubborn,
    /// Refuses SetStaticHostname as polkit would.
    Denying,
}

type Calls = Arc<Mutex<Vec<(String, String, bool)>>>;

/// Serves org.freedesktop.hostname1 on `conn` until the test ends.
async fn serve(conn: Connection, mock: Mock, calls: Calls) {
    conn.request_name("org.freedesktop.hostname1")
        .await
        .unwrap();
    let names = Arc::new(Mutex::new(("debian".to_string(), "debian".to_string())));
    let mut stream = MessageStream::from(&conn);
    tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            let h = msg.header();
            if h.message_type() != Type::MethodCall
                || h.path().map(|p| p.as_str()) != Some("/org/freedesktop/hostname1")
            {
                continue;
            }
            let member = h.member().map(|m| m.to_string()).unwrap_or_default();
            match member.as_str() {
                "SetStaticHostname" | "SetHostname" => {
                    let (name, interactive): (String, bool) = msg.body().deserialize().unwrap();
                    calls
                        .lock()
                        .unwrap()
                        .push((member.clone(), name.clone(), interactive));
                    if matches!(mock, Mock::Denying) {
                        conn.reply_error(
                            &h,
                            "org.freedesktop.DBus.Error.AccessDenied",
                            &"Permission denied",
                        )
                        .await
                        .unwrap();
                        continue;
                    }
                    {
                        let mut n = names.lock().unwrap();
                        match (member.as_str(), mock) {
                            ("SetStaticHostname", Mock::Obliging) => n.0 = name,
                            ("SetHostname", _) => n.1 = name,
                            _ => {}
                        }
                    }
                    conn.reply(&h, &()).await.unwrap();
                }
                "Get" => {
                    let (_, prop): (String, String) = msg.body().deserialize().unwrap();
                    let n = names.lock().unwrap().clone();
                    let v = if prop == "StaticHostname" { n.0 } else { n.1 };
                    conn.reply(&h, &Variant::from(v)).await.unwrap();
                }
                _ => {
                    conn.reply_error(&h, "org.freedesktop.DBus.Error.UnknownMethod", &member)
                        .await
                        .unwrap();
                }
            }
        }
    });
}

async fn set_against(mock: Mock) -> (Result<(), HostnamedError>, Vec<(String, String, bool)>) {
    let bus = bus();
    let calls = Calls::default();
    serve(connect(&bus).await, mock, calls.clone()).await;
    let client = connect(&bus).await;
    let r = hostnamed::set(&client, "node-52540012ab01").await;
    let c = calls.lock().unwrap().clone();
    (r, c)
}

#[tokio::test]
async fn the_static_then_the_transient_hostname_are_set_and_read_back() {
    let (r, calls) = set_against(Mock::Obliging).await;
    r.unwrap();
    let name = "node-52540012ab01".to_string();
    assert_eq!(
        calls,
        [
            ("SetStaticHostname".to_string(), name.clone(), false),
            ("SetHostname".to_string(), name, false)
        ]
    );
}

#[tokio::test]
async fn a_name_that_did_not_take_is_an_error() {
    let (r, _) = set_against(Mock::Stubborn).await;
    let e = r.unwrap_err();
    assert!(
        matches!(
            e,
            HostnamedError::NotSet {
                property: "StaticHostname",
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "systemd-hostnamed reports StaticHostname \"debian\" after setting \"node-52540012ab01\""
    );
}

#[tokio::test]
async fn a_refused_call_is_an_error_naming_the_method() {
    let (r, calls) = set_against(Mock::Denying).await;
    let e = r.unwrap_err().to_string();
    assert!(
        e.starts_with("systemd-hostnamed SetStaticHostname(node-52540012ab01) failed"),
        "{e}"
    );
    assert!(e.contains("Permission denied"), "{e}");
    assert_eq!(calls.len(), 1, "nothing called after the refusal");
}
