//! The event path's metrics (docs/metrics.md, "Events"), registered into
//! the daemon's registry when an event source is configured (no queue, no
//! event metrics). Labels are closed sets: ignore reasons, error kinds,
//! pass kinds.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use super::EventErrorKind;
use super::runner::ignore_labels;

/// Lag buckets: from an event's own time to the start of its targeted pass.
/// EventBridge's CloudTrail events take seconds to minutes to arrive.
const LAG_BUCKETS: [f64; 13] = [0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0];

const ERROR_KINDS: [EventErrorKind; 7] = [
    EventErrorKind::NoQueue,
    EventErrorKind::Denied,
    EventErrorKind::Credentials,
    EventErrorKind::Throttled,
    EventErrorKind::Transient,
    EventErrorKind::InvalidReceipt,
    EventErrorKind::Other,
];

/// Every metric of the event path.
#[derive(Clone, Debug)]
pub struct EventMetrics {
    /// `events_received_total`.
    pub received: IntCounter,
    /// `events_acted_on_total`.
    pub acted_on: IntCounter,
    /// `events_ignored_total{reason}`.
    pub ignored: IntCounterVec,
    /// `event_source_errors_total{kind}`.
    pub errors: IntCounterVec,
    /// `event_source_up`.
    pub up: IntGauge,
    /// `event_lag_seconds`.
    pub lag: Histogram,
    /// `passes_total{kind}`.
    pub passes: IntCounterVec,
}

impl EventMetrics {
    /// Creates the metrics, every label at zero, and registers them.
    ///
    /// # Errors
    /// A registration error (the metrics are already registered).
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let metrics = Self {
            received: IntCounter::new("events_received_total", "Messages received from the event queue.")?,
            acted_on: IntCounter::new(
                "events_acted_on_total",
                "Events whose groups and instances were marked dirty for a targeted pass.",
            )?,
            ignored: IntCounterVec::new(
                Opts::new("events_ignored_total", "Events read, deleted and not acted on, by reason."),
                &["reason"],
            )?,
            errors: IntCounterVec::new(
                Opts::new("event_source_errors_total", "Failed requests to the event queue, by error kind."),
                &["kind"],
            )?,
            up: IntGauge::new("event_source_up", "1 while the event queue answers, 0 while it fails (polling only).")?,
            lag: Histogram::with_opts(
                HistogramOpts::new(
                    "event_lag_seconds",
                    "From an event's own time to the start of the targeted pass that acted on it.",
                )
                .buckets(LAG_BUCKETS.to_vec()),
            )?,
            passes: IntCounterVec::new(
                Opts::new("passes_total", "Passes by kind: full (every interval) or targeted (on events)."),
                &["kind"],
            )?,
        };
        for label in ignore_labels() {
            metrics.ignored.with_label_values(&[label]);
        }
        for kind in ERROR_KINDS {
            metrics.errors.with_label_values(&[kind.as_str()]);
        }
        for kind in ["full", "targeted"] {
            metrics.passes.with_label_values(&[kind]);
        }
        metrics.up.set(1);
        registry.register(Box::new(metrics.received.clone()))?;
        registry.register(Box::new(metrics.acted_on.clone()))?;
        registry.register(Box::new(metrics.ignored.clone()))?;
        registry.register(Box::new(metrics.errors.clone()))?;
        registry.register(Box::new(metrics.up.clone()))?;
        registry.register(Box::new(metrics.lag.clone()))?;
        registry.register(Box::new(metrics.passes.clone()))?;
        Ok(metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_starts_at_zero_and_a_second_registration_fails() {
        let registry = Registry::new_custom(Some("classiclink_mirror".into()), None).unwrap();
        let metrics = EventMetrics::register(&registry).unwrap();
        let names: Vec<String> = registry.gather().iter().map(|f| f.name().to_owned()).collect();
        assert!(names.contains(&"classiclink_mirror_events_ignored_total".to_owned()), "{names:?}");
        let ignored = registry.gather().into_iter().find(|f| f.name().ends_with("events_ignored_total")).unwrap();
        assert_eq!(ignored.get_metric().len(), 7);
        metrics.passes.with_label_values(&["targeted"]).inc();
        assert!(EventMetrics::register(&registry).is_err());
    }
}
