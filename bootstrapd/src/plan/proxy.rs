//! The runtimes' proxy drop-ins: settings + facts -> steps of the runtime plan. Pure.
//!
//! Docker reads its proxy only from its service's environment ("Configure the daemon to use a
//! proxy", Docker's documentation: a `docker.service.d/http-proxy.conf` drop-in, then
//! `systemctl daemon-reload` and a restart). The drop-ins are written before anything can
//! start the engine for the first time (Debian's docker.io starts it from its postinst), so
//! that its first pull already goes through the proxy. A drop-in may carry credentials: it is
//! written 0600, and no step detail shows more than [`ProxySettings::redacted`].

use super::Outcome;
use super::runtime_action::{RuntimeAction, RuntimeStep};
use crate::facts::runtime::{CONTAINERD_UNIT, DOCKER_UNIT, RuntimeFacts};
use crate::system::proxy::{CONTAINERD_DROPIN, DOCKER_DROPIN, is_ours, render_dropin};
use crate::system::systemd::UnitState;
use crate::userdata::{ProxySettings, Settings};

pub const STEP_DOCKER: &str = "runtime.proxy-docker";
pub const STEP_CONTAINERD: &str = "runtime.proxy-containerd";
const WHY: &str = "the container runtime pulls images through the proxy the userdata names, \
                   and reads it from its service's environment when it starts";

/// One step per runtime unit; none at all when no proxy is asked for and no drop-in of
/// bootstrapd's is left to remove.
pub fn dropin_steps(settings: &Settings, facts: &RuntimeFacts) -> Vec<RuntimeStep> {
    [
        (STEP_DOCKER, DOCKER_UNIT, DOCKER_DROPIN, &facts.docker_unit),
        (
            STEP_CONTAINERD,
            CONTAINERD_UNIT,
            CONTAINERD_DROPIN,
            &facts.containerd_unit,
        ),
    ]
    .into_iter()
    .filter_map(|(step, unit, path, state)| {
        let current = facts.proxy_dropins.get(path).map(|c| c.expose());
        let running = state.as_ref().is_some_and(UnitState::is_active);
        dropin_step(step, unit, path, &settings.proxy, current, running)
    })
    .collect()
}

fn dropin_step(
    step: &'static str,
    unit: &str,
    path: &str,
    proxy: &ProxySettings,
    current: Option<&str>,
    running: bool,
) -> Option<RuntimeStep> {
    let restart = if running {
        format!("; restart {unit} (it is running)")
    } else {
        String::new()
    };
    match (render_dropin(unit, proxy), current) {
        (Some(want), Some(have)) if want.expose() == have => Some(RuntimeStep::report(
            step,
            WHY,
            Outcome::Ok,
            format!("{path} already sets the proxy ({})", proxy.redacted()),
        )),
        (Some(content), _) => Some(RuntimeStep::change(
            step,
            WHY,
            format!(
                "write {path} (mode 0600) with the proxy ({}); reload systemd{restart}",
                proxy.redacted()
            ),
            RuntimeAction::ProxyDropIn {
                unit: unit.to_string(),
                path: path.to_string(),
                content: Some(content),
                restart: running,
            },
        )),
        (None, Some(have)) if is_ours(have) => Some(RuntimeStep::change(
            step,
            WHY,
            format!("remove {path}: the userdata no longer sets a proxy; reload systemd{restart}"),
            RuntimeAction::ProxyDropIn {
                unit: unit.to_string(),
                path: path.to_string(),
                content: None,
                restart: running,
            },
        )),
        (None, Some(_)) => Some(RuntimeStep::report(
            step,
            WHY,
            Outcome::Ok,
            format!("{path} was not written by bootstrapd: left as it is"),
        )),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn with_proxy() -> Settings {
        Settings {
            proxy: ProxySettings {
                http: Some(Secret::new("http://agent:hunter2@10.0.2.2:3128/")),
                https: Some(Secret::new("http://agent:hunter2@10.0.2.2:3128/")),
                no_proxy: vec!["localhost".into()],
            },
            ..Settings::rke1_worker()
        }
    }

    fn running() -> Option<UnitState> {
        Some(UnitState {
            load_state: "loaded".into(),
            active_state: "active".into(),
            unit_file_state: "enabled".into(),
        })
    }

    #[test]
    fn writes_both_drop_ins_and_restarts_only_a_running_unit() {
        let facts = RuntimeFacts {
            docker_unit: running(),
            ..RuntimeFacts::default()
        };
        let steps = dropin_steps(&with_proxy(), &facts);
        assert_eq!(steps.len(), 2);
        let (docker, containerd) = (&steps[0], &steps[1]);
        assert_eq!(docker.step, STEP_DOCKER);
        assert!(
            matches!(&docker.action, RuntimeAction::ProxyDropIn { path, content: Some(_), restart: true, .. } if path == DOCKER_DROPIN)
        );
        assert!(
            docker
                .detail
                .ends_with("restart docker.service (it is running)")
        );
        assert!(
            matches!(&containerd.action, RuntimeAction::ProxyDropIn { path, content: Some(_), restart: false, .. } if path == CONTAINERD_DROPIN)
        );
        for s in &steps {
            let shown = format!(
                "{} {:?} {}",
                s.detail,
                s.preview(),
                serde_json::to_string(s).unwrap()
            );
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("agent:redacted@10.0.2.2:3128"), "{shown}");
        }
    }

    #[test]
    fn a_drop_in_as_wanted_is_kept_and_one_no_longer_wanted_is_removed() {
        let settings = with_proxy();
        let want = render_dropin(DOCKER_UNIT, &settings.proxy).unwrap();
        let mut facts = RuntimeFacts::default();
        facts
            .proxy_dropins
            .insert(DOCKER_DROPIN.into(), want.clone());
        let steps = dropin_steps(&settings, &facts);
        assert_eq!(steps[0].preview().outcome, Outcome::Ok);
        assert!(!steps[0].changes());

        // The userdata no longer sets a proxy: bootstrapd's drop-in goes, the operator's stays.
        let plain = Settings::rke1_worker();
        facts.proxy_dropins.insert(
            CONTAINERD_DROPIN.into(),
            Secret::new("[Service]\nEnvironment=HTTP_PROXY=http://mine:3128\n"),
        );
        facts.docker_unit = running();
        let steps = dropin_steps(&plain, &facts);
        assert_eq!(steps.len(), 2);
        assert!(matches!(
            &steps[0].action,
            RuntimeAction::ProxyDropIn {
                content: None,
                restart: true,
                ..
            }
        ));
        assert!(
            steps[0]
                .detail
                .starts_with(&format!("remove {DOCKER_DROPIN}"))
        );
        assert!(!steps[1].changes());
        assert!(steps[1].detail.contains("not written by bootstrapd"));

        // Nothing asked, nothing there: no step at all.
        assert!(dropin_steps(&plain, &RuntimeFacts::default()).is_empty());
    }
}
