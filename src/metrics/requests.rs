//! The metrics of EC2 requests: every attempt (each describe page one) by
//! operation and outcome, its latency, throttling, retries and the retry
//! quota, fed by [`crate::ec2::limited::Limited`] through its
//! [`crate::ec2::limited::RequestObserver`].

use std::collections::BTreeSet;
use std::time::Duration;
use strum::VariantArray as _;

use prometheus::{HistogramVec, IntCounter, IntCounterVec, IntGaugeVec};

use super::declare::metric_set;
use crate::ec2::limited::RetryOutcome;
use crate::ec2::{ErrorKind, Operation};

/// Buckets of `aws_request_duration_seconds`: 5 ms to 30 s (a retried
/// attempt is one observation each).
pub const REQUEST_BUCKETS: [f64; 13] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0];

/// `aws_requests_total{outcome}` label value of a request EC2 answered
/// without error; the others are [`ErrorKind::as_str`].
pub const REQUEST_OK: &str = "ok";

metric_set! {
    /// The metrics of EC2 requests.
    pub(super) struct RequestMetrics {
        requests: IntCounterVec = (
            "aws_requests_total",
            "EC2 HTTP request attempts (each describe page one; retries included), by action and outcome (ok or error kind).",
            labels ["operation", "outcome"]
        ),
        request_duration: HistogramVec = (
            "aws_request_duration_seconds",
            "Latency of one EC2 request attempt, by action.",
            labels ["operation"],
            buckets REQUEST_BUCKETS
        ),
        throttled: IntCounter = (
            "throttled_requests_total",
            "EC2 request attempts answered RequestLimitExceeded (or another throttling code)."
        ),
        retries: IntCounterVec = (
            "aws_retries_total",
            "Throttled or transient EC2 request attempts, by what followed (retried, max_attempts, quota_empty).",
            labels ["outcome"]
        ),
        retry_quota: IntGaugeVec = (
            "aws_retry_quota_tokens",
            "Tokens left in the retry quota of an account's EC2 client; at 0, its failing requests are no longer retried.",
            labels ["account"]
        ),
    }
}

impl RequestMetrics {
    /// Creates every known label combination at zero.
    pub(super) fn zero(&self) {
        for op in Operation::daemon_operations() {
            self.requests.with_label_values(&[op.as_str(), REQUEST_OK]);
            for kind in ErrorKind::VARIANTS {
                self.requests.with_label_values(&[op.as_str(), kind.as_str()]);
            }
            self.request_duration.with_label_values(&[op.as_str()]);
        }
        for outcome in RetryOutcome::VARIANTS {
            self.retries.with_label_values(&[outcome.as_str()]);
        }
    }

    /// Records one request attempt.
    pub(super) fn record(&self, operation: Operation, outcome: &'static str, elapsed: Duration) {
        self.requests.with_label_values(&[operation.as_str(), outcome]).inc();
        self.request_duration.with_label_values(&[operation.as_str()]).observe(elapsed.as_secs_f64());
        if outcome == ErrorKind::Throttled.as_str() {
            self.throttled.inc();
        }
    }

    /// Records what followed a retryable error.
    pub(super) fn retry(&self, outcome: RetryOutcome) {
        self.retries.with_label_values(&[outcome.as_str()]).inc();
    }

    /// Removes the retry quota series of the accounts not in `accounts`.
    pub(super) fn retain_retry_quotas(&self, accounts: &BTreeSet<String>) {
        let families = prometheus::core::Collector::collect(&self.retry_quota);
        let shown: Vec<String> = families
            .iter()
            .flat_map(|family| family.get_metric())
            .flat_map(|metric| metric.get_label())
            .filter(|label| label.name() == "account")
            .map(|label| label.value().to_owned())
            .collect();
        for account in shown.iter().filter(|a| !accounts.contains(*a)) {
            let _ = self.retry_quota.remove_label_values(&[account]);
        }
    }

    /// Records the tokens left in the retry quota of the client of
    /// `account` (a configured account name, `aws` for `[aws]`).
    pub(super) fn retry_quota(&self, account: &str, tokens: u32) {
        self.retry_quota.with_label_values(&[account]).set(i64::from(tokens));
    }
}
