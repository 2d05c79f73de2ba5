//! Which iptables the host has, which backend `iptables` is, and whether both backends hold
//! rules at once (a known cause of broken pod networking: Rancher issues 23045, 34604, 35245;
//! rke 2432).

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::{FactError, run_tool};
use crate::fsutil::HostRoot;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Legacy,
    Nft,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Legacy => "legacy",
            Backend::Nft => "nft",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IptablesFacts {
    /// Absolute host paths of the iptables binaries found (iptables, iptables-legacy, ...).
    pub binaries: Vec<String>,
    /// Backend `iptables` is now: from `iptables --version` on a live host, else from the
    /// alternatives link.
    pub backend: Option<Backend>,
    /// Target of /etc/alternatives/iptables (Debian/Ubuntu/RHEL alternatives systems).
    pub alternative: Option<String>,
    /// `update-alternatives` (Debian) or `alternatives` (RHEL), when present.
    pub alternatives_tool: Option<String>,
    /// Rules and user chains in each backend (live host only; None when not measured).
    pub legacy_rules: Option<usize>,
    pub nft_rules: Option<usize>,
}

impl IptablesFacts {
    pub fn has(&self, name: &str) -> bool {
        self.binaries
            .iter()
            .any(|b| Path::new(b).file_name().is_some_and(|f| f == name))
    }

    fn path_of(&self, name: &str) -> Option<&str> {
        self.binaries
            .iter()
            .find(|b| Path::new(b).file_name().is_some_and(|f| f == name))
            .map(String::as_str)
    }
}

const BIN_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];
const NAMES: [&str; 6] = [
    "iptables",
    "iptables-legacy",
    "iptables-nft",
    "iptables-legacy-save",
    "iptables-nft-save",
    "ip6tables",
];
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

/// `iptables v1.8.9 (nf_tables)` -> Nft; `iptables v1.8.7 (legacy)` -> Legacy. Versions before
/// 1.8 print no backend and are legacy.
pub fn parse_version(out: &str) -> Option<Backend> {
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("iptables"))?;
    if line.contains("(nf_tables)") {
        Some(Backend::Nft)
    } else if line.contains("(legacy)") || !line.contains('(') {
        Some(Backend::Legacy)
    } else {
        None
    }
}

/// Rules (`-A` lines) and user-defined chains in `iptables-save` output. The built-in chains
/// every table declares do not count: an untouched backend counts 0.
pub fn count_rules(save: &str) -> usize {
    const BUILTIN: [&str; 5] = ["INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING"];
    save.lines()
        .filter(|l| {
            if l.starts_with("-A ") {
                return true;
            }
            if let Some(decl) = l.strip_prefix(':') {
                let chain = decl.split_whitespace().next().unwrap_or("");
                return !BUILTIN.contains(&chain);
            }
            false
        })
        .count()
}

pub async fn probe(root: &HostRoot) -> Result<IptablesFacts, FactError> {
    let mut f = IptablesFacts::default();
    for name in NAMES {
        if let Some(dir) = BIN_DIRS.iter().find(|d| {
            // symlink_metadata: a dangling alternatives link still shows the binary is managed.
            std::fs::symlink_metadata(root.path(Path::new(d).join(name))).is_ok()
        }) {
            f.binaries.push(format!("{dir}/{name}"));
        }
    }
    f.alternative = std::fs::read_link(root.path("/etc/alternatives/iptables"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    for tool in ["update-alternatives", "alternatives"] {
        if BIN_DIRS
            .iter()
            .any(|d| root.path(Path::new(d).join(tool)).is_file())
        {
            f.alternatives_tool = Some(tool.to_string());
            break;
        }
    }
    f.backend = f.alternative.as_deref().and_then(|t| {
        if t.ends_with("-nft") {
            Some(Backend::Nft)
        } else if t.ends_with("-legacy") {
            Some(Backend::Legacy)
        } else {
            None
        }
    });
    // Running the binaries only makes sense for the host we run on, not for a --root tree.
    if root.is_live() {
        // The three tools at once: each is a process, 0.1-0.3 s under TCG.
        let (version, legacy, nft) = tokio::join!(
            version_backend(&f),
            legacy_count(&f, root),
            save_count(&f, "iptables-nft-save")
        );
        if let Some(b) = version? {
            f.backend = Some(b);
        }
        f.legacy_rules = legacy?;
        f.nft_rules = nft?;
    }
    Ok(f)
}

/// The backend `iptables --version` names, if there is an iptables.
async fn version_backend(f: &IptablesFacts) -> Result<Option<Backend>, FactError> {
    let Some(bin) = f.path_of("iptables") else {
        return Ok(None);
    };
    let out = run_tool(bin, &["--version"], TOOL_TIMEOUT).await?;
    Ok(parse_version(&out.stdout))
}

/// Without loaded legacy tables there are no legacy rules; asking iptables-legacy-save anyway
/// would make the kernel load ip_tables just to answer.
async fn legacy_count(f: &IptablesFacts, root: &HostRoot) -> Result<Option<usize>, FactError> {
    let legacy_tables = std::fs::read_to_string(root.path("/proc/net/ip_tables_names"))
        .map(|t| !t.trim().is_empty())
        .unwrap_or(false);
    if legacy_tables {
        save_count(f, "iptables-legacy-save").await
    } else if f.has("iptables-legacy-save") {
        Ok(Some(0))
    } else {
        Ok(None)
    }
}

async fn save_count(f: &IptablesFacts, name: &str) -> Result<Option<usize>, FactError> {
    let Some(bin) = f.path_of(name) else {
        return Ok(None);
    };
    let out = run_tool(bin, &[], TOOL_TIMEOUT).await?;
    if !out.status.success() {
        // A backend whose kernel side is missing (no ip_tables module) holds no rules.
        tracing::debug!(tool = name, stderr = %super::last_line(&out.stderr), "save failed");
        return Ok(Some(0));
    }
    Ok(Some(count_rules(&out.stdout)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_lines() {
        assert_eq!(
            parse_version("iptables v1.8.9 (nf_tables)\n"),
            Some(Backend::Nft)
        );
        assert_eq!(
            parse_version("iptables v1.8.4 (legacy)\n"),
            Some(Backend::Legacy)
        );
        assert_eq!(parse_version("iptables v1.6.1\n"), Some(Backend::Legacy));
        assert_eq!(parse_version(""), None);
    }

    #[test]
    fn counting_ignores_builtin_chains_and_comments() {
        let empty = "# Generated by iptables-nft-save v1.8.9 (nf_tables) on Wed Nov 25 2026\n\
                     *filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
                     COMMIT\n# Completed on Wed Nov 25 2026\n";
        assert_eq!(count_rules(empty), 0);
        let docker = "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n\
                      -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n\
                      -A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE\nCOMMIT\n";
        assert_eq!(count_rules(docker), 3);
    }

    #[test]
    fn probe_tree_reads_alternatives_link() {
        let d = tempfile::tempdir().unwrap();
        let root = HostRoot::new(Some(d.path().into()));
        std::fs::create_dir_all(d.path().join("usr/sbin")).unwrap();
        std::fs::create_dir_all(d.path().join("etc/alternatives")).unwrap();
        std::fs::write(d.path().join("usr/sbin/iptables-nft"), "").unwrap();
        std::fs::write(d.path().join("usr/sbin/iptables-legacy"), "").unwrap();
        std::os::unix::fs::symlink(
            "/etc/alternatives/iptables",
            d.path().join("usr/sbin/iptables"),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            "/usr/sbin/iptables-legacy",
            d.path().join("etc/alternatives/iptables"),
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let f = rt.block_on(probe(&root)).unwrap();
        assert!(f.has("iptables") && f.has("iptables-nft") && !f.has("ip6tables"));
        assert_eq!(f.backend, Some(Backend::Legacy));
        assert_eq!(f.legacy_rules, None, "no tools run for a --root tree");
    }
}
