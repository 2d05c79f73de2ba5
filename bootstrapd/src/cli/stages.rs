//! The stages that change the host, as one table, and the one driver that runs them in two
//! modes: apply (`bootstrapd run`: each stage not yet done is begun, applied step by step
//! and finished in the journal) and preview (`bootstrapd plan`: each stage is planned and
//! its steps shown, changing nothing).
//!
//! A run is: fetch, validate (both in `run.rs`: they give the settings every stage here
//! needs), then [`STAGES`] in order.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use crate::actions::runtime::Prefetch;
use crate::actions::{self, Planned, Step, Target, registration};
use crate::facts;
use crate::facts::identity::IdentityFacts;
use crate::fsutil::HostRoot;
use crate::plan::{self, Finding};
use crate::state::{JournalError, RegistrationRecord, Stage, StageState, Store};
use crate::system::systemd::Systemd;
use crate::userdata::Settings;

use super::notify;

/// What the stages read besides the host itself.
pub struct Ctx<'a> {
    pub root: &'a HostRoot,
    pub settings: &'a Settings,
    /// None when systemd is not reachable over D-Bus.
    pub systemd: Option<&'a Systemd>,
    /// The datasource's hostname, the node name's fallback.
    pub hostname: Option<&'a str>,
    /// The datasource's instance id (`{instance_id}` of a hostname template).
    pub instance_id: Option<&'a str>,
    /// The journal's registration on this instance: the guard against registering twice.
    pub registration: Option<RegistrationRecord>,
    /// The runtime's packages downloading while the host is prepared (apply mode only).
    pub prefetch: Cell<Option<Prefetch>>,
}

type Planning<'c> = Pin<Box<dyn Future<Output = Vec<Planned<'c>>> + 'c>>;

/// One stage: its name, what it needs, and its step (planning; the driver applies).
pub struct StageSpec {
    pub stage: Stage,
    /// What it needs from the run, besides the settings and the host.
    pub needs: &'static str,
    /// The run's progress while it reads the host.
    pub reading: &'static str,
    /// Reads the host and plans the stage's steps.
    pub plan: for<'c> fn(&'c Ctx<'c>) -> Planning<'c>,
}

/// The stages after validate, in the order a run applies them.
pub const STAGES: [StageSpec; 3] = [
    StageSpec {
        stage: Stage::Prepare,
        needs: "systemd",
        reading: "reading the host",
        plan: |ctx| Box::pin(plan_prepare(ctx)),
    },
    StageSpec {
        stage: Stage::Runtime,
        needs: "systemd, the packages downloaded during prepare",
        reading: "reading the installed runtime",
        plan: |ctx| Box::pin(plan_runtime(ctx)),
    },
    StageSpec {
        stage: Stage::Register,
        needs: "the journal's registration, the datasource's hostname",
        reading: "checking the journal's registration",
        plan: |ctx| Box::pin(plan_register(ctx)),
    },
];

/// What a hostname template and `hostname: metadata` read.
fn identity(ctx: &Ctx<'_>) -> IdentityFacts {
    facts::identity::gather(ctx.root, ctx.instance_id, ctx.hostname)
}

async fn plan_prepare<'c>(ctx: &'c Ctx<'c>) -> Vec<Planned<'c>> {
    let mut facts = facts::host::gather(ctx.root, ctx.settings, ctx.systemd).await;
    facts.identity = identity(ctx);
    let steps = plan::prepare::plan(ctx.settings, &facts);
    steps.into_iter().map(Planned::Host).collect()
}

async fn plan_runtime<'c>(ctx: &'c Ctx<'c>) -> Vec<Planned<'c>> {
    let mut index_fresh = false;
    if let Some(p) = ctx.prefetch.take() {
        notify::status(Stage::Runtime, "finishing the package downloads");
        index_fresh = p.finish().await;
        notify::status(Stage::Runtime, "reading the installed runtime");
    }
    let mut facts = facts::runtime::gather(ctx.root, ctx.settings, ctx.systemd).await;
    facts.index_fresh = index_fresh;
    let steps = plan::runtime::plan(ctx.settings, &facts);
    steps.into_iter().map(Planned::Runtime).collect()
}

async fn plan_register<'c>(ctx: &'c Ctx<'c>) -> Vec<Planned<'c>> {
    let previous = ctx.registration.as_ref();
    // The hostname the prepare stage set is the node name's fallback, not the datasource's.
    let set = ctx
        .settings
        .hostname
        .as_ref()
        .and_then(|h| plan::identity::wanted_hostname(h, &identity(ctx)).ok())
        // A generic name is not set (see the hostname step), so it names nothing either.
        .filter(|w| facts::network::hostname_problem(w).is_none());
    let hostname = set.or_else(|| ctx.hostname.map(str::to_string));
    let step = registration::plan(ctx.root, ctx.settings, hostname, ctx.instance_id, previous);
    vec![Planned::Register(Box::new(step))]
}

/// How the driver runs the stages.
pub enum Mode<'s> {
    /// Change the host, journaled; stages the journal has done are skipped.
    Apply(&'s mut Store),
    /// Change nothing; say what each step would do.
    Preview,
}

/// What the driver produced.
#[derive(Debug, Default)]
pub struct Driven {
    /// Preview: every stage's findings, in order.
    pub rows: Vec<(Stage, Finding)>,
    /// Apply: the stage that failed (the run stops there).
    pub failed: Option<Stage>,
}

/// Runs [`STAGES`] in order in `mode`.
pub async fn drive(ctx: &Ctx<'_>, mut mode: Mode<'_>) -> Result<Driven, JournalError> {
    let mut out = Driven::default();
    for spec in &STAGES {
        match &mut mode {
            Mode::Preview => {
                for step in (spec.plan)(ctx).await {
                    out.rows
                        .extend(step.preview().into_iter().map(|f| (spec.stage, f)));
                }
            }
            Mode::Apply(store) if store.is_done(spec.stage) => {}
            Mode::Apply(store) => {
                if apply_stage(ctx, store, spec).await? == StageState::Failed {
                    out.failed = Some(spec.stage);
                    break;
                }
            }
        }
    }
    Ok(out)
}

/// One stage applied: begun in the journal, planned, each step's progress published
/// (journal and sd_notify) as the one apply loop reaches it, finished with its findings.
async fn apply_stage(
    ctx: &Ctx<'_>,
    store: &mut Store,
    spec: &StageSpec,
) -> Result<StageState, JournalError> {
    let stage = spec.stage;
    store.start_stage(stage)?;
    notify::status(stage, spec.reading);
    let steps = (spec.plan)(ctx).await;
    // Shared by the loop's progress and the steps' own (registration's retry causes).
    let cell = Mutex::new(&mut *store);
    let progress = |msg: &str| {
        if let Ok(mut s) = cell.lock() {
            let _ = s.set_step(stage, msg);
        }
        notify::status(stage, msg);
    };
    let target = Target {
        root: ctx.root,
        systemd: ctx.systemd,
        progress: &progress,
        proxy: &ctx.settings.proxy,
        trusted_ca: &ctx.settings.trusted_ca,
    };
    let applied = actions::apply(target, &steps, |step| {
        let mut s = cell.lock().unwrap_or_else(|e| e.into_inner());
        s.set_step(stage, step.name())?;
        notify::status(stage, step.name());
        if let Some(budget) = step.budget() {
            notify::extend_timeout(budget);
        }
        Ok::<(), JournalError>(())
    })
    .await;
    let store = cell.into_inner().unwrap_or_else(|e| e.into_inner());
    let applied = applied?;
    if applied.registration.is_some() {
        store.journal.registration = applied.registration;
    }
    store.finish_stage(stage, applied.findings, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Outcome;
    use crate::state::Progress;

    #[test]
    fn the_table_holds_the_journal_stages_after_validate_in_order() {
        let mut stages = vec![Stage::Fetch, Stage::Validate];
        stages.extend(STAGES.iter().map(|s| s.stage));
        assert_eq!(stages, Stage::ALL);
    }

    fn settings() -> Settings {
        let yaml = format!(
            "roles: [worker]\nrancher:\n  server: https://rancher.lab\n  token: {}\n  mode: rke1\n",
            "t0k3n".repeat(12)
        );
        crate::userdata::parse(yaml.as_bytes()).unwrap().settings
    }

    fn ctx<'a>(
        root: &'a HostRoot,
        settings: &'a Settings,
        registration: Option<RegistrationRecord>,
    ) -> Ctx<'a> {
        Ctx {
            root,
            settings,
            systemd: None,
            hostname: None,
            instance_id: None,
            registration,
            prefetch: Cell::new(None),
        }
    }

    fn registered_with(server: &str) -> RegistrationRecord {
        RegistrationRecord::for_test(server)
    }

    fn files_below(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| match e.file_type().unwrap().is_dir() {
                true => 1 + files_below(&e.path()),
                false => 1,
            })
            .sum()
    }

    #[tokio::test]
    async fn preview_plans_every_stage_in_order_and_changes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let root = HostRoot::new(Some(d.path().to_path_buf()));
        let s = settings();
        let driven = drive(&ctx(&root, &s, None), Mode::Preview).await.unwrap();
        assert_eq!(files_below(d.path()), 0, "preview wrote below the root");
        assert_eq!(driven.failed, None);
        let mut stages: Vec<Stage> = driven.rows.iter().map(|(st, _)| *st).collect();
        stages.dedup();
        assert_eq!(stages, [Stage::Prepare, Stage::Runtime, Stage::Register]);
        let (_, register) = driven
            .rows
            .iter()
            .find(|(_, f)| f.step == "register")
            .unwrap();
        assert_eq!(register.outcome, Outcome::WouldChange);
        assert!(
            register
                .detail
                .starts_with("would register with https://rancher.lab")
        );
    }

    /// A journal whose stages up to runtime are done, with an earlier registration.
    fn store_before_register(root: &HostRoot) -> Store {
        let mut store = Store::open(root).unwrap();
        store.begin("i-1", "local", "h").unwrap();
        for st in [
            Stage::Fetch,
            Stage::Validate,
            Stage::Prepare,
            Stage::Runtime,
        ] {
            store.start_stage(st).unwrap();
            store.finish_stage(st, vec![], None).unwrap();
        }
        store
    }

    #[tokio::test]
    async fn apply_skips_done_stages_and_journals_the_registration_guard() {
        let d = tempfile::tempdir().unwrap();
        let root = HostRoot::new(Some(d.path().to_path_buf()));
        let s = settings();
        let mut store = store_before_register(&root);
        let c = ctx(&root, &s, Some(registered_with("https://rancher.lab")));
        let driven = drive(&c, Mode::Apply(&mut store)).await.unwrap();
        assert_eq!(driven.failed, None);
        assert!(driven.rows.is_empty());
        let reread = Store::open(&root).unwrap();
        assert!(reread.is_done(Stage::Register));
        let rec = reread.stage_record(Stage::Register).unwrap();
        assert!(rec.findings[0].detail.contains("not registering again"));
        assert_eq!(
            reread.journal.progress,
            Some(Progress {
                stage: Stage::Register,
                step: "register".into()
            })
        );
        // Prepare and runtime were done: the driver did not run them again.
        assert!(
            reread
                .stage_record(Stage::Prepare)
                .unwrap()
                .findings
                .is_empty()
        );
    }

    /// The node name's fallback the register stage gets: `hostname:`'s result when set.
    async fn register_fallback(c: &Ctx<'_>) -> Option<String> {
        let steps = plan_register(c).await;
        match steps.into_iter().next() {
            Some(Planned::Register(step)) => match *step {
                registration::RegisterStep::Register { hostname, .. } => hostname,
                registration::RegisterStep::Guard(f) => panic!("guard {f:?}"),
            },
            _ => panic!("not a register step"),
        }
    }

    #[tokio::test]
    async fn the_register_stage_names_the_node_after_the_hostname_set() {
        let d = tempfile::tempdir().unwrap();
        let nic = d.path().join("sys/class/net/eth0");
        std::fs::create_dir_all(nic.join("device")).unwrap();
        std::fs::write(nic.join("address"), "52:54:00:12:ab:01\n").unwrap();
        let root = HostRoot::new(Some(d.path().to_path_buf()));
        let mut s = settings();
        let mut c = ctx(&root, &s, None);
        c.hostname = Some("ds-name.lab");
        assert_eq!(register_fallback(&c).await.as_deref(), Some("ds-name.lab"));
        s.hostname = Some(crate::userdata::HostnameSetting::Template(
            "Node-{mac}".into(),
        ));
        let mut c = ctx(&root, &s, None);
        c.hostname = Some("ds-name.lab");
        assert_eq!(
            register_fallback(&c).await.as_deref(),
            Some("node-52540012ab01")
        );
    }

    #[tokio::test]
    async fn apply_stops_at_the_failed_stage() {
        let d = tempfile::tempdir().unwrap();
        let root = HostRoot::new(Some(d.path().to_path_buf()));
        let s = settings();
        let mut store = store_before_register(&root);
        let c = ctx(&root, &s, Some(registered_with("https://old.lab")));
        let driven = drive(&c, Mode::Apply(&mut store)).await.unwrap();
        assert_eq!(driven.failed, Some(Stage::Register));
        assert_eq!(store.journal.verdict, crate::state::Verdict::Failed);
        assert!(!store.is_done(Stage::Register));
    }
}
