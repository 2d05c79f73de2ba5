//! The nodes behind a proxy (issue: proxy, registries with auth, trusted CAs): what the host
//! side started for them (tests/e2e/lib.sh `host_start_egress`: the test proxy, the guest's
//! only way out through `scripts/vm.sh --proxy-only`, and the test registry, which wants a
//! password and serves TLS from its own CA), the userdata placeholders they fill, and the
//! checks on the guest's report and on the two servers' request logs.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::checks::Checks;
use crate::host::HostError;
use crate::report::Report;
use crate::scenario::Mode;

/// Where the guest finds the proxy: vm.sh forwards this address, and nothing else.
pub const GUEST_PROXY: &str = "10.0.2.100:3128";
/// The agent image of the direct nodes (build-agent-image.sh's default tag, baked into the
/// node image as an archive).
pub const AGENT_IMAGE: &str = "rancher/rancher-agent:v2.6.14";
/// The agent image the registry serves (lib.sh `host_start_egress` builds it with this tag):
/// another tag, so another image config than the archive baked into the node image, or
/// Docker would find the config it pulls already there and fetch no layer at all.
pub const EGRESS_AGENT_IMAGE: &str = "rancher/rancher-agent:v2.6.14-egress";

/// The egress half of WORK/host.env, with the secrets read from their 0600 files.
#[derive(Debug, Clone)]
pub struct Egress {
    /// `scripts/vm.sh --proxy-only` command: a relay from the guest's connection to the proxy.
    pub relay: String,
    proxy_user: String,
    /// Never printed; only compared with what the guest printed.
    proxy_password: String,
    /// `host:port` as the guest names the registry.
    pub registry: String,
    registry_user: String,
    /// Never printed; only compared with what the guest printed.
    registry_password: String,
    registry_ca: String,
    pub proxy_log: PathBuf,
    pub registry_log: PathBuf,
}

fn read(path: &Path) -> Result<String, HostError> {
    fs::read_to_string(path).map_err(|source| HostError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// `user:password` from a credentials file (its first line).
fn credentials(path: &Path) -> Result<(String, String), HostError> {
    let text = read(path)?;
    let line = text.lines().next().unwrap_or("");
    let (u, p) = line.split_once(':').unwrap_or((line, ""));
    Ok((u.to_string(), p.to_string()))
}

impl Egress {
    /// None when host.env names no proxy (every suite but the main e2e's).
    pub fn from_env(
        env: &BTreeMap<String, String>,
        file: &Path,
    ) -> Result<Option<Egress>, HostError> {
        let Some(relay) = env.get("HOST_PROXY_RELAY") else {
            return Ok(None);
        };
        let get = |key: &'static str| {
            env.get(key).cloned().ok_or(HostError::Missing {
                file: file.to_path_buf(),
                key,
            })
        };
        let (proxy_user, proxy_password) = credentials(Path::new(&get("HOST_PROXY_AUTH")?))?;
        let (registry_user, registry_password) =
            credentials(Path::new(&get("HOST_REGISTRY_AUTH")?))?;
        Ok(Some(Egress {
            relay: relay.clone(),
            proxy_user,
            proxy_password,
            registry: get("HOST_REGISTRY")?,
            registry_user,
            registry_password,
            registry_ca: read(Path::new(&get("HOST_REGISTRY_CA")?))?,
            proxy_log: get("HOST_PROXY_LOG")?.into(),
            registry_log: get("HOST_REGISTRY_LOG")?.into(),
        }))
    }

    /// Values of the shape the host side makes, for the template test.
    #[cfg(test)]
    pub fn sample() -> Egress {
        Egress {
            relay: "relay".into(),
            proxy_user: "e2e-proxy".into(),
            proxy_password: "proxy0password0sample".into(),
            registry: "10.0.2.2:5443".into(),
            registry_user: "e2e-registry".into(),
            registry_password: "registry0password0sample".into(),
            registry_ca: rancher_test_server::ca::decoy_ca_pem().expect("a CA"),
            proxy_log: "proxy.log".into(),
            registry_log: "registry.log".into(),
        }
    }

    /// The egress template's placeholders (tests/e2e/userdata/node-egress.yaml) for `mode`.
    /// The CA goes into a literal block indented six spaces: every line after the first gets
    /// the indent. `rancher.system_default_registry` is rke1's only (bootstrapd refuses it in
    /// system-agent mode): a comment there.
    pub fn placeholders(&self, mode: Mode) -> Vec<(String, String)> {
        let default_registry = match mode {
            Mode::Rke1 => format!(
                "system_default_registry: \"{}\"\n    agent_image: {EGRESS_AGENT_IMAGE}",
                self.registry
            ),
            Mode::SystemAgent => "# system_default_registry: rke1 only".to_string(),
        };
        let ca = self
            .registry_ca
            .trim_end()
            .lines()
            .collect::<Vec<_>>()
            .join("\n      ");
        vec![
            (
                "PROXY_URL".into(),
                format!(
                    "http://{}:{}@{GUEST_PROXY}",
                    self.proxy_user, self.proxy_password
                ),
            ),
            ("SYSTEM_DEFAULT_REGISTRY".into(), default_registry),
            ("REGISTRY".into(), self.registry.clone()),
            ("REGISTRY_USER".into(), self.registry_user.clone()),
            ("REGISTRY_PASSWORD".into(), self.registry_password.clone()),
            ("REGISTRY_CA".into(), ca),
        ]
    }

    /// The agent image as bootstrapd must run it: prefixed by `rancher.system_default_registry`.
    pub fn agent_image(&self) -> String {
        format!("{}/{EGRESS_AGENT_IMAGE}", self.registry)
    }

    /// The secrets the whole console log (journal, report, status) must not hold.
    pub fn check_secrets(&self, c: &mut Checks, label: &str, r: &Report) {
        for (what, secret) in [
            ("proxy password", &self.proxy_password),
            ("registry password", &self.registry_password),
        ] {
            c.check(
                &format!("{label}: the {what} appears nowhere on the console"),
                !secret.is_empty() && !r.console.contains(secret.as_str()),
                "found in the console log (the journal, status or the report)",
            );
        }
    }
}

/// The guest's side of a proxy-only boot: nothing reachable directly, the files bootstrapd
/// wrote for the proxy, the registry and the CA, with their modes.
pub fn check_boot(c: &mut Checks, p: &str, mode: Mode, r: &Report) {
    let direct = r.section("egress");
    c.check(
        &format!("{p}: the test servers are unreachable but through the proxy"),
        direct.iter().any(|l| l.starts_with("direct "))
            && direct
                .iter()
                .filter(|l| l.starts_with("direct "))
                .all(|l| l.ends_with(" closed")),
        direct.join("; "),
    );
    let files = r.section("egress-files");
    let mode_of = |path: &str| {
        files
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{path} ")))
            .map(str::to_string)
    };
    let wanted: &[&str] = match mode {
        Mode::Rke1 => &[
            "/etc/systemd/system/docker.service.d/http-proxy.conf",
            "/etc/systemd/system/containerd.service.d/http-proxy.conf",
        ],
        Mode::SystemAgent => &[
            "/etc/systemd/system/rancher-system-agent.env",
            "/etc/rancher/rke2/registries.yaml",
            "/etc/rancher/k3s/registries.yaml",
        ],
    };
    for f in wanted {
        c.eq(
            &format!("{p}: {f} written 0600 root (it holds a secret)"),
            Some("600 root".to_string()),
            mode_of(f),
        );
    }
    c.check(
        &format!("{p}: the registry's CA is in the system trust store"),
        files.iter().any(|l| l.starts_with("ca-file bootstrapd"))
            && files.iter().any(|l| l.starts_with("ca-link bootstrapd")),
        files.join("; "),
    );
    if mode == Mode::Rke1 {
        let names = r.section("egress-docker-env");
        c.check(
            &format!("{p}: docker.service runs with HTTPS_PROXY and NO_PROXY"),
            names.iter().any(|l| l == "HTTPS_PROXY") && names.iter().any(|l| l == "NO_PROXY"),
            names.join(" "),
        );
    }
}

/// Where the two request logs stood before a boot: the boot's traffic is what follows.
#[derive(Debug, Clone, Copy)]
pub struct LogMark {
    proxy: u64,
    registry: u64,
}

/// One JSON line of a test server's request log (tests/edge-servers: `method`, `target` or
/// `path`, `status`, `auth_presented`; never the credentials).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The proxy's target (`HOST:PORT` for CONNECT, the absolute URL otherwise) or the
    /// registry's path.
    pub target: String,
    pub status: u16,
    pub auth: bool,
}

fn requests_since(path: &Path, offset: u64) -> Vec<Request> {
    let bytes = fs::read(path).unwrap_or_default();
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    String::from_utf8_lossy(&bytes[start..])
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
            Request {
                method: s("method"),
                target: if v.get("target").is_some() {
                    s("target")
                } else {
                    s("path")
                },
                status: v.get("status").and_then(|x| x.as_u64()).unwrap_or(0) as u16,
                auth: v
                    .get("auth_presented")
                    .and_then(|x| x.as_bool())
                    .unwrap_or(false),
            }
        })
        .collect()
}

impl Egress {
    pub fn mark(&self) -> LogMark {
        let len = |p: &Path| fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        LogMark {
            proxy: len(&self.proxy_log),
            registry: len(&self.registry_log),
        }
    }

    /// The proxy's and the registry's requests since `m`.
    pub fn since(&self, m: LogMark) -> (Vec<Request>, Vec<Request>) {
        (
            requests_since(&self.proxy_log, m.proxy),
            requests_since(&self.registry_log, m.registry),
        )
    }
}

/// What one boot of a proxy-only node sent: `first`, the disk's first boot; `ports`, the
/// Rancher test server's and the apt repository's as the guest names them on 10.0.2.2.
pub struct Traffic<'a> {
    pub proxy: &'a [Request],
    pub registry: &'a [Request],
    pub first: bool,
    pub rancher: String,
    pub apt: String,
    pub registry_addr: &'a str,
}

/// The boot's traffic went through the proxy, with its password; in rke1 mode on the first
/// boot Docker came through it from the apt repository and the agent image from the registry,
/// with the registry's password; a later boot pulls nothing.
pub fn check_traffic(c: &mut Checks, p: &str, mode: Mode, t: &Traffic) {
    let through = |method: &str, target: &dyn Fn(&str) -> bool| {
        t.proxy
            .iter()
            .any(|r| r.method == method && target(&r.target) && r.status == 200 && r.auth)
    };
    if t.first || mode == Mode::Rke1 {
        c.check(
            &format!(
                "{p}: reached Rancher through the proxy (CONNECT {}, with its password)",
                t.rancher
            ),
            through("CONNECT", &|x| x == t.rancher),
            summary(t.proxy),
        );
    }
    let unauthenticated: Vec<&Request> = t.proxy.iter().filter(|r| !r.auth).collect();
    c.check(
        &format!("{p}: the proxy let nothing through without its password"),
        unauthenticated.iter().all(|r| r.status == 407),
        summary(t.proxy),
    );
    if mode != Mode::Rke1 {
        return;
    }
    let manifests: Vec<&Request> = t
        .registry
        .iter()
        .filter(|r| r.target.contains("/manifests/"))
        .collect();
    if !t.first {
        c.check(
            &format!("{p}: the agent image was not pulled again"),
            manifests.is_empty(),
            summary(t.registry),
        );
        return;
    }
    let apt = format!("http://{}/", t.apt);
    c.check(
        &format!("{p}: Docker's packages came through the proxy"),
        through("GET", &|x| x.starts_with(&apt) && x.ends_with(".deb")),
        summary(t.proxy),
    );
    c.check(
        &format!(
            "{p}: the registry was reached through the proxy (CONNECT {})",
            t.registry_addr
        ),
        through("CONNECT", &|x| x == t.registry_addr),
        summary(t.proxy),
    );
    c.check(
        &format!("{p}: the agent image's manifest was pulled with the registry's password"),
        manifests
            .iter()
            .any(|r| r.method == "GET" && r.status == 200 && r.auth),
        summary(t.registry),
    );
    let blobs = t
        .registry
        .iter()
        .filter(|r| r.target.contains("/blobs/") && r.method == "GET" && r.status == 200 && r.auth)
        .count();
    c.check(
        &format!("{p}: the image's config and layer came from the registry with its password"),
        blobs >= 2,
        summary(t.registry),
    );
    c.check(
        &format!("{p}: the registry served nothing without its password"),
        t.registry.iter().all(|r| r.auth || r.status == 401),
        summary(t.registry),
    );
}

/// A short account of a request log for a failed check: up to 12 "METHOD TARGET STATUS auth".
fn summary(rs: &[Request]) -> String {
    let lines: Vec<String> = rs
        .iter()
        .take(12)
        .map(|r| format!("{} {} {} auth={}", r.method, r.target, r.status, r.auth))
        .collect();
    format!("{} requests: {}", rs.len(), lines.join("; "))
}
