//! The prepare stage's plan: the host preparation's steps, then the node identity's (hostname,
//! SSH keys). Composed here so that neither module needs the other's steps.

use super::host::{self, HostStep};
use super::identity;
use crate::facts::host::HostFacts;
use crate::userdata::Settings;

/// Every step of the prepare stage, in the order they are applied.
pub fn plan(settings: &Settings, facts: &HostFacts) -> Vec<HostStep> {
    let mut steps = host::plan(settings, facts);
    steps.push(identity::hostname(settings, facts));
    steps.extend(identity::ssh(settings, facts));
    steps
}
