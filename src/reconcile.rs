//! One reconcile pass — observe → plan → execute — and `apply`'s loop of
//! passes (README.md, "Commands that work today"). The daemon's loop calls [`reconcile_once`] on a timer;
//! `apply` calls [`apply`]. Time comes in as a parameter so tests control it.

use std::time::{Duration, SystemTime};
use strum::VariantArray as _;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::ec2::Ec2;
use crate::execute::{ActionResult, ExecuteOptions, Outcome, OutcomeKind, Report, execute_reporting};
use crate::model::{Snapshot, SnapshotPart};
use crate::observe::{Observation, ObserveError, observe_reporting};
use crate::plan::{Executed, Fight, FightKey, FightPolicy, Memory, Plan, WarningKind, plan};

/// Where a pass is (`/status` shows it while the pass runs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[derive(strum::IntoStaticStr, strum::VariantArray)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Phase {
    /// Describing the estate.
    Observing,
    /// Computing the plan (pure, quick).
    Planning,
    /// Running the plan's actions.
    Executing,
}

impl Phase {
    /// Stable label.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        self.into()
    }
}

/// What a pass reports while it runs, so that every state is visible as it
/// is while it is happening (`/status`'s `current_cycle`, readiness). Every
/// method has a no-op default.
pub trait Progress: Sync {
    /// The pass entered `phase`.
    fn phase(&self, _phase: Phase) {}
    /// A describe failed (its part will be incomplete); called as soon as
    /// the calls feeding that part have answered, before observation ends.
    fn describe_failed(&self, _error: &ObserveError) {}
    /// Observation ended with `snapshot` (readiness must not wait for a long
    /// execution).
    fn observed(&self, _snapshot: &Snapshot) {}
    /// The plan to execute has `actions` actions.
    fn planned(&self, _actions: usize) {}
    /// An action the execution started has ended as `result`.
    fn action_finished(&self, _result: &ActionResult) {}
}

/// A [`Progress`] that ignores everything.
pub struct NoProgress;
impl Progress for NoProgress {}

/// How a pass ended: its classification, shown as `/status`'s
/// `last_cycle.outcome` and counted as the `cycles_total{outcome}` label.
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

/// What one pass saw, decided and did.
#[derive(Debug, Clone)]
pub struct PassReport {
    /// The observation.
    pub snapshot: Snapshot,
    /// Describe calls that failed (their parts are incomplete).
    pub observe_errors: Vec<ObserveError>,
    /// The plan.
    pub plan: Plan,
    /// The execution.
    pub report: Report,
    /// Wall time of the pass (tokio clock).
    pub duration: Duration,
    /// True when a shutdown stopped the pass during observation: nothing
    /// was planned or started, and every part counts as incomplete.
    pub interrupted: bool,
    /// The fights in progress after this pass (the memory's).
    pub fights: Vec<Fight>,
    /// The fights this pass revealed.
    pub fights_started: Vec<FightKey>,
    /// Most of this pass's writes were already done ([`another_writer`]),
    /// or it yielded to another writer doing the same work: another writer
    /// works on these pairs.
    pub other_writer: bool,
}

/// Whether an execution shows another writer on the same pairs
/// ([`crate::execute::another_writer`]).
#[must_use]
pub fn another_writer(report: &Report) -> bool {
    crate::execute::another_writer(report.count(OutcomeKind::Done), report.count(OutcomeKind::AlreadyDone))
}

impl PassReport {
    /// True when the pass saw everything and found nothing to execute.
    #[must_use]
    pub fn converged(&self) -> bool {
        self.snapshot.is_complete() && self.plan.is_converged()
    }

    /// Actions that failed.
    #[must_use]
    pub fn failed(&self) -> usize {
        self.report.count(OutcomeKind::Failed)
    }
}

/// Executor options from the config.
#[must_use]
pub fn execute_options(config: &Config) -> ExecuteOptions {
    ExecuteOptions { max_in_flight: config.rate_limit.max_in_flight, ..ExecuteOptions::default() }
}

/// One pass: observe, plan against `memory`, execute, and fold what the
/// execution taught (deletions blocked by `DependencyViolation`, repairs
/// and fights: [`Memory::record_execution`]) back into `memory`.
pub async fn reconcile_once(
    ec2: &dyn Ec2,
    config: &Config,
    memory: &mut Memory,
    now: SystemTime,
    options: &ExecuteOptions,
    cancel: &CancellationToken,
) -> PassReport {
    reconcile_once_observed(ec2, config, memory, now, options, cancel, &NoProgress).await
}

/// [`reconcile_once`], telling `progress` what happens while it happens.
///
/// `cancel` stops observation at once: its describes, rate-limiter waits and
/// retry back-off sleeps are dropped, and the pass ends `interrupted`, with
/// no action planned or started and `memory` untouched. Once execution has
/// started, `cancel` lets the actions in flight finish and starts no more.
pub async fn reconcile_once_observed(
    ec2: &dyn Ec2,
    config: &Config,
    memory: &mut Memory,
    now: SystemTime,
    options: &ExecuteOptions,
    cancel: &CancellationToken,
    progress: &dyn Progress,
) -> PassReport {
    let started = tokio::time::Instant::now();
    match observe_cancellable(ec2, config, cancel, progress).await {
        Some(observation) => {
            progress.observed(&observation.snapshot);
            plan_and_execute(ec2, config, observation, started, memory, now, options, cancel, progress).await
        }
        None => interrupted(started, memory),
    }
}

/// A pass's full observation, telling `progress` of failed describes as
/// they happen; `None` when `cancel` stopped it (every describe, limiter
/// wait and back-off sleep is dropped at once).
pub async fn observe_cancellable(
    ec2: &dyn Ec2,
    config: &Config,
    cancel: &CancellationToken,
    progress: &dyn Progress,
) -> Option<Observation> {
    progress.phase(Phase::Observing);
    let report_failure = |error: &ObserveError| progress.describe_failed(error);
    tokio::select! {
        biased;
        () = cancel.cancelled() => {
            info!("shutdown during observation: the pass stops before planning; no action was started");
            None
        }
        observation = observe_reporting(ec2, config, &report_failure) => Some(observation),
    }
}

/// The report of a pass a shutdown stopped during observation: nothing
/// planned or started, every part incomplete, `memory` untouched.
#[must_use]
pub fn interrupted(started: tokio::time::Instant, memory: &Memory) -> PassReport {
    let mut snapshot = Snapshot::default();
    snapshot.incomplete.extend(SnapshotPart::VARIANTS.iter().copied());
    PassReport {
        snapshot,
        observe_errors: Vec::new(),
        plan: Plan::default(),
        report: Report::default(),
        duration: started.elapsed(),
        interrupted: true,
        fights: memory.fights(),
        fights_started: Vec::new(),
        other_writer: false,
    }
}

/// A pass on an observation already made (the targeted pass of the event
/// path merges its own, `events::targeted`): plan, execute, fold what the
/// execution taught into `memory`, telling `progress` as it goes. `started`
/// is when the pass began.
#[allow(clippy::too_many_arguments)] // the pass's inputs, each needed
pub async fn plan_and_execute(
    ec2: &dyn Ec2,
    config: &Config,
    observation: Observation,
    started: tokio::time::Instant,
    memory: &mut Memory,
    now: SystemTime,
    options: &ExecuteOptions,
    cancel: &CancellationToken,
    progress: &dyn Progress,
) -> PassReport {
    progress.phase(Phase::Planning);
    let planning = tokio::time::Instant::now();
    let (plan, next) = plan(config, &observation.snapshot, memory, now);
    *memory = next;
    let plan_time = planning.elapsed();
    progress.planned(plan.actions.len());
    for error in &observation.errors {
        warn!(part = error.part.as_str(), code = %error.source.code, error = %error.source,
            "a describe failed: that part of the snapshot is incomplete, destructive actions wait");
    }
    for warning in &plan.warnings {
        // Conflicts, safety holds and a tampered orphan tag need a human; the
        // rest is in /status and the plan.
        if warning.kind.conflict_kind().is_some()
            || matches!(
                warning.kind,
                WarningKind::SafetyHold
                    | WarningKind::IncompleteSnapshot
                    | WarningKind::StateLost
                    | WarningKind::OrphanTagInvalid
            )
        {
            warn!(
                kind = warning.kind.as_str(),
                subject = warning.subject.as_deref().unwrap_or(""),
                "{}",
                warning.message
            );
        } else {
            debug!(
                kind = warning.kind.as_str(),
                subject = warning.subject.as_deref().unwrap_or(""),
                "{}",
                warning.message
            );
        }
    }
    progress.phase(Phase::Executing);
    let executing = tokio::time::Instant::now();
    // After yielding to another writer, wait while it makes progress (the
    // plan shrinks without us); once it stops, do the rest.
    let executable = plan.executable().count();
    let waiting = options.yield_to_other_writer
        && memory.other_writer_left.is_some_and(|left| executable > 0 && executable < left);
    let report = if waiting {
        info!(
            actions = executable,
            "another writer is making progress on these pairs: this pass waits for it and starts nothing"
        );
        yielded(&plan)
    } else {
        execute_reporting(ec2, &plan, options, cancel, &|result| progress.action_finished(result)).await
    };
    let execute_time = executing.elapsed();
    let ours = report.count(OutcomeKind::Done) + report.count(OutcomeKind::AlreadyDone);
    memory.other_writer_left =
        (waiting || report.count(OutcomeKind::Yielded) > 0).then(|| executable.saturating_sub(ours));
    let executed = plan.actions.iter().zip(&report.outcomes).map(|(planned, outcome)| {
        let result = match &outcome.result {
            ActionResult::Done => Executed::Done,
            ActionResult::AlreadyDone => Executed::AlreadyDone,
            ActionResult::Failed(error) => Executed::Failed(error.code()),
            _ => Executed::NotRun,
        };
        (planned, result)
    });
    let fights_started = memory.record_execution(executed, now, &FightPolicy::of(&config.safety));
    for key in &fights_started {
        let principal = memory.repairs.get(key).and_then(|h| h.principal.as_deref()).unwrap_or("unknown");
        warn!(
            source_group = %key.pair.source,
            vpc_id = %key.pair.vpc,
            kind = key.kind.as_str(),
            principal,
            "the same repair of this pair keeps being needed: something else keeps undoing it (a fight); \
             its repairs back off (see /status)"
        );
    }
    let other_writer = another_writer(&report) || report.count(OutcomeKind::Yielded) > 0;
    if other_writer && !waiting {
        warn!(
            done = report.count(OutcomeKind::Done),
            already_done = report.count(OutcomeKind::AlreadyDone),
            "most of this pass's writes were already done: another writer works on these pairs \
             (a second deployment with the same configuration?)"
        );
    }
    let pass = PassReport {
        snapshot: observation.snapshot,
        observe_errors: observation.errors,
        plan,
        report,
        duration: started.elapsed(),
        interrupted: false,
        fights: memory.fights(),
        fights_started,
        other_writer,
    };
    info!(
        actions = pass.plan.actions.len(),
        done = pass.report.count(OutcomeKind::Done),
        already_done = pass.report.count(OutcomeKind::AlreadyDone),
        failed = pass.failed(),
        skipped = pass.report.count(OutcomeKind::Skipped),
        audit = pass.report.count(OutcomeKind::Audit),
        warnings = pass.plan.warnings.len(),
        incomplete = pass.snapshot.incomplete.len(),
        duration_ms = pass.duration.as_millis() as u64,
        observe_ms = planning.duration_since(started).as_millis() as u64,
        plan_ms = plan_time.as_millis() as u64,
        execute_ms = execute_time.as_millis() as u64,
        "reconcile pass finished"
    );
    pass
}

/// The report of a pass that starts nothing: every action yielded to
/// another writer (audited ones stay audited).
fn yielded(plan: &Plan) -> Report {
    let outcomes = plan
        .actions
        .iter()
        .map(|planned| Outcome {
            id: planned.id,
            kind: planned.action.kind(),
            pair: planned.pair.clone(),
            result: if planned.audit { ActionResult::Audit } else { ActionResult::Yielded },
        })
        .collect();
    Report { outcomes, created: std::collections::BTreeMap::new() }
}

/// How `apply` ended.
#[derive(Debug, Clone)]
pub struct ApplyReport {
    /// Every pass, in order.
    pub passes: Vec<PassReport>,
    /// True when the last pass found nothing to execute on a complete snapshot.
    pub converged: bool,
    /// The planner's memory after the last pass (for the state file).
    pub memory: Memory,
}

/// Runs passes until one plans nothing to execute on a complete snapshot, or
/// `max_passes` passes ran, or `cancel` fires. `clock` gives each pass's `now`.
pub async fn apply(
    ec2: &dyn Ec2,
    config: &Config,
    max_passes: usize,
    clock: &(dyn Fn() -> SystemTime + Sync),
    cancel: &CancellationToken,
) -> ApplyReport {
    apply_from(ec2, config, max_passes, clock, cancel, Memory::default()).await
}

/// [`apply`], starting from `memory` (the state file's) instead of nothing.
pub async fn apply_from(
    ec2: &dyn Ec2,
    config: &Config,
    max_passes: usize,
    clock: &(dyn Fn() -> SystemTime + Sync),
    cancel: &CancellationToken,
    memory: Memory,
) -> ApplyReport {
    let options = execute_options(config);
    let mut memory = memory;
    let mut passes = Vec::new();
    let mut converged = false;
    for _ in 0..max_passes.max(1) {
        if cancel.is_cancelled() {
            break;
        }
        let pass = reconcile_once(ec2, config, &mut memory, clock(), &options, cancel).await;
        converged = pass.converged();
        passes.push(pass);
        if converged {
            break;
        }
    }
    ApplyReport { passes, converged, memory }
}

#[cfg(test)]
mod tests {
    use strum::VariantArray as _;

    use super::Phase;

    #[test]
    fn a_phase_has_one_name_in_status_logs_and_json() {
        for phase in Phase::VARIANTS {
            assert_eq!(serde_json::to_value(phase).unwrap().as_str(), Some(phase.as_str()), "{phase:?}");
        }
    }
}
