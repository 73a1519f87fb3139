//! The status board: what `/status` shows, kept up to date from the passes
//! the daemon reports. Pure: time comes in as a parameter.

use std::collections::BTreeMap;
use std::time::SystemTime;
use strum::VariantArray as _;

use super::status::rfc3339;
use super::status::*;
use crate::config::Mode;
use crate::execute::{ActionResult, ExecuteError, OutcomeKind};
use crate::model::SnapshotPart;
use crate::observe::ObserveError;
use crate::plan::{Action, ActionKind, Deferred, GroupRef, Origin, PairKey};
use crate::reconcile::{CycleOutcome, PassReport, Phase};

/// What the board keeps about the cycle under way.
#[derive(Clone, Debug)]
struct CurrentCycle {
    started_at: SystemTime,
    phase: Phase,
    observe_errors: Vec<ObserveErrorStatus>,
    actions_planned: Option<usize>,
    actions: BTreeMap<String, usize>,
}

fn observe_error_status(error: &ObserveError) -> ObserveErrorStatus {
    ObserveErrorStatus {
        part: error.part,
        kind: error.kind().to_owned(),
        code: error.source.code.clone(),
        message: error.source.to_string(),
    }
}

/// What a pair keeps across cycles.
#[derive(Clone, Debug, Default)]
struct PairHistory {
    last_error: Option<ErrorStatus>,
    last_success: Option<SystemTime>,
}

/// The id an action is about, for `last_error.subject`.
fn action_subject(action: &Action) -> String {
    match action {
        Action::CreateMirror { vpc, name, .. } => format!("{vpc}/{name}"),
        Action::TagGroup { group, .. }
        | Action::UntagGroup { group, .. }
        | Action::Revoke { group, .. }
        | Action::UpdateDescriptions { group, .. }
        | Action::DeleteMirror { group, .. }
        | Action::MarkOrphan { group, .. }
        | Action::UnmarkOrphan { group, .. } => group.to_string(),
        Action::CreatePrefixList { expands, .. } => format!("prefix list expanding {expands}"),
        Action::ModifyPrefixList { list, .. } | Action::DeletePrefixList { list, .. } => list.to_string(),
        Action::Authorize { group, .. }
        | Action::AuthorizeEgress { group, .. }
        | Action::RevokeEgress { group, .. } => match group {
            GroupRef::Existing(id) => id.to_string(),
            GroupRef::New { source, vpc, shard: 0 } => format!("mirror of {source} in {vpc}"),
            GroupRef::New { source, vpc, shard } => format!("overflow group {shard} of {source} in {vpc}"),
        },
        Action::Attach { instance, .. } | Action::Detach { instance, .. } | Action::Relink { instance, .. } => {
            instance.to_string()
        }
        Action::EnableClassicLink { vpc } => vpc.to_string(),
    }
}

fn error_status(action: &Action, kind: ActionKind, error: &ExecuteError, at: SystemTime) -> ErrorStatus {
    ErrorStatus {
        action: kind,
        subject: action_subject(action),
        kind: error.kind().to_owned(),
        code: error.code().map(str::to_owned),
        message: error.to_string(),
        at: rfc3339(at),
    }
}

fn warning_status(warning: &crate::plan::Warning) -> WarningStatus {
    WarningStatus {
        kind: warning.kind,
        conflict: warning.kind.conflict_kind().map(str::to_owned),
        subject: warning.subject.clone(),
        message: warning.message.clone(),
    }
}

/// The state behind `/status`: the last pass's picture plus what each pair
/// keeps across passes (its last error and last success). Pure: time comes in.
#[derive(Clone, Debug)]
pub struct StatusBoard {
    mode: Mode,
    last_cycle: Option<CycleStatus>,
    current: Option<CurrentCycle>,
    last_success: Option<SystemTime>,
    holds: HoldsStatus,
    deferred: Deferred,
    pairs: Vec<PairStatus>,
    orphans: Vec<OrphanStatus>,
    expansions: Vec<crate::plan::Expansion>,
    warnings: Vec<WarningStatus>,
    fights: Vec<FightStatus>,
    history: BTreeMap<PairKey, PairHistory>,
}

impl StatusBoard {
    /// An empty board for a daemon in `mode`.
    #[must_use]
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            last_cycle: None,
            current: None,
            last_success: None,
            holds: HoldsStatus::default(),
            deferred: Deferred::default(),
            pairs: Vec::new(),
            orphans: Vec::new(),
            expansions: Vec::new(),
            warnings: Vec::new(),
            fights: Vec::new(),
            history: BTreeMap::new(),
        }
    }

    /// The global mode changed (configuration reload).
    pub fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
    }

    /// A cycle started at `started_at`: `/status` shows it under way.
    pub fn cycle_started(&mut self, started_at: SystemTime) {
        self.current = Some(CurrentCycle {
            started_at,
            phase: Phase::Observing,
            observe_errors: Vec::new(),
            actions_planned: None,
            actions: BTreeMap::new(),
        });
    }

    /// The cycle under way entered `phase`.
    pub fn pass_phase(&mut self, phase: Phase) {
        if let Some(current) = &mut self.current {
            current.phase = phase;
        }
    }

    /// A describe of the cycle under way failed.
    pub fn describe_failed(&mut self, error: &ObserveError) {
        if let Some(current) = &mut self.current {
            current.observe_errors.push(observe_error_status(error));
        }
    }

    /// The cycle under way planned `actions` actions.
    pub fn pass_planned(&mut self, actions: usize) {
        if let Some(current) = &mut self.current {
            current.actions_planned = Some(actions);
        }
    }

    /// An action of the cycle under way ended as `result`.
    pub fn action_finished(&mut self, result: &ActionResult) {
        if let Some(current) = &mut self.current {
            *current.actions.entry(result.label().to_owned()).or_default() += 1;
        }
    }

    /// Folds in a finished pass that started at `started_at` (the `now` given
    /// to [`crate::reconcile::reconcile_once`]) and ended as `outcome`.
    ///
    /// Pairs no longer managed are dropped with their history — except when
    /// the pass could not observe the source groups, where a missing pair
    /// proves nothing and its history is kept for when it reappears.
    pub fn update(&mut self, pass: &PassReport, started_at: SystemTime, outcome: CycleOutcome) {
        let plan = &pass.plan;
        let finished = started_at + pass.duration;
        let complete = pass.snapshot.is_complete();

        self.current = None;
        if outcome == CycleOutcome::Success {
            self.last_success = Some(finished);
        }
        let mut actions: BTreeMap<String, usize> =
            OutcomeKind::VARIANTS.iter().map(|kind| (kind.as_str().to_owned(), 0)).collect();
        for o in &pass.report.outcomes {
            *actions.entry(o.result.label().to_owned()).or_default() += 1;
        }
        self.last_cycle = Some(CycleStatus {
            outcome,
            started_at: rfc3339(started_at),
            finished_at: rfc3339(finished),
            duration_seconds: pass.duration.as_secs_f64(),
            actions,
            observe_errors: pass.observe_errors.iter().map(observe_error_status).collect(),
            error: pass.interrupted.then(|| INTERRUPTED_OBSERVATION.to_owned()),
            other_writer: pass.other_writer,
        });
        self.fights = pass
            .fights
            .iter()
            .map(|f| FightStatus {
                source: f.pair.source.clone(),
                vpc: f.pair.vpc.clone(),
                kind: f.kind,
                since: rfc3339(f.since),
                repairs: f.repairs,
                next_repair_at: rfc3339(f.retry_after),
                principal: f.principal.clone(),
            })
            .collect();
        self.holds = HoldsStatus {
            destructive_held: plan.holds.destructive_held(),
            incomplete: plan.holds.incomplete.clone(),
            shrink: plan.holds.shrink,
            state_lost: plan.holds.state_lost,
        };
        self.deferred = plan.deferred;

        // Per-pair history: the latest failure, and the latest success.
        let mut acted: BTreeMap<&PairKey, bool> = BTreeMap::new();
        let mut failed_now: BTreeMap<&PairKey, ErrorStatus> = BTreeMap::new();
        for (planned, outcome) in plan.actions.iter().zip(&pass.report.outcomes) {
            let Some(key) = &outcome.pair else { continue };
            let ok = acted.entry(key).or_insert(true);
            *ok &= outcome.result.succeeded();
            if let ActionResult::Failed(error) = &outcome.result {
                failed_now.entry(key).or_insert_with(|| error_status(&planned.action, outcome.kind, error, finished));
            }
        }
        for pair in &plan.pairs {
            let history = self.history.entry(pair.key.clone()).or_default();
            if let Some(error) = failed_now.remove(&pair.key) {
                history.last_error = Some(error);
            }
            let succeeded = pair.in_sync() || acted.get(&pair.key).copied().unwrap_or(false);
            if complete && succeeded {
                history.last_success = Some(finished);
            }
        }
        if !pass.snapshot.incomplete.contains(&SnapshotPart::SourceGroups) {
            self.history.retain(|key, _| plan.pairs.iter().any(|p| &p.key == key));
        }

        self.pairs = plan
            .pairs
            .iter()
            .map(|pair| {
                let created = pass.report.created.get(&pair.key);
                let mirror = match (&pair.mirror, created) {
                    (Some(GroupRef::Existing(id)), _) => MirrorStatus {
                        id: Some(id.clone()),
                        name: pair.mirror_name.clone(),
                        state: MirrorState::Existing,
                    },
                    (_, Some(id)) => MirrorStatus {
                        id: Some(id.clone()),
                        name: pair.mirror_name.clone(),
                        state: MirrorState::Created,
                    },
                    (Some(GroupRef::New { .. }), None) => {
                        MirrorStatus { id: None, name: pair.mirror_name.clone(), state: MirrorState::ToBeCreated }
                    }
                    (None, None) => {
                        MirrorStatus { id: None, name: pair.mirror_name.clone(), state: MirrorState::Unavailable }
                    }
                };
                let mine = plan.warnings.iter().filter(|w| w.pair.as_ref() == Some(&pair.key));
                let (conflicts, warnings): (Vec<_>, Vec<_>) = mine.partition(|w| w.kind.conflict_kind().is_some());
                let history = self.history.get(&pair.key).cloned().unwrap_or_default();
                PairStatus {
                    source: SourceStatus { id: pair.key.source.clone(), name: pair.source_name.clone() },
                    vpc: pair.key.vpc.clone(),
                    mirror,
                    origin: match pair.origin {
                        Origin::Config(index) => format!("mirror[{index}]"),
                        Origin::Tag => "discovery_tag".to_owned(),
                    },
                    mode: if pair.audit { Mode::Audit } else { Mode::Enforce },
                    in_sync: pair.in_sync(),
                    drift: pair.drift,
                    warnings: warnings.into_iter().map(warning_status).collect(),
                    conflicts: conflicts
                        .into_iter()
                        .map(|w| ConflictStatus {
                            kind: w.kind.conflict_kind().unwrap_or_default().to_owned(),
                            message: w.message.clone(),
                        })
                        .collect(),
                    last_error: history.last_error,
                    last_success_at: history.last_success.map(rfc3339),
                    shards: pair.shards.clone(),
                }
            })
            .collect();
        self.expansions = plan.expansions.clone();
        self.orphans = plan
            .orphans
            .iter()
            .map(|o| OrphanStatus {
                group: o.group.clone(),
                vpc: o.vpc.clone(),
                name: o.name.clone(),
                source: o.source.clone(),
                since: crate::model::format_time(o.since),
                deletion_due_at: o.due.map(crate::model::format_time),
            })
            .collect();
        self.warnings = plan.warnings.iter().filter(|w| w.pair.is_none()).map(warning_status).collect();
    }

    /// The `/status` document as of `generated_at`.
    #[must_use]
    pub fn document(&self, generated_at: SystemTime, ready: bool) -> StatusDocument {
        StatusDocument {
            version: STATUS_JSON_VERSION,
            generated_at: rfc3339(generated_at),
            daemon_version: env!("CARGO_PKG_VERSION").to_owned(),
            mode: self.mode,
            ready,
            last_cycle: self.last_cycle.clone(),
            current_cycle: self.current.as_ref().map(|c| {
                let mut incomplete: Vec<SnapshotPart> = c.observe_errors.iter().map(|e| e.part).collect();
                incomplete.sort_unstable();
                incomplete.dedup();
                CurrentCycleStatus {
                    started_at: rfc3339(c.started_at),
                    running_seconds: generated_at.duration_since(c.started_at).unwrap_or_default().as_secs_f64(),
                    phase: c.phase,
                    observe_errors: c.observe_errors.clone(),
                    incomplete,
                    actions_planned: c.actions_planned,
                    actions: c.actions.clone(),
                }
            }),
            last_successful_cycle_at: self.last_success.map(rfc3339),
            holds: self.holds.clone(),
            deferred: self.deferred,
            pairs: self.pairs.clone(),
            orphans: self.orphans.clone(),
            expansions: self.expansions.clone(),
            warnings: self.warnings.clone(),
            fights: self.fights.clone(),
            events: None,
            targets: Vec::new(),
        }
    }
}
