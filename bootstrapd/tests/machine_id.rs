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
