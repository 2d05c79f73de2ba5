//! Finding filesystems by label and mounting them read-only.
//!
//! In early boot udev may not have created `/dev/disk/by-label` yet (and containers and
//! minimal images have no udev at all), so labels are read from the superblocks of the
//! devices listed in `/sys/class/block`, the way blkid does. `/dev/disk/by-label` is used in
//! addition when present. Only the filesystems a seed uses are recognised: ISO9660 and
//! FAT (cloud-init's cidata, OpenStack's config drive) and ext2/3/4 (hand-made drives).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use serde::Serialize;

use super::error::{DatasourceError, io_err};
use crate::fsutil::HostRoot;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsType {
    Iso9660,
    Vfat,
    Ext,
}

impl FsType {
    /// The kernel filesystem type name for mount(2).
    pub fn name(self) -> &'static str {
        match self {
            FsType::Iso9660 => "iso9660",
            FsType::Vfat => "vfat",
            // The ext4 driver mounts ext2 and ext3 too.
            FsType::Ext => "ext4",
        }
    }
}

/// A block device holding a labelled filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LabelledDevice {
    /// The device node (below the host root).
    pub device: PathBuf,
    pub label: String,
    pub fstype: FsType,
}

/// Lists labelled filesystems on the block devices of `root`. Unreadable devices are
/// skipped (logged at debug): an empty CD drive or a vanished loop device is no evidence.
pub fn scan(root: &HostRoot) -> Vec<LabelledDevice> {
    let mut nodes: Vec<PathBuf> = Vec::new();
    let sys = root.path("/sys/class/block");
    if let Ok(entries) = std::fs::read_dir(&sys) {
        let mut names: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        for name in names {
            if name.starts_with("ram") || name.starts_with("zram") {
                continue;
            }
            // Size 0: no medium in the drive or an unbound loop device; reading it fails.
            let size = std::fs::read_to_string(sys.join(&name).join("size"))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok());
            if size == Some(0) {
                continue;
            }
            nodes.push(root.path("/dev").join(&name));
        }
    }
    if let Ok(entries) = std::fs::read_dir(root.path("/dev/disk/by-label")) {
        for e in entries.flatten() {
            nodes.push(e.path());
        }
    }

    let mut seen: Vec<PathBuf> = Vec::new();
    let mut out = Vec::new();
    for node in nodes {
        let canonical = std::fs::canonicalize(&node).unwrap_or_else(|_| node.clone());
        if seen.contains(&canonical) {
            continue;
        }
        seen.push(canonical);
        match probe_device(&node) {
            Ok(Some((fstype, label))) => {
                tracing::debug!(device = %node.display(), fstype = fstype.name(), %label, "labelled filesystem");
                out.push(LabelledDevice {
                    device: node,
                    label,
                    fstype,
                });
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(device = %node.display(), error = %e, "cannot probe"),
        }
    }
    out
}

fn probe_device(path: &Path) -> io::Result<Option<(FsType, String)>> {
    // O_NONBLOCK: opening a CD drive without it waits for (or fails on) a missing medium.
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    probe_label(&mut f)
}

/// Recognises ISO9660, FAT12/16/32 and ext2/3/4 superblocks and returns the volume label.
pub fn probe_label<R: Read + Seek>(r: &mut R) -> io::Result<Option<(FsType, String)>> {
    if let Some(l) = iso9660_label(r)? {
        return Ok(Some((FsType::Iso9660, l)));
    }
    if let Some(l) = ext_label(r)? {
        return Ok(Some((FsType::Ext, l)));
    }
    if let Some(l) = fat_label(r)? {
        return Ok(Some((FsType::Vfat, l)));
    }
    Ok(None)
}

/// Reads up to `len` bytes at `offset`; short when the device ends earlier.
fn read_at<R: Read + Seek>(r: &mut R, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    r.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(len);
    r.by_ref().take(len as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

fn iso9660_label<R: Read + Seek>(r: &mut R) -> io::Result<Option<String>> {
    // Volume descriptors start at sector 16 (2048-byte sectors); the primary one (type 1)
    // holds the volume id. A handful of descriptors at most precede it.
    for sector in 16..32u64 {
        let d = read_at(r, sector * 2048, 2048)?;
        if d.len() < 72 || &d[1..6] != b"CD001" {
            return Ok(None);
        }
        match d[0] {
            1 => {
                let label = String::from_utf8_lossy(&d[40..72]).trim_end().to_string();
                return Ok(Some(label).filter(|l| !l.is_empty()));
            }
            255 => return Ok(None),
            _ => {}
        }
    }
    Ok(None)
}

fn ext_label<R: Read + Seek>(r: &mut R) -> io::Result<Option<String>> {
    let sb = read_at(r, 1024, 136)?;
    if sb.len() < 136 || u16::from_le_bytes([sb[56], sb[57]]) != 0xEF53 {
        return Ok(None);
    }
    let name = &sb[120..136];
    let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
    let label = String::from_utf8_lossy(&name[..end]).trim().to_string();
    Ok(Some(label).filter(|l| !l.is_empty()))
}

fn le16(b: &[u8], at: usize) -> u64 {
    u16::from_le_bytes([b[at], b[at + 1]]) as u64
}

fn le32(b: &[u8], at: usize) -> u64 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as u64
}

fn fat_label<R: Read + Seek>(r: &mut R) -> io::Result<Option<String>> {
    let bs = read_at(r, 0, 512)?;
    if bs.len() < 512 || bs[510..512] != [0x55, 0xAA] {
        return Ok(None);
    }
    let fat32 = &bs[82..87] == b"FAT32";
    let fat16 = &bs[54..57] == b"FAT";
    // The 0x55AA signature alone also matches an MBR: require the FAT type string.
    if !fat32 && !fat16 {
        return Ok(None);
    }
    let bps = le16(&bs, 11);
    let spc = bs[13] as u64;
    let reserved = le16(&bs, 14);
    let nfats = bs[16] as u64;
    let root_entries = le16(&bs, 17);
    if !bps.is_power_of_two() || !(512..=4096).contains(&bps) || spc == 0 || nfats == 0 {
        return Ok(None);
    }
    let (boot_label, fat_size) = if fat32 {
        (&bs[71..82], le32(&bs, 36))
    } else {
        (&bs[43..54], le16(&bs, 22))
    };
    // The root directory's volume-label entry is authoritative (blkid prefers it; tools
    // that relabel often update only it). The boot sector copy is the fallback.
    let first_data = reserved + nfats * fat_size;
    let (dir_offset, dir_len) = if fat32 {
        let root_cluster = le32(&bs, 44).max(2);
        (
            (first_data + (root_cluster - 2) * spc) * bps,
            (spc * bps).min(64 << 10),
        )
    } else {
        (first_data * bps, (root_entries * 32).min(64 << 10))
    };
    let dir = read_at(r, dir_offset, dir_len as usize)?;
    let mut label = None;
    for e in dir.chunks_exact(32) {
        match e[0] {
            0 => break,
            0xE5 => continue,
            _ => {}
        }
        // Attribute 0x08 alone is a volume label; 0x0F marks a long-file-name entry.
        if e[11] & 0x0F == 0x08 {
            label = Some(fat_name(&e[..11]));
            break;
        }
    }
    let label = label
        .filter(|l| !l.is_empty())
        .or_else(|| Some(fat_name(boot_label)))
        .filter(|l| !l.is_empty() && l != "NO NAME");
    Ok(label)
}

fn fat_name(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw).trim_end().to_string()
}

/// A filesystem mounted read-only below `/run/bootstrapd`; unmounted and its mount point
/// removed when dropped, so an error while reading it cannot leave it mounted.
pub struct Mounted {
    target: PathBuf,
}

impl Mounted {
    pub fn mount(dev: &LabelledDevice, root: &HostRoot) -> Result<Self, DatasourceError> {
        let base = root.path("/run/bootstrapd");
        let name = dev
            .device
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "dev".into());
        let target = base.join(format!("ds-{name}.{}", std::process::id()));
        std::fs::create_dir_all(&target).map_err(io_err(&target))?;
        let flags =
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        if let Err(source) = nix::mount::mount(
            Some(dev.device.as_path()),
            &target,
            Some(dev.fstype.name()),
            flags,
            None::<&str>,
        ) {
            let _ = std::fs::remove_dir(&target);
            return Err(DatasourceError::Mount {
                device: dev.device.clone(),
                fstype: dev.fstype.name(),
                target,
                source,
            });
        }
        tracing::debug!(device = %dev.device.display(), target = %target.display(), "mounted read-only");
        Ok(Mounted { target })
    }

    pub fn path(&self) -> &Path {
        &self.target
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = nix::mount::umount2(&self.target, MntFlags::empty()) {
            // Busy (someone opened a file there): detach so it goes away when released.
            tracing::warn!(target = %self.target.display(), error = %e, "unmount failed, detaching");
            if let Err(e) = nix::mount::umount2(&self.target, MntFlags::MNT_DETACH) {
                tracing::error!(target = %self.target.display(), error = %e, "cannot unmount");
                return;
            }
        }
        if let Err(e) = std::fs::remove_dir(&self.target) {
            tracing::debug!(target = %self.target.display(), error = %e, "mount point not removed");
        }
    }
}

/// Opens a device for probing; used by tests with image files too.
pub fn probe_path(path: &Path) -> io::Result<Option<(FsType, String)>> {
    let mut f = File::open(path)?;
    probe_label(&mut f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn iso_primary_descriptor() {
        let mut img = vec![0u8; 20 * 2048];
        let pvd = 16 * 2048;
        img[pvd] = 1;
        img[pvd + 1..pvd + 6].copy_from_slice(b"CD001");
        img[pvd + 40..pvd + 72].copy_from_slice(format!("{:<32}", "cidata").as_bytes());
        assert_eq!(
            probe_label(&mut Cursor::new(img)).unwrap(),
            Some((FsType::Iso9660, "cidata".into()))
        );
    }

    #[test]
    fn ext_superblock() {
        let mut img = vec![0u8; 4096];
        img[1024 + 56..1024 + 58].copy_from_slice(&0xEF53u16.to_le_bytes());
        img[1024 + 120..1024 + 128].copy_from_slice(b"config-2");
        assert_eq!(
            probe_label(&mut Cursor::new(img)).unwrap(),
            Some((FsType::Ext, "config-2".into()))
        );
    }

    #[test]
    fn mbr_is_not_fat_and_garbage_is_nothing() {
        let mut img = vec![0u8; 4096];
        img[510] = 0x55;
        img[511] = 0xAA;
        assert_eq!(probe_label(&mut Cursor::new(img)).unwrap(), None);
        assert_eq!(probe_label(&mut Cursor::new(vec![7u8; 100])).unwrap(), None);
    }
}
