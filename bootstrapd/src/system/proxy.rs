//! The userdata's `proxy` as the tools bootstrapd configures or runs read it: environment
//! variables (package managers, the Rancher agents) and systemd drop-ins (Docker,
//! containerd). Every value stays a [`Secret`]: a proxy URL may carry credentials.

use crate::secret::Secret;
use crate::userdata::proxy::ProxySettings;

/// Docker's drop-in, where Docker's documentation puts it ("Configure the daemon to use a
/// proxy", systemd unit file: `/etc/systemd/system/docker.service.d/http-proxy.conf`).
pub const DOCKER_DROPIN: &str = "/etc/systemd/system/docker.service.d/http-proxy.conf";
/// containerd's, the same way (containerd pulls for Kubernetes and for Docker's containerd
/// image store).
pub const CONTAINERD_DROPIN: &str = "/etc/systemd/system/containerd.service.d/http-proxy.conf";

/// First line of every drop-in bootstrapd writes: a drop-in without it is the operator's,
/// and is never removed.
pub const DROPIN_MARKER: &str = "# Written by bootstrapd from the userdata's `proxy`";

/// `HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY` as set by `proxy` (only those it sets). Empty
/// when it sets no proxy URL: a `no_proxy` list alone must not replace whatever else the
/// tools would use.
pub fn variables(proxy: &ProxySettings) -> Vec<(&'static str, Secret)> {
    if !proxy.has_proxy() {
        return Vec::new();
    }
    let mut out = Vec::new();
    if let Some(u) = &proxy.http {
        out.push(("HTTP_PROXY", u.clone()));
    }
    if let Some(u) = &proxy.https {
        out.push(("HTTPS_PROXY", u.clone()));
    }
    if !proxy.no_proxy.is_empty() {
        out.push(("NO_PROXY", Secret::new(proxy.no_proxy_list())));
    }
    out
}

/// [`variables`] in upper and lower case: Go reads either (upper first), while curl and
/// libcurl (dnf's librepo) take `http_proxy` in lower case only and apt reads the lower-case
/// `http_proxy`/`https_proxy`. Docker's documentation shows both forms too.
pub fn variables_both_cases(proxy: &ProxySettings) -> Vec<(String, Secret)> {
    variables(proxy)
        .into_iter()
        .flat_map(|(k, v)| [(k.to_string(), v.clone()), (k.to_ascii_lowercase(), v)])
        .collect()
}

/// One `Environment=` assignment quoted as systemd.exec reads it: the whole `KEY=value` in
/// double quotes (inside which `\` starts a C-style escape, so `\` and `"` are escaped), and
/// `%` doubled because unit files expand `%` specifiers even inside quotes.
pub fn environment_assignment(key: &str, value: &str) -> String {
    let mut out = String::with_capacity(key.len() + value.len() + 4);
    out.push('"');
    for c in key.chars().chain(std::iter::once('=')).chain(value.chars()) {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The drop-in for `unit`; `None` when `proxy` sets no proxy URL (then bootstrapd's drop-in
/// is removed).
pub fn render_dropin(unit: &str, proxy: &ProxySettings) -> Option<Secret> {
    let vars = variables_both_cases(proxy);
    if vars.is_empty() {
        return None;
    }
    let mut s = format!(
        "{DROPIN_MARKER}; it is removed when the userdata sets none.\n\
         # {unit} reads it after a daemon-reload and a restart.\n[Service]\n"
    );
    for (k, v) in &vars {
        s.push_str("Environment=");
        s.push_str(&environment_assignment(k, v.expose()));
        s.push('\n');
    }
    Some(Secret::new(s))
}

/// True when `content` is a drop-in bootstrapd wrote.
pub fn is_ours(content: &str) -> bool {
    content.starts_with(DROPIN_MARKER)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxy() -> ProxySettings {
        ProxySettings {
            http: Some(Secret::new("http://user:p%25ss@10.0.2.2:3128/")),
            https: Some(Secret::new("http://10.0.2.2:3128/")),
            no_proxy: vec!["localhost".into(), "10.42.0.0/16".into()],
        }
    }

    #[test]
    fn assignments_are_quoted_and_escaped_for_systemd() {
        assert_eq!(
            environment_assignment("HTTP_PROXY", "http://u:a%41\"b\\c$d@h/"),
            r#""HTTP_PROXY=http://u:a%%41\"b\\c$d@h/""#
        );
        assert_eq!(environment_assignment("A", ""), "\"A=\"");
    }

    #[test]
    fn drop_in_sets_both_cases_and_doubles_percent_signs() {
        let d = render_dropin("docker.service", &proxy()).unwrap();
        let text = d.expose();
        assert!(is_ours(text), "{text}");
        let lines: Vec<&str> = text.lines().skip(2).collect();
        assert_eq!(
            lines,
            [
                "[Service]",
                "Environment=\"HTTP_PROXY=http://user:p%%25ss@10.0.2.2:3128/\"",
                "Environment=\"http_proxy=http://user:p%%25ss@10.0.2.2:3128/\"",
                "Environment=\"HTTPS_PROXY=http://10.0.2.2:3128/\"",
                "Environment=\"https_proxy=http://10.0.2.2:3128/\"",
                "Environment=\"NO_PROXY=localhost,10.42.0.0/16\"",
                "Environment=\"no_proxy=localhost,10.42.0.0/16\"",
            ]
        );
        // Debug and Display of the rendered drop-in show nothing of it.
        assert!(!format!("{d:?} {d}").contains("p%25ss"));
    }

    #[test]
    fn no_proxy_url_no_drop_in_and_no_variables() {
        let list_only = ProxySettings {
            no_proxy: vec!["localhost".into()],
            ..Default::default()
        };
        assert!(render_dropin("docker.service", &list_only).is_none());
        assert!(variables(&list_only).is_empty());
        assert!(render_dropin("docker.service", &ProxySettings::default()).is_none());
        let https_only = ProxySettings {
            https: Some(Secret::new("http://p:3128/")),
            ..Default::default()
        };
        let names: Vec<String> = variables_both_cases(&https_only)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(names, ["HTTPS_PROXY", "https_proxy"]);
        assert!(!is_ours("[Service]\nEnvironment=HTTP_PROXY=x\n"));
    }
}
