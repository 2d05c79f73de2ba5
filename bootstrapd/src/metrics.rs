//! bootstrapd's own footprint: CPU time and peak memory of this process, children excluded.
//!
//! Its own module because every layer measures (a datasource fetch, a Docker image load, a
//! journal stage) and none of them should need the journal to read a clock.

use serde::{Deserialize, Serialize};

/// bootstrapd's own footprint, from getrusage(RUSAGE_SELF) and /proc/self/status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub peak_rss_kib: u64,
    pub cpu_user_ms: u64,
    pub cpu_system_ms: u64,
    pub wall_ms: u64,
}

fn tv_ms(tv: nix::sys::time::TimeVal) -> u64 {
    (tv.tv_sec().max(0) as u64) * 1000 + (tv.tv_usec().max(0) as u64) / 1000
}

/// This process's CPU time so far (user + system, ms).
pub fn own_cpu_ms() -> Option<u64> {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).ok()?;
    Some(tv_ms(u.user_time()) + tv_ms(u.system_time()))
}

/// This process's CPU time since `before` (an [`own_cpu_ms`] reading), in ms.
pub fn cpu_ms_since(before: Option<u64>) -> Option<u64> {
    Some(own_cpu_ms()?.saturating_sub(before?))
}

impl Resources {
    /// Measures this process now; `started` is when the run began.
    pub fn measure(started: std::time::Instant) -> Resources {
        let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).ok();
        // VmHWM is the peak resident set; ru_maxrss is the same in KiB on Linux.
        let peak = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
            .or_else(|| usage.map(|u| u.max_rss().max(0) as u64))
            .unwrap_or(0);
        Resources {
            peak_rss_kib: peak,
            cpu_user_ms: usage.map(|u| tv_ms(u.user_time())).unwrap_or(0),
            cpu_system_ms: usage.map(|u| tv_ms(u.system_time())).unwrap_or(0),
            wall_ms: started.elapsed().as_millis() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::time::TimeVal;

    #[test]
    fn timevals_become_whole_milliseconds() {
        assert_eq!(tv_ms(TimeVal::new(2, 345_678)), 2345);
        assert_eq!(tv_ms(TimeVal::new(0, 999)), 0);
        // A negative reading (never from getrusage, but the type allows it) is not a wrap.
        assert_eq!(tv_ms(TimeVal::new(-1, 0)), 0);
    }

    #[test]
    fn cpu_since_needs_a_start_and_never_goes_negative() {
        assert!(own_cpu_ms().is_some());
        assert_eq!(cpu_ms_since(None), None);
        assert_eq!(cpu_ms_since(Some(u64::MAX)), Some(0));
        let before = own_cpu_ms();
        assert!(cpu_ms_since(before).is_some());
    }

    #[test]
    fn measure_reads_this_process() {
        let r = Resources::measure(std::time::Instant::now());
        assert!(r.peak_rss_kib > 0, "{r:?}");
        let v = serde_json::to_value(r).unwrap();
        for key in ["peak_rss_kib", "cpu_user_ms", "cpu_system_ms", "wall_ms"] {
            assert!(v.get(key).is_some(), "{key} in {v}");
        }
    }
}
