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
    assert_eq!(
        definition(&s, "SshSettings")["required"],
        json!(["authorized_keys"])
    );
    assert_eq!(
        definition(&s, "HostnameSetting")["oneOf"][1]["required"],
        json!(["template"])
    );

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
        ("ssh", definition(&s, "SshSettings")),
        ("proxy", definition(&s, "ProxySettings")),
        ("registries", definition(&s, "RegistrySettings")),
        (
            "registries.mirrors.localhost",
            definition(&s, "RegistryMirror"),
        ),
        (
            "registries.configs.localhost",
            definition(&s, "RegistryConfig"),
        ),
        (
            "registries.configs.localhost.auth",
            definition(&s, "RegistryAuth"),
        ),
        (
            "hostname",
            definition(&s, "HostnameSetting")["oneOf"][1].clone(),
        ),
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
        vec!["must be 64 hexadecimal digits (a sha256), found `abc`"]
    );
    assert_eq!(
        with(json!({"path": "images/a", "sha256": sum})),
        vec!["`images/a` is not an absolute path"]
    );
}

#[test]
fn a_sysext_source_needs_one_location_named_name_raw_and_its_sha256() {
    let s = schema();
    let def = definition(&s, "SysextSource");
    assert_eq!(def["required"], json!(["sha256"]));
    assert_eq!(
        def["oneOf"],
        json!([{"required": ["url"]}, {"required": ["path"]}])
    );
    let sum = "ab".repeat(32);
    let with = |sysext: Value| {
        let mut doc = base();
        set(&mut doc, "rancher.mode", json!("rke1"));
        set(&mut doc, "runtime.source", json!({ "sysext": sysext }));
        messages(&doc)
    };
    assert_eq!(
        with(json!({"url": "http://10.0.2.2:8080/sysext/docker.raw", "sha256": sum})),
        Vec::<String>::new()
    );
    assert_eq!(
        with(json!({"path": "/var/lib/bootstrapd/docker-20.10.raw", "sha256": sum})),
        Vec::<String>::new()
    );
    let raw = "the image's file name must end in `.raw` (systemd-sysext's name for a disk \
               image), found `docker.img`";
    assert_eq!(
        with(json!({"path": "/images/docker.img", "sha256": sum})),
        vec![raw]
    );
    assert_eq!(
        with(json!({"path": "/a.raw", "url": "https://m/a.raw", "sha256": sum})),
        vec!["expected exactly one of `url` or `path`"]
    );
    assert_eq!(
        with(json!({"url": "https://m/docker.raw"})),
        vec!["missing required key `sha256`"]
    );
    let mut doc = base();
    set(
        &mut doc,
        "runtime.source",
        json!({"sysext": {"path": "/a.raw", "sha256": sum}, "offline": {"path": "/b"}}),
    );
    assert_eq!(
        messages(&doc),
        vec!["expected `distro`, or a mapping with exactly one of `repo`, `offline` or `sysext`"]
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

/// Where a corpus value goes in a document, so the validator checks it in place.
#[derive(Clone, Copy)]
enum Place {
    /// The value of a dotted path.
    Value(&'static str),
    /// The one item of a list at a dotted path.
    Item(&'static str),
    /// A key of the mapping at a dotted path, with a valid value.
    Key(&'static str, &'static str),
    /// The value under a valid key of the mapping at a dotted path.
    MapValue(&'static str, &'static str),
    /// A value that needs other keys beside it: the section at a dotted path, built around
    /// the value.
    With(&'static str, fn(&str) -> Value),
}

impl Place {
    fn doc(self, value: &str) -> Value {
        let mut doc = base();
        match self {
            Place::Value(path) => set(&mut doc, path, json!(value)),
            Place::Item(path) => set(&mut doc, path, json!([value])),
            Place::Key(path, v) => set(&mut doc, path, json!({ value: v })),
            Place::MapValue(path, k) => set(&mut doc, path, json!({ k: value })),
            Place::With(section, build) => set(&mut doc, section, build(value)),
        }
        doc
    }
}

/// What a JSON Schema validator checks of a string against the string schema at `pointer`:
/// its pattern and its length bounds (in characters).
fn schema_accepts(schema: &Value, pointer: &str, value: &str) -> bool {
    let def = schema
        .pointer(pointer)
        .unwrap_or_else(|| panic!("schema has no {pointer}"));
    let chars = value.chars().count() as u64;
    def.get("pattern")
        .is_none_or(|p| pattern_matches(p.as_str().unwrap(), value))
        && def["maxLength"].as_u64().is_none_or(|m| chars <= m)
        && def["minLength"].as_u64().is_none_or(|m| chars >= m)
}

/// One field's corpus: values both must accept, values both must refuse, and values only the
/// validator refuses because a regular expression cannot say why (each with that reason).
struct Corpus {
    field: &'static str,
    place: Place,
    /// JSON pointer to the string schema in the generated schema.
    schema: &'static str,
    good: Vec<String>,
    bad: Vec<String>,
    schema_looser: Vec<(String, &'static str)>,
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|s| s.to_string()).collect()
}

fn rke1_image(image: &str) -> Value {
    json!({
        "server": "https://rancher.example.com",
        "token": "fake-token",
        "mode": "rke1",
        "agent_image": image,
    })
}

fn binary_sha256(sum: &str) -> Value {
    json!({"url": "https://mirror.example.com/agent", "sha256": sum})
}

fn binary_url(url: &str) -> Value {
    json!({"url": url, "sha256": "ab".repeat(32)})
}

fn binary_path(path: &str) -> Value {
    json!({"path": path, "sha256": "ab".repeat(32)})
}

/// A trusted repository (so that no key is needed) with `key` set to the value.
fn repo_with(key: &str, value: &str) -> Value {
    let mut r = json!({"url": "http://repo.example.com/debian", "trusted": true});
    r[key] = if key == "components" {
        json!([value])
    } else {
        json!(value)
    };
    r
}

fn sha256_corpus(field: &'static str, place: Place, schema: &'static str) -> Corpus {
    Corpus {
        field,
        place,
        schema,
        good: vec![
            "ab".repeat(32),
            "AB".repeat(32),
            "0123456789".repeat(6) + "0123",
        ],
        bad: vec![
            "a".repeat(63),
            "a".repeat(65),
            "g".repeat(64),
            format!(" {}", "a".repeat(63)),
            format!("{}\n", "a".repeat(64)),
            String::new(),
        ],
        schema_looser: vec![],
    }
}

/// URL fields: the schema says scheme, host and one word; `Url::parse` says the rest.
fn url_looser() -> Vec<(String, &'static str)> {
    vec![
        (
            "https://mirror.example.com:99999".into(),
            "the port's range (Url::parse)",
        ),
        (
            "https://mirror<example.com".into(),
            "host characters URLs forbid (Url::parse)",
        ),
    ]
}

/// An ed25519 public key line whose blob says `inner`.
fn ssh_key(kind: &str, inner: &str) -> String {
    use base64::Engine as _;
    let mut blob = (inner.len() as u32).to_be_bytes().to_vec();
    blob.extend_from_slice(inner.as_bytes());
    blob.extend_from_slice(&[0, 0, 0, 32]);
    blob.extend_from_slice(&[5; 32]);
    let b64 = base64::engine::general_purpose::STANDARD.encode(blob);
    format!("{kind} {b64}")
}

fn ssh_user(user: &str) -> Value {
    json!({"user": user, "authorized_keys": [ssh_key("ssh-ed25519", "ssh-ed25519")]})
}

fn ssh_keys(key: &str) -> Value {
    json!({"authorized_keys": [key]})
}

fn identity_corpus() -> Vec<Corpus> {
    let ed = ssh_key("ssh-ed25519", "ssh-ed25519");
    vec![
        Corpus {
            field: "hostname.template",
            place: Place::Value("hostname.template"),
            schema: "/definitions/HostnameSetting/oneOf/1/properties/template",
            good: strings(&["node-{mac}", "{serial}", "Edge-{instance_id}-x", "node1"]),
            bad: strings(&[
                "",
                "node-{macc}",
                "node-{mac",
                "node_{mac}",
                "node.{mac}",
                "{}",
                "node {mac}",
                "n}",
            ]),
            schema_looser: vec![],
        },
        Corpus {
            field: "ssh.user",
            place: Place::With("ssh", ssh_user),
            schema: "/definitions/SshSettings/properties/user",
            good: vec!["root".into(), "ops-1".into(), "_svc".into(), "a".repeat(32)],
            bad: vec![
                String::new(),
                "Ops".into(),
                "1ops".into(),
                "a b".into(),
                "a:b".into(),
                "a".repeat(33),
            ],
            schema_looser: vec![],
        },
        Corpus {
            field: "ssh.authorized_keys",
            place: Place::With("ssh", ssh_keys),
            schema: "/definitions/SshSettings/properties/authorized_keys/items",
            good: vec![
                ed.clone(),
                format!("{ed} ops@lab laptop"),
                ssh_key("ssh-rsa", "ssh-rsa"),
                ssh_key("ecdsa-sha2-nistp384", "ecdsa-sha2-nistp384"),
                ssh_key("sk-ssh-ed25519@openssh.com", "sk-ssh-ed25519@openssh.com"),
            ],
            bad: vec![
                String::new(),
                format!("no-pty {ed}"),
                format!("from=\"10.0.0.0/8\" {ed}"),
                ssh_key("ssh-dss", "ssh-dss"),
                format!("{ed}\nssh-rsa AAAA"),
                format!("{ed} a\u{1}b"),
                "ssh-ed25519 !!!".into(),
                "ssh-ed25519".into(),
            ],
            schema_looser: vec![
                (
                    ssh_key("ssh-ed25519", "ssh-rsa"),
                    "the type inside the base64 blob (decoding)",
                ),
                (
                    "ssh-ed25519 AAAA".into(),
                    "a blob too short to hold a key (decoding)",
                ),
                (
                    "ssh-ed25519 AAAA=".into(),
                    "base64 that does not decode (decoding)",
                ),
            ],
        },
    ]
}

/// A self-signed CA certificate, PEM.
fn ca_pem() -> String {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().pem()
}

/// `trusted_ca` items: the schema can only ask for a certificate block; what is in it and
/// what else is in the text is the validator's.
fn trusted_ca_corpus() -> Vec<Corpus> {
    let (a, b) = (ca_pem(), ca_pem());
    let key = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n";
    vec![Corpus {
        field: "trusted_ca",
        place: Place::Item("trusted_ca"),
        schema: "/definitions/TrustedCa",
        good: vec![a.clone(), format!("# lab CA\n\n{a}\n{b}")],
        bad: vec![String::new(), "hello".into(), key.into()],
        schema_looser: vec![
            (format!("{a}{key}"), "a private key beside the certificate"),
            (format!("{a}garbage\n"), "text outside the blocks"),
            (
                "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n".into(),
                "a block that is no certificate (decoding)",
            ),
            (
                a.lines().take(3).collect::<Vec<_>>().join("\n"),
                "a block without its end",
            ),
        ],
    }]
}

fn mirror_named(host: &str) -> Value {
    json!({ host: {"endpoint": ["https://mirror.lab"]} })
}

fn config_named(host: &str) -> Value {
    json!({ host: {} })
}

fn mirror_endpoint(url: &str) -> Value {
    json!({"localhost": {"endpoint": [url]}})
}

fn auth_user(user: &str) -> Value {
    json!({"localhost": {"auth": {"username": user, "password": "pw"}}})
}

fn auth_password(password: &str) -> Value {
    json!({"localhost": {"auth": {"username": "agent", "password": password}}})
}

fn auth_token(token: &str) -> Value {
    json!({"localhost": {"auth": {"identity_token": token}}})
}

fn rke1_default_registry(registry: &str) -> Value {
    json!({
        "server": "https://rancher.example.com",
        "token": "fake-token",
        "mode": "rke1",
        "system_default_registry": registry,
    })
}

/// Registry names (`host[:port]`): the schema says the shape, the validator also the port's
/// range and the IPv6 address.
fn registry_corpus(field: &'static str, place: Place, schema: &'static str, star: bool) -> Corpus {
    let mut good = strings(&[
        "docker.io",
        "registry.lab:5000",
        "10.0.2.2:5443",
        "[fd00::1]:5000",
        "localhost",
        "Registry.Lab",
    ]);
    let mut bad = strings(&[
        "https://registry.lab",
        "registry.lab/v2",
        "registry.lab:",
        "-registry.lab",
        "registry..lab",
        "reg_istry.lab",
        "registry.lab:5000x",
        "",
    ]);
    if star {
        good.push("*".into());
    } else {
        bad.push("*".into());
    }
    Corpus {
        field,
        place,
        schema,
        good,
        bad,
        schema_looser: vec![
            ("registry.lab:99999".into(), "the port's range"),
            ("registry.lab:0".into(), "the port's range"),
            ("[1:::2]".into(), "the IPv6 address (Ipv6Addr::parse)"),
        ],
    }
}

fn registries_corpus() -> Vec<Corpus> {
    vec![
        registry_corpus(
            "registries.mirrors (keys)",
            Place::With("registries.mirrors", mirror_named),
            "/definitions/RegistrySettings/properties/mirrors/propertyNames",
            true,
        ),
        registry_corpus(
            "registries.configs (keys)",
            Place::With("registries.configs", config_named),
            "/definitions/RegistrySettings/properties/configs/propertyNames",
            false,
        ),
        registry_corpus(
            "rancher.system_default_registry",
            Place::With("rancher", rke1_default_registry),
            "/definitions/RancherSettings/properties/system_default_registry",
            false,
        ),
        Corpus {
            field: "registries.mirrors.*.endpoint",
            place: Place::With("registries.mirrors", mirror_endpoint),
            schema: "/definitions/RegistryMirror/properties/endpoint/items",
            good: strings(&[
                "https://mirror.example.com",
                "http://10.0.0.1:5000",
                "https://mirror.example.com/v2/prefix",
                "https://[fd00::1]:5000",
            ]),
            bad: strings(&[
                "ftp://mirror.example.com",
                "mirror.example.com",
                "https://",
                "https://u:p@mirror.example.com",
                "https://mirror.example.com/a b",
                " https://mirror.example.com",
            ]),
            schema_looser: url_looser(),
        },
        Corpus {
            field: "registries.configs.*.auth.username",
            place: Place::With("registries.configs", auth_user),
            schema: "/definitions/RegistryAuth/properties/username",
            good: strings(&["agent", "robot$ci+bot", "a b"]),
            bad: strings(&["", "a:b", "a\nb", "a\u{1}"]),
            schema_looser: vec![],
        },
        Corpus {
            field: "registries.configs.*.auth.password",
            place: Place::With("registries.configs", auth_password),
            schema: "/definitions/RegistryAuth/properties/password",
            good: strings(&["s3cret", "pass word", "p:ss", "no", "x"]),
            bad: strings(&["", "a\nb", "a\u{1}", "a\tb"]),
            schema_looser: vec![],
        },
        Corpus {
            field: "registries.configs.*.auth.identity_token",
            place: Place::With("registries.configs", auth_token),
            schema: "/definitions/RegistryAuth/properties/identity_token",
            good: strings(&["tok-1", "eyJhbGciOi.x"]),
            bad: strings(&["", "a b", "a\nb", "a\u{1}"]),
            schema_looser: vec![],
        },
    ]
}

#[test]
fn registry_auth_is_a_pair_or_a_token_for_both() {
    let s = schema();
    let def = definition(&s, "RegistryAuth");
    assert_eq!(def["oneOf"][0]["required"], json!(["username", "password"]));
    assert_eq!(def["oneOf"][1]["required"], json!(["identity_token"]));
    let with = |auth: Value| {
        let mut doc = base();
        set(
            &mut doc,
            "registries.configs",
            json!({"localhost": {"auth": auth}}),
        );
        messages(&doc)
    };
    assert_eq!(
        with(json!({"username": "u", "password": "p"})),
        Vec::<String>::new()
    );
    assert_eq!(with(json!({"identity_token": "t"})), Vec::<String>::new());
    for bad in [
        json!({"username": "u"}),
        json!({"password": "p"}),
        json!({"username": "u", "password": "p", "identity_token": "t"}),
        json!({}),
    ] {
        assert_eq!(with(bad.clone()).len(), 1, "{bad}");
    }
}

fn corpus() -> Vec<Corpus> {
    let http_urls = |field, place, schema| Corpus {
        field,
        place,
        schema,
        good: strings(&[
            "https://mirror.example.com",
            "http://10.0.0.1:5000",
            "https://mirror.example.com/v2/?x=1#f",
            "https://[fd00::1]:5000",
            "HTTPS://mirror.example.com",
            "Http://mirror.example.com",
        ]),
        bad: strings(&[
            "ftp://mirror.example.com",
            "file:///srv/mirror",
            "mirror.example.com",
            "https://",
            "https://u:p@mirror.example.com",
            "https://u@mirror.example.com/a",
            "https://mirror.example.com/a b",
            "https://mirror.example.com/\u{1}",
            " https://mirror.example.com",
        ]),
        schema_looser: url_looser(),
    };
    let paths = |field, place, schema| Corpus {
        field,
        place,
        schema,
        good: strings(&["/images/a", "/", "/a/.b/c..d/...", "/a b"]),
        bad: strings(&["images/a", "", "/a/../b", "/..", "/a/\u{1}", "/a/\u{85}b"]),
        schema_looser: vec![],
    };
    vec![
        Corpus {
            field: "rancher.server",
            place: Place::Value("rancher.server"),
            schema: "/definitions/RancherSettings/properties/server",
            good: strings(&[
                "https://rancher.example.com",
                "https://10.0.2.2:8443/",
                "https://rancher.example.com/prefix/",
                "https://[fd00::1]:8443",
                "HTTPS://rancher.example.com",
            ]),
            bad: strings(&[
                "http://rancher.example.com",
                "rancher.example.com",
                "https://",
                "https://u:p@rancher.example.com",
                "https://rancher.example.com/?x=1",
                "https://rancher.example.com#f",
                "https://rancher.example.com/a b",
                "https://rancher.example.com\n",
            ]),
            schema_looser: vec![
                (
                    "https://rancher.example.com:99999".into(),
                    "the port's range (Url::parse)",
                ),
                (
                    "https://rancher<example.com".into(),
                    "host characters URLs forbid (Url::parse)",
                ),
            ],
        },
        Corpus {
            field: "rancher.token",
            place: Place::Value("rancher.token"),
            schema: "/definitions/RancherSettings/properties/token",
            good: strings(&["fake-token", "a", "kubeconfig-u-abc:xyz"]),
            bad: strings(&["", "a b", "a\tb", "token\n", "a\u{1}b", "a\u{a0}b"]),
            schema_looser: vec![],
        },
        sha256_corpus(
            "rancher.ca_checksum",
            Place::Value("rancher.ca_checksum"),
            "/definitions/RancherSettings/properties/ca_checksum",
        ),
        Corpus {
            field: "rancher.agent_image",
            place: Place::With("rancher", rke1_image),
            schema: "/definitions/RancherSettings/properties/agent_image",
            good: strings(&[
                "rancher/rancher-agent:v2.6.14",
                "registry.lab:5000/rancher/rancher-agent:v2.9.3",
                "a",
            ]),
            bad: strings(&["", "-x", "a b", "a\tb", " a", "a\u{1}"]),
            schema_looser: vec![],
        },
        Corpus {
            field: "rancher.node_name",
            place: Place::Value("rancher.node_name"),
            schema: "/definitions/RancherSettings/properties/node_name",
            good: vec![
                "node1".into(),
                "node-1.lab".into(),
                "a".repeat(63),
                [&"a".repeat(63)[..]; 4].join(".")[..253].to_string(),
            ],
            bad: vec![
                "Node1".into(),
                "-a".into(),
                "a-".into(),
                "a..b".into(),
                ".a".into(),
                "a_b".into(),
                "a".repeat(64),
                [&"a".repeat(63)[..]; 4].join(".")[..253].to_string() + "a",
                String::new(),
            ],
            schema_looser: vec![],
        },
        Corpus {
            field: "rancher.address",
            place: Place::Value("rancher.address"),
            schema: "/definitions/RancherSettings/properties/address",
            good: vec![
                "192.168.121.11".into(),
                "eth1".into(),
                "enp0s3.100".into(),
                "awslocal".into(),
                "fe80::1".into(),
                "::1".into(),
                "::".into(),
                "::ffff:10.0.0.1".into(),
                "a".repeat(64),
            ],
            bad: vec![
                String::new(),
                "-eth1".into(),
                ":eth1".into(),
                ":::".into(),
                ":1".into(),
                "::1.2.3.999".into(),
                "eth 1".into(),
                "eth/1".into(),
                "10.0.0.1/24".into(),
                "a".repeat(65),
            ],
            schema_looser: vec![],
        },
        Corpus {
            field: "rancher.labels (keys)",
            place: Place::Key("rancher.labels", "v"),
            schema: "/definitions/RancherSettings/properties/labels/propertyNames",
            good: vec![
                "rack".into(),
                "Rack_1.x".into(),
                "example.com/rack".into(),
                "a".repeat(63),
            ],
            bad: vec![
                String::new(),
                "-rack".into(),
                "rack-".into(),
                "Example.com/rack".into(),
                format!("{}.com/rack", "a".repeat(64)),
                "/rack".into(),
                "a/b/c".into(),
                "rack!".into(),
                "a".repeat(64),
            ],
            schema_looser: vec![(
                format!("{}/rack", ["a"; 128].join(".")),
                "a prefix of more than 253 characters (each label is within 63)",
            )],
        },
        Corpus {
            field: "rancher.labels (values)",
            place: Place::MapValue("rancher.labels", "rack"),
            schema: "/definitions/RancherSettings/properties/labels/additionalProperties",
            good: vec![String::new(), "r1".into(), "a.b_c-d".into(), "a".repeat(63)],
            bad: vec!["-r".into(), "r-".into(), "a b".into(), "a".repeat(64)],
            schema_looser: vec![],
        },
        Corpus {
            field: "rancher.taints",
            place: Place::Item("rancher.taints"),
            schema: "/definitions/Taint",
            good: strings(&[
                "dedicated=etcd:NoSchedule",
                "key:NoExecute",
                "example.com/k=v:PreferNoSchedule",
                "k=:NoSchedule",
            ]),
            bad: strings(&[
                "k=v",
                "k=v:Nope",
                "=v:NoSchedule",
                "k=-v:NoSchedule",
                "k:v:NoSchedule",
                "k=v=w:NoSchedule",
                "k=v:noschedule",
            ]),
            schema_looser: vec![],
        },
        sha256_corpus(
            "rancher.system_agent.binary.sha256",
            Place::With("rancher.system_agent.binary", binary_sha256),
            "/definitions/AgentBinary/properties/sha256",
        ),
        http_urls(
            "rancher.system_agent.binary.url",
            Place::With("rancher.system_agent.binary", binary_url),
            "/definitions/AgentBinary/properties/url",
        ),
        paths(
            "rancher.system_agent.binary.path",
            Place::With("rancher.system_agent.binary", binary_path),
            "/definitions/AgentBinary/properties/path",
        ),
        Corpus {
            field: "runtime.version",
            place: Place::Value("runtime.version"),
            schema: "/definitions/RuntimeSettings/properties/version",
            good: strings(&["20.10", ">=20.10", "=24.0.7", ">=20.10, <25", "v24", "< 25"]),
            bad: strings(&[
                "=5:24.0.7-1~debian.12~bookworm",
                "24.0.7-1",
                "latest",
                ">=",
                "",
                "20..10",
                "1e5",
                "20.10 24",
            ]),
            schema_looser: vec![],
        },
        http_urls(
            "runtime.registry_mirrors",
            Place::Item("runtime.registry_mirrors"),
            "/definitions/RuntimeSettings/properties/registry_mirrors/items",
        ),
        Corpus {
            field: "runtime.source.repo.url",
            place: Place::With("runtime.source.repo", |v| repo_with("url", v)),
            schema: "/definitions/RepoSource/properties/url",
            good: strings(&[
                "http://repo.example.com/debian",
                "https://repo.example.com",
                "file:///srv/repo",
                "file://host/srv/repo",
                "FILE:///srv/repo",
                "HTTP://repo.example.com/debian",
            ]),
            bad: strings(&[
                "ftp://repo.example.com",
                "/srv/repo",
                "https://",
                "https://u:p@repo.example.com/debian",
                "https://repo.example.com/a b",
                "file:///srv/repo\n[evil]",
                "file://u@host/srv/repo",
            ]),
            schema_looser: url_looser(),
        },
        Corpus {
            field: "runtime.source.repo.key",
            place: Place::With("runtime.source.repo", |v| repo_with("key", v)),
            schema: "/definitions/RepoSource/properties/key",
            good: strings(&[
                "https://repo.example.com/gpg",
                "/etc/keys/docker.gpg",
                "file:///etc/keys/docker.gpg",
                "HTTPS://repo.example.com/gpg",
            ]),
            bad: strings(&[
                "http://repo.example.com/gpg",
                "HTTP://repo.example.com/gpg",
                "keys/docker.gpg",
                "ftp://repo.example.com/gpg",
                "https://u:p@repo.example.com/gpg",
                "file://u@host/gpg",
                "/etc/keys/\u{1}.gpg",
                "/etc/keys/../docker.gpg",
                "/etc/keys/a b.gpg",
                "https://",
            ]),
            schema_looser: url_looser(),
        },
        Corpus {
            field: "runtime.source.repo.suite",
            place: Place::With("runtime.source.repo", |v| repo_with("suite", v)),
            schema: "/definitions/RepoSource/properties/suite",
            good: strings(&["stable", "bookworm-backports", "./", "a_b.c"]),
            bad: strings(&["", "a b", "a\nb", "[x]", "a:b"]),
            schema_looser: vec![],
        },
        Corpus {
            field: "runtime.source.repo.components",
            place: Place::With("runtime.source.repo", |v| repo_with("components", v)),
            schema: "/definitions/RepoSource/properties/components/items",
            good: strings(&["stable", "main", "non-free/x"]),
            bad: strings(&["", "a b", "a\nb", "$x"]),
            schema_looser: vec![],
        },
        paths(
            "runtime.source.offline.path",
            Place::Value("runtime.source.offline.path"),
            "/definitions/OfflineSource/properties/path",
        ),
        Corpus {
            field: "host.modules",
            place: Place::Item("host.modules"),
            schema: "/definitions/HostSettings/properties/modules/items",
            good: vec![
                "vxlan".into(),
                "nf_conntrack".into(),
                "ip-vs".into(),
                "a".repeat(55),
            ],
            bad: vec![
                String::new(),
                "Vxlan".into(),
                "a.b".into(),
                "a b".into(),
                "a".repeat(56),
            ],
            schema_looser: vec![],
        },
        Corpus {
            field: "host.sysctls (keys)",
            place: Place::Key("host.sysctls", "1"),
            schema: "/definitions/HostSettings/properties/sysctls/propertyNames",
            good: strings(&["vm.max_map_count", "net.ipv4.conf.eth-0.rp_filter", "A.b"]),
            bad: strings(&[
                "vm",
                "",
                ".vm",
                "vm.",
                "vm..x",
                "net/ipv4/ip_forward",
                "vm.a b",
            ]),
            schema_looser: vec![],
        },
        Corpus {
            field: "host.sysctls (values)",
            place: Place::MapValue("host.sysctls", "vm.max_map_count"),
            schema: "/definitions/HostSettings/properties/sysctls/additionalProperties",
            good: strings(&["262144", "4096\t87380\t6291456", "a b", "x"]),
            bad: strings(&["", "1\n2", "1\r", "a\u{1}"]),
            schema_looser: vec![],
        },
    ]
}

/// `proxy`: the URLs (credentials allowed, no path, query or fragment) and the no_proxy
/// entries.
fn proxy_corpus() -> Vec<Corpus> {
    let urls = |field, place, schema| Corpus {
        field,
        place,
        schema,
        good: strings(&[
            "http://10.0.2.2:3128",
            "http://user:pass@10.0.2.2:3128/",
            "https://proxy.example.com",
            "HTTP://proxy.example.com:8080",
            "http://u:p@ss@proxy.example.com",
            "http://[fd00::1]:3128",
            "http://user@proxy.example.com",
        ]),
        bad: strings(&[
            "socks5://proxy.example.com:1080",
            "proxy.example.com:3128",
            "http://proxy.example.com/path",
            "http://proxy.example.com/?a=b",
            "http://proxy.example.com/#f",
            "http://proxy.example.com:3128 ",
            " http://proxy.example.com",
            "http://u:p w@proxy.example.com",
            "http://",
            "",
        ]),
        schema_looser: vec![
            (
                "http://proxy.example.com:99999".into(),
                "the port's range (Url::parse)",
            ),
            ("http://:3128".into(), "an empty host before the port"),
        ],
    };
    vec![
        urls(
            "proxy.http",
            Place::Value("proxy.http"),
            "/definitions/ProxySettings/properties/http",
        ),
        urls(
            "proxy.https",
            Place::Value("proxy.https"),
            "/definitions/ProxySettings/properties/https",
        ),
        Corpus {
            field: "proxy.no_proxy",
            place: Place::Item("proxy.no_proxy"),
            schema: "/definitions/ProxySettings/properties/no_proxy/items",
            good: strings(&[
                "localhost",
                "*",
                ".svc.cluster.local",
                "127.0.0.1",
                "10.42.0.0/16",
                "fd00:ec2::254",
                "fd00::/8",
                "::1",
            ]),
            bad: strings(&[
                "",
                "a b",
                "http://proxy.example.com",
                "host.example.com:8080",
                "[fd00::1]",
                "a..b",
                "*.example.com",
            ]),
            schema_looser: vec![
                ("10.0.0.0/33".into(), "an IPv4 prefix over 32"),
                ("-bad.example.com".into(), "a label starting with `-`"),
                ("fd00::/129".into(), "an IPv6 prefix over 128"),
            ],
        },
    ]
}

/// The schema's patterns and the validator's checks state one rule twice (schema.rs and
/// validate.rs): one corpus per field, run through both, must get the same verdict. Where a
/// regular expression cannot say the rule, the corpus names the value and why, so the schema
/// is known to be looser there and nowhere else.
#[test]
fn schema_patterns_agree_with_the_validator() {
    let s = schema();
    let mut disagreements = Vec::new();
    for c in corpus()
        .into_iter()
        .chain(identity_corpus())
        .chain(trusted_ca_corpus())
        .chain(proxy_corpus())
        .chain(registries_corpus())
    {
        assert!(!c.good.is_empty() && !c.bad.is_empty(), "{}", c.field);
        let verdicts = c
            .good
            .iter()
            .map(|v| (v, true, true))
            .chain(c.bad.iter().map(|v| (v, false, false)))
            .chain(c.schema_looser.iter().map(|(v, _)| (v, true, false)));
        for (value, schema_want, validator_want) in verdicts {
            let schema_says = schema_accepts(&s, c.schema, value);
            let problems = messages(&c.place.doc(value));
            let validator_says = problems.is_empty();
            if schema_says != schema_want || validator_says != validator_want {
                disagreements.push(format!(
                    "{}: {value:?}: schema {}, validator {} {problems:?}",
                    c.field,
                    if schema_says { "accepts" } else { "refuses" },
                    if validator_says { "accepts" } else { "refuses" },
                ));
            }
        }
    }
    assert!(
        disagreements.is_empty(),
        "schema and validator disagree:\n{}",
        disagreements.join("\n")
    );
}
