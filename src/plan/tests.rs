//! Planner unit tests, one per rule of docs/semantics.md, named after the rule.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};
use strum::VariantArray as _;

use super::*;
use crate::config::{Config, MirrorConfig, Mode, SourceRef};
use crate::model::{
    DEFAULT_DISCOVERY_TAG, Grant, GroupId, Instance, InstanceId, InstanceState, Link, ORPHANED_SINCE_TAG, OWNER_TAG,
    OWNERSHIP_TAG, Peer, Ports, Protocol, SHARD_TAG, SecurityGroup, Snapshot, SnapshotPart, Vpc, VpcId, format_time,
    shard_name,
};

const VPC: &str = "vpc-9f2";
const VPC2: &str = "vpc-777";

fn sg(id: &str) -> GroupId {
    GroupId::try_new(id).unwrap()
}
fn vpc(id: &str) -> VpcId {
    VpcId::try_new(id).unwrap()
}
fn inst(id: &str) -> InstanceId {
    InstanceId::try_new(id).unwrap()
}
fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn tcp(port: u16, cidr: &str) -> Grant {
    Grant::new(Protocol::Tcp, Ports::Range { from: port, to: port }, Peer::Ipv4(cidr.parse().unwrap()), None)
}
fn tcp_desc(port: u16, cidr: &str, description: &str) -> Grant {
    Grant { description: Some(description.into()), ..tcp(port, cidr) }
}
fn from_group(port: u16, group: &str) -> Grant {
    Grant::new(
        Protocol::Tcp,
        Ports::Range { from: port, to: port },
        Peer::Group { group: sg(group), owner: None },
        None,
    )
}
fn from_account(port: u16, group: &str, owner: &str) -> Grant {
    Grant::new(
        Protocol::Tcp,
        Ports::Range { from: port, to: port },
        Peer::Group { group: sg(group), owner: Some(owner.into()) },
        None,
    )
}

/// EC2's default egress rule: all traffic to 0.0.0.0/0.
fn all_out() -> Grant {
    Grant::new(Protocol::All, Ports::None, Peer::Ipv4("0.0.0.0/0".parse().unwrap()), None)
}
fn tcp6(port: u16, cidr: &str) -> Grant {
    Grant::new(Protocol::Tcp, Ports::Range { from: port, to: port }, Peer::Ipv6(cidr.parse().unwrap()), None)
}
fn tcp_list(port: u16, list: &str) -> Grant {
    Grant::new(
        Protocol::Tcp,
        Ports::Range { from: port, to: port },
        Peer::PrefixList(crate::model::PrefixListId::try_new(list).unwrap()),
        None,
    )
}

/// A small estate builder.
struct World {
    snap: Snapshot,
    config: Config,
}

impl World {
    fn new() -> Self {
        let mut snap = Snapshot::default();
        for id in [VPC, VPC2] {
            snap.vpcs.insert(vpc(id), Vpc { id: vpc(id), classic_link_enabled: true });
        }
        let mut config = Config::with_region("us-east-1");
        config.safety.orphan_grace = Duration::from_secs(600);
        Self { snap, config }
    }

    fn classic(mut self, id: &str, name: &str, ingress: Vec<Grant>) -> Self {
        self.snap.source_groups.insert(
            sg(id),
            SecurityGroup {
                id: sg(id),
                name: name.into(),
                description: format!("{name} tier"),
                vpc_id: None,
                owner_id: "111122223333".into(),
                tags: BTreeMap::new(),
                ingress,
                egress: Vec::new(),
            },
        );
        self
    }

    fn tag_source(mut self, id: &str, key: &str, value: &str) -> Self {
        self.snap.source_groups.get_mut(&sg(id)).unwrap().tags.insert(key.into(), value.into());
        self
    }

    fn vpc_group(mut self, id: &str, name: &str, in_vpc: &str, mirror_of: Option<&str>, ingress: Vec<Grant>) -> Self {
        let mut tags = BTreeMap::new();
        if let Some(source) = mirror_of {
            tags.insert(OWNERSHIP_TAG.to_owned(), source.to_owned());
            // This deployment's (`daemon.owner` is "default" unless a test
            // says otherwise).
            tags.insert(OWNER_TAG.to_owned(), "default".to_owned());
        }
        self.snap.vpc_groups.insert(
            sg(id),
            SecurityGroup {
                id: sg(id),
                name: name.into(),
                description: String::new(),
                vpc_id: Some(vpc(in_vpc)),
                owner_id: "111122223333".into(),
                tags,
                ingress,
                // EC2 gives every VPC group this rule.
                egress: vec![all_out()],
            },
        );
        self
    }

    /// Replaces the egress rules of the VPC group `id` (source or not).
    fn egress(mut self, id: &str, egress: Vec<Grant>) -> Self {
        for groups in [&mut self.snap.vpc_groups, &mut self.snap.source_groups] {
            if let Some(group) = groups.get_mut(&sg(id)) {
                group.egress.clone_from(&egress);
            }
        }
        self
    }

    /// Sets the owner tag of the VPC group `id` (`None`: removes it).
    fn owner(mut self, id: &str, owner: Option<&str>) -> Self {
        let tags = &mut self.snap.vpc_groups.get_mut(&sg(id)).unwrap().tags;
        match owner {
            Some(owner) => tags.insert(OWNER_TAG.to_owned(), owner.to_owned()),
            None => tags.remove(OWNER_TAG),
        };
        self
    }

    fn mirror(self, id: &str, name: &str, source: &str, ingress: Vec<Grant>) -> Self {
        self.vpc_group(id, name, VPC, Some(source), ingress)
    }

    fn map(mut self, source: &str, to: &str) -> Self {
        let source =
            if source.starts_with("sg-") { SourceRef::Id(sg(source)) } else { SourceRef::Name(source.to_owned()) };
        self.config.mirrors.push(MirrorConfig::new(source, vpc(to)));
        self
    }

    fn with_last(mut self, f: impl FnOnce(&mut MirrorConfig)) -> Self {
        f(self.config.mirrors.last_mut().unwrap());
        self
    }

    fn instance(mut self, id: &str, state: InstanceState, groups: &[&str]) -> Self {
        self.snap.instances.insert(
            inst(id),
            Instance {
                id: inst(id),
                state,
                vpc_id: None,
                groups: groups.iter().map(|g| sg(g)).collect(),
                private_ip: None,
            },
        );
        self
    }

    fn link(mut self, id: &str, to: &str, groups: &[&str]) -> Self {
        self.snap.links.insert(
            inst(id),
            Link { instance_id: inst(id), vpc_id: vpc(to), groups: groups.iter().map(|g| sg(g)).collect() },
        );
        self
    }

    /// Puts an `orphanedSince` tag with this value on a VPC group.
    fn orphaned_since(mut self, id: &str, value: &str) -> Self {
        self.snap.vpc_groups.get_mut(&sg(id)).unwrap().tags.insert(ORPHANED_SINCE_TAG.to_owned(), value.to_owned());
        self
    }

    /// What executing the plan's orphan marks and unmarks does to the estate.
    fn apply_marks(&mut self, plan: &Plan) {
        for planned in plan.executable() {
            match &planned.action {
                Action::MarkOrphan { group, since, .. } => {
                    let tags = &mut self.snap.vpc_groups.get_mut(group).unwrap().tags;
                    tags.insert(ORPHANED_SINCE_TAG.to_owned(), since.clone());
                }
                Action::UnmarkOrphan { group, .. } => {
                    self.snap.vpc_groups.get_mut(group).unwrap().tags.remove(ORPHANED_SINCE_TAG);
                }
                _ => {}
            }
        }
    }

    /// The first pass at `t0()`, with the orphan marks it plans written as
    /// the executor would: the memory it leaves.
    fn first_pass(&mut self) -> Memory {
        let (plan, memory) = self.plan_with(&Memory::default(), t0());
        self.apply_marks(&plan);
        memory
    }

    fn plan(&self) -> Plan {
        self.plan_with(&Memory::default(), t0()).0
    }

    fn plan_with(&self, memory: &Memory, now: SystemTime) -> (Plan, Memory) {
        plan(&self.config, &self.snap, memory, now)
    }
}

fn kinds(plan: &Plan) -> Vec<ActionKind> {
    plan.actions.iter().map(|a| a.action.kind()).collect()
}

fn warnings_of(plan: &Plan, kind: WarningKind) -> Vec<&Warning> {
    plan.warnings.iter().filter(|w| w.kind == kind).collect()
}

fn authorized(plan: &Plan) -> Vec<Grant<GroupRef>> {
    plan.actions
        .iter()
        .filter_map(|a| match &a.action {
            Action::Authorize { grants, .. } => Some(grants.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn revoked(plan: &Plan) -> Vec<Grant> {
    plan.actions
        .iter()
        .filter_map(|a| match &a.action {
            Action::Revoke { grants, .. } => Some(grants.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn existing(grant: Grant) -> Grant<GroupRef> {
    grant.map_group(GroupRef::Existing)
}

// ----- which groups are managed (docs/semantics.md) ------------------------

#[test]
fn config_entry_by_id_makes_the_group_managed_and_creates_its_mirror() {
    let world = World::new().classic("sg-0a1", "web", vec![tcp(443, "203.0.113.0/24")]).map("sg-0a1", VPC);
    let plan = world.plan();
    assert_eq!(kinds(&plan), vec![ActionKind::CreateMirror, ActionKind::Authorize]);
    assert_eq!(plan.actions[1].depends_on, vec![ActionId(0)]);
    assert_eq!(plan.pairs.len(), 1);
    assert_eq!(plan.pairs[0].mirror, Some(GroupRef::New { source: sg("sg-0a1"), vpc: vpc(VPC), shard: 0 }));
}

#[test]
fn config_entry_by_name_resolves_among_classic_groups() {
    let world = World::new().classic("sg-0a1", "web", vec![]).map("web", VPC);
    let plan = world.plan();
    assert_eq!(plan.pairs[0].key.source, sg("sg-0a1"));
}

#[test]
fn discovery_tag_makes_a_classic_group_managed() {
    let world = World::new().classic("sg-0a1", "web", vec![]).tag_source("sg-0a1", DEFAULT_DISCOVERY_TAG, VPC);
    let plan = world.plan();
    assert_eq!(plan.pairs[0].origin, Origin::Tag);
    assert_eq!(kinds(&plan), vec![ActionKind::CreateMirror]);
}

#[test]
fn discovery_disabled_ignores_the_tag() {
    let mut world = World::new().classic("sg-0a1", "web", vec![]).tag_source("sg-0a1", DEFAULT_DISCOVERY_TAG, VPC);
    world.config.discovery.tag_key = None;
    assert!(world.plan().pairs.is_empty());
}

#[test]
fn config_entry_wins_over_the_discovery_tag_and_the_tag_is_reported() {
    let world = World::new()
        .classic("sg-0a1", "web", vec![])
        .tag_source("sg-0a1", DEFAULT_DISCOVERY_TAG, VPC2)
        .map("sg-0a1", VPC);
    let plan = world.plan();
    assert_eq!(plan.pairs.len(), 1);
    assert_eq!(plan.pairs[0].key.vpc, vpc(VPC));
    assert_eq!(warnings_of(&plan, WarningKind::DiscoveryTag).len(), 1);
}

#[test]
fn discovery_tag_with_a_bad_value_is_reported() {
    let world = World::new().classic("sg-0a1", "web", vec![]).tag_source("sg-0a1", DEFAULT_DISCOVERY_TAG, "prod");
    let plan = world.plan();
    assert!(plan.pairs.is_empty());
    assert!(warnings_of(&plan, WarningKind::DiscoveryTag)[0].message.contains("not a VPC id"));
}

#[test]
fn missing_source_is_reported_and_deletes_nothing_by_itself() {
    let world = World::new().map("sg-0ff", VPC).mirror("sg-77c", "gone", "sg-0ff", vec![]);
    let plan = world.plan();
    assert_eq!(warnings_of(&plan, WarningKind::MissingSource).len(), 1);
    assert_eq!(kinds(&plan), vec![ActionKind::MarkOrphan], "only marked: {:?}", plan.actions);
    assert_eq!(plan.orphans.len(), 1);
}

#[test]
fn the_same_source_named_twice_is_a_conflict_and_the_first_wins() {
    let world = World::new().classic("sg-0a1", "web", vec![]).map("sg-0a1", VPC).map("web", VPC2);
    let plan = world.plan();
    assert_eq!(plan.pairs.len(), 1);
    assert_eq!(plan.pairs[0].key.vpc, vpc(VPC));
    assert_eq!(warnings_of(&plan, WarningKind::ConflictDuplicateMapping).len(), 1);
}

#[test]
fn two_mappings_with_the_same_mirror_name_in_one_vpc_conflict() {
    let world = World::new()
        .classic("sg-0a1", "web", vec![])
        .classic("sg-0a2", "app", vec![])
        .map("sg-0a1", VPC)
        .map("sg-0a2", VPC)
        .with_last(|m| m.name = Some("web".into()));
    let plan = world.plan();
    assert_eq!(plan.pairs.len(), 1);
    assert_eq!(warnings_of(&plan, WarningKind::ConflictDuplicateName).len(), 1);
}

// ----- the mirror group (docs/semantics.md) --------------------------------

#[test]
fn new_mirror_carries_the_ownership_tag_at_creation_and_a_sanitised_description() {
    let mut world = World::new().classic("sg-0a1", "web", vec![]).map("sg-0a1", VPC);
    world.snap.source_groups.get_mut(&sg("sg-0a1")).unwrap().description = "Web tier — prod <main>".into();
    let plan = world.plan();
    let Action::CreateMirror { tags, description, name, .. } = &plan.actions[0].action else { panic!() };
    assert_eq!(tags.get(OWNERSHIP_TAG).map(String::as_str), Some("sg-0a1"));
    assert_eq!(tags.get(OWNER_TAG).map(String::as_str), Some("default"));
    assert_eq!(name, "web");
    assert_eq!(description, "Web tier _ prod _main_");
}

#[test]
fn empty_source_description_becomes_mirror_of_name() {
    let mut world = World::new().classic("sg-0a1", "web", vec![]).map("sg-0a1", VPC);
    world.snap.source_groups.get_mut(&sg("sg-0a1")).unwrap().description = String::new();
    let Action::CreateMirror { description, .. } = &world.plan().actions[0].action else { panic!() };
    assert_eq!(description, "Mirror of web");
}

#[test]
fn mapping_name_overrides_the_mirror_name() {
    let world = World::new()
        .classic("sg-0a1", "web", vec![])
        .map("sg-0a1", VPC)
        .with_last(|m| m.name = Some("web-classic".into()));
    let Action::CreateMirror { name, .. } = &world.plan().actions[0].action else { panic!() };
    assert_eq!(name, "web-classic");
}

#[test]
fn existing_tagged_mirror_is_reused_not_recreated() {
    let world = World::new().classic("sg-0a1", "web", vec![tcp(443, "0.0.0.0/0")]).map("sg-0a1", VPC).mirror(
        "sg-77c",
        "web",
        "sg-0a1",
        vec![tcp(443, "0.0.0.0/0")],
    );
    let plan = world.plan();
    assert!(plan.actions.is_empty());
    assert!(plan.pairs[0].in_sync());
}

#[test]
fn source_named_default_maps_onto_the_vpc_default_group_and_tags_it() {
    let world = World::new().classic("sg-0a0", "default", vec![tcp(22, "10.0.0.0/8")]).map("sg-0a0", VPC).vpc_group(
        "sg-d00",
        "default",
        VPC,
        None,
        vec![],
    );
    let plan = world.plan();
    assert_eq!(kinds(&plan), vec![ActionKind::TagGroup, ActionKind::Authorize]);
    let Action::TagGroup { group, reason, .. } = &plan.actions[0].action else { panic!() };
    assert_eq!((group, reason), (&sg("sg-d00"), &TagReason::Default));
    assert_eq!(plan.actions[1].depends_on, vec![ActionId(0)]);
}

#[test]
fn default_group_no_longer_managed_is_only_untagged_after_grace() {
    let mut world = World::new().vpc_group("sg-d00", "default", VPC, Some("sg-0a0"), vec![tcp(22, "10.0.0.0/8")]);
    let (first, memory) = world.plan_with(&Memory::default(), t0());
    assert_eq!(kinds(&first), vec![ActionKind::MarkOrphan]);
    world.apply_marks(&first);
    let (later, _) = world.plan_with(&memory, t0() + Duration::from_secs(601));
    assert_eq!(kinds(&later), vec![ActionKind::UntagGroup]);
    // Both of our tags go: a stale orphanedSince would start a later
    // orphaning's grace in the past.
    let Action::UntagGroup { keys, .. } = &later.actions[0].action else { unreachable!() };
    assert_eq!(keys, &[OWNERSHIP_TAG.to_owned(), OWNER_TAG.to_owned(), ORPHANED_SINCE_TAG.to_owned()]);
}

#[test]
fn same_name_group_that_is_not_ours_is_a_conflict_and_left_alone() {
    let world = World::new().classic("sg-0a1", "web", vec![tcp(443, "0.0.0.0/0")]).map("sg-0a1", VPC).vpc_group(
        "sg-abc",
        "web",
        VPC,
        None,
        vec![tcp(22, "0.0.0.0/0")],
    );
    let plan = world.plan();
    assert!(plan.actions.is_empty());
    assert_eq!(warnings_of(&plan, WarningKind::ConflictNameTaken).len(), 1);
    assert_eq!(plan.pairs[0].mirror, None);
}

#[test]
fn adopt_tags_the_same_name_group_and_manages_it() {
    let world = World::new()
        .classic("sg-0a1", "web", vec![tcp(443, "0.0.0.0/0")])
        .map("sg-0a1", VPC)
        .with_last(|m| m.adopt = true)
        .vpc_group("sg-abc", "web", VPC, None, vec![tcp(22, "0.0.0.0/0")]);
    let plan = world.plan();
    assert_eq!(kinds(&plan), vec![ActionKind::TagGroup, ActionKind::Authorize, ActionKind::Revoke]);
    assert!(plan.actions[1..].iter().all(|a| a.depends_on.contains(&ActionId(0))));
}

/// Moves a VPC group into the snapshot's sources, as observe lists a VPC
/// group a mapping names.
fn as_source(mut world: World, id: &str) -> World {
    let group = world.snap.vpc_groups.get(&sg(id)).unwrap().clone();
    world.snap.source_groups.insert(sg(id), group);
    world
}

#[test]
fn adopt_never_takes_over_a_group_that_is_itself_a_source() {
    let world = World::new()
        .vpc_group("sg-5a1", "web", VPC, None, vec![tcp(443, "10.0.0.0/8")])
        .map("sg-5a1", VPC2)
        .classic("sg-0a1", "web", vec![tcp(22, "10.0.0.0/8")])
        .map("sg-0a1", VPC)
        .with_last(|m| m.adopt = true);
    let plan = as_source(world, "sg-5a1").plan();
    // web (VPC) is mirrored into VPC2; the Classic web cannot take it over.
    assert_eq!(kinds(&plan), vec![ActionKind::CreateMirror, ActionKind::Authorize]);
    assert!(matches!(&plan.actions[0].action, Action::CreateMirror { vpc: v, .. } if v == &vpc(VPC2)));
    let conflicts = warnings_of(&plan, WarningKind::ConflictNameTaken);
    assert_eq!(conflicts.len(), 1);
    assert!(conflicts[0].message.contains("itself a source group"), "{}", conflicts[0].message);
}

#[test]
fn a_vpc_default_group_that_is_itself_a_source_is_never_tagged() {
    let world = World::new()
        .vpc_group("sg-d00", "default", VPC, None, vec![tcp(443, "10.0.0.0/8")])
        .map("sg-d00", VPC2)
        .classic("sg-0a0", "default", vec![tcp(22, "10.0.0.0/8")])
        .map("sg-0a0", VPC)
        .vpc_group("sg-d02", "default", VPC2, None, vec![]);
    let plan = as_source(world, "sg-d00").plan();
    // Only VPC's default group mirrored into VPC2's default group.
    assert!(
        plan.actions.iter().all(|a| !matches!(&a.action, Action::TagGroup { group, .. } if group == &sg("sg-d00")))
    );
    assert_eq!(warnings_of(&plan, WarningKind::ConflictNameTaken).len(), 1);
}

#[test]
fn mirror_left_in_the_old_vpc_becomes_an_orphan_when_the_mapping_moves() {
    let world =
        World::new().classic("sg-0a1", "web", vec![]).map("sg-0a1", VPC2).mirror("sg-77c", "web", "sg-0a1", vec![]);
    let plan = world.plan();
    assert_eq!(kinds(&plan), vec![ActionKind::CreateMirror, ActionKind::MarkOrphan]);
    assert_eq!(plan.orphans[0].group, sg("sg-77c"));
}

#[test]
fn no_action_ever_targets_a_source_group() {
    let world = World::new()
        .classic("sg-0a1", "web", vec![from_group(80, "sg-0a2")])
        .classic("sg-0a2", "app", vec![from_group(80, "sg-0a1")])
        .map("sg-0a1", VPC)
        .map("sg-0a2", VPC)
        .instance("i-1", InstanceState::Running, &["sg-0a1"]);
    let text = serde_json::to_string(&world.plan().actions).unwrap();
    assert!(!text.contains("\"group\":\"sg-0a1\""));
    assert!(!text.contains("{\"existing\":\"sg-0a1\"}"));
}

// ----- ingress rules (docs/semantics.md) -----------------------------------

#[test]
fn reference_to_a_managed_group_in_the_same_vpc_becomes_a_reference_to_its_mirror() {
    let world = World::new()
        .classic("sg-0a1", "web", vec![from_group(8080, "sg-0a2")])
        .classic("sg-0a2", "app", vec![])
        .map("sg-0a1", VPC)
        .map("sg-0a2", VPC)
        .mirror("sg-77c", "web", "sg-0a1", vec![])
        .mirror("sg-77d", "app", "sg-0a2", vec![]);
    let plan = world.plan();
    assert_eq!(authorized(&plan), vec![existing(from_group(8080, "sg-77d"))]);
}

#[test]
fn reference_to_a_mirror_being_created_depends_on_its_create() {
    let world = World::new()
        .classic("sg-0a1", "web", vec![from_group(8080, "sg-0a2")])
        .classic("sg-0a2", "app", vec![])
        .map("sg-0a1", VPC)
        .map("sg-0a2", VPC)
        .mirror("sg-77c", "web", "sg-0a1", vec![]);
    let plan = world.plan();
    assert_eq!(kinds(&plan), vec![ActionKind::CreateMirror, ActionKind::Authorize]);
    assert_eq!(plan.actions[1].depends_on, vec![ActionId(0)]);
    let Action::Authorize { grants, .. } = &plan.actions[1].action else { panic!() };
    assert_eq!(
        grants[0].key.peer,
        Peer::Group { group: GroupRef::New { source: sg("sg-0a2"), vpc: vpc(VPC), shard: 0 }, owner: None }
    );
}

#[test]
fn self_reference_becomes_the_mirrors_self_reference() {
    let world = World::new().classic("sg-0a1", "web", vec![from_group(9000, "sg-0a1")]).map("sg-0a1", VPC).mirror(
        "sg-77c",
        "web",
        "sg-0a1",
        vec![],
    );
    assert_eq!(authorized(&world.plan()), vec![existing(from_group(9000, "sg-77c"))]);
}

#[test]
fn reference_to_an_unmanaged_group_is_dropped_and_reported() {
    let world = World::new()
        .classic("sg-0a1", "web", vec![from_group(80, "sg-0ff"), tcp(443, "0.0.0.0/0")])
        .classic("sg-0ff", "lb", vec![])
        .map("sg-0a1", VPC);
    let plan = world.plan();
    assert_eq!(authorized(&plan).len(), 1);
    let warning = &warnings_of(&plan, WarningKind::Unmirrorable)[0];
    assert_eq!(warning.reason, Some(Unmirrorable::NotManaged));
    assert_eq!(warning.message, "sg-0a1 rule tcp 80 from sg-0ff (lb) cannot be mirrored: not a managed group");
}

#[test]
fn reference_to_a_group_of_another_account_is_dropped_and_reported() {
    let world =
        World::new().classic("sg-0a1", "web", vec![from_account(80, "sg-843f59ed", "amazon-elb")]).map("sg-0a1", VPC);
    let plan = world.plan();
    assert!(authorized(&plan).is_empty());
    assert_eq!(warnings_of(&plan, WarningKind::Unmirrorable)[0].reason, Some(Unmirrorable::OtherAccount));
    assert!(warnings_of(&plan, WarningKind::Unmirrorable)[0].message.contains("account amazon-elb"));
}

#[test]
fn reference_to_a_group_mirrored_into_another_vpc_is_dropped_and_reported() {
    let world = World::new()
        .classic("sg-0a1", "web", vec![from_group(80, "sg-0a2")])
        .classic("sg-0a2", "app", vec![])
        .map("sg-0a1", VPC)
        .map("sg-0a2", VPC2);
    let plan = world.plan();
    assert!(authorized(&plan).is_empty());
    assert_eq!(warnings_of(&plan, WarningKind::Unmirrorable)[0].reason, Some(Unmirrorable::OtherVpc));
}

#[test]
fn vpc_side_grants_the_daemon_does_not_own_are_left_alone() {
    let ipv6 = Grant::new(
        Protocol::Tcp,
        Ports::Range { from: 443, to: 443 },
        Peer::Ipv6("2001:db8::/32".parse().unwrap()),
        None,
    );
    let prefix = Grant::new(
        Protocol::Tcp,
        Ports::Range { from: 443, to: 443 },
        Peer::PrefixList(crate::model::PrefixListId::try_new("pl-12ab").unwrap()),
        None,
    );
    let world = World::new()
        .classic("sg-0a1", "web", vec![])
        .map("sg-0a1", VPC)
        .vpc_group("sg-999", "ops", VPC, None, vec![])
        .mirror("sg-77c", "web", "sg-0a1", vec![ipv6, prefix, from_group(22, "sg-999"), tcp(80, "0.0.0.0/0")]);
    let plan = world.plan();
    assert_eq!(revoked(&plan), vec![tcp(80, "0.0.0.0/0")]);
}

#[test]
fn extra_owned_grants_are_revoked_after_missing_ones_are_authorized() {
    let world = World::new().classic("sg-0a1", "web", vec![tcp(443, "0.0.0.0/0")]).map("sg-0a1", VPC).mirror(
        "sg-77c",
        "web",
        "sg-0a1",
        vec![tcp(22, "198.51.100.7/32")],
    );
    let plan = world.plan();
    assert_eq!(kinds(&plan), vec![ActionKind::Authorize, ActionKind::Revoke]);
    assert_eq!(plan.actions[1].depends_on, vec![ActionId(0)], "make before break");
}

#[test]
fn changed_description_is_updated_in_place_not_revoked() {
    let world = World::new()
        .classic("sg-0a1", "web", vec![tcp_desc(443, "0.0.0.0/0", "new")])
        .map("sg-0a1", VPC)
        .mirror("sg-77c", "web", "sg-0a1", vec![tcp_desc(443, "0.0.0.0/0", "old")]);
    let plan = world.plan();
    assert_eq!(kinds(&plan), vec![ActionKind::UpdateDescriptions]);
    let Action::UpdateDescriptions { grants, previous, .. } = &plan.actions[0].action else { panic!() };
    assert_eq!(grants[0].description.as_deref(), Some("new"));
    assert_eq!(previous[0].as_deref(), Some("old"));
}

#[test]
fn cidrs_and_protocol_numbers_compare_in_canonical_form() {
    let source =
        Grant::from_ec2("6", Some(443), Some(443), Peer::Ipv4("10.1.2.3/8".parse().unwrap()), None, None).unwrap();
    let world = World::new().classic("sg-0a1", "web", vec![source]).map("sg-0a1", VPC).mirror(
        "sg-77c",
        "web",
        "sg-0a1",
        vec![tcp(443, "10.0.0.0/8")],
    );
    assert!(world.plan().actions.is_empty());
}

#[test]
fn all_grants_for_one_group_go_in_one_authorize_and_one_revoke() {
    let world = World::new()
        .classic("sg-0a1", "web", vec![tcp(1, "10.0.0.0/8"), tcp(2, "10.0.0.0/8"), tcp(3, "10.0.0.0/8")])
        .map("sg-0a1", VPC)
        .mirror("sg-77c", "web", "sg-0a1", vec![tcp(4, "10.0.0.0/8"), tcp(5, "10.0.0.0/8")]);
    let plan = world.plan();
    assert_eq!(kinds(&plan), vec![ActionKind::Authorize, ActionKind::Revoke]);
    assert_eq!(authorized(&plan).len(), 3);
    assert_eq!(revoked(&plan).len(), 2);
}

#[test]
fn at_the_quota_the_planner_revokes_first_only_as_much_as_needed() {
    let mut world = World::new()
        .classic("sg-0a1", "web", vec![tcp(1, "10.0.0.0/8"), tcp(2, "10.0.0.0/8"), tcp(3, "10.0.0.0/8")])
        .map("sg-0a1", VPC)
        .mirror("sg-77c", "web", "sg-0a1", vec![tcp(1, "10.0.0.0/8"), tcp(8, "10.0.0.0/8"), tcp(9, "10.0.0.0/8")]);
    world.config.limits.rules_per_group = 4;
    let plan = world.plan();
    // 3 now + 2 to add = 5 > 4: one revoke first, then authorize, then the rest.
    assert_eq!(kinds(&plan), vec![ActionKind::Revoke, ActionKind::Authorize, ActionKind::Revoke]);
    let Action::Revoke { grants, .. } = &plan.actions[0].action else { panic!() };
    assert_eq!(grants.len(), 1);
    assert_eq!(plan.actions[1].depends_on, vec![ActionId(0)]);
    assert_eq!(plan.actions[2].depends_on, vec![ActionId(1)]);
    assert!(warnings_of(&plan, WarningKind::QuotaExceeded).is_empty());
}

#[test]
fn desired_grants_beyond_the_quota_are_reported_and_nothing_desired_is_revoked() {
    let mut world = World::new()
        .classic("sg-0a1", "web", (1..=5).map(|p| tcp(p, "10.0.0.0/8")).collect())
        .map("sg-0a1", VPC)
        .mirror("sg-77c", "web", "sg-0a1", vec![tcp(1, "10.0.0.0/8"), tcp(2, "10.0.0.0/8")]);
    world.config.limits.rules_per_group = 3;
    // Report-only: overflow groups off.
    world.config.limits.overflow_groups = false;
    let plan = world.plan();
    assert_eq!(kinds(&plan), vec![ActionKind::Authorize]);
    assert_eq!(authorized(&plan).len(), 1);
    assert_eq!(warnings_of(&plan, WarningKind::QuotaExceeded).len(), 1);
}

// ----- overflow groups (docs/semantics.md, "Overflow groups") --------------

/// An overflow group `shard` of `source`, ours, named as it should be.
fn shard_group(world: World, id: &str, mirror_name: &str, source: &str, shard: u8, ingress: Vec<Grant>) -> World {
    let mut world = world.mirror(id, &shard_name(mirror_name, shard), source, ingress);
    world.snap.vpc_groups.get_mut(&sg(id)).unwrap().tags.insert(SHARD_TAG.to_owned(), shard.to_string());
    world
}

fn port_of(ports: &Ports) -> u16 {
    match ports {
        Ports::Range { from, .. } => *from,
        _ => 0,
    }
}

fn ports(range: std::ops::RangeInclusive<u16>) -> Vec<Grant> {
    range.map(|p| tcp(p, "10.0.0.0/8")).collect()
}

#[test]
fn grants_beyond_the_quota_go_to_an_overflow_group_created_with_its_tags_and_linked_with_the_mirror() {
    let mut world = World::new()
        .classic("sg-0a1", "web", ports(1..=5))
        .map("sg-0a1", VPC)
        .mirror("sg-77c", "web", "sg-0a1", ports(1..=2))
        .instance("i-0b3", InstanceState::Running, &["sg-0a1"])
        .link("i-0b3", VPC, &["sg-77c"]);
    world.config.limits.rules_per_group = 3;
    let plan = world.plan();
    assert!(warnings_of(&plan, WarningKind::QuotaExceeded).is_empty(), "{:?}", plan.warnings);
    let Action::CreateMirror { name, tags, shard, .. } = &plan.actions[0].action else { panic!("{plan:?}") };
    assert_eq!((name.as_str(), *shard), ("web-overflow-1", 1));
    assert_eq!(tags.get(SHARD_TAG).map(String::as_str), Some("1"));
    assert_eq!(tags.get(OWNERSHIP_TAG).map(String::as_str), Some("sg-0a1"));
    assert_eq!(tags.get(OWNER_TAG).map(String::as_str), Some("default"));
    let new_shard = GroupRef::New { source: sg("sg-0a1"), vpc: vpc(VPC), shard: 1 };
    let mut placed: BTreeMap<GroupRef, Vec<u16>> = BTreeMap::new();
    for planned in &plan.actions {
        if let Action::Authorize { group, grants } = &planned.action {
            placed.entry(group.clone()).or_default().extend(grants.iter().map(|g| port_of(&g.key.ports)));
        }
    }
    assert_eq!(placed[&GroupRef::Existing(sg("sg-77c"))], vec![3]);
    assert_eq!(placed[&new_shard], vec![4, 5]);
    assert!(revoked(&plan).is_empty());
    let relink = plan.actions.iter().find_map(|a| match &a.action {
        Action::Relink { groups, .. } => Some((groups.clone(), a.depends_on.clone())),
        _ => None,
    });
    let (groups, deps) = relink.expect("relinked with the overflow group");
    assert_eq!(groups, vec![GroupRef::Existing(sg("sg-77c")), new_shard.clone()]);
    assert!(deps.contains(&ActionId(0)), "the link waits for the create");
    assert_eq!(plan.pairs[0].shards.len(), 1);
    assert_eq!(plan.pairs[0].shards[0].rules, 2);
}

#[test]
fn a_converged_overflow_plans_nothing_and_a_reference_translates_to_the_mirror() {
    let mut world = World::new()
        .classic("sg-0a1", "web", ports(1..=5))
        .classic("sg-0a2", "app", vec![from_group(9, "sg-0a1")])
        .map("sg-0a1", VPC)
        .map("sg-0a2", VPC)
        .mirror("sg-77c", "web", "sg-0a1", ports(1..=3))
        .mirror("sg-77d", "app", "sg-0a2", vec![]);
    world = shard_group(world, "sg-88a", "web", "sg-0a1", 1, ports(4..=5));
    world = world.instance("i-0b3", InstanceState::Running, &["sg-0a1"]).link("i-0b3", VPC, &["sg-77c", "sg-88a"]);
    world.config.limits.rules_per_group = 3;
    let plan = world.plan();
    assert_eq!(kinds(&plan), vec![ActionKind::Authorize], "{plan:?}");
    assert_eq!(authorized(&plan)[0].key.peer, Peer::Group { group: GroupRef::Existing(sg("sg-77c")), owner: None });
    assert!(plan.orphans.is_empty());
}

#[test]
fn adding_one_rule_moves_no_grant_between_groups() {
    let mut world = World::new().classic("sg-0a1", "web", ports(1..=6)).map("sg-0a1", VPC).mirror(
        "sg-77c",
        "web",
        "sg-0a1",
        vec![tcp(1, "10.0.0.0/8"), tcp(3, "10.0.0.0/8"), tcp(6, "10.0.0.0/8")],
    );
    world = shard_group(world, "sg-88a", "web", "sg-0a1", 1, vec![tcp(2, "10.0.0.0/8"), tcp(4, "10.0.0.0/8")]);
    world.snap.source_groups.get_mut(&sg("sg-0a1")).unwrap().ingress.push(tcp(7, "10.0.0.0/8"));
    world.config.limits.rules_per_group = 3;
    let plan = world.plan();
    assert!(revoked(&plan).is_empty(), "{plan:?}");
    let added: Vec<u16> = authorized(&plan).iter().map(|g| port_of(&g.key.ports)).collect();
    assert_eq!(added, vec![5, 7]);
}

#[test]
fn an_overflow_group_no_longer_needed_is_emptied_after_its_grants_moved_then_orphaned() {
    let mut world = World::new().classic("sg-0a1", "web", ports(1..=3)).map("sg-0a1", VPC).mirror(
        "sg-77c",
        "web",
        "sg-0a1",
        ports(1..=2),
    );
    world = shard_group(world, "sg-88a", "web", "sg-0a1", 1, ports(3..=4));
    world = world.instance("i-0b3", InstanceState::Running, &["sg-0a1"]).link("i-0b3", VPC, &["sg-77c", "sg-88a"]);
    world.config.limits.rules_per_group = 3;
    let plan = world.plan();
    let authorize = plan.actions.iter().find(|a| a.action.kind() == ActionKind::Authorize).expect("moved");
    let Action::Authorize { group, grants } = &authorize.action else { unreachable!() };
    assert_eq!(group, &GroupRef::Existing(sg("sg-77c")));
    assert_eq!(grants.len(), 1);
    let revoke = plan
        .actions
        .iter()
        .find(|a| matches!(&a.action, Action::Revoke { group, .. } if *group == sg("sg-88a")))
        .expect("emptied");
    assert!(revoke.depends_on.contains(&authorize.id), "make before break");
    assert_eq!(plan.orphans.iter().map(|o| o.group.clone()).collect::<Vec<_>>(), vec![sg("sg-88a")]);
    // Within the grace its link stays; nothing is deleted.
    assert!(!plan.actions.iter().any(|a| matches!(a.action.kind(), ActionKind::Relink | ActionKind::DeleteMirror)));
}

#[test]
fn with_overflow_groups_off_an_existing_overflow_group_is_an_orphan() {
    let mut world = World::new().classic("sg-0a1", "web", ports(1..=2)).map("sg-0a1", VPC).mirror(
        "sg-77c",
        "web",
        "sg-0a1",
        ports(1..=2),
    );
    world = shard_group(world, "sg-88a", "web", "sg-0a1", 1, vec![]);
    world.config.limits.overflow_groups = false;
    let plan = world.plan();
    assert_eq!(plan.orphans.len(), 1);
    assert!(plan.pairs[0].shards.is_empty());
}

#[test]
fn a_member_that_would_need_more_than_five_groups_is_reported_and_not_linked() {
    let mut world = World::new();
    for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
        let source = format!("sg-0a{i}");
        world = world.classic(&source, name, ports(1..=2)).map(&source, VPC);
    }
    // Its mirror and two overflow groups, with three other mirrors: six groups.
    world.snap.source_groups.get_mut(&sg("sg-0a0")).unwrap().ingress = ports(1..=6);
    world.config.limits.rules_per_group = 2;
    world = world.instance("i-0b3", InstanceState::Running, &["sg-0a0", "sg-0a1", "sg-0a2", "sg-0a3"]);
    let plan = world.plan();
    assert_eq!(warnings_of(&plan, WarningKind::LinkLimit).len(), 1, "{:?}", plan.warnings);
    assert!(!plan.actions.iter().any(|a| a.action.kind() == ActionKind::Attach));
}

// ----- instances and ClassicLink (docs/semantics.md) -----------------------

fn linked_world() -> World {
    World::new()
        .classic("sg-0a1", "web", vec![])
        .classic("sg-0a2", "app", vec![])
        .map("sg-0a1", VPC)
        .map("sg-0a2", VPC)
        .mirror("sg-77c", "web", "sg-0a1", vec![])
        .mirror("sg-77d", "app", "sg-0a2", vec![])
}

#[test]
fn running_member_instance_is_linked_with_the_mirrors_of_all_its_managed_groups() {
    let world = linked_world().instance("i-0b3", InstanceState::Running, &["sg-0a1", "sg-0a2", "sg-0ff"]);
    let plan = world.plan();
    let Action::Attach { groups, vpc: to, .. } = &plan.actions[0].action else { panic!("{plan:?}") };
    assert_eq!(to, &vpc(VPC));
    assert_eq!(groups, &vec![GroupRef::Existing(sg("sg-77c")), GroupRef::Existing(sg("sg-77d"))]);
}

#[test]
fn attach_to_a_new_mirror_depends_on_its_create() {
    let world = World::new().classic("sg-0a1", "web", vec![]).map("sg-0a1", VPC).instance(
        "i-0b3",
        InstanceState::Running,
        &["sg-0a1"],
    );
    let plan = world.plan();
    assert_eq!(kinds(&plan), vec![ActionKind::CreateMirror, ActionKind::Attach]);
    assert_eq!(plan.actions[1].depends_on, vec![ActionId(0)]);
}

#[test]
fn a_wrong_link_set_is_fixed_by_a_relink() {
    let world =
        linked_world().instance("i-0b4", InstanceState::Running, &["sg-0a1"]).link("i-0b4", VPC, &["sg-77c", "sg-77d"]);
    let plan = world.plan();
    let Action::Relink { groups, from, .. } = &plan.actions[0].action else { panic!("{plan:?}") };
    assert_eq!(groups, &vec![GroupRef::Existing(sg("sg-77c"))]);
    assert_eq!(from.len(), 2);
}

#[test]
fn foreign_groups_in_an_existing_link_are_kept_in_the_new_set() {
    let world = linked_world()
        .vpc_group("sg-99e", "ops", VPC, None, vec![])
        .instance("i-0b4", InstanceState::Running, &["sg-0a1", "sg-0a2"])
        .link("i-0b4", VPC, &["sg-77c", "sg-99e"]);
    let plan = world.plan();
    let Action::Relink { groups, .. } = &plan.actions[0].action else { panic!("{plan:?}") };
    let expected: Vec<GroupRef> = ["sg-77c", "sg-77d", "sg-99e"].iter().map(|g| GroupRef::Existing(sg(g))).collect();
    assert_eq!(groups, &expected);
}

#[test]
fn instance_linked_by_someone_else_to_another_vpc_is_a_conflict_and_not_touched() {
    let world = linked_world().instance("i-0b4", InstanceState::Running, &["sg-0a1"]).link("i-0b4", VPC2, &["sg-5555"]);
    let plan = world.plan();
    assert!(plan.actions.is_empty());
    assert_eq!(warnings_of(&plan, WarningKind::ConflictForeignLink).len(), 1);
}

#[test]
fn instance_whose_groups_map_to_two_vpcs_is_a_conflict_and_not_touched() {
    let world = World::new()
        .classic("sg-0a1", "web", vec![])
        .classic("sg-0a2", "app", vec![])
        .map("sg-0a1", VPC)
        .map("sg-0a2", VPC2)
        .mirror("sg-77c", "web", "sg-0a1", vec![])
        .vpc_group("sg-88d", "app", VPC2, Some("sg-0a2"), vec![])
        .instance("i-0b5", InstanceState::Running, &["sg-0a1", "sg-0a2"]);
    let plan = world.plan();
    assert!(plan.actions.is_empty());
    assert_eq!(warnings_of(&plan, WarningKind::ConflictMultiVpc).len(), 1);
}

#[test]
fn more_than_five_groups_in_a_link_is_reported_and_not_attempted() {
    let mut world = World::new();
    let mut groups = Vec::new();
    for n in 1..=6 {
        let source = format!("sg-a{n}");
        world = world.classic(&source, &format!("g{n}"), vec![]).map(&source, VPC).mirror(
            &format!("sg-b{n}"),
            &format!("g{n}"),
            &source,
            vec![],
        );
        groups.push(source);
    }
    let refs: Vec<&str> = groups.iter().map(String::as_str).collect();
    let plan = world.instance("i-0b6", InstanceState::Running, &refs).plan();
    assert!(plan.actions.is_empty());
    assert_eq!(warnings_of(&plan, WarningKind::LinkLimit).len(), 1);
}

#[test]
fn instance_no_longer_entitled_is_detached() {
    let world = linked_world().link("i-0b7", VPC, &["sg-77c"]);
    let plan = world.plan();
    assert_eq!(kinds(&plan), vec![ActionKind::Detach]);
}

#[test]
fn instance_no_longer_entitled_keeps_its_foreign_groups_by_a_relink() {
    let world = linked_world().vpc_group("sg-99e", "ops", VPC, None, vec![]).link("i-0b7", VPC, &["sg-77c", "sg-99e"]);
    let plan = world.plan();
    let Action::Relink { groups, .. } = &plan.actions[0].action else { panic!("{plan:?}") };
    assert_eq!(groups, &vec![GroupRef::Existing(sg("sg-99e"))]);
}

#[test]
fn stopped_and_pending_instances_are_left_for_later_cycles() {
    let world = linked_world().instance("i-1", InstanceState::Stopped, &["sg-0a1"]).instance(
        "i-2",
        InstanceState::Pending,
        &["sg-0a1"],
    );
    assert!(world.plan().actions.is_empty());
}

#[test]
fn link_instances_false_does_not_link() {
    let world = World::new()
        .classic("sg-0a1", "web", vec![])
        .map("sg-0a1", VPC)
        .with_last(|m| m.link_instances = false)
        .mirror("sg-77c", "web", "sg-0a1", vec![])
        .instance("i-1", InstanceState::Running, &["sg-0a1"]);
    assert!(world.plan().actions.is_empty());
}

#[test]
fn vpc_without_classiclink_is_reported_and_its_instances_not_linked() {
    let mut world = linked_world().instance("i-1", InstanceState::Running, &["sg-0a1"]);
    world.snap.vpcs.get_mut(&vpc(VPC)).unwrap().classic_link_enabled = false;
    let plan = world.plan();
    assert!(plan.actions.is_empty());
    assert_eq!(warnings_of(&plan, WarningKind::ClassicLinkDisabled).len(), 1);
}

#[test]
fn enable_classiclink_true_enables_it_before_linking() {
    let mut world =
        linked_world().instance("i-1", InstanceState::Running, &["sg-0a1"]).with_last(|m| m.enable_classiclink = true);
    world.snap.vpcs.get_mut(&vpc(VPC)).unwrap().classic_link_enabled = false;
    let plan = world.plan();
    assert_eq!(kinds(&plan), vec![ActionKind::EnableClassicLink, ActionKind::Attach]);
    assert_eq!(plan.actions[1].depends_on, vec![ActionId(0)]);
}

#[test]
fn enforced_link_never_waits_for_a_classiclink_enable_only_an_audited_mapping_asks_for() {
    let mut world = World::new()
        .classic("sg-0a1", "web", vec![])
        .classic("sg-0a2", "app", vec![])
        .map("sg-0a1", VPC)
        .with_last(|m| {
            m.mode = Some(Mode::Audit);
            m.enable_classiclink = true;
        })
        .map("sg-0a2", VPC)
        .mirror("sg-77c", "web", "sg-0a1", vec![])
        .mirror("sg-77d", "app", "sg-0a2", vec![])
        .instance("i-1", InstanceState::Running, &["sg-0a2"]);
    world.snap.vpcs.get_mut(&vpc(VPC)).unwrap().classic_link_enabled = false;
    let plan = world.plan();
    assert_eq!(kinds(&plan), vec![ActionKind::EnableClassicLink, ActionKind::Attach]);
    // app does not ask for ClassicLink to be enabled; web, which does, is
    // audited: the enable never runs, so neither can the link.
    assert!(plan.actions.iter().all(|a| a.audit), "{:?}", plan.actions);
    assert!(plan.is_converged());
}

#[test]
fn vpc_source_mirrors_rules_without_classiclink() {
    let mut world = World::new()
        .vpc_group("sg-5a1", "api", VPC2, None, vec![tcp(443, "10.0.0.0/8"), from_group(80, "sg-5a1")])
        .map("sg-5a1", VPC);
    let source = world.snap.vpc_groups.remove(&sg("sg-5a1")).unwrap();
    world.snap.source_groups.insert(source.id.clone(), source);
    world.snap.instances.insert(
        inst("i-9"),
        Instance {
            id: inst("i-9"),
            state: InstanceState::Running,
            vpc_id: Some(vpc(VPC2)),
            groups: BTreeSet::from([sg("sg-5a1")]),
            private_ip: None,
        },
    );
    let plan = world.plan();
    assert_eq!(kinds(&plan), vec![ActionKind::CreateMirror, ActionKind::Authorize]);
    assert_eq!(authorized(&plan).len(), 2);
}

// ----- orphans (docs/semantics.md) -----------------------------------------

#[test]
fn orphan_waits_for_its_grace_then_is_deleted() {
    let mut world = World::new().mirror("sg-77e", "old", "sg-0a9", vec![]);
    let (first, memory) = world.plan_with(&Memory::default(), t0());
    assert_eq!(kinds(&first), vec![ActionKind::MarkOrphan], "only marked");
    world.apply_marks(&first);
    assert_eq!(warnings_of(&first, WarningKind::OrphanWaiting).len(), 1);
    assert_eq!(memory.orphans_since.get(&sg("sg-77e")), Some(&t0()));
    let (still, memory) = world.plan_with(&memory, t0() + Duration::from_secs(599));
    assert!(still.actions.is_empty());
    let (due, _) = world.plan_with(&memory, t0() + Duration::from_secs(600));
    assert_eq!(kinds(&due), vec![ActionKind::DeleteMirror]);
}

#[test]
fn a_new_orphan_is_marked_with_the_time_it_was_first_seen() {
    let world = World::new().mirror("sg-77e", "old", "sg-0a9", vec![]);
    let (plan, memory) = world.plan_with(&Memory::default(), t0());
    assert_eq!(
        plan.actions[0].action,
        Action::MarkOrphan { group: sg("sg-77e"), vpc: vpc(VPC), since: "2027-01-15T08:00:00Z".to_owned() }
    );
    assert_eq!(plan.actions.len(), 1);
    assert!(!plan.actions[0].action.is_destructive(), "a mark takes nothing away");
    assert_eq!(plan.orphans[0].since, t0());
    assert_eq!(plan.orphans[0].due, Some(t0() + Duration::from_secs(600)));
    assert_eq!(memory.orphans_since.get(&sg("sg-77e")), Some(&t0()));
    let text = render_text(&plan, &world.snap);
    assert!(
        text.contains("mark orphan sg-77e in vpc-9f2: classiclinkmirror:orphanedSince=2027-01-15T08:00:00Z\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "orphan sg-77e (old) in vpc-9f2, mirror of sg-0a9: orphaned since 2027-01-15T08:00:00Z; \
             removal due at 2027-01-15T08:10:00Z\n"
        ),
        "{text}"
    );
    let json: serde_json::Value = serde_json::from_str(&render_json(&plan)).unwrap();
    assert_eq!(json["orphans"][0]["orphaned_since"], "2027-01-15T08:00:00Z");
    assert_eq!(json["orphans"][0]["deletion_due_at"], "2027-01-15T08:10:00Z");
    assert_eq!(json["actions"][0]["action"]["type"], "mark_orphan");
    assert_eq!(json["summary"]["mark"], 1);
}

#[test]
fn a_restarted_daemon_counts_the_grace_from_the_tag() {
    // Regression (issue 10): restarted every 12 s, the daemon never deleted
    // an orphan with a 45 s grace; each restart forgot when it was first seen.
    let world = World::new().mirror("sg-77e", "old", "sg-0a9", vec![]).orphaned_since("sg-77e", &format_time(t0()));
    // No memory at all: a restart, or a second daemon.
    let (waiting, _) = world.plan_with(&Memory::default(), t0() + Duration::from_secs(599));
    assert!(waiting.actions.is_empty(), "the tag is already there: {:?}", waiting.actions);
    assert_eq!(waiting.orphans[0].since, t0());
    assert!(
        warnings_of(&waiting, WarningKind::OrphanWaiting)[0]
            .message
            .contains("removal due at 2027-01-15T08:10:00Z (in 1s")
    );
    let (due, _) = world.plan_with(&Memory::default(), t0() + Duration::from_secs(600));
    assert_eq!(kinds(&due), vec![ActionKind::DeleteMirror]);
    // The tag wins over a memory that says otherwise.
    let mut memory = Memory::default();
    memory.orphans_since.insert(sg("sg-77e"), t0() + Duration::from_secs(500));
    let (due, next) = world.plan_with(&memory, t0() + Duration::from_secs(600));
    assert_eq!(kinds(&due), vec![ActionKind::DeleteMirror]);
    assert_eq!(next.orphans_since[&sg("sg-77e")], t0());
}

#[test]
fn an_orphan_whose_tag_write_failed_keeps_its_remembered_time_and_is_marked_before_deletion() {
    let world = World::new().mirror("sg-77e", "old", "sg-0a9", vec![]);
    let (_, memory) = world.plan_with(&Memory::default(), t0());
    let (plan, _) = world.plan_with(&memory, t0() + Duration::from_secs(600));
    assert_eq!(kinds(&plan), vec![ActionKind::MarkOrphan, ActionKind::DeleteMirror]);
    assert_eq!(
        plan.actions[0].action,
        Action::MarkOrphan { group: sg("sg-77e"), vpc: vpc(VPC), since: format_time(t0()) }
    );
    assert_eq!(plan.actions[1].depends_on, vec![ActionId(0)], "no removal without the orphaning on record");
}

#[test]
fn a_malformed_or_future_orphan_tag_is_rewritten_to_now_and_reported() {
    for value in ["yesterday", "", "2027-01-15T08:00:00+02:00", "2027-01-16T08:00:00Z", "9999-12-31T23:59:59Z"] {
        let world = World::new().mirror("sg-77e", "old", "sg-0a9", vec![]).orphaned_since("sg-77e", value);
        let mut memory = Memory::default();
        memory.orphans_since.insert(sg("sg-77e"), t0() - Duration::from_secs(3600));
        let (plan, next) = world.plan_with(&memory, t0());
        assert_eq!(
            plan.actions.iter().map(|a| &a.action).collect::<Vec<_>>(),
            [&Action::MarkOrphan { group: sg("sg-77e"), vpc: vpc(VPC), since: format_time(t0()) }],
            "{value:?}: rewritten to now, not to the (older) memory, and nothing deleted"
        );
        assert_eq!(warnings_of(&plan, WarningKind::OrphanTagInvalid).len(), 1, "{value:?}");
        assert_eq!(next.orphans_since[&sg("sg-77e")], t0());
    }
    // A little clock skew between two daemons is believed.
    let skewed = format_time(t0() + Duration::from_secs(60));
    let world = World::new().mirror("sg-77e", "old", "sg-0a9", vec![]).orphaned_since("sg-77e", &skewed);
    let plan = world.plan();
    assert!(plan.actions.is_empty() && plan.warnings.iter().all(|w| w.kind != WarningKind::OrphanTagInvalid));
}

#[test]
fn a_mirror_claimed_again_loses_its_orphan_tag() {
    let mut world = World::new()
        .classic("sg-0a1", "web", vec![])
        .map("sg-0a1", VPC)
        .mirror("sg-77c", "web", "sg-0a1", vec![])
        .orphaned_since("sg-77c", "2027-01-15T07:00:00Z");
    let plan = world.plan();
    assert_eq!(plan.actions.len(), 1);
    assert_eq!(plan.actions[0].action, Action::UnmarkOrphan { group: sg("sg-77c"), vpc: vpc(VPC) });
    assert_eq!(plan.actions[0].pair, Some(PairKey { source: sg("sg-0a1"), vpc: vpc(VPC) }));
    assert!(plan.orphans.is_empty());
    let text = render_text(&plan, &world.snap);
    assert!(
        text.contains("unmark sg-77c in vpc-9f2: a mirror again, classiclinkmirror:orphanedSince removed\n"),
        "{text}"
    );
    world.apply_marks(&plan);
    assert!(world.plan().is_empty());
}

#[test]
fn an_adopted_group_with_a_stale_orphan_tag_is_unmarked_after_it_is_tagged() {
    let world = World::new()
        .classic("sg-0a1", "web", vec![])
        .map("sg-0a1", VPC)
        .with_last(|m| m.adopt = true)
        .vpc_group("sg-555", "web", VPC, None, vec![])
        .orphaned_since("sg-555", "2020-01-01T00:00:00Z");
    let plan = world.plan();
    assert_eq!(kinds(&plan), vec![ActionKind::TagGroup, ActionKind::UnmarkOrphan]);
    assert_eq!(plan.actions[1].depends_on, vec![ActionId(0)], "the unmark needs the ownership tag first");
}

#[test]
fn an_unowned_group_with_an_orphan_tag_is_never_touched() {
    let world = World::new().vpc_group("sg-555", "other", VPC, None, vec![]).orphaned_since("sg-555", "junk");
    let plan = world.plan();
    assert!(plan.is_empty() && plan.orphans.is_empty() && plan.warnings.is_empty(), "{plan:?}");
}

#[test]
fn an_incomplete_snapshot_writes_no_orphan_tag() {
    let mut world = World::new().mirror("sg-77e", "old", "sg-0a9", vec![]);
    world.snap.incomplete.insert(SnapshotPart::SourceGroups);
    let (plan, next) = world.plan_with(&Memory::default(), t0());
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    assert!(next.orphans_since.is_empty());
}

#[test]
fn in_global_audit_mode_the_orphan_mark_is_only_shown() {
    let mut world = World::new().mirror("sg-77e", "old", "sg-0a9", vec![]);
    world.config.daemon.mode = Mode::Audit;
    let plan = world.plan();
    assert_eq!(kinds(&plan), vec![ActionKind::MarkOrphan]);
    assert!(plan.actions[0].audit && plan.is_converged());
}

#[test]
fn a_lost_state_holds_destructive_actions_for_one_grace() {
    let world = World::new().mirror("sg-77e", "old", "sg-0a9", vec![]).orphaned_since("sg-77e", "2020-01-01T00:00:00Z");
    let memory = Memory { state_lost_at: Some(t0()), ..Memory::default() };
    let (plan, next) = world.plan_with(&memory, t0() + Duration::from_secs(599));
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    assert!(plan.holds.state_lost && plan.holds.destructive_held());
    assert_eq!(plan.deferred.held, 1);
    assert_eq!(warnings_of(&plan, WarningKind::StateLost).len(), 1);
    assert!(warnings_of(&plan, WarningKind::StateLost)[0].message.contains("another 1s"), "{:?}", plan.warnings);
    assert_eq!(next.state_lost_at, Some(t0()), "still holding");
    assert!(next.baseline.is_some(), "a new baseline is taken meanwhile");
    let (plan, next) = world.plan_with(&next, t0() + Duration::from_secs(600));
    assert_eq!(kinds(&plan), vec![ActionKind::DeleteMirror]);
    assert!(!plan.holds.state_lost);
    assert_eq!(next.state_lost_at, None);
}

#[test]
fn orphan_timer_resets_when_the_group_is_managed_again() {
    let world = World::new().mirror("sg-77e", "web", "sg-0a1", vec![]);
    let (_, memory) = world.plan_with(&Memory::default(), t0());
    let managed =
        World::new().classic("sg-0a1", "web", vec![]).map("sg-0a1", VPC).mirror("sg-77e", "web", "sg-0a1", vec![]);
    let (_, memory) = managed.plan_with(&memory, t0() + Duration::from_secs(300));
    assert!(memory.orphans_since.is_empty());
}

#[test]
fn orphans_are_kept_when_delete_orphans_is_false() {
    let mut world = World::new().mirror("sg-77e", "old", "sg-0a9", vec![]);
    world.config.safety.delete_orphans = false;
    let memory = world.first_pass();
    let (plan, _) = world.plan_with(&memory, t0() + Duration::from_secs(3600));
    assert!(plan.actions.is_empty());
    assert_eq!(warnings_of(&plan, WarningKind::OrphanKept).len(), 1);
}

#[test]
fn orphan_deletion_depends_on_its_detaches_and_on_revoking_references_to_it() {
    let mut world = World::new()
        .classic("sg-0a1", "web", vec![from_group(80, "sg-0a9")])
        .map("sg-0a1", VPC)
        .mirror("sg-77c", "web", "sg-0a1", vec![from_group(80, "sg-77e")])
        .mirror("sg-77e", "old", "sg-0a9", vec![])
        .link("i-1", VPC, &["sg-77e"]);
    let memory = world.first_pass();
    let (plan, _) = world.plan_with(&memory, t0() + Duration::from_secs(600));
    assert_eq!(kinds(&plan), vec![ActionKind::Revoke, ActionKind::Detach, ActionKind::DeleteMirror]);
    assert_eq!(plan.actions[2].depends_on, vec![ActionId(0), ActionId(1)]);
}

#[test]
fn orphan_deletion_waits_while_a_reference_to_it_cannot_be_revoked() {
    let mut world = World::new()
        .classic("sg-0a1", "web", vec![])
        .map("sg-0a1", VPC)
        .mirror("sg-77c", "web", "sg-0a1", vec![from_group(80, "sg-77e")])
        .mirror("sg-77e", "old", "sg-0a9", vec![]);
    world.config.safety.max_revokes_per_cycle = 0;
    let memory = world.first_pass();
    let (plan, _) = world.plan_with(&memory, t0() + Duration::from_secs(600));
    assert!(plan.actions.is_empty());
    assert_eq!(plan.deferred.deletes, 1);
    assert_eq!(plan.deferred.revokes, 1);
}

#[test]
fn orphans_referencing_each_other_are_deleted_after_revoking_those_references() {
    // web and app allowed each other; both mappings were removed.
    let mut world = World::new()
        .mirror("sg-77c", "web", "sg-0a1", vec![from_group(80, "sg-77d"), from_group(9000, "sg-77c")])
        .mirror("sg-77d", "app", "sg-0a2", vec![from_group(8080, "sg-77c"), tcp(22, "10.0.0.0/8")]);
    let memory = world.first_pass();
    let (plan, _) = world.plan_with(&memory, t0() + Duration::from_secs(600));
    assert_eq!(
        kinds(&plan),
        vec![ActionKind::Revoke, ActionKind::Revoke, ActionKind::DeleteMirror, ActionKind::DeleteMirror]
    );
    // Only the references between them go; a self-reference does not block.
    assert_eq!(revoked(&plan), vec![from_group(80, "sg-77d"), from_group(8080, "sg-77c")]);
    assert_eq!(plan.actions[2].depends_on, vec![ActionId(0), ActionId(1)]);
    assert_eq!(plan.actions[3].depends_on, vec![ActionId(0), ActionId(1)]);
    let text = render_text(&plan, &world.snap);
    assert!(text.contains("orphan sg-77c - ingress tcp 80 from sg-77d (app) [classic sg-0a2]\n"), "{text}");
}

#[test]
fn orphan_deletion_waits_while_references_from_other_orphans_cannot_be_revoked() {
    let mut world = World::new().mirror("sg-77c", "web", "sg-0a1", vec![from_group(80, "sg-77d")]).mirror(
        "sg-77d",
        "app",
        "sg-0a2",
        vec![],
    );
    world.config.safety.max_revokes_per_cycle = 0;
    let memory = world.first_pass();
    let (plan, _) = world.plan_with(&memory, t0() + Duration::from_secs(600));
    // sg-77c has no references to it and goes; sg-77d waits.
    assert_eq!(kinds(&plan), vec![ActionKind::DeleteMirror]);
    assert_eq!(plan.deferred.deletes, 1);
    assert_eq!(plan.deferred.revokes, 1);
}

#[test]
fn dependency_violation_backs_off_the_deletion() {
    let mut world = World::new().mirror("sg-77e", "old", "sg-0a9", vec![]);
    let mut memory = world.first_pass();
    let due = t0() + Duration::from_secs(600);
    memory.record_delete_blocked(&sg("sg-77e"), due);
    let (plan, memory) = world.plan_with(&memory, due + Duration::from_secs(30));
    assert!(plan.actions.is_empty());
    assert_eq!(warnings_of(&plan, WarningKind::DeleteBackoff).len(), 1);
    let (plan, mut memory) = world.plan_with(&memory, due + Duration::from_secs(60));
    assert_eq!(kinds(&plan), vec![ActionKind::DeleteMirror]);
    memory.record_delete_blocked(&sg("sg-77e"), due + Duration::from_secs(60));
    assert_eq!(memory.delete_backoff[&sg("sg-77e")].retry_after, due + Duration::from_secs(180));
}

// ----- safety (docs/semantics.md) ------------------------------------------

#[test]
fn an_incomplete_snapshot_plans_no_revoke_detach_or_delete() {
    let mut world = World::new()
        .classic("sg-0a1", "web", vec![tcp(443, "0.0.0.0/0")])
        .map("sg-0a1", VPC)
        .mirror("sg-77c", "web", "sg-0a1", vec![tcp(22, "0.0.0.0/0")])
        .mirror("sg-77e", "old", "sg-0a9", vec![])
        .link("i-1", VPC, &["sg-77e"]);
    let (_, memory) = world.plan_with(&Memory::default(), t0());
    world.snap.incomplete.insert(SnapshotPart::Instances);
    let (plan, next) = world.plan_with(&memory, t0() + Duration::from_secs(3600));
    assert_eq!(kinds(&plan), vec![ActionKind::Authorize]);
    assert_eq!(warnings_of(&plan, WarningKind::IncompleteSnapshot).len(), 1);
    assert_eq!(plan.holds.incomplete, vec![SnapshotPart::Instances]);
    assert_eq!(next.orphans_since, memory.orphans_since, "a partial view does not move orphan timers");
}

#[test]
fn an_orphan_past_its_grace_under_an_incomplete_snapshot_is_held_not_waiting() {
    // Regression: it was reported as "removal in 0s (orphan_grace)" and not
    // counted in deferred.held, unlike the same orphan under the shrink guard.
    let mut world = World::new().mirror("sg-77e", "old", "sg-0a9", vec![]);
    let (_, memory) = world.plan_with(&Memory::default(), t0());
    world.snap.incomplete.insert(SnapshotPart::Links);
    let (plan, next) = world.plan_with(&memory, t0() + Duration::from_secs(3600));
    assert!(plan.actions.is_empty());
    assert!(warnings_of(&plan, WarningKind::OrphanWaiting).is_empty(), "{:?}", plan.warnings);
    assert_eq!(plan.deferred.held, 1);
    assert_eq!(next.orphans_since, memory.orphans_since);
}

#[test]
fn an_incomplete_snapshot_shows_no_destructive_drift_for_audited_mappings_either() {
    let mut world = World::new()
        .classic("sg-0a1", "web", vec![tcp(443, "0.0.0.0/0")])
        .classic("sg-0a2", "app", vec![])
        .map("sg-0a1", VPC)
        .with_last(|m| m.mode = Some(Mode::Audit))
        .map("sg-0a2", VPC)
        .mirror("sg-77c", "web", "sg-0a1", vec![tcp(22, "0.0.0.0/0")])
        .mirror("sg-77d", "app", "sg-0a2", vec![])
        .instance("i-1", InstanceState::Running, &["sg-0a1"])
        .link("i-1", VPC, &["sg-77c", "sg-77d"]);
    let complete = world.plan();
    assert_eq!(kinds(&complete), vec![ActionKind::Authorize, ActionKind::Revoke, ActionKind::Relink]);
    assert!(complete.actions.iter().all(|a| a.audit));
    world.snap.incomplete.insert(SnapshotPart::Instances);
    let plan = world.plan();
    // The partial view may have missed what makes them wrong (here: i-1 may
    // be in app too): neither the revoke nor the relink may be reported.
    assert_eq!(kinds(&plan), vec![ActionKind::Authorize]);
    assert!(plan.actions[0].audit);
    assert_eq!(plan.deferred.held, 0, "audited actions are not counted as held");
}

#[test]
fn the_shrink_guard_holds_destructive_actions_until_the_drop_persists_for_the_grace() {
    let mut full =
        World::new().classic("sg-0a1", "web", vec![]).map("sg-0a1", VPC).mirror("sg-77c", "web", "sg-0a1", vec![]);
    for n in 1..=4 {
        let id = format!("i-{n}");
        full = full.instance(&id, InstanceState::Running, &["sg-0a1"]).link(&id, VPC, &["sg-77c"]);
    }
    let (first, memory) = full.plan_with(&Memory::default(), t0());
    assert!(first.actions.is_empty());
    assert_eq!(memory.baseline, Some(Baseline { managed_sources: 1, linked_instances: 4 }));

    // The instance describe suddenly answers (successfully) with nothing,
    // while the links are still there: without the guard, four detaches.
    let mut shrunk = full;
    shrunk.snap.instances.clear();
    let (plan, memory) = shrunk.plan_with(&memory, t0() + Duration::from_secs(30));
    assert!(plan.holds.shrink);
    assert!(plan.actions.is_empty());
    assert_eq!(warnings_of(&plan, WarningKind::SafetyHold).len(), 1);
    assert_eq!(plan.deferred.held, 4);

    let (plan, memory) = shrunk.plan_with(&memory, t0() + Duration::from_secs(629));
    assert!(plan.holds.shrink, "the drop has lasted 599 s of the 600 s grace");
    let (plan, memory) = shrunk.plan_with(&memory, t0() + Duration::from_secs(630));
    assert!(!plan.holds.shrink);
    assert_eq!(kinds(&plan), vec![ActionKind::Detach; 4]);
    assert_eq!(memory.baseline, Some(Baseline { managed_sources: 1, linked_instances: 0 }));
}

#[test]
fn an_orphan_keeps_its_links_and_references_until_its_grace_is_over() {
    let mut world = World::new()
        .classic("sg-0a1", "web", vec![from_group(80, "sg-0a9")])
        .map("sg-0a1", VPC)
        .mirror("sg-77c", "web", "sg-0a1", vec![from_group(80, "sg-77e")])
        .mirror("sg-77e", "old", "sg-0a9", vec![])
        .instance("i-1", InstanceState::Running, &["sg-0a1"])
        .link("i-1", VPC, &["sg-77c", "sg-77e"])
        .link("i-2", VPC, &["sg-77e"]);
    let (waiting, memory) = world.plan_with(&Memory::default(), t0());
    assert_eq!(kinds(&waiting), vec![ActionKind::MarkOrphan], "only marked: {:?}", waiting.actions);
    world.apply_marks(&waiting);
    let (due, _) = world.plan_with(&memory, t0() + Duration::from_secs(600));
    assert_eq!(kinds(&due), vec![ActionKind::Revoke, ActionKind::Relink, ActionKind::Detach, ActionKind::DeleteMirror]);
}

#[test]
fn a_kept_orphan_keeps_its_links() {
    let mut world = World::new().mirror("sg-77e", "old", "sg-0a9", vec![]).link("i-2", VPC, &["sg-77e"]);
    world.config.safety.delete_orphans = false;
    let memory = world.first_pass();
    let (plan, _) = world.plan_with(&memory, t0() + Duration::from_secs(86_400));
    assert!(plan.actions.is_empty());
}

#[test]
fn the_revoke_cap_defers_the_excess_in_a_deterministic_order() {
    let mut world = World::new().classic("sg-0a1", "web", vec![]).map("sg-0a1", VPC).mirror(
        "sg-77c",
        "web",
        "sg-0a1",
        (1..=5).map(|p| tcp(p, "10.0.0.0/8")).collect(),
    );
    world.config.safety.max_revokes_per_cycle = 2;
    let plan = world.plan();
    assert_eq!(revoked(&plan), vec![tcp(1, "10.0.0.0/8"), tcp(2, "10.0.0.0/8")]);
    assert_eq!(plan.deferred.revokes, 3);
}

#[test]
fn the_unlink_cap_defers_detaches_and_relinks() {
    let mut world =
        linked_world().link("i-1", VPC, &["sg-77c"]).link("i-2", VPC, &["sg-77c"]).link("i-3", VPC, &["sg-77c"]);
    world.config.safety.max_unlinks_per_cycle = 1;
    let plan = world.plan();
    assert_eq!(kinds(&plan), vec![ActionKind::Detach]);
    let Action::Detach { instance, .. } = &plan.actions[0].action else { panic!() };
    assert_eq!(instance, &inst("i-1"));
    assert_eq!(plan.deferred.unlinks, 2);
}

#[test]
fn the_delete_cap_defers_deletions() {
    let mut world = World::new()
        .mirror("sg-771", "a", "sg-0a9", vec![])
        .mirror("sg-772", "b", "sg-0a8", vec![])
        .mirror("sg-773", "c", "sg-0a7", vec![]);
    world.config.safety.max_deletes_per_cycle = 2;
    let memory = world.first_pass();
    let (plan, memory) = world.plan_with(&memory, t0() + Duration::from_secs(600));
    assert_eq!(kinds(&plan), vec![ActionKind::DeleteMirror, ActionKind::DeleteMirror]);
    assert_eq!(plan.deferred.deletes, 1);
    assert_eq!(memory.deferred.deletes, 1);
}

#[test]
fn audit_mode_plans_and_marks_actions_and_counts_as_converged() {
    let mut world = World::new().classic("sg-0a1", "web", vec![tcp(443, "0.0.0.0/0")]).map("sg-0a1", VPC);
    world.config.daemon.mode = Mode::Audit;
    let plan = world.plan();
    assert_eq!(kinds(&plan), vec![ActionKind::CreateMirror, ActionKind::Authorize]);
    assert!(plan.actions.iter().all(|a| a.audit));
    assert!(plan.is_converged());
    assert!(!plan.is_empty());
}

#[test]
fn a_mapping_can_be_audited_while_the_rest_is_enforced() {
    let world = World::new()
        .classic("sg-0a1", "web", vec![])
        .classic("sg-0a2", "app", vec![])
        .map("sg-0a1", VPC)
        .map("sg-0a2", VPC)
        .with_last(|m| m.mode = Some(Mode::Audit));
    let plan = world.plan();
    let audited: Vec<bool> = plan.actions.iter().map(|a| a.audit).collect();
    assert_eq!(audited, vec![false, true]);
    assert!(!plan.is_converged());
}

#[test]
fn audited_revokes_do_not_use_the_revoke_budget() {
    let mut world = World::new()
        .classic("sg-0a1", "web", vec![])
        .classic("sg-0a2", "app", vec![])
        .map("sg-0a1", VPC)
        .with_last(|m| m.mode = Some(Mode::Audit))
        .map("sg-0a2", VPC)
        .mirror("sg-77c", "web", "sg-0a1", vec![tcp(1, "10.0.0.0/8")])
        .mirror("sg-77d", "app", "sg-0a2", vec![tcp(2, "10.0.0.0/8")]);
    world.config.safety.max_revokes_per_cycle = 1;
    let plan = world.plan();
    assert_eq!(revoked(&plan).len(), 2);
    assert_eq!(plan.deferred.revokes, 0);
}

#[test]
fn global_audit_shows_a_due_orphans_deletion_after_its_audited_detach_and_revoke() {
    // Regression: the audited detach and revoke were taken for work that
    // never runs, so the deletion was left out of the plan and counted as
    // deferred: an audit never showed what enforcing would delete.
    let mut world = World::new()
        .classic("sg-0a1", "web", vec![])
        .map("sg-0a1", VPC)
        .mirror("sg-77c", "web", "sg-0a1", vec![from_group(80, "sg-77e")])
        .mirror("sg-77e", "old", "sg-0a9", vec![])
        .link("i-1", VPC, &["sg-77e"]);
    world.config.daemon.mode = Mode::Audit;
    // An audit never writes the orphan's tag: the grace counts from memory.
    let (_, memory) = world.plan_with(&Memory::default(), t0());
    let (plan, _) = world.plan_with(&memory, t0() + Duration::from_secs(600));
    assert_eq!(
        kinds(&plan),
        vec![ActionKind::Revoke, ActionKind::Detach, ActionKind::MarkOrphan, ActionKind::DeleteMirror]
    );
    assert!(plan.actions.iter().all(|a| a.audit));
    assert_eq!(plan.actions[3].depends_on, vec![ActionId(0), ActionId(1), ActionId(2)]);
    assert_eq!(plan.deferred, Deferred::default());
}

#[test]
fn an_enforced_deletion_waits_for_a_reference_only_an_audited_mapping_would_revoke() {
    let mut world = World::new()
        .classic("sg-0a1", "web", vec![])
        .map("sg-0a1", VPC)
        .with_last(|m| m.mode = Some(Mode::Audit))
        .mirror("sg-77c", "web", "sg-0a1", vec![from_group(80, "sg-77e")])
        .mirror("sg-77e", "old", "sg-0a9", vec![]);
    let memory = world.first_pass();
    let (plan, _) = world.plan_with(&memory, t0() + Duration::from_secs(600));
    assert_eq!(kinds(&plan), vec![ActionKind::Revoke]);
    assert!(plan.actions[0].audit);
    assert_eq!(plan.deferred.deletes, 1);
}

#[test]
fn enforced_grant_to_a_mirror_an_audited_mapping_would_create_is_only_audited() {
    let world = World::new()
        .classic("sg-0a1", "web", vec![])
        .classic("sg-0a2", "app", vec![from_group(80, "sg-0a1"), tcp(443, "10.0.0.0/8")])
        .map("sg-0a1", VPC)
        .with_last(|m| m.mode = Some(Mode::Audit))
        .map("sg-0a2", VPC)
        .mirror("sg-77d", "app", "sg-0a2", vec![]);
    let plan = world.plan();
    // The audited create of web's mirror never runs: app's grant to it
    // cannot either, but app's other grant must not wait for it.
    assert_eq!(kinds(&plan), vec![ActionKind::CreateMirror, ActionKind::Authorize, ActionKind::Authorize]);
    let audited: Vec<bool> = plan.actions.iter().map(|a| a.audit).collect();
    assert_eq!(audited, vec![true, false, true]);
    assert_eq!(plan.actions[1].depends_on, vec![]);
    assert_eq!(plan.actions[2].depends_on, vec![ActionId(0)]);
    let Action::Authorize { grants, .. } = &plan.actions[1].action else { panic!() };
    assert_eq!(grants, &vec![existing(tcp(443, "10.0.0.0/8"))]);
    assert_eq!(plan.pairs[1].drift.add, 2);
}

#[test]
fn enforced_grant_to_a_default_group_an_audited_mapping_would_tag_is_only_audited() {
    let world = World::new()
        .classic("sg-0a0", "default", vec![])
        .classic("sg-0a2", "app", vec![from_group(22, "sg-0a0")])
        .map("sg-0a0", VPC)
        .with_last(|m| m.mode = Some(Mode::Audit))
        .map("sg-0a2", VPC)
        .vpc_group("sg-d00", "default", VPC, None, vec![]);
    let plan = world.plan();
    assert_eq!(kinds(&plan), vec![ActionKind::TagGroup, ActionKind::CreateMirror, ActionKind::Authorize]);
    assert!(plan.actions[0].audit && !plan.actions[1].audit && plan.actions[2].audit);
    assert!(plan.executable().all(|a| a.depends_on.iter().all(|d| !plan.actions[d.0].audit)));
}

#[test]
fn planning_is_deterministic() {
    let world = linked_world().instance("i-1", InstanceState::Running, &["sg-0a1", "sg-0a2"]).mirror(
        "sg-77e",
        "old",
        "sg-0a9",
        vec![],
    );
    assert_eq!(world.plan(), world.plan());
}

// ----- rendering ---------------------------------------------------------------

#[test]
fn text_plan_reads_like_a_reviewable_diff() {
    let world = World::new()
        .classic(
            "sg-0a1",
            "web",
            vec![
                tcp_desc(443, "203.0.113.0/24", "office"),
                from_group(8080, "sg-0a2"),
                from_account(80, "sg-0ff", "210987654321"),
            ],
        )
        .classic("sg-0a2", "app", vec![])
        .map("sg-0a1", VPC)
        .map("sg-0a2", VPC)
        .mirror("sg-77c", "web", "sg-0a1", vec![tcp(22, "198.51.100.7/32")])
        .mirror("sg-77d", "app", "sg-0a2", vec![])
        .instance("i-0b3", InstanceState::Running, &["sg-0a1", "sg-0a2"]);
    let text = render_text(&world.plan(), &world.snap);
    let expected = "\
mirror sg-0a1 (web) -> vpc-9f2 sg-77c (web)
  + ingress tcp 443 from 203.0.113.0/24   \"office\"
  + ingress tcp 8080 from sg-77d (app) [classic sg-0a2]
  - ingress tcp 22 from 198.51.100.7/32
link i-0b3 -> vpc-9f2 [sg-77c, sg-77d]   (was: not linked)
warning: sg-0a1 rule tcp 80 from sg-0ff (account 210987654321) cannot be mirrored: group of another account
2 to add, 1 to remove, 0 to update, 1 link; 1 warning
";
    assert_eq!(text, expected);
}

#[test]
fn json_plan_is_versioned() {
    let world = World::new().classic("sg-0a1", "web", vec![]).map("sg-0a1", VPC);
    let value: serde_json::Value = serde_json::from_str(&render_json(&world.plan())).unwrap();
    assert_eq!(value["version"], 1);
    assert_eq!(value["converged"], false);
    assert_eq!(value["actions"][0]["action"]["type"], "create_mirror");
}

#[test]
fn json_names_of_action_and_warning_kinds_are_their_documented_labels() {
    // Regression: serde's snake_case spelled EnableClassicLink and
    // ClassicLinkDisabled "enable_classic_link" / "classic_link_disabled",
    // while docs/plan-json.md and the metric labels say "enable_classiclink"
    // / "classiclink_disabled".
    for kind in ActionKind::VARIANTS.iter().copied() {
        assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str(), "{kind:?}");
    }
    let enable = Action::EnableClassicLink { vpc: vpc(VPC) };
    assert_eq!(serde_json::to_value(&enable).unwrap()["type"], enable.kind().as_str());

    use WarningKind as W;
    let warnings = [
        W::Unmirrorable,
        W::MissingSource,
        W::ConflictNameTaken,
        W::ConflictForeignLink,
        W::ConflictMultiVpc,
        W::ConflictDuplicateMapping,
        W::ConflictDuplicateName,
        W::ConflictInvalidMapping,
        W::ConflictForeignOwner,
        W::DiscoveryTag,
        W::QuotaExceeded,
        W::LinkLimit,
        W::ClassicLinkDisabled,
        W::VpcNotFound,
        W::OrphanWaiting,
        W::OrphanKept,
        W::DeleteBackoff,
        W::NameDrift,
        W::IncompleteSnapshot,
        W::SafetyHold,
        W::OrphanTagInvalid,
        W::StateLost,
        W::Fight,
        W::PrefixListUnavailable,
    ];
    // Fails to compile when a kind is added, so the list above stays complete.
    let _exhaustive = |kind: W| match kind {
        W::Unmirrorable
        | W::MissingSource
        | W::ConflictNameTaken
        | W::ConflictForeignLink
        | W::ConflictMultiVpc
        | W::ConflictDuplicateMapping
        | W::ConflictDuplicateName
        | W::ConflictInvalidMapping
        | W::ConflictForeignOwner
        | W::DiscoveryTag
        | W::QuotaExceeded
        | W::LinkLimit
        | W::ClassicLinkDisabled
        | W::VpcNotFound
        | W::OrphanWaiting
        | W::OrphanKept
        | W::DeleteBackoff
        | W::NameDrift
        | W::IncompleteSnapshot
        | W::SafetyHold
        | W::OrphanTagInvalid
        | W::StateLost
        | W::PrefixListUnavailable
        | W::Fight => (),
    };
    for kind in warnings {
        assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str(), "{kind:?}");
    }
}

#[test]
fn no_attach_is_guessed_when_the_links_were_not_fully_observed() {
    let mut world = linked_world().instance("i-1", InstanceState::Running, &["sg-0a1"]);
    world.snap.incomplete.insert(SnapshotPart::Links);
    assert!(world.plan().actions.is_empty());
}

#[test]
fn a_detach_counts_as_link_drift_of_the_pair_whose_mirror_it_removes() {
    let world = linked_world().link("i-7", VPC, &["sg-77c"]);
    let plan = world.plan();
    assert_eq!(kinds(&plan), vec![ActionKind::Detach]);
    let web = plan.pairs.iter().find(|p| p.key.source == sg("sg-0a1")).unwrap();
    assert_eq!(web.drift.links, 1);
    assert!(!web.in_sync());
    assert_eq!(plan.actions[0].pair.as_ref(), Some(&web.key));
}

#[test]
fn an_observed_key_compares_with_a_planned_one_as_if_it_were_an_existing_group_ref() {
    // The rule diff merges planned keys with observed ones without
    // converting them; the order must be exactly `GrantKey<GroupRef>`'s.
    let ports = [Ports::None, Ports::Range { from: 22, to: 22 }, Ports::Range { from: 22, to: 80 }];
    let peers: Vec<Peer> = vec![
        Peer::Ipv4("10.0.0.0/8".parse().unwrap()),
        Peer::Ipv4("192.168.0.0/16".parse().unwrap()),
        Peer::Ipv6("2001:db8::/32".parse().unwrap()),
        Peer::PrefixList(crate::model::PrefixListId::try_new("pl-1a").unwrap()),
        Peer::Group { group: sg("sg-0a1"), owner: None },
        Peer::Group { group: sg("sg-0a1"), owner: Some("210987654321".into()) },
        Peer::Group { group: sg("sg-0b2"), owner: None },
    ];
    let mut observed = Vec::new();
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        for ports in ports {
            for peer in &peers {
                observed.push(GrantKey { protocol, ports, peer: peer.clone() });
            }
        }
    }
    let mut planned: Vec<GrantKey<GroupRef>> = observed
        .iter()
        .map(|k| Grant { key: k.clone(), description: None }.map_group(GroupRef::Existing).key)
        .collect();
    for protocol in [Protocol::Tcp, Protocol::Udp] {
        let new = |source: &str| Peer::Group {
            group: GroupRef::New { source: sg(source), vpc: vpc(VPC), shard: 0 },
            owner: None,
        };
        planned.push(GrantKey { protocol, ports: ports[1], peer: new("sg-0a1") });
        planned.push(GrantKey { protocol, ports: ports[1], peer: new("sg-000") });
    }
    for want in &planned {
        for have in &observed {
            let converted = Grant { key: have.clone(), description: None }.map_group(GroupRef::Existing).key;
            assert_eq!(cmp_planned_observed(want, have), want.cmp(&converted), "{want:?} against {have:?}");
        }
    }
}

// ----- owners: two deployments in one account ------------------------------

/// Every group an action writes to or unlinks from (an attach or relink's
/// new groups included).
fn touched(plan: &Plan) -> BTreeSet<GroupId> {
    let mut groups = BTreeSet::new();
    for planned in &plan.actions {
        match &planned.action {
            Action::TagGroup { group, .. }
            | Action::UntagGroup { group, .. }
            | Action::Revoke { group, .. }
            | Action::UpdateDescriptions { group, .. }
            | Action::DeleteMirror { group, .. }
            | Action::MarkOrphan { group, .. }
            | Action::UnmarkOrphan { group, .. } => {
                groups.insert(group.clone());
            }
            Action::Authorize { group, .. }
            | Action::AuthorizeEgress { group, .. }
            | Action::RevokeEgress { group, .. } => groups.extend(group.existing().cloned()),
            Action::Detach { groups: from, .. } => groups.extend(from.iter().cloned()),
            Action::Relink { from, groups: to, .. } => {
                let kept: BTreeSet<&GroupId> = to.iter().filter_map(GroupRef::existing).collect();
                groups.extend(from.iter().filter(|g| !kept.contains(g)).cloned());
            }
            Action::CreateMirror { .. }
            | Action::Attach { .. }
            | Action::EnableClassicLink { .. }
            | Action::CreatePrefixList { .. }
            | Action::ModifyPrefixList { .. }
            | Action::DeletePrefixList { .. } => {}
        }
    }
    groups
}

#[test]
fn a_mirror_of_another_owner_is_a_conflict_and_no_second_mirror_is_created() {
    let world = World::new()
        .classic("sg-0a1", "web", vec![tcp(443, "0.0.0.0/0")])
        .map("sg-0a1", VPC)
        .mirror("sg-77c", "web", "sg-0a1", vec![tcp(80, "10.0.0.0/8")])
        .owner("sg-77c", Some("team-a"))
        .instance("i-1", InstanceState::Running, &["sg-0a1"]);
    let plan = world.plan();
    assert!(plan.actions.is_empty(), "{plan:?}");
    let conflicts = warnings_of(&plan, WarningKind::ConflictForeignOwner);
    assert_eq!(conflicts.len(), 1);
    assert_eq!(conflicts[0].subject.as_deref(), Some("sg-77c"));
    assert!(conflicts[0].message.contains("\"team-a\""), "{}", conflicts[0].message);
    assert_eq!(WarningKind::ConflictForeignOwner.conflict_kind(), Some("foreign_owner"));
    assert_eq!(plan.pairs[0].mirror, None);
}

#[test]
fn a_mirror_of_another_owner_is_never_an_orphan_of_ours() {
    let mut world = World::new()
        .vpc_group("sg-77c", "web", VPC, Some("sg-0a1"), vec![tcp(80, "10.0.0.0/8")])
        .owner("sg-77c", Some("team-a"))
        .instance("i-1", InstanceState::Running, &["sg-0a1"])
        .link("i-1", VPC, &["sg-77c"]);
    let memory = world.first_pass();
    let (later, _) = world.plan_with(&memory, t0() + Duration::from_secs(86_400));
    assert!(later.actions.is_empty(), "{later:?}");
    assert!(later.orphans.is_empty());
    assert!(later.warnings.is_empty(), "not ours, not our business: {:?}", later.warnings);
}

#[test]
fn links_with_another_owners_mirror_are_foreign_kept_in_a_relink_and_never_detached() {
    let world = linked_world()
        // The mirror of sg-0a2 belongs to another deployment.
        .owner("sg-77d", Some("team-a"))
        .mirror("sg-88e", "db", "sg-0db", vec![])
        .owner("sg-88e", Some("team-a"))
        // Entitled to ours (sg-77c), linked to theirs only.
        .instance("i-1", InstanceState::Running, &["sg-0a1", "sg-0a2"])
        .link("i-1", VPC, &["sg-77d"])
        // Entitled to nothing of ours, linked to theirs.
        .instance("i-2", InstanceState::Running, &["sg-0db"])
        .link("i-2", VPC, &["sg-88e"]);
    let plan = world.plan();
    let relinks: Vec<_> = plan
        .actions
        .iter()
        .filter_map(|a| match &a.action {
            Action::Relink { instance, groups, .. } => Some((instance.clone(), groups.clone())),
            _ => None,
        })
        .collect();
    let expected = vec![GroupRef::Existing(sg("sg-77c")), GroupRef::Existing(sg("sg-77d"))];
    assert_eq!(relinks, vec![(inst("i-1"), expected)], "{plan:?}");
    let theirs = BTreeSet::from([sg("sg-77d"), sg("sg-88e")]);
    assert!(touched(&plan).is_disjoint(&theirs), "{plan:?}");
}

#[test]
fn a_reference_to_another_owners_mirror_in_ours_is_not_revoked() {
    let world = World::new()
        .classic("sg-0a1", "web", vec![])
        .map("sg-0a1", VPC)
        .mirror("sg-77c", "web", "sg-0a1", vec![from_group(5432, "sg-88e")])
        .mirror("sg-88e", "db", "sg-0db", vec![])
        .owner("sg-88e", Some("team-a"));
    let plan = world.plan();
    assert!(plan.actions.is_empty(), "{plan:?}");
}

#[test]
fn a_pair_mirrored_by_two_deployments_keeps_ours_and_reports_theirs() {
    let world = World::new()
        .classic("sg-0a1", "web", vec![tcp(443, "0.0.0.0/0")])
        .map("sg-0a1", VPC)
        .mirror("sg-77c", "web", "sg-0a1", vec![tcp(443, "0.0.0.0/0")])
        .mirror("sg-66b", "web-b", "sg-0a1", vec![])
        .owner("sg-66b", Some("team-b"));
    let plan = world.plan();
    assert!(plan.actions.is_empty(), "{plan:?}");
    assert_eq!(plan.pairs[0].mirror, Some(GroupRef::Existing(sg("sg-77c"))));
    let conflicts = warnings_of(&plan, WarningKind::ConflictForeignOwner);
    assert_eq!(conflicts.len(), 1);
    assert!(conflicts[0].message.contains("two deployments"), "{}", conflicts[0].message);
    assert!(plan.orphans.is_empty());
}

#[test]
fn a_default_group_mirroring_our_source_for_another_owner_is_a_conflict() {
    let world = World::new()
        .classic("sg-0a0", "default", vec![tcp(22, "10.0.0.0/8")])
        .map("sg-0a0", VPC)
        .vpc_group("sg-d00", "default", VPC, Some("sg-0a0"), vec![])
        .owner("sg-d00", Some("team-a"));
    let plan = world.plan();
    assert!(plan.actions.is_empty(), "{plan:?}");
    assert_eq!(warnings_of(&plan, WarningKind::ConflictForeignOwner).len(), 1);
}

/// The upgrade path: an estate made before owner tags (by the 2016 Lambda
/// or an older daemon) meets a daemon with `owner = "default"`.
#[test]
fn a_mirror_without_an_owner_tag_is_claimed_by_the_deployment_managing_its_source() {
    for owner in ["default", "team-b"] {
        let mut world = World::new()
            .classic("sg-0a1", "web", vec![tcp(443, "0.0.0.0/0")])
            .map("sg-0a1", VPC)
            .mirror("sg-77c", "web", "sg-0a1", vec![tcp(80, "10.0.0.0/8")])
            .owner("sg-77c", None)
            .orphaned_since("sg-77c", &format_time(t0()));
        world.config.daemon.owner = owner.to_owned();
        let plan = world.plan();
        assert_eq!(
            kinds(&plan),
            vec![ActionKind::TagGroup, ActionKind::Authorize, ActionKind::Revoke, ActionKind::UnmarkOrphan]
        );
        let Action::TagGroup { group, tags, reason, .. } = &plan.actions[0].action else { panic!("{plan:?}") };
        assert_eq!((group, reason), (&sg("sg-77c"), &TagReason::Claim));
        assert_eq!(tags, &BTreeMap::from([(OWNER_TAG.to_owned(), owner.to_owned())]));
        // Every other write to it waits for the claim.
        for planned in &plan.actions[1..] {
            assert!(planned.depends_on.contains(&ActionId(0)), "{planned:?}");
        }
        assert!(warnings_of(&plan, WarningKind::ConflictForeignOwner).is_empty());
    }
}

#[test]
fn an_unowned_orphan_is_handled_only_by_the_default_deployment_or_one_managing_its_source() {
    let estate = || {
        World::new()
            .classic("sg-0a1", "web", vec![])
            .vpc_group("sg-77c", "web", VPC, Some("sg-0a1"), vec![])
            .owner("sg-77c", None)
            .instance("i-1", InstanceState::Running, &["sg-0a1"])
            .link("i-1", VPC, &["sg-77c"])
    };
    // The default deployment (the one an estate made before owner tags
    // belongs to) marks it, waits, detaches and deletes it.
    let mut world = estate();
    let memory = world.first_pass();
    let (later, _) = world.plan_with(&memory, t0() + Duration::from_secs(601));
    assert_eq!(kinds(&later), vec![ActionKind::Detach, ActionKind::DeleteMirror], "{later:?}");
    // Another deployment leaves it alone: it could not have made it.
    let mut world = estate();
    world.config.daemon.owner = "team-b".to_owned();
    let memory = world.first_pass();
    let (later, _) = world.plan_with(&memory, t0() + Duration::from_secs(601));
    assert!(later.actions.is_empty() && later.orphans.is_empty(), "{later:?}");
    // Unless it manages the source, in another VPC: a mirror it could have made.
    let mut world = estate().map("sg-0a1", VPC2);
    world.config.daemon.owner = "team-b".to_owned();
    let plan = world.plan();
    assert_eq!(plan.orphans.len(), 1, "{plan:?}");
    assert!(kinds(&plan).contains(&ActionKind::MarkOrphan));
}

#[test]
fn a_mirror_of_our_own_owner_is_not_claimed_again() {
    let mut world = World::new()
        .classic("sg-0a1", "web", vec![])
        .map("sg-0a1", VPC)
        .mirror("sg-77c", "web", "sg-0a1", vec![])
        .owner("sg-77c", Some("team-b"));
    world.config.daemon.owner = "team-b".to_owned();
    assert!(world.plan().actions.is_empty());
}

#[test]
fn a_link_holding_another_owners_mirror_is_not_moved_to_another_vpc() {
    let mut world = World::new()
        .classic("sg-0a1", "web", vec![])
        .map("sg-0a1", VPC2)
        .vpc_group("sg-55a", "web", VPC2, Some("sg-0a1"), vec![])
        // Our mirror in the old VPC, and another deployment's there.
        .mirror("sg-66a", "web", "sg-0a1", vec![])
        .mirror("sg-88e", "db", "sg-0db", vec![])
        .owner("sg-88e", Some("team-a"))
        .instance("i-1", InstanceState::Running, &["sg-0a1"])
        .link("i-1", VPC, &["sg-66a", "sg-88e"]);
    // Our old mirror is due for removal: the link is ours to move.
    world.config.safety.orphan_grace = Duration::ZERO;
    let plan = world.plan();
    assert!(!kinds(&plan).iter().any(|k| matches!(k, ActionKind::Relink | ActionKind::Detach)), "{plan:?}");
    // Its old mirror stays while linked.
    assert!(!kinds(&plan).contains(&ActionKind::DeleteMirror), "{plan:?}");
    let conflicts = warnings_of(&plan, WarningKind::ConflictForeignLink);
    assert_eq!(conflicts.len(), 1);
    assert!(conflicts[0].message.contains("sg-88e"), "{}", conflicts[0].message);
    assert!(!touched(&plan).contains(&sg("sg-88e")));
}

// ----- fights ---------------------------------------------------------------

/// A mirrored pair whose mirror lacks one of its source's grants (someone
/// revoked it): every plan re-authorizes it.
fn revoked_grant_world() -> World {
    World::new().classic("sg-0a1", "web", vec![tcp(443, "0.0.0.0/0"), tcp(80, "0.0.0.0/0")]).map("sg-0a1", VPC).mirror(
        "sg-f01",
        "web",
        "sg-0a1",
        vec![tcp(443, "0.0.0.0/0")],
    )
}

/// Plans at `now` and records every executable action as done by EC2.
fn repair_pass(world: &World, memory: &Memory, now: SystemTime) -> (Plan, Memory, Vec<FightKey>) {
    let (plan, mut next) = world.plan_with(memory, now);
    let executed = plan.executable().map(|a| (a, Executed::Done));
    let started = next.record_execution(executed, now, &FightPolicy::of(&world.config.safety));
    (plan, next, started)
}

#[test]
fn fight_defaults_are_three_repairs_in_ten_minutes_and_a_backoff_from_one_minute_doubling_to_one_hour() {
    let policy = FightPolicy::of(&Config::with_region("us-east-1").safety);
    assert_eq!(policy, FightPolicy::default());
    assert_eq!(policy.repairs, 3);
    assert_eq!(policy.window, Duration::from_secs(600));
    let delays: Vec<u64> = (1..=9).map(|n| policy.delay(n).as_secs()).collect();
    assert_eq!(delays, [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600]);
    assert_eq!(policy.delay(u32::MAX), Duration::from_secs(3600));
}

#[test]
fn a_grant_revoked_again_and_again_is_a_fight_at_the_third_repair_and_then_repaired_once_per_backoff() {
    let world = revoked_grant_world();
    let pair = PairKey { source: sg("sg-0a1"), vpc: vpc(VPC) };
    let mut memory = Memory::default();
    // Someone revokes the grant right after every repair; a pass every 30 s.
    let mut repairs = Vec::new();
    let mut detected = None;
    for step in 0..400u64 {
        let now = t0() + Duration::from_secs(30 * step);
        let (plan, next, started) = repair_pass(&world, &memory, now);
        memory = next;
        if plan.actions.iter().any(|a| matches!(a.action, Action::Authorize { .. })) {
            repairs.push(30 * step);
        } else {
            assert_eq!(plan.deferred.fights, 1, "the repair is deferred, not forgotten");
            let warning = &warnings_of(&plan, WarningKind::Fight)[0];
            assert_eq!(warning.pair.as_ref(), Some(&pair));
            assert!(warning.message.contains("grants keep being changed back"), "{}", warning.message);
        }
        if !started.is_empty() {
            assert_eq!(started, [FightKey { pair: pair.clone(), kind: RepairKind::Grant }]);
            assert!(detected.is_none(), "detected once");
            detected = Some(repairs.len());
        }
    }
    assert_eq!(detected, Some(3), "detected at the third repair");
    // Full speed first, then 1, 2, 4, ... minutes apart, capped at an hour.
    let gaps: Vec<u64> = repairs.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps[..2], [30, 30]);
    assert_eq!(gaps[2..], [60, 120, 240, 480, 960, 1920, 3600, 3600]);
    let fights = memory.fights();
    assert_eq!(fights.len(), 1);
    assert_eq!((fights[0].kind, fights[0].repairs, fights[0].principal.as_deref()), (RepairKind::Grant, 9, None));
}

#[test]
fn a_fight_ends_once_a_window_passes_after_its_backoff_without_a_repair() {
    let world = revoked_grant_world();
    let mut memory = Memory::default();
    for step in 0..3u64 {
        memory = repair_pass(&world, &memory, t0() + Duration::from_secs(30 * step)).1;
    }
    assert_eq!(memory.fights().len(), 1);
    // The other writer stopped: the mirror is whole again.
    let fixed = World::new()
        .classic("sg-0a1", "web", vec![tcp(443, "0.0.0.0/0"), tcp(80, "0.0.0.0/0")])
        .map("sg-0a1", VPC)
        .mirror("sg-f01", "web", "sg-0a1", vec![tcp(443, "0.0.0.0/0"), tcp(80, "0.0.0.0/0")]);
    let backoff_over = t0() + Duration::from_secs(60 + 60);
    let (plan, next, _) = repair_pass(&fixed, &memory, backoff_over);
    assert!(plan.actions.is_empty());
    assert_eq!(next.fights().len(), 1, "a window has not passed yet");
    let (plan, next, _) = repair_pass(&fixed, &next, backoff_over + Duration::from_secs(601));
    assert!(plan.actions.is_empty() && warnings_of(&plan, WarningKind::Fight).len() == 1);
    assert!(next.fights().is_empty(), "forgotten");
    assert!(next.repairs.is_empty(), "nothing left to remember");
}

#[test]
fn repairs_of_different_grants_of_a_growing_source_are_not_a_fight() {
    // An operator adds a rule to the source every minute: each authorize
    // adds a new grant, none is re-authorized.
    let mut memory = Memory::default();
    for step in 0..10u16 {
        let grants: Vec<Grant> = (0..=step).map(|i| tcp(1000 + i, "10.1.0.0/16")).collect();
        let mirror: Vec<Grant> = grants[..grants.len() - 1].to_vec();
        let world =
            World::new().classic("sg-0a1", "web", grants).map("sg-0a1", VPC).mirror("sg-f01", "web", "sg-0a1", mirror);
        let (plan, next, started) = repair_pass(&world, &memory, t0() + Duration::from_secs(60 * u64::from(step)));
        assert_eq!(kinds(&plan), [ActionKind::Authorize]);
        assert!(started.is_empty());
        memory = next;
    }
    assert!(memory.fights().is_empty());
}

#[test]
fn a_fight_over_a_mirror_defers_its_creation_and_everything_that_waits_for_it() {
    let world = World::new().classic("sg-0a1", "web", vec![tcp(443, "0.0.0.0/0")]).map("sg-0a1", VPC).instance(
        "i-1",
        InstanceState::Running,
        &["sg-0a1"],
    );
    let mut memory = Memory::default();
    // The mirror is deleted after every creation.
    for step in 0..3u64 {
        memory = repair_pass(&world, &memory, t0() + Duration::from_secs(30 * step)).1;
    }
    assert_eq!(memory.fights()[0].kind, RepairKind::Mirror);
    let (plan, _) = world.plan_with(&memory, t0() + Duration::from_secs(90));
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    assert_eq!(plan.deferred.fights, 3, "create, authorize and attach");
    let json = serde_json::to_value(plan.deferred).unwrap();
    assert_eq!(json["fights"], 3);
    // Once the backoff has passed, the repair runs (once).
    let (plan, _) = world.plan_with(&memory, t0() + Duration::from_secs(60 + 60));
    assert_eq!(kinds(&plan), [ActionKind::CreateMirror, ActionKind::Authorize, ActionKind::Attach]);
    assert_eq!(plan.actions[2].depends_on, [ActionId(0)]);
}

#[test]
fn a_fight_on_one_pair_leaves_the_other_pairs_at_full_speed() {
    let world = revoked_grant_world()
        .classic("sg-0a2", "app", vec![tcp(8080, "10.0.0.0/8")])
        .map("sg-0a2", VPC)
        .mirror("sg-f02", "app", "sg-0a2", vec![]);
    let mut memory = Memory::default();
    for step in 0..3u64 {
        memory = repair_pass(&revoked_grant_world(), &memory, t0() + Duration::from_secs(30 * step)).1;
    }
    let (plan, _) = world.plan_with(&memory, t0() + Duration::from_secs(90));
    let authorized: Vec<&GroupRef> = plan
        .actions
        .iter()
        .filter_map(|a| match &a.action {
            Action::Authorize { group, .. } => Some(group),
            _ => None,
        })
        .collect();
    assert_eq!(authorized, [&GroupRef::Existing(sg("sg-f02"))]);
    assert_eq!(plan.actions[0].id, ActionId(0), "ids renumbered");
}

#[test]
fn an_already_done_answer_is_not_a_repair_of_ours() {
    let world = revoked_grant_world();
    let mut memory = Memory::default();
    for step in 0..5u64 {
        let now = t0() + Duration::from_secs(30 * step);
        let (plan, mut next) = world.plan_with(&memory, now);
        let executed = plan.executable().map(|a| (a, Executed::AlreadyDone));
        assert!(next.record_execution(executed, now, &FightPolicy::default()).is_empty());
        memory = next;
    }
    assert!(memory.repairs.is_empty());
}

#[test]
fn deletions_blocked_by_a_dependency_back_off_through_record_execution() {
    let planned = PlannedAction {
        id: ActionId(0),
        action: Action::DeleteMirror { group: sg("sg-99f"), vpc: vpc(VPC), name: "old".into(), source: sg("sg-0a1") },
        depends_on: Vec::new(),
        audit: false,
        pair: None,
    };
    let mut memory = Memory::default();
    memory.record_execution([(&planned, Executed::Failed(Some("DependencyViolation")))], t0(), &FightPolicy::default());
    assert_eq!(memory.delete_backoff[&sg("sg-99f")].failures, 1);
    memory.record_execution([(&planned, Executed::Failed(Some("Throttling")))], t0(), &FightPolicy::default());
    assert_eq!(memory.delete_backoff[&sg("sg-99f")].failures, 1, "other failures do not count");
    memory.record_execution([(&planned, Executed::AlreadyDone)], t0(), &FightPolicy::default());
    assert!(memory.delete_backoff.is_empty());
}

#[test]
fn a_fight_over_one_grant_holds_up_neither_a_new_grant_nor_the_pairs_links() {
    let world = revoked_grant_world();
    let mut memory = Memory::default();
    for step in 0..3u64 {
        memory = repair_pass(&world, &memory, t0() + Duration::from_secs(30 * step)).1;
    }
    assert_eq!(memory.fights().len(), 1);
    // The source gains a rule and an instance: both go ahead during the backoff.
    let grown = World::new()
        .classic("sg-0a1", "web", vec![tcp(443, "0.0.0.0/0"), tcp(80, "0.0.0.0/0"), tcp(22, "10.0.0.0/8")])
        .map("sg-0a1", VPC)
        .mirror("sg-f01", "web", "sg-0a1", vec![tcp(443, "0.0.0.0/0"), tcp(80, "0.0.0.0/0")])
        .instance("i-1", InstanceState::Running, &["sg-0a1"]);
    let (plan, _) = grown.plan_with(&memory, t0() + Duration::from_secs(90));
    assert_eq!(kinds(&plan), [ActionKind::Authorize, ActionKind::Attach]);
    assert_eq!(authorized(&plan), [existing(tcp(22, "10.0.0.0/8"))]);
    assert_eq!(plan.deferred.fights, 0);
    // A repair of a subject outside the fight does not make the backoff longer.
    let (plan, mut next) = grown.plan_with(&memory, t0() + Duration::from_secs(90));
    let executed = plan.executable().map(|a| (a, Executed::Done));
    next.record_execution(executed, t0() + Duration::from_secs(90), &FightPolicy::default());
    assert_eq!(next.fights()[0].repairs, 1);
    assert_eq!(next.fights()[0].retry_after, memory.fights()[0].retry_after);
}

// ----- egress, IPv6 and prefix lists of VPC sources (docs/semantics.md) -----

/// Moves a VPC group out of the target side into the sources, as observe
/// lists a VPC source in another VPC.
fn vpc_source(mut world: World, id: &str) -> World {
    let group = world.snap.vpc_groups.remove(&sg(id)).unwrap();
    world.snap.source_groups.insert(sg(id), group);
    world
}

fn to_group(port: u16, group: &str) -> Grant {
    from_group(port, group)
}

fn egress_actions(plan: &Plan) -> Vec<(ActionKind, GroupRef, Vec<Grant<GroupRef>>)> {
    plan.actions
        .iter()
        .filter_map(|a| match &a.action {
            Action::AuthorizeEgress { group, grants } => {
                Some((ActionKind::AuthorizeEgress, group.clone(), grants.clone()))
            }
            Action::RevokeEgress { group, grants } => Some((
                ActionKind::RevokeEgress,
                group.clone(),
                grants.iter().cloned().map(|g| g.map_group(GroupRef::Existing)).collect(),
            )),
            _ => None,
        })
        .collect()
}

fn new_mirror_of(source: &str) -> GroupRef {
    GroupRef::New { source: sg(source), vpc: vpc(VPC), shard: 0 }
}

#[test]
fn vpc_source_egress_is_mirrored_with_ipv6_and_references_translated_and_the_default_removed() {
    let world = World::new()
        .vpc_group("sg-5a1", "api", VPC2, None, vec![tcp(443, "10.0.0.0/8")])
        .vpc_group("sg-5a2", "db", VPC2, None, vec![from_group(5432, "sg-5a1")])
        .egress("sg-5a1", vec![tcp(443, "10.0.0.0/8"), tcp6(443, "2001:db8::/32"), to_group(5432, "sg-5a2")])
        .map("sg-5a1", VPC)
        .map("sg-5a2", VPC);
    let plan = vpc_source(vpc_source(world, "sg-5a1"), "sg-5a2").plan();
    let egress = egress_actions(&plan);
    // api: its three egress grants, the reference to db translated to db's
    // new mirror; EC2's default rule, which api does not have, revoked after.
    let (kind, group, grants) = &egress[0];
    assert_eq!((kind, group), (&ActionKind::AuthorizeEgress, &new_mirror_of("sg-5a1")));
    let peers: Vec<&Peer<GroupRef>> = grants.iter().map(|g| &g.key.peer).collect();
    assert_eq!(
        peers,
        vec![
            &Peer::Ipv4("10.0.0.0/8".parse().unwrap()),
            &Peer::Ipv6("2001:db8::/32".parse().unwrap()),
            &Peer::Group { group: new_mirror_of("sg-5a2"), owner: None },
        ]
    );
    let (kind, group, grants) = &egress[1];
    assert_eq!((kind, group), (&ActionKind::RevokeEgress, &new_mirror_of("sg-5a1")));
    assert_eq!(grants, &vec![all_out().map_group(GroupRef::Existing)]);
    // db has EC2's default egress like its mirror will: nothing to do.
    assert_eq!(egress.len(), 2, "{egress:?}");
    // The revoke waits for the create and for the authorize (make before break).
    let revoke = plan.actions.iter().find(|a| a.action.kind() == ActionKind::RevokeEgress).unwrap();
    let authorize = plan.actions.iter().find(|a| a.action.kind() == ActionKind::AuthorizeEgress).unwrap();
    assert!(revoke.depends_on.contains(&authorize.id), "{revoke:?}");
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
}

#[test]
fn classic_source_mirror_egress_is_left_alone() {
    let world = World::new()
        .classic("sg-0a1", "web", vec![tcp(443, "0.0.0.0/0")])
        .map("sg-0a1", VPC)
        .mirror("sg-77c", "web", "sg-0a1", vec![tcp(443, "0.0.0.0/0")])
        .egress("sg-77c", vec![tcp(22, "192.0.2.0/24"), tcp6(22, "2001:db8::/32")]);
    let plan = world.plan();
    assert!(egress_actions(&plan).is_empty(), "{:?}", plan.actions);
    assert!(plan.is_converged());
}

#[test]
fn egress_grants_not_ours_are_kept_and_extra_owned_ones_revoked() {
    let world = World::new()
        .vpc_group("sg-5a1", "api", VPC2, None, vec![])
        .egress("sg-5a1", vec![tcp(443, "10.0.0.0/8")])
        .map("sg-5a1", VPC)
        .vpc_group("sg-999", "someone-elses", VPC, None, vec![])
        .mirror("sg-77c", "api", "sg-5a1", vec![])
        .egress("sg-77c", vec![all_out(), tcp6(22, "2001:db8::/32"), to_group(22, "sg-999"), tcp_list(22, "pl-0a")]);
    let plan = vpc_source(world, "sg-5a1").plan();
    let egress = egress_actions(&plan);
    let existing = GroupRef::Existing(sg("sg-77c"));
    assert_eq!(
        egress[0],
        (ActionKind::AuthorizeEgress, existing.clone(), vec![tcp(443, "10.0.0.0/8").map_group(GroupRef::Existing)])
    );
    // The default rule, an IPv6 grant and a prefix list are a VPC source's
    // kinds of grant, so ours; a reference to a group that is no mirror is not.
    let mut revoked: Vec<Grant<GroupRef>> = egress[1].2.clone();
    revoked.sort();
    let mut expected: Vec<Grant<GroupRef>> = [all_out(), tcp6(22, "2001:db8::/32"), tcp_list(22, "pl-0a")]
        .into_iter()
        .map(|g| g.map_group(GroupRef::Existing))
        .collect();
    expected.sort();
    assert_eq!((egress[1].0, &egress[1].1, revoked), (ActionKind::RevokeEgress, &existing, expected));
    assert_eq!(egress.len(), 2);
}

#[test]
fn ipv6_and_prefix_list_ingress_of_a_vpc_source_are_mirrored_as_owned_grants() {
    let world = World::new()
        .vpc_group("sg-5a1", "api", VPC2, None, vec![tcp6(443, "2001:db8::/32"), tcp_list(443, "pl-0a")])
        .map("sg-5a1", VPC)
        .mirror("sg-77c", "api", "sg-5a1", vec![tcp6(80, "2001:db8::/32")]);
    let plan = vpc_source(world, "sg-5a1").plan();
    let mut added: Vec<Grant> =
        authorized(&plan).into_iter().map(|g| g.map_group(|g| g.existing().cloned().unwrap())).collect();
    added.sort();
    let mut expected = vec![tcp6(443, "2001:db8::/32"), tcp_list(443, "pl-0a")];
    expected.sort();
    assert_eq!(added, expected);
    // The IPv6 grant the source does not have is ours now, and goes.
    assert_eq!(revoked(&plan), vec![tcp6(80, "2001:db8::/32")]);
    assert!(warnings_of(&plan, WarningKind::Unmirrorable).is_empty(), "{:?}", plan.warnings);
}

#[test]
fn a_prefix_list_of_another_account_is_reported_and_not_copied() {
    let mut world = World::new()
        .vpc_group("sg-5a1", "api", VPC2, None, vec![tcp_list(443, "pl-0a"), tcp(80, "10.0.0.0/8")])
        .egress("sg-5a1", vec![all_out(), tcp_list(5432, "pl-0b")])
        .map("sg-5a1", VPC)
        .mirror("sg-77c", "api", "sg-5a1", vec![]);
    world.snap.vpc_groups.get_mut(&sg("sg-5a1")).unwrap().owner_id = "444455556666".into();
    let plan = vpc_source(world, "sg-5a1").plan();
    let reported = warnings_of(&plan, WarningKind::PrefixListUnavailable);
    assert_eq!(reported.len(), 2, "{:?}", plan.warnings);
    assert!(
        reported[0].message.contains("pl-0a") && reported[0].message.contains("444455556666"),
        "{}",
        reported[0].message
    );
    assert!(
        reported[1].message.contains("egress rule") && reported[1].message.contains("pl-0b"),
        "{}",
        reported[1].message
    );
    assert_eq!(authorized(&plan), vec![tcp(80, "10.0.0.0/8").map_group(GroupRef::Existing)]);
    assert!(egress_actions(&plan).is_empty(), "{:?}", plan.actions);
}

#[test]
fn egress_revokes_draw_on_the_revoke_cap_like_ingress_ones() {
    let mut world = World::new()
        .vpc_group("sg-5a1", "api", VPC2, None, vec![])
        .egress("sg-5a1", vec![])
        .map("sg-5a1", VPC)
        .mirror("sg-77c", "api", "sg-5a1", vec![tcp(22, "10.0.0.0/8")])
        .egress("sg-77c", vec![all_out(), tcp(443, "10.0.0.0/8")]);
    world.config.safety.max_revokes_per_cycle = 2;
    let plan = vpc_source(world, "sg-5a1").plan();
    // Three revokes wanted (one ingress, two egress); two allowed.
    let revokes: usize = plan
        .actions
        .iter()
        .map(|a| match &a.action {
            Action::Revoke { grants, .. } | Action::RevokeEgress { grants, .. } => grants.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(revokes, 2);
    assert_eq!(plan.deferred.revokes, 1);
}

#[test]
fn an_incomplete_snapshot_plans_no_egress_revoke() {
    let mut world = World::new()
        .vpc_group("sg-5a1", "api", VPC2, None, vec![])
        .egress("sg-5a1", vec![tcp(443, "10.0.0.0/8")])
        .map("sg-5a1", VPC)
        .mirror("sg-77c", "api", "sg-5a1", vec![]);
    world.snap.incomplete.insert(crate::model::SnapshotPart::Instances);
    let plan = vpc_source(world, "sg-5a1").plan();
    let kinds = kinds(&plan);
    assert!(kinds.contains(&ActionKind::AuthorizeEgress), "{kinds:?}");
    assert!(!kinds.contains(&ActionKind::RevokeEgress), "{kinds:?}");
}

// ----- expanded references (expand.rs) --------------------------------------

mod expansion {
    use super::*;
    use crate::config::UnmanagedReferences;
    use crate::model::{EXPANSION_TAG, ExpansionList, PrefixList, PrefixListEntry, PrefixListId};

    fn pl(id: &str) -> PrefixListId {
        PrefixListId::try_new(id).unwrap()
    }

    fn from_list(port: u16, list: &str) -> Grant {
        Grant::new(Protocol::Tcp, Ports::Range { from: port, to: port }, Peer::PrefixList(pl(list)), None)
    }

    fn net(ip: &str) -> ipnet::Ipv4Net {
        format!("{ip}/32").parse::<ipnet::Ipv4Net>().unwrap()
    }

    impl World {
        fn expand(mut self) -> Self {
            self.config.mirroring.unmanaged_references = UnmanagedReferences::Expand;
            self
        }

        fn members(mut self, group: &str, ips: &[&str]) -> Self {
            self.snap.members.insert(sg(group), ips.iter().map(|ip| ip.parse().unwrap()).collect());
            self
        }

        fn list(mut self, id: &str, expands: &str, owner: &str, max_entries: u32, version: u64, ips: &[&str]) -> Self {
            let tags = BTreeMap::from([
                (EXPANSION_TAG.to_owned(), expands.to_owned()),
                (OWNER_TAG.to_owned(), owner.to_owned()),
            ]);
            let list = PrefixList {
                id: pl(id),
                name: format!("expand-{expands}"),
                address_family: "IPv4".into(),
                max_entries,
                version,
                state: "modify-complete".into(),
                state_message: None,
                owner_id: "111122223333".into(),
                tags,
            };
            let entries = ips.iter().map(|ip| PrefixListEntry { cidr: net(ip).into(), description: None }).collect();
            self.snap.expansion_lists.insert(pl(id), ExpansionList { list, entries });
            self
        }
    }

    /// `web` allows ssh from the unmanaged `bastion` (sg-0b5); its mirror
    /// exists.
    fn world() -> World {
        World::new()
            .classic("sg-0a1", "web", vec![from_group(22, "sg-0b5")])
            .classic("sg-0b5", "bastion", vec![])
            .map("sg-0a1", VPC)
            .mirror("sg-77a", "web", "sg-0a1", vec![])
            .expand()
    }

    fn list_actions(plan: &Plan) -> Vec<&Action> {
        plan.actions
            .iter()
            .map(|a| &a.action)
            .filter(|a| {
                matches!(
                    a,
                    Action::CreatePrefixList { .. } | Action::ModifyPrefixList { .. } | Action::DeletePrefixList { .. }
                )
            })
            .collect()
    }

    #[test]
    fn by_default_a_reference_to_an_unmanaged_group_is_reported_and_no_list_is_planned() {
        let mut world = world().members("sg-0b5", &["10.0.0.1"]);
        world.config.mirroring.unmanaged_references = UnmanagedReferences::Report;
        let plan = world.plan();
        assert!(list_actions(&plan).is_empty(), "{plan:?}");
        let warnings = warnings_of(&plan, WarningKind::Unmirrorable);
        assert_eq!(warnings[0].reason, Some(Unmirrorable::NotManaged));
    }

    #[test]
    fn an_expanded_reference_creates_a_list_of_the_running_members_sized_with_headroom() {
        let plan = world().members("sg-0b5", &["10.0.0.3", "10.0.0.1", "10.0.0.2"]).plan();
        let [Action::CreatePrefixList { expands, max_entries, entries, tags, .. }] = list_actions(&plan)[..] else {
            panic!("{plan:?}")
        };
        assert_eq!(expands, &sg("sg-0b5"));
        assert_eq!(*max_entries, 10);
        assert_eq!(entries, &vec![net("10.0.0.1"), net("10.0.0.2"), net("10.0.0.3")]);
        assert_eq!(tags.get(EXPANSION_TAG).map(String::as_str), Some("sg-0b5"));
        assert_eq!(tags.get(OWNER_TAG).map(String::as_str), Some("default"));
        // The grant waits for the list to exist (the next pass).
        assert!(authorized(&plan).is_empty(), "{plan:?}");
        assert_eq!(warnings_of(&plan, WarningKind::Unmirrorable)[0].reason, Some(Unmirrorable::ExpansionPending));
    }

    #[test]
    fn headroom_is_twice_the_members_at_least_ten_rounded_up_to_ten_at_most_a_thousand() {
        assert_eq!(expansion_max_entries(0), 10);
        assert_eq!(expansion_max_entries(5), 10);
        assert_eq!(expansion_max_entries(6), 20);
        assert_eq!(expansion_max_entries(11), 30);
        assert_eq!(expansion_max_entries(499), 1000);
        assert_eq!(expansion_max_entries(5000), 1000);
    }

    #[test]
    fn the_mirror_grants_the_existing_list_which_follows_membership_at_its_version() {
        let plan = world()
            .members("sg-0b5", &["10.0.0.1", "10.0.0.3"])
            .list("pl-0e1", "sg-0b5", "default", 10, 4, &["10.0.0.1", "10.0.0.2"])
            .plan();
        assert_eq!(authorized(&plan), vec![from_list(22, "pl-0e1").map_group(GroupRef::Existing)]);
        let [Action::ModifyPrefixList { list, version, add, remove, .. }] = list_actions(&plan)[..] else {
            panic!("{plan:?}")
        };
        assert_eq!((list, *version), (&pl("pl-0e1"), 4));
        assert_eq!(add, &vec![net("10.0.0.3")]);
        assert_eq!(remove, &vec![net("10.0.0.2").into()]);
        assert!(warnings_of(&plan, WarningKind::Unmirrorable).is_empty(), "{plan:?}");
    }

    #[test]
    fn a_converged_expansion_plans_nothing() {
        let plan = world()
            .members("sg-0b5", &["10.0.0.1"])
            .list("pl-0e1", "sg-0b5", "default", 10, 2, &["10.0.0.1"])
            .mirror("sg-77a", "web", "sg-0a1", vec![from_list(22, "pl-0e1")])
            .plan();
        assert!(plan.actions.is_empty(), "{plan:?}");
    }

    #[test]
    fn a_list_that_must_grow_is_replaced_and_the_grant_keeps_the_old_one_until_the_new_exists() {
        let ips: Vec<String> = (1..=11).map(|i| format!("10.0.0.{i}")).collect();
        let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
        let world = world().members("sg-0b5", &ips).list("pl-0e1", "sg-0b5", "default", 10, 3, &ips[..10]).mirror(
            "sg-77a",
            "web",
            "sg-0a1",
            vec![from_list(22, "pl-0e1")],
        );
        let plan = world.plan();
        let [Action::CreatePrefixList { max_entries: 30, entries, .. }] = list_actions(&plan)[..] else {
            panic!("{plan:?}")
        };
        assert_eq!(entries.len(), 11);
        assert!(!kinds(&plan).contains(&ActionKind::Revoke), "make before break: {plan:?}");

        // Once the larger list exists: the grant moves to it, the old one is
        // revoked, and deleted after the grace.
        let world = world.list("pl-0e2", "sg-0b5", "default", 30, 1, &ips);
        let (plan, memory) = world.plan_with(&Memory::default(), t0());
        assert_eq!(authorized(&plan), vec![from_list(22, "pl-0e2").map_group(GroupRef::Existing)]);
        assert!(kinds(&plan).contains(&ActionKind::Revoke));
        assert!(list_actions(&plan).is_empty(), "{plan:?}");
        assert_eq!(memory.unneeded_lists_since.get(&pl("pl-0e1")), Some(&t0()));
    }

    #[test]
    fn a_list_no_mirror_needs_is_deleted_once_the_grace_is_over() {
        let world = World::new()
            .classic("sg-0a1", "web", vec![])
            .map("sg-0a1", VPC)
            .mirror("sg-77a", "web", "sg-0a1", vec![from_list(22, "pl-0e1")])
            .list("pl-0e1", "sg-0b5", "default", 10, 2, &["10.0.0.1"])
            .expand();
        let (plan, memory) = world.plan_with(&Memory::default(), t0());
        assert_eq!(kinds(&plan), vec![ActionKind::Revoke], "{plan:?}");
        let later = t0() + Duration::from_secs(599);
        let (plan, memory) = world.plan_with(&memory, later);
        assert!(list_actions(&plan).is_empty(), "{plan:?}");
        let (plan, memory) = world.plan_with(&memory, t0() + Duration::from_secs(600));
        let delete = plan.actions.iter().find(|a| a.action.kind() == ActionKind::DeletePrefixList).unwrap();
        // It waits for the revoke of its last reference, planned alongside.
        let revoke = plan.actions.iter().find(|a| a.action.kind() == ActionKind::Revoke).unwrap();
        assert_eq!(delete.depends_on, vec![revoke.id]);
        assert_eq!(memory.unneeded_lists_since.len(), 1);

        // Held by an incomplete snapshot, as every deletion.
        let mut held = world;
        held.snap.incomplete.insert(SnapshotPart::Instances);
        let (plan, _) = held.plan_with(&memory, t0() + Duration::from_secs(600));
        assert!(list_actions(&plan).is_empty(), "{plan:?}");
    }

    #[test]
    fn a_list_of_another_owner_is_never_touched_and_ours_is_created_beside_it() {
        let world = world()
            .members("sg-0b5", &["10.0.0.1"])
            .list("pl-0e1", "sg-0b5", "team-b", 10, 2, &["10.0.0.9"])
            .mirror("sg-77a", "web", "sg-0a1", vec![from_list(22, "pl-0e1")]);
        let (plan, _) = world.plan_with(&Memory::default(), t0() + Duration::from_secs(100_000));
        let [Action::CreatePrefixList { .. }] = list_actions(&plan)[..] else { panic!("{plan:?}") };
        // Their list's grant is not ours to revoke either.
        assert!(!kinds(&plan).contains(&ActionKind::Revoke), "{plan:?}");
    }

    #[test]
    fn a_reference_to_another_account_stays_reported_when_expanding() {
        let plan = World::new()
            .classic("sg-0a1", "web", vec![from_account(80, "sg-0e1b", "amazon-elb")])
            .map("sg-0a1", VPC)
            .mirror("sg-77a", "web", "sg-0a1", vec![])
            .expand()
            .plan();
        assert!(list_actions(&plan).is_empty(), "{plan:?}");
        assert_eq!(warnings_of(&plan, WarningKind::Unmirrorable)[0].reason, Some(Unmirrorable::OtherAccount));
    }

    #[test]
    fn a_mapping_overriding_to_report_does_not_expand() {
        let plan = world().members("sg-0b5", &["10.0.0.1"]).with_last(|m| {
            m.unmanaged_references = Some(UnmanagedReferences::Report);
        });
        let plan = plan.plan();
        assert!(list_actions(&plan).is_empty(), "{plan:?}");
    }

    #[test]
    fn without_the_expansion_part_nothing_about_lists_is_planned() {
        let mut world = world()
            .members("sg-0b5", &["10.0.0.1"])
            .list("pl-0e1", "sg-0b5", "default", 10, 2, &[])
            .mirror("sg-77a", "web", "sg-0a1", vec![from_list(22, "pl-0e1")]);
        world.snap.incomplete.insert(SnapshotPart::Expansions);
        let plan = world.plan();
        assert!(list_actions(&plan).is_empty(), "{plan:?}");
        assert!(!kinds(&plan).contains(&ActionKind::Revoke), "{plan:?}");
    }

    /// Regression: expansion read only ingress rules, so an egress rule of a
    /// VPC source to an unmanaged group was reported `expansion_pending` on
    /// every pass and never mirrored.
    #[test]
    fn an_egress_reference_to_an_unmanaged_group_is_expanded_not_pending_forever() {
        let world = World::new()
            .vpc_group("sg-5a1", "api", VPC2, None, vec![])
            .egress("sg-5a1", vec![from_group(5432, "sg-0b5")])
            .map("sg-5a1", VPC)
            .expand()
            .members("sg-0b5", &["10.0.0.1"]);
        let world = vpc_source(world, "sg-5a1");
        // No list yet: one is created for the egress reference.
        let plan = world.plan();
        assert!(
            matches!(list_actions(&plan)[..], [Action::CreatePrefixList { expands, .. }] if expands == &sg("sg-0b5")),
            "{plan:?}"
        );
        // Once it exists, the mirror's egress grants it.
        let plan = world.list("pl-0e1", "sg-0b5", "default", 10, 1, &["10.0.0.1"]).plan();
        let granted: Vec<Peer<GroupRef>> = egress_actions(&plan)
            .into_iter()
            .filter(|(kind, _, _)| *kind == ActionKind::AuthorizeEgress)
            .flat_map(|(_, _, grants)| grants.into_iter().map(|g| g.key.peer))
            .collect();
        assert_eq!(granted, vec![Peer::PrefixList(pl("pl-0e1"))], "{plan:?}");
        assert!(warnings_of(&plan, WarningKind::Unmirrorable).is_empty(), "{:?}", plan.warnings);
    }
}

// ----- the weight of a VPC source's prefix lists ----------------------------

/// A VPC source with a few CIDR rules and one prefix list of `size` entries
/// (`None`: the target could not see it), at EC2's default quota of 60.
fn source_with_a_list(size: Option<u32>) -> Plan {
    let mut rules: Vec<Grant> = (0..10).map(|i| tcp(8000 + i, "10.0.0.0/8")).collect();
    rules.push(tcp_list(443, "pl-5a"));
    let mut world = vpc_source(World::new().vpc_group("sg-5a1", "api", VPC2, None, rules).map("sg-5a1", VPC), "sg-5a1");
    world.config.limits.rules_per_group = 60;
    if let Some(size) = size {
        world.snap.list_sizes.insert(crate::model::PrefixListId::try_new("pl-5a").unwrap(), size);
    }
    world.plan()
}

fn overflow_creates(plan: &Plan) -> usize {
    plan.actions.iter().filter(|a| matches!(a.action, Action::CreateMirror { shard, .. } if shard > 0)).count()
}

#[test]
fn a_source_prefix_list_of_known_size_weighs_its_max_entries_and_stays_in_the_mirror() {
    let plan = source_with_a_list(Some(20));
    assert_eq!(overflow_creates(&plan), 0, "10 rules + a list of 20 fit in 60: {:?}", kinds(&plan));
    assert_eq!(authorized(&plan).len(), 11);
    // 10 rules + a list of 55 do not: one overflow group takes the excess.
    let plan = source_with_a_list(Some(55));
    assert_eq!(overflow_creates(&plan), 1, "{:?}", kinds(&plan));
}

#[test]
fn a_source_prefix_list_the_target_cannot_see_is_assumed_to_fill_a_group() {
    let plan = source_with_a_list(None);
    assert_eq!(overflow_creates(&plan), 1, "{:?}", kinds(&plan));
}

// ----- prefix lists and references across accounts and regions (xrefs.rs) ---

mod xrefs {
    use super::*;
    use crate::config::AccountConfig;
    use crate::model::{PrefixList, PrefixListId};

    const OTHER: &str = "444455556666";

    /// The grants of each ingress authorize, one request each, in plan order.
    fn authorize_requests(plan: &Plan) -> Vec<&Vec<Grant<GroupRef>>> {
        plan.actions
            .iter()
            .filter_map(|a| match &a.action {
                Action::Authorize { grants, .. } => Some(grants),
                _ => None,
            })
            .collect()
    }

    fn list(id: &str, name: &str, owner: &str, max_entries: u32) -> PrefixList {
        PrefixList {
            id: PrefixListId::try_new(id).unwrap(),
            name: name.into(),
            address_family: "IPv4".into(),
            max_entries,
            version: 1,
            state: "create-complete".into(),
            state_message: None,
            owner_id: owner.into(),
            tags: BTreeMap::new(),
        }
    }

    /// `api` (sg-5a1) of account OTHER in us-east-1, with `rules`, mirrored
    /// as sg-77c (no rules yet) into the account `target` in `region`.
    fn across(region: &str, rules: Vec<Grant>) -> World {
        let mut world = World::new()
            .vpc_group("sg-5a1", "api", VPC2, None, rules)
            .map("sg-5a1", VPC)
            .with_last(|m| {
                m.source_account = Some("source".into());
                m.target_account = Some("target".into());
            })
            .mirror("sg-77c", "api", "sg-5a1", vec![]);
        world.config.aws.region = "us-east-1".into();
        world.config.accounts.insert("source".into(), AccountConfig::in_region("us-east-1"));
        world.config.accounts.insert("target".into(), AccountConfig::in_region(region));
        world.snap.vpc_groups.get_mut(&sg("sg-5a1")).unwrap().owner_id = OTHER.into();
        vpc_source(world, "sg-5a1")
    }

    fn with_s3(mut world: World, target: Option<&str>) -> World {
        let s3 = list("pl-0a", "com.amazonaws.us-east-1.s3", "AWS", 0);
        world.snap.source_prefix_lists.insert(s3.id.clone(), s3);
        if let Some(id) = target {
            let ours = list(id, "com.amazonaws.eu-west-1.s3", "AWS", 5);
            world.snap.target_aws_prefix_lists.insert(ours.name.clone(), ours);
        }
        world
    }

    fn granted(plan: &Plan) -> Vec<Grant> {
        authorized(plan).into_iter().map(|g| g.map_group(|g| g.existing().cloned().unwrap())).collect()
    }

    #[test]
    fn an_aws_managed_list_of_a_source_in_another_region_is_granted_as_the_target_regions_list_of_that_name() {
        let world = with_s3(across("eu-west-1", vec![tcp_list(443, "pl-0a")]), Some("pl-0e"));
        let plan = world.plan();
        assert_eq!(granted(&plan), vec![tcp_list(443, "pl-0e")]);
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    }

    #[test]
    fn a_mapped_list_already_on_the_mirror_plans_nothing_and_weighs_its_max_entries() {
        let mut world = with_s3(across("eu-west-1", vec![tcp_list(443, "pl-0a")]), Some("pl-0e"));
        world.snap.vpc_groups.get_mut(&sg("sg-77c")).unwrap().ingress = vec![tcp_list(443, "pl-0e")];
        assert!(world.plan().is_converged());
        // Five entries fit beside 55 rules of a quota of 60; six do not.
        let mut full = with_s3(
            across("eu-west-1", (1..=56).map(|p| tcp(p, "10.0.0.0/8")).chain([tcp_list(443, "pl-0a")]).collect()),
            Some("pl-0e"),
        );
        full.config.limits.rules_per_group = 60;
        full.config.limits.overflow_groups = false;
        let plan = full.plan();
        assert!(!granted(&plan).contains(&tcp_list(443, "pl-0e")), "the list weighs 5, not 1");
        assert_eq!(warnings_of(&plan, WarningKind::QuotaExceeded).len(), 1, "{:?}", plan.warnings);
    }

    #[test]
    fn an_aws_managed_list_without_a_counterpart_in_the_target_region_is_reported_naming_it_and_the_region() {
        let world = with_s3(across("eu-west-1", vec![tcp_list(443, "pl-0a"), tcp(80, "10.0.0.0/8")]), None);
        let plan = world.plan();
        assert_eq!(granted(&plan), vec![tcp(80, "10.0.0.0/8")]);
        let reported = warnings_of(&plan, WarningKind::PrefixListUnavailable);
        assert_eq!(reported.len(), 1, "{:?}", plan.warnings);
        let message = &reported[0].message;
        assert!(message.contains("com.amazonaws.eu-west-1.s3") && message.contains("eu-west-1"), "{message}");
    }

    #[test]
    fn an_aws_managed_list_in_the_same_region_is_granted_as_it_is_to_another_account() {
        let world = with_s3(across("us-east-1", vec![tcp_list(443, "pl-0a")]), None);
        let plan = world.plan();
        assert_eq!(granted(&plan), vec![tcp_list(443, "pl-0a")]);
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    }

    #[test]
    fn a_customer_list_of_the_source_account_is_reported_in_another_region_or_account() {
        for region in ["eu-west-1", "us-east-1"] {
            let mut world = across(region, vec![tcp_list(443, "pl-0c")]);
            let theirs = list("pl-0c", "office", OTHER, 10);
            world.snap.source_prefix_lists.insert(theirs.id.clone(), theirs);
            let plan = world.plan();
            assert!(granted(&plan).is_empty(), "{region}");
            let reported = warnings_of(&plan, WarningKind::PrefixListUnavailable);
            assert!(reported.len() == 1 && reported[0].message.contains(OTHER), "{:?}", plan.warnings);
        }
    }

    #[test]
    fn lists_not_described_this_pass_are_left_out_silently_and_nothing_is_revoked() {
        let mut world = with_s3(across("eu-west-1", vec![tcp_list(443, "pl-0a")]), Some("pl-0e"));
        world.snap.vpc_groups.get_mut(&sg("sg-77c")).unwrap().ingress = vec![tcp_list(443, "pl-0e")];
        world.snap.target_aws_prefix_lists.clear();
        world.snap.incomplete.insert(SnapshotPart::PrefixLists);
        let plan = world.plan();
        assert!(warnings_of(&plan, WarningKind::PrefixListUnavailable).is_empty(), "{:?}", plan.warnings);
        assert!(revoked(&plan).is_empty() && granted(&plan).is_empty(), "{:?}", plan.actions);
    }

    #[test]
    fn a_reference_to_an_unmanaged_group_of_the_source_account_stays_user_id_and_group_in_the_same_region() {
        let world = across("us-east-1", vec![from_group(22, "sg-5b0")]);
        let plan = world.plan();
        let kept = Grant::new(
            Protocol::Tcp,
            Ports::Range { from: 22, to: 22 },
            Peer::Group { group: sg("sg-5b0"), owner: Some(OTHER.into()) },
            None,
        );
        assert_eq!(granted(&plan), vec![kept.clone()]);
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);

        // Once there it is ours: converged, and revoked when the source drops it.
        let mut world = across("us-east-1", vec![from_group(22, "sg-5b0")]);
        world.snap.vpc_groups.get_mut(&sg("sg-77c")).unwrap().ingress = vec![kept.clone()];
        assert!(world.plan().is_converged());
        let mut dropped = across("us-east-1", vec![]);
        dropped.snap.vpc_groups.get_mut(&sg("sg-77c")).unwrap().ingress = vec![kept.clone()];
        assert_eq!(revoked(&dropped.plan()), vec![kept]);
    }

    #[test]
    fn each_kept_reference_goes_in_an_authorize_of_its_own_so_that_a_refusal_holds_back_nothing_else() {
        let plan =
            across("us-east-1", vec![tcp(443, "10.0.0.0/8"), from_group(22, "sg-5b0"), from_group(23, "sg-5b1")])
                .plan();
        let authorizes = authorize_requests(&plan);
        assert_eq!(authorizes.len(), 3, "{:?}", plan.actions);
        assert_eq!(authorizes[0], &vec![tcp(443, "10.0.0.0/8").map_group(GroupRef::Existing)]);
        for one in &authorizes[1..] {
            assert!(one.len() == 1 && matches!(one[0].key.peer, Peer::Group { owner: Some(_), .. }), "{authorizes:?}");
        }
        // Neither waits for the other.
        let ids: Vec<ActionId> =
            plan.actions.iter().filter(|a| a.action.kind() == ActionKind::Authorize).map(|a| a.id).collect();
        assert!(plan.actions.iter().all(|a| !ids.iter().any(|id| a.depends_on.contains(id))), "{:?}", plan.actions);
    }

    #[test]
    fn a_source_rule_naming_a_group_of_the_target_account_was_never_revoked_and_shared_the_authorize_batch() {
        // The mirror's account (sg-77c's owner) is 111122223333: a rule of
        // the source naming its group sg-6b0 becomes a reference without
        // owner, as EC2 describes it back.
        let named = Grant::new(
            Protocol::Tcp,
            Ports::Range { from: 22, to: 22 },
            Peer::Group { group: sg("sg-6b0"), owner: Some("111122223333".into()) },
            None,
        );
        let kept = Grant::new(
            Protocol::Tcp,
            Ports::Range { from: 22, to: 22 },
            Peer::Group { group: sg("sg-6b0"), owner: None },
            None,
        );
        let rules = vec![tcp(443, "10.0.0.0/8"), named];
        let plan = across("us-east-1", rules.clone()).plan();
        let authorizes = authorize_requests(&plan);
        assert_eq!(authorizes.len(), 2, "an authorize of its own: {:?}", plan.actions);
        assert_eq!(authorizes[0], &vec![tcp(443, "10.0.0.0/8").map_group(GroupRef::Existing)]);
        assert_eq!(authorizes[1], &vec![kept.clone().map_group(GroupRef::Existing)]);
        assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);

        // Applied (EC2's canonical form): converged.
        let mut world = across("us-east-1", rules);
        world.snap.vpc_groups.get_mut(&sg("sg-77c")).unwrap().ingress = vec![tcp(443, "10.0.0.0/8"), kept.clone()];
        assert!(world.plan().is_converged(), "{:?}", world.plan().actions);
        // The source drops the rule: the reference was its, and goes.
        let mut dropped = across("us-east-1", vec![tcp(443, "10.0.0.0/8")]);
        dropped.snap.vpc_groups.get_mut(&sg("sg-77c")).unwrap().ingress = vec![tcp(443, "10.0.0.0/8"), kept.clone()];
        assert_eq!(revoked(&dropped.plan()), vec![kept.clone()]);

        // Two account names of one account: the source cannot name the
        // target's groups any other way than its own, so a reference on
        // the mirror to an unmanaged group of that account is not ours.
        let mut same = across("us-east-1", vec![]);
        same.snap.source_groups.get_mut(&sg("sg-5a1")).unwrap().owner_id = "111122223333".into();
        same.snap.vpc_groups.get_mut(&sg("sg-77c")).unwrap().ingress = vec![kept];
        assert!(revoked(&same.plan()).is_empty(), "{:?}", same.plan().actions);
    }

    #[test]
    fn a_reference_to_a_group_of_a_third_account_stays_with_its_owner_and_across_regions_is_reported_other_region() {
        let third = Grant::new(
            Protocol::Tcp,
            Ports::Range { from: 22, to: 22 },
            Peer::Group { group: sg("sg-5c0"), owner: Some("777788889999".into()) },
            None,
        );
        let plan = across("us-east-1", vec![third.clone()]).plan();
        assert_eq!(granted(&plan), vec![third.clone()]);

        let plan = across("eu-west-1", vec![third, from_group(22, "sg-5b0")]).plan();
        assert!(granted(&plan).is_empty(), "{:?}", plan.actions);
        let reported = warnings_of(&plan, WarningKind::Unmirrorable);
        assert_eq!(reported.len(), 2, "{:?}", plan.warnings);
        assert!(reported.iter().all(|w| w.reason == Some(Unmirrorable::OtherRegion)), "{reported:?}");
    }

    #[test]
    fn within_one_account_a_reference_to_another_accounts_group_is_reported_as_before() {
        let third = Grant::new(
            Protocol::Tcp,
            Ports::Range { from: 22, to: 22 },
            Peer::Group { group: sg("sg-5c0"), owner: Some("777788889999".into()) },
            None,
        );
        let world = World::new().vpc_group("sg-5a1", "api", VPC2, None, vec![third.clone()]).map("sg-5a1", VPC);
        let mut world = vpc_source(world, "sg-5a1").mirror("sg-77c", "api", "sg-5a1", vec![third]);
        world.config.aws.region = "us-east-1".into();
        let plan = world.plan();
        assert!(granted(&plan).is_empty());
        assert_eq!(warnings_of(&plan, WarningKind::Unmirrorable)[0].reason, Some(Unmirrorable::OtherAccount));
        // And one on the mirror is not ours: left alone.
        assert!(revoked(&plan).is_empty(), "{:?}", plan.actions);
    }

    #[test]
    fn a_source_in_another_account_never_expands_its_references() {
        let mut world = across("eu-west-1", vec![from_group(22, "sg-5b0")]);
        world.config.mirroring.unmanaged_references = crate::config::UnmanagedReferences::Expand;
        let plan = world.plan();
        assert!(plan.actions.iter().all(|a| a.action.kind() != ActionKind::CreatePrefixList), "{:?}", plan.actions);
        assert_eq!(warnings_of(&plan, WarningKind::Unmirrorable)[0].reason, Some(Unmirrorable::OtherRegion));
    }
}
