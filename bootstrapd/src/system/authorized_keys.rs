//! A user's account (/etc/passwd) and `~/.ssh/authorized_keys`, read and written without
//! following a symlink inside the home directory.
//!
//! The user owns their home: a `.ssh` or `authorized_keys` planted there as a symlink to
//! `/etc/shadow` or `/root/.ssh` must not make root write (or read) elsewhere. Everything
//! below the home is opened relative to the home's directory descriptor with `O_NOFOLLOW`,
//! and the new file is made in `.ssh` and renamed over the old one (a rename replaces a
//! symlink instead of following it). The home itself must not be a symlink either; the
//! system directories above it (`/home`) belong to root and are resolved as usual.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode, fchmod, fstat, mkdirat};
use nix::unistd::{Gid, Uid, fchown};

use crate::fsutil::HostRoot;

pub const PASSWD: &str = "/etc/passwd";
pub const SSH_DIR: &str = ".ssh";
pub const FILE: &str = "authorized_keys";
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: the entry of {user} has no numeric uid and gid")]
    Malformed { path: PathBuf, user: String },
    #[error("{path} is a symlink or not a directory: refusing to follow it")]
    NotADirectory { path: PathBuf },
    #[error("{path} is a symlink, a hard link or not a regular file: refusing to follow it")]
    NotAFile { path: PathBuf },
    #[error(transparent)]
    Outside(#[from] crate::fsutil::NotLiveSystem),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: Errno,
    },
}

/// A user's passwd entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Account {
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// `user`'s entry in the tree's /etc/passwd; None when there is none.
pub fn account(root: &HostRoot, user: &str) -> Result<Option<Account>, KeysError> {
    let path = root.path(PASSWD);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(KeysError::Read { path, source }),
    };
    for l in text.lines() {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 7 || f[0] != user {
            continue;
        }
        let (Ok(uid), Ok(gid)) = (f[2].parse(), f[3].parse()) else {
            return Err(KeysError::Malformed {
                path,
                user: user.to_string(),
            });
        };
        return Ok(Some(Account {
            uid,
            gid,
            home: f[5].to_string(),
        }));
    }
    Ok(None)
}

/// Owner and permission bits of a file or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Meta {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

/// The key file as it is: `.ssh` and the file's metadata when they exist, and its text.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Current {
    pub dir: Option<Meta>,
    pub file: Option<Meta>,
    pub text: String,
}

impl Current {
    /// True when both exist, owned by the account with 0700 and 0600.
    pub fn owned_by(&self, a: &Account) -> bool {
        let ok = |m: &Option<Meta>, mode| {
            m.is_some_and(|m| m.uid == a.uid && m.gid == a.gid && m.mode == mode)
        };
        ok(&self.dir, DIR_MODE) && ok(&self.file, FILE_MODE)
    }
}

/// Owner and mode, and whether it is a regular file with no other name: a hard link to
/// /etc/shadow (possible where fs.protected_hardlinks is off) would be read into the merge.
fn meta(fd: impl AsFd) -> Result<(Meta, bool), Errno> {
    let st = fstat(fd)?;
    let m = Meta {
        uid: st.st_uid,
        gid: st.st_gid,
        mode: st.st_mode & 0o7777,
    };
    let lone_file = st.st_mode & libc::S_IFMT == libc::S_IFREG && st.st_nlink == 1;
    Ok((m, lone_file))
}

struct Paths {
    home: PathBuf,
    dir: PathBuf,
    file: PathBuf,
}

impl Paths {
    /// The account's paths below `root`; a home that leads out of a --root tree (an absolute
    /// symlink among the tree's directories) is refused.
    fn new(root: &HostRoot, a: &Account) -> Result<Paths, KeysError> {
        let home = root.path(&a.home);
        root.contained(&home, "home directories")?;
        let dir = home.join(SSH_DIR);
        let file = dir.join(FILE);
        Ok(Paths { home, dir, file })
    }
}

fn read_err(path: &std::path::Path) -> impl FnOnce(Errno) -> KeysError + '_ {
    move |e| KeysError::Read {
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// Opens a directory without following a symlink; None when it does not exist.
fn open_dir(at: Option<&OwnedFd>, path: &std::path::Path) -> Result<Option<OwnedFd>, KeysError> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let r = match at {
        Some(d) => openat(
            d,
            path.file_name().unwrap_or_default(),
            flags,
            Mode::empty(),
        ),
        None => nix::fcntl::open(path, flags, Mode::empty()),
    };
    match r {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::ENOENT) => Ok(None),
        Err(Errno::ELOOP | Errno::ENOTDIR) => Err(KeysError::NotADirectory {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(read_err(path)(e)),
    }
}

/// Reads `.ssh/authorized_keys` of `a` below `root`, refusing symlinks.
pub fn read(root: &HostRoot, a: &Account) -> Result<Current, KeysError> {
    let p = Paths::new(root, a)?;
    let mut cur = Current::default();
    let Some(home) = open_dir(None, &p.home)? else {
        return Ok(cur);
    };
    let Some(dir) = open_dir(Some(&home), &p.dir)? else {
        return Ok(cur);
    };
    cur.dir = Some(meta(&dir).map_err(read_err(&p.dir))?.0);
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = match openat(&dir, FILE, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(cur),
        Err(Errno::ELOOP) => return Err(KeysError::NotAFile { path: p.file }),
        Err(e) => return Err(read_err(&p.file)(e)),
    };
    let (m, lone_file) = meta(&fd).map_err(read_err(&p.file))?;
    if !lone_file {
        return Err(KeysError::NotAFile { path: p.file });
    }
    cur.file = Some(m);
    std::fs::File::from(fd)
        .read_to_string(&mut cur.text)
        .map_err(|source| KeysError::Read {
            path: p.file.clone(),
            source,
        })?;
    Ok(cur)
}

/// Writes `text` as `a`'s authorized_keys: `.ssh` made (0700) if absent, both owned by the
/// account, the file replaced atomically (temp file in `.ssh`, fsync, rename, fsync of
/// `.ssh`) with mode 0600 from its creation.
pub fn write(root: &HostRoot, a: &Account, text: &str) -> Result<(), KeysError> {
    let p = Paths::new(root, a)?;
    let werr = |path: &PathBuf| {
        let path = path.clone();
        move |source| KeysError::Write { path, source }
    };
    let home = open_dir(None, &p.home)?.ok_or_else(|| KeysError::Write {
        path: p.home.clone(),
        source: Errno::ENOENT,
    })?;
    let dir = match open_dir(Some(&home), &p.dir)? {
        Some(d) => d,
        None => {
            mkdirat(&home, SSH_DIR, Mode::from_bits_truncate(DIR_MODE)).map_err(werr(&p.dir))?;
            nix::unistd::fsync(&home).map_err(werr(&p.home))?;
            open_dir(Some(&home), &p.dir)?.ok_or(KeysError::NotADirectory {
                path: p.dir.clone(),
            })?
        }
    };
    let (uid, gid) = (Some(Uid::from_raw(a.uid)), Some(Gid::from_raw(a.gid)));
    fchown(&dir, uid, gid).map_err(werr(&p.dir))?;
    fchmod(&dir, Mode::from_bits_truncate(DIR_MODE)).map_err(werr(&p.dir))?;
    let tmp = format!(".{FILE}.bootstrapd.{}", std::process::id());
    // A temp file left by a crash is ours to replace; unlinkat never follows a symlink.
    let _ = nix::unistd::unlinkat(&dir, tmp.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(
        &dir,
        tmp.as_str(),
        flags,
        Mode::from_bits_truncate(FILE_MODE),
    )
    .map_err(werr(&p.file))?;
    let result = (|| {
        fchown(&fd, uid, gid)?;
        fchmod(&fd, Mode::from_bits_truncate(FILE_MODE))?;
        let mut f = std::fs::File::from(fd);
        f.write_all(text.as_bytes())
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
        nix::unistd::fsync(&f)?;
        drop(f);
        nix::fcntl::renameat(&dir, tmp.as_str(), &dir, FILE)?;
        nix::unistd::fsync(&dir)
    })();
    if result.is_err() {
        let _ = nix::unistd::unlinkat(&dir, tmp.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
    }
    result.map_err(werr(&p.file))
}
