//! Medians, percentiles and the figures printed for each scenario.

use serde_json::{Value, json};

/// Median of the samples (mean of the middle two for an even count).
pub fn median(samples: &[f64]) -> f64 {
    percentile(samples, 50.0)
}

/// Linear-interpolated percentile `p` (0..=100); NaN for no samples.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (p / 100.0) * (sorted.len() - 1) as f64;
    let low = rank.floor() as usize;
    let high = rank.ceil() as usize;
    sorted[low] + (sorted[high] - sorted[low]) * (rank - low as f64)
}

/// Whether a bigger number is better for a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// One reported figure: medians of ours, the seed crate and the limit.
#[derive(Debug, Clone)]
pub struct Figure {
    pub scenario: &'static str,
    pub codec: Option<&'static str>,
    pub label: String,
    pub unit: &'static str,
    pub better: Better,
    pub ours: f64,
    pub seed_crate: Option<f64>,
    pub limit: Option<f64>,
    /// Further keys (secondary figures, checks, run counts).
    pub extra: Value,
}

impl Figure {
    /// `ours` relative to `other`, oriented so that above 1 means ours is
    /// better (throughput: ours/other; memory and gaps: other/ours).
    fn ratio(&self, other: Option<f64>) -> Option<f64> {
        let other = other?;
        let r = match self.better {
            Better::Higher => self.ours / other,
            Better::Lower => other / self.ours,
        };
        r.is_finite().then_some(r)
    }

    pub fn ratio_vs_seed(&self) -> Option<f64> {
        self.ratio(self.seed_crate)
    }

    pub fn ratio_vs_limit(&self) -> Option<f64> {
        self.ratio(self.limit)
    }

    /// The JSON object printed on stdout.
    pub fn to_json(&self) -> Value {
        let finite = |v: Option<f64>| v.filter(|v| v.is_finite());
        let mut object = json!({
            "scenario": self.scenario,
            "codec": self.codec,
            "figure": self.label,
            "ours": finite(Some(self.ours)),
            "seed_crate": finite(self.seed_crate),
            "limit": finite(self.limit),
            "unit": self.unit,
            "ratio_vs_seed_crate": self.ratio_vs_seed(),
            "ratio_vs_limit": self.ratio_vs_limit(),
        });
        if let (Some(map), Some(extra)) = (object.as_object_mut(), self.extra.as_object()) {
            map.extend(extra.clone());
        }
        object
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_percentiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0, 5.0], 100.0), 5.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn ratios_are_oriented_so_higher_is_better() {
        let mut f = Figure {
            scenario: "x",
            codec: None,
            label: "x".into(),
            unit: "u",
            better: Better::Higher,
            ours: 10.0,
            seed_crate: Some(5.0),
            limit: Some(20.0),
            extra: Value::Null,
        };
        assert_eq!(f.ratio_vs_seed(), Some(2.0));
        assert_eq!(f.ratio_vs_limit(), Some(0.5));
        f.better = Better::Lower;
        assert_eq!(f.ratio_vs_seed(), Some(0.5));
    }
}
