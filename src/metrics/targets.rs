//! The metrics of each target account the daemon runs a loop for
//! (docs/architecture.md, "Many targets"): whether it is up, its passes by
//! outcome, its last success and its failures in a row. The `account`
//! label is a configured account name (`aws` for the `[aws]` one): bounded
//! by the file, never an id.

use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec};
use strum::VariantArray as _;

use super::declare::metric_set;
use crate::reconcile::CycleOutcome;

metric_set! {
    /// The metrics of the targets.
    pub(super) struct TargetMetrics {
        up: IntGaugeVec = (
            "target_up",
            "1 when the target account's last pass reached it (outcome success or partial), 0 when it could not \
             observe it (failed or incomplete: a role that cannot be assumed, a region down) or before its first \
             pass.",
            labels ["account"]
        ),
        passes: IntCounterVec = (
            "target_passes_total",
            "Passes of a target account, by outcome (success, partial, incomplete, failed).",
            labels ["account", "outcome"]
        ),
        last_success: GaugeVec = (
            "target_last_success_timestamp_seconds",
            "Unix time at which the target account's last successful pass started; 0 before one.",
            labels ["account"]
        ),
        consecutive_failures: IntGaugeVec = (
            "target_consecutive_failures",
            "Passes in a row of the target account that failed or were incomplete.",
            labels ["account"]
        ),
    }
}

impl TargetMetrics {
    /// A target's loop starts: its series exist, at zero.
    pub(super) fn started(&self, account: &str) {
        self.up.with_label_values(&[account]).set(0);
        for outcome in CycleOutcome::VARIANTS {
            self.passes.with_label_values(&[account, outcome.as_str()]);
        }
        self.last_success.with_label_values(&[account]);
        self.consecutive_failures.with_label_values(&[account]).set(0);
    }

    /// A pass of the target ended.
    pub(super) fn pass(&self, account: &str, outcome: CycleOutcome, failures: u32, success_at: Option<f64>) {
        let failed = crate::http::is_target_failure(outcome);
        self.up.with_label_values(&[account]).set(i64::from(!failed));
        self.passes.with_label_values(&[account, outcome.as_str()]).inc();
        if let Some(at) = success_at {
            self.last_success.with_label_values(&[account]).set(at);
        }
        self.consecutive_failures.with_label_values(&[account]).set(i64::from(failures));
    }

    /// A reload removed the target: its series go (the label set stays
    /// the file's account names).
    pub(super) fn stopped(&self, account: &str) {
        let _ = self.up.remove_label_values(&[account]);
        for outcome in CycleOutcome::VARIANTS {
            let _ = self.passes.remove_label_values(&[account, outcome.as_str()]);
        }
        let _ = self.last_success.remove_label_values(&[account]);
        let _ = self.consecutive_failures.remove_label_values(&[account]);
    }
}
