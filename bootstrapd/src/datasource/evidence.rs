//! What detection looks at, read once: the kernel command line, DMI strings and the labels of
//! block devices. Local files only, so a machine without a datasource is answered at once.

use super::blockdev::{self, LabelledDevice};
use super::cmdline::KernelCmdline;
use crate::fsutil::HostRoot;

pub(super) struct Evidence {
    pub cmdline: KernelCmdline,
    pub dmi: Dmi,
    pub devices: Vec<LabelledDevice>,
}

impl Evidence {
    /// Reads the evidence; device superblocks only when `devices` (a source that looks for
    /// a labelled filesystem is among those asked).
    pub fn read(root: &HostRoot, cmdline: KernelCmdline, devices: bool) -> Self {
        Evidence {
            cmdline,
            dmi: Dmi::read(root),
            devices: if devices {
                blockdev::scan(root)
            } else {
                Vec::new()
            },
        }
    }
}

#[derive(Debug, Default)]
pub(super) struct Dmi {
    pub sys_vendor: Option<String>,
    pub bios_vendor: Option<String>,
    pub product_name: Option<String>,
    pub product_uuid: Option<String>,
    pub product_serial: Option<String>,
    pub chassis_asset_tag: Option<String>,
    pub hypervisor_uuid: Option<String>,
}

impl Dmi {
    fn read(root: &HostRoot) -> Self {
        let f = |p: &str| {
            std::fs::read_to_string(root.path(p))
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        Dmi {
            sys_vendor: f("/sys/class/dmi/id/sys_vendor"),
            bios_vendor: f("/sys/class/dmi/id/bios_vendor"),
            product_name: f("/sys/class/dmi/id/product_name"),
            product_uuid: f("/sys/class/dmi/id/product_uuid"),
            product_serial: f("/sys/class/dmi/id/product_serial"),
            chassis_asset_tag: f("/sys/class/dmi/id/chassis_asset_tag"),
            hypervisor_uuid: f("/sys/hypervisor/uuid"),
        }
    }
}
