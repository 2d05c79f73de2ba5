//! Every userdata format, from the shipped examples and real encodings (gzip, base64 MIME).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use base64::Engine as _;
use bootstrapd::userdata::{
    self, DEFAULT_AGENT_IMAGE, DEFAULT_DEADLINE_SECONDS, Engine, FirewalldPolicy, Format,
    IptablesBackend, MAX_USERDATA_BYTES, RegistrationMode, RepoSource, Role, RuntimeSource,
    SelinuxPolicy, SwapPolicy, Taint, TaintEffect,
};

const CHECKSUM: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const TOKEN: &str = "fake-token-for-examples-only-0000000000000000000000000";

fn example(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../configs/examples")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn mime(parts: &[(&str, &str, &[u8])]) -> Vec<u8> {
    let mut out =
        b"Content-Type: multipart/mixed; boundary=\"==B==\"\nMIME-Version: 1.0\n\n".to_vec();
    for (ctype, encoding, body) in parts {
        out.extend_from_slice(
            format!("--==B==\nContent-Type: {ctype}\nContent-Transfer-Encoding: {encoding}\n\n")
                .as_bytes(),
        );
        out.extend_from_slice(body);
        out.extend_from_slice(b"\n");
    }
    out.extend_from_slice(b"--==B==--\n");
    out
}

fn base64_lines(bytes: &[u8]) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(76)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    lines.join("\n").into_bytes()
}

#[test]
fn plain_example_etcd_controlplane() {
    let p = userdata::parse(&example("node1-etcd-controlplane.yaml")).unwrap();
    assert_eq!(p.format, Format::Yaml);
    // rke1 is chosen explicitly, and validate warns it needs Rancher <= 2.11.
    assert_eq!(p.notes, vec![userdata::RKE1_NOTE.to_string()]);
    assert!(p.notes[0].contains("Rancher <= 2.11"));
    assert_eq!(p.settings.rancher.agent_image, DEFAULT_AGENT_IMAGE);
    let s = p.settings;
    assert_eq!(s.roles, vec![Role::Etcd, Role::Controlplane]);
    assert_eq!(s.rancher.server, "https://rancher.example.com");
    assert_eq!(s.rancher.token.expose(), TOKEN);
    assert_eq!(s.rancher.ca_checksum.as_deref(), Some(CHECKSUM));
    assert_eq!(s.rancher.mode, RegistrationMode::Rke1);
    assert_eq!(s.rancher.node_name.as_deref(), Some("node1"));
    assert_eq!(s.rancher.address.as_deref(), Some("192.168.56.11"));
    assert_eq!(s.rancher.internal_address.as_deref(), Some("192.168.56.11"));
    assert_eq!(
        s.rancher.labels,
        BTreeMap::from([("lab.example.com/rack".to_string(), "r1".to_string())])
    );
    assert_eq!(
        s.rancher.taints,
        vec![Taint {
            key: "node-role.kubernetes.io/etcd".into(),
            value: "true".into(),
            effect: TaintEffect::NoExecute,
        }]
    );
    assert_eq!(s.runtime.version.as_deref(), Some("20.10"));
    assert_eq!(s.runtime.source, RuntimeSource::Distro);
    assert_eq!(s.host.firewalld, FirewalldPolicy::Disable);
    assert_eq!(s.host.swap, SwapPolicy::Off);
}

#[test]
fn plain_example_worker_gets_defaults() {
    let p = userdata::parse(&example("worker.yaml")).unwrap();
    let s = p.settings;
    assert_eq!(s.roles, vec![Role::Worker]);
    // system-agent is the default (RKE1 is gone from Rancher 2.12 on); no agent image there.
    assert_eq!(s.rancher.mode, RegistrationMode::SystemAgent);
    assert_eq!(s.rancher.agent_image, "");
    assert_eq!(s.rancher.strict_verify, None);
    assert_eq!(s.rancher.deadline_seconds, DEFAULT_DEADLINE_SECONDS);
    assert_eq!(s.rancher.node_name, None);
    assert!(s.rancher.taints.is_empty());
    assert_eq!(s.runtime, Default::default());
    assert_eq!(s.host.selinux, SelinuxPolicy::Require);
    assert_eq!(s.host.iptables_backend, IptablesBackend::Auto);
    assert_eq!(s.host.modules, vec!["vxlan", "ip_vs"]);
    // Plain numbers are kept as written, for the sysctl.d file.
    assert_eq!(s.host.sysctls["vm.max_map_count"], "262144");
    assert_eq!(s.host.sysctls["fs.inotify.max_user_instances"], "8192");
}

#[test]
fn plain_example_system_agent() {
    let s = userdata::parse(&example("system-agent.yaml"))
        .unwrap()
        .settings;
    assert_eq!(s.roles, Role::ALL.to_vec());
    assert_eq!(s.rancher.mode, RegistrationMode::SystemAgent);
    assert_eq!(s.runtime.engine, Engine::Containerd);
    assert_eq!(s.host.selinux, SelinuxPolicy::Install);
    assert_eq!(s.host.iptables_backend, IptablesBackend::Nft);
    assert_eq!(s.rancher.labels["cattle.io/os"], "linux");
}

#[test]
fn cloud_config_example_notes_other_keys_once() {
    let p = userdata::parse(&example("cloud-config.yaml")).unwrap();
    assert_eq!(p.format, Format::CloudConfig);
    assert_eq!(
        p.notes,
        vec![
            "cloud-config keys left to cloud-init (ignored by bootstrapd): hostname, \
             package_update, packages, runcmd"
                .to_string()
        ]
    );
    let s = p.settings;
    assert_eq!(s.roles, vec![Role::Worker]);
    assert_eq!(s.rancher.node_name.as_deref(), Some("node4"));
    assert_eq!(s.runtime.version.as_deref(), Some(">=20.10"));
    assert_eq!(
        s.runtime.source,
        RuntimeSource::Repo(RepoSource {
            url: "https://download.docker.com/linux/debian".into(),
            key: Some("https://download.docker.com/linux/debian/gpg".into()),
            suite: Some("bookworm".into()),
            components: vec!["stable".into()],
            trusted: false,
        })
    );
    assert_eq!(
        s.runtime.registry_mirrors,
        vec!["https://mirror.example.com"]
    );
}

#[test]
fn multipart_example_uses_the_cloud_config_part() {
    let p = userdata::parse(&example("multipart.txt")).unwrap();
    assert_eq!(
        p.format,
        Format::Multipart {
            part: 2,
            inner: Box::new(Format::CloudConfig)
        }
    );
    assert_eq!(
        p.format.to_string(),
        "MIME multipart (part 2: #cloud-config)"
    );
    assert_eq!(
        p.notes,
        vec![
            "MIME part 1 (text/x-shellscript) ignored: bootstrapd reads only the cloud-config part"
                .to_string(),
            "cloud-config keys left to cloud-init (ignored by bootstrapd): timezone".to_string(),
        ]
    );
    assert_eq!(p.settings.rancher.node_name.as_deref(), Some("node5"));
    assert_eq!(p.settings.rancher.token.expose(), TOKEN);
}

#[test]
fn gzip_of_each_format() {
    for (name, inner) in [
        ("worker.yaml", Format::Yaml),
        ("cloud-config.yaml", Format::CloudConfig),
        (
            "multipart.txt",
            Format::Multipart {
                part: 2,
                inner: Box::new(Format::CloudConfig),
            },
        ),
    ] {
        let plain = userdata::parse(&example(name)).unwrap();
        let zipped = userdata::parse(&gzip(&example(name))).unwrap();
        assert_eq!(zipped.format, Format::Gzip(Box::new(inner)), "{name}");
        assert_eq!(zipped.settings, plain.settings, "{name}");
        assert_eq!(zipped.notes, plain.notes, "{name}");
    }
    assert_eq!(
        Format::Gzip(Box::new(Format::CloudConfig)).to_string(),
        "gzip(#cloud-config)"
    );
}

#[test]
fn gzip_errors_keep_positions_of_the_gunzipped_text() {
    let doc = b"roles: [worker]\nrancher:\n  server: https://rancher.example.com\n  token: t\n  mode: rke3\n";
    let e = userdata::parse(&gzip(doc)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "5:9: rancher.mode: unknown value `rke3`; expected one of `rke1`, `system-agent` (did you mean `rke1`?)"
    );
}

#[test]
fn multipart_base64_part() {
    let cc = example("cloud-config.yaml");
    let body = base64_lines(&cc);
    let msg = mime(&[
        ("text/x-shellscript", "7bit", b"#!/bin/sh\ntrue"),
        ("text/cloud-config; charset=\"utf-8\"", "base64", &body),
    ]);
    let p = userdata::parse(&msg).unwrap();
    assert_eq!(
        p.format,
        Format::Multipart {
            part: 2,
            inner: Box::new(Format::CloudConfig)
        }
    );
    assert_eq!(
        p.settings,
        userdata::parse(&cc).unwrap().settings,
        "same settings as the cloud-config itself"
    );
}

#[test]
fn multipart_gzip_base64_part_and_plain_text_part() {
    // cloud-init's own `write-mime-multipart --gzip` style: a gzip'd part, base64 encoded,
    // typed by content (text/plain starting with #cloud-config counts too).
    let cc = example("cloud-config.yaml");
    let msg = mime(&[("application/x-gzip", "base64", &base64_lines(&gzip(&cc)))]);
    let p = userdata::parse(&msg).unwrap();
    assert_eq!(
        p.format,
        Format::Multipart {
            part: 1,
            inner: Box::new(Format::Gzip(Box::new(Format::CloudConfig)))
        }
    );
    let msg = mime(&[("text/plain", "7bit", &cc)]);
    assert!(userdata::parse(&msg).is_ok());
}

#[test]
fn multipart_error_positions() {
    // A 7bit part is the message's own text: positions count in the whole message
    // (the checksum is on line 19 of it, line 7 of the part).
    let doc = b"#cloud-config\nbootstrapd:\n  roles: [worker]\n  rancher:\n    server: https://rancher.example.com\n    token: t\n    ca_checksum: nothex\n";
    let msg = mime(&[
        ("text/x-shellscript", "7bit", b"#!/bin/sh"),
        ("text/cloud-config", "7bit", doc),
    ]);
    let e = userdata::parse(&msg).unwrap_err();
    assert_eq!(e.origin, None);
    assert_eq!(
        e.to_string(),
        "19:18: bootstrapd.rancher.ca_checksum: must be 64 hexadecimal digits (the sha256 of \
         the CA certificate); `n` at offset 0 is not one"
    );
    // A base64 part is counted from its decoded start, and the error says so.
    let msg = mime(&[("text/cloud-config", "base64", &base64_lines(doc))]);
    let e = userdata::parse(&msg).unwrap_err();
    assert_eq!(e.origin.as_deref(), Some("MIME part 1 (base64-decoded)"));
    assert_eq!(e.problems[0].line, 7);
    assert!(
        e.to_string()
            .starts_with("MIME part 1 (base64-decoded):7:18: bootstrapd.rancher.ca_checksum: ")
    );
}

#[test]
fn single_part_mime_message() {
    let mut msg =
        b"Content-Type: text/cloud-config\nMIME-Version: 1.0\nContent-Transfer-Encoding: 7bit\n\n"
            .to_vec();
    msg.extend_from_slice(&example("cloud-config.yaml"));
    let p = userdata::parse(&msg).unwrap();
    assert_eq!(
        p.format,
        Format::Multipart {
            part: 1,
            inner: Box::new(Format::CloudConfig)
        }
    );
}

#[test]
fn multipart_without_settings() {
    let msg = mime(&[("text/x-shellscript", "7bit", b"#!/bin/sh")]);
    assert_eq!(
        userdata::parse(&msg).unwrap_err().to_string(),
        "MIME userdata has no text/cloud-config part"
    );
    let both = b"#cloud-config\nbootstrapd: {}\n";
    let msg = mime(&[
        ("text/cloud-config", "7bit", both),
        ("text/cloud-config", "7bit", both),
    ]);
    assert_eq!(
        userdata::parse(&msg).unwrap_err().to_string(),
        "MIME parts 1, 2 all have a `bootstrapd:` key; keep it in one part"
    );
    // Two cloud-config parts, one for cloud-init and one with bootstrapd's settings.
    let msg = mime(&[
        (
            "text/cloud-config",
            "7bit",
            b"#cloud-config\npackages: [curl]\n",
        ),
        ("text/cloud-config", "7bit", &example("cloud-config.yaml")),
    ]);
    let p = userdata::parse(&msg).unwrap();
    assert_eq!(
        p.notes[0],
        "MIME part 1 (cloud-config without `bootstrapd:`) ignored"
    );
}

#[test]
fn size_limit_is_checked_before_parsing() {
    let doc = example("worker.yaml");
    // Exactly at the limit: fine.
    let mut at_limit = doc.clone();
    at_limit.push(b'#');
    at_limit.resize(MAX_USERDATA_BYTES, b'x');
    assert!(userdata::parse(&at_limit).is_ok());
    // One byte more: refused, whatever the content.
    at_limit.push(b'x');
    let e = userdata::parse(&at_limit).unwrap_err();
    assert_eq!(
        e.to_string(),
        "userdata is 1048577 bytes; the limit is 1048576 bytes"
    );
    assert_eq!(e.problems[0].line, 0);
}

#[test]
fn gzip_bomb_is_refused() {
    let mut big = example("worker.yaml");
    big.push(b'#');
    big.resize(64 << 20, b' ');
    let bomb = gzip(&big);
    assert!(bomb.len() < 200_000, "the bomb is small: {}", bomb.len());
    assert_eq!(
        userdata::parse(&bomb).unwrap_err().to_string(),
        "gunzipped userdata is larger than 1048576 bytes"
    );
}

#[test]
fn broken_and_nested_gzip() {
    let e = userdata::parse(&[0x1f, 0x8b, 1, 2, 3]).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("userdata starts like gzip (1f 8b) but does not decompress: "),
        "{e}"
    );
    let twice = gzip(&gzip(&example("worker.yaml")));
    assert_eq!(
        userdata::parse(&twice).unwrap_err().to_string(),
        "gzip inside gzip: compress the userdata only once"
    );
}

#[test]
fn bom_and_crlf() {
    let doc = example("worker.yaml");
    let mut with_bom = "\u{feff}".as_bytes().to_vec();
    with_bom.extend_from_slice(&doc);
    assert!(userdata::parse(&with_bom).is_ok());
    let crlf = String::from_utf8(doc).unwrap().replace('\n', "\r\n");
    assert!(userdata::parse(crlf.as_bytes()).is_ok());
    let bad = "roles: [worker]\r\nrancher:\r\n  server: https://rancher.example.com\r\n  token: t\r\n  mode: x\r\n";
    let e = userdata::parse(bad.as_bytes()).unwrap_err();
    assert_eq!((e.problems[0].line, e.problems[0].column), (5, 9));
}

#[test]
fn multipart_part_count_is_bounded() {
    // Thousands of empty parts cost a parse and a copy each; 20,000 of them took 13 s.
    let mut msg = b"Content-Type: multipart/mixed; boundary=\"B\"\nMIME-Version: 1.0\n\n".to_vec();
    for _ in 0..101 {
        msg.extend_from_slice(b"--B\nContent-Type: text/x-shellscript\n\nx\n");
    }
    msg.extend_from_slice(b"--B--\n");
    let e = userdata::parse(&msg).unwrap_err();
    assert_eq!(e.to_string(), "MIME userdata has more than 100 parts");
    // One part fewer than the limit is read, and the last one's positions are still right.
    let doc = b"#cloud-config\nbootstrapd:\n  roles: [workr]\n";
    let mut parts: Vec<(&str, &str, &[u8])> = vec![("text/x-shellscript", "7bit", b"x"); 99];
    parts.push(("text/cloud-config", "7bit", doc));
    let e = userdata::parse(&mime(&parts)).unwrap_err();
    // 3 lines of message header, 5 lines per part before it, 4 of its own header, then
    // the third line of the document.
    let roles = e.problems.iter().find(|p| p.path == "bootstrapd.roles[0]");
    assert_eq!(roles.map(|p| p.line), Some(3 + 99 * 5 + 4 + 3), "{e}");
}

#[test]
fn multipart_decoded_size_is_bounded_over_all_parts() {
    // Each part gunzips to 600 KB, under the limit alone; two of them are over it together.
    let big = gzip(format!("#cloud-config\n{}\n", "#".repeat(600_000)).as_bytes());
    let part = base64_lines(&big);
    let msg = mime(&[
        ("text/plain", "base64", &part),
        ("text/plain", "base64", &part),
        ("text/cloud-config", "7bit", &example("cloud-config.yaml")),
    ]);
    let e = userdata::parse(&msg).unwrap_err();
    assert_eq!(
        e.to_string(),
        "MIME part 2: gunzipped, the MIME parts together are larger than 1048576 bytes"
    );
}

#[test]
fn identity_example() {
    let p = userdata::parse(&example("edge-identity.yaml")).unwrap();
    let s = p.settings;
    assert_eq!(
        s.hostname,
        Some(userdata::HostnameSetting::Template("node-{mac}".into()))
    );
    let ssh = s.ssh.unwrap();
    assert_eq!(ssh.user, "ops");
    assert_eq!(ssh.authorized_keys.len(), 2);
    assert!(ssh.authorized_keys[1].starts_with("ecdsa-sha2-nistp256 AAAAE2"));
    assert!(p.notes.is_empty(), "{:?}", p.notes);
}

#[test]
fn behind_proxy_example() {
    let p = userdata::parse(&example("behind-proxy.yaml")).unwrap();
    let proxy = &p.settings.proxy;
    assert_eq!(
        proxy.http.as_ref().unwrap().expose(),
        "http://agent:example-only@proxy.example.com:3128/"
    );
    assert_eq!(proxy.http, proxy.https);
    assert_eq!(proxy.no_proxy.len(), 7);
    assert!(
        proxy
            .redacted()
            .contains("agent:redacted@proxy.example.com:3128")
    );
    assert!(!format!("{:?}", p.settings).contains("example-only"));
}
