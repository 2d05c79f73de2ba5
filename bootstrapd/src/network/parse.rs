//! network-config (netplan v2 subset) from the spanned YAML tree, every problem with its
//! position.

use std::net::IpAddr;

use super::{Ethernet, MAX_NETWORK_CONFIG_BYTES, NetworkConfig, NetworkConfigError, Route};
use crate::userdata::Problem;
use crate::userdata::closest;
use crate::userdata::tree::{self, Mark, Node, Style, Value, join_key, shown};

/// Keys of netplan v2 other than `ethernets` that bootstrapd does not render: named so the
/// message says "not supported" rather than "unknown".
const UNSUPPORTED_DEVICES: [&str; 9] = [
    "bonds",
    "bridges",
    "vlans",
    "wifis",
    "tunnels",
    "vrfs",
    "modems",
    "dummy-devices",
    "virtual-ethernets",
];
const TOP_KEYS: [&str; 4] = ["version", "renderer", "ethernets", "config"];
const ETHERNET_KEYS: [&str; 11] = [
    "match",
    "set-name",
    "dhcp4",
    "dhcp6",
    "addresses",
    "gateway4",
    "gateway6",
    "routes",
    "nameservers",
    "mtu",
    "optional",
];

/// Parses and checks a network-config document (with or without the `network:` wrapper).
pub fn parse(bytes: &[u8]) -> Result<NetworkConfig, NetworkConfigError> {
    if bytes.len() > MAX_NETWORK_CONFIG_BYTES {
        return Err(NetworkConfigError::whole(format!(
            "network-config is {} bytes, more than the {MAX_NETWORK_CONFIG_BYTES} accepted",
            bytes.len()
        )));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| NetworkConfigError::whole(format!("network-config is not UTF-8: {e}")))?;
    let built = tree::build(text);
    let mut c = Checker {
        problems: built.problems,
    };
    let config = built.root.as_ref().and_then(|root| c.document(root));
    if !c.problems.is_empty() {
        // Checks run section by section; the reader wants them in document order.
        c.problems.sort_by_key(|p| (p.line, p.column));
        return Err(NetworkConfigError {
            problems: c.problems,
        });
    }
    config.ok_or_else(|| {
        NetworkConfigError::whole(
            "network-config is empty: write `version: 2` and `ethernets`, or remove the file",
        )
    })
}

/// The entries of a checked mapping: key text, key node, value node.
type Entries<'a> = Vec<(&'a str, &'a Node, &'a Node)>;

fn value_of<'a>(entries: &Entries<'a>, key: &str) -> Option<(&'a Node, &'a Node)> {
    entries
        .iter()
        .find(|(k, _, v)| *k == key && !v.is_null())
        .map(|(_, k, v)| (*k, *v))
}

struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn report(&mut self, mark: Mark, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            line: mark.line,
            column: mark.column,
            path: path.to_string(),
            message: message.into(),
        });
    }

    /// The top level: `network:` wrapping the body, or the body itself (cloud-init accepts
    /// both).
    fn document(&mut self, root: &Node) -> Option<NetworkConfig> {
        if root.is_null() {
            return None;
        }
        match root.get("network") {
            Some(_) => {
                let entries = self.map(root, "", &["network"])?;
                let (_, body) = value_of(&entries, "network")?;
                self.body(body, "network")
            }
            None => self.body(root, ""),
        }
    }

    fn body(&mut self, node: &Node, path: &str) -> Option<NetworkConfig> {
        let known: Vec<&str> = TOP_KEYS
            .iter()
            .chain(&UNSUPPORTED_DEVICES)
            .copied()
            .collect();
        let entries = self.map(node, path, &known)?;
        let config = value_of(&entries, "config");
        if let Some((_, v)) = config
            && v.scalar_text() == Some("disabled")
        {
            return Some(NetworkConfig::default());
        }
        let version = self.version(&entries, node.mark, path);
        if let Some((_, v)) = config
            && version != Some(1)
        {
            self.report(
                v.mark,
                &join_key(path, "config"),
                "only `config: disabled` is known here",
            );
        }
        for (k, kn, _) in &entries {
            if UNSUPPORTED_DEVICES.contains(k) {
                self.report(
                    kn.mark,
                    &join_key(path, k),
                    format!("`{k}` is not supported: bootstrapd configures `ethernets` only"),
                );
            }
        }
        if let Some((_, v)) = value_of(&entries, "renderer") {
            let p = join_key(path, "renderer");
            if let Some(r) = self.string(v, &p).filter(|r| r != "networkd") {
                self.report(
                    v.mark,
                    &p,
                    format!(
                        "renderer `{}` is not supported: bootstrapd writes systemd-networkd \
                         files; write `networkd` or leave it out",
                        shown(&r)
                    ),
                );
            }
        }
        let ethernets = match value_of(&entries, "ethernets") {
            Some((_, v)) => self.ethernets(v, &join_key(path, "ethernets"))?,
            None => Vec::new(),
        };
        Some(NetworkConfig { ethernets })
    }

    /// Checks `version`; returns what it says, when it is a number.
    fn version(&mut self, entries: &Entries<'_>, at: Mark, path: &str) -> Option<u64> {
        let p = join_key(path, "version");
        let Some((_, v)) = value_of(entries, "version") else {
            self.report(
                at,
                &p,
                "missing required key `version` (write `version: 2`)",
            );
            return None;
        };
        let n = self.integer(v, &p, 0, u64::from(u32::MAX));
        match n {
            Some(2) | None => {}
            Some(1) => self.report(
                v.mark,
                &p,
                "version 1 is not supported, use version 2 (netplan syntax: `ethernets`)",
            ),
            Some(n) => self.report(v.mark, &p, format!("version {n} is not supported, use 2")),
        }
        n
    }

    fn ethernets(&mut self, node: &Node, path: &str) -> Option<Vec<Ethernet>> {
        let Value::Map(entries) = &node.value else {
            self.report(node.mark, path, "expected a mapping of interface IDs");
            return None;
        };
        let mut out = Vec::new();
        for (k, v) in entries {
            let Some(id) = k.scalar_text() else {
                self.report(k.mark, path, "interface IDs must be plain words");
                continue;
            };
            if let Some(e) = self.ethernet(id, k.mark, v, &join_key(path, id)) {
                out.push(e);
            }
        }
        Some(out)
    }

    fn ethernet(&mut self, id: &str, at: Mark, node: &Node, path: &str) -> Option<Ethernet> {
        let entries = self.map(node, path, &ETHERNET_KEYS)?;
        let before = self.problems.len();
        let id_ok = check_id(id)
            .map_err(|why| self.report(at, path, why))
            .is_ok();
        let mut e = Ethernet {
            id: id.to_string(),
            match_name: None,
            match_mac: None,
            dhcp4: self.flag(&entries, "dhcp4", path),
            dhcp6: self.flag(&entries, "dhcp6", path),
            optional: self.flag(&entries, "optional", path),
            addresses: Vec::new(),
            gateways: Vec::new(),
            routes: Vec::new(),
            nameservers: Vec::new(),
            search: Vec::new(),
            mtu: None,
        };
        self.matching(&entries, id_ok.then_some(at), path, &mut e);
        self.unsupported(&entries, path);
        if let Some((_, v)) = value_of(&entries, "addresses") {
            e.addresses = self.list(v, &join_key(path, "addresses"), |c, n, p| {
                let s = c.string(n, p)?;
                c.check(n, p, check_cidr(&s, "an address").map(|_| s))
            });
        }
        for (key, v4) in [("gateway4", true), ("gateway6", false)] {
            if let Some((_, v)) = value_of(&entries, key) {
                let p = join_key(path, key);
                if let Some(s) = self.string(v, &p)
                    && let Some(ip) = self.check(v, &p, check_ip_family(&s, v4))
                {
                    e.gateways.push(ip);
                }
            }
        }
        if let Some((_, v)) = value_of(&entries, "routes") {
            e.routes = self.list(v, &join_key(path, "routes"), Checker::route);
        }
        if let Some((_, v)) = value_of(&entries, "nameservers") {
            self.nameservers(v, &join_key(path, "nameservers"), &mut e);
        }
        if let Some((_, v)) = value_of(&entries, "mtu") {
            e.mtu = self
                .integer(v, &join_key(path, "mtu"), 68, 65535)
                .map(|n| n as u32);
        }
        (self.problems.len() == before).then_some(e)
    }

    /// `match`, or the ID itself as the interface name. `id_at`: where the ID is, None when
    /// the ID was refused already.
    fn matching(
        &mut self,
        entries: &Entries<'_>,
        id_at: Option<Mark>,
        path: &str,
        e: &mut Ethernet,
    ) {
        let Some((mk, m)) = value_of(entries, "match") else {
            match (check_ifname(&e.id, false), id_at) {
                (Ok(()), _) => e.match_name = Some(e.id.clone()),
                (Err(why), Some(at)) => self.report(
                    at,
                    path,
                    format!(
                        "`{}` {why}, so it needs `match` with `name` or `macaddress`",
                        shown(&e.id)
                    ),
                ),
                (Err(_), None) => {}
            }
            return;
        };
        let p = join_key(path, "match");
        let Some(fields) = self.map(m, &p, &["name", "macaddress", "driver"]) else {
            return;
        };
        if let Some((k, _)) = value_of(&fields, "driver") {
            self.report(
                k.mark,
                &join_key(&p, "driver"),
                "`match.driver` is not supported",
            );
        }
        if let Some((_, v)) = value_of(&fields, "name") {
            let q = join_key(&p, "name");
            if let Some(s) = self.string(v, &q) {
                let r = check_ifname(&s, true).map_err(|why| format!("`{}` {why}", shown(&s)));
                e.match_name = self.check(v, &q, r.map(|_| s));
            }
        }
        if let Some((_, v)) = value_of(&fields, "macaddress") {
            let q = join_key(&p, "macaddress");
            if let Some(s) = self.string(v, &q) {
                e.match_mac = self.check(v, &q, check_mac(&s));
            }
        }
        if value_of(&fields, "name").is_none() && value_of(&fields, "macaddress").is_none() {
            self.report(mk.mark, &p, "`match` needs `name` or `macaddress`");
        }
    }

    /// `set-name` would change the meaning if silently dropped.
    fn unsupported(&mut self, entries: &Entries<'_>, path: &str) {
        if let Some((k, _)) = value_of(entries, "set-name") {
            self.report(
                k.mark,
                &join_key(path, "set-name"),
                "`set-name` is not supported: renaming needs a .link file before udev names \
                 the device, which an early boot stage cannot promise; match the interface by \
                 `macaddress` and use the name the kernel gives it",
            );
        }
    }

    fn route(&mut self, node: &Node, path: &str) -> Option<Route> {
        let entries = self.map(node, path, &["to", "via", "metric"])?;
        let mut get = |key: &str| match value_of(&entries, key) {
            Some((_, v)) => Some(v),
            None => {
                self.report(
                    node.mark,
                    &join_key(path, key),
                    format!("missing required key `{key}`"),
                );
                None
            }
        };
        let (to, via) = (get("to"), get("via"));
        let (to, via) = (to?, via?);
        let (tp, vp) = (join_key(path, "to"), join_key(path, "via"));
        let via_text = self.string(via, &vp)?;
        let via_ip = self.check(
            via,
            &vp,
            via_text
                .parse::<IpAddr>()
                .map_err(|_| format!("`{}` is not an IP address", shown(&via_text))),
        )?;
        let to_text = self.string(to, &tp)?;
        let to = if to_text == "default" {
            if via_ip.is_ipv4() {
                "0.0.0.0/0"
            } else {
                "::/0"
            }
            .to_string()
        } else {
            let net = self.check(to, &tp, check_cidr(&to_text, "a destination"))?;
            if net.is_ipv4() != via_ip.is_ipv4() {
                self.report(to.mark, &tp, "`to` and `via` are of different IP families");
                return None;
            }
            to_text
        };
        let metric = match value_of(&entries, "metric") {
            Some((_, v)) => {
                Some(self.integer(v, &join_key(path, "metric"), 0, u64::from(u32::MAX))? as u32)
            }
            None => None,
        };
        Some(Route {
            to,
            via: via_ip,
            metric,
        })
    }

    fn nameservers(&mut self, node: &Node, path: &str, e: &mut Ethernet) {
        let Some(entries) = self.map(node, path, &["addresses", "search"]) else {
            return;
        };
        if let Some((_, v)) = value_of(&entries, "addresses") {
            e.nameservers = self.list(v, &join_key(path, "addresses"), |c, n, p| {
                let s = c.string(n, p)?;
                c.check(
                    n,
                    p,
                    s.parse::<IpAddr>()
                        .map_err(|_| format!("`{}` is not an IP address", shown(&s))),
                )
            });
        }
        if let Some((_, v)) = value_of(&entries, "search") {
            e.search = self.list(v, &join_key(path, "search"), |c, n, p| {
                let s = c.string(n, p)?;
                c.check(n, p, check_domain(&s).map(|_| s))
            });
        }
    }
}

/// The value kinds, as the userdata validator reads them.
impl Checker {
    /// A mapping whose keys are all in `known` (unknown ones reported, with a suggestion).
    /// A null node is an empty mapping.
    fn map<'a>(&mut self, node: &'a Node, path: &str, known: &[&str]) -> Option<Entries<'a>> {
        if node.is_null() {
            return Some(Vec::new());
        }
        let Value::Map(entries) = &node.value else {
            self.report(node.mark, path, "expected a mapping");
            return None;
        };
        let mut out = Vec::new();
        for (k, v) in entries {
            let Some(name) = k.scalar_text() else {
                self.report(k.mark, path, "keys must be plain words");
                continue;
            };
            if known.contains(&name) {
                out.push((name, k, v));
                continue;
            }
            let message = match closest(name, known) {
                Some(near) => format!("unknown key `{}`; did you mean `{near}`?", shown(name)),
                None => format!(
                    "unknown key `{}`; expected one of {}",
                    shown(name),
                    known
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            self.report(k.mark, &join_key(path, name), message);
        }
        Some(out)
    }

    fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match (&node.value, &node.tag) {
            (Value::Scalar { text, .. }, None) if !node.is_null() => Some(text.clone()),
            (Value::Scalar { text, .. }, Some(t)) if t == "!!str" => Some(text.clone()),
            _ => {
                self.report(node.mark, path, "expected a string");
                None
            }
        }
    }

    /// A boolean as netplan reads it: `true`/`false`, and the YAML 1.1 words netplan
    /// documents and most examples use (`yes`, `no`, `on`, `off`).
    fn flag(&mut self, entries: &Entries<'_>, key: &str, path: &str) -> bool {
        let Some((_, v)) = value_of(entries, key) else {
            return false;
        };
        if let (
            Value::Scalar {
                text,
                style: Style::Plain,
            },
            None,
        ) = (&v.value, &v.tag)
        {
            match text.to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "y" => return true,
                "false" | "no" | "off" | "n" => return false,
                _ => {}
            }
        }
        self.report(v.mark, &join_key(path, key), "expected `true` or `false`");
        false
    }

    fn integer(&mut self, node: &Node, path: &str, min: u64, max: u64) -> Option<u64> {
        if let (
            Value::Scalar {
                text,
                style: Style::Plain,
            },
            None,
        ) = (&node.value, &node.tag)
            && let Ok(n) = text.parse::<u64>()
        {
            if (min..=max).contains(&n) {
                return Some(n);
            }
            self.report(
                node.mark,
                path,
                format!("{n} is out of range {min}..={max}"),
            );
            return None;
        }
        self.report(node.mark, path, "expected a whole number");
        None
    }

    /// Each item of a list through `item`; items that fail are reported by `item` and left
    /// out.
    fn list<T>(
        &mut self,
        node: &Node,
        path: &str,
        item: impl Fn(&mut Checker, &Node, &str) -> Option<T>,
    ) -> Vec<T> {
        let Value::Seq(items) = &node.value else {
            self.report(node.mark, path, "expected a list");
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, n)| item(self, n, &format!("{path}[{i}]")))
            .collect()
    }

    /// The value of a check, or its reason reported at the node.
    fn check<T>(&mut self, node: &Node, path: &str, r: Result<T, String>) -> Option<T> {
        r.map_err(|why| self.report(node.mark, path, why)).ok()
    }
}

/// The ID names the file (`10-bootstrapd-ID.network`).
fn check_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the ID `{}` names the file 10-bootstrapd-ID.network: use up to 64 letters, digits, \
             `-`, `_` and `.`",
            shown(id)
        ))
    }
}

/// A kernel interface name (at most 15 bytes, no `/`, `:` or white space); with `glob`,
/// also a networkd `Name=` glob (`en*`).
fn check_ifname(name: &str, glob: bool) -> Result<(), String> {
    let globby = name.contains(['*', '?', '[']);
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.contains(['/', ':'])
        || name.chars().any(char::is_whitespace)
        || (!glob && globby)
        || (!globby && name.len() > 15)
    {
        return Err(format!(
            "is not an interface name (at most 15 characters, no `/`, `:`, spaces{})",
            if glob { "" } else { " or globs" }
        ));
    }
    Ok(())
}

/// `aa:bb:cc:dd:ee:ff`, lowercased.
fn check_mac(s: &str) -> Result<String, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    if ok {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!(
            "`{}` is not a MAC address (six hex pairs separated by `:`)",
            shown(s)
        ))
    }
}

/// `ADDRESS/PREFIX` with a prefix in range for the family; the address is returned.
fn check_cidr(s: &str, what: &str) -> Result<IpAddr, String> {
    let bad = || {
        format!(
            "`{}` is not {what} with a prefix length (e.g. `10.0.2.50/24` or `fd00::5/64`)",
            shown(s)
        )
    };
    let (ip, prefix) = s.split_once('/').ok_or_else(bad)?;
    let ip: IpAddr = ip.parse().map_err(|_| bad())?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    match prefix.parse::<u8>() {
        Ok(p) if p <= max && prefix.chars().all(|c| c.is_ascii_digit()) => Ok(ip),
        _ => Err(bad()),
    }
}

fn check_ip_family(s: &str, v4: bool) -> Result<IpAddr, String> {
    match s.parse::<IpAddr>() {
        Ok(ip) if ip.is_ipv4() == v4 => Ok(ip),
        _ => Err(format!(
            "`{}` is not an {} address",
            shown(s),
            if v4 { "IPv4" } else { "IPv6" }
        )),
    }
}

/// A DNS search domain: labels of letters, digits, `-` and `_`, dot-separated.
fn check_domain(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.trim_end_matches('.').split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        });
    if ok {
        Ok(())
    } else {
        Err(format!("`{}` is not a search domain", shown(s)))
    }
}
