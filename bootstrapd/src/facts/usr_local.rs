//! Whether `/usr/local` can take the system agent: rancher/system-agent `install.sh`
//! (`check_target_mountpoint`, `check_target_ro`) installs elsewhere when `/usr/local` is a
//! mount point of its own or read-only (immutable images).
//!
//! install.sh runs `mountpoint -q` and a `touch` probe; facts change nothing on the host, so
//! both answers come from the mount table instead: `/usr/local` is a mount point when it is
//! one in `/proc/self/mountinfo`, and read-only when the mount holding it is mounted `ro`
//! (mount or superblock options).

use serde::{Deserialize, Serialize};

use super::{FactError, read_optional};
use crate::fsutil::HostRoot;

pub const USR_LOCAL: &str = "/usr/local";
pub const MOUNTINFO: &str = "/proc/self/mountinfo";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UsrLocal {
    pub mount_point: bool,
    pub read_only: bool,
}

impl UsrLocal {
    /// install.sh's `check_target_mountpoint || check_target_ro`.
    pub fn unsuitable(&self) -> bool {
        self.mount_point || self.read_only
    }
}

/// Reads the mount table under `root`; without one (a bare test root) `/usr/local` is taken
/// as an ordinary writable directory.
pub fn probe(root: &HostRoot) -> Result<UsrLocal, FactError> {
    probe_at(root, USR_LOCAL)
}

/// [`probe`] for any directory (`/usr` of an immutable image, whose packages cannot change).
pub fn probe_at(root: &HostRoot, target: &str) -> Result<UsrLocal, FactError> {
    let path = root.path(MOUNTINFO);
    match read_optional(&path)? {
        Some(text) => parse_at(&text, target).map_err(|(line, message)| FactError::Parse {
            path,
            line,
            message,
        }),
        None => Ok(UsrLocal::default()),
    }
}

/// `/usr/local` in a mountinfo table: the last mount at the longest matching prefix wins,
/// as the kernel stacks later mounts over earlier ones.
pub fn parse(text: &str) -> Result<UsrLocal, (usize, String)> {
    parse_at(text, USR_LOCAL)
}

/// `target` in a mountinfo table, by the same rule.
pub fn parse_at(text: &str, target: &str) -> Result<UsrLocal, (usize, String)> {
    let mut best: Option<(usize, bool, bool)> = None;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split(' ').collect();
        let sep = fields.iter().position(|f| *f == "-");
        let (Some(sep), true) = (sep, fields.len() >= 6) else {
            return Err((
                i + 1,
                "not a mountinfo line (mount point and options)".into(),
            ));
        };
        let mount_point = unescape(fields[4]);
        let covers = mount_point == "/"
            || target == mount_point
            || target.starts_with(&format!("{}/", mount_point.trim_end_matches('/')));
        if !covers {
            continue;
        }
        let ro = |opts: &str| opts.split(',').any(|o| o == "ro");
        let read_only = ro(fields[5]) || fields.get(sep + 3).is_some_and(|o| ro(o));
        let len = mount_point.len();
        if best.is_none_or(|(l, _, _)| len >= l) {
            best = Some((len, mount_point == target, read_only));
        }
    }
    Ok(best
        .map(|(_, mount_point, read_only)| UsrLocal {
            mount_point,
            read_only,
        })
        .unwrap_or_default())
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(c as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT_RW: &str = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n";

    #[test]
    fn ordinary_directory_on_a_writable_root() {
        assert_eq!(parse(ROOT_RW).unwrap(), UsrLocal::default());
        assert!(!parse(ROOT_RW).unwrap().unsuitable());
    }

    #[test]
    fn own_mount_point_and_read_only_mounts() {
        let own = format!("{ROOT_RW}40 22 8:2 / /usr/local rw,relatime - xfs /dev/sda2 rw\n");
        let u = parse(&own).unwrap();
        assert!(u.mount_point && !u.read_only && u.unsuitable());
        let ro_usr = format!("{ROOT_RW}41 22 7:0 / /usr ro,relatime - squashfs /dev/loop0 ro\n");
        let u = parse(&ro_usr).unwrap();
        assert!(!u.mount_point && u.read_only && u.unsuitable());
        let usr = parse_at(&ro_usr, "/usr").unwrap();
        assert!(usr.mount_point && usr.read_only);
        assert!(!parse_at(ROOT_RW, "/usr").unwrap().read_only);
        // Superblock read-only while the mount options say rw still counts.
        let sb_ro = "22 1 8:1 / / rw,relatime - btrfs /dev/sda1 ro,space_cache\n";
        assert!(parse(sb_ro).unwrap().read_only);
        // /usr/localx is not /usr/local.
        let other = format!("{ROOT_RW}42 22 8:3 / /usr/localx ro - ext4 /dev/sda3 ro\n");
        assert_eq!(parse(&other).unwrap(), UsrLocal::default());
        assert!(parse("garbage\n").is_err());
    }

    #[test]
    fn probe_under_a_root() {
        let d = tempfile::tempdir().unwrap();
        let root = HostRoot::new(Some(d.path().to_path_buf()));
        assert_eq!(probe(&root).unwrap(), UsrLocal::default());
        std::fs::create_dir_all(root.path("/proc/self")).unwrap();
        std::fs::write(
            root.path(MOUNTINFO),
            format!("{ROOT_RW}40 22 8:2 / /usr/loc\\141l rw - xfs /dev/sda2 rw\n"),
        )
        .unwrap();
        assert!(probe(&root).unwrap().mount_point);
    }
}
