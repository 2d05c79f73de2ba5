//! The e2e scenarios, as data: what to boot and what to expect. One driver (driver.rs) runs
//! them all.

use bootstrapd::state::journal::Verdict;
use rancher_test_server::Generation;

/// The userdata's `rancher.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Rancher >= 2.6 custom cluster through rancher-system-agent.
    SystemAgent,
    /// Rancher 2.x "existing nodes": Docker, then the rancher-agent container.
    Rke1,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::SystemAgent => "system-agent",
            Mode::Rke1 => "rke1",
        }
    }
}

/// What the server must be doing when a boot starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerCondition {
    /// `--starting-while PATH` with PATH present: every `/v3/connect/agent` answers 401 (a
    /// current Rancher before its informers sync). The driver removes PATH once the server has
    /// answered the node at least one 401.
    Starting,
}

/// One boot of a scenario's disk.
#[derive(Debug, Clone)]
pub struct Boot {
    /// `status --json`'s verdict after this boot.
    pub verdict: Verdict,
    pub before: Option<ServerCondition>,
    /// bootstrapd runs with the debug/trace log form (`BOOTSTRAPD_LOG`, through
    /// `systemd.setenv=`): the secret checks then prove that no log form prints the token.
    pub debug_log: bool,
    /// A reimage: the node's disk is replaced by a fresh copy of the image before this boot,
    /// with the same seed (same instance id, same userdata).
    pub new_disk: bool,
}

/// The server's record of the node after all boots.
#[derive(Debug, Clone)]
pub struct ExpectedRecord {
    pub generation: Generation,
    pub roles: &'static [&'static str],
    /// Accepted connections; `None` where the count is not a registration count (the rke1
    /// agent opens a new tunnel at every start of its container, every boot).
    pub connect_count: Option<u64>,
}

/// What the scenario proves.
#[derive(Debug, Clone)]
pub enum Kind {
    /// bootstrapd with userdata: every boot, outcome, idempotence, server record, secrets.
    Node {
        template: &'static str,
        mode: Mode,
        /// The userdata's roles, as written in the YAML list.
        roles: &'static str,
        boots: Vec<Boot>,
        record: ExpectedRecord,
        /// The node's only way out is the test proxy (scripts/vm.sh --proxy-only), and its
        /// template (EGRESS_TEMPLATE) names the proxy, the registry and its CA (egress.rs).
        proxy_only: bool,
        /// Docker comes from the system extension the host set-up built (SYSEXT_TEMPLATE),
        /// not from the apt repository.
        sysext: bool,
    },
    /// The image with bootstrapd.service ordered like Debian's cloud-init.service: the journal
    /// must show the ordering cycle, or the "no ordering cycle" checks prove nothing.
    Control,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    /// The hostname, the disk's name and the prefix of its checks.
    pub name: &'static str,
    pub kernel_args: &'static str,
    pub kind: Kind,
}

const NODE_TEMPLATE: &str = "tests/e2e/userdata/node.yaml";
/// A system-agent node whose machine id comes from its instance id (`machine_id: instance_id`).
const REIMAGE_TEMPLATE: &str = "tests/e2e/userdata/node-reimage.yaml";
/// A node behind the proxy, with registry auth and a trusted CA (`proxy`, `registries`,
/// `trusted_ca`, `rancher.system_default_registry`).
const EGRESS_TEMPLATE: &str = "tests/e2e/userdata/node-egress.yaml";
/// An rke1 node whose Docker comes from the system extension (`runtime.source.sysext`) served
/// beside the apt repository.
const SYSEXT_TEMPLATE: &str = "tests/e2e/userdata/node-sysext.yaml";

fn done(before: Option<ServerCondition>, debug_log: bool) -> Boot {
    Boot {
        verdict: Verdict::Done,
        before,
        debug_log,
        new_disk: false,
    }
}

/// A boot of a new disk (the node reimaged), registering again.
fn reimaged() -> Boot {
    Boot {
        new_disk: true,
        ..done(None, false)
    }
}

/// The default `BOOTSTRAPD_LOG` of a `debug_log` boot: per-module debug and trace directives
/// for the client libraries (E2E_LOG_FORM overrides it).
pub const DEBUG_LOG_FORM: &str = "info,bootstrapd=debug,bollard::docker=debug,hyper_util::client=trace,reqwest::connect=debug,zbus::connection=trace";

/// The e2e suite, in boot order (the first boots of node1, node2 and node5 log at debug/trace).
pub fn all() -> Vec<Scenario> {
    let mut all = direct();
    all.push(sysext_node());
    all.extend(behind_a_proxy());
    all.push(Scenario {
        name: "control",
        kernel_args: "bootstrapd.e2e bootstrapd.e2e.cycle",
        kind: Kind::Control,
    });
    all
}

/// The nodes that reach the servers directly.
fn direct() -> Vec<Scenario> {
    vec![
        // A Rancher >= 2.6 custom cluster worker through rancher-system-agent; its first
        // registration meets a server that is still starting. One boot: a system-agent second
        // boot from the same disk, registered once, is the immutable test's second boot.
        Scenario {
            name: "node1",
            kernel_args: "bootstrapd.e2e",
            kind: Kind::Node {
                template: NODE_TEMPLATE,
                mode: Mode::SystemAgent,
                roles: "worker",
                boots: vec![done(Some(ServerCondition::Starting), true)],
                record: ExpectedRecord {
                    generation: Generation::SystemAgent,
                    roles: &["worker"],
                    connect_count: Some(1),
                },
                proxy_only: false,
                sysext: false,
            },
        },
        // The seed scenario, Rancher 2.x "existing nodes": Docker from the distribution's
        // repositories, then the rancher-agent container (loaded from the image's archive).
        // One boot: an rke1 node's second boot from the same disk is node5's (the same apt
        // path, through the proxy) and node6's (Docker from the extension).
        Scenario {
            name: "node2",
            kernel_args: "bootstrapd.e2e",
            kind: Kind::Node {
                template: NODE_TEMPLATE,
                mode: Mode::Rke1,
                roles: "etcd, controlplane, worker",
                boots: vec![done(None, true)],
                record: ExpectedRecord {
                    generation: Generation::Rke1,
                    roles: &["etcd", "controlplane", "worker"],
                    connect_count: None,
                },
                proxy_only: false,
                sysext: false,
            },
        },
        // Reimaged: the second boot is a new disk with the same seed (same instance id). With
        // `machine_id: instance_id` Rancher must see the same machine: one record, connected
        // twice (with the default, random, it would be a second machine: README).
        Scenario {
            name: "node3",
            kernel_args: "bootstrapd.e2e",
            kind: Kind::Node {
                template: REIMAGE_TEMPLATE,
                mode: Mode::SystemAgent,
                roles: "worker",
                boots: vec![done(None, false), reimaged()],
                record: ExpectedRecord {
                    generation: Generation::SystemAgent,
                    roles: &["worker"],
                    connect_count: Some(2),
                },
                proxy_only: false,
                sysext: false,
            },
        },
    ]
}

/// rke1 on the mutable image with Docker from the system extension: placed, merged and started
/// on the first boot; on the second, merged by systemd-sysext.service and started by the boot
/// unit before bootstrapd runs, which then changes nothing.
fn sysext_node() -> Scenario {
    Scenario {
        name: "node6",
        kernel_args: "bootstrapd.e2e",
        kind: Kind::Node {
            template: SYSEXT_TEMPLATE,
            mode: Mode::Rke1,
            roles: "worker",
            boots: vec![done(None, false), done(None, false)],
            record: ExpectedRecord {
                generation: Generation::Rke1,
                roles: &["worker"],
                connect_count: None,
            },
            proxy_only: false,
            sysext: true,
        },
    }
}

/// The nodes whose only way out is the test proxy (egress.rs).
fn behind_a_proxy() -> Vec<Scenario> {
    vec![
        // Behind a proxy, system-agent: the only way out of the VM is the test proxy; the
        // registration, the agent's download and its env file go through it.
        Scenario {
            name: "node4",
            kernel_args: "bootstrapd.e2e",
            kind: Kind::Node {
                template: EGRESS_TEMPLATE,
                mode: Mode::SystemAgent,
                roles: "worker",
                boots: vec![done(None, false)],
                record: ExpectedRecord {
                    generation: Generation::SystemAgent,
                    roles: &["worker"],
                    connect_count: Some(1),
                },
                proxy_only: true,
                sysext: false,
            },
        },
        // Behind a proxy, rke1: Docker installed through it, the agent image pulled through it
        // from a registry that wants a password and whose CA only trusted_ca gives, the
        // agent's tunnel through it; the second boot changes nothing and pulls nothing.
        Scenario {
            name: "node5",
            kernel_args: "bootstrapd.e2e",
            kind: Kind::Node {
                template: EGRESS_TEMPLATE,
                mode: Mode::Rke1,
                roles: "etcd, controlplane, worker",
                boots: vec![done(None, true), done(None, false)],
                record: ExpectedRecord {
                    generation: Generation::Rke1,
                    roles: &["etcd", "controlplane", "worker"],
                    connect_count: None,
                },
                proxy_only: true,
                sysext: false,
            },
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_template_renders_to_userdata_bootstrapd_accepts() {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        for s in all() {
            let Kind::Node {
                template,
                mode,
                roles,
                proxy_only,
                ..
            } = s.kind
            else {
                continue;
            };
            let text = std::fs::read_to_string(repo.join(template)).expect("template");
            let mut extra = if proxy_only {
                crate::egress::Egress::sample().placeholders(mode)
            } else {
                Vec::new()
            };
            extra.extend(crate::host::SysextServed::sample().placeholders(18080));
            let values = crate::userdata::Values {
                server: "https://10.0.2.2:8443",
                token: "e2e-token-0123456789abcdef0123456789abcdef0123456789abcdef",
                ca_checksum: &"ab".repeat(32),
                roles,
                mode: mode.as_str(),
                extra: &extra,
            };
            let ud = crate::userdata::render(&text, &values);
            if let Err(e) = bootstrapd::userdata::parse(ud.as_bytes()) {
                panic!("{}: {e}", s.name);
            }
        }
    }

    #[test]
    fn the_suite_boots_each_node_one_reimaged_two_behind_the_proxy_and_one_control() {
        let s = all();
        let boots = |s: &Scenario| match &s.kind {
            Kind::Node { boots, .. } => boots.len(),
            Kind::Control => 1,
        };
        let names: Vec<_> = s.iter().map(|s| (s.name, boots(s))).collect();
        assert_eq!(
            names,
            vec![
                ("node1", 1),
                ("node2", 1),
                ("node3", 2),
                ("node6", 2),
                ("node4", 1),
                ("node5", 2),
                ("control", 1)
            ]
        );
        let Kind::Node { boots, .. } = &s[0].kind else {
            panic!("node1 is a node scenario");
        };
        assert_eq!(boots[0].before, Some(ServerCondition::Starting));
        assert!(boots[0].debug_log);
        let Kind::Node { boots, record, .. } = &s[2].kind else {
            panic!("node3 is a node scenario");
        };
        assert!(!boots[0].new_disk && boots[1].new_disk);
        assert_eq!(record.connect_count, Some(2));
    }
}
