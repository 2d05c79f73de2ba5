//! The JSON schema: the shipped copy never drifts, and it says what the validator does
//! (same keys, same required keys, same enum values, no extra properties).

use std::path::PathBuf;

use bootstrapd::userdata;
use serde_json::{Value, json};

fn schema() -> Value {
    serde_json::from_str(&userdata::schema_json()).unwrap()
}

fn definition(schema: &Value, name: &str) -> Value {
    schema["definitions"][name].clone()
}

/// A valid document as JSON (YAML is a superset of JSON, so it parses as userdata).
fn base() -> Value {
    json!({
        "roles": ["worker"],
        "rancher": {"server": "https://rancher.example.com", "token": "fake-token"},
    })
}

/// Sets `value` at a dotted path, creating mappings on the way.
fn set(doc: &mut Value, path: &str, value: Value) {
    let mut at = doc;
    let parts: Vec<&str> = path.split('.').collect();
    for p in &parts[..parts.len() - 1] {
        if at.get(*p).is_none() {
            at[*p] = json!({});
        }
        at = &mut at[*p];
    }
    at[parts[parts.len() - 1]] = value;
}

fn messages(doc: &Value) -> Vec<String> {
    match userdata::parse(doc.to_string().as_bytes()) {
        Ok(_) => Vec::new(),
        Err(e) => e.problems.iter().map(|p| p.message.clone()).collect(),
    }
}

#[test]
fn shipped_schema_is_current() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../configs/bootstrapd.schema.json");
    let want = format!("{}\n", userdata::schema_json());
    if std::env::var_os("BOOTSTRAPD_BLESS_SCHEMA").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let shipped = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        shipped == want,
        "configs/bootstrapd.schema.json is out of date with the settings types; regenerate it \
         with `cargo run -p bootstrapd -- schema > configs/bootstrapd.schema.json` (or \
         `BOOTSTRAPD_BLESS_SCHEMA=1 cargo test -p bootstrapd --test userdata_schema`)"
    );
}

#[test]
fn every_object_is_closed_and_required_keys_match() {
    let s = schema();
    assert_eq!(s["$schema"], "http://json-schema.org/draft-07/schema#");
    assert_eq!(s["additionalProperties"], false);
    assert_eq!(s["required"], json!(["roles", "rancher"]));
    for (name, def) in s["definitions"].as_object().unwrap() {
        if def["type"] == "object" {
            assert_eq!(def["additionalProperties"], false, "{name}");
        }
    }
    assert_eq!(
        definition(&s, "RancherSettings")["required"],
        json!(["server", "token"])
    );
    assert_eq!(definition(&s, "RepoSource")["required"], json!(["url"]));
    assert_eq!(definition(&s, "OfflineSource")["required"], json!(["path"]));
    assert!(definition(&s, "RuntimeSettings").get("required").is_none());
    assert!(definition(&s, "HostSettings").get("required").is_none());

    // The validator requires the same keys.
    for (path, key) in [
        ("", "roles"),
        ("", "rancher"),
        ("rancher", "server"),
        ("rancher", "token"),
    ] {
        let mut doc = base();
        let obj = if path.is_empty() {
            &mut doc
        } else {
            &mut doc[path]
        };
        obj.as_object_mut().unwrap().remove(key);
        assert!(
            messages(&doc).contains(&format!("missing required key `{key}`")),
            "{path}.{key}"
        );
    }
}

#[test]
fn schema_properties_are_the_validators_keys() {
    let s = schema();
    let sections = [
        ("", s.clone()),
        ("rancher", definition(&s, "RancherSettings")),
        ("runtime", definition(&s, "RuntimeSettings")),
        ("host", definition(&s, "HostSettings")),
        ("runtime.source.repo", definition(&s, "RepoSource")),
        ("runtime.source.offline", definition(&s, "OfflineSource")),
        (
            "rancher.system_agent",
            definition(&s, "SystemAgentSettings"),
        ),
        ("rancher.system_agent.binary", definition(&s, "AgentBinary")),
    ];
    for (section, def) in sections {
        let props = def["properties"].as_object().unwrap();
        assert!(!props.is_empty(), "{section}");
        for key in props.keys() {
            let mut doc = base();
            let path = if section.is_empty() {
                key.clone()
            } else {
                format!("{section}.{key}")
            };
            set(&mut doc, &path, json!(null));
            let unknown = format!("unknown key `{key}`");
            assert!(
                !messages(&doc).iter().any(|m| m.starts_with(&unknown)),
                "schema has `{path}`, the validator does not know it"
            );
        }
        let mut doc = base();
        let path = if section.is_empty() {
            "bogus".to_string()
        } else {
            format!("{section}.bogus")
        };
        set(&mut doc, &path, json!(1));
        assert!(
            messages(&doc)
                .iter()
                .any(|m| m.starts_with("unknown key `bogus`")),
            "{path}"
        );
    }
}

#[test]
fn enum_values_are_the_validators_values() {
    let s = schema();
    let places = [
        ("Role", "roles"),
        ("RegistrationMode", "rancher.mode"),
        ("Engine", "runtime.engine"),
        ("FirewalldPolicy", "host.firewalld"),
        ("SelinuxPolicy", "host.selinux"),
        ("IptablesBackend", "host.iptables_backend"),
        ("SwapPolicy", "host.swap"),
    ];
    let enums: Vec<&String> = s["definitions"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, d)| {
            d.get("enum").is_some()
                || d.get("oneOf").is_some_and(|o| {
                    o[0].get("const").is_some()
                        && o.as_array()
                            .unwrap()
                            .iter()
                            .all(|v| v.get("const").is_some())
                })
        })
        .map(|(n, _)| n)
        .collect();
    let mut covered: Vec<&str> = places.iter().map(|(n, _)| *n).collect();
    covered.sort();
    let mut enums: Vec<&str> = enums.iter().map(|s| s.as_str()).collect();
    enums.sort();
    assert_eq!(enums, covered, "every enum of the schema is checked here");

    for (name, path) in places {
        let def = definition(&s, name);
        let values: Vec<String> = match def.get("enum") {
            Some(e) => e
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect(),
            None => def["oneOf"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["const"].as_str().unwrap().to_string())
                .collect(),
        };
        let wrap = |v: Value| if path == "roles" { json!([v]) } else { v };
        for v in &values {
            let mut doc = base();
            set(&mut doc, path, wrap(json!(v)));
            assert_eq!(messages(&doc), Vec::<String>::new(), "{path}: {v}");
        }
        let mut doc = base();
        set(&mut doc, path, wrap(json!("nope")));
        let listed = values
            .iter()
            .map(|v| format!("`{v}`"))
            .collect::<Vec<_>>()
            .join(", ");
        assert_eq!(
            messages(&doc),
            vec![format!("unknown value `nope`; expected one of {listed}")],
            "{path}"
        );
    }
}

#[test]
fn schema_types_for_values_taken_as_written() {
    let s = schema();
    assert_eq!(s["properties"]["roles"]["minItems"], 1);
    assert_eq!(s["properties"]["roles"]["uniqueItems"], true);
    let taint = definition(&s, "Taint");
    assert_eq!(taint["type"], "string");
    assert!(
        taint["pattern"]
            .as_str()
            .unwrap()
            .ends_with(":(NoSchedule|PreferNoSchedule|NoExecute)$")
    );
    let rancher = definition(&s, "RancherSettings");
    assert_eq!(
        rancher["properties"]["ca_checksum"]["pattern"],
        "^[0-9a-fA-F]{64}$"
    );
    assert_eq!(rancher["properties"]["deadline_seconds"]["minimum"], 1);
    assert_eq!(rancher["properties"]["deadline_seconds"]["maximum"], 604800);
    // The validator agrees on the bounds.
    let mut doc = base();
    set(&mut doc, "rancher.deadline_seconds", json!(604801));
    assert_eq!(
        messages(&doc),
        vec!["must be between 1 and 604800, found 604801"]
    );
    let runtime = definition(&s, "RuntimeSettings");
    assert_eq!(
        runtime["properties"]["version"]["type"],
        json!(["string", "number", "null"])
    );
    let host = definition(&s, "HostSettings");
    assert_eq!(
        host["properties"]["sysctls"]["additionalProperties"]["type"],
        json!(["string", "number"])
    );
}

#[test]
fn agent_binary_needs_one_location_and_its_sha256() {
    let s = schema();
    let def = definition(&s, "AgentBinary");
    assert_eq!(def["required"], json!(["sha256"]));
    assert_eq!(
        def["oneOf"],
        json!([{"required": ["url"]}, {"required": ["path"]}])
    );
    assert_eq!(def["properties"]["sha256"]["pattern"], "^[0-9a-fA-F]{64}$");
    let sum = "ab".repeat(32);
    let with = |binary: Value| {
        let mut doc = base();
        set(&mut doc, "rancher.system_agent.binary", binary);
        messages(&doc)
    };
    assert_eq!(
        with(json!({"url": "http://mirror.lab/rancher-system-agent-amd64", "sha256": sum})),
        Vec::<String>::new()
    );
    assert_eq!(
        with(json!({"path": "/images/rancher-system-agent", "sha256": sum.to_uppercase()})),
        Vec::<String>::new()
    );
    assert_eq!(
        with(json!({"path": "/a", "url": "https://m/a", "sha256": sum})),
        vec!["expected exactly one of `url` or `path`"]
    );
    assert_eq!(
        with(json!({"sha256": sum})),
        vec!["expected exactly one of `url` or `path`"]
    );
    assert_eq!(
        with(json!({"path": "/a"})),
        vec!["missing required key `sha256`"]
    );
    assert_eq!(
        with(json!({"path": "/a", "sha256": "abc"})),
        vec!["must be 64 hexadecimal digits (the sha256 of the agent binary), found `abc`"]
    );
    assert_eq!(
        with(json!({"path": "images/a", "sha256": sum})),
        vec!["`images/a` is not an absolute path"]
    );
}

/// Whether `value` matches the schema's `pattern` (JSON Schema patterns are unanchored
/// searches, as here).
fn pattern_matches(pattern: &str, value: &str) -> bool {
    regex_automata::meta::Regex::new(pattern)
        .unwrap_or_else(|e| panic!("{pattern}: {e}"))
        .is_match(value)
}

/// `runtime.version` as the validator, the runtime stage and the schema see it: one parser,
/// so all three agree on every value.
#[test]
fn version_constraints_agree_with_the_runtime_stage_and_the_schema() {
    use bootstrapd::system::packages::VersionConstraint;
    let s = schema();
    let pattern = definition(&s, "RuntimeSettings")["properties"]["version"]["pattern"]
        .as_str()
        .unwrap()
        .to_string();
    let good = [
        "20.10",
        ">=20.10",
        "=24.0.7",
        "==24.0.7",
        ">=20.10, <25",
        "v24",
        "< 25",
    ];
    let bad = [
        "=5:24.0.7-1~debian.12~bookworm",
        "24.0.7-1",
        "20.10+dfsg",
        "latest",
        ">=",
        "",
        "20..10",
        "1e5",
        "20.10 24",
    ];
    for v in good {
        let mut doc = base();
        set(&mut doc, "runtime.version", json!(v));
        assert_eq!(messages(&doc), Vec::<String>::new(), "{v:?}");
        assert!(VersionConstraint::parse(v).is_ok(), "{v:?}");
        assert!(pattern_matches(&pattern, v), "schema refuses {v:?}");
    }
    for v in bad {
        let mut doc = base();
        set(&mut doc, "runtime.version", json!(v));
        assert_eq!(messages(&doc).len(), 1, "validate accepts {v:?}");
        assert!(VersionConstraint::parse(v).is_err(), "{v:?}");
        assert!(!pattern_matches(&pattern, v), "schema accepts {v:?}");
    }
}

/// URLs and key locations are written as they are into apt lists and yum repos; `Url::parse`
/// drops line breaks and tabs, so the raw string must be checked. The schema says the same.
#[test]
fn urls_and_keys_are_one_word_for_the_validator_and_the_schema() {
    let s = schema();
    let repo = definition(&s, "RepoSource");
    let fields = [
        (
            "rancher.server",
            definition(&s, "RancherSettings")["properties"]["server"]["pattern"].clone(),
            "https://rancher.example.com",
        ),
        (
            "runtime.source.repo.url",
            repo["properties"]["url"]["pattern"].clone(),
            "http://repo.example.com/debian",
        ),
        (
            "runtime.source.repo.key",
            repo["properties"]["key"]["pattern"].clone(),
            "https://repo.example.com/gpg",
        ),
        (
            "runtime.source.repo.key",
            repo["properties"]["key"]["pattern"].clone(),
            "/etc/keys/docker.gpg",
        ),
        (
            "rancher.system_agent.binary.url",
            definition(&s, "AgentBinary")["properties"]["url"]["pattern"].clone(),
            "https://mirror.example.com/agent",
        ),
        (
            "runtime.registry_mirrors",
            definition(&s, "RuntimeSettings")["properties"]["registry_mirrors"]["items"]["pattern"]
                .clone(),
            "https://mirror.example.com",
        ),
    ];
    let doc_with = |path: &str, value: &str| {
        let mut doc = base();
        match path {
            "rancher.system_agent.binary.url" => set(
                &mut doc,
                "rancher.system_agent.binary",
                json!({"url": value, "sha256": "ab".repeat(32)}),
            ),
            "runtime.registry_mirrors" => set(&mut doc, path, json!([value])),
            p if p.starts_with("runtime.source.repo.") => {
                let mut r = json!({"url": "http://repo.example.com/debian", "trusted": true});
                r[p.rsplit('.').next().unwrap()] = json!(value);
                set(&mut doc, "runtime.source.repo", r);
            }
            p => set(&mut doc, p, json!(value)),
        }
        doc
    };
    for (path, pattern, good) in fields {
        let pattern = pattern
            .as_str()
            .unwrap_or_else(|| panic!("{path}: no pattern"));
        assert_eq!(
            messages(&doc_with(path, good)),
            Vec::<String>::new(),
            "{path}"
        );
        assert!(
            pattern_matches(pattern, good),
            "{path}: schema refuses {good}"
        );
        for bad in [
            format!("{good}\ndeb [trusted=yes] http://evil.example.com/ ./"),
            format!("{good}\n[evil]\nbaseurl=http://evil.example.com/\ngpgcheck=0"),
            format!("{good}\tx"),
            format!("{good}\r"),
            format!("{good}\n"),
            format!(" {good}"),
            format!("{good}/a b"),
            format!("{good}/\u{1}"),
        ] {
            let m = messages(&doc_with(path, &bad));
            assert_eq!(m.len(), 1, "{path}: {bad:?} gave {m:?}");
            assert!(
                m[0].contains("must not contain spaces, line breaks or control characters"),
                "{path}: {bad:?} gave {m:?}"
            );
            assert!(
                !pattern_matches(pattern, &bad),
                "{path}: schema accepts {bad:?}"
            );
        }
    }
}
