//! What the node's identity steps read: the facts a hostname template names, and the SSH
//! user's account and key file. Read-only, like every fact.

use serde::Serialize;

use super::read_optional;
use crate::fsutil::HostRoot;
use crate::system::authorized_keys::{self, Account, Current};
use crate::userdata::identity::Fact;

pub const PRODUCT_SERIAL: &str = "/sys/class/dmi/id/product_serial";
pub const SYS_CLASS_NET: &str = "/sys/class/net";

/// The facts a hostname template may name, and the datasource's hostname.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IdentityFacts {
    pub instance_id: Option<String>,
    /// The datasource's hostname as it gave it (not yet validated).
    pub metadata_hostname: Option<String>,
    pub serial: Option<String>,
    /// The first physical NIC's MAC, 12 lowercase hex digits.
    pub mac: Option<String>,
}

impl IdentityFacts {
    pub fn fact(&self, f: Fact) -> Option<String> {
        match f {
            Fact::InstanceId => self.instance_id.clone(),
            Fact::Serial => self.serial.clone(),
            Fact::Mac => self.mac.clone(),
        }
    }
}

/// SMBIOS serials firmware leaves as a placeholder: the same on every machine.
const NO_SERIAL: [&str; 8] = [
    "",
    "0",
    "none",
    "not specified",
    "not applicable",
    "default string",
    "system serial number",
    "to be filled by o.e.m.",
];

pub fn gather(root: &HostRoot, instance_id: Option<&str>, hostname: Option<&str>) -> IdentityFacts {
    let serial = read_optional(&root.path(PRODUCT_SERIAL))
        .ok()
        .flatten()
        .map(|s| s.trim().to_string())
        .filter(|s| !NO_SERIAL.contains(&s.to_ascii_lowercase().as_str()));
    IdentityFacts {
        instance_id: instance_id.filter(|i| !i.is_empty()).map(str::to_string),
        metadata_hostname: hostname.map(str::to_string),
        serial,
        mac: first_physical_mac(root),
    }
}

/// The MAC of the physical interface (one with a `device` link in sysfs: not lo, bridges,
/// veths or bonds) with the lowest ifindex, the order the firmware and the kernel found them.
fn first_physical_mac(root: &HostRoot) -> Option<String> {
    let dir = root.path(SYS_CLASS_NET);
    let mut found: Vec<(u32, String, String)> = Vec::new();
    for e in std::fs::read_dir(&dir).ok()?.flatten() {
        let p = e.path();
        if std::fs::symlink_metadata(p.join("device")).is_err() {
            continue;
        }
        let read = |f: &str| std::fs::read_to_string(p.join(f)).ok();
        let Some(mac) = read("address").map(|a| a.trim().replace(':', "").to_ascii_lowercase())
        else {
            continue;
        };
        if mac.len() != 12 || mac.bytes().all(|b| b == b'0') {
            continue;
        }
        let index = read("ifindex")
            .and_then(|i| i.trim().parse().ok())
            .unwrap_or(u32::MAX);
        found.push((index, e.file_name().to_string_lossy().into_owned(), mac));
    }
    found.sort();
    found.into_iter().next().map(|(_, _, mac)| mac)
}

/// The SSH user's account and key file, as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SshFacts {
    pub user: String,
    /// None: no such user yet.
    pub account: Option<Account>,
    pub current: Current,
}

pub fn ssh(root: &HostRoot, user: &str) -> Result<SshFacts, authorized_keys::KeysError> {
    let account = authorized_keys::account(root, user)?;
    let current = match &account {
        Some(a) => authorized_keys::read(root, a)?,
        None => Current::default(),
    };
    Ok(SshFacts {
        user: user.to_string(),
        account,
        current,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(root: &std::path::Path, name: &str, index: u32, mac: &str, physical: bool) {
        let d = root.join("sys/class/net").join(name);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("address"), format!("{mac}\n")).unwrap();
        std::fs::write(d.join("ifindex"), format!("{index}\n")).unwrap();
        if physical {
            std::fs::create_dir(d.join("device")).unwrap();
        }
    }

    #[test]
    fn template_facts_from_sysfs() {
        let d = tempfile::tempdir().unwrap();
        nic(d.path(), "lo", 1, "00:00:00:00:00:00", false);
        nic(d.path(), "br0", 2, "02:00:00:00:00:09", false);
        nic(d.path(), "eth1", 4, "52:54:00:00:00:02", true);
        nic(d.path(), "eth0", 3, "52:54:00:AB:00:01", true);
        let serial = d.path().join("sys/class/dmi/id");
        std::fs::create_dir_all(&serial).unwrap();
        std::fs::write(serial.join("product_serial"), "SN-1234 \n").unwrap();
        let root = HostRoot::new(Some(d.path().to_path_buf()));
        let f = gather(&root, Some("i-9"), Some("node9.lab"));
        assert_eq!(f.mac.as_deref(), Some("525400ab0001"));
        assert_eq!(f.serial.as_deref(), Some("SN-1234"));
        assert_eq!(f.fact(Fact::InstanceId).as_deref(), Some("i-9"));
        std::fs::write(serial.join("product_serial"), "To Be Filled By O.E.M.\n").unwrap();
        assert_eq!(gather(&root, Some(""), None).serial, None);
        assert_eq!(gather(&root, Some(""), None).instance_id, None);
    }
}
