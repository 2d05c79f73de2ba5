//! The package-manager layer against this machine's real apt and dpkg (Debian 12 here, as in
//! the lab images). Read-only: nothing is installed. On a host without apt the tests say so
//! and stop, since there is nothing real to compare with.

use bootstrapd::fsutil::HostRoot;
use bootstrapd::system::packages::{self, PackageManager, VersionConstraint};

fn have(prog: &str) -> bool {
    std::process::Command::new(prog)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn installed_version_matches_dpkg_query() {
    if !have("dpkg-query") {
        eprintln!("no dpkg-query on this host: nothing to compare with");
        return;
    }
    let out = std::process::Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", "dpkg"])
        .output()
        .unwrap();
    let want = String::from_utf8(out.stdout).unwrap();
    let root = HostRoot::new(None);
    let got = packages::installed_version(&root, PackageManager::Apt, "dpkg")
        .await
        .unwrap();
    assert_eq!(got.as_deref(), Some(want.as_str()));
    assert_eq!(
        packages::installed_version(&root, PackageManager::Apt, "no-such-package-bootstrapd")
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn candidates_come_from_real_apt_cache_madison() {
    if !have("apt-cache") {
        eprintln!("no apt-cache on this host: nothing to compare with");
        return;
    }
    let cands = packages::candidates(PackageManager::Apt, "docker.io", &Default::default())
        .await
        .unwrap();
    if cands.is_empty() {
        eprintln!("apt lists hold no docker.io here: nothing to compare with");
        return;
    }
    // Whatever the index holds, the highest candidate satisfies ">=0" and its own major.minor.
    let any = VersionConstraint::parse(">=0").unwrap();
    let top = packages::pick_candidate(&cands, &any).unwrap();
    let comps = packages::version_components(top);
    assert!(comps.len() >= 2, "{top}");
    let own = VersionConstraint::parse(&format!("{}.{}", comps[0], comps[1])).unwrap();
    assert_eq!(packages::pick_candidate(&cands, &own), Some(top));
    let none = VersionConstraint::parse("<1").unwrap();
    assert_eq!(packages::pick_candidate(&cands, &none), None);
    // The spec apt-get would install.
    assert_eq!(
        packages::versioned_spec(PackageManager::Apt, "docker.io", top),
        format!("docker.io={top}")
    );
}
