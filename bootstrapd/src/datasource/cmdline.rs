//! The kernel command line and cloud-init's NoCloud `ds=` parameter.

use crate::fsutil::HostRoot;

/// Parsed `/proc/cmdline`: `key` or `key=value` words, as the kernel splits them (double
/// quotes group words and are removed). Words after a lone `--` belong to init, not to the
/// kernel, and are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelCmdline {
    params: Vec<(String, Option<String>)>,
}

impl KernelCmdline {
    /// Reads `/proc/cmdline` below `root`; unreadable means empty (no evidence).
    pub fn read(root: &HostRoot) -> Self {
        match std::fs::read_to_string(root.path("/proc/cmdline")) {
            Ok(s) => Self::parse(&s),
            Err(e) => {
                tracing::debug!(error = %e, "no kernel command line");
                Self::default()
            }
        }
    }

    pub fn parse(text: &str) -> Self {
        let mut params = Vec::new();
        for word in split_words(text) {
            if word == "--" {
                break;
            }
            match word.split_once('=') {
                Some((k, v)) => params.push((k.to_string(), Some(v.to_string()))),
                None => params.push((word, None)),
            }
        }
        KernelCmdline { params }
    }

    /// The value of the last `key=value` (the kernel's own rule: later wins).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, v)| k == key && v.is_some())
            .and_then(|(_, v)| v.as_deref())
    }

    pub fn has_flag(&self, key: &str) -> bool {
        self.params.iter().any(|(k, _)| k == key)
    }
}

fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut any = false;
    for ch in text.chars() {
        match ch {
            '"' => {
                in_quotes = !in_quotes;
                any = true;
            }
            c if c.is_whitespace() && !in_quotes => {
                if any {
                    words.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(cur);
    }
    words
}

/// cloud-init's NoCloud parameter `ds=nocloud[-net][;s=URL][;i=ID][;h=HOST]` (as in
/// `DataSourceNoCloud.parse_cmdline_data`: `s`/`seedfrom`, `i`/`instance-id`,
/// `h`/`local-hostname`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NocloudParam {
    pub seedfrom: Option<String>,
    pub instance_id: Option<String>,
    pub hostname: Option<String>,
}

/// Parses the value of `ds=` (from the kernel command line or the DMI serial number).
/// `None` when it does not name NoCloud.
pub fn parse_nocloud_ds(value: &str) -> Option<NocloudParam> {
    let mut parts = value.trim().split(';');
    let name = parts.next()?.trim().to_ascii_lowercase();
    if name != "nocloud" && name != "nocloud-net" {
        return None;
    }
    let mut p = NocloudParam::default();
    for part in parts {
        let Some((k, v)) = part.split_once('=') else {
            continue;
        };
        let v = v.trim();
        if v.is_empty() {
            continue;
        }
        match k.trim() {
            "s" | "seedfrom" => p.seedfrom = Some(v.to_string()),
            "i" | "instance-id" => p.instance_id = Some(v.to_string()),
            "h" | "local-hostname" => p.hostname = Some(v.to_string()),
            _ => {}
        }
    }
    Some(p)
}

/// Finds `ds=...` inside a DMI serial number, which may carry other text around it
/// (cloud-init searches the whole string the same way).
pub fn find_ds_in_serial(serial: &str) -> Option<NocloudParam> {
    serial
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("ds="))
        .find_map(parse_nocloud_ds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_the_kernel() {
        let c = KernelCmdline::parse(
            "BOOT_IMAGE=/vmlinuz root=UUID=ab ro quiet bootstrapd.url=\"http://x/a b\" \
             ds=nocloud;s=http://10.0.2.2:8000/ console=ttyS0 root=/dev/vda -- --init-arg ds=x\n",
        );
        assert_eq!(c.get("root"), Some("/dev/vda"));
        assert_eq!(c.get("bootstrapd.url"), Some("http://x/a b"));
        assert_eq!(c.get("ds"), Some("nocloud;s=http://10.0.2.2:8000/"));
        assert!(c.has_flag("quiet"));
        assert_eq!(c.get("quiet"), None);
        assert_eq!(c.get("--init-arg"), None, "after -- belongs to init");
        assert!(KernelCmdline::parse("").get("x").is_none());
    }

    #[test]
    fn nocloud_ds_forms() {
        let p = parse_nocloud_ds("nocloud;s=http://h/p/;i=iid-1;h=node1").unwrap();
        assert_eq!(p.seedfrom.as_deref(), Some("http://h/p/"));
        assert_eq!(p.instance_id.as_deref(), Some("iid-1"));
        assert_eq!(p.hostname.as_deref(), Some("node1"));
        let p = parse_nocloud_ds("nocloud-net;seedfrom=http://h/;local-hostname=n2").unwrap();
        assert_eq!(p.seedfrom.as_deref(), Some("http://h/"));
        assert_eq!(p.hostname.as_deref(), Some("n2"));
        assert_eq!(parse_nocloud_ds("nocloud"), Some(NocloudParam::default()));
        assert_eq!(parse_nocloud_ds("ec2;s=http://x/"), None);
    }

    #[test]
    fn ds_in_dmi_serial() {
        let p = find_ds_in_serial("ds=nocloud-net;s=http://10.0.0.1:8000/").unwrap();
        assert_eq!(p.seedfrom.as_deref(), Some("http://10.0.0.1:8000/"));
        assert!(find_ds_in_serial("VMware-56 4d").is_none());
    }
}
