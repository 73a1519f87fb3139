//! Fights: the same repair of a pair needed again and again, because
//! something else (a second deployment, a script, a person) keeps undoing
//! it. Part of the planner's [`Memory`]: the executed plan's repairs are
//! folded in after each pass ([`Memory::record_execution`]); a pair and kind
//! repaired `fight_repairs` times for one subject (the mirror, one grant,
//! one instance's link) within `fight_window` is in a fight, and the planner
//! defers its repairs ([`defer_fights`]) for a capped exponential backoff
//! (`fight_backoff` doubling up to `fight_backoff_max`) instead of repairing
//! at full speed. Pure: time is a parameter. `docs/operations.md` ("Fights").

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::types::{Action, ActionId, Memory, PairKey, Plan, PlannedAction, Warning, WarningKind};
use crate::config::SafetyConfig;
use crate::ec2::codes::DEPENDENCY_VIOLATION;
use crate::model::{Grant, GroupId, format_time};

/// What keeps being repaired on a pair; the `fights_total{kind}` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[derive(strum::IntoStaticStr, strum::VariantArray)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum RepairKind {
    /// The mirror group (created again after someone deleted it).
    Mirror,
    /// A grant of the mirror (authorized again after someone revoked it,
    /// revoked again after someone added it, its description reset).
    Grant,
    /// An instance's link (attached, relinked or detached again).
    Link,
}

impl RepairKind {
    /// Stable label.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        self.into()
    }

    /// The kind of repair `action` makes, if it is one.
    #[must_use]
    pub fn of(action: &Action) -> Option<Self> {
        match action {
            Action::CreateMirror { .. } => Some(Self::Mirror),
            Action::Authorize { .. }
            | Action::Revoke { .. }
            | Action::UpdateDescriptions { .. }
            | Action::AuthorizeEgress { .. }
            | Action::RevokeEgress { .. } => Some(Self::Grant),
            Action::Attach { .. } | Action::Detach { .. } | Action::Relink { .. } => Some(Self::Link),
            _ => None,
        }
    }

    fn phrase(self) -> &'static str {
        match self {
            Self::Mirror => "its mirror keeps disappearing and being created again",
            Self::Grant => "its mirror's grants keep being changed back",
            Self::Link => "its instances' links keep being changed back",
        }
    }
}

/// A pair and what is repaired on it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FightKey {
    /// The pair.
    pub pair: PairKey,
    /// What is repaired.
    pub kind: RepairKind,
}

/// A fight in progress: its repairs are backing off.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FightState {
    /// When it was detected.
    pub since: SystemTime,
    /// Repairs made since (the one that revealed it included).
    pub repairs: u32,
    /// When the last repair was made.
    pub last_repair: SystemTime,
    /// No repair before this time.
    pub retry_after: SystemTime,
    /// The subjects (fingerprints, as in [`RepairHistory::subjects`]) whose
    /// repairs made the fight: only repairs touching one of them back off,
    /// so a new grant or a new instance of the pair is not held up.
    pub subjects: BTreeSet<String>,
}

/// The recent repairs of one pair and kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairHistory {
    /// When each subject (a fingerprint of the grant or instance; `""` for
    /// the mirror) was repaired within `fight_window`, oldest first.
    pub subjects: BTreeMap<String, Vec<SystemTime>>,
    /// The fight, when it is in one.
    pub fight: Option<FightState>,
    /// Who made the change the latest repair undid, when an event named it
    /// (CloudTrail's `userIdentity.arn`).
    #[serde(default)]
    pub principal: Option<String>,
}

/// The fight detector's settings (`[safety]` of the config).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FightPolicy {
    /// Repairs of one subject within `window` that make a fight.
    pub repairs: usize,
    /// How far back repairs count.
    pub window: Duration,
    /// First backoff of a fight's repairs.
    pub backoff: Duration,
    /// Longest backoff.
    pub backoff_max: Duration,
}

impl FightPolicy {
    /// The policy of `safety`.
    #[must_use]
    pub fn of(safety: &SafetyConfig) -> Self {
        Self {
            repairs: safety.fight_repairs,
            window: safety.fight_window,
            backoff: safety.fight_backoff,
            backoff_max: safety.fight_backoff_max,
        }
    }

    /// The backoff after the `n`-th repair of a fight (1-based): `backoff`
    /// doubling per repair, capped at `backoff_max`.
    #[must_use]
    pub fn delay(&self, n: u32) -> Duration {
        let factor = 2u32.saturating_pow(n.saturating_sub(1).min(31));
        self.backoff.saturating_mul(factor).min(self.backoff_max.max(self.backoff))
    }
}

impl Default for FightPolicy {
    fn default() -> Self {
        Self {
            repairs: 3,
            window: Duration::from_secs(600),
            backoff: Duration::from_secs(60),
            backoff_max: Duration::from_secs(3600),
        }
    }
}

/// How an executed action ended, as the memory needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Executed<'a> {
    /// EC2 did it.
    Done,
    /// It was already done (by someone else).
    AlreadyDone,
    /// It failed, with this EC2 error code when EC2 answered.
    Failed(Option<&'a str>),
    /// It did not run (skipped, audited, cancelled).
    NotRun,
}

/// A fight, as `/status` and the plan show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fight {
    /// The pair.
    pub pair: PairKey,
    /// What keeps changing.
    pub kind: RepairKind,
    /// When it was detected.
    pub since: SystemTime,
    /// Repairs made since.
    pub repairs: u32,
    /// No repair before this time.
    pub retry_after: SystemTime,
    /// Who keeps changing it, when known: the principal (CloudTrail's
    /// `userIdentity.arn`) of the event that reported the change the latest
    /// repair undid. Only with `[events]`; `None` for a change no event
    /// named (events off or lost, a full pass repaired it, a mirror deleted).
    pub principal: Option<String>,
}

/// A stable fingerprint of a repair's subject (FNV-1a, 64 bits, in hex):
/// the state file keeps a short string instead of a whole grant.
fn fingerprint(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// The group or instance whose change an action repairs, by id: the
/// mirror of a grant repair, the instance of a link repair.
fn repaired_resource(action: &Action) -> Option<String> {
    match action {
        Action::Authorize { group: super::types::GroupRef::Existing(id), .. }
        | Action::AuthorizeEgress { group: super::types::GroupRef::Existing(id), .. }
        | Action::RevokeEgress { group: super::types::GroupRef::Existing(id), .. }
        | Action::Revoke { group: id, .. }
        | Action::UpdateDescriptions { group: id, .. } => Some(id.to_string()),
        Action::Attach { instance, .. } | Action::Detach { instance, .. } | Action::Relink { instance, .. } => {
            Some(instance.to_string())
        }
        _ => None,
    }
}

fn egress_subjects<G: Serialize>(grants: &[Grant<G>]) -> Vec<String> {
    grants
        .iter()
        .map(|g| fingerprint(&format!("egress:{}", serde_json::to_string(&g.key).unwrap_or_default())))
        .collect()
}

fn grant_subjects<G: Serialize>(grants: &[Grant<G>]) -> Vec<String> {
    grants.iter().map(|g| fingerprint(&serde_json::to_string(&g.key).unwrap_or_default())).collect()
}

/// The subjects an action repairs: one per grant, the instance of a link,
/// `""` for the mirror, the shard's number for an overflow group.
fn subjects(action: &Action) -> Vec<String> {
    match action {
        Action::CreateMirror { shard: 0, .. } => vec![String::new()],
        Action::CreateMirror { shard, .. } => vec![shard.to_string()],
        Action::Authorize { grants, .. } => grant_subjects(grants),
        Action::Revoke { grants, .. } | Action::UpdateDescriptions { grants, .. } => grant_subjects(grants),
        // An egress grant is not its ingress twin: its own subject.
        Action::AuthorizeEgress { grants, .. } => egress_subjects(grants),
        Action::RevokeEgress { grants, .. } => egress_subjects(grants),
        Action::Attach { instance, .. } | Action::Detach { instance, .. } | Action::Relink { instance, .. } => {
            vec![fingerprint(instance.as_str())]
        }
        _ => Vec::new(),
    }
}

impl Memory {
    /// Folds what a pass's execution taught into the memory, `executed`
    /// being each planned action with how it ended:
    /// - deletions blocked by `DependencyViolation` back off, done ones are
    ///   forgotten;
    /// - repairs EC2 did are remembered for `policy.window`; a pair and kind
    ///   whose subject was repaired `policy.repairs` times within it is in a
    ///   fight over that subject, each further repair of a fought subject
    ///   doubling its backoff; a fight ends once its backoff has passed and
    ///   a whole window went by without such a repair.
    ///
    /// Returns the fights this pass revealed.
    pub fn record_execution<'p>(
        &mut self,
        executed: impl IntoIterator<Item = (&'p PlannedAction, Executed<'p>)>,
        now: SystemTime,
        policy: &FightPolicy,
    ) -> Vec<FightKey> {
        let mut started = Vec::new();
        let mut repaired: BTreeSet<FightKey> = BTreeSet::new();
        let principals = std::mem::take(&mut self.event_principals);
        for (planned, result) in executed {
            if let Action::DeleteMirror { group, .. } = &planned.action {
                self.record_delete_outcome(group, result, now);
            }
            let (Executed::Done, Some(pair), Some(kind)) = (result, &planned.pair, RepairKind::of(&planned.action))
            else {
                continue;
            };
            let key = FightKey { pair: pair.clone(), kind };
            let history = self.repairs.entry(key.clone()).or_default();
            if let Some(principal) = repaired_resource(&planned.action).and_then(|id| principals.get(&id)) {
                history.principal = Some(principal.clone());
            }
            let horizon = now.checked_sub(policy.window);
            let mut fought: BTreeSet<String> = BTreeSet::new();
            let mut touches_fight = false;
            for subject in subjects(&planned.action) {
                touches_fight |= history.fight.as_ref().is_some_and(|f| f.subjects.contains(&subject));
                let times = history.subjects.entry(subject.clone()).or_default();
                times.retain(|t| horizon.is_none_or(|h| *t > h) && *t <= now);
                times.push(now);
                if times.len() >= policy.repairs {
                    fought.insert(subject);
                }
            }
            match &mut history.fight {
                Some(fight) => {
                    fight.subjects.extend(fought);
                    // One repair of the fight per pass, however many actions.
                    if touches_fight && repaired.insert(key.clone()) {
                        fight.repairs = fight.repairs.saturating_add(1);
                        fight.last_repair = now;
                        fight.retry_after = now + policy.delay(fight.repairs);
                    }
                }
                None if !fought.is_empty() => {
                    repaired.insert(key.clone());
                    history.fight = Some(FightState {
                        since: now,
                        repairs: 1,
                        last_repair: now,
                        retry_after: now + policy.delay(1),
                        subjects: fought,
                    });
                    started.push(key);
                }
                None => {}
            }
        }
        self.forget_old_repairs(now, policy);
        started
    }

    fn record_delete_outcome(&mut self, group: &GroupId, result: Executed<'_>, now: SystemTime) {
        match result {
            Executed::Failed(Some(DEPENDENCY_VIOLATION)) => self.record_delete_blocked(group, now),
            Executed::Done | Executed::AlreadyDone => self.record_deleted(group),
            _ => {}
        }
    }

    /// Drops repairs older than the window, and fights whose backoff passed
    /// a window ago without a repair since.
    fn forget_old_repairs(&mut self, now: SystemTime, policy: &FightPolicy) {
        let horizon = now.checked_sub(policy.window);
        let old = |t: &SystemTime| horizon.is_some_and(|h| *t <= h);
        self.repairs.retain(|_, history| {
            for times in history.subjects.values_mut() {
                times.retain(|t| !old(t));
            }
            history.subjects.retain(|_, times| !times.is_empty());
            if history.fight.as_ref().is_some_and(|f| old(&f.retry_after) && old(&f.last_repair)) {
                history.fight = None;
            }
            history.fight.is_some() || !history.subjects.is_empty()
        });
    }

    /// The fights in progress, by pair then kind.
    #[must_use]
    pub fn fights(&self) -> Vec<Fight> {
        self.repairs
            .iter()
            .filter_map(|(key, history)| {
                let fight = history.fight.as_ref()?;
                Some(Fight {
                    pair: key.pair.clone(),
                    kind: key.kind,
                    since: fight.since,
                    repairs: fight.repairs,
                    retry_after: fight.retry_after,
                    principal: history.principal.clone(),
                })
            })
            .collect()
    }
}

/// Takes out of `plan` the repairs of pairs backing off in a fight (the
/// actions of that pair and kind touching a fought subject, and whatever
/// depends on them), counting them in `deferred.fights`, and warns about
/// every fight in progress. Audited actions stay: they are only shown.
pub(super) fn defer_fights(plan: &mut Plan, memory: &Memory, now: SystemTime) {
    let mut backing_off: BTreeMap<&FightKey, &BTreeSet<String>> = BTreeMap::new();
    for (key, history) in &memory.repairs {
        let Some(fight) = &history.fight else { continue };
        let waiting = fight.retry_after > now;
        if waiting {
            backing_off.insert(key, &fight.subjects);
        }
        let next = if waiting {
            format!("next repair not before {}", format_time(fight.retry_after))
        } else {
            "the next repair is due".to_owned()
        };
        let who = match &history.principal {
            Some(principal) => format!("the latest change undone was made by {principal}"),
            None => "who changes it is not known".to_owned(),
        };
        plan.warnings.push(Warning {
            kind: WarningKind::Fight,
            pair: Some(key.pair.clone()),
            subject: Some(key.pair.source.to_string()),
            reason: None,
            message: format!(
                "{} in {}: {} (a fight since {}, {} repair(s) since; {who}); {next}",
                key.pair.source,
                key.pair.vpc,
                key.kind.phrase(),
                format_time(fight.since),
                fight.repairs
            ),
        });
    }
    if backing_off.is_empty() {
        return;
    }
    let count = plan.actions.len();
    let mut removed = vec![false; count];
    for (index, planned) in plan.actions.iter().enumerate() {
        let fighting = !planned.audit
            && planned.pair.as_ref().zip(RepairKind::of(&planned.action)).is_some_and(|(pair, kind)| {
                backing_off
                    .get(&FightKey { pair: pair.clone(), kind })
                    .is_some_and(|fought| subjects(&planned.action).iter().any(|s| fought.contains(s)))
            });
        // Dependencies point backwards: a dependant is decided after them.
        let dependant = planned.depends_on.iter().any(|d| removed[d.0]);
        removed[index] = fighting || dependant;
    }
    let mut new_id: Vec<Option<ActionId>> = vec![None; count];
    let mut kept = Vec::with_capacity(count);
    for (index, mut planned) in std::mem::take(&mut plan.actions).into_iter().enumerate() {
        if removed[index] {
            if !planned.audit {
                plan.deferred.fights += 1;
            }
            continue;
        }
        let id = ActionId(kept.len());
        new_id[index] = Some(id);
        planned.id = id;
        planned.depends_on = planned.depends_on.iter().filter_map(|d| new_id[d.0]).collect();
        kept.push(planned);
    }
    plan.actions = kept;
}
