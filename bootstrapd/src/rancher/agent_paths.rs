//! Where the system agent is installed, and the PATH it runs with: rancher/system-agent
//! `install.sh` (`setup_env`, `create_env_file`, `create_systemd_service_file`).
//!
//! * `CATTLE_AGENT_BIN_PREFIX` is `/usr/local`, or `/opt/rancher-system-agent` when
//!   `/usr/local` is a mount point or read-only; the binary and the uninstall script go to
//!   `<prefix>/bin/` and the unit's `ExecStart` names `<prefix>/bin/rancher-system-agent`.
//! * In that same case the env file gets `PATH=<installer's PATH>:<CATTLE_AGENT_FALLBACK_PATH>`,
//!   so that the agent finds binaries RKE2 installed outside `/usr/local`. Rancher's
//!   generated node command for RKE2 clusters sets `CATTLE_AGENT_FALLBACK_PATH="/opt/rke2/bin"`
//!   (rancher/rancher issue #46963 is about that variable), the prefix rancher/rke2 `install.sh`
//!   itself uses when `/usr/local` is read-only or a mount point (`INSTALL_RKE2_TAR_PREFIX`).

use serde::{Deserialize, Serialize};

use crate::facts::usr_local::UsrLocal;

pub const DEFAULT_BIN_PREFIX: &str = "/usr/local";
pub const FALLBACK_BIN_PREFIX: &str = "/opt/rancher-system-agent";
pub const FALLBACK_PATH: &str = "/opt/rke2/bin";
/// systemd's default PATH, for when bootstrapd runs without one.
const SYSTEMD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentPaths {
    /// CATTLE_AGENT_BIN_PREFIX.
    pub prefix: String,
    /// Appended to PATH in the env file when set.
    pub fallback_path: Option<String>,
    /// Why this prefix (for findings and status).
    pub reason: String,
}

impl Default for AgentPaths {
    fn default() -> Self {
        AgentPaths::decide(&UsrLocal::default())
    }
}

impl AgentPaths {
    pub fn decide(usr_local: &UsrLocal) -> Self {
        if !usr_local.unsuitable() {
            return AgentPaths {
                prefix: DEFAULT_BIN_PREFIX.into(),
                fallback_path: None,
                reason: "/usr/local is writable and not a mount point".into(),
            };
        }
        let why = match (usr_local.mount_point, usr_local.read_only) {
            (true, true) => "a read-only mount point",
            (true, false) => "a mount point",
            _ => "read-only",
        };
        AgentPaths {
            prefix: FALLBACK_BIN_PREFIX.into(),
            fallback_path: Some(FALLBACK_PATH.into()),
            reason: format!("/usr/local is {why}"),
        }
    }

    pub fn binary(&self) -> String {
        format!("{}/bin/rancher-system-agent", self.prefix)
    }

    pub fn uninstall_script(&self) -> String {
        format!("{}/bin/rancher-system-agent-uninstall.sh", self.prefix)
    }

    /// The env file's PATH line (with its newline), if any: bootstrapd's own PATH, as the
    /// installer's `${PATH}`, then the fallback path.
    pub fn env_path_line(&self, vars: &[(String, String)]) -> String {
        let Some(extra) = &self.fallback_path else {
            return String::new();
        };
        let path = vars
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
            .unwrap_or(SYSTEMD_PATH);
        format!("PATH={path}:{extra}\n")
    }

    pub fn describe(&self) -> String {
        format!(
            "agent installed under {}/bin ({})",
            self.prefix, self.reason
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_follows_usr_local() {
        let p = AgentPaths::decide(&UsrLocal::default());
        assert_eq!(p.binary(), "/usr/local/bin/rancher-system-agent");
        assert_eq!(p.env_path_line(&[("PATH".into(), "/bin".into())]), "");
        for u in [
            UsrLocal {
                mount_point: true,
                read_only: false,
            },
            UsrLocal {
                mount_point: false,
                read_only: true,
            },
        ] {
            let p = AgentPaths::decide(&u);
            assert_eq!(
                p.binary(),
                "/opt/rancher-system-agent/bin/rancher-system-agent"
            );
            assert_eq!(
                p.uninstall_script(),
                "/opt/rancher-system-agent/bin/rancher-system-agent-uninstall.sh"
            );
            assert_eq!(
                p.env_path_line(&[("PATH".into(), "/usr/bin:/bin".into())]),
                "PATH=/usr/bin:/bin:/opt/rke2/bin\n"
            );
            assert_eq!(
                p.env_path_line(&[]),
                format!("PATH={SYSTEMD_PATH}:/opt/rke2/bin\n")
            );
        }
    }
}
