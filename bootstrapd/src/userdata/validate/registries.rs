//! `registries` (mirrors and credentials, as RKE2's and K3s's registries.yaml) and
//! `rancher.system_default_registry`.
//!
//! Passwords and identity tokens are never echoed, not even a wrong one: a password in the
//! wrong place is still a password.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;

use super::super::settings::*;
use super::super::tree::{Mark, Node, Value, shown};
use super::{Fields, Validator, check_url, key_mark, transpose};
use crate::secret::Secret;

/// A registry's entry: its name, its path for messages, its key and its value.
type Entry<'a> = (String, String, &'a Node, &'a Node);

pub const REGISTRIES_KEYS: &[&str] = &["mirrors", "configs"];
pub const MIRROR_KEYS: &[&str] = &["endpoint"];
pub const CONFIG_KEYS: &[&str] = &["auth"];
pub const AUTH_KEYS: &[&str] = &["username", "password", "identity_token"];

fn dns_label_any_case(l: &str) -> bool {
    !l.is_empty()
        && l.len() <= 63
        && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !l.starts_with('-')
        && !l.ends_with('-')
}

/// `host[:port]` as Docker's reference grammar names a registry (distribution/reference:
/// domain components of letters, digits and `-`, or a bracketed IPv6 address, and an
/// optional port), without a scheme or a path.
pub fn check_registry_host(s: &str) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "`{}` is not a registry `host[:port]` ({why}), e.g. `registry.lab:5000`",
            shown(s)
        ))
    };
    if s.contains("://") {
        return bad("no scheme: the registry's name, not a URL");
    }
    if s.contains('/') {
        return bad("no path");
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((addr, after)) = rest.split_once(']') else {
            return bad("an IPv6 address needs its closing `]`");
        };
        if addr.parse::<Ipv6Addr>().is_err() {
            return bad("not an IPv6 address between the brackets");
        }
        match after {
            "" => (addr, None),
            p => match p.strip_prefix(':') {
                Some(port) => (addr, Some(port)),
                None => return bad("only `:port` may follow the address"),
            },
        }
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if !s.starts_with('[') && !host.split('.').all(dns_label_any_case) {
        return bad("a host is labels of letters, digits and `-`, separated by `.`");
    }
    if let Some(p) = port {
        let ok = !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n));
        if !ok {
            return bad("the port must be a number from 1 to 65535");
        }
    }
    Ok(())
}

/// A mirror's registry: a host, or `*` (RKE2's default for every registry without an entry).
pub fn check_mirror_host(s: &str) -> Result<(), String> {
    if s == "*" {
        Ok(())
    } else {
        check_registry_host(s)
    }
}

fn check_username(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.chars().any(char::is_control) {
        return Err("must be one line without control characters".into());
    }
    if s.contains(':') {
        // HTTP basic auth joins user and password with `:`, and splits at the first one.
        return Err(format!(
            "`{}` must not contain `:` (basic auth splits the user from the password there)",
            shown(s)
        ));
    }
    Ok(())
}

impl Validator {
    /// `{mirrors, configs}`; each problem with its path and position.
    pub(super) fn registries(&mut self, node: &Node, at: Mark) -> Option<RegistrySettings> {
        let f = self.fields(node, at, "registries", REGISTRIES_KEYS)?;
        let mirrors = f
            .get("mirrors")
            .map(|n| self.mirrors(n, &f.path("mirrors")));
        let configs = f
            .get("configs")
            .map(|n| self.configs(n, &f.path("configs")));
        Some(RegistrySettings {
            mirrors: mirrors.unwrap_or(Some(BTreeMap::new()))?,
            configs: configs.unwrap_or(Some(BTreeMap::new()))?,
        })
    }

    /// The entries of a mapping keyed by registry whose key passes `check`, and whether
    /// every key did (the others are reported, and the values of the good ones are still
    /// checked: one round of edits fixes all). `None` (reported) when `node` is not a mapping.
    fn registry_entries<'a>(
        &mut self,
        node: &'a Node,
        path: &str,
        check: fn(&str) -> Result<(), String>,
    ) -> Option<(Vec<Entry<'a>>, bool)> {
        if node.is_null() {
            return Some((Vec::new(), true));
        }
        let Value::Map(entries) = &node.value else {
            self.report(
                node.mark,
                path,
                "expected a mapping of registries (`host[:port]`) to their settings",
            );
            return None;
        };
        if !self.no_tag(node, path) {
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (k, v) in entries {
            // `10.0.2.2` or `5000` read as numbers would still be meant as written.
            let Some(name) = self.text(k, path, true, true) else {
                ok = false;
                continue;
            };
            let p = format!("{path}[{}]", shown(&name));
            match check(&name) {
                Ok(()) => out.push((name, p, k, v)),
                Err(why) => {
                    self.report(k.mark, &p, why);
                    ok = false;
                }
            }
        }
        Some((out, ok))
    }

    fn mirrors(&mut self, node: &Node, path: &str) -> Option<BTreeMap<String, RegistryMirror>> {
        let (entries, mut ok) = self.registry_entries(node, path, check_mirror_host)?;
        let mut out = BTreeMap::new();
        for (name, p, k, v) in entries {
            match self.mirror(v, k.mark, &p) {
                Some(m) => {
                    out.insert(name, m);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    fn mirror(&mut self, node: &Node, at: Mark, path: &str) -> Option<RegistryMirror> {
        let f = self.fields(node, at, path, MIRROR_KEYS)?;
        let n = self.required(&f, "endpoint")?;
        let p = f.path("endpoint");
        let endpoint = self.string_list(n, &p, |s| check_url(s, &["https", "http"]))?;
        if endpoint.is_empty() {
            self.report(n.mark, &p, "at least one endpoint URL is required");
            return None;
        }
        Some(RegistryMirror { endpoint })
    }

    fn configs(&mut self, node: &Node, path: &str) -> Option<BTreeMap<String, RegistryConfig>> {
        let (entries, mut ok) = self.registry_entries(node, path, check_registry_host)?;
        let mut out = BTreeMap::new();
        for (name, p, k, v) in entries {
            let config = self.fields(v, k.mark, &p, CONFIG_KEYS).and_then(|f| {
                let auth = f
                    .get("auth")
                    .map(|n| self.registry_auth(n, key_mark(&f, "auth"), &f.path("auth")));
                Some(RegistryConfig {
                    auth: transpose(auth)?,
                })
            });
            match config {
                Some(c) => {
                    out.insert(name, c);
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// `{username, password}` or `{identity_token}`: never both, never half.
    fn registry_auth(&mut self, node: &Node, at: Mark, path: &str) -> Option<RegistryAuth> {
        let f = self.fields(node, at, path, AUTH_KEYS)?;
        let username = f
            .get("username")
            .map(|n| self.checked(n, &f.path("username"), check_username));
        let password = f
            .get("password")
            .map(|n| self.secret_text(n, &f.path("password"), true));
        let token = f
            .get("identity_token")
            .map(|n| self.secret_text(n, &f.path("identity_token"), false));
        match (username, password, token) {
            (Some(u), Some(p), None) => Some(RegistryAuth::Basic {
                username: u?,
                password: p?,
            }),
            (None, None, Some(t)) => Some(RegistryAuth::IdentityToken(t?)),
            // A misspelt key was reported with its suggestion; its absence says nothing new.
            _ if !f.suggested.is_empty() => None,
            (u, p, t) => {
                let message = if t.is_some() {
                    "expected `username` and `password`, or `identity_token` alone, not both"
                } else if u.is_some() {
                    "`username` needs its `password` (or give `identity_token` alone)"
                } else if p.is_some() {
                    "`password` needs its `username` (or give `identity_token` alone)"
                } else {
                    "expected `username` and `password`, or `identity_token`"
                };
                self.report(at, path, message);
                None
            }
        }
    }

    /// A password (`spaces` allowed: a passphrase may have them) or a token, never echoed.
    /// A plain number is taken as written: a password of digits is still text.
    fn secret_text(&mut self, node: &Node, path: &str, spaces: bool) -> Option<Secret> {
        let text = self.text(node, path, false, true)?;
        let why = if text.is_empty() {
            Some("must not be empty")
        } else if text.chars().any(char::is_control) {
            Some("must be one line without control characters")
        } else if !spaces && text.chars().any(char::is_whitespace) {
            Some("must not contain spaces")
        } else {
            None
        };
        match why {
            Some(why) => {
                self.report(node.mark, path, why);
                None
            }
            None => Some(Secret::new(text)),
        }
    }

    /// `rancher.system_default_registry` as validated (see `transpose`): mode rke1 only (it
    /// prefixes the agent image; the system agent is a binary from the server), and an agent
    /// image that names another registry is refused rather than prefixed into a reference no
    /// registry serves. `agent_image` is as validated.
    pub(super) fn system_default_registry(
        &mut self,
        f: &Fields<'_>,
        mode: Option<Option<RegistrationMode>>,
        agent_image: &Option<Option<String>>,
    ) -> Option<Option<String>> {
        let Some(node) = f.get("system_default_registry") else {
            return Some(None);
        };
        let path = &f.path("system_default_registry");
        let agent_image = agent_image.as_ref().and_then(|i| i.as_deref());
        self.default_registry(node, path, mode, agent_image)
            .map(Some)
    }

    fn default_registry(
        &mut self,
        node: &Node,
        path: &str,
        mode: Option<Option<RegistrationMode>>,
        agent_image: Option<&str>,
    ) -> Option<String> {
        if matches!(mode, None | Some(Some(RegistrationMode::SystemAgent))) {
            self.report(
                node.mark,
                path,
                "applies only to mode rke1 (it prefixes the agent image); for RKE2/K3s set \
                 the cluster's system-default-registry in Rancher, and mirrors in `registries`",
            );
            return None;
        }
        let text = self.text(node, path, true, true)?;
        if let Err(why) = check_registry_host(&text) {
            self.report(node.mark, path, why);
            return None;
        }
        if let Some(image) = agent_image
            && let Some(named) = crate::system::image_ref::explicit_registry(image)
            && named != text
        {
            self.report(
                node.mark,
                path,
                format!(
                    "rancher.agent_image `{}` already names registry `{}`; Rancher would put \
                     `{}` before it all the same: drop one of the two",
                    shown(image),
                    shown(named),
                    shown(&text)
                ),
            );
            return None;
        }
        Some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_hosts() {
        for ok in [
            "docker.io",
            "registry.lab:5000",
            "10.0.2.2:5443",
            "localhost",
            "Registry.Example.com",
            "[fd00::1]:5000",
            "[::1]",
        ] {
            assert_eq!(check_registry_host(ok), Ok(()), "{ok}");
        }
        for bad in [
            "https://registry.lab",
            "registry.lab/v2",
            "registry.lab:0",
            "registry.lab:65536",
            "registry.lab:",
            "-registry.lab",
            "registry..lab",
            "reg_istry.lab",
            "[fd00::1",
            "[fd00::g]:5000",
            "fd00::1",
            "*",
            "",
        ] {
            assert!(check_registry_host(bad).is_err(), "{bad}");
        }
        assert_eq!(check_mirror_host("*"), Ok(()));
        assert!(
            check_registry_host("http://r.lab")
                .unwrap_err()
                .contains("no scheme")
        );
    }

    fn problems(yaml: &str) -> Vec<String> {
        match crate::userdata::parse(yaml.as_bytes()) {
            Ok(_) => Vec::new(),
            Err(e) => e.problems.iter().map(|p| p.to_string()).collect(),
        }
    }

    const HEAD: &str = "roles: [worker]\nrancher:\n  server: https://r.lab\n  token: t0k\n";

    #[test]
    fn every_problem_has_its_path_and_position_and_no_secret() {
        let doc = format!(
            "{HEAD}registries:\n  mirrors:\n    https://docker.io:\n      endpoint: [ftp://m.lab]\n    \
             r.lab:\n      endpoint: []\n  configs:\n    10.0.2.2:5443:\n      auth:\n        \
             username: agent\n        password: hunter2\n        identity_token: tok-secret\n    \
             q.lab:\n      auth:\n        password: \"pw\\nline\"\n    z.lab:\n      auth: {{username: u}}\n"
        );
        let got = problems(&doc);
        assert_eq!(
            got,
            [
                "7:5: registries.mirrors[https://docker.io]: `https://docker.io` is not a \
                 registry `host[:port]` (no scheme: the registry's name, not a URL), e.g. \
                 `registry.lab:5000`",
                "10:17: registries.mirrors[r.lab].endpoint: at least one endpoint URL is \
                 required",
                "13:7: registries.configs[10.0.2.2:5443].auth: expected `username` and \
                 `password`, or `identity_token` alone, not both",
                "18:7: registries.configs[q.lab].auth: `password` needs its `username` (or \
                 give `identity_token` alone)",
                "19:19: registries.configs[q.lab].auth.password: must be one line without \
                 control characters",
                "21:7: registries.configs[z.lab].auth: `username` needs its `password` (or \
                 give `identity_token` alone)",
            ]
        );
        let all = got.join("\n");
        assert!(!all.contains("hunter2") && !all.contains("tok-secret") && !all.contains("pw\\n"));
    }

    #[test]
    fn the_default_registry_is_rke1s_and_a_host() {
        let rke1 =
            "roles: [worker]\nrancher:\n  server: https://r.lab\n  token: t0k\n  mode: rke1\n";
        assert_eq!(
            problems(&format!("{rke1}  system_default_registry: 10.0.2.2:5443\n")),
            Vec::<String>::new()
        );
        assert_eq!(
            problems(&format!(
                "{rke1}  system_default_registry: https://reg.lab/x\n"
            )),
            [
                "6:28: rancher.system_default_registry: `https://reg.lab/x` is not a registry \
              `host[:port]` (no scheme: the registry's name, not a URL), e.g. `registry.lab:5000`"
            ]
        );
        assert_eq!(
            problems(&format!("{HEAD}  system_default_registry: reg.lab\n")),
            [
                "5:28: rancher.system_default_registry: applies only to mode rke1 (it prefixes \
              the agent image); for RKE2/K3s set the cluster's system-default-registry in \
              Rancher, and mirrors in `registries`"
            ]
        );
        let other = format!(
            "{rke1}  agent_image: other.lab/rancher/rancher-agent:v2.9.0\n  \
             system_default_registry: reg.lab\n"
        );
        assert!(problems(&other)[0].contains("already names registry `other.lab`"));
        let same = format!(
            "{rke1}  agent_image: reg.lab/rancher/rancher-agent:v2.9.0\n  \
             system_default_registry: reg.lab\n"
        );
        assert_eq!(problems(&same), Vec::<String>::new());
    }

    #[test]
    fn a_registries_yaml_pasted_as_it_is_validates() {
        let doc = format!(
            "{HEAD}registries:\n  mirrors:\n    docker.io:\n      endpoint:\n        - \
             \"https://mirror.lab:5000\"\n    \"*\":\n      endpoint: [http://10.0.2.2:5001]\n  \
             configs:\n    \"10.0.2.2:5443\":\n      auth:\n        username: agent\n        \
             password: 123456\n    ghcr.io:\n      auth:\n        identity_token: abc\n"
        );
        let s = crate::userdata::parse(doc.as_bytes()).unwrap().settings;
        assert_eq!(
            s.registries.mirrors_for("quay.io"),
            ["http://10.0.2.2:5001".to_string()]
        );
        match s.registries.auth_for("10.0.2.2:5443") {
            Some(RegistryAuth::Basic { username, password }) => {
                assert_eq!((username.as_str(), password.expose()), ("agent", "123456"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            s.registries.auth_for("ghcr.io"),
            Some(RegistryAuth::IdentityToken(_))
        ));
        // Serialised settings show the shape, never the secrets.
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.contains("\"password\":\"<redacted>\"") && !json.contains("123456"));
        // runtime.registry_mirrors first, then docker.io's, each once.
        assert_eq!(
            s.registries
                .docker_hub_mirrors(&["https://a.lab".into(), "https://mirror.lab:5000".into()]),
            ["https://a.lab", "https://mirror.lab:5000"]
        );
    }

    #[test]
    fn usernames() {
        assert!(check_username("agent").is_ok());
        assert!(check_username("robot$ci+bot").is_ok());
        assert!(check_username("a:b").is_err());
        assert!(check_username("a\nb").is_err());
        assert!(check_username("").is_err());
    }
}
