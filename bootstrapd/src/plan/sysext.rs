//! The runtime from a systemd system extension (`runtime.source.sysext`, or an offline
//! bundle's `sysext/NAME.raw`): settings + facts -> steps. Pure.
//!
//! Flatcar ships Docker this way: the "install" is one image placed under
//! /var/lib/extensions and merged over /usr by systemd-sysext, so it works where /usr is
//! read-only. The steps, each skipped when the host already has what it asks for:
//!
//! 1. place: the image is read or downloaded, its sha256 and its extension-release (against
//!    the host, by systemd's own rules) checked, then renamed into place;
//! 2. merge: `systemd-sysext refresh` and `systemd-sysusers` (the `docker` group docker.socket
//!    wants: Debian's package makes it in its postinst, which an extension does not have);
//! 3. boot: systemd-sysext.service enabled, plus bootstrapd's unit doing after the early
//!    merge what Flatcar's `ensure-sysext.service` does (flatcar/sysext-bakery README: systemd
//!    252 loads the units before the merge, so an enabled docker.service would not start):
//!    a daemon-reload and a restart of the targets that pull the extension's units in. The
//!    engine's unit is enabled with them, then one daemon-reload: systemd 252 does none after a
//!    merge, and a reload costs 1.5-2.5 s under TCG, so the merge, the boot units and the
//!    engine's enablement share it (three before). A merge therefore always brings this step.
//!
//! The engine is then started and awaited by the same steps as a package install; it finds
//! the unit loaded and enabled, so it reloads nothing.

use super::Outcome;
use super::runtime_action::{RuntimeAction, RuntimeStep};
use crate::facts::runtime::{DOCKER_PACKAGES, DOCKER_UNIT, RuntimeFacts};
use crate::facts::sysext::{BOOT_UNIT, BOOT_UNIT_PATH, SysextFacts, SysextImage};
use crate::system::sysext::SYSEXT_UNIT;

const WHY: &str = "the runtime comes from the system extension the userdata names";
const WHY_BOOT: &str = "the extension must be merged, and its units started, on every boot";

/// The unit that starts the extension's units after systemd-sysext.service merged them early
/// at boot (see the module comment).
pub const BOOT_UNIT_CONTENT: &str = "\
# Written by bootstrapd (runtime.source.sysext). systemd 252 loads unit files before
# systemd-sysext.service merges the extensions and does not reload afterwards, so units from an
# extension (docker.service) would be missing from the boot transaction. As Flatcar's
# ensure-sysext.service: reload, then let the targets pull the extension's units in again.
[Unit]
Description=Start the units of merged system extensions (bootstrapd)
DefaultDependencies=no
BindsTo=systemd-sysext.service
After=systemd-sysext.service
Before=sysinit.target shutdown.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/bin/systemctl daemon-reload
ExecStart=/usr/bin/systemctl restart --no-block sockets.target timers.target multi-user.target

[Install]
WantedBy=sysinit.target
";

/// The extension's steps, or the one step that stops the plan (the caller's `Err`).
pub fn steps(
    facts: &RuntimeFacts,
    image: &SysextImage,
) -> Result<Vec<RuntimeStep>, Box<RuntimeStep>> {
    let s = &facts.sysext;
    // The probe's own errors: refused by the runtime planner before it calls here.
    if !s.tools {
        return Err(Box::new(RuntimeStep::failed(
            "runtime.sysext",
            WHY,
            "systemd-sysext (or mount) is missing on this host",
            "use an image with systemd 252 or later, or another runtime.source",
        )));
    }
    if let Some((pkg, version)) = facts.installed_any(&DOCKER_PACKAGES) {
        // The engine stays and the plan goes on with it (service, readiness).
        return Ok(vec![RuntimeStep::with_remedy(
            "runtime.sysext",
            WHY,
            Outcome::Warning,
            format!(
                "{pkg} {version} is installed from packages: the extension {} is not merged \
                 over it (an installed engine is never replaced)",
                image.name
            ),
            "remove the package from the image, or drop runtime.source.sysext",
        )]);
    }
    let merge = merge(s, image);
    let merging = merge.changes();
    Ok(vec![place(s, image), merge, on_boot(s, merging)])
}

fn place(s: &SysextFacts, image: &SysextImage) -> RuntimeStep {
    let dest = image.dest();
    if s.placed_sha256.as_deref() == Some(image.sha256.as_str()) {
        return RuntimeStep::report(
            "runtime.sysext-place",
            WHY,
            Outcome::Ok,
            format!("{dest} is in place (sha256 {})", short(&image.sha256)),
        );
    }
    let verb = if s.placed_sha256.is_some() {
        "replace"
    } else {
        "place"
    };
    RuntimeStep::change(
        "runtime.sysext-place",
        WHY,
        format!(
            "{verb} {dest} from {} once its sha256 {} and its extension-release (for {}) are \
             checked",
            image.shown(),
            short(&image.sha256),
            s.host.describe()
        ),
        RuntimeAction::PlaceSysext {
            image: image.clone(),
            host: s.host.clone(),
        },
    )
}

fn merge(s: &SysextFacts, image: &SysextImage) -> RuntimeStep {
    let placed = s.placed_sha256.as_deref() == Some(image.sha256.as_str());
    if s.merged && placed {
        return RuntimeStep::report(
            "runtime.sysext-merge",
            WHY,
            Outcome::Ok,
            format!("extension {} is merged into /usr", image.name),
        );
    }
    RuntimeStep::change(
        "runtime.sysext-merge",
        WHY,
        format!(
            "systemd-sysext refresh (merge {} into /usr), systemd-sysusers",
            image.name
        ),
        RuntimeAction::MergeSysext {
            name: image.name.clone(),
        },
    )
}

/// `merging`: the merge step runs before this one, and systemd must reload for its units.
fn on_boot(s: &SysextFacts, merging: bool) -> RuntimeStep {
    let enabled =
        |u: &Option<crate::system::systemd::UnitState>| u.as_ref().is_some_and(|u| u.is_enabled());
    let file_ok = s.boot_unit_file.as_deref() == Some(BOOT_UNIT_CONTENT);
    if !merging && file_ok && enabled(&s.sysext_unit) && enabled(&s.boot_unit) {
        return RuntimeStep::report(
            "runtime.sysext-boot",
            WHY_BOOT,
            Outcome::Ok,
            format!("{SYSEXT_UNIT} and {BOOT_UNIT} are enabled"),
        );
    }
    RuntimeStep::change(
        "runtime.sysext-boot",
        WHY_BOOT,
        format!(
            "write {BOOT_UNIT_PATH}; enable {SYSEXT_UNIT}, {BOOT_UNIT} and {DOCKER_UNIT}; \
             daemon-reload (systemd learns the merged units)"
        ),
        RuntimeAction::SysextOnBoot {
            path: BOOT_UNIT_PATH.into(),
            content: BOOT_UNIT_CONTENT.into(),
            units: vec![SYSEXT_UNIT.into(), BOOT_UNIT.into(), DOCKER_UNIT.into()],
        },
    )
}

fn short(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}

/// The install steps of a package source cannot run on a read-only /usr: said in `plan`,
/// before anything is changed, instead of by dpkg halfway through `run`.
pub fn read_only_usr(facts: &RuntimeFacts) -> Option<RuntimeStep> {
    facts.sysext.usr_read_only.then(|| {
        RuntimeStep::failed(
            "runtime.install",
            "Rancher's agents and Kubernetes need a container runtime",
            "/usr is read-only (an immutable image): packages cannot be installed",
            "give runtime.source: {sysext: {url or path, sha256}} (a Docker extension, e.g. \
             from scripts/build-sysext.sh), or an offline bundle holding sysext/NAME.raw",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::sysext::SysextFacts;
    use crate::plan::runtime::plan;
    use crate::system::packages::PackageManager;
    use crate::system::sysext::HostRelease;
    use crate::system::systemd::UnitState;
    use crate::userdata::{RuntimeSettings, RuntimeSource, Settings, SysextSource};

    const SUM: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn settings() -> Settings {
        Settings {
            runtime: RuntimeSettings {
                source: RuntimeSource::Sysext(SysextSource {
                    url: Some("https://user:pw@m.lab/ext/docker.raw?sig=s".into()),
                    path: None,
                    sha256: SUM.into(),
                }),
                ..Default::default()
            },
            ..Settings::rke1_worker()
        }
    }

    fn image() -> SysextImage {
        crate::facts::sysext::resolve(
            &crate::fsutil::HostRoot::new(None),
            &settings().runtime.source,
        )
        .unwrap()
        .unwrap()
    }

    /// An immutable Debian 12 node: no package manager's engine, /usr read-only.
    fn facts() -> RuntimeFacts {
        RuntimeFacts {
            live: true,
            hostname: Some("node1".into()),
            package_manager: Some(PackageManager::Apt),
            sysext: SysextFacts {
                image: Some(image()),
                tools: true,
                usr_read_only: true,
                host: HostRelease::from_os_release("ID=debian\nVERSION_ID=12\n", "x86-64"),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn kinds(steps: &[RuntimeStep]) -> Vec<(&'static str, Outcome)> {
        steps
            .iter()
            .map(|s| (s.step, s.preview().outcome))
            .collect()
    }

    fn enabled() -> Option<UnitState> {
        Some(UnitState {
            load_state: "loaded".into(),
            active_state: "active".into(),
            unit_file_state: "enabled".into(),
        })
    }

    #[test]
    fn a_fresh_immutable_node_places_merges_and_starts() {
        let steps = plan(&settings(), &facts());
        let names: Vec<_> = steps.iter().map(|s| s.step).collect();
        assert_eq!(
            names,
            [
                "runtime.daemon-json",
                "runtime.sysext-place",
                "runtime.sysext-merge",
                "runtime.sysext-boot",
                "runtime.service",
                "runtime.ready",
                "runtime.rke-docker-version"
            ]
        );
        assert!(
            matches!(&steps[1].action, RuntimeAction::PlaceSysext { image, host }
            if image.dest() == "/var/lib/extensions/docker.raw" && host.id == "debian")
        );
        // The URL's password and query appear nowhere: not in the detail, not in the journal.
        let json = serde_json::to_string(&steps[1].action).unwrap();
        for shown in [&steps[1].detail, &json] {
            assert!(!shown.contains("pw") && !shown.contains("sig=s"), "{shown}");
            assert!(shown.contains("m.lab/ext/docker.raw"), "{shown}");
        }
        assert!(
            matches!(&steps[3].action, RuntimeAction::SysextOnBoot { content, units, .. }
            if content == BOOT_UNIT_CONTENT && units.len() == 3 && units[2] == DOCKER_UNIT)
        );
    }

    #[test]
    fn a_second_boot_changes_nothing() {
        let mut f = facts();
        f.sysext.placed_sha256 = Some(SUM.into());
        f.sysext.merged = true;
        f.sysext.boot_unit_file = Some(BOOT_UNIT_CONTENT.into());
        f.sysext.sysext_unit = enabled();
        f.sysext.boot_unit = enabled();
        let steps = plan(&settings(), &f);
        let sysext: Vec<_> = kinds(&steps)
            .into_iter()
            .filter(|(s, _)| s.starts_with("runtime.sysext"))
            .collect();
        assert_eq!(
            sysext,
            [
                ("runtime.sysext-place", Outcome::Ok),
                ("runtime.sysext-merge", Outcome::Ok),
                ("runtime.sysext-boot", Outcome::Ok)
            ]
        );
        // Another image under the same name is replaced and merged again.
        f.sysext.placed_sha256 = Some("f".repeat(64));
        let steps = plan(&settings(), &f);
        assert!(
            steps
                .iter()
                .any(|s| s.step == "runtime.sysext-place" && s.detail.starts_with("replace"))
        );
        assert!(
            steps
                .iter()
                .any(|s| matches!(s.action, RuntimeAction::MergeSysext { .. }))
        );
        // The merge does not reload systemd: the boot step, which does, comes with it.
        assert!(
            steps
                .iter()
                .any(|s| matches!(s.action, RuntimeAction::SysextOnBoot { .. }))
        );
    }

    #[test]
    fn packages_on_a_read_only_usr_fail_in_plan() {
        let mut f = facts();
        f.sysext.image = None;
        let distro = Settings::rke1_worker();
        let steps = plan(&distro, &f);
        let last = steps.last().unwrap();
        assert_eq!(
            (last.step, last.preview().outcome),
            ("runtime.install", Outcome::Failed)
        );
        assert!(last.detail.contains("read-only"), "{}", last.detail);
        assert!(
            !steps
                .iter()
                .any(|s| matches!(s.action, RuntimeAction::Install { .. }))
        );
        // A writable /usr installs as before.
        f.sysext.usr_read_only = false;
        assert!(
            plan(&distro, &f)
                .iter()
                .any(|s| matches!(s.action, RuntimeAction::Install { .. }))
        );
    }

    #[test]
    fn refusals_missing_tools_probe_errors_and_an_installed_engine() {
        let mut f = facts();
        f.sysext.tools = false;
        let last = plan(&settings(), &f).pop().unwrap();
        assert_eq!(last.preview().outcome, Outcome::Failed);
        assert!(last.detail.contains("systemd-sysext"), "{}", last.detail);
        let mut f = facts();
        f.sysext.errors.record(
            crate::facts::ProbeArea::Sysext,
            "/b/sysext: 2 extension images",
        );
        let last = plan(&settings(), &f).pop().unwrap();
        assert!(
            last.detail.contains("2 extension images"),
            "{}",
            last.detail
        );
        let mut f = facts();
        f.installed.insert("docker.io".into(), "20.10.24".into());
        let steps = plan(&settings(), &f);
        assert!(
            !steps
                .iter()
                .any(|s| matches!(s.action, RuntimeAction::PlaceSysext { .. }))
        );
        assert!(kinds(&steps).contains(&("runtime.sysext", Outcome::Warning)));
        assert!(steps.iter().any(|s| s.step == "runtime.service"));
    }
}
