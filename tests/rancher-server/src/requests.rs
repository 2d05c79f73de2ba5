//! An in-memory log of every request the server answered, for tests that must prove what did
//! or did not reach the server (fault campaigns, fleet benchmarks). It records whether a
//! request carried a registration token, never the token itself, and of the headers only the
//! names of the registration ones (never a value, never a query string).

use std::sync::Mutex;
use std::time::Duration;

/// One answered request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RequestEntry {
    /// Arrival time since the server started (before any injected delay).
    pub at: Duration,
    pub method: String,
    pub path: String,
    pub status: u16,
    /// A non-empty `Authorization` or `X-API-Tunnel-Token` header was present.
    pub carried_token: bool,
    /// Names (lowercase, sorted, once each) of the registration headers sent: `authorization`,
    /// `x-api-tunnel-*` and every `x-cattle-*` (`x-cattle-node-name`, `x-cattle-address`,
    /// `x-cattle-internal-address`, `x-cattle-nonce`, ...). Names only: the token and its hash
    /// travel in values, which are never kept.
    pub sent_headers: Vec<String>,
}

impl RequestEntry {
    /// Whether a header of that name (any case) was sent.
    pub fn sent(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        self.sent_headers.contains(&name)
    }
}

/// The registration header names among `names`, as [`RequestEntry::sent_headers`] keeps them.
pub fn registration_header_names<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut kept: Vec<String> = names
        .map(str::to_ascii_lowercase)
        .filter(|n| {
            n == "authorization" || n.starts_with("x-cattle-") || n.starts_with("x-api-tunnel-")
        })
        .collect();
    kept.sort();
    kept.dedup();
    kept
}

/// Entries beyond this are counted, not kept: a long-running server must not grow without
/// bound.
const MAX_ENTRIES: usize = 1 << 20;

#[derive(Debug, Default)]
pub(crate) struct RequestLog {
    inner: Mutex<(Vec<RequestEntry>, u64)>,
}

impl RequestLog {
    pub(crate) fn push(&self, entry: RequestEntry) {
        // Every update is one push or one increment, so a poisoned lock still holds
        // consistent data.
        let mut guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if guard.0.len() < MAX_ENTRIES {
            guard.0.push(entry);
        } else {
            guard.1 += 1;
        }
    }

    pub(crate) fn snapshot(&self) -> (Vec<RequestEntry>, u64) {
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        (guard.0.clone(), guard.1)
    }
}

/// Requests per whole second since start (index = second), over `entries`.
pub fn per_second(entries: &[RequestEntry]) -> Vec<u64> {
    let mut counts: Vec<u64> = Vec::new();
    for e in entries {
        let second = e.at.as_secs() as usize;
        if counts.len() <= second {
            counts.resize(second + 1, 0);
        }
        counts[second] += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ms: u64) -> RequestEntry {
        RequestEntry {
            at: Duration::from_millis(ms),
            method: "GET".into(),
            path: "/ping".into(),
            status: 200,
            carried_token: false,
            sent_headers: Vec::new(),
        }
    }

    #[test]
    fn counts_per_second_including_empty_seconds() {
        let entries = [entry(10), entry(999), entry(1000), entry(3500)];
        assert_eq!(per_second(&entries), vec![2, 1, 0, 1]);
        assert!(per_second(&[]).is_empty());
    }

    #[test]
    fn keeps_registration_header_names_only() {
        let names = [
            "Host",
            "X-Cattle-Node-Name",
            "authorization",
            "X-Cattle-Nonce",
            "x-cattle-node-name",
            "User-Agent",
            "X-API-Tunnel-Token",
        ];
        let entry = RequestEntry {
            sent_headers: registration_header_names(names.into_iter()),
            ..entry(0)
        };
        assert_eq!(
            entry.sent_headers,
            vec![
                "authorization",
                "x-api-tunnel-token",
                "x-cattle-node-name",
                "x-cattle-nonce"
            ]
        );
        assert!(entry.sent("X-Cattle-Nonce"));
        assert!(!entry.sent("X-Cattle-Address"));
    }

    #[test]
    fn log_keeps_entries_in_order() {
        let log = RequestLog::default();
        log.push(entry(1));
        log.push(entry(2));
        let (entries, dropped) = log.snapshot();
        assert_eq!(entries, vec![entry(1), entry(2)]);
        assert_eq!(dropped, 0);
    }
}
