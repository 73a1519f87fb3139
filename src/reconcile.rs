//! One reconcile pass — observe → plan → execute — and `apply`'s loop of
//! passes (SPEC §2). The daemon's loop calls [`reconcile_once`] on a timer;
//! `apply` calls [`apply`]. Time comes in as a parameter so tests control it.

use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::ec2::Ec2;
use crate::execute::{ActionResult, ExecuteOptions, Report, execute};
use crate::model::Snapshot;
use crate::observe::{Observation, ObserveError, observe};
use crate::plan::{Action, Memory, Plan, WarningKind, plan};

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
        self.report.count("failed")
    }
}

/// Executor options from the config.
#[must_use]
pub fn execute_options(config: &Config) -> ExecuteOptions {
    ExecuteOptions { max_in_flight: config.rate_limit.max_in_flight, ..ExecuteOptions::default() }
}

/// One pass: observe, plan against `memory`, execute, and fold what the
/// execution taught (deletions blocked by `DependencyViolation`) back into
/// `memory`.
pub async fn reconcile_once(
    ec2: &dyn Ec2,
    config: &Config,
    memory: &mut Memory,
    now: SystemTime,
    options: &ExecuteOptions,
    cancel: &CancellationToken,
) -> PassReport {
    reconcile_once_observed(ec2, config, memory, now, options, cancel, &|_| {}).await
}

/// [`reconcile_once`], calling `on_observed` with the snapshot as soon as
/// observation ends (readiness must not wait for a long execution).
pub async fn reconcile_once_observed(
    ec2: &dyn Ec2,
    config: &Config,
    memory: &mut Memory,
    now: SystemTime,
    options: &ExecuteOptions,
    cancel: &CancellationToken,
    on_observed: &(dyn Fn(&Snapshot) + Sync),
) -> PassReport {
    let started = tokio::time::Instant::now();
    let observation = observe(ec2, config).await;
    on_observed(&observation.snapshot);
    plan_and_execute(ec2, config, observation, started, memory, now, options, cancel).await
}

/// A pass on an observation already made (the targeted pass of the event
/// path merges its own, `events::targeted`): plan, execute, fold what the
/// execution taught into `memory`. `started` is when the pass began.
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
) -> PassReport {
    let (plan, next) = plan(config, &observation.snapshot, memory, now);
    *memory = next;
    for error in &observation.errors {
        warn!(part = error.part.as_str(), code = %error.source.code, error = %error.source,
            "a describe failed: that part of the snapshot is incomplete, destructive actions wait");
    }
    for warning in &plan.warnings {
        // Conflicts and safety holds need a human; the rest is in /status and the plan.
        if warning.kind.conflict_kind().is_some()
            || matches!(warning.kind, WarningKind::SafetyHold | WarningKind::IncompleteSnapshot)
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
    let report = execute(ec2, &plan, options, cancel).await;
    for (planned, outcome) in plan.actions.iter().zip(&report.outcomes) {
        let Action::DeleteMirror { group, .. } = &planned.action else { continue };
        match &outcome.result {
            ActionResult::Failed(error) if error.code() == Some("DependencyViolation") => {
                memory.record_delete_blocked(group, now);
            }
            result if result.succeeded() => memory.record_deleted(group),
            _ => {}
        }
    }
    let pass = PassReport {
        snapshot: observation.snapshot,
        observe_errors: observation.errors,
        plan,
        report,
        duration: started.elapsed(),
    };
    info!(
        actions = pass.plan.actions.len(),
        done = pass.report.count("done") + pass.report.count("already_done"),
        failed = pass.failed(),
        skipped = pass.report.count("skipped"),
        audit = pass.report.count("audit"),
        warnings = pass.plan.warnings.len(),
        incomplete = pass.snapshot.incomplete.len(),
        duration_ms = pass.duration.as_millis() as u64,
        "reconcile pass finished"
    );
    pass
}

/// How `apply` ended.
#[derive(Debug, Clone)]
pub struct ApplyReport {
    /// Every pass, in order.
    pub passes: Vec<PassReport>,
    /// True when the last pass found nothing to execute on a complete snapshot.
    pub converged: bool,
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
    let options = execute_options(config);
    let mut memory = Memory::default();
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
    ApplyReport { passes, converged }
}
