//! # The EC2 emulator engine
//!
//! An in-memory EC2 with Classic semantics (docs/emulator.md). It stands in for EC2
//! behind the [`Ec2`](crate::ec2::Ec2) port, so `observe` and `execute` run
//! unchanged against it: in unit and daemon tests directly, and — through
//! the Query-API [`server`] — in `demo`, the end-to-end tests and the
//! benchmarks through the real `aws-sdk-ec2` over HTTP.
//!
//! ```text
//!  observe / execute ──► Ec2 port ──► Emulator ──► request pipeline ──► World
//!  HTTP server ──► EC2-shaped actions ──────────┘   (latency, throttling,     (state + EC2 rules)
//!                                                     injected errors, counters)
//! ```
//!
//! - [`Emulator`] is a cheap, cloneable, `Send + Sync` handle; two reconcilers
//!   may share one world.
//! - Every EC2 request — each describe *page*, each write, each world-building
//!   call — goes through one pipeline: injected latency, EC2's token buckets
//!   (`RequestLimitExceeded`), injected server errors, then the world's rules,
//!   then the per-action [`RequestCounters`].
//! - The world enforces EC2's error codes ([`codes`]), quotas and the
//!   eventual-consistency window ([`Faults::consistency_window`]).
//! - Worlds are seeded from [`Estate`] files or [`generate`]d synthetically;
//!   ids are deterministic counters (`sg-00000001`, …) so tests reproduce.
//! - All clocks are `tokio::time`: tests run under paused time.

pub use crate::ec2::codes;
pub mod cloud;
mod counters;
mod describe;
pub mod estate;
pub mod events;
mod faults;
mod filters;
pub mod generate;
mod permissions;
mod port;
mod prefix_lists;
pub mod server;
mod state;
mod validate;

#[cfg(test)]
mod tests;

use parking_lot::{Mutex, MutexGuard};
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use ipnet::Ipv4Net;
use tokio::time::Instant;

use crate::ec2::{Ec2Error, GroupFilter, InstanceFilter, LinkFilter, Operation};
use crate::model::{
    Direction, GroupId, Instance, InstanceId, InstanceState, Link, NetworkInterface, PrefixList, PrefixListEntry,
    PrefixListId, SecurityGroup, Vpc, VpcId,
};

pub use cloud::Cloud;
pub use counters::{OperationCounts, RequestCounters};
pub use describe::{Page, PageRequest};
pub use estate::{Estate, EstateError, EstateErrors};
pub use faults::{Bucket, ErrorInjection, Faults, Throttle};
pub use filters::Filter;
pub use generate::GenerateSpec;
pub use permissions::{CidrSource, GroupSource, IpPermission, PrefixListSource};
pub use state::{Limits, StateChange};

use events::{Caller, EventOptions, EventQueue, Published, documents};
use faults::FaultState;
pub(crate) use prefix_lists::{CreateSpec as CreatePrefixListSpec, ModifySpec as ModifyPrefixListSpec};
use state::{Fail, GroupSpec, RunSpec, VpcSpec, World};

tokio::task_local! {
    /// Who is making the requests of the current task (the HTTP server sets
    /// it from each request's headers); [`Caller::in_process`] otherwise.
    static CALLER: Caller;
}

/// Runs `future` with its requests attributed to `caller` in the events
/// they publish (`userAgent`, `accessKeyId`, region).
pub async fn with_caller<F: std::future::Future>(caller: Caller, future: F) -> F::Output {
    CALLER.scope(caller, future).await
}

/// The account the emulator plays unless told otherwise.
pub const DEFAULT_ACCOUNT_ID: &str = "123456789012";

/// The page size the [`Ec2`](crate::ec2::Ec2) implementation asks for.
pub const PORT_PAGE_SIZE: i32 = 1000;

/// How one world behaves.
#[derive(Clone, Debug, PartialEq)]
pub struct EmulatorOptions {
    /// The account id that owns everything (`OwnerId`).
    pub account_id: String,
    /// Distinguishes the ids of worlds that must not collide: `0` gives
    /// `sg-00000001`, any other seed `s` gives `sg-<s:08x>00000001`.
    pub id_seed: u32,
    /// Quotas.
    pub limits: Limits,
    /// Faults to inject.
    pub faults: Faults,
    /// The world's region, whose AWS-managed prefix lists it has.
    pub region: String,
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        Self {
            account_id: DEFAULT_ACCOUNT_ID.to_owned(),
            id_seed: 0,
            limits: Limits::default(),
            faults: Faults::none(),
            region: cloud::HOME_REGION.to_owned(),
        }
    }
}

/// `CreateVpc`, with the emulator's extension of enabling ClassicLink in
/// the same request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewVpc {
    /// `CidrBlock`; default `10.0.0.0/16`.
    pub cidr_block: Option<Ipv4Net>,
    /// Enable ClassicLink right away.
    pub classic_link: bool,
    /// Value of the `Name` tag, if any.
    pub name: Option<String>,
}

impl NewVpc {
    /// A VPC with ClassicLink on or off and the default CIDR.
    #[must_use]
    pub fn classic_link(enabled: bool) -> Self {
        Self { classic_link: enabled, ..Self::default() }
    }
}

/// `CreateSecurityGroup`: a Classic group when `vpc_id` is `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewGroup {
    /// `VpcId`; `None` for EC2-Classic.
    pub vpc_id: Option<VpcId>,
    /// `GroupName`.
    pub name: String,
    /// `GroupDescription`.
    pub description: String,
    /// `TagSpecifications`.
    pub tags: BTreeMap<String, String>,
}

impl NewGroup {
    /// An EC2-Classic group.
    #[must_use]
    pub fn classic(name: impl Into<String>, description: impl Into<String>) -> Self {
        Self { vpc_id: None, name: name.into(), description: description.into(), tags: BTreeMap::new() }
    }

    /// A group in `vpc_id`.
    #[must_use]
    pub fn in_vpc(vpc_id: &VpcId, name: impl Into<String>, description: impl Into<String>) -> Self {
        Self { vpc_id: Some(vpc_id.clone()), ..Self::classic(name, description) }
    }

    /// Adds a tag.
    #[must_use]
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }
}

/// `RunInstances`: Classic instances when `vpc_id` is `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunInstances {
    /// The VPC to launch into; `None` for EC2-Classic.
    pub vpc_id: Option<VpcId>,
    /// Security groups; empty means the network's `default` group.
    pub groups: Vec<GroupId>,
    /// How many instances.
    pub count: usize,
    /// `None`: the instances are `running` at once. `Some(d)`: they are
    /// `pending` for `d`, then `running`.
    pub pending_for: Option<Duration>,
}

impl RunInstances {
    /// One running Classic instance in these groups.
    #[must_use]
    pub fn classic(groups: impl IntoIterator<Item = GroupId>) -> Self {
        Self { vpc_id: None, groups: groups.into_iter().collect(), count: 1, pending_for: None }
    }

    /// One running instance in `vpc_id` in these groups.
    #[must_use]
    pub fn in_vpc(vpc_id: &VpcId, groups: impl IntoIterator<Item = GroupId>) -> Self {
        Self { vpc_id: Some(vpc_id.clone()), ..Self::classic(groups) }
    }

    /// Launches `count` alike.
    #[must_use]
    pub fn count(mut self, count: usize) -> Self {
        self.count = count;
        self
    }

    /// Keeps them `pending` for `duration` first.
    #[must_use]
    pub fn pending_for(mut self, duration: Duration) -> Self {
        self.pending_for = Some(duration);
        self
    }
}

/// Sizes of a world, for tests and benchmark reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WorldStats {
    /// VPCs.
    pub vpcs: usize,
    /// Security groups (Classic and VPC, defaults included).
    pub groups: usize,
    /// Ingress grants over all groups.
    pub grants: usize,
    /// Instances in any state.
    pub instances: usize,
    /// ClassicLink links.
    pub links: usize,
}

#[derive(Debug)]
struct Shared {
    world: World,
    faults: FaultState,
    counters: RequestCounters,
    events: Option<EventQueue>,
    /// Who requests through the `Ec2` port are attributed to in events.
    port_caller: Option<Caller>,
}

/// A handle on one emulated EC2 world. Cloning is cheap and every clone
/// sees the same world, faults and counters.
#[derive(Clone, Debug)]
pub struct Emulator {
    shared: Arc<Mutex<Shared>>,
}

impl Default for Emulator {
    fn default() -> Self {
        Self::new(EmulatorOptions::default())
    }
}

impl Emulator {
    /// A world with only the EC2-Classic `default` group.
    #[must_use]
    pub fn new(options: EmulatorOptions) -> Self {
        let now = Instant::now();
        let mut world = World::new(options.account_id, options.region, options.limits, options.id_seed, now);
        world.consistency_window = options.faults.consistency_window;
        Self::from_world(world, options.faults, now)
    }

    fn from_world(world: World, faults: Faults, now: Instant) -> Self {
        let shared = Shared {
            world,
            faults: FaultState::new(faults, now),
            counters: RequestCounters::default(),
            events: None,
            port_caller: None,
        };
        Self { shared: Arc::new(Mutex::new(shared)) }
    }

    /// A world seeded from an estate; nothing is loaded unless all of it is
    /// valid. Loading is not counted and ignores faults.
    ///
    /// # Errors
    /// Every problem of the estate, each with its place (`group[3].rules[1].from_group: …`).
    pub fn from_estate(estate: &Estate, options: EmulatorOptions) -> Result<Self, EstateErrors> {
        let now = Instant::now();
        let mut world = World::new(options.account_id, options.region, options.limits, options.id_seed, now);
        estate::load(&mut world, estate, now)?;
        world.consistency_window = options.faults.consistency_window;
        Ok(Self::from_world(world, options.faults, now))
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock()
    }

    /// The request pipeline: latency, throttling, injected errors, the
    /// world's rules, counting. One call is one EC2 request.
    async fn request<T>(
        &self,
        operation: Operation,
        action: impl FnOnce(&mut World, Instant) -> Result<T, Fail>,
    ) -> Result<T, Ec2Error> {
        self.write(operation, action, |_, _| Vec::new()).await
    }

    /// [`Self::request`] for a write: when the write takes effect (an
    /// injected error *after* the effect included), what `record` says it
    /// did is published to the event queue, if there is one.
    async fn write<T>(
        &self,
        operation: Operation,
        action: impl FnOnce(&mut World, Instant) -> Result<T, Fail>,
        record: impl FnOnce(&T, &World) -> Vec<Published>,
    ) -> Result<T, Ec2Error> {
        let latency = self.lock().faults.latency();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let mut guard = self.lock();
        let shared = &mut *guard;
        let now = Instant::now();
        if !shared.faults.admit(operation.category(), now) {
            shared.counters.record_throttled(operation);
            return Err(Ec2Error::new(operation, codes::REQUEST_LIMIT_EXCEEDED, "Request limit exceeded."));
        }
        let injected = shared.faults.inject(operation);
        if let Some(fault) = &injected
            && !fault.after_effect
        {
            shared.counters.record_error(operation, &fault.code);
            return Err(Ec2Error::new(operation, fault.code.clone(), "Injected fault: the request was not processed."));
        }
        let result = action(&mut shared.world, now);
        if let (Ok(value), Some(queue)) = (&result, &shared.events) {
            let caller = CALLER.try_with(Clone::clone).unwrap_or_else(|_| Caller::in_process());
            queue.publish(record(value, &shared.world), &caller, &shared.world.account_id);
        }
        match (result, injected) {
            (Ok(value), None) => {
                shared.counters.record_ok(operation);
                Ok(value)
            }
            (Ok(_), Some(fault)) => {
                shared.counters.record_error(operation, &fault.code);
                Err(Ec2Error::new(operation, fault.code, "Injected fault: the request was processed."))
            }
            (Err(fail), _) => {
                shared.counters.record_error(operation, fail.code);
                Err(Ec2Error::new(operation, fail.code, fail.message))
            }
        }
    }

    // ----- control -------------------------------------------------------------

    /// A copy of the request counters.
    #[must_use]
    pub fn counters(&self) -> RequestCounters {
        self.lock().counters.clone()
    }

    /// Zeroes the request counters.
    pub fn reset_counters(&self) {
        self.lock().counters = RequestCounters::default();
    }

    /// Requests to mutating actions since the last reset.
    #[must_use]
    pub fn mutating_calls(&self) -> u64 {
        self.lock().counters.mutating_calls()
    }

    /// The faults in force.
    #[must_use]
    pub fn faults(&self) -> Faults {
        self.lock().faults.config().clone()
    }

    /// Replaces the faults: buckets start full, the random generator restarts
    /// from the new seed, and resources created from now on use the new
    /// consistency window.
    pub fn set_faults(&self, faults: Faults) {
        let mut shared = self.lock();
        shared.world.consistency_window = faults.consistency_window;
        shared.faults = FaultState::new(faults, Instant::now());
    }

    /// Turns the event queue on: from now on every accepted write publishes
    /// its EventBridge events there ([`events`]). Replaces an earlier queue.
    pub fn enable_events(&self, options: EventOptions) -> EventQueue {
        let queue = EventQueue::new(options);
        self.lock().events = Some(queue.clone());
        queue
    }

    /// Attributes the writes made through the [`Ec2`](crate::ec2::Ec2) port
    /// (the daemon, in-process) to `user_agent` in the events they publish,
    /// e.g. one with `app/classiclink-mirror` as the daemon's SDK client
    /// sends — so the daemon recognises its own echo in-process too.
    pub fn set_port_user_agent(&self, user_agent: impl Into<String>) {
        self.lock().port_caller = Some(Caller { user_agent: user_agent.into(), ..Caller::in_process() });
    }

    /// [`Self::write`] for the `Ec2` port: attributed to the port's caller
    /// unless the request already has one (the HTTP server's).
    async fn port_write<T>(
        &self,
        operation: Operation,
        action: impl FnOnce(&mut World, Instant) -> Result<T, Fail>,
        record: impl FnOnce(&T, &World) -> Vec<Published>,
    ) -> Result<T, Ec2Error> {
        let port_caller = self.lock().port_caller.clone();
        match port_caller {
            Some(caller) if CALLER.try_with(|_| ()).is_err() => {
                CALLER.scope(caller, self.write(operation, action, record)).await
            }
            _ => self.write(operation, action, record).await,
        }
    }

    /// The event queue, when events are on.
    #[must_use]
    pub fn events(&self) -> Option<EventQueue> {
        self.lock().events.clone()
    }

    /// The options this world was made with (its faults as they are now).
    #[must_use]
    pub fn options(&self) -> EmulatorOptions {
        let shared = self.lock();
        EmulatorOptions {
            account_id: shared.world.account_id.clone(),
            id_seed: shared.world.id_seed,
            limits: shared.world.limits,
            faults: shared.faults.config().clone(),
            region: shared.world.region.clone(),
        }
    }

    // ----- inspection (not counted, no faults, ignores visibility) --------------

    /// The account id.
    #[must_use]
    pub fn account_id(&self) -> String {
        self.lock().world.account_id.clone()
    }

    /// A group as it is now, even inside its consistency window.
    #[must_use]
    pub fn peek_group(&self, id: &GroupId) -> Option<SecurityGroup> {
        let shared = self.lock();
        shared.world.groups.get(id).map(|g| g.to_model(&shared.world.account_id))
    }

    /// An instance as it is now.
    #[must_use]
    pub fn peek_instance(&self, id: &InstanceId) -> Option<Instance> {
        self.lock().world.instances.get(id).map(|i| i.to_model(Instant::now()))
    }

    /// The ClassicLink link of an instance, if it has one.
    #[must_use]
    pub fn peek_link(&self, id: &InstanceId) -> Option<Link> {
        let shared = self.lock();
        let instance = shared.world.instances.get(id)?;
        instance.link.as_ref().map(|l| Link {
            instance_id: id.clone(),
            vpc_id: l.vpc_id.clone(),
            groups: l.groups.clone(),
        })
    }

    /// A VPC and its ClassicLink flag.
    #[must_use]
    pub fn peek_vpc(&self, id: &VpcId) -> Option<Vpc> {
        self.lock().world.vpcs.get(id).map(state::VpcRec::to_model)
    }

    /// The id of the group named `name` in `vpc_id` (Classic when `None`).
    #[must_use]
    pub fn group_id(&self, vpc_id: Option<&VpcId>, name: &str) -> Option<GroupId> {
        self.lock().world.group_id_by_name(vpc_id, name).cloned()
    }

    /// The `default` group of a VPC, or of EC2-Classic when `vpc_id` is `None`.
    #[must_use]
    pub fn default_group(&self, vpc_id: Option<&VpcId>) -> Option<GroupId> {
        let shared = self.lock();
        match vpc_id {
            Some(vpc) => shared.world.vpcs.get(vpc).map(|v| v.default_group.clone()),
            None => Some(shared.world.classic_default().clone()),
        }
    }

    /// A managed prefix list as it is now, even inside its consistency window.
    #[must_use]
    pub fn peek_prefix_list(&self, id: &PrefixListId) -> Option<PrefixList> {
        let shared = self.lock();
        shared.world.prefix_lists.get(id).map(|l| l.to_model(&shared.world.account_id))
    }

    /// The current entries of a managed prefix list, in CIDR order.
    #[must_use]
    pub fn peek_prefix_list_entries(&self, id: &PrefixListId) -> Option<Vec<PrefixListEntry>> {
        let shared = self.lock();
        let list = shared.world.prefix_lists.get(id)?;
        Some(list.entries().iter().map(|(cidr, d)| PrefixListEntry { cidr: *cidr, description: d.clone() }).collect())
    }

    /// The VPC whose `Name` tag is `name` (estate VPCs carry their estate name).
    #[must_use]
    pub fn vpc_id(&self, name: &str) -> Option<VpcId> {
        self.lock().world.vpc_by_name(name).cloned()
    }

    /// Every VPC id, in order.
    #[must_use]
    pub fn vpc_ids(&self) -> Vec<VpcId> {
        self.lock().world.vpcs.keys().cloned().collect()
    }

    /// How big the world is.
    #[must_use]
    pub fn stats(&self) -> WorldStats {
        let shared = self.lock();
        let world = &shared.world;
        WorldStats {
            vpcs: world.vpcs.len(),
            groups: world.groups.len(),
            grants: world.groups.values().map(|g| g.ingress.len()).sum(),
            instances: world.instances.len(),
            links: world.linked.len(),
        }
    }

    // ----- world building and EC2-shaped actions (each one request) --------------

    /// `CreateVpc` (and `EnableVpcClassicLink` when asked), with its `default` group.
    ///
    /// # Errors
    /// `InvalidVpc.Range`, `VpcCidrConflict`, throttling and injected faults.
    pub async fn create_vpc(&self, request: &NewVpc) -> Result<VpcId, Ec2Error> {
        let spec = VpcSpec {
            id: None,
            cidr: request.cidr_block,
            classic_link: request.classic_link,
            tags: request.name.iter().map(|n| ("Name".to_owned(), n.clone())).collect(),
        };
        let enable = request.classic_link;
        self.write(
            Operation::CreateVpc,
            |world, now| world.create_vpc(now, spec),
            |id, world| {
                let cidr = world.vpcs.get(id).map(|v| v.cidr.to_string()).unwrap_or_default();
                let mut out = vec![documents::create_vpc(&cidr, id)];
                if enable {
                    out.push(documents::enable_classic_link(id));
                }
                out
            },
        )
        .await
    }

    /// `CreateSecurityGroup` for a Classic or VPC group, with tags.
    ///
    /// # Errors
    /// `InvalidGroup.Duplicate`, `InvalidGroup.Reserved`, `InvalidParameterValue`
    /// (name, description, tags), `InvalidVpcID.NotFound`, throttling, faults.
    pub async fn create_group(&self, request: &NewGroup) -> Result<GroupId, Ec2Error> {
        let spec = GroupSpec {
            id: None,
            vpc_id: request.vpc_id.clone(),
            name: request.name.clone(),
            description: request.description.clone(),
            tags: request.tags.clone(),
        };
        self.write(
            Operation::CreateSecurityGroup,
            |world, now| world.create_group(now, spec),
            |id, _| vec![documents::create_group(&request.name, &request.description, request.vpc_id.as_ref(), id)],
        )
        .await
    }

    /// `AuthorizeSecurityGroupIngress` with EC2-shaped permissions; Classic
    /// source groups may be named by `GroupName`.
    ///
    /// # Errors
    /// As [`Ec2::authorize_ingress`](crate::ec2::Ec2::authorize_ingress), plus
    /// `InvalidPermission.Malformed` for bad CIDRs.
    pub async fn authorize_permissions(
        &self,
        group_id: &GroupId,
        permissions: &[IpPermission],
    ) -> Result<(), Ec2Error> {
        let op = Operation::AuthorizeSecurityGroupIngress;
        self.write(
            op,
            |world, now| {
                let grants = permissions::permissions_to_grants(permissions, |name| classic_group(world, name))?;
                world.authorize(now, group_id, &grants)
            },
            |(), _| vec![documents::ingress(op.as_str(), group_id, permissions)],
        )
        .await
    }

    /// `RevokeSecurityGroupIngress` with EC2-shaped permissions. Returns the
    /// permissions that were not found (`UnknownIpPermissions`; only ever
    /// non-empty for Classic groups — a VPC group fails instead).
    ///
    /// # Errors
    /// `InvalidPermission.NotFound` (VPC groups), `InvalidGroup.NotFound`, …
    pub async fn revoke_permissions(
        &self,
        group_id: &GroupId,
        permissions: &[IpPermission],
    ) -> Result<Vec<IpPermission>, Ec2Error> {
        let op = Operation::RevokeSecurityGroupIngress;
        self.write(
            op,
            |world, now| {
                let grants = permissions::permissions_to_grants(permissions, |name| classic_group(world, name))?;
                let unknown = world.revoke(now, group_id, &grants)?;
                Ok(IpPermission::group_grants(&unknown, &world.account_id))
            },
            |_, _| vec![documents::ingress(op.as_str(), group_id, permissions)],
        )
        .await
    }

    /// `AuthorizeSecurityGroupEgress` with EC2-shaped permissions (VPC groups
    /// only: a Classic group answers `InvalidParameterValue`).
    ///
    /// # Errors
    /// As [`Ec2::authorize_egress`](crate::ec2::Ec2::authorize_egress).
    pub async fn authorize_egress_permissions(
        &self,
        group_id: &GroupId,
        permissions: &[IpPermission],
    ) -> Result<(), Ec2Error> {
        let op = Operation::AuthorizeSecurityGroupEgress;
        self.write(
            op,
            |world, now| {
                let grants = permissions::permissions_to_grants(permissions, |name| classic_group(world, name))?;
                world.authorize_rules(now, Direction::Egress, group_id, &grants)
            },
            |(), _| vec![documents::ingress(op.as_str(), group_id, permissions)],
        )
        .await
    }

    /// `RevokeSecurityGroupEgress` with EC2-shaped permissions: every rule
    /// must exist (`InvalidPermission.NotFound`).
    ///
    /// # Errors
    /// As [`Ec2::revoke_egress`](crate::ec2::Ec2::revoke_egress).
    pub async fn revoke_egress_permissions(
        &self,
        group_id: &GroupId,
        permissions: &[IpPermission],
    ) -> Result<(), Ec2Error> {
        let op = Operation::RevokeSecurityGroupEgress;
        self.write(
            op,
            |world, now| {
                let grants = permissions::permissions_to_grants(permissions, |name| classic_group(world, name))?;
                world.revoke_rules(now, Direction::Egress, group_id, &grants).map(drop)
            },
            |(), _| vec![documents::ingress(op.as_str(), group_id, permissions)],
        )
        .await
    }

    /// `UpdateSecurityGroupRuleDescriptionsIngress` with EC2-shaped permissions.
    ///
    /// # Errors
    /// `InvalidPermission.NotFound` when any rule does not exist.
    pub async fn update_permission_descriptions(
        &self,
        group_id: &GroupId,
        permissions: &[IpPermission],
    ) -> Result<(), Ec2Error> {
        let op = Operation::UpdateSecurityGroupRuleDescriptionsIngress;
        self.write(
            op,
            |world, now| {
                let grants = permissions::permissions_to_grants(permissions, |name| classic_group(world, name))?;
                world.update_descriptions(now, group_id, &grants)
            },
            |(), _| vec![documents::ingress(op.as_str(), group_id, permissions)],
        )
        .await
    }

    /// `CreateTags` on several groups at once.
    ///
    /// # Errors
    /// `InvalidGroup.NotFound`, `InvalidParameterValue`, `TagLimitExceeded`.
    pub async fn tag_groups(&self, group_ids: &[GroupId], tags: &BTreeMap<String, String>) -> Result<(), Ec2Error> {
        self.write(
            Operation::CreateTags,
            |world, now| world.create_tags(now, group_ids, tags),
            |(), _| {
                vec![documents::tags("CreateTags", group_ids, tags.iter().map(|(k, v)| (k.as_str(), Some(v.as_str()))))]
            },
        )
        .await
    }

    /// `DeleteTags` on several groups: a key with a value deletes only a
    /// matching tag; no keys deletes all tags.
    ///
    /// # Errors
    /// `InvalidGroup.NotFound`.
    pub async fn untag_groups(&self, group_ids: &[GroupId], keys: &[(String, Option<String>)]) -> Result<(), Ec2Error> {
        self.write(
            Operation::DeleteTags,
            |world, now| world.delete_tags(now, group_ids, keys),
            |(), _| {
                vec![documents::tags("DeleteTags", group_ids, keys.iter().map(|(k, v)| (k.as_str(), v.as_deref())))]
            },
        )
        .await
    }

    /// `RunInstances`.
    ///
    /// # Errors
    /// `InvalidGroup.NotFound` (missing or other-network groups),
    /// `InvalidVpcID.NotFound`, `SecurityGroupsPerInstanceLimitExceeded`,
    /// `InvalidParameterValue` (count 0).
    pub async fn run_instances(&self, request: &RunInstances) -> Result<Vec<InstanceId>, Ec2Error> {
        self.write(
            Operation::RunInstances,
            |world, now| {
                let spec = RunSpec {
                    id: None,
                    vpc_id: request.vpc_id.clone(),
                    groups: request.groups.clone(),
                    count: request.count,
                    state: if request.pending_for.is_some() { InstanceState::Pending } else { InstanceState::Running },
                    running_at: request.pending_for.map(|d| now + d),
                };
                world.run_instances(now, spec)
            },
            |ids, _| documents::run_instances(&request.groups, request.count, ids, request.pending_for),
        )
        .await
    }

    /// `StopInstances`: stopped at once; ClassicLink links are removed.
    ///
    /// # Errors
    /// `InvalidInstanceID.NotFound`, `IncorrectInstanceState` (terminated).
    pub async fn stop_instances(&self, ids: &[InstanceId]) -> Result<Vec<StateChange>, Ec2Error> {
        self.write(
            Operation::StopInstances,
            |world, now| world.stop_instances(now, ids),
            |changes, _| documents::state_changes("StopInstances", changes),
        )
        .await
    }

    /// `StartInstances`: running at once (and unlinked).
    ///
    /// # Errors
    /// `InvalidInstanceID.NotFound`, `IncorrectInstanceState` (terminated).
    pub async fn start_instances(&self, ids: &[InstanceId]) -> Result<Vec<StateChange>, Ec2Error> {
        self.write(
            Operation::StartInstances,
            |world, now| world.start_instances(now, ids),
            |changes, _| documents::state_changes("StartInstances", changes),
        )
        .await
    }

    /// `TerminateInstances`: terminated at once; links are removed.
    ///
    /// # Errors
    /// `InvalidInstanceID.NotFound`.
    pub async fn terminate_instances(&self, ids: &[InstanceId]) -> Result<Vec<StateChange>, Ec2Error> {
        self.write(
            Operation::TerminateInstances,
            |world, now| world.terminate_instances(now, ids),
            |changes, _| documents::state_changes("TerminateInstances", changes),
        )
        .await
    }

    // ----- describe pages (each page one request) ------------------------------

    /// One page of `DescribeSecurityGroups`: `ids` (`GroupId.N`) must all
    /// exist; `MaxResults` 5–1000.
    ///
    /// # Errors
    /// `InvalidGroup.NotFound`, `InvalidParameterValue`, `InvalidPaginationToken`.
    pub async fn describe_security_groups_page(
        &self,
        ids: &[GroupId],
        filter: &GroupFilter,
        page: &PageRequest,
    ) -> Result<Page<SecurityGroup>, Ec2Error> {
        self.request(Operation::DescribeSecurityGroups, |world, now| world.groups_page(now, ids, filter, page)).await
    }

    /// [`Self::describe_security_groups_page`] with EC2's generic filters
    /// (parsed inside the request, so a bad filter is a counted failure).
    ///
    /// # Errors
    /// As the typed page, plus `InvalidParameterValue` for unknown filters.
    pub async fn describe_security_groups_filtered(
        &self,
        ids: &[GroupId],
        filters: &[Filter],
        page: &PageRequest,
    ) -> Result<Page<SecurityGroup>, Ec2Error> {
        self.request(Operation::DescribeSecurityGroups, |world, now| {
            world.groups_page(now, ids, &filters::group_filter(filters)?, page)
        })
        .await
    }

    /// One page of `DescribeInstances`: `ids` must all exist and cannot be
    /// combined with `MaxResults` (5–1000).
    ///
    /// # Errors
    /// `InvalidInstanceID.NotFound`, `InvalidParameterCombination`,
    /// `InvalidParameterValue`, `InvalidPaginationToken`.
    pub async fn describe_instances_page(
        &self,
        ids: &[InstanceId],
        filter: &InstanceFilter,
        page: &PageRequest,
    ) -> Result<Page<Instance>, Ec2Error> {
        self.request(Operation::DescribeInstances, |world, now| world.instances_page(now, ids, filter, page)).await
    }

    /// [`Self::describe_instances_page`] with EC2's generic filters.
    ///
    /// # Errors
    /// As the typed page, plus `InvalidParameterValue` for unknown filters.
    pub async fn describe_instances_filtered(
        &self,
        ids: &[InstanceId],
        filters: &[Filter],
        page: &PageRequest,
    ) -> Result<Page<Instance>, Ec2Error> {
        self.request(Operation::DescribeInstances, |world, now| {
            world.instances_page(now, ids, &filters::instance_filter(filters)?, page)
        })
        .await
    }

    /// One page of `DescribeClassicLinkInstances`: `ids` must exist and
    /// cannot be combined with `MaxResults` (at least 5; above 1000 is 1000).
    ///
    /// # Errors
    /// `InvalidInstanceID.NotFound`, `InvalidParameterCombination`,
    /// `InvalidParameterValue`, `InvalidPaginationToken`.
    pub async fn describe_classic_link_instances_page(
        &self,
        ids: &[InstanceId],
        filter: &LinkFilter,
        page: &PageRequest,
    ) -> Result<Page<Link>, Ec2Error> {
        self.request(Operation::DescribeClassicLinkInstances, |world, now| world.links_page(now, ids, filter, page))
            .await
    }

    /// [`Self::describe_classic_link_instances_page`] with EC2's generic filters.
    ///
    /// # Errors
    /// As the typed page, plus `InvalidParameterValue` for unknown filters.
    pub async fn describe_classic_link_instances_filtered(
        &self,
        ids: &[InstanceId],
        filters: &[Filter],
        page: &PageRequest,
    ) -> Result<Page<Link>, Ec2Error> {
        self.request(Operation::DescribeClassicLinkInstances, |world, now| {
            world.links_page(now, ids, &filters::link_filter(filters)?, page)
        })
        .await
    }

    /// One page of `DescribeVpcs`: `ids` must all exist; `MaxResults` 5–1000.
    ///
    /// # Errors
    /// `InvalidVpcID.NotFound`, `InvalidParameterValue`, `InvalidPaginationToken`.
    pub async fn describe_vpcs_page(&self, ids: &[VpcId], page: &PageRequest) -> Result<Page<Vpc>, Ec2Error> {
        self.request(Operation::DescribeVpcs, |world, _| world.vpcs_page(ids, page)).await
    }

    /// `DescribeVpcClassicLink` as EC2 answers it: an unknown id fails the
    /// request (the port's version leaves unknown VPCs out instead).
    ///
    /// # Errors
    /// `InvalidVpcID.NotFound`.
    pub async fn describe_vpc_classic_link_strict(&self, ids: &[VpcId]) -> Result<Vec<Vpc>, Ec2Error> {
        self.request(Operation::DescribeVpcClassicLink, |world, _| world.vpc_classic_link(ids, false)).await
    }
}

impl Emulator {
    // ----- managed prefix lists and network interfaces (each one request) ------

    /// `CreateManagedPrefixList` as the Query API carries it.
    pub(crate) async fn create_managed_prefix_list(&self, spec: CreatePrefixListSpec) -> Result<PrefixList, Ec2Error> {
        self.port_write(
            Operation::CreateManagedPrefixList,
            |world, now| world.create_prefix_list(now, spec),
            |_, _| Vec::new(),
        )
        .await
    }

    /// `ModifyManagedPrefixList` as the Query API carries it.
    pub(crate) async fn modify_managed_prefix_list(
        &self,
        id: &PrefixListId,
        spec: ModifyPrefixListSpec,
    ) -> Result<PrefixList, Ec2Error> {
        self.port_write(
            Operation::ModifyManagedPrefixList,
            |world, now| world.modify_prefix_list(now, id, spec),
            |_, _| Vec::new(),
        )
        .await
    }

    /// `DeleteManagedPrefixList`: the list as the answer shows it.
    ///
    /// # Errors
    /// `InvalidPrefixListID.NotFound`, throttling, faults.
    pub async fn delete_managed_prefix_list(&self, id: &PrefixListId) -> Result<PrefixList, Ec2Error> {
        self.port_write(
            Operation::DeleteManagedPrefixList,
            |world, now| world.delete_prefix_list(now, id),
            |_, _| Vec::new(),
        )
        .await
    }

    /// One page of `DescribeManagedPrefixLists` with EC2's generic filters:
    /// `ids` (`PrefixListId.N`) must all exist; `MaxResults` 1–100.
    ///
    /// # Errors
    /// `InvalidPrefixListID.NotFound`, `InvalidParameterValue`, `InvalidPaginationToken`.
    pub async fn describe_managed_prefix_lists_filtered(
        &self,
        ids: &[PrefixListId],
        filters: &[Filter],
        page: &PageRequest,
    ) -> Result<Page<PrefixList>, Ec2Error> {
        self.request(Operation::DescribeManagedPrefixLists, |world, now| {
            world.prefix_lists_page(now, ids, &filters::prefix_list_filter(filters)?, page)
        })
        .await
    }

    /// One page of `GetManagedPrefixListEntries` (`TargetVersion` optional;
    /// `MaxResults` 1–100).
    ///
    /// # Errors
    /// `InvalidPrefixListID.NotFound`, `InvalidParameterValue`, `InvalidPaginationToken`.
    pub async fn get_managed_prefix_list_entries(
        &self,
        id: &PrefixListId,
        target_version: Option<i64>,
        page: &PageRequest,
    ) -> Result<Page<PrefixListEntry>, Ec2Error> {
        self.request(Operation::GetManagedPrefixListEntries, |world, now| {
            world.prefix_list_entries_page(now, id, target_version, page)
        })
        .await
    }

    /// One page of `DescribeNetworkInterfaces` with EC2's generic filters
    /// (`MaxResults` 5–1000).
    ///
    /// # Errors
    /// `InvalidParameterValue`, `InvalidPaginationToken`.
    pub async fn describe_network_interfaces_filtered(
        &self,
        filters: &[Filter],
        page: &PageRequest,
    ) -> Result<Page<NetworkInterface>, Ec2Error> {
        self.request(Operation::DescribeNetworkInterfaces, |world, now| {
            world.interfaces_page(now, &filters::interface_filter(filters)?, page)
        })
        .await
    }
}

/// Resolves a Classic group named in a permission (`GroupName`).
fn classic_group(world: &World, name: &str) -> Result<GroupId, Fail> {
    world
        .group_id_by_name(None, name)
        .cloned()
        .ok_or_else(|| Fail::new(codes::GROUP_NOT_FOUND, format!("The security group '{name}' does not exist")))
}
