//! Maps the spanned tree to [`Settings`], collecting every problem instead of stopping at the
//! first, so one round of edits fixes a document.
//!
//! The value checks here and the patterns in `schema.rs` describe the same rules; the tests
//! of both keep them in step.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::Problem;
use super::ca;
use super::identity;
use super::settings::*;
use super::tree::{Mark, Node, Style, Value, join_key, shown};
use crate::secret::Secret;
use crate::system::packages::VersionConstraint;

mod proxy;
mod registries;

use registries::{AUTH_KEYS, CONFIG_KEYS, MIRROR_KEYS, REGISTRIES_KEYS};

pub const ROOT_KEYS: &[&str] = &[
    "roles",
    "rancher",
    "runtime",
    "host",
    "hostname",
    "ssh",
    "trusted_ca",
    "proxy",
    "registries",
];
pub const PROXY_KEYS: &[&str] = &["http", "https", "no_proxy"];
pub const HOSTNAME_KEYS: &[&str] = &["template"];
pub const SSH_KEYS: &[&str] = &["user", "authorized_keys"];
pub const RANCHER_KEYS: &[&str] = &[
    "server",
    "token",
    "ca_checksum",
    "mode",
    "agent_image",
    "node_name",
    "address",
    "internal_address",
    "labels",
    "taints",
    "deadline_seconds",
    "splay_seconds",
    "strict_verify",
    "system_agent",
    "system_default_registry",
];
pub const SYSTEM_AGENT_KEYS: &[&str] = &["binary", "machine_id"];
pub const MACHINE_ID_KEYS: &[&str] = &["value"];
/// `rancher.system_agent.binary` and `runtime.source.sysext`: a checked file.
pub const CHECKED_FILE_KEYS: &[&str] = &["url", "path", "sha256"];
pub const RUNTIME_KEYS: &[&str] = &["engine", "version", "source", "registry_mirrors"];
pub const SOURCE_KEYS: &[&str] = &["repo", "offline", "sysext"];
pub const REPO_KEYS: &[&str] = &["url", "key", "suite", "components", "trusted"];
pub const OFFLINE_KEYS: &[&str] = &["path"];
pub const HOST_KEYS: &[&str] = &[
    "firewalld",
    "selinux",
    "iptables_backend",
    "modules",
    "sysctls",
    "swap",
];

/// Upper bound of `rancher.deadline_seconds` (a week): far beyond any real registration, and
/// small enough that `Instant::now() + deadline` cannot overflow.
pub const MAX_DEADLINE_SECONDS: u64 = 7 * 24 * 3600;

/// Known keys of every section, for "did you mean `rancher.server`?" when a key is misplaced.
const SECTIONS: &[(&str, &[&str])] = &[
    ("", ROOT_KEYS),
    ("rancher", RANCHER_KEYS),
    ("rancher.system_agent", SYSTEM_AGENT_KEYS),
    ("rancher.system_agent.binary", CHECKED_FILE_KEYS),
    ("rancher.system_agent.machine_id", MACHINE_ID_KEYS),
    ("runtime", RUNTIME_KEYS),
    ("runtime.source.repo", REPO_KEYS),
    ("runtime.source.offline", OFFLINE_KEYS),
    ("runtime.source.sysext", CHECKED_FILE_KEYS),
    ("host", HOST_KEYS),
    ("hostname", HOSTNAME_KEYS),
    ("ssh", SSH_KEYS),
    ("proxy", PROXY_KEYS),
    ("registries", REGISTRIES_KEYS),
    ("registries.mirrors[HOST]", MIRROR_KEYS),
    ("registries.configs[HOST]", CONFIG_KEYS),
    ("registries.configs[HOST].auth", AUTH_KEYS),
];

/// What a plain scalar means in the YAML 1.2 core schema, when it is not a string.
fn plain_kind(text: &str) -> Option<&'static str> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Some("null"),
        "true" | "True" | "TRUE" | "false" | "False" | "FALSE" => return Some("a boolean"),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" | "-.inf" | "-.Inf" | "-.INF"
        | ".nan" | ".NaN" | ".NAN" => return Some("a number"),
        _ => {}
    }
    let digits = |s: &str, radix: u32| !s.is_empty() && s.chars().all(|c| c.is_digit(radix));
    if let Some(rest) = text.strip_prefix("0x") {
        return digits(rest, 16).then_some("a number");
    }
    if let Some(rest) = text.strip_prefix("0o") {
        return digits(rest, 8).then_some("a number");
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
        None => (unsigned, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        None => digits(mantissa, 10),
        Some((a, b)) => {
            (a.is_empty() || digits(a, 10))
                && (b.is_empty() || digits(b, 10))
                && !(a.is_empty() && b.is_empty())
        }
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['-', '+']).unwrap_or(e), 10));
    (mantissa_ok && exponent_ok).then_some("a number")
}

/// Optimal string alignment distance: edits plus adjacent transpositions (`tokne` -> `token`).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// Most edits a suggestion may be away from the word (fewer for short words).
const MAX_TYPO_EDITS: usize = 2;

/// The known word closest to `word`, if it is close enough to be a plausible typo.
///
/// The distance costs the product of the lengths, so it is computed only for known words
/// within [`MAX_TYPO_EDITS`] of the word's length: a distance can never be smaller than the
/// difference in length, and a 900 KB key then costs one pass to count its characters.
pub fn closest<'k>(word: &str, known: &[&'k str]) -> Option<&'k str> {
    let longest = known.iter().map(|k| k.chars().count()).max().unwrap_or(0);
    // Stops counting past the longest candidate: the exact length is not needed beyond it.
    let len = word.chars().take(longest + MAX_TYPO_EDITS + 1).count();
    let norm = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    let w = norm(word);
    known
        .iter()
        .filter(|k| k.chars().count().abs_diff(len) <= MAX_TYPO_EDITS)
        .map(|k| (distance(&w, &norm(k)), *k))
        .filter(|(d, k)| *d <= if k.len() <= 4 { 1 } else { MAX_TYPO_EDITS })
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn quote_list(words: &[&str]) -> String {
    words
        .iter()
        .map(|w| format!("`{w}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Short, safe description of a node for messages. `echo` is false for secrets.
fn describe(node: &Node, echo: bool) -> String {
    match &node.value {
        Value::Seq(_) => "a list".into(),
        Value::Map(_) => "a mapping".into(),
        Value::Scalar { text, style } => {
            let kind = match style {
                Style::Plain if node.tag.is_none() => plain_kind(text).unwrap_or("a string"),
                _ => "a string",
            };
            if kind == "null" {
                return "nothing (null)".into();
            }
            if !echo {
                return kind.into();
            }
            let shown: String = text.chars().take(40).collect();
            let more = if text.chars().count() > 40 { "..." } else { "" };
            format!("{kind} `{}{more}`", shown.escape_debug())
        }
    }
}

/// The entries of one mapping, checked against its known keys.
struct Fields<'a> {
    entries: Vec<(&'a str, &'a Node, &'a Node)>,
    /// Where "missing key" problems point: the key that introduced the mapping.
    at: Mark,
    path: String,
    /// Known keys an unknown key was taken for a typo of; their absence is not reported again.
    suggested: Vec<String>,
}

impl<'a> Fields<'a> {
    /// A present, non-null value and its key's position.
    fn get(&self, key: &str) -> Option<&'a Node> {
        self.entries
            .iter()
            .find(|(k, _, v)| *k == key && !v.is_null())
            .map(|(_, _, v)| *v)
    }

    fn path(&self, key: &str) -> String {
        join_key(&self.path, key)
    }
}

pub struct Validator {
    pub problems: Vec<Problem>,
    /// Prefix of every path: `bootstrapd` inside a cloud-config, empty for a plain document.
    prefix: String,
}

impl Validator {
    pub fn new(prefix: &str) -> Self {
        Validator {
            problems: Vec::new(),
            prefix: prefix.to_string(),
        }
    }

    /// The path with the document's prefix; `path` is already built (and shortened).
    fn full(&self, path: &str) -> String {
        match (self.prefix.is_empty(), path.is_empty()) {
            (true, _) => path.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}.{path}", self.prefix),
        }
    }

    fn report(&mut self, mark: Mark, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            line: mark.line,
            column: mark.column,
            path: self.full(path),
            message: message.into(),
        });
    }

    /// Checks that `node` is a mapping of known keys. A null node is an empty mapping (a section
    /// whose keys are all commented out).
    fn fields<'a>(
        &mut self,
        node: &'a Node,
        at: Mark,
        path: &str,
        known: &[&str],
    ) -> Option<Fields<'a>> {
        let mut fields = Fields {
            entries: Vec::new(),
            at,
            path: path.to_string(),
            suggested: Vec::new(),
        };
        if node.is_null() {
            return Some(fields);
        }
        let Value::Map(entries) = &node.value else {
            self.report(
                node.mark,
                path,
                format!("expected a mapping, found {}", describe(node, true)),
            );
            return None;
        };
        self.no_tag(node, path);
        for (k, v) in entries {
            let Some(name) = k.scalar_text() else {
                self.report(
                    k.mark,
                    path,
                    "keys must be plain words, not lists or mappings",
                );
                continue;
            };
            if known.contains(&name) {
                fields.entries.push((name, k, v));
                continue;
            }
            // The key is echoed shortened: a 900 KB key must not come back twice per problem.
            let shown_name = shown(name);
            let message = if name == "<<" {
                "YAML merge keys (`<<`) are not supported; write the keys out".to_string()
            } else if let Some(near) = closest(name, known) {
                fields.suggested.push(near.to_string());
                format!("unknown key `{shown_name}`; did you mean `{near}`?")
            } else if let Some(elsewhere) = SECTIONS
                .iter()
                .find(|(section, keys)| *section != path && keys.contains(&name))
            {
                format!(
                    "unknown key `{shown_name}`; did you mean `{}`?",
                    self.full(&join_key(elsewhere.0, name))
                )
            } else if name == "bootstrapd" && path.is_empty() && self.prefix.is_empty() {
                "unknown key `bootstrapd`; a document with a `bootstrapd:` key must start with \
                 a `#cloud-config` line"
                    .to_string()
            } else {
                format!(
                    "unknown key `{shown_name}`; expected one of {}",
                    quote_list(known)
                )
            };
            self.report(k.mark, &join_key(path, name), message);
        }
        Some(fields)
    }

    fn required<'a>(&mut self, f: &Fields<'a>, key: &str) -> Option<&'a Node> {
        let v = f.get(key);
        if v.is_none() {
            match f.entries.iter().find(|(k, _, _)| *k == key) {
                Some((_, k, _)) => self.report(k.mark, &f.path(key), "a value is required"),
                None if f.suggested.iter().any(|s| s == key) => {}
                None => self.report(f.at, &f.path(key), format!("missing required key `{key}`")),
            }
        }
        v
    }

    /// Tags other than `!!str` (a string, whatever it looks like) are refused: they would make
    /// the meaning depend on a YAML feature the rest of the toolchain may not share.
    fn no_tag(&mut self, node: &Node, path: &str) -> bool {
        match &node.tag {
            None => true,
            Some(t) if t == "!!str" && matches!(node.value, Value::Scalar { .. }) => true,
            Some(t) => {
                self.report(node.mark, path, format!("unsupported YAML tag `{t}`"));
                false
            }
        }
    }

    /// A string value. Plain scalars that YAML reads as numbers, booleans or null are refused
    /// (quote them), except where `numbers_ok` says the text is wanted as written (`20.10`).
    fn text(&mut self, node: &Node, path: &str, echo: bool, numbers_ok: bool) -> Option<String> {
        if !self.no_tag(node, path) {
            return None;
        }
        let Value::Scalar { text, style } = &node.value else {
            self.report(
                node.mark,
                path,
                format!("expected a string, found {}", describe(node, echo)),
            );
            return None;
        };
        if *style == Style::Plain
            && node.tag.is_none()
            && let Some(kind) = plain_kind(text)
            && !(numbers_ok && kind == "a number")
        {
            let hint = if echo && kind != "null" {
                format!("; quote it (\"{}\") if you mean the text", shown(text))
            } else {
                String::new()
            };
            self.report(
                node.mark,
                path,
                format!("expected a string, found {}{hint}", describe(node, echo)),
            );
            return None;
        }
        Some(text.clone())
    }

    /// A string that must also pass `check` (which explains what is wrong).
    fn checked(
        &mut self,
        node: &Node,
        path: &str,
        check: impl Fn(&str) -> Result<(), String>,
    ) -> Option<String> {
        let text = self.text(node, path, true, false)?;
        match check(&text) {
            Ok(()) => Some(text),
            Err(why) => {
                self.report(node.mark, path, why);
                None
            }
        }
    }

    fn boolean(&mut self, node: &Node, path: &str) -> Option<bool> {
        if !self.no_tag(node, path) {
            return None;
        }
        if let Value::Scalar {
            text,
            style: Style::Plain,
        } = &node.value
        {
            match text.as_str() {
                "true" | "True" | "TRUE" => return Some(true),
                "false" | "False" | "FALSE" => return Some(false),
                "yes" | "Yes" | "YES" | "no" | "No" | "NO" | "on" | "On" | "ON" | "off" | "Off"
                | "OFF" | "y" | "Y" | "n" | "N" => {
                    self.report(
                        node.mark,
                        path,
                        format!("`{text}` is not a boolean in YAML 1.2; write `true` or `false`"),
                    );
                    return None;
                }
                _ => {}
            }
        }
        self.report(
            node.mark,
            path,
            format!("expected `true` or `false`, found {}", describe(node, true)),
        );
        None
    }

    fn integer(&mut self, node: &Node, path: &str, min: u64, max: u64) -> Option<u64> {
        if !self.no_tag(node, path) {
            return None;
        }
        if let Value::Scalar {
            text,
            style: Style::Plain,
        } = &node.value
            && !text.is_empty()
            && text.bytes().all(|b| b.is_ascii_digit())
        {
            return match text.parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => Some(n),
                _ => {
                    self.report(
                        node.mark,
                        path,
                        format!("must be between {min} and {max}, found {}", shown(text)),
                    );
                    None
                }
            };
        }
        self.report(
            node.mark,
            path,
            format!("expected a whole number, found {}", describe(node, true)),
        );
        None
    }

    fn choice<T: Copy>(&mut self, node: &Node, path: &str, options: &[(&str, T)]) -> Option<T> {
        let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
        if let Value::Scalar { text, .. } = &node.value
            && node.tag.as_deref().is_none_or(|t| t == "!!str")
        {
            if let Some((_, v)) = options.iter().find(|(n, _)| *n == text) {
                return Some(*v);
            }
            let hint = closest(text, &names)
                .map(|n| format!(" (did you mean `{n}`?)"))
                .unwrap_or_default();
            self.report(
                node.mark,
                path,
                format!(
                    "unknown value `{}`; expected one of {}{hint}",
                    shown(text),
                    quote_list(&names)
                ),
            );
            return None;
        }
        self.report(
            node.mark,
            path,
            format!(
                "expected one of {}, found {}",
                quote_list(&names),
                describe(node, true)
            ),
        );
        None
    }

    fn list<'a>(&mut self, node: &'a Node, path: &str) -> Option<&'a [Node]> {
        if node.is_null() {
            return Some(&[]);
        }
        match &node.value {
            Value::Seq(items) if self.no_tag(node, path) => Some(items),
            Value::Seq(_) => None,
            _ => {
                self.report(
                    node.mark,
                    path,
                    format!("expected a list, found {}", describe(node, true)),
                );
                None
            }
        }
    }

    /// A list of strings, each checked; duplicates are refused (they are always a mistake).
    fn string_list(
        &mut self,
        node: &Node,
        path: &str,
        check: impl Fn(&str) -> Result<(), String>,
    ) -> Option<Vec<String>> {
        let items = self.list(node, path)?;
        let mut out: Vec<(String, Mark)> = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let p = format!("{path}[{i}]");
            match self.checked(item, &p, &check) {
                Some(s) => {
                    if let Some((_, first)) = out.iter().find(|(o, _)| *o == s) {
                        let first = *first;
                        self.report(
                            item.mark,
                            &p,
                            format!(
                                "duplicate `{}` (first at {}:{})",
                                shown(&s),
                                first.line,
                                first.column
                            ),
                        );
                        ok = false;
                    } else {
                        out.push((s, item.mark));
                    }
                }
                None => ok = false,
            }
        }
        ok.then(|| out.into_iter().map(|(s, _)| s).collect())
    }

    /// A mapping of string keys to scalar values, both checked.
    fn string_map(
        &mut self,
        node: &Node,
        path: &str,
        numbers_ok: bool,
        check_key: impl Fn(&str) -> Result<(), String>,
        check_value: impl Fn(&str) -> Result<(), String>,
    ) -> Option<BTreeMap<String, String>> {
        if node.is_null() {
            return Some(BTreeMap::new());
        }
        let Value::Map(entries) = &node.value else {
            self.report(
                node.mark,
                path,
                format!("expected a mapping, found {}", describe(node, true)),
            );
            return None;
        };
        if !self.no_tag(node, path) {
            return None;
        }
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (k, v) in entries {
            let Some(key) = self.text(k, path, true, true) else {
                ok = false;
                continue;
            };
            let p = format!("{path}[{}]", shown(&key));
            if let Err(why) = check_key(&key) {
                self.report(k.mark, &p, why);
                ok = false;
            }
            match self.text(v, &p, true, numbers_ok) {
                Some(value) => match check_value(&value) {
                    Ok(()) => {
                        out.insert(key, value);
                    }
                    Err(why) => {
                        self.report(v.mark, &p, why);
                        ok = false;
                    }
                },
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// Validates a whole document. `root` is the settings mapping (None for an empty
    /// document); `at` is where "missing key" problems at the top point.
    pub fn settings(&mut self, root: Option<&Node>, at: Mark) -> Option<Settings> {
        let empty = Node {
            mark: at,
            tag: None,
            value: Value::Scalar {
                text: String::new(),
                style: Style::Plain,
            },
        };
        let root = root.unwrap_or(&empty);
        let f = self.fields(root, at, "", ROOT_KEYS)?;

        let roles = self.required(&f, "roles").and_then(|n| self.roles(n));
        let rancher = self
            .required(&f, "rancher")
            .and_then(|n| self.rancher(n, key_mark(&f, "rancher")));
        let runtime = match f.get("runtime") {
            None => Some(RuntimeSettings::default()),
            Some(n) => self.runtime(n, key_mark(&f, "runtime")),
        };
        let host = match f.get("host") {
            None => Some(HostSettings::default()),
            Some(n) => self.host(n, key_mark(&f, "host")),
        };
        let hostname = f
            .get("hostname")
            .map(|n| self.hostname(n, key_mark(&f, "hostname")));
        let ssh = f.get("ssh").map(|n| self.ssh(n, key_mark(&f, "ssh")));
        let trusted_ca = f.get("trusted_ca").map(|n| self.trusted_ca(n));
        let proxy = match f.get("proxy") {
            None => Some(ProxySettings::default()),
            Some(n) => self.proxy(n, key_mark(&f, "proxy")),
        };
        let registries = match f.get("registries") {
            None => Some(RegistrySettings::default()),
            Some(n) => self.registries(n, key_mark(&f, "registries")),
        };
        if !self.problems.is_empty() {
            return None;
        }
        Some(Settings {
            roles: roles?,
            rancher: rancher?,
            runtime: runtime?,
            host: host?,
            hostname: transpose(hostname)?,
            ssh: transpose(ssh)?,
            trusted_ca: trusted_ca.unwrap_or(Some(Vec::new()))?,
            proxy: proxy?,
            registries: registries?,
        })
    }

    /// A list of PEM bundles, each of CA certificates only; a certificate given twice is
    /// refused (its files would clash). Problems point at the block's own line when the
    /// bundle is a literal block scalar, where lines of the text are lines of the document.
    fn trusted_ca(&mut self, node: &Node) -> Option<Vec<TrustedCa>> {
        let items = self.list(node, "trusted_ca")?;
        let mut out = Vec::new();
        let mut seen: Vec<(Vec<u8>, String)> = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let p = format!("trusted_ca[{i}]");
            let Some(text) = self.text(item, &p, false, false) else {
                ok = false;
                continue;
            };
            let certs = match ca::parse_bundle(&text) {
                Ok(certs) => certs,
                Err(e) => {
                    self.report(pem_mark(item, e.line), &p, e.message);
                    ok = false;
                    continue;
                }
            };
            for (j, c) in certs.iter().enumerate() {
                let here = format!("{p} certificate {}", j + 1);
                match seen.iter().find(|(d, _)| d.as_slice() == c.der.as_ref()) {
                    Some((_, first)) => {
                        let msg = format!("the same certificate as {first}");
                        self.report(pem_mark(item, c.line), &p, msg);
                        ok = false;
                    }
                    None => seen.push((c.der.to_vec(), here)),
                }
            }
            let count = certs.len();
            out.push(TrustedCa { pem: text, count });
        }
        ok.then_some(out)
    }

    /// `metadata`, or `{template: TEXT}` whose placeholders are known.
    fn hostname(&mut self, node: &Node, at: Mark) -> Option<HostnameSetting> {
        if let Value::Scalar { text, .. } = &node.value {
            if text == "metadata" && self.no_tag(node, "hostname") {
                return Some(HostnameSetting::Metadata);
            }
            self.report(
                node.mark,
                "hostname",
                format!(
                    "expected `metadata` or a mapping `{{template: \"node-{{mac}}\"}}`, found {}",
                    describe(node, true)
                ),
            );
            return None;
        }
        let f = self.fields(node, at, "hostname", HOSTNAME_KEYS)?;
        let template = self.required(&f, "template").and_then(|n| {
            self.checked(n, &f.path("template"), |s| {
                identity::parse_template(s).map(|_| ())
            })
        })?;
        Some(HostnameSetting::Template(template))
    }

    /// `{user, authorized_keys}`: at least one key, each an OpenSSH public key line.
    fn ssh(&mut self, node: &Node, at: Mark) -> Option<SshSettings> {
        let f = self.fields(node, at, "ssh", SSH_KEYS)?;
        let user = f
            .get("user")
            .map(|n| self.checked(n, &f.path("user"), identity::check_user_name));
        let keys = self.required(&f, "authorized_keys").and_then(|n| {
            let path = f.path("authorized_keys");
            let keys = self.string_list(n, &path, |s| identity::parse_public_key(s).map(|_| ()))?;
            if keys.is_empty() {
                self.report(n.mark, &path, "at least one key is required");
                return None;
            }
            Some(keys)
        });
        Some(SshSettings {
            user: user.unwrap_or_else(|| Some(default_ssh_user()))?,
            authorized_keys: keys?,
        })
    }

    fn roles(&mut self, node: &Node) -> Option<Vec<Role>> {
        let items = self.list(node, "roles")?;
        if items.is_empty() {
            self.report(
                node.mark,
                "roles",
                "at least one role is required: `etcd`, `controlplane` or `worker`",
            );
            return None;
        }
        let options: Vec<(&str, Role)> = Role::ALL.iter().map(|r| (r.as_str(), *r)).collect();
        let mut roles: Vec<(Role, Mark)> = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            let p = format!("roles[{i}]");
            match self.choice(item, &p, &options) {
                Some(r) => {
                    if let Some((_, first)) = roles.iter().find(|(o, _)| *o == r) {
                        let first = *first;
                        self.report(
                            item.mark,
                            &p,
                            format!(
                                "duplicate role `{}` (first at {}:{})",
                                r.as_str(),
                                first.line,
                                first.column
                            ),
                        );
                        ok = false;
                    } else {
                        roles.push((r, item.mark));
                    }
                }
                None => ok = false,
            }
        }
        ok.then(|| roles.into_iter().map(|(r, _)| r).collect())
    }

    fn rancher(&mut self, node: &Node, at: Mark) -> Option<RancherSettings> {
        let f = self.fields(node, at, "rancher", RANCHER_KEYS)?;
        let server = self
            .required(&f, "server")
            .and_then(|n| self.checked(n, &f.path("server"), check_server))
            .map(|s| s.trim_end_matches('/').to_string());
        let token = self
            .required(&f, "token")
            .and_then(|n| self.token(n, &f.path("token")));
        let ca_checksum = f
            .get("ca_checksum")
            .map(|n| self.hex_digest(n, &f.path("ca_checksum"), check_checksum));
        let mode = f
            .get("mode")
            .map(|n| self.registration_mode(n, &f.path("mode")));
        let agent_image = f
            .get("agent_image")
            .map(|n| self.agent_image(n, &f.path("agent_image"), mode));
        let strict_verify = f
            .get("strict_verify")
            .map(|n| self.boolean(n, &f.path("strict_verify")));
        let node_name = f
            .get("node_name")
            .map(|n| self.checked(n, &f.path("node_name"), check_node_name));
        let address = f
            .get("address")
            .map(|n| self.checked(n, &f.path("address"), check_address));
        let internal_address = f
            .get("internal_address")
            .map(|n| self.checked(n, &f.path("internal_address"), check_address));
        let labels = f.get("labels").map(|n| {
            self.string_map(
                n,
                &f.path("labels"),
                false,
                check_qualified_name,
                check_label_value,
            )
        });
        let taints = f.get("taints").map(|n| self.taints(n, &f.path("taints")));
        let deadline = f
            .get("deadline_seconds")
            .map(|n| self.integer(n, &f.path("deadline_seconds"), 1, MAX_DEADLINE_SECONDS));
        let splay = f
            .get("splay_seconds")
            .map(|n| self.integer(n, &f.path("splay_seconds"), 0, MAX_SPLAY_SECONDS));
        let system_agent = f
            .get("system_agent")
            .map(|n| self.system_agent(n, key_mark(&f, "system_agent"), mode));
        let default_registry = self.system_default_registry(&f, mode, &agent_image);
        if let (Some(t), Some(Some(sa))) = (&token, &system_agent)
            && sa.machine_id == MachineId::Value(t.expose().to_string())
        {
            // The id is sent in a header, shown by `plan` and kept in Rancher's labels.
            self.report(
                key_mark(&f, "system_agent"),
                "rancher.system_agent.machine_id.value",
                "must not be the registration token",
            );
            return None;
        }
        Some(RancherSettings {
            server: server?,
            token: token?,
            ca_checksum: transpose(ca_checksum)?,
            mode: mode.unwrap_or(Some(RegistrationMode::default()))?,
            agent_image: agent_image.unwrap_or_else(|| Some(default_agent_image(mode)))?,
            strict_verify: transpose(strict_verify)?,
            node_name: transpose(node_name)?,
            address: transpose(address)?,
            internal_address: transpose(internal_address)?,
            labels: labels.unwrap_or(Some(BTreeMap::new()))?,
            taints: taints.unwrap_or(Some(Vec::new()))?,
            deadline_seconds: deadline.unwrap_or(Some(DEFAULT_DEADLINE_SECONDS))?,
            splay_seconds: splay.unwrap_or(Some(DEFAULT_SPLAY_SECONDS))?,
            system_agent: system_agent.unwrap_or(Some(SystemAgentSettings::default()))?,
            system_default_registry: default_registry?,
        })
    }

    /// A sha256 written as hex (`check` says whose). One of only digits reads as a number in
    /// YAML; it is still hex.
    fn hex_digest(
        &mut self,
        node: &Node,
        path: &str,
        check: fn(&str) -> Result<(), String>,
    ) -> Option<String> {
        let text = self.text(node, path, true, true)?;
        match check(&text) {
            Ok(()) => Some(text.to_ascii_lowercase()),
            Err(why) => {
                self.report(node.mark, path, why);
                None
            }
        }
    }

    fn registration_mode(&mut self, node: &Node, path: &str) -> Option<RegistrationMode> {
        self.choice(
            node,
            path,
            &[
                ("rke1", RegistrationMode::Rke1),
                ("system-agent", RegistrationMode::SystemAgent),
            ],
        )
    }

    /// `mode` is as validated: absent (`None`), invalid (`Some(None)`) or given.
    fn agent_image(
        &mut self,
        node: &Node,
        path: &str,
        mode: Option<Option<RegistrationMode>>,
    ) -> Option<String> {
        // The image is the RKE1 agent container's; the system agent is a binary from the
        // server's /assets. Setting it in system-agent mode means the mode is not the one
        // the author thinks, so it is an error rather than silently ignored.
        if matches!(mode, None | Some(Some(RegistrationMode::SystemAgent))) {
            self.report(
                node.mark,
                path,
                "applies only to mode rke1 (the system agent is downloaded from the server); \
                 remove it, or set rancher.mode: rke1 for Rancher <= 2.11",
            );
            return None;
        }
        self.checked(node, path, check_image)
    }

    /// `mode` is as validated (see [`Self::agent_image`]).
    fn system_agent(
        &mut self,
        node: &Node,
        at: Mark,
        mode: Option<Option<RegistrationMode>>,
    ) -> Option<SystemAgentSettings> {
        let f = self.fields(node, at, "rancher.system_agent", SYSTEM_AGENT_KEYS)?;
        let binary = f
            .get("binary")
            .map(|n| self.agent_binary(n, key_mark(&f, "binary")));
        let machine_id = f.get("machine_id").map(|n| {
            let path = f.path("machine_id");
            // rke1 names its node after the hostname (m- + md5 of it), not a CATTLE_ID: a
            // setting that changes nothing there would mislead.
            if mode == Some(Some(RegistrationMode::Rke1)) {
                self.report(
                    n.mark,
                    &path,
                    "applies only to mode system-agent (rke1 names the node after its \
                     hostname); remove it",
                );
                return None;
            }
            self.machine_id(n, key_mark(&f, "machine_id"))
        });
        Some(SystemAgentSettings {
            binary: transpose(binary)?,
            machine_id: machine_id.unwrap_or(Some(MachineId::Random))?,
        })
    }

    /// `random`, `instance_id`, or `{value: HEX}` (1 to 63 lowercase hex digits).
    fn machine_id(&mut self, node: &Node, at: Mark) -> Option<MachineId> {
        let path = "rancher.system_agent.machine_id";
        if let Value::Scalar { .. } = &node.value {
            let derived = self.choice(node, path, &[("random", false), ("instance_id", true)])?;
            return Some(if derived {
                MachineId::InstanceId
            } else {
                MachineId::Random
            });
        }
        let f = self.fields(node, at, path, MACHINE_ID_KEYS)?;
        let value = self.required(&f, "value")?;
        // Only digits reads as a number in YAML; it is still hex.
        let text = self.text(value, &f.path("value"), true, true)?;
        match check_machine_id(&text) {
            Ok(()) => Some(MachineId::Value(text)),
            Err(why) => {
                self.report(value.mark, &f.path("value"), why);
                None
            }
        }
    }

    /// `{url | path, sha256}`: exactly one location, and the checksum is required because
    /// only `<server>/assets` is taken unchecked (as Rancher's installer does).
    fn agent_binary(&mut self, node: &Node, at: Mark) -> Option<AgentBinary> {
        let path = "rancher.system_agent.binary";
        let (url, path, sha256) = self.checked_file(node, at, path, |_| Ok(()))?;
        Some(AgentBinary { url, path, sha256 })
    }

    /// `{url | path, sha256}` of a system extension image whose file name is `NAME.raw`:
    /// systemd-sysext names the extension after it.
    fn sysext(&mut self, node: &Node, at: Mark) -> Option<SysextSource> {
        let image = |s: &str| crate::system::sysext::image_name(s).map(|_| ());
        let (url, path, sha256) = self.checked_file(node, at, "runtime.source.sysext", image)?;
        Some(SysextSource { url, path, sha256 })
    }

    /// A file fetched by URL or read from a path, and its required sha256
    /// (`{url | path, sha256}`, exactly one location); `more` checks either location further.
    fn checked_file(
        &mut self,
        node: &Node,
        at: Mark,
        path: &str,
        more: impl Fn(&str) -> Result<(), String>,
    ) -> Option<(Option<String>, Option<String>, String)> {
        let f = self.fields(node, at, path, CHECKED_FILE_KEYS)?;
        let url = f.get("url").map(|n| {
            self.checked(n, &f.path("url"), |s| {
                check_url(s, &["https", "http"]).and_then(|()| more(s))
            })
        });
        let file = f.get("path").map(|n| {
            self.checked(n, &f.path("path"), |s| {
                check_abs_path(s).and_then(|()| more(s))
            })
        });
        let sha256 = self
            .required(&f, "sha256")
            .and_then(|n| self.hex_digest(n, &f.path("sha256"), check_sha256));
        if url.is_some() == file.is_some() {
            self.report(at, path, "expected exactly one of `url` or `path`");
            return None;
        }
        Some((transpose(url)?, transpose(file)?, sha256?))
    }

    fn token(&mut self, node: &Node, path: &str) -> Option<Secret> {
        // Never echo the token, not even a wrong one: it may be the right token in a wrong place.
        let text = self.text(node, path, false, false)?;
        if text.is_empty() {
            self.report(node.mark, path, "must not be empty");
            return None;
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.report(
                node.mark,
                path,
                "must not contain spaces, line breaks or control characters",
            );
            return None;
        }
        Some(Secret::new(text))
    }

    fn taints(&mut self, node: &Node, path: &str) -> Option<Vec<Taint>> {
        let items = self.string_list(node, path, |s| parse_taint(s).map(|_| ()))?;
        // Each item passed `parse_taint` above.
        Some(items.iter().filter_map(|s| parse_taint(s).ok()).collect())
    }

    fn runtime(&mut self, node: &Node, at: Mark) -> Option<RuntimeSettings> {
        let f = self.fields(node, at, "runtime", RUNTIME_KEYS)?;
        let engine = f.get("engine").map(|n| {
            self.choice(
                n,
                &f.path("engine"),
                &[
                    ("docker", Engine::Docker),
                    ("containerd", Engine::Containerd),
                ],
            )
        });
        let version = f.get("version").map(|n| {
            let p = f.path("version");
            let text = self.text(n, &p, true, true)?;
            match check_version(&text) {
                Ok(()) => Some(text),
                Err(why) => {
                    self.report(n.mark, &p, why);
                    None
                }
            }
        });
        let source = f
            .get("source")
            .map(|n| self.source(n, key_mark(&f, "source")));
        let mirrors = f.get("registry_mirrors").map(|n| {
            self.string_list(n, &f.path("registry_mirrors"), |s| {
                check_url(s, &["https", "http"])
            })
        });
        Some(RuntimeSettings {
            engine: engine.unwrap_or(Some(Engine::default()))?,
            version: transpose(version)?,
            source: source.unwrap_or(Some(RuntimeSource::default()))?,
            registry_mirrors: mirrors.unwrap_or(Some(Vec::new()))?,
        })
    }

    fn source(&mut self, node: &Node, at: Mark) -> Option<RuntimeSource> {
        let path = "runtime.source";
        if let Value::Scalar { .. } = node.value {
            return self
                .choice(node, path, &[("distro", ())])
                .map(|()| RuntimeSource::Distro);
        }
        let f = self.fields(node, at, path, SOURCE_KEYS)?;
        let present: Vec<&str> = f.entries.iter().map(|(k, _, _)| *k).collect();
        let only_unknown_keys =
            present.is_empty() && matches!(&node.value, Value::Map(e) if !e.is_empty());
        if only_unknown_keys {
            // Each was reported (with a suggestion); "expected one of" would only repeat it.
            return None;
        }
        if present.len() != 1 {
            self.report(
                node.mark,
                path,
                "expected `distro`, or a mapping with exactly one of `repo`, `offline` or `sysext`",
            );
            return None;
        }
        let (key, k, v) = f.entries[0];
        match key {
            "repo" => {
                let f = self.fields(v, k.mark, "runtime.source.repo", REPO_KEYS)?;
                let url = self.required(&f, "url").and_then(|n| {
                    self.checked(n, &f.path("url"), |s| {
                        check_url(s, &["https", "http", "file"])
                    })
                });
                let key = f
                    .get("key")
                    .map(|n| self.checked(n, &f.path("key"), check_key_location));
                let suite = f
                    .get("suite")
                    .map(|n| self.checked(n, &f.path("suite"), check_apt_word));
                let components = f
                    .get("components")
                    .map(|n| self.string_list(n, &f.path("components"), check_apt_word));
                let trusted = f
                    .get("trusted")
                    .map(|n| self.boolean(n, &f.path("trusted")));
                let key = transpose(key)?;
                let trusted = trusted.unwrap_or(Some(false))?;
                if key.is_none() && !trusted {
                    self.report(
                        k.mark,
                        "runtime.source.repo",
                        "a repository without a signing `key` must say `trusted: true` \
                         (for local or lab repositories only)",
                    );
                    return None;
                }
                Some(RuntimeSource::Repo(RepoSource {
                    url: url?,
                    key,
                    suite: transpose(suite)?,
                    components: components.unwrap_or(Some(Vec::new()))?,
                    trusted,
                }))
            }
            "sysext" => self.sysext(v, k.mark).map(RuntimeSource::Sysext),
            _ => {
                let f = self.fields(v, k.mark, "runtime.source.offline", OFFLINE_KEYS)?;
                let path = self
                    .required(&f, "path")
                    .and_then(|n| self.checked(n, &f.path("path"), check_abs_path))?;
                Some(RuntimeSource::Offline(OfflineSource { path }))
            }
        }
    }

    fn host(&mut self, node: &Node, at: Mark) -> Option<HostSettings> {
        let f = self.fields(node, at, "host", HOST_KEYS)?;
        let firewalld = f.get("firewalld").map(|n| {
            self.choice(
                n,
                &f.path("firewalld"),
                &[
                    ("disable", FirewalldPolicy::Disable),
                    ("keep", FirewalldPolicy::Keep),
                ],
            )
        });
        let selinux = f.get("selinux").map(|n| {
            self.choice(
                n,
                &f.path("selinux"),
                &[
                    ("require", SelinuxPolicy::Require),
                    ("install", SelinuxPolicy::Install),
                    ("ignore", SelinuxPolicy::Ignore),
                ],
            )
        });
        let iptables = f.get("iptables_backend").map(|n| {
            self.choice(
                n,
                &f.path("iptables_backend"),
                &[
                    ("auto", IptablesBackend::Auto),
                    ("legacy", IptablesBackend::Legacy),
                    ("nft", IptablesBackend::Nft),
                ],
            )
        });
        let modules = f
            .get("modules")
            .map(|n| self.string_list(n, &f.path("modules"), check_module));
        let sysctls = f.get("sysctls").map(|n| {
            self.string_map(
                n,
                &f.path("sysctls"),
                true,
                check_sysctl_key,
                check_sysctl_value,
            )
        });
        let swap = f.get("swap").map(|n| {
            self.choice(
                n,
                &f.path("swap"),
                &[("keep", SwapPolicy::Keep), ("off", SwapPolicy::Off)],
            )
        });
        Some(HostSettings {
            firewalld: firewalld.unwrap_or(Some(FirewalldPolicy::default()))?,
            selinux: selinux.unwrap_or(Some(SelinuxPolicy::default()))?,
            iptables_backend: iptables.unwrap_or(Some(IptablesBackend::default()))?,
            modules: modules.unwrap_or(Some(Vec::new()))?,
            sysctls: sysctls.unwrap_or(Some(BTreeMap::new()))?,
            swap: swap.unwrap_or(Some(SwapPolicy::default()))?,
        })
    }
}

/// Where line `line` (0-based) of a scalar's text is in the document. Only a literal block
/// (`|`) keeps the text's lines as document lines; its mark is where its text starts (the
/// first line after the indicator, at the block's indentation). Any other style points at
/// the scalar itself.
fn pem_mark(node: &Node, line: usize) -> Mark {
    match &node.value {
        Value::Scalar {
            style: Style::Literal,
            ..
        } => Mark {
            line: node.mark.line + line,
            column: node.mark.column,
        },
        _ => node.mark,
    }
}

/// Position of `key` in a mapping (where problems about its whole value point).
fn key_mark(f: &Fields<'_>, key: &str) -> Mark {
    f.entries
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, k, _)| k.mark)
        .unwrap_or(f.at)
}

/// The default image applies only in rke1 mode (system-agent mode has none).
fn default_agent_image(mode: Option<Option<RegistrationMode>>) -> String {
    match mode {
        Some(Some(RegistrationMode::Rke1)) => DEFAULT_AGENT_IMAGE.to_string(),
        _ => String::new(),
    }
}

/// An absent optional value is fine (`Some(None)`); a present but invalid one is not (`None`).
fn transpose<T>(v: Option<Option<T>>) -> Option<Option<T>> {
    match v {
        None => Some(None),
        Some(None) => None,
        Some(Some(x)) => Some(Some(x)),
    }
}

/// A value written as it is into a configuration file (an apt list, a yum repo, a unit's
/// argument) must be one word on one line: `Url::parse` drops tabs and line breaks, so the
/// parsed URL can look fine while the raw string adds a line (`deb [trusted=yes] ...`).
fn one_word(s: &str) -> Result<(), String> {
    match s
        .char_indices()
        .find(|(_, c)| c.is_whitespace() || c.is_control())
    {
        Some((i, c)) => Err(format!(
            "must not contain spaces, line breaks or control characters (`{}` at offset {i})",
            c.escape_debug()
        )),
        None => Ok(()),
    }
}

pub fn check_url(s: &str, schemes: &[&str]) -> Result<(), String> {
    one_word(s)?;
    let url = url::Url::parse(s).map_err(|e| format!("not a valid URL: {e}"))?;
    if !schemes.contains(&url.scheme()) {
        let list: Vec<String> = schemes.iter().map(|s| format!("{s}://")).collect();
        let list = match list.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => list.concat(),
        };
        return Err(format!(
            "must be an {list} URL, found `{}://`",
            url.scheme()
        ));
    }
    if url.scheme() != "file" && url.host_str().is_none_or(str::is_empty) {
        return Err("URL has no host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("URL must not contain credentials".into());
    }
    Ok(())
}

fn check_server(s: &str) -> Result<(), String> {
    check_url(s, &["https"]).map_err(|e| {
        if s.starts_with("http://") {
            "must be an https:// URL: registration sends the token, so it needs TLS".into()
        } else {
            e
        }
    })?;
    // Validated just above; parse again only to look at the parts.
    let url = url::Url::parse(s).map_err(|e| e.to_string())?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err("server URL must not have a query or fragment".into());
    }
    Ok(())
}

pub fn check_checksum(s: &str) -> Result<(), String> {
    if let Some((i, c)) = s.char_indices().find(|(_, c)| !c.is_ascii_hexdigit()) {
        return Err(format!(
            "must be 64 hexadecimal digits (the sha256 of the CA certificate); `{}` at offset {i} is not one",
            c.escape_debug()
        ));
    }
    if s.len() != 64 {
        return Err(format!(
            "must be 64 hexadecimal digits (the sha256 of the CA certificate), found {}",
            s.len()
        ));
    }
    Ok(())
}

fn check_sha256(s: &str) -> Result<(), String> {
    if s.len() == 64 && s.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!(
            "must be 64 hexadecimal digits (a sha256), found `{}`",
            shown(s)
        ))
    }
}

/// An explicit CATTLE_ID: hex as install.sh makes them, and at most 63 characters because
/// Rancher puts it in the `rke.cattle.io/machine-id` label (a label value is at most 63).
pub fn check_machine_id(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 63 {
        return Err(format!(
            "must be 1 to 63 hexadecimal digits (a Kubernetes label value), found {} characters",
            s.chars().count()
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_digit() || ('a'..='f').contains(c)))
    {
        return Err(format!(
            "must be lowercase hexadecimal digits (0-9, a-f), found `{}`",
            c.escape_debug()
        ));
    }
    Ok(())
}

fn check_image(s: &str) -> Result<(), String> {
    if s.is_empty() || s.starts_with('-') || s.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "`{}` is not an image reference (e.g. `{DEFAULT_AGENT_IMAGE}`)",
            shown(s)
        ));
    }
    Ok(())
}

fn dns_label(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

pub fn check_node_name(s: &str) -> Result<(), String> {
    if s.len() <= 253 && s.split('.').all(dns_label) {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid node name: lowercase letters, digits, `-` and `.`, at most 253 characters",
            shown(s)
        ))
    }
}

fn check_address(s: &str) -> Result<(), String> {
    // Rancher's agent takes an IP, an interface name or a keyword such as `awslocal`.
    let word = !s.is_empty()
        && s.len() <= 64
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
    if s.parse::<IpAddr>().is_ok() || word {
        Ok(())
    } else {
        Err(format!(
            "`{}` is neither an IP address nor an interface name",
            shown(s)
        ))
    }
}

fn name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

/// A Kubernetes label or taint key: `[prefix/]name`.
pub fn check_qualified_name(s: &str) -> Result<(), String> {
    let ok = match s.split_once('/') {
        Some((prefix, name)) => {
            prefix.len() <= 253 && prefix.split('.').all(dns_label) && name_part(name)
        }
        None => name_part(s),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid Kubernetes key: an optional DNS prefix and `/`, then at most 63 \
             letters, digits, `-`, `_` or `.`, starting and ending with a letter or digit",
            shown(s)
        ))
    }
}

fn check_label_value(s: &str) -> Result<(), String> {
    if s.is_empty() || name_part(s) {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid label value: at most 63 letters, digits, `-`, `_` or `.`, \
             starting and ending with a letter or digit",
            shown(s)
        ))
    }
}

const TAINT_EFFECTS: [(&str, TaintEffect); 3] = [
    ("NoSchedule", TaintEffect::NoSchedule),
    ("PreferNoSchedule", TaintEffect::PreferNoSchedule),
    ("NoExecute", TaintEffect::NoExecute),
];

/// `key=value:Effect` or `key:Effect`, as Rancher's `--taints` takes them.
pub fn parse_taint(s: &str) -> Result<Taint, String> {
    let Some((kv, effect)) = s.rsplit_once(':') else {
        return Err(format!(
            "taint `{}` must look like `key=value:Effect`",
            shown(s)
        ));
    };
    let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
    check_qualified_name(key).map_err(|e| format!("taint key: {e}"))?;
    check_label_value(value).map_err(|e| format!("taint value: {e}"))?;
    let names: Vec<&str> = TAINT_EFFECTS.iter().map(|(n, _)| *n).collect();
    let effect = TAINT_EFFECTS
        .iter()
        .find(|(n, _)| *n == effect)
        .map(|(_, e)| *e)
        .ok_or_else(|| {
            let hint = closest(effect, &names)
                .map(|n| format!(" (did you mean `{n}`?)"))
                .unwrap_or_default();
            format!(
                "unknown taint effect `{}`; expected one of {}{hint}",
                shown(effect),
                quote_list(&names)
            )
        })?;
    Ok(Taint {
        key: key.to_string(),
        value: value.to_string(),
        effect,
    })
}

/// The runtime stage's own parser: a constraint `validate` accepts is one the runtime stage
/// can apply (`=5:24.0.7-1~debian.12~bookworm` used to pass here and fail there, after the
/// host had been prepared).
fn check_version(s: &str) -> Result<(), String> {
    match VersionConstraint::parse(s) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "`{}` is not a version constraint: {}",
            shown(s),
            e.reason()
        )),
    }
}

fn check_key_location(s: &str) -> Result<(), String> {
    one_word(s)?;
    if s.starts_with('/') {
        return check_abs_path(s);
    }
    // A key fetched over plain http can be swapped in transit, and then it vouches for
    // whatever the same attacker serves as the repository: it is worse than no key, which
    // at least needs the explicit `trusted: true`.
    if s.get(..7)
        .is_some_and(|p| p.eq_ignore_ascii_case("http://"))
    {
        return Err(
            "a signing key over plain http:// can be replaced in transit: give an https:// \
             URL or a path in the image, or leave the key out and set `trusted: true` for a \
             repository inside the air gap"
                .into(),
        );
    }
    check_url(s, &["https", "file"])
        .map_err(|e| format!("must be an https:// or file:// URL or an absolute path: {e}"))
}

fn check_apt_word(s: &str) -> Result<(), String> {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'))
    {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a repository suite or component name",
            shown(s)
        ))
    }
}

fn check_abs_path(s: &str) -> Result<(), String> {
    if !s.starts_with('/') {
        return Err(format!("`{}` is not an absolute path", shown(s)));
    }
    if s.split('/').any(|c| c == "..") || s.chars().any(char::is_control) {
        return Err(format!(
            "`{}` must not contain `..` or control characters",
            shown(s)
        ));
    }
    Ok(())
}

fn check_module(s: &str) -> Result<(), String> {
    if !s.is_empty()
        && s.len() <= 55
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
    {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a kernel module name (lowercase letters, digits, `_` and `-`)",
            shown(s)
        ))
    }
}

fn check_sysctl_key(s: &str) -> Result<(), String> {
    let mut parts = s.split('.');
    let ok = s.contains('.')
        && parts.all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a sysctl name such as `net.ipv4.ip_forward`",
            shown(s)
        ))
    }
}

fn check_sysctl_value(s: &str) -> Result<(), String> {
    if s.is_empty() || s.chars().any(|c| c.is_control() && c != '\t') {
        Err("must be a non-empty value on one line".into())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_kinds_follow_yaml_core_schema() {
        for t in [
            "1", "-2", "0x1f", "0o17", "20.10", ".5", "1e3", "+.inf", ".nan",
        ] {
            assert_eq!(plain_kind(t), Some("a number"), "{t}");
        }
        for t in ["true", "FALSE"] {
            assert_eq!(plain_kind(t), Some("a boolean"), "{t}");
        }
        for t in ["~", "null", ""] {
            assert_eq!(plain_kind(t), Some("null"), "{t}");
        }
        for t in [
            "yes", "no", "on", "1.2.3", "0x", "e5", "v1", "abc", "1_000", ".",
        ] {
            assert_eq!(plain_kind(t), None, "{t}");
        }
    }

    /// `trusted_ca` problems as `path line:column message`.
    fn ca_problems(items: &[&str]) -> Vec<String> {
        let mut doc = String::from(
            "roles: [worker]\nrancher:\n  server: https://r.lab\n  token: t\ntrusted_ca:\n",
        );
        for item in items {
            doc.push_str("  - |\n");
            for l in item.lines() {
                doc.push_str(&format!("      {l}\n"));
            }
        }
        match crate::userdata::parse(doc.as_bytes()) {
            Ok(p) => {
                assert_eq!(p.settings.trusted_ca.len(), items.len());
                Vec::new()
            }
            Err(e) => e
                .problems
                .iter()
                .map(|p| format!("{} {}:{} {}", p.path, p.line, p.column, p.message))
                .collect(),
        }
    }

    #[test]
    fn trusted_ca_problems_name_the_item_and_the_blocks_line() {
        let a = crate::userdata::ca::tests::ca_pem("lab a");
        let b = crate::userdata::ca::tests::ca_pem("lab b");
        let (na, nb) = (a.lines().count(), b.lines().count());
        assert_eq!(
            ca_problems(&[&a, &format!("# b\n{b}")]),
            Vec::<String>::new()
        );
        let key = "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n";
        // Item 0's `|` is on line 6, item 1's on line 7 + na; the key block follows b. The
        // column is the text's indentation.
        let got = ca_problems(&[&a, &format!("{b}{key}"), "just text", &a]);
        assert_eq!(got.len(), 3, "{got:#?}");
        assert!(
            got[0].starts_with(&format!(
                "trusted_ca[1] {}:7 a `EC PRIVATE KEY` block",
                8 + na + nb
            )),
            "{got:#?}"
        );
        assert!(
            got[1].starts_with(&format!("trusted_ca[2] {}:7 not PEM", 12 + na + nb)),
            "{got:#?}"
        );
        assert_eq!(
            got[2],
            format!(
                "trusted_ca[3] {}:7 the same certificate as trusted_ca[0] certificate 1",
                14 + na + nb
            )
        );
        let doc = "roles: [worker]\nrancher:\n  server: https://r.lab\n  token: t\n\
                   trusted_ca: [\"\", 5]\n";
        let e = crate::userdata::parse(doc.as_bytes()).unwrap_err();
        let got: Vec<String> = e.problems.iter().map(|p| p.to_string()).collect();
        assert!(
            got[0].starts_with("5:14: trusted_ca[0]: no certificate"),
            "{got:?}"
        );
        assert!(
            got[1].starts_with("5:18: trusted_ca[1]: expected a string"),
            "{got:?}"
        );
    }

    #[test]
    fn closest_key() {
        assert_eq!(closest("ca-checksum", RANCHER_KEYS), Some("ca_checksum"));
        assert_eq!(closest("cachecksum", RANCHER_KEYS), Some("ca_checksum"));
        assert_eq!(closest("tokne", RANCHER_KEYS), Some("token"));
        assert_eq!(closest("Server", RANCHER_KEYS), Some("server"));
        assert_eq!(closest("colour", RANCHER_KEYS), None);
        assert_eq!(closest("rols", ROOT_KEYS), Some("roles"));
    }

    #[test]
    fn taints() {
        assert_eq!(
            parse_taint("dedicated=gpu:NoSchedule").unwrap(),
            Taint {
                key: "dedicated".into(),
                value: "gpu".into(),
                effect: TaintEffect::NoSchedule
            }
        );
        let t = parse_taint("example.com/special:NoExecute").unwrap();
        assert_eq!(
            (t.key.as_str(), t.value.as_str()),
            ("example.com/special", "")
        );
        assert_eq!(t.to_string(), "example.com/special=:NoExecute");
        assert_eq!(
            parse_taint("a=b:NoSchedul").unwrap_err(),
            "unknown taint effect `NoSchedul`; expected one of `NoSchedule`, \
             `PreferNoSchedule`, `NoExecute` (did you mean `NoSchedule`?)"
        );
        assert!(parse_taint("a=b").unwrap_err().contains("key=value:Effect"));
        assert!(
            parse_taint("-a=b:NoSchedule")
                .unwrap_err()
                .starts_with("taint key")
        );
        assert!(
            parse_taint("a=b c:NoSchedule")
                .unwrap_err()
                .starts_with("taint value")
        );
    }

    #[test]
    fn value_checks() {
        assert!(check_server("https://rancher.example.com").is_ok());
        assert!(check_server("https://10.0.2.2:8443/").is_ok());
        assert!(
            check_server("http://rancher.example.com")
                .unwrap_err()
                .contains("https://")
        );
        assert!(check_server("https://u:p@rancher.example.com").is_err());
        assert!(check_server("rancher.example.com").is_err());
        assert!(check_checksum(&"aB".repeat(32)).is_ok());
        assert!(
            check_checksum(&"a".repeat(63))
                .unwrap_err()
                .contains("found 63")
        );
        assert!(
            check_checksum("xyz")
                .unwrap_err()
                .contains("`x` at offset 0")
        );
        assert!(check_node_name("node-1.lab").is_ok());
        assert!(check_node_name("Node_1").is_err());
        assert!(check_address("10.0.0.5").is_ok());
        assert!(check_address("fd00::5").is_ok());
        assert!(check_address("eth0").is_ok());
        assert!(check_address("awslocal").is_ok());
        assert!(check_address("-x").is_err());
        assert!(check_address("a b").is_err());
        assert!(check_qualified_name("node-role.kubernetes.io/worker").is_ok());
        assert!(check_qualified_name("Example.com/x").is_err());
        assert!(check_label_value("").is_ok());
        assert!(check_label_value("a,b").is_err());
        assert!(check_version("20.10").is_ok());
        assert!(check_version(">=20.10").is_ok());
        // A distro version is not a constraint: the runtime stage could not apply it.
        assert!(check_version("=5:24.0.7-1~debian.12~bookworm").is_err());
        assert!(check_version("latest").is_err());
        // The runtime stage's parser takes spaces around the operator.
        assert!(check_version(">= 20").is_ok());
        assert!(check_module("br_netfilter").is_ok());
        assert!(check_module("Br").is_err());
        assert!(check_module("../x").is_err());
        assert!(check_sysctl_key("net.ipv4.ip_forward").is_ok());
        assert!(check_sysctl_key("vm.max_map_count").is_ok());
        assert!(check_sysctl_key("kernel").is_err());
        assert!(check_sysctl_key("net..x").is_err());
        assert!(check_sysctl_key("net/ipv4/ip_forward").is_err());
        assert!(check_sysctl_value("4096 87380 6291456").is_ok());
        assert!(check_sysctl_value("1\nkernel.x = 2").is_err());
        assert!(check_abs_path("/opt/bundle").is_ok());
        assert!(check_abs_path("opt").is_err());
        assert!(check_abs_path("/opt/../etc").is_err());
    }
}
