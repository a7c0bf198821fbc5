//! The figures the benches print from their samples: percentiles, and the smallest, median
//! and largest of a run.

use std::time::Duration;

/// `d` in milliseconds.
pub(super) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The `p`th percentile of `values` (nearest rank); NaN when there are none.
pub(super) fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The smallest, the median (of an even count, the upper of the two middle ones) and the
/// largest of `values`; NaN when there are none.
pub(super) fn spread(values: &[f64]) -> [f64; 3] {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match (sorted.first(), sorted.last()) {
        (Some(&min), Some(&max)) => [min, sorted[sorted.len() / 2], max],
        _ => [f64::NAN; 3],
    }
}

#[cfg(test)]
mod tests {
    use super::{percentile, spread};

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 50.0);
        assert_eq!(percentile(&values, 99.0), 99.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn spread_of_unsorted_values() {
        assert_eq!(spread(&[3.0, 1.0, 2.0]), [1.0, 2.0, 3.0]);
        assert_eq!(spread(&[4.0, 1.0, 3.0, 2.0]), [1.0, 3.0, 4.0]);
        assert_eq!(spread(&[5.0]), [5.0; 3]);
        assert!(spread(&[]).iter().all(|v| v.is_nan()));
    }
}
