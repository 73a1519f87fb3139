//! Execute: the last stage of a pass. Runs a [`Plan`] through the [`Ec2`]
//! port and returns an [`Outcome`] per action.
//!
//! - Order: an action starts once every action it depends on succeeded; a
//!   failed (or audited, or cancelled) action skips its dependants, and
//!   everything else still runs. Up to `max_in_flight` actions run at once:
//!   link repairs (attach, relink) first, as soon as they are ready, so an
//!   instance never waits unlinked behind slow work such as long grant
//!   batches; the rest in plan order.
//! - A relink detaches, then attaches: if the attach fails after the detach
//!   succeeded, it is retried at once (`reattach_retries`), because the
//!   instance is unlinked until it succeeds. Failing that, the next pass
//!   plans an attach, and runs it first.
//! - Idempotence (docs/semantics.md, "Idempotence and errors"): "already there" and "already gone" answers are
//!   success, counted as [`ActionResult::AlreadyDone`]; a duplicate create
//!   adopts the group when it carries our tag. A batch authorize (revoke)
//!   that EC2 rejects because part of it is already done costs one re-read
//!   of the group and one request for what is really missing (left), none
//!   when nothing is: `AlreadyDone` then, `Done` otherwise.
//! - Retries here are only for eventual consistency (a group or instance not
//!   yet visible right after its creation); throttling and 5xx are retried by
//!   [`crate::ec2::limited::Limited`] underneath.
//! - Cancellation: once the token fires no new action starts; in-flight ones
//!   finish.
//! - Another writer: once most recent answers were "already done" (3 of the
//!   last 4), someone else is running the same plan; no new action starts
//!   (the rest end `Yielded`), so that two daemons on one estate do not both
//!   make every write. The daemon starts each pass at a random place in the
//!   plan (`rotation`), so two of them rarely race for the same actions.

use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::ec2::{CreateGroup, CreatePrefixList, Ec2, Ec2Error, GroupFilter, ModifyPrefixList, Operation, codes};
use crate::model::{
    Direction, Grant, GrantKey, GroupId, ORPHANED_SINCE_TAG, OWNER_TAG, OWNERSHIP_TAG, PrefixListEntry, SHARD_TAG,
    VpcId,
};
use crate::plan::{Action, ActionId, ActionKind, GroupRef, PairKey, Plan, PlannedAction};

/// Why an action failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecuteError {
    /// EC2 refused it.
    #[error(transparent)]
    Ec2(#[from] Ec2Error),
    /// A group of that name exists and is not ours (a race with someone else).
    #[error("group {name:?} in {vpc} exists and is not a mirror of {source_group} ({found})")]
    NotOurs {
        /// The VPC.
        vpc: VpcId,
        /// The name.
        name: String,
        /// The source we wanted to mirror.
        source_group: GroupId,
        /// What we found instead.
        found: String,
    },
    /// A planned group reference could not be resolved to an id.
    #[error("mirror of {source_group} in {vpc} was not created")]
    Unresolved {
        /// The source.
        source_group: GroupId,
        /// The VPC.
        vpc: VpcId,
    },
}

impl ExecuteError {
    /// Stable metric label.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Ec2(e) => e.kind(),
            Self::NotOurs { .. } => "not_ours",
            Self::Unresolved { .. } => "unresolved",
        }
    }

    /// The EC2 error code, when EC2 answered.
    #[must_use]
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Ec2(e) => Some(&e.code),
            _ => None,
        }
    }
}

/// How one action ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionResult {
    /// EC2 did it.
    Done,
    /// It was already in the target state (duplicate / not found answers, or
    /// a concurrent daemon's mirror adopted).
    AlreadyDone,
    /// It failed; dependants were skipped.
    Failed(ExecuteError),
    /// A dependency did not succeed.
    Skipped,
    /// Audited: planned, never executed.
    Audit,
    /// Cancelled before it started.
    Cancelled,
    /// Not started: another writer was doing the same work (most answers so
    /// far were "already done"); the next pass looks again.
    Yielded,
}

/// How an action ended, without its details: the `actions_total{outcome}`
/// label, and what [`Report::count`] counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[derive(strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum OutcomeKind {
    /// [`ActionResult::Done`].
    Done,
    /// [`ActionResult::AlreadyDone`].
    AlreadyDone,
    /// [`ActionResult::Failed`].
    Failed,
    /// [`ActionResult::Skipped`].
    Skipped,
    /// [`ActionResult::Audit`].
    Audit,
    /// [`ActionResult::Cancelled`].
    Cancelled,
    /// [`ActionResult::Yielded`].
    Yielded,
}

impl OutcomeKind {
    /// Stable metric label.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        self.into()
    }
}

impl ActionResult {
    /// True for `Done` and `AlreadyDone`.
    #[must_use]
    pub fn succeeded(&self) -> bool {
        matches!(self, Self::Done | Self::AlreadyDone)
    }

    /// What kind of ending this is.
    #[must_use]
    pub fn kind(&self) -> OutcomeKind {
        match self {
            Self::Done => OutcomeKind::Done,
            Self::AlreadyDone => OutcomeKind::AlreadyDone,
            Self::Failed(_) => OutcomeKind::Failed,
            Self::Skipped => OutcomeKind::Skipped,
            Self::Audit => OutcomeKind::Audit,
            Self::Cancelled => OutcomeKind::Cancelled,
            Self::Yielded => OutcomeKind::Yielded,
        }
    }

    /// Stable metric label (`actions_total{outcome}`).
    #[must_use]
    pub fn label(&self) -> &'static str {
        self.kind().as_str()
    }
}

/// The outcome of one planned action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Which action.
    pub id: ActionId,
    /// Its kind.
    pub kind: ActionKind,
    /// Its pair, if one.
    pub pair: Option<PairKey>,
    /// How it ended.
    pub result: ActionResult,
}

/// Everything a plan's execution produced.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// One per planned action, in plan order.
    pub outcomes: Vec<Outcome>,
    /// Mirrors created (or adopted after a duplicate create), by pair.
    pub created: BTreeMap<PairKey, GroupId>,
}

impl Report {
    /// Actions that failed.
    pub fn failures(&self) -> impl Iterator<Item = (&Outcome, &ExecuteError)> {
        self.outcomes.iter().filter_map(|o| match &o.result {
            ActionResult::Failed(e) => Some((o, e)),
            _ => None,
        })
    }

    /// Number of outcomes of this kind.
    #[must_use]
    pub fn count(&self, kind: OutcomeKind) -> usize {
        self.outcomes.iter().filter(|o| o.result.kind() == kind).count()
    }
}

/// Executor settings.
#[derive(Clone, Debug)]
pub struct ExecuteOptions {
    /// Actions in flight at once.
    pub max_in_flight: usize,
    /// Waits for a just-created group or instance to become visible.
    pub consistency_min_delay: Duration,
    /// Cap on one such wait.
    pub consistency_max_delay: Duration,
    /// Retries for eventual consistency before giving up until the next pass.
    pub consistency_retries: usize,
    /// Retries of the attach that follows a relink's detach, when it fails
    /// for a transient reason or throttling (each is a full request, with
    /// its own retries underneath).
    pub reattach_retries: usize,
    /// First wait between those retries.
    pub reattach_min_delay: Duration,
    /// Cap on one such wait.
    pub reattach_max_delay: Duration,
    /// Stop starting actions once the answers show another writer doing the
    /// same work ([`YIELD_WINDOW`]): the rest end [`ActionResult::Yielded`].
    pub yield_to_other_writer: bool,
    /// Where in the plan to start, among actions of one priority: plan
    /// order from the action at `rotation` modulo the plan's length, then
    /// round to the start. The daemon draws it at random for every pass, so
    /// that two daemons on one estate rarely race for the same actions; 0
    /// (plan order) is what `apply` and the tests use.
    pub rotation: usize,
}

impl Default for ExecuteOptions {
    fn default() -> Self {
        Self {
            max_in_flight: 4,
            consistency_min_delay: Duration::from_millis(250),
            consistency_max_delay: Duration::from_secs(4),
            consistency_retries: 6,
            reattach_retries: 5,
            reattach_min_delay: Duration::from_millis(200),
            reattach_max_delay: Duration::from_secs(2),
            yield_to_other_writer: true,
            rotation: 0,
        }
    }
}

/// Link repairs run before any other ready action (0), the rest after (1).
fn priority(action: &Action) -> u8 {
    match action {
        Action::Attach { .. } | Action::Relink { .. } => 0,
        _ => 1,
    }
}

/// Errors a re-attach is retried after (not-yet-visible is `settled`'s).
fn is_worth_retrying(error: &Ec2Error) -> bool {
    matches!(error.kind, crate::ec2::ErrorKind::Transient | crate::ec2::ErrorKind::Throttled)
}

/// Whether an authorize may meet a group of ours not yet visible, and so
/// retries `InvalidGroup.NotFound`: all but the authorize of references kept
/// to other accounts' groups on a mirror that existed before the pass,
/// where that answer is EC2 refusing the reference (VPCs not peered,
/// docs/semantics.md, "References to groups of other accounts"): failed at
/// once, not after the consistency retries.
fn needs_settling(group: &GroupRef, grants: &[Grant<GroupRef>]) -> bool {
    let foreign_only = grants.iter().all(|g| matches!(g.key.peer, crate::model::Peer::Group { owner: Some(_), .. }));
    !(matches!(group, GroupRef::Existing(_)) && foreign_only && !grants.is_empty())
}

fn is_not_yet_visible(error: &Ec2Error) -> bool {
    matches!(error.code.as_str(), codes::GROUP_NOT_FOUND | codes::INSTANCE_NOT_FOUND)
}

struct Runner<'a> {
    ec2: &'a dyn Ec2,
    options: &'a ExecuteOptions,
    /// Groups created, by pair and shard (`0`: the mirror itself).
    created: Mutex<BTreeMap<(PairKey, u8), GroupId>>,
}

impl Runner<'_> {
    fn resolve(&self, group: &GroupRef) -> Result<GroupId, ExecuteError> {
        match group {
            GroupRef::Existing(id) => Ok(id.clone()),
            GroupRef::New { source, vpc, shard } => self
                .created
                .lock()
                .get(&(PairKey { source: source.clone(), vpc: vpc.clone() }, *shard))
                .cloned()
                .ok_or_else(|| ExecuteError::Unresolved { source_group: source.clone(), vpc: vpc.clone() }),
        }
    }

    fn resolve_grants(&self, grants: &[Grant<GroupRef>]) -> Result<Vec<Grant>, ExecuteError> {
        grants
            .iter()
            .map(|g| {
                let peer = match &g.key.peer {
                    crate::model::Peer::Group { group, owner } => {
                        crate::model::Peer::Group { group: self.resolve(group)?, owner: owner.clone() }
                    }
                    crate::model::Peer::Ipv4(n) => crate::model::Peer::Ipv4(*n),
                    crate::model::Peer::Ipv6(n) => crate::model::Peer::Ipv6(*n),
                    crate::model::Peer::PrefixList(p) => crate::model::Peer::PrefixList(p.clone()),
                };
                Ok(Grant::new(g.key.protocol, g.key.ports, peer, g.description.clone()))
            })
            .collect()
    }

    /// Retries `call` while EC2 does not yet see a resource created moments ago.
    async fn settled<T, F, Fut>(&self, call: F) -> Result<T, Ec2Error>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, Ec2Error>>,
    {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.options.consistency_min_delay)
            .with_max_delay(self.options.consistency_max_delay)
            .with_max_times(self.options.consistency_retries)
            .with_jitter();
        call.retry(backoff).sleep(tokio::time::sleep).when(is_not_yet_visible).await
    }

    async fn run(&self, planned: &PlannedAction) -> ActionResult {
        match self.dispatch(planned).await {
            Ok(result) => result,
            Err(error) => ActionResult::Failed(error),
        }
    }

    async fn dispatch(&self, planned: &PlannedAction) -> Result<ActionResult, ExecuteError> {
        match &planned.action {
            Action::CreateMirror { source, vpc, name, description, tags, shard } => {
                self.create_mirror(source, vpc, name, description, tags, *shard).await
            }
            Action::TagGroup { group, tags, .. } => {
                self.settled(|| self.ec2.create_tags(group, tags)).await?;
                Ok(ActionResult::Done)
            }
            Action::UntagGroup { group, keys, .. } => match self.ec2.delete_tags(group, keys).await {
                Ok(()) => Ok(ActionResult::Done),
                Err(e) if e.code == codes::GROUP_NOT_FOUND => Ok(ActionResult::AlreadyDone),
                Err(e) => Err(e.into()),
            },
            Action::Authorize { group, grants } => {
                let settle = needs_settling(group, grants);
                let group = self.resolve(group)?;
                let grants = self.resolve_grants(grants)?;
                self.authorize(Direction::Ingress, &group, &grants, settle).await
            }
            Action::Revoke { group, grants } => self.revoke(Direction::Ingress, group, grants).await,
            Action::AuthorizeEgress { group, grants } => {
                let settle = needs_settling(group, grants);
                let group = self.resolve(group)?;
                let grants = self.resolve_grants(grants)?;
                self.authorize(Direction::Egress, &group, &grants, settle).await
            }
            Action::RevokeEgress { group, grants } => {
                let group = self.resolve(group)?;
                self.revoke(Direction::Egress, &group, grants).await
            }
            Action::UpdateDescriptions { group, grants, .. } => {
                match self.ec2.update_ingress_descriptions(group, grants).await {
                    Ok(()) => Ok(ActionResult::Done),
                    // The rule is gone since we looked: the next pass re-plans it.
                    Err(e) if e.code == codes::PERMISSION_NOT_FOUND => Ok(ActionResult::AlreadyDone),
                    Err(e) => Err(e.into()),
                }
            }
            Action::Attach { instance, vpc, groups } => {
                let groups = groups.iter().map(|g| self.resolve(g)).collect::<Result<Vec<_>, _>>()?;
                match self.settled(|| self.ec2.attach_classic_link_vpc(instance, vpc, &groups)).await {
                    Ok(()) => Ok(ActionResult::Done),
                    Err(e) if e.code == codes::INSTANCE_ALREADY_LINKED => Ok(ActionResult::AlreadyDone),
                    Err(e) => Err(e.into()),
                }
            }
            Action::Detach { instance, vpc, .. } => self.detach(instance, vpc).await,
            Action::Relink { instance, from_vpc, vpc, groups, .. } => {
                let groups = groups.iter().map(|g| self.resolve(g)).collect::<Result<Vec<_>, _>>()?;
                self.detach(instance, from_vpc).await?;
                // The instance is unlinked until this succeeds: retry at once.
                let backoff = ExponentialBuilder::default()
                    .with_min_delay(self.options.reattach_min_delay)
                    .with_max_delay(self.options.reattach_max_delay)
                    .with_max_times(self.options.reattach_retries)
                    .with_jitter();
                let reattach = || self.settled(|| self.ec2.attach_classic_link_vpc(instance, vpc, &groups));
                let result = reattach
                    .retry(backoff)
                    .sleep(tokio::time::sleep)
                    .when(is_worth_retrying)
                    .notify(|e, delay| {
                        warn!(instance_id = %instance, vpc_id = %vpc, code = %e.code, retry_in_ms = delay.as_millis() as u64,
                            "relink detached the instance and could not attach it again yet; retrying at once");
                    })
                    .await;
                match result {
                    Ok(()) => Ok(ActionResult::Done),
                    Err(e) if e.code == codes::INSTANCE_ALREADY_LINKED => Ok(ActionResult::AlreadyDone),
                    Err(e) => {
                        warn!(instance_id = %instance, vpc_id = %vpc, code = %e.code,
                            "relink detached the instance but could not attach it again; the next pass attaches it first");
                        Err(e.into())
                    }
                }
            }
            Action::DeleteMirror { group, .. } => match self.ec2.delete_security_group(group).await {
                Ok(()) => Ok(ActionResult::Done),
                Err(e) if e.code == codes::GROUP_NOT_FOUND => Ok(ActionResult::AlreadyDone),
                Err(e) => Err(e.into()),
            },
            Action::EnableClassicLink { vpc } => {
                self.ec2.enable_vpc_classic_link(vpc).await?;
                Ok(ActionResult::Done)
            }
            Action::MarkOrphan { group, since, .. } => {
                let tags = BTreeMap::from([(ORPHANED_SINCE_TAG.to_owned(), since.clone())]);
                match self.ec2.create_tags(group, &tags).await {
                    Ok(()) => Ok(ActionResult::Done),
                    // Deleted since we looked: nothing left to mark.
                    Err(e) if e.code == codes::GROUP_NOT_FOUND => Ok(ActionResult::AlreadyDone),
                    Err(e) => Err(e.into()),
                }
            }
            Action::UnmarkOrphan { group, .. } => {
                match self.ec2.delete_tags(group, &[ORPHANED_SINCE_TAG.to_owned()]).await {
                    Ok(()) => Ok(ActionResult::Done),
                    Err(e) if e.code == codes::GROUP_NOT_FOUND => Ok(ActionResult::AlreadyDone),
                    Err(e) => Err(e.into()),
                }
            }
            Action::CreatePrefixList { name, max_entries, entries, tags, .. } => {
                let request = CreatePrefixList {
                    name: name.clone(),
                    address_family: "IPv4".to_owned(),
                    max_entries: *max_entries,
                    entries: entries
                        .iter()
                        .map(|&net| PrefixListEntry { cidr: net.into(), description: None })
                        .collect(),
                    tags: tags.clone(),
                    // A retried create may leave a second list: the planner
                    // keeps one and deletes the other after the grace.
                    client_token: None,
                };
                self.ec2.create_prefix_list(&request).await?;
                Ok(ActionResult::Done)
            }
            // A version mismatch (someone changed the list since we read it)
            // fails the action, never forced: the next pass reads the list
            // again and plans from its new version.
            Action::ModifyPrefixList { list, version, add, remove, .. } => {
                let request = ModifyPrefixList {
                    id: list.clone(),
                    current_version: *version,
                    add: add.iter().map(|&net| PrefixListEntry { cidr: net.into(), description: None }).collect(),
                    remove: remove.clone(),
                };
                self.ec2.modify_prefix_list(&request).await?;
                Ok(ActionResult::Done)
            }
            Action::DeletePrefixList { list, .. } => match self.ec2.delete_prefix_list(list).await {
                Ok(()) => Ok(ActionResult::Done),
                Err(e) if e.code == codes::PREFIX_LIST_NOT_FOUND => Ok(ActionResult::AlreadyDone),
                Err(e) => Err(e.into()),
            },
        }
    }

    async fn create_mirror(
        &self,
        source: &GroupId,
        vpc: &VpcId,
        name: &str,
        description: &str,
        tags: &BTreeMap<String, String>,
        shard: u8,
    ) -> Result<ActionResult, ExecuteError> {
        let key = PairKey { source: source.clone(), vpc: vpc.clone() };
        let request = CreateGroup {
            vpc_id: vpc.clone(),
            name: name.to_owned(),
            description: description.to_owned(),
            tags: tags.clone(),
        };
        let (id, result) = match self.ec2.create_security_group(&request).await {
            Ok(id) => (id, ActionResult::Done),
            Err(e) if e.code == codes::GROUP_DUPLICATE => {
                // Someone created it since we looked — maybe a second daemon.
                let filter = GroupFilter {
                    vpc_ids: vec![vpc.clone()],
                    group_names: vec![name.to_owned()],
                    ..GroupFilter::default()
                };
                let found = self
                    .settled(|| async {
                        let groups = self.ec2.describe_security_groups(&filter).await?;
                        groups.into_iter().next().ok_or_else(|| {
                            Ec2Error::new(Operation::DescribeSecurityGroups, codes::GROUP_NOT_FOUND, "not visible yet")
                        })
                    })
                    .await?;
                // Adopt it only if it carries our tag for this source and the
                // owner we create with: another deployment's mirror is theirs,
                // and one without an owner is claimed by the next pass.
                let wanted_owner = tags.get(OWNER_TAG);
                // An overflow group also carries our shard tag, with its number.
                if found.mirrored_from().as_ref() != Some(source)
                    || found.tags.get(OWNER_TAG) != wanted_owner
                    || found.tags.get(SHARD_TAG) != tags.get(SHARD_TAG)
                {
                    let mut owner =
                        found.tags.get(OWNERSHIP_TAG).map_or("untagged".to_owned(), |v| format!("tagged for {v}"));
                    if found.mirrored_from().as_ref() == Some(source) {
                        owner.push_str(
                            &found
                                .owner_tag()
                                .map_or_else(|| ", without an owner".to_owned(), |o| format!(", owned by {o:?}")),
                        );
                    }
                    return Err(ExecuteError::NotOurs {
                        vpc: vpc.clone(),
                        name: name.to_owned(),
                        source_group: source.clone(),
                        found: format!("{} {owner}", found.id),
                    });
                }
                (found.id, ActionResult::AlreadyDone)
            }
            Err(e) => return Err(e.into()),
        };
        self.created.lock().insert((key, shard), id);
        Ok(result)
    }

    async fn authorize(
        &self,
        direction: Direction,
        group: &GroupId,
        grants: &[Grant],
        settle: bool,
    ) -> Result<ActionResult, ExecuteError> {
        let result = if settle {
            self.settled(|| self.ec2.authorize(direction, group, grants)).await
        } else {
            self.ec2.authorize(direction, group, grants).await
        };
        match result {
            Ok(()) => Ok(ActionResult::Done),
            Err(e) if e.code == codes::PERMISSION_DUPLICATE => {
                // EC2 rejects the whole request when one grant exists (a
                // second writer got there first): one re-read of the group,
                // then one request for what is really missing.
                let present = self.rule_keys(direction, group).await?;
                let missing: Vec<Grant> = grants.iter().filter(|g| !present.contains(&g.key)).cloned().collect();
                if missing.is_empty() {
                    return Ok(ActionResult::AlreadyDone);
                }
                self.ec2.authorize(direction, group, &missing).await?;
                Ok(ActionResult::Done)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn revoke(
        &self,
        direction: Direction,
        group: &GroupId,
        grants: &[Grant],
    ) -> Result<ActionResult, ExecuteError> {
        // An egress revoke may follow the create of its mirror moments ago
        // (its default egress): it waits for the group to become visible.
        let result = match direction {
            Direction::Ingress => self.ec2.revoke(direction, group, grants).await,
            Direction::Egress => self.settled(|| self.ec2.revoke(direction, group, grants)).await,
        };
        match result {
            Ok(()) => Ok(ActionResult::Done),
            Err(e) if e.code == codes::GROUP_NOT_FOUND => Ok(ActionResult::AlreadyDone),
            Err(e) if e.code == codes::PERMISSION_NOT_FOUND => {
                // As for authorize: one re-read, one request for what is left.
                let present = match self.rule_keys(direction, group).await {
                    Ok(present) => present,
                    Err(e) if e.code == codes::GROUP_NOT_FOUND => return Ok(ActionResult::AlreadyDone),
                    Err(e) => return Err(e.into()),
                };
                let left: Vec<Grant> = grants.iter().filter(|g| present.contains(&g.key)).cloned().collect();
                if left.is_empty() {
                    return Ok(ActionResult::AlreadyDone);
                }
                self.ec2.revoke(direction, group, &left).await?;
                Ok(ActionResult::Done)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The keys of `group`'s rules of one direction as EC2 holds them now: one
    /// `DescribeSecurityGroups` by id (waiting, like the write before it,
    /// for a group created moments ago to become visible).
    async fn rule_keys(&self, direction: Direction, group: &GroupId) -> Result<BTreeSet<GrantKey>, Ec2Error> {
        let filter = GroupFilter { group_ids: vec![group.clone()], ..GroupFilter::default() };
        let found = self
            .settled(|| async {
                let groups = self.ec2.describe_security_groups(&filter).await?;
                groups.into_iter().find(|g| &g.id == group).ok_or_else(|| {
                    Ec2Error::new(Operation::DescribeSecurityGroups, codes::GROUP_NOT_FOUND, "the group is not visible")
                })
            })
            .await?;
        let rules = match direction {
            Direction::Ingress => found.ingress,
            Direction::Egress => found.egress,
        };
        Ok(rules.into_iter().map(|rule| rule.key).collect())
    }

    async fn detach(&self, instance: &crate::model::InstanceId, vpc: &VpcId) -> Result<ActionResult, ExecuteError> {
        match self.ec2.detach_classic_link_vpc(instance, vpc).await {
            Ok(()) => Ok(ActionResult::Done),
            // Not linked any more (stopped, terminated, or detached by someone).
            Err(e) if e.kind == crate::ec2::ErrorKind::NotFound || e.code == codes::INSTANCE_NOT_LINKED => {
                Ok(ActionResult::AlreadyDone)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// The fewest "already done" answers that can reveal another writer: one
/// alone is a race anyone can lose (an instance stopped as we detach it).
pub const OTHER_WRITER_MIN_ALREADY_DONE: usize = 2;

/// Whether `done` writes EC2 did for us and `already_done` answers show
/// another writer on the same pairs: at least
/// [`OTHER_WRITER_MIN_ALREADY_DONE`] already done, and more than done. When
/// two daemons race through the same plan, every contested write is done
/// for one and already done for the other, so at most one of them sees this.
#[must_use]
pub fn another_writer(done: usize, already_done: usize) -> bool {
    already_done >= OTHER_WRITER_MIN_ALREADY_DONE && already_done > done
}

/// The answers the executor looks back on to decide it runs behind another
/// writer: of the last [`YIELD_WINDOW`] successful writes, at least
/// [`YIELD_ALREADY_DONE`] already done. Recent answers rather than the whole
/// pass, so that a daemon that did its share first and then runs into the
/// other's stops at once.
pub const YIELD_WINDOW: usize = 4;
/// See [`YIELD_WINDOW`].
pub const YIELD_ALREADY_DONE: usize = 3;

fn log_outcome(planned: &PlannedAction, result: &ActionResult) {
    let kind = planned.action.kind().as_str();
    let action = serde_json::to_string(&planned.action).unwrap_or_default();
    match result {
        ActionResult::Done | ActionResult::AlreadyDone => {
            info!(action = kind, outcome = result.label(), detail = %action, "action succeeded");
        }
        ActionResult::Failed(error) => {
            warn!(action = kind, error_kind = error.kind(), error = %error, detail = %action, "action failed");
        }
        _ => {}
    }
}

/// Executes `plan`. Never fails as a whole: each action's outcome is in the
/// report, in plan order.
pub async fn execute(ec2: &dyn Ec2, plan: &Plan, options: &ExecuteOptions, cancel: &CancellationToken) -> Report {
    execute_reporting(ec2, plan, options, cancel, &|_| {}).await
}

/// [`execute`], calling `on_finished` with the result of each action it
/// started, as soon as that action ends (`/status` shows a long execution
/// while it runs).
pub async fn execute_reporting(
    ec2: &dyn Ec2,
    plan: &Plan,
    options: &ExecuteOptions,
    cancel: &CancellationToken,
    on_finished: &(dyn Fn(&ActionResult) + Sync),
) -> Report {
    let runner = Runner { ec2, options, created: Mutex::new(BTreeMap::new()) };
    let count = plan.actions.len();
    let mut results: Vec<Option<ActionResult>> = vec![None; count];
    let mut waiting_on: Vec<usize> = plan.actions.iter().map(|a| a.depends_on.len()).collect();
    let mut dependants: Vec<Vec<usize>> = vec![Vec::new(); count];
    for action in &plan.actions {
        for dep in &action.depends_on {
            dependants[dep.0].push(action.id.0);
        }
    }
    // Ready actions, by (priority, plan order from the rotation's start).
    let start = options.rotation.checked_rem(count).unwrap_or(0);
    let rank = |index: usize| (priority(&plan.actions[index].action), (index + count - start) % count);
    let mut ready: BTreeSet<(u8, usize)> = (0..count).filter(|&i| waiting_on[i] == 0).map(rank).collect();
    let mut in_flight = FuturesUnordered::new();
    let max_in_flight = options.max_in_flight.max(1);

    // Marks `index` finished and releases or skips its dependants.
    let mut finish = |index: usize,
                      result: ActionResult,
                      results: &mut Vec<Option<ActionResult>>,
                      ready: &mut BTreeSet<(u8, usize)>| {
        let ok = result.succeeded();
        results[index] = Some(result);
        let mut queue = VecDeque::from([(index, ok)]);
        while let Some((done, ok)) = queue.pop_front() {
            for &next in &dependants[done] {
                if results[next].is_some() {
                    continue;
                }
                if ok {
                    waiting_on[next] -= 1;
                    if waiting_on[next] == 0 {
                        ready.insert(rank(next));
                    }
                } else {
                    let skipped = if plan.actions[next].audit { ActionResult::Audit } else { ActionResult::Skipped };
                    results[next] = Some(skipped);
                    ready.remove(&rank(next));
                    queue.push_back((next, false));
                }
            }
        }
    };

    // The last few answers, true for "already done".
    let mut recent: VecDeque<bool> = VecDeque::with_capacity(YIELD_WINDOW + 1);
    let mut yielded = false;
    loop {
        let recently_already = recent.iter().filter(|&&already| already).count();
        if options.yield_to_other_writer && !yielded && recently_already >= YIELD_ALREADY_DONE {
            yielded = true;
            info!(
                already_done = recently_already,
                of = recent.len(),
                "the last writes were already done: another writer is doing the same work; \
                 this pass starts no more actions and the next one looks again"
            );
        }
        while in_flight.len() < max_in_flight && !cancel.is_cancelled() && !yielded {
            let Some((_, position)) = ready.pop_first() else { break };
            let index = (position + start) % count;
            let planned = &plan.actions[index];
            if planned.audit {
                finish(index, ActionResult::Audit, &mut results, &mut ready);
                continue;
            }
            let runner = &runner;
            in_flight.push(async move { (index, runner.run(planned).await) });
        }
        let Some((index, result)) = in_flight.next().await else { break };
        if result.succeeded() {
            recent.push_back(result == ActionResult::AlreadyDone);
            if recent.len() > YIELD_WINDOW {
                recent.pop_front();
            }
        }
        log_outcome(&plan.actions[index], &result);
        on_finished(&result);
        finish(index, result, &mut results, &mut ready);
    }

    drop(in_flight);
    let outcomes = plan
        .actions
        .iter()
        .zip(results)
        .map(|(planned, result)| Outcome {
            id: planned.id,
            kind: planned.action.kind(),
            pair: planned.pair.clone(),
            result: result.unwrap_or(if yielded { ActionResult::Yielded } else { ActionResult::Cancelled }),
        })
        .collect();
    // The report names the mirrors; overflow groups show in the next plan.
    let created = runner
        .created
        .into_inner()
        .into_iter()
        .filter(|((_, shard), _)| *shard == 0)
        .map(|((key, _), id)| (key, id))
        .collect();
    Report { outcomes, created }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Peer, Ports, Protocol};

    fn from(peer: Peer<GroupRef>) -> Grant<GroupRef> {
        Grant::new(Protocol::Tcp, Ports::Range { from: 22, to: 22 }, peer, None)
    }

    #[test]
    fn only_kept_references_on_an_existing_mirror_are_authorized_without_consistency_retries() {
        let sg = |id: &str| GroupId::try_new(id).unwrap();
        let existing = GroupRef::Existing(sg("sg-1"));
        let new = GroupRef::New { source: sg("sg-2"), vpc: VpcId::try_new("vpc-1").unwrap(), shard: 0 };
        let foreign = from(Peer::Group { group: GroupRef::Existing(sg("sg-3")), owner: Some("111111111111".into()) });
        let cidr = from(Peer::Ipv4("10.0.0.0/8".parse().unwrap()));
        assert!(!needs_settling(&existing, std::slice::from_ref(&foreign)));
        assert!(needs_settling(&new, std::slice::from_ref(&foreign)), "a mirror created moments ago");
        assert!(needs_settling(&existing, &[cidr, foreign]));
    }
}
