//! systemd's own D-Bus API (org.freedesktop.systemd1), never `systemctl`.
//!
//! Jobs are awaited the way systemctl does it: `Subscribe()`, open the `JobRemoved` stream,
//! only then enqueue the job, and wait for that job path's `JobRemoved`. Opening the stream
//! first matters: a stop of an already-inactive unit finishes before the method reply arrives.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use zbus::proxy::CacheProperties;
use zbus::{Connection, OwnedObjectPath};

use crate::fsutil::HostRoot;

/// How long a start or stop job may take before we give up waiting (systemd's own default
/// stop timeout is 90 s; firewalld and docker stop well within it).
pub const JOB_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error("cannot connect to the system bus: {0}")]
    Connect(#[source] zbus::Error),
    #[error(transparent)]
    NotLive(#[from] crate::fsutil::NotLiveSystem),
    #[error("systemd {method}({what}) failed: {source}")]
    Call {
        method: &'static str,
        what: String,
        #[source]
        source: zbus::Error,
    },
    #[error("systemd job {job} for {unit} ended with result \"{result}\"")]
    JobFailed {
        unit: String,
        job: String,
        result: String,
    },
    #[error("systemd job for {unit} did not finish within {secs} s")]
    JobTimeout { unit: String, secs: u64 },
    #[error("the D-Bus signal stream closed while waiting for the job of {unit}")]
    StreamClosed { unit: String },
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
pub trait Manager {
    fn subscribe(&self) -> zbus::Result<()>;
    fn reload(&self) -> zbus::Result<()>;
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn disable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
    ) -> zbus::Result<Vec<(String, String, String)>>;
    fn enable_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
        force: bool,
    ) -> zbus::Result<(bool, Vec<(String, String, String)>)>;
    fn mask_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
        force: bool,
    ) -> zbus::Result<Vec<(String, String, String)>>;
    fn unmask_unit_files(
        &self,
        files: &[&str],
        runtime: bool,
    ) -> zbus::Result<Vec<(String, String, String)>>;

    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: OwnedObjectPath,
        unit: String,
        result: String,
    ) -> zbus::Result<()>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1"
)]
pub trait Unit {
    #[zbus(property)]
    fn load_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn sub_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn unit_file_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn need_daemon_reload(&self) -> zbus::Result<bool>;
    /// Microseconds since the epoch (CLOCK_REALTIME) the unit last became active; 0 never.
    #[zbus(property)]
    fn active_enter_timestamp(&self) -> zbus::Result<u64>;
}

/// A unit's state as systemd reports it (the strings of `systemctl show`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnitState {
    pub load_state: String,
    pub active_state: String,
    pub unit_file_state: String,
}

impl UnitState {
    /// No unit file anywhere: the software is not installed.
    pub fn is_not_found(&self) -> bool {
        self.load_state == "not-found"
    }

    pub fn is_masked(&self) -> bool {
        self.load_state == "masked" || self.unit_file_state == "masked"
    }

    /// Running or on its way there (activating/reloading count: they hold the unit up).
    pub fn is_active(&self) -> bool {
        matches!(
            self.active_state.as_str(),
            "active" | "activating" | "reloading" | "deactivating"
        )
    }

    pub fn is_enabled(&self) -> bool {
        matches!(
            self.unit_file_state.as_str(),
            "enabled" | "enabled-runtime" | "alias" | "static" | "indirect" | "generated"
        )
    }
}

impl std::fmt::Display for UnitState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "load={} active={} file={}",
            self.load_state,
            self.active_state,
            if self.unit_file_state.is_empty() {
                "-"
            } else {
                &self.unit_file_state
            }
        )
    }
}

/// A connection to the system manager on the system bus.
#[derive(Clone)]
pub struct Systemd {
    conn: Connection,
    manager: ManagerProxy<'static>,
    /// systemd answers a second Subscribe() on the same connection with AlreadySubscribed.
    subscribed: Arc<AtomicBool>,
}

impl std::fmt::Debug for Systemd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Systemd(system bus)")
    }
}

fn call_err(
    method: &'static str,
    what: impl Into<String>,
) -> impl FnOnce(zbus::Error) -> SystemdError {
    let what = what.into();
    move |source| SystemdError::Call {
        method,
        what,
        source,
    }
}

impl Systemd {
    /// Connects to the system bus, refused for a tree below `--root` (see [`HostRoot`]).
    pub async fn connect(root: &HostRoot) -> Result<Systemd, SystemdError> {
        root.system_service("systemd")?;
        let conn = Connection::system().await.map_err(SystemdError::Connect)?;
        // Uncached: a cached proxy starts with GetAll, a hundred Manager properties that
        // nothing here reads.
        let manager = ManagerProxy::builder(&conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(SystemdError::Connect)?;
        Ok(Systemd {
            conn,
            manager,
            subscribed: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The unit object of `name`. `LoadUnit` (not `GetUnit`) so that units systemd has not
    /// loaded yet and units without a file answer too (LoadState `not-found`) instead of
    /// erroring. Uncached: the state changes under us while jobs run.
    async fn unit(&self, name: &str) -> Result<UnitProxy<'static>, SystemdError> {
        let path = self
            .manager
            .load_unit(name)
            .await
            .map_err(call_err("LoadUnit", name))?;
        UnitProxy::builder(&self.conn)
            .path(path)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(call_err("Unit", name))
    }

    /// State of `name`, also of units that are not loaded or have no file.
    pub async fn unit_state(&self, name: &str) -> Result<UnitState, SystemdError> {
        let unit = self.unit(name).await?;
        let load_state = unit
            .load_state()
            .await
            .map_err(call_err("LoadState", name))?;
        let active_state = unit
            .active_state()
            .await
            .map_err(call_err("ActiveState", name))?;
        let unit_file_state = unit
            .unit_file_state()
            .await
            .map_err(call_err("UnitFileState", name))?;
        Ok(UnitState {
            load_state,
            active_state,
            unit_file_state,
        })
    }

    /// When the unit last became active (`ActiveEnterTimestamp`); None when it never did.
    pub async fn active_since(
        &self,
        name: &str,
    ) -> Result<Option<std::time::SystemTime>, SystemdError> {
        let usec = self
            .unit(name)
            .await?
            .active_enter_timestamp()
            .await
            .map_err(call_err("ActiveEnterTimestamp", name))?;
        Ok((usec > 0).then(|| std::time::UNIX_EPOCH + Duration::from_micros(usec)))
    }

    /// The unit's file changed on disk since systemd loaded it (`NeedDaemonReload`).
    pub async fn needs_reload(&self, name: &str) -> Result<bool, SystemdError> {
        self.unit(name)
            .await?
            .need_daemon_reload()
            .await
            .map_err(call_err("NeedDaemonReload", name))
    }

    pub async fn stop_and_wait(&self, name: &str) -> Result<(), SystemdError> {
        self.job_and_wait(name, false, JOB_TIMEOUT).await
    }

    pub async fn start_and_wait(&self, name: &str) -> Result<(), SystemdError> {
        self.job_and_wait(name, true, JOB_TIMEOUT).await
    }

    async fn job_and_wait(
        &self,
        name: &str,
        start: bool,
        timeout: Duration,
    ) -> Result<(), SystemdError> {
        let method = if start { "StartUnit" } else { "StopUnit" };
        self.ensure_subscribed(name).await?;
        let mut removed = self
            .manager
            .receive_job_removed()
            .await
            .map_err(call_err("AddMatch JobRemoved", name))?;
        let job = if start {
            self.manager.start_unit(name, "replace").await
        } else {
            self.manager.stop_unit(name, "replace").await
        }
        .map_err(call_err(method, name))?;
        tracing::debug!(unit = name, job = %job.as_str(), "{method} enqueued");

        let wait = async {
            while let Some(sig) = removed.next().await {
                let Ok(args) = sig.args() else {
                    continue;
                };
                if args.job().as_str() != job.as_str() {
                    continue;
                }
                return match args.result().as_str() {
                    "done" => Ok(()),
                    // "skipped": a stop of a unit that was already stopped in the meantime.
                    "skipped" if !start => Ok(()),
                    other => Err(SystemdError::JobFailed {
                        unit: name.to_string(),
                        job: job.as_str().to_string(),
                        result: other.to_string(),
                    }),
                };
            }
            Err(SystemdError::StreamClosed {
                unit: name.to_string(),
            })
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(r) => r,
            Err(_) => Err(SystemdError::JobTimeout {
                unit: name.to_string(),
                secs: timeout.as_secs(),
            }),
        }
    }

    /// Without Subscribe() systemd does not emit JobRemoved to this client at all.
    async fn ensure_subscribed(&self, name: &str) -> Result<(), SystemdError> {
        if self.subscribed.load(Ordering::Acquire) {
            return Ok(());
        }
        match self.manager.subscribe().await {
            Ok(()) => {}
            Err(zbus::Error::MethodError(err, _, _))
                if err.as_str() == "org.freedesktop.systemd1.AlreadySubscribed" => {}
            Err(source) => {
                return Err(SystemdError::Call {
                    method: "Subscribe",
                    what: name.to_string(),
                    source,
                });
            }
        }
        self.subscribed.store(true, Ordering::Release);
        Ok(())
    }

    /// Removes the units' enablement symlinks; returns the changes systemd made
    /// (`(type, file, destination)`), empty when there was nothing to do.
    pub async fn disable(
        &self,
        names: &[&str],
    ) -> Result<Vec<(String, String, String)>, SystemdError> {
        self.manager
            .disable_unit_files(names, false)
            .await
            .map_err(call_err("DisableUnitFiles", names.join(",")))
    }

    pub async fn enable(
        &self,
        names: &[&str],
    ) -> Result<Vec<(String, String, String)>, SystemdError> {
        self.manager
            .enable_unit_files(names, false, false)
            .await
            .map(|(_, changes)| changes)
            .map_err(call_err("EnableUnitFiles", names.join(",")))
    }

    /// Links the units to /dev/null in /etc. `force` so an existing unit file in /etc does not
    /// block the mask (systemctl mask does the same for its own symlinks).
    pub async fn mask(
        &self,
        names: &[&str],
    ) -> Result<Vec<(String, String, String)>, SystemdError> {
        self.manager
            .mask_unit_files(names, false, true)
            .await
            .map_err(call_err("MaskUnitFiles", names.join(",")))
    }

    pub async fn unmask(
        &self,
        names: &[&str],
    ) -> Result<Vec<(String, String, String)>, SystemdError> {
        self.manager
            .unmask_unit_files(names, false)
            .await
            .map_err(call_err("UnmaskUnitFiles", names.join(",")))
    }

    /// The system bus connection, for systemd's other services (hostnamed).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// daemon-reload: needed after unit file changes so systemd sees them (systemctl does it
    /// after disable/mask/enable too).
    pub async fn reload(&self) -> Result<(), SystemdError> {
        self.manager
            .reload()
            .await
            .map_err(call_err("Reload", "daemon"))
    }
}

/// The unit name systemd gives a path (`systemd-escape --path --suffix=SUFFIX`): `/dev/sda2`
/// -> `dev-sda2.swap`, `/swap file` -> `swap\x20file.swap`.
pub fn path_unit_name(path: &str, suffix: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() {
        return format!("-.{suffix}");
    }
    let mut out = String::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            out.push('-');
        }
        for (j, b) in part.bytes().enumerate() {
            let plain = b.is_ascii_alphanumeric()
                || b == b':'
                || b == b'_'
                || (b == b'.' && !(i == 0 && j == 0));
            if plain {
                out.push(b as char);
            } else {
                out.push_str(&format!("\\x{b:02x}"));
            }
        }
    }
    format!("{out}.{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_systemd_escape() {
        // Expected values from `systemd-escape --path --suffix=swap` (systemd 252).
        assert_eq!(path_unit_name("/dev/sda2", "swap"), "dev-sda2.swap");
        assert_eq!(path_unit_name("/swapfile", "swap"), "swapfile.swap");
        assert_eq!(
            path_unit_name("/dev/disk/by-uuid/1b2c-3d", "swap"),
            "dev-disk-by\\x2duuid-1b2c\\x2d3d.swap"
        );
        assert_eq!(
            path_unit_name("/dev/mapper/vg-swap_1", "swap"),
            "dev-mapper-vg\\x2dswap_1.swap"
        );
        assert_eq!(
            path_unit_name("//var//swap file/", "swap"),
            "var-swap\\x20file.swap"
        );
        assert_eq!(path_unit_name("/.hidden", "swap"), "\\x2ehidden.swap");
        assert_eq!(path_unit_name("/", "mount"), "-.mount");
    }

    #[test]
    fn unit_state_predicates() {
        let s = |l: &str, a: &str, f: &str| UnitState {
            load_state: l.into(),
            active_state: a.into(),
            unit_file_state: f.into(),
        };
        assert!(s("not-found", "inactive", "").is_not_found());
        assert!(s("masked", "inactive", "masked").is_masked());
        assert!(s("loaded", "active", "enabled").is_active());
        assert!(!s("loaded", "failed", "disabled").is_active());
        assert!(s("loaded", "active", "enabled").is_enabled());
        assert!(!s("loaded", "active", "disabled").is_enabled());
    }
}
