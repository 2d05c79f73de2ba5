//! The datasources by name: what bootstrapd.toml and the kernel command line choose, and what
//! the journal says delivered the userdata.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The datasources bootstrapd knows, by name: what bootstrapd.toml and the kernel command
/// line choose before anything is detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatasourceKind {
    Nocloud,
    Ec2,
    Openstack,
    CmdlineUrl,
    LocalFile,
    /// Explicitly none: never look for userdata.
    None,
}

impl DatasourceKind {
    pub const ALL: [DatasourceKind; 6] = [
        DatasourceKind::Nocloud,
        DatasourceKind::Ec2,
        DatasourceKind::Openstack,
        DatasourceKind::CmdlineUrl,
        DatasourceKind::LocalFile,
        DatasourceKind::None,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DatasourceKind::Nocloud => "nocloud",
            DatasourceKind::Ec2 => "ec2",
            DatasourceKind::Openstack => "openstack",
            DatasourceKind::CmdlineUrl => "cmdline_url",
            DatasourceKind::LocalFile => "local_file",
            DatasourceKind::None => "none",
        }
    }

    /// Parses a name as written on the kernel command line or in bootstrapd.toml
    /// (`nocloud-net` is accepted as an alias of `nocloud`, `-` for `_`).
    pub fn from_name(name: &str) -> Option<Self> {
        let n = name.trim().to_ascii_lowercase().replace('-', "_");
        match n.as_str() {
            "nocloud_net" | "nocloudnet" => Some(DatasourceKind::Nocloud),
            "configdrive" | "config_drive" => Some(DatasourceKind::Openstack),
            _ => Self::ALL.into_iter().find(|k| k.name() == n),
        }
    }
}

impl std::fmt::Display for DatasourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What delivered the userdata, as the journal (`datasource`), `status` and `query` name it:
/// a datasource by its name, or a file given on the command line (`plan`/`query --userdata`)
/// by its path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Origin {
    Datasource(DatasourceKind),
    File(PathBuf),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Datasource(kind) => kind.fmt(f),
            Origin::File(path) => path.display().fmt(f),
        }
    }
}

impl From<DatasourceKind> for Origin {
    fn from(kind: DatasourceKind) -> Self {
        Origin::Datasource(kind)
    }
}

/// Compares with the name as written (`"nocloud"`, a path).
impl PartialEq<&str> for Origin {
    fn eq(&self, other: &&str) -> bool {
        match self {
            Origin::Datasource(kind) => kind.name() == *other,
            Origin::File(path) => path.as_os_str() == *other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip() {
        for k in DatasourceKind::ALL {
            assert_eq!(DatasourceKind::from_name(k.name()), Some(k));
        }
        assert_eq!(
            DatasourceKind::from_name("NoCloud-Net"),
            Some(DatasourceKind::Nocloud)
        );
        assert_eq!(
            DatasourceKind::from_name("cmdline-url"),
            Some(DatasourceKind::CmdlineUrl)
        );
        assert_eq!(DatasourceKind::from_name("azure"), None);
    }

    #[test]
    fn origin_is_shown_and_serialized_as_the_name_or_path() {
        let ds = Origin::from(DatasourceKind::CmdlineUrl);
        assert_eq!(ds.to_string(), "cmdline_url");
        assert_eq!(serde_json::to_value(&ds).unwrap(), "cmdline_url");
        assert!(ds == "cmdline_url" && ds != "nocloud");
        let file = Origin::File("/tmp/u.yaml".into());
        assert_eq!(file.to_string(), "/tmp/u.yaml");
        assert_eq!(serde_json::to_value(&file).unwrap(), "/tmp/u.yaml");
        assert!(file == "/tmp/u.yaml");
    }
}
