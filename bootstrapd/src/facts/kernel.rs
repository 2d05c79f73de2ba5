//! Kernel modules, sysctls and swap, read from /proc and /sys (below the host root).

use std::collections::BTreeSet;

use serde::Serialize;

use super::{FactError, read_optional};
use crate::fsutil::HostRoot;

/// Module names as the kernel lists them: `-` and `_` are the same to modprobe.
pub fn normalize_module(name: &str) -> String {
    name.replace('-', "_")
}

/// A module name safe to hand to modprobe and to write into modules-load.d.
pub fn valid_module_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('-')
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Names of the loaded modules (first column of /proc/modules), normalized.
pub fn parse_proc_modules(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(normalize_module)
        .collect()
}

/// Loaded or built in: /proc/modules lists loadable modules, /sys/module also has built-in
/// ones that have parameters, and modules.builtin lists every built-in one.
pub fn loaded_modules(root: &HostRoot) -> Result<BTreeSet<String>, FactError> {
    let mut set = match read_optional(&root.path("/proc/modules"))? {
        Some(t) => parse_proc_modules(&t),
        None => BTreeSet::new(),
    };
    if let Ok(dir) = std::fs::read_dir(root.path("/sys/module")) {
        for e in dir.flatten() {
            set.insert(normalize_module(&e.file_name().to_string_lossy()));
        }
    }
    // The release from /proc (not uname(2)) so a --root tree answers for itself.
    if let Some(release) = read_optional(&root.path("/proc/sys/kernel/osrelease"))? {
        let builtin = root.path(format!("/lib/modules/{}/modules.builtin", release.trim()));
        if let Some(t) = read_optional(&builtin)? {
            for l in t.lines() {
                // kernel/net/bridge/br_netfilter.ko
                if let Some(f) = l.rsplit('/').next() {
                    set.insert(normalize_module(f.trim_end_matches(".ko")));
                }
            }
        }
    }
    Ok(set)
}

/// The /proc/sys path of a sysctl key, or None for a key that is not a plain name.
/// Like sysctl(8): with a `/` in the key, `/` separates and `.` stays (interface names such
/// as `eth0.100`); otherwise `.` separates.
pub fn sysctl_path(key: &str) -> Option<String> {
    let parts: Vec<&str> = if key.contains('/') {
        key.split('/').collect()
    } else {
        key.split('.').collect()
    };
    let ok = !parts.is_empty()
        && parts.iter().all(|p| {
            !p.is_empty()
                && *p != "."
                && *p != ".."
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.:@+".contains(&b))
        });
    ok.then(|| format!("/proc/sys/{}", parts.join("/")))
}

/// Sysctl values compare by their whitespace-separated fields (`4096\t87380` vs `4096 87380`).
pub fn sysctl_eq(a: &str, b: &str) -> bool {
    a.split_whitespace().eq(b.split_whitespace())
}

/// Current value of a sysctl; None when the key does not exist (yet): bridge keys appear
/// only after br_netfilter is loaded.
pub fn read_sysctl(root: &HostRoot, key: &str) -> Result<Option<String>, FactError> {
    let Some(p) = sysctl_path(key) else {
        return Ok(None);
    };
    Ok(read_optional(&root.path(p))?.map(|s| s.trim().to_string()))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SwapEntry {
    pub path: String,
    /// `partition` or `file`.
    pub kind: String,
}

/// /proc/swaps without its header; paths have their octal escapes (`\040`) decoded.
pub fn parse_proc_swaps(text: &str) -> Vec<SwapEntry> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let path = unescape_octal(f.next()?);
            let kind = f.next().unwrap_or("").to_string();
            Some(SwapEntry { path, kind })
        })
        .collect()
}

/// Decodes the `\ooo` escapes /proc/swaps and /etc/fstab use for blanks.
pub fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(c) = u8::try_from(v) {
                out.push(c);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Active (uncommented) swap lines of an fstab: (1-based line number, device field).
pub fn fstab_swap_lines(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let t = l.trim_start();
            if t.starts_with('#') {
                return None;
            }
            let f: Vec<&str> = t.split_whitespace().collect();
            (f.len() >= 3 && f[2] == "swap").then(|| (i + 1, unescape_octal(f[0])))
        })
        .collect()
}

pub fn active_swaps(root: &HostRoot) -> Result<Vec<SwapEntry>, FactError> {
    Ok(read_optional(&root.path("/proc/swaps"))?
        .map(|t| parse_proc_swaps(&t))
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_modules() {
        let t = "br_netfilter 32768 0 - Live 0x0000000000000000\n\
                 bridge 311296 1 br_netfilter, Live 0x0000000000000000\n\
                 nf_conntrack 172032 2 nf_nat,xt_conntrack, Live 0x0000000000000000\n";
        let s = parse_proc_modules(t);
        assert!(s.contains("br_netfilter") && s.contains("nf_conntrack") && s.len() == 3);
    }

    #[test]
    fn module_names() {
        assert!(valid_module_name("br_netfilter") && valid_module_name("ip-vs"));
        assert!(!valid_module_name("-v") && !valid_module_name("a b") && !valid_module_name(""));
        assert!(!valid_module_name("../x"));
        assert_eq!(normalize_module("ip-vs"), "ip_vs");
    }

    #[test]
    fn sysctl_paths() {
        assert_eq!(
            sysctl_path("net.bridge.bridge-nf-call-iptables").as_deref(),
            Some("/proc/sys/net/bridge/bridge-nf-call-iptables")
        );
        assert_eq!(
            sysctl_path("net/ipv4/conf/eth0.100/forwarding").as_deref(),
            Some("/proc/sys/net/ipv4/conf/eth0.100/forwarding")
        );
        assert_eq!(sysctl_path("net/../../etc/passwd"), None);
        assert_eq!(sysctl_path("net..ipv4"), None);
        assert_eq!(sysctl_path(""), None);
        assert!(sysctl_eq("4096\t87380  6291456", "4096 87380 6291456"));
        assert!(!sysctl_eq("1", "0"));
    }

    #[test]
    fn swaps_and_fstab() {
        let swaps = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
                     /dev/vda2                               partition\t1046524\t\t0\t\t-2\n\
                     /swap\\040file                          file\t\t102396\t\t0\t\t-3\n";
        let s = parse_proc_swaps(swaps);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].path, "/dev/vda2");
        assert_eq!(s[1].path, "/swap file");
        assert_eq!(s[1].kind, "file");
        assert!(parse_proc_swaps("Filename Type Size Used Priority\n").is_empty());

        let fstab = "# <file system> <mount point> <type> <options> <dump> <pass>\n\
                     UUID=aa-bb / ext4 errors=remount-ro 0 1\n\
                     UUID=cc-dd none swap sw 0 0\n\
                     #/dev/sdb1 none swap sw 0 0\n\
                     /swap\\040file none swap defaults 0 0\n";
        assert_eq!(
            fstab_swap_lines(fstab),
            vec![(3, "UUID=cc-dd".to_string()), (5, "/swap file".to_string())]
        );
    }
}
