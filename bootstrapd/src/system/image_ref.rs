//! Image references as Docker reads them: which registry an image comes from, and Rancher's
//! `system-default-registry` prefix.

/// The registry of references that name none. Docker also accepts `index.docker.io` for it.
pub const DOCKER_HUB: &str = "docker.io";

/// The registry an image reference names itself, if any: Docker's rule
/// (distribution/reference `splitDockerDomain`) takes the first `/`-separated component as
/// a registry when it contains `.` or `:`, is `localhost`, or has an uppercase letter
/// (repository paths are lowercase); otherwise the image is on Docker Hub.
pub fn explicit_registry(image: &str) -> Option<&str> {
    let (first, _) = image.split_once('/')?;
    let is_registry = first.contains(['.', ':'])
        || first == "localhost"
        || first.bytes().any(|b| b.is_ascii_uppercase());
    is_registry.then_some(first)
}

/// The registry the Engine pulls `image` from (`docker.io` when it names none), as
/// registries.yaml and `registries.configs` key it.
pub fn registry_of(image: &str) -> &str {
    match explicit_registry(image) {
        None | Some("index.docker.io") => DOCKER_HUB,
        Some(r) => r,
    }
}

/// `image` behind Rancher's system default registry `registry`, as Rancher resolves its
/// own images (rancher/rancher pkg/image/resolve.go, `ResolveWithCluster`): an image that
/// already starts with the registry is left alone, an official-library image without a `/`
/// gets `rancher/` first, and the registry is joined in front. (Rancher compares a string
/// prefix; here the registry component must be the whole registry, so `reg.lab` does not
/// count as the prefix of `reg.lab.example/x`.) Validation refuses an image that names
/// another registry together with a default registry.
pub fn with_default_registry(image: &str, registry: Option<&str>) -> String {
    let Some(reg) = registry.filter(|r| !r.is_empty()) else {
        return image.to_string();
    };
    if explicit_registry(image) == Some(reg) {
        return image.to_string();
    }
    if image.contains('/') {
        format!("{reg}/{image}")
    } else {
        format!("{reg}/rancher/{image}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_is_the_first_component_only_when_it_looks_like_a_host() {
        for (image, registry) in [
            ("rancher/rancher-agent:v2.9.0", "docker.io"),
            ("busybox", "docker.io"),
            ("busybox:1.36", "docker.io"),
            ("library/busybox@sha256:abcd", "docker.io"),
            ("docker.io/rancher/rancher-agent:v2.9.0", "docker.io"),
            ("index.docker.io/rancher/x", "docker.io"),
            (
                "10.0.2.2:5443/rancher/rancher-agent:v2.9.0",
                "10.0.2.2:5443",
            ),
            ("registry.lab/rancher/rancher-agent", "registry.lab"),
            ("localhost/agent:1", "localhost"),
            ("localhost:5000/agent:1", "localhost:5000"),
            ("Registry/agent", "Registry"),
            ("[fd00::1]:5000/agent", "[fd00::1]:5000"),
            // `rancher` has no dot, colon or capital: a Docker Hub namespace.
            ("rancher/agent:v1.2", "docker.io"),
        ] {
            assert_eq!(registry_of(image), registry, "{image}");
        }
        assert_eq!(explicit_registry("rancher/rancher-agent"), None);
        assert_eq!(explicit_registry("busybox:1.36"), None);
    }

    #[test]
    fn the_default_registry_prefixes_as_rancher_does() {
        let reg = Some("10.0.2.2:5443");
        assert_eq!(
            with_default_registry("rancher/rancher-agent:v2.9.0", reg),
            "10.0.2.2:5443/rancher/rancher-agent:v2.9.0"
        );
        // Rancher's library rule: a bare name is one of Rancher's images.
        assert_eq!(
            with_default_registry("rancher-agent:v2.9.0", reg),
            "10.0.2.2:5443/rancher/rancher-agent:v2.9.0"
        );
        // Already behind that registry: left alone.
        assert_eq!(
            with_default_registry("10.0.2.2:5443/rancher/rancher-agent:v2.9.0", reg),
            "10.0.2.2:5443/rancher/rancher-agent:v2.9.0"
        );
        assert_eq!(
            with_default_registry("rancher/rancher-agent:v2.9.0", None),
            "rancher/rancher-agent:v2.9.0"
        );
        assert_eq!(
            with_default_registry("reg.lab.example/x:1", Some("reg.lab")),
            "reg.lab/reg.lab.example/x:1"
        );
    }
}
