//! Shared pieces of bootstrapd's benchmarks: statistics over the test server's request log.

use serde::Serialize;

/// Requests per second over the whole seconds `[from, to)`, seconds without any request
/// counting as zero.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowStats {
    pub from: usize,
    pub to: usize,
    pub total: u64,
    pub mean: f64,
    pub peak: u64,
    /// The (first) second holding the peak.
    pub peak_second: usize,
}

impl WindowStats {
    /// `peak / mean`; `None` for an empty window.
    pub fn peak_over_mean(&self) -> Option<f64> {
        (self.mean > 0.0).then(|| self.peak as f64 / self.mean)
    }
}

/// Statistics of `per_second` (index = second) over `[from, to)`; `None` when empty.
pub fn window_stats(per_second: &[u64], from: usize, to: usize) -> Option<WindowStats> {
    if to <= from {
        return None;
    }
    let count = |s: usize| per_second.get(s).copied().unwrap_or(0);
    let mut total = 0;
    let mut peak = 0;
    let mut peak_second = from;
    for s in from..to {
        let c = count(s);
        total += c;
        if c > peak {
            peak = c;
            peak_second = s;
        }
    }
    Some(WindowStats {
        from,
        to,
        total,
        mean: total as f64 / (to - from) as f64,
        peak,
        peak_second,
    })
}

/// The `q`-quantile (0..=1) of `values` by nearest rank; `None` when empty.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.saturating_sub(1).min(sorted.len() - 1)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_counts_missing_seconds_as_zero() {
        let s = window_stats(&[10, 2, 4], 0, 4).unwrap();
        assert_eq!(s.total, 16);
        assert_eq!(s.mean, 4.0);
        assert_eq!(s.peak, 10);
        assert_eq!(s.peak_second, 0);
        assert_eq!(s.peak_over_mean(), Some(2.5));
        let tail = window_stats(&[10, 2, 4], 1, 3).unwrap();
        assert_eq!((tail.total, tail.peak, tail.peak_second), (6, 4, 2));
        assert!(window_stats(&[1], 2, 2).is_none());
        assert_eq!(window_stats(&[], 0, 2).unwrap().peak_over_mean(), None);
    }

    #[test]
    fn nearest_rank_quantiles() {
        let v = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(quantile(&v, 0.5), Some(3.0));
        assert_eq!(quantile(&v, 1.0), Some(5.0));
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
