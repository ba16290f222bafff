//! Running statistics over evaluated results.

use crate::eval::format_value;

#[derive(Debug, Default)]
pub struct Stats {
    values: Vec<f64>,
}

impl Stats {
    pub fn record(&mut self, value: f64) {
        self.values.push(value);
    }

    pub fn count(&self) -> usize {
        self.values.len()
    }

    fn mean(&self) -> f64 {
        self.values.iter().sum::<f64>() / self.values.len() as f64
    }

    fn median(&self) -> f64 {
        let mut sorted = self.values.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let mid = sorted.len() / 2;
        if sorted.len() % 2 == 0 {
            (sorted[mid - 1] + sorted[mid]) / 2.0
        } else {
            sorted[mid]
        }
    }

    pub fn summary(&self) -> String {
        if self.values.is_empty() {
            return "no results".to_string();
        }
        let min = self.values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!(
            "{} results: min {} max {} mean {} median {}",
            self.count(),
            format_value(min),
            format_value(max),
            format_value(self.mean()),
            format_value(self.median()),
        )
    }
}
