//! Every Prometheus metric of the daemon, registered in one place (docs/metrics.md).
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
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use strum::VariantArray as _;

use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::ec2::limited::{RequestObserver, RetryOutcome};
use crate::ec2::{ErrorKind, Operation};
use crate::execute::{ActionResult, OutcomeKind};
use crate::model::SnapshotPart;
use crate::plan::{Action, ActionKind, Deferred, Plan, RepairKind, WarningKind};
use crate::reconcile::PassReport;

/// Prefix of every metric name.
pub const PREFIX: &str = "classiclink_mirror";

/// Content type of [`Metrics::render`]'s output (text exposition format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Buckets of `cycle_duration_seconds`: 100 ms to 10 min.
pub const CYCLE_BUCKETS: [f64; 13] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0];

/// Buckets of `aws_request_duration_seconds`: 5 ms to 30 s (a retried
/// attempt is one observation each).
pub const REQUEST_BUCKETS: [f64; 13] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0];

/// Every `conflicts{kind}` label value ([`WarningKind::conflict_kind`]).
pub const CONFLICT_KINDS: [WarningKind; 7] = [
    WarningKind::ConflictNameTaken,
    WarningKind::ConflictForeignLink,
    WarningKind::ConflictMultiVpc,
    WarningKind::ConflictDuplicateMapping,
    WarningKind::ConflictDuplicateName,
    WarningKind::ConflictInvalidMapping,
    WarningKind::ConflictForeignOwner,
];

/// `drift_grants{direction}` label values.
pub const DRIFT_DIRECTIONS: [&str; 3] = ["add", "remove", "update"];

/// `actions_deferred_total{reason}` label values.
pub const DEFERRED_REASONS: [&str; 6] = ["revoke_cap", "delete_cap", "unlink_cap", "quota", "safety_hold", "fight"];

/// `state_file_errors_total{kind}` label values
/// ([`crate::state::StateError::kind`]).
pub const STATE_FILE_ERROR_KINDS: [&str; 4] = ["read", "corrupt", "version", "write"];

/// `aws_requests_total{outcome}` label value of a request EC2 answered
/// without error; the others are [`ErrorKind::as_str`].
pub const REQUEST_OK: &str = "ok";

/// How a cycle ended; the `cycles_total{outcome}` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[derive(strum::IntoStaticStr, strum::VariantArray)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum CycleOutcome {
    /// Complete snapshot, no action failed or was cancelled.
    Success,
    /// Complete snapshot, but some action failed (or was cancelled by shutdown).
    Partial,
    /// Some part of the observation failed: no destructive action was planned.
    Incomplete,
    /// Nothing useful happened: the source groups could not be observed
    /// (every describe of them failed, or a shutdown stopped the pass during
    /// observation).
    Failed,
}

impl CycleOutcome {
    /// Classifies a finished pass. Failed beats incomplete beats partial.
    #[must_use]
    pub fn of(pass: &PassReport) -> Self {
        if pass.snapshot.incomplete.contains(&SnapshotPart::SourceGroups) {
            Self::Failed
        } else if !pass.snapshot.is_complete() {
            Self::Incomplete
        } else if pass
            .report
            .outcomes
            .iter()
            .any(|o| matches!(o.result, ActionResult::Failed(_) | ActionResult::Cancelled))
        {
            Self::Partial
        } else {
            Self::Success
        }
    }

    /// Stable label.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        self.into()
    }
}

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

/// The `actions_deferred_total` increments of one plan, by reason.
fn deferred_by_reason(deferred: &Deferred) -> [(&'static str, usize); 6] {
    [
        ("revoke_cap", deferred.revokes),
        ("delete_cap", deferred.deletes),
        ("unlink_cap", deferred.unlinks),
        // Grants not added because the revocations that would make room under
        // the rules-per-group quota were deferred or held.
        ("quota", deferred.adds),
        ("safety_hold", deferred.held),
        // Repairs of pairs backing off in a fight, and what depends on them.
        ("fight", deferred.fights),
    ]
}

/// Grant drift of a plan: the sum of its pairs' drift, by direction.
fn grant_drift(plan: &Plan) -> [(&'static str, usize); 3] {
    let (mut add, mut remove, mut update) = (0, 0, 0);
    for pair in &plan.pairs {
        add += pair.drift.add;
        remove += pair.drift.remove;
        update += pair.drift.update;
    }
    [("add", add), ("remove", remove), ("update", update)]
}

/// Link changes of a plan: attach, detach and relink actions, each counted
/// once even when it concerns several pairs.
fn link_drift(plan: &Plan) -> usize {
    plan.actions
        .iter()
        .filter(|a| matches!(a.action, Action::Attach { .. } | Action::Detach { .. } | Action::Relink { .. }))
        .count()
}

/// Every metric of the daemon. Cheap to share: wrap it in an [`Arc`]
/// ([`Metrics::new`] does).
pub struct Metrics {
    registry: Registry,
    cycles: IntCounterVec,
    cycle_duration: Histogram,
    last_success: Gauge,
    managed_pairs: IntGauge,
    drift_grants: IntGaugeVec,
    drift_links: IntGauge,
    actions: IntCounterVec,
    deferred: IntCounterVec,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    throttled: IntCounter,
    retries: IntCounterVec,
    retry_quota: IntGauge,
    unmirrorable: IntGauge,
    conflicts: IntGaugeVec,
    orphans: IntGauge,
    overflow_groups: IntGauge,
    safety_hold: IntGauge,
    reloads: IntCounterVec,
    last_reload_ok: IntGauge,
    observe_errors: IntCounterVec,
    state_file_errors: IntCounterVec,
    fights: IntCounterVec,
    fighting: IntGaugeVec,
    other_writer: IntCounter,
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

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
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
        let cycles = IntCounterVec::new(
            opts("cycles_total", "Reconcile cycles, by how they ended (success, partial, incomplete, failed)."),
            &["outcome"],
        )?;
        let cycle_duration = Histogram::with_opts(
            HistogramOpts::new("cycle_duration_seconds", "Wall time of one reconcile cycle (observe, plan, execute).")
                .buckets(CYCLE_BUCKETS.to_vec()),
        )?;
        let last_success = Gauge::with_opts(opts(
            "last_successful_cycle_timestamp_seconds",
            "Unix time at which the last cycle with outcome success finished; 0 before the first.",
        ))?;
        let managed_pairs = IntGauge::with_opts(opts("managed_pairs", "Mirror pairs managed in the last cycle."))?;
        let drift_grants = IntGaugeVec::new(
            opts("drift_grants", "Grants that differed between sources and mirrors in the last cycle, by direction."),
            &["direction"],
        )?;
        let drift_links = IntGauge::with_opts(opts(
            "drift_links",
            "ClassicLink changes (attach, detach, relink) the last cycle planned, audited ones included.",
        ))?;
        let actions = IntCounterVec::new(
            opts("actions_total", "Planned actions, by kind and by how they ended."),
            &["kind", "outcome"],
        )?;
        let deferred = IntCounterVec::new(
            opts(
                "actions_deferred_total",
                "Actions held back by a per-cycle cap, the rules quota or a safety hold; counted again every cycle they wait.",
            ),
            &["reason"],
        )?;
        let requests = IntCounterVec::new(
            opts(
                "aws_requests_total",
                "EC2 HTTP request attempts (each describe page one; retries included), by action and outcome (ok or error kind).",
            ),
            &["operation", "outcome"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new("aws_request_duration_seconds", "Latency of one EC2 request attempt, by action.")
                .buckets(REQUEST_BUCKETS.to_vec()),
            &["operation"],
        )?;
        let throttled = IntCounter::with_opts(opts(
            "throttled_requests_total",
            "EC2 request attempts answered RequestLimitExceeded (or another throttling code).",
        ))?;
        let retries = IntCounterVec::new(
            opts(
                "aws_retries_total",
                "Throttled or transient EC2 request attempts, by what followed (retried, max_attempts, quota_empty).",
            ),
            &["outcome"],
        )?;
        let retry_quota = IntGauge::with_opts(opts(
            "aws_retry_quota_tokens",
            "Tokens left in the EC2 client's retry quota; at 0, failing requests are no longer retried.",
        ))?;
        let unmirrorable = IntGauge::with_opts(opts(
            "unmirrorable_grants",
            "Source grants that could not be mirrored in the last cycle (unmanaged, other account, other VPC, ...).",
        ))?;
        let conflicts =
            IntGaugeVec::new(opts("conflicts", "Conflicts reported by the last cycle, by kind."), &["kind"])?;
        let orphans = IntGauge::with_opts(opts(
            "orphans",
            "Mirrors whose source is no longer managed or no longer exists, in the last cycle.",
        ))?;
        let overflow_groups = IntGauge::with_opts(opts(
            "overflow_groups",
            "Overflow groups in use (existing or to be created) over all pairs, in the last cycle.",
        ))?;
        let safety_hold = IntGauge::with_opts(opts(
            "safety_hold",
            "1 when the last cycle held destructive actions (incomplete snapshot, shrink guard or lost state), else 0.",
        ))?;
        let reloads = IntCounterVec::new(
            opts("config_reloads_total", "Configuration reloads, by outcome (applied, rejected)."),
            &["outcome"],
        )?;
        let last_reload_ok = IntGauge::with_opts(opts(
            "config_last_reload_successful",
            "0 when the last configuration reload was rejected (the old configuration runs), else 1.",
        ))?;
        let observe_errors = IntCounterVec::new(
            opts("observe_errors_total", "Describe calls that failed and left a part of the snapshot incomplete."),
            &["part"],
        )?;
        let state_file_errors = IntCounterVec::new(
            opts(
                "state_file_errors_total",
                "State file failures, by kind: read, corrupt, version (at start: a conservative start) and write \
                 (after a pass: the state is not kept).",
            ),
            &["kind"],
        )?;
        let fights = IntCounterVec::new(
            opts(
                "fights_total",
                "Fights detected: the same repair of a pair needed safety.fight_repairs times within \
                 safety.fight_window, by what keeps changing (mirror, grant, link).",
            ),
            &["kind"],
        )?;
        let fighting = IntGaugeVec::new(
            opts("fights", "Pairs in a fight after the last cycle (their repairs back off), by what keeps changing."),
            &["kind"],
        )?;
        let other_writer = IntCounter::with_opts(opts(
            "other_writer_passes_total",
            "Cycles whose writes were mostly already done (at least 2, and more than those EC2 did for us), or \
             that yielded to another writer doing the same work: another writer works on the same pairs.",
        ))?;
        let build_info = IntGaugeVec::new(opts("build_info", "Always 1; the version is a label."), &["version"])?;

        registry.register(Box::new(cycles.clone()))?;
        registry.register(Box::new(cycle_duration.clone()))?;
        registry.register(Box::new(last_success.clone()))?;
        registry.register(Box::new(managed_pairs.clone()))?;
        registry.register(Box::new(drift_grants.clone()))?;
        registry.register(Box::new(drift_links.clone()))?;
        registry.register(Box::new(actions.clone()))?;
        registry.register(Box::new(deferred.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(throttled.clone()))?;
        registry.register(Box::new(retries.clone()))?;
        registry.register(Box::new(retry_quota.clone()))?;
        registry.register(Box::new(unmirrorable.clone()))?;
        registry.register(Box::new(conflicts.clone()))?;
        registry.register(Box::new(orphans.clone()))?;
        registry.register(Box::new(overflow_groups.clone()))?;
        registry.register(Box::new(safety_hold.clone()))?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(last_reload_ok.clone()))?;
        registry.register(Box::new(observe_errors.clone()))?;
        registry.register(Box::new(state_file_errors.clone()))?;
        registry.register(Box::new(fights.clone()))?;
        registry.register(Box::new(fighting.clone()))?;
        registry.register(Box::new(other_writer.clone()))?;
        registry.register(Box::new(build_info.clone()))?;

        // Pre-register every known label combination at zero.
        for outcome in CycleOutcome::VARIANTS {
            cycles.with_label_values(&[outcome.as_str()]);
        }
        for direction in DRIFT_DIRECTIONS {
            drift_grants.with_label_values(&[direction]);
        }
        for kind in ActionKind::VARIANTS {
            for outcome in OutcomeKind::VARIANTS {
                actions.with_label_values(&[kind.as_str(), outcome.as_str()]);
            }
        }
        for reason in DEFERRED_REASONS {
            deferred.with_label_values(&[reason]);
        }
        for op in Operation::daemon_operations() {
            requests.with_label_values(&[op.as_str(), REQUEST_OK]);
            for kind in ErrorKind::VARIANTS {
                requests.with_label_values(&[op.as_str(), kind.as_str()]);
            }
            request_duration.with_label_values(&[op.as_str()]);
        }
        for outcome in RetryOutcome::VARIANTS {
            retries.with_label_values(&[outcome.as_str()]);
        }
        for kind in CONFLICT_KINDS.iter().filter_map(WarningKind::conflict_kind) {
            conflicts.with_label_values(&[kind]);
        }
        for outcome in [ReloadOutcome::Applied, ReloadOutcome::Rejected] {
            reloads.with_label_values(&[outcome.as_str()]);
        }
        for part in SnapshotPart::VARIANTS {
            observe_errors.with_label_values(&[part.as_str()]);
        }
        for kind in STATE_FILE_ERROR_KINDS {
            state_file_errors.with_label_values(&[kind]);
        }
        for kind in RepairKind::VARIANTS {
            fights.with_label_values(&[kind.as_str()]);
            fighting.with_label_values(&[kind.as_str()]);
        }
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        last_reload_ok.set(1);

        Ok(Self {
            registry,
            cycles,
            cycle_duration,
            last_success,
            managed_pairs,
            drift_grants,
            drift_links,
            actions,
            deferred,
            requests,
            request_duration,
            throttled,
            retries,
            retry_quota,
            unmirrorable,
            conflicts,
            orphans,
            overflow_groups,
            safety_hold,
            reloads,
            last_reload_ok,
            observe_errors,
            state_file_errors,
            fights,
            fighting,
            other_writer,
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
        let plan = &pass.plan;
        let mut seen_conflicts = self.pass_lock.lock();

        self.cycles.with_label_values(&[outcome.as_str()]).inc();
        self.cycle_duration.observe(pass.duration.as_secs_f64());
        if outcome == CycleOutcome::Success {
            let finished = started_at + pass.duration;
            let unix = finished.duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO);
            self.last_success.set(unix.as_secs_f64());
        }
        for o in &pass.report.outcomes {
            self.actions.with_label_values(&[o.kind.as_str(), o.result.label()]).inc();
        }
        for (reason, count) in deferred_by_reason(&plan.deferred) {
            self.deferred.with_label_values(&[reason]).inc_by(count as u64);
        }
        for error in &pass.observe_errors {
            self.observe_errors.with_label_values(&[error.part.as_str()]).inc();
        }
        for key in &pass.fights_started {
            self.fights.with_label_values(&[key.kind.as_str()]).inc();
        }
        if pass.other_writer {
            self.other_writer.inc();
        }
        for kind in RepairKind::VARIANTS.iter().copied() {
            let count = pass.fights.iter().filter(|f| f.kind == kind).count();
            self.fighting.with_label_values(&[kind.as_str()]).set(gauge(count));
        }

        // Last-pass gauges: every label value is overwritten.
        self.managed_pairs.set(gauge(plan.pairs.len()));
        for (direction, count) in grant_drift(plan) {
            self.drift_grants.with_label_values(&[direction]).set(gauge(count));
        }
        self.drift_links.set(gauge(link_drift(plan)));
        self.unmirrorable.set(gauge(plan.warnings.iter().filter(|w| w.kind == WarningKind::Unmirrorable).count()));
        let mut conflicts: BTreeMap<&'static str, usize> = BTreeMap::new();
        for kind in plan.warnings.iter().filter_map(|w| w.kind.conflict_kind()) {
            *conflicts.entry(kind).or_default() += 1;
        }
        seen_conflicts.extend(CONFLICT_KINDS.iter().filter_map(WarningKind::conflict_kind));
        seen_conflicts.extend(conflicts.keys().copied());
        for kind in seen_conflicts.iter() {
            self.conflicts.with_label_values(&[*kind]).set(gauge(conflicts.get(kind).copied().unwrap_or(0)));
        }
        self.orphans.set(gauge(plan.orphans.len()));
        self.overflow_groups.set(gauge(plan.pairs.iter().map(|p| p.shards.len()).sum()));
        self.safety_hold.set(i64::from(plan.holds.destructive_held()));
        outcome
    }

    /// Records a configuration reload (SIGHUP or file change).
    pub fn record_reload(&self, outcome: ReloadOutcome) {
        self.reloads.with_label_values(&[outcome.as_str()]).inc();
        self.last_reload_ok.set(i64::from(outcome == ReloadOutcome::Applied));
    }

    /// Records a state file that could not be loaded or saved; `kind` is a
    /// [`crate::state::StateError::kind`].
    pub fn record_state_file_error(&self, kind: &'static str) {
        self.state_file_errors.with_label_values(&[kind]).inc();
    }

    /// Records one EC2 request attempt; what [`RequestObserver::record`] does.
    /// `outcome` is [`REQUEST_OK`] or an [`ErrorKind::as_str`] label.
    pub fn record_request(&self, operation: Operation, outcome: &'static str, elapsed: Duration) {
        *self.last_request.lock() = Some(tokio::time::Instant::now());
        self.requests.with_label_values(&[operation.as_str(), outcome]).inc();
        self.request_duration.with_label_values(&[operation.as_str()]).observe(elapsed.as_secs_f64());
        if outcome == ErrorKind::Throttled.as_str() {
            self.throttled.inc();
        }
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
        self.retries.with_label_values(&[outcome.as_str()]).inc();
    }

    /// Records the tokens left in the retry quota; what
    /// [`RequestObserver::retry_quota`] does.
    pub fn record_retry_quota(&self, tokens: u32) {
        self.retry_quota.set(i64::from(tokens));
    }

    /// An observer for [`crate::ec2::limited::Limited::with_observer`] that
    /// feeds `aws_requests_total`, `aws_request_duration_seconds`,
    /// `throttled_requests_total`, `aws_retries_total` and
    /// `aws_retry_quota_tokens`. Call it again for each new `Limited`
    /// (e.g. after a reload changed the rate limits): all share these metrics.
    #[must_use]
    pub fn request_observer(self: &Arc<Self>) -> Box<dyn RequestObserver> {
        Box::new(Arc::clone(self))
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

impl RequestObserver for Arc<Metrics> {
    fn record(&self, operation: Operation, outcome: &'static str, elapsed: Duration) {
        self.record_request(operation, outcome, elapsed);
    }
    fn retry(&self, _: Operation, outcome: RetryOutcome) {
        self.record_retry(outcome);
    }
    fn retry_quota(&self, tokens: u32) {
        self.record_retry_quota(tokens);
    }
}

impl RequestObserver for Metrics {
    fn record(&self, operation: Operation, outcome: &'static str, elapsed: Duration) {
        self.record_request(operation, outcome, elapsed);
    }
    fn retry(&self, _: Operation, outcome: RetryOutcome) {
        self.record_retry(outcome);
    }
    fn retry_quota(&self, tokens: u32) {
        self.record_retry_quota(tokens);
    }
}

/// A count as a gauge value (saturating; counts never get near `i64::MAX`).
fn gauge(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// Builders of synthetic passes and an exposition-format checker, shared by
/// the metrics and HTTP tests.
#[cfg(test)]
pub(crate) mod test_support {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use crate::ec2::{Ec2Error, Operation};
    use crate::execute::{ActionResult, ExecuteError, Outcome, Report};
    use crate::model::{GroupId, InstanceId, Snapshot, SnapshotPart, VpcId};
    use crate::observe::ObserveError;
    use crate::plan::{
        Action, ActionId, Drift, GroupRef, Origin, Orphan, PairKey, PairPlan, Plan, PlannedAction, Warning, WarningKind,
    };
    use crate::reconcile::PassReport;

    pub fn group(id: &str) -> GroupId {
        GroupId::try_new(id).expect("test group id")
    }

    pub fn vpc(id: &str) -> VpcId {
        VpcId::try_new(id).expect("test vpc id")
    }

    pub fn instance(id: &str) -> InstanceId {
        InstanceId::try_new(id).expect("test instance id")
    }

    pub fn key(source: &str, vpc_id: &str) -> PairKey {
        PairKey { source: group(source), vpc: vpc(vpc_id) }
    }

    pub fn ec2_failure(operation: Operation, code: &str) -> ActionResult {
        ActionResult::Failed(ExecuteError::Ec2(Ec2Error::new(operation, code, format!("{code} (test)"))))
    }

    /// A pass assembled by hand: plan, outcomes and snapshot completeness.
    pub struct PassBuilder {
        plan: Plan,
        results: Vec<ActionResult>,
        snapshot: Snapshot,
        observe_errors: Vec<ObserveError>,
        duration: Duration,
        created: BTreeMap<PairKey, GroupId>,
    }

    impl PassBuilder {
        pub fn new() -> Self {
            Self {
                plan: Plan::default(),
                results: Vec::new(),
                snapshot: Snapshot::default(),
                observe_errors: Vec::new(),
                duration: Duration::from_millis(1500),
                created: BTreeMap::new(),
            }
        }

        /// A pair whose mirror is `mirror` (`None`: unavailable), with `drift`.
        pub fn pair(mut self, key: &PairKey, name: &str, mirror: Option<GroupRef>, drift: Drift) -> Self {
            self.plan.pairs.push(PairPlan {
                key: key.clone(),
                source_name: name.to_owned(),
                mirror,
                mirror_name: name.to_owned(),
                audit: false,
                origin: Origin::Config(self.plan.pairs.len()),
                drift,
                shards: Vec::new(),
            });
            self
        }

        pub fn action(mut self, action: Action, pair: Option<&PairKey>, result: ActionResult) -> Self {
            let id = ActionId(self.plan.actions.len());
            let audit = result == ActionResult::Audit;
            self.plan.actions.push(PlannedAction { id, action, depends_on: Vec::new(), audit, pair: pair.cloned() });
            self.results.push(result);
            self
        }

        pub fn warning(mut self, kind: WarningKind, pair: Option<&PairKey>, message: &str) -> Self {
            self.plan.warnings.push(Warning {
                kind,
                pair: pair.cloned(),
                subject: None,
                reason: None,
                message: message.to_owned(),
            });
            self
        }

        pub fn orphan(mut self, id: &str, vpc_id: &str, source: &str) -> Self {
            self.plan.orphans.push(Orphan {
                group: group(id),
                vpc: vpc(vpc_id),
                name: "old".to_owned(),
                source: group(source),
                since: std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
                due: Some(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_600)),
            });
            self
        }

        /// `part` could not be observed: the snapshot and the plan's holds say so.
        pub fn incomplete(mut self, part: SnapshotPart) -> Self {
            self.snapshot.incomplete.insert(part);
            if !self.plan.holds.incomplete.contains(&part) {
                self.plan.holds.incomplete.push(part);
            }
            self.observe_errors.push(ObserveError {
                part,
                source: Ec2Error::new(Operation::DescribeSecurityGroups, "RequestLimitExceeded", "slow down"),
            });
            self
        }

        pub fn shrink_hold(mut self) -> Self {
            self.plan.holds.shrink = true;
            self
        }

        pub fn deferred(mut self, deferred: crate::plan::Deferred) -> Self {
            self.plan.deferred = deferred;
            self
        }

        pub fn created(mut self, key: &PairKey, id: &str) -> Self {
            self.created.insert(key.clone(), group(id));
            self
        }

        pub fn build(self) -> PassReport {
            let outcomes = self
                .plan
                .actions
                .iter()
                .zip(self.results)
                .map(|(planned, result)| Outcome {
                    id: planned.id,
                    kind: planned.action.kind(),
                    pair: planned.pair.clone(),
                    result,
                })
                .collect();
            PassReport {
                snapshot: self.snapshot,
                observe_errors: self.observe_errors,
                plan: self.plan,
                report: Report { outcomes, created: self.created },
                duration: self.duration,
                interrupted: false,
                fights: Vec::new(),
                fights_started: Vec::new(),
                other_writer: false,
            }
        }
    }

    /// One sample line of the exposition format.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Sample {
        pub name: String,
        pub labels: BTreeMap<String, String>,
        pub value: f64,
    }

    fn is_metric_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    fn is_label_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    }

    fn parse_value(text: &str) -> Option<f64> {
        match text {
            "+Inf" => Some(f64::INFINITY),
            "-Inf" => Some(f64::NEG_INFINITY),
            "NaN" => Some(f64::NAN),
            _ => text.parse().ok(),
        }
    }

    /// Parses `{a="x",b="y"}`; returns the labels and the rest of the line.
    fn parse_labels(text: &str) -> Result<(BTreeMap<String, String>, &str), String> {
        let mut labels = BTreeMap::new();
        let mut rest = text.strip_prefix('{').ok_or("labels must open with {")?;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                return Ok((labels, after));
            }
            let eq = rest.find('=').ok_or("label without =")?;
            let name = &rest[..eq];
            if !is_label_name(name) {
                return Err(format!("bad label name {name:?}"));
            }
            let mut value = String::new();
            let mut chars = rest[eq + 1..].strip_prefix('"').ok_or("label value must be quoted")?.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c @ ('\\' | '"'))) => value.push(c),
                        other => return Err(format!("bad escape {other:?}")),
                    },
                    Some((i, '"')) => break i,
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated label value".to_owned()),
                }
            };
            if labels.insert(name.to_owned(), value).is_some() {
                return Err(format!("duplicate label {name}"));
            }
            rest = &rest[eq + 1 + 1 + end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }

    /// Checks every line of a text exposition (format 0.0.4) and returns its
    /// samples; `# TYPE` must precede a family's samples.
    pub fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
        let mut samples = Vec::new();
        let mut typed: BTreeMap<String, String> = BTreeMap::new();
        for (number, line) in text.lines().enumerate() {
            let fail = |why: &str| format!("line {}: {why}: {line:?}", number + 1);
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix("# ") {
                let mut words = comment.splitn(3, ' ');
                match (words.next(), words.next(), words.next()) {
                    (Some("HELP"), Some(name), Some(_)) if is_metric_name(name) => {}
                    (Some("TYPE"), Some(name), Some(kind)) if is_metric_name(name) => {
                        if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                            return Err(fail("unknown type"));
                        }
                        if typed.insert(name.to_owned(), kind.to_owned()).is_some() {
                            return Err(fail("family typed twice"));
                        }
                    }
                    _ => return Err(fail("bad comment line")),
                }
                continue;
            }
            let name_end = line.find(['{', ' ']).ok_or_else(|| fail("no value"))?;
            let name = &line[..name_end];
            if !is_metric_name(name) {
                return Err(fail("bad metric name"));
            }
            let (labels, rest) = if line[name_end..].starts_with('{') {
                parse_labels(&line[name_end..]).map_err(|e| fail(&e))?
            } else {
                (BTreeMap::new(), &line[name_end..])
            };
            let mut fields = rest.strip_prefix(' ').ok_or_else(|| fail("no space before value"))?.split(' ');
            let value = fields.next().and_then(parse_value).ok_or_else(|| fail("bad value"))?;
            if let Some(timestamp) = fields.next()
                && timestamp.parse::<i64>().is_err()
            {
                return Err(fail("bad timestamp"));
            }
            if fields.next().is_some() {
                return Err(fail("trailing fields"));
            }
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    name.strip_suffix(suffix).filter(|base| typed.get(*base).is_some_and(|t| t == "histogram"))
                })
                .unwrap_or(name);
            if !typed.contains_key(family) {
                return Err(fail("sample before its # TYPE"));
            }
            samples.push(Sample { name: name.to_owned(), labels, value });
        }
        Ok(samples)
    }

    /// The value of the sample named `name` with exactly these labels.
    pub fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        samples.iter().find(|s| s.name == name && s.labels == want).map(|s| s.value)
    }

    /// Every sample of the metric `name`.
    pub fn series<'a>(samples: &'a [Sample], name: &str) -> Vec<&'a Sample> {
        samples.iter().filter(|s| s.name == name).collect()
    }

    /// Convenience: a fresh pair key for tests that need a mirror reference.
    pub fn existing(id: &str) -> GroupRef {
        GroupRef::Existing(group(id))
    }

    /// A link action for drift counting.
    pub fn attach(instance_id: &str, vpc_id: &str, mirror: &str) -> Action {
        Action::Attach { instance: instance(instance_id), vpc: vpc(vpc_id), groups: vec![existing(mirror)] }
    }
}

#[cfg(test)]
/// Every metric of the contract (docs/metrics.md), without the prefix.
pub(crate) const CONTRACT_METRICS: [&str; 17] = [
    "cycles_total",
    "cycle_duration_seconds",
    "last_successful_cycle_timestamp_seconds",
    "managed_pairs",
    "drift_grants",
    "drift_links",
    "actions_total",
    "actions_deferred_total",
    "aws_requests_total",
    "aws_request_duration_seconds",
    "throttled_requests_total",
    "unmirrorable_grants",
    "conflicts",
    "orphans",
    "overflow_groups",
    "safety_hold",
    "config_reloads_total",
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, SystemTime};

    use super::test_support::*;
    use super::*;
    use crate::ec2::limited::{Limited, RetryPolicy};
    use crate::plan::Drift;

    fn name(metric: &str) -> String {
        format!("{PREFIX}_{metric}")
    }

    fn samples(metrics: &Metrics) -> Vec<Sample> {
        let text = metrics.render();
        parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn get(samples: &[Sample], metric: &str, labels: &[(&str, &str)]) -> f64 {
        value(samples, &name(metric), labels).unwrap_or_else(|| panic!("no sample {metric} {labels:?}"))
    }

    fn t0() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    /// A pass with a bit of everything: two pairs with drift, conflicts, an
    /// unmirrorable grant, an orphan, a failed and a deferred action.
    fn busy_pass() -> PassReport {
        let web = key("sg-0a1", "vpc-9f2");
        let app = key("sg-0a2", "vpc-9f2");
        PassBuilder::new()
            .pair(&web, "web", Some(existing("sg-77c")), Drift { add: 3, remove: 1, update: 2, links: 1 })
            .pair(&app, "app", None, Drift::default())
            .action(attach("i-0b3", "vpc-9f2", "sg-77c"), Some(&web), ActionResult::Done)
            .action(
                Action::EnableClassicLink { vpc: vpc("vpc-9f2") },
                None,
                ec2_failure(Operation::EnableVpcClassicLink, "UnauthorizedOperation"),
            )
            .warning(WarningKind::ConflictNameTaken, Some(&app), "the name app is taken in vpc-9f2")
            .warning(WarningKind::ConflictForeignLink, None, "i-0b9 is linked to vpc-111 by someone else")
            .warning(WarningKind::ConflictForeignLink, None, "i-0ba is linked to vpc-111 by someone else")
            .warning(WarningKind::Unmirrorable, Some(&web), "sg-0a1 rule tcp 80 from sg-0ff cannot be mirrored")
            .orphan("sg-99e", "vpc-9f2", "sg-0a9")
            .deferred(Deferred { revokes: 4, deletes: 1, unlinks: 2, adds: 3, held: 0, fights: 5 })
            .shrink_hold()
            .build()
    }

    #[test]
    fn every_spec_metric_is_exposed_before_the_first_pass() {
        let metrics = Metrics::new();
        let text = metrics.render();
        let samples = parse_exposition(&text).unwrap();
        for metric in CONTRACT_METRICS {
            assert!(text.contains(&format!("# TYPE {} ", name(metric))), "{metric} is not exposed:\n{text}");
        }
        assert_eq!(get(&samples, "build_info", &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);
        assert_eq!(get(&samples, "config_last_reload_successful", &[]), 1.0);
        assert!(text.contains(&format!("# TYPE {} counter", name("observe_errors_total"))));
    }

    #[test]
    fn every_known_label_combination_starts_at_zero() {
        let metrics = Metrics::new();
        let samples = samples(&metrics);
        assert_eq!(
            series(&samples, &name("actions_total")).len(),
            ActionKind::VARIANTS.len() * OutcomeKind::VARIANTS.len()
        );
        for kind in ActionKind::VARIANTS {
            for outcome in OutcomeKind::VARIANTS.iter().map(OutcomeKind::as_str) {
                assert_eq!(get(&samples, "actions_total", &[("kind", kind.as_str()), ("outcome", outcome)]), 0.0);
            }
        }
        for outcome in CycleOutcome::VARIANTS {
            assert_eq!(get(&samples, "cycles_total", &[("outcome", outcome.as_str())]), 0.0);
        }
        for reason in DEFERRED_REASONS {
            assert_eq!(get(&samples, "actions_deferred_total", &[("reason", reason)]), 0.0);
        }
        for direction in DRIFT_DIRECTIONS {
            assert_eq!(get(&samples, "drift_grants", &[("direction", direction)]), 0.0);
        }
        for kind in [
            "name_taken",
            "foreign_link",
            "multi_vpc",
            "duplicate_mapping",
            "duplicate_name",
            "invalid_mapping",
            "foreign_owner",
        ] {
            assert_eq!(get(&samples, "conflicts", &[("kind", kind)]), 0.0);
        }
        for op in Operation::daemon_operations() {
            assert_eq!(get(&samples, "aws_requests_total", &[("operation", op.as_str()), ("outcome", "ok")]), 0.0);
            assert_eq!(
                get(&samples, "aws_requests_total", &[("operation", op.as_str()), ("outcome", "throttled")]),
                0.0
            );
            assert_eq!(get(&samples, "aws_request_duration_seconds_count", &[("operation", op.as_str())]), 0.0);
        }
        for outcome in ["applied", "rejected"] {
            assert_eq!(get(&samples, "config_reloads_total", &[("outcome", outcome)]), 0.0);
        }
        for part in SnapshotPart::VARIANTS {
            assert_eq!(get(&samples, "observe_errors_total", &[("part", part.as_str())]), 0.0);
        }
        assert_eq!(get(&samples, "last_successful_cycle_timestamp_seconds", &[]), 0.0);
    }

    #[test]
    fn label_values_are_closed_sets_never_ids() {
        let metrics = Metrics::new();
        metrics.record_pass(&busy_pass(), t0());
        metrics.record_request(Operation::CreateSecurityGroup, "fatal", Duration::from_millis(30));
        let text = metrics.render();
        for id in ["sg-", "vpc-", "i-0"] {
            assert!(!text.lines().filter(|l| !l.starts_with('#')).any(|l| l.contains(id)), "{id} in a label:\n{text}");
        }
        let allowed: BTreeMap<&str, Vec<String>> = BTreeMap::from([
            ("outcome", {
                let mut v: Vec<String> = CycleOutcome::VARIANTS.iter().map(|o| o.as_str().to_owned()).collect();
                v.extend(OutcomeKind::VARIANTS.iter().map(|k| k.as_str().to_owned()));
                v.extend(ErrorKind::VARIANTS.iter().map(|k| k.as_str().to_owned()));
                v.extend(["ok", "applied", "rejected"].map(str::to_owned));
                v.extend(RetryOutcome::VARIANTS.iter().map(|o| o.as_str().to_owned()));
                v
            }),
            ("kind", {
                let mut v: Vec<String> = ActionKind::VARIANTS.iter().map(|k| k.as_str().to_owned()).collect();
                v.extend(CONFLICT_KINDS.iter().filter_map(WarningKind::conflict_kind).map(str::to_owned));
                v.extend(STATE_FILE_ERROR_KINDS.map(str::to_owned));
                v.extend(RepairKind::VARIANTS.iter().map(|k| k.as_str().to_owned()));
                v
            }),
            ("operation", Operation::VARIANTS.iter().map(|o| o.as_str().to_owned()).collect()),
            ("reason", DEFERRED_REASONS.map(str::to_owned).to_vec()),
            ("direction", DRIFT_DIRECTIONS.map(str::to_owned).to_vec()),
            ("part", SnapshotPart::VARIANTS.iter().map(|p| p.as_str().to_owned()).collect()),
            ("version", vec![env!("CARGO_PKG_VERSION").to_owned()]),
            ("le", Vec::new()),
        ]);
        for sample in parse_exposition(&text).unwrap() {
            for (label, value) in &sample.labels {
                let Some(values) = allowed.get(label.as_str()) else { panic!("unexpected label {label}") };
                assert!(label == "le" || values.contains(value), "{} has {label}={value}", sample.name);
            }
        }
    }

    #[test]
    fn gauges_describe_the_last_pass_and_reset_when_it_is_clean() {
        let metrics = Metrics::new();
        metrics.record_pass(&busy_pass(), t0());
        let s = samples(&metrics);
        assert_eq!(get(&s, "managed_pairs", &[]), 2.0);
        assert_eq!(get(&s, "drift_grants", &[("direction", "add")]), 3.0);
        assert_eq!(get(&s, "drift_grants", &[("direction", "remove")]), 1.0);
        assert_eq!(get(&s, "drift_grants", &[("direction", "update")]), 2.0);
        assert_eq!(get(&s, "drift_links", &[]), 1.0);
        assert_eq!(get(&s, "unmirrorable_grants", &[]), 1.0);
        assert_eq!(get(&s, "conflicts", &[("kind", "name_taken")]), 1.0);
        assert_eq!(get(&s, "conflicts", &[("kind", "foreign_link")]), 2.0);
        assert_eq!(get(&s, "conflicts", &[("kind", "multi_vpc")]), 0.0);
        assert_eq!(get(&s, "orphans", &[]), 1.0);
        assert_eq!(get(&s, "safety_hold", &[]), 1.0);

        let web = key("sg-0a1", "vpc-9f2");
        let clean = PassBuilder::new().pair(&web, "web", Some(existing("sg-77c")), Drift::default()).build();
        metrics.record_pass(&clean, t0() + Duration::from_secs(30));
        let s = samples(&metrics);
        assert_eq!(get(&s, "managed_pairs", &[]), 1.0);
        for direction in DRIFT_DIRECTIONS {
            assert_eq!(get(&s, "drift_grants", &[("direction", direction)]), 0.0);
        }
        assert_eq!(get(&s, "drift_links", &[]), 0.0);
        assert_eq!(get(&s, "unmirrorable_grants", &[]), 0.0);
        assert!(series(&s, &name("conflicts")).iter().all(|c| c.value == 0.0), "a conflict survived: {s:?}");
        assert_eq!(get(&s, "orphans", &[]), 0.0);
        assert_eq!(get(&s, "safety_hold", &[]), 0.0);
    }

    #[test]
    fn an_incomplete_snapshot_is_a_safety_hold_and_an_incomplete_cycle() {
        let metrics = Metrics::new();
        let pass = PassBuilder::new().incomplete(SnapshotPart::Links).build();
        assert_eq!(metrics.record_pass(&pass, t0()), CycleOutcome::Incomplete);
        let s = samples(&metrics);
        assert_eq!(get(&s, "safety_hold", &[]), 1.0);
        assert_eq!(get(&s, "cycles_total", &[("outcome", "incomplete")]), 1.0);
        assert_eq!(get(&s, "observe_errors_total", &[("part", "links")]), 1.0);
        assert_eq!(get(&s, "last_successful_cycle_timestamp_seconds", &[]), 0.0);
    }

    #[test]
    fn cycle_outcomes_classify_passes() {
        let web = key("sg-0a1", "vpc-9f2");
        let ok = PassBuilder::new().action(attach("i-0b3", "vpc-9f2", "sg-77c"), Some(&web), ActionResult::Done);
        assert_eq!(CycleOutcome::of(&ok.build()), CycleOutcome::Success);
        let audited = PassBuilder::new().action(attach("i-0b3", "vpc-9f2", "sg-77c"), None, ActionResult::Audit);
        assert_eq!(CycleOutcome::of(&audited.build()), CycleOutcome::Success);
        let failed = PassBuilder::new().action(
            attach("i-0b3", "vpc-9f2", "sg-77c"),
            None,
            ec2_failure(Operation::AttachClassicLinkVpc, "X"),
        );
        assert_eq!(CycleOutcome::of(&failed.build()), CycleOutcome::Partial);
        let cancelled = PassBuilder::new().action(attach("i-0b3", "vpc-9f2", "sg-77c"), None, ActionResult::Cancelled);
        assert_eq!(CycleOutcome::of(&cancelled.build()), CycleOutcome::Partial);
        let incomplete = PassBuilder::new().incomplete(SnapshotPart::Instances).action(
            attach("i-0b3", "vpc-9f2", "sg-77c"),
            None,
            ec2_failure(Operation::AttachClassicLinkVpc, "X"),
        );
        assert_eq!(CycleOutcome::of(&incomplete.build()), CycleOutcome::Incomplete);
        let blind = PassBuilder::new().incomplete(SnapshotPart::Links).incomplete(SnapshotPart::SourceGroups);
        assert_eq!(CycleOutcome::of(&blind.build()), CycleOutcome::Failed);
    }

    #[test]
    fn counters_accumulate_cycles_actions_and_deferrals() {
        let metrics = Metrics::new();
        let started = t0();
        assert_eq!(metrics.record_pass(&busy_pass(), started), CycleOutcome::Partial);
        assert_eq!(metrics.record_pass(&busy_pass(), started + Duration::from_secs(30)), CycleOutcome::Partial);
        let clean = PassBuilder::new().build();
        assert_eq!(metrics.record_pass(&clean, started + Duration::from_secs(60)), CycleOutcome::Success);
        let mut blind = PassBuilder::new().incomplete(SnapshotPart::SourceGroups).build();
        blind.duration = Duration::from_secs(2);
        assert_eq!(metrics.record_pass(&blind, started + Duration::from_secs(90)), CycleOutcome::Failed);
        let s = samples(&metrics);
        assert_eq!(get(&s, "cycles_total", &[("outcome", "partial")]), 2.0);
        assert_eq!(get(&s, "cycles_total", &[("outcome", "success")]), 1.0);
        assert_eq!(get(&s, "cycles_total", &[("outcome", "failed")]), 1.0);
        assert_eq!(get(&s, "cycle_duration_seconds_count", &[]), 4.0);
        assert_eq!(get(&s, "cycle_duration_seconds_sum", &[]), 1.5 * 3.0 + 2.0);
        assert_eq!(get(&s, "cycle_duration_seconds_bucket", &[("le", "1")]), 0.0);
        assert_eq!(get(&s, "cycle_duration_seconds_bucket", &[("le", "2.5")]), 4.0);
        assert_eq!(get(&s, "actions_total", &[("kind", "attach"), ("outcome", "done")]), 2.0);
        assert_eq!(get(&s, "actions_total", &[("kind", "enable_classiclink"), ("outcome", "failed")]), 2.0);
        assert_eq!(get(&s, "actions_deferred_total", &[("reason", "revoke_cap")]), 8.0);
        assert_eq!(get(&s, "actions_deferred_total", &[("reason", "delete_cap")]), 2.0);
        assert_eq!(get(&s, "actions_deferred_total", &[("reason", "unlink_cap")]), 4.0);
        assert_eq!(get(&s, "actions_deferred_total", &[("reason", "quota")]), 6.0);
        assert_eq!(get(&s, "actions_deferred_total", &[("reason", "safety_hold")]), 0.0);
        // The last success is the clean pass's end: its start plus 1.5 s.
        let expected = (started + Duration::from_secs(60) + Duration::from_millis(1500))
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert_eq!(get(&s, "last_successful_cycle_timestamp_seconds", &[]), expected);
    }

    #[test]
    fn reloads_are_counted_and_the_last_one_is_remembered() {
        let metrics = Metrics::new();
        metrics.record_reload(ReloadOutcome::Applied);
        metrics.record_reload(ReloadOutcome::Rejected);
        let s = samples(&metrics);
        assert_eq!(get(&s, "config_reloads_total", &[("outcome", "applied")]), 1.0);
        assert_eq!(get(&s, "config_reloads_total", &[("outcome", "rejected")]), 1.0);
        assert_eq!(get(&s, "config_last_reload_successful", &[]), 0.0);
        metrics.record_reload(ReloadOutcome::Applied);
        assert_eq!(get(&samples(&metrics), "config_last_reload_successful", &[]), 1.0);
    }

    #[test]
    fn fights_and_another_writer_are_counted_and_the_fights_gauge_follows_the_last_pass() {
        use crate::plan::{Fight, FightKey};
        let metrics = Metrics::new();
        let s = samples(&metrics);
        for kind in RepairKind::VARIANTS {
            assert_eq!(get(&s, "fights_total", &[("kind", kind.as_str())]), 0.0);
            assert_eq!(get(&s, "fights", &[("kind", kind.as_str())]), 0.0);
        }
        assert_eq!(get(&s, "other_writer_passes_total", &[]), 0.0);
        assert_eq!(get(&s, "actions_deferred_total", &[("reason", "fight")]), 0.0);

        let web = key("sg-0a1", "vpc-9f2");
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let fight = Fight {
            pair: web.clone(),
            kind: RepairKind::Grant,
            since: at,
            repairs: 1,
            retry_after: at + Duration::from_secs(60),
            principal: None,
        };
        let mut pass = PassBuilder::new().deferred(Deferred { fights: 2, ..Deferred::default() }).build();
        pass.fights = vec![fight];
        pass.fights_started = vec![FightKey { pair: web, kind: RepairKind::Grant }];
        pass.other_writer = true;
        metrics.record_pass(&pass, at);
        let s = samples(&metrics);
        assert_eq!(get(&s, "fights_total", &[("kind", "grant")]), 1.0);
        assert_eq!(get(&s, "fights", &[("kind", "grant")]), 1.0);
        assert_eq!(get(&s, "other_writer_passes_total", &[]), 1.0);
        assert_eq!(get(&s, "actions_deferred_total", &[("reason", "fight")]), 2.0);

        // The fight goes on (not counted again), then ends.
        pass.fights_started.clear();
        pass.other_writer = false;
        metrics.record_pass(&pass, at);
        pass.fights.clear();
        metrics.record_pass(&pass, at);
        let s = samples(&metrics);
        assert_eq!(get(&s, "fights_total", &[("kind", "grant")]), 1.0);
        assert_eq!(get(&s, "fights", &[("kind", "grant")]), 0.0);
        assert_eq!(get(&s, "other_writer_passes_total", &[]), 1.0);
    }

    #[test]
    fn state_file_errors_are_counted_by_kind_from_zero() {
        let metrics = Metrics::new();
        let s = samples(&metrics);
        for kind in STATE_FILE_ERROR_KINDS {
            assert_eq!(get(&s, "state_file_errors_total", &[("kind", kind)]), 0.0, "{kind}");
        }
        // Every kind the state module can report has a pre-registered label.
        let dir = tempfile::tempdir().unwrap();
        let error = crate::state::StateFile::new(dir.path().join("missing")).save(&crate::plan::Memory::default());
        let kind = error.unwrap_err().kind();
        assert!(STATE_FILE_ERROR_KINDS.contains(&kind));
        metrics.record_state_file_error(kind);
        metrics.record_state_file_error("corrupt");
        let s = samples(&metrics);
        assert_eq!(get(&s, "state_file_errors_total", &[("kind", "write")]), 1.0);
        assert_eq!(get(&s, "state_file_errors_total", &[("kind", "corrupt")]), 1.0);
    }

    #[test]
    fn request_observer_counts_attempts_latency_and_throttles() {
        let metrics = Metrics::new();
        let observer = metrics.request_observer();
        observer.record(Operation::DescribeInstances, REQUEST_OK, Duration::from_millis(40));
        observer.record(Operation::DescribeInstances, "throttled", Duration::from_millis(8));
        observer.record(Operation::AuthorizeSecurityGroupIngress, "duplicate", Duration::from_millis(120));
        let s = samples(&metrics);
        assert_eq!(get(&s, "aws_requests_total", &[("operation", "DescribeInstances"), ("outcome", "ok")]), 1.0);
        assert_eq!(get(&s, "aws_requests_total", &[("operation", "DescribeInstances"), ("outcome", "throttled")]), 1.0);
        assert_eq!(
            get(&s, "aws_requests_total", &[("operation", "AuthorizeSecurityGroupIngress"), ("outcome", "duplicate")]),
            1.0
        );
        assert_eq!(get(&s, "throttled_requests_total", &[]), 1.0);
        assert_eq!(get(&s, "aws_request_duration_seconds_count", &[("operation", "DescribeInstances")]), 2.0);
        assert_eq!(
            get(&s, "aws_request_duration_seconds_bucket", &[("operation", "DescribeInstances"), ("le", "0.01")]),
            1.0
        );
    }

    #[tokio::test(start_paused = true)]
    async fn every_attempt_through_the_limiter_is_observed_retries_included() {
        use crate::emulator::{Emulator, EmulatorOptions, ErrorInjection, Faults};
        use crate::model::{GroupId, VpcId};
        let metrics = Metrics::new();
        let emu = Emulator::new(EmulatorOptions::default());
        emu.set_faults(Faults {
            errors: ErrorInjection {
                per_operation: BTreeMap::from([(Operation::DescribeVpcClassicLink, 1.0)]),
                codes: vec!["RequestLimitExceeded".into()],
                ..ErrorInjection::default()
            },
            ..Faults::none()
        });
        let config = crate::config::Config::with_region("us-east-1");
        let retry = RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(10),
            throttled_base_delay: Duration::from_millis(10),
            max_delay: Duration::from_secs(1),
            ..RetryPolicy::default()
        };
        let ec2 = Limited::new(emu, &config.rate_limit).with_retry(retry).with_observer(metrics.request_observer());
        use crate::ec2::Ec2;
        let error = ec2.describe_vpc_classic_link(&[VpcId::try_new("vpc-1").unwrap()]).await.unwrap_err();
        assert_eq!(error.code, "RequestLimitExceeded");
        let missing = ec2.delete_security_group(&GroupId::try_new("sg-1").unwrap()).await.unwrap_err();
        assert_eq!(missing.kind, ErrorKind::NotFound);
        let s = samples(&metrics);
        let throttled = [("operation", "DescribeVpcClassicLink"), ("outcome", "throttled")];
        assert_eq!(get(&s, "aws_requests_total", &throttled), 4.0);
        assert_eq!(get(&s, "throttled_requests_total", &[]), 4.0);
        let not_found = [("operation", "DeleteSecurityGroup"), ("outcome", "not_found")];
        assert_eq!(get(&s, "aws_requests_total", &not_found), 1.0);
        // Three retries, then the fourth attempt was the last; a not-found is
        // never retried.
        assert_eq!(get(&s, "aws_retries_total", &[("outcome", "retried")]), 3.0);
        assert_eq!(get(&s, "aws_retries_total", &[("outcome", "max_attempts")]), 1.0);
        assert_eq!(get(&s, "aws_retries_total", &[("outcome", "quota_empty")]), 0.0);
        assert_eq!(get(&s, "aws_retry_quota_tokens", &[]), f64::from(500 - 3 * 5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_real_pass_against_the_emulator_is_measured() {
        use crate::config::{Config, MirrorConfig, SourceRef};
        use crate::emulator::{Emulator, EmulatorOptions, IpPermission, NewGroup, NewVpc, RunInstances};
        use crate::model::{Grant, GroupId, Peer, Ports, Protocol};
        use crate::plan::Memory;
        use crate::reconcile::{execute_options, reconcile_once};

        let emu = Emulator::new(EmulatorOptions::default());
        let vpc_id = emu.create_vpc(&NewVpc::classic_link(true)).await.unwrap();
        let web = emu.create_group(&NewGroup::classic("web", "Web tier")).await.unwrap();
        let app = emu.create_group(&NewGroup::classic("app", "App tier")).await.unwrap();
        let grants = [
            Grant::new(
                Protocol::Tcp,
                Ports::Range { from: 443, to: 443 },
                Peer::Ipv4("0.0.0.0/0".parse().unwrap()),
                None,
            ),
            Grant::new(
                Protocol::Tcp,
                Ports::Range { from: 80, to: 80 },
                Peer::Group { group: GroupId::try_new("sg-843f59ed").unwrap(), owner: Some("amazon-elb".into()) },
                None,
            ),
        ];
        let account = emu.account_id();
        let permissions: Vec<IpPermission> = grants.iter().map(|g| IpPermission::from_grant(g, &account)).collect();
        emu.authorize_permissions(&web, &permissions).await.unwrap();
        emu.run_instances(&RunInstances::classic([web.clone()]).count(2)).await.unwrap();
        let mut config = Config::with_region("us-east-1");
        config.discovery.tag_key = None;
        for source in [&web, &app] {
            config.mirrors.push(MirrorConfig::new(SourceRef::Id(source.clone()), vpc_id.clone()));
        }

        let metrics = Metrics::new();
        let ec2 = Limited::new(emu, &config.rate_limit).with_observer(metrics.request_observer());
        let mut memory = Memory::default();
        let cancel = tokio_util::sync::CancellationToken::new();
        let options = execute_options(&config);
        let first = reconcile_once(&ec2, &config, &mut memory, t0(), &options, &cancel).await;
        assert_eq!(metrics.record_pass(&first, t0()), CycleOutcome::Success);
        let s = samples(&metrics);
        assert_eq!(get(&s, "managed_pairs", &[]), 2.0);
        assert_eq!(get(&s, "unmirrorable_grants", &[]), 1.0);
        assert_eq!(get(&s, "drift_links", &[]), 2.0);
        assert_eq!(get(&s, "drift_grants", &[("direction", "add")]), 1.0);
        assert_eq!(get(&s, "actions_total", &[("kind", "create_mirror"), ("outcome", "done")]), 2.0);
        assert_eq!(get(&s, "actions_total", &[("kind", "attach"), ("outcome", "done")]), 2.0);
        let creates = [("operation", "CreateSecurityGroup"), ("outcome", "ok")];
        assert_eq!(get(&s, "aws_requests_total", &creates), 2.0);
        assert!(get(&s, "aws_requests_total", &[("operation", "DescribeSecurityGroups"), ("outcome", "ok")]) >= 1.0);
        assert!(get(&s, "last_successful_cycle_timestamp_seconds", &[]) >= 1.8e9);

        let second =
            reconcile_once(&ec2, &config, &mut memory, t0() + Duration::from_secs(30), &options, &cancel).await;
        metrics.record_pass(&second, t0() + Duration::from_secs(30));
        let s = samples(&metrics);
        assert_eq!(get(&s, "drift_links", &[]), 0.0);
        assert_eq!(get(&s, "drift_grants", &[("direction", "add")]), 0.0);
        assert_eq!(get(&s, "unmirrorable_grants", &[]), 1.0, "still reported while the source has it");
        assert_eq!(get(&s, "cycles_total", &[("outcome", "success")]), 2.0);
        assert_eq!(get(&s, "aws_requests_total", &creates), 2.0, "a converged pass writes nothing");
    }

    #[test]
    fn the_exposition_checker_rejects_malformed_lines() {
        for bad in [
            "foo 1",                             // no # TYPE
            "# TYPE foo counter\nfoo{a=\"x\" 1", // unterminated labels
            "# TYPE foo counter\nfoo{a=x} 1",    // unquoted value
            "# TYPE foo counter\nfoo one",       // bad value
            "# TYPE foo bogus\nfoo 1",           // bad type
            "# TYPE 9foo counter\n9foo 1",       // bad name
        ] {
            assert!(parse_exposition(bad).is_err(), "accepted {bad:?}");
        }
        let good = "# HELP foo Help.\n# TYPE foo histogram\nfoo_bucket{le=\"+Inf\",a=\"x\\\"y\"} 3\nfoo_sum 1.5\nfoo_count 3\n";
        let samples = parse_exposition(good).unwrap();
        assert_eq!(samples[0].labels["a"], "x\"y");
    }

    /// Fails to compile when a variant is added without being listed.
    #[test]
    fn label_lists_are_exhaustive() {
        for kind in ErrorKind::VARIANTS.iter().copied() {
            match kind {
                ErrorKind::Throttled
                | ErrorKind::NotFound
                | ErrorKind::Duplicate
                | ErrorKind::Dependency
                | ErrorKind::Invalid
                | ErrorKind::Transient
                | ErrorKind::Fatal => {}
            }
        }
        assert_eq!(ErrorKind::VARIANTS.len(), 7);
        let every_result = |result: &ActionResult| match result {
            ActionResult::Done
            | ActionResult::AlreadyDone
            | ActionResult::Failed(_)
            | ActionResult::Skipped
            | ActionResult::Audit
            | ActionResult::Cancelled
            | ActionResult::Yielded => result.label(),
        };
        let failed = ec2_failure(Operation::CreateTags, "X");
        for result in [
            ActionResult::Done,
            ActionResult::AlreadyDone,
            failed,
            ActionResult::Skipped,
            ActionResult::Audit,
            ActionResult::Cancelled,
            ActionResult::Yielded,
        ] {
            assert!(OutcomeKind::VARIANTS.iter().any(|k| k.as_str() == every_result(&result)));
        }
        for kind in CONFLICT_KINDS {
            assert!(kind.conflict_kind().is_some(), "{kind:?} is not a conflict");
        }
    }
}
