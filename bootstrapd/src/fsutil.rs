//! Crash-safe file writes and the `--root` prefix for host paths.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Writes `data` to `path` so that a crash at any instant leaves either the old file or the
/// new one, never a torn one: temp file in the same directory, fsync, rename, fsync the
/// directory. The file is created with `mode` from the start (no window where a secret is
/// world-readable).
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    write_through_temp(path, data, mode, "tmp", |tmp, path| fs::rename(tmp, path))
}

/// The steps `write_atomic` and `write_new` share: the directory made durable, `data` written
/// with `mode` to a temp file beside `path` and fsynced, `publish(temp, path)`, and an fsync
/// of the directory. The temp file never outlives the call.
fn write_through_temp(
    path: &Path,
    data: &[u8],
    mode: u32,
    tag: &str,
    publish: impl FnOnce(&Path, &Path) -> io::Result<()>,
) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    create_dir_all_durable(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.{tag}.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // An existing temp file keeps its old mode; enforce ours.
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        publish(&tmp, path)?;
        sync_dir(dir)
    })();
    // Gone already after a rename; still there after a link or a failure.
    let _ = fs::remove_file(&tmp);
    result
}

/// `create_dir_all`, then an fsync of the parent of every directory it created: a new
/// directory's entry lives in its parent, and until that parent is synced a power cut can
/// take the directory and every file in it (a lost `/etc/rancher/agent/cattle-id` registers
/// a second machine). Without this, syncing the file and its own directory is not enough.
pub fn create_dir_all_durable(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut cur = dir;
    while fs::symlink_metadata(cur).is_err() {
        missing.push(cur);
        match cur.parent() {
            Some(p) if !p.as_os_str().is_empty() => cur = p,
            _ => break,
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    // Top-down, so that each parent is durable before the entries below it are synced.
    for d in missing.iter().rev() {
        let parent = d
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        sync_dir(parent)?;
    }
    Ok(())
}

/// Writes `data` to `path` only if nothing is there yet, never replacing a file (a key that
/// was overwritten cannot be recovered). The file appears complete or not at all: temp file,
/// fsync, then link(2), which fails with `AlreadyExists` instead of replacing, and an fsync
/// of the directory.
pub fn write_new(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    write_through_temp(path, data, mode, "new", |tmp, path| {
        fs::hard_link(tmp, path)
    })
}

/// fsync of a directory: makes the entries created or renamed in it durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(test)]
    SYNCED.with(|s| s.borrow_mut().push(dir.to_path_buf()));
    File::open(dir)?.sync_all()
}

// The directories this thread fsynced, in order: what a power cut would keep is not
// observable in a test, so the tests check that every new directory was synced.
#[cfg(test)]
thread_local! {
    static SYNCED: std::cell::RefCell<Vec<PathBuf>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Host paths, optionally below a test root (`--root DIR`).
///
/// A tree below a root is not the running system: the running system's services (systemd
/// over the system bus, the Docker Engine, netlink) are off limits to it unless the caller
/// says so ([`HostRoot::with_live_system`], `--live-system`), so a test or an image build on
/// a CI host cannot stop and mask that host's units.
#[derive(Debug, Clone, Default)]
pub struct HostRoot {
    root: Option<PathBuf>,
    live_system: bool,
}

/// Refusal to use the running system's services for a tree below a root.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "--root {root}: not asking the running system's {service}; add --live-system to act on \
     this machine's services as well"
)]
pub struct NotLiveSystem {
    pub root: PathBuf,
    pub service: &'static str,
}

impl HostRoot {
    pub fn new(root: Option<PathBuf>) -> Self {
        HostRoot {
            root: root.filter(|r| r != Path::new("/")),
            live_system: false,
        }
    }

    /// Lets a tree below a root use the running system's services too.
    pub fn with_live_system(mut self, live: bool) -> Self {
        self.live_system = live;
        self
    }

    /// True when acting on the real host (no prefix).
    pub fn is_live(&self) -> bool {
        self.root.is_none()
    }

    /// Ok when the running system's `service` may be asked: no root, or `--live-system`.
    pub fn system_service(&self, service: &'static str) -> Result<(), NotLiveSystem> {
        match &self.root {
            Some(r) if !self.live_system => Err(NotLiveSystem {
                root: r.clone(),
                service,
            }),
            _ => Ok(()),
        }
    }

    /// Ok when `path` (below this root) resolves inside the root, so that a symlink such as
    /// a debootstrap tree's `var/run -> /run` does not lead to the running system's socket.
    pub fn contained(&self, path: &Path, service: &'static str) -> Result<(), NotLiveSystem> {
        let Some(root) = self.root.as_ref().filter(|_| !self.live_system) else {
            return Ok(());
        };
        let outside = || NotLiveSystem {
            root: root.clone(),
            service,
        };
        let real_root = fs::canonicalize(root).map_err(|_| outside())?;
        // The deepest existing ancestor decides: what does not exist yet cannot lead out.
        let mut cur = path;
        loop {
            if let Ok(real) = fs::canonicalize(cur) {
                return if real.starts_with(&real_root) {
                    Ok(())
                } else {
                    Err(outside())
                };
            }
            match cur.parent() {
                Some(p) => cur = p,
                None => return Err(outside()),
            }
        }
    }

    /// Maps an absolute host path such as `/etc/modules-load.d` below the root.
    pub fn path(&self, host_path: impl AsRef<Path>) -> PathBuf {
        let p = host_path.as_ref();
        match &self.root {
            None => p.to_path_buf(),
            Some(r) => r.join(p.strip_prefix("/").unwrap_or(p)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_sets_mode_and_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/state.json");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let leftovers: Vec<_> = fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp files left behind");
    }

    #[test]
    fn new_parent_directories_are_synced_before_the_file_counts() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("etc/rancher/agent/cattle-id");
        SYNCED.with(|s| s.borrow_mut().clear());
        write_atomic(&p, b"id", 0o600).unwrap();
        let synced = SYNCED.with(|s| s.borrow().clone());
        // Each new directory's entry lives in its parent: the parent of every directory that
        // did not exist must be synced, and the file's own directory after the rename.
        for dir in ["", "etc", "etc/rancher", "etc/rancher/agent"] {
            let want = d.path().join(dir);
            let want = if dir.is_empty() {
                d.path().to_path_buf()
            } else {
                want
            };
            assert!(
                synced.contains(&want),
                "{} not synced: {synced:?}",
                want.display()
            );
        }
        assert_eq!(synced.last().unwrap(), &d.path().join("etc/rancher/agent"));
    }

    #[test]
    fn a_root_tree_is_not_the_running_system() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("var")).unwrap();
        std::os::unix::fs::symlink(outside.path(), d.path().join("var/run")).unwrap();
        let r = HostRoot::new(Some(d.path().to_path_buf()));
        let e = crate::system::netlink::open(&r).unwrap_err().to_string();
        assert!(e.contains("netlink") && e.contains("--live-system"), "{e}");
        assert!(r.system_service("systemd").is_err());
        assert!(HostRoot::new(None).system_service("systemd").is_ok());
        let live = r.clone().with_live_system(true);
        assert!(live.system_service("systemd").is_ok());

        let sock = r.path("/var/run/docker.sock");
        assert!(
            r.contained(&sock, "Docker Engine").is_err(),
            "var/run leads out"
        );
        assert!(live.contained(&sock, "Docker Engine").is_ok());
        assert!(
            r.contained(&r.path("/etc/x/y"), "x").is_ok(),
            "not there yet: inside"
        );
        std::fs::create_dir_all(r.path("/run")).unwrap();
        assert!(r.contained(&r.path("/run/docker.sock"), "x").is_ok());
    }

    #[test]
    fn root_prefix() {
        let r = HostRoot::new(Some("/tmp/x".into()));
        assert_eq!(r.path("/etc/a"), PathBuf::from("/tmp/x/etc/a"));
        assert_eq!(HostRoot::new(None).path("/etc/a"), PathBuf::from("/etc/a"));
        assert!(HostRoot::new(Some("/".into())).is_live());
    }
}
