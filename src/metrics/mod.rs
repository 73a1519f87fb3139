//! Every Prometheus metric of the daemon (docs/metrics.md), each declared
//! once (`declare.rs`: name, help, labels) in the module of its concern:
//! [`passes`] (a finished pass), [`requests`] (EC2 request attempts) and
//! [`process`] (reloads, the state file, the build); the event path's
//! metrics are in [`crate::events::metrics`].
//!
//! The daemon feeds three things in and nothing else:
//!
//! - each finished pass ([`Metrics::record_pass`]);
//! - each configuration reload ([`Metrics::record_reload`]);
//! - each EC2 request attempt (every describe page is one) and each retry
//!   decision, through the [`RequestObserver`] that
//!   [`Metrics::request_observer`] hands to [`crate::ec2::limited::Limited`].
//!
//! [`Metrics::render`] gives the text exposition format for `/metrics`.
//!
//! Counters accumulate over the process lifetime. Gauges describe the *last*
//! pass and are overwritten by the next one, every label value included: a
//! conflict kind that disappeared drops to 0. Labels are small closed enums;
//! ids never go in labels. Every label combination known in advance is
//! registered at start, so dashboards see zeros rather than gaps.
//! `docs/metrics.md` is the reference.

use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus::{Registry, TextEncoder};

use crate::ec2::Operation;
use crate::ec2::limited::{RequestObserver, RetryOutcome};
use crate::reconcile::{CycleOutcome, PassReport};

pub(crate) mod declare;
pub mod passes;
pub mod process;
pub mod requests;
pub mod targets;
#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;

pub use passes::{CONFLICT_KINDS, CYCLE_BUCKETS, DEFERRED_REASONS, DRIFT_DIRECTIONS};
pub use process::{ReloadOutcome, STATE_FILE_ERROR_KINDS};
pub use requests::{REQUEST_BUCKETS, REQUEST_OK};

/// Prefix of every metric name.
pub const PREFIX: &str = "classiclink_mirror";

/// Content type of [`Metrics::render`]'s output (text exposition format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every metric of the daemon. Cheap to share: wrap it in an [`Arc`]
/// ([`Metrics::new`] does).
pub struct Metrics {
    registry: Registry,
    passes: passes::PassMetrics,
    requests: requests::RequestMetrics,
    process: process::ProcessMetrics,
    targets: targets::TargetMetrics,
    /// Serialises pass updates against each other and against scrapes, so a
    /// scrape never sees half of one pass's gauges; also guards the conflict
    /// kinds seen so far (to reset those no longer present).
    pass_lock: Mutex<BTreeSet<&'static str>>,
    /// When the last EC2 request attempt ended (tokio clock): a pass that is
    /// making requests is alive (`/healthz`).
    last_request: Mutex<Option<tokio::time::Instant>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Creates and registers every metric, with every known label
    /// combination at zero, and sets `build_info` and
    /// `config_last_reload_successful` to 1.
    ///
    /// # Panics
    /// Never in practice: only if the fixed metric definitions were invalid
    /// (a bug caught by the tests).
    #[must_use]
    pub fn new() -> Arc<Self> {
        Arc::new(Self::build().expect("metric definitions are valid"))
    }

    fn build() -> prometheus::Result<Self> {
        let registry = Registry::new_custom(Some(PREFIX.to_owned()), None)?;
        let passes = passes::PassMetrics::register(&registry)?;
        let requests = requests::RequestMetrics::register(&registry)?;
        let process = process::ProcessMetrics::register(&registry)?;
        let targets = targets::TargetMetrics::register(&registry)?;
        // Every known label combination at zero.
        passes.zero();
        requests.zero();
        process.zero();
        Ok(Self {
            registry,
            passes,
            requests,
            process,
            targets,
            pass_lock: Mutex::new(BTreeSet::new()),
            last_request: Mutex::new(None),
        })
    }

    /// The registry, for a caller that wants to add its own collectors.
    #[must_use]
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Records one finished pass: counts the cycle, its duration, its actions,
    /// deferrals and observe errors, and overwrites every last-pass gauge.
    /// `started_at` is the wall-clock time the pass started — the `now` given
    /// to [`crate::reconcile::reconcile_once`]; a successful cycle sets
    /// `last_successful_cycle_timestamp_seconds` to `started_at + duration`.
    /// Returns the cycle's outcome.
    ///
    /// The daemon normally calls [`crate::http::State::record_pass`], which
    /// calls this; call it directly only when there is no HTTP state.
    pub fn record_pass(&self, pass: &PassReport, started_at: SystemTime) -> CycleOutcome {
        let outcome = CycleOutcome::of(pass);
        let mut seen_conflicts = self.pass_lock.lock();
        self.passes.record(pass, started_at, outcome, &mut seen_conflicts);
        outcome
    }

    /// A target account's loop starts: its `target_*` series exist.
    pub fn record_target_started(&self, account: &str) {
        self.targets.started(account);
    }

    /// A pass of the target `account` ended as `outcome`, its
    /// `failures`-th failure in a row (0: not a failure); `started_at` is
    /// its `now`.
    pub fn record_target_pass(&self, account: &str, outcome: CycleOutcome, failures: u32, started_at: SystemTime) {
        let success_at = (outcome == CycleOutcome::Success)
            .then(|| started_at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs_f64());
        self.targets.pass(account, outcome, failures, success_at);
    }

    /// A reload removed the target `account`: its series go.
    pub fn record_target_stopped(&self, account: &str) {
        self.targets.stopped(account);
    }

    /// Records a configuration reload (SIGHUP or file change).
    pub fn record_reload(&self, outcome: ReloadOutcome) {
        self.process.reload(outcome);
    }

    /// Records a state file that could not be loaded or saved; `kind` is a
    /// [`crate::state::StateError::kind`].
    pub fn record_state_file_error(&self, kind: &'static str) {
        self.process.state_file_error(kind);
    }

    /// Records one EC2 request attempt; what [`RequestObserver::record`] does.
    /// `outcome` is [`REQUEST_OK`] or an [`crate::ec2::ErrorKind::as_str`] label.
    pub fn record_request(&self, operation: Operation, outcome: &'static str, elapsed: Duration) {
        *self.last_request.lock() = Some(tokio::time::Instant::now());
        self.requests.record(operation, outcome, elapsed);
    }

    /// When the last EC2 request attempt ended, whatever its outcome (tokio
    /// clock); `None` before the first.
    #[must_use]
    pub fn last_request_at(&self) -> Option<tokio::time::Instant> {
        *self.last_request.lock()
    }

    /// Records what followed a retryable EC2 error; what
    /// [`RequestObserver::retry`] does.
    pub fn record_retry(&self, outcome: RetryOutcome) {
        self.requests.retry(outcome);
    }

    /// Records the tokens left in the retry quota of the client of
    /// `account` (a configured account name, [`crate::config::AWS_ACCOUNT`]
    /// for `[aws]`); what [`RequestObserver::retry_quota`] does.
    pub fn record_retry_quota(&self, account: &str, tokens: u32) {
        self.requests.retry_quota(account, tokens);
    }

    /// Removes the `aws_retry_quota_tokens` series of the accounts not in
    /// `accounts` (a reload left no mirror reaching them; named again, an
    /// account's new client brings its series back).
    pub fn retain_retry_quotas(&self, accounts: &BTreeSet<String>) {
        self.requests.retain_retry_quotas(accounts);
    }

    /// An observer for [`crate::ec2::limited::Limited::with_observer`] of
    /// the `[aws]` account's client: [`Self::account_request_observer`] of
    /// [`crate::config::AWS_ACCOUNT`].
    #[must_use]
    pub fn request_observer(self: &Arc<Self>) -> Box<dyn RequestObserver> {
        self.account_request_observer(crate::config::AWS_ACCOUNT)
    }

    /// An observer for [`crate::ec2::limited::Limited::with_observer`] of
    /// the client of `account` (a configured account name, `aws` for
    /// `[aws]`) that feeds `aws_requests_total`,
    /// `aws_request_duration_seconds`, `throttled_requests_total`,
    /// `aws_retries_total` (every account's requests together) and
    /// `aws_retry_quota_tokens{account}`. Call it again for each new
    /// `Limited` (e.g. after a reload changed the rate limits).
    #[must_use]
    pub fn account_request_observer(self: &Arc<Self>, account: &str) -> Box<dyn RequestObserver> {
        Box::new(AccountRequests { metrics: Arc::clone(self), account: account.to_owned() })
    }

    /// Every metric in the Prometheus text exposition format 0.0.4 (serve it
    /// with [`CONTENT_TYPE`]).
    #[must_use]
    pub fn render(&self) -> String {
        let families = {
            let _guard = self.pass_lock.lock();
            self.registry.gather()
        };
        let mut text = String::new();
        if let Err(error) = TextEncoder::new().encode_utf8(&families, &mut text) {
            tracing::error!(error = %error, "could not encode the metrics");
        }
        text
    }
}

/// The request observer of one account's client
/// ([`Metrics::account_request_observer`]).
struct AccountRequests {
    metrics: Arc<Metrics>,
    account: String,
}

impl RequestObserver for AccountRequests {
    fn record(&self, operation: Operation, outcome: &'static str, elapsed: Duration) {
        self.metrics.record_request(operation, outcome, elapsed);
    }
    fn retry(&self, _: Operation, outcome: RetryOutcome) {
        self.metrics.record_retry(outcome);
    }
    fn retry_quota(&self, tokens: u32) {
        self.metrics.record_retry_quota(&self.account, tokens);
    }
}

/// As the `[aws]` account's client.
impl RequestObserver for Arc<Metrics> {
    fn record(&self, operation: Operation, outcome: &'static str, elapsed: Duration) {
        self.record_request(operation, outcome, elapsed);
    }
    fn retry(&self, _: Operation, outcome: RetryOutcome) {
        self.record_retry(outcome);
    }
    fn retry_quota(&self, tokens: u32) {
        self.record_retry_quota(crate::config::AWS_ACCOUNT, tokens);
    }
}

/// As the `[aws]` account's client.
impl RequestObserver for Metrics {
    fn record(&self, operation: Operation, outcome: &'static str, elapsed: Duration) {
        self.record_request(operation, outcome, elapsed);
    }
    fn retry(&self, _: Operation, outcome: RetryOutcome) {
        self.record_retry(outcome);
    }
    fn retry_quota(&self, tokens: u32) {
        self.record_retry_quota(crate::config::AWS_ACCOUNT, tokens);
    }
}

/// A count as a gauge value (saturating; counts never get near `i64::MAX`).
fn gauge(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}
