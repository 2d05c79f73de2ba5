//! The Rancher test server's side: its node record (`nodes.json`, read into the server's own
//! types) and its request log.

use std::path::Path;

use rancher_test_server::NodeRecord;
use rancher_test_server::record::read_records;

use crate::report::clean;

/// The records; none when the file does not exist yet (the server writes it at the first
/// registration).
pub fn records(path: &Path) -> Result<Vec<NodeRecord>, rancher_test_server::Error> {
    if path.exists() {
        read_records(path)
    } else {
        Ok(Vec::new())
    }
}

/// The records of one node: by the hostname it sent, or by its machine name (a system-agent
/// node without `rancher.node_name` sends no name: Rancher lets RKE2/K3s pick it).
pub fn for_node<'a>(
    records: &'a [NodeRecord],
    hostname: &str,
    machine: Option<&str>,
) -> Vec<&'a NodeRecord> {
    records
        .iter()
        .filter(|r| r.hostname.as_deref() == Some(hostname) || Some(r.name.as_str()) == machine)
        .collect()
}

/// How the shell names a record: its hostname, else its machine name.
pub fn label(r: &NodeRecord) -> &str {
    r.hostname.as_deref().unwrap_or(&r.name)
}

/// One line per node, "hostname generation roles connect_count" (roles comma-joined, the
/// machine name for a node that sent no hostname): the shell's view of the record (the crash campaign, the lab).
pub fn per_node_lines(records: &[NodeRecord]) -> Vec<String> {
    records
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {}",
                label(r),
                r.generation.as_str(),
                r.roles.join(","),
                r.connect_count
            )
        })
        .collect()
}

/// One line: the number of nodes, then per node "generation roles hostname connect_count"
/// (`e2e-driver records --summary`).
pub fn summary_line(records: &[NodeRecord]) -> String {
    let mut parts = vec![records.len().to_string()];
    for r in records {
        parts.push(format!(
            "{} {} {} {}",
            r.generation.as_str(),
            r.roles.join(","),
            label(r),
            r.connect_count
        ));
    }
    parts.join(" ")
}

/// How many `/v3/connect/agent` requests the server's log shows answered 401 (its request
/// lines: `request method=GET path=/v3/connect/agent status=401`, possibly coloured).
pub fn agent_401s(log: &str) -> usize {
    clean(log)
        .lines()
        .filter(|l| {
            l.contains("request")
                && l.contains("path=/v3/connect/agent")
                && l.split_whitespace().any(|w| w == "status=401")
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_401s_on_the_agent_endpoint_only() {
        let log = "2026-12-03T17:00:00Z  INFO rancher_test_server::server: request method=GET path=/v3/connect/agent status=401\n\
2026-12-03T17:00:01Z  INFO rancher_test_server::server: request method=GET path=/cacerts status=200\n\
\x1b[2m2026-12-03T17:00:02Z\x1b[0m \x1b[32m INFO\x1b[0m \x1b[2mrancher_test_server::server\x1b[0m\x1b[2m:\x1b[0m request \x1b[3mmethod\x1b[0m\x1b[2m=\x1b[0mGET \x1b[3mpath\x1b[0m\x1b[2m=\x1b[0m/v3/connect/agent \x1b[3mstatus\x1b[0m\x1b[2m=\x1b[0m401\n\
2026-12-03T17:00:03Z  INFO rancher_test_server::server: request method=GET path=/v3/connect/agent status=200\n\
2026-12-03T17:00:04Z  INFO rancher_test_server::server: request method=GET path=/v3/connect/register status=401\n";
        assert_eq!(agent_401s(log), 2);
    }

    #[test]
    fn records_from_the_servers_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nodes.json");
        assert!(records(&path).expect("absent file").is_empty());
        std::fs::write(
            &path,
            r#"[{"name":"custom-ab","generation":"system-agent","roles":["worker"],
            "labels":{},"taints":[],"hostname":"node1","first_seen":"t","last_seen":"t",
            "connect_count":1}]"#,
        )
        .expect("write");
        let all = records(&path).expect("records");
        let node1 = for_node(&all, "node1", None);
        assert_eq!(node1.len(), 1);
        assert_eq!(node1[0].connect_count, 1);
        assert!(for_node(&all, "node2", None).is_empty());
        assert_eq!(for_node(&all, "node2", Some("custom-ab")).len(), 1);
        assert_eq!(per_node_lines(&all), vec!["node1 system-agent worker 1"]);
        assert_eq!(summary_line(&all), "1 system-agent worker node1 1");
        assert_eq!(summary_line(&[]), "0");
        std::fs::write(&path, "{").expect("write");
        assert!(records(&path).is_err());
    }
}
