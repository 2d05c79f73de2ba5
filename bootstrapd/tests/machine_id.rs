//! `rancher.system_agent.machine_id`: what the userdata may say, where a mistake is
//! reported, and what the schema allows (issue 17, re-registration after a reimage).

use bootstrapd::userdata::{self, MachineId, UserdataError};

const GOOD_RANCHER: &str = "rancher:\n  server: https://rancher.example.com\n  token: fake-token\n";

fn parse(extra: &str) -> Result<MachineId, UserdataError> {
    let doc = format!("roles: [worker]\n{GOOD_RANCHER}{extra}");
    userdata::parse(doc.as_bytes()).map(|p| p.settings.rancher.system_agent.machine_id)
}

fn error(extra: &str) -> String {
    match parse(extra) {
        Ok(m) => panic!("accepted: {m:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_three_forms_and_the_default() {
    assert_eq!(parse("").unwrap(), MachineId::Random);
    let sa = |v: &str| format!("  system_agent:\n    machine_id: {v}\n");
    assert_eq!(parse(&sa("random")).unwrap(), MachineId::Random);
    assert_eq!(parse(&sa("instance_id")).unwrap(), MachineId::InstanceId);
    assert_eq!(
        parse(&sa("{value: 0a1b2c}")).unwrap(),
        MachineId::Value("0a1b2c".into())
    );
    // Only digits reads as a number in YAML; it is still hex.
    assert_eq!(
        parse(&sa("{value: 0123}")).unwrap(),
        MachineId::Value("0123".into())
    );
    let longest = "f".repeat(63);
    assert_eq!(
        parse(&sa(&format!("{{value: {longest}}}"))).unwrap(),
        MachineId::Value(longest)
    );
}

#[test]
fn mistakes_are_reported_at_their_place() {
    assert_eq!(
        error("  system_agent:\n    machine_id: instance-id\n"),
        "6:17: rancher.system_agent.machine_id: unknown value `instance-id`; expected one of \
         `random`, `instance_id` (did you mean `instance_id`?)"
    );
    assert_eq!(
        error("  system_agent:\n    machine_id:\n      value: 0A1B\n"),
        "7:14: rancher.system_agent.machine_id.value: must be lowercase hexadecimal digits \
         (0-9, a-f), found `A`"
    );
    assert_eq!(
        error(&format!(
            "  system_agent:\n    machine_id: {{value: {}}}\n",
            "a".repeat(64)
        )),
        "6:25: rancher.system_agent.machine_id.value: must be 1 to 63 hexadecimal digits \
         (a Kubernetes label value), found 64 characters"
    );
    assert_eq!(
        error("  system_agent:\n    machine_id: {id: abc}\n"),
        "6:5: rancher.system_agent.machine_id.value: missing required key `value`\n\
         6:18: rancher.system_agent.machine_id.id: unknown key `id`; expected one of `value`"
    );
    // A misplaced key is pointed to its section.
    assert!(
        error("  machine_id: instance_id\n")
            .contains("did you mean `rancher.system_agent.machine_id`?")
    );
}

#[test]
fn it_belongs_to_system_agent_mode_only() {
    let e = error("  mode: rke1\n  system_agent:\n    machine_id: instance_id\n");
    assert_eq!(
        e,
        "7:17: rancher.system_agent.machine_id: applies only to mode system-agent (rke1 names \
         the node after its hostname); remove it"
    );
}

#[test]
fn the_registration_token_is_refused_and_never_echoed() {
    // A token that happens to be hex: sent as an id it would end up in Rancher's labels.
    let doc = "roles: [worker]\nrancher:\n  server: https://rancher.example.com\n  token: \
               abcdef0123456789abcdef\n  system_agent:\n    machine_id: {value: \
               abcdef0123456789abcdef}\n";
    let e = userdata::parse(doc.as_bytes()).unwrap_err().to_string();
    assert_eq!(
        e,
        "5:3: rancher.system_agent.machine_id.value: must not be the registration token"
    );
    assert!(!e.contains("abcdef0123"));
}

#[test]
fn the_schema_knows_the_setting() {
    let schema: serde_json::Value = serde_json::from_str(&userdata::schema_json()).unwrap();
    let sa = &schema["definitions"]["SystemAgentSettings"]["properties"];
    assert!(sa.get("machine_id").is_some(), "{sa}");
    let text = schema["definitions"]["MachineId"].to_string();
    for want in ["random", "instance_id", "value", "^[0-9a-f]{1,63}$"] {
        assert!(text.contains(want), "{want} missing from {text}");
    }
}

#[test]
fn the_shipped_example_derives_the_id_from_the_instance() {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../configs/examples/reimage-same-machine.yaml");
    let p = userdata::parse(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(
        p.settings.rancher.system_agent.machine_id,
        MachineId::InstanceId
    );
    assert!(p.notes.is_empty(), "{:?}", p.notes);
}

/// `bootstrapd plan` on a `--root` tree with a NoCloud seed: the register stage's
/// `register.machine-id` row for the reimage example.
mod plan {
    use std::path::Path;

    use bootstrapd::rancher::cattle_id::derive_cattle_id;
    use bootstrapd::rancher::system_agent::machine_name;
    use bootstrapd::secret::Secret;

    const EXAMPLE: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../configs/examples/reimage-same-machine.yaml"
    );

    fn write(root: &Path, path: &str, content: &str) {
        let p = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    /// A disk with the example as NoCloud user-data and `meta` as meta-data.
    fn disk(meta: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let seed = "/var/lib/cloud/seed/nocloud";
        write(d.path(), &format!("{seed}/meta-data"), meta);
        write(
            d.path(),
            &format!("{seed}/user-data"),
            &std::fs::read_to_string(EXAMPLE).unwrap(),
        );
        write(
            d.path(),
            "/etc/machine-id",
            "5e1f0c2b9a8d4e7f8a6b3c1d2e4f5a6b\n",
        );
        d
    }

    /// The `register.machine-id` row of `bootstrapd plan --root DIR`.
    fn row(dir: &Path) -> String {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_bootstrapd"))
            .arg("plan")
            .arg("--root")
            .arg(dir)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let rows: Vec<&str> = text
            .lines()
            .filter(|l| l.split_whitespace().nth(1) == Some("register.machine-id"))
            .collect();
        assert!(!rows.is_empty(), "no register.machine-id row in {text}");
        rows.join("\n")
    }

    #[test]
    fn the_same_instance_id_on_a_new_disk_names_the_same_machine() {
        let token = Secret::new("fake-token-for-examples-only-0000000000000000000000000");
        let id = derive_cattle_id("https://rancher.example.com", &token, "iid-worker-7");
        for _disk in 0..2 {
            let d = disk("instance-id: iid-worker-7\nlocal-hostname: worker-7\n");
            let row = row(d.path());
            assert!(row.contains("would-change"), "{row}");
            assert!(row.contains(&format!("CATTLE_ID {id}")), "{row}");
            assert!(row.contains(&machine_name(&id)), "{row}");
            assert!(row.contains("instance_id (instance iid-worker-7)"), "{row}");
            assert!(!row.contains("fake-token"), "{row}");
        }
    }

    #[test]
    fn an_instance_id_that_is_the_disks_machine_id_is_warned_about() {
        // No instance-id in meta-data: NoCloud falls back to /etc/machine-id.
        let d = disk("local-hostname: worker-7\n");
        let row = row(d.path());
        assert!(
            row.contains("instance 5e1f0c2b9a8d4e7f8a6b3c1d2e4f5a6b"),
            "{row}"
        );
        assert!(
            row.lines()
                .any(|l| l.contains("warning") && l.contains("becomes a new machine")),
            "{row}"
        );
    }

    #[test]
    fn a_cattle_id_file_for_another_machine_fails_the_plan() {
        let d = disk("instance-id: iid-worker-7\n");
        write(d.path(), "/etc/rancher/agent/cattle-id", "abc123\n");
        let row = row(d.path());
        assert!(row.contains("failed"), "{row}");
        assert!(row.contains(&machine_name("abc123")), "{row}");
    }
}
