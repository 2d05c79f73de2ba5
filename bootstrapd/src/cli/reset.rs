use crate::fsutil::HostRoot;
use crate::state;

use super::CliResult;

pub fn run(root: &HostRoot) -> CliResult {
    if state::reset(root)? {
        println!(
            "bootstrapd state forgotten ({}); the next boot runs again",
            state::journal_path(root).display()
        );
    } else {
        println!("no bootstrapd state to forget");
    }
    Ok(0)
}
