//! Pieces of the JSON schema that derive attributes cannot say: patterns shared by several
//! fields, maps with constrained keys, and fields that also take YAML numbers.
//!
//! Each pattern states the same rule as a check in `validate.rs`; change both together.

use schemars::{Schema, SchemaGenerator, json_schema};

/// An https URL without a query or fragment.
pub const SERVER: &str = r"^https://[^\s?#@/\x00-\x1f\x7f-\x9f]+(/[^\s?#\x00-\x1f\x7f-\x9f]*)?$";
pub const CHECKSUM: &str = r"^[0-9a-fA-F]{64}$";
pub const IMAGE: &str = r"^[^\s-]\S*$";
pub const NODE_NAME: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// An IP address, an interface name or a keyword such as `awslocal`.
pub const ADDRESS: &str = r"^[A-Za-z0-9:][A-Za-z0-9._:-]*$";
const DNS_PREFIX: &str = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const NAME: &str = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?";
/// URLs and key locations are one word: no whitespace or control character anywhere (they
/// are written as they are into apt lists and yum repos).
pub const HTTP_URL: &str = r"^https?://[^\s/?#\x00-\x1f\x7f-\x9f]+[^\s\x00-\x1f\x7f-\x9f]*$";
pub const REPO_URL: &str =
    r"^(https?://[^\s/?#\x00-\x1f\x7f-\x9f]+|file:///?)[^\s\x00-\x1f\x7f-\x9f]*$";
/// A key over plain http is refused: it could be swapped in transit.
pub const KEY_LOCATION: &str = r"^((https|file)://|/)[^\s\x00-\x1f\x7f-\x9f]*$";
pub const APT_WORD: &str = r"^[A-Za-z0-9._/-]+$";
pub const ABS_PATH: &str = r"^/";
pub const MODULE: &str = r"^[a-z0-9_-]{1,55}$";
pub const SYSCTL_KEY: &str = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+$";
/// What `VersionConstraint::parse` takes: comma-separated terms, each an optional operator,
/// an optional `v` and dotted numbers.
pub const VERSION: &str = r"^\s*(>=|<=|==|=|>|<)?\s*v?[0-9]+(\.[0-9]+)*\s*(,\s*(>=|<=|==|=|>|<)?\s*v?[0-9]+(\.[0-9]+)*\s*)*$";

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
        "additionalProperties": { "type": ["string", "number"], "minLength": 1 },
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
