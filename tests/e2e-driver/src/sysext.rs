//! Checks of a node whose Docker comes from the system extension (`runtime.source.sysext`):
//! the image placed and merged, no package installed, and on later boots the extension merged
//! by systemd-sysext.service and its units started by bootstrapd's boot unit before bootstrapd
//! itself runs.

use crate::checks::Checks;
use crate::report::Report;

/// One boot (`n`) of an rke1 node with Docker from the extension, agent image `image`.
pub fn check_boot(c: &mut Checks, p: &str, n: u32, r: &Report, image: &str) {
    let line = |want: &str| r.any("sysext", |l| l.trim_end() == want);
    c.check(
        &format!("{p}: docker.raw placed in /var/lib/extensions (0644)"),
        line("placed docker.raw 644"),
        format!("section sysext: {:?}", r.section("sysext")),
    );
    c.check(
        &format!("{p}: the docker extension is merged into /usr"),
        line("merged docker"),
        format!("section sysext: {:?}", r.section("sysext")),
    );
    c.check(
        &format!("{p}: no Docker package installed (the engine is the extension's)"),
        !r.any("packages", |l| l.trim_end().ends_with(" ii")),
        format!("section packages: {:?}", r.section("packages")),
    );
    for unit in ["systemd-sysext", "bootstrapd-sysext"] {
        c.eq(
            &format!("{p}: {unit}.service enabled"),
            Some("enabled"),
            r.prop(&format!("unit-{unit}"), "UnitFileState"),
        );
    }
    if n >= 2 {
        check_merged_at_boot(c, p, r);
    }
    crate::driver::check_docker_and_agent(c, p, r, image);
}

/// A later boot: systemd-sysext.service merged the image and the boot unit started Docker's
/// socket (sockets.target) before bootstrapd started, so nothing waited for bootstrapd.
fn check_merged_at_boot(c: &mut Checks, p: &str, r: &Report) {
    for unit in ["systemd-sysext", "bootstrapd-sysext"] {
        c.eq(
            &format!("{p}: {unit}.service ran at boot and succeeded"),
            (Some("active"), Some("success")),
            (
                r.prop(&format!("unit-{unit}"), "ActiveState"),
                r.prop(&format!("unit-{unit}"), "Result"),
            ),
        );
    }
    let socket = r.usec("unit-docker-socket", "ActiveEnterTimestampMonotonic");
    let bootstrapd = r.usec("unit-bootstrapd", "ExecMainStartTimestampMonotonic");
    c.check(
        &format!("{p}: docker.socket was active before bootstrapd started"),
        socket > 0 && socket <= bootstrapd,
        format!("docker.socket active at {socket} us, bootstrapd started at {bootstrapd} us"),
    );
}
