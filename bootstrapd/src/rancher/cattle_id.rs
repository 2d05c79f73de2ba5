//! Which CATTLE_ID a node registers with (`rancher.system_agent.machine_id`), and what an
//! existing `/etc/rancher/agent/cattle-id` means for it.
//!
//! Rancher names a custom cluster's machine after the id: the connect call creates a
//! machine request secret `custom-` + sha256(id)[..12] (`pkg/capr/configserver/custom.go`
//! `machineRequestSecretName`), and the unmanaged-machine controller
//! (`pkg/controllers/capr/unmanaged/controller.go` `findMachine`) takes the machine of that
//! name, else the one whose `rke.cattle.io/machine-id` label is the id, else creates one.
//! The same id is therefore the same machine (its plan secret is delivered again); a new id
//! is a new machine, and the old one stays until someone deletes it.

use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::agent_error::{SystemAgentError, io_err};
use crate::fsutil::HostRoot;
use crate::secret::Secret;
use crate::userdata::{MachineId, Settings};

/// Where the CATTLE_ID is kept (install.sh's path).
pub const CATTLE_ID_FILE: &str = "/etc/rancher/agent/cattle-id";

/// 63 hex characters of sha256 over random bytes, as the installer's
/// `dd if=/dev/urandom count=1 bs=512 | sha256sum | head -c 63`.
pub fn new_cattle_id() -> Result<String, SystemAgentError> {
    use std::io::Read;
    let mut bytes = [0u8; 512];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(io_err(PathBuf::from("/dev/urandom")))?;
    let mut id = hex::encode(Sha256::digest(bytes));
    id.truncate(63);
    Ok(id)
}

pub(crate) fn valid_cattle_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_hexdigit())
}

/// The machine name Rancher derives from a CATTLE_ID.
pub fn machine_name(cattle_id: &str) -> String {
    let h = hex::encode(Sha256::digest(cattle_id.as_bytes()));
    format!("custom-{}", &h[..12])
}

/// Where the CATTLE_ID comes from, resolved against the datasource's instance id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CattleIdSource {
    /// The cattle-id file's, else a new random one (install.sh `generate_cattle_identifier`).
    #[default]
    Random,
    /// An id the userdata decides: derived from the instance id, or given.
    Wanted {
        id: String,
        /// The setting, for messages: `rancher.system_agent.machine_id: instance_id`.
        from: String,
        /// The instance id is this disk's /etc/machine-id (a datasource without one): a
        /// reimage gets a new one, so a new machine after all.
        per_disk: bool,
    },
}

/// The setting's name in messages.
const SETTING: &str = "rancher.system_agent.machine_id";

impl CattleIdSource {
    /// The source the settings ask for. `instance_id` needs the datasource's instance id.
    pub fn resolve(
        root: &HostRoot,
        settings: &Settings,
        instance_id: Option<&str>,
    ) -> Result<Self, SystemAgentError> {
        let r = &settings.rancher;
        match &r.system_agent.machine_id {
            MachineId::Random => Ok(CattleIdSource::Random),
            MachineId::Value(v) => Ok(CattleIdSource::Wanted {
                id: v.clone(),
                from: format!("{SETTING}: {{value}}"),
                per_disk: false,
            }),
            MachineId::InstanceId => {
                let instance = instance_id
                    .map(str::trim)
                    .filter(|i| !i.is_empty())
                    .ok_or(SystemAgentError::NoInstanceId)?;
                Ok(CattleIdSource::Wanted {
                    id: derive_cattle_id(&r.server, &r.token, instance),
                    from: format!("{SETTING}: instance_id (instance {instance})"),
                    per_disk: is_machine_id(root, instance),
                })
            }
        }
    }

    /// One line for findings: where the id comes from.
    pub fn describe(&self) -> String {
        match self {
            CattleIdSource::Random => format!("{SETTING}: random"),
            CattleIdSource::Wanted { from, .. } => from.clone(),
        }
    }
}

/// The CATTLE_ID for `instance_id`: sha256 over a domain tag and, length-prefixed, the
/// server URL, sha256(token) and the instance id; 63 hex digits as install.sh's ids. The
/// server and token (one per cluster) keep two clusters from sharing an id: Rancher keeps
/// every custom cluster's machines in one namespace and finds a machine by the name alone.
/// The token enters only hashed, and the id cannot be turned back into it.
pub fn derive_cattle_id(server: &str, token: &Secret, instance_id: &str) -> String {
    let token_hash = hex::encode(Sha256::digest(token.expose().as_bytes()));
    let mut h = Sha256::new();
    h.update(b"bootstrapd cattle-id v1");
    for part in [
        server.trim_end_matches('/').as_bytes(),
        token_hash.as_bytes(),
        instance_id.as_bytes(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    let mut id = hex::encode(h.finalize());
    id.truncate(63);
    id
}

/// Whether `instance_id` is only this disk's /etc/machine-id (the fallback of datasources
/// without an instance id, `datasource/fetched.rs`).
fn is_machine_id(root: &HostRoot, instance_id: &str) -> bool {
    std::fs::read_to_string(root.path("/etc/machine-id"))
        .map(|m| m.trim() == instance_id)
        .unwrap_or(false)
}

/// The id a registration uses; nothing written yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CattleIdChoice {
    pub id: String,
    /// The cattle-id file does not exist and is to be written with `id`.
    pub create: bool,
}

/// Decides the id without writing anything: the file's when it exists and agrees with the
/// source; the source's (or a new random one) when there is no file. A file that disagrees
/// with an id the userdata decides is [`SystemAgentError::CattleIdConflict`]: this disk was
/// registered as another machine, and neither keeping it (the userdata would be ignored)
/// nor replacing it (Rancher would get a second machine for this host) is safe to do
/// silently.
pub fn decide(
    root: &HostRoot,
    source: &CattleIdSource,
) -> Result<CattleIdChoice, SystemAgentError> {
    let path = root.path(CATTLE_ID_FILE);
    let existing = match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id = text.trim().to_string();
            if !valid_cattle_id(&id) {
                return Err(SystemAgentError::CattleId {
                    path,
                    value: crate::userdata::tree::shown(&crate::secret::scrub_token_shaped(&id)),
                });
            }
            Some(id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => return Err(SystemAgentError::Io { path, source }),
    };
    match (existing, source) {
        (Some(id), CattleIdSource::Random) => Ok(CattleIdChoice { id, create: false }),
        (Some(id), CattleIdSource::Wanted { id: wanted, .. }) if id == *wanted => {
            Ok(CattleIdChoice { id, create: false })
        }
        (
            Some(id),
            CattleIdSource::Wanted {
                id: wanted, from, ..
            },
        ) => Err(conflict(path, id, wanted, from)),
        (None, CattleIdSource::Random) => Ok(CattleIdChoice {
            id: new_cattle_id()?,
            create: true,
        }),
        (None, CattleIdSource::Wanted { id, .. }) => Ok(CattleIdChoice {
            id: id.clone(),
            create: true,
        }),
    }
}

fn conflict(path: PathBuf, file_id: String, wanted: &str, from: &str) -> SystemAgentError {
    SystemAgentError::CattleIdConflict {
        path,
        file_machine: machine_name(&file_id),
        file_id,
        wanted_machine: machine_name(wanted),
        from: from.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(machine_id: &str) -> Settings {
        let yaml = format!(
            "roles: [worker]\nrancher:\n  server: https://rancher.lab\n  token: {}\n  \
             system_agent:\n    machine_id: {machine_id}\n",
            "t0k3n".repeat(12)
        );
        crate::userdata::parse(yaml.as_bytes()).unwrap().settings
    }

    fn root() -> (tempfile::TempDir, HostRoot) {
        let d = tempfile::tempdir().unwrap();
        let root = HostRoot::new(Some(d.path().to_path_buf()));
        (d, root)
    }

    #[test]
    fn the_derived_id_is_stable_and_differs_per_instance_server_and_token() {
        let t = Secret::new("tok-a");
        let a = derive_cattle_id("https://r.lab", &t, "i-1");
        assert_eq!(a, derive_cattle_id("https://r.lab", &t, "i-1"));
        // A trailing slash is the same server (the settings drop it too).
        assert_eq!(a, derive_cattle_id("https://r.lab/", &t, "i-1"));
        assert_eq!(a.len(), 63);
        assert!(valid_cattle_id(&a));
        assert!(
            a.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(a, derive_cattle_id("https://r.lab", &t, "i-2"));
        assert_ne!(a, derive_cattle_id("https://other.lab", &t, "i-1"));
        assert_ne!(
            a,
            derive_cattle_id("https://r.lab", &Secret::new("tok-b"), "i-1")
        );
        // Length prefixes: moving a character between fields is another id.
        assert_ne!(
            derive_cattle_id("https://r.lab1", &t, "2"),
            derive_cattle_id("https://r.lab", &t, "12")
        );
        // The token is not in it, in any form a reader could match.
        assert!(!a.contains(&hex::encode("tok-a")));
    }

    #[test]
    fn the_setting_resolves_to_its_source() {
        let (_d, root) = root();
        assert_eq!(
            CattleIdSource::resolve(&root, &settings("random"), Some("i-1")).unwrap(),
            CattleIdSource::Random
        );
        let s = settings("instance_id");
        let CattleIdSource::Wanted { id, from, per_disk } =
            CattleIdSource::resolve(&root, &s, Some("i-1")).unwrap()
        else {
            panic!("not wanted")
        };
        assert_eq!(
            id,
            derive_cattle_id("https://rancher.lab", &s.rancher.token, "i-1")
        );
        assert!(from.contains("instance_id (instance i-1)"), "{from}");
        assert!(!per_disk);
        assert!(matches!(
            CattleIdSource::resolve(&root, &s, None),
            Err(SystemAgentError::NoInstanceId)
        ));
        let v = settings("{value: 0123abc}");
        assert!(matches!(
            CattleIdSource::resolve(&root, &v, None).unwrap(),
            CattleIdSource::Wanted { id, .. } if id == "0123abc"
        ));
    }

    #[test]
    fn an_instance_id_that_is_the_disks_machine_id_is_flagged() {
        let (_d, root) = root();
        std::fs::create_dir_all(root.path("/etc")).unwrap();
        std::fs::write(root.path("/etc/machine-id"), "0123abcd\n").unwrap();
        let s = settings("instance_id");
        let src = CattleIdSource::resolve(&root, &s, Some("0123abcd")).unwrap();
        assert!(matches!(src, CattleIdSource::Wanted { per_disk: true, .. }));
        let src = CattleIdSource::resolve(&root, &s, Some("i-0abc")).unwrap();
        assert!(matches!(
            src,
            CattleIdSource::Wanted {
                per_disk: false,
                ..
            }
        ));
    }

    #[test]
    fn an_existing_file_is_kept_when_it_agrees_and_refused_when_it_does_not() {
        let (_d, root) = root();
        let wanted = CattleIdSource::Wanted {
            id: "abc".into(),
            from: "x".into(),
            per_disk: false,
        };
        // No file: the source's id, to be written; random ids are fresh each time.
        assert_eq!(
            decide(&root, &wanted).unwrap(),
            CattleIdChoice {
                id: "abc".into(),
                create: true
            }
        );
        let r = decide(&root, &CattleIdSource::Random).unwrap();
        assert!(r.create && r.id.len() == 63);
        assert!(!root.path(CATTLE_ID_FILE).exists(), "decide writes nothing");

        std::fs::create_dir_all(root.path("/etc/rancher/agent")).unwrap();
        std::fs::write(root.path(CATTLE_ID_FILE), "abc\n").unwrap();
        assert_eq!(
            decide(&root, &wanted).unwrap(),
            CattleIdChoice {
                id: "abc".into(),
                create: false
            }
        );
        assert_eq!(decide(&root, &CattleIdSource::Random).unwrap().id, "abc");

        std::fs::write(root.path(CATTLE_ID_FILE), "def\n").unwrap();
        let err = decide(&root, &wanted).unwrap_err();
        let SystemAgentError::CattleIdConflict {
            file_id,
            file_machine,
            wanted_machine,
            ..
        } = &err
        else {
            panic!("{err}")
        };
        assert_eq!(file_id, "def");
        assert_eq!(file_machine, &machine_name("def"));
        assert_eq!(wanted_machine, &machine_name("abc"));
        let msg = err.to_string();
        assert!(
            msg.contains("cattle-id") && msg.contains("second machine"),
            "{msg}"
        );
        assert_eq!(
            std::fs::read_to_string(root.path(CATTLE_ID_FILE)).unwrap(),
            "def\n",
            "a conflict changes nothing"
        );
    }
}
