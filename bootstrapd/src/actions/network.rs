//! Writes the rendered systemd-networkd files below the host root's /etc/systemd/network.
//!
//! Idempotent: a file whose content is already right is not rewritten. Files bootstrapd wrote
//! for an earlier network-config and no longer wants are removed. A file is bootstrapd's only
//! when its first line is [`HEADER_PREFIX`] with the sha256 of the rest: the image's
//! `99-dhcp.network`, an operator's file, or one of ours edited by hand is never changed or
//! removed. Everything is checked before the first write, so a conflict changes nothing.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::fsutil::{HostRoot, write_atomic};
use crate::network::{RenderedFile, file_prefix, is_ours};

pub const NETWORK_DIR: &str = "/etc/systemd/network";

/// Our files are a few hundred bytes; anything much larger is not one of them.
const MAX_OWN_FILE: u64 = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum NetworkWriteError {
    #[error(
        "{path} exists and was not written by bootstrapd (or was edited since): move it away \
         for bootstrapd to write it, or rename the interface ID in network-config"
    )]
    NotOurs { path: PathBuf },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("removing {path}: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What applying did (or, previewed, would do). Paths as on the host (without the root).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Every file the network-config wants, in its order.
    pub files: Vec<String>,
    /// Of those, new or different.
    pub written: Vec<String>,
    /// Files of an earlier network-config, no longer wanted.
    pub removed: Vec<String>,
    /// Files named like ours but not ours (or edited): left alone.
    pub foreign: Vec<String>,
}

/// Brings /etc/systemd/network in line with `files`; with `preview`, only says what it would
/// change.
pub fn apply(
    root: &HostRoot,
    files: &[RenderedFile],
    preview: bool,
) -> Result<Applied, NetworkWriteError> {
    let dir = root.path(NETWORK_DIR);
    let host = |name: &str| format!("{NETWORK_DIR}/{name}");
    let mut out = Applied::default();
    let mut writes = Vec::new();
    for f in files {
        let path = dir.join(&f.name);
        out.files.push(host(&f.name));
        match read_small(&path)? {
            Some(old) if old == f.contents => {}
            Some(old) if !is_ours(&old) => return Err(NetworkWriteError::NotOurs { path }),
            _ => {
                out.written.push(host(&f.name));
                writes.push((path, f));
            }
        }
    }
    let mut removes = Vec::new();
    for name in own_names(&dir)? {
        if files.iter().any(|f| f.name == name) {
            continue;
        }
        let path = dir.join(&name);
        match read_small(&path)? {
            Some(old) if is_ours(&old) => {
                out.removed.push(host(&name));
                removes.push(path);
            }
            _ => out.foreign.push(host(&name)),
        }
    }
    if preview {
        return Ok(out);
    }
    for (path, f) in writes {
        write_atomic(&path, f.contents.as_bytes(), 0o644)
            .map_err(|source| NetworkWriteError::Write { path, source })?;
    }
    for path in removes {
        std::fs::remove_file(&path).map_err(|source| NetworkWriteError::Remove { path, source })?;
    }
    Ok(out)
}

/// Names in `dir` that bootstrapd's files could have (`10-bootstrapd-*.network`), sorted.
fn own_names(dir: &Path) -> Result<Vec<String>, NetworkWriteError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(NetworkWriteError::Read {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.starts_with(file_prefix()) && n.ends_with(".network"))
        .collect();
    names.sort();
    Ok(names)
}

/// The text of a regular file, `None` when absent. A link, a directory, a large or non-UTF-8
/// file reads as "" (not ours, so never replaced or removed).
fn read_small(path: &Path) -> Result<Option<String>, NetworkWriteError> {
    let err = |source| NetworkWriteError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Ok(Some(String::new())),
        Err(e) => return Err(err(e)),
    };
    let meta = file.metadata().map_err(err)?;
    if !meta.is_file() || meta.len() > MAX_OWN_FILE {
        return Ok(Some(String::new()));
    }
    let mut buf = Vec::new();
    file.take(MAX_OWN_FILE).read_to_end(&mut buf).map_err(err)?;
    Ok(Some(String::from_utf8(buf).unwrap_or_default()))
}
