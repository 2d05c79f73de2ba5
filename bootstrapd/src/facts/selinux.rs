//! SELinux mode from the kernel's selinuxfs and the configured mode for the next boot.

use serde::Serialize;

use super::{FactError, read_optional};
use crate::fsutil::HostRoot;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SelinuxMode {
    Enforcing,
    Permissive,
    Disabled,
}

impl SelinuxMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SelinuxMode::Enforcing => "enforcing",
            SelinuxMode::Permissive => "permissive",
            SelinuxMode::Disabled => "disabled",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SelinuxFacts {
    /// Now: from /sys/fs/selinux/enforce (absent: SELinux is not enabled in the kernel).
    pub current: SelinuxMode,
    /// `SELINUX=` of /etc/selinux/config: what the next boot will run; None without the file.
    pub configured: Option<SelinuxMode>,
}

impl SelinuxFacts {
    /// Policy packages matter when SELinux is on now or will be after a reboot.
    pub fn enabled(&self) -> bool {
        self.current != SelinuxMode::Disabled
            || matches!(
                self.configured,
                Some(SelinuxMode::Enforcing | SelinuxMode::Permissive)
            )
    }
}

pub fn probe(root: &HostRoot) -> Result<SelinuxFacts, FactError> {
    let enforce = root.path("/sys/fs/selinux/enforce");
    let current = match read_optional(&enforce)? {
        None => SelinuxMode::Disabled,
        Some(s) => match s.trim() {
            "1" => SelinuxMode::Enforcing,
            "0" => SelinuxMode::Permissive,
            other => {
                return Err(FactError::Parse {
                    path: enforce,
                    line: 1,
                    message: format!("expected 0 or 1, found {other:?}"),
                });
            }
        },
    };
    let config = root.path("/etc/selinux/config");
    let configured = match read_optional(&config)? {
        None => None,
        Some(text) => parse_config(&text).map_err(|(line, message)| FactError::Parse {
            path: config.clone(),
            line,
            message,
        })?,
    };
    Ok(SelinuxFacts {
        current,
        configured,
    })
}

/// The `SELINUX=` value of /etc/selinux/config (shell-like KEY=value lines).
pub fn parse_config(text: &str) -> Result<Option<SelinuxMode>, (usize, String)> {
    let mut mode = None;
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        let Some(value) = line.strip_prefix("SELINUX=") else {
            continue;
        };
        let value = value.trim().trim_matches('"').trim_matches('\'');
        mode = Some(match value.to_ascii_lowercase().as_str() {
            "enforcing" => SelinuxMode::Enforcing,
            "permissive" => SelinuxMode::Permissive,
            "disabled" => SelinuxMode::Disabled,
            other => return Err((i + 1, format!("unknown SELINUX={other:?}"))),
        });
    }
    Ok(mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parsing() {
        let rhel = "# This file controls the state of SELinux on the system.\n\
                    SELINUX=enforcing\n\
                    # SELINUXTYPE= can take one of these three values:\n\
                    SELINUXTYPE=targeted\n";
        assert_eq!(parse_config(rhel), Ok(Some(SelinuxMode::Enforcing)));
        assert_eq!(
            parse_config("SELINUX=\"permissive\"\n"),
            Ok(Some(SelinuxMode::Permissive))
        );
        assert_eq!(parse_config("SELINUXTYPE=targeted\n"), Ok(None));
        assert_eq!(parse_config("x\nSELINUX=maybe\n").unwrap_err().0, 2);
    }

    #[test]
    fn probe_tree() {
        let d = tempfile::tempdir().unwrap();
        let root = HostRoot::new(Some(d.path().into()));
        let f = probe(&root).unwrap();
        assert_eq!(f.current, SelinuxMode::Disabled);
        assert!(!f.enabled());

        std::fs::create_dir_all(d.path().join("etc/selinux")).unwrap();
        std::fs::write(d.path().join("etc/selinux/config"), "SELINUX=enforcing\n").unwrap();
        // Configured for the next boot counts even while the kernel runs without it.
        assert!(probe(&root).unwrap().enabled());

        std::fs::create_dir_all(d.path().join("sys/fs/selinux")).unwrap();
        std::fs::write(d.path().join("sys/fs/selinux/enforce"), "0").unwrap();
        assert_eq!(probe(&root).unwrap().current, SelinuxMode::Permissive);
        std::fs::write(d.path().join("sys/fs/selinux/enforce"), "junk").unwrap();
        assert!(probe(&root).is_err());
    }
}
