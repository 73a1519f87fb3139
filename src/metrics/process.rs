//! The metrics of the process itself: configuration reloads, state file
//! failures and the build.

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec};
use strum::VariantArray as _;

use super::declare::metric_set;

/// `state_file_errors_total{kind}` label values
/// ([`crate::state::StateError::kind`]).
pub const STATE_FILE_ERROR_KINDS: [&str; 4] = ["read", "corrupt", "version", "write"];

/// How a configuration reload ended; the `config_reloads_total{outcome}` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[derive(strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum ReloadOutcome {
    /// The new file was valid and is now in force.
    Applied,
    /// The new file was invalid (or unreadable); the old configuration keeps running.
    Rejected,
}

impl ReloadOutcome {
    /// Stable label.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        self.into()
    }
}

metric_set! {
    /// The metrics of the process.
    pub(super) struct ProcessMetrics {
        reloads: IntCounterVec = (
            "config_reloads_total",
            "Configuration reloads, by outcome (applied, rejected).",
            labels ["outcome"]
        ),
        last_reload_ok: IntGauge = (
            "config_last_reload_successful",
            "0 when the last configuration reload was rejected (the old configuration runs), else 1."
        ),
        state_file_errors: IntCounterVec = (
            "state_file_errors_total",
            "State file failures, by kind: read, corrupt, version (at start: a conservative start) and write \
             (after a pass: the state is not kept).",
            labels ["kind"]
        ),
        build_info: IntGaugeVec = ("build_info", "Always 1; the version is a label.", labels ["version"]),
    }
}

impl ProcessMetrics {
    /// Creates every known label combination at zero, and sets
    /// `build_info` and `config_last_reload_successful` to 1.
    pub(super) fn zero(&self) {
        for outcome in ReloadOutcome::VARIANTS {
            self.reloads.with_label_values(&[outcome.as_str()]);
        }
        for kind in STATE_FILE_ERROR_KINDS {
            self.state_file_errors.with_label_values(&[kind]);
        }
        self.build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        self.last_reload_ok.set(1);
    }

    /// Records a configuration reload.
    pub(super) fn reload(&self, outcome: ReloadOutcome) {
        self.reloads.with_label_values(&[outcome.as_str()]).inc();
        self.last_reload_ok.set(i64::from(outcome == ReloadOutcome::Applied));
    }

    /// Records a state file failure of `kind`.
    pub(super) fn state_file_error(&self, kind: &'static str) {
        self.state_file_errors.with_label_values(&[kind]).inc();
    }
}
