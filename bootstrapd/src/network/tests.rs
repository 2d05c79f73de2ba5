use super::*;

const STATIC: &str = "\
network:
  version: 2
  renderer: networkd
  ethernets:
    lan:
      match:
        macaddress: \"52:54:00:AB:CD:EF\"
      dhcp4: false
      addresses: [10.0.2.50/24, \"fd00::50/64\"]
      gateway4: 10.0.2.2
      nameservers:
        addresses: [10.0.2.3]
        search: [lab.example, example.com]
      routes:
        - to: 192.168.10.0/24
          via: 10.0.2.1
          metric: 100
      mtu: 1400
    eth1:
      dhcp4: yes
      dhcp6: true
      optional: true
";

const STATIC_LAN_FILE: &str = "\
# Interface `lan` of the seed's network-config: edit that, not this file (bootstrapd
# rewrites or removes it at boot).
[Match]
MACAddress=52:54:00:ab:cd:ef

[Link]
MTUBytes=1400

[Network]
DHCP=no
Address=10.0.2.50/24
Address=fd00::50/64
Gateway=10.0.2.2
DNS=10.0.2.3
Domains=lab.example example.com

[Route]
Destination=192.168.10.0/24
Gateway=10.0.2.1
Metric=100
";

const ETH1_FILE: &str = "\
# Interface `eth1` of the seed's network-config: edit that, not this file (bootstrapd
# rewrites or removes it at boot).
[Match]
Name=eth1

[Link]
RequiredForOnline=no

[Network]
DHCP=yes
";

fn problems(doc: &str) -> Vec<String> {
    match parse(doc.as_bytes()) {
        Ok(c) => panic!("accepted: {c:?}\n{doc}"),
        Err(e) => e.problems.iter().map(ToString::to_string).collect(),
    }
}

fn body_of(f: &RenderedFile) -> &str {
    f.contents.split_once('\n').unwrap().1
}

#[test]
fn parses_the_netplan_subset_and_renders_golden_files() {
    let cfg = parse(STATIC.as_bytes()).unwrap();
    assert_eq!(cfg.ethernets.len(), 2);
    let lan = &cfg.ethernets[0];
    assert_eq!(lan.match_mac.as_deref(), Some("52:54:00:ab:cd:ef"));
    assert_eq!(lan.match_name, None);
    assert!(!lan.dhcp4 && !lan.dhcp6);
    let files = render(&cfg);
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        ["10-bootstrapd-lan.network", "10-bootstrapd-eth1.network"]
    );
    assert_eq!(body_of(&files[0]), STATIC_LAN_FILE);
    assert_eq!(body_of(&files[1]), ETH1_FILE);
    for f in &files {
        assert!(f.contents.starts_with(HEADER_PREFIX), "{}", f.contents);
        assert!(is_ours(&f.contents));
        // The file sorts before the image's catch-all DHCP file.
        assert!(f.name.as_str() < "99-dhcp.network");
    }
    // The same input renders the same bytes (what makes a rerun change nothing).
    assert_eq!(render(&parse(STATIC.as_bytes()).unwrap()), files);
}

#[test]
fn bare_version_2_default_routes_and_gateway6() {
    let doc = "version: 2\nethernets:\n  ens3:\n    addresses: [\"2001:db8::5/64\"]\n    \
               gateway6: \"2001:db8::1\"\n    routes:\n      - {to: default, via: \"2001:db8::2\"}\n      \
               - {to: default, via: 10.0.0.1}\n";
    let cfg = parse(doc.as_bytes()).unwrap();
    let body = render(&cfg)[0].contents.clone();
    assert!(body.contains("\nName=ens3\n"), "{body}");
    assert!(body.contains("\nGateway=2001:db8::1\n"), "{body}");
    assert!(
        body.contains("Destination=::/0\nGateway=2001:db8::2\n"),
        "{body}"
    );
    assert!(
        body.contains("Destination=0.0.0.0/0\nGateway=10.0.0.1\n"),
        "{body}"
    );
}

#[test]
fn config_disabled_is_an_empty_config() {
    let cfg = parse(b"network:\n  config: disabled\n").unwrap();
    assert!(cfg.ethernets.is_empty());
    assert!(render(&cfg).is_empty());
}

#[test]
fn version_1_and_other_versions_are_refused_with_positions() {
    // A version 1 document (its `config` list) is told to use version 2, nothing else.
    let p = problems("network:\n  version: 1\n  config:\n    - type: physical\n");
    assert_eq!(
        p,
        [
            "2:12: network.version: version 1 is not supported, use version 2 (netplan syntax: `ethernets`)"
        ]
    );
    let p = problems("version: 2\nconfig: enabled\n");
    assert_eq!(p, ["2:9: config: only `config: disabled` is known here"]);
    let p = problems("network:\n  version: 1\n  ethernets: {}\n");
    assert_eq!(
        p,
        [
            "2:12: network.version: version 1 is not supported, use version 2 (netplan syntax: `ethernets`)"
        ]
    );
    let p = problems("version: 3\n");
    assert_eq!(p, ["1:10: version: version 3 is not supported, use 2"]);
    let p = problems("ethernets: {}\n");
    assert_eq!(
        p,
        ["1:1: version: missing required key `version` (write `version: 2`)"]
    );
}

#[test]
fn every_mistake_is_reported_at_its_place() {
    let doc = "\
version: 2
ethernets:
  lan:
    match: {macaddress: \"52:54:00:zz:00:01\"}
    dhcp4: maybe
    adresses: [10.0.2.50/24]
    addresses: [10.0.2.300/24, 10.0.2.5, \"fd00::1/129\"]
    gateway4: \"fd00::1\"
    nameservers: {addresses: [dns.example], search: [\"bad domain\"]}
    routes:
      - to: 192.168.0.0/16
      - {to: \"fd00::/8\", via: 10.0.0.1}
      - {to: default, via: 10.0.0.1, onlink: true}
    mtu: 20
  \"en*\":
    dhcp4: true
  averyveryverylongname:
    match: {name: \"a b\"}
  enp0s31f6-uplink-1:
    dhcp4: true
  bridge0/x:
    match: {name: br0}
  eth2:
    match: {}
    set-name: wan
bonds: {}
";
    let p = problems(doc);
    let expected = [
        "6:5: ethernets.lan.adresses: unknown key `adresses`; did you mean `addresses`?",
        "5:12: ethernets.lan.dhcp4: expected `true` or `false`",
        "4:25: ethernets.lan.match.macaddress: `52:54:00:zz:00:01` is not a MAC address (six hex pairs separated by `:`)",
        "7:17: ethernets.lan.addresses[0]: `10.0.2.300/24` is not an address with a prefix length (e.g. `10.0.2.50/24` or `fd00::5/64`)",
        "7:32: ethernets.lan.addresses[1]: `10.0.2.5` is not an address with a prefix length (e.g. `10.0.2.50/24` or `fd00::5/64`)",
        "7:42: ethernets.lan.addresses[2]: `fd00::1/129` is not an address with a prefix length (e.g. `10.0.2.50/24` or `fd00::5/64`)",
        "8:15: ethernets.lan.gateway4: `fd00::1` is not an IPv4 address",
        "11:9: ethernets.lan.routes[0].via: missing required key `via`",
        "12:14: ethernets.lan.routes[1].to: `to` and `via` are of different IP families",
        "13:38: ethernets.lan.routes[2].onlink: unknown key `onlink`; expected one of `to`, `via`, `metric`",
        "9:31: ethernets.lan.nameservers.addresses[0]: `dns.example` is not an IP address",
        "9:54: ethernets.lan.nameservers.search[0]: `bad domain` is not a search domain",
        "14:10: ethernets.lan.mtu: 20 is out of range 68..=65535",
        "15:3: ethernets.en*: the ID `en*` names the file 10-bootstrapd-ID.network: use up to 64 letters, digits, `-`, `_` and `.`",
        "18:19: ethernets.averyveryverylongname.match.name: `a b` is not an interface name (at most 15 characters, no `/`, `:`, spaces)",
        "19:3: ethernets.enp0s31f6-uplink-1: `enp0s31f6-uplink-1` is not an interface name (at most 15 characters, no `/`, `:`, spaces or globs), so it needs `match` with `name` or `macaddress`",
        "21:3: ethernets.bridge0/x: the ID `bridge0/x` names the file 10-bootstrapd-ID.network: use up to 64 letters, digits, `-`, `_` and `.`",
        "24:5: ethernets.eth2.match: `match` needs `name` or `macaddress`",
        "25:5: ethernets.eth2.set-name: `set-name` is not supported: renaming needs a .link file before udev names the device, which an early boot stage cannot promise; match the interface by `macaddress` and use the name the kernel gives it",
        "26:1: bonds: `bonds` is not supported: bootstrapd configures `ethernets` only",
    ];
    let mut expected = expected.to_vec();
    // In document order, as the userdata's problems are.
    expected.sort_by_key(|e| {
        let mut n = e.split(':').map(|x| x.parse::<usize>().unwrap_or(0));
        (n.next(), n.next())
    });
    assert_eq!(p, expected, "all:\n{}", p.join("\n"));
}

#[test]
fn yaml_errors_size_and_encoding() {
    let p = problems("version: 2\nethernets: [\n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].contains("YAML syntax error"), "{p:?}");
    let p = problems("version: 2\nversion: 2\n");
    assert!(
        p[0].starts_with("2:1: version: duplicate key `version`"),
        "{p:?}"
    );
    let big = format!("version: 2\n#{}\n", "x".repeat(MAX_NETWORK_CONFIG_BYTES));
    assert!(problems(&big)[0].contains("more than the 262144 accepted"));
    let e = parse(b"version: 2\n\xff\n").unwrap_err().to_string();
    assert!(e.starts_with("network-config is not UTF-8"), "{e}");
    assert!(problems("")[0].starts_with("network-config is empty"));
    assert!(
        problems("renderer: NetworkManager\nversion: 2\n")[0]
            .starts_with("1:11: renderer: renderer `NetworkManager` is not supported")
    );
}

#[test]
fn an_edited_file_is_not_ours() {
    let cfg = parse(STATIC.as_bytes()).unwrap();
    let f = &render(&cfg)[0];
    assert!(is_ours(&f.contents));
    assert!(!is_ours(&f.contents.replace("DHCP=no", "DHCP=yes")));
    assert!(!is_ours("[Match]\nName=en*\n\n[Network]\nDHCP=yes\n"));
    assert!(!is_ours(""));
}

#[test]
fn mutated_network_configs_never_panic_and_errors_point_inside() {
    let seeds = [
        STATIC,
        include_str!("../../../configs/examples/network-config.yaml"),
    ];
    let mut rng = fastrand::Rng::with_seed(17);
    for seed in seeds {
        for _ in 0..1500 {
            let mut b = seed.as_bytes().to_vec();
            for _ in 0..rng.usize(1..4) {
                let i = rng.usize(..b.len());
                match rng.u8(..3) {
                    0 => b[i] = b" :-[]{}\n\"'x1.&*!"[rng.usize(..16)],
                    1 => {
                        b.remove(i);
                    }
                    _ => b.insert(i, b[rng.usize(..b.len())]),
                }
            }
            let lines = b.split(|c| *c == b'\n').count();
            if let Err(e) = parse(&b) {
                assert!(!e.problems.is_empty());
                for p in &e.problems {
                    assert!(
                        p.line <= lines + 1,
                        "{p} past the end of:\n{}",
                        String::from_utf8_lossy(&b)
                    );
                }
            }
        }
    }
}
