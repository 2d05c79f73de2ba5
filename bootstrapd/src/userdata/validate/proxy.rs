//! `proxy: {http, https, no_proxy}`. The URLs may carry credentials, so no message here
//! echoes one as written: a wrong URL is shown with its password replaced (`redacted`), or
//! not at all when it does not parse.

use std::net::IpAddr;

use super::{Node, PROXY_KEYS, Validator, one_word};
use crate::secret::Secret;
use crate::userdata::settings::ProxySettings;
use crate::userdata::tree::Mark;

impl Validator {
    /// The `proxy` section; absent keys are empty.
    pub(super) fn proxy(&mut self, node: &Node, at: Mark) -> Option<ProxySettings> {
        let f = self.fields(node, at, "proxy", PROXY_KEYS)?;
        let http = f.get("http").map(|n| self.proxy_url(n, &f.path("http")));
        let https = f.get("https").map(|n| self.proxy_url(n, &f.path("https")));
        let no_proxy = f
            .get("no_proxy")
            .map(|n| self.string_list(n, &f.path("no_proxy"), check_no_proxy_entry));
        Some(ProxySettings {
            http: super::transpose(http)?,
            https: super::transpose(https)?,
            no_proxy: no_proxy.unwrap_or(Some(Vec::new()))?,
        })
    }

    /// One proxy URL, kept in its normalised form (what every consumer is given).
    fn proxy_url(&mut self, node: &Node, path: &str) -> Option<Secret> {
        let text = self.text(node, path, false, false)?;
        match check_proxy_url(&text) {
            Ok(url) => Some(Secret::new(url)),
            Err(why) => {
                self.report(node.mark, path, why);
                None
            }
        }
    }
}

/// What a proxy URL may be: `http(s)://[user[:password]@]host[:port][/]`. Returns the URL as
/// the url crate serialises it (scheme lowercased, userinfo percent-encoded, a `/` path), so
/// that what is written into drop-ins and env files holds no quote, backslash or space.
pub fn check_proxy_url(s: &str) -> Result<String, String> {
    // The offending character is named, never the text around it.
    one_word(s)?;
    // url's parse errors name the problem, not the input.
    let url = url::Url::parse(s).map_err(|e| format!("not a valid proxy URL: {e}"))?;
    let shown = crate::secret::redact_url(&url);
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "a proxy URL must start with http:// or https://, found `{}://`",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("proxy URL `{shown}` has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        // `shown` replaces the query: say which part without echoing it.
        return Err(format!(
            "proxy URL `{}` must not have a query or fragment",
            shown.split(['?', '#']).next().unwrap_or_default()
        ));
    }
    if url.path() != "/" {
        return Err(format!(
            "proxy URL `{shown}` must not have a path; give scheme, host and port only"
        ));
    }
    Ok(url.to_string())
}

/// One `no_proxy` entry, as curl, Go and reqwest read them: `*`, a host name, `.domain`
/// (the domain and its subdomains), an IP address or a CIDR.
pub fn check_no_proxy_entry(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("a no_proxy entry must not be empty".into());
    }
    one_word(s)?;
    if s.contains("://") {
        return Err(format!(
            "`{s}` is a URL; no_proxy takes host names, `.domain`, IP addresses and CIDRs"
        ));
    }
    if s == "*" || s.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    if let Some((addr, bits)) = s.split_once('/') {
        return check_cidr(s, addr, bits);
    }
    if host_name(s.strip_prefix('.').unwrap_or(s)) {
        return Ok(());
    }
    let hint = if s.contains(':') {
        " (ports are not supported; IPv6 addresses go without brackets)"
    } else {
        ""
    };
    Err(format!(
        "`{s}` is not a host name, `.domain`, `*`, IP address or CIDR{hint}"
    ))
}

fn check_cidr(s: &str, addr: &str, bits: &str) -> Result<(), String> {
    let Ok(ip) = addr.parse::<IpAddr>() else {
        return Err(format!("`{s}`: `{addr}` is not an IP address"));
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    match bits.parse::<u8>() {
        Ok(n) if n <= max && !bits.starts_with('+') => Ok(()),
        _ => Err(format!(
            "`{s}`: the prefix length must be a number from 0 to {max}"
        )),
    }
}

/// Dot-separated labels of letters, digits, `-` and `_`, none empty, longer than 63 or
/// beginning or ending with `-`.
fn host_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls() {
        assert_eq!(
            check_proxy_url("http://user:pass@10.0.2.2:3128").unwrap(),
            "http://user:pass@10.0.2.2:3128/"
        );
        assert_eq!(
            check_proxy_url("HTTPS://proxy.lab/").unwrap(),
            "https://proxy.lab/"
        );
        // The userinfo is percent-encoded: nothing left to quote in a drop-in.
        assert_eq!(
            check_proxy_url("http://u:p\"w%@proxy.lab:3128").unwrap(),
            "http://u:p%22w%@proxy.lab:3128/"
        );
        for (bad, why) in [
            (
                "socks5://proxy.lab:1080",
                "must start with http:// or https://",
            ),
            ("proxy.lab:3128", "must start with http:// or https://"),
            ("http://u:s3cret@proxy.lab/path", "must not have a path"),
            ("http://u:s3cret@proxy.lab/?a=b", "must not have a query"),
            ("http://u:s3cret@proxy.lab/#f", "must not have a query"),
            ("http://:3128", "not a valid proxy URL: empty host"),
            (
                "http://proxy.lab:99999",
                "not a valid proxy URL: invalid port",
            ),
            ("http://u:s3cret@proxy lab", "must not contain spaces"),
        ] {
            let e = check_proxy_url(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains("s3cret"), "{bad}: the password in {e}");
        }
        let e = check_proxy_url("http://u:s3cret@proxy.lab/path").unwrap_err();
        assert!(e.contains("`http://u:redacted@proxy.lab/path`"), "{e}");
    }

    #[test]
    fn no_proxy_entries() {
        for good in [
            "localhost",
            "*",
            ".svc.cluster.local",
            "svc.cluster.local",
            "127.0.0.1",
            "10.42.0.0/16",
            "0.0.0.0/0",
            "fd00:ec2::254",
            "fd00::/8",
            "my_host.lab",
        ] {
            assert_eq!(check_no_proxy_entry(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("", "must not be empty"),
            ("a b", "must not contain spaces"),
            ("http://proxy.lab", "is a URL"),
            ("10.0.0.0/33", "from 0 to 32"),
            ("fd00::/129", "from 0 to 128"),
            ("10.0.0.0/x", "from 0 to 32"),
            ("lab/8", "`lab` is not an IP address"),
            ("host.lab:8080", "ports are not supported"),
            ("[fd00::1]", "without brackets"),
            ("-bad.lab", "is not a host name"),
            ("a..b", "is not a host name"),
            (".", "is not a host name"),
            ("*.lab", "is not a host name"),
        ] {
            let e = check_no_proxy_entry(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
