//! The dirty set: what events (and the daemon's own last writes) say must
//! be looked at again, coalesced and debounced into one targeted pass.
//! Pure: time is a parameter.
//!
//! - Hints add their groups and instances; a hint asking for everything
//!   makes the next pass a full one.
//! - EventBridge delivers at least once: a duplicate event `id` (within the
//!   last [`SEEN_EVENT_IDS`] ids) is dropped and counted.
//! - Debounce: a pass is due `debounce` after the *latest* hint of a burst,
//!   but never later than `max_delay` after the *oldest* one, so a steady
//!   stream of events cannot postpone it forever.
//! - [`touched`]: the groups and instances a plan wrote. The snapshot a pass
//!   plans with was observed *before* its writes, so those are stale in it;
//!   the next targeted pass describes them again along with the events'.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::model::{GroupId, InstanceId};
use crate::plan::{Action, GroupRef, Plan};

use super::parse::Hint;

/// How many recent event ids are remembered to drop duplicates.
pub const SEEN_EVENT_IDS: usize = 10_000;
/// How many groups and instances of one batch keep who changed them.
pub const MAX_PRINCIPALS: usize = 10_000;

/// Groups and instances to describe again.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dirty {
    /// Groups (sources, mirrors, any group an event named).
    pub groups: BTreeSet<GroupId>,
    /// Instances.
    pub instances: BTreeSet<InstanceId>,
    /// Something changed that ids cannot narrow down: a full pass.
    pub everything: bool,
}

impl Dirty {
    /// Nothing to look at.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        !self.everything && self.groups.is_empty() && self.instances.is_empty()
    }

    /// Adds `other`.
    pub fn extend(&mut self, other: Dirty) {
        self.groups.extend(other.groups);
        self.instances.extend(other.instances);
        self.everything |= other.everything;
    }
}

/// What [`DirtySet::add`] did with a hint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Added {
    /// Merged into the pending set.
    Merged,
    /// An event id seen recently: dropped.
    Duplicate,
}

/// Hints waiting for their targeted pass.
#[derive(Debug)]
pub struct DirtySet {
    /// What events named.
    pending: Dirty,
    /// What the daemon's own writes made stale in the last snapshot.
    stale: Dirty,
    /// When the first hint of the pending set arrived, and the latest.
    first: Option<Instant>,
    last: Option<Instant>,
    /// Event times of the pending hints (wall clock), for the lag metric.
    event_times: Vec<std::time::SystemTime>,
    /// Who changed each pending group or instance, by id.
    principals: BTreeMap<String, String>,
    seen: HashSet<String>,
    seen_order: VecDeque<String>,
    debounce: Duration,
    max_delay: Duration,
}

/// One batch taken for a pass.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    /// What to describe.
    pub dirty: Dirty,
    /// The events' own times (wall clock), oldest first.
    pub event_times: Vec<std::time::SystemTime>,
    /// Who changed each group or instance (by id), as the latest event
    /// naming it said: the fights' `principal`.
    pub principals: BTreeMap<String, String>,
}

impl DirtySet {
    /// An empty set: a pass is due `debounce` after the latest hint, at most
    /// `max_delay` after the first.
    #[must_use]
    pub fn new(debounce: Duration, max_delay: Duration) -> Self {
        Self {
            pending: Dirty::default(),
            stale: Dirty::default(),
            first: None,
            last: None,
            event_times: Vec::new(),
            principals: BTreeMap::new(),
            seen: HashSet::new(),
            seen_order: VecDeque::new(),
            debounce,
            max_delay: max_delay.max(debounce),
        }
    }

    /// Adds one event's hint, received at `now`.
    pub fn add(&mut self, hint: Hint, now: Instant) -> Added {
        if !self.remember(&hint.event_id) {
            return Added::Duplicate;
        }
        if let Some(principal) = &hint.principal {
            let ids =
                hint.groups.iter().map(GroupId::to_string).chain(hint.instances.iter().map(InstanceId::to_string));
            for id in ids {
                if self.principals.len() < MAX_PRINCIPALS || self.principals.contains_key(&id) {
                    self.principals.insert(id, principal.clone());
                }
            }
        }
        self.pending.groups.extend(hint.groups);
        self.pending.instances.extend(hint.instances);
        self.pending.everything |= hint.everything;
        if let Some(time) = hint.time {
            self.event_times.push(time);
        }
        self.first.get_or_insert(now);
        self.last = Some(now);
        Added::Merged
    }

    /// Adds what the daemon's own last writes made stale. They do not start
    /// the debounce clock: on their own they are not worth a pass.
    pub fn add_stale(&mut self, stale: Dirty) {
        self.stale.groups.extend(stale.groups);
        self.stale.instances.extend(stale.instances);
    }

    /// True when an id was new (and is now remembered).
    fn remember(&mut self, id: &str) -> bool {
        if id.is_empty() {
            return true;
        }
        if self.seen.contains(id) {
            return false;
        }
        if self.seen_order.len() >= SEEN_EVENT_IDS
            && let Some(oldest) = self.seen_order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        self.seen.insert(id.to_owned());
        self.seen_order.push_back(id.to_owned());
        true
    }

    /// When the pending hints are due for a pass; `None` when no event is pending.
    #[must_use]
    pub fn due_at(&self) -> Option<Instant> {
        let (first, last) = (self.first?, self.last?);
        Some((last + self.debounce).min(first + self.max_delay))
    }

    /// True when a pass is due at `now`.
    #[must_use]
    pub fn is_due(&self, now: Instant) -> bool {
        self.due_at().is_some_and(|due| now >= due)
    }

    /// Takes everything pending (events and stale ids) for a pass.
    pub fn take(&mut self) -> Batch {
        self.first = None;
        self.last = None;
        let mut event_times = std::mem::take(&mut self.event_times);
        event_times.sort_unstable();
        let principals = std::mem::take(&mut self.principals);
        let mut dirty = std::mem::take(&mut self.pending);
        dirty.extend(std::mem::take(&mut self.stale));
        Batch { dirty, event_times, principals }
    }

    /// A full pass starts: it will see what the pending event hints point
    /// at, so they are answered. The stale ids stay: a targeted pass beside
    /// the full pass merges into the *last* snapshot, which predates those
    /// writes ([`Self::replace_stale`] once the full pass has ended).
    pub fn clear(&mut self) {
        let stale = std::mem::take(&mut self.stale);
        let _ = self.take();
        self.stale = stale;
    }

    /// How many stale ids the next batch carries.
    #[must_use]
    pub fn stale_len(&self) -> usize {
        self.stale.groups.len() + self.stale.instances.len()
    }

    /// A full pass ended: its snapshot saw every earlier write, so the
    /// stale ids become its own writes'.
    pub fn replace_stale(&mut self, stale: Dirty) {
        self.stale = Dirty { everything: false, ..stale };
    }
}

/// The groups and instances `plan`'s actions write to: for a new mirror
/// (and every action naming it before it exists) its source, so the next
/// targeted pass finds the mirror through its ownership tag.
#[must_use]
pub fn touched(plan: &Plan) -> Dirty {
    let mut dirty = Dirty::default();
    let group = |g: &GroupRef, dirty: &mut Dirty| match g {
        GroupRef::Existing(id) => {
            dirty.groups.insert(id.clone());
        }
        GroupRef::New { source, .. } => {
            dirty.groups.insert(source.clone());
        }
    };
    for planned in plan.executable() {
        match &planned.action {
            Action::CreateMirror { source, .. } => {
                dirty.groups.insert(source.clone());
            }
            Action::TagGroup { group: id, .. }
            | Action::UntagGroup { group: id, .. }
            | Action::Revoke { group: id, .. }
            | Action::UpdateDescriptions { group: id, .. }
            | Action::MarkOrphan { group: id, .. }
            | Action::UnmarkOrphan { group: id, .. } => {
                dirty.groups.insert(id.clone());
            }
            Action::DeleteMirror { group: id, source, .. } => {
                dirty.groups.insert(id.clone());
                dirty.groups.insert(source.clone());
            }
            Action::RevokeEgress { group: target, .. } => group(target, &mut dirty),
            Action::Authorize { group: target, grants } | Action::AuthorizeEgress { group: target, grants } => {
                group(target, &mut dirty);
                for grant in grants {
                    if let crate::model::Peer::Group { group: peer, .. } = &grant.key.peer {
                        group(peer, &mut dirty);
                    }
                }
            }
            Action::Attach { instance, groups, .. } | Action::Relink { instance, groups, .. } => {
                dirty.instances.insert(instance.clone());
                for g in groups {
                    group(g, &mut dirty);
                }
            }
            Action::Detach { instance, .. } => {
                dirty.instances.insert(instance.clone());
            }
            Action::EnableClassicLink { .. } => dirty.everything = true,
            // Read again whole by every targeted pass.
            Action::CreatePrefixList { .. } | Action::ModifyPrefixList { .. } | Action::DeletePrefixList { .. } => {}
        }
    }
    dirty
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn hint(id: &str, groups: &[&str]) -> Hint {
        Hint {
            event_id: id.to_owned(),
            what: "AuthorizeSecurityGroupIngress".into(),
            time: Some(SystemTime::UNIX_EPOCH),
            groups: groups.iter().map(|g| GroupId::try_new(*g).unwrap()).collect(),
            instances: BTreeSet::new(),
            everything: false,
            principal: Some("arn:aws:iam::123456789012:user/alice".into()),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_coalesced_into_one_batch_due_after_the_debounce() {
        let mut set = DirtySet::new(Duration::from_millis(200), Duration::from_secs(2));
        let start = Instant::now();
        assert_eq!(set.due_at(), None);
        set.add(hint("a", &["sg-1"]), start);
        set.add(hint("b", &["sg-2", "sg-1"]), start + Duration::from_millis(100));
        assert!(!set.is_due(start + Duration::from_millis(250)));
        assert!(set.is_due(start + Duration::from_millis(300)));
        let batch = set.take();
        assert_eq!(batch.dirty.groups.len(), 2);
        assert_eq!(batch.event_times.len(), 2);
        assert_eq!(batch.principals.len(), 2, "who changed each named group");
        assert!(set.take().dirty.is_empty() && set.due_at().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_stream_cannot_postpone_the_pass_beyond_the_max_delay() {
        let mut set = DirtySet::new(Duration::from_millis(500), Duration::from_secs(2));
        let start = Instant::now();
        for i in 0..100u64 {
            set.add(hint(&format!("e{i}"), &["sg-1"]), start + Duration::from_millis(100 * i));
        }
        assert_eq!(set.due_at(), Some(start + Duration::from_secs(2)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_pass_answers_event_hints_but_stale_ids_wait_until_it_has_ended() {
        let mut set = DirtySet::new(Duration::ZERO, Duration::ZERO);
        let stale = |id: &str| Dirty { groups: [GroupId::try_new(id).unwrap()].into(), ..Dirty::default() };
        set.add_stale(stale("sg-1"));
        set.add(hint("a", &["sg-2"]), Instant::now());
        set.clear();
        assert_eq!(set.due_at(), None, "the event is answered by the full pass");
        set.add(hint("b", &["sg-3"]), Instant::now());
        let beside: Vec<String> = set.take().dirty.groups.iter().map(ToString::to_string).collect();
        assert_eq!(beside, ["sg-1", "sg-3"], "a pass beside the full one still sees the last writes as stale");
        set.add_stale(stale("sg-4"));
        set.replace_stale(stale("sg-5"));
        let after: Vec<String> = set.take().dirty.groups.iter().map(ToString::to_string).collect();
        assert_eq!(after, ["sg-5"], "after the full pass only its own writes are stale");
    }

    #[tokio::test(start_paused = true)]
    async fn duplicate_event_ids_are_dropped_and_stale_ids_do_not_start_the_clock() {
        let mut set = DirtySet::new(Duration::ZERO, Duration::ZERO);
        let now = Instant::now();
        assert_eq!(set.add(hint("a", &["sg-1"]), now), Added::Merged);
        assert_eq!(set.add(hint("a", &["sg-1"]), now), Added::Duplicate);
        set.take();
        set.add_stale(Dirty { groups: [GroupId::try_new("sg-9").unwrap()].into(), ..Dirty::default() });
        assert_eq!(set.due_at(), None, "own writes alone are not worth a pass");
        assert_eq!(set.add(hint("a", &["sg-2"]), now), Added::Duplicate, "still remembered after a take");
        set.add(hint("b", &["sg-2"]), now);
        assert_eq!(set.take().dirty.groups.len(), 2, "stale ids ride along with the next batch");
    }

    #[test]
    fn remembered_ids_are_bounded() {
        let mut set = DirtySet::new(Duration::ZERO, Duration::ZERO);
        for i in 0..(SEEN_EVENT_IDS + 10) {
            assert!(set.remember(&format!("e{i}")));
        }
        assert_eq!(set.seen.len(), SEEN_EVENT_IDS);
        assert!(set.remember("e0"), "the oldest ids are forgotten first");
    }
}
