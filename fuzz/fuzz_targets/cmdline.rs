#![no_main]
//! The kernel command line and the NoCloud `ds=` / SMBIOS serial parameters are metadata
//! from outside: parsing them must never panic.
use bootstrapd::datasource::cmdline;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let c = cmdline::KernelCmdline::parse(text);
        let _ = c.get("bootstrapd.url");
        let _ = c.get("ds").map(cmdline::parse_nocloud_ds);
        let _ = cmdline::find_ds_in_serial(text);
    }
});
