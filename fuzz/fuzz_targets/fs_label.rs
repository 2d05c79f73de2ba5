#![no_main]
//! Datasource detection reads ISO 9660 and FAT superblocks of every block device: a
//! hostile or corrupt disk must not crash the agent.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut cur = std::io::Cursor::new(data.to_vec());
    let _ = bootstrapd::datasource::probe_label(&mut cur);
});
