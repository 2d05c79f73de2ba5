//! `trusted_ca`: the userdata's CA certificates in the system trust store, one file each,
//! through the distribution's tool; then Docker restarted when its daemon started before the
//! store changed (Go's crypto/x509 loads the system roots once per process, so a running
//! dockerd would not trust the new CA for its pulls). Pure.
//!
//! Idempotence is decided on the host's state, not on a record: the files must read as
//! planned and the bundle the tool extracted must hold every certificate. A tree prepared
//! below `--root` (the tool not run) therefore runs the tool on its first boot.

use super::Outcome;
pub use super::host_action::{CaFile, StoreChange};
use super::host_action::{HostAction, HostStep};
use crate::facts::ProbeArea;
use crate::facts::host::HostFacts;
use crate::facts::trust::{DOCKER_UNIT, FILE_PREFIX, TrustFacts, TrustStore};
use crate::userdata::{Settings, ca};

const STEP: &str = "trusted-ca";
const WHY: &str = "the userdata's CAs must be in the system trust store before the container \
                   runtime and the agents first reach a server that uses them";
const DOCKER_STEP: &str = "trusted-ca.docker";
const WHY_DOCKER: &str =
    "dockerd reads the system roots once: one started before the store changed must restart";

/// `bootstrapd-<N>-<first 12 hex digits of the sha256>.crt`: N keeps the userdata's order
/// (the tools read files in name order), the hash tells files of different certificates
/// apart at a glance.
pub fn file_name(n: usize, fingerprint: &str) -> String {
    format!("{FILE_PREFIX}{n}-{}.crt", &fingerprint[..12])
}

/// Every certificate of the userdata, as the file it goes to in `store`'s directory.
pub fn wanted_files(settings: &Settings, store: TrustStore) -> Vec<CaFile> {
    settings
        .trusted_ca
        .iter()
        .flat_map(|b| b.certificates())
        .enumerate()
        .map(|(i, der)| {
            let fingerprint = ca::fingerprint(&der);
            CaFile {
                path: format!("{}/{}", store.dir(), file_name(i + 1, &fingerprint)),
                content: ca::to_pem(&der),
                fingerprint,
            }
        })
        .collect()
}

/// The trust store step, and Docker's restart when it needs one; nothing at all when the
/// userdata has no CA and bootstrapd left none.
pub fn plan(settings: &Settings, facts: &HostFacts) -> Vec<HostStep> {
    let t = &facts.trust;
    if settings.trusted_ca.is_empty() && t.files.is_empty() {
        return Vec::new();
    }
    let store = match usable_store(settings, facts) {
        Ok(store) => store,
        Err(step) => return vec![*step],
    };
    let step = store_step(settings, t, store);
    let mut steps = vec![step];
    if let Some(restart) = docker_restart(settings, t, steps[0].changes()) {
        steps.push(restart);
    }
    steps
}

/// The store, when the plan can use it; the failed step otherwise.
fn usable_store(settings: &Settings, facts: &HostFacts) -> Result<TrustStore, Box<HostStep>> {
    let t = &facts.trust;
    let failed =
        |detail: String, remedy: String| Box::new(HostStep::failed(STEP, WHY, detail, remedy));
    if let Some(e) = facts.errors.get(ProbeArea::TrustStore) {
        return Err(failed(
            format!("cannot read the trust store: {}", e.message),
            "check the permissions of the trust store's directories".into(),
        ));
    }
    let Some(store) = t.store else {
        return Err(failed(
            "no apt-get, dnf, yum or zypper: the distribution's trust store is not known".into(),
            "add the CAs to the image's trust store, or remove trusted_ca".into(),
        ));
    };
    if store == TrustStore::Debian && t.usr_local_read_only && !settings.trusted_ca.is_empty() {
        return Err(failed(
            "/usr/local is read-only: update-ca-certificates takes local CAs only from \
             /usr/local/share/ca-certificates (/etc/ca-certificates.conf names files below \
             /usr/share/ca-certificates)"
                .into(),
            "add the CAs to the image's trust store when it is built, or mount /usr/local \
             writable"
                .into(),
        ));
    }
    let (tool, _) = store.tool();
    if t.tool.is_none() {
        return Err(failed(
            format!("{tool} is not installed"),
            format!("install {} in the image", store.package()),
        ));
    }
    Ok(store)
}

fn store_step(settings: &Settings, t: &TrustFacts, store: TrustStore) -> HostStep {
    let wanted = wanted_files(settings, store);
    let write: Vec<CaFile> = wanted
        .iter()
        .filter(|w| t.files.get(base_name(&w.path)) != Some(&w.content))
        .cloned()
        .collect();
    let remove: Vec<String> = t
        .files
        .keys()
        .filter(|name| !wanted.iter().any(|w| base_name(&w.path) == name.as_str()))
        .map(|name| format!("{}/{name}", store.dir()))
        .collect();
    let unextracted = wanted.iter().any(|w| !t.bundle.contains(&w.fingerprint));
    let listed = listing(&wanted);
    if write.is_empty() && remove.is_empty() && !unextracted {
        return HostStep::report(
            STEP,
            WHY,
            Outcome::Ok,
            format!("in the trust store ({}): {listed}", store.bundle()),
        );
    }
    let (tool, args) = store.tool();
    let mut what = Vec::new();
    if !write.is_empty() {
        what.push(format!("write {}", listing(&write)));
    }
    if !remove.is_empty() {
        what.push(format!("remove {}", remove.join(", ")));
    }
    let command = std::iter::once(tool).chain(args.iter().copied());
    what.push(format!("run `{}`", command.collect::<Vec<_>>().join(" ")));
    HostStep::change(
        STEP,
        WHY,
        what.join("; "),
        HostAction::TrustedCa(Box::new(StoreChange {
            store,
            tool: t.tool.clone().unwrap_or_else(|| tool.to_string()),
            write,
            remove,
            expect: wanted.iter().map(|w| w.fingerprint.clone()).collect(),
        })),
    )
}

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// `sha256 <fingerprint> -> <path>` for each file.
pub fn listing(files: &[CaFile]) -> String {
    if files.is_empty() {
        return "no certificate".into();
    }
    files
        .iter()
        .map(|f| format!("sha256 {} -> {}", f.fingerprint, f.path))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A running Docker restarts when the store changes now, or changed after it started (a run
/// cut short between the two steps).
fn docker_restart(settings: &Settings, t: &TrustFacts, changing: bool) -> Option<HostStep> {
    let docker = t.docker.filter(|d| d.active)?;
    let stale = !settings.trusted_ca.is_empty()
        && matches!((docker.since, t.bundle_written), (Some(s), Some(w)) if s < w);
    if !changing && !stale {
        return None;
    }
    let why = if changing {
        "the trust store changes now"
    } else {
        "the trust store changed after it started"
    };
    Some(HostStep::change(
        DOCKER_STEP,
        WHY_DOCKER,
        format!("{DOCKER_UNIT} is running and {why}: restart it"),
        HostAction::RestartUnit {
            unit: DOCKER_UNIT.into(),
        },
    ))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::facts::trust::DockerRun;
    use crate::userdata::TrustedCa;

    fn settings(pems: &[&str]) -> Settings {
        let mut s = Settings::rke1_worker();
        s.trusted_ca = pems
            .iter()
            .map(|p| TrustedCa {
                pem: p.to_string(),
                count: ca::certificates(p).len(),
            })
            .collect();
        s
    }

    fn debian() -> HostFacts {
        let mut f = HostFacts::default();
        f.trust.store = Some(TrustStore::Debian);
        f.trust.tool = Some("/usr/sbin/update-ca-certificates".into());
        f
    }

    /// The host as the planned step leaves it: files written, the tool run.
    fn applied(f: &mut HostFacts, step: &HostStep) {
        let HostAction::TrustedCa(c) = &step.action else {
            panic!("{step:?}");
        };
        let StoreChange { write, remove, .. } = c.as_ref();
        for r in remove {
            f.trust.files.remove(base_name(r));
        }
        for w in write {
            f.trust
                .files
                .insert(base_name(&w.path).into(), w.content.clone());
        }
        f.trust.bundle = f
            .trust
            .files
            .values()
            .flat_map(|c| crate::facts::trust::fingerprints(c))
            .collect();
    }

    #[test]
    fn files_are_named_by_order_and_fingerprint() {
        assert_eq!(
            file_name(2, &"ab12".repeat(16)),
            "bootstrapd-2-ab12ab12ab12.crt"
        );
        let (a, b) = (ca::tests::ca_pem("a"), ca::tests::ca_pem("b"));
        let files = wanted_files(&settings(&[&format!("{a}{b}")]), TrustStore::Rhel);
        assert_eq!(files.len(), 2);
        assert!(
            files[1]
                .path
                .starts_with("/etc/pki/ca-trust/source/anchors/bootstrapd-2-")
        );
        assert_eq!(ca::certificates(&files[0].content), ca::certificates(&a));
    }

    #[test]
    fn installs_once_then_reports_and_removes_what_left_the_userdata() {
        let (a, b) = (ca::tests::ca_pem("a"), ca::tests::ca_pem("b"));
        let mut f = debian();
        assert!(
            plan(&Settings::rke1_worker(), &f).is_empty(),
            "nothing asked, nothing left"
        );
        let s = settings(&[&a, &b]);
        let steps = plan(&s, &f);
        assert_eq!(steps.len(), 1, "{steps:?}");
        assert!(
            steps[0].detail.ends_with("run `update-ca-certificates`"),
            "{}",
            steps[0].detail
        );
        applied(&mut f, &steps[0]);
        let again = plan(&s, &f);
        assert!(!again[0].changes(), "{again:?}");
        assert!(again[0].detail.contains("sha256 "), "{}", again[0].detail);
        // Files in place but not extracted (a --root tree): the tool runs, nothing is written.
        f.trust.bundle.clear();
        let HostAction::TrustedCa(c) = &plan(&s, &f)[0].action else {
            panic!()
        };
        let StoreChange { write, remove, .. } = c.as_ref();
        assert!(write.is_empty() && remove.is_empty());
        // b leaves the userdata: its file goes, a's stays.
        let only_a = settings(&[&a]);
        let steps = plan(&only_a, &f);
        let HostAction::TrustedCa(c) = &steps[0].action else {
            panic!()
        };
        let StoreChange { write, remove, .. } = c.as_ref();
        assert!(write.is_empty());
        assert_eq!(remove.len(), 1);
        assert!(remove[0].contains("/bootstrapd-2-"), "{remove:?}");
        // All gone: bootstrapd's files are removed, then nothing is planned any more.
        let steps = plan(&Settings::rke1_worker(), &f);
        applied(&mut f, &steps[0]);
        assert!(plan(&Settings::rke1_worker(), &f).is_empty());
    }

    #[test]
    fn refusals_are_made_in_the_plan() {
        let s = settings(&[&ca::tests::ca_pem("a")]);
        let mut f = debian();
        f.trust.usr_local_read_only = true;
        let step = &plan(&s, &f)[0];
        assert_eq!(step.preview().outcome, Outcome::Failed);
        assert!(
            step.detail.starts_with("/usr/local is read-only"),
            "{}",
            step.detail
        );
        let mut f = debian();
        f.trust.tool = None;
        assert!(
            plan(&s, &f)[0]
                .detail
                .contains("update-ca-certificates is not installed")
        );
        let mut f = debian();
        f.trust.store = None;
        assert_eq!(plan(&s, &f)[0].preview().outcome, Outcome::Failed);
        // RHEL's directory is under /etc: a read-only /usr/local does not matter there.
        let mut f = debian();
        f.trust.store = Some(TrustStore::Rhel);
        f.trust.usr_local_read_only = true;
        assert!(plan(&s, &f)[0].changes());
    }

    #[test]
    fn docker_restarts_when_it_started_before_the_store_changed() {
        let s = settings(&[&ca::tests::ca_pem("a")]);
        let mut f = debian();
        let at = |secs| Some(UNIX_EPOCH + Duration::from_secs(secs));
        f.trust.docker = Some(DockerRun {
            active: true,
            since: at(100),
        });
        let steps = plan(&s, &f);
        assert_eq!(steps.len(), 2);
        assert_eq!(
            steps[1].action,
            HostAction::RestartUnit {
                unit: DOCKER_UNIT.into()
            }
        );
        applied(&mut f, &steps[0]);
        // The store written after Docker started, the restart not done: restart still.
        f.trust.bundle_written = at(200);
        let steps = plan(&s, &f);
        assert!(!steps[0].changes() && steps[1].changes(), "{steps:?}");
        // Restarted after the store changed: nothing left to do.
        f.trust.docker = Some(DockerRun {
            active: true,
            since: at(300),
        });
        assert_eq!(plan(&s, &f).len(), 1);
        // A stopped Docker reads the store when it starts.
        f.trust.bundle.clear();
        f.trust.docker = Some(DockerRun {
            active: false,
            since: at(100),
        });
        assert_eq!(plan(&s, &f).len(), 1);
    }
}
