//! Metric names (defined once, here) and the per-component counters the runner keeps.
//!
//! Counters are updated per batch, never per row. A [`MetricsSnapshot`] is part of every run
//! report.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Rows a component received (a source: decoded; a transform or sink: given to it).
pub const RECEIVED_ROWS_TOTAL: &str = "strata_component_received_rows_total";
/// Bytes a component received (a source: raw input bytes; others: Arrow memory size).
pub const RECEIVED_BYTES_TOTAL: &str = "strata_component_received_bytes_total";
/// Rows a component sent downstream.
pub const SENT_ROWS_TOTAL: &str = "strata_component_sent_rows_total";
/// Batches a component sent downstream.
pub const SENT_BATCHES_TOTAL: &str = "strata_component_sent_batches_total";
/// Errors a component raised (retried or not).
pub const ERRORS_TOTAL: &str = "strata_component_errors_total";
/// Rows a component discarded to quarantine.
pub const DISCARDED_ROWS_TOTAL: &str = "strata_component_discarded_rows_total";
/// Values a component changed by policy (e.g. a drifting value set to null, an unknown field ignored).
pub const COERCED_VALUES_TOTAL: &str = "strata_component_coerced_values_total";
/// Time a component spent working, in nanoseconds.
pub const BUSY_NANOSECONDS_TOTAL: &str = "strata_component_busy_nanoseconds_total";

const NAMES: [&str; 8] = [
    RECEIVED_ROWS_TOTAL,
    RECEIVED_BYTES_TOTAL,
    SENT_ROWS_TOTAL,
    SENT_BATCHES_TOTAL,
    ERRORS_TOTAL,
    DISCARDED_ROWS_TOTAL,
    COERCED_VALUES_TOTAL,
    BUSY_NANOSECONDS_TOTAL,
];

/// Counters of one component.
#[derive(Debug, Default)]
pub struct ComponentMetrics {
    counters: [AtomicU64; 8],
}

impl ComponentMetrics {
    fn slot(name: &str) -> Option<usize> {
        NAMES.iter().position(|n| *n == name)
    }

    /// Add `value` to the counter `name` (one of this module's constants; others are ignored).
    pub fn add(&self, name: &str, value: u64) {
        if let Some(i) = Self::slot(name) {
            self.counters[i].fetch_add(value, Ordering::Relaxed);
        }
    }

    /// Add elapsed time to the busy counter.
    pub fn add_busy(&self, elapsed: Duration) {
        self.add(
            BUSY_NANOSECONDS_TOTAL,
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
        );
    }

    /// The current value of counter `name`.
    pub fn get(&self, name: &str) -> u64 {
        Self::slot(name).map_or(0, |i| self.counters[i].load(Ordering::Relaxed))
    }
}

/// The metrics registry of one pipeline run: one [`ComponentMetrics`] per component name.
#[derive(Debug, Default, Clone)]
pub struct Metrics {
    components: Arc<Mutex<BTreeMap<String, Arc<ComponentMetrics>>>>,
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counters of `component`, created on first use. Hold on to the `Arc` in hot paths.
    pub fn component(&self, component: &str) -> Arc<ComponentMetrics> {
        let mut map = self.components.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(component.to_string()).or_default().clone()
    }

    /// A copy of every counter, by component then metric name.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let map = self.components.lock().unwrap_or_else(|p| p.into_inner());
        let components = map
            .iter()
            .map(|(c, m)| {
                (
                    c.clone(),
                    NAMES.iter().map(|n| ((*n).to_string(), m.get(n))).collect(),
                )
            })
            .collect();
        MetricsSnapshot { components }
    }
}

/// A point-in-time copy of a [`Metrics`] registry.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// component name → metric name → value.
    pub components: BTreeMap<String, BTreeMap<String, u64>>,
}

impl MetricsSnapshot {
    /// One counter, or 0.
    pub fn get(&self, component: &str, metric: &str) -> u64 {
        self.components
            .get(component)
            .and_then(|m| m.get(metric))
            .copied()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_accumulate_per_component() {
        let m = Metrics::new();
        m.component("source").add(RECEIVED_ROWS_TOTAL, 10);
        m.component("source").add(RECEIVED_ROWS_TOTAL, 5);
        m.component("sink").add(DISCARDED_ROWS_TOTAL, 2);
        let s = m.snapshot();
        assert_eq!(s.get("source", RECEIVED_ROWS_TOTAL), 15);
        assert_eq!(s.get("sink", DISCARDED_ROWS_TOTAL), 2);
        assert_eq!(s.get("nope", RECEIVED_ROWS_TOTAL), 0);
    }
}
