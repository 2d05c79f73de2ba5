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
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
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
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Host paths, optionally below a test root (`--root DIR`).
#[derive(Debug, Clone, Default)]
pub struct HostRoot {
    root: Option<PathBuf>,
}

impl HostRoot {
    pub fn new(root: Option<PathBuf>) -> Self {
        HostRoot {
            root: root.filter(|r| r != Path::new("/")),
        }
    }

    /// True when acting on the real host (no prefix).
    pub fn is_live(&self) -> bool {
        self.root.is_none()
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
    fn root_prefix() {
        let r = HostRoot::new(Some("/tmp/x".into()));
        assert_eq!(r.path("/etc/a"), PathBuf::from("/tmp/x/etc/a"));
        assert_eq!(HostRoot::new(None).path("/etc/a"), PathBuf::from("/etc/a"));
        assert!(HostRoot::new(Some("/".into())).is_live());
    }
}
