//! Pieces of the JSON schema that derive attributes cannot say: patterns shared by several
//! fields, maps with constrained keys, and fields that also take YAML numbers.
//!
//! Each pattern states the same rule as a check in `validate.rs`; change both together
//! (`tests/userdata_schema.rs` runs one corpus through both and fails where they disagree).

use schemars::{Schema, SchemaGenerator, json_schema};

/// Control characters (`char::is_control`), inside a bracket expression.
macro_rules! cc {
    () => {
        r"\x00-\x1f\x7f-\x9f"
    };
}
/// One DNS label: at most 63 characters.
macro_rules! dns_label {
    () => {
        r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
    };
}
/// URL schemes, in any case as URLs allow.
macro_rules! https {
    () => {
        "[Hh][Tt][Tt][Pp][Ss]://"
    };
}
macro_rules! http_or_https {
    () => {
        "[Hh][Tt][Tt][Pp][Ss]?://"
    };
}
macro_rules! file {
    () => {
        "[Ff][Ii][Ll][Ee]://"
    };
}
/// A URL's host (and port): no credentials, so no `@`.
macro_rules! authority {
    () => {
        concat!(r"[^\s/?#@", cc!(), "]+")
    };
}
/// The rest of a URL after its authority, one word.
macro_rules! url_rest {
    () => {
        concat!(r"([/?#][^\s", cc!(), "]*)?")
    };
}
/// An absolute path without a `..` component or control characters; `extra` names more
/// characters a component must not hold.
macro_rules! abs_path {
    ($extra:literal) => {
        concat!(
            r"(/([^/",
            $extra,
            cc!(),
            r"]?|[^./",
            $extra,
            cc!(),
            r"][^/",
            $extra,
            cc!(),
            r"]|\.[^./",
            $extra,
            cc!(),
            r"]|[^/",
            $extra,
            cc!(),
            r"]{3,}))+"
        )
    };
}
/// The IPv6 addresses that start with `::` (every other address starts with a letter or
/// digit, which the interface-name rule covers).
macro_rules! ipv6_from_colons {
    () => {
        concat!(
            r"::(([0-9A-Fa-f]{1,4}:){0,6}[0-9A-Fa-f]{1,4}|([0-9A-Fa-f]{1,4}:){0,5}",
            r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3})?"
        )
    };
}
macro_rules! dns_prefix {
    () => {
        concat!(dns_label!(), r"(\.", dns_label!(), ")*")
    };
}

/// An https URL without credentials, query or fragment.
pub const SERVER: &str = concat!("^", https!(), authority!(), r"(/[^\s?#", cc!(), "]*)?$");
/// One word: no whitespace or control character (it goes into an HTTP header).
pub const TOKEN: &str = concat!(r"^[^\s", cc!(), "]+$");
pub const CHECKSUM: &str = r"^[0-9a-fA-F]{64}$";
pub const IMAGE: &str = concat!(r"^[^\s", cc!(), r"-][^\s", cc!(), "]*$");
pub const NODE_NAME: &str = concat!("^", dns_prefix!(), "$");
/// An IP address, an interface name or a keyword such as `awslocal`.
pub const ADDRESS: &str = concat!(r"^([A-Za-z0-9][A-Za-z0-9._:-]*|", ipv6_from_colons!(), ")$");
const DNS_PREFIX: &str = dns_prefix!();
const NAME: &str = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?";
/// URLs and key locations are one word: no whitespace or control character anywhere (they
/// are written as they are into apt lists and yum repos).
pub const HTTP_URL: &str = concat!("^", http_or_https!(), authority!(), url_rest!(), "$");
pub const REPO_URL: &str = concat!(
    "^(",
    http_or_https!(),
    authority!(),
    "|",
    file!(),
    r"[^\s/?#@",
    cc!(),
    "]*)",
    url_rest!(),
    "$"
);
/// A key over plain http is refused: it could be swapped in transit.
pub const KEY_LOCATION: &str = concat!(
    "^((",
    https!(),
    authority!(),
    "|",
    file!(),
    r"[^\s/?#@",
    cc!(),
    "]*)",
    url_rest!(),
    "|",
    abs_path!(r"\s"),
    ")$"
);
pub const APT_WORD: &str = r"^[A-Za-z0-9._/-]+$";
pub const ABS_PATH: &str = concat!("^", abs_path!(""), "$");
pub const MODULE: &str = r"^[a-z0-9_-]{1,55}$";
pub const SYSCTL_KEY: &str = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+$";
/// One line; a tab may separate values (`net.ipv4.tcp_rmem`).
const SYSCTL_VALUE: &str = r"^[^\x00-\x08\x0a-\x1f\x7f-\x9f]+$";
/// What `VersionConstraint::parse` takes: comma-separated terms, each an optional operator,
/// an optional `v` and dotted numbers.
/// `hostname: {template: ...}`: text of letters, digits and `-`, and known placeholders.
pub const HOSTNAME_TEMPLATE: &str = r"^([A-Za-z0-9-]|\{(instance_id|serial|mac)\})+$";
/// `rancher.system_agent.machine_id: {value: ...}`: a CATTLE_ID as install.sh makes them
/// (hex), short enough for the `rke.cattle.io/machine-id` label value Rancher puts it in.
pub const MACHINE_ID: &str = r"^[0-9a-f]{1,63}$";
/// A user name useradd takes everywhere.
pub const USER_NAME: &str = r"^[a-z_][a-z0-9_-]{0,31}$";
/// One OpenSSH public key line without options; that the base64 decodes to a blob of the
/// same type is the validator's to say.
pub const PUBLIC_KEY: &str = concat!(
    r"^ *(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|",
    r"sk-ecdsa-sha2-nistp256@openssh\.com) +[A-Za-z0-9+/]+={0,2}( [^",
    cc!(),
    "]*)?$"
);
/// A `trusted_ca` item: at least one certificate block; that each decodes to a certificate
/// and that nothing else is in the text is the validator's to say.
pub const TRUSTED_CA: &str = "-----BEGIN CERTIFICATE-----";
/// A registry as image references and registries.yaml name it: `host[:port]`, the host a
/// DNS name, an IPv4 address or a bracketed IPv6 address (whose digits, like the port's
/// range, are the validator's to check).
macro_rules! registry_host {
    () => {
        concat!(
            r"(",
            dns_label_any_case!(),
            r"(\.",
            dns_label_any_case!(),
            r")*|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?"
        )
    };
}
macro_rules! dns_label_any_case {
    () => {
        r"[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
    };
}
pub const REGISTRY_HOST: &str = concat!("^", registry_host!(), "$");
/// A mirror's registry: a host, or `*` for every registry without an entry of its own.
pub const MIRROR_HOST: &str = concat!(r"^(\*|", registry_host!(), ")$");
/// A registry user name: one line, and no `:` (HTTP basic auth splits user and password there).
pub const REGISTRY_USER: &str = concat!("^[^:", cc!(), "]+$");
/// A registry password: one line; any other character.
pub const REGISTRY_PASSWORD: &str = concat!("^[^", cc!(), "]+$");
pub const VERSION: &str = r"^\s*(>=|<=|==|=|>|<)?\s*v?[0-9]+(\.[0-9]+)*\s*(,\s*(>=|<=|==|=|>|<)?\s*v?[0-9]+(\.[0-9]+)*\s*)*$";

/// `proxy.http`/`proxy.https`: an http(s) URL, optionally with `user:password@` (the
/// userinfo may hold `@`, the host may not), and no path but `/`, no query, no fragment.
pub const PROXY_URL: &str = concat!(
    "^",
    http_or_https!(),
    r"([^\s/?#",
    cc!(),
    "]*@)?",
    authority!(),
    "/?$"
);
/// One `proxy.no_proxy` entry: `*`, a host name or `.domain`, an IPv4 or IPv6 address or
/// CIDR. Looser than the validator on the numbers (octets, prefix lengths) and labels' ends.
pub const NO_PROXY_ENTRY: &str = concat!(
    r"^(\*|\.?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*",
    r"|[0-9]{1,3}(\.[0-9]{1,3}){3}(/[0-9]{1,2})?",
    r"|[0-9A-Fa-f]{0,4}(:[0-9A-Fa-f]{0,4}){2,7}(/[0-9]{1,3})?)$"
);

pub fn proxy_url(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": ["string", "null"],
        "minLength": 1,
        "pattern": PROXY_URL,
        "default": null,
    })
}

pub fn token(_: &mut SchemaGenerator) -> Schema {
    json_schema!({ "type": "string", "minLength": 1, "pattern": TOKEN })
}

fn qualified_name() -> String {
    format!("^({DNS_PREFIX}/)?{NAME}$")
}

pub fn taint_pattern() -> String {
    format!("^({DNS_PREFIX}/)?{NAME}(=({NAME})?)?:(NoSchedule|PreferNoSchedule|NoExecute)$")
}

pub fn labels(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "propertyNames": { "pattern": qualified_name() },
        "additionalProperties": {
            "type": "string",
            "maxLength": 63,
            "pattern": format!("^({NAME})?$"),
        },
        "default": {},
    })
}

pub fn sysctls(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "sysctls to set in addition to the ones Kubernetes needs.",
        "type": "object",
        "propertyNames": { "pattern": SYSCTL_KEY },
        "additionalProperties": {
            "type": ["string", "number"],
            "minLength": 1,
            "pattern": SYSCTL_VALUE,
        },
        "default": {},
    })
}

pub fn version(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "Version constraint, e.g. \"20.10\", \">=20.10\", \"=24.0.7\". A bare number such as 20.10 is read as written.",
        "type": ["string", "number", "null"],
        "pattern": VERSION,
        "default": null,
    })
}

/// `username` and `password`, or `identity_token` alone.
pub fn registry_auth() -> Schema {
    json_schema!({
        "description": "username and password, or identity_token alone. Never printed.",
        "type": "object",
        "properties": {
            "username": { "type": "string", "pattern": REGISTRY_USER },
            "password": { "type": ["string", "number"], "pattern": REGISTRY_PASSWORD },
            "identity_token": { "type": "string", "pattern": TOKEN },
        },
        "additionalProperties": false,
        "oneOf": [
            {
                "required": ["username", "password"],
                "not": { "required": ["identity_token"] },
            },
            {
                "required": ["identity_token"],
                "not": { "anyOf": [{ "required": ["username"] }, { "required": ["password"] }] },
            },
        ],
    })
}
