//! `bootstrapd local-host` (bootstrapd-local-host.service): the early host step. firewalld
//! stopped, disabled and masked before it ever starts, when the userdata is on this machine.
//!
//! firewalld's own start costs seconds of the boot, and stopping it again in the main run
//! seconds more (issue 15 measured 3.8 s and 2.9 s under TCG). The unit is ordered after
//! dbus.service and before firewalld.service (which is After=dbus.service itself), so the
//! system bus is up and firewalld's start job still waiting when this runs; the stop job
//! replaces it. Not in bootstrapd-local: that stage runs before the system bus exists, and
//! systemd's private socket is no way round it, since PID 1 sends on it with the sender
//! `org.freedesktop.systemd1` (src/core/dbus.c, `sd_bus_set_sender`), a well-known name
//! where zbus, as the specification says, only takes a unique one.
//!
//! The step is the main run's own: the same planner (`plan::host::firewalld`) over the same
//! userdata, checked the same way (signature, strict parsing), and the same action. Anything
//! short of that (userdata only on the network, refused, already prepared, the local stage
//! failed on this boot, the bus not reachable) leaves firewalld to the main run, which stops
//! a running one as before.

use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::actions::{self, Target};
use crate::datasource::{self, Source};
use crate::facts::host::{FIREWALLD_UNIT, HostFacts};
use crate::fsutil::HostRoot;
use crate::plan::host::{HostAction, firewalld};
use crate::plan::{Finding, Outcome};
use crate::secret::redact_urls;
use crate::state::journal;
use crate::state::network::{self, NetworkState};
use crate::system::systemd::{Systemd, SystemdError};
use crate::userdata::Settings;

use super::CliResult;

/// Runs the step; what it did (or could not do) goes into this boot's local record beside the
/// network part's, and on the console. Exit 0 whatever happened: the main run covers every
/// case this one leaves.
pub async fn run(root: &HostRoot) -> CliResult {
    let mut rec = network::load_this_boot(root)?;
    if let Some(r) = &rec
        && matches!(r.state, NetworkState::Failed | NetworkState::Running)
    {
        // A refused network-config stops the main run; nothing else may change either.
        println!("bootstrapd local-host: the local stage failed on this boot: nothing done");
        return Ok(0);
    }
    let opts = crate::config::AgentConfig::load(root)?.datasource_options();
    // Only the source: its network-config is bootstrapd-local's, read already.
    let line = match datasource::first_local(root, &opts).await {
        Ok(Some(found)) => firewalld_early(root, &opts, &found.source).await,
        Ok(None) => None,
        Err(e) => Some(format!(
            "firewalld not masked early: reading the local datasource: {e}"
        )),
    };
    // Error chains may name a URL (a userdata signature's, a seed's): shown and kept redacted.
    let Some(line) = line.map(|l| redact_urls(&l)) else {
        return Ok(0);
    };
    println!("bootstrapd local-host: {line}");
    if let Some(r) = &mut rec {
        r.host.push(line);
        network::save(root, r)?;
    }
    Ok(0)
}

/// Why the step was not taken early, for the log: each leaves firewalld to the main run.
#[derive(Debug, thiserror::Error)]
pub enum NotEarly {
    #[error("the local datasource has no userdata")]
    NoUserdata,
    #[error("reading the local datasource: {0}")]
    Datasource(#[from] datasource::DatasourceError),
    #[error("reading the journal: {0}")]
    Journal(#[from] crate::state::JournalError),
    #[error("the host is already prepared for this instance and userdata")]
    Prepared,
    #[error("the userdata is not accepted (the main run reports why)")]
    Refused,
    #[error("systemd: {0}")]
    Systemd(#[from] SystemdError),
    #[error("{0}")]
    NothingToDo(String),
}

/// Runs the step; returns the line the local record keeps, when the step changed something
/// or failed. Never an error: the main run covers every case this one leaves.
pub async fn firewalld_early(
    root: &HostRoot,
    opts: &datasource::Options,
    source: &Source,
) -> Option<String> {
    match try_firewalld(root, opts, source).await {
        Ok(f) if f.outcome == Outcome::Changed => {
            let line = format!("firewalld masked before it started: {}", f.detail);
            info!("{line}");
            Some(line)
        }
        Ok(f) => {
            let msg = format!("firewalld not masked early: {}", f.detail);
            warn!("{}; the main run stops it", redact_urls(&msg));
            Some(msg)
        }
        // What the stage cannot read or reach on a live host is worth a line in the record;
        // the rest (a --root tree among them) are the ordinary reasons to leave the step to
        // the main run.
        Err(NotEarly::Systemd(SystemdError::NotLive(_))) => None,
        Err(e @ (NotEarly::Datasource(_) | NotEarly::Journal(_) | NotEarly::Systemd(_))) => {
            let msg = format!("firewalld not masked early: {e}");
            warn!("{}; the main run stops it", redact_urls(&msg));
            Some(msg)
        }
        Err(e) => {
            info!(
                "{}",
                redact_urls(&format!("firewalld left to the main run: {e}"))
            );
            None
        }
    }
}

async fn try_firewalld(
    root: &HostRoot,
    opts: &datasource::Options,
    source: &Source,
) -> Result<Finding, NotEarly> {
    let settings = accepted_userdata(root, opts, source).await?;
    let sd = Systemd::connect(root).await?;
    let facts = HostFacts {
        live: root.is_live(),
        firewalld: Some(sd.unit_state(FIREWALLD_UNIT).await?),
        ..HostFacts::default()
    };
    let step = firewalld(&settings, &facts);
    if step.action != HostAction::DisableFirewalld {
        return Err(NotEarly::NothingToDo(step.preview().detail));
    }
    Ok(actions::host::apply_one(Target::quiet(root, Some(&sd)), &step).await)
}

/// The local source's userdata as the main run will take it: signature and strict parsing,
/// and only while the journal has not prepared the host for it yet.
async fn accepted_userdata(
    root: &HostRoot,
    opts: &datasource::Options,
    source: &Source,
) -> Result<Settings, NotEarly> {
    let fetched = source
        .fetch(root, &opts.fetch)
        .await?
        .filter(|f| !f.userdata.is_empty())
        .ok_or(NotEarly::NoUserdata)?;
    let digest = hex::encode(Sha256::digest(&fetched.userdata));
    if journal::load(root)?.prepared(&fetched.instance_id, &digest) {
        return Err(NotEarly::Prepared);
    }
    super::run::validate(root, &fetched)
        .map(|(settings, _, _)| settings)
        .map_err(|_| NotEarly::Refused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datasource::{Seed, SeedOverrides};
    use crate::state::{Stage, Store};
    use crate::userdata::FirewalldPolicy;

    struct Seeded {
        _dir: tempfile::TempDir,
        root: HostRoot,
        source: Source,
        opts: datasource::Options,
    }

    /// A --root tree with a NoCloud seed directory holding `userdata`.
    fn seeded(userdata: &str) -> Seeded {
        let dir = tempfile::tempdir().unwrap();
        let root = HostRoot::new(Some(dir.path().join("root")));
        let seed = dir.path().join("seed");
        std::fs::create_dir_all(&seed).unwrap();
        std::fs::create_dir_all(root.path("/etc")).unwrap();
        std::fs::write(seed.join("meta-data"), "instance-id: iid-early\n").unwrap();
        std::fs::write(seed.join("user-data"), userdata).unwrap();
        let source = Source::Nocloud(Seed::Dir {
            path: seed,
            overrides: SeedOverrides::default(),
        });
        let opts = crate::config::AgentConfig::load(&root)
            .unwrap()
            .datasource_options();
        Seeded {
            _dir: dir,
            root,
            source,
            opts,
        }
    }

    fn userdata(firewalld: &str) -> String {
        format!(
            "roles: [worker]\nhost:\n  firewalld: {firewalld}\nrancher:\n  server: https://rancher.lab\n  token: {}\n  mode: rke1\n",
            "t0k3n".repeat(12)
        )
    }

    async fn accepted(s: &Seeded) -> Result<Settings, NotEarly> {
        accepted_userdata(&s.root, &s.opts, &s.source).await
    }

    #[tokio::test]
    async fn the_userdata_is_taken_only_as_the_main_run_would_take_it() {
        let s = seeded(&userdata("disable"));
        let settings = accepted(&s).await.expect("accepted");
        assert_eq!(settings.host.firewalld, FirewalldPolicy::Disable);

        let s = seeded("roles: [worker]\nbogus: 1\n");
        assert!(matches!(accepted(&s).await, Err(NotEarly::Refused)));

        let s = seeded("");
        assert!(matches!(accepted(&s).await, Err(NotEarly::NoUserdata)));
    }

    #[tokio::test]
    async fn a_host_prepared_for_this_instance_and_userdata_is_left_alone() {
        let text = userdata("disable");
        let s = seeded(&text);
        let digest = hex::encode(Sha256::digest(text.as_bytes()));
        let mut store = Store::open(&s.root).unwrap();
        store.begin("iid-early", "nocloud", &digest).unwrap();
        store.start_stage(Stage::Prepare).unwrap();
        // Begun, not finished: a run killed in the middle is prepared again, early too.
        assert!(accepted(&s).await.is_ok());
        store.finish_stage(Stage::Prepare, vec![], None).unwrap();
        assert!(matches!(accepted(&s).await, Err(NotEarly::Prepared)));
        // Other userdata on the same instance is re-planned by the main run, so here too.
        store.begin("iid-early", "nocloud", "other").unwrap();
        assert!(accepted(&s).await.is_ok());
    }

    #[tokio::test]
    async fn below_a_root_tree_nothing_is_done_and_nothing_recorded() {
        let s = seeded(&userdata("disable"));
        assert!(matches!(
            try_firewalld(&s.root, &s.opts, &s.source).await,
            Err(NotEarly::Systemd(_))
        ));
        assert_eq!(firewalld_early(&s.root, &s.opts, &s.source).await, None);
    }

    #[tokio::test]
    async fn what_cannot_be_read_is_recorded_and_refused_userdata_is_not() {
        let s = seeded(&userdata("disable"));
        // A seed directory that went away between detection and the fetch.
        let gone = Source::Nocloud(Seed::Dir {
            path: s.root.path("/no/such/seed"),
            overrides: SeedOverrides::default(),
        });
        // A journal that cannot be read (here a directory in its place).
        std::fs::create_dir_all(journal::journal_path(&s.root)).unwrap();
        let line = firewalld_early(&s.root, &s.opts, &s.source).await;
        assert!(
            line.as_deref()
                .is_some_and(|l| l.starts_with("firewalld not masked early: reading the journal")),
            "{line:?}"
        );
        assert_eq!(firewalld_early(&s.root, &s.opts, &gone).await, None);
        // Refused userdata is the main run's to report: no line here.
        let s = seeded("roles: [worker]\nbogus: 1\n");
        assert_eq!(firewalld_early(&s.root, &s.opts, &s.source).await, None);
    }
}
