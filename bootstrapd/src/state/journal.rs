use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::findings::{Finding, Outcome};
use crate::fsutil::{HostRoot, write_atomic};
use crate::metrics::{Resources, cpu_ms_since, own_cpu_ms};
use crate::rancher::rke1::Rke1Record;
use crate::rancher::system_agent::SystemAgentRecord;
pub use crate::userdata::RegistrationMode;

pub const STATE_DIR: &str = "/var/lib/bootstrapd";
pub const JOURNAL_FILE: &str = "state.json";
const FORMAT_VERSION: u32 = 1;

/// The stages of a run, in order. `status` shows "stage k of n".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Fetch,
    Validate,
    Prepare,
    Runtime,
    Register,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::Fetch,
        Stage::Validate,
        Stage::Prepare,
        Stage::Runtime,
        Stage::Register,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Fetch => "fetch",
            Stage::Validate => "validate",
            Stage::Prepare => "prepare",
            Stage::Runtime => "runtime",
            Stage::Register => "register",
        }
    }

    /// 1-based position, for "stage k of n".
    pub fn number(self) -> usize {
        Stage::ALL.iter().position(|s| *s == self).unwrap_or(0) + 1
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageState {
    Running,
    Done,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageRecord {
    pub stage: Stage,
    pub state: StageState,
    pub started: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<u64>,
    #[serde(default)]
    pub findings: Vec<Finding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// bootstrapd's own CPU (user + system, children excluded) in this stage, in ms: where the
    /// agent's own cost goes, apart from the tools it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_ms: Option<u64>,
}

/// The overall verdict, as `status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Never ran on this instance (or reset).
    #[serde(rename = "not-run")]
    NotRun,
    Running,
    /// Finished; every stage done.
    Done,
    /// Finished, but some findings are warnings the operator should read.
    Degraded,
    Failed,
    /// No datasource offered userdata: nothing to do.
    Disabled,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::NotRun => "not-run",
            Verdict::Running => "running",
            Verdict::Done => "done",
            Verdict::Degraded => "degraded",
            Verdict::Failed => "failed",
            Verdict::Disabled => "disabled",
        }
    }

    /// cloud-init-style exit codes for `bootstrapd status`: 0 done (or nothing to do),
    /// 1 failed, 2 still running, not yet run, or degraded.
    pub fn exit_code(self) -> i32 {
        match self {
            Verdict::Done | Verdict::Disabled => 0,
            Verdict::Failed => 1,
            Verdict::Running | Verdict::Degraded | Verdict::NotRun => 2,
        }
    }

    pub fn is_final(self) -> bool {
        !matches!(self, Verdict::Running | Verdict::NotRun)
    }
}

/// Where the run is right now, for `status --wait` and sd_notify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub stage: Stage,
    pub step: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Journal {
    pub version: u32,
    pub verdict: Verdict,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datasource: Option<String>,
    /// sha256 of the raw userdata: a change on the same instance means re-plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userdata_sha256: Option<String>,
    /// How many times `run` started on this instance.
    #[serde(default)]
    pub runs: u32,
    #[serde(default)]
    pub stages: Vec<StageRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// What registration did (no secrets): the guard against registering twice.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "sorted_keys"
    )]
    pub registration: Option<RegistrationRecord>,
    /// Lines the operator should read: resumed runs, changed userdata, ignored keys.
    #[serde(default)]
    pub notes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the last run cost bootstrapd's own process (children excluded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// The process of the run that set the verdict to running: a run killed (OOM, SIGKILL,
    /// power loss) cannot say it failed, so readers check whether its owner still lives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<RunOwner>,
    pub updated: u64,
}

/// What registration did. Never holds the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistrationRecord {
    pub server: String,
    pub mode: RegistrationMode,
    pub roles: Vec<String>,
    pub node_name: String,
    /// The CA checksum that was verified and pinned, if any.
    pub ca_checksum: Option<String>,
    /// How the server was verified ("pinned CA sha256 ..." or "system trust store (...)").
    pub trust: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rke1: Option<Rke1Record>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_agent: Option<SystemAgentRecord>,
    pub findings: Vec<Finding>,
}

#[cfg(test)]
impl RegistrationRecord {
    /// A minimal rke1 worker record for `server`, for tests of what reads the journal.
    pub fn for_test(server: &str) -> Self {
        RegistrationRecord {
            server: server.into(),
            mode: RegistrationMode::Rke1,
            roles: vec!["worker".into()],
            node_name: "n".into(),
            ca_checksum: None,
            trust: String::new(),
            rke1: None,
            system_agent: None,
            findings: vec![],
        }
    }
}

/// Journals before the typed record held it as a `serde_json::Value`, whose objects print
/// their keys sorted; printing through a `Value` keeps state.json byte for byte as it was.
fn sorted_keys<S: serde::Serializer>(
    record: &Option<RegistrationRecord>,
    s: S,
) -> Result<S::Ok, S::Error> {
    let value = serde_json::to_value(record).map_err(serde::ser::Error::custom)?;
    value.serialize(s)
}

/// Identifies a run's process across pid reuse and reboots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOwner {
    pub pid: u32,
    /// The kernel's boot id (`/proc/sys/kernel/random/boot_id`): no process of an earlier
    /// boot is alive.
    pub boot_id: String,
    /// The process's start time in clock ticks since boot (`/proc/PID/stat` field 22): a
    /// pid taken by another process after the run died has another start time.
    pub start_ticks: u64,
}

const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

pub(crate) fn current_boot_id() -> Option<String> {
    std::fs::read_to_string(BOOT_ID)
        .ok()
        .map(|s| s.trim().to_string())
}

fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count after the last ')'.
    let after = stat.get(stat.rfind(')')? + 2..)?;
    after.split(' ').nth(19)?.parse().ok()
}

impl RunOwner {
    /// This process, or `None` where /proc does not tell (then nobody can judge it dead).
    pub fn current() -> Option<RunOwner> {
        let pid = std::process::id();
        Some(RunOwner {
            pid,
            boot_id: current_boot_id()?,
            start_ticks: process_start_ticks(pid)?,
        })
    }

    /// False when the process is certainly gone: another boot, no such pid, or the pid now
    /// belongs to a process that started at another time.
    pub fn is_alive(&self) -> bool {
        if current_boot_id().is_some_and(|b| b != self.boot_id) {
            return false;
        }
        process_start_ticks(self.pid).is_some_and(|t| t == self.start_ticks)
    }
}

impl Journal {
    /// Whether the prepare stage is done for this instance and this userdata: the main run
    /// will not prepare the host again, so neither may the early stage (a firewalld the
    /// operator unmasked later stays as they left it).
    pub fn prepared(&self, instance_id: &str, userdata_sha256: &str) -> bool {
        self.instance_id.as_deref() == Some(instance_id)
            && self.userdata_sha256.as_deref() == Some(userdata_sha256)
            && self
                .stages
                .iter()
                .any(|r| r.stage == Stage::Prepare && r.state == StageState::Done)
    }

    /// The journal as readers must see it: a run whose process is gone (killed, out of
    /// memory, power lost) is failed, whatever it last wrote, and its running stage too.
    pub fn settled(mut self) -> Journal {
        if self.verdict != Verdict::Running {
            return self;
        }
        let Some(owner) = self.owner.as_ref().filter(|o| !o.is_alive()) else {
            return self;
        };
        let place = match &self.progress {
            Some(p) if p.step.is_empty() => format!("stage {}", p.stage.as_str()),
            Some(p) => format!("stage {} ({})", p.stage.as_str(), p.step),
            None => "between stages".to_string(),
        };
        let why = format!(
            "the run (pid {}, boot {}) ended without finishing, in {place}: killed, out of \
             memory or power lost; the next `bootstrapd run` (next boot) resumes it",
            owner.pid, owner.boot_id
        );
        for st in &mut self.stages {
            if st.state == StageState::Running {
                st.state = StageState::Failed;
                st.error = Some(why.clone());
            }
        }
        self.verdict = Verdict::Failed;
        self.error = Some(why);
        self.progress = None;
        self
    }

    /// Redacts every URL and every token-shaped value in the free text (errors, notes,
    /// findings, the current step): they quote library errors, whose text carries whole
    /// URLs, and agents' logs, which may quote an earlier token; `status` shows them.
    fn redact_free_text(&mut self) {
        let fix = |s: &mut String| {
            let clean = crate::secret::scrub_token_shaped(&crate::http::redact_urls(s));
            if clean != *s {
                *s = clean;
            }
        };
        self.error.iter_mut().for_each(fix);
        self.notes.iter_mut().for_each(fix);
        if let Some(p) = &mut self.progress {
            fix(&mut p.step);
        }
        for st in &mut self.stages {
            st.error.iter_mut().for_each(fix);
            for f in &mut st.findings {
                fix(&mut f.detail);
                f.remedy.iter_mut().for_each(fix);
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a bootstrapd journal ({source}); move it away or run `bootstrapd reset`"
    )]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path} has journal format {found}, this bootstrapd reads {FORMAT_VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Default for Journal {
    fn default() -> Self {
        Journal {
            version: FORMAT_VERSION,
            verdict: Verdict::NotRun,
            instance_id: None,
            datasource: None,
            userdata_sha256: None,
            runs: 0,
            stages: Vec::new(),
            progress: None,
            registration: None,
            notes: Vec::new(),
            error: None,
            resources: None,
            owner: None,
            updated: now(),
        }
    }
}

/// The journal file and the in-memory copy that every change is saved from.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    pub journal: Journal,
    /// This process's CPU time when the running stage started.
    stage_cpu_start: Option<u64>,
}

pub fn journal_path(root: &HostRoot) -> PathBuf {
    root.path(STATE_DIR).join(JOURNAL_FILE)
}

/// Reads the journal; a missing file is a fresh journal.
pub fn load(root: &HostRoot) -> Result<Journal, JournalError> {
    let path = journal_path(root);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Journal::default()),
        Err(source) => return Err(JournalError::Read { path, source }),
    };
    let journal: Journal =
        serde_json::from_slice(&bytes).map_err(|source| JournalError::Corrupt {
            path: path.clone(),
            source,
        })?;
    if journal.version != FORMAT_VERSION {
        return Err(JournalError::Version {
            path,
            found: journal.version,
        });
    }
    Ok(journal.settled())
}

impl Store {
    pub fn open(root: &HostRoot) -> Result<Store, JournalError> {
        Ok(Store {
            path: journal_path(root),
            journal: load(root)?,
            stage_cpu_start: None,
        })
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    pub fn save(&mut self) -> Result<(), JournalError> {
        self.journal.updated = now();
        self.journal.redact_free_text();
        let mut data =
            serde_json::to_vec_pretty(&self.journal).map_err(|e| JournalError::Write {
                path: self.path.clone(),
                source: std::io::Error::other(e),
            })?;
        data.push(b'\n');
        write_atomic(&self.path, &data, 0o600).map_err(|source| JournalError::Write {
            path: self.path.clone(),
            source,
        })
    }

    /// Starts a run for `instance_id` with userdata hashed to `userdata_sha256`.
    ///
    /// A different instance id starts over (cloud-init's per-instance semantics); the same
    /// instance with other userdata keeps the registration guard but re-plans every stage.
    /// Returns the notes this decision produced.
    pub fn begin(
        &mut self,
        instance_id: &str,
        datasource: &str,
        userdata_sha256: &str,
    ) -> Result<Vec<String>, JournalError> {
        let mut notes = Vec::new();
        let j = &mut self.journal;
        match j.instance_id.as_deref() {
            Some(old) if old != instance_id => {
                notes.push(format!(
                    "instance id changed from {old} to {instance_id}: starting over"
                ));
                *j = Journal::default();
            }
            Some(_) if j.userdata_sha256.as_deref() != Some(userdata_sha256) => {
                notes.push(
                    "userdata changed on this instance: re-planning every stage and applying the difference"
                        .to_string(),
                );
                j.stages.clear();
            }
            Some(_) => {
                if let Some(last) = self.last_done() {
                    notes.push(format!("resuming after stage {}", last.as_str()));
                }
            }
            None => {}
        }
        let j = &mut self.journal;
        j.instance_id = Some(instance_id.to_string());
        j.datasource = Some(datasource.to_string());
        j.userdata_sha256 = Some(userdata_sha256.to_string());
        j.runs += 1;
        j.verdict = Verdict::Running;
        j.owner = RunOwner::current();
        j.error = None;
        j.notes = notes.clone();
        self.save()?;
        Ok(notes)
    }

    /// The last stage that finished, in stage order, with every stage before it done.
    pub fn last_done(&self) -> Option<Stage> {
        let mut last = None;
        for stage in Stage::ALL {
            if self.is_done(stage) {
                last = Some(stage);
            } else {
                break;
            }
        }
        last
    }

    pub fn is_done(&self, stage: Stage) -> bool {
        self.journal
            .stages
            .iter()
            .any(|r| r.stage == stage && r.state == StageState::Done)
    }

    pub fn stage_record(&self, stage: Stage) -> Option<&StageRecord> {
        self.journal.stages.iter().find(|r| r.stage == stage)
    }

    pub fn start_stage(&mut self, stage: Stage) -> Result<(), JournalError> {
        self.journal.stages.retain(|r| r.stage != stage);
        self.journal.stages.push(StageRecord {
            stage,
            state: StageState::Running,
            started: now(),
            finished: None,
            findings: Vec::new(),
            error: None,
            cpu_ms: None,
        });
        self.stage_cpu_start = own_cpu_ms();
        self.journal.progress = Some(Progress {
            stage,
            step: String::new(),
        });
        self.save()
    }

    pub fn set_step(&mut self, stage: Stage, step: &str) -> Result<(), JournalError> {
        self.journal.progress = Some(Progress {
            stage,
            step: step.to_string(),
        });
        self.save()
    }

    /// Finishes a stage: failed if `error` is set or any finding failed.
    pub fn finish_stage(
        &mut self,
        stage: Stage,
        findings: Vec<Finding>,
        error: Option<String>,
    ) -> Result<StageState, JournalError> {
        let failed = error.is_some() || findings.iter().any(|f| f.outcome == Outcome::Failed);
        let state = if failed {
            StageState::Failed
        } else {
            StageState::Done
        };
        if let Some(rec) = self.journal.stages.iter_mut().find(|r| r.stage == stage) {
            rec.state = state;
            rec.finished = Some(now());
            rec.findings = findings;
            rec.error = error.clone();
            rec.cpu_ms = cpu_ms_since(self.stage_cpu_start.take());
        }
        if failed {
            self.journal.verdict = Verdict::Failed;
            self.journal.error = Some(match error {
                Some(e) => format!("stage {} failed: {e}", stage.as_str()),
                None => format!("stage {} failed: see its findings", stage.as_str()),
            });
        }
        self.save()?;
        Ok(state)
    }

    /// Ends the run: done, or degraded when any finding is a warning.
    pub fn finish_run(&mut self) -> Result<Verdict, JournalError> {
        let warned = self
            .journal
            .stages
            .iter()
            .flat_map(|s| &s.findings)
            .any(|f| f.outcome == Outcome::Warning);
        self.journal.verdict = if warned {
            Verdict::Degraded
        } else {
            Verdict::Done
        };
        self.journal.progress = None;
        self.save()?;
        Ok(self.journal.verdict)
    }

    pub fn fail_run(&mut self, error: String) -> Result<(), JournalError> {
        self.journal.verdict = Verdict::Failed;
        self.journal.error = Some(error);
        self.save()
    }

    pub fn disabled(&mut self, reason: String) -> Result<(), JournalError> {
        self.journal.verdict = Verdict::Disabled;
        self.journal.error = None;
        self.journal.notes = vec![reason];
        self.journal.progress = None;
        self.save()
    }
}

/// Forgets the journal so the next boot runs again. The registration guard of the agents
/// themselves (agent container label, CATTLE_ID) still prevents a second registration.
pub fn reset(root: &HostRoot) -> Result<bool, JournalError> {
    let path = journal_path(root);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(JournalError::Write { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn store() -> (tempfile::TempDir, HostRoot, Store) {
        let d = tempfile::tempdir().unwrap();
        let root = HostRoot::new(Some(d.path().to_path_buf()));
        let s = Store::open(&root).unwrap();
        (d, root, s)
    }

    fn record() -> RegistrationRecord {
        RegistrationRecord {
            server: "https://rancher.lab".into(),
            mode: RegistrationMode::Rke1,
            roles: vec!["worker".into()],
            node_name: "node4".into(),
            ca_checksum: None,
            trust: "system trust store".into(),
            rke1: None,
            system_agent: None,
            findings: vec![],
        }
    }

    /// A state.json as the journal wrote it while `registration` was a `serde_json::Value`
    /// (keys sorted at every level of the record), from a system-agent registration.
    const OLD_JOURNAL: &str = r#"{
  "version": 1,
  "verdict": "done",
  "instance_id": "iid-node1",
  "datasource": "nocloud:/var/lib/cloud/seed/nocloud",
  "userdata_sha256": "9f2c",
  "runs": 1,
  "stages": [],
  "registration": {
    "ca_checksum": "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    "findings": [
      {
        "detail": "https://rancher.lab: pinned CA sha256 0123",
        "outcome": "ok",
        "step": "register.ca"
      },
      {
        "detail": "3 attempts",
        "outcome": "warning",
        "remedy": "check the server",
        "step": "register.connect"
      }
    ],
    "mode": "system-agent",
    "node_name": "node1",
    "roles": [
      "etcd",
      "controlplane"
    ],
    "server": "https://rancher.lab",
    "system_agent": {
      "binary": "/usr/local/bin/rancher-system-agent",
      "binary_sha256": "abcd",
      "binary_source": "offline bundle",
      "cattle_id": "c1",
      "cattle_id_created": true,
      "connection_info_file": "/etc/rancher/agent/conn.json",
      "machine_name": "custom-1",
      "strict_verify": false
    },
    "trust": "pinned CA sha256 0123"
  },
  "notes": [],
  "updated": 1764700000
}
"#;

    #[test]
    fn an_old_journal_loads_and_prints_byte_for_byte() {
        let (_d, root, _s) = store();
        let p = journal_path(&root);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, OLD_JOURNAL).unwrap();
        let j = load(&root).unwrap();
        let r = j.registration.as_ref().unwrap();
        assert_eq!(r.mode, RegistrationMode::SystemAgent);
        assert_eq!(r.server, "https://rancher.lab");
        assert_eq!(r.system_agent.as_ref().unwrap().cattle_id, "c1");
        assert_eq!(r.findings[1].remedy.as_deref(), Some("check the server"));
        let again = serde_json::to_string_pretty(&j).unwrap() + "\n";
        assert_eq!(again, OLD_JOURNAL);
    }

    #[test]
    fn the_record_prints_as_the_untyped_value_did() {
        let mut r = record();
        r.rke1 = Some(Rke1Record {
            container_id: "0123456789abcdef".into(),
            image: "rancher/rancher-agent:v2.6.14".into(),
            created: true,
            started: true,
            image_source: "present".into(),
            replaced: None,
        });
        r.findings
            .push(Finding::new("register", Outcome::Ok, "x").with_remedy("y"));
        let mut typed = Vec::new();
        sorted_keys(
            &Some(r.clone()),
            &mut serde_json::Serializer::pretty(&mut typed),
        )
        .unwrap();
        let untyped = serde_json::to_vec_pretty(&serde_json::to_value(&r).unwrap()).unwrap();
        assert_eq!(
            String::from_utf8(typed).unwrap(),
            String::from_utf8(untyped).unwrap()
        );
    }

    #[test]
    fn fresh_journal_is_not_run() {
        let (_d, root, s) = store();
        assert_eq!(s.journal.verdict, Verdict::NotRun);
        assert!(!journal_path(&root).exists());
    }

    #[test]
    fn resume_after_last_done_stage() {
        let (_d, root, mut s) = store();
        s.begin("i-1", "nocloud", "aaa").unwrap();
        for st in [Stage::Fetch, Stage::Validate] {
            s.start_stage(st).unwrap();
            s.finish_stage(st, vec![], None).unwrap();
        }
        s.start_stage(Stage::Prepare).unwrap();
        // crash here: reopen from disk
        let mut s2 = Store::open(&root).unwrap();
        assert_eq!(s2.last_done(), Some(Stage::Validate));
        let notes = s2.begin("i-1", "nocloud", "aaa").unwrap();
        assert_eq!(notes, vec!["resuming after stage validate".to_string()]);
        assert!(s2.is_done(Stage::Validate));
        assert!(!s2.is_done(Stage::Prepare));
        assert_eq!(s2.journal.runs, 2);
        let mode = std::fs::metadata(journal_path(&root))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn new_instance_starts_over_and_changed_userdata_replans() {
        let (_d, _root, mut s) = store();
        s.begin("i-1", "nocloud", "aaa").unwrap();
        s.start_stage(Stage::Fetch).unwrap();
        s.finish_stage(Stage::Fetch, vec![], None).unwrap();
        s.journal.registration = Some(record());

        let notes = s.begin("i-1", "nocloud", "bbb").unwrap();
        assert!(notes[0].contains("userdata changed"));
        assert!(s.journal.stages.is_empty());
        assert!(s.journal.registration.is_some(), "registration guard kept");

        let notes = s.begin("i-2", "nocloud", "bbb").unwrap();
        assert!(notes[0].contains("instance id changed from i-1 to i-2"));
        assert!(s.journal.registration.is_none());
        assert_eq!(s.journal.runs, 1);
    }

    #[test]
    fn failed_finding_fails_stage_and_warnings_degrade() {
        let (_d, _root, mut s) = store();
        s.begin("i", "local", "h").unwrap();
        s.start_stage(Stage::Prepare).unwrap();
        let st = s
            .finish_stage(
                Stage::Prepare,
                vec![Finding::new("swap", Outcome::Warning, "swap is on")],
                None,
            )
            .unwrap();
        assert_eq!(st, StageState::Done);
        assert_eq!(s.finish_run().unwrap(), Verdict::Degraded);
        assert_eq!(Verdict::Degraded.exit_code(), 2);

        s.start_stage(Stage::Runtime).unwrap();
        let st = s
            .finish_stage(
                Stage::Runtime,
                vec![Finding::new("docker", Outcome::Failed, "no")],
                None,
            )
            .unwrap();
        assert_eq!(st, StageState::Failed);
        assert_eq!(s.journal.verdict, Verdict::Failed);
        assert!(s.journal.error.as_deref().unwrap().contains("runtime"));
    }

    #[test]
    fn journal_free_text_keeps_no_url_query_nor_token() {
        let (_d, root, mut s) = store();
        s.begin("i", "local", "h").unwrap();
        s.start_stage(Stage::Register).unwrap();
        let old = "q8w7e6r5t4y3u2i1o0pzlxkcjvhbgnfmdsa9876543210zyxwvutsrq";
        s.finish_stage(
            Stage::Register,
            vec![Finding::new(
                "agent",
                Outcome::Failed,
                format!("log: token {old}"),
            )],
            Some(format!(
                "GET https://s3/x?X-Amz-Signature=zz: CATTLE_TOKEN={old}"
            )),
        )
        .unwrap();
        let text = std::fs::read_to_string(journal_path(&root)).unwrap();
        assert!(
            !text.contains(old) && !text.contains("X-Amz-Signature"),
            "{text}"
        );
        assert!(text.contains("https://s3/x?redacted"), "{text}");
    }

    #[test]
    fn corrupt_journal_is_an_error_naming_the_file() {
        let (_d, root, _s) = store();
        let p = journal_path(&root);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"{not json").unwrap();
        let e = load(&root).unwrap_err().to_string();
        assert!(e.contains("state.json"), "{e}");
        assert!(reset(&root).unwrap());
        assert!(!reset(&root).unwrap());
    }
}
