//! `bootstrapd run`: the whole first-boot job, stage by stage, journaled.

use sha2::{Digest, Sha256};
use tracing::{error, info, warn};

use crate::actions;
use crate::actions::register::NodeIdentity;
use crate::config::AgentConfig;
use crate::datasource;
use crate::facts;
use crate::fsutil::HostRoot;
use crate::plan;
use crate::plan::{Finding, Outcome};
use crate::signature;
use crate::state::{Resources, Stage, StageState, Store};
use crate::system::systemd::Systemd;
use crate::userdata::{self, Settings};

use super::{CliResult, notify};

pub async fn run(root: &HostRoot) -> CliResult {
    let started = std::time::Instant::now();
    // What starting the process cost (loader, runtime, logging), apart from the work.
    info!(
        process_cpu_ms = crate::state::own_cpu_ms(),
        "bootstrapd run starting"
    );
    let mut store = Store::open(root)?;
    let code = match run_stages(root, &mut store).await {
        Ok(code) => code,
        Err(e) => {
            error!("{e}");
            let _ = store.fail_run(e.0.clone());
            notify::ready(&format!("failed: {e}"));
            1
        }
    };
    let r = Resources::measure(started);
    info!(
        peak_rss_kib = r.peak_rss_kib,
        cpu_user_ms = r.cpu_user_ms,
        cpu_system_ms = r.cpu_system_ms,
        wall_ms = r.wall_ms,
        "bootstrapd's own footprint for this run (children excluded)"
    );
    store.journal.resources = Some(r);
    store.save()?;
    Ok(code)
}

async fn run_stages(root: &HostRoot, store: &mut Store) -> Result<i32, super::CliError> {
    notify::status(Stage::Fetch, "looking for userdata");
    let cfg = AgentConfig::load(root)?;
    let fetched = match datasource::fetch(root, &cfg.datasource_options()).await? {
        Some(f) => f,
        None => {
            let msg = "no datasource offered userdata: nothing to do".to_string();
            info!("{msg}");
            store.disabled(msg.clone())?;
            notify::ready(&msg);
            return Ok(0);
        }
    };
    let digest = hex::encode(Sha256::digest(&fetched.userdata));
    let notes = store.begin(&fetched.instance_id, &fetched.source.to_string(), &digest)?;
    for n in &notes {
        info!("{n}");
    }
    if !store.is_done(Stage::Fetch) {
        store.start_stage(Stage::Fetch)?;
        let f = Finding::new(
            "datasource",
            Outcome::Ok,
            format!(
                "{} bytes of userdata from {} (instance {})",
                fetched.userdata.len(),
                fetched.source,
                fetched.instance_id
            ),
        );
        store.finish_stage(Stage::Fetch, vec![f], None)?;
    }

    // Validation runs on every boot: the settings are needed by the later stages, and
    // parsing is cheap. Nothing changes on the host before it passes.
    notify::status(Stage::Validate, "checking the userdata");
    let validate_done = store.is_done(Stage::Validate);
    if !validate_done {
        store.start_stage(Stage::Validate)?;
    }
    let settings = match validate(root, &fetched) {
        Ok((settings, findings, parse_notes)) => {
            if !validate_done {
                store.journal.notes.extend(parse_notes);
                store.finish_stage(Stage::Validate, findings, None)?;
            }
            settings
        }
        Err(e) => {
            store.finish_stage(Stage::Validate, vec![], Some(e.clone()))?;
            error!("userdata refused: {e}");
            notify::ready("failed: userdata refused");
            return Ok(1);
        }
    };

    if store.last_done() == Some(Stage::Register) {
        let note = format!(
            "every stage already done on this instance (run {}): nothing to change",
            store.journal.runs
        );
        info!("{note}");
        store.journal.notes.push(note.clone());
        let verdict = store.finish_run()?;
        notify::ready(&format!("{}: {note}", verdict.as_str()));
        return Ok(0);
    }

    let systemd = match Systemd::connect(root).await {
        Ok(s) => Some(s),
        Err(e) => {
            warn!("systemd is not reachable over D-Bus ({e}); unit steps will fail");
            None
        }
    };

    let prefetch = if store.is_done(Stage::Prepare) || store.is_done(Stage::Runtime) {
        None
    } else {
        start_prefetch(root, &settings, systemd.as_ref()).await
    };
    if !store.is_done(Stage::Prepare) {
        let findings = stage_prepare(root, store, &settings, systemd.as_ref()).await?;
        if store.finish_stage(Stage::Prepare, findings, None)? == StageState::Failed {
            return stage_failed(store, Stage::Prepare);
        }
    }
    if !store.is_done(Stage::Runtime) {
        let findings = stage_runtime(root, store, &settings, systemd.as_ref(), prefetch).await?;
        if store.finish_stage(Stage::Runtime, findings, None)? == StageState::Failed {
            return stage_failed(store, Stage::Runtime);
        }
    }
    if !store.is_done(Stage::Register) {
        let (findings, error) =
            stage_register(root, store, &settings, fetched.hostname.as_deref()).await?;
        if store.finish_stage(Stage::Register, findings, error)? == StageState::Failed {
            return stage_failed(store, Stage::Register);
        }
    }
    let verdict = store.finish_run()?;
    info!("bootstrapd finished: {}", verdict.as_str());
    notify::ready(&format!(
        "{}: node prepared and registered",
        verdict.as_str()
    ));
    Ok(0)
}

fn stage_failed(store: &Store, stage: Stage) -> Result<i32, super::CliError> {
    let msg = store
        .journal
        .error
        .clone()
        .unwrap_or_else(|| format!("stage {} failed", stage.as_str()));
    error!("{msg}");
    notify::ready(&format!("failed: {msg}"));
    Ok(1)
}

/// Signature (when the image demands one), then parsing.
fn validate(
    root: &HostRoot,
    fetched: &datasource::Fetched,
) -> Result<(Settings, Vec<Finding>, Vec<String>), String> {
    let mut findings = Vec::new();
    let key = signature::trusted_key(root).map_err(|e| e.to_string())?;
    let signed = signature::verify(
        key.as_ref(),
        &fetched.source.to_string(),
        &fetched.userdata,
        fetched.signature.as_deref(),
    )
    .map_err(|e| e.to_string())?;
    if signed {
        findings.push(Finding::new(
            "signature",
            Outcome::Ok,
            "userdata signed by the image's trusted key",
        ));
    }
    let parsed = userdata::parse(&fetched.userdata)
        .map_err(|e| format!("userdata from {} has problems:\n{e}", fetched.source))?;
    findings.push(Finding::new(
        "userdata",
        Outcome::Ok,
        format!(
            "{} userdata, roles {}",
            parsed.format,
            parsed
                .settings
                .roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(",")
        ),
    ));
    Ok((parsed.settings, findings, parsed.notes))
}

/// Host preparation: facts, plan, then each step applied with its progress published.
async fn stage_prepare(
    root: &HostRoot,
    store: &mut Store,
    settings: &Settings,
    systemd: Option<&Systemd>,
) -> Result<Vec<Finding>, super::CliError> {
    store.start_stage(Stage::Prepare)?;
    notify::status(Stage::Prepare, "reading the host");
    let facts = facts::host::gather(root, settings, systemd).await;
    let steps = plan::host::plan(settings, &facts);
    let mut findings = Vec::new();
    for step in &steps {
        store.set_step(Stage::Prepare, step.step)?;
        notify::status(Stage::Prepare, step.step);
        let mut out = actions::host::apply(root, systemd, std::slice::from_ref(step)).await;
        let failed = out.iter().any(|f| f.outcome == Outcome::Failed);
        findings.append(&mut out);
        if failed {
            break;
        }
    }
    Ok(findings)
}

/// Starts downloading the runtime's packages, to overlap the host preparation, when the
/// runtime stage is going to install them from the repositories as configured now.
async fn start_prefetch(
    root: &HostRoot,
    settings: &Settings,
    systemd: Option<&Systemd>,
) -> Option<actions::runtime::Prefetch> {
    if !root.is_live() {
        return None;
    }
    let facts = facts::runtime::gather(root, settings, systemd).await;
    // An install cut short must be finished first: apt downloads nothing until then.
    if !facts.unfinished.is_empty() {
        return None;
    }
    let (pm, packages) = plan::runtime::prefetchable(&plan::runtime::plan(settings, &facts))?;
    info!(packages = %packages.join(" "), "downloading the runtime's packages during host preparation");
    actions::runtime::Prefetch::start(pm, &packages)
}

async fn stage_runtime(
    root: &HostRoot,
    store: &mut Store,
    settings: &Settings,
    systemd: Option<&Systemd>,
    prefetch: Option<actions::runtime::Prefetch>,
) -> Result<Vec<Finding>, super::CliError> {
    store.start_stage(Stage::Runtime)?;
    let mut index_fresh = false;
    if let Some(p) = prefetch {
        notify::status(Stage::Runtime, "finishing the package downloads");
        index_fresh = p.finish().await;
    }
    notify::status(Stage::Runtime, "reading the installed runtime");
    let mut facts = facts::runtime::gather(root, settings, systemd).await;
    facts.index_fresh = index_fresh;
    let steps = plan::runtime::plan(settings, &facts);
    let mut findings = Vec::new();
    for step in &steps {
        store.set_step(Stage::Runtime, step.step)?;
        notify::status(Stage::Runtime, step.step);
        let mut out = actions::runtime::apply(root, systemd, std::slice::from_ref(step)).await;
        let failed = out.iter().any(|f| f.outcome == Outcome::Failed);
        findings.append(&mut out);
        if failed {
            break;
        }
    }
    Ok(findings)
}

/// Registration, guarded by the journal: a node registered on this instance is never
/// registered again (the agents' own guards, the container label and CATTLE_ID, back it up).
async fn stage_register(
    root: &HostRoot,
    store: &mut Store,
    settings: &Settings,
    hostname: Option<&str>,
) -> Result<(Vec<Finding>, Option<String>), super::CliError> {
    store.start_stage(Stage::Register)?;
    if let Some(f) = registered_before(store, settings) {
        return Ok((vec![f], None));
    }

    store.set_step(Stage::Register, "node identity")?;
    notify::status(Stage::Register, "node identity");
    let mut findings = Vec::new();
    let node = match node_identity(root, settings, hostname, &mut findings).await {
        Ok(n) => n,
        Err(e) => {
            findings.push(
                Finding::new("register.address", Outcome::Failed, e.to_string()).with_remedy(
                    "name an interface that has an IPv4 address, or give the address itself",
                ),
            );
            return Ok((findings, None));
        }
    };

    store.set_step(Stage::Register, "registering")?;
    // The unit's start timeout must not end a registration still within its own deadline;
    // ten minutes on top for the agent's start and the journal's last writes.
    notify::extend_timeout(std::time::Duration::from_secs(
        settings.rancher.deadline_seconds.saturating_add(600),
    ));
    notify::status(
        Stage::Register,
        &format!("registering with {}", settings.rancher.server),
    );
    // Retry causes worth seeing (e.g. "machine not found by request") go to the journal's
    // progress, which `bootstrapd status` shows, and to systemd's STATUS=.
    let store_cell = std::sync::Mutex::new(&mut *store);
    let progress = |msg: &str| {
        if let Ok(mut s) = store_cell.lock() {
            let _ = s.set_step(Stage::Register, msg);
        }
        notify::status(Stage::Register, msg);
    };
    let tuning = crate::rancher::Tuning {
        progress: &progress,
        ..Default::default()
    };
    let result = actions::register::register_with(root, settings, &node, &tuning).await;
    let store = store_cell.into_inner().unwrap_or_else(|e| e.into_inner());
    match result {
        Ok(record) => {
            findings.extend(record.findings.iter().cloned());
            store.journal.registration =
                Some(serde_json::to_value(&record).map_err(|e| super::CliError(e.to_string()))?);
            Ok((findings, None))
        }
        Err(e) => {
            findings.push(register_failed(e));
            Ok((findings, None))
        }
    }
}

/// The journal's earlier registration, if any: the same server means nothing to do (never
/// twice); another server is an error with its remedy.
fn registered_before(store: &Store, settings: &Settings) -> Option<Finding> {
    if let Some(previous) = store.journal.registration.as_ref() {
        let same_server = previous.get("server").and_then(|s| s.as_str())
            == Some(settings.rancher.server.as_str());
        if same_server {
            let f = Finding::new(
                "register",
                Outcome::Ok,
                format!(
                    "already registered with {} on this instance: not registering again",
                    settings.rancher.server
                ),
            );
            return Some(f);
        }
        let f = Finding::new(
            "register",
            Outcome::Failed,
            format!(
                "registered with {} on this instance, and the userdata now names {}",
                previous
                    .get("server")
                    .and_then(|s| s.as_str())
                    .unwrap_or("?"),
                settings.rancher.server
            ),
        )
        .with_remedy(
            "remove the old agent, then `bootstrapd reset` to register with the new server",
        );
        return Some(f);
    }
    None
}

/// The register stage's failure, with the remedy for its kind.
fn register_failed(e: actions::register::RegisterError) -> Finding {
    let remedy = if e.is_token_refused() {
        "take the current registration command from Rancher and update rancher.token"
    } else if e.is_untrusted_server() {
        "check rancher.server and rancher.ca_checksum against the current registration command"
    } else {
        "check that the server is reachable and rancher.ca_checksum matches, then rerun `bootstrapd run`"
    };
    Finding::new("register", Outcome::Failed, super::CliError::from(e).0).with_remedy(remedy)
}

/// Node name, address and internal address: the userdata's, else derived from the host.
/// In system-agent mode addresses come only from the userdata (interface names resolved to
/// their first IPv4, as install.sh's `get_address`); the agent finds its own otherwise.
async fn node_identity(
    root: &HostRoot,
    settings: &Settings,
    hostname: Option<&str>,
    findings: &mut Vec<Finding>,
) -> Result<NodeIdentity, facts::network::NetworkError> {
    let r = &settings.rancher;
    let node_name = r
        .node_name
        .clone()
        .or_else(|| hostname.map(|h| h.split('.').next().unwrap_or(h).to_string()))
        .or_else(|| {
            nix::unistd::gethostname().ok().map(|h| {
                h.to_string_lossy()
                    .split('.')
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
        })
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "node".to_string());
    if r.mode == crate::userdata::RegistrationMode::SystemAgent {
        let resolve = async |key, v: &Option<String>| match v {
            Some(v) => facts::network::resolve_address(root, key, v)
                .await
                .map(|a| Some(a.to_string())),
            None => Ok(None),
        };
        return Ok(NodeIdentity {
            node_name,
            address: resolve("address", &r.address).await?,
            internal_address: resolve("internal_address", &r.internal_address).await?,
        });
    }
    let address = match &r.address {
        Some(a) => Some(a.clone()),
        None if root.is_live() => default_route_address(root, findings).await,
        None => None,
    };
    Ok(NodeIdentity {
        node_name,
        address,
        internal_address: r.internal_address.clone(),
    })
}

/// RKE1 mode: the default route's source address, with a finding either way.
async fn default_route_address(root: &HostRoot, findings: &mut Vec<Finding>) -> Option<String> {
    match facts::network::node_address(root, std::time::Duration::from_secs(60)).await {
        Ok(a) => {
            findings.push(Finding::new(
                "register.address",
                Outcome::Ok,
                format!("node address {a} (source address of the default route)"),
            ));
            Some(a.to_string())
        }
        Err(e) => {
            findings.push(
                Finding::new(
                    "register.address",
                    Outcome::Warning,
                    format!("no node address from the default route: {e}; the agent picks one"),
                )
                .with_remedy("set rancher.address in the userdata"),
            );
            None
        }
    }
}

/// Where the system agent would be installed and where its binary would come from.
fn system_agent_preview(root: &HostRoot, settings: &Settings) -> Vec<Finding> {
    use crate::rancher::{agent_binary, agent_paths::AgentPaths, system_agent};
    let prefix = match facts::usr_local::probe(root) {
        Ok(u) => Finding::new(
            "register.install-prefix",
            Outcome::WouldChange,
            AgentPaths::decide(&u).describe(),
        ),
        Err(e) => Finding::new("register.install-prefix", Outcome::Failed, e.to_string()),
    };
    let source = system_agent::asset_arch(std::env::consts::ARCH)
        .map_err(|e| e.to_string())
        .and_then(|arch| agent_binary::resolve(root, settings, arch).map_err(|e| e.to_string()));
    let binary = match source {
        Ok(s) => Finding::new(
            "register.agent-binary",
            Outcome::WouldChange,
            format!("agent binary from {}", s.describe()),
        ),
        Err(e) => Finding::new("register.agent-binary", Outcome::Failed, e),
    };
    vec![prefix, binary]
}

/// `bootstrapd plan`: what `run` would do on this host, changing nothing.
pub async fn plan(root: &HostRoot, file: Option<&std::path::PathBuf>, json: bool) -> CliResult {
    let (source, bytes, signature) = match file {
        Some(f) => {
            let bytes = std::fs::read(f)
                .map_err(|e| super::CliError(format!("reading {}: {e}", f.display())))?;
            let sig = std::fs::read(format!("{}.sig", f.display())).ok();
            (datasource::Origin::File(f.clone()), bytes, sig)
        }
        None => {
            let cfg = AgentConfig::load(root)?;
            match datasource::fetch(root, &cfg.datasource_options()).await? {
                Some(f) => (f.source, f.userdata, f.signature),
                None => {
                    println!("no datasource offered userdata: `run` would do nothing");
                    return Ok(0);
                }
            }
        }
    };
    let fetched = datasource::Fetched {
        source,
        userdata: bytes,
        signature,
        metadata: serde_json::Value::Null,
        instance_id: String::new(),
        hostname: None,
    };
    let (settings, mut rows) = match validate(root, &fetched) {
        Ok((settings, findings, notes)) => {
            for n in notes {
                println!("note: {n}");
            }
            let rows: Vec<(Stage, Finding)> =
                findings.into_iter().map(|f| (Stage::Validate, f)).collect();
            (settings, rows)
        }
        Err(e) => {
            println!("{e}");
            return Ok(1);
        }
    };
    let systemd = Systemd::connect(root).await.ok();
    let host_facts = facts::host::gather(root, &settings, systemd.as_ref()).await;
    for step in plan::host::plan(&settings, &host_facts) {
        rows.push((Stage::Prepare, step.preview()));
    }
    let rt_facts = facts::runtime::gather(root, &settings, systemd.as_ref()).await;
    for step in plan::runtime::plan(&settings, &rt_facts) {
        rows.push((Stage::Runtime, step.preview()));
    }
    let journal = crate::state::load(root)?;
    let register = match &journal.registration {
        Some(r) => Finding::new(
            "register",
            Outcome::Ok,
            format!(
                "already registered with {}",
                r.get("server").and_then(|s| s.as_str()).unwrap_or("?")
            ),
        ),
        None => Finding::new(
            "register",
            Outcome::WouldChange,
            format!(
                "would register with {} ({}) as {}",
                settings.rancher.server,
                match settings.rancher.mode {
                    crate::userdata::RegistrationMode::Rke1 => "rke1 agent container",
                    crate::userdata::RegistrationMode::SystemAgent => "rancher-system-agent",
                },
                settings
                    .roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join("+")
            ),
        ),
    };
    rows.push((Stage::Register, register));
    if settings.rancher.mode == crate::userdata::RegistrationMode::SystemAgent
        && journal.registration.is_none()
    {
        rows.extend(
            system_agent_preview(root, &settings)
                .into_iter()
                .map(|f| (Stage::Register, f)),
        );
    }

    if json {
        let out: Vec<_> = rows
            .iter()
            .map(|(stage, f)| serde_json::json!({"stage": stage.as_str(), "finding": f}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&out).map_err(|e| super::CliError(e.to_string()))?
        );
    } else {
        println!("{:<9} {:<24} {:<13} detail", "stage", "step", "outcome");
        for (stage, f) in &rows {
            println!(
                "{:<9} {:<24} {:<13} {}",
                stage.as_str(),
                f.step,
                f.outcome.as_str(),
                f.detail
            );
            if let Some(r) = &f.remedy {
                println!("{:<9} {:<24} {:<13} remedy: {r}", "", "", "");
            }
        }
    }
    let failed = rows.iter().any(|(_, f)| f.outcome == Outcome::Failed);
    Ok(if failed { 1 } else { 0 })
}
